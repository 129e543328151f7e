//! Resource bounds of one supervisor, measured on a real `muster up`: a thousand
//! services, a child that writes a 100 MB line with no newline, a storm of crash-loop
//! events, and ten thousand idle API connections. Each test checks that muster stays
//! within its bound (memory, time, descriptors, events kept) and that a status request
//! (`GET /v1/services` on a fresh connection) keeps being answered within
//! [`STATUS_BOUND`] the whole time, and prints its figures:
//!
//! ```sh
//! cargo test --test it bounds -- --nocapture
//! ```
//!
//! The event storm lasts 10 s by default; `MUSTER_BOUNDS_LONG=1` makes it a minute:
//!
//! ```sh
//! MUSTER_BOUNDS_LONG=1 cargo test --test it bounds::an_event_storm -- --nocapture
//! ```
//!
//! muster is started under a soft descriptor limit of 1024 (what most logins get), so
//! these tests also prove it raises that limit itself. The bounds tests take turns, so
//! that one's load does not skew another's times; the figures and bounds are listed in
//! docs/architecture.md, "Resource bounds".

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hyper::Method;
use muster::api::client;
use muster::supervisor::logs::MAX_LINE;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::helpers::{repo, runtime};

/// A status request must be answered within this, whatever else muster is doing.
const STATUS_BOUND: Duration = Duration::from_secs(2);
/// Time between two status requests of the prober (with a thousand services, a status
/// is 400 KB of JSON: asked much more often, answering it would be the load).
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// A status request that takes longer than this is counted as unanswered.
const PATIENCE: Duration = Duration::from_secs(30);
/// The soft descriptor limit muster is started with.
const LOGIN_NOFILE: u64 = 1024;

/// Each bounds test holds this for its whole run: the others' loads would skew its
/// times, and two of them together would need more descriptors than some machines give.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    crate::helpers::heavy()
}

const KIB: u64 = 1024;

/// A `muster up` in a temp dir, started under a soft descriptor limit of 1024, its
/// stdout discarded (an event stream nobody reads must not slow it) and its stderr kept
/// as evidence. Dropped while running, it is frozen, every process group it spawned is
/// killed, then it is.
struct Muster {
    child: Option<Child>,
    dir: tempfile::TempDir,
    stderr: Arc<Mutex<String>>,
    runtime: tokio::runtime::Runtime,
}

