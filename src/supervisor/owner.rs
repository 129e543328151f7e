//! The graph owner: the one task that owns the service map, the config in force and the
//! supervisor's lifecycle (booting → running → shutting down → done).
//!
//! Everyone else (the API, proxies, idle-stop, the CLI's view) holds a
//! `Supervisor` handle (the parent module) and sends it [`Request`]s; each request is answered on a
//! oneshot, and one the current phase cannot honour is refused with
//! [`Failure::ShuttingDown`]. Because only this task changes the map, two
//! reloads can never both replace a service's actor: a reload is a step of `running`,
//! and requests that change services wait (in arrival order) while one is in flight.
//! What the map looks like is published on a `watch` as an immutable [`Graph`]
//! snapshot, so readers never take a lock.
//!
//! Long steps (the boot's groups, a reload's stops, the shutdown) are futures this task
//! polls beside its mailbox, so a `shutdown` is honoured at once whatever is under way.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::select_all;
use tokio::sync::{mpsc, oneshot, watch};

use super::actor::{self, Order, ServiceHandle, Shared, Status};
use super::bus::EventKind;
use super::logs::Log;
use super::machine::{self, Phase};
use super::remote;
use super::{hooks, process};
use crate::config::{Condition, ServiceName, Spec};

/// How many services the boot starts before it lets other requests in.
const LAUNCH_GROUP: usize = 8;
/// How long hooks still running at shutdown may take before they are killed.
const HOOK_GRACE: Duration = Duration::from_secs(2);

type Reply<T> = oneshot::Sender<Result<T, Failure>>;
type Step<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Where the supervisor is in its life. Services start only while booting or running.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Lifecycle {
    /// Starting the selected services.
    Booting,
    Running,
    /// Stopping everything; nothing starts any more.
    ShuttingDown,
    /// Everything stopped and the history closed.
    Done,
}

impl Lifecycle {
    pub fn as_str(self) -> &'static str {
        match self {
            Lifecycle::Booting => "booting",
            Lifecycle::Running => "running",
            Lifecycle::ShuttingDown => "shutting-down",
            Lifecycle::Done => "done",
        }
    }
}

/// What the graph looks like at one moment: published by the graph owner whenever it
/// changes, read by everyone without a lock.
#[derive(Debug, Clone)]
pub struct Graph {
    pub lifecycle: Lifecycle,
    /// The config in force.
    pub spec: Arc<Spec>,
    pub services: Arc<BTreeMap<ServiceName, ServiceHandle>>,
    /// The services the bootstrap starts.
    pub selected: Arc<BTreeSet<ServiceName>>,
    /// Every selected service has taken its first step.
    pub launched: bool,
    /// Why the shutdown began (a signal, a client), once it has.
    pub why_shutdown: Option<Arc<str>>,
    /// Processes killed at shutdown outside their service's group, once done.
    pub strays: Option<usize>,
    /// Counts the snapshots published: who acts on one says which it has acted on.
    pub generation: u64,
}

/// `only` and everything it depends on; or every autostart service and its dependencies.
pub(super) fn selection(
    services: &BTreeMap<ServiceName, ServiceHandle>,
    only: &[ServiceName],
) -> BTreeSet<ServiceName> {
    let find = |name: &ServiceName| services.get(name);
    let mut todo: Vec<ServiceName> = if only.is_empty() {
        services
            .values()
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
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
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

/// Why a request about a service was not carried out.
#[derive(Debug)]
pub enum Failure {
    Unknown(String),
    /// The supervisor is shutting down: nothing starts any more.
    ShuttingDown,
    /// The request cannot be honoured; the text says why and what to do.
    Refused(String),
    NotHealthy(Box<Explanation>),
    Timeout {
        after: Duration,
        explanation: Box<Explanation>,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Unknown(name) => write!(f, "no service named `{name}`"),
            Failure::ShuttingDown => {
                f.write_str("the supervisor is shutting down; nothing starts any more")
            }
            Failure::Refused(why) => f.write_str(why),
            Failure::NotHealthy(explanation) => f.write_str(&chain(&explanation.cause)),
            Failure::Timeout { after, explanation } => write!(
                f,
                "not healthy within {}: {}",
                machine::human(*after),
                chain(&explanation.cause)
            ),
        }
    }
}

/// One link of a cause chain: a service, its state and why.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Link {
    pub service: ServiceName,
    pub phase: Phase,
    pub reason: String,
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.service, self.phase, self.reason)
    }
}

