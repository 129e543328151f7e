//! The CLI where users meet it: output into a pipe whose reader leaves, logs read from
//! disk, a supervisor that does not answer, answers that say what happened, and the
//! API's smaller truths. One test per class, each against a real `muster up`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::helpers::up::{Up, WAIT, collect, eventually};
use crate::helpers::{Run, muster, run};

const STATE: &str = "[settings]\nstate-dir = \"{dir}/state\"\n";

/// `muster ARGS -f <up's file>`.
fn at(up: &Up, args: &[&str]) -> Command {
    let mut command = muster(args);
    command.arg("-f").arg(up.path("muster.toml"));
    command
}

/// A child's exit code and everything it wrote on stderr, waiting at most `within`
/// (then it is killed and the test fails).
fn finish(
    mut child: Child,
    stderr: &Arc<Mutex<String>>,
    within: Duration,
    what: &str,
) -> (i32, String) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code().unwrap_or(-1), all_of(stderr));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what}: still running after {within:?}; stderr: {}",
                stderr.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a collector gathered, once its pipe has ended (the child has exited; a
/// grandchild holding the pipe would keep it open, and then what came so far is taken).
fn all_of(collected: &Arc<Mutex<String>>) -> String {
    // The collecting thread holds the other reference until the pipe ends.
    let deadline = Instant::now() + WAIT;
    while Arc::strong_count(collected) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    collected.lock().unwrap().clone()
}

/// Runs `command` with stdout a pipe whose reader is already gone: its first write to
/// stdout fails with EPIPE.
fn into_closed_pipe(mut command: Command, what: &str) -> (i32, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = command
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    finish(child, &stderr, WAIT, what)
}

/// Runs `command`, reads `lines` lines of its stdout and closes the pipe, as `head`
/// does; the rest of a large output is written after the reader has gone.
fn into_head(mut command: Command, lines: usize, what: &str) -> (Vec<String>, i32, String) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = collect(child.stderr.take().unwrap());
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut read = Vec::new();
    for _ in 0..lines {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        read.push(line.trim_end().to_owned());
    }
    drop(stdout);
    let (code, text) = finish(child, &stderr, WAIT, what);
    (read, code, text)
}

/// A chatty service (60,000 numbered lines, rotated in files of 256 KiB), a service
/// that crash-loops (events by the thousand), and a quiet one.
fn busy_config() -> String {
    format!(
        r#"{STATE}
[settings.logs]
max-size = "256KiB"
keep = 20

[services.chatty]
shell = 'seq 1 60000; exec sleep 1000'

[services.looper]
shell = 'exit 1'
restart = "always"
backoff = {{ initial = "1ms", max = "1ms" }}
restart-limit = {{ count = 100000, within = "1m" }}

[services.quiet]
command = ["sleep", "1000"]
"#
    )
}

/// Waits until `chatty` has written its last line to disk.
fn chatty_done(up: &Up) {
    eventually("chatty wrote 60000 lines", || {
        run(&mut at(up, &["logs", "chatty", "-n", "1"]))
            .stdout
            .trim()
            == "60000"
    });
}

