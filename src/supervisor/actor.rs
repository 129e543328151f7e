//! The service actor: one tokio task per service that alone owns its [`State`].
//!
//! Everything that happens to a service arrives as a [`Message`] on one channel: commands
//! from its [`ServiceHandle`], exits from the reaper, probe results, matched log lines,
//! notify datagrams. The actor turns each into an [`Input`], runs the pure
//! [`machine::step`], performs the effects (spawn, signal, probe, timers, events) and
//! publishes the new [`Status`] on a `watch`. Messages about an earlier run (a late
//! probe result, a log line of the previous process) are dropped by run id, so they
//! cannot touch the current one. The actor waits on its channel and on its earliest
//! armed timer only: with nothing due, it does not wake.

use std::collections::VecDeque;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use nix::sys::signal::Signal;
use serde_json::json;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::bus::{Draft, EventBus, EventKind};
use super::descriptors;
use super::logs::{LineWatch, Log, SharedLog, Stream, pump};
use super::machine::{self, Effect, Emit, Exit, Input, Phase, Policy, ProbeKind, State, Timer};
use super::notify::{self, NotifySocket};
use super::probe::{self, ExecContext};
use super::process::daemon::{self, Claim, Wake};
use super::process::{
    Ended, Io, Reaper, Spawn, SpawnError, Watch, setup, signal_group, signal_pid, signal_run,
};
use super::procfs;
pub use super::status::{ProbeOutcome, Status};
use super::usage::Usage;
use crate::account::{self, Identity};
use crate::config::{AssignedPort, Check, Port, Run, Service, ServiceName, envfile, executable};
use crate::store::{RunEnd, RunStart};

/// The longest one readiness attempt may take (less if the start deadline is nearer).
const ATTEMPT_LIMIT: Duration = Duration::from_secs(5);

/// Everything that reaches an actor.
#[derive(Debug)]
pub(super) enum Message {
    Input(Input),
    Exited {
        run: u64,
        ended: Ended,
    },
    /// With `pidfile`: the daemon's pid, taken over by the reaper.
    Adopted {
        run: u64,
        pid: u32,
    },
    /// With `pidfile`: why the file does not give a pid yet.
    PidPending {
        run: u64,
        detail: String,
    },
    Probe {
        run: u64,
        kind: ProbeKind,
        result: Result<String, String>,
    },
    Ready {
        run: u64,
        how: String,
    },
    Notify {
        run: u64,
        message: Box<notify::Message>,
    },
    /// The supervisor is shutting down: from now on nothing starts this service again
    /// (a start, a restart or a restart timer becomes a stop).
    Closing,
    /// Without a kernel limit: the run's group holds more than `memory-max`.
    OverMemory {
        run: u64,
        detail: String,
    },
    /// Send a signal to the current run (see [`ServiceHandle::signal`]).
    Signal {
        signal: Signal,
        target: Target,
        why: SignalWhy,
        reply: tokio::sync::oneshot::Sender<Result<Delivered, String>>,
    },
    /// Stop, and say so on `down` once the service has settled (no process left). A
    /// watcher of the status could miss that moment: a start that came next would
    /// leave it waiting for a stop that already happened.
    StopAndTell {
        down: tokio::sync::oneshot::Sender<()>,
    },
}

/// Which processes of a run a signal is for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Its process group: the main process and every child that stayed in it.
    Group,
    /// Only its main process: the one `MAINPID=` named, or else the one muster started
    /// (or took over from a pid file).
    Main,
}

/// Why a signal was sent, for its event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalWhy {
    /// `muster signal`.
    Asked,
    /// `muster reload NAME` of a service with `reload-signal`.
    Reload,
}

/// A signal sent: to which process (the group's leader, for a group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub signal: Signal,
    pub target: Target,
    pub pid: u32,
}

/// What all actors share: the reaper, the notify socket and the event bus.
#[derive(Debug)]
pub struct Shared {
    pub reaper: Arc<Reaper>,
    pub notify: Arc<NotifySocket>,
    pub bus: EventBus,
    /// `state-dir/run`: heartbeat files.
    pub run_dir: PathBuf,
    /// Processes an earlier supervisor left that would not stop: their ports stay
    /// taken, and services that need them wait, told why.
    pub leftovers: std::sync::Mutex<Vec<super::orphans::Leftover>>,
    /// The groups that hold services to `memory-max` and `cpu-max`.
    pub cgroups: super::cgroup::Cgroups,
    /// With `[cluster]`: who owns each singleton, the lease's deadlines, the guards.
    pub fences: Option<Arc<crate::fence::Fences>>,
}

impl Shared {
    /// What a process is, if it is a leftover that would not stop.
    pub fn leftover(&self, pid: u32) -> Option<String> {
        let leftovers = self
            .leftovers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        leftovers.iter().find(|l| l.pid == pid).map(|l| {
            format!(
                "it was left by run {} of `{}` under a supervisor that ended without \
                 stopping it, and it did not stop on SIGKILL; the start waits until it is gone",
                l.run_id, l.service
            )
        })
    }

    /// The file a service may touch instead of sending `WATCHDOG=1`.
    pub fn heartbeat_file(&self, service: &ServiceName) -> PathBuf {
        self.run_dir.join(format!("{service}.heartbeat"))
    }
}

/// What the graph owner may ask of an actor: the commands among the machine's inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Order {
    Start,
    /// Needed by something (see [`Input::Demand`]).
    Demand,
    /// Wait for dependencies; the text names them.
    Await(String),
    /// A dependency will never meet its condition; the text says why.
    DependencyFailed {
        dependency: ServiceName,
        reason: String,
    },
    Stop,
    Restart,
    /// A dependency it follows (`restart = true`) got a new run: stop, with that cause.
    DependencyRestarted(ServiceName),
}

impl From<Order> for Input {
    fn from(order: Order) -> Self {
        match order {
            Order::Start => Input::Start,
            Order::Demand => Input::Demand,
            Order::Await(waiting) => Input::Await(waiting),
            Order::DependencyFailed { dependency, reason } => {
                Input::DependencyFailed { dependency, reason }
            }
            Order::Stop => Input::Stop,
            Order::Restart => Input::Restart,
            Order::DependencyRestarted(dependency) => Input::DependencyRestarted(dependency),
        }
    }
}

/// The sending side of an actor's channel. Each message travels boxed: an unbounded
/// channel holds its messages in blocks of 32 slots and allocates the first block when
/// it is made, so with slots the size of a pointer rather than of the largest message
/// every service's idle channel holds 0.3 KiB instead of 1.8 KiB.
#[derive(Debug, Clone)]
pub(super) struct Mailbox(mpsc::UnboundedSender<Box<Message>>);

impl Mailbox {
    /// Fails, giving the message back, once the actor is gone.
    pub(super) fn send(&self, message: Message) -> Result<(), Box<Message>> {
        self.0.send(Box::new(message)).map_err(|failed| failed.0)
    }

    fn downgrade(&self) -> WeakMailbox {
        WeakMailbox(self.0.downgrade())
    }
}

