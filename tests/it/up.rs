//! `muster up` with real processes: bootstrap order, every probe kind, restarts,
//! failure chains, shutdown order, stop timeouts, and nothing left behind.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::up::{Up, alive, eventually, free_port, stamp};
use crate::helpers::{Need, muster, require, run};

const STATE: &str = "[settings]\nstate-dir = \"{dir}/state\"\nshutdown-timeout = \"20s\"\n";

fn config(services: &str) -> String {
    format!("{STATE}\n{services}")
}

fn message(event: &Value) -> &str {
    event["message"].as_str().unwrap_or_default()
}

#[test]
fn services_start_after_their_dependencies_and_independent_ones_in_parallel() {
    let mut up = Up::start(
        &config(
            r#"
[services.a]
shell = 'date +%s%N > {dir}/a.start; sleep 0.3; date +%s%N > {dir}/a.ready; echo up; exec sleep 1000'
ready = { log = "^up$" }

[services.b]
shell = 'date +%s%N > {dir}/b.start; sleep 0.3; date +%s%N > {dir}/b.ready; echo up; exec sleep 1000'
ready = { log = "^up$" }

[services.c]
shell = 'date +%s%N > {dir}/c.start; exec sleep 1000'
depends-on = ["a", "b"]
"#,
        ),
        &[],
    );
    up.wait_event("c", "ready");
    let at = |name: &str| stamp(&up.path(name));
    let written =
        |name: &str| std::fs::read_to_string(up.path(name)).is_ok_and(|t| t.ends_with('\n'));
    eventually("c wrote its start time", || written("c.start"));
    // a and b ran side by side: each started before the other was ready.
    assert!(at("a.start") < at("b.ready") && at("b.start") < at("a.ready"));
    // c waited for both.
    assert!(at("c.start") > at("a.ready") && at("c.start") > at("b.ready"));
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn every_probe_kind_proves_readiness() {
    let (tcp, http) = (free_port(), free_port());
    let mut services = format!(
        r#"
[services.tcp]
command = ["python3", "-c", "import socket,time; time.sleep(0.2); s=socket.socket(); s.bind(('127.0.0.1', {tcp})); s.listen(); time.sleep(1000)"]
ready = {{ tcp = "127.0.0.1:{tcp}" }}

[services.http]
command = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "{http}"]
ready = {{ http = "http://127.0.0.1:{http}/", body = "Directory listing" }}

[services.exec]
shell = 'sleep 0.2; touch {{dir}}/flag; exec sleep 1000'
ready = {{ exec = ["test", "-f", "{{dir}}/flag"] }}

[services.log]
shell = 'echo starting; sleep 0.1; echo "listening on 9000"; exec sleep 1000'
ready = {{ log = "listening on \\d+" }}

[services.notify-python]
command = ["python3", "-c", """
import os, socket, time
time.sleep(0.1)
address = os.environ["NOTIFY_SOCKET"]
if address.startswith("@"):
    address = "\\0" + address[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=loaded\\nREADY=1", address)
time.sleep(1000)
"""]
ready = {{ notify = true }}
"#
    );
    let mut expectations = vec![
        ("tcp", "accepted a connection"),
        ("http", "answered 200"),
        ("exec", "exited with status 0"),
        ("log", "matched"),
        ("notify-python", "READY=1"),
    ];
    // Every other kind runs everywhere; this one drives systemd's own client.
    if require(
        Need::Program("systemd-notify"),
        "readiness sent by systemd's own client",
    ) {
        services.push_str(
            r#"
[services.notify-systemd]
shell = 'sleep 0.1; systemd-notify --ready --status="via systemd-notify"; exec sleep 1000'
ready = { notify = true }
"#,
        );
        expectations.push(("notify-systemd", "READY=1"));
    }
    let mut up = Up::start(&config(&services), &[]);
    for (service, how) in expectations {
        let ready = up.wait_event(service, "ready");
        assert!(message(&ready).contains(how), "{service}: {ready}");
    }
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert!(ended.of("notify-systemd", "failed").is_empty());
}

#[test]
fn a_probe_that_never_answers_fails_the_service_and_its_dependents_with_the_chain() {
    let port = free_port();
    let services = format!(
        r#"
[services.db]
command = ["python3", "-c", "import socket,time; s=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(1000)"]
ready = {{ http = "http://127.0.0.1:{port}/health", timeout = "1s" }}
stop-timeout = "2s"

[services.api]
command = ["sleep", "1000"]
depends-on = ["db"]

[services.web]
command = ["sleep", "1000"]
depends-on = {{ api = "started" }}
"#
    );
    let mut up = Up::start(&config(&services), &[]);
    let ended = up.wait_exit();
    assert_eq!(ended.code, 1, "{}", ended.stderr);
    let db = ended.of("db", "failed");
    assert_eq!(db.len(), 1);
    let reason = format!("readiness probe http http://127.0.0.1:{port}/health timed out after 1s");
    assert!(message(db[0]).starts_with(&reason), "{}", db[0]);
    let web = ended.of("web", "failed");
    assert_eq!(
        message(web[0]),
        format!(
            "dependency `api` failed: dependency `db` failed: {}",
            message(db[0])
        )
    );
    assert!(
        ended.of("api", "spawned").is_empty(),
        "api must never start"
    );
    assert!(
        ended.stderr.contains("last lines of db"),
        "{}",
        ended.stderr
    );
}