#[test]
fn closed_pipe_every_command_ends_quietly_with_status_0_when_its_reader_goes_away() {
    let mut up = Up::start(&busy_config(), &[]);
    up.wait_for("a thousand events", |e| e["id"].as_u64() >= Some(1500));
    assert_eq!(run(&mut at(&up, &["stop", "looper"])).code, 0);
    chatty_done(&up);

    let read_only: &[&[&str]] = &[
        &["check"],
        &["check", "--json"],
        &["graph"],
        &["graph", "--dot"],
        &["graph", "--json"],
        &["status"],
        &["status", "--json"],
        &["status", "quiet"],
        &["events"],
        &["events", "--json"],
        &["events", "-F"],
        &["history", "looper"],
        &["history", "looper", "--json"],
        &["logs"],
        &["logs", "chatty", "-n", "50000"],
        &["logs", "-n", "50000", "--json"],
        &["logs", "chatty", "-F"],
        &["man"],
        &["completions", "bash"],
        &["completions", "zsh"],
        &["--help"],
        &["logs", "--help"],
        &["--version"],
    ];
    for args in read_only {
        let what = format!("muster {}", args.join(" "));
        let (code, stderr) = into_closed_pipe(at(&up, args), &what);
        assert_eq!(
            (code, stderr.as_str()),
            (0, ""),
            "{what} into a closed pipe"
        );
    }
    // Reading a little and leaving, as `head -3` does, with outputs far larger than a
    // pipe holds: every later write meets the closed pipe.
    let large: &[&[&str]] = &[
        &["logs", "chatty", "-n", "50000"],
        &["logs", "-n", "50000"],
        &["logs", "chatty", "-n", "50000", "-F"],
        &["events"],
        &["events", "--json", "-F"],
        &["history", "looper"],
        &["man"],
    ];
    for args in large {
        let what = format!("muster {} | head -3", args.join(" "));
        let (lines, code, stderr) = into_head(at(&up, args), 3, &what);
        assert_eq!(lines.len(), 3, "{what}: {stderr}");
        assert_eq!((code, stderr.as_str()), (0, ""), "{what}");
    }
    let (lines, _, _) = into_head(at(&up, &["logs", "chatty", "-n", "50000"]), 3, "head");
    assert_eq!(lines, ["10001", "10002", "10003"]);
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

/// A service printing a counter every millisecond, forever.
const TICKER: &str = r#"
[services.ticker]
command = ["python3", "-u", "-c", "import itertools, time\nfor i in itertools.count():\n    print(i)\n    time.sleep(0.001)"]
"#;

#[test]
fn reading_what_is_on_disk_logs_gives_every_line_asked_and_follows_end_when_the_supervisor_stops() {
    let mut up = Up::start(&format!("{}{TICKER}", busy_config()), &[]);
    chatty_done(&up);
    assert!(
        up.path("state/logs/chatty.log.3").exists(),
        "the log rotated"
    );

    // All that was asked, from the current file and the rotated ones.
    let lines = run(&mut at(&up, &["logs", "chatty", "-n", "50000"]));
    assert_eq!(lines.code, 0, "{}", lines.stderr);
    let lines: Vec<&str> = lines.stdout.lines().collect();
    assert_eq!(lines.len(), 50_000);
    assert_eq!((lines[0], lines[49_999]), ("10001", "60000"));
    let every = run(&mut at(&up, &["logs", "-n", "50000", "--json"]));
    let every: Vec<Value> = every
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(every.len(), 50_000);
    assert!(
        every
            .windows(2)
            .all(|w| w[0]["time"].as_str() <= w[1]["time"].as_str()),
        "every service's lines are merged by time"
    );

    // A follow misses no line and repeats none between the files and the live stream.
    let mut follower = at(&up, &["logs", "ticker", "-F", "-n", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let follower_err = collect(follower.stderr.take().unwrap());
    let mut stdout = BufReader::new(follower.stdout.take().unwrap());
    let mut counts: Vec<u64> = Vec::new();
    while counts.len() < 1500 {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "{}",
            follower_err.lock().unwrap()
        );
        if let Ok(n) = line.trim().parse() {
            counts.push(n);
        }
    }
    assert!(
        counts.windows(2).all(|w| w[1] == w[0] + 1),
        "lines missed or repeated: {:?}",
        counts.windows(2).find(|w| w[1] != w[0] + 1)
    );
    let quiet: Value =
        serde_json::from_str(&run(&mut at(&up, &["status", "quiet", "--json"])).stdout).unwrap();
    let quiet_run = quiet["run_id"].as_u64().unwrap();
    let mut events = at(&up, &["events", "-F", "--json", "--service", "quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let events_err = collect(events.stderr.take().unwrap());
    let (sender, printed) = std::sync::mpsc::channel();
    let events_out = events.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(events_out).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    // It reads the history, then connects: once it has a socket, what happens next can
    // only reach it through the follow.
    eventually("the events follower connects", || has_socket(events.id()));
    let restarted = run(&mut at(&up, &["restart", "quiet"]));
    // (Only the follow can have brought a spawn of this new run.)
    assert_eq!(restarted.code, 0, "{}", restarted.stderr);
    let deadline = Instant::now() + WAIT;
    loop {
        let line = printed
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no live event: {}", events_err.lock().unwrap()));
        let event: Value = serde_json::from_str(&line).unwrap();
        if event["kind"] == "spawned" && event["run_id"].as_u64() > Some(quiet_run) {
            break;
        }
    }
    let down = run(&mut at(&up, &["down"]));
    assert_eq!(down.code, 0, "{}", down.stderr);
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    for (child, stderr, what) in [
        (follower, follower_err, "logs -F"),
        (events, events_err, "events -F"),
    ] {
        let (code, text) = finish(child, &stderr, WAIT, what);
        assert_eq!(code, 0, "{what}: {text}");
        assert_eq!(text.lines().count(), 1, "{what}: {text}");
        assert!(
            text.contains("stopped; nothing more to follow"),
            "{what}: {text}"
        );
    }
    let _ = up.wait_exit();

    // No supervisor: the files are still there to read.
    let after = run(&mut at(&up, &["logs", "chatty", "-n", "50000", "--json"]));
    assert_eq!(after.code, 0, "{}", after.stderr);
    let after: Vec<Value> = after
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(after.len(), 50_000);
    let printed: Vec<&str> = after
        .iter()
        .filter(|l| l["stream"] == "stdout")
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        printed.last(),
        Some(&"60000"),
        "the last line is there after down"
    );
    let unknown = run(&mut at(&up, &["logs", "chaty"]));
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("did you mean `chatty`?"),
        "{}",
        unknown.stderr
    );
}

/// Whether process `pid` has a socket open (the CLI's only one is to the supervisor).
fn has_socket(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|fds| {
            fds.filter_map(Result::ok)
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|target| target.to_string_lossy().starts_with("socket:"))
        })
        .unwrap_or(false)
}

