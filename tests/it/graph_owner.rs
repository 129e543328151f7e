//! The graph owner against the real binary: reloads applied one at a time, nothing
//! started once the shutdown began, an event feed that loses nothing however slowly it
//! is read, one supervisor per config file, and boot summaries that count what happened.
//!
//! Every service of these configs carries `MUSTER_TEST_TAG` (see
//! `tests/common/tagged.rs`) so that `/proc` tells its processes from everyone else's.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use hyper::{Method, StatusCode};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::helpers::evidence::{self, Sampler, TagSweep, env_value, tagged};
use crate::helpers::up::{Detached, Up, WAIT, collect, eventually, free_port, http};
use crate::helpers::{Run, muster, python, run};

/// A python program that ignores SIGTERM (only the stop timeout's SIGKILL ends it),
/// says so on its output, and forks nothing: one process per run. As a TOML array.
fn ignores_term() -> String {
    format!(
        r#"["{}", "-c", "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ignoring', flush=True)\nwhile True: time.sleep(1)"]"#,
        python()
    )
}

fn file_of(up: &Up) -> String {
    up.path("muster.toml").display().to_string()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The live processes of `service` in a tagged config.
fn of_service(tag: &str, service: &str) -> Vec<u32> {
    tagged(tag)
        .into_iter()
        .filter(|(_, s)| s == service)
        .map(|(pid, _)| pid)
        .collect()
}

#[test]
fn twenty_reloads_at_once_during_a_slow_stop_leave_one_process_per_service() {
    let ignores_term = ignores_term();
    let config = |version: u32| {
        format!(
            r#"[settings]
state-dir = "{{dir}}/state"

[services.slow]
command = {ignores_term}
ready = {{ log = "^ignoring$" }}
stop-timeout = "2s"
env = {{ MUSTER_TEST_TAG = "{{dir}}", VERSION = "{version}" }}

[services.steady]
command = ["sleep", "1000"]
env = {{ MUSTER_TEST_TAG = "{{dir}}" }}
"#
        )
    };
    let mut up = Up::start(&config(1), &[]);
    let tag = up.dir.path().display().to_string();
    let _sweep = TagSweep(tag.clone());
    up.wait_event("slow", "ready");
    up.wait_event("steady", "ready");
    let sampler = Sampler::start(&tag);
    let file = file_of(&up);
    std::fs::write(&file, config(2).replace("{dir}", &tag)).unwrap();

    let began = Instant::now();
    let reloads: Vec<_> = (0..20)
        .map(|_| {
            let file = file.clone();
            thread::spawn(move || run(&mut muster(&["reload", "-f", &file])))
        })
        .collect();
    let answers: Vec<Run> = reloads.into_iter().map(|t| t.join().unwrap()).collect();
    let reloading = began.elapsed();
    for answer in &answers {
        assert_eq!(answer.code, 0, "{answer:?}");
    }
    // Each reload applies on the result of the one before: the first restarts `slow`,
    // the other 19 find nothing left to change.
    let restarted: Vec<&Run> = answers
        .iter()
        .filter(|a| a.stdout.contains("restarted slow"))
        .collect();
    assert_eq!(restarted.len(), 1, "{answers:#?}");
    assert!(
        reloading >= Duration::from_millis(1900),
        "the stop of `slow` should take its 2s stop-timeout: {reloading:?}"
    );
    eventually("`slow` runs again, with VERSION=2", || {
        let pids = of_service(&tag, "slow");
        pids.len() == 1 && env_value(pids[0], "VERSION").as_deref() == Some("2")
    });

    let down = run(&mut muster(&["down", "-f", &file]));
    let left = tagged(&tag);
    let samples = sampler.finish();
    assert_eq!(down.code, 0, "{down:?}");
    assert!(
        left.is_empty(),
        "alive after `muster down` returned: {left:?}"
    );
    let ended = up.wait_exit();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    samples.assert_one_per_service();
    assert_eq!(samples.most.get("slow"), Some(&1), "{samples:?}");
    assert_eq!(ended.of("slow", "spawned").len(), 2);
    assert_eq!(ended.of("steady", "spawned").len(), 1);
    eprintln!(
        "20 reloads answered in {reloading:?}; {} samples of /proc",
        samples.samples
    );
}

#[test]
fn requests_during_a_slow_shutdown_are_refused_and_nothing_outlives_the_supervisor() {
    let (web, web_upstream, raw, raw_upstream) =
        (free_port(), free_port(), free_port(), free_port());
    let ignores_term = ignores_term();
    let mut up = Up::start(
        &format!(
            r#"[settings]
state-dir = "{{dir}}/state"

# Still up during the shutdown: `leaf` depends on it and takes its time to stop.
[services.base]
command = ["sleep", "1000"]
env = {{ MUSTER_TEST_TAG = "{{dir}}" }}

[services.leaf]
command = {ignores_term}
ready = {{ log = "^ignoring$" }}
depends-on = {{ base = "started" }}
stop-timeout = "8s"
env = {{ MUSTER_TEST_TAG = "{{dir}}" }}

[services.lazy]
command = ["sleep", "1000"]
autostart = false
env = {{ MUSTER_TEST_TAG = "{{dir}}" }}

[services.web]
command = ["sleep", "1000"]
autostart = false
proxy = {{ listen = "127.0.0.1:{web}", upstream = "127.0.0.1:{web_upstream}", http = true }}
env = {{ MUSTER_TEST_TAG = "{{dir}}" }}

[services.raw]
command = ["sleep", "1000"]
autostart = false
proxy = {{ listen = "127.0.0.1:{raw}", upstream = "127.0.0.1:{raw_upstream}" }}
env = {{ MUSTER_TEST_TAG = "{{dir}}" }}
"#
        ),
        &[],
    );
    let tag = up.dir.path().display().to_string();
    let _sweep = TagSweep(tag.clone());
    let file = file_of(&up);
    up.wait_event("leaf", "ready");
    let socket = up.socket();

    let down = {
        let file = file.clone();
        thread::spawn(move || run(&mut muster(&["down", "-f", &file])))
    };
    up.wait_event("leaf", "stopping");
    let shutdown_began = Instant::now();

    // The CLI: exit 1 and one line saying why.
    for args in [
        ["start", "base"],
        ["restart", "base"],
        ["ensure", "base"],
        ["start", "lazy"],
        ["ensure", "lazy"],
    ] {
        let answer = run(muster(&args).args(["-f", &file]));
        assert_eq!(answer.code, 1, "muster {args:?}: {answer:?}");
        assert_eq!(
            answer.stderr, "muster: the supervisor is shutting down; nothing starts any more\n",
            "muster {args:?}"
        );
    }
    // The API: 409, kind `shutting-down`.
    for path in [
        "/v1/services/base/start",
        "/v1/services/base/restart",
        "/v1/services/base/ensure",
        "/v1/services/lazy/start",
        "/v1/services/lazy/ensure",
        "/v1/reload",
    ] {
        let answer = up.call(Method::POST, path);
        assert_eq!(
            answer.status,
            StatusCode::CONFLICT,
            "{path}: {:?}",
            answer.body
        );
        assert_eq!(answer.body["error"]["kind"], "shutting-down", "{path}");
    }
    // A proxy in HTTP mode answers 503 and says why.
    let (code, body) = http(web, "GET", "/", None);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("shutting down"), "{body}");
    // A plain TCP proxy closes the connection without a byte (or no longer accepts).
    if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", raw)) {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let _ = stream.write_all(b"hello");
        let mut got = Vec::new();
        let read = stream.read_to_end(&mut got);
        assert!(got.is_empty(), "{read:?}: {got:?}");
    }
    let checks_done = now_ms();
    let checking = shutdown_began.elapsed();

    let down = down.join().unwrap();
    assert_eq!(down.code, 0, "{down:?}");
    let left = tagged(&tag);
    assert!(
        left.is_empty(),
        "alive after `muster down` returned: {left:?}"
    );
    let ended = up.wait_exit();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    // The checks above ran while the shutdown was still under way: `leaf` ended after.
    let history = evidence::stored_events(&evidence::open_history(&up.path("state")));
    let leaf_end = history
        .iter()
        .find(|e| e.service == "leaf" && matches!(e.kind.as_str(), "stopped" | "exited"))
        .expect("leaf's end");
    assert!(
        leaf_end.time > checks_done,
        "the shutdown ended before the checks did; they took {checking:?}"
    );
    // Nothing was spawned once the shutdown began.
    let first_stop = ended
        .events
        .iter()
        .position(|e| e["kind"] == "stopping")
        .unwrap();
    let late: Vec<&Value> = ended.events[first_stop..]
        .iter()
        .filter(|e| e["kind"] == "spawned")
        .collect();
    assert!(late.is_empty(), "spawned during the shutdown: {late:#?}");
    for name in ["lazy", "web", "raw"] {
        assert!(ended.of(name, "spawned").is_empty(), "{name} was started");
    }
    assert!(!socket.exists(), "the socket outlived the supervisor");
    let status = run(&mut muster(&["status", "-f", &file]));
    assert_eq!(status.code, 1, "{status:?}");
    assert!(
        status
            .stderr
            .contains("no supervisor is running for this state directory"),
        "{status:?}"
    );
    eprintln!("the refusals took {checking:?} of the 8s shutdown");
}

