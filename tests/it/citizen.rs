//! muster as a good citizen of its host: under systemd, and as a container's first
//! process.
//!
//! systemd is stood in for by a datagram socket the test owns and names in
//! `NOTIFY_SOCKET`, as systemd does for a unit of `Type=notify`; muster runs in a
//! session of its own, with no controlling terminal, as under systemd. A container is a
//! new PID namespace (`unshare --pid --fork --mount-proc`, which needs root): muster is
//! its pid 1. Without root or `unshare` those tests say on stderr what they skipped,
//! and fail under `MUSTER_REQUIRE_ALL=1`.
//!
//! Every service carries `MUSTER_TEST_TAG` (see `tests/common/tagged.rs`), so whatever a
//! failed test leaves is killed when it ends.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use muster::supervisor::procfs;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::helpers::evidence::{TagSweep, env_value, tagged};
use crate::helpers::up::{WAIT, collect, eventually};
use crate::helpers::{muster, run};

/// `muster up --json` on a config written to a temp dir, in a session of its own (no
/// controlling terminal, as under systemd or in a container), with `env` on top of the
/// test's environment. Killed with everything it started when dropped.
struct Supervisor {
    child: Option<Child>,
    /// The pid muster has on this host (in a PID namespace it is 1 in its own).
    pid: u32,
    dir: tempfile::TempDir,
    file: PathBuf,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// `None` once the services are handed on to a next supervisor ([`Self::leave`]).
    sweep: Option<TagSweep>,
}

/// How muster is started.
enum Place {
    /// As the unit's main process: `setsid muster up ...`.
    Host,
    /// As the first process of a new PID namespace: `unshare --pid --fork --mount-proc`.
    Container,
}