/// A [`Mailbox`] that does not keep the actor alive.
#[derive(Debug, Clone)]
pub(super) struct WeakMailbox(mpsc::WeakUnboundedSender<Box<Message>>);

impl WeakMailbox {
    fn upgrade(&self) -> Option<Mailbox> {
        self.0.upgrade().map(Mailbox)
    }
}

/// A cloneable handle to one service's actor.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    pub service: Arc<Service>,
    sender: Mailbox,
    status: watch::Receiver<Status>,
    log: SharedLog,
    pub usage: Arc<Usage>,
}

impl ServiceHandle {
    pub fn name(&self) -> &ServiceName {
        &self.service.name
    }

    /// Sends a command to the actor. Only the supervisor's graph owner and its gates
    /// do: everyone else asks the [`super::Supervisor`], which decides whether the
    /// lifecycle allows it. The machine's other inputs (`Spawned`, `Ready`, `Exited`,
    /// ...) come from the actor's own effects and cannot be sent from outside.
    pub(super) fn send(&self, order: Order) {
        let _ = self.sender.send(Message::Input(order.into()));
    }

    /// Sends `signal` to the current run's processes (`target`), and records it. Refused,
    /// with the reason, when the service has no process.
    pub(super) async fn signal(
        &self,
        signal: Signal,
        target: Target,
        why: SignalWhy,
    ) -> Result<Delivered, String> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let message = Message::Signal {
            signal,
            target,
            why,
            reply,
        };
        if self.sender.send(message).is_err() {
            return Err(format!("`{}` is gone", self.name()));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(format!("`{}` is gone", self.name())))
    }

    /// Stops the service; the receiver resolves once it has settled (no process left),
    /// or when the actor is gone.
    pub(super) fn stop_and_tell(&self) -> tokio::sync::oneshot::Receiver<()> {
        let (down, told) = tokio::sync::oneshot::channel();
        let _ = self.sender.send(Message::StopAndTell { down });
        told
    }

    /// Tells the actor the supervisor is shutting down (see [`Message::Closing`]).
    pub(super) fn close(&self) {
        let _ = self.sender.send(Message::Closing);
    }

    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Its phase now, without copying the rest of its status.
    pub fn phase(&self) -> Phase {
        self.status.borrow().phase
    }

    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Resolves once the service is down (stopped, completed or failed: no process
    /// left), with its status then. The one way anything waits for a stop to finish.
    pub async fn settled(&self) -> Status {
        let mut status = self.watch();
        let _ = status.wait_for(|s| s.phase.is_settled()).await;
        self.status()
    }

    /// Stops the service and waits until it is down: for the graph owner, who alone
    /// decides when a service may be stopped (everyone else asks it).
    pub(super) async fn stop_and_settle(&self) -> Status {
        self.send(Order::Stop);
        self.settled().await
    }

    pub fn log(&self) -> &SharedLog {
        &self.log
    }
}

/// Starts the actor of `service` (in `Stopped`) and returns its handle. The definition
/// is the spec's own, shared, not a copy.
pub fn start(service: Arc<Service>, shared: Arc<Shared>, log: SharedLog) -> ServiceHandle {
    let state = State::new();
    let (sender, receiver) = mpsc::unbounded_channel();
    let sender = Mailbox(sender);
    let (status_sender, status) = watch::channel(Status {
        service: service.name.clone(),
        phase: state.phase,
        reason: state.reason.clone(),
        pid: None,
        run_id: 0,
        restarts: 0,
        since: SystemTime::now(),
        last_exit: None,
        notify_status: None,
        notify_state: None,
        main_pid: None,
        probe_failures: 0,
        last_probe: None,
        transitions: 0,
        refused_demands: 0,
        blocked_by: None,
        port: None,
    });
    let actor = Actor {
        policy: Policy::of(&service),
        template: Arc::clone(&service),
        service: Arc::clone(&service),
        port: None,
        state,
        shared,
        myself: sender.downgrade(),
        status: status_sender,
        timers: [None; Timer::ALL.len()],
        pushed_ready: None,
        notify_state: None,
        main_pid: None,
        probe_failures: 0,
        last_probe: None,
        run_id: 0,
        exec: None,
        log: Arc::clone(&log),
        notify_status: None,
        drafts: Vec::new(),
        ended: None,
        closing: false,
        run: None,
        pid_wait: None,
        stopped_waiters: Vec::new(),
        refused_demands: 0,
        oom: None,
        guard: None,
    };
    let usage = Arc::new(Usage::default());
    if let Some(idle) = service.idle_stop {
        tokio::spawn(super::usage::idle_stop(
            service.name.clone(),
            idle,
            Arc::clone(&usage),
            status.clone(),
            {
                let actor = sender.downgrade();
                move |input| {
                    actor
                        .upgrade()
                        .is_some_and(|actor| actor.send(Message::Input(input)).is_ok())
                }
            },
            actor.shared.bus.clone(),
        ));
    }
    // Boxed: a future keeps its arguments apart from the state it moves them into, so
    // an actor run by value would be held twice in its task (1 KiB more per service).
    tokio::spawn(Box::new(actor).run(receiver));
    ServiceHandle {
        service,
        sender,
        status,
        log,
        usage,
    }
}

struct Actor {
    /// The service as configured, `{port}` and all.
    template: Arc<Service>,
    /// The service as the current run sees it: the template with the run's port filled in.
    service: Arc<Service>,
    /// The port of the current (or last) run, with `port`.
    port: Option<u16>,
    policy: Policy,
    state: State,
    shared: Arc<Shared>,
    /// For callbacks (reaper, probes, log readers, notify); weak so that dropping every
    /// handle ends the actor.
    myself: WeakMailbox,
    status: watch::Sender<Status>,
    timers: [Option<Instant>; Timer::ALL.len()],
    /// A pushed readiness signal (notify, log) that still waits for `wait-for-ports`.
    pushed_ready: Option<String>,
    notify_state: Option<String>,
    main_pid: Option<u32>,
    probe_failures: u64,
    last_probe: Option<ProbeOutcome>,
    run_id: u64,
    /// Where exec probes of the current run execute.
    exec: Option<Arc<ExecContext>>,
    log: SharedLog,
    notify_status: Option<String>,
    /// Events and run records of the current step, queued after the status is
    /// published, each with the run it concerns: the run current when it was drafted,
    /// since a step that ends a run may spawn the next.
    drafts: Vec<(u64, Draft)>,
    /// The exit of the current run, when this step handles it: recorded by the step's
    /// `EndRun`.
    ended: Option<(u64, Exit, SystemTime)>,
    /// The supervisor is shutting down: nothing may start the service again.
    closing: bool,
    /// The current run's processes, while it has any.
    run: Option<RunTarget>,
    /// With `pidfile`: dropped to stop the wait for the daemon's pid.
    pid_wait: Option<tokio::sync::oneshot::Sender<()>>,
    /// Demands turned down by the spent restart limit (see [`Status::refused_demands`]).
    refused_demands: u64,
    /// Callers of a stop, told once the service has settled.
    stopped_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    /// With a kernel memory limit: the current run's group's OOM kill counter, and its
    /// value at the spawn.
    oom: Option<(PathBuf, u64)>,
    /// A singleton's run: the guard that holds it to this host's lease.
    guard: Option<crate::fence::Guard>,
}

