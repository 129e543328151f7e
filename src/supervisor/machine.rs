//! The service state machine, pure: [`step`] maps a state and one input to the next
//! state and the effects the actor must perform. No I/O, no clock (time comes in with
//! the input), no randomness (restart jitter is applied by the actor when it arms a
//! timer; probe phases are a hash of the service's name and run, see [`probe_phase`]).
//!
//! Every change of phase must be listed in [`ALLOWED`]; `step` asserts it in debug
//! builds and the table tests prove that the inputs reach exactly those transitions.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde::Serialize;

pub use super::exit::Exit;
use crate::config::{Backoff, OnUnhealthy, RestartLimit, RestartPolicy, Service, ServiceName};

/// Where a service is in its life. Every phase comes with a reason (see [`State`]).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    serde::Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Waiting for its dependencies.
    Pending,
    /// Spawned; readiness not proven yet.
    Starting,
    Healthy,
    /// Running, but liveness or the watchdog says it is not working.
    Unhealthy,
    /// Asked to stop; waiting for the process to exit.
    Stopping,
    /// Not running, on purpose.
    Stopped,
    /// Ended; a restart is scheduled.
    Exited,
    /// A one-shot that finished with status 0.
    Completed,
    /// muster gave up: start deadline, restart budget spent, dependency failed, cannot spawn.
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 9] = [
        Phase::Pending,
        Phase::Starting,
        Phase::Healthy,
        Phase::Unhealthy,
        Phase::Stopping,
        Phase::Stopped,
        Phase::Exited,
        Phase::Completed,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "pending",
            Phase::Starting => "starting",
            Phase::Healthy => "healthy",
            Phase::Unhealthy => "unhealthy",
            Phase::Stopping => "stopping",
            Phase::Stopped => "stopped",
            Phase::Exited => "exited",
            Phase::Completed => "completed",
            Phase::Failed => "failed",
        }
    }

    /// A process of this service may be alive.
    pub fn has_process(self) -> bool {
        matches!(
            self,
            Phase::Starting | Phase::Healthy | Phase::Unhealthy | Phase::Stopping
        )
    }

    /// Nothing will happen to the service unless someone asks.
    pub fn is_settled(self) -> bool {
        matches!(self, Phase::Stopped | Phase::Completed | Phase::Failed)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Every change of phase `step` may make. Staying in the same phase is always allowed.
pub const ALLOWED: &[(Phase, Phase)] = {
    use Phase::*;
    &[
        (Pending, Starting),
        (Pending, Stopped),
        (Pending, Failed),
        (Pending, Exited),
        (Starting, Healthy),
        (Starting, Stopping),
        // With `pidfile`, stopped before the daemon is known: no process to wait for.
        (Starting, Stopped),
        (Starting, Exited),
        (Starting, Completed),
        (Starting, Failed),
        (Healthy, Unhealthy),
        (Healthy, Stopping),
        (Healthy, Exited),
        (Healthy, Completed),
        (Healthy, Failed),
        (Unhealthy, Healthy),
        (Unhealthy, Stopping),
        (Unhealthy, Exited),
        (Unhealthy, Completed),
        (Unhealthy, Failed),
        (Stopping, Starting),
        (Stopping, Stopped),
        (Stopping, Failed),
        (Exited, Starting),
        (Exited, Stopped),
        (Stopped, Pending),
        (Stopped, Starting),
        (Stopped, Exited),
        (Completed, Pending),
        (Completed, Starting),
        (Failed, Pending),
        (Failed, Starting),
        (Failed, Exited),
    ]
};

pub fn allowed(from: Phase, to: Phase) -> bool {
    from == to || ALLOWED.contains(&(from, to))
}

/// Why a run ended, a service stopped or a restart came: data until it reaches a
/// person (the `cause` of `restarting` and `stopped` events, the end reason of a run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The process exited by itself.
    Exit(Exit),
    /// Heartbeats stopped, or the service reported itself hung; the text says which.
    Watchdog(String),
    /// The liveness probe failed; the text says how.
    Liveness(String),
    /// Readiness was not proven within the start deadline; the text says how.
    StartDeadline(String),
    /// Someone asked: `muster stop`, `restart`, `down`, the API, a shutdown, a reload.
    Asked,
    /// `idle-stop`: not used for this long.
    Idle(Duration),
    /// Without a kernel limit, `memory-max`: its group held more; the text says how much.
    MemoryMax(String),
    /// A dependency it asks to follow (`restart = true`) got a new run.
    DependencyRestarted(ServiceName),
}

impl Cause {
    /// Its stable name, for event data: `exit`, `oom-killed`, `watchdog`, `liveness`,
    /// `start-deadline`, `asked`, `idle`, `memory-max` or `dependency-restarted`.
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::Exit(exit) => exit.cause(),
            Cause::Watchdog(_) => "watchdog",
            Cause::Liveness(_) => "liveness",
            Cause::StartDeadline(_) => "start-deadline",
            Cause::Asked => "asked",
            Cause::Idle(_) => "idle",
            Cause::MemoryMax(_) => "memory-max",
            Cause::DependencyRestarted(_) => "dependency-restarted",
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Exit(exit) => exit.fmt(f),
            Cause::Watchdog(text)
            | Cause::Liveness(text)
            | Cause::StartDeadline(text)
            | Cause::MemoryMax(text) => f.write_str(text),
            Cause::Asked => f.write_str("on request"),
            Cause::Idle(idle) => write!(f, "idle for {}", human(*idle)),
            Cause::DependencyRestarted(dependency) => write!(f, "`{dependency}` restarted"),
        }
    }
}

/// The timers a service may have armed; at most one of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// The next readiness attempt of a polling probe.
    Probe,
    /// The start deadline (`ready.timeout`).
    StartDeadline,
    /// The end of the backoff before a restart.
    Restart,
    /// `stop-timeout` after the stop signal: then SIGKILL.
    StopDeadline,
    /// The next liveness attempt.
    Alive,
    /// The heartbeat deadline.
    Watchdog,
}

impl Timer {
    pub const ALL: [Timer; 6] = [
        Timer::Probe,
        Timer::StartDeadline,
        Timer::Restart,
        Timer::StopDeadline,
        Timer::Alive,
        Timer::Watchdog,
    ];

    pub fn index(self) -> usize {
        match self {
            Timer::Probe => 0,
            Timer::StartDeadline => 1,
            Timer::Restart => 2,
            Timer::StopDeadline => 3,
            Timer::Alive => 4,
            Timer::Watchdog => 5,
        }
    }
}