/// Resumes a supervisor stopped with SIGSTOP, whatever happens to the test.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

#[test]
fn unanswering_supervisor_clients_give_up_naming_its_pid_and_long_waits_are_not_cut() {
    let config = format!(
        r#"{STATE}
[services.a]
command = ["sleep", "1000"]

[services.slow]
shell = 'sleep 2; touch {{dir}}/slow.ready; exec sleep 1000'
autostart = false
ready = {{ exec = ["test", "-f", "{{dir}}/slow.ready"] }}
"#
    );
    let mut up = Up::start(&config, &[]);
    up.wait_event("a", "ready");
    let limit = |command: &mut Command| {
        command.env("MUSTER_TIMEOUT", "1s");
    };

    // Waits that are the point of the command are not cut by the 1 s limit: a follow
    // goes on, and `start` waits the 2 s `slow` takes.
    let mut follower = at(&up, &["events", "-F", "--json", "--service", "slow"]);
    limit(&mut follower);
    let mut follower = follower
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let follower_err = collect(follower.stderr.take().unwrap());
    let (lines, events) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut start = at(&up, &["start", "slow"]);
    limit(&mut start);
    let began = Instant::now();
    let started = run(&mut start);
    assert_eq!(started.code, 0, "{}", started.stderr);
    assert!(
        began.elapsed() > Duration::from_secs(1),
        "slow took its 2 s"
    );
    assert!(
        started.stdout.starts_with("slow is healthy (pid "),
        "{}",
        started.stdout
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let line = events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("no ready event; {}", follower_err.lock().unwrap()));
        if serde_json::from_str::<Value>(&line).unwrap()["kind"] == "ready" {
            break;
        }
    }
    assert!(
        follower.try_wait().unwrap().is_none(),
        "the follow goes on past 1 s"
    );
    let _ = follower.kill();
    let _ = follower.wait();

    // Stopped: every client gives up after its limit, says who does not answer and how
    // to resume it, and exits 1.
    let pid = up.pid() as i32;
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let _resume = Resume(pid);
    eventually("the supervisor is stopped", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('T'))
        })
    });
    let clients: &[&[&str]] = &[
        &["status"],
        &["status", "a", "--json"],
        &["ensure", "a"],
        &["start", "a"],
        &["restart", "a", "--no-wait"],
        &["stop", "a"],
        &["reload"],
        &["logs", "a", "-F"],
        &["events", "-F"],
        &["down"],
    ];
    let began = Instant::now();
    let running: Vec<_> = clients
        .iter()
        .map(|args| {
            let mut command = at(&up, args);
            limit(&mut command);
            let mut child = command
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let stderr = collect(child.stderr.take().unwrap());
            (args.join(" "), child, stderr)
        })
        .collect();
    for (what, child, stderr) in running {
        let (code, text) = finish(child, &stderr, WAIT, &what);
        assert_eq!(code, 1, "{what}: {text}");
        assert!(
            text.contains(&format!(
                "the supervisor (pid {pid}) did not answer within 1s"
            )) && text.contains(&format!("`kill -CONT {pid}`")),
            "{what}: {text}"
        );
    }
    assert!(
        began.elapsed() < Duration::from_secs(15),
        "{:?}",
        began.elapsed()
    );
    // The flag says the same; the files on disk need no supervisor.
    let status = run(at(&up, &["status", "--api-timeout", "1s"]).env("MUSTER_TIMEOUT", "1h"));
    assert_eq!(status.code, 1, "{}", status.stderr);
    let logs = run(&mut at(&up, &["logs", "a"]));
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    let bad = run(&mut at(&up, &["status", "--api-timeout", "soon"]));
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
    // The requests queued while it was stopped are read once it resumes, the `down`
    // among them: this one finds it shutting down, or gone (or going, mid-request).
    let down = run(&mut at(&up, &["down"]));
    assert!(
        down.code == 0
            || down.stderr.contains("no supervisor is running")
            || down.stderr.contains("talking to the supervisor"),
        "{}",
        down.stderr
    );
    let ended = up.wait_exit();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn answers_that_are_true_start_and_restart_report_the_outcome_and_status_exits_by_state() {
    let config = format!(
        r#"{STATE}
[services.ok]
shell = 'sleep 0.3; echo ready; exec sleep 1000'
autostart = false
ready = {{ log = "^ready$" }}

[services.bad]
shell = 'echo "no config found" >&2; exit 3'
autostart = false
restart = "never"
ready = {{ log = "^ready$" }}

[services.stuck]
command = ["sleep", "1000"]
autostart = false
ready = {{ log = "^never$", timeout = "1h" }}

[services.migrate]
shell = 'sleep 0.3; echo migrated'
autostart = false

[services.app]
command = ["sleep", "1000"]
autostart = false
depends-on = {{ migrate = "completed" }}
"#
    );
    let mut up = Up::start(&config, &[]);
    up.socket();
    let cli = |args: &[&str]| -> Run { run(&mut at(&up, args)) };

    let bad = cli(&["start", "bad"]);
    assert_eq!(bad.code, 1, "{}", bad.stdout);
    assert!(
        bad.stderr.contains("`bad` failed: exited with status 3"),
        "{}",
        bad.stderr
    );
    assert!(
        bad.stderr.contains("| no config found"),
        "the cause's log: {}",
        bad.stderr
    );
    assert_eq!(cli(&["status", "bad"]).code, 1);

    let ok = cli(&["start", "ok"]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(
        ok.stdout.starts_with("ok is healthy (pid "),
        "{}",
        ok.stdout
    );
    let first: Value = serde_json::from_str(&cli(&["status", "ok", "--json"]).stdout).unwrap();
    assert_eq!(first["state"], "healthy");
    assert_eq!(cli(&["status", "ok"]).code, 0);
    let restarted = cli(&["restart", "ok", "--json"]);
    assert_eq!(restarted.code, 0, "{}", restarted.stderr);
    let second: Value = serde_json::from_str(&restarted.stdout).unwrap();
    assert_eq!(second["state"], "healthy", "the new run, not the old one");
    assert!(second["run_id"].as_u64() > first["run_id"].as_u64());
    assert_ne!(second["pid"], first["pid"]);

    // A one-shot's outcome is that it completed; `status` counts that as good.
    let migrate = cli(&["start", "migrate"]);
    assert_eq!(migrate.code, 0, "{}", migrate.stderr);
    assert_eq!(
        migrate.stdout.trim(),
        "migrate completed (exited with status 0)"
    );
    assert_eq!(cli(&["status", "migrate"]).code, 0);

    let stuck = cli(&["start", "stuck", "--timeout", "500ms"]);
    assert_eq!(stuck.code, 1, "{}", stuck.stdout);
    assert!(
        stuck.stderr.contains("was not healthy within 500ms"),
        "{}",
        stuck.stderr
    );
    assert_eq!(cli(&["status", "stuck"]).code, 1, "starting is not healthy");

    assert_eq!(cli(&["stop", "ok"]).code, 0);
    let stopped = cli(&["status", "ok"]);
    assert_eq!(stopped.code, 3, "{}", stopped.stdout);
    assert_eq!(cli(&["status", "nosuch"]).code, 2);
    let help = cli(&["status", "--help"]);
    assert!(help.stdout.contains("3 stopped"), "{}", help.stdout);

    // Without `wait` the API answers at once, as it always did.
    let answer = up.call(Method::POST, "/v1/services/ok/start");
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{answer:?}");
    let no_wait = cli(&["restart", "ok", "--no-wait"]);
    assert!(
        no_wait.stdout.contains("at this instant"),
        "{}",
        no_wait.stdout
    );
    // A caller that says how long to wait wants to wait: the outcome, not 202.
    let waited = up.call(Method::POST, "/v1/services/ok/start?timeout=5s");
    assert_eq!(waited.status, StatusCode::OK, "{waited:?}");
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn api_truths_chunked_bodies_unknown_event_services_and_probe_counts() {
    let config = format!(
        r#"{STATE}
[services.a]
command = ["sleep", "1000"]

[services.gone]
command = ["sleep", "1000"]

[services.warm]
shell = 'sleep 0.5; touch {{dir}}/warm.flag; exec sleep 1000'
ready = {{ exec = ["test", "-f", "{{dir}}/warm.flag"] }}
"#
    );
    let mut up = Up::start(&config, &[]);
    up.wait_event("warm", "ready");
    let socket = up.socket();

    // A megabyte sent chunked, with no Content-Length, is refused like a declared one,
    // and the handler never runs.
    let mut stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let _ = writer.write_all(
            b"POST /v1/services/a/stop HTTP/1.1\r\nHost: muster\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        for _ in 0..16 {
            let _ = write!(writer, "{:x}\r\n", chunk.len());
            if writer.write_all(&chunk).is_err() || writer.write_all(b"\r\n").is_err() {
                return;
            }
        }
        let _ = writer.write_all(b"0\r\n\r\n");
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
        if String::from_utf8_lossy(&answer).contains("too-large") {
            break;
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // The writer's clone shares the socket: shutting it down ends a blocked write.
    let _ = stream.shutdown(std::net::Shutdown::Both);
    sender.join().unwrap();
    let a = run(&mut at(&up, &["status", "a"]));
    assert_eq!(a.code, 0, "`a` was not stopped: {}", a.stdout);

    // Events of a service never heard of: 404, as for the service itself.
    let unknown = up.call(Method::GET, "/v1/events?service=nosuch");
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{unknown:?}");
    assert_eq!(unknown.body["error"]["kind"], "unknown-service");
    let near = up.call(Method::GET, "/v1/events?service=gonne");
    assert!(
        near.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `gone`?"),
        "{near:?}"
    );
    let cli = run(&mut at(&up, &["events", "--service", "nosuch"]));
    assert_eq!(cli.code, 2, "{}", cli.stderr);
    // One a reload removed still has its history.
    let file = up.path("muster.toml");
    let edited = std::fs::read_to_string(&file)
        .unwrap()
        .replace("[services.gone]\ncommand = [\"sleep\", \"1000\"]\n", "");
    std::fs::write(&file, edited).unwrap();
    let reloaded = run(&mut at(&up, &["reload"]));
    assert!(
        reloaded.stdout.contains("removed gone"),
        "{}",
        reloaded.stdout
    );
    let removed = up.call(Method::GET, "/v1/events?service=gone");
    assert_eq!(removed.status, StatusCode::OK, "{removed:?}");
    assert!(!removed.body["events"].as_array().unwrap().is_empty());

    // Readiness attempts that failed while `warm` started are said to be that.
    let warm = run(&mut at(&up, &["status", "warm"]));
    assert_eq!(warm.code, 0, "{}", warm.stderr);
    let probes = warm
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("probes"))
        .unwrap_or_else(|| panic!("no probe count: {}", warm.stdout));
    assert!(
        probes.contains(
            "failed since the supervisor started (readiness attempts while starting included)"
        ),
        "{probes}"
    );
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}