#[test]
fn failures_restart_with_backoff_until_the_restart_limit() {
    let mut up = Up::start(
        &config(
            r#"
[services.flaky]
shell = 'echo "attempt $MUSTER_RUN_ID"; exit 3'
backoff = { initial = "100ms", max = "200ms" }
restart-limit = { count = 3, within = "1m" }
"#,
        ),
        &[],
    );
    let ended = up.wait_exit();
    assert_eq!(ended.code, 1);
    let delays: Vec<_> = ended
        .of("flaky", "restarting")
        .iter()
        .map(|e| e["data"]["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(delays, [100, 200, 200]);
    let spawned: Vec<_> = ended.of("flaky", "spawned");
    assert_eq!(spawned.len(), 4);
    let time = |e: &Value| humantime::parse_rfc3339(e["time"].as_str().unwrap()).unwrap();
    for (pair, delay) in spawned.windows(2).zip(delays) {
        let gap = time(pair[1]).duration_since(time(pair[0])).unwrap();
        // Jitter takes at most a fifth off the delay.
        assert!(
            gap >= Duration::from_millis(delay * 8 / 10),
            "{gap:?} < {delay}ms"
        );
    }
    let failed = ended.of("flaky", "failed");
    assert_eq!(
        message(failed[0]),
        "exited with status 3; gave up after 3 restarts within 1m (restart-limit)"
    );
    let log = std::fs::read_to_string(up.path("state/logs/flaky.log")).unwrap();
    assert_eq!(log.matches("stdout attempt").count(), 4, "{log}");
}

#[test]
fn a_killed_service_is_respawned_and_a_clean_exit_completes() {
    let mut up = Up::start(
        &config(
            r#"
[services.server]
command = ["sleep", "1000"]
backoff = { initial = "0s" }

[services.once]
command = ["true"]
"#,
        ),
        &[],
    );
    up.wait_event("once", "completed");
    let first = up.wait_event("server", "spawned")["data"]["pid"]
        .as_i64()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let exited = up.wait_event("server", "exited");
    assert_eq!(message(&exited), "killed by SIGKILL");
    let again = up.wait_for("a second spawn", |e| {
        e["service"] == "server" && e["kind"] == "spawned" && e["data"]["pid"] != first
    });
    assert!(again["run_id"].as_u64() > exited["run_id"].as_u64().map(|r| r - 1));
    let ended = up.stop();
    assert_eq!(ended.code, 0);
}

#[test]
fn shutdown_stops_dependents_first_and_kills_what_ignores_the_stop_signal() {
    let stopper = |name: &str| {
        format!(
            r#"shell = 'trap "date +%s%N > {{dir}}/{name}.stop; exit 0" TERM; echo ready; while :; do sleep 0.05; done'
ready = {{ log = "^ready$" }}"#
        )
    };
    let services = format!(
        r#"
[services.base]
{}

[services.middle]
{}
depends-on = ["base"]

[services.top]
{}
depends-on = ["middle"]

[services.stubborn]
shell = 'trap "" TERM; echo ready; while :; do sleep 0.05; done'
ready = {{ log = "^ready$" }}
stop-timeout = "300ms"
"#,
        stopper("base"),
        stopper("middle"),
        stopper("top")
    );
    let mut up = Up::start(&config(&services), &[]);
    for name in ["base", "middle", "top", "stubborn"] {
        up.wait_event(name, "ready");
    }
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    let stop = |name: &str| stamp(&up.path(&format!("{name}.stop")));
    assert!(stop("top") < stop("middle") && stop("middle") < stop("base"));
    let stubborn = ended.of("stubborn", "stopped");
    assert_eq!(
        message(stubborn[0]),
        "stopped on request; killed by SIGKILL after it did not stop within 300ms of SIGTERM"
    );
}

#[test]
fn nothing_survives_shutdown_not_even_daemons_that_left_the_process_group() {
    let mut up = Up::start(
        &config(
            r#"
[services.parent]
shell = 'sleep 1000 & echo $! > {dir}/grandchild.pid; exec sleep 1000'

[services.daemon]
command = ["python3", "-c", """
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        with open(sys.argv[1] + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(1000)
    os._exit(0)
# A parent that starts a daemon of its own and runs on. (One that exits 0 once the
# daemon is set up is recognised as going into the background: see process_hardening.)
while not os.path.exists(sys.argv[1]):
    time.sleep(0.01)
time.sleep(1000)
""", "{dir}/daemon.pid"]
"#,
        ),
        &[],
    );
    up.wait_event("daemon", "ready");
    let read = |name: &str| {
        std::fs::read_to_string(up.path(name))
            .ok()?
            .trim()
            .parse::<i32>()
            .ok()
    };
    eventually("both wrote their pids", || {
        read("daemon.pid").is_some() && read("grandchild.pid").is_some()
    });
    let pid = |name: &str| read(name).unwrap();
    let (grandchild, daemon) = (pid("grandchild.pid"), pid("daemon.pid"));
    assert!(alive(grandchild) && alive(daemon));
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert!(
        ended.stderr.contains("killed 1 process left behind"),
        "{}",
        ended.stderr
    );
    eventually("the grandchild is gone", || !alive(grandchild));
    eventually("the daemon is gone", || !alive(daemon));
}

#[test]
fn a_flood_of_output_does_not_hold_up_other_services_and_memory_stays_bounded() {
    let port = free_port();
    let services = format!(
        r#"
[settings.logs]
max-size = "1MiB"
keep = 1

[services.yes]
command = ["yes", "a line that repeats"]

[services.zeros]
shell = 'exec cat /dev/zero'

[services.late]
command = ["python3", "-c", "import socket,time; time.sleep(0.5); s=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(1000)"]
ready = {{ tcp = "127.0.0.1:{port}" }}
"#
    );
    let mut up = Up::start(&config(&services), &[]);
    let ready = up.wait_event("late", "ready");
    let spawned = up.wait_event("late", "spawned");
    let time = |e: &Value| humantime::parse_rfc3339(e["time"].as_str().unwrap()).unwrap();
    let took = time(&ready).duration_since(time(&spawned)).unwrap();
    assert!(
        took < Duration::from_secs(5),
        "readiness took {took:?} beside the floods"
    );
    let rss = std::fs::read_to_string(format!("/proc/{}/status", up.pid()))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .map(|v| v.trim().trim_end_matches(" kB").parse::<u64>().unwrap())
        })
        .unwrap();
    assert!(
        rss < 64 * 1024,
        "muster uses {rss} kB while two children flood it"
    );
    for log in ["yes.log", "zeros.log"] {
        // A rotation may be under way: no file is no bytes.
        let size = std::fs::metadata(up.path(&format!("state/logs/{log}"))).map_or(0, |m| m.len());
        assert!(size <= 1 << 20, "{log} is {size} bytes");
    }
    assert!(up.path("state/logs/yes.log.1").exists());
    assert!(!up.path("state/logs/yes.log.2").exists());
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn a_vanished_working_directory_or_program_fails_the_service_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let program = dir.path().join("program.sh");
    std::fs::write(&program, "#!/bin/sh\nexec sleep 1000\n").unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut up = Up::start_in(
        dir,
        &config(
            r#"
[services.victim]
command = ["sleep", "1000"]
cwd = "{dir}/work"
restart = "always"
backoff = { initial = "0s" }

[services.lost-program]
command = ["{dir}/program.sh"]
restart = "always"
backoff = { initial = "0s" }

[services.bystander]
command = ["sleep", "1000"]
"#,
        ),
        &[],
    );
    let kill = |pid: i64| {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    };
    let pid = up.wait_event("victim", "spawned")["data"]["pid"]
        .as_i64()
        .unwrap();
    std::fs::remove_dir(&work).unwrap();
    kill(pid);
    let failed = up.wait_event("victim", "failed");
    assert_eq!(
        message(&failed),
        format!("working directory {} does not exist", work.display())
    );
    // A program that stopped being executable after `check` passed.
    let program = up.path("program.sh");
    let pid = up.wait_event("lost-program", "spawned")["data"]["pid"]
        .as_i64()
        .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o644)).unwrap();
    kill(pid);
    let failed = up.wait_event("lost-program", "failed");
    assert_eq!(
        message(&failed),
        format!("cannot spawn: `{}` is not executable", program.display())
    );
    up.wait_event("bystander", "ready");
    let ended = up.stop();
    assert_eq!(ended.code, 0);
    assert!(ended.of("bystander", "failed").is_empty());
}