/// A cause chain in words, joined: what is shown where one line must do.
pub fn chain(links: &[Link]) -> String {
    links
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A service's state with its cause chain and the root cause's last log lines.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explanation {
    pub status: Status,
    /// From the service asked about to the root cause, each link typed; in words only
    /// where it is shown (`service: phase (reason)`).
    pub cause: Vec<Link>,
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

/// What the handles ask of the graph owner.
#[derive(Debug)]
pub(super) enum Request {
    /// Start the selected services (`only` and their dependencies, or every autostart
    /// service), a group at a time; answered once each has taken its first step.
    Boot {
        only: Vec<ServiceName>,
        reply: oneshot::Sender<()>,
    },
    /// Start `name` with whatever it depends on, unless it is already starting or up.
    /// `by_name`: someone asked for this service (`muster start`), so its restart
    /// budget begins afresh; otherwise (an `ensure`, a proxied connection) it is a
    /// demand, bound by its restart policy. Dependencies are always demands.
    Launch {
        name: String,
        by_name: bool,
        reply: Reply<ServiceHandle>,
    },
    /// Answered with the service and what tells when it has settled.
    Stop {
        name: String,
        reply: Reply<(ServiceHandle, oneshot::Receiver<()>)>,
    },
    Restart {
        name: String,
        reply: Reply<ServiceHandle>,
    },
    Reload {
        spec: Box<Spec>,
        /// `muster scale`: the set whose count this reload changes (its removed
        /// instances drain, then stop highest first; new ones start if it runs).
        scaled: Option<ServiceName>,
        reply: Reply<ReloadReport>,
    },
    /// Stop everything in reverse dependency order; answered with the number of strays
    /// killed, once the history is closed. A second request joins the first.
    Shutdown {
        why: String,
        reply: Option<oneshot::Sender<usize>>,
    },
    /// A run of `name` ended (it crashed, is being stopped or restarted): the services
    /// that follow it (`restart = true`) are stopped, to start again once it meets
    /// their condition.
    RunEnded { name: ServiceName },
    /// A follower stopped for its dependency's new run is down: start it again, behind a
    /// gate on its dependencies.
    Rejoin { name: ServiceName },
    /// `muster restart` of a service with followers, once they are down.
    RestartAfterFollowers { name: ServiceName },
    /// From gate `gate` of `name`: every dependency meets its condition (`Ok`), or one
    /// never will (`Err`, why). Carried out only while that gate is still current.
    Open {
        name: ServiceName,
        gate: u64,
        verdict: Result<Order, (ServiceName, String)>,
    },
    /// Answered at once, whatever is under way: the owner's loop is turning.
    Alive { reply: oneshot::Sender<()> },
    /// Stop turning, as a bug would (debug builds only; see `Supervisor::stall`).
    #[cfg(debug_assertions)]
    Stall(super::Stall),
}

/// The state only the owner task touches.
pub(super) struct Owner {
    spec: Arc<Spec>,
    services: BTreeMap<ServiceName, ServiceHandle>,
    shared: Arc<Shared>,
    lifecycle: Lifecycle,
    selected: Arc<BTreeSet<ServiceName>>,
    launched: bool,
    why_shutdown: Option<Arc<str>>,
    graph: watch::Sender<Arc<Graph>>,
    /// Set once shutdown begins; proxies and the API observe it.
    closing: watch::Sender<bool>,
    /// One gate per service waiting on its dependencies, by number; dropping the sender
    /// cancels the gate. A gate does not start its service itself: it asks the owner
    /// ([`Request::Open`]), which does only if the gate is still the current one, so
    /// a gate cancelled (the service was stopped, reloaded, or the shutdown began)
    /// before it saw that it was starts nothing.
    gates: BTreeMap<ServiceName, (u64, oneshot::Sender<()>)>,
    next_gate: u64,
    /// One watch per service that others follow (`restart = true`), telling the owner
    /// when a run of it ends; dropping the sender ends the watch.
    run_watches: BTreeMap<ServiceName, oneshot::Sender<()>>,
    /// Followers stopped for a run of their dependency: they start again only on a
    /// later run of it (the one that ended, or that is being restarted, does not
    /// count).
    rejoin_after: BTreeMap<ServiceName, (ServiceName, u64)>,
    /// For gates to reach the owner; weak, so that gates do not keep it alive.
    myself: mpsc::WeakUnboundedSender<Request>,
    /// The state directory the config file named when the supervisor started: a reload
    /// may not move it.
    file_state_dir: PathBuf,
    logs_dir: PathBuf,
    hooks: hooks::Hooks,
    hook_runs: Arc<hooks::Runs>,
    // Steps under way.
    boot_queue: VecDeque<ServiceName>,
    boot_reply: Option<oneshot::Sender<()>>,
    booting: Option<Step<()>>,
    reloading: Option<(Step<()>, PendingReload)>,
    /// Requests that change services, waiting for the reload in flight.
    deferred: VecDeque<Request>,
    stopping_all: Option<Step<usize>>,
    shutdown_replies: Vec<oneshot::Sender<usize>>,
    strays: Option<usize>,
    generation: u64,
}

/// A reload whose stops are under way; applied once they are done.
struct PendingReload {
    new: Arc<Spec>,
    report: ReloadReport,
    was_active: BTreeSet<ServiceName>,
    scaled: Option<ServiceName>,
    reply: Reply<ReloadReport>,
}

/// What woke the owner.
enum Wake {
    Request(Option<Request>),
    BootStep,
    Reloaded,
    ShutDown(usize),
}

impl std::fmt::Debug for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Owner")
            .field("lifecycle", &self.lifecycle)
            .field("services", &self.services.len())
            .finish_non_exhaustive()
    }
}

/// What [`Owner::new`] needs beyond the config.
pub(super) struct Parts {
    pub shared: Arc<Shared>,
    pub services: BTreeMap<ServiceName, ServiceHandle>,
    pub file_state_dir: PathBuf,
    pub hooks: hooks::Hooks,
    pub hook_runs: Arc<hooks::Runs>,
    pub graph: watch::Sender<Arc<Graph>>,
    pub closing: watch::Sender<bool>,
    pub myself: mpsc::WeakUnboundedSender<Request>,
}

