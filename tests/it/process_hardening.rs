//! What muster's children inherit and what it says about how they end, with the real
//! binary: signal dispositions and mask, descriptors, `up -d` under a capturing
//! caller, the true cause of every restart and stop, and programs that daemonize.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::helpers::up::{Up, WAIT, alive, collect, eventually};
use crate::helpers::{muster, muster_run};

/// The two signals glibc keeps for its threads (`SIGCANCEL`, `SIGSETXID`): its
/// `posix_spawn` hands them to every child as ignored, and no program can use them (its
/// `sigaction` refuses them). Every other bit must be clear.
const GLIBC_RESERVED: u64 = (1 << 31) | (1 << 32);

/// A signal set of `/proc/PID/status`.
fn signal_set(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

/// `SigIgn` and `SigBlk` from the lines of `/proc/PID/status` in `text`.
fn parse_sets(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        let value = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in {text:?}"));
        u64::from_str_radix(value.trim(), 16).unwrap()
    };
    (field("SigIgn"), field("SigBlk"))
}

/// The sets a fixture wrote with `grep` to `path`.
fn written_sets(path: &Path) -> (u64, u64) {
    parse_sets(&std::fs::read_to_string(path).unwrap())
}

/// What `muster status --json` says of `service`, once it answers.
fn status_of(file: &Path, service: &str) -> Option<Value> {
    let output = muster(&["status", "--json", "-f", file.to_str().unwrap()])
        .output()
        .ok()?;
    let document: Value = serde_json::from_slice(&output.stdout).ok()?;
    document["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == service)
        .cloned()
}

/// The pid of `service` once it is healthy.
fn service_pid(file: &Path, service: &str) -> u32 {
    eventually(&format!("`{service}` is healthy"), || {
        status_of(file, service).is_some_and(|s| s["state"] == "healthy")
    });
    status_of(file, service).unwrap()["pid"].as_u64().unwrap() as u32
}

/// The descriptors a process has open, by number, with what each points at.
fn descriptors(pid: u32) -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

/// A `muster` started some other way than the helpers do (through a launcher that
/// leaves signals ignored or descriptors open), killed with everything it started when
/// dropped.
struct Launched {
    child: Option<Child>,
    dir: tempfile::TempDir,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    /// Process groups to kill at the end: the services' (they lead their groups).
    groups: Vec<u32>,
}

impl Launched {
    /// Runs `launcher` (which ends by running muster with the rest of its arguments)
    /// from a fresh temp dir holding `muster.toml`, `{dir}` replaced by the dir.
    fn start(config: &str, launcher: &[&str], args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = write_config(dir.path(), config);
        let mut command = Command::new(launcher[0]);
        command
            .args(&launcher[1..])
            .arg(env!("CARGO_BIN_EXE_muster"))
            .args(args)
            .arg("-f")
            .arg(&file)
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().unwrap();
        let stderr = collect(child.stderr.take().unwrap());
        Self {
            child: Some(child),
            dir,
            stderr,
            groups: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sends SIGTERM to muster and waits for it to exit: its exit status.
    fn terminate(&mut self) -> i32 {
        let mut child = self.child.take().unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                panic!(
                    "muster did not stop on SIGTERM within {WAIT:?}; stderr: {}",
                    self.stderr.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
        for &group in &self.groups {
            let _ = killpg(Pid::from_raw(group as i32), Signal::SIGKILL);
        }
    }
}

fn write_config(dir: &Path, config: &str) -> PathBuf {
    let file = dir.join("muster.toml");
    let config = config.replace("{dir}", &dir.display().to_string());
    std::fs::write(&file, config).unwrap();
    file
}

/// A service, an exec readiness probe and a hook that copy their own status (no shell
/// in between: a shell may change its mask), so every kind of child muster starts is
/// looked at.
const WRITES_ITS_SIGNALS: &str = r#"
[settings]
state-dir = "{dir}/state"

[services.svc]
command = ["sleep", "1000"]
ready = { exec = ["cp", "/proc/self/status", "{dir}/probe.sig"] }

[[hooks]]
on = ["ready"]
run = ["cp", "/proc/self/status", "{dir}/hook.sig"]
"#;

/// Runs a python3 launcher that ignores SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGPIPE
/// and blocks SIGTERM and SIGUSR2, then execs muster; or a shell with `trap '' ...`.
const PYTHON_LAUNCHER: &str = "\
import os, signal, sys
for s in (signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGPIPE):
    signal.signal(s, signal.SIG_IGN)
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGUSR2})
os.execvp(sys.argv[1], sys.argv[1:])
";

#[test]
fn children_start_clean_whatever_muster_ignores_or_blocks() {
    let launchers: [&[&str]; 2] = [
        &["python3", "-c", PYTHON_LAUNCHER],
        &["sh", "-c", "trap '' INT HUP QUIT PIPE; exec \"$@\"", "sh"],
    ];
    for launcher in launchers {
        // The launcher really leaves what it runs with them ignored and blocked.
        let (ignored, blocked) = launched_sets(launcher);
        assert_ne!(
            ignored & bit(Signal::SIGHUP),
            0,
            "{launcher:?}: {ignored:#x}"
        );
        if launcher[0] == "python3" {
            assert_ne!(
                blocked & bit(Signal::SIGTERM),
                0,
                "{launcher:?}: {blocked:#x}"
            );
        }
        let mut up = Launched::start(WRITES_ITS_SIGNALS, launcher, &["up", "--json"]);
        let pid = service_pid(&up.path("muster.toml"), "svc");
        up.groups.push(pid);
        for path in [up.path("probe.sig"), up.path("hook.sig")] {
            eventually(&format!("{} is written", path.display()), || {
                std::fs::read_to_string(&path).is_ok_and(|t| t.contains("SigBlk"))
            });
        }
        let seen = [
            (
                "service",
                (signal_set(pid, "SigIgn"), signal_set(pid, "SigBlk")),
            ),
            ("exec probe", written_sets(&up.path("probe.sig"))),
            ("hook", written_sets(&up.path("hook.sig"))),
        ];
        for (who, (ignored, blocked)) in seen {
            assert_eq!(
                ignored & !GLIBC_RESERVED,
                0,
                "{launcher:?}: the {who} starts with signals ignored: {ignored:#x}"
            );
            assert_eq!(
                blocked, 0,
                "{launcher:?}: the {who} starts with signals blocked"
            );
        }
        // muster itself does not keep an inherited mask: SIGTERM (blocked by the python
        // launcher) stops it.
        assert_eq!(up.terminate(), 0, "{}", up.stderr.lock().unwrap());
    }
}

/// The bit of `signal` in a `/proc` signal set.
fn bit(signal: Signal) -> u64 {
    1 << (signal as i32 - 1)
}

/// The ignored and blocked sets of a program `launcher` runs: what muster starts with.
fn launched_sets(launcher: &[&str]) -> (u64, u64) {
    let output = Command::new(launcher[0])
        .args(&launcher[1..])
        .args(["grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    parse_sets(&String::from_utf8_lossy(&output.stdout))
}

/// Runs `script` with `sh -c`, its stdout a pipe, and returns what it printed once the
/// pipe closes (every holder of its write end has closed it), or panics at `within`.
fn captured(script: &str, dir: &Path, within: Duration) -> String {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (done, output) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        let _ = done.send(text);
    });
    let text = output.recv_timeout(within);
    if text.is_err() {
        // The shell waits for the pipe too: it goes, the holders are the caller's to stop.
        let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
    }
    let _ = child.wait();
    text.unwrap_or_else(|_| panic!("`{script}`: its output did not end within {within:?}"))
}

#[test]
fn descriptors_of_the_caller_reach_neither_the_background_supervisor_nor_services() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(
        dir.path(),
        "[settings]\nstate-dir = \"{dir}/state\"\n\n\
         [services.svc]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    let muster_bin = env!("CARGO_BIN_EXE_muster");
    let file = file.display().to_string();
    let down = || {
        let _ = muster(&["down", "-f", &file]).output();
    };
    // Stops whatever is left if an assertion fails.
    struct Down<F: Fn()>(F);
    impl<F: Fn()> Drop for Down<F> {
        fn drop(&mut self) {
            (self.0)();
        }
    }
    let _down = Down(down);
    // The capture's pipe is also open on descriptor 9, and a file on 7, without
    // close-on-exec: what a careless caller (or a jobserver, or a test harness) leaves.
    let scripts = [
        format!("exec 7>>inherited.txt; x=$('{muster_bin}' up -d -f '{file}' 9>&1); echo \"$x\""),
        format!("exec 7>>inherited.txt; '{muster_bin}' up -d -f '{file}' 9>&1 | cat"),
    ];
    for script in &scripts {
        let began = Instant::now();
        let output = captured(script, dir.path(), Duration::from_secs(20));
        assert!(output.contains("1/1 healthy"), "`{script}`: {output}");
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "`{script}` took {:?}",
            began.elapsed()
        );
        let pid = service_pid(Path::new(&file), "svc");
        // The service has exactly its three standard streams: /dev/null and the two
        // pipes muster reads its output from.
        let fds = descriptors(pid);
        let numbers: Vec<i32> = fds.iter().map(|(fd, _)| *fd).collect();
        assert_eq!(numbers, [0, 1, 2], "the service has {fds:?}");
        assert_eq!(fds[0].1, "/dev/null");
        assert!(fds[1].1.starts_with("pipe:") && fds[2].1.starts_with("pipe:"));
        // The background supervisor holds nothing of the caller's: not the capture pipe
        // (its own pipes are the services' output), not the file.
        let supervisor = supervisor_pid(dir.path());
        let held = descriptors(supervisor);
        assert!(
            !held.iter().any(|(_, t)| t.ends_with("inherited.txt")),
            "the supervisor holds the caller's file: {held:?}"
        );
        assert_eq!(held[0].1, "/dev/null", "{held:?}");
        assert!(held[1].1.ends_with("muster.log") && held[2].1.ends_with("muster.log"));
        down();
        eventually("the service is gone after `down`", || !alive(pid as i32));
    }
}

/// The pid of the supervisor `up -d` started, from the lock file's holder.
fn supervisor_pid(dir: &Path) -> u32 {
    let lock = dir.join("state/lock");
    let me = std::fs::canonicalize(&lock).unwrap();
    // The process that has the state directory's lock file open.
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.filter_map(Result::ok)
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == me))
            })
        })
        .expect("a process holds the state lock")
}

