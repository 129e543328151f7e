//! `muster up`: run the supervisor in the foreground.
//!
//! While the graph boots, a terminal gets a live line per service (state, elapsed time,
//! what it waits for); anything else gets one plain line per event. Then one line per
//! event until Ctrl-C or SIGTERM, which stops everything in reverse dependency order.
//! `up` also returns by itself when nothing is left to supervise (every service
//! completed, failed or stopped, none on demand, and no client has used the API): 0 if
//! none failed, 1 otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::broadcast::error::RecvError;

use super::printable::printable;
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs, plural};
use crate::api;
use crate::config::{ServiceName, Spec};
use crate::supervisor::lock::{LockError, StateLock};
use crate::supervisor::{Event, EventKind, Input, Phase, Supervisor, process};

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

    /// Run the supervisor in the background: wait until the bootstrap has settled,
    /// print the status, and exit (0 if every started service is healthy)
    #[arg(short, long)]
    pub detach: bool,
}

pub fn run(global: &GlobalArgs, args: &UpArgs) -> ExitCode {
    let mut spec = match global.load(false) {
        Ok(loaded) => loaded.spec,
        Err(code) => return code,
    };
    if let Some(dir) = global.state_dir() {
        spec.settings.state_dir = dir;
    }
    let mut only = Vec::new();
    for name in &args.services {
        match spec.services.get_key_value(name.as_str()) {
            Some((name, _)) => only.push(name.clone()),
            None => {
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
    let progress = !args.json && !args.no_progress && std::io::stderr().is_terminal();
    raise_descriptor_limit();
    runtime.block_on(up(spec, only, args.json, progress))
}

/// Raises the soft limit on open descriptors to the hard limit. Each running service
/// holds three (its two pipes and its log file) and each API client one: under the usual
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

async fn up(spec: Spec, only: Vec<ServiceName>, json: bool, progress: bool) -> ExitCode {
    let began = Instant::now();
    let mut interrupt = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(interrupt), Ok(terminate)) => Signals {
            interrupt,
            terminate,
        },
        (Err(error), _) | (_, Err(error)) => {
            eprintln!("muster: cannot handle signals: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let state_dir = spec.settings.state_dir.clone();
    let file = spec.path.clone();
    // One supervisor per state directory, for the whole life of this one.
    let _lock = match StateLock::acquire(&state_dir) {
        Ok(lock) => lock,
        Err(error @ LockError::Held { .. }) => {
            eprintln!(
                "muster: {error}; stop it with `muster down -f {}`",
                file.display()
            );
            return ExitCode::from(EXIT_USAGE);
        }
        Err(error) => {
            eprintln!("muster: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let tcp = match &spec.settings.api {
        None => None,
        Some(settings) => {
            let tokens = match api::auth::Tokens::load(
                settings.token_file.as_deref(),
                settings.read_token_file.as_deref(),
            ) {
                Ok(tokens) => tokens,
                Err(error) => {
                    eprintln!("muster: {error}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            match tokio::net::TcpListener::bind(settings.listen).await {
                Ok(listener) => Some((listener, tokens)),
                Err(error) => {
                    eprintln!(
                        "muster: cannot listen on {} (settings.api.listen): {error}",
                        settings.listen
                    );
                    return ExitCode::from(EXIT_FAILED);
                }
            }
        }
    };
    let proxies = match crate::proxy::bind(&spec).await {
        Ok(proxies) => proxies,
        Err(error) => {
            eprintln!("muster: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // The socket last, once the other listeners are there: it existing means they
    // all accept connections.
    let socket = api::socket_path(&state_dir);
    let listener = match api::bind(&socket) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("muster: cannot listen on {}: {error}", socket.display());
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // Services that clients start (on demand, behind a proxy, stopped when idle) give
    // an idle graph work to wait for.
    let on_demand = spec
        .services
        .values()
        .any(|s| !s.autostart || s.proxy.is_some() || s.idle_stop.is_some());
    let mut supervisor = match Supervisor::new(spec) {
        Ok(supervisor) => supervisor,
        Err(error) => {
            eprintln!("muster: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    for notice in supervisor.notices() {
        crate::supervisor::warn(notice);
    }
    let mut events = supervisor.bus().feed();
    // Nothing starts before what an earlier supervisor left running has stopped.
    let recovery = supervisor.recover().await;
    if recovery.stopped > 0 && !json {
        say(format_args!(
            "{} stopped {} left running by a supervisor that ended without stopping {} \
             (`muster events --kind orphan-stopped`)",
            style("muster:").bold(),
            plural(recovery.stopped, "process group"),
            if recovery.stopped == 1 { "it" } else { "them" }
        ));
    }
    for leftover in &recovery.leftovers {
        crate::supervisor::warn(format_args!(
            "pid {} (run {} of `{}`) did not stop on SIGKILL; its ports stay taken",
            leftover.pid, leftover.run_id, leftover.service
        ));
    }
    supervisor.select(&only);
    let supervisor = Arc::new(supervisor);
    // Served before the first spawn: `status` is most wanted while a large graph boots.
    let server = tokio::spawn(api::serve::serve(
        listener,
        api::router(Arc::clone(&supervisor)),
    ));
    let tcp_server = tcp.map(|(listener, tokens)| {
        let router = api::router_with_tokens(Arc::clone(&supervisor), tokens);
        tokio::spawn(api::serve::serve(listener, router))
    });
    supervisor.start_selected().await;
    let proxy_servers: Vec<_> = proxies
        .into_iter()
        .map(|(name, listener)| {
            tokio::spawn(crate::proxy::serve(listener, Arc::clone(&supervisor), name))
        })
        .collect();
    let mut view = View::new(&supervisor, json, progress, began);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut booted = false;
    let ended_by = loop {
        tokio::select! {
            name = interrupt.recv() => break Some(name),
            () = supervisor.shutdown_asked() => break Some("shutdown asked through the API"),
            event = events.recv() => match event {
                Ok(event) => view.event(&event, booted),
                Err(RecvError::Lagged(missed)) => view.note(&format!("{missed} events were not shown (output too slow)")),
                Err(RecvError::Closed) => break None,
            },
            _ = tick.tick(), if progress && !booted => view.tick(&supervisor),
        }
        if !booted && supervisor.booted() {
            booted = true;
            // Events already published belong before the summary.
            while let Ok(event) = events.try_recv() {
                view.event(&event, false);
            }
            view.booted(&supervisor);
        }
        // With on-demand services, or once a client has taken control, an idle graph
        // still has work to wait for.
        if booted && !on_demand && !supervisor.controlled() && supervisor.idle() {
            break None;
        }
    };
    // No new client may start a service that is being stopped.
    for proxy in &proxy_servers {
        proxy.abort();
    }
    if !booted {
        view.tick(&supervisor);
        view.finish_progress();
    }
    let failed: Vec<_> = supervisor
        .services()
        .into_iter()
        .filter(|handle| handle.status().phase == Phase::Failed)
        .map(|handle| handle.name().clone())
        .collect();
    let handles: Vec<_> = supervisor.services();
    match ended_by {
        Some(signal) => view.note(&format!(
            "{signal}: stopping {} in reverse dependency order (again to kill them now)",
            plural(
                handles
                    .iter()
                    .filter(|h| !h.status().phase.is_settled())
                    .count(),
                "service"
            )
        )),
        None => view.note("nothing left to supervise"),
    }
    let shutdown = supervisor.shutdown();
    tokio::pin!(shutdown);
    let shutdown_began = Instant::now();
    let strays = loop {
        tokio::select! {
            strays = &mut shutdown => break strays,
            event = events.recv() => if let Ok(event) = event { view.event(&event, true) },
            name = interrupt.recv() => {
                // Some tools signal both the process and its group: one press, two
                // signals. Only a second signal a moment later means "hurry".
                if ended_by.is_some() && shutdown_began.elapsed() < DOUBLE_SIGNAL {
                    continue;
                }
                view.note(&format!("{name}: killing every service now"));
                for handle in &handles {
                    handle.send(Input::Stop);
                    if let Some(pid) = handle.status().pid {
                        let _ = process::signal_group(pid, nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
        }
    };
    while let Ok(event) = events.try_recv() {
        view.event(&event, true);
    }
    if strays > 0 {
        view.note(&format!(
            "killed {} left behind outside their service's process group",
            plural(strays, "process")
        ));
    }
    server.abort();
    if let Some(tcp_server) = tcp_server {
        tcp_server.abort();
    }
    let _ = std::fs::remove_file(&socket);
    if let Some(problem) = supervisor.history_problem() {
        crate::supervisor::warn(problem);
    }
    view.note("all services stopped");
    if ended_by.is_none() && !failed.is_empty() {
        return ExitCode::from(EXIT_FAILED);
    }
    ExitCode::SUCCESS
}

/// Writes a line on stdout. A reader that went away (`muster up | head`) must not end
/// the supervision: a failed write is ignored.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

/// ", 1 on demand (model at 127.0.0.1:8080)": the services that start when asked.
fn on_demand(supervisor: &Supervisor) -> String {
    let waiting: Vec<String> = supervisor
        .services()
        .iter()
        .filter(|h| !supervisor.is_selected(h.name()))
        .map(|h| match &h.service.proxy {
            Some(proxy) => format!("{} at {}", h.name(), proxy.listen),
            None => h.name().to_string(),
        })
        .collect();
    if waiting.is_empty() {
        return String::new();
    }
    format!(", {} on demand ({})", waiting.len(), waiting.join(", "))
}

struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// What the user sees: progress bars while booting on a terminal, event lines, or JSON.
struct View {
    json: bool,
    began: Instant,
    width: usize,
    progress: Option<(MultiProgress, BTreeMap<ServiceName, ProgressBar>)>,
}

impl View {
    fn new(supervisor: &Supervisor, json: bool, progress: bool, began: Instant) -> Self {
        let width = supervisor
            .spec()
            .services
            .keys()
            .map(|name| name.as_str().len())
            .max()
            .unwrap_or(0);
        let progress = progress.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let style = ProgressStyle::with_template("{spinner:.cyan} {prefix} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            // Start order: by wave, then by name.
            let mut order: Vec<_> = supervisor
                .selected()
                .into_iter()
                .map(|h| h.name().clone())
                .collect();
            order.sort_by_key(|name| (supervisor.spec().wave_of(name.as_str()), name.clone()));
            let bars = order
                .into_iter()
                .map(|name| {
                    let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                    bar.set_prefix(format!("{name:<width$}"));
                    (name, bar)
                })
                .collect();
            (multi, bars)
        });
        Self {
            json,
            began,
            width,
            progress,
        }
    }

    fn tick(&mut self, supervisor: &Supervisor) {
        let Some((_, bars)) = &self.progress else {
            return;
        };
        for (name, bar) in bars {
            if bar.is_finished() {
                continue;
            }
            let Some(status) = supervisor.service(name.as_str()).map(|h| h.status()) else {
                continue;
            };
            let elapsed = status.since.elapsed().unwrap_or_default();
            let line = format!(
                "{} {:>5.1}s  {}",
                paint_phase(status.phase),
                elapsed.as_secs_f64(),
                printable(status.notify_status.as_deref().unwrap_or(&status.reason))
            );
            match status.phase {
                Phase::Healthy | Phase::Completed => {
                    bar.set_style(done_style("✓"));
                    bar.finish_with_message(format!(
                        "{} {}",
                        paint_phase(status.phase),
                        printable(&status.reason)
                    ));
                }
                Phase::Failed => {
                    bar.set_style(done_style("✗"));
                    bar.finish_with_message(format!(
                        "{} {}",
                        paint_phase(status.phase),
                        printable(&status.reason)
                    ));
                }
                _ => {
                    bar.set_message(line);
                    bar.tick();
                }
            }
        }
    }

    fn finish_progress(&mut self) {
        if let Some((multi, bars)) = self.progress.take() {
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.abandon();
                }
            }
            let _ = multi.clear();
        }
    }

    fn event(&mut self, event: &Event, booted: bool) {
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                say(format_args!("{line}"));
            }
            return;
        }
        if self.progress.is_some() && !booted {
            return;
        }
        let elapsed = self.began.elapsed().as_secs_f64();
        let kind = event.kind.as_str();
        let kind = match event.kind {
            EventKind::Failed => style(kind).red().bold(),
            EventKind::Exited
            | EventKind::Unhealthy
            | EventKind::Restarting
            | EventKind::OrphanStopped
            | EventKind::HookFailed => style(kind).yellow(),
            EventKind::Ready | EventKind::Healthy | EventKind::Completed => style(kind).green(),
            _ => style(kind).dim(),
        };
        say(format_args!(
            "{:>8.3}s {:<width$} {:<10} {}",
            elapsed,
            event.service,
            kind,
            printable(&event.message),
            width = self.width
        ));
    }

    /// A line from muster itself: to stderr in JSON mode, so stdout stays parseable.
    fn note(&self, text: &str) {
        if self.json {
            crate::supervisor::warn(text);
        } else {
            say(format_args!("{} {text}", style("muster:").bold()));
        }
    }

    fn booted(&mut self, supervisor: &Supervisor) {
        self.tick(supervisor);
        if let Some((multi, bars)) = self.progress.take() {
            // Keep the finished lines on screen; they are the boot summary.
            for bar in bars.values() {
                if !bar.is_finished() {
                    bar.finish();
                }
            }
            drop(multi);
        }
        let took = self.began.elapsed();
        let statuses: Vec<_> = supervisor
            .selected()
            .into_iter()
            .map(|h| h.status())
            .collect();
        let mut failed: Vec<_> = statuses
            .iter()
            .filter(|s| s.phase == Phase::Failed)
            .collect();
        // Root causes first, then the services that failed through them.
        failed.sort_by_key(|s| s.reason.starts_with("dependency `"));
        let up = statuses.len() - failed.len();
        if failed.is_empty() {
            self.note(&format!(
                "{} up in {}{}; Ctrl-C stops them",
                plural(up, "service"),
                seconds(took),
                on_demand(supervisor)
            ));
            return;
        }
        self.note(&format!(
            "{up} of {} up in {}; {} failed:",
            plural(statuses.len(), "service"),
            seconds(took),
            failed.len()
        ));
        for status in &failed {
            self.note(&format!(
                "  ✗ {}: {}",
                status.service,
                printable(&status.reason)
            ));
        }
        // The services that failed by themselves (not through a dependency): their logs.
        for status in failed
            .iter()
            .filter(|s| !s.reason.starts_with("dependency `"))
        {
            let Some(handle) = supervisor.service(status.service.as_str()) else {
                continue;
            };
            let log = crate::supervisor::logs::Log::lock(handle.log());
            let lines = log.tail(10);
            self.note(&format!(
                "last lines of {} ({}):",
                status.service,
                log.path().display()
            ));
            for line in lines {
                self.note(&format!("  | {}", line.text));
            }
        }
    }
}

fn done_style(mark: &str) -> ProgressStyle {
    let template = format!("{mark} {{prefix}} {{wide_msg}}");
    ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn paint_phase(phase: Phase) -> console::StyledObject<String> {
    let text = format!("{phase:<9}");
    match phase {
        Phase::Healthy | Phase::Completed => style(text).green(),
        Phase::Failed => style(text).red().bold(),
        Phase::Exited | Phase::Unhealthy => style(text).yellow(),
        _ => style(text).cyan(),
    }
}

fn seconds(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.2}s", duration.as_secs_f64())
    }
}

/// `up --detach`: the same supervisor as a background process of its own (its own
/// process group, so the terminal's Ctrl-C does not reach it), its output in
/// `state-dir/muster.log`. Returns once the bootstrap has settled.
fn detach(global: &GlobalArgs, args: &UpArgs, spec: &Spec) -> ExitCode {
    let state_dir = &spec.settings.state_dir;
    // Refuse here, in the foreground, rather than in a log file nobody reads.
    match StateLock::acquire(state_dir) {
        Ok(lock) => drop(lock),
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
    let mut command = std::process::Command::new(exe);
    command
        .arg("up")
        .arg("--no-progress")
        .arg("-f")
        .arg(&spec.path)
        .arg("--state-dir")
        .arg(state_dir)
        .args(&args.services)
        .env("NO_COLOR", "1")
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
    eprintln!(
        "muster: supervisor started in the background (pid {}); its output goes to {}",
        child.id(),
        log_path.display()
    );
    // Long enough for the slowest start deadline, with room for the dependencies.
    let patience = spec
        .services
        .values()
        .filter_map(|s| s.ready.as_ref().map(|r| r.timeout))
        .sum::<Duration>()
        + Duration::from_secs(30);
    let socket = api::socket_path(state_dir);
    let runtime = match super::control::runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let began = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "muster: the supervisor exited ({status}); the end of {}:",
                log_path.display()
            );
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(15)..] {
                eprintln!("  | {line}");
            }
            return ExitCode::from(EXIT_FAILED);
        }
        let answer = runtime.block_on(api::client::request(
            &socket,
            hyper::Method::GET,
            "/v1/services",
        ));
        if let Ok(answer) = answer
            && answer.body["booted"] == true
        {
            let services = answer.body["services"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            println!("{}", super::status::summary(true, &services));
            print!("{}", super::status::table(&services));
            let all_up = services.iter().all(|s| {
                s["selected"] != true
                    || matches!(s["state"].as_str(), Some("healthy" | "completed"))
            });
            return if all_up {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILED)
            };
        }
        if began.elapsed() > patience {
            eprintln!(
                "muster: the bootstrap has not settled after {}; see `muster status -f {}`",
                crate::supervisor::machine::human(patience),
                global.file.display()
            );
            return ExitCode::from(EXIT_FAILED);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