impl Supervisor {
    /// `config` with `{dir}` and `{tag}` replaced by the temp dir.
    fn start(config: &str, env: &[(&str, &str)], place: Place) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, config, env, place)
    }

    fn start_in(dir: tempfile::TempDir, config: &str, env: &[(&str, &str)], place: Place) -> Self {
        let tag = dir.path().display().to_string();
        let file = dir.path().join("muster.toml");
        std::fs::write(&file, config.replace("{dir}", &tag).replace("{tag}", &tag)).unwrap();
        let binary = env!("CARGO_BIN_EXE_muster");
        let mut command = match place {
            // setsid runs muster in place (the child is not a group leader): the pid
            // spawned is muster's, leading a session and a process group of its own.
            Place::Host => {
                let mut command = Command::new("setsid");
                command.arg(binary);
                command
            }
            Place::Container => {
                let mut command = Command::new("unshare");
                command.args(["--pid", "--fork", "--mount-proc", binary]);
                command.process_group(0);
                command
            }
        };
        command
            .args(["up", "--json", "-f", file.to_str().unwrap()])
            .current_dir(dir.path())
            .env_remove("MUSTER_FILE")
            .env_remove("MUSTER_STATE_DIR")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn muster up");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let pid = match place {
            Place::Host => child.id(),
            Place::Container => first_process_of(child.id()),
        };
        Self {
            child: Some(child),
            pid,
            dir,
            file,
            stdout,
            stderr,
            sweep: Some(TagSweep(tag)),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The events printed so far.
    fn events(&self) -> Vec<Value> {
        self.stdout
            .lock()
            .unwrap()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Waits for the first event of `kind` for `service`, and returns it.
    fn wait_event(&self, service: &str, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let found = self
                .events()
                .into_iter()
                .find(|e| e["service"] == service && e["kind"] == kind);
            if let Some(found) = found {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no `{kind}` event of `{service}` within {WAIT:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until muster's stderr says `text`.
    fn wait_said(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "muster did not say {text:?} within {WAIT:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.pid as i32), signal).unwrap();
    }

    /// Waits for muster (and, in a container, `unshare`) to exit: its exit code and
    /// how long it took.
    fn wait_exit(&mut self, within: Duration) -> (i32, Duration) {
        let began = Instant::now();
        let mut child = self.child.take().expect("still running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // The pipes' readers catch the last lines.
                eventually("muster's output is read to its end", || {
                    Arc::strong_count(&self.stderr) == 1 && Arc::strong_count(&self.stdout) == 1
                });
                return (status.code().unwrap_or(-1), began.elapsed());
            }
            if began.elapsed() > within {
                let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "muster did not exit within {within:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The pids of every `spawned` event so far.
    fn spawned(&self, service: &str) -> Vec<u32> {
        self.events()
            .iter()
            .filter(|e| e["service"] == service && e["kind"] == "spawned")
            .filter_map(|e| e["data"]["pid"].as_u64())
            .map(|pid| pid as u32)
            .collect()
    }

    /// A client command on this supervisor's config, as a user would run it.
    fn client(&self, args: &[&str]) -> crate::helpers::Run {
        let mut command = muster(args);
        command.arg("-f").arg(&self.file);
        run(&mut command)
    }
}

impl Supervisor {
    /// After muster was killed: its directory, with whatever it left running, for the
    /// next supervisor (whose own sweep then covers those processes).
    fn leave(mut self) -> tempfile::TempDir {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
        if let Some(sweep) = self.sweep.take() {
            std::mem::forget(sweep);
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // In a container, killing its first process kills everything in it.
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The process `unshare --fork` started: the first of the new namespace, once it has
/// become muster (its `comm` says so after the `exec`).
fn first_process_of(unshare: u32) -> u32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = procfs::children_of(unshare).into_iter().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "muster")
        });
        if let Some(found) = found {
            return found;
        }
        assert!(Instant::now() < deadline, "unshare did not start muster");
        // As early as can be: a test signals muster the moment it exists.
        thread::sleep(Duration::from_micros(200));
    }
}

/// The stand-in for systemd: the socket `NOTIFY_SOCKET` names, and every datagram
/// heard on it, in order, with when it came.
struct Systemd {
    socket: UnixDatagram,
    path: PathBuf,
    heard: Vec<(Instant, String)>,
}

impl Systemd {
    fn bind(dir: &Path) -> Self {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Self {
            socket,
            path,
            heard: Vec::new(),
        }
    }

    fn address(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// The next datagram, if one comes within `within`.
    fn next(&mut self, within: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(within.max(Duration::from_millis(1))))
            .unwrap();
        let mut buffer = [0u8; 4096];
        let n = self.socket.recv(&mut buffer).ok()?;
        let text = String::from_utf8(buffer[..n].to_vec()).expect("UTF-8 notify message");
        self.heard.push((Instant::now(), text.clone()));
        Some(text)
    }

    /// Waits for a message that `matches` (reading everything before it).
    fn wait_for(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(message) if matches(&message) => return message,
                Some(_) => {}
                None => panic!(
                    "systemd did not hear {what} within {WAIT:?}; heard: {:#?}",
                    self.said()
                ),
            }
        }
    }

    /// Every message heard (watchdog pings left out), in order.
    fn said(&self) -> Vec<&str> {
        self.heard
            .iter()
            .map(|(_, m)| m.as_str())
            .filter(|m| *m != "WATCHDOG=1")
            .collect()
    }

    /// When each watchdog ping came.
    fn pings(&self) -> Vec<Instant> {
        self.heard
            .iter()
            .filter(|(_, m)| m == "WATCHDOG=1")
            .map(|(at, _)| *at)
            .collect()
    }
}

/// The value of `KEY=` in a notify message.
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

/// Now on `CLOCK_MONOTONIC`, in microseconds.
fn monotonic_usec() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000
}

const SETTINGS: &str = "[settings]\nstate-dir = \"{dir}/state\"\nshutdown-timeout = \"10s\"\n";

/// Three services: `db` proves ready a moment after its spawn, `api` needs it, and
/// `broken` fails at once and for good.
fn three_services() -> String {
    format!(
        r#"{SETTINGS}
[services.db]
command = ["sleep", "1000"]
ready = {{ exec = ["sleep", "0.3"] }}
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}

[services.api]
command = ["sleep", "1000"]
depends-on = ["db"]
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}

[services.broken]
command = ["sh", "-c", "exit 3"]
restart = "never"
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}
"#
    )
}

