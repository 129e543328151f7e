//! The supervisor: brings a [`Spec`] up in dependency order, keeps it running and takes
//! it down in reverse order.
//!
//! One task, the graph owner ([`owner`]), owns the service map, the config in force and
//! the lifecycle; [`Supervisor`] is the handle everyone else uses, and every change it
//! asks for is a request the owner answers (or refuses, once the shutdown has begun).
//! Each service has its own actor ([`actor`]) around the pure state machine
//! ([`machine`]). Starting is not done wave by wave: each service waiting on
//! dependencies has a gate task that watches their statuses and starts it the moment
//! every condition holds, so independent branches never wait for each other. Stopping
//! is the mirror image: a service is stopped once every service that depends on it has
//! stopped.

pub mod actor;
pub mod bus;
pub mod cgroup;
pub mod descriptors;
pub mod exit;
pub mod hooks;
pub mod lock;
pub mod logs;
pub mod machine;
pub mod notify;
pub mod orphans;
pub mod owner;
pub mod ports;
pub mod probe;
pub mod process;
pub mod procfs;
pub mod remote;
pub mod resources;
mod say;
pub mod status;
pub mod summary;
mod trim;
pub mod usage;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

pub use crate::event::{Event, EventKind};
pub use actor::{Delivered, ServiceHandle, Status, Target};
pub use bus::{Draft, EventBus, Feed, HISTORY_IN_MEMORY};
pub use lock::private_dir;
pub use machine::{Input, Phase};
pub use owner::{
    Explanation, Failure, Graph, Lifecycle, Link, ReloadReport, Verdict, chain, judge,
};
pub use say::warn;

use crate::config::{ServiceName, Spec};
use crate::store::Store;
use logs::Log;

/// Why the supervisor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the state directory {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot become a child subreaper: {0}")]
    Reaper(std::io::Error),
    #[error("cannot open the notify socket: {0}")]
    Notify(std::io::Error),
    #[error("{0}")]
    History(#[from] crate::store::OpenError),
    #[error("cannot read the history: {0}")]
    HistoryQuery(#[from] rusqlite::Error),
    #[error("cannot start the history writer: {0}")]
    Writer(std::io::Error),
}

/// A running supervisor: a handle to the graph owner ([`owner`]) plus what every
/// service shares (the event bus). Cheap to share behind an `Arc`; every method that
/// changes services is a request the owner answers.
#[derive(Debug)]
pub struct Supervisor {
    requests: mpsc::UnboundedSender<owner::Request>,
    graph: watch::Receiver<Arc<Graph>>,
    closing: watch::Receiver<bool>,
    shared: Arc<actor::Shared>,
    pub counters: Counters,
    /// Set once a client has started, stopped or ensured a service.
    controlled: AtomicBool,
    /// Set once the bootstrap has settled (see [`Self::booted`]), and never cleared.
    booted: AtomicBool,
    /// Runs an earlier supervisor recorded no end for; taken by [`Self::recover`].
    unfinished: std::sync::Mutex<Vec<crate::store::Run>>,
    /// Things the user should know about how the supervisor started.
    notices: Vec<String>,
    /// The last graph generation whose proxies listen (see [`crate::proxy::manage`]).
    proxies: watch::Sender<u64>,
    /// Whether someone keeps the proxies in step with the graph.
    proxies_managed: AtomicBool,
    /// The last CPU reading of each service, for the next request's percentage.
    meter: resources::Meter,
    /// Reloads under way and begun (see [`Self::begin_reload`]).
    reloads: watch::Sender<Reloads>,
    /// Held from computing a new spec to its being applied (a reload, a scale), so
    /// each is computed from the one before: a reload racing a scale neither undoes
    /// it nor is undone.
    config_change: tokio::sync::Mutex<()>,
}

/// Reloads of the config: how many are under way, and how many have begun since the
/// supervisor started. Whoever tells systemd brackets a reload with these.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloads {
    pub active: usize,
    pub begun: u64,
}

/// A reload under way, from reading the config to applying it; it ends when dropped.
#[derive(Debug)]
pub struct ReloadMark {
    reloads: watch::Sender<Reloads>,
}

impl Drop for ReloadMark {
    fn drop(&mut self) {
        self.reloads
            .send_modify(|r| r.active = r.active.saturating_sub(1));
    }
}