/// Which probe an attempt is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Ready,
    Alive,
}

/// What can happen to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start it: someone asked for this service by name (`muster start`, the boot, a
    /// reload); the restart budget begins afresh.
    Start,
    /// Start it because something needs it (an `ensure`, a proxied connection, a
    /// dependent): bound by the restart policy like a restart. After a failure of its
    /// own it waits out its backoff and is charged to its restart limit; with the limit
    /// spent it stays failed until someone asks by name.
    Demand,
    /// Wait for dependencies before starting (a start was asked while they are not met).
    Await(String),
    /// A dependency will not reach its condition; the text says why.
    DependencyFailed {
        /// The dependency that will not meet its condition.
        dependency: ServiceName,
        /// Why, in its own words.
        reason: String,
    },
    Stop,
    /// `idle-stop`: stop it, unused for this long.
    IdleStop(Duration),
    /// A dependency it follows (`restart = true`) got a new run: stop it, to be started
    /// again once the dependency meets its condition.
    DependencyRestarted(ServiceName),
    Restart,
    /// The spawn effect succeeded.
    Spawned {
        pid: u32,
    },
    /// The spawn effect failed; the text says why.
    SpawnFailed(String),
    /// Readiness proven (probe passed, `READY=1`, log line matched); the text says how.
    Ready(String),
    /// One readiness attempt failed; the text says how.
    ProbeFailed(String),
    /// Liveness or the watchdog says the running service is not working.
    Unhealthy(String),
    /// Liveness passed again.
    Recovered,
    /// One liveness attempt's answer.
    Alive(Result<String, String>),
    /// A heartbeat (`WATCHDOG=1`, or the heartbeat file touched `age` ago).
    Heartbeat {
        age: Duration,
    },
    /// The heartbeat deadline passed; `last_status` is the service's last `STATUS=`.
    WatchdogExpired {
        last_status: Option<String>,
    },
    /// The service asked to be treated as hung (`WATCHDOG=trigger`).
    WatchdogTrigger,
    /// `WATCHDOG_USEC=`: a new heartbeat deadline (`None`: no watchdog).
    WatchdogChanged(Option<Duration>),
    /// `EXTEND_TIMEOUT_USEC=`: the start or stop deadline is at least this far away.
    ExtendTimeout(Duration),
    Timer(Timer),
    /// The main process ended.
    Exited(Exit),
    /// The main process exited with status 0 within its start and left these processes
    /// of its run running (muster stopped them): it went into the background.
    Daemonized {
        left: String,
    },
    /// With `pidfile`: the daemon's pid, read from the file, vouched for and taken over.
    MainPid(u32),
    /// With `pidfile`: why the file does not give a pid yet.
    MainPidPending(String),
    /// `memory-max` without a kernel limit: the group holds more than it; the text says
    /// how much.
    OverMemory(String),
}

/// What the actor must do after a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Spawn the process, then feed back `Spawned` or `SpawnFailed`.
    Spawn,
    /// Run one probe attempt now.
    Probe(ProbeKind),
    Arm(Timer, Duration),
    /// Move the timer to at least this far from now.
    Extend(Timer, Duration),
    Disarm(Timer),
    /// Send this signal to the process group.
    Signal(Signal),
    /// Record and publish an event.
    Emit(Emit),
    /// Record the end of the current run (its exit came with the input), with what
    /// ended it.
    EndRun(String),
    /// With `pidfile`: the launcher has exited with status 0; find the daemon's pid in
    /// the file, then feed back `MainPid` (or `MainPidPending` while it cannot).
    FindMainPid,
}

/// An event the step produced, with its human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emit {
    Spawned {
        pid: u32,
    },
    Ready {
        how: String,
    },
    Unhealthy {
        reason: String,
    },
    Healthy,
    Exited {
        exit: Exit,
    },
    /// A run ended and the next one comes after `delay`; `attempt` is the step of the
    /// backoff (0: no backoff applies, as for a heal or an asked restart).
    Restarting {
        delay: Duration,
        attempt: u32,
        cause: Cause,
    },
    Stopping {
        signal: Signal,
    },
    Stopped {
        how: String,
        cause: Cause,
    },
    Completed,
    Failed {
        reason: String,
    },
}

/// The parts of a service's definition the machine decides by.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    pub restart_limit: RestartLimit,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub on_unhealthy: OnUnhealthy,
    pub ready: Option<Readiness>,
    pub alive: Option<Liveness>,
    pub watchdog: Option<Duration>,
    /// The pid file of a program that can only run in the background, as shown.
    pub pidfile: Option<String>,
    /// A hash of the service's name: with the run, where in its interval each of its
    /// probes falls (see [`probe_phase`]).
    pub phase_seed: u64,
}

/// How liveness is watched, as far as the machine cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Liveness {
    /// "liveness probe http http://127.0.0.1:8080/health".
    pub describe: String,
    pub interval: Duration,
    pub failures: u32,
    pub successes: u32,
}

/// How readiness is proven, as far as the machine cares.
#[derive(Debug, Clone, PartialEq)]
pub struct Readiness {
    /// Shown in reasons: "readiness probe tcp 127.0.0.1:5433".
    pub describe: String,
    /// `Some(interval)` for probes muster runs (tcp, http, exec); `None` for those the
    /// service pushes (notify, log).
    pub poll_every: Option<Duration>,
    pub deadline: Duration,
}

impl Policy {
    pub fn of(service: &Service) -> Self {
        Self {
            restart: service.restart,
            backoff: service.backoff,
            restart_limit: service.restart_limit,
            stop_signal: service.stop_signal,
            stop_timeout: service.stop_timeout,
            on_unhealthy: service.on_unhealthy,
            ready: readiness(service),
            alive: service.alive.as_ref().map(|probe| Liveness {
                describe: format!("liveness probe {}", probe.check.describe()),
                interval: probe.interval,
                failures: probe.failures.max(1),
                successes: probe.successes.max(1),
            }),
            watchdog: service.watchdog,
            pidfile: service.pidfile.as_ref().map(|p| p.display().to_string()),
            phase_seed: name_hash(service.name.as_str()),
        }
    }

    /// How long a start may take: the readiness deadline, or the default one.
    fn start_deadline(&self) -> Duration {
        self.ready
            .as_ref()
            .map_or(crate::config::defaults::READY_TIMEOUT, |ready| {
                ready.deadline
            })
    }
}

