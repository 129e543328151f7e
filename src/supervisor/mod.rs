//! The supervisor: brings a [`Spec`] up in dependency order, keeps it running and takes
//! it down in reverse order.
//!
//! It owns one actor per service ([`actor`]), the reaper ([`process`]), the notify
//! socket ([`notify`]) and the event bus ([`event`]). Starting is not done wave by wave:
//! each service has a gate task that watches the statuses of its own dependencies and
//! starts it the moment every condition holds, so independent branches never wait for
//! each other. Stopping is the mirror image: a service is stopped once every service
//! that depends on it has stopped.

pub mod actor;
pub mod event;
pub mod hooks;
pub mod lock;
pub mod logs;
pub mod machine;
pub mod notify;
pub mod orphans;
pub mod ports;
pub mod probe;
pub mod process;
pub mod procfs;
pub mod usage;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::select_all;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use actor::{ServiceHandle, Status};
pub use event::{Draft, Event, EventBus, EventKind, Feed};
pub use machine::{Input, Phase};

use crate::config::{Condition, ServiceName, Spec};
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

/// A running supervisor.
#[derive(Debug)]
pub struct Supervisor {
    /// The config in force; replaced by a reload.
    spec: std::sync::RwLock<Arc<Spec>>,
    /// One handle per service; a reload adds, replaces and removes entries. Never held
    /// across an `.await`: readers take clones of the handles.
    services: std::sync::RwLock<BTreeMap<ServiceName, ServiceHandle>>,
    shared: Arc<actor::Shared>,
    /// The services this bootstrap starts.
    selected: BTreeSet<ServiceName>,
    /// Set once each selected service has taken its first step; not booted before.
    launched: std::sync::atomic::AtomicBool,
    gates: std::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Woken when a client asks the supervisor to shut down.
    shutdown_asked: tokio::sync::Notify,
    pub counters: Counters,
    /// Set once a client has started, stopped or ensured a service.
    controlled: std::sync::atomic::AtomicBool,
    /// Runs an earlier supervisor recorded no end for; taken by [`Self::recover`].
    unfinished: std::sync::Mutex<Vec<crate::store::Run>>,
    /// Things the user should know about how the supervisor started.
    notices: Vec<String>,
    hooks: hooks::Hooks,
    hook_runs: Arc<hooks::Runs>,
}

/// Counts for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub ensure_calls: std::sync::atomic::AtomicU64,
    pub ensure_failures: std::sync::atomic::AtomicU64,
    /// Total time callers waited in `ensure`, in microseconds.
    pub ensure_wait_micros: std::sync::atomic::AtomicU64,
}

/// Creates `dir` and its missing parents readable by the owner only: the state
/// directory holds the services' logs (which may print secrets), the history and the
/// control socket. A directory that already exists keeps its mode: the user chose it.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Writes `muster: <text>` on stderr. A closed stderr (whoever read it went away) is
/// not a reason to stop supervising, so a failed write is ignored.
pub fn warn(text: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "muster: {text}");
}

/// How long hooks still running at shutdown may take before they are killed.
const HOOK_GRACE: Duration = Duration::from_secs(2);

/// How many services the boot starts before it lets other tasks (the API) run.
const LAUNCH_GROUP: usize = 8;

/// How many recent events the supervisor keeps in memory.
pub const HISTORY_IN_MEMORY: usize = 10_000;