/// How [`Supervisor::stall`] stops the graph owner (debug builds only).
#[cfg(debug_assertions)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// The owner's task never returns to its loop; the thread goes on with the rest.
    Owner,
    /// The owner blocks the thread: nothing on the runtime runs any more.
    Thread,
}

/// The counts `muster scale` set that differ from the file's.
fn scale_overrides(spec: &Spec) -> crate::config::Overrides {
    spec.replica_sets
        .iter()
        .filter(|(_, set)| set.count != set.declared)
        .map(|(name, set)| (name.to_string(), set.count))
        .collect()
}

/// Counts for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub ensure_calls: std::sync::atomic::AtomicU64,
    pub ensure_failures: std::sync::atomic::AtomicU64,
    /// Total time callers waited in `ensure`, in microseconds.
    pub ensure_wait_micros: std::sync::atomic::AtomicU64,
}

impl Supervisor {
    /// Starts the actors, every service stopped, and the graph owner. Must run inside a
    /// tokio runtime. Subscribe to [`Self::bus`] now to see every event of the
    /// [`Self::boot`] to come.
    pub fn new(spec: Spec) -> Result<Self, StartError> {
        let file_state_dir = spec.settings.state_dir.clone();
        Self::with_file_state_dir(spec, file_state_dir)
    }