#[test]
fn up_json_with_5000_services_loses_no_event() {
    let _turn = crate::helpers::heavy();
    const SERVICES: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!(
        "[settings]\nstate-dir = \"{}/state\"\n",
        dir.path().display()
    );
    for i in 0..SERVICES {
        config.push_str(&format!("\n[services.s{i:04}]\ncommand = [\"true\"]\n"));
    }
    let file = dir.path().join("muster.toml");
    std::fs::write(&file, config).unwrap();
    let out = dir.path().join("events.jsonl");
    let mut command = muster(&["up", "--json", "-f", file.to_str().unwrap()]);
    command
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::piped())
        .process_group(0);
    let began = Instant::now();
    let mut child = KillOnDrop(command.spawn().unwrap());
    let stderr = collect(child.0.stderr.take().unwrap());
    // Every service is a one-shot: up ends by itself once all have completed.
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            began.elapsed() < Duration::from_secs(300),
            "up did not end within 5 minutes; stderr: {}",
            stderr.lock().unwrap()
        );
        thread::sleep(Duration::from_millis(50));
    };
    let took = began.elapsed();
    assert_eq!(status.code(), Some(0), "{}", stderr.lock().unwrap());

    let text = std::fs::read_to_string(&out).unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}")))
        .collect();
    let ids: Vec<u64> = events.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    for pair in ids.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "a gap or a double in the ids");
    }
    let stored = evidence::stored_events(&evidence::open_history(&dir.path().join("state")));
    assert_eq!(events.len(), stored.len(), "printed vs stored events");
    assert_eq!(ids.first(), stored.first().map(|e| e.id).as_ref());
    let completed = events.iter().filter(|e| e["kind"] == "completed").count();
    assert_eq!(completed, SERVICES);
    eprintln!(
        "{SERVICES} one-shots: {} events printed and stored, up took {took:?}",
        events.len()
    );
}

