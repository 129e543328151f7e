//! What `muster up` shows while the supervisor runs: on a terminal, a live line per
//! service while the graph boots; otherwise (and after the boot) one line per event, or
//! JSON Lines with `--json`; and, unless `--output` says otherwise, every service's
//! output lines among the events (see [`super::lines`]). The view only reads: it
//! follows the supervisor's event [`Feed`] (which loses nothing, however slowly the
//! output drains), the services' logs and its graph, and never decides anything about
//! the services.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use console::style;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::lines::{self, Item, Lines, Output};
use super::plural;
use super::printable::printable;
use crate::config::ServiceName;
use crate::supervisor::{Event, EventKind, Feed, Lifecycle, Phase, Supervisor};

/// Where the view's output goes and how it is dressed.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    pub json: bool,
    /// Live progress lines on the terminal while booting.
    pub progress: bool,
    /// Running in the background (`up -d`): the output goes to a log file, so lines
    /// carry the wall-clock time and the summary says how to stop it.
    pub background: bool,
    /// What is shown besides the summary.
    pub output: Output,
}

/// The view of one run of the supervisor.
pub struct View {
    mode: Mode,
    began: Instant,
    width: usize,
    progress: Option<(MultiProgress, BTreeMap<ServiceName, ProgressBar>)>,
    file: std::path::PathBuf,
    /// Lines of each service that stdout could not take in time.
    unshown: BTreeMap<ServiceName, u64>,
}

impl View {
    pub fn new(supervisor: &Supervisor, mode: Mode, began: Instant) -> Self {
        let spec = supervisor.spec();
        let width = spec
            .services
            .keys()
            .map(|name| name.as_str().len())
            .max()
            .unwrap_or(0);
        Self {
            mode,
            began,
            width,
            progress: None,
            file: spec.path.clone(),
            unshown: BTreeMap::new(),
        }
    }

