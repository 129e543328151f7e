//! Chaos: 30 real services in four layers of dependencies, with tcp readiness, http and
//! tcp liveness, heartbeats on the notify socket and through the heartbeat file, restart
//! policies and two services whose restart-limit is meant to run out, under a seeded
//! driver that SIGKILLs, SIGSTOPs (then SIGCONTs) and floods random services at random
//! moments. It proves that, whatever the order of faults:
//!
//! - every SIGKILL the driver delivered is exactly one `exited` event (with SIGKILL) of
//!   the run it hit, and no service died any other way;
//! - every SIGSTOP'd process was caught by its heartbeat or liveness probe (one
//!   `unhealthy` event for that run) and replaced by a new run that became ready;
//! - afterwards every service is healthy again, and the two limited ones are `failed`
//!   after exactly the runs their `restart-limit` allows;
//! - the supervisor never left a zombie child behind, and after `muster down` no process
//!   of any run is left;
//! - the supervisor's memory is back within 10 % of its steady state before the faults,
//!   so nothing grows with the number of faults. The steady state is measured after a
//!   warm-up that brings every bounded buffer to its bound (each service's in-memory log
//!   tail of 1000 lines, the supervisor's last 10,000 events): those grow by design up
//!   to their bound, which a long run reaches and a short one does not, so a baseline
//!   taken right after boot would measure the length of the run, not a leak. The
//!   figure after boot is printed too;
//! - the history database holds every event with contiguous ids and passes SQLite's
//!   integrity check.
//!
//! A 31st service, `churn`, is no target: it only crash-loops during the warm-up to fill
//! the in-memory events. A second, short test pins what the chaos test first found: the
//! end of a run is told under that run's id even when the same step spawns the next.
//!
//! About 60 s by default. For a longer run, and to replay a schedule:
//!
//! ```sh
//! MUSTER_CHAOS_SECONDS=600 cargo test --test it chaos -- --nocapture
//! MUSTER_CHAOS_SEED=1234 cargo test --test it chaos -- --nocapture
//! ```
//!
//! `MUSTER_CHAOS_SECONDS` is how long faults are injected (default 30); the seed is
//! printed at the start and fixes the schedule: the delays, the kinds of fault and the
//! choice among the services eligible at each moment (which services are eligible
//! depends on timing, so a replay is the same schedule, not the same run).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::Method;
use muster::supervisor::procfs;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::helpers::evidence::{self, Memory, Stored, Sweep};
use crate::helpers::up::{Up, eventually};
use crate::helpers::{muster_run, runtime};

/// How long faults are injected unless `MUSTER_CHAOS_SECONDS` says otherwise.
const DEFAULT_SECONDS: u64 = 30;
/// The heartbeat deadline of the services that send heartbeats (every 100 ms).
const WATCHDOG: &str = "2s";
/// A SIGSTOP'd process must be caught within this; the slowest detector (the http
/// liveness probe: two failed attempts of 1.5 s, 1 s apart) needs about 5 s.
const DETECT_WITHIN: Duration = Duration::from_secs(30);
/// After the faults stop, every service must be back within this.
const RECOVER_WITHIN: Duration = Duration::from_secs(90);
/// A zombie child of the supervisor seen for this long was never reaped.
const ZOMBIE_GRACE: Duration = Duration::from_secs(3);
/// The most SIGSTOP'd services at once, so most of the graph stays up to be hit.
const MAX_STOPPED: usize = 3;