/// A child killed (with its process group) if the test ends before it does.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
}

/// `GET /v1/events?follow=true` read by hand over the unix socket: the head, then
/// the chunked body, a server-sent event at a time.
struct Sse {
    reader: BufReader<UnixStream>,
    chunked: bool,
    body: Vec<u8>,
}

impl Sse {
    fn open(socket: &Path) -> Self {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream
            .write_all(b"GET /v1/events?follow=true HTTP/1.1\r\nHost: muster\r\n\r\n")
            .unwrap();
        let mut reader = BufReader::new(stream);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Self {
            reader,
            chunked,
            body: Vec::new(),
        }
    }

    /// The next event (`data:` line); panics if the stream ends.
    fn next(&mut self) -> Value {
        loop {
            if let Some(end) = self.body.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.body.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line);
                if let Some(data) = line.strip_prefix("data:") {
                    return serde_json::from_str(data.trim()).unwrap();
                }
                continue;
            }
            self.fill();
        }
    }

    fn fill(&mut self) {
        if !self.chunked {
            let mut chunk = [0u8; 8192];
            let n = self.reader.read(&mut chunk).unwrap();
            assert!(n > 0, "the event stream ended");
            self.body.extend_from_slice(&chunk[..n]);
            return;
        }
        let mut size = String::new();
        self.reader.read_line(&mut size).unwrap();
        let size = usize::from_str_radix(size.trim(), 16)
            .unwrap_or_else(|e| panic!("chunk size {size:?}: {e}"));
        assert!(size > 0, "the event stream ended");
        let mut chunk = vec![0u8; size + 2];
        self.reader.read_exact(&mut chunk).unwrap();
        self.body.extend_from_slice(&chunk[..size]);
    }
}