#[test]
fn named_services_start_with_their_dependencies_only() {
    let mut up = Up::start(
        &config(
            r#"
[services.db]
command = ["sleep", "1000"]

[services.api]
command = ["sleep", "1000"]
depends-on = ["db"]

[services.other]
command = ["sleep", "1000"]
"#,
        ),
        &["api"],
    );
    up.wait_event("api", "ready");
    let ended = up.stop();
    assert!(!ended.of("db", "spawned").is_empty());
    assert!(ended.of("other", "spawned").is_empty());
}

#[test]
fn an_unknown_service_name_is_a_usage_error_with_a_suggestion() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("muster.toml");
    std::fs::write(&file, "[services.database]\ncommand = [\"sleep\", \"1\"]\n").unwrap();
    let result = run(muster(&["up", "-f", file.to_str().unwrap(), "databse"])
        .env("MUSTER_STATE_DIR", dir.path().join("state")));
    assert_eq!(result.code, 2);
    assert!(
        result.stderr.contains("no service named `databse`"),
        "{}",
        result.stderr
    );
    assert!(
        result.stderr.contains("did you mean `database`?"),
        "{}",
        result.stderr
    );
}

#[test]
fn plain_output_names_each_event_and_says_when_everything_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("muster.toml");
    std::fs::write(
        &file,
        // `after` waits for `once` to complete: that is how a config says `once` is a
        // one-shot, whose outcome is completing, not being up.
        "[services.once]\ncommand = [\"sh\", \"-c\", \"echo hello\"]\n\n\
         [services.after]\ncommand = [\"true\"]\nready = { log = \"^never$\" }\n\
         depends-on = { once = \"completed\" }\n",
    )
    .unwrap();
    let result = run(muster(&["up", "-f", file.to_str().unwrap()])
        .env("MUSTER_STATE_DIR", dir.path().join("state")));
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert!(
        result
            .stdout
            .contains("once  completed  exited with status 0"),
        "{}",
        result.stdout
    );
    assert!(
        result.stdout.contains("muster: 2 services completed in"),
        "{}",
        result.stdout
    );
    assert!(
        result.stdout.contains("nothing left to supervise"),
        "{}",
        result.stdout
    );
    let log = std::fs::read_to_string(dir.path().join("state/logs/once.log")).unwrap();
    assert!(log.contains(" stdout hello\n"), "{log}");
}