    /// [`Self::new`] for a spec whose state directory was overridden (`--state-dir`):
    /// `file_state_dir` is the one its file names, which a reload may not change.
    pub fn with_file_state_dir(spec: Spec, file_state_dir: PathBuf) -> Result<Self, StartError> {
        trim::keep_thresholds();
        let logs_dir = spec.settings.state_dir.join("logs");
        let run_dir = spec.settings.state_dir.join("run");
        for dir in [&logs_dir, &run_dir] {
            private_dir(dir).map_err(|source| StartError::StateDir {
                path: dir.clone(),
                source,
            })?;
        }
        let mut notices = Vec::new();
        let (store, moved) =
            Store::open_or_replace(&crate::store::path_in(&spec.settings.state_dir))?;
        if let Some(aside) = moved {
            notices.push(format!(
                "{} could not be read as a database; it was moved to {} and a new history begins",
                store.path().display(),
                aside.display()
            ));
        }
        let unfinished = store.open_runs()?;
        let cgroups = cgroup::Cgroups::new(cgroup::Machine::detect().plan());
        let (memory, cpu) = spec
            .services
            .values()
            .fold((false, false), |(m, c), service| {
                (
                    m || service.process.memory_max.is_some(),
                    c || service.process.cpu_max.is_some(),
                )
            });
        if let Some(line) = cgroups.plan().describe(memory, cpu) {
            notices.push(line);
        }
        let bus = EventBus::start(Some(store), spec.settings.history.clone())
            .map_err(StartError::Writer)?;
        let shared = Arc::new(actor::Shared {
            reaper: process::Reaper::start().map_err(StartError::Reaper)?,
            notify: notify::NotifySocket::start().map_err(StartError::Notify)?,
            bus,
            run_dir,
            leftovers: std::sync::Mutex::new(Vec::new()),
            cgroups,
            fences: spec.cluster.as_ref().map(|_| crate::fence::Fences::new()),
        });
        let services: BTreeMap<_, _> = spec
            .services
            .values()
            .map(|service| {
                let log = Log::shared(
                    logs_dir.join(format!("{}.log", service.name)),
                    spec.settings.logs.clone(),
                );
                let handle = actor::start(Arc::clone(service), Arc::clone(&shared), log);
                (service.name.clone(), handle)
            })
            .collect();
        let hooks: hooks::Hooks = Arc::new(std::sync::RwLock::new(spec.hooks.clone().into()));
        let hook_runs = Arc::new(hooks::Runs::default());
        hooks::start(
            Arc::clone(&hooks),
            hooks::Context {
                dir: spec
                    .path
                    .parent()
                    .map_or_else(|| PathBuf::from("/"), PathBuf::from),
                output: spec.settings.state_dir.join("hooks.log"),
                bus: shared.bus.clone(),
                reaper: Arc::clone(&shared.reaper),
                runs: Arc::clone(&hook_runs),
            },
        );
        let spec = Arc::new(spec);
        let (graph_sender, graph) = watch::channel(Arc::new(Graph {
            lifecycle: Lifecycle::Booting,
            spec: Arc::clone(&spec),
            services: Arc::new(services.clone()),
            selected: Arc::new(BTreeSet::new()),
            launched: false,
            why_shutdown: None,
            strays: None,
            generation: 0,
        }));
        let (closing_sender, closing) = watch::channel(false);
        let (requests, mailbox) = mpsc::unbounded_channel();
        let owner = owner::Owner::new(
            spec,
            owner::Parts {
                shared: Arc::clone(&shared),
                services,
                file_state_dir,
                hooks,
                hook_runs,
                graph: graph_sender,
                closing: closing_sender,
                myself: requests.downgrade(),
            },
        );
        tokio::spawn(owner.run(mailbox));
        Ok(Self {
            requests,
            graph,
            closing,
            shared,
            counters: Counters::default(),
            controlled: AtomicBool::new(false),
            booted: AtomicBool::new(false),
            unfinished: std::sync::Mutex::new(unfinished),
            notices,
            proxies: watch::Sender::new(0),
            proxies_managed: AtomicBool::new(false),
            meter: resources::Meter::default(),
            reloads: watch::Sender::new(Reloads::default()),
            config_change: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether the graph owner's loop is turning: answered by the owner itself, between
    /// two of its steps (a reload in flight does not hold it up). `false` once it is
    /// gone. Whoever pings a watchdog asks this first, so that a stuck owner stops the
    /// pings even while the thread still runs.
    pub async fn alive(&self) -> bool {
        let (reply, answer) = oneshot::channel();
        self.requests.send(owner::Request::Alive { reply }).is_ok() && answer.await.is_ok()
    }

    /// Stops the graph owner for good, as a bug would: a test's way to show that the
    /// watchdog pings stop with it. Debug builds only.
    #[cfg(debug_assertions)]
    pub fn stall(&self, how: Stall) {
        let _ = self.requests.send(owner::Request::Stall(how));
    }

    /// Marks a reload as under way until the mark is dropped: from the moment the config
    /// is read (a SIGHUP's reload that finds it invalid is still a reload that ended).
    /// [`Self::reload`] takes one itself.
    pub fn begin_reload(&self) -> ReloadMark {
        self.reloads.send_modify(|r| {
            r.active += 1;
            r.begun += 1;
        });
        ReloadMark {
            reloads: self.reloads.clone(),
        }
    }

    /// Reloads under way and begun, as they change.
    pub fn watch_reloads(&self) -> watch::Receiver<Reloads> {
        self.reloads.subscribe()
    }

    /// Says that the proxies are kept in step with the graph from now on: a reload
    /// answers once its proxies listen.
    pub fn manage_proxies(&self) {
        self.proxies_managed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Says that the proxies of graph `generation` listen.
    pub fn proxies_synced(&self, generation: u64) {
        self.proxies.send_if_modified(|synced| {
            let newer = generation > *synced;
            if newer {
                *synced = generation;
            }
            newer
        });
    }

    /// Sends a request and waits for its answer. The owner lives as long as any handle,
    /// so a missing answer means it is gone: nothing more will start.
    async fn ask<T>(
        &self,
        request: impl FnOnce(oneshot::Sender<Result<T, Failure>>) -> owner::Request,
    ) -> Result<T, Failure> {
        let (reply, answer) = oneshot::channel();
        if self.requests.send(request(reply)).is_err() {
            return Err(Failure::ShuttingDown);
        }
        answer.await.unwrap_or(Err(Failure::ShuttingDown))
    }

    /// Stops whatever an earlier supervisor of this state directory left running (see
    /// [`orphans`]) and closes its unfinished runs. Call before [`Self::boot`].
    pub async fn recover(&self) -> orphans::Recovery {
        let unfinished = std::mem::take(
            &mut *self
                .unfinished
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let recovery = orphans::recover(unfinished, &self.spec(), &self.shared.bus).await;
        self.shared
            .leftovers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone_from(&recovery.leftovers);
        self.shared.bus.flush().await;
        recovery
    }

    /// What the user should be told about the start (a history moved aside, say).
    pub fn notices(&self) -> &[String] {
        &self.notices
    }

    /// Why the history cannot be written, while it cannot.
    pub fn history_problem(&self) -> Option<String> {
        self.shared.bus.problem()
    }

    /// Starts `only` (with their dependencies), or every service with `autostart` when
    /// `only` is empty, each as soon as its dependencies meet their conditions. Names
    /// not in the spec are ignored.
    ///
    /// Returns once every service started has taken its first step (it starts, or waits
    /// for its dependencies), so [`Self::booted`] and [`Self::idle`] never mistake a
    /// service about to start for one that is stopped. The API may be served meanwhile:
    /// the owner answers other requests between the boot's groups.
    pub async fn boot(&self, only: &[ServiceName]) {
        let (reply, booted) = oneshot::channel();
        let request = owner::Request::Boot {
            only: only.to_vec(),
            reply,
        };
        if self.requests.send(request).is_ok() {
            let _ = booted.await;
        }
    }

    /// Makes `name` healthy: at once if it is; joining the start in progress if there is
    /// one; otherwise starting it with whatever it depends on. Waits up to `timeout`.
    pub async fn ensure(&self, name: &str, timeout: Duration) -> Result<Status, Failure> {
        use std::sync::atomic::Ordering::Relaxed;
        let began = tokio::time::Instant::now();
        let result = self.ensure_inner(name, timeout).await;
        self.counters.ensure_calls.fetch_add(1, Relaxed);
        if result.is_err() {
            self.counters.ensure_failures.fetch_add(1, Relaxed);
        }
        let waited = began.elapsed().as_micros() as u64;
        self.counters.ensure_wait_micros.fetch_add(waited, Relaxed);
        result
    }

    async fn ensure_inner(&self, name: &str, timeout: Duration) -> Result<Status, Failure> {
        self.mark_controlled();
        let handle = self
            .service(name)
            .ok_or_else(|| Failure::Unknown(name.to_owned()))?;
        // A service still running during the shutdown is about to stop: a caller told
        // "healthy" would start using it just as it goes away.
        if matches!(self.lifecycle(), Lifecycle::ShuttingDown | Lifecycle::Done) {
            return Err(Failure::ShuttingDown);
        }
        handle.usage.touch();
        let mut status = handle.watch();
        let asked = {
            let now = status.borrow_and_update();
            match now.phase {
                // Healthy only while its process is: a service with no probe is healthy
                // at its spawn, and its exit may not have been handled yet.
                Phase::Healthy if now.pid.is_none_or(procfs::is_alive) => {
                    return Ok(now.clone());
                }
                // A one-shot that finished is not something to wait for.
                Phase::Completed => {
                    let now = now.clone();
                    return Err(Failure::NotHealthy(self.explain(now)));
                }
                _ => (now.transitions, now.refused_demands),
            }
        };
        let handle = self
            .ask(|reply| owner::Request::Launch {
                name: name.to_owned(),
                by_name: false,
                reply,
            })
            .await?;
        // An outcome of this start: healthy, or settled after the ask (an old failure
        // does not count). Ordered by the status's own count of changes, not a clock.
        let mut status = handle.watch();
        let outcome = async {
            let outcome = status
                .wait_for(|s| {
                    (s.phase == Phase::Healthy && s.pid.is_none_or(procfs::is_alive))
                        || (s.phase.is_settled() && s.transitions > asked.0)
                        // Turned down by its spent restart limit: the failure is the
                        // answer, now.
                        || (s.phase == Phase::Failed && s.refused_demands > asked.1)
                })
                .await
                .map(|status| status.clone());
            // The answer rests on events (ready, failed): they are written first.
            self.shared.bus.flush().await;
            outcome
        };
        match tokio::time::timeout(timeout, outcome).await {
            Ok(Ok(status)) if status.phase == Phase::Healthy => Ok(status),
            Ok(Ok(status)) => Err(Failure::NotHealthy(self.explain(status))),
            Ok(Err(_)) => Err(Failure::NotHealthy(self.explain(handle.status()))),
            Err(_) => Err(Failure::Timeout {
                after: timeout,
                explanation: self.explain(handle.status()),
            }),
        }
    }

    /// The cause chain of a service's state, down to the service that failed by itself,
    /// with the last lines of that one's log.
    pub fn explain(&self, status: Status) -> Box<Explanation> {
        let link = |status: &Status| Link {
            service: status.service.clone(),
            phase: status.phase,
            reason: status.reason.clone(),
        };
        let mut cause = vec![link(&status)];
        let mut root = status.service.clone();
        let mut next = status.blocked_by.clone();
        // A chain is as long as the graph is deep, and the graph has no cycle; the
        // bound only guards against a dependency replaced by a reload meanwhile.
        while let Some(dependency) = next
            .take()
            .filter(|_| cause.len() <= self.graph().services.len())
        {
            let Some(handle) = self.service(dependency.as_str()) else {
                break;
            };
            let dep_status = handle.status();
            cause.push(link(&dep_status));
            root = dep_status.service.clone();
            next = dep_status.blocked_by;
        }
        let log_tail = match self.service(root.as_str()) {
            Some(handle) => Log::lock(handle.log())
                .tail(20)
                .into_iter()
                .map(|line| line.text)
                .collect(),
            None => Vec::new(),
        };
        Box::new(Explanation {
            status,
            cause,
            log_tail,
        })
    }

    /// Applies a new config: services whose definition changed are stopped and started
    /// again with it (if they were running), new ones are added (and started with
    /// `autostart`), removed ones are stopped and dropped; the rest is not touched.
    /// Settings keep their running values; one that moves the state directory is
    /// refused. Reloads apply one at a time, each on the result of the one before.
    pub async fn reload(&self, new: Spec) -> Result<ReloadReport, Failure> {
        self.mark_controlled();
        let _reloading = self.begin_reload();
        let _one_at_a_time = self.config_change.lock().await;
        let new = self.keep_scale(new)?;
        self.apply(new, None).await
    }

    /// `muster scale`: runs `count` instances of the service `name` (one with
    /// `replicas`). New instances start if the service runs; extra ones stop, the
    /// highest first, each once the proxy's clients on it are done (up to its stop
    /// timeout). The count holds until the file's `replicas` changes.
    pub async fn scale(&self, name: &str, count: u32) -> Result<ReloadReport, Failure> {
        self.mark_controlled();
        let _one_at_a_time = self.config_change.lock().await;
        let spec = self.spec();
        let Some((set, _)) = spec.replica_sets.get_key_value(name) else {
            return Err(match ServiceName::new(name) {
                Ok(service) if spec.services.contains_key(name) => Failure::Refused(match service
                    .replica_of()
                {
                    Some((set, _)) => format!("`{name}` is one instance of `{set}`: scale `{set}`"),
                    None => format!(
                        "`{name}` has no `replicas`: give it `replicas = N` in the config and \
                         reload it (`muster reload`), then it can be scaled"
                    ),
                }),
                _ => Failure::Unknown(name.to_owned()),
            });
        };
        if !(1..=crate::name::MAX_REPLICAS).contains(&count) {
            return Err(Failure::Refused(format!(
                "`{name}` cannot run {count} instances: give a number from 1 to {}; to run \
                 none, `muster stop {name}`",
                crate::name::MAX_REPLICAS
            )));
        }
        let mut overrides = scale_overrides(&spec);
        overrides.insert(set.to_string(), count);
        let loaded = crate::config::rescale(&spec, &overrides).map_err(|error| {
            Failure::Refused(format!(
                "cannot run {count} instances of `{name}`:\n{}",
                error.into_report().render_plain()
            ))
        })?;
        self.apply(loaded.spec, Some(set.clone())).await
    }

    /// `new` with the counts `muster scale` set, where the file still declares what it
    /// declared when they were set.
    fn keep_scale(&self, new: Spec) -> Result<Spec, Failure> {
        let old = self.spec();
        let overrides: crate::config::Overrides = scale_overrides(&old)
            .into_iter()
            .filter(|(set, _)| {
                let declared =
                    |spec: &Spec| spec.replica_sets.get(set.as_str()).map(|s| s.declared);
                declared(&new).is_some() && declared(&new) == declared(&old)
            })
            .collect();
        if overrides.is_empty() {
            return Ok(new);
        }
        crate::config::rescale(&new, &overrides)
            .map(|loaded| loaded.spec)
            .map_err(|error| {
                Failure::Refused(format!(
                    "the config is valid, but not with the instances `muster scale` set:\n{}",
                    error.into_report().render_plain()
                ))
            })
    }

    async fn apply(&self, new: Spec, scaled: Option<ServiceName>) -> Result<ReloadReport, Failure> {
        let report = self
            .ask(|reply| owner::Request::Reload {
                spec: Box::new(new),
                scaled,
                reply,
            })
            .await?;
        // A proxy the reload added accepts connections once the answer is out.
        if self
            .proxies_managed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            let generation = self.graph.borrow().generation;
            let mut synced = self.proxies.subscribe();
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                synced.wait_for(|synced| *synced >= generation),
            )
            .await;
        }
        Ok(report)
    }

    /// Whether a client has controlled a service (so an idle graph is not the end).
    pub fn controlled(&self) -> bool {
        self.controlled.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn mark_controlled(&self) {
        self.controlled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts `name` (with its dependencies) without waiting for it to be up.
    pub async fn start(&self, name: &str) -> Result<ServiceHandle, Failure> {
        self.mark_controlled();
        self.ask(|reply| owner::Request::Launch {
            name: name.to_owned(),
            by_name: true,
            reply,
        })
        .await
    }

    /// Stops `name` and returns once it is down (no process left).
    pub async fn stop(&self, name: &str) -> Result<Status, Failure> {
        self.mark_controlled();
        let (handle, down) = self
            .ask(|reply| owner::Request::Stop {
                name: name.to_owned(),
                reply,
            })
            .await?;
        // Told by the actor, not read off its status: a start right after the stop
        // (another client's, or a reload's) would hide the moment it was down.
        let _ = down.await;
        Ok(handle.status())
    }

    /// Restarts `name` (starts it, when it never ran) without waiting for it to be up.
    pub async fn restart(&self, name: &str) -> Result<ServiceHandle, Failure> {
        self.mark_controlled();
        self.ask(|reply| owner::Request::Restart {
            name: name.to_owned(),
            reply,
        })
        .await
    }

    /// Sends `signal` to `name`'s process group (or only its main process), recorded as a
    /// `signaled` event, written before this returns. Refused when it has no process.
    pub async fn signal(
        &self,
        name: &str,
        signal: nix::sys::signal::Signal,
        target: Target,
    ) -> Result<Delivered, Failure> {
        self.mark_controlled();
        let handle = self
            .service(name)
            .ok_or_else(|| Failure::Unknown(name.to_owned()))?;
        let delivered = handle
            .signal(signal, target, actor::SignalWhy::Asked)
            .await
            .map_err(Failure::Refused)?;
        self.shared.bus.flush().await;
        Ok(delivered)
    }

    /// `muster reload NAME`: sends a service with `reload-signal` that signal (to its
    /// process group; `Some`, once its event is written), and restarts any other
    /// (`None`; see [`Self::restart`]).
    pub async fn reload_service(&self, name: &str) -> Result<Option<Delivered>, Failure> {
        self.mark_controlled();
        let handle = self
            .service(name)
            .ok_or_else(|| Failure::Unknown(name.to_owned()))?;
        let Some(signal) = handle.service.reload_signal else {
            self.restart(name).await?;
            return Ok(None);
        };
        if matches!(self.lifecycle(), Lifecycle::ShuttingDown | Lifecycle::Done) {
            return Err(Failure::ShuttingDown);
        }
        let delivered = handle
            .signal(signal, Target::Group, actor::SignalWhy::Reload)
            .await
            .map_err(Failure::Refused)?;
        self.shared.bus.flush().await;
        Ok(Some(delivered))
    }

    /// What the running ones of `services` use now (see [`resources`]): read from
    /// `/proc` at this call, the CPU share since the last call's reading.
    pub async fn resource_use(
        &self,
        services: &[ServiceHandle],
    ) -> std::collections::HashMap<ServiceName, resources::Use> {
        let running: Vec<(ServiceName, u32)> = services
            .iter()
            .filter_map(|handle| {
                let status = handle.status();
                let pid = status.pid.filter(|_| status.phase.has_process())?;
                Some((handle.name().clone(), pid))
            })
            .collect();
        self.meter.measure(&running).await
    }

    /// Begins the shutdown without waiting for it (see [`Self::shutdown`]).
    pub fn begin_shutdown(&self, why: impl Into<String>) {
        let _ = self.requests.send(owner::Request::Shutdown {
            why: why.into(),
            reply: None,
        });
    }

    /// Stops everything in reverse dependency order: a service gets its stop signal
    /// once all its dependents have stopped; independent branches stop in parallel.
    /// From the moment it begins nothing starts, by any path. Whatever is still alive
    /// after `shutdown-timeout` is killed, and so is any process that left its
    /// service's process group. Returns how many such stragglers there were. The
    /// history is closed last: the supervisor records nothing after this. Callers that
    /// come while it runs wait for the same end.
    pub async fn shutdown(&self) -> usize {
        self.shutdown_because("shutdown asked").await
    }

    /// [`Self::shutdown`], saying why.
    pub async fn shutdown_because(&self, why: impl Into<String>) -> usize {
        let (reply, done) = oneshot::channel();
        let request = owner::Request::Shutdown {
            why: why.into(),
            reply: Some(reply),
        };
        if self.requests.send(request).is_err() {
            return 0;
        }
        done.await.unwrap_or(0)
    }

    /// The hurried end of a shutdown (a second Ctrl-C): every service's process group
    /// gets SIGKILL now.
    pub fn kill_all(&self) {
        for handle in self.services() {
            if let Some(pid) = handle.status().pid {
                let _ = process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    /// The graph as it is now.
    /// With `[cluster]`: who owns each singleton, the lease's deadlines, the guards.
    pub fn fences(&self) -> Option<Arc<crate::fence::Fences>> {
        self.shared.fences.clone()
    }

    pub fn graph(&self) -> Arc<Graph> {
        Arc::clone(&self.graph.borrow())
    }

    /// Changes of the graph (lifecycle, services, the boot's progress).
    pub fn watch_graph(&self) -> watch::Receiver<Arc<Graph>> {
        self.graph.clone()
    }

    /// Becomes true when the shutdown begins: proxies and the API stop taking work.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.clone()
    }

    pub fn lifecycle(&self) -> Lifecycle {
        self.graph.borrow().lifecycle
    }

    /// The kept events with an id above `since`, oldest first.
    pub fn events_since(&self, since: u64) -> Vec<Arc<Event>> {
        self.shared.bus.recent(since)
    }

    /// The config in force.
    pub fn spec(&self) -> Arc<Spec> {
        Arc::clone(&self.graph.borrow().spec)
    }

    pub fn bus(&self) -> &EventBus {
        &self.shared.bus
    }

    /// Every service, in name order.
    pub fn services(&self) -> Vec<ServiceHandle> {
        self.graph.borrow().services.values().cloned().collect()
    }

    pub fn service(&self, name: &str) -> Option<ServiceHandle> {
        self.graph.borrow().services.get(name).cloned()
    }

    /// Whether the bootstrap started (or will start) this service.
    pub fn is_selected(&self, name: &ServiceName) -> bool {
        self.graph.borrow().selected.contains(name)
    }

    /// The services the bootstrap starts, in name order.
    pub fn selected(&self) -> Vec<ServiceHandle> {
        let graph = self.graph.borrow();
        graph
            .selected
            .iter()
            .filter_map(|name| graph.services.get(name).cloned())
            .collect()
    }

    /// Whether the bootstrap has settled: every selected service has reached where the
    /// bootstrap leaves it (healthy, completed, or failed). Once true it stays true: a
    /// service that crashes and restarts later is not the bootstrap again, and `status`
    /// said "bootstrapping" long after the boot when this was read from the statuses
    /// alone.
    pub fn booted(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        if self.booted.load(Relaxed) {
            return true;
        }
        let graph = self.graph();
        if !graph.launched {
            return false;
        }
        // A one-shot's outcome is its completion: being up is not where the boot leaves
        // it, so the summary cannot count it as up. (Asked after every event while the
        // graph boots: one pass over the dependencies, not one per service.)
        let one_shots = graph.spec.one_shots();
        // A singleton another host runs is where the bootstrap leaves it: waiting here.
        let elsewhere = |handle: &ServiceHandle| {
            handle.service.singleton.is_some()
                && self.shared.fences.as_ref().is_some_and(|fences| {
                    matches!(
                        fences.owned(handle.name().as_str()),
                        Some(crate::fence::Ownership::Elsewhere { .. })
                    )
                })
                && handle.phase() == Phase::Pending
        };
        let settled = graph
            .selected
            .iter()
            .filter_map(|name| graph.services.get(name))
            .all(|handle| {
                let phase = handle.phase();
                let up = matches!(phase, Phase::Healthy | Phase::Unhealthy);
                (up && !one_shots.contains(handle.name()))
                    || phase.is_settled()
                    || elsewhere(handle)
            });
        if settled {
            self.booted.store(true, Relaxed);
        }
        settled
    }

    /// Whether nothing is running or due to run: every service stopped, completed or
    /// failed.
    pub fn idle(&self) -> bool {
        self.graph
            .borrow()
            .services
            .values()
            .all(|handle| handle.phase().is_settled())
    }
}