/// Where the current run's processes are, for signals and notify routes.
#[derive(Debug, Clone)]
struct RunTarget {
    /// Its process group: the spawned process's, or the group of the daemon muster took
    /// over (`None` if that is muster's own: then only the daemon itself is signalled).
    group: Option<u32>,
    /// The process whose end ends the run.
    pid: u32,
    /// `MUSTER_RUN_ID=...` and `NOTIFY_SOCKET=...`, carried by every process of the run.
    marker: Vec<String>,
    /// Process groups whose notify datagrams are routed to this actor.
    routes: Vec<u32>,
    /// The spawned process's start time, in clock ticks since boot.
    start_ticks: Option<u64>,
}

impl Actor {
    async fn run(mut self: Box<Self>, mut receiver: mpsc::UnboundedReceiver<Box<Message>>) {
        loop {
            let due = self
                .timers
                .iter()
                .enumerate()
                .filter_map(|(index, at)| at.map(|at| (index, at)))
                .min_by_key(|&(_, at)| at);
            let message = match due {
                Some((index, at)) => tokio::select! {
                    biased;
                    message = receiver.recv() => message,
                                        () = tokio::time::sleep_until(at) => {
                        self.timers[index] = None;
                        let input = self.timer_fired(Timer::ALL[index]);
                        self.apply(input);
                        continue;
                    }
                },
                None => receiver.recv().await,
            };
            let Some(message) = message else { break };
            for input in self.accept(*message) {
                self.apply(input);
            }
        }
    }

    /// The inputs a message means for the current run (none for an earlier run).
    fn accept(&mut self, message: Message) -> Vec<Input> {
        let current = |run: u64| run == self.run_id && self.state.pid.is_some();
        match message {
            Message::Input(input) => vec![input],
            Message::Signal {
                signal,
                target,
                why,
                reply,
            } => {
                let _ = reply.send(self.deliver(signal, target, why));
                Vec::new()
            }
            Message::StopAndTell { down } => {
                self.stopped_waiters.push(down);
                vec![Input::Stop]
            }
            Message::Closing => {
                self.closing = true;
                // What would start the service again by itself is cancelled now; a
                // running process is stopped later, in reverse dependency order.
                let restart_due = match self.state.phase {
                    Phase::Pending | Phase::Exited => true,
                    Phase::Stopping => matches!(
                        self.state.after_stop,
                        machine::AfterStop::Restart | machine::AfterStop::Heal(_)
                    ),
                    _ => false,
                };
                if restart_due {
                    vec![Input::Stop]
                } else {
                    Vec::new()
                }
            }
            Message::OverMemory { run, detail } if current(run) => {
                Log::lock(&self.log).note(&format!("memory-max: {detail}"));
                vec![Input::OverMemory(detail)]
            }
            Message::Exited { run, ended } if current(run) => {
                // The run's group is gone (the reaper killed what was left of it):
                // its guard has nothing left to hold.
                self.guard = None;
                let Ended { mut exit, left } = ended;
                // The kernel counts its kill before it sends the signal: a count past the
                // one at the spawn means this run was killed for its memory.
                if !exit.success()
                    && let Some((counter, before)) = &self.oom
                    && super::cgroup::read_oom_kills(counter).is_some_and(|now| now > *before)
                {
                    Log::lock(&self.log).note(
                        "the kernel's OOM killer killed a process of this run: its group passed memory-max",
                    );
                    exit = Exit::OomKilled;
                }
                Log::lock(&self.log).note(&exit.to_string());
                self.ended = Some((run, exit, SystemTime::now()));
                if left.is_empty() {
                    return vec![Input::Exited(exit)];
                }
                let left = describe_left(&left);
                Log::lock(&self.log).note(&format!("{left} still running"));
                vec![Input::Daemonized { left }]
            }
            Message::Adopted { run, pid } if current(run) => {
                self.pid_wait = None;
                self.adopt(pid);
                vec![Input::MainPid(pid)]
            }
            Message::PidPending { run, detail } if current(run) => {
                Log::lock(&self.log).note(&format!("no daemon pid yet: {detail}"));
                vec![Input::MainPidPending(detail)]
            }
            Message::Probe { run, kind, result } if current(run) => {
                if result.is_err() {
                    self.probe_failures += 1;
                }
                let (ok, message) = match &result {
                    Ok(how) => (true, how.clone()),
                    Err(why) => (false, why.clone()),
                };
                self.last_probe = Some(ProbeOutcome {
                    kind: match kind {
                        ProbeKind::Ready => "ready",
                        ProbeKind::Alive => "alive",
                    },
                    ok,
                    message,
                    time: SystemTime::now(),
                });
                match (kind, result) {
                    (ProbeKind::Alive, result) => vec![Input::Alive(result)],
                    (ProbeKind::Ready, Err(failure)) => vec![Input::ProbeFailed(failure)],
                    (ProbeKind::Ready, Ok(how)) if !self.waits_for_push() => {
                        vec![Input::Ready(how)]
                    }
                    // The ports listen; readiness still needs the service's own signal.
                    (ProbeKind::Ready, Ok(ports)) => match self.pushed_ready.clone() {
                        Some(how) => vec![Input::Ready(format!("{how}; {ports}"))],
                        None => vec![Input::ProbeFailed(format!(
                            "{ports}, but no {} yet",
                            self.push_name()
                        ))],
                    },
                }
            }
            Message::Ready { run, how } if current(run) => self.pushed(how),
            Message::Notify { run, message } if current(run) => self.notified(*message),
            _ => Vec::new(),
        }
    }

    /// Sends a signal asked for from outside (`muster signal`, a reload) to the current
    /// run, and records it.
    fn deliver(
        &mut self,
        signal: Signal,
        target: Target,
        why: SignalWhy,
    ) -> Result<Delivered, String> {
        let name = &self.service.name;
        let run = match &self.run {
            Some(run) if self.state.phase.has_process() && !self.state.awaiting_pid => run,
            _ if self.state.awaiting_pid => {
                return Err(format!(
                    "`{name}` has no process to signal: its launcher has exited and its daemon's pid is not known yet"
                ));
            }
            _ => {
                return Err(format!(
                    "`{name}` is {} ({}): it has no process to signal; start it first",
                    self.state.phase, self.state.reason
                ));
            }
        };
        let (pid, sent) = match (target, run.group) {
            (Target::Group, Some(group)) => (group, signal_group(group, signal)),
            (Target::Group, None) => (run.pid, signal_pid(run.pid, signal)),
            (Target::Main, _) => {
                let main = self.main_pid.unwrap_or(run.pid);
                (main, signal_pid(main, signal))
            }
        };
        sent.map_err(|error| {
            format!(
                "cannot send {} to `{name}` (pid {pid}): {}",
                signal.as_str(),
                super::exit::plain(&error)
            )
        })?;
        let whom = match target {
            Target::Group => format!("the process group {pid}"),
            Target::Main => format!("the main process {pid}"),
        };
        let (message, reason) = match why {
            SignalWhy::Asked => (format!("sent {} to {whom}", signal.as_str()), "asked"),
            SignalWhy::Reload => (
                format!("reload: sent {} to {whom}", signal.as_str()),
                "reload",
            ),
        };
        Log::lock(&self.log).note(&message);
        self.shared.bus.publish(
            name,
            self.run_id,
            EventKind::Signaled,
            message,
            json!({
                "signal": signal.as_str(),
                "target": match target { Target::Group => "group", Target::Main => "main" },
                "pid": pid,
                "reason": reason,
            }),
        );
        Ok(Delivered {
            signal,
            target,
            pid,
        })
    }