#[test]
fn citizen_systemd_hears_ready_status_and_stopping_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut systemd = Systemd::bind(dir.path());
    let address = systemd.address().to_owned();
    let mut up = Supervisor::start_in(
        dir,
        &three_services(),
        &[("NOTIFY_SOCKET", &address)],
        Place::Host,
    );
    let ready = systemd.wait_for("READY=1", |m| m.lines().any(|l| l == "READY=1"));
    // Ready once the bootstrap has settled: both up, the broken one failed, and named.
    assert_eq!(
        ready,
        "READY=1\nSTATUS=running: 2/3 healthy, 1 failed: broken",
        "heard: {:#?}",
        systemd.said()
    );
    let before: Vec<&str> = systemd.said()[..systemd.said().len() - 1].to_vec();
    assert!(!before.is_empty(), "no status while bootstrapping");
    for message in &before {
        assert!(
            message.starts_with("STATUS=bootstrapping: "),
            "before READY=1 only the bootstrap's progress: {before:#?}"
        );
    }

    // A service of muster's gets muster's notify socket, not systemd's, and nothing of
    // systemd's watchdog.
    let api = up.wait_event("api", "spawned")["data"]["pid"]
        .as_u64()
        .unwrap() as u32;
    let socket = env_value(api, "NOTIFY_SOCKET").unwrap();
    assert!(socket.starts_with("@muster-"), "{socket}");
    assert_eq!(env_value(api, "WATCHDOG_USEC"), None);

    // Each change of the summary is told, as it happens.
    assert_eq!(up.client(&["stop", "api"]).code, 0);
    systemd.wait_for("the summary after `stop api`", |m| {
        m == "STATUS=running: 1/3 healthy, 1 stopped, 1 failed: broken"
    });
    let restarted = up.client(&["start", "api"]);
    assert_eq!(restarted.code, 0, "{}", restarted.stderr);
    systemd.wait_for("the summary after `start api`", |m| {
        m == "STATUS=running: 2/3 healthy, 1 failed: broken"
    });

    up.signal(Signal::SIGTERM);
    let stopping = systemd.wait_for("STOPPING=1", |m| m.contains("STOPPING=1"));
    assert!(
        field(&stopping, "STATUS").is_some_and(|s| s.starts_with("shutting down: ")),
        "{stopping}"
    );
    let (code, _) = up.wait_exit(WAIT);
    assert_eq!(code, 0, "{}", up.stderr());
    while systemd.next(Duration::from_millis(200)).is_some() {}
    // After STOPPING=1 only the shutdown's progress; READY=1 was said once.
    let said = systemd.said();
    let at = said.iter().position(|m| m.contains("STOPPING=1")).unwrap();
    for message in &said[at + 1..] {
        assert!(message.starts_with("STATUS=shutting down: "), "{said:#?}");
    }
    assert_eq!(
        said.iter().filter(|m| m.contains("READY=1")).count(),
        1,
        "{said:#?}"
    );
    assert!(said.iter().all(|m| !m.contains("RELOADING")), "{said:#?}");
    assert_eq!(
        said.last().copied(),
        Some("STATUS=shutting down: 0/3 healthy, 2 stopped, 1 failed: broken"),
        "{said:#?}"
    );
    assert!(tagged(&up.dir.path().display().to_string()).is_empty());
}

#[test]
fn citizen_systemd_watchdog_pings_at_half_the_deadline() {
    // A rate is measured alone: not beside a test that loads the machine on purpose.
    let _turn = crate::helpers::heavy();
    let dir = tempfile::tempdir().unwrap();
    let mut systemd = Systemd::bind(dir.path());
    let address = systemd.address().to_owned();
    let deadline = Duration::from_millis(600);
    let mut up = Supervisor::start_in(
        dir,
        &three_services(),
        &[
            ("NOTIFY_SOCKET", &address),
            ("WATCHDOG_USEC", &deadline.as_micros().to_string()),
        ],
        Place::Host,
    );
    systemd.wait_for("a first ping", |m| m == "WATCHDOG=1");
    // About 2.4 s of pings: one every 300 ms, eight more.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_millis(2400) {
        systemd.next(Duration::from_millis(50));
    }
    let pings = systemd.pings();
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        (6..=11).contains(&pings.len()),
        "{} pings in about 2.4 s at every 300 ms: {gaps:?}",
        pings.len()
    );
    // Never as late as the deadline (systemd would kill muster), never in a burst.
    for gap in &gaps {
        assert!(
            *gap < deadline && *gap > Duration::from_millis(150),
            "a ping {gap:?} after the one before, at half of {deadline:?}: {gaps:?}"
        );
    }
    up.signal(Signal::SIGTERM);
    assert_eq!(up.wait_exit(WAIT).0, 0, "{}", up.stderr());
}

#[test]
fn citizen_systemd_watchdog_pings_stop_when_the_loop_is_stalled() {
    // `owner`: the graph owner stops turning while the thread goes on (the API still
    // answers); `thread`: the thread everything runs on is blocked.
    for how in ["owner", "thread"] {
        let dir = tempfile::tempdir().unwrap();
        let mut systemd = Systemd::bind(dir.path());
        let address = systemd.address().to_owned();
        let up = Supervisor::start_in(
            dir,
            &three_services(),
            &[
                ("NOTIFY_SOCKET", &address),
                ("WATCHDOG_USEC", "300000"),
                ("MUSTER_DEBUG_STALL", how),
            ],
            Place::Host,
        );
        systemd.wait_for("READY=1", |m| m.contains("READY=1"));
        let before = systemd.pings().len();
        systemd.wait_for("a ping after READY=1", |m| m == "WATCHDOG=1");
        assert!(systemd.pings().len() > before);

        up.signal(Signal::SIGUSR2);
        up.wait_said(&format!(
            "stalling the graph owner (MUSTER_DEBUG_STALL={how}"
        ));
        // A ping already on its way may still come (within an interval); then none for
        // four times the interval.
        let quiet_from = Instant::now() + Duration::from_millis(150);
        while Instant::now() < quiet_from + Duration::from_millis(600) {
            systemd.next(Duration::from_millis(50));
        }
        let late: Vec<_> = systemd
            .pings()
            .into_iter()
            .filter(|at| *at > quiet_from)
            .collect();
        assert!(
            late.is_empty(),
            "{how}: {} pings after the loop stalled; stderr:\n{}",
            late.len(),
            up.stderr()
        );
        if how == "owner" {
            // The thread still runs: the API answers from the last snapshot. The pings
            // stopped because the owner's loop did.
            let status = up.client(&["status", "--api-timeout", "5s"]);
            assert_eq!(status.code, 0, "{status:?}");
        }
    }
}