/// A service of the graph: the python fixture (`svc.py`) or a shell line.
#[derive(Debug, Clone)]
struct Service {
    name: String,
    fixture: Fixture,
    /// The port it listens on (tcp readiness, and liveness when `alive` is set).
    port: Option<u16>,
    alive: Alive,
    beat: Beat,
    deps: Vec<(String, &'static str)>,
    /// `(count, runs)`: a restart-limit meant to run out after `runs` runs.
    limit: Option<(u32, usize)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixture {
    Python,
    /// Python that exits with status 1 after 0.3 s.
    PythonCrash,
    /// `sh` touching the heartbeat file.
    ShellBeat,
    /// `sleep`, no probe at all.
    Sleep,
    /// `sh` exiting with status 2 after 0.2 s.
    ShellCrash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alive {
    None,
    Http,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Beat {
    None,
    Notify,
    File,
}

impl Service {
    fn new(name: String, fixture: Fixture) -> Self {
        Self {
            name,
            fixture,
            port: None,
            alive: Alive::None,
            beat: Beat::None,
            deps: Vec::new(),
            limit: None,
        }
    }

    /// A driver target at all (the limited ones are left to fail on their own, so
    /// their number of runs is exactly what the limit allows).
    fn target(&self) -> bool {
        self.limit.is_none()
    }

    /// Reads the flood file: only the python fixture does.
    fn floods(&self) -> bool {
        self.fixture == Fixture::Python
    }

    /// A stopped process is noticed only through heartbeats or an http probe: a tcp
    /// probe passes against a stopped process, whose kernel still accepts connections.
    fn detects_stop(&self) -> bool {
        self.beat != Beat::None || self.alive == Alive::Http
    }

    fn toml(&self, python: &str) -> String {
        let mut lines = vec![format!("[services.{}]", self.name)];
        let port = self.port.unwrap_or(0);
        let beat = match self.beat {
            Beat::None => "none",
            Beat::Notify => "notify",
            Beat::File => "file",
        };
        match self.fixture {
            Fixture::Python | Fixture::PythonCrash => {
                let crash = if self.fixture == Fixture::PythonCrash {
                    "0.3"
                } else {
                    "0"
                };
                lines.push(format!(
                    "command = [\"{python}\", \"{{dir}}/svc.py\", \"{}\", \"{port}\", \"{beat}\", \
                     \"{{dir}}/flood\", \"{crash}\"]",
                    self.name
                ));
            }
            Fixture::ShellBeat => lines.push(
                "shell = 'while :; do touch \"$MUSTER_HEARTBEAT_FILE\"; sleep 0.1; done'"
                    .to_owned(),
            ),
            Fixture::Sleep => lines.push("command = [\"sleep\", \"1000000\"]".to_owned()),
            Fixture::ShellCrash => lines.push("shell = 'sleep 0.2; exit 2'".to_owned()),
        }
        if let Some(port) = self.port {
            lines.push(format!("ready = {{ tcp = \"127.0.0.1:{port}\" }}"));
        } else if self.fixture == Fixture::Python {
            lines.push("ready = { log = \"^ready$\" }".to_owned());
        }
        match (self.alive, self.port) {
            (Alive::Http, Some(port)) => lines.push(format!(
                "alive = {{ http = \"http://127.0.0.1:{port}/health\", interval = \"1s\", \
                 timeout = \"1500ms\", failures = 2 }}"
            )),
            (Alive::Tcp, Some(port)) => lines.push(format!(
                "alive = {{ tcp = \"127.0.0.1:{port}\", interval = \"1s\" }}"
            )),
            _ => {}
        }
        if self.beat != Beat::None {
            lines.push(format!("watchdog = \"{WATCHDOG}\""));
        }
        if !self.deps.is_empty() {
            let deps: Vec<String> = self
                .deps
                .iter()
                .map(|(name, condition)| format!("{name} = \"{condition}\""))
                .collect();
            lines.push(format!("depends-on = {{ {} }}", deps.join(", ")));
        }
        match self.limit {
            Some((count, _)) => {
                lines.push(format!(
                    "restart = \"{}\"",
                    if self.fixture == Fixture::ShellCrash {
                        "always"
                    } else {
                        "on-failure"
                    }
                ));
                lines.push("backoff = { initial = \"50ms\", max = \"50ms\" }".to_owned());
                lines.push(format!(
                    "restart-limit = {{ count = {count}, within = \"1m\" }}"
                ));
            }
            None => {
                // Kills and hangs are failures: a budget no schedule can spend.
                lines.push("restart = \"always\"".to_owned());
                lines.push("backoff = { initial = \"50ms\", max = \"500ms\" }".to_owned());
                lines.push("restart-limit = { count = 100000, within = \"1m\" }".to_owned());
            }
        }
        lines.push("stop-timeout = \"5s\"".to_owned());
        lines.join("\n") + "\n"
    }
}

/// The graph: four layers (4 bases, 8 middles, 10 apps, 6 edges) and two services
/// meant to fail.
fn graph() -> Vec<Service> {
    let mut services = Vec::new();
    for i in 0..4 {
        let mut base = Service::new(format!("base{i}"), Fixture::Python);
        base.port = Some(crate::helpers::up::free_port());
        base.alive = Alive::Http;
        services.push(base);
    }
    for i in 0..8 {
        let mut mid = Service::new(format!("mid{i}"), Fixture::Python);
        mid.port = Some(crate::helpers::up::free_port());
        mid.beat = if i % 2 == 0 { Beat::Notify } else { Beat::File };
        mid.deps.push((format!("base{}", i % 4), "healthy"));
        if i % 2 == 1 {
            mid.deps.push((format!("base{}", (i + 1) % 4), "healthy"));
        }
        services.push(mid);
    }
    for i in 0..10 {
        let fixture = match i {
            0..=4 => Fixture::Python,
            5..=7 => Fixture::ShellBeat,
            _ => Fixture::Sleep,
        };
        let mut app = Service::new(format!("app{i}"), fixture);
        match fixture {
            Fixture::Python => {
                app.port = Some(crate::helpers::up::free_port());
                app.alive = Alive::Tcp;
            }
            Fixture::ShellBeat => app.beat = Beat::File,
            _ => {}
        }
        let condition = if fixture == Fixture::ShellBeat {
            "started"
        } else {
            "healthy"
        };
        app.deps.push((format!("mid{}", i % 8), condition));
        services.push(app);
    }
    for i in 0..6 {
        let mut edge = Service::new(format!("edge{i}"), Fixture::Python);
        edge.beat = if i % 2 == 0 { Beat::File } else { Beat::Notify };
        edge.deps.push((format!("app{i}"), "healthy"));
        edge.deps.push((format!("app{}", i + 4), "started"));
        services.push(edge);
    }
    let mut crash = Service::new("crash0".to_owned(), Fixture::PythonCrash);
    crash.deps.push(("base0".to_owned(), "healthy"));
    crash.limit = Some((3, 4));
    services.push(crash);
    let mut crash = Service::new("crash1".to_owned(), Fixture::ShellCrash);
    crash.limit = Some((2, 3));
    services.push(crash);
    services
}

/// Not one of the 30: started only during the warm-up, it crash-loops with no backoff
/// until the supervisor's in-memory history of the last [`EVENTS_IN_MEMORY`] events is
/// full, then is stopped.
const CHURN: &str = "[services.churn]\ncommand = [\"false\"]\nautostart = false\n\
                     restart = \"always\"\nbackoff = { initial = \"1ms\", max = \"1ms\" }\n\
                     restart-limit = { count = 1000000, within = \"1m\" }\n";
const EVENTS_IN_MEMORY: u64 = muster::supervisor::HISTORY_IN_MEMORY as u64;

/// The python fixture: listens (and answers any request `200 ok`) when given a port,
/// heartbeats from a thread, prints `ready`, then floods its output whenever the driver
/// leaves a flood file for it (`LINES STREAM`), or exits with status 1 after `crash`
/// seconds when that is not 0. Binding retries: the previous run's socket may be closing.
const FIXTURE: &str = r#"
import os, socket, sys, threading, time
name, port, beat, flood_dir, crash = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])

def notify_beats():
    address = os.environ["NOTIFY_SOCKET"]
    if address.startswith("@"):
        address = "\0" + address[1:]
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    while True:
        s.sendto(b"WATCHDOG=1", address)
        time.sleep(0.1)

def file_beats():
    path = os.environ["MUSTER_HEARTBEAT_FILE"]
    while True:
        os.utime(path)
        time.sleep(0.1)

def serve(listener):
    while True:
        conn, _ = listener.accept()
        conn.settimeout(1)
        try:
            if conn.recv(4096):
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            pass
        conn.close()

if port:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    for attempt in range(400):
        try:
            listener.bind(("127.0.0.1", port))
            break
        except OSError:
            if attempt == 399:
                raise
            time.sleep(0.05)
    listener.listen(128)
    threading.Thread(target=serve, args=(listener,), daemon=True).start()
if beat == "notify":
    threading.Thread(target=notify_beats, daemon=True).start()
elif beat == "file":
    threading.Thread(target=file_beats, daemon=True).start()
print("ready", flush=True)

began = time.monotonic()
flood = os.path.join(flood_dir, name)
line = (name + " flood " + "x" * 160 + "\n").encode()
while True:
    if crash and time.monotonic() - began > crash:
        sys.exit(1)
    try:
        os.rename(flood, flood + ".taken")
    except FileNotFoundError:
        time.sleep(0.05)
        continue
    with open(flood + ".taken") as f:
        count, stream = f.read().split()
    os.unlink(flood + ".taken")
    out = sys.stdout.buffer if stream == "out" else sys.stderr.buffer
    if stream == "long":
        # One line far over muster's 16 KiB cap, then ordinary lines.
        out.write(b"y" * 100000 + b"\n")
    block = line * 256
    for _ in range(int(count) // 256):
        out.write(block)
    out.flush()
"#;

/// The real interpreter behind `python3`: a version manager's shim would cost a shell
/// and a few execs on every one of hundreds of restarts.
fn python() -> String {
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    assert!(output.status.success(), "python3 -c failed: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("{name}={text:?}: {e}")),
    )
}

/// What the API says of one service.
#[derive(Debug, Clone)]
struct Seen {
    state: String,
    pid: Option<u32>,
    run: u64,
    reason: String,
}

fn statuses(rt: &tokio::runtime::Runtime, socket: &Path) -> BTreeMap<String, Seen> {
    let answer = rt
        .block_on(muster::api::client::request(
            socket,
            Method::GET,
            "/v1/services",
        ))
        .unwrap_or_else(|e| panic!("GET /v1/services: {e}"));
    answer.body["services"]
        .as_array()
        .unwrap_or_else(|| panic!("no services in {}", answer.body))
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                Seen {
                    state: s["state"].as_str().unwrap().to_owned(),
                    pid: s["pid"].as_u64().map(|p| p as u32),
                    run: s["run_id"].as_u64().unwrap(),
                    reason: s["reason"].as_str().unwrap_or_default().to_owned(),
                },
            )
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill,
    Stop,
    Flood,
}

/// One fault the driver injected.
#[derive(Debug, Clone)]
struct Fault {
    kind: Kind,
    service: String,
    pid: u32,
    run: u64,
    /// Wall-clock milliseconds, comparable with the events' times.
    at: u64,
}

/// A SIGSTOP'd run the supervisor has not reacted to yet.
#[derive(Debug)]
struct Stopped {
    service: String,
    pid: u32,
    run: u64,
    since: Instant,
}

/// What the driver saw besides its faults.
#[derive(Debug, Default)]
struct Findings {
    /// Stopped runs nobody noticed within [`DETECT_WITHIN`].
    undetected: Vec<String>,
    /// Zombie children of the supervisor seen for longer than [`ZOMBIE_GRACE`].
    lingering_zombies: Vec<String>,
    /// Most zombies seen at once (each reaped within the grace).
    zombie_peak: usize,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Whether `pid` is still the process of `run` of this supervisor (not a zombie, not a
/// recycled pid): the same proof muster's orphan recovery uses, its environment.
fn is_run(pid: u32, run: u64, instance: &str) -> bool {
    procfs::stat(pid).is_some_and(|stat| !stat.is_zombie())
        && procfs::environ_has(
            pid,
            &[
                &format!("MUSTER_RUN_ID={run}"),
                &format!("NOTIFY_SOCKET={instance}"),
            ],
        )
}

/// The fault driver: one thread, its own seeded generator, the API for who runs where,
/// signals and flood files for the faults.
struct Driver {
    rng: fastrand::Rng,
    rt: tokio::runtime::Runtime,
    socket: PathBuf,
    instance: String,
    supervisor: u32,
    flood_dir: PathBuf,
    services: Vec<Service>,
    faults: Vec<Fault>,
    stopped: Vec<Stopped>,
    /// The last run of each service the driver killed or stopped: the next fault on it
    /// waits for a newer run.
    hit: HashMap<String, u64>,
    zombies: HashMap<(u32, u64), Instant>,
    last_zombie_scan: Instant,
    findings: Findings,
    /// Bytes the floods asked for.
    flooded: u64,
}

impl Driver {
    fn poll(&mut self) -> BTreeMap<String, Seen> {
        let seen = statuses(&self.rt, &self.socket);
        // A stopped run is noticed once the supervisor leaves `healthy` for it (unhealthy,
        // stopping) or has replaced it; then it gets its SIGCONT, as a real operator's
        // `kill -CONT` would come, possibly too late.
        let mut still = Vec::new();
        for stopped in std::mem::take(&mut self.stopped) {
            let now = seen.get(&stopped.service);
            let noticed = now.is_some_and(|s| s.run != stopped.run || s.state != "healthy");
            let late = stopped.since.elapsed() > DETECT_WITHIN;
            if noticed || late {
                if late && !noticed {
                    self.findings.undetected.push(format!(
                        "{} run {} (pid {}) stopped {:?} ago, still {:?}",
                        stopped.service,
                        stopped.run,
                        stopped.pid,
                        stopped.since.elapsed(),
                        now
                    ));
                }
                if is_run(stopped.pid, stopped.run, &self.instance) {
                    let _ = killpg(Pid::from_raw(stopped.pid as i32), Signal::SIGCONT);
                }
            } else {
                still.push(stopped);
            }
        }
        self.stopped = still;
        if self.last_zombie_scan.elapsed() >= Duration::from_secs(1) {
            self.scan_zombies();
        }
        seen
    }

    fn scan_zombies(&mut self) {
        self.last_zombie_scan = Instant::now();
        let now: BTreeSet<(u32, u64)> = evidence::zombies_of(self.supervisor).into_iter().collect();
        self.findings.zombie_peak = self.findings.zombie_peak.max(now.len());
        self.zombies.retain(|key, _| now.contains(key));
        for key in now {
            let first = *self.zombies.entry(key).or_insert_with(Instant::now);
            if first.elapsed() > ZOMBIE_GRACE {
                let text = format!("pid {} (start {})", key.0, key.1);
                if !self.findings.lingering_zombies.contains(&text) {
                    self.findings.lingering_zombies.push(text);
                }
            }
        }
    }

    /// Services a kill or stop may hit now: running a run not hit before.
    fn eligible(&self, seen: &BTreeMap<String, Seen>, kind: Kind) -> Vec<(String, u32, u64)> {
        self.services
            .iter()
            .filter(|s| s.target())
            .filter(|s| kind != Kind::Stop || s.detects_stop())
            .filter(|s| !self.stopped.iter().any(|st| st.service == s.name))
            .filter_map(|s| {
                let now = seen.get(&s.name)?;
                let ok_state = match kind {
                    // A kill may come while it is still proving readiness.
                    Kind::Kill => now.state == "healthy" || now.state == "starting",
                    // A stop is caught by probes that run only once it is healthy.
                    _ => now.state == "healthy",
                };
                let fresh = self.hit.get(&s.name).is_none_or(|&run| now.run > run);
                (ok_state && fresh).then_some((s.name.clone(), now.pid?, now.run))
            })
            .collect()
    }

    fn inject(&mut self, kind: Kind, seen: &BTreeMap<String, Seen>) -> bool {
        if kind == Kind::Flood {
            let floods: Vec<&Service> = self.services.iter().filter(|s| s.floods()).collect();
            let target = floods[self.rng.usize(..floods.len())].name.clone();
            let lines = self.rng.usize(5_000..30_000);
            let stream = ["out", "err", "long"][self.rng.usize(..3)];
            self.flood(&target, lines, stream);
            let run = seen.get(&target).map_or(0, |s| s.run);
            self.record(kind, &target, 0, run);
            return true;
        }
        let candidates = self.eligible(seen, kind);
        if candidates.is_empty() || (kind == Kind::Stop && self.stopped.len() >= MAX_STOPPED) {
            return false;
        }
        let (service, pid, run) = candidates[self.rng.usize(..candidates.len())].clone();
        // The pid is proven to be that run right before the signal; a process that ended
        // in between is not a fault delivered.
        if !is_run(pid, run, &self.instance) {
            return false;
        }
        let delivered = match kind {
            Kind::Kill => kill(Pid::from_raw(pid as i32), Signal::SIGKILL),
            _ => killpg(Pid::from_raw(pid as i32), Signal::SIGSTOP),
        };
        if delivered.is_err() {
            return false;
        }
        if kind == Kind::Stop {
            self.stopped.push(Stopped {
                service: service.clone(),
                pid,
                run,
                since: Instant::now(),
            });
        }
        self.hit.insert(service.clone(), run);
        self.record(kind, &service, pid, run);
        true
    }

    fn flood(&mut self, service: &str, lines: usize, stream: &str) {
        // What the fixture writes: whole blocks of 256 lines of 171 bytes, after one
        // line of 100,000 for a `long` flood.
        self.flooded += (lines / 256 * 256 * 171) as u64;
        if stream == "long" {
            self.flooded += 100_001;
        }
        // Written aside and renamed, so the service never reads half a request.
        let path = self.flood_dir.join(service);
        let aside = self.flood_dir.join(format!(".{service}.new"));
        std::fs::write(&aside, format!("{lines} {stream}")).unwrap();
        std::fs::rename(&aside, &path).unwrap();
    }

    fn record(&mut self, kind: Kind, service: &str, pid: u32, run: u64) {
        self.faults.push(Fault {
            kind,
            service: service.to_owned(),
            pid,
            run,
            at: now_ms(),
        });
    }

    /// Faults at random moments until `until`.
    fn run(&mut self, until: Instant) {
        let mut next = Instant::now();
        while Instant::now() < until {
            let seen = self.poll();
            if Instant::now() >= next {
                let kind = match self.rng.u32(..100) {
                    0..45 => Kind::Kill,
                    45..65 => Kind::Stop,
                    _ => Kind::Flood,
                };
                self.inject(kind, &seen);
                next = Instant::now() + Duration::from_millis(self.rng.u64(100..500));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every stopped run has been noticed (and continued).
    fn settle(&mut self) {
        while !self.stopped.is_empty() {
            self.poll();
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Polls the API until every target is healthy and every limited service failed.
fn wait_recovered(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
    services: &[Service],
    within: Duration,
) -> Result<BTreeMap<String, Seen>, BTreeMap<String, Seen>> {
    let deadline = Instant::now() + within;
    loop {
        let seen = statuses(rt, socket);
        let done = services.iter().all(|s| {
            let want = if s.target() { "healthy" } else { "failed" };
            seen.get(&s.name).is_some_and(|now| now.state == want)
        });
        if done {
            return Ok(seen);
        }
        if Instant::now() > deadline {
            return Err(seen);
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn last_event_id(state_dir: &Path) -> u64 {
    evidence::open_history(state_dir)
        .query_row("SELECT IFNULL(MAX(id), 0) FROM events", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap() as u64
}

/// Waits until the history has had no new event for `quiet`: the supervisor has nothing
/// left to do, so its memory can be read as its steady state.
fn wait_quiet(state_dir: &Path, quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = (u64::MAX, Instant::now());
    loop {
        let max = last_event_id(state_dir);
        if max != last.0 {
            last = (max, Instant::now());
        } else if last.1.elapsed() >= quiet {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the history never went quiet (last id {max})"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn show_memory(m: &Memory) -> String {
    format!(
        "RSS {} (anon {}, file {}), PSS {}",
        mib(m.rss),
        mib(m.anon),
        mib(m.file),
        mib(m.pss)
    )
}

#[test]
fn thirty_services_survive_kills_stops_and_floods() {
    let _turn = crate::helpers::heavy();
    let seconds = env_number("MUSTER_CHAOS_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let seed = env_number("MUSTER_CHAOS_SEED").unwrap_or_else(|| fastrand::u64(..));
    eprintln!("chaos: seed {seed} (replay with MUSTER_CHAOS_SEED={seed}), faults for {seconds}s");
    let began = Instant::now();

    let services = graph();
    assert_eq!(services.len(), 30);
    let python = python();
    let mut config = String::from(
        "[settings]\nstate-dir = \"{dir}/state\"\nshutdown-timeout = \"60s\"\n\
         # Floods write hundreds of MiB over a long run: keep the disk use bounded.\n\
         [settings.logs]\nmax-size = \"4MiB\"\nkeep = 1\n\n",
    );
    for service in &services {
        config.push_str(&service.toml(&python));
        config.push('\n');
    }
    config.push_str(CHURN);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("svc.py"), FIXTURE).unwrap();
    let flood_dir = dir.path().join("flood");
    std::fs::create_dir(&flood_dir).unwrap();
    let state_dir = dir.path().join("state");

    let sweep = Sweep::default();
    let mut up = Up::start_in(dir, &config, &[]);
    let supervisor = up.pid();
    up.wait_event("base0", "spawned");
    let instance = evidence::instance_of(supervisor).expect("the supervisor's notify socket");
    sweep.add(&instance);
    let socket = up.socket();
    let rt = runtime();
    let file = up.path("muster.toml");

    if let Err(seen) = wait_recovered(&rt, &socket, &services, RECOVER_WITHIN) {
        panic!(
            "the graph did not come up: {seen:#?}\nstderr: {}",
            up.stderr()
        );
    }
    wait_quiet(&state_dir, Duration::from_secs(1));
    let booted = evidence::memory(supervisor).unwrap();
    let boot_time = began.elapsed();

    let mut driver = Driver {
        rng: fastrand::Rng::with_seed(seed),
        rt: runtime(),
        socket: socket.clone(),
        instance: instance.clone(),
        supervisor,
        flood_dir: flood_dir.clone(),
        services: services.clone(),
        faults: Vec::new(),
        stopped: Vec::new(),
        hit: HashMap::new(),
        zombies: HashMap::new(),
        last_zombie_scan: Instant::now(),
        findings: Findings::default(),
        flooded: 0,
    };

    // Warm-up: every bounded buffer to its bound and every fault path once, so that the
    // memory measured next is the steady state the faults must not move. Each service's
    // in-memory log tail keeps its last 1000 lines (a flood of 2048 fills it), and the
    // supervisor the last 10,000 events (the churn service fills that).
    let warm_began = Instant::now();
    for service in services.iter().filter(|s| s.floods()) {
        driver.flood(&service.name, 2048, "out");
        driver.record(Kind::Flood, &service.name, 0, 0);
    }
    let answer = up.call(Method::POST, "/v1/services/churn/start");
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let churn_deadline = Instant::now() + Duration::from_secs(120);
    while last_event_id(&state_dir) < EVENTS_IN_MEMORY + 100 {
        assert!(
            Instant::now() < churn_deadline,
            "the churn made {} events in 120 s",
            last_event_id(&state_dir)
        );
        thread::sleep(Duration::from_millis(100));
    }
    let answer = up.call(Method::POST, "/v1/services/churn/stop");
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let seen = driver.poll();
    assert!(
        driver.inject(Kind::Kill, &seen),
        "no service to kill: {seen:#?}"
    );
    let seen = driver.poll();
    assert!(
        driver.inject(Kind::Stop, &seen),
        "no service to stop: {seen:#?}"
    );
    driver.settle();
    eventually("every warm-up flood was read", || {
        std::fs::read_dir(&flood_dir).unwrap().next().is_none()
    });
    if let Err(seen) = wait_recovered(&rt, &socket, &services, RECOVER_WITHIN) {
        panic!("not back after the warm-up: {seen:#?}");
    }
    wait_quiet(&state_dir, Duration::from_secs(1));
    let warm = evidence::memory(supervisor).unwrap();
    let warm_time = warm_began.elapsed();
    let warm_faults: Vec<Kind> = driver.faults.iter().map(|f| f.kind).collect();
    let warm_events = last_event_id(&state_dir);

    // The faults, from another thread; this one waits for it.
    let chaos_began = Instant::now();
    let until = chaos_began + Duration::from_secs(seconds);
    let mut driver = thread::spawn(move || {
        driver.run(until);
        driver.settle();
        driver
    })
    .join()
    .expect("the driver panicked");
    let chaos_time = chaos_began.elapsed();

    // Recovery: every service back, every flood read, nothing happening any more.
    let recover_began = Instant::now();
    let recovered = wait_recovered(&rt, &socket, &services, RECOVER_WITHIN);
    let recover_time = recover_began.elapsed();
    let floods_left = || std::fs::read_dir(&flood_dir).unwrap().count();
    eventually("every flood was read", || floods_left() == 0);
    let final_statuses = match recovered {
        Ok(seen) => seen,
        Err(seen) => {
            let db = evidence::open_history(&state_dir);
            let events = evidence::stored_events(&db);
            let mut text = String::new();
            for service in &services {
                let want = if service.target() {
                    "healthy"
                } else {
                    "failed"
                };
                let now = &seen[&service.name];
                if now.state != want {
                    let mine: Vec<&Stored> = events
                        .iter()
                        .filter(|e| e.service == service.name)
                        .collect();
                    text.push_str(&format!(
                        "{} is {} ({}), not {want}; its last events:\n{}\n",
                        service.name,
                        now.state,
                        now.reason,
                        evidence::show(&mine[mine.len().saturating_sub(12)..])
                    ));
                }
            }
            panic!(
                "not every service is back within {RECOVER_WITHIN:?} of the last fault \
                 (seed {seed}):\n{text}"
            );
        }
    };
    wait_quiet(&state_dir, Duration::from_secs(2));
    let after = evidence::memory(supervisor).unwrap();

    // No zombie child now, none that lingered during the faults.
    driver.scan_zombies();
    let zombies_now = evidence::zombies_of(supervisor);
    let findings = &driver.findings;

    // Down, then nothing of any run may be left.
    let down = muster_run(&["down", "-f", file.to_str().unwrap()]);
    assert_eq!(down.code, 0, "muster down: {}", down.stderr);
    let ended = up.wait_exit();
    assert_eq!(ended.code, 0, "muster up after down: {}", ended.stderr);
    let db = evidence::open_history(&state_dir);
    let events = evidence::stored_events(&db);
    let runs = evidence::stored_runs(&db);
    let carriers = evidence::carriers(&instance);
    let survivors: Vec<&evidence::StoredRun> = runs
        .iter()
        .filter(|run| {
            procfs::stat(run.pid)
                .is_some_and(|stat| !stat.is_zombie() && Some(stat.start_ticks) == run.start_ticks)
        })
        .collect();
    let orphans = carriers.len() + survivors.len();

    // The figures.
    let faults = &driver.faults;
    let count = |kind: Kind| faults.iter().filter(|f| f.kind == kind).count();
    let mut recovery: BTreeMap<Kind, Vec<u64>> = BTreeMap::new();
    let mut unrecovered = Vec::new();
    for fault in faults.iter().filter(|f| f.kind != Kind::Flood) {
        let ready = events
            .iter()
            .find(|e| e.service == fault.service && e.kind == "ready" && e.run_id > fault.run);
        match ready {
            Some(ready) => recovery
                .entry(fault.kind)
                .or_default()
                .push(ready.time.saturating_sub(fault.at)),
            None => unrecovered.push(fault.clone()),
        }
    }
    let mut all: Vec<u64> = recovery.values().flatten().copied().collect();
    all.sort_unstable();
    for times in recovery.values_mut() {
        times.sort_unstable();
    }
    let line = |times: &[u64]| {
        format!(
            "p50 {} ms, p99 {} ms, max {} ms (n = {})",
            percentile(times, 50.0),
            percentile(times, 99.0),
            times.last().copied().unwrap_or(0),
            times.len()
        )
    };
    let kills: Vec<&Fault> = faults.iter().filter(|f| f.kind == Kind::Kill).collect();
    let by_run: HashMap<u64, Vec<&Stored>> = events.iter().fold(HashMap::new(), |mut map, e| {
        map.entry(e.run_id).or_default().push(e);
        map
    });
    let exits_of = |run: u64| -> Vec<&Stored> {
        by_run
            .get(&run)
            .map(|events| {
                events
                    .iter()
                    .copied()
                    .filter(|e| e.kind == "exited" || e.kind == "stopped")
                    .collect()
            })
            .unwrap_or_default()
    };
    let matched = kills
        .iter()
        .filter(|k| {
            let exits = exits_of(k.run);
            exits.len() == 1 && exits[0].kind == "exited" && exits[0].data["signal"] == "SIGKILL"
        })
        .count();
    let growth = |a: u64, b: u64| (b as f64 - a as f64) / a as f64 * 100.0;
    eprintln!("chaos: seed {seed}, 30 services, faults for {chaos_time:.1?}");
    eprintln!(
        "chaos: phases: boot {boot_time:.1?}, warm-up {warm_time:.1?}, faults {chaos_time:.1?}, \
         recovery after the last fault {recover_time:.1?}, total {:.1?}",
        began.elapsed()
    );
    let in_warm_up = |kind: Kind| warm_faults.iter().filter(|&&k| k == kind).count();
    eprintln!(
        "chaos: faults injected: {} SIGKILL, {} SIGSTOP (+SIGCONT), {} floods of {} MiB in all \
         (the warm-up's {}, {} and {} included)",
        count(Kind::Kill),
        count(Kind::Stop),
        count(Kind::Flood),
        driver.flooded / (1 << 20),
        in_warm_up(Kind::Kill),
        in_warm_up(Kind::Stop),
        in_warm_up(Kind::Flood),
    );
    eprintln!(
        "chaos: events recorded: {} ({warm_events} by the end of the warm-up, churn included), \
         {} runs; kills matched to exactly one `exited` with SIGKILL: {matched} of {}",
        events.len(),
        runs.len(),
        kills.len()
    );
    eprintln!(
        "chaos: recovery (fault to ready again), all: {}",
        line(&all)
    );
    for (kind, times) in &recovery {
        eprintln!("chaos:   {kind:?}: {}", line(times));
    }
    eprintln!("chaos: memory after boot:    {}", show_memory(&booted));
    eprintln!("chaos: memory after warm-up: {}", show_memory(&warm));
    eprintln!(
        "chaos: memory after faults:  {} ({:+.1} % RSS, {:+.1} % anon against the warm-up)",
        show_memory(&after),
        growth(warm.rss, after.rss),
        growth(warm.anon, after.anon)
    );
    eprintln!(
        "chaos: zombies: {} now, {} lingering, at most {} at a sampled moment; orphans: {orphans}",
        zombies_now.len(),
        findings.lingering_zombies.len(),
        findings.zombie_peak
    );

    // The checks, each with its evidence.
    assert_eq!(evidence::integrity(&db), "ok");
    evidence::assert_contiguous(&events);
    assert!(
        unrecovered.is_empty(),
        "faults never followed by a new ready run: {unrecovered:#?}"
    );
    for kill in &kills {
        let exits = exits_of(kill.run);
        let ok =
            exits.len() == 1 && exits[0].kind == "exited" && exits[0].data["signal"] == "SIGKILL";
        assert!(
            ok,
            "the SIGKILL of {} run {} (pid {}) at {} is not exactly one `exited` with SIGKILL; \
             that run's events:\n{}",
            kill.service,
            kill.run,
            kill.pid,
            kill.at,
            evidence::show(by_run.get(&kill.run).map(Vec::as_slice).unwrap_or(&[]))
        );
        let run = runs.iter().find(|r| r.run_id == kill.run).unwrap();
        assert_eq!(
            (run.pid, run.signal.as_deref()),
            (kill.pid, Some("SIGKILL")),
            "{run:?}"
        );
    }
    // Nothing died that the driver did not kill: each `exited` of a target is a kill.
    let killed: BTreeSet<u64> = kills.iter().map(|k| k.run).collect();
    let targets: BTreeSet<&str> = services
        .iter()
        .filter(|s| s.target())
        .map(|s| s.name.as_str())
        .collect();
    let other_exits: Vec<&Stored> = events
        .iter()
        .filter(|e| e.kind == "exited" && targets.contains(e.service.as_str()))
        .filter(|e| !killed.contains(&e.run_id))
        .collect();
    assert!(
        other_exits.is_empty(),
        "services died without a kill:\n{}",
        evidence::show(&other_exits)
    );
    // Every stop was caught on that very run, once; nothing else was found unhealthy.
    assert!(
        findings.undetected.is_empty(),
        "stopped processes nobody noticed: {:#?}",
        findings.undetected
    );
    let stops: BTreeSet<u64> = faults
        .iter()
        .filter(|f| f.kind == Kind::Stop)
        .map(|f| f.run)
        .collect();
    for stop in faults.iter().filter(|f| f.kind == Kind::Stop) {
        let caught = by_run
            .get(&stop.run)
            .map(|events| events.iter().filter(|e| e.kind == "unhealthy").count())
            .unwrap_or(0);
        assert_eq!(
            caught,
            1,
            "the SIGSTOP of {} run {} was not caught exactly once: {}",
            stop.service,
            stop.run,
            evidence::show(by_run.get(&stop.run).map(Vec::as_slice).unwrap_or(&[]))
        );
    }
    let false_alarms: Vec<&Stored> = events
        .iter()
        .filter(|e| e.kind == "unhealthy" && !stops.contains(&e.run_id))
        .collect();
    assert!(
        false_alarms.is_empty(),
        "unhealthy without a stop:\n{}",
        evidence::show(&false_alarms)
    );
    // The limited services failed after exactly the runs their limit allows.
    for service in services.iter().filter(|s| !s.target()) {
        let (count, expected_runs) = service.limit.unwrap();
        let mine: Vec<&evidence::StoredRun> =
            runs.iter().filter(|r| r.service == service.name).collect();
        let reason = &final_statuses[&service.name].reason;
        assert!(
            reason.ends_with(&format!(
                "gave up after {count} restarts within 1m (restart-limit)"
            )),
            "{}: {reason}",
            service.name
        );
        assert_eq!(mine.len(), expected_runs, "{}: {mine:#?}", service.name);
        let failed = events
            .iter()
            .filter(|e| e.service == service.name && e.kind == "failed")
            .count();
        assert_eq!(failed, 1, "{}", service.name);
    }
    // No zombie, no orphan.
    assert!(
        zombies_now.is_empty() && findings.lingering_zombies.is_empty(),
        "zombie children of the supervisor: now {zombies_now:?}, lingering {:?}",
        findings.lingering_zombies
    );
    assert!(
        carriers.is_empty() && survivors.is_empty(),
        "left running after `muster down`: carriers of {instance}: {carriers:?}; runs: {survivors:#?}"
    );
    let open: Vec<&evidence::StoredRun> = runs.iter().filter(|r| !r.ended).collect();
    assert!(open.is_empty(), "runs without an end: {open:#?}");
    // Memory: back to the steady state of the warm-up, within 10 %.
    let limit = warm.rss + warm.rss / 10;
    assert!(
        after.rss <= limit,
        "the supervisor's RSS grew from {} after the warm-up to {} after {} faults \
         (more than 10 %); anon {} -> {}, file {} -> {}. The baseline is the steady state \
         with every bounded buffer full (log tails, the last 10,000 events; {} right after \
         boot): what grew since is not bounded by them",
        mib(warm.rss),
        mib(after.rss),
        faults.len(),
        mib(warm.anon),
        mib(after.anon),
        mib(warm.file),
        mib(after.file),
        mib(booted.rss)
    );
    drop(sweep);
}

/// Found by the chaos test: one step of a service can end a run and spawn the next (a
/// restart, a heal after `unhealthy`, a zero backoff). The end of the old run must be
/// told under the old run's id, not the new one's.
#[test]
fn the_end_of_a_run_is_told_under_its_own_run_id() {
    let mut up = Up::start(
        "[settings]\nstate-dir = \"{dir}/state\"\n\n\
         [services.svc]\ncommand = [\"sleep\", \"600\"]\nrestart = \"always\"\n\
         backoff = { initial = \"0s\" }\n",
        &[],
    );
    let first = up.wait_event("svc", "spawned");
    let first_run = first["run_id"].as_u64().unwrap();
    // A restart asked through the API: `stopped` of the first run, then the second.
    let answer = up.call(Method::POST, "/v1/services/svc/restart");
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let second = up.wait_for("a second run", |e| {
        e["kind"] == "spawned" && e["run_id"].as_u64() > Some(first_run)
    });
    let second_run = second["run_id"].as_u64().unwrap();
    // A kill with no backoff: `exited` and `restarting` of the second, then the third.
    let pid = second["data"]["pid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    up.wait_for("a third run", |e| {
        e["kind"] == "spawned" && e["run_id"].as_u64() > Some(second_run)
    });
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    let runs_of = |kind: &str| -> Vec<u64> {
        ended
            .of("svc", kind)
            .iter()
            .map(|e| e["run_id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        runs_of("stopped")[0],
        first_run,
        "{:#?}",
        ended.of("svc", "stopped")
    );
    assert_eq!(runs_of("exited"), [second_run], "{:#?}", ended.events);
    // Each restart (asked, then after the kill) is told under the run that ended.
    assert_eq!(
        runs_of("restarting"),
        [first_run, second_run],
        "{:#?}",
        ended.events
    );
    // The stored history says the same.
    let db = evidence::open_history(&up.path("state"));
    let stored: Vec<(String, u64)> = evidence::stored_events(&db)
        .into_iter()
        .filter(|e| ["stopped", "exited", "restarting"].contains(&e.kind.as_str()))
        .map(|e| (e.kind, e.run_id))
        .collect();
    assert_eq!(
        &stored[..4],
        [
            ("stopped".to_owned(), first_run),
            ("restarting".to_owned(), first_run),
            ("exited".to_owned(), second_run),
            ("restarting".to_owned(), second_run),
        ]
    );
}