impl Owner {
    pub(super) fn new(spec: Arc<Spec>, parts: Parts) -> Self {
        Self {
            logs_dir: spec.settings.state_dir.join("logs"),
            spec,
            services: parts.services,
            shared: parts.shared,
            lifecycle: Lifecycle::Booting,
            selected: Arc::new(BTreeSet::new()),
            launched: false,
            why_shutdown: None,
            graph: parts.graph,
            closing: parts.closing,
            gates: BTreeMap::new(),
            next_gate: 0,
            run_watches: BTreeMap::new(),
            rejoin_after: BTreeMap::new(),
            myself: parts.myself,
            file_state_dir: parts.file_state_dir,
            hooks: parts.hooks,
            hook_runs: parts.hook_runs,
            boot_queue: VecDeque::new(),
            boot_reply: None,
            booting: None,
            reloading: None,
            deferred: VecDeque::new(),
            stopping_all: None,
            shutdown_replies: Vec::new(),
            strays: None,
            generation: 0,
        }
    }

    /// The task's loop: requests, and the steps under way, one at a time. Ends when
    /// every handle is gone.
    pub(super) async fn run(mut self, mut mailbox: mpsc::UnboundedReceiver<Request>) {
        self.watch_followed_runs();
        loop {
            let wake = tokio::select! {
                request = mailbox.recv() => Wake::Request(request),
                () = until(&mut self.booting) => Wake::BootStep,
                () = until_reloaded(&mut self.reloading) => Wake::Reloaded,
                strays = until(&mut self.stopping_all) => Wake::ShutDown(strays),
            };
            match wake {
                #[cfg(debug_assertions)]
                Wake::Request(Some(Request::Stall(how))) => stall(how).await,
                Wake::Request(Some(request)) => self.handle(request),
                Wake::Request(None) => break,
                Wake::BootStep => {
                    self.booting = None;
                    self.next_boot_group();
                }
                Wake::Reloaded => {
                    if let Some((_, pending)) = self.reloading.take() {
                        self.apply_reload(pending);
                    }
                    self.handle_deferred();
                }
                Wake::ShutDown(strays) => {
                    self.stopping_all = None;
                    self.strays = Some(strays);
                    self.lifecycle = Lifecycle::Done;
                    self.publish();
                    for reply in self.shutdown_replies.drain(..) {
                        let _ = reply.send(strays);
                    }
                }
            }
        }
    }

    fn handle(&mut self, request: Request) {
        // While a reload is in flight, what would change services waits for it: each
        // request then acts on the services the reload left. A gate's verdict need not:
        // the reload cancelled the gates of the services it changes.
        if self.reloading.is_some()
            && !matches!(
                request,
                Request::Shutdown { .. } | Request::Open { .. } | Request::Alive { .. }
            )
        {
            self.deferred.push_back(request);
            return;
        }
        match request {
            Request::Boot { only, reply } => self.boot(&only, reply),
            Request::Launch {
                name,
                by_name,
                reply,
            } => {
                let answer = self.closed().and_then(|()| self.find(&name));
                if let Ok(handle) = &answer {
                    let asked = by_name.then(|| handle.name().clone());
                    let selection = self.selection(std::slice::from_ref(handle.name()));
                    self.launch(&selection, asked.as_ref());
                }
                let _ = reply.send(answer);
            }
            Request::Stop { name, reply } => {
                // A singleton stopped here is given up: another candidate may take it.
                if let Some(fences) = &self.shared.fences {
                    fences.unwant(&name);
                }
                let answer = self.find(&name).map(|handle| {
                    // A service waiting on its dependencies must not be started by its
                    // gate after it was asked to stop.
                    self.gates.remove(handle.name());
                    let down = handle.stop_and_tell();
                    (handle, down)
                });
                let _ = reply.send(answer);
            }
            Request::Restart { name, reply } => {
                let answer = self.closed().and_then(|()| self.find(&name));
                if let Ok(handle) = &answer {
                    // Its followers go down first, and it restarts once they are.
                    let followers = self.stop_followers(handle.name());
                    if !followers.is_empty() {
                        self.gates.remove(handle.name());
                        let owner = self.myself.clone();
                        let name = handle.name().clone();
                        tokio::spawn(async move {
                            futures_util::future::join_all(
                                followers.iter().map(ServiceHandle::settled),
                            )
                            .await;
                            if let Some(owner) = owner.upgrade() {
                                let _ = owner.send(Request::RestartAfterFollowers { name });
                            }
                        });
                    } else if handle.status().phase == Phase::Pending {
                        let selection = self.selection(std::slice::from_ref(handle.name()));
                        self.launch(&selection, Some(handle.name()));
                    } else {
                        self.gates.remove(handle.name());
                        handle.send(Order::Restart);
                    }
                }
                let _ = reply.send(answer);
            }
            Request::RestartAfterFollowers { name } => {
                if self.closed().is_ok()
                    && let Some(handle) = self.services.get(&name).cloned()
                {
                    if handle.status().phase == Phase::Pending || handle.phase().is_settled() {
                        let selection = self.selection(std::slice::from_ref(&name));
                        self.launch(&selection, Some(&name));
                    } else {
                        handle.send(Order::Restart);
                    }
                }
            }
            Request::RunEnded { name } => {
                if self.closed().is_ok() {
                    self.stop_followers(&name);
                }
            }
            Request::Rejoin { name } => {
                // Still down as the owner left it (nobody started it meanwhile).
                if self.closed().is_ok()
                    && self
                        .services
                        .get(&name)
                        .is_some_and(|h| h.phase() == Phase::Stopped)
                {
                    self.launch(&BTreeSet::from([name]), None);
                }
            }
            Request::Reload {
                spec,
                scaled,
                reply,
            } => self.reload(*spec, scaled, reply),
            Request::Shutdown { why, reply } => self.shutdown(why, reply),
            Request::Open {
                name,
                gate,
                verdict,
            } => self.open(&name, gate, verdict),
            Request::Alive { reply } => {
                let _ = reply.send(());
            }
            #[cfg(debug_assertions)]
            Request::Stall(_) => {}
        }
    }