#[test]
fn citizen_systemd_a_muster_killed_by_its_watchdog_is_followed_by_one_that_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut systemd = Systemd::bind(dir.path());
    let address = systemd.address().to_owned();
    let config = format!(
        r#"{SETTINGS}
[services.db]
command = ["sleep", "1000"]
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}

[services.api]
command = ["sleep", "1000"]
depends-on = ["db"]
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}
"#
    );
    let env = [
        ("NOTIFY_SOCKET", address.as_str()),
        ("WATCHDOG_USEC", "200000"),
        ("MUSTER_DEBUG_STALL", "thread"),
    ];
    let hung = Supervisor::start_in(dir, &config, &env, Place::Host);
    systemd.wait_for("READY=1", |m| m.contains("READY=1"));
    let services: Vec<u32> = ["db", "api"]
        .iter()
        .map(|s| {
            hung.wait_event(s, "spawned")["data"]["pid"]
                .as_u64()
                .unwrap() as u32
        })
        .collect();
    hung.signal(Signal::SIGUSR2);
    hung.wait_said("stalling the graph owner");
    // What systemd does once the pings stop: SIGABRT (WatchdogSignal=). The services
    // are still running when Restart= starts the next muster.
    hung.signal(Signal::SIGABRT);
    let pid = hung.pid;
    eventually("the hung muster is gone", || !procfs::is_alive(pid));
    let dir = hung.leave();
    assert!(services.iter().all(|pid| procfs::is_alive(*pid)));

    let mut next = Supervisor::start_in(dir, &config, &env, Place::Host);
    let ready = systemd.wait_for("READY=1 from the next muster", |m| m.contains("READY=1"));
    assert_eq!(
        ready,
        "READY=1\nSTATUS=running: 2/2 healthy",
        "{}",
        next.stderr()
    );
    // It stopped what the hung one left before it started anything.
    for service in ["db", "api"] {
        next.wait_event(service, "orphan-stopped");
    }
    for pid in &services {
        assert!(
            !procfs::is_alive(*pid),
            "pid {pid} of the hung muster still runs"
        );
    }
    next.signal(Signal::SIGTERM);
    assert_eq!(next.wait_exit(WAIT).0, 0, "{}", next.stderr());
    assert!(tagged(&next.dir.path().display().to_string()).is_empty());
}

#[test]
fn citizen_systemd_reload_is_bracketed_by_reloading_and_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut systemd = Systemd::bind(dir.path());
    let address = systemd.address().to_owned();
    let config = |version: &str| {
        format!(
            "{SETTINGS}\n[services.a]\ncommand = [\"sleep\", \"1000\"]\nenv = {{ MUSTER_TEST_TAG = \"{{tag}}\", VERSION = \"{version}\" }}\n"
        )
    };
    let mut up = Supervisor::start_in(
        dir,
        &config("1"),
        &[("NOTIFY_SOCKET", &address)],
        Place::Host,
    );
    let tag = up.dir.path().display().to_string();
    let write = |text: &str| {
        let text = text.replace("{dir}", &tag).replace("{tag}", &tag);
        std::fs::write(&up.file, text).unwrap();
    };
    systemd.wait_for("READY=1", |m| m.contains("READY=1"));

    // Through the API (`muster reload`), through SIGHUP, and through SIGHUP with a file
    // that is not valid: each is RELOADING=1 with the time it began, then READY=1.
    let ways: [(&str, String); 3] = [
        ("muster reload", config("2")),
        ("SIGHUP", config("3")),
        ("SIGHUP of an invalid file", "[services.a\n".to_owned()),
    ];
    for (way, text) in ways {
        write(&text);
        let began = monotonic_usec();
        if way == "muster reload" {
            let reload = up.client(&["reload"]);
            assert_eq!(reload.code, 0, "{reload:?}");
        } else {
            up.signal(Signal::SIGHUP);
        }
        let reloading = systemd.wait_for("RELOADING=1", |m| m.contains("RELOADING=1"));
        let heard = monotonic_usec();
        assert!(reloading.starts_with("RELOADING=1\n"), "{way}: {reloading}");
        let stamp: u64 = field(&reloading, "MONOTONIC_USEC")
            .unwrap_or_else(|| panic!("{way}: no MONOTONIC_USEC in {reloading:?}"))
            .parse()
            .unwrap();
        assert!(
            began <= stamp && stamp <= heard,
            "{way}: MONOTONIC_USEC={stamp} is not between {began} and {heard}"
        );
        let next = systemd.wait_for("READY=1 after the reload", |m| {
            m.contains("READY=1") || m.contains("RELOADING=1")
        });
        assert!(
            next.starts_with("READY=1\nSTATUS=running: 1/1 healthy"),
            "{way}: {next:?} after {reloading:?}"
        );
    }
    // The valid reloads restarted `a` with their file; the invalid one changed nothing.
    // The events reach `up`'s stdout through its writer thread: wait for the third run.
    eventually("three runs of `a` are reported", || {
        up.spawned("a").len() >= 3
    });
    let version = up
        .spawned("a")
        .last()
        .and_then(|pid| env_value(*pid, "VERSION"));
    assert_eq!(version.as_deref(), Some("3"), "{}", up.stderr());
    assert!(up.stderr().contains("SIGHUP: "), "{}", up.stderr());
    assert_eq!(up.spawned("a").len(), 3);

    write(&config("3"));
    up.signal(Signal::SIGTERM);
    assert_eq!(up.wait_exit(WAIT).0, 0, "{}", up.stderr());
}