fn last_stored_id(state: &Path) -> u64 {
    evidence::open_history(state)
        .query_row("SELECT IFNULL(MAX(id), 0) FROM events", [], |row| {
            row.get::<_, i64>(0)
        })
        .unwrap() as u64
}

#[test]
fn an_sse_reader_that_pauses_gets_every_event_in_order() {
    let _turn = crate::helpers::heavy();
    /// The supervisor keeps this many events in memory; a reader behind by more
    /// catches up from the database.
    const IN_MEMORY: u64 = muster::supervisor::HISTORY_IN_MEMORY as u64;
    let mut up = Up::start(
        r#"[settings]
state-dir = "{dir}/state"

[services.crashy]
command = ["false"]
backoff = { initial = "1ms", max = "1ms" }
restart-limit = { count = 1000000, within = "1m" }
env = { MUSTER_TEST_TAG = "{dir}" }
"#,
        &[],
    );
    let _sweep = TagSweep(up.dir.path().display().to_string());
    up.wait_event("crashy", "restarting");
    let state = up.path("state");
    let mut stream = Sse::open(&up.socket());
    let mut seen: Vec<Value> = (0..5).map(|_| stream.next()).collect();
    let paused_at = seen.last().unwrap()["id"].as_u64().unwrap();

    // The pause: at least 10 s, and until the reader is further behind than the
    // supervisor keeps in memory, so that the catching up reads the database.
    let pause = Instant::now();
    while pause.elapsed() < Duration::from_secs(10)
        || last_stored_id(&state) < paused_at + IN_MEMORY + 1000
    {
        assert!(
            pause.elapsed() < Duration::from_secs(120),
            "the crash loop wrote only {} events in 2 minutes",
            last_stored_id(&state) - paused_at
        );
        thread::sleep(Duration::from_millis(100));
    }
    let paused = pause.elapsed();
    let target = last_stored_id(&state);
    let resumed = Instant::now();
    while seen.last().unwrap()["id"].as_u64().unwrap() < target {
        assert!(resumed.elapsed() < Duration::from_secs(120), "too slow");
        seen.push(stream.next());
    }
    let caught_up = resumed.elapsed();
    drop(stream);
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);

    let first = seen[0]["id"].as_u64().unwrap();
    for (index, event) in seen.iter().enumerate() {
        assert_eq!(
            event["id"].as_u64().unwrap(),
            first + index as u64,
            "a gap or a double at position {index}: {:#?}",
            &seen[index.saturating_sub(2)..(index + 2).min(seen.len())]
        );
    }
    let stored: BTreeMap<u64, evidence::Stored> =
        evidence::stored_events(&evidence::open_history(&state))
            .into_iter()
            .map(|e| (e.id, e))
            .collect();
    for event in &seen {
        let id = event["id"].as_u64().unwrap();
        let row = &stored[&id];
        assert_eq!(
            (event["kind"].as_str(), event["run_id"].as_u64()),
            (Some(row.kind.as_str()), Some(row.run_id)),
            "event {id}"
        );
    }
    eprintln!(
        "paused {paused:?} at event {paused_at}; caught up {} events (to {target}) in {caught_up:?}",
        target - paused_at
    );
}