/// Readiness: the probe, and with `wait-for-ports` the declared ports listening too
/// (muster then polls, even for a pushed probe, once the push has come).
fn readiness(service: &Service) -> Option<Readiness> {
    let ports = service.wait_for_ports && !service.ports.is_empty();
    let ports_text = || {
        let list: Vec<String> = service.ports.iter().map(|p| p.to_string()).collect();
        format!("ports {} listening", list.join(", "))
    };
    match &service.ready {
        Some(probe) => {
            let mut describe = format!("readiness probe {}", probe.check.describe());
            if ports {
                describe = format!("{describe} and {}", ports_text());
            }
            Some(Readiness {
                describe,
                poll_every: (probe.check.polls() || ports).then_some(probe.interval),
                deadline: probe.timeout,
            })
        }
        None if ports => Some(Readiness {
            describe: ports_text(),
            poll_every: Some(crate::config::defaults::READY_INTERVAL),
            deadline: crate::config::defaults::READY_TIMEOUT,
        }),
        None => None,
    }
}

/// What happens once a stopping process has exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay stopped; asked, or idle.
    Stopped(Cause),
    /// Start again: asked for, so the restart budget is not charged.
    Restart,
    /// Start again because it was unhealthy (watchdog, liveness): charged to the
    /// restart budget.
    Heal(Cause),
    /// Give up (the start deadline passed).
    Fail(Cause),
}

/// A service's state: its phase, why, and what the machine must remember.
#[derive(Debug, Clone, PartialEq)]
pub struct State {
    pub phase: Phase,
    /// Why it is in this phase, for people.
    pub reason: String,
    /// Failed because this dependency will not meet its condition: the next link of
    /// the cause chain, as data.
    pub blocked_by: Option<ServiceName>,
    /// It failed by itself (not through a dependency) and has not been healthy or
    /// started by name since: a demand for it is bound by the restart policy.
    pub own_failure: bool,
    pub pid: Option<u32>,
    /// Spawns so far; the current run's number.
    pub runs: u64,
    /// Restarts after failures (not counting asked-for starts).
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// The latest readiness attempt's failure, shown when the deadline passes.
    pub last_probe_failure: Option<String>,
    /// Readiness attempts of this run that failed: how soon the next one comes.
    pub ready_failures: u32,
    /// Consecutive failed runs: the backoff exponent.
    pub attempt: u32,
    /// When restarts happened, within the restart-limit window.
    pub restart_times: VecDeque<Instant>,
    pub healthy_since: Option<Instant>,
    pub after_stop: AfterStop,
    /// The stop deadline passed and SIGKILL was sent.
    pub killed: bool,
    /// Consecutive liveness failures (while healthy) or successes (while unhealthy).
    pub alive_streak: u32,
    /// Unhealthy because heartbeats stopped (a heartbeat makes it healthy again).
    pub hung: bool,
    /// The heartbeat deadline in force: the config's, or the service's `WATCHDOG_USEC`.
    pub watchdog: Option<Duration>,
    /// When the current run was spawned.
    pub spawned_at: Option<Instant>,
    /// With `pidfile`: the launcher exited with status 0 and the daemon's pid is not
    /// known yet. `pid` is still the launcher's: its group may hold the daemon.
    pub awaiting_pid: bool,
    /// With `pidfile`: `pid` is the daemon's, taken over from the file.
    pub adopted: bool,
    /// With `pidfile`: readiness pushed (`READY=1`, a log line) before the daemon was
    /// known, applied once it is.
    pub early_ready: Option<String>,
}

impl State {
    pub fn new() -> Self {
        Self {
            phase: Phase::Stopped,
            reason: "not started".to_owned(),
            blocked_by: None,
            own_failure: false,
            pid: None,
            runs: 0,
            restarts: 0,
            last_exit: None,
            last_probe_failure: None,
            ready_failures: 0,
            attempt: 0,
            restart_times: VecDeque::new(),
            healthy_since: None,
            after_stop: AfterStop::Stopped(Cause::Asked),
            killed: false,
            alive_streak: 0,
            hung: false,
            watchdog: None,
            spawned_at: None,
            awaiting_pid: false,
            adopted: false,
            early_ready: None,
        }
    }

    fn to(&self, phase: Phase, reason: impl Into<String>) -> Self {
        Self {
            phase,
            reason: reason.into(),
            blocked_by: None,
            ..self.clone()
        }
    }
}

impl Default for State {
    fn default() -> Self {
        Self::new()
    }
}

/// The delay before restart number `attempt` (1-based): `initial` doubling up to `max`.
pub fn backoff_delay(backoff: &Backoff, attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(32);
    backoff
        .initial
        .saturating_mul(1u32 << doublings.min(31))
        .min(backoff.max)
}

/// One step of the machine.
pub fn step(policy: &Policy, state: &State, input: Input, now: Instant) -> (State, Vec<Effect>) {
    let (mut next, effects) = transition(policy, state, input, now);
    // Whether it failed by itself is decided where a phase is entered, once for all
    // the transitions.
    if next.phase != state.phase {
        match next.phase {
            Phase::Failed if next.blocked_by.is_none() => next.own_failure = true,
            Phase::Healthy | Phase::Completed => next.own_failure = false,
            _ => {}
        }
    }
    debug_assert!(
        allowed(state.phase, next.phase),
        "transition {} -> {} is not in the table",
        state.phase,
        next.phase
    );
    (next, effects)
}