#[test]
fn citizen_systemd_garbage_watchdog_usec_is_ignored_and_logged() {
    let cases = [
        (
            "0",
            None,
            "WATCHDOG_USEC=0 asks for no watchdog; it is ignored",
        ),
        (
            "soon",
            None,
            "WATCHDOG_USEC=soon is not a whole number of microseconds",
        ),
        (
            "-1",
            None,
            "WATCHDOG_USEC=-1 is not a whole number of microseconds",
        ),
        (
            "1.5",
            None,
            "WATCHDOG_USEC=1.5 is not a whole number of microseconds",
        ),
        (
            "200000",
            Some("1"),
            "WATCHDOG_USEC is meant for pid 1 (WATCHDOG_PID)",
        ),
        ("200000", Some("me"), "WATCHDOG_PID=me is not a process id"),
    ];
    for (usec, pid, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut systemd = Systemd::bind(dir.path());
        let address = systemd.address().to_owned();
        let mut env = vec![("NOTIFY_SOCKET", address.as_str()), ("WATCHDOG_USEC", usec)];
        if let Some(pid) = pid {
            env.push(("WATCHDOG_PID", pid));
        }
        let mut up = Supervisor::start_in(dir, &three_services(), &env, Place::Host);
        systemd.wait_for("READY=1", |m| m.contains("READY=1"));
        up.signal(Signal::SIGTERM);
        systemd.wait_for("STOPPING=1", |m| m.contains("STOPPING=1"));
        let (code, _) = up.wait_exit(WAIT);
        assert_eq!(code, 0, "{usec}: {}", up.stderr());
        let stderr = up.stderr();
        assert_eq!(stderr.matches(says).count(), 1, "{usec} {pid:?}: {stderr}");
        assert!(
            systemd.pings().is_empty(),
            "{usec} {pid:?}: pings although the watchdog was ignored"
        );
    }
}

#[test]
fn citizen_systemd_a_notify_socket_that_is_gone_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut systemd = Systemd::bind(dir.path());
    let address = systemd.address().to_owned();
    let mut up = Supervisor::start_in(
        dir,
        &three_services(),
        &[("NOTIFY_SOCKET", &address), ("WATCHDOG_USEC", "100000")],
        Place::Host,
    );
    systemd.wait_for("READY=1", |m| m.contains("READY=1"));
    let Systemd { socket, path, .. } = systemd;
    drop(socket);
    std::fs::remove_file(&path).unwrap();
    let said = "cannot tell the service manager how muster is";
    up.wait_said(said);
    // Still supervising: services stop and start, and the status changes to tell
    // nobody.
    for args in [["stop", "api"], ["start", "api"]] {
        let done = up.client(&args);
        assert_eq!(done.code, 0, "{done:?}");
    }
    // The events reach `up`'s stdout through its writer thread: wait for the second.
    eventually("a second run of `api` is reported", || {
        up.spawned("api").len() == 2
    });
    let api = up.spawned("api");
    eventually("the new `api` runs", || procfs::is_alive(api[1]));
    up.signal(Signal::SIGTERM);
    let (code, _) = up.wait_exit(WAIT);
    assert_eq!(code, 0, "{}", up.stderr());
    let stderr = up.stderr();
    assert_eq!(stderr.matches(said).count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("(NOTIFY_SOCKET={address})")),
        "{stderr}"
    );
}