/// The line a client prints when it talks to the supervisor of the file where that one
/// keeps its state, rather than where the config now points.
fn used_dir_line(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .find(|line| line.contains("keeps its state in"))
}

#[test]
fn one_supervisor_per_config_whatever_its_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let tag = dir.path().display().to_string();
    // One process that says something every 100 ms, for `logs -F` to follow.
    let ticks = format!(
        r#"["{}", "-c", "import time\nwhile True: print('tick', flush=True); time.sleep(0.1)"]"#,
        python()
    );
    let config = |state: &str| {
        format!(
            "[settings]\nstate-dir = \"{tag}/{state}\"\n\n[services.a]\ncommand = {ticks}\nenv = {{ MUSTER_TEST_TAG = \"{tag}\" }}\n"
        )
    };
    let file = dir.path().join("muster.toml");
    let file_arg = file.to_str().unwrap().to_owned();
    std::fs::write(&file, config("a")).unwrap();
    let (started, background) = Detached::start(&file, &tag, &[]);
    assert_eq!(started.code, 0, "{started:?}");
    let background = background.expect("the pid of the background supervisor");
    let pid = background.pid.to_string();

    std::fs::write(&file, config("b")).unwrap();
    let cli = |args: &[&str]| run(muster(args).args(["-f", &file_arg]));

    // A second supervisor of the same file is refused, naming the first.
    for args in [&["up", "--json"][..], &["up", "-d"][..]] {
        let second = cli(args);
        assert_eq!(second.code, 2, "{args:?}: {second:?}");
        assert!(
            second.stderr.contains(&format!("(pid {pid})")),
            "{args:?}: {second:?}"
        );
        assert!(second.stderr.contains(&format!("{tag}/a")), "{second:?}");
    }
    assert_eq!(of_service(&tag, "a").len(), 1);

    // Clients find the running supervisor where it keeps its state, and say so.
    let status = cli(&["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(status.stdout.contains("a "), "{status:?}");
    let said = used_dir_line(&status.stderr).unwrap_or_else(|| panic!("{status:?}"));
    assert!(said.contains(&format!("{tag}/a")), "{said}");
    assert!(said.contains(&format!("{tag}/b")), "{said}");

    let logs = cli(&["logs", "a"]);
    assert_eq!(logs.code, 0, "{logs:?}");
    assert!(used_dir_line(&logs.stderr).is_some(), "{logs:?}");
    // A follow, until the supervisor stops.
    let mut follow = muster(&["logs", "-F", "a", "-f", &file_arg]);
    follow
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut follow = KillOnDrop(follow.spawn().unwrap());
    let followed = collect(follow.0.stdout.take().unwrap());
    let follow_said = collect(follow.0.stderr.take().unwrap());
    eventually("`logs -F` prints what `a` says", || {
        followed.lock().unwrap().contains("tick")
    });

    let reload = cli(&["reload"]);
    assert_eq!(reload.code, 1, "{reload:?}");
    assert!(
        reload.stderr.contains("cannot move it"),
        "the reload should say the state directory cannot move: {reload:?}"
    );

    let down = cli(&["down"]);
    assert_eq!(down.code, 0, "{down:?}");
    assert!(used_dir_line(&down.stderr).is_some(), "{down:?}");
    background.wait_gone();
    let deadline = Instant::now() + WAIT;
    let followed_to = loop {
        if let Some(status) = follow.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "`logs -F` did not end");
        thread::sleep(Duration::from_millis(10));
    };
    let follow_said = follow_said.lock().unwrap().clone();
    assert_eq!(followed_to.code(), Some(0), "{follow_said}");
    assert!(used_dir_line(&follow_said).is_some(), "{follow_said}");
    assert!(
        follow_said.contains("nothing more to follow"),
        "{follow_said}"
    );
    assert!(tagged(&tag).is_empty(), "{:?}", tagged(&tag));
    let status = cli(&["status"]);
    assert_eq!(status.code, 1, "{status:?}");
    assert!(used_dir_line(&status.stderr).is_none(), "{status:?}");
}

