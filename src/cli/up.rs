//! `muster up`: run the supervisor in the foreground.
//!
//! The daemon itself is [`crate::daemon`]; this file is its command line: the
//! arguments, the signals, the view ([`super::view`]) and the exit code. `up` returns
//! when the supervisor has stopped everything: after Ctrl-C, SIGTERM, a closed
//! terminal, `muster down`, or by itself when nothing is left to supervise (every
//! service completed, failed or stopped, none on demand, and no client has used the
//! API): 0 if none failed, 1 otherwise.
//!
//! Signals: SIGINT, SIGTERM and SIGQUIT stop every service in reverse dependency order
//! (a second one a moment later kills them at once). SIGHUP means the terminal went
//! away when `up` runs on one (a clean shutdown, as with Ctrl-C), and "read the config
//! again" when it has no terminal: in the background (`up -d`), under systemd, in a
//! container, as supervisord and nginx do. Every other
//! catchable signal that would end a process by default (SIGUSR1, SIGUSR2, SIGALRM,
//! SIGPIPE, SIGVTALRM, SIGPROF, SIGIO, SIGPWR, SIGSTKFLT, SIGXFSZ and the real-time
//! signals) is ignored and logged: a stray `kill -USR1` must not leave every service
//! running without a supervisor.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use super::view::{Mode, View};
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs, plural};
use crate::api;
use crate::config::{ServiceName, Spec};
use crate::daemon::{Daemon, Options};
use crate::supervisor::lock::{LockError, StateLock};
use crate::supervisor::{Lifecycle, Supervisor};

/// A second SIGINT or SIGTERM sooner than this after the first is the same request.
const DOUBLE_SIGNAL: Duration = Duration::from_millis(500);

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Start only these services (and what they depend on); default: every service with
    /// autostart
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,

    /// Print events as JSON Lines on stdout (one object per event)
    #[arg(long)]
    pub json: bool,

    /// Plain event lines even on a terminal, no live progress view
    #[arg(long)]
    pub no_progress: bool,

    /// What to show besides the summary: `all` (every service's output, each line
    /// prefixed by its name, among muster's events), `events` or `none`. Default: all in
    /// the foreground, events with --json or in the background
    #[arg(long, value_enum, value_name = "WHAT")]
    pub output: Option<super::lines::Output>,

    /// Run the supervisor in the background: wait until the bootstrap has settled,
    /// print the status, and exit (0 if every started service is healthy or completed)
    #[arg(short, long)]
    pub detach: bool,

    /// Run as the background supervisor `up -d` starts (SIGHUP reloads; lines carry
    /// the time; readiness is told on NOTIFY_SOCKET to `up -d`, not systemd)
    #[arg(long, hide = true)]
    pub background: bool,
}