#[test]
fn citizen_up_d_keeps_its_own_notify_socket_beside_systemds() {
    let dir = tempfile::tempdir().unwrap();
    let mut systemd = Systemd::bind(dir.path());
    let tag = dir.path().display().to_string();
    let _sweep = TagSweep(tag.clone());
    let file = dir.path().join("muster.toml");
    std::fs::write(
        &file,
        three_services()
            .replace("{dir}", &tag)
            .replace("{tag}", &tag),
    )
    .unwrap();
    // `up -d` from a shell that has systemd's variables (a unit's ExecStartPre, say).
    let mut command = muster(&["up", "-d", "-f", file.to_str().unwrap()]);
    command
        .env("NOTIFY_SOCKET", systemd.address())
        .env("WATCHDOG_USEC", "100000");
    let started = run(&mut command);
    // Its background supervisor told `up -d`, which printed the status (one failed).
    assert_eq!(started.code, 1, "{started:?}");
    assert!(
        started.stdout.contains("running: 2/3 healthy"),
        "{started:?}"
    );
    let background = background_pid(&started.stderr);
    let own = env_value(background, "NOTIFY_SOCKET").unwrap();
    assert!(own.starts_with("@muster-up-"), "{own}");
    assert_eq!(env_value(background, "WATCHDOG_USEC"), None);
    // Neither it nor `up -d` spoke to systemd's socket.
    assert_eq!(systemd.next(Duration::from_millis(300)), None);
    let down = run(&mut muster(&["down", "-f", file.to_str().unwrap()]));
    assert_eq!(down.code, 0, "{down:?}");
    let log = std::fs::read_to_string(dir.path().join("state/muster.log")).unwrap();
    assert!(!log.contains("cannot tell"), "{log}");
    assert!(tagged(&tag).is_empty());
}

/// The pid in `up -d`'s "supervisor started in the background (pid N)".
fn background_pid(stderr: &str) -> u32 {
    stderr
        .split("in the background (pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no background pid in {stderr:?}"))
}

// ---- as a container's first process ----

/// Whether a test can make a PID namespace: root and `unshare`. When not, says on
/// stderr what is skipped and why, or fails under `MUSTER_REQUIRE_ALL=1`.
fn pid_namespaces(what: &str) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        Some("it needs root (a new PID namespace)".to_owned())
    } else {
        let tried = Command::new("unshare")
            .args(["--pid", "--fork", "--mount-proc", "true"])
            .stdin(Stdio::null())
            .output();
        match tried {
            Ok(output) if output.status.success() => None,
            Ok(output) => Some(format!(
                "`unshare --pid --fork --mount-proc` fails here: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(error) => Some(format!(
                "`unshare` cannot run: {error} (it is in util-linux)"
            )),
        }
    };
    let Some(why) = why else {
        return true;
    };
    let test = thread::current().name().unwrap_or("a test").to_owned();
    if std::env::var("MUSTER_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!("{test}: {why}, and MUSTER_REQUIRE_ALL=1 requires it (for {what})");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED in {test}: {what}, because {why}; set MUSTER_REQUIRE_ALL=1 to make this a failure"
    );
    false
}

/// Every process of the PID namespace `first` is the first process of, as this host
/// sees them: pid, state, command name.
fn namespace_of(first: u32) -> Vec<(u32, char, String)> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{first}/ns/pid")) else {
        return Vec::new();
    };
    procfs::processes()
        .into_iter()
        .filter(|(pid, _)| {
            std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|other| other == ns)
        })
        .map(|(pid, stat)| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            (pid, stat.state, comm.trim().to_owned())
        })
        .collect()
}

#[test]
fn citizen_pid1_reaps_every_orphan() {
    if !pid_namespaces("muster as a PID namespace's first process reaping orphans") {
        return;
    }
    // `forker` leaves orphans while it runs; `launcher` double-forks a process into a
    // session of its own, without muster's marker, and exits (a one-shot that
    // completed: what it left is not its run's); `daemonizer` forks into the background
    // and exits 0, so muster kills what it left. Each orphan is re-parented to pid 1.
    let config = format!(
        r#"{SETTINGS}
[services.forker]
shell = 'for i in 1 2 3; do sh -c "sleep 1.5 &"; done; exec sleep 1000'
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}

[services.launcher]
shell = 'setsid env -i sh -c "sleep 1.5 & sleep 1" & sleep 0.2; exit 0'
restart = "never"
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}