/// `muster up --no-progress` (plain lines on stdout) on a config in a temp dir.
struct Plain {
    child: Option<Child>,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Plain {
    fn start(file: &Path, services: &[&str]) -> Self {
        let mut command = muster(&["up", "--no-progress", "-f", file.to_str().unwrap()]);
        command
            .args(services)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let stderr = collect(child.stderr.take().unwrap());
        Self {
            child: Some(child),
            lines,
            stderr,
        }
    }

    /// Waits for a line containing `text`.
    fn wait_line(&self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.lines.lock().unwrap().iter().any(|l| l.contains(text)) {
            assert!(
                Instant::now() < deadline,
                "no line with {text:?}: {:#?}\nstderr: {}",
                self.lines.lock().unwrap(),
                self.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then every line once it has exited, and its exit code.
    fn stop(&mut self) -> (i32, Vec<String>) {
        let mut child = self.child.take().unwrap();
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "up did not exit on SIGTERM");
            thread::sleep(Duration::from_millis(10));
        };
        // The reader thread takes the last lines once the pipe closes.
        eventually("stdout is read to its end", || {
            self.lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("all services stopped"))
        });
        (
            status.code().unwrap_or(-1),
            self.lines.lock().unwrap().clone(),
        )
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An event line of the plain output: `   0.123s service kind message`.
fn event_of(line: &str) -> Option<(&str, &str)> {
    let mut words = line.split_whitespace();
    let time = words.next()?;
    if !time.ends_with('s') || time[..time.len() - 1].parse::<f64>().is_err() {
        return None;
    }
    Some((words.next()?, words.next()?))
}

#[test]
fn summaries_count_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let tag = dir.path().display().to_string();
    let _sweep = TagSweep(tag.clone());
    let write = |name: &str, services: &str| -> PathBuf {
        let file = dir.path().join(name);
        let services = services.replace("{tag}", &tag);
        std::fs::write(
            &file,
            format!("[settings]\nstate-dir = \"{tag}/{name}.state\"\n{services}"),
        )
        .unwrap();
        file
    };

    // `up -d` of one-shots only: they complete, the supervisor ends by itself, and
    // that is a success.
    let oneshots = write(
        "oneshots.toml",
        r#"
[services.first]
command = ["true"]
env = { MUSTER_TEST_TAG = "{tag}" }

[services.second]
command = ["true"]
depends-on = { first = "completed" }
env = { MUSTER_TEST_TAG = "{tag}" }
"#,
    );
    let (detached, background) = Detached::start(&oneshots, &tag, &[]);
    assert_eq!(detached.code, 0, "{detached:?}");
    if let Some(background) = background {
        background.wait_gone();
    }
    // `second` is healthy from its spawn (it has no probe) until it exits: the
    // bootstrap may settle on either side of that exit. Either it had completed, and
    // `up -d` says the supervisor ended, or the table shows it still running.
    let said_ended = detached
        .stderr
        .contains("ended: nothing left to supervise; see ");
    let second_running = detached
        .stdout
        .lines()
        .any(|line| line.starts_with("second") && line.contains(" healthy "));
    assert!(
        said_ended || second_running,
        "up -d should say the supervisor ended with nothing left to supervise: {detached:?}"
    );
    assert!(!detached.stdout.contains("failed"), "{detached:?}");

    // The foreground summary: up and completed counted apart; services left out by
    // naming others are "not started", `autostart = false` ones "on demand".
    let mixed = write(
        "mixed.toml",
        r#"
[services.web]
command = ["sleep", "1000"]
depends-on = { migrate = "completed" }
env = { MUSTER_TEST_TAG = "{tag}" }

[services.migrate]
command = ["true"]
env = { MUSTER_TEST_TAG = "{tag}" }

[services.lazy]
command = ["sleep", "1000"]
autostart = false
env = { MUSTER_TEST_TAG = "{tag}" }

[services.other]
command = ["sleep", "1000"]
env = { MUSTER_TEST_TAG = "{tag}" }
"#,
    );
    let mut up = Plain::start(&mixed, &["web"]);
    up.wait_line("Ctrl-C stops them");
    let (code, lines) = up.stop();
    assert_eq!(code, 0, "{lines:#?}");
    let summary = lines
        .iter()
        .position(|l| l.contains("Ctrl-C stops them"))
        .unwrap();
    let text = &lines[summary];
    assert!(
        text.contains("1 service up, 1 completed in "),
        "{text}\n{lines:#?}"
    );
    assert!(
        text.contains(", 1 on demand (lazy), 1 not started (other); Ctrl-C stops them"),
        "{text}"
    );
    let counted = |line: &String| {
        event_of(line).is_some_and(|(service, kind)| {
            matches!(service, "web" | "migrate") && matches!(kind, "ready" | "completed")
        })
    };
    let last_counted = lines
        .iter()
        .rposition(counted)
        .expect("ready and completed");
    assert!(
        last_counted < summary,
        "the summary came before an event it counts: {lines:#?}"
    );
    assert!(
        lines.iter().filter(|l| counted(l)).count() >= 2,
        "{lines:#?}"
    );

    // A failed service: its `failed` line once, before the summary that reports it.
    // (With a probe, it fails while starting: without one it would be up from its
    // spawn, and the bootstrap could settle before it exits.)
    let failing = write(
        "failing.toml",
        &r#"
[services.web]
command = ["sleep", "1000"]
env = { MUSTER_TEST_TAG = "{tag}" }

[services.broken]
command = ["false"]
restart = "never"
ready = { tcp = "127.0.0.1:{port}" }
env = { MUSTER_TEST_TAG = "{tag}" }
"#
        .replace("{port}", &free_port().to_string()),
    );
    let mut up = Plain::start(&failing, &[]);
    up.wait_line("1 failed:");
    let (code, lines) = up.stop();
    assert_eq!(code, 0, "stopped by SIGTERM: {lines:#?}");
    let failed: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| event_of(l) == Some(("broken", "failed")))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed.len(), 1, "{lines:#?}");
    let summary = lines.iter().position(|l| l.contains("1 failed:")).unwrap();
    assert!(failed[0] < summary, "{lines:#?}");
    assert!(
        lines[summary].contains("1 of 2 services up in "),
        "{lines:#?}"
    );
    assert!(tagged(&tag).is_empty());
}