    /// Whether readiness is pushed by the service (notify, log) rather than polled.
    fn waits_for_push(&self) -> bool {
        matches!(
            self.service.ready.as_ref().map(|r| &r.check),
            Some(Check::Notify | Check::Log(_))
        )
    }

    fn push_name(&self) -> &'static str {
        match self.service.ready.as_ref().map(|r| &r.check) {
            Some(Check::Notify) => "READY=1",
            _ => "matching log line",
        }
    }

    /// A pushed readiness signal: ready now, or once the ports listen.
    fn pushed(&mut self, how: String) -> Vec<Input> {
        if self
            .policy
            .ready
            .as_ref()
            .is_some_and(|r| r.poll_every.is_some())
        {
            self.pushed_ready = Some(how);
            Vec::new()
        } else {
            vec![Input::Ready(how)]
        }
    }

    /// A notify message: every field the service may send.
    fn notified(&mut self, message: notify::Message) -> Vec<Input> {
        let mut inputs = Vec::new();
        let mut changed = false;
        if let Some(text) = message.status {
            self.notify_status = Some(text);
            changed = true;
        }
        if message.reloading {
            self.notify_state = Some("reloading".to_owned());
            changed = true;
        }
        if message.stopping {
            self.notify_state = Some("stopping".to_owned());
            changed = true;
        }
        if let Some(pid) = message.main_pid
            && let Some(group) = self.state.pid
            && nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid as i32)))
                .is_ok_and(|pgid| pgid.as_raw() as u32 == group)
        {
            self.main_pid = Some(pid);
            changed = true;
        }
        if message.ready {
            if self.notify_state.as_deref() == Some("reloading") {
                self.notify_state = None;
                changed = true;
            }
            if matches!(
                self.service.ready.as_ref().map(|r| &r.check),
                Some(Check::Notify)
            ) {
                inputs.extend(self.pushed("READY=1 on the notify socket".to_owned()));
            }
        }
        if let Some(usec) = message.watchdog_usec {
            inputs.push(Input::WatchdogChanged(
                (usec > 0).then(|| Duration::from_micros(usec)),
            ));
        }
        if let Some(usec) = message.extend_timeout_usec {
            inputs.push(Input::ExtendTimeout(Duration::from_micros(usec)));
        }
        if message.watchdog {
            inputs.push(Input::Heartbeat {
                age: Duration::ZERO,
            });
        }
        if message.watchdog_trigger {
            inputs.push(Input::WatchdogTrigger);
        }
        if changed {
            self.publish_status();
        }
        inputs
    }

    /// A timer's input. The watchdog first looks at the heartbeat file: a touch within
    /// the deadline is a heartbeat, not a hang.
    fn timer_fired(&self, timer: Timer) -> Input {
        if timer != Timer::Watchdog {
            return Input::Timer(timer);
        }
        let deadline = self.state.watchdog.unwrap_or_default();
        let touched = std::fs::metadata(self.shared.heartbeat_file(&self.service.name))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| SystemTime::now().duration_since(modified).ok());
        match touched {
            Some(age) if age < deadline => Input::Heartbeat { age },
            _ => Input::WatchdogExpired {
                last_status: self.notify_status.clone(),
            },
        }
    }

    fn apply(&mut self, input: Input) {
        let was_stopping = self.state.phase == Phase::Stopping;
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let input = if self.closing {
                while_closing(input)
            } else {
                input
            };
            let now = Instant::now();
            let before = self.state.phase;
            let demand = input == Input::Demand;
            let (next, effects) = machine::step(&self.policy, &self.state, input, now.into_std());
            // A demand its spent restart limit turned down changes nothing, yet whoever
            // made it must hear so at once.
            if demand && next == self.state && next.phase.is_settled() {
                self.refused_demands += 1;
            }
            self.state = next;
            if before != self.state.phase {
                self.status.send_modify(|s| {
                    s.since = SystemTime::now();
                    s.transitions += 1;
                });
            }
            for effect in effects {
                if let Some(fed_back) = self.perform(effect, now) {
                    queue.push_back(fed_back);
                }
            }
        }
        // Every exit the machine takes ends its run with `EndRun`; this is a net.
        if self.ended.is_some() && !self.state.phase.has_process() {
            self.end_run(None);
        }
        let drafts = std::mem::take(&mut self.drafts);
        self.shared
            .bus
            .publish_runs(&self.service.name, drafts, || self.publish_status());
        // The stop is done once its process is gone: settled, or (asked to start
        // meanwhile) on to its next run.
        let stop_done = was_stopping && self.state.phase != Phase::Stopping;
        if self.state.phase.is_settled() || stop_done {
            for down in self.stopped_waiters.drain(..) {
                let _ = down.send(());
            }
        }
    }

    fn publish_status(&self) {
        let state = &self.state;
        self.status.send_if_modified(|status| {
            let next = Status {
                service: status.service.clone(),
                phase: state.phase,
                reason: state.reason.clone(),
                blocked_by: state.blocked_by.clone(),
                // A launcher that has exited is no process to show.
                pid: state.pid.filter(|_| !state.awaiting_pid),
                run_id: self.run_id,
                restarts: state.restarts,
                since: status.since,
                transitions: status.transitions,
                refused_demands: self.refused_demands,
                last_exit: state.last_exit.map(|e| e.to_string()),
                notify_status: self.notify_status.clone(),
                notify_state: self.notify_state.clone(),
                main_pid: self.main_pid,
                probe_failures: self.probe_failures,
                last_probe: self.last_probe.clone(),
                port: self.port,
            };
            // A repeated result only refreshes its time; observers are woken by news.
            let probe_news = match (&next.last_probe, &status.last_probe) {
                (Some(new), Some(old)) => {
                    (new.kind, new.ok, &new.message) != (old.kind, old.ok, &old.message)
                }
                (new, old) => new.is_some() != old.is_some(),
            };
            let changed = (next.phase, &next.reason, next.pid, next.run_id)
                != (status.phase, &status.reason, status.pid, status.run_id)
                || (&next.notify_status, &next.notify_state, next.main_pid)
                    != (&status.notify_status, &status.notify_state, status.main_pid)
                || next.probe_failures != status.probe_failures
                || next.refused_demands != status.refused_demands
                || probe_news;
            *status = next;
            changed
        });
    }

    fn perform(&mut self, effect: Effect, now: Instant) -> Option<Input> {
        match effect {
            // A last guard: every path to a spawn is closed at shutdown, but a stop that
            // was to restart (a heal, a reload) may end after the shutdown began.
            Effect::Spawn if self.closing => {
                return Some(Input::SpawnFailed(
                    "not started: the supervisor is shutting down".to_owned(),
                ));
            }
            Effect::Spawn => return Some(self.spawn()),
            Effect::Probe(kind) => self.probe(kind, now),
            Effect::Extend(timer, by) => {
                let at = now + by;
                let slot = &mut self.timers[timer.index()];
                if slot.is_some_and(|current| current < at) {
                    *slot = Some(at);
                }
            }
            // Nothing to wait for: tokio's timers tick in whole milliseconds, so a zero
            // delay armed as a timer would still cost up to one.
            Effect::Arm(timer, delay) if delay.is_zero() => return Some(Input::Timer(timer)),
            Effect::Arm(timer, delay) => {
                let delay = match timer {
                    // Jitter spreads restarts of services that failed together.
                    Timer::Restart => delay.mul_f64(1.0 - 0.2 * fastrand::f64()),
                    _ => delay,
                };
                self.timers[timer.index()] = Some(now + delay);
            }
            Effect::Disarm(timer) => self.timers[timer.index()] = None,
            Effect::Signal(signal) => {
                let Some(run) = &self.run else {
                    return None;
                };
                // Before the daemon is known, what the launcher left may have left its
                // group too: everything carrying the run's marker gets the signal.
                let marker = self
                    .state
                    .awaiting_pid
                    .then_some((run.marker.as_slice(), run.pid));
                let sent = match run.group {
                    Some(group) => signal_run(group, marker, signal),
                    None => {
                        nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.pid as i32), signal)
                            .or_else(|errno| match errno {
                                nix::errno::Errno::ESRCH => Ok(()),
                                errno => Err(errno),
                            })
                            .map_err(std::io::Error::from)
                    }
                };
                if signal == nix::sys::signal::Signal::SIGCONT {
                    // Only a safety net for stopped processes; not worth a log line.
                    return None;
                }
                let whom = match run.group {
                    Some(group) => format!("process group {group}"),
                    None => format!("pid {}", run.pid),
                };
                let note = match sent {
                    Ok(()) => format!("sent {} to {whom}", signal.as_str()),
                    Err(error) => format!("cannot signal {whom}: {error}"),
                };
                Log::lock(&self.log).note(&note);
            }
            Effect::Emit(emit) => self.emit(emit),
            Effect::EndRun(reason) => self.end_run(Some(reason)),
            Effect::FindMainPid => self.find_main_pid(),
        }
        None
    }

    /// With `pidfile`: waits for the daemon's pid in the file, vouches for it and hands
    /// it to the reaper; the answer comes back as `Adopted`. Stopped by dropping
    /// `pid_wait` (the run ends, or the machine gives up at the start deadline).
    fn find_main_pid(&mut self) {
        let (Some(path), Some(run)) = (self.service.pidfile.clone(), &self.run) else {
            return;
        };
        let claim = Claim {
            path,
            launcher: run.pid,
            since_ticks: run.start_ticks,
            marker: run.marker.clone(),
        };
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        self.pid_wait = Some(stop);
        let reaper = Arc::clone(&self.shared.reaper);
        let myself = self.myself.clone();
        let run_id = self.run_id;
        let watch = Watch {
            marker: claim.marker.clone(),
            keep_on_success: false,
            first: Some(claim.launcher),
        };
        tokio::spawn(async move {
            let mut wake = Wake::new(&claim.path);
            let mut told: Option<String> = None;
            loop {
                let send = |message| {
                    if let Some(sender) = myself.upgrade() {
                        let _ = sender.send(message);
                    }
                };
                let attempt = daemon::vouch(&claim).and_then(|pid| {
                    let on_exit = {
                        let myself = myself.clone();
                        move |ended| {
                            if let Some(sender) = myself.upgrade() {
                                let _ = sender.send(Message::Exited { run: run_id, ended });
                            }
                        }
                    };
                    let announce = || send(Message::Adopted { run: run_id, pid });
                    reaper.adopt(pid, watch.clone(), announce, on_exit)
                });
                let Err(detail) = attempt else { return };
                if told.as_ref() != Some(&detail) {
                    told = Some(detail.clone());
                    send(Message::PidPending {
                        run: run_id,
                        detail,
                    });
                }
                tokio::select! {
                    _ = &mut stopped => return,
                    () = wake.next() => {}
                }
            }
        });
    }

    /// With `pidfile`: the daemon `pid` is the run's main process from now on; its
    /// group is signalled (unless it is muster's own) and routes notify datagrams.
    fn adopt(&mut self, pid: u32) {
        let group = procfs::stat(pid)
            .map(|stat| stat.pgrp)
            .filter(|&group| group > 1 && group != nix::unistd::getpgrp().as_raw() as u32);
        let pidfile = self
            .service
            .pidfile
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Log::lock(&self.log).note(&format!(
            "took over daemon pid {pid} from {pidfile}: {}",
            procfs::command_line(pid)
        ));
        let run_id = self.run_id;
        let route = self.route(run_id);
        if let Some(run) = &mut self.run {
            run.pid = pid;
            run.group = group;
            if let Some(group) = group
                && !run.routes.contains(&group)
            {
                self.shared.notify.register(group, route);
                run.routes.push(group);
            }
        }
    }

    /// Routes notify datagrams of run `run` to this actor.
    fn route(&self, run: u64) -> super::notify::Route {
        let myself = self.myself.clone();
        Box::new(move |message| {
            if let Some(sender) = myself.upgrade() {
                let _ = sender.send(Message::Notify {
                    run,
                    message: Box::new(message),
                });
            }
        })
    }

    /// Records the end of the run whose exit this step handles, with what ended it (the
    /// machine's word; the phase's reason if it gave none). Drafted now, so it is under
    /// the old run even when the same step spawns the next.
    fn end_run(&mut self, reason: Option<String>) {
        // Nothing of the run is to be signalled or waited for any more.
        self.pid_wait = None;
        if let Some(run) = self.run.take() {
            for group in run.routes {
                self.shared.notify.unregister(group);
            }
        }
        let Some((run_id, exit, ended_at)) = self.ended.take() else {
            return;
        };
        let (exit_code, signal) = exit.parts();
        let signal = signal.map(|signal| signal.as_str().to_owned());
        self.drafts.push((
            run_id,
            Draft::RunEnded(RunEnd {
                run_id,
                ended_at,
                exit_code,
                signal,
                reason: reason.unwrap_or_else(|| self.state.reason.clone()),
            }),
        ));
    }

    fn emit(&mut self, emit: Emit) {
        let (kind, message, data) = match emit {
            Emit::Spawned { pid } => (
                EventKind::Spawned,
                format!("pid {pid}"),
                json!({ "pid": pid }),
            ),
            Emit::Ready { how } => (EventKind::Ready, how.clone(), json!({ "how": how })),
            Emit::Unhealthy { reason } => (
                EventKind::Unhealthy,
                reason.clone(),
                json!({ "reason": reason }),
            ),
            Emit::Healthy => (EventKind::Healthy, "healthy again".to_owned(), json!({})),
            Emit::Exited { exit } => {
                let (code, signal) = exit.parts();
                (
                    EventKind::Exited,
                    exit.to_string(),
                    json!({
                        "code": code,
                        "signal": signal.map(Signal::as_str),
                        "cause": exit.cause(),
                    }),
                )
            }
            Emit::Restarting {
                delay,
                attempt,
                cause,
            } => {
                let when = match attempt {
                    0 if delay.is_zero() => "now".to_owned(),
                    0 => format!("in {}", machine::human(delay)),
                    _ => format!("in {} (attempt {attempt})", machine::human(delay)),
                };
                (
                    EventKind::Restarting,
                    format!("{when}: {cause}"),
                    json!({
                        "delay_ms": delay.as_millis() as u64,
                        "attempt": attempt,
                        "cause": cause.kind(),
                        "reason": cause.to_string(),
                    }),
                )
            }
            Emit::Stopping { signal } => (
                EventKind::Stopping,
                format!("sent {}", signal.as_str()),
                json!({ "signal": signal.as_str() }),
            ),
            Emit::Stopped { how, cause } => (
                EventKind::Stopped,
                how,
                json!({ "cause": cause.kind(), "reason": cause.to_string() }),
            ),
            Emit::Completed => (
                EventKind::Completed,
                "exited with status 0".to_owned(),
                json!({}),
            ),
            Emit::Failed { reason } => {
                Log::lock(&self.log).note(&format!("failed: {reason}"));
                (
                    EventKind::Failed,
                    reason.clone(),
                    json!({ "reason": reason }),
                )
            }
        };
        self.drafts.push((
            self.run_id,
            Draft::Event {
                kind,
                message,
                data,
            },
        ));
    }

    fn probe(&self, kind: ProbeKind, now: Instant) {
        let (check, limit) = match kind {
            ProbeKind::Ready => {
                let Some(ready) = &self.policy.ready else {
                    return;
                };
                let remaining = self.timers[Timer::StartDeadline.index()]
                    .map_or(ready.deadline, |deadline| {
                        deadline.saturating_duration_since(now)
                    });
                let check = self.service.ready.as_ref().map(|r| r.check.clone());
                (
                    check,
                    ATTEMPT_LIMIT.min(remaining).max(Duration::from_millis(1)),
                )
            }
            ProbeKind::Alive => {
                let Some(alive) = &self.service.alive else {
                    return;
                };
                (Some(alive.check.clone()), alive.timeout)
            }
        };
        // `wait-for-ports`: readiness also needs every declared port to listen.
        let ports = match kind {
            ProbeKind::Ready if self.service.wait_for_ports => self.service.ports.clone(),
            _ => Vec::new(),
        };
        let reaper = Arc::clone(&self.shared.reaper);
        let exec = self.exec.clone().unwrap_or_else(|| {
            Arc::new(ExecContext {
                cwd: self.service.cwd.clone(),
                env: Vec::new(),
            })
        });
        let myself = self.myself.clone();
        let run = self.run_id;
        tokio::spawn(async move {
            // An exec probe waits for its turn first (few run at once across the
            // supervisor); its time limit counts from then.
            let _turn = probe::turn(check.as_ref()).await;
            let attempt = async {
                let mut passed = Vec::new();
                if !ports.is_empty() {
                    passed.push(probe::ports_listening(&ports).await?);
                }
                if let Some(check) = check.as_ref().filter(|c| c.polls()) {
                    passed.push(probe::attempt(check, &reaper, &exec).await?);
                }
                Ok(passed.join("; "))
            };
            let result = match tokio::time::timeout(limit, attempt).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {}", machine::human(limit))),
            };
            if let Some(sender) = myself.upgrade() {
                let _ = sender.send(Message::Probe { run, kind, result });
            }
        });
    }

    /// Spawns the next run; the answer is fed back into the machine.
    fn spawn(&mut self) -> Input {
        let run = self.shared.bus.next_run_id();
        // Each run gets its port before anything reads the definition: the command,
        // probes and route target of this run all name it.
        match self.template.port {
            None => {}
            Some(AssignedPort::Fixed(port)) => self.port = Some(port),
            Some(AssignedPort::Auto) => match super::ports::free_port() {
                Ok(port) => self.port = Some(port),
                Err(error) => {
                    return self.spawn_failed(format!("cannot find a free port: {error}"));
                }
            },
        }
        if let Some(port) = self.port {
            self.service = Arc::new(self.template.with_port(port));
        }
        let Prepared {
            mut spawn,
            exec,
            notes,
            oom,
            sampled,
            output,
        } = match prepare(&self.service, self.port, run, &self.shared) {
            Ok(prepared) => prepared,
            Err(reason) => return self.spawn_failed(reason),
        };
        // A singleton starts only while this host owns it, with its fence, and under
        // a guard started first, so that no moment of the run is unguarded.
        let guard = match (&self.service.singleton, &self.shared.fences) {
            (Some(_), Some(fences)) => {
                let fence = match fences.may_start(self.service.name.as_str()) {
                    Ok(fence) => fence,
                    Err(why) => return self.spawn_failed(why),
                };
                spawn.command.env("MUSTER_FENCE", fence.to_string());
                let started = fences.guard().and_then(|(guard_command, stdin, guard)| {
                    let mut spawn = Spawn::new(guard_command);
                    spawn.arg0 = Some("muster".into());
                    spawn.stdin = Io::Fd(stdin);
                    spawn.stderr = Io::Inherit;
                    self.shared
                        .reaper
                        .spawn(spawn, |_| {})
                        .map_err(|failed| failed.error)?;
                    Ok(guard)
                });
                match started {
                    Ok(guard) => Some(guard),
                    Err(error) => {
                        return self.spawn_failed(format!(
                            "cannot start the guard that holds a singleton to this host's lease: {}",
                            super::exit::plain(&error)
                        ));
                    }
                }
            }
            _ => None,
        };
        // Where the dependencies other hosts may run are now.
        if let Some(fences) = &self.shared.fences {
            for (key, value) in super::remote::environment(&self.service, fences) {
                spawn.command.env(key, value);
            }
        }
        let myself = self.myself.clone();
        let marker = vec![
            format!("MUSTER_RUN_ID={run}"),
            format!("NOTIFY_SOCKET={}", self.shared.notify.address),
        ];
        let watch = Watch {
            marker: marker.clone(),
            // A launcher's daemon is to be taken over, not killed as a leftover.
            keep_on_success: self.service.pidfile.is_some(),
            first: None,
        };
        let program = spawn.command.get_program().to_string_lossy().into_owned();
        let child = self
            .shared
            .reaper
            .spawn_watched(spawn, watch, move |ended| {
                if let Some(sender) = myself.upgrade() {
                    let _ = sender.send(Message::Exited { run, ended });
                }
            });
        let mut child = match child {
            Ok(child) => child,
            // A step of the setup the kernel refused names itself.
            Err(SpawnError {
                step: Some(why), ..
            }) => return self.spawn_failed(why),
            Err(SpawnError { error, .. }) => {
                return self.spawn_failed(format!(
                    "cannot spawn {program}: {}",
                    super::exit::plain(&error)
                ));
            }
        };
        for note in notes {
            Log::lock(&self.log).note(&note);
        }
        self.oom = oom;
        let pid = child.pid;
        if let Some(guard) = guard {
            guard.watch(pid, self.service.stop_signal, self.service.stop_timeout);
            self.guard = Some(guard);
        }
        let start_ticks = procfs::start_ticks(pid);
        // Recorded before anything else: a supervisor killed from here on leaves a
        // row the next one finds, with what tells this process from a later one
        // given the same pid.
        self.drafts.push((
            run,
            Draft::RunStarted(RunStart {
                run_id: run,
                service: self.service.name.clone(),
                pid,
                start_ticks,
                boot_id: procfs::boot_id(),
                instance: self.shared.notify.address.clone(),
                started_at: SystemTime::now(),
            }),
        ));
        self.run_id = run;
        self.last_probe = None;
        self.exec = Some(Arc::new(exec));
        self.notify_status = None;
        self.notify_state = None;
        self.main_pid = None;
        self.pushed_ready = None;
        let pipes = match output {
            descriptors::Output::Separate([out, err]) => vec![
                (child.stdout.take(), Stream::Stdout, out),
                (child.stderr.take(), Stream::Stderr, err),
            ],
            descriptors::Output::Merged { read, lease } => {
                vec![(Some(read), Stream::Stdout, lease)]
            }
        };
        let mut receivers = Vec::with_capacity(2);
        let mut leases = Vec::with_capacity(2);
        for (fd, stream, lease) in pipes {
            let Some(fd) = fd else { continue };
            match pipe::Receiver::from_owned_fd(fd) {
                Ok(receiver) => {
                    receivers.push((receiver, stream));
                    leases.push(lease);
                }
                Err(error) => {
                    Log::lock(&self.log).note(&format!("cannot read {stream:?}: {error}"))
                }
            }
        }
        if !receivers.is_empty() {
            let log = Arc::clone(&self.log);
            let watch = self.log_watch(run);
            tokio::spawn(async move {
                pump(receivers, log, watch).await;
                drop(leases);
            });
        }
        self.shared.notify.register(pid, self.route(run));
        self.pid_wait = None;
        self.run = Some(RunTarget {
            group: Some(pid),
            pid,
            marker,
            routes: vec![pid],
            start_ticks,
        });
        Log::lock(&self.log).note(&format!(
            "spawned pid {pid} (run {run}): {}",
            self.describe_run()
        ));
        if let Some(limit) = sampled {
            self.watch_memory(run, pid, limit);
        }
        Input::Spawned { pid }
    }

    /// Without a kernel memory limit: samples the run's group every
    /// [`super::cgroup::SAMPLE_EVERY`] while the run lasts, and says once that it holds
    /// more than `limit`.
    fn watch_memory(&self, run: u64, pid: u32, limit: u64) {
        let myself = self.myself.clone();
        let mut status = self.status.subscribe();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(super::cgroup::SAMPLE_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let sample = tokio::select! {
                    _ = every.tick() => true,
                    changed = status.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        false
                    }
                };
                {
                    // The status may not show this run yet; a later run, or this one
                    // without a process, ends the watch.
                    let now = status.borrow_and_update();
                    if now.run_id > run || (now.run_id == run && !now.phase.has_process()) {
                        return;
                    }
                }
                if !sample {
                    continue;
                }
                let over =
                    tokio::task::spawn_blocking(move || super::cgroup::over_memory(pid, limit))
                        .await
                        .ok()
                        .flatten();
                if let Some(detail) = over {
                    if let Some(sender) = myself.upgrade() {
                        let _ = sender.send(Message::OverMemory { run, detail });
                    }
                    return;
                }
            }
        });
    }

    fn spawn_failed(&mut self, reason: String) -> Input {
        Log::lock(&self.log).note(&reason);
        Input::SpawnFailed(reason)
    }

    /// For a `log` readiness probe: a watch that reports the first matching line.
    fn log_watch(&self, run: u64) -> Option<LineWatch> {
        let Some(Check::Log(regex)) = self.service.ready.as_ref().map(|r| &r.check) else {
            return None;
        };
        let regex = regex.clone();
        let myself = self.myself.clone();
        Some(Box::new(move |line: &str| {
            if !regex.is_match(line) {
                return true;
            }
            if let Some(sender) = myself.upgrade() {
                let how = format!("log line matched /{}/", regex.as_str());
                let _ = sender.send(Message::Ready { run, how });
            }
            false
        }))
    }

    fn describe_run(&self) -> String {
        match &self.service.run {
            Run::Argv(argv) => {
                shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
            }
            Run::Shell(line) => format!("sh -c {line:?}"),
        }
    }
}