[services.daemonizer]
shell = '(sleep 1000 &); exit 0'
restart = "never"
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}
"#
    );
    let mut up = Supervisor::start(&config, &[], Place::Container);
    let muster_pid = up.pid;
    up.wait_event("forker", "ready");
    up.wait_event("launcher", "completed");
    up.wait_event("daemonizer", "failed");
    // Orphans: `sleep` processes whose parent is muster, not a service's main process.
    let mains = |up: &Supervisor| -> Vec<u32> {
        ["forker", "launcher", "daemonizer"]
            .iter()
            .flat_map(|s| up.spawned(s))
            .collect()
    };
    let orphans = || -> Vec<u32> {
        procfs::children_of(muster_pid)
            .into_iter()
            .filter(|pid| !mains(&up).contains(pid))
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
            .collect()
    };
    eventually("orphans re-parented to muster", || orphans().len() >= 3);
    // Once they have exited, nothing of them is left: no zombie anywhere in the
    // namespace, only muster and the forker's own sleep.
    eventually("every orphan exited and was reaped", || {
        let left = namespace_of(muster_pid);
        left.iter().all(|(_, state, _)| *state != 'Z')
            && left.len() == 2
            && left.iter().any(|(pid, _, _)| *pid == muster_pid)
    });
    up.signal(Signal::SIGTERM);
    let (code, _) = up.wait_exit(WAIT);
    assert_eq!(code, 0, "{}", up.stderr());
}

#[test]
fn citizen_pid1_sigterm_and_sigint_stop_everything_and_exit_0() {
    if !pid_namespaces("muster as a PID namespace's first process stopping on a signal") {
        return;
    }
    let config = format!(
        r#"{SETTINGS}
[services.db]
command = ["sleep", "1000"]
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}

[services.api]
command = ["sleep", "1000"]
depends-on = {{ db = "started" }}
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}

[services.stubborn]
shell = 'trap "" TERM; while true; do sleep 0.1; done'
stop-timeout = "1s"
depends-on = {{ db = "started" }}
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}
"#
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut up = Supervisor::start(&config, &[], Place::Container);
        for service in ["db", "api", "stubborn"] {
            up.wait_event(service, "spawned");
        }
        up.wait_said("Ctrl-C stops them");
        up.signal(signal);
        let (code, took) = up.wait_exit(WAIT);
        assert_eq!(code, 0, "{signal}: {}", up.stderr());
        assert!(took < Duration::from_secs(10), "{signal}: took {took:?}");
        let events = up.events();
        let stopped = |service: &str| {
            events
                .iter()
                .position(|e| e["service"] == service && e["kind"] == "stopped")
                .unwrap_or_else(|| panic!("{signal}: `{service}` not stopped: {events:#?}"))
        };
        // In reverse dependency order; the one ignoring SIGTERM killed at its timeout.
        assert!(stopped("api") < stopped("db") && stopped("stubborn") < stopped("db"));
        let stubborn = &events[stopped("stubborn")];
        assert!(
            stubborn["message"].as_str().unwrap().contains("SIGKILL"),
            "{stubborn}"
        );
        assert!(
            up.stderr()
                .contains(&format!("{signal}: stopping 3 services")),
            "{}",
            up.stderr()
        );
    }
}

#[test]
fn citizen_pid1_a_container_stopped_while_starting_ends_everything_in_the_grace_period() {
    if !pid_namespaces("muster as a PID namespace's first process stopped during its boot") {
        return;
    }
    // `slow` never proves ready, `waiting` waits for it, `stubborn` ignores SIGTERM for
    // longer than the whole shutdown may take.
    let config = r#"[settings]
state-dir = "{dir}/state"
shutdown-timeout = "2s"

[services.slow]
command = ["sleep", "1000"]
ready = { exec = ["false"], timeout = "60s" }
env = { MUSTER_TEST_TAG = "{tag}" }

[services.waiting]
command = ["sleep", "1000"]
depends-on = ["slow"]
env = { MUSTER_TEST_TAG = "{tag}" }

[services.stubborn]
shell = 'trap "" TERM; while true; do sleep 0.1; done'
stop-timeout = "30s"
env = { MUSTER_TEST_TAG = "{tag}" }
"#;
    // Stopped as early as can be: the moment muster's `main` has begun, most likely
    // before it has installed its handlers. As pid 1 a signal without a handler is
    // discarded, so muster holds the stop signals blocked (pending) until then.
    // The window lasts milliseconds: a start whose window was missed is tried again.
    let term = 1u64 << (Signal::SIGTERM as i32 - 1);
    let has_term =
        |pid: u32, field: &str| procfs::signal_set(pid, field).is_some_and(|set| set & term != 0);
    let mut early = (0..20)
        .find_map(|_| {
            let early = Supervisor::start(config, &[], Place::Container);
            loop {
                if has_term(early.pid, "SigBlk") {
                    early.signal(Signal::SIGTERM);
                    return Some(early);
                }
                // Handled and not blocked: too late to be early.
                if has_term(early.pid, "SigCgt") || !procfs::is_alive(early.pid) {
                    return None;
                }
                thread::sleep(Duration::from_micros(50));
            }
        })
        .expect("in 20 starts, muster never held SIGTERM blocked before handling it");
    let (code, took) = early.wait_exit(WAIT);
    assert_eq!(code, 0, "{}", early.stderr());
    assert!(took < Duration::from_secs(10), "took {took:?}");

    // Stopped while `slow` is starting and `waiting` waits for it.
    let mut up = Supervisor::start(config, &[], Place::Container);
    up.wait_event("slow", "spawned");
    up.wait_event("stubborn", "spawned");
    let first = up.pid;
    // muster, `slow` and `stubborn` (its loop's `sleep 0.1` comes and goes too fast to
    // be counted on a host whose `/proc` takes longer than that to read).
    crate::helpers::up::eventually("three processes in the namespace", || {
        namespace_of(first).len() >= 3
    });
    up.signal(Signal::SIGTERM);
    let (code, took) = up.wait_exit(WAIT);
    assert_eq!(code, 0, "{}", up.stderr());
    // docker stop's default grace is 10 s; the shutdown takes 2 s, then what is left
    // is killed.
    assert!(
        took < Duration::from_secs(8),
        "took {took:?}: {}",
        up.stderr()
    );
    let events = up.events();
    assert!(
        events
            .iter()
            .all(|e| !(e["service"] == "waiting" && e["kind"] == "spawned")),
        "`waiting` started during the shutdown: {events:#?}"
    );
    // muster ended every run itself, before the namespace's end would have: each is
    // closed in the history.
    let db = crate::helpers::evidence::open_history(&up.dir.path().join("state"));
    let runs = crate::helpers::evidence::stored_runs(&db);
    assert_eq!(runs.len(), 2, "{runs:#?}");
    for run in &runs {
        assert!(run.ended, "{run:#?}");
    }
}