fn transition(policy: &Policy, state: &State, input: Input, now: Instant) -> (State, Vec<Effect>) {
    use Phase::*;
    let unchanged = (state.clone(), Vec::new());
    match (state.phase, input) {
        (Stopped | Completed | Failed, Input::Await(reason)) => {
            (state.to(Pending, format!("waiting for {reason}")), vec![])
        }
        (Pending, Input::Await(reason)) => {
            (state.to(Pending, format!("waiting for {reason}")), vec![])
        }
        (Pending | Stopped | Completed | Failed, Input::Start) => {
            let mut next = state.to(Starting, "spawning");
            // An asked-for start begins with a fresh restart budget.
            next.attempt = 0;
            next.restart_times.clear();
            next.last_probe_failure = None;
            next.own_failure = false;
            (next, vec![Effect::Spawn])
        }
        (Pending | Stopped | Completed | Failed, Input::Demand) if state.own_failure => {
            demanded_after_failure(policy, state, now)
        }
        (Pending | Stopped | Completed | Failed, Input::Demand) => {
            let mut next = state.to(Starting, "spawning");
            next.last_probe_failure = None;
            (next, vec![Effect::Spawn])
        }
        (Exited, Input::Timer(Timer::Restart)) => {
            let mut next = state.to(Starting, "spawning");
            next.restarts += 1;
            next.last_probe_failure = None;
            (next, vec![Effect::Spawn])
        }
        (Pending, Input::DependencyFailed { dependency, reason }) => {
            // The words are made here, once; who follows the chain reads `blocked_by`.
            let reason = format!("dependency `{dependency}` failed: {reason}");
            let mut next = state.to(Failed, reason.clone());
            next.blocked_by = Some(dependency);
            (next, vec![Effect::Emit(Emit::Failed { reason })])
        }
        (Pending, Input::Stop | Input::IdleStop(_) | Input::DependencyRestarted(_)) => {
            (state.to(Stopped, "stopped before it started"), vec![])
        }
        (Exited, Input::DependencyRestarted(dependency)) => {
            let how = format!("stopped while waiting to restart: `{dependency}` restarted");
            (
                state.to(Stopped, how.clone()),
                vec![
                    Effect::Disarm(Timer::Restart),
                    Effect::Emit(Emit::Stopped {
                        how,
                        cause: Cause::DependencyRestarted(dependency),
                    }),
                ],
            )
        }
        (Exited, Input::Stop | Input::IdleStop(_)) => {
            let (how, cause) = ("stopped while waiting to restart".to_owned(), Cause::Asked);
            (
                state.to(Stopped, how.clone()),
                vec![
                    Effect::Disarm(Timer::Restart),
                    Effect::Emit(Emit::Stopped { how, cause }),
                ],
            )
        }
        (Starting, Input::Spawned { pid }) if state.pid.is_none() => {
            spawned(policy, state, pid, now)
        }
        (Starting, Input::SpawnFailed(reason)) if state.pid.is_none() => {
            let next = state.to(Failed, reason.clone());
            (next, vec![Effect::Emit(Emit::Failed { reason })])
        }
        (Starting, Input::Ready(how))
            if state.pid.is_some() && policy.pidfile.is_some() && !state.adopted =>
        {
            let mut next = state.clone();
            next.early_ready = Some(how);
            (next, vec![])
        }
        (Starting, Input::MainPid(pid)) if state.awaiting_pid => adopted(policy, state, pid, now),
        (Starting, Input::MainPidPending(detail)) if state.awaiting_pid => {
            let mut next = state.clone();
            next.last_probe_failure = Some(detail);
            (next, vec![])
        }
        // Before its daemon is known a forking service is starting (readiness waits
        // for the daemon), so only then can its launcher exit.
        (Starting, Input::Exited(Exit::Code(0)) | Input::Daemonized { .. })
            if state.pid.is_some()
                && !state.awaiting_pid
                && policy.pidfile.is_some()
                && !state.adopted =>
        {
            launched(policy, state)
        }
        (Starting | Healthy | Unhealthy, Input::Daemonized { left })
            if state.pid.is_some() && !state.awaiting_pid =>
        {
            let quick = state
                .spawned_at
                .map(|at| now.saturating_duration_since(at))
                .filter(|ran| *ran <= policy.start_deadline());
            match quick {
                Some(ran) if policy.pidfile.is_none() => daemonized(state, &left, ran),
                _ => exited(policy, state, Exit::Code(0), now),
            }
        }
        (Starting, Input::Ready(how)) if state.pid.is_some() => {
            let how = match (&policy.pidfile, state.pid) {
                (Some(pidfile), Some(pid)) => format!("{how} (daemon pid {pid} from {pidfile})"),
                _ => how,
            };
            let mut next = state.to(Healthy, how.clone());
            next.healthy_since = Some(now);
            let mut effects = vec![
                Effect::Disarm(Timer::Probe),
                Effect::Disarm(Timer::StartDeadline),
                Effect::Emit(Emit::Ready { how }),
            ];
            effects.extend(start_watching(policy, &next));
            (next, effects)
        }
        (Starting, Input::ProbeFailed(detail)) if state.pid.is_some() => {
            let mut next = state.clone();
            next.last_probe_failure = Some(detail);
            next.ready_failures = state.ready_failures.saturating_add(1);
            let effects = match policy.ready.as_ref().and_then(|r| r.poll_every) {
                Some(interval) => vec![Effect::Arm(
                    Timer::Probe,
                    phased_ready_retry(policy, state, interval, state.ready_failures, now),
                )],
                None => vec![],
            };
            (next, effects)
        }
        (Starting, Input::Timer(Timer::Probe)) if state.pid.is_some() => {
            (state.clone(), vec![Effect::Probe(ProbeKind::Ready)])
        }
        (Starting, Input::ExtendTimeout(by)) if state.pid.is_some() => (
            state.clone(),
            vec![Effect::Extend(Timer::StartDeadline, by)],
        ),
        (Stopping, Input::ExtendTimeout(by)) => {
            (state.clone(), vec![Effect::Extend(Timer::StopDeadline, by)])
        }
        (Starting | Healthy | Unhealthy | Stopping, Input::WatchdogChanged(deadline)) => {
            let mut next = state.clone();
            next.watchdog = deadline;
            let effects = match (state.phase, deadline) {
                (Healthy | Unhealthy, Some(deadline)) => {
                    vec![Effect::Arm(Timer::Watchdog, deadline)]
                }
                (Healthy | Unhealthy, None) => vec![Effect::Disarm(Timer::Watchdog)],
                _ => vec![],
            };
            (next, effects)
        }
        (Healthy | Unhealthy, Input::Timer(Timer::Alive)) => {
            (state.clone(), vec![Effect::Probe(ProbeKind::Alive)])
        }
        (Healthy | Unhealthy, Input::Alive(result)) => alive_result(policy, state, result, now),
        (Healthy | Unhealthy, Input::Heartbeat { age }) => {
            let Some(deadline) = state.watchdog else {
                return unchanged;
            };
            let rearm = Effect::Arm(Timer::Watchdog, deadline.saturating_sub(age));
            if state.phase == Unhealthy && state.hung {
                let (next, mut effects) = recovered(state, "heartbeats again", now);
                effects.push(rearm);
                return (next, effects);
            }
            (state.clone(), vec![rearm])
        }
        (Healthy, Input::WatchdogExpired { last_status }) => {
            let Some(deadline) = state.watchdog else {
                return unchanged;
            };
            let mut reason = format!("no heartbeat for {}", human(deadline));
            if let Some(text) = last_status {
                reason.push_str(&format!(" (last: STATUS={text})"));
            }
            unhealthy(policy, state, reason, true, now)
        }
        (Healthy, Input::WatchdogTrigger) => unhealthy(
            policy,
            state,
            "the service reported itself hung (WATCHDOG=trigger)".to_owned(),
            true,
            now,
        ),

        (Starting, Input::Timer(Timer::StartDeadline)) if state.pid.is_some() => {
            let (what, deadline) = match &policy.ready {
                Some(ready) => (ready.describe.as_str(), ready.deadline),
                None => ("readiness", policy.start_deadline()),
            };
            let mut reason = match &policy.pidfile {
                Some(pidfile) if state.awaiting_pid => {
                    format!("no usable pid in {pidfile} within {}", human(deadline))
                }
                Some(pidfile) if !state.adopted => format!(
                    "the launcher was still running after {}: with `pidfile` ({pidfile}) the \
                     program must go into the background and exit",
                    human(deadline)
                ),
                _ => format!("{what} timed out after {}", human(deadline)),
            };
            if let Some(last) = &state.last_probe_failure {
                reason.push_str(&format!(" (last attempt: {last})"));
            }
            let cause = Cause::StartDeadline(reason);
            stop(policy, state, AfterStop::Fail(cause), cancel_running(), now)
        }
        (Healthy, Input::Unhealthy(reason)) => unhealthy(policy, state, reason, false, now),
        // Stopped the way a stop is (its stop signal, then SIGKILL), then started again
        // as a heal is, charged to the restart limit; or failed, when it never restarts.
        (Starting | Healthy | Unhealthy, Input::OverMemory(reason)) if state.pid.is_some() => {
            let cause = Cause::MemoryMax(reason);
            let after = match policy.restart {
                RestartPolicy::Never => AfterStop::Fail(cause),
                _ => AfterStop::Heal(cause),
            };
            stop(policy, state, after, cancel_running(), now)
        }
        (Unhealthy, Input::Recovered) => recovered(state, "liveness passed again", now),
        (Starting | Healthy | Unhealthy, Input::Stop) => {
            let after = AfterStop::Stopped(Cause::Asked);
            stop(policy, state, after, cancel_running(), now)
        }
        (Starting | Healthy | Unhealthy, Input::IdleStop(idle)) => {
            let after = AfterStop::Stopped(Cause::Idle(idle));
            stop(policy, state, after, cancel_running(), now)
        }
        (Starting | Healthy | Unhealthy, Input::DependencyRestarted(dependency)) => {
            let after = AfterStop::Stopped(Cause::DependencyRestarted(dependency));
            stop(policy, state, after, cancel_running(), now)
        }
        (Starting | Healthy | Unhealthy, Input::Restart) => {
            stop(policy, state, AfterStop::Restart, cancel_running(), now)
        }
        (Stopping, Input::Stop | Input::IdleStop(_) | Input::DependencyRestarted(_)) => {
            let mut next = state.clone();
            if matches!(next.after_stop, AfterStop::Restart | AfterStop::Heal(_)) {
                next.after_stop = AfterStop::Stopped(Cause::Asked);
            }
            (next, vec![])
        }
        // Asked to start while a stop is under way: it starts again once the old process
        // is gone (never beside it).
        (Stopping, Input::Start | Input::Demand)
            if matches!(state.after_stop, AfterStop::Stopped(_)) =>
        {
            let mut next = state.clone();
            next.after_stop = AfterStop::Restart;
            next.reason = format!("{}; starting again once stopped", state.reason);
            (next, vec![])
        }
        (Stopping, Input::Timer(Timer::StopDeadline)) => {
            let mut next = state.clone();
            next.killed = true;
            next.reason = format!(
                "did not stop within {} of {}; killing it",
                human(policy.stop_timeout),
                policy.stop_signal.as_str()
            );
            (next, vec![Effect::Signal(Signal::SIGKILL)])
        }
        (Stopping, Input::Exited(exit)) => stopped(policy, state, exit, now),
        (Starting | Healthy | Unhealthy, Input::Exited(exit)) if state.pid.is_some() => {
            exited(policy, state, exit, now)
        }
        (Stopped | Completed | Failed | Exited, Input::Restart) => {
            let mut next = state.to(Starting, "spawning");
            next.attempt = 0;
            next.restart_times.clear();
            let mut effects = vec![];
            if state.phase == Exited {
                effects.push(Effect::Disarm(Timer::Restart));
            }
            effects.push(Effect::Spawn);
            (next, effects)
        }
        _ => unchanged,
    }
}