/// "pid 4321 (`sleep 1000`)", and how many more: the processes a run left running.
fn describe_left(left: &[(u32, String)]) -> String {
    let mut text = match left.first() {
        Some((pid, command)) => format!("pid {pid} (`{command}`)"),
        None => String::new(),
    };
    if left.len() > 1 {
        text.push_str(&format!(" and {} more", left.len() - 1));
    }
    text
}

/// One run's command, ready to spawn.
struct Prepared {
    /// The command, its streams and its setup between fork and exec.
    spawn: Spawn,
    /// Where the run's exec probes execute.
    exec: ExecContext,
    /// What the service's log should say about the start.
    notes: Vec<String>,
    /// With a kernel memory limit: the run's OOM counter and its value now.
    oom: Option<(PathBuf, u64)>,
    /// `memory-max` muster must watch itself.
    sampled: Option<u64>,
    /// How its output reaches muster: two pipes, or one under a tight descriptor limit.
    output: descriptors::Output,
}

/// The command for one run of `service`, and the context its exec probes run in. Env
/// files are read now, so an edit applies at the next start; so are `user` and `group`.
fn prepare(
    service: &Service,
    port: Option<u16>,
    run: u64,
    shared: &Shared,
) -> Result<Prepared, String> {
    let cwd = &service.cwd;
    if !cwd.is_dir() {
        return Err(format!(
            "working directory {} does not exist",
            cwd.display()
        ));
    }
    super::ports::check_free(&service.ports, &|pid| shared.leftover(pid))?;
    if let Some(AssignedPort::Fixed(fixed)) = service.port {
        let declared = Port {
            ip: None,
            port: fixed,
        };
        if !service.ports.iter().any(|p| p.overlaps(&declared)) {
            super::ports::check_free(&[declared], &|pid| shared.leftover(pid))?;
        }
    }
    let identity = identity(service)?;
    let mut env: Vec<(String, String)> = Vec::new();
    // The user's own variables come first: env files and `env` may still set them.
    if let Some(identity) = identity.as_ref().filter(|_| service.process.user.is_some()) {
        env.push(("USER".to_owned(), identity.name.clone()));
        env.push(("LOGNAME".to_owned(), identity.name.clone()));
        if let Some(home) = &identity.home {
            env.push(("HOME".to_owned(), home.clone()));
        }
    }
    for file in &service.env_files {
        let text = std::fs::read_to_string(file).map_err(|error| {
            format!(
                "cannot read env-file {}: {}",
                file.display(),
                super::exit::plain(&error)
            )
        })?;
        let pairs = envfile::parse(&text)
            .map_err(|error| format!("env-file {}: {error}", file.display()))?;
        env.extend(pairs);
    }
    env.extend(service.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let exec = ExecContext {
        cwd: cwd.clone(),
        env: env.clone(),
    };
    if let Some(port) = port {
        env.push(("PORT".to_owned(), port.to_string()));
    }
    env.push(("MUSTER_SERVICE".to_owned(), service.name.to_string()));
    if let Some(replica) = &service.replica {
        env.push(("MUSTER_REPLICA".to_owned(), replica.index.to_string()));
    }
    env.push(("MUSTER_RUN_ID".to_owned(), run.to_string()));
    env.push(("NOTIFY_SOCKET".to_owned(), shared.notify.address.clone()));
    // The heartbeat file starts fresh at each spawn: its age is time since the spawn.
    let heartbeat = shared.heartbeat_file(&service.name);
    std::fs::File::create(&heartbeat).map_err(|error| {
        format!(
            "cannot create {}: {}",
            heartbeat.display(),
            super::exit::plain(&error)
        )
    })?;
    let mut notes = Vec::new();
    if let Some(identity) = &identity {
        // The service must be able to touch it as its own user.
        std::os::unix::fs::chown(&heartbeat, Some(identity.uid), Some(identity.gid)).map_err(
            |error| {
                format!(
                    "cannot give {} to user `{}`: {}",
                    heartbeat.display(),
                    identity.name,
                    super::exit::plain(&error)
                )
            },
        )?;
        if let Some(closed) = identity.closed_dir_before(&heartbeat) {
            notes.push(format!(
                "user `{}` cannot reach $MUSTER_HEARTBEAT_FILE ({} is closed to it): send \
                 WATCHDOG=1 on $NOTIFY_SOCKET instead, or open the directory to it",
                identity.name,
                closed.display()
            ));
        }
    }
    env.push((
        "MUSTER_HEARTBEAT_FILE".to_owned(),
        heartbeat.display().to_string(),
    ));
    if let Some(deadline) = service.watchdog {
        env.push(("WATCHDOG_USEC".to_owned(), deadline.as_micros().to_string()));
    }
    let (mut command, arg0) = match &service.run {
        Run::Argv(argv) => {
            let path_var = env
                .iter()
                .rev()
                .find(|(key, _)| key == "PATH")
                .map(|(_, value)| std::ffi::OsString::from(value))
                .or_else(|| std::env::var_os("PATH"));
            let program = executable::resolve(&argv[0], cwd, path_var.as_deref())
                .map_err(|error| format!("cannot spawn: {error}"))?;
            let mut command = Command::new(program);
            command.args(&argv[1..]);
            (command, Some(argv[0].clone().into()))
        }
        Run::Shell(line) => {
            let mut command = Command::new("/bin/sh");
            command.arg("-c").arg(line);
            (command, None)
        }
    };
    // Before the service's own: muster's notify socket and the service's watchdog.
    super::process::forget_starter(&mut command);
    command.current_dir(cwd).envs(env).process_group(0);
    let mut spawn = Spawn::new(command);
    spawn.arg0 = arg0;
    let (output, write) = descriptors::Output::for_spawn()
        .map_err(|error| format!("cannot make a pipe for its output: {error}"))?;
    match write {
        None => {
            spawn.stdout = Io::Piped;
            spawn.stderr = Io::Piped;
        }
        Some(write) => {
            let second = write
                .try_clone()
                .map_err(|error| format!("cannot make a pipe for its output: {error}"))?;
            spawn.stdout = Io::Fd(write);
            spawn.stderr = Io::Fd(second);
            notes.push(
                "stdout and stderr share one pipe (the descriptor limit is too low for two \
                 per service): stderr lines are recorded as stdout"
                    .to_owned(),
            );
        }
    }
    let groups = shared.cgroups.for_run(&service.name, &service.process);
    notes.extend(groups.notes);
    // Without anything to set up, std spawns with posix_spawn, the fastest way.
    if service.process.needs_setup() || !groups.procs.is_empty() {
        spawn.setup = Some(setup::Plan {
            settings: service.process.clone(),
            identity,
            cgroups: groups.procs,
        });
    }
    Ok(Prepared {
        spawn,
        exec,
        notes,
        oom: groups.oom,
        sampled: groups.sampled,
        output,
    })
}

/// Who a run of `service` runs as, when muster must switch to it: `None` without `user`
/// and `group`, or when muster already is that user and group. Looked up at each start.
/// A muster that is not root cannot switch, which fails the start with the reason.
/// Who a run of `service` runs as, when it names a `user` or `group` that is not
/// muster's own; an error (in words) when muster is not privileged to switch to it.
pub fn identity(service: &Service) -> Result<Option<Identity>, String> {
    let settings = &service.process;
    if settings.user.is_none() && settings.group.is_none() {
        return Ok(None);
    }
    let identity = account::resolve(settings.user.as_deref(), settings.group.as_deref())
        .map_err(|error| format!("{error}; {}", error.help()))?;
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    if uid.is_root() {
        return Ok(Some(identity));
    }
    if identity.uid == uid.as_raw() && identity.gid == gid.as_raw() {
        return Ok(None);
    }
    let (what, key) = match &settings.user {
        Some(_) => (format!("user `{}`", identity.name), "user"),
        None => (
            format!("group `{}`", settings.group.as_deref().unwrap_or_default()),
            "group",
        ),
    };
    Err(format!(
        "cannot run as {what}: muster runs as uid {} and is not privileged to switch users; \
         run muster as root, or remove `{key}`",
        uid.as_raw()
    ))
}

/// What an input means once the supervisor is shutting down: whatever would start the
/// process (a start, a restart, the restart timer) stops it instead.
fn while_closing(input: Input) -> Input {
    match input {
        Input::Start | Input::Demand | Input::Restart | Input::Timer(Timer::Restart) => Input::Stop,
        other => other,
    }
}