#[test]
fn citizen_pid1_exits_1_when_it_ends_with_a_failed_service() {
    if !pid_namespaces("muster as a PID namespace's first process ending by itself") {
        return;
    }
    // Nothing left to supervise once `job` completed and `bad` failed for good: muster
    // ends by itself, and says that a service failed in its exit code.
    let config = format!(
        r#"{SETTINGS}
[services.job]
command = ["true"]
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}

[services.bad]
command = ["sh", "-c", "exit 7"]
restart = "never"
env = {{ MUSTER_TEST_TAG = "{{tag}}" }}
"#
    );
    let mut up = Supervisor::start(&config, &[], Place::Container);
    let (code, _) = up.wait_exit(WAIT);
    assert_eq!(code, 1, "{}", up.stderr());
    assert!(
        up.stderr().contains("nothing left to supervise"),
        "{}",
        up.stderr()
    );
    // With every service fine, the same end is 0.
    let fine = config.replace("\"exit 7\"", "\"exit 0\"");
    let mut up = Supervisor::start(&fine, &[], Place::Container);
    let (code, _) = up.wait_exit(WAIT);
    assert_eq!(code, 0, "{}", up.stderr());
}

/// A `KEY=value` setting of a unit file.
fn setting<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in the unit"))
}

#[test]
fn citizen_units_give_the_shutdown_its_time() {
    // The shutdown-timeout a config gets when it says nothing.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("muster.toml");
    std::fs::write(&file, "[services.a]\ncommand = [\"true\"]\n").unwrap();
    let default = muster::config::load(&file)
        .unwrap_or_else(|_| panic!("a minimal config loads"))
        .spec
        .settings
        .shutdown_timeout;
    let repo = crate::helpers::repo();
    for unit in [
        "contrib/systemd/muster.service",
        "contrib/systemd/user/muster.service",
    ] {
        let text = std::fs::read_to_string(repo.join(unit)).unwrap();
        assert_eq!(setting(&text, "Type"), "notify", "{unit}");
        assert_eq!(setting(&text, "KillMode"), "mixed", "{unit}");
        assert_eq!(setting(&text, "Restart"), "on-failure", "{unit}");
        let seconds = |key: &str| -> Duration {
            humantime::parse_duration(setting(&text, key))
                .unwrap_or_else(|e| panic!("{unit}: {key}: {e}"))
        };
        // After shutdown-timeout muster may take 15 s more (kills, hooks, history):
        // systemd must not SIGKILL everything before.
        assert!(
            seconds("TimeoutStopSec") >= default + Duration::from_secs(15),
            "{unit}: TimeoutStopSec is not above shutdown-timeout ({default:?}) and 15 s"
        );
        assert!(seconds("WatchdogSec") >= Duration::from_secs(2), "{unit}");
        // `up` and `reload` on the same file.
        let start = setting(&text, "ExecStart");
        let reload = setting(&text, "ExecReload");
        assert!(start.starts_with("/usr/bin/muster up "), "{unit}: {start}");
        assert!(
            reload.starts_with("/usr/bin/muster reload "),
            "{unit}: {reload}"
        );
        let config_of = |line: &str| line.split(" -f ").nth(1).map(str::to_owned);
        assert_eq!(config_of(start), config_of(reload), "{unit}");
    }
}