/// Disarms every timer that only means something while a process runs.
fn cancel_running() -> Vec<Effect> {
    [
        Timer::Probe,
        Timer::StartDeadline,
        Timer::Alive,
        Timer::Watchdog,
    ]
    .map(Effect::Disarm)
    .to_vec()
}

/// Liveness and heartbeat timers, armed when the service becomes healthy.
fn start_watching(policy: &Policy, state: &State) -> Vec<Effect> {
    let mut effects = Vec::new();
    if let Some(alive) = &policy.alive {
        // Services that became healthy together (a boot, a reload, a restart of all)
        // must not probe together for the rest of their runs: the first attempt falls
        // at the run's own phase, and each next one an interval after the last.
        effects.push(Effect::Arm(
            Timer::Alive,
            phased(alive.interval, probe_phase(policy, state)),
        ));
    }
    if let Some(deadline) = state.watchdog {
        effects.push(Effect::Arm(Timer::Watchdog, deadline));
    }
    effects
}

/// Healthy to unhealthy: report it, then restart unless told only to report (or the
/// policy never restarts).
fn unhealthy(
    policy: &Policy,
    state: &State,
    reason: String,
    hung: bool,
    now: Instant,
) -> (State, Vec<Effect>) {
    let mut next = state.to(Phase::Unhealthy, reason.clone());
    next.healthy_since = None;
    next.alive_streak = 0;
    next.hung = hung;
    let cause = if hung {
        Cause::Watchdog(reason.clone())
    } else {
        Cause::Liveness(reason.clone())
    };
    let mut effects = vec![Effect::Emit(Emit::Unhealthy { reason })];
    if policy.on_unhealthy == OnUnhealthy::Restart && policy.restart != RestartPolicy::Never {
        let (stopping, more) = stop(policy, &next, AfterStop::Heal(cause), cancel_running(), now);
        effects.extend(more);
        return (stopping, effects);
    }
    if hung {
        effects.push(Effect::Disarm(Timer::Watchdog));
    }
    (next, effects)
}