    /// Carries out a gate's verdict, if the gate is still current (and so the service
    /// is still to be started, by the actor the gate was made for).
    fn open(
        &mut self,
        name: &ServiceName,
        gate: u64,
        verdict: Result<Order, (ServiceName, String)>,
    ) {
        if self
            .gates
            .get(name)
            .is_none_or(|(current, _)| *current != gate)
        {
            return;
        }
        self.gates.remove(name);
        let Some(handle) = self.services.get(name) else {
            return;
        };
        handle.send(match verdict {
            Ok(start) => start,
            Err((dependency, reason)) => Order::DependencyFailed { dependency, reason },
        });
    }

    /// Handles deferred requests until one starts another reload.
    fn handle_deferred(&mut self) {
        while self.reloading.is_none() {
            let Some(request) = self.deferred.pop_front() else {
                return;
            };
            self.handle(request);
        }
    }

    /// `Ok` while the lifecycle still starts services.
    fn closed(&self) -> Result<(), Failure> {
        match self.lifecycle {
            Lifecycle::Booting | Lifecycle::Running => Ok(()),
            Lifecycle::ShuttingDown | Lifecycle::Done => Err(Failure::ShuttingDown),
        }
    }

    fn find(&self, name: &str) -> Result<ServiceHandle, Failure> {
        self.services
            .get(name)
            .cloned()
            .ok_or_else(|| Failure::Unknown(name.to_owned()))
    }

    fn publish(&mut self) {
        self.generation += 1;
        self.graph.send_replace(Arc::new(Graph {
            lifecycle: self.lifecycle,
            spec: Arc::clone(&self.spec),
            services: Arc::new(self.services.clone()),
            selected: Arc::clone(&self.selected),
            launched: self.launched,
            why_shutdown: self.why_shutdown.clone(),
            strays: self.strays,
            generation: self.generation,
        }));
    }

    fn selection(&self, only: &[ServiceName]) -> BTreeSet<ServiceName> {
        selection(&self.services, only)
    }

    // ---- boot ----

    fn boot(&mut self, only: &[ServiceName], reply: oneshot::Sender<()>) {
        if self.closed().is_err() || self.launched || self.boot_reply.is_some() {
            let _ = reply.send(());
            return;
        }
        let selected = self.selection(only);
        self.boot_queue = selected.iter().cloned().collect();
        self.selected = Arc::new(selected);
        self.boot_reply = Some(reply);
        self.publish();
        self.next_boot_group();
    }