/// The runs `muster history NAME --json` shows, oldest first.
fn history(up: &Up, service: &str) -> Vec<Value> {
    let file = up.path("muster.toml");
    let output = muster_run(&["history", service, "--json", "-f", file.to_str().unwrap()]);
    assert_eq!(output.code, 0, "{}", output.stderr);
    let document: Value = serde_json::from_str(&output.stdout).unwrap();
    let mut runs = document["runs"].as_array().unwrap().clone();
    runs.sort_by_key(|r| r["run_id"].as_u64());
    runs
}

fn reason(run: &Value) -> &str {
    run["reason"].as_str().unwrap_or_default()
}

#[test]
fn history_and_events_tell_the_true_cause_of_every_restart_and_stop() {
    let mut up = Up::start(
        r#"
[settings]
state-dir = "{dir}/state"

[services.hung]
command = ["sleep", "1000"]
watchdog = "300ms"

[services.sick]
command = ["sleep", "1000"]
alive = { exec = ["false"], interval = "100ms", failures = 2 }

[services.crashing]
shell = "sleep 0.2; exit 3"
backoff = { initial = "5s" }

[services.asked]
command = ["sleep", "1000"]

[services.idle]
command = ["sleep", "1000"]
idle-stop = "300ms"

[[hooks]]
on = ["restarting"]
run = ["sh", "-c", "printf '%s' \"$MUSTER_EVENT_JSON\" > {dir}/restarting.$MUSTER_EVENT_ID.json"]
"#,
        &[],
    );
    for name in ["hung", "sick", "crashing", "asked", "idle"] {
        up.wait_event(name, "ready");
    }
    let answer = up.call(hyper::Method::POST, "/v1/services/asked/restart");
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let mut restarts = BTreeMap::new();
    for (name, cause) in [
        ("hung", "watchdog"),
        ("sick", "liveness"),
        ("crashing", "exit"),
        ("asked", "asked"),
    ] {
        let event = up.wait_event(name, "restarting");
        assert_eq!(event["data"]["cause"], cause, "{event}");
        restarts.insert(name, event);
    }
    let idle = up.wait_event("idle", "stopped");
    for name in ["hung", "sick", "asked"] {
        up.wait_for(&format!("a second run of {name}"), |e| {
            e["service"] == name
                && e["kind"] == "spawned"
                && e["run_id"] != restarts[name]["run_id"]
        });
    }
    let answer = up.call(hyper::Method::POST, "/v1/services/asked/stop");
    assert!(answer.status.is_success(), "{:?}", answer.body);
    let asked_stop = up.wait_for("`asked` stopped on request", |e| {
        e["service"] == "asked"
            && e["kind"] == "stopped"
            && e["run_id"] != restarts["asked"]["run_id"]
    });

    // Each restart: one event, its cause in words too, under the run that ended.
    assert_eq!(restarts["hung"]["data"]["reason"], "no heartbeat for 300ms");
    assert!(
        restarts["sick"]["data"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("liveness probe exec `false` failed 2 times in a row"),
        "{}",
        restarts["sick"]
    );
    assert_eq!(
        restarts["crashing"]["data"]["reason"],
        "exited with status 3"
    );
    assert_eq!(restarts["asked"]["message"], "now: on request");
    // Hooks on `restarting` fire for every cause.
    eventually("the hook ran for each restart", || {
        restarts.values().all(|event| {
            up.path(&format!("restarting.{}.json", event["id"]))
                .exists()
        })
    });

    // A stop on request or for idleness is not a crash.
    assert_eq!(
        idle["message"],
        "stopped: idle for 300ms; exited on SIGTERM"
    );
    assert_eq!(idle["data"]["cause"], "idle");
    assert_eq!(
        asked_stop["message"],
        "stopped on request; exited on SIGTERM"
    );
    assert_eq!(asked_stop["data"]["cause"], "asked");

    // The history says what ended each run, not what the next one was doing.
    let hung = history(&up, "hung");
    assert_eq!(
        reason(&hung[0]),
        "stopped to restart: no heartbeat for 300ms; exited on SIGTERM",
        "{hung:#?}"
    );
    let sick = history(&up, "sick");
    assert!(
        reason(&sick[0]).starts_with("stopped to restart: liveness probe exec `false` failed"),
        "{sick:#?}"
    );
    let crashing = history(&up, "crashing");
    assert_eq!(
        reason(&crashing[0]),
        "exited with status 3; restarting in 5s"
    );
    let asked = history(&up, "asked");
    assert_eq!(
        reason(&asked[0]),
        "stopped to restart on request; exited on SIGTERM"
    );
    assert_eq!(reason(&asked[1]), "stopped on request; exited on SIGTERM");
    assert_eq!(
        reason(&history(&up, "idle")[0]),
        "stopped: idle for 300ms; exited on SIGTERM"
    );
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    // Exactly one `restarting` per restart: one per run that was followed by another.
    for name in ["hung", "sick", "asked"] {
        let restarting = ended.of(name, "restarting").len();
        let spawned = ended.of(name, "spawned").len();
        assert_eq!(restarting, spawned - 1, "{name}: {:#?}", ended.events);
    }
}

/// A python3 launcher that forks, leaves its process group (`setsid`) and forks again:
/// the daemon, which execs `sleep 1000`; with a path argument, the daemon writes its pid
/// there after 300 ms (so the file comes after the launcher has exited). The launcher
/// exits 0 once the middle process has exited, leaving the daemon an orphan.
const DOUBLE_FORK: &str = "\
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        if len(sys.argv) > 1:
            time.sleep(0.3)
            with open(sys.argv[1] + '.tmp', 'w') as f:
                f.write(str(os.getpid()))
            os.rename(sys.argv[1] + '.tmp', sys.argv[1])
        os.execvp('sleep', ['sleep', '1000'])
    os._exit(0)
os.wait()
";

/// Kills the pids it is given when dropped: daemons that left every group a test's
/// other guards know.
#[derive(Default)]
struct KillOnDrop(std::cell::RefCell<Vec<u32>>);

impl KillOnDrop {
    fn add(&self, pid: u32) -> u32 {
        self.0.borrow_mut().push(pid);
        pid
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &pid in self.0.borrow().iter() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// The pids of live processes carrying every one of `entries` in their environment.
/// A run id alone is no mark: other supervisors (other tests) number their runs from 1
/// too, so a run is named with its supervisor's `NOTIFY_SOCKET` beside it.
fn carriers(entries: &[&str]) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| alive(pid as i32))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                entries
                    .iter()
                    .all(|entry| env.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
            })
        })
        .collect()
}