fn recovered(state: &State, reason: &str, now: Instant) -> (State, Vec<Effect>) {
    let mut next = state.to(Phase::Healthy, reason);
    next.healthy_since = Some(now);
    next.alive_streak = 0;
    next.hung = false;
    (next, vec![Effect::Emit(Emit::Healthy)])
}

/// One liveness answer: `failures` in a row make a healthy service unhealthy,
/// `successes` in a row make an unhealthy one healthy again.
fn alive_result(
    policy: &Policy,
    state: &State,
    result: Result<String, String>,
    now: Instant,
) -> (State, Vec<Effect>) {
    let Some(alive) = &policy.alive else {
        return (state.clone(), vec![]);
    };
    let again = Effect::Arm(Timer::Alive, alive_wait(policy, state, alive.interval, now));
    let mut next = state.clone();
    match (state.phase, result) {
        (Phase::Healthy, Ok(_)) => next.alive_streak = 0,
        (Phase::Healthy, Err(failure)) => {
            next.alive_streak += 1;
            if next.alive_streak >= alive.failures {
                let times = match alive.failures {
                    1 => "once".to_owned(),
                    n => format!("{n} times in a row"),
                };
                let reason = format!("{} failed {times} (last: {failure})", alive.describe);
                let (next, mut effects) = unhealthy(policy, &next, reason, false, now);
                if next.phase == Phase::Unhealthy {
                    effects.push(again);
                }
                return (next, effects);
            }
        }
        (Phase::Unhealthy, Ok(_)) if !state.hung => {
            next.alive_streak += 1;
            if next.alive_streak >= alive.successes {
                let (next, mut effects) = recovered(&next, "liveness passed again", now);
                effects.push(again);
                return (next, effects);
            }
        }
        (Phase::Unhealthy, _) => next.alive_streak = 0,
        _ => {}
    }
    (next, vec![again])
}

/// How long until the next liveness attempt of a healthy service: to the next slot of
/// its grid, which starts at its phase after it became healthy and has a slot each
/// interval. Counted from the grid, not from when the answer came: a supervisor held up
/// (a loaded machine, a stopped process) answers the attempts that fell due meanwhile
/// all at once, and counting from then would keep those services in step for good.
/// While unhealthy, one interval after the answer.
fn alive_wait(policy: &Policy, state: &State, interval: Duration, now: Instant) -> Duration {
    match state.healthy_since {
        Some(since) => to_next_slot(
            since + phased(interval, probe_phase(policy, state)),
            interval,
            now,
        ),
        None => interval,
    }
}

/// The first retry of a failed readiness attempt; each next one waits twice as long.
pub const FIRST_READY_RETRY: Duration = Duration::from_millis(10);

/// How long to wait after the readiness attempt that followed `failed` earlier failures:
/// 10 ms, 20 ms, 40 ms ... and never longer than the probe's `interval`. A service
/// usually listens within tens of milliseconds of refusing the first attempt; waiting a
/// whole interval each time would make every link of a dependency chain pay it.
pub fn ready_retry(interval: Duration, failed: u32) -> Duration {
    FIRST_READY_RETRY
        .saturating_mul(1 << failed.min(20))
        .min(interval)
}

/// [`ready_retry`], with the waits of a whole interval on the run's grid: slots an
/// interval apart from its phase after the spawn. Services spawned together back off
/// in step, and would otherwise poll in step once they reach their interval; and
/// counted from each answer, a supervisor held up (a loaded machine) would put every
/// attempt that fell due meanwhile in step for good.
fn phased_ready_retry(
    policy: &Policy,
    state: &State,
    interval: Duration,
    failed: u32,
    now: Instant,
) -> Duration {
    let wait = ready_retry(interval, failed);
    match state.spawned_at {
        Some(spawned) if wait >= interval => {
            let first = spawned + phased(interval, probe_phase(policy, state));
            to_next_slot(first, interval, now)
        }
        _ => wait,
    }
}

/// How long from `now` to the first of the slots `first`, `first + interval` ... that
/// is later than `now`.
fn to_next_slot(first: Instant, interval: Duration, now: Instant) -> Duration {
    let Some(behind) = now.checked_duration_since(first) else {
        return first - now;
    };
    let interval_ns = interval.as_nanos().max(1);
    let slots = behind.as_nanos() / interval_ns + 1;
    let due = slots.saturating_mul(interval_ns) - behind.as_nanos();
    Duration::from_nanos(u64::try_from(due).unwrap_or(u64::MAX))
}

/// Where in its probes' interval a run of a service falls, in `[0, 1)`: stable for the
/// run, different from one service (and one run) to the next, so that probes of many
/// services started together spread over the interval instead of coming all at once.
pub fn probe_phase(policy: &Policy, state: &State) -> f64 {
    let mixed = mix(policy.phase_seed ^ mix(state.runs));
    // The top 53 bits, as a fraction: exactly representable.
    (mixed >> 11) as f64 / (1u64 << 53) as f64
}

/// `interval` moved by `phase` (in `[0, 1)`): from half an interval to one and a half,
/// one interval on average.
pub fn phased(interval: Duration, phase: f64) -> Duration {
    interval.mul_f64(0.5 + phase.clamp(0.0, 1.0))
}