#[test]
fn a_start_during_a_slow_stop_waits_for_it_and_never_runs_two() {
    let ignores_term = ignores_term();
    let config = format!(
        r#"[settings]
state-dir = "{{dir}}/state"

[services.slow]
command = {ignores_term}
ready = {{ log = "^ignoring$" }}
stop-timeout = "2s"
env = {{ MUSTER_TEST_TAG = "{{dir}}" }}
"#
    );
    let mut up = Up::start(&config, &[]);
    let tag = up.dir.path().display().to_string();
    let _sweep = TagSweep(tag.clone());
    up.wait_event("slow", "ready");
    let sampler = Sampler::start(&tag);
    let file = file_of(&up);
    let stopping = {
        let file = file.clone();
        thread::spawn(move || run(&mut muster(&["stop", "slow", "-f", &file])))
    };
    up.wait_event("slow", "stopping");
    // While the old process ignores SIGTERM: a start, and an ensure, both wait for it
    // to be gone and then get the new run.
    let started = run(&mut muster(&["start", "slow", "-f", &file]));
    let ensured = run(&mut muster(&["ensure", "slow", "-f", &file]));
    let stopped = stopping.join().unwrap();
    assert_eq!(stopped.code, 0, "{stopped:?}");
    assert_eq!(started.code, 0, "{started:?}");
    assert_eq!(ensured.code, 0, "{ensured:?}");
    assert!(started.stdout.contains("healthy"), "{started:?}");
    let down = run(&mut muster(&["down", "-f", &file]));
    assert_eq!(down.code, 0, "{down:?}");
    let samples = sampler.finish();
    samples.assert_one_per_service();
    let ended = up.wait_exit();
    assert_eq!(ended.of("slow", "spawned").len(), 2, "{:#?}", ended.events);
    assert!(tagged(&tag).is_empty());
}