impl Muster {
    /// `settings` are lines of `[settings]` after `state-dir`; `services` the rest.
    fn start(settings: &str, services: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = format!(
            "[settings]\nstate-dir = \"{}\"\n{settings}\n{services}",
            dir.path().join("state").display()
        );
        let file = dir.path().join("muster.toml");
        fs::write(&file, config).expect("write muster.toml");
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(format!(
                "ulimit -Sn {} && exec \"$0\" \"$@\"",
                hard.min(LOGIN_NOFILE)
            ))
            .arg(env!("CARGO_BIN_EXE_muster"))
            .args(["up", "--json", "-f"])
            .arg(&file)
            .current_dir(repo())
            .env_remove("MUSTER_FILE")
            .env_remove("MUSTER_STATE_DIR")
            .env_remove("MUSTER_COLOR")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("spawn muster up");
        let stderr = crate::helpers::up::collect(child.stderr.take().expect("stderr"));
        let muster = Self {
            child: Some(child),
            dir,
            stderr,
            runtime: runtime(),
        };
        // The socket is bound after the exec, so from here on the pid is muster's.
        muster.wait_status("the API answers", WAIT, |_| true);
        muster
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn state(&self, name: &str) -> PathBuf {
        self.dir.path().join("state").join(name)
    }

    fn socket(&self) -> PathBuf {
        self.state("muster.sock")
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// One status request on a fresh connection.
    fn status(&self) -> Result<(Duration, Value), String> {
        status(&self.runtime, &self.socket())
    }

    fn call(&self, method: Method, path: &str) -> Value {
        let answer = self
            .runtime
            .block_on(client::request(&self.socket(), method, path))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert!(
            answer.status.is_success(),
            "{path}: {} {}",
            answer.status,
            answer.body
        );
        answer.body
    }

    /// Polls the status until `done` holds for its body; the time it took.
    fn wait_status(&self, what: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Duration {
        let began = Instant::now();
        let mut last = String::from("no answer yet");
        loop {
            if let Ok((_, body)) = self.status() {
                if done(&body) {
                    return began.elapsed();
                }
                last = body.to_string();
            }
            if let Some(status) = self.child_exited() {
                panic!(
                    "{what}: muster exited ({status}); stderr: {}",
                    self.stderr()
                );
            }
            assert!(
                began.elapsed() < within,
                "{what}: not within {within:?}; last status: {}\nstderr: {}",
                cut(&last, 2000),
                self.stderr()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn child_exited(&self) -> Option<String> {
        let child = self.child.as_ref()?;
        // `try_wait` needs `&mut`; /proc says whether it is still there.
        let stat = muster::supervisor::procfs::stat(child.id())?;
        stat.is_zombie().then(|| "a zombie".to_owned())
    }

    /// SIGTERM, then waits for the exit; its exit code and how long the stop took.
    fn stop(&mut self) -> (i32, Duration) {
        let mut child = self.child.take().expect("still running");
        let began = Instant::now();
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return (status.code().unwrap_or(-1), began.elapsed());
            }
            if began.elapsed() > Duration::from_secs(60) {
                self.child = Some(child);
                panic!("muster did not stop within 60s; stderr: {}", self.stderr());
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Muster {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Frozen, muster can neither reap nor restart: its children's pids stay theirs
        // while their groups are killed.
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGSTOP);
        for service in muster::supervisor::procfs::children_of(child.id()) {
            let _ = killpg(Pid::from_raw(service as i32), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(service as i32), Signal::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

const WAIT: Duration = crate::helpers::up::WAIT;

fn status(runtime: &tokio::runtime::Runtime, socket: &Path) -> Result<(Duration, Value), String> {
    let began = Instant::now();
    let answer = runtime.block_on(async {
        tokio::time::timeout(
            PATIENCE,
            client::request(socket, Method::GET, "/v1/services"),
        )
        .await
    });
    let took = began.elapsed();
    match answer {
        Err(_) => Err(format!("no answer within {PATIENCE:?}")),
        Ok(Err(error)) => Err(error.to_string()),
        Ok(Ok(answer)) if !answer.status.is_success() => {
            Err(format!("{}: {}", answer.status, answer.body))
        }
        Ok(Ok(answer)) => Ok((took, answer.body)),
    }
}

/// Asks for the status every [`PROBE_EVERY`] on a fresh connection, in a thread of its
/// own, until finished.
struct Prober {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Probes>>,
}

#[derive(Debug, Default)]
struct Probes {
    latencies: Vec<Duration>,
    failures: Vec<String>,
}

impl Prober {
    fn start(socket: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let runtime = runtime();
            let mut probes = Probes::default();
            // At least one request, however short the window.
            loop {
                match status(&runtime, &socket) {
                    Ok((took, _)) => probes.latencies.push(took),
                    Err(error) => probes.failures.push(error),
                }
                if stopped.load(Ordering::Relaxed) {
                    return probes;
                }
                thread::sleep(PROBE_EVERY);
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Probes {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("not finished")
            .join()
            .expect("prober thread")
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Probes {
    /// Prints the latencies and asserts every request was answered within the bound.
    fn check(&self, during: &str) {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let at = |q: f64| {
            sorted
                .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or_default()
        };
        eprintln!(
            "  status during {during}: {} answered, {} unanswered; latency median {}, p99 {}, max {}",
            sorted.len(),
            self.failures.len(),
            ms(at(0.5)),
            ms(at(0.99)),
            ms(at(1.0)),
        );
        assert!(
            self.failures.is_empty(),
            "status unanswered during {during}: {:?}",
            self.failures
        );
        assert!(!sorted.is_empty(), "no status request during {during}");
        assert!(
            at(1.0) < STATUS_BOUND,
            "status took {} during {during} (bound {STATUS_BOUND:?})",
            ms(at(1.0))
        );
    }
}

/// A field of `/proc/PID/status`, in KiB.
fn proc_kib(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn rss(pid: u32) -> u64 {
    proc_kib(pid, "VmRSS")
}

fn descriptors(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

/// The soft limit on descriptors of a process, from `/proc/PID/limits`.
fn soft_nofile(pid: u32) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc/PID/limits");
    text.lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .unwrap_or("?")
        .to_owned()
}

fn ms(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

// ---------------------------------------------------------------------------------
// 1. A thousand services.

/// `n` services that sleep (no probe: healthy once spawned).
fn sleepers(n: usize) -> String {
    (0..n)
        .map(|i| format!("[services.s{i}]\ncommand = [\"sleep\", \"600\"]\n\n"))
        .collect()
}

fn all_healthy(n: usize) -> impl Fn(&Value) -> bool {
    move |body| {
        let services = body["services"].as_array().map_or(&[][..], Vec::as_slice);
        if let Some(failed) = services.iter().find(|s| s["state"] == "failed") {
            panic!("{} failed: {}", failed["name"], failed["reason"]);
        }
        services.len() == n && services.iter().all(|s| s["state"] == "healthy")
    }
}

/// Resident memory of a supervisor running `n` sleeping services, once all are healthy.
struct Booted {
    boot: Duration,
    rss: u64,
}

fn boot(n: usize) -> (Muster, Booted) {
    let began = Instant::now();
    let muster = Muster::start("", &sleepers(n));
    let prober = Prober::start(muster.socket());
    muster.wait_status(
        &format!("{n} services healthy"),
        Duration::from_secs(120),
        all_healthy(n),
    );
    let boot = began.elapsed();
    prober.finish().check(&format!("the boot of {n} services"));
    let rss = rss(muster.pid());
    (muster, Booted { boot, rss })
}

#[test]
fn a_thousand_services_on_one_supervisor() {
    const SMALL: usize = 10;
    const LARGE: usize = 1000;
    /// Resident memory each service adds to the supervisor.
    const PER_SERVICE: u64 = 32 * KIB;
    const BOOT: Duration = Duration::from_secs(30);
    const STOP: Duration = Duration::from_secs(30);
    let _turn = one_at_a_time();

    let (mut small, baseline) = boot(SMALL);
    let (code, _) = small.stop();
    assert_eq!(code, 0, "stderr: {}", small.stderr());

    let (mut large, booted) = boot(LARGE);
    let pid = large.pid();
    let held = descriptors(pid);
    let limit = soft_nofile(pid);
    // Each service holds its two pipes; log files stay open between writes for the
    // first 256 only (`supervisor::descriptors`).
    assert!(
        held > 2 * LARGE && held < 2 * LARGE + 256 + 200,
        "{held} descriptors for {LARGE} services"
    );
    let mut latencies: Vec<Duration> = (0..20)
        .map(|_| large.status().unwrap_or_else(|e| panic!("status: {e}")).0)
        .collect();
    latencies.sort();
    let running_rss = rss(pid);
    let (code, stop) = large.stop();
    let stderr = large.stderr();

    let per_service = booted.rss.saturating_sub(baseline.rss) * 1024 / (LARGE - SMALL) as u64;
    eprintln!(
        "bounds: {LARGE} services: boot {:.2}s ({SMALL}: {:.2}s), RSS {} ({SMALL}: {}; {} after 20 status requests), \
         {:.1} KiB per service, {held} descriptors under a soft limit raised from {LOGIN_NOFILE} to {limit}, \
         status latency median {} max {}, stop {:.2}s",
        booted.boot.as_secs_f64(),
        baseline.boot.as_secs_f64(),
        mib(booted.rss),
        mib(baseline.rss),
        mib(running_rss),
        per_service as f64 / 1024.0,
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1]),
        stop.as_secs_f64(),
    );
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(
        !stderr.contains("open files"),
        "muster ran out of descriptors: {stderr}"
    );
    assert!(
        per_service < PER_SERVICE,
        "{:.1} KiB per service (bound {} KiB)",
        per_service as f64 / 1024.0,
        PER_SERVICE / KIB
    );
    assert!(
        booted.boot < BOOT,
        "boot took {:?} (bound {BOOT:?})",
        booted.boot
    );
    assert!(
        latencies[latencies.len() - 1] < STATUS_BOUND,
        "status with {LARGE} services took {} (bound {STATUS_BOUND:?})",
        ms(latencies[latencies.len() - 1])
    );
    assert!(stop < STOP, "stopping took {stop:?} (bound {STOP:?})");
}

// ---------------------------------------------------------------------------------
// 2. A 100 MB line.

#[test]
fn a_hundred_megabyte_line_without_newline() {
    const BYTES: usize = 100_000_000;
    /// What the supervisor's resident memory may grow by while it drains the line.
    const GROWTH: u64 = 8 * 1024 * KIB;
    const WITHIN: Duration = Duration::from_secs(60);
    let _turn = one_at_a_time();
    // The log is not rotated during the test, so the one file holds every byte.
    let muster = Muster::start(
        "logs = { max-size = \"1GiB\" }\n",
        "[services.flood]\n\
         command = [\"python3\", \"-c\", \"import sys\\nchunk = b'x' * 1000000\\n\
         for _ in range(100): sys.stdout.buffer.write(chunk)\\n\"]\n\
         restart = \"never\"\n\
         autostart = false\n",
    );
    let pid = muster.pid();
    let before = rss(pid);
    let prober = Prober::start(muster.socket());
    let began = Instant::now();
    muster.call(Method::POST, "/v1/services/flood/start");
    let mut peak = before;
    let took = loop {
        peak = peak.max(rss(pid));
        let (_, body) = muster.status().unwrap_or_else(|e| panic!("status: {e}"));
        let state = body["services"][0]["state"].clone();
        if state == "completed" {
            break began.elapsed();
        }
        assert!(
            state != "failed",
            "flood failed: {}",
            body["services"][0]["reason"]
        );
        assert!(
            began.elapsed() < WITHIN,
            "the flood did not end within {WITHIN:?}: {state}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let probes = prober.finish();
    let high_water = proc_kib(pid, "VmHWM");
    let after = rss(pid);

    // Every byte is in the log, cut into pieces of MAX_LINE and one last piece.
    let log = fs::read(muster.state("logs/flood.log")).expect("flood.log");
    let pieces: Vec<&[u8]> = log
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let at = line.windows(8).position(|w| w == b" stdout ")?;
            Some(&line[at + 8..])
        })
        .collect();
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    eprintln!(
        "bounds: a {BYTES}-byte line: drained in {:.2}s ({:.0} MB/s); supervisor RSS {} before, \
         peak sampled {}, {} after, high-water mark {} (includes start-up); log {} bytes in {} pieces",
        took.as_secs_f64(),
        BYTES as f64 / took.as_secs_f64() / 1e6,
        mib(before),
        mib(peak),
        mib(after),
        mib(high_water),
        log.len(),
        pieces.len(),
    );
    probes.check("the 100 MB line");
    assert_eq!(total, BYTES, "bytes of output in the log");
    assert!(
        pieces.iter().all(|p| p.iter().all(|&b| b == b'x')),
        "the log holds other bytes than the child wrote"
    );
    let full = BYTES / MAX_LINE;
    assert_eq!(
        pieces.len(),
        full + 1,
        "pieces of {MAX_LINE} bytes and the rest"
    );
    assert!(pieces[..full].iter().all(|p| p.len() == MAX_LINE));
    assert_eq!(pieces[full].len(), BYTES - full * MAX_LINE);
    assert!(
        peak.max(after) <= before + GROWTH,
        "RSS grew from {} to {} while draining (bound + {})",
        mib(before),
        mib(peak.max(after)),
        mib(GROWTH)
    );
    assert!(
        high_water <= before + GROWTH,
        "RSS high-water mark {} against {} before (bound + {})",
        mib(high_water),
        mib(before),
        mib(GROWTH)
    );
}

// ---------------------------------------------------------------------------------
// 3. An event storm.

/// One event as the API streamed it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    service: String,
    kind: String,
    run_id: u64,
}

/// Follows `GET /v1/events?follow=true` from the first event until the supervisor
/// ends the stream; every event received, by id.
fn follow_events(socket: PathBuf) -> JoinHandle<Vec<(u64, Seen)>> {
    thread::spawn(move || {
        let mut seen = Vec::new();
        let _ = runtime().block_on(client::each_line(
            &socket,
            "/v1/events?follow=true",
            |line| {
                let Some(data) = line.strip_prefix("data:") else {
                    return;
                };
                let event: Value = serde_json::from_str(data.trim()).expect("an event");
                seen.push((
                    event["id"].as_u64().expect("id"),
                    Seen {
                        service: event["service"].as_str().unwrap_or_default().to_owned(),
                        kind: event["kind"].as_str().unwrap_or_default().to_owned(),
                        run_id: event["run_id"].as_u64().unwrap_or_default(),
                    },
                ));
            },
        ));
        seen
    })
}

#[test]
fn an_event_storm_is_recorded_whole_in_bounded_memory() {
    const SERVICES: usize = 50;
    /// Kept in the database; the storm writes more than this.
    const MAX_EVENTS: u64 = 5_000;
    /// Retention runs after every 10,000 entries (events and runs), so the database may
    /// hold up to that many beyond the limit between two prunes.
    const PRUNE_AFTER: u64 = 10_000;
    /// Lines of output kept in memory per service: small, so the tails are full early
    /// and what grows after that would grow with the events.
    const TAIL_LINES: u64 = 100;
    /// What resident memory may grow by from the reference point to the end.
    const GROWTH: u64 = 3 * 1024 * KIB;
    let _turn = one_at_a_time();
    let long = std::env::var_os("MUSTER_BOUNDS_LONG").is_some_and(|v| v == "1");
    let storm = Duration::from_secs(if long { 60 } else { 10 });
    // The reference point for memory: a third into the storm, and not before the
    // in-memory history (the last 10,000 events) is full, since filling it is a bounded
    // cost, not growth. The storm goes on for at least half its length after it.
    let full = muster::supervisor::HISTORY_IN_MEMORY as u64 + 1_000;
    let cap = storm * 6;

    let crashers: String = (0..SERVICES)
        .map(|i| {
            format!(
                "[services.crash-{i}]\ncommand = [\"true\"]\nrestart = \"always\"\n\
                 backoff = {{ initial = \"0s\", max = \"0s\" }}\n\
                 restart-limit = {{ count = 1000000, within = \"1s\" }}\n\n"
            )
        })
        .collect();
    let mut muster = Muster::start(
        &format!(
            "history = {{ max-events = {MAX_EVENTS} }}\nlogs = {{ tail-lines = {TAIL_LINES} }}\n"
        ),
        &crashers,
    );
    let pid = muster.pid();
    let stream = follow_events(muster.socket());
    let prober = Prober::start(muster.socket());
    let database = muster.state("state.db");
    let last_id = || -> u64 {
        rusqlite::Connection::open_with_flags(&database, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|db| {
                db.query_row("SELECT IFNULL(MAX(id), 0) FROM events", [], |r| {
                    r.get::<_, i64>(0)
                })
            })
            .map_or(0, |id| id as u64)
    };

    // Measured from the first event written, so the start is not counted.
    let starting = Instant::now();
    while last_id() == 0 {
        assert!(
            starting.elapsed() < WAIT,
            "no event written within {WAIT:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let began = Instant::now();
    let first = last_id();
    // (seconds into the storm, last event id, RSS), every quarter second.
    let mut samples: Vec<(Duration, u64, u64)> = Vec::new();
    let mut reference = None;
    loop {
        thread::sleep(Duration::from_millis(250));
        let at = began.elapsed();
        let id = last_id();
        samples.push((at, id, rss(pid)));
        if reference.is_none() && at >= storm / 3 && id >= full {
            reference = samples.last().copied();
        }
        if let Some((since, _, _)) = reference
            && at >= storm
            && at >= since + storm / 2
        {
            break;
        }
        assert!(
            at < cap,
            "after {cap:?} only {id} events: too few to fill the in-memory history ({full})"
        );
    }
    let (took, last, end_rss) = *samples.last().expect("samples");
    let (reference_at, reference_id, reference_rss) = reference.expect("a reference point");
    let rate = (last - first) as f64 / took.as_secs_f64();
    let probes = prober.finish();
    let (code, _) = muster.stop();
    let stderr = muster.stderr();
    let streamed = stream.join().expect("event follower");

    let db = rusqlite::Connection::open(&database).expect("state.db");
    let mut statement = db
        .prepare("SELECT id, service, kind, run_id FROM events ORDER BY id")
        .unwrap();
    let stored: BTreeMap<u64, Seen> = statement
        .query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)? as u64,
                Seen {
                    service: row.get(1)?,
                    kind: row.get(2)?,
                    run_id: row.get::<_, i64>(3)? as u64,
                },
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let (&low, _) = stored.first_key_value().expect("events stored");
    let (&high, _) = stored.last_key_value().expect("events stored");
    let streamed_ids: Vec<u64> = streamed.iter().map(|(id, _)| *id).collect();
    let gaps: Vec<&[u64]> = streamed_ids
        .windows(2)
        .filter(|w| w[1] != w[0] + 1)
        .collect();
    eprintln!(
        "bounds: event storm of {SERVICES} crash-looping services for {:.1}s: {rate:.0} events/s \
         ({} events); RSS {} at {:.1}s (event {reference_id}), {} at the end; database keeps \
         ids {low}..={high} ({} events, max-events {MAX_EVENTS}); {} streamed (ids {}..={}, \
         {} gaps)",
        took.as_secs_f64(),
        last - first,
        mib(reference_rss),
        reference_at.as_secs_f64(),
        mib(end_rss),
        stored.len(),
        streamed.len(),
        streamed_ids.first().copied().unwrap_or(0),
        streamed_ids.last().copied().unwrap_or(0),
        gaps.len(),
    );
    eprintln!(
        "  RSS samples (s, last event id, RSS): {}",
        samples
            .iter()
            .step_by((samples.len() / 10).max(1))
            .map(|(at, id, rss)| format!("({:.1}, {id}, {})", at.as_secs_f64(), mib(*rss)))
            .collect::<Vec<_>>()
            .join(" ")
    );
    probes.check("the event storm");
    assert_eq!(code, 0, "stderr: {stderr}");
    assert!(
        !stderr.contains("missed"),
        "a subscriber lost events: {stderr}"
    );
    // Every event numbered is stored: the newest `max-events` (and whatever the
    // last pruning interval added) with no id missing; older ones only as each
    // service's floor of newest events, which retention by count never takes.
    let floor = muster::store::KEPT_PER_SERVICE as u64 * SERVICES as u64;
    let contiguous_from = high.saturating_sub(MAX_EVENTS) + 1;
    let newest = stored.range(contiguous_from..).count() as u64;
    assert_eq!(
        newest,
        high - contiguous_from + 1,
        "ids missing from the database"
    );
    // Retention: the newest are kept, within the limit, one pruning interval and the
    // services' floors.
    assert!(low > 1, "retention pruned nothing of {high} events");
    assert!(
        stored.len() as u64 <= MAX_EVENTS + PRUNE_AFTER + floor,
        "{} events kept (max-events {MAX_EVENTS}, pruned every {PRUNE_AFTER} entries, \
         {floor} as the services' floors)",
        stored.len()
    );
    // The stream has every event from the first on, as stored (the last few, sent while
    // muster shut down, may not have reached it).
    assert_eq!(
        streamed_ids.first(),
        Some(&1),
        "the stream did not start at the first event"
    );
    assert!(gaps.is_empty(), "the event stream skipped events: {gaps:?}");
    assert!(
        streamed_ids
            .last()
            .is_some_and(|&id| id <= high && id >= last),
        "the stream ended at {:?}; the database holds up to {high}, {last} were written \
         before the stop",
        streamed_ids.last()
    );
    for (id, seen) in &streamed {
        if let Some(kept) = stored.get(id) {
            assert_eq!(kept, seen, "event {id}: stored and streamed differ");
        }
    }
    assert!(
        end_rss <= reference_rss + GROWTH,
        "RSS grew from {} to {} in the storm's last {:.1}s (bound + {})",
        mib(reference_rss),
        mib(end_rss),
        (took - reference_at).as_secs_f64(),
        mib(GROWTH)
    );
}

// ---------------------------------------------------------------------------------
// 4. Idle API connections.

/// Opens `count` connections to the API and leaves them idle; returns them with when
/// each was opened, once muster has accepted them all (it holds a descriptor for each).
fn open_idle(muster: &Muster, count: usize, base_fds: usize) -> Vec<(UnixStream, Instant)> {
    let open: Vec<(UnixStream, Instant)> = (0..count)
        .map(|i| {
            let stream = UnixStream::connect(muster.socket())
                .unwrap_or_else(|e| panic!("connection {i}: {e}"));
            stream.set_nonblocking(true).expect("non-blocking");
            (stream, Instant::now())
        })
        .collect();
    wait_descriptors(muster, "accepting them", |held| held >= base_fds + count);
    open
}

/// Polls muster's descriptor count until `done` holds for it; how long that took.
fn wait_descriptors(muster: &Muster, what: &str, done: impl Fn(usize) -> bool) -> Duration {
    let began = Instant::now();
    loop {
        let held = descriptors(muster.pid());
        if done(held) {
            return began.elapsed();
        }
        assert!(
            began.elapsed() < WAIT,
            "{what}: muster holds {held} descriptors after {WAIT:?}; stderr: {}",
            muster.stderr()
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ten_thousand_idle_connections() {
    const WANTED: usize = 10_000;
    /// Descriptors left for the rest of this test process.
    const SPARE: u64 = 500;
    /// Past the head timeout, by when every idle connection must have been closed.
    const CLOSE_SLACK: Duration = Duration::from_secs(10);
    /// Descriptors muster may hold beyond its baseline once they are all gone (a status
    /// request of the prober may be under way).
    const FD_SLACK: usize = 5;
    /// Resident memory an idle connection costs the supervisor, in either round (the
    /// second reuses most of what the first freed, which the allocator keeps).
    const PER_CONNECTION: u64 = 20 * KIB;
    let head_timeout = muster::api::serve::HEAD_TIMEOUT;
    let _turn = one_at_a_time();

    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the soft limit");
    }
    let count = WANTED.min(hard.saturating_sub(SPARE) as usize);
    if count < WANTED {
        eprintln!("bounds: the hard descriptor limit is {hard}: {count} connections, not {WANTED}");
    }

    let muster = Muster::start("", "[services.idle]\ncommand = [\"sleep\", \"600\"]\n");
    muster.wait_status("idle healthy", WAIT, all_healthy(1));
    let pid = muster.pid();
    let base_fds = descriptors(pid);
    let base_rss = rss(pid);
    let prober = Prober::start(muster.socket());

    // First round: left idle until muster closes them.
    let opening = Instant::now();
    let mut open = open_idle(&muster, count, base_fds);
    let opened = opening.elapsed();
    let (fresh, _) = muster.status().unwrap_or_else(|e| panic!("status: {e}"));
    let held_rss = rss(pid);
    let held_fds = descriptors(pid);
    let limit = soft_nofile(pid);
    // A non-blocking read says which are closed (0 bytes) without waiting.
    let mut lifetimes: Vec<Duration> = Vec::with_capacity(count);
    let mut answered = 0;
    let deadline = Instant::now() + head_timeout + CLOSE_SLACK;
    while !open.is_empty() {
        open.retain_mut(|(stream, since)| {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte) {
                Ok(0) => {
                    lifetimes.push(since.elapsed());
                    false
                }
                Ok(_) => {
                    answered += 1;
                    true
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                Err(_) => {
                    lifetimes.push(since.elapsed());
                    false
                }
            }
        });
        assert!(
            Instant::now() < deadline,
            "{} of {count} idle connections still open {:?} after the last was opened",
            open.len(),
            head_timeout + CLOSE_SLACK
        );
        thread::sleep(Duration::from_millis(50));
    }
    lifetimes.sort();
    wait_descriptors(&muster, "closing idle connections", |held| {
        held <= base_fds + FD_SLACK
    });
    let closed_rss = rss(pid);

    // Second round: closed by this side at once. Its descriptors go at once too, and it
    // costs no more memory than the first.
    let again = open_idle(&muster, count, base_fds);
    let again_rss = rss(pid);
    drop(again);
    let released = wait_descriptors(&muster, "closed by the client", |held| {
        held <= base_fds + FD_SLACK
    });
    let after_fds = descriptors(pid);
    let after_rss = rss(pid);
    let probes = prober.finish();

    let per_connection = held_rss.saturating_sub(base_rss) * 1024 / count as u64;
    let per_connection_again = again_rss.saturating_sub(base_rss) * 1024 / count as u64;
    eprintln!(
        "bounds: {count} idle connections: opened in {:.2}s; muster held {held_fds} descriptors \
         (baseline {base_fds}; soft limit raised from {LOGIN_NOFILE} to {limit}); RSS {} before, \
         {} holding them ({per_connection} bytes each), {} once muster closed them; closed by \
         muster after {}..{} idle; status on a fresh connection meanwhile {}",
        opened.as_secs_f64(),
        mib(base_rss),
        mib(held_rss),
        mib(closed_rss),
        ms(lifetimes[0]),
        ms(lifetimes[lifetimes.len() - 1]),
        ms(fresh),
    );
    eprintln!(
        "  again, closed by the client: RSS {} holding them ({per_connection_again} bytes \
         each), {} after; descriptors back to {after_fds} within {}",
        mib(again_rss),
        mib(after_rss),
        ms(released),
    );
    probes.check("10,000 idle connections");
    assert_eq!(
        answered, 0,
        "muster sent bytes on connections that asked nothing"
    );
    assert!(fresh < STATUS_BOUND, "status took {}", ms(fresh));
    // Not closed early: each had its whole head timeout (its clock starts at accept,
    // after our connect; a little less is only how often this side looks).
    assert!(
        lifetimes[0] + Duration::from_millis(200) >= head_timeout,
        "an idle connection was closed after {} (head timeout {head_timeout:?})",
        ms(lifetimes[0])
    );
    assert!(
        per_connection.max(per_connection_again) < PER_CONNECTION,
        "{per_connection} then {per_connection_again} bytes per idle connection (bound \
         {PER_CONNECTION})"
    );
}