impl Supervisor {
    /// Starts the actors, every service stopped. Must run inside a tokio runtime.
    /// Subscribe to [`Self::bus`] now to see every event of the [`Self::boot`] to come.
    pub fn new(spec: Spec) -> Result<Self, StartError> {
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
        let bus = EventBus::start(Some(store), spec.settings.history.clone())
            .map_err(StartError::Writer)?;
        let shared = Arc::new(actor::Shared {
            reaper: process::Reaper::start().map_err(StartError::Reaper)?,
            notify: notify::NotifySocket::start().map_err(StartError::Notify)?,
            bus,
            run_dir,
            leftovers: std::sync::Mutex::new(Vec::new()),
        });
        let services: BTreeMap<_, _> = spec
            .services
            .values()
            .map(|service| {
                let log = Log::shared(
                    logs_dir.join(format!("{}.log", service.name)),
                    spec.settings.logs.clone(),
                );
                let handle = actor::start(service.clone(), Arc::clone(&shared), log);
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
        Ok(Self {
            hooks,
            hook_runs,
            unfinished: std::sync::Mutex::new(unfinished),
            notices,
            controlled: std::sync::atomic::AtomicBool::new(false),
            counters: Counters::default(),
            spec: std::sync::RwLock::new(Arc::new(spec)),
            services: std::sync::RwLock::new(services),
            shared,
            selected: BTreeSet::new(),
            launched: std::sync::atomic::AtomicBool::new(false),
            gates: std::sync::Mutex::new(Vec::new()),
            shutdown_asked: tokio::sync::Notify::new(),
        })
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
    /// service about to start for one that is stopped.
    pub async fn boot(&mut self, only: &[ServiceName]) {
        self.select(only);
        self.start_selected().await;
    }

    /// The first half of [`Self::boot`]: chooses what it starts. Apart so that the API
    /// (which shares the supervisor) can answer while the second half spawns.
    pub fn select(&mut self, only: &[ServiceName]) {
        self.selected = selection(&self.services(), only);
    }

    /// The second half of [`Self::boot`]: starts the selected services.
    pub async fn start_selected(&self) {
        // A group at a time, each once the group before has taken its first step: a
        // start is a spawn on the one thread, and a thousand queued at once kept every
        // API client waiting behind them (seconds), just when `status` is most wanted.
        let selected = self.selected();
        for group in selected.chunks(LAUNCH_GROUP) {
            self.launch(&group.iter().map(|handle| handle.name().clone()).collect());
            let stepped = group.iter().map(|handle| async move {
                let _ = handle.watch().wait_for(|s| s.phase != Phase::Stopped).await;
            });
            // An actor takes its first input at once; the bound only guards against a
            // bug.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                futures_util::future::join_all(stepped),
            )
            .await;
        }
        self.launched
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Starts every service in `names` that is stopped or failed, each once its own
    /// dependencies meet their conditions. One already starting or running is left
    /// alone, so concurrent callers share one start.
    fn launch(&self, names: &BTreeSet<ServiceName>) {
        let services = self.map();
        for name in names {
            let Some(handle) = services.get(name) else {
                continue;
            };
            if !matches!(handle.status().phase, Phase::Stopped | Phase::Failed) {
                continue;
            }
            let deps: Vec<_> = handle
                .service
                .depends_on
                .iter()
                .map(|dep| {
                    (
                        dep.service.clone(),
                        dep.condition,
                        services[&dep.service].watch(),
                    )
                })
                .collect();
            if deps.is_empty() {
                handle.send(Input::Start);
                continue;
            }
            let waiting = deps
                .iter()
                .map(|(name, condition, _)| format!("`{name}` ({condition})"))
                .collect::<Vec<_>>()
                .join(", ");
            handle.send(Input::Await(waiting));
            let gate = tokio::spawn(gate(handle.clone(), deps));
            self.gates
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(gate);
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
        handle.usage.touch();
        let asked = std::time::SystemTime::now();
        let mut status = handle.watch();
        match status.borrow_and_update().phase {
            Phase::Healthy => return Ok(handle.status()),
            // A one-shot that finished is not something to wait for.
            Phase::Completed => return Err(Failure::NotHealthy(self.explain(handle.status()))),
            _ => {}
        }
        self.launch(&selection(
            &self.services(),
            std::slice::from_ref(&handle.service.name),
        ));
        // An outcome of this start: healthy, or settled after the ask (an old failure
        // does not count).
        let outcome = async {
            let outcome = status
                .wait_for(|s| {
                    s.phase == Phase::Healthy || (s.phase.is_settled() && s.since >= asked)
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
        let mut cause = vec![format!(
            "{}: {} ({})",
            status.service, status.phase, status.reason
        )];
        let mut root = status.service.clone();
        let mut reason = status.reason.clone();
        while let Some(rest) = reason.strip_prefix("dependency `") {
            let Some(dep) = rest.split('`').next().and_then(|d| self.service(d)) else {
                break;
            };
            let dep_status = dep.status();
            cause.push(format!(
                "{}: {} ({})",
                dep_status.service, dep_status.phase, dep_status.reason
            ));
            root = dep_status.service.clone();
            reason = dep_status.reason.clone();
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
    /// Settings keep their running values (the state directory above all).
    pub async fn reload(&self, mut new: Spec) -> ReloadReport {
        self.mark_controlled();
        let old = self.spec();
        new.settings = old.settings.clone();
        let mut report = ReloadReport::default();
        let mut to_stop = Vec::new();
        let mut was_active = BTreeSet::new();
        for handle in self.services() {
            let name = handle.name().clone();
            match new.services.get(&name) {
                None => {
                    report.removed.push(name);
                    to_stop.push(handle);
                }
                Some(service) if *service != *handle.service => {
                    if handle.status().phase != Phase::Stopped {
                        was_active.insert(name.clone());
                    }
                    report.restarted.push(name);
                    to_stop.push(handle);
                }
                Some(_) => report.unchanged.push(name),
            }
        }
        let stopping = to_stop.iter().map(|handle| async move {
            handle.send(Input::Stop);
            let patience = handle.service.stop_timeout + Duration::from_secs(5);
            let mut status = handle.watch();
            let _ = tokio::time::timeout(patience, status.wait_for(|s| s.phase.is_settled())).await;
        });
        futures_util::future::join_all(stopping).await;
        report.added = new
            .services
            .keys()
            .filter(|name| !report.unchanged.contains(name) && !report.restarted.contains(name))
            .cloned()
            .collect();
        let logs_dir = new.settings.state_dir.join("logs");
        {
            let mut services = self
                .services
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for name in &report.removed {
                services.remove(name);
            }
            for name in report.restarted.iter().chain(&report.added) {
                let service = new.services[name].clone();
                let log = Log::shared(
                    logs_dir.join(format!("{name}.log")),
                    new.settings.logs.clone(),
                );
                services.insert(
                    name.clone(),
                    actor::start(service, Arc::clone(&self.shared), log),
                );
            }
        }
        let mut start: Vec<ServiceName> = was_active.into_iter().collect();
        start.extend(
            report
                .added
                .iter()
                .filter(|name| new.services[*name].autostart)
                .cloned(),
        );
        *self
            .hooks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new.hooks.clone().into();
        *self
            .spec
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(new);
        for name in &start {
            self.launch(&selection(&self.services(), std::slice::from_ref(name)));
        }
        for (names, what) in [
            (&report.restarted, "definition changed"),
            (&report.added, "added"),
            (&report.removed, "removed"),
        ] {
            for name in names {
                self.shared.bus.publish(
                    name,
                    0,
                    EventKind::Reloaded,
                    what.to_owned(),
                    serde_json::json!({ "change": what }),
                );
            }
        }
        report
    }

    /// Whether a client has controlled a service (so an idle graph is not the end).
    pub fn controlled(&self) -> bool {
        self.controlled.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn mark_controlled(&self) {
        self.controlled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts `name` (with its dependencies) without waiting.
    pub fn start(&self, name: &str) -> Result<Status, Failure> {
        self.mark_controlled();
        let handle = self
            .service(name)
            .ok_or_else(|| Failure::Unknown(name.to_owned()))?;
        self.launch(&selection(
            &self.services(),
            std::slice::from_ref(&handle.service.name),
        ));
        Ok(handle.status())
    }

    /// Sends `input` (stop, restart) to `name`.
    pub fn command(&self, name: &str, input: Input) -> Result<Status, Failure> {
        self.mark_controlled();
        let handle = self
            .service(name)
            .ok_or_else(|| Failure::Unknown(name.to_owned()))?;
        handle.send(input);
        Ok(handle.status())
    }

    /// The kept events with an id above `since`, oldest first.
    pub fn events_since(&self, since: u64) -> Vec<Arc<Event>> {
        self.shared.bus.recent(since)
    }

    /// Asks whoever runs the supervisor to shut it down (see [`Self::shutdown_asked`]).
    pub fn ask_shutdown(&self) {
        self.shutdown_asked.notify_one();
    }

    /// Resolves when a client has asked for a shutdown.
    pub async fn shutdown_asked(&self) {
        self.shutdown_asked.notified().await;
    }

    /// The config in force.
    pub fn spec(&self) -> Arc<Spec> {
        Arc::clone(
            &self
                .spec
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub fn bus(&self) -> &EventBus {
        &self.shared.bus
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ServiceName, ServiceHandle>> {
        self.services
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every service, in name order.
    pub fn services(&self) -> Vec<ServiceHandle> {
        self.map().values().cloned().collect()
    }

    pub fn service(&self, name: &str) -> Option<ServiceHandle> {
        self.map().get(name).cloned()
    }

    /// Whether the bootstrap started (or will start) this service.
    pub fn is_selected(&self, name: &ServiceName) -> bool {
        self.selected.contains(name)
    }

    /// The services the bootstrap starts, in name order.
    pub fn selected(&self) -> Vec<ServiceHandle> {
        let services = self.map();
        self.selected
            .iter()
            .filter_map(|name| services.get(name).cloned())
            .collect()
    }

    /// Whether every selected service has reached where the bootstrap leaves it:
    /// healthy, completed, or failed.
    pub fn booted(&self) -> bool {
        self.launched.load(std::sync::atomic::Ordering::Acquire)
            && self.selected().iter().all(|handle| {
                let phase = handle.status().phase;
                matches!(phase, Phase::Healthy | Phase::Unhealthy) || phase.is_settled()
            })
    }

    /// Whether nothing is running or due to run: every service stopped, completed or
    /// failed.
    pub fn idle(&self) -> bool {
        self.services()
            .iter()
            .all(|handle| handle.status().phase.is_settled())
    }

    /// Stops everything in reverse dependency order: a service gets its stop signal
    /// once all its dependents have stopped; independent branches stop in parallel.
    /// Whatever is still alive after `shutdown-timeout` is killed, and so is any process
    /// that left its service's process group. Returns how many such stragglers there were.
    /// The history is closed last: the supervisor records nothing after this.
    pub async fn shutdown(&self) -> usize {
        let gates = std::mem::take(
            &mut *self
                .gates
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for gate in gates {
            gate.abort();
        }
        let services = self.services();
        let mut dependents: BTreeMap<&ServiceName, Vec<watch::Receiver<Status>>> = BTreeMap::new();
        for handle in &services {
            for dep in &handle.service.depends_on {
                dependents
                    .entry(&dep.service)
                    .or_default()
                    .push(handle.watch());
            }
        }
        let mut stoppers = Vec::new();
        for handle in &services {
            let dependents = dependents.remove(handle.name()).unwrap_or_default();
            let handle = handle.clone();
            stoppers.push(tokio::spawn(async move {
                for mut dependent in dependents {
                    let _ = dependent.wait_for(|s| is_down(s.phase)).await;
                }
                handle.send(Input::Stop);
                let _ = handle.watch().wait_for(|s| is_down(s.phase)).await;
            }));
        }
        let all_stopped = futures_util::future::join_all(stoppers);
        if tokio::time::timeout(self.spec().settings.shutdown_timeout, all_stopped)
            .await
            .is_err()
        {
            for handle in &services {
                if let Some(pid) = handle.status().pid {
                    let _ = process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
            let everyone = services.iter().map(|handle| async {
                let _ = handle.watch().wait_for(|s| is_down(s.phase)).await;
            });
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                futures_util::future::join_all(everyone),
            )
            .await;
        }
        let marker = format!("NOTIFY_SOCKET={}", self.shared.notify.address);
        let strays = self
            .shared
            .reaper
            .sweep(&marker, Duration::from_secs(5))
            .await;
        // Hooks the last events started get a moment to finish.
        self.hook_runs.stop_all(HOOK_GRACE).await;
        // Every exit is in the history, and the history closed, before the supervisor
        // says it is done.
        self.shared.bus.close().await;
        strays
    }
}

/// No process and nothing scheduled.
fn is_down(phase: Phase) -> bool {
    phase.is_settled()
}

/// `only` and everything it depends on; or every autostart service and its dependencies.
fn selection(services: &[ServiceHandle], only: &[ServiceName]) -> BTreeSet<ServiceName> {
    let find = |name: &ServiceName| services.iter().find(|h| h.name() == name);
    let mut todo: Vec<ServiceName> = if only.is_empty() {
        services
            .iter()
            .filter(|h| h.service.autostart)
            .map(|h| h.name().clone())
            .collect()
    } else {
        only.to_vec()
    };
    let mut selected = BTreeSet::new();
    while let Some(name) = todo.pop() {
        if let Some(handle) = find(&name)
            && selected.insert(name.clone())
        {
            todo.extend(
                handle
                    .service
                    .depends_on
                    .iter()
                    .map(|dep| dep.service.clone()),
            );
        }
    }
    selected
}

/// What a reload changed.
#[derive(Debug, Default, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ReloadReport {
    #[schema(value_type = Vec<String>)]
    pub restarted: Vec<ServiceName>,
    #[schema(value_type = Vec<String>)]
    pub added: Vec<ServiceName>,
    #[schema(value_type = Vec<String>)]
    pub removed: Vec<ServiceName>,
    #[schema(value_type = Vec<String>)]
    pub unchanged: Vec<ServiceName>,
}

/// Why a service could not be made healthy, or was not found.
#[derive(Debug)]
pub enum Failure {
    Unknown(String),
    NotHealthy(Box<Explanation>),
    Timeout {
        after: Duration,
        explanation: Box<Explanation>,
    },
}

/// A service's state with its cause chain and the root cause's last log lines.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    pub status: Status,
    /// `service: phase (reason)`, from the service asked about to the root cause.
    pub cause: Vec<String>,
    pub log_tail: Vec<String>,
}

/// Whether a dependency's status meets a condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Wait,
    /// It will not be met; the text says why.
    Never(String),
}

pub fn judge(condition: Condition, status: &Status) -> Verdict {
    let failed = || Verdict::Never(status.reason.clone());
    match (condition, status.phase) {
        (_, Phase::Failed) => failed(),
        (Condition::Started, Phase::Healthy | Phase::Unhealthy | Phase::Completed) => Verdict::Met,
        (Condition::Started, Phase::Starting) if status.pid.is_some() => Verdict::Met,
        (Condition::Healthy, Phase::Healthy) => Verdict::Met,
        (Condition::Healthy, Phase::Completed) => Verdict::Never(
            "it completed (exited with status 0) instead of staying up; depend on it with condition = \"completed\""
                .to_owned(),
        ),
        (Condition::Completed, Phase::Completed) => Verdict::Met,
        // Stopped is where every actor begins; the bootstrap starts dependencies too.
        _ => Verdict::Wait,
    }
}

/// Waits until every dependency meets its condition, then starts the service; or
/// fails it, naming the dependency, as soon as one never will.
async fn gate(handle: ServiceHandle, deps: Vec<(ServiceName, Condition, watch::Receiver<Status>)>) {
    let mut deps = deps;
    loop {
        let mut waiting = Vec::new();
        for (name, condition, status) in &mut deps {
            let status = status.borrow_and_update().clone();
            match judge(*condition, &status) {
                Verdict::Met => {}
                Verdict::Wait => waiting.push(format!("`{name}` ({condition})")),
                Verdict::Never(reason) => {
                    handle.send(Input::DependencyFailed(format!(
                        "dependency `{name}` failed: {reason}"
                    )));
                    return;
                }
            }
        }
        if waiting.is_empty() {
            handle.send(Input::Start);
            return;
        }
        handle.send(Input::Await(waiting.join(", ")));
        let changes = deps
            .iter_mut()
            .map(|(_, _, status)| Box::pin(status.changed()));
        let (result, _, _) = select_all(changes).await;
        if result.is_err() {
            return;
        }
    }
}