    /// Launches the next group of the boot, or ends the boot. A group at a time, each
    /// once the one before has taken its first step: a start is a spawn on the one
    /// thread, and a thousand queued at once kept every API client waiting behind them
    /// (seconds), just when `status` is most wanted.
    fn next_boot_group(&mut self) {
        if self.closed().is_err() {
            self.boot_queue.clear();
        }
        let count = self.boot_queue.len().min(LAUNCH_GROUP);
        if count == 0 {
            self.launched = true;
            if self.lifecycle == Lifecycle::Booting {
                self.lifecycle = Lifecycle::Running;
            }
            self.publish();
            if let Some(reply) = self.boot_reply.take() {
                let _ = reply.send(());
            }
            // Every service has taken its first step: what the boot freed is freed.
            super::trim::release_free_memory();
            return;
        }
        let group: BTreeSet<ServiceName> = self.boot_queue.drain(..count).collect();
        // The boot asks for every service it selected.
        for name in &group {
            self.launch(&BTreeSet::from([name.clone()]), Some(name));
        }
        let watches: Vec<_> = group
            .iter()
            .filter_map(|name| self.services.get(name).map(ServiceHandle::watch))
            .collect();
        self.booting = Some(Box::pin(async move {
            let stepped = watches.into_iter().map(|mut status| async move {
                let _ = status.wait_for(|s| s.phase != Phase::Stopped).await;
            });
            // An actor takes its first input at once; the bound only guards against a
            // bug.
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                futures_util::future::join_all(stepped),
            )
            .await;
        }));
    }

    /// Starts every service in `names` that is stopped or failed, each once its own
    /// dependencies meet their conditions. One already starting or running is left
    /// alone, so concurrent callers share one start. `asked` was asked for by name (a
    /// fresh start); the others are demands, bound by their restart policy.
    fn launch(&mut self, names: &BTreeSet<ServiceName>, asked: Option<&ServiceName>) {
        for name in names {
            let Some(handle) = self.services.get(name) else {
                continue;
            };
            match handle.phase() {
                Phase::Stopped | Phase::Failed => {}
                // It starts again once stopped, never beside its old process (the
                // machine remembers it); its dependencies are up, or it was not stopping.
                Phase::Stopping => {
                    handle.send(if asked == Some(name) {
                        Order::Start
                    } else {
                        Order::Demand
                    });
                    continue;
                }
                _ => continue,
            }
            let rejoin = self.rejoin_after.remove(name);
            let deps: Vec<_> = handle
                .service
                .depends_on
                .iter()
                .filter_map(|dep| {
                    let target = self.services.get(&dep.service)?;
                    let newer_than = match &rejoin {
                        Some((followed, run)) if *followed == dep.service => *run,
                        _ => 0,
                    };
                    // A singleton is met wherever it runs.
                    let (status, remote) = match (&self.shared.fences, &target.service.singleton) {
                        (Some(fences), Some(_)) => (
                            remote::follow(
                                fences,
                                dep.service.clone(),
                                remote::Source::Singleton {
                                    local: target.watch(),
                                },
                            ),
                            Some(dep.service.to_string()),
                        ),
                        _ => (target.watch(), None),
                    };
                    Some(Awaited {
                        name: dep.service.clone(),
                        condition: dep.condition,
                        status,
                        newer_than,
                        remote,
                    })
                })
                .chain(self.shared.fences.iter().flat_map(|fences| {
                    handle.service.remote_deps.iter().map(|dep| Awaited {
                        name: dep.service.clone(),
                        condition: dep.condition,
                        status: remote::follow(
                            fences,
                            dep.service.clone(),
                            remote::Source::Host(dep.host.clone()),
                        ),
                        newer_than: 0,
                        remote: Some(dep.to_string()),
                    })
                }))
                .collect();
            let start = if asked == Some(name) {
                Order::Start
            } else {
                Order::Demand
            };
            let claim = self.claim(handle);
            if deps.is_empty() && claim.is_none() {
                handle.send(start);
                continue;
            }
            if !deps.is_empty() {
                handle.send(Order::Await(waiting_for(&deps)));
            }
            let (cancel, cancelled) = oneshot::channel();
            self.next_gate += 1;
            let number = self.next_gate;
            self.gates.insert(name.clone(), (number, cancel));
            let owner = Gate {
                owner: self.myself.clone(),
                number,
                cancelled,
            };
            tokio::spawn(gate(handle.clone(), deps, claim, start, owner));
        }
    }

    /// A singleton's ownership, which its gate waits for beside its dependencies;
    /// asking for it makes this host compete for the singleton (`crate::cluster`).
    fn claim(&self, handle: &ServiceHandle) -> Option<watch::Receiver<crate::fence::Ownership>> {
        let fences = self.shared.fences.as_ref()?;
        handle.service.singleton.as_ref()?;
        fences.want(handle.name().as_str());
        Some(fences.ownership(handle.name().as_str()))
    }

    // ---- restart with a dependency ----

    /// Watches every service that others follow (`restart = true`) for the end of its
    /// runs; replaces the watches of an earlier map (after a reload).
    fn watch_followed_runs(&mut self) {
        let followed: BTreeSet<ServiceName> = self
            .services
            .values()
            .flat_map(|h| h.service.depends_on.iter())
            .filter(|dep| dep.restart)
            .map(|dep| dep.service.clone())
            .collect();
        self.run_watches.clear();
        for name in followed {
            let Some(handle) = self.services.get(&name) else {
                continue;
            };
            let (stop, stopped) = oneshot::channel();
            self.run_watches.insert(name.clone(), stop);
            tokio::spawn(watch_runs(
                name,
                handle.watch(),
                self.myself.clone(),
                stopped,
            ));
        }
    }

    /// Stops the services that follow `name` and are up (or waiting to restart), each
    /// with the cause, and starts each again once it is down, behind a gate on its
    /// dependencies. Followers already waiting for their dependencies are left alone: a
    /// crash loop of `name` restarts them at most once per run of it. Returns those
    /// stopped.
    fn stop_followers(&mut self, name: &ServiceName) -> Vec<ServiceHandle> {
        let followers: Vec<ServiceHandle> = self
            .services
            .values()
            .filter(|h| {
                h.service
                    .depends_on
                    .iter()
                    .any(|dep| dep.restart && &dep.service == name)
            })
            .filter(|h| {
                matches!(
                    h.phase(),
                    Phase::Starting | Phase::Healthy | Phase::Unhealthy | Phase::Exited
                )
            })
            .cloned()
            .collect();
        let run = self.services.get(name).map_or(0, |h| h.status().run_id);
        for follower in &followers {
            self.gates.remove(follower.name());
            self.rejoin_after
                .insert(follower.name().clone(), (name.clone(), run));
            follower.send(Order::DependencyRestarted(name.clone()));
            let owner = self.myself.clone();
            let follower = follower.clone();
            tokio::spawn(async move {
                follower.settled().await;
                if let Some(owner) = owner.upgrade() {
                    let _ = owner.send(Request::Rejoin {
                        name: follower.name().clone(),
                    });
                }
            });
        }
        followers
    }

    // ---- reload ----

    /// Begins a reload: services whose definition changed, and removed ones, are
    /// stopped; once every one of them is down, [`Self::apply_reload`] replaces their
    /// actors. Nothing else changes services meanwhile.
    fn reload(&mut self, mut new: Spec, scaled: Option<ServiceName>, reply: Reply<ReloadReport>) {
        if let Err(refused) = self.closed() {
            let _ = reply.send(Err(refused));
            return;
        }
        if new.settings.state_dir != self.file_state_dir {
            let _ = reply.send(Err(Failure::Refused(format!(
                "the config now names the state directory {}, but this supervisor keeps \
                 its state in {}; a running supervisor cannot move it: stop it with \
                 `muster down`, then `muster up` again",
                new.settings.state_dir.display(),
                self.file_state_dir.display()
            ))));
            return;
        }
        // Settings keep their running values (the state directory above all).
        new.settings = self.spec.settings.clone();
        let mut report = ReloadReport::default();
        let mut to_stop = Vec::new();
        let mut was_active = BTreeSet::new();
        for (name, handle) in &self.services {
            match new.services.get(name) {
                None => {
                    report.removed.push(name.clone());
                    to_stop.push(handle.clone());
                }
                // Routes and pools are read from the spec in force: editing them
                // restarts nothing.
                Some(service) if !service.same_process(&handle.service) => {
                    if handle.status().phase != Phase::Stopped {
                        was_active.insert(name.clone());
                    }
                    report.restarted.push(name.clone());
                    to_stop.push(handle.clone());
                }
                Some(_) => report.unchanged.push(name.clone()),
            }
        }
        report.added = new
            .services
            .keys()
            .filter(|name| !self.services.contains_key(*name))
            .cloned()
            .collect();
        for handle in &to_stop {
            self.gates.remove(handle.name());
        }
        // Scaled up: the new instances start if the set is running.
        if let Some(set) = &scaled
            && self.spec.members(set.as_str()).iter().any(|name| {
                self.services
                    .get(name)
                    .is_some_and(|h| h.phase() != Phase::Stopped)
            })
        {
            was_active.extend(report.added.iter().cloned());
        }
        // Scaled down: no new client is sent to the instances that go, and those they
        // serve are let finish (up to each one's stop timeout) before they stop, the
        // highest first.
        let drain: Vec<ServiceHandle> = if scaled.is_some() {
            let mut leaving: Vec<ServiceHandle> = to_stop
                .iter()
                .filter(|h| report.removed.contains(h.name()))
                .cloned()
                .collect();
            leaving.sort_by_key(|h| {
                std::cmp::Reverse(h.service.replica.as_ref().map_or(0, |r| r.index))
            });
            for handle in &leaving {
                handle.usage.set_draining();
            }
            to_stop.retain(|h| !report.removed.contains(h.name()));
            leaving
        } else {
            Vec::new()
        };
        // What follows a service being replaced goes down first (and starts again once
        // the new one meets its condition).
        let followers: Vec<ServiceHandle> = to_stop
            .iter()
            .flat_map(|handle| self.stop_followers(handle.name()))
            .collect();
        // Down means no process: the actor SIGKILLs the group at its stop timeout, so
        // this ends; a new actor never runs beside the old one's process.
        let stopped = async move {
            futures_util::future::join_all(followers.iter().map(ServiceHandle::settled)).await;
            let down = to_stop.into_iter().map(|handle| async move {
                handle.stop_and_settle().await;
            });
            futures_util::future::join_all(down).await;
            futures_util::future::join_all(
                drain
                    .iter()
                    .map(|handle| handle.usage.drained(handle.service.stop_timeout)),
            )
            .await;
            for handle in drain {
                handle.stop_and_settle().await;
            }
        };
        let pending = PendingReload {
            new: Arc::new(new),
            report,
            was_active,
            scaled,
            reply,
        };
        self.reloading = Some((Box::pin(stopped), pending));
    }

    fn apply_reload(&mut self, pending: PendingReload) {
        let PendingReload {
            new,
            report,
            was_active,
            scaled,
            reply,
        } = pending;
        for name in &report.removed {
            self.services.remove(name);
        }
        for name in &report.unchanged {
            if let Some(handle) = self.services.get_mut(name)
                && *handle.service != *new.services[name]
            {
                handle.service = Arc::clone(&new.services[name]);
            }
        }
        for name in report.restarted.iter().chain(&report.added) {
            let service = Arc::clone(&new.services[name]);
            let log = Log::shared(
                self.logs_dir.join(format!("{name}.log")),
                new.settings.logs.clone(),
            );
            self.services.insert(
                name.clone(),
                actor::start(service, Arc::clone(&self.shared), log),
            );
        }
        self.watch_followed_runs();
        *self
            .hooks
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = new.hooks.clone().into();
        self.spec = Arc::clone(&new);
        self.publish();
        let mut start: Vec<ServiceName> = was_active.into_iter().collect();
        start.extend(
            report
                .added
                .iter()
                .filter(|name| new.services[*name].autostart)
                .cloned(),
        );
        for name in &start {
            let selection = self.selection(std::slice::from_ref(name));
            self.launch(&selection, Some(name));
        }
        let count = scaled
            .as_ref()
            .and_then(|set| new.replica_sets.get(set))
            .map_or(0, |set| set.count);
        for (names, what) in [
            (&report.restarted, "definition changed"),
            (
                &report.added,
                if scaled.is_some() {
                    "scaled up"
                } else {
                    "added"
                },
            ),
            (
                &report.removed,
                if scaled.is_some() {
                    "scaled down"
                } else {
                    "removed"
                },
            ),
        ] {
            for name in names {
                let message = match &scaled {
                    Some(set) => format!("{what}: `{set}` runs {count} instance(s)"),
                    None => what.to_owned(),
                };
                self.shared.bus.publish(
                    name,
                    0,
                    EventKind::Reloaded,
                    message,
                    serde_json::json!({ "change": what }),
                );
            }
        }
        // The old definitions and the new configuration's parse are freed by now.
        super::trim::release_free_memory();
        let _ = reply.send(Ok(report));
    }

    // ---- shutdown ----

    fn shutdown(&mut self, why: String, reply: Option<oneshot::Sender<usize>>) {
        if let Some(strays) = self.strays {
            if let Some(reply) = reply {
                let _ = reply.send(strays);
            }
            return;
        }
        self.shutdown_replies.extend(reply);
        if self.lifecycle == Lifecycle::ShuttingDown {
            return;
        }
        self.lifecycle = Lifecycle::ShuttingDown;
        self.why_shutdown = Some(why.into());
        self.closing.send_replace(true);
        // Nothing starts from now on: no gate, no boot group, no deferred request, no
        // restart timer (each actor turns starts into stops), and a reload whose stops
        // are under way is not applied.
        self.gates.clear();
        self.booting = None;
        self.boot_queue.clear();
        if let Some(reply) = self.boot_reply.take() {
            let _ = reply.send(());
        }
        if let Some((_, pending)) = self.reloading.take() {
            let _ = pending.reply.send(Err(Failure::ShuttingDown));
        }
        for request in std::mem::take(&mut self.deferred) {
            refuse(request);
        }
        for handle in self.services.values() {
            handle.close();
        }
        self.publish();
        let services: Vec<ServiceHandle> = self.services.values().cloned().collect();
        let shared = Arc::clone(&self.shared);
        let hook_runs = Arc::clone(&self.hook_runs);
        let timeout = self.spec.settings.shutdown_timeout;
        self.stopping_all = Some(Box::pin(stop_all(services, shared, hook_runs, timeout)));
    }
}