/// FNV-1a of a name: stable across builds and platforms, unlike the std hasher.
pub fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// SplitMix64's finalizer: nearby inputs (runs 1, 2, 3) give unrelated outputs.
fn mix(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn spawned(policy: &Policy, state: &State, pid: u32, now: Instant) -> (State, Vec<Effect>) {
    let mut next = state.clone();
    next.pid = Some(pid);
    next.ready_failures = 0;
    next.runs += 1;
    next.watchdog = policy.watchdog;
    next.alive_streak = 0;
    next.hung = false;
    next.spawned_at = Some(now);
    next.awaiting_pid = false;
    next.adopted = false;
    next.early_ready = None;
    let mut effects = vec![Effect::Emit(Emit::Spawned { pid })];
    if let Some(pidfile) = &policy.pidfile {
        // Readiness is looked for once the daemon is known; until then the launcher
        // has the start deadline to go into the background.
        next.reason = format!("waiting for the launcher to exit and leave its pid in {pidfile}");
        effects.push(Effect::Arm(Timer::StartDeadline, policy.start_deadline()));
        return (next, effects);
    }
    match &policy.ready {
        None => {
            next.phase = Phase::Healthy;
            next.reason = "running (no readiness probe)".to_owned();
            next.healthy_since = Some(now);
            effects.push(Effect::Emit(Emit::Ready {
                how: "spawned (no readiness probe)".to_owned(),
            }));
            effects.extend(start_watching(policy, &next));
        }
        Some(ready) => {
            next.reason = format!("waiting for {}", ready.describe);
            effects.push(Effect::Arm(Timer::StartDeadline, ready.deadline));
            if ready.poll_every.is_some() {
                effects.push(Effect::Probe(ProbeKind::Ready));
            }
        }
    }
    (next, effects)
}

/// With `pidfile`: the launcher exited with status 0; the daemon's pid is looked for.
fn launched(policy: &Policy, state: &State) -> (State, Vec<Effect>) {
    let mut next = state.clone();
    next.awaiting_pid = true;
    next.last_exit = Some(Exit::Code(0));
    next.reason = format!(
        "the launcher exited with status 0; waiting for its daemon's pid in {}",
        policy.pidfile.as_deref().unwrap_or("the pidfile")
    );
    (next, vec![Effect::FindMainPid])
}

/// With `pidfile`: the daemon is known and supervised from now on; it is healthy now,
/// or once readiness is proven.
fn adopted(policy: &Policy, state: &State, pid: u32, now: Instant) -> (State, Vec<Effect>) {
    let mut next = state.clone();
    next.pid = Some(pid);
    next.awaiting_pid = false;
    next.adopted = true;
    next.last_probe_failure = None;
    let pidfile = policy.pidfile.as_deref().unwrap_or("the pidfile");
    let early = next.early_ready.take();
    match (&policy.ready, early) {
        (Some(ready), None) => {
            next.reason = format!(
                "daemon pid {pid} from {pidfile}; waiting for {}",
                ready.describe
            );
            let effects = match ready.poll_every {
                Some(_) => vec![Effect::Probe(ProbeKind::Ready)],
                None => vec![],
            };
            (next, effects)
        }
        (ready, early) => {
            let how = match (ready, early) {
                (Some(_), Some(pushed)) => format!("{pushed} (daemon pid {pid} from {pidfile})"),
                _ => format!("daemon pid {pid} read from {pidfile}"),
            };
            next.phase = Phase::Healthy;
            next.reason = format!("running (daemon pid {pid} from {pidfile})");
            next.healthy_since = Some(now);
            let mut effects = vec![
                Effect::Disarm(Timer::StartDeadline),
                Effect::Emit(Emit::Ready { how }),
            ];
            effects.extend(start_watching(policy, &next));
            (next, effects)
        }
    }
}

/// The main process exited with status 0 within its start and left processes of its
/// run behind: it went into the background, where muster cannot supervise it. Retrying
/// cannot help; the fix is in the config.
fn daemonized(state: &State, left: &str, ran: Duration) -> (State, Vec<Effect>) {
    let mut next = state.clone();
    next.pid = None;
    next.last_exit = Some(Exit::Code(0));
    next.healthy_since = None;
    let reason = format!(
        "went into the background: exited with status 0 after {} leaving {left} running, \
         which muster stopped; run it in the foreground (often `--nodaemon`, `--foreground` \
         or `-f`), or set `pidfile` to the file it writes its daemon's pid to",
        human(ran)
    );
    next.phase = Phase::Failed;
    next.reason = reason.clone();
    let mut effects = cancel_running();
    effects.extend([
        Effect::Emit(Emit::Exited {
            exit: Exit::Code(0),
        }),
        Effect::Emit(Emit::Failed {
            reason: reason.clone(),
        }),
        Effect::EndRun(reason),
    ]);
    (next, effects)
}

fn stop(
    policy: &Policy,
    state: &State,
    after: AfterStop,
    mut effects: Vec<Effect>,
    now: Instant,
) -> (State, Vec<Effect>) {
    if state.awaiting_pid {
        // The launcher has exited and the daemon is not known: there is no process to
        // stop gracefully, and no exit will come. What the launcher left is killed and
        // the run ends now.
        let mut next = state.clone();
        next.after_stop = after;
        effects.push(Effect::Signal(Signal::SIGKILL));
        let (next, more) = stopped(policy, &next, Exit::Code(0), now);
        effects.extend(more);
        return (next, effects);
    }
    let reason = match &after {
        AfterStop::Stopped(Cause::Asked) => "stopping on request".to_owned(),
        AfterStop::Stopped(cause) | AfterStop::Fail(cause) => format!("stopping: {cause}"),
        AfterStop::Restart => "restarting on request".to_owned(),
        AfterStop::Heal(cause) => format!("restarting: {cause}"),
    };
    let mut next = state.to(Phase::Stopping, reason);
    next.after_stop = after;
    next.killed = false;
    next.healthy_since = None;
    effects.extend([
        Effect::Signal(policy.stop_signal),
        // A stopped (SIGSTOP) process cannot act on the stop signal until continued.
        Effect::Signal(Signal::SIGCONT),
        Effect::Arm(Timer::StopDeadline, policy.stop_timeout),
        Effect::Emit(Emit::Stopping {
            signal: policy.stop_signal,
        }),
    ]);
    (next, effects)
}

fn stopped(policy: &Policy, state: &State, exit: Exit, now: Instant) -> (State, Vec<Effect>) {
    let mut next = state.clone();
    next.pid = None;
    next.last_exit = Some(exit);
    next.healthy_since = None;
    next.killed = false;
    next.awaiting_pid = false;
    next.adopted = false;
    next.after_stop = AfterStop::Stopped(Cause::Asked);
    let outcome = stop_outcome(policy, state, exit);
    let mut effects = vec![Effect::Disarm(Timer::StopDeadline)];
    let stopped = |how: String, cause: &Cause, effects: &mut Vec<Effect>| {
        effects.push(Effect::Emit(Emit::Stopped {
            how: how.clone(),
            cause: cause.clone(),
        }));
        effects.push(Effect::EndRun(how));
    };
    match &state.after_stop {
        AfterStop::Stopped(cause) => {
            let how = match cause {
                Cause::Asked => format!("stopped on request; {outcome}"),
                cause => format!("stopped: {cause}; {outcome}"),
            };
            next.phase = Phase::Stopped;
            next.reason = how.clone();
            stopped(how, cause, &mut effects);
        }
        AfterStop::Restart => {
            stopped(
                format!("stopped to restart on request; {outcome}"),
                &Cause::Asked,
                &mut effects,
            );
            next.phase = Phase::Starting;
            next.reason = "spawning".to_owned();
            next.restarts += 1;
            effects.push(restarting(Duration::ZERO, 0, Cause::Asked));
            effects.push(Effect::Spawn);
        }
        AfterStop::Heal(cause) => match charge_restart(policy, &mut next, now) {
            Ok(()) => {
                stopped(
                    format!("stopped to restart: {cause}; {outcome}"),
                    cause,
                    &mut effects,
                );
                next.phase = Phase::Starting;
                next.reason = "spawning".to_owned();
                next.restarts += 1;
                effects.push(restarting(Duration::ZERO, 0, cause.clone()));
                effects.push(Effect::Spawn);
            }
            Err(spent) => {
                stopped(
                    format!("stopped: {cause}; {outcome}; {spent}"),
                    cause,
                    &mut effects,
                );
                let reason = format!("{cause}; {spent}");
                next.phase = Phase::Failed;
                next.reason = reason.clone();
                effects.push(Effect::Emit(Emit::Failed { reason }));
            }
        },
        AfterStop::Fail(cause) => {
            stopped(format!("stopped: {cause}; {outcome}"), cause, &mut effects);
            next.phase = Phase::Failed;
            next.reason = cause.to_string();
            effects.push(Effect::Emit(Emit::Failed {
                reason: cause.to_string(),
            }));
        }
    }
    (next, effects)
}

/// How a process muster stopped ended: on the stop signal, killed at the stop
/// deadline, or however else (a status of its own, another signal).
fn stop_outcome(policy: &Policy, state: &State, exit: Exit) -> String {
    if state.awaiting_pid {
        return "its launcher had exited with status 0 and no pid was read from the pidfile \
                yet; what it left was killed"
            .to_owned();
    }
    match exit {
        Exit::Signal(signal) if signal == policy.stop_signal => {
            format!("exited on {}", signal.as_str())
        }
        Exit::Signal(Signal::SIGKILL) if state.killed => format!(
            "killed by SIGKILL after it did not stop within {} of {}",
            human(policy.stop_timeout),
            policy.stop_signal.as_str()
        ),
        other => other.to_string(),
    }
}

/// The `restarting` event: exactly one for every restart, whatever caused it.
fn restarting(delay: Duration, attempt: u32, cause: Cause) -> Effect {
    Effect::Emit(Emit::Restarting {
        delay,
        attempt,
        cause,
    })
}

fn exited(policy: &Policy, state: &State, exit: Exit, now: Instant) -> (State, Vec<Effect>) {
    let mut next = state.clone();
    next.pid = None;
    next.last_exit = Some(exit);
    next.adopted = false;
    next.awaiting_pid = false;
    let was_healthy_for = state
        .healthy_since
        .map(|since| now.saturating_duration_since(since));
    next.healthy_since = None;
    let mut effects = cancel_running();
    effects.push(Effect::Emit(Emit::Exited { exit }));

    let restart = match policy.restart {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => !exit.success(),
        RestartPolicy::Always => true,
    };
    if !restart {
        if exit.success() {
            next.phase = Phase::Completed;
            next.reason = "completed (exited with status 0)".to_owned();
            effects.push(Effect::Emit(Emit::Completed));
        } else {
            let reason = match state.phase {
                Phase::Starting => format!("{exit} while starting (restart = \"never\")"),
                _ => format!("{exit} (restart = \"never\")"),
            };
            next.phase = Phase::Failed;
            next.reason = reason.clone();
            effects.push(Effect::Emit(Emit::Failed { reason }));
        }
        effects.push(Effect::EndRun(next.reason.clone()));
        return (next, effects);
    }

    if let Err(spent) = charge_restart(policy, &mut next, now) {
        let reason = format!("{exit}; {spent}");
        next.phase = Phase::Failed;
        next.reason = reason.clone();
        effects.push(Effect::Emit(Emit::Failed { reason }));
        effects.push(Effect::EndRun(next.reason.clone()));
        return (next, effects);
    }
    if was_healthy_for.is_some_and(|healthy| healthy >= policy.backoff.reset_after) {
        next.attempt = 0;
    }
    next.attempt += 1;
    let delay = backoff_delay(&policy.backoff, next.attempt);
    next.phase = Phase::Exited;
    next.reason = format!("{exit}; restarting in {}", human(delay));
    effects.push(Effect::EndRun(next.reason.clone()));
    effects.push(restarting(delay, next.attempt, Cause::Exit(exit)));
    effects.push(Effect::Arm(Timer::Restart, delay));
    (next, effects)
}

/// A service that failed by itself is needed again (an `ensure`, a proxied connection,
/// a dependent): it starts as a restart would, after its backoff and charged to its
/// restart limit. With the limit spent it stays as it is: a client in a loop, or a
/// connection a second, cannot make a crash loop of a service the policy gave up on.
fn demanded_after_failure(policy: &Policy, state: &State, now: Instant) -> (State, Vec<Effect>) {
    let mut next = state.clone();
    if charge_restart(policy, &mut next, now).is_err() {
        return (state.clone(), Vec::new());
    }
    next.attempt += 1;
    next.blocked_by = None;
    next.last_probe_failure = None;
    let delay = backoff_delay(&policy.backoff, next.attempt);
    let cause = state.last_exit.map_or(Cause::Asked, Cause::Exit);
    next.phase = Phase::Exited;
    next.reason = format!("needed again after it failed; starting in {}", human(delay));
    (
        next,
        vec![
            restarting(delay, state.attempt + 1, cause),
            Effect::Arm(Timer::Restart, delay),
        ],
    )
}

/// Charges one restart to the budget (at most `count` within `within`), or says why
/// the budget is spent.
fn charge_restart(policy: &Policy, state: &mut State, now: Instant) -> Result<(), String> {
    let limit = policy.restart_limit;
    while let Some(&oldest) = state.restart_times.front() {
        if now.saturating_duration_since(oldest) >= limit.within {
            state.restart_times.pop_front();
        } else {
            break;
        }
    }
    if state.restart_times.len() >= limit.count as usize {
        return Err(format!(
            "gave up after {} restarts within {} (restart-limit)",
            state.restart_times.len(),
            human(limit.within)
        ));
    }
    state.restart_times.push_back(now);
    Ok(())
}

/// A duration as people write it: "60s", "1m 30s", "250ms".
pub fn human(duration: Duration) -> String {
    if duration.is_zero() {
        return "0s".to_owned();
    }
    let rounded = Duration::from_millis(duration.as_millis() as u64);
    humantime::format_duration(rounded).to_string()
}

#[cfg(test)]
mod tests;