    /// Follows the supervisor until its history closes, every event shown once, in
    /// order; the boot summary once the bootstrap has settled, after the events it
    /// counts; a line when the shutdown begins.
    pub async fn run(
        mut self,
        supervisor: Arc<Supervisor>,
        mut feed: Feed,
        mut output: Option<Lines>,
    ) {
        let mut graph = supervisor.watch_graph();
        let mut graph_open = true;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut booted = false;
        let mut announced = false;
        // A singleton found running on another host ends the bootstrap without an event.
        let mut ownership = supervisor.fences().map(|fences| fences.changes.subscribe());
        loop {
            let owners = async {
                let Some(changes) = &mut ownership else {
                    return std::future::pending().await;
                };
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            let event = tokio::select! {
                () = owners, if !booted => None,
                event = feed.recv() => match event {
                    Some(event) => Some(event),
                    None => break,
                },
                changed = graph.changed(), if graph_open => {
                    graph_open = changed.is_ok();
                    // A reload may have added or replaced services: follow them too.
                    if let Some(output) = &mut output {
                        output.catch_up(&supervisor);
                    }
                    None
                }
                item = next_line(&mut output) => {
                    self.line(item);
                    None
                }
                _ = tick.tick(), if self.progress.is_some() && !booted => {
                    self.tick(&supervisor);
                    None
                }
            };
            let current = supervisor.graph();
            let closing = matches!(current.lifecycle, Lifecycle::ShuttingDown | Lifecycle::Done);
            let mut event = event;
            // A bootstrap that settled gets its summary before anything else is said, the
            // shutdown that may already have followed it included (a graph that completes
            // at once ends as soon as it has booted).
            if !booted && supervisor.booted() {
                booted = true;
                // The summary counts what the events said: every event of the boot is
                // written, and shown, before it.
                if let Some(event) = event.take() {
                    self.event(&event, false);
                }
                supervisor.bus().flush().await;
                while let Some(event) = feed.try_recv() {
                    self.event(&event, false);
                }
                self.booted(&supervisor);
                // The command that started this background supervisor waits for this.
                if self.mode.background {
                    crate::starter::tell_parent("READY=1");
                }
            }
            // The reason comes before the stops it causes.
            if closing && !announced {
                announced = true;
                // With why: `up -d` tells "nothing left to supervise", a success,
                // from an end the user should hear about.
                let why = current
                    .why_shutdown
                    .as_deref()
                    .unwrap_or(crate::daemon::NOTHING_LEFT);
                if self.mode.background {
                    crate::starter::tell_parent(&format!("STOPPING=1\nSTATUS={why}"));
                }
                if !booted {
                    self.tick(&supervisor);
                    self.finish_progress();
                    booted = true;
                }
                self.shutting_down(&supervisor, current.why_shutdown.as_deref());
            }
            if let Some(event) = event {
                self.event(&event, booted);
            }
            if self.progress.is_none()
                && self.mode.progress
                && !current.selected.is_empty()
                && !booted
            {
                self.start_progress(&supervisor);
            }
        }
        // The last lines printed before the history closed. A service's pipes are read
        // by tasks of their own, which may still hold its last output when its exit is
        // known: they get their turns first.
        if let Some(output) = &mut output {
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
            for item in output.drain() {
                self.line(item);
            }
        }
        self.finish_progress();
    }

    /// A service's output line: above the live lines while they are shown.
    fn line(&mut self, item: Item) {
        let text = match &item {
            Item::Line(name, line) if self.mode.json => lines::json(name.as_str(), line),
            Item::Line(name, line) => format!(
                "{} {}",
                self.when(line.time),
                lines::prefixed(name.as_str(), self.width, line.stream, &line.text)
            ),
            Item::Skipped(count) => {
                let text = format!(
                    "{count} lines of the services' output not shown: the terminal fell behind (`muster logs NAME` has them)"
                );
                if self.mode.json {
                    crate::supervisor::warn(&text);
                    return;
                }
                format!("{} {text}", style("muster:").bold())
            }
        };
        // A count of skipped lines names no service; lost in turn, it is not counted.
        let service = match item {
            Item::Line(name, _) => Some(name),
            Item::Skipped(_) => None,
        };
        match &self.progress {
            // The live lines step aside for it, and are drawn again below: written
            // here and now, or they would be drawn over (a terminal, which reads).
            Some((multi, _)) => multi.suspend(|| {
                use std::io::Write;
                flush();
                let _ = writeln!(std::io::stdout().lock(), "{text}");
            }),
            None => {
                // What the queue had no room for is counted, and said once it has.
                if let Some((name, count)) = self.unshown.pop_first() {
                    let said = say_line(format!(
                        "{} {count} lines of `{name}` not shown: stdout fell behind (`muster logs {name}` has them)",
                        style("muster:").bold()
                    ));
                    if !said {
                        self.unshown.insert(name, count);
                    }
                }
                if (!self.unshown.is_empty() || !say_line(text))
                    && let Some(service) = service
                {
                    *self.unshown.entry(service).or_default() += 1;
                }
            }
        }
    }

    fn start_progress(&mut self, supervisor: &Supervisor) {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let style = ProgressStyle::with_template("{spinner:.cyan} {prefix} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let spec = supervisor.spec();
        // Start order: by wave, then by name.
        let mut order: Vec<_> = supervisor
            .selected()
            .into_iter()
            .map(|h| h.name().clone())
            .collect();
        order.sort_by_key(|name| (spec.wave_of(name.as_str()), name.clone()));
        let width = self.width;
        let bars = order
            .into_iter()
            .map(|name| {
                let bar = multi.add(ProgressBar::new_spinner().with_style(style.clone()));
                bar.set_prefix(format!("{name:<width$}"));
                (name, bar)
            })
            .collect();
        self.progress = Some((multi, bars));
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
            let mark = match status.phase {
                Phase::Healthy | Phase::Completed => Some("✓"),
                Phase::Failed => Some("✗"),
                _ => None,
            };
            match mark {
                Some(mark) => {
                    bar.set_style(done_style(mark));
                    bar.finish_with_message(format!(
                        "{} {}",
                        paint_phase(status.phase),
                        printable(&status.reason)
                    ));
                }
                None => {
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
        if self.mode.output == Output::None {
            return;
        }
        if self.mode.json {
            if let Ok(line) = serde_json::to_string(event) {
                say(format_args!("{line}"));
            }
            return;
        }
        // While the live lines show the boot, events wait for the summary's turn.
        if self.mode.progress && !booted {
            return;
        }
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
            "{} {:<width$} {:<10} {}",
            self.when(event.time),
            event.service,
            kind,
            printable(&event.message),
            width = self.width
        ));
    }

    /// Seconds since `up` began on a terminal; the wall-clock time in a log file, which
    /// is read long after and across restarts.
    fn when(&self, time: std::time::SystemTime) -> String {
        if self.mode.background {
            humantime::format_rfc3339_millis(time).to_string()
        } else {
            format!("{:>8.3}s", self.began.elapsed().as_secs_f64())
        }
    }

    /// A line from muster itself: to stderr in JSON mode, so stdout stays parseable.
    pub fn note(&self, text: &str) {
        if self.mode.json {
            crate::supervisor::warn(text);
        } else if self.mode.background {
            say(format_args!(
                "{} {} {text}",
                humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                style("muster:").bold()
            ));
        } else {
            say(format_args!("{} {text}", style("muster:").bold()));
        }
    }

    fn shutting_down(&self, supervisor: &Supervisor, why: Option<&str>) {
        let running = supervisor
            .services()
            .iter()
            .filter(|h| !h.status().phase.is_settled())
            .count();
        match why {
            Some(crate::daemon::NOTHING_LEFT) | None => self.note(crate::daemon::NOTHING_LEFT),
            Some(why) => self.note(&format!(
                "{why}: stopping {} in reverse dependency order{}",
                plural(running, "service"),
                if self.mode.background {
                    ""
                } else {
                    " (again to kill them now)"
                }
            )),
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
        failed.sort_by_key(|s| s.blocked_by.is_some());
        let up = statuses
            .iter()
            .filter(|s| matches!(s.phase, Phase::Healthy | Phase::Unhealthy))
            .count();
        let completed = statuses
            .iter()
            .filter(|s| s.phase == Phase::Completed)
            .count();
        let counts = summary_counts(up, completed, statuses.len());
        let rest = others(supervisor);
        if failed.is_empty() {
            let how_to_stop = if self.mode.background {
                format!("`muster down -f {}` stops them", self.file.display())
            } else {
                "Ctrl-C stops them".to_owned()
            };
            let stop = if up > 0 || !rest.is_empty() {
                format!("; {how_to_stop}")
            } else {
                String::new()
            };
            self.note(&format!("{counts} in {}{rest}{stop}", seconds(took)));
            return;
        }
        self.note(&format!(
            "{counts} in {}; {} failed:",
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
        for status in failed.iter().filter(|s| s.blocked_by.is_none()) {
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
                self.note(&format!("  | {}", printable(&line.text)));
            }
        }
    }
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// "3 services up, 1 completed", or "2 of 3 services up" when some failed: a one-shot
/// that finished is not "up".
fn summary_counts(up: usize, completed: usize, total: usize) -> String {
    let services = if up + completed == total {
        plural(up.max(completed), "service")
    } else {
        format!("{} of {}", up.max(completed), plural(total, "service"))
    };
    match (up, completed) {
        (_, 0) => format!("{services} up"),
        (0, _) => format!("{services} completed"),
        _ if up + completed == total => {
            format!("{} up, {completed} completed", plural(up, "service"))
        }
        _ => format!(
            "{up} of {} up, {completed} completed",
            plural(total, "service")
        ),
    }
}

/// ", 1 on demand (model at 127.0.0.1:8080), 2 not started (a, b)": the services the
/// boot did not start. On demand means a client's `ensure` or a proxy connection starts
/// it (`autostart = false`); the rest were left out by naming services on the command
/// line, and `muster start` starts them.
fn others(supervisor: &Supervisor) -> String {
    let mut on_demand = Vec::new();
    let mut not_started = Vec::new();
    for handle in supervisor.services() {
        if supervisor.is_selected(handle.name()) {
            continue;
        }
        match (&handle.service.proxy, handle.service.autostart) {
            (Some(proxy), _) => on_demand.push(format!("{} at {}", handle.name(), proxy.listen)),
            (None, false) => on_demand.push(handle.name().to_string()),
            (None, true) => not_started.push(handle.name().to_string()),
        }
    }
    let mut text = String::new();
    if !on_demand.is_empty() {
        text.push_str(&format!(
            ", {} on demand ({})",
            on_demand.len(),
            on_demand.join(", ")
        ));
    }
    if !not_started.is_empty() {
        text.push_str(&format!(
            ", {} not started ({})",
            not_started.len(),
            not_started.join(", ")
        ));
    }
    text
}

/// The next output line, when output is followed; never ready otherwise.
async fn next_line(output: &mut Option<Lines>) -> Item {
    match output {
        Some(output) => output.next().await,
        None => std::future::pending().await,
    }
}

/// Writes a line on stdout. A reader that went away (`muster up | head`) must not end
/// the supervision: a failed write is ignored.
///
/// The writing is done by a thread of its own: a reader that stops reading (`muster up
/// | less`, paused) blocks that thread, not the supervisor's. Events and notes wait
/// for room in its queue, as a direct write would; services' lines never do (see
/// [`say_line`]).
pub fn say(line: std::fmt::Arguments<'_>) {
    let _ = writer().send(Written::Line(line.to_string()));
}

/// Queues a service's output line unless the queue holds [`LINES_QUEUED`] of them
/// already; `false` when it was not queued. A service printing faster than stdout is
/// read loses lines on the screen (they are in its log file), never the supervisor's
/// time.
fn say_line(line: String) -> bool {
    use std::sync::atomic::Ordering;
    if QUEUED_LINES.load(Ordering::Relaxed) >= LINES_QUEUED {
        return false;
    }
    QUEUED_LINES.fetch_add(1, Ordering::Relaxed);
    if writer().try_send(Written::ServiceLine(line)).is_err() {
        QUEUED_LINES.fetch_sub(1, Ordering::Relaxed);
        return false;
    }
    true
}

/// Waits (a few seconds at most) until everything said is written: before `up` exits.
pub fn flush() {
    let (done, wait) = std::sync::mpsc::channel();
    if writer().send(Written::Flush(done)).is_ok() {
        let _ = wait.recv_timeout(Duration::from_secs(5));
    }
}

/// What the writer thread is given.
enum Written {
    Line(String),
    ServiceLine(String),
    Flush(std::sync::mpsc::Sender<()>),
}

/// Room for events and notes beyond the services' lines, which take at most half.
const QUEUE: usize = 4096;
const LINES_QUEUED: usize = QUEUE / 2;
static QUEUED_LINES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn writer() -> &'static std::sync::mpsc::SyncSender<Written> {
    static WRITER: std::sync::OnceLock<std::sync::mpsc::SyncSender<Written>> =
        std::sync::OnceLock::new();
    WRITER.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Written>(QUEUE);
        let spawned = std::thread::Builder::new()
            .name("stdout".to_owned())
            .spawn(move || {
                use std::io::Write;
                let stdout = std::io::stdout();
                for written in receiver {
                    match written {
                        Written::Line(line) => {
                            let _ = writeln!(stdout.lock(), "{line}");
                        }
                        Written::ServiceLine(line) => {
                            QUEUED_LINES.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                            let _ = writeln!(stdout.lock(), "{line}");
                        }
                        Written::Flush(done) => {
                            let _ = stdout.lock().flush();
                            let _ = done.send(());
                        }
                    }
                }
            });
        if spawned.is_err() {
            // No thread: nothing will be written, but nothing waits on it either
            // (`flush` gives up when the receiver is gone).
        }
        sender
    })
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