/// A `muster up` started by hand. On drop it is killed with its process group, unless it
/// has exited, and so is each service that wrote its pid to `<dir>/<name>.pid` and still
/// carries `MUSTER_SERVICE=<name>` (a muster that died leaves them running).
struct Supervisor {
    child: std::process::Child,
    dir: std::path::PathBuf,
    services: &'static [&'static str],
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let kill = |pid: i32| {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        };
        if self.child.try_wait().ok().flatten().is_none() {
            kill(self.child.id() as i32);
            let _ = self.child.wait();
        }
        for name in self.services {
            let pid = std::fs::read_to_string(self.dir.join(format!("{name}.pid")))
                .ok()
                .and_then(|text| text.trim().parse::<u32>().ok());
            if let Some(pid) = pid
                && muster::supervisor::procfs::environ_has(
                    pid,
                    &[&format!("MUSTER_SERVICE={name}")],
                )
            {
                kill(pid as i32);
            }
        }
    }
}

#[test]
fn a_reader_that_goes_away_does_not_end_the_supervision() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("muster.toml");
    let text = config(
        "[services.first]\nshell = 'echo $$$$ > {dir}/first.pid; sleep 0.5; echo up; exec sleep 600'\n\
         ready = { log = \"^up$\" }\n\n\
         [services.second]\nshell = 'echo $$$$ > {dir}/second.pid; exec sleep 600'\ndepends-on = [\"first\"]\n\
         ready = { log = \"^never$\", timeout = \"1m\" }\n",
    )
    .replace("{dir}", dir.path().to_str().unwrap());
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    let mut child = muster(&["up", "--no-progress", "-f", file]);
    child
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut up = Supervisor {
        child: child.spawn().unwrap(),
        dir: dir.path().to_owned(),
        services: &["first", "second"],
    };
    let mut stdout = std::io::BufReader::new(up.child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    // `muster up | head -1`: the reader is gone; every later line hits a closed pipe.
    drop(stdout);
    let running = |name: &str| {
        let status = run(&mut muster(&["status", name, "--json", "-f", file]));
        serde_json::from_str::<Value>(&status.stdout)
            .is_ok_and(|s| s["pid"].is_number() && s["state"] == "starting")
    };
    // `first` became ready half a second later and `second` was started after it: both
    // events were written to the closed pipe, and supervision went on.
    eventually("second is spawned and supervised", || running("second"));
    let first_pid = run(&mut muster(&["status", "first", "--json", "-f", file])).stdout;
    let first_pid = serde_json::from_str::<Value>(&first_pid).unwrap()["pid"]
        .as_i64()
        .unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = up.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!alive(first_pid), "the shutdown stopped everything");
}