/// Answers a request that will never be carried out.
fn refuse(request: Request) {
    match request {
        Request::Boot { reply, .. } => {
            let _ = reply.send(());
        }
        Request::Launch { reply, .. } | Request::Restart { reply, .. } => {
            let _ = reply.send(Err(Failure::ShuttingDown));
        }
        Request::Stop { reply, .. } => {
            let _ = reply.send(Err(Failure::ShuttingDown));
        }
        Request::Reload { reply, .. } => {
            let _ = reply.send(Err(Failure::ShuttingDown));
        }
        Request::Alive { reply } => {
            let _ = reply.send(());
        }
        Request::Shutdown { .. }
        | Request::Open { .. }
        | Request::RunEnded { .. }
        | Request::Rejoin { .. }
        | Request::RestartAfterFollowers { .. } => {}
        #[cfg(debug_assertions)]
        Request::Stall(_) => {}
    }
}

/// The graph owner stops for good (debug builds only): its task never returns to its
/// loop, or it blocks the thread every task of the supervisor runs on.
#[cfg(debug_assertions)]
async fn stall(how: super::Stall) {
    if how == super::Stall::Thread {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    std::future::pending::<()>().await;
}

/// Resolves with the step's output, or never when there is no step.
async fn until<T>(step: &mut Option<Step<T>>) -> T {
    match step {
        Some(step) => step.await,
        None => std::future::pending().await,
    }
}

async fn until_reloaded(reloading: &mut Option<(Step<()>, PendingReload)>) {
    match reloading {
        Some((step, _)) => step.await,
        None => std::future::pending().await,
    }
}

/// Stops everything in reverse dependency order: a service gets its stop signal once
/// all its dependents are down; independent branches stop in parallel. Whatever is
/// still alive after `timeout` is killed, and so is any process that left its
/// service's process group. The history is closed last. Returns how many strays there
/// were.
async fn stop_all(
    services: Vec<ServiceHandle>,
    shared: Arc<Shared>,
    hook_runs: Arc<hooks::Runs>,
    timeout: Duration,
) -> usize {
    let mut dependents: BTreeMap<ServiceName, Vec<watch::Receiver<Status>>> = BTreeMap::new();
    for handle in &services {
        for dep in &handle.service.depends_on {
            dependents
                .entry(dep.service.clone())
                .or_default()
                .push(handle.watch());
        }
    }
    let stoppers = services.iter().map(|handle| {
        let dependents = dependents.remove(handle.name()).unwrap_or_default();
        async move {
            for mut dependent in dependents {
                let _ = dependent.wait_for(|s| s.phase.is_settled()).await;
            }
            handle.stop_and_settle().await;
        }
    });
    let all_stopped = futures_util::future::join_all(stoppers);
    if tokio::time::timeout(timeout, all_stopped).await.is_err() {
        for handle in &services {
            handle.send(Order::Stop);
            if let Some(pid) = handle.status().pid {
                let _ = process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
        let everyone = services.iter().map(ServiceHandle::settled);
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::future::join_all(everyone),
        )
        .await;
    }
    let marker = format!("NOTIFY_SOCKET={}", shared.notify.address);
    let strays = shared.reaper.sweep(&marker, Duration::from_secs(5)).await;
    shared.cgroups.remove();
    // Hooks the last events started get a moment to finish.
    hook_runs.stop_all(HOOK_GRACE).await;
    // Every exit is in the history, and the history closed, before the supervisor
    // says it is done.
    shared.bus.close().await;
    strays
}

/// A dependency a gate waits for.
struct Awaited {
    name: ServiceName,
    condition: Condition,
    status: watch::Receiver<Status>,
    /// Only a run numbered above this meets the condition (0: any run).
    newer_than: u64,
    /// Met on another host, maybe (a singleton, `NAME@HOST`): how to name it; the
    /// wait then says what that host published.
    remote: Option<String>,
}

impl Awaited {
    /// "`db` (healthy)", or for another host's: "`rpc@b` (healthy; starting on host `b`)".
    fn waiting(&self, status: &Status) -> String {
        match &self.remote {
            None => format!("`{}` ({})", self.name, self.condition),
            Some(label) => format!("`{label}` ({}; {})", self.condition, status.reason),
        }
    }
}

fn waiting_for(deps: &[Awaited]) -> String {
    deps.iter()
        .map(|awaited| awaited.waiting(&awaited.status.borrow()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a gate needs to reach the owner.
struct Gate {
    owner: mpsc::WeakUnboundedSender<Request>,
    number: u64,
    cancelled: oneshot::Receiver<()>,
}

impl Gate {
    /// Whether the owner has cancelled this gate.
    fn is_cancelled(&mut self) -> bool {
        !matches!(
            self.cancelled.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        )
    }

    /// Tells the owner the verdict; the owner acts on it only if the gate is current.
    fn open(self, name: &ServiceName, verdict: Result<Order, (ServiceName, String)>) {
        if let Some(owner) = self.owner.upgrade() {
            let _ = owner.send(Request::Open {
                name: name.clone(),
                gate: self.number,
                verdict,
            });
        }
    }
}

/// Waits until every dependency meets its condition, then asks the owner to start the
/// service; or to fail it, naming the dependency, as soon as one never will. Ends
/// without a word when the owner cancels it (the service was stopped, reloaded, or
/// shutdown began); a verdict that crosses the cancellation is ignored by the owner.
async fn gate(
    handle: ServiceHandle,
    mut deps: Vec<Awaited>,
    mut claim: Option<watch::Receiver<crate::fence::Ownership>>,
    start: Order,
    mut owner: Gate,
) {
    loop {
        if owner.is_cancelled() {
            return;
        }
        let mut waiting = Vec::new();
        for awaited in &mut deps {
            let status = awaited.status.borrow_and_update().clone();
            // The run a follower was stopped for does not let it start again; its
            // failure does say the dependency will not come back.
            let verdict = if status.run_id <= awaited.newer_than && status.phase != Phase::Failed {
                Verdict::Wait
            } else {
                judge(awaited.condition, &status)
            };
            match verdict {
                Verdict::Met => {}
                Verdict::Wait => waiting.push(awaited.waiting(&status)),
                Verdict::Never(reason) => {
                    owner.open(handle.name(), Err((awaited.name.clone(), reason)));
                    return;
                }
            }
        }
        // A singleton's ownership is asked for once its dependencies are up.
        if waiting.is_empty()
            && let Some(claim) = &mut claim
        {
            let ownership = claim.borrow_and_update().clone();
            if !matches!(ownership, crate::fence::Ownership::Here { .. }) {
                waiting.push(ownership.waiting(handle.name().as_str()));
            }
        }
        if waiting.is_empty() {
            owner.open(handle.name(), Ok(start));
            return;
        }
        handle.send(Order::Await(waiting.join(", ")));
        let changes = deps
            .iter_mut()
            .map(|awaited| Box::pin(awaited.status.changed()));
        let claimed = async {
            match &mut claim {
                Some(claim) => claim.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let depended = async {
            if changes.len() == 0 {
                return std::future::pending().await;
            }
            select_all(changes).await.0.is_ok()
        };
        tokio::select! {
            ok = depended => if !ok { return },
            ok = claimed => if !ok { return },
            _ = &mut owner.cancelled => return,
        }
    }
}

/// Tells the owner each time a run of `name` ends: it was up (starting, healthy or
/// unhealthy) and is not any more, or a new run began without its end being seen. Ends
/// when `stop` resolves or the actor is gone.
async fn watch_runs(
    name: ServiceName,
    mut status: watch::Receiver<Status>,
    owner: mpsc::WeakUnboundedSender<Request>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut up_run: Option<u64> = None;
    loop {
        let ended = {
            let now = status.borrow_and_update();
            let up = matches!(
                now.phase,
                Phase::Starting | Phase::Healthy | Phase::Unhealthy
            );
            let ended = match up_run {
                Some(run) => !up || now.run_id != run,
                None => false,
            };
            up_run = up.then_some(now.run_id);
            ended
        };
        if ended {
            let Some(owner) = owner.upgrade() else {
                return;
            };
            let _ = owner.send(Request::RunEnded { name: name.clone() });
        }
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            _ = &mut stop => return,
        }
    }
}