pub fn run(global: &GlobalArgs, args: &UpArgs) -> ExitCode {
    let mut spec = match global.load(false, false) {
        Ok(loaded) => loaded.spec,
        Err(code) => return code,
    };
    let file_state_dir = spec.settings.state_dir.clone();
    if let Some(dir) = global.state_dir() {
        spec.settings.state_dir = dir;
    }
    let mut only = Vec::new();
    for name in &args.services {
        // A service with replicas: every instance.
        let members = spec.members(name);
        match members.is_empty() {
            false => only.extend(members),
            true => {
                let known: Vec<&str> = spec.services.keys().map(ServiceName::as_str).collect();
                let hint = crate::suggest::nearest(name, known.iter().copied())
                    .map(|near| format!("; did you mean `{near}`?"))
                    .unwrap_or_default();
                eprintln!(
                    "muster: no service named `{name}` in {}{hint}",
                    spec.path.display()
                );
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    let colour = global.colour_on(std::io::stdout().is_terminal());
    console::set_colors_enabled(colour);
    console::set_colors_enabled_stderr(colour);
    if args.detach {
        return detach(global, args, &spec);
    }
    let runtime = match super::control::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let mode = Mode {
        json: args.json,
        progress: !args.json
            && !args.no_progress
            && !args.background
            && std::io::stderr().is_terminal(),
        background: args.background,
        // Scripts reading `--json` and the background log get what they always had;
        // the services' own output is in their log files.
        output: args.output.unwrap_or(if args.json || args.background {
            super::lines::Output::Events
        } else {
            super::lines::Output::All
        }),
    };
    raise_descriptor_limit();
    // Said before anything starts: what the limit means for this many services.
    if let Some(line) = crate::supervisor::descriptors::plan(
        spec.services.len(),
        crate::supervisor::descriptors::soft_limit(),
    )
    .describe()
    {
        crate::supervisor::warn(format_args!("descriptors: {line}"));
    }
    let options = Options {
        only,
        file_state_dir: Some(file_state_dir),
        // The background supervisor's NOTIFY_SOCKET is `up -d` waiting, not systemd.
        systemd: !args.background,
    };
    runtime.block_on(up(spec, options, mode))
}

/// Raises the soft limit on open descriptors to the hard limit. Each running service
/// holds up to three (its two pipes and, for the first few hundred, its log file; see
/// `supervisor::descriptors`) and each API client one: under the usual
/// soft limit of 1024, a config of a few hundred services had services fail with "too
/// many open files". The hard limit is what the administrator allows. Services inherit
/// the raised soft limit, as they would from a shell after `ulimit -n`. If it cannot be
/// raised, muster runs with what it has, and a service that cannot get its descriptors
/// fails saying so.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

async fn up(spec: Spec, options: Options, mode: Mode) -> ExitCode {
    let began = Instant::now();
    // Before anything can start: a signal from now on has its meaning.
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("muster: cannot handle signals: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // As a container's first process they were held back until now (see `disinherit`).
    crate::supervisor::process::unblock_stop_signals();
    let daemon = match Daemon::prepare(spec, options).await {
        Ok(daemon) => daemon,
        Err(error) => {
            eprintln!("muster: {error}");
            return ExitCode::from(if error.is_usage() {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            });
        }
    };
    let supervisor = daemon.supervisor();
    for notice in supervisor.notices() {
        crate::supervisor::warn(notice);
    }
    let view = View::new(&supervisor, mode, began);
    let feed = supervisor.bus().feed();
    // Before anything runs, so that no service's first line is missed.
    let output = (mode.output == super::lines::Output::All)
        .then(|| super::lines::Lines::follow(&supervisor));
    // Without a terminal there is no hang-up to mean: SIGHUP is a request to reload.
    let hangup_reloads = mode.background || !crate::supervisor::procfs::has_controlling_terminal();
    let signal_handling = signals.handle(Arc::clone(&supervisor), hangup_reloads);
    let (outcome, (), ()) = tokio::join!(
        daemon.run(std::future::pending()),
        view.run(Arc::clone(&supervisor), feed, output),
        signal_handling,
    );
    let view = View::new(&supervisor, mode, began);
    if outcome.strays > 0 {
        view.note(&format!(
            "killed {} left behind outside their service's process group",
            plural(outcome.strays, "process")
        ));
    }
    if outcome.rest > 0 {
        view.note(&format!(
            "ended {} still running in the container after the services",
            plural(outcome.rest, "other process")
        ));
    }
    if let Some(problem) = supervisor.history_problem() {
        crate::supervisor::warn(problem);
    }
    view.note("all services stopped");
    // Everything said is on stdout before muster is gone.
    super::view::flush();
    if outcome.refused.is_some() {
        return ExitCode::from(EXIT_USAGE);
    }
    if outcome.ended_by.is_none() && !outcome.failed.is_empty() {
        return ExitCode::from(EXIT_FAILED);
    }
    ExitCode::SUCCESS
}

/// The signals `up` gives a meaning to (see the module's documentation).
struct Signals {
    stop: Vec<(tokio::signal::unix::Signal, &'static str)>,
    hangup: tokio::signal::unix::Signal,
    ignored: Vec<(tokio::signal::unix::Signal, String)>,
}

impl Signals {
    fn install() -> std::io::Result<Self> {
        use nix::sys::signal::Signal as S;
        let stop = [
            (S::SIGINT, "SIGINT"),
            (S::SIGTERM, "SIGTERM"),
            (S::SIGQUIT, "SIGQUIT"),
        ]
        .into_iter()
        .map(|(number, name)| Ok((signal(SignalKind::from_raw(number as i32))?, name)))
        .collect::<std::io::Result<Vec<_>>>()?;
        let hangup = signal(SignalKind::hangup())?;
        let mut ignored = Vec::new();
        let named = [
            S::SIGUSR1,
            S::SIGUSR2,
            S::SIGALRM,
            S::SIGPIPE,
            S::SIGVTALRM,
            S::SIGPROF,
            S::SIGIO,
            S::SIGPWR,
            S::SIGSTKFLT,
            S::SIGXFSZ,
        ];
        for number in named {
            ignored.push((
                signal(SignalKind::from_raw(number as i32))?,
                number.as_str().to_owned(),
            ));
        }
        // The real-time signals (the C library keeps the first two for itself).
        let (first, last) = (libc_rtmin(), libc_rtmax());
        for number in first..=last {
            if let Ok(stream) = signal(SignalKind::from_raw(number)) {
                ignored.push((stream, format!("SIGRTMIN+{}", number - first)));
            }
        }
        Ok(Self {
            stop,
            hangup,
            ignored,
        })
    }

    /// Acts on signals until the supervisor is done: the first stop signal begins the
    /// shutdown, a later one kills every service at once. SIGHUP reloads the config
    /// with `hangup_reloads`, and stops everything otherwise.
    async fn handle(mut self, supervisor: Arc<Supervisor>, hangup_reloads: bool) {
        let mut graph = supervisor.watch_graph();
        let mut first: Option<Instant> = None;
        let mut ignored_told = std::collections::BTreeSet::new();
        #[cfg(debug_assertions)]
        let stall = debug_stall();
        loop {
            let stop = futures_util::future::select_all(
                self.stop
                    .iter_mut()
                    .map(|(stream, name)| Box::pin(async move { (stream.recv().await, *name) })),
            );
            let ignored =
                futures_util::future::select_all(self.ignored.iter_mut().map(|(stream, name)| {
                    Box::pin(async move { (stream.recv().await, name.clone()) })
                }));
            tokio::select! {
                ((_, name), _, _) = stop => match first {
                    None => {
                        first = Some(Instant::now());
                        supervisor.begin_shutdown(name);
                    }
                    // Some tools signal both the process and its group: one press, two
                    // signals. Only a second signal a moment later means "hurry".
                    Some(at) if at.elapsed() < DOUBLE_SIGNAL => {}
                    Some(_) => {
                        crate::supervisor::warn(format_args!("{name}: killing every service now"));
                        supervisor.kill_all();
                    }
                },
                _ = self.hangup.recv() => {
                    if hangup_reloads {
                        reload(&supervisor).await;
                    } else if first.is_none() {
                        first = Some(Instant::now());
                        supervisor.begin_shutdown("SIGHUP (the terminal went away)");
                    }
                }
                ((_, name), _, _) = ignored => {
                    #[cfg(debug_assertions)]
                    if let Some((how, said)) = stall.filter(|_| name == "SIGUSR2") {
                        crate::supervisor::warn(format_args!(
                            "SIGUSR2: stalling the graph owner (MUSTER_DEBUG_STALL={said}, \
                             a debug build's test hook)"
                        ));
                        supervisor.stall(how);
                        continue;
                    }
                    if ignored_told.insert(name.clone()) {
                        crate::supervisor::warn(format_args!(
                            "{name} ignored (SIGINT or SIGTERM stops muster); \
                             further {name} are ignored silently{}",
                            if hangup_reloads { "; SIGHUP reloads the config" } else { "" }
                        ));
                    }
                }
                done = graph.wait_for(|g| g.lifecycle == Lifecycle::Done) => {
                    let _ = done;
                    return;
                }
            }
        }
    }
}

/// The test hook of debug builds: with `MUSTER_DEBUG_STALL=owner` (the graph owner's
/// task stops turning) or `thread` (it blocks the thread everything runs on), SIGUSR2
/// stalls the supervisor as a bug would, so a test can see the watchdog pings stop.
/// Release builds have neither the variable nor the stall.
#[cfg(debug_assertions)]
fn debug_stall() -> Option<(crate::supervisor::Stall, &'static str)> {
    use crate::supervisor::Stall;
    match std::env::var("MUSTER_DEBUG_STALL").as_deref() {
        Ok("owner") => Some((Stall::Owner, "owner")),
        Ok("thread") => Some((Stall::Thread, "thread")),
        _ => None,
    }
}

/// SIGHUP without a terminal: read the config again and apply it, as `muster reload`.
/// The whole of it is a reload for systemd (`RELOADING=1` ... `READY=1`), even when the
/// file turns out to be invalid and nothing changes.
async fn reload(supervisor: &Supervisor) {
    let _reloading = supervisor.begin_reload();
    let path = supervisor.spec().path.clone();
    match crate::config::load(&path) {
        Ok(loaded) => match supervisor.reload(loaded.spec).await {
            Ok(report) => crate::supervisor::warn(format_args!(
                "SIGHUP: reloaded {}: {} restarted, {} added, {} removed",
                path.display(),
                report.restarted.len(),
                report.added.len(),
                report.removed.len()
            )),
            Err(failure) => {
                crate::supervisor::warn(format_args!("SIGHUP: not reloaded: {failure}"))
            }
        },
        Err(error) => {
            let report = error.into_report();
            crate::supervisor::warn(format_args!(
                "SIGHUP: {} is not valid; nothing was changed:\n{}",
                path.display(),
                report.render_plain()
            ));
        }
    }
}

/// The first real-time signal a program may use (glibc keeps 32 and 33).
fn libc_rtmin() -> i32 {
    34
}

fn libc_rtmax() -> i32 {
    64
}

/// How large `muster.log` may grow before `up -d` moves it to `muster.log.1`.
const BACKGROUND_LOG_LIMIT: u64 = 10 * 1024 * 1024;

/// `up --detach`: the same supervisor as a background process of its own (its own
/// process group, so the terminal's Ctrl-C does not reach it), its output in
/// `state-dir/muster.log`. Returns once the bootstrap has settled, which the
/// supervisor tells on a datagram socket given to it as `NOTIFY_SOCKET` (`READY=1`, as
/// it would tell systemd): no polling, and a supervisor that dies first is seen at once.
fn detach(global: &GlobalArgs, args: &UpArgs, spec: &Spec) -> ExitCode {
    let state_dir = &spec.settings.state_dir;
    // Refuse here, in the foreground, rather than in a log file nobody reads.
    let refused = StateLock::acquire(state_dir)
        .and_then(|lock| StateLock::acquire_for_config(&spec.path, state_dir).map(|c| (lock, c)));
    match refused {
        Ok(locks) => drop(locks),
        Err(error @ LockError::Held { .. }) => {
            eprintln!(
                "muster: {error}; stop it with `muster down -f {}`",
                spec.path.display()
            );
            return ExitCode::from(EXIT_USAGE);
        }
        Err(error) => {
            eprintln!("muster: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    }
    let log_path = state_dir.join("muster.log");
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > BACKGROUND_LOG_LIMIT) {
        let _ = std::fs::rename(&log_path, state_dir.join("muster.log.1"));
    }
    let open_log = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
    };
    let (log, log2) = match (open_log(), open_log()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("muster: cannot open {}: {error}", log_path.display());
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            eprintln!("muster: cannot find the muster binary: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let runtime = match super::control::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let _guard = runtime.enter();
    let (ready, address) = match crate::daemon::readiness_socket() {
        Ok(bound) => bound,
        Err(error) => {
            eprintln!("muster: cannot open a socket to hear from the supervisor: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let mut command = std::process::Command::new(exe);
    command
        .arg("up")
        .arg("--background")
        .arg("-f")
        .arg(&spec.path)
        .arg("--state-dir")
        .arg(state_dir)
        .args(&args.services)
        .env("NO_COLOR", "1")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("NOTIFY_SOCKET", &address)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => {
            eprintln!("muster: cannot start the supervisor: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let pid = child.id();
    eprintln!(
        "muster: supervisor started in the background (pid {pid}); its output goes to {}",
        log_path.display()
    );
    // Long enough for the slowest start deadline, with room for the dependencies.
    let patience = spec
        .services
        .values()
        .filter_map(|s| s.ready.as_ref().map(|r| r.timeout))
        .sum::<Duration>()
        + Duration::from_secs(30);
    let (exited_sender, exited) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = exited_sender.send(child.wait());
    });
    let socket = api::socket_path(state_dir);
    // Services a client or a proxy may still start keep an idle supervisor running.
    let on_demand = spec
        .services
        .values()
        .any(|s| !s.autostart || s.proxy.is_some() || s.idle_stop.is_some());
    runtime.block_on(async move {
        let mut buffer = [0u8; 4096];
        let heard = async {
            loop {
                match ready.recv(&mut buffer).await {
                    Ok(n) => {
                        if let Some(heard) = Heard::parse(&String::from_utf8_lossy(&buffer[..n])) {
                            return heard;
                        }
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            }
        };
        let mut exited = exited;
        let failed_early = |status: Option<std::process::ExitStatus>| {
            let said = status.map_or_else(|| "ended".to_owned(), |s| s.to_string());
            eprintln!(
                "muster: the supervisor exited ({said}) before its services were up; the end of {}:",
                log_path.display()
            );
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(15)..] {
                eprintln!("  | {line}");
            }
            ExitCode::from(EXIT_FAILED)
        };
        let nothing_left = || {
            eprintln!(
                "muster: every service finished and the supervisor (pid {pid}) ended: \
                 {}; see {}",
                crate::daemon::NOTHING_LEFT,
                log_path.display()
            );
        };
        let heard = tokio::select! {
            heard = heard => heard,
            status = &mut exited => return failed_early(status.ok().and_then(Result::ok)),
            () = tokio::time::sleep(patience) => {
                eprintln!(
                    "muster: the bootstrap has not settled after {}; see `muster status -f {}`",
                    crate::supervisor::machine::human(patience),
                    global.file.display()
                );
                return ExitCode::from(EXIT_FAILED);
            }
        };
        if let Heard::Stopping(why) = heard {
            // The shutdown began before the bootstrap was reported: a success only when
            // the supervisor ended by itself, every service done, and exited with 0.
            let status = tokio::time::timeout(patience, &mut exited).await;
            let status = status.ok().and_then(Result::ok).and_then(Result::ok);
            if why == crate::daemon::NOTHING_LEFT && status.is_some_and(|s| s.success()) {
                nothing_left();
                return ExitCode::SUCCESS;
            }
            return failed_early(status);
        }
        match api::client::request(&socket, hyper::Method::GET, "/v1/services").await {
            Ok(answer) => {
                let list = match answer.outcome::<api::model::ServiceList>() {
                    Ok(Ok(list)) => list,
                    Ok(Err(error)) => {
                        eprintln!("muster: {}", error.error.message);
                        return ExitCode::from(EXIT_FAILED);
                    }
                    Err(unreadable) => {
                        eprintln!("muster: {unreadable}");
                        return ExitCode::from(EXIT_FAILED);
                    }
                };
                println!("{}", super::status::summary(&list));
                print!("{}", super::status::table(&list.services));
                let all_up = list.services.iter().all(|s| {
                    s.selected != Some(true)
                        || matches!(
                            s.state,
                            crate::supervisor::Phase::Healthy | crate::supervisor::Phase::Completed
                        )
                        // A singleton another host runs is up, there.
                        || (s.state == crate::supervisor::Phase::Pending
                            && s.singleton.as_ref().is_some_and(|p| !p.here))
                });
                // Nothing runs and nothing can be started on demand: the supervisor
                // ends by itself, as `up` does. Say so once it has.
                let settled = list.services.iter().all(|s| s.state.is_settled());
                if settled
                    && !on_demand
                    && tokio::time::timeout(patience, &mut exited).await.is_ok()
                {
                    nothing_left();
                }
                if all_up {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_FAILED)
                }
            }
            // Every service was a one-shot and completed: the supervisor had nothing
            // left to supervise and ended by itself, as `up` does.
            Err(_) => {
                nothing_left();
                ExitCode::SUCCESS
            }
        }
    })
}

/// What a background supervisor said on the readiness socket.
enum Heard {
    /// `READY=1`: the bootstrap has settled.
    Ready,
    /// `STOPPING=1`, with the `STATUS=` that says why.
    Stopping(String),
}

impl Heard {
    fn parse(datagram: &str) -> Option<Self> {
        let mut lines = datagram.lines();
        if lines.clone().any(|line| line == "READY=1") {
            return Some(Self::Ready);
        }
        if !lines.clone().any(|line| line == "STOPPING=1") {
            return None;
        }
        let why = lines
            .find_map(|line| line.strip_prefix("STATUS="))
            .unwrap_or("");
        Some(Self::Stopping(why.to_owned()))
    }
}