#[test]
fn programs_that_daemonize_are_recognised_and_supervised_through_their_pidfile() {
    let daemons = KillOnDrop::default();
    let python = |args: &str| format!("command = [\"python3\", \"-c\", {DOUBLE_FORK:?}{args}]");
    let mut up = Up::start(
        &format!(
            r#"
[settings]
state-dir = "{{dir}}/state"

[services.forks]
shell = "sleep 1000 & exit 0"

[services.leaves]
{}

[services.same-group]
shell = "sleep 1000 & echo $! > {{dir}}/same.pid; exit 0"
pidfile = "same.pid"

[services.own-session]
{}
pidfile = "own.pid"
ready = {{ exec = ["true"] }}
"#,
            python(""),
            python(", \"{dir}/own.pid\""),
        ),
        &[],
    );
    // Without `pidfile`: recognised, said in one line with the fix, its daemon stopped.
    for name in ["forks", "leaves"] {
        let failed = up.wait_event(name, "failed");
        let message = failed["message"].as_str().unwrap();
        assert!(
            message.starts_with("went into the background: exited with status 0 after ")
                && message.contains("(`sleep 1000`) running, which muster stopped")
                && message.contains("run it in the foreground")
                && message.contains("set `pidfile`")
                && !message.contains('\n'),
            "{name}: {message}"
        );
        assert!(
            up.events
                .iter()
                .all(|e| e["service"] != name || e["kind"] != "completed")
        );
        let run = failed["run_id"].as_u64().unwrap();
        let marker = format!("MUSTER_RUN_ID={run}");
        let instance = format!(
            "NOTIFY_SOCKET={}",
            crate::helpers::evidence::instance_of(up.pid())
                .expect("the supervisor's notify socket")
        );
        eventually(&format!("the daemon of {name} is stopped"), || {
            carriers(&[&marker, &instance]).is_empty()
        });
    }
    // With `pidfile`: healthy once the daemon is taken over, shown with its pid.
    let file = up.path("muster.toml");
    for (name, pidfile) in [("same-group", "same.pid"), ("own-session", "own.pid")] {
        let ready = up.wait_event(name, "ready");
        let daemon = daemons.add(written(&up.path(pidfile)));
        assert!(
            ready["message"]
                .as_str()
                .unwrap()
                .contains(&format!("daemon pid {daemon}")),
            "{ready}"
        );
        assert_eq!(status_of(&file, name).unwrap()["pid"], daemon, "{name}");
        assert!(alive(daemon as i32));
    }
    // Its end is seen (it is muster's child by now) and restarts the service.
    let first = written(&up.path("own.pid"));
    std::fs::remove_file(up.path("own.pid")).unwrap();
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let exited = up.wait_event("own-session", "exited");
    assert_eq!(exited["data"]["signal"], "SIGKILL", "{exited}");
    let restarting = up.wait_event("own-session", "restarting");
    assert_eq!(restarting["data"]["cause"], "exit");
    up.wait_for("the next daemon is taken over", |e| {
        e["service"] == "own-session" && e["kind"] == "ready" && e["run_id"] != exited["run_id"]
    });
    let second = daemons.add(written(&up.path("own.pid")));
    assert_ne!(second, first);
    // Stopping it sends the stop signal to the daemon and waits for its exit.
    for name in ["same-group", "own-session"] {
        let answer = up.call(hyper::Method::POST, &format!("/v1/services/{name}/stop"));
        assert!(answer.status.is_success(), "{:?}", answer.body);
        let stopped = up.wait_event(name, "stopped");
        assert_eq!(
            stopped["message"], "stopped on request; exited on SIGTERM",
            "{name}"
        );
    }
    for pid in daemons.0.borrow().iter() {
        eventually(&format!("daemon {pid} is gone"), || !alive(*pid as i32));
    }
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

/// The pid a fixture wrote to `path`, once it is there.
fn written(path: &Path) -> u32 {
    eventually(&format!("{} is written", path.display()), || {
        std::fs::read_to_string(path).is_ok_and(|t| t.trim().parse::<u32>().is_ok())
    });
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
