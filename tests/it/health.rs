//! Health with real processes: watchdog heartbeats (notify and heartbeat file, hung and
//! SIGSTOP'd fixtures), liveness thresholds, the notify protocol from real clients and
//! from garbage, port pre-flight naming the holder, and `wait-for-ports`.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::helpers::up::{Up, eventually, free_port};
use crate::helpers::{Need, require};

const STATE: &str = "[settings]\nstate-dir = \"{dir}/state\"\n";

fn config(services: &str) -> String {
    format!("{STATE}\n{services}")
}

fn message(event: &Value) -> &str {
    event["message"].as_str().unwrap_or_default()
}

fn time(event: &Value) -> SystemTime {
    humantime::parse_rfc3339(event["time"].as_str().unwrap()).unwrap()
}

fn spawns(up: &Up, service: &str) -> usize {
    up.events
        .iter()
        .filter(|e| e["service"] == service && e["kind"] == "spawned")
        .count()
}

/// A python fixture that sends `WATCHDOG=1` every 100 ms for `beats` beats, writing the
/// time of the last one, then stays alive without a word.
const GOES_QUIET: &str = r#"
import os, socket, sys, time
address = os.environ["NOTIFY_SOCKET"]
if address.startswith("@"):
    address = "\0" + address[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=working on batch 7", address)
for _ in range(int(sys.argv[2])):
    s.sendto(b"WATCHDOG=1", address)
    with open(sys.argv[1] + ".tmp", "w") as f:
        f.write(str(time.time_ns()))
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
    time.sleep(0.1)
time.sleep(1000)
"#;

#[test]
fn a_service_that_stops_heartbeating_is_unhealthy_at_the_deadline_and_restarted() {
    let services = format!(
        r#"
[services.worker]
command = ["python3", "-c", '''{GOES_QUIET}''', "{{dir}}/last-beat", "5"]
watchdog = "1s"
"#
    );
    let mut up = Up::start(&config(&services), &[]);
    let unhealthy = up.wait_event("worker", "unhealthy");
    assert_eq!(
        message(&unhealthy),
        "no heartbeat for 1s (last: STATUS=working on batch 7)"
    );
    let last_beat: u64 = std::fs::read_to_string(up.path("last-beat"))
        .unwrap()
        .parse()
        .unwrap();
    let last_beat = SystemTime::UNIX_EPOCH + Duration::from_nanos(last_beat);
    let late = time(&unhealthy).duration_since(last_beat).unwrap();
    // The deadline, and at most 10 % more (events carry milliseconds).
    assert!(
        late >= Duration::from_millis(990) && late <= Duration::from_millis(1100),
        "unhealthy {late:?} after the last heartbeat"
    );
    up.wait_for("a restart", |e| {
        e["service"] == "worker" && e["kind"] == "spawned" && e["run_id"] != unhealthy["run_id"]
    });
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn a_stopped_process_is_caught_by_its_heartbeat_file_going_stale() {
    let mut up = Up::start(
        &config(
            r#"
[services.looper]
shell = 'while :; do touch "$MUSTER_HEARTBEAT_FILE"; sleep 0.05; done'
watchdog = "500ms"
stop-timeout = "2s"
"#,
        ),
        &[],
    );
    let pid = up.wait_event("looper", "spawned")["data"]["pid"]
        .as_i64()
        .unwrap();
    // Well past several deadlines of touching the file: nothing happens.
    std::thread::sleep(Duration::from_millis(1500));
    let frozen = SystemTime::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let unhealthy = up.wait_event("looper", "unhealthy");
    assert!(
        message(&unhealthy).starts_with("no heartbeat for 500ms"),
        "{unhealthy}"
    );
    let late = time(&unhealthy).duration_since(frozen).unwrap_or_default();
    assert!(
        late <= Duration::from_millis(700),
        "caught {late:?} after the freeze"
    );
    // Stopping a stopped process works: it is continued after the stop signal.
    let stopped = up.wait_event("looper", "stopped");
    assert!(
        message(&stopped).starts_with("stopped to restart"),
        "{stopped}"
    );
    up.wait_for("a second run", |e| {
        e["service"] == "looper" && e["kind"] == "spawned" && e["data"]["pid"] != pid
    });
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert_eq!(ended.of("looper", "unhealthy").len(), 1);
}

#[test]
fn heartbeats_from_systemd_notify_keep_a_service_untouched() {
    if !require(
        Need::Program("systemd-notify"),
        "heartbeats sent by systemd's own client",
    ) {
        return;
    }
    let mut up = Up::start(
        &config(
            r#"
[services.steady]
shell = 'systemd-notify --ready --status="steady as she goes"; while :; do systemd-notify WATCHDOG=1; sleep 0.1; done'
ready = { notify = true }
watchdog = "400ms"
"#,
        ),
        &[],
    );
    up.wait_event("steady", "ready");
    std::thread::sleep(Duration::from_secs(2));
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert!(
        ended.of("steady", "unhealthy").is_empty(),
        "{:#?}",
        ended.events
    );
    assert_eq!(ended.of("steady", "spawned").len(), 1);
}

#[test]
fn the_sdnotify_package_drives_readiness_and_the_watchdog() {
    if !require(
        Need::PythonModule("sdnotify"),
        "a real service's readiness and watchdog through the sdnotify package",
    ) {
        return;
    }
    let mut up = Up::start(
        &config(
            r#"
[services.model]
command = ["python3", "-c", """
import sdnotify, time
n = sdnotify.SystemdNotifier()
n.notify("STATUS=loading weights")
time.sleep(0.2)
n.notify("READY=1")
for _ in range(10):
    n.notify("WATCHDOG=1")
    time.sleep(0.1)
time.sleep(1000)
"""]
ready = { notify = true }
watchdog = "500ms"
"#,
        ),
        &[],
    );
    let ready = up.wait_event("model", "ready");
    assert!(message(&ready).contains("READY=1"));
    // Heartbeats for a second, then silence: unhealthy about half a second later.
    let unhealthy = up.wait_event("model", "unhealthy");
    assert_eq!(
        message(&unhealthy),
        "no heartbeat for 500ms (last: STATUS=loading weights)"
    );
    let quiet = time(&unhealthy).duration_since(time(&ready)).unwrap();
    assert!(quiet >= Duration::from_millis(1400), "{quiet:?}");
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

/// An HTTP server whose `/health` answers by a pattern of request numbers, logging each
/// answer to a file: `fail-after-flag` fails once `{dir}/flag` exists; `flap` fails two
/// requests in three.
const HEALTH_SERVER: &str = r#"
import http.server, os, sys
mode, port, log, flag = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
count = 0
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global count
        count += 1
        if mode == "flap":
            ok = count % 3 == 0
        else:
            ok = not os.path.exists(flag)
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {200 if ok else 503}\n")
        self.send_response(200 if ok else 503)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

fn health_service(name: &str, mode: &str, port: u16) -> String {
    format!(
        r#"
[services.{name}]
command = ["python3", "-c", '''{HEALTH_SERVER}''', "{mode}", "{port}", "{{dir}}/{name}.log", "{{dir}}/{name}.flag"]
ready = {{ tcp = "127.0.0.1:{port}" }}
alive = {{ http = "http://127.0.0.1:{port}/health", interval = "100ms", failures = 3 }}
"#
    )
}

#[test]
fn liveness_restarts_after_exactly_failures_in_a_row_and_tolerates_flapping() {
    let (sick, flaky) = (free_port(), free_port());
    let services =
        health_service("sick", "fail-after-flag", sick) + &health_service("flaky", "flap", flaky);
    let mut up = Up::start(&config(&services), &[]);
    let first = up.wait_event("sick", "spawned")["data"]["pid"]
        .as_i64()
        .unwrap();
    up.wait_event("sick", "ready");
    up.wait_event("flaky", "ready");
    std::fs::write(up.path("sick.flag"), "").unwrap();
    let unhealthy = up.wait_event("sick", "unhealthy");
    assert_eq!(
        message(&unhealthy),
        format!(
            "liveness probe http http://127.0.0.1:{sick}/health failed 3 times in a row (last: http://127.0.0.1:{sick}/health answered 503, expected 2xx)"
        )
    );
    let answers = std::fs::read_to_string(up.path("sick.log")).unwrap();
    // Only the first run's answers: the restarted server answers (and fails) too.
    let failures = answers
        .lines()
        .filter(|l| *l == format!("{first} 503"))
        .count();
    assert_eq!(failures, 3, "{answers}");
    // The flapping one has failed two in three for a while, never three in a row.
    eventually("flaky answered 12 probes", || {
        std::fs::read_to_string(up.path("flaky.log")).is_ok_and(|log| log.lines().count() >= 12)
    });
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert!(ended.of("flaky", "unhealthy").is_empty());
    assert_eq!(ended.of("flaky", "spawned").len(), 1);
    assert!(ended.of("sick", "spawned").len() >= 2, "sick was restarted");
}

#[test]
fn a_port_held_by_a_stray_process_is_reported_with_its_pid_and_command() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("stray.py");
    std::fs::write(
        &script,
        "import socket, sys, time\ns = socket.socket()\ns.bind(('127.0.0.1', int(sys.argv[1])))\ns.listen()\nprint('ok', flush=True)\ntime.sleep(1000)\n",
    )
    .unwrap();
    let mut stray = Command::new("python3")
        .arg(&script)
        .args([&port.to_string(), "forgotten-model-server"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(stray.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let services = format!(
        r#"
[services.server]
command = ["sleep", "1000"]
ports = ["127.0.0.1:{port}"]
"#
    );
    let mut up = Up::start(&config(&services), &[]);
    let failed = up.wait_event("server", "failed");
    let _ = stray.kill();
    let _ = stray.wait();
    let reason = message(&failed);
    let expected = format!("port 127.0.0.1:{port} is in use by pid {} (`", stray.id());
    assert!(reason.starts_with(&expected), "{reason}");
    let command = format!("stray.py {port} forgotten-model-server`), started ");
    assert!(reason.contains(&command), "{reason}");
    assert_eq!(spawns(&up, "server"), 0);
}

#[test]
fn garbage_on_the_notify_socket_is_counted_and_changes_nothing() {
    let mut up = Up::start(
        &config(
            r#"
[services.noisy]
command = ["python3", "-c", """
import os, socket, time
address = os.environ["NOTIFY_SOCKET"]
with open(os.environ["MUSTER_SERVICE"] + ".address", "w") as f:
    f.write(address)
if address.startswith("@"):
    address = "\\0" + address[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
for garbage in [os.urandom(64), b"\\xff\\xfe", b"READY", b"WATCHDOG_USEC=soon", b"A=" + b"x" * 9000]:
    s.sendto(garbage, address)
s.sendto(b"READY=1", address)
time.sleep(1000)
"""]
cwd = "{dir}"
ready = { notify = true }

[services.waiting]
command = ["sleep", "1000"]
ready = { notify = true, timeout = "1500ms" }
"#,
        ),
        &[],
    );
    up.wait_event("noisy", "ready");
    // A process outside every service (this test) claims readiness for the others.
    let address = std::fs::read_to_string(up.path("noisy.address")).unwrap();
    let stranger = std::os::unix::net::UnixDatagram::unbound().unwrap();
    let name = address.strip_prefix('@').unwrap();
    let target =
        <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
            name.as_bytes(),
        )
        .unwrap();
    stranger.send_to_addr(b"READY=1", &target).unwrap();
    let failed = up.wait_event("waiting", "failed");
    assert!(
        message(&failed).starts_with("readiness probe notify (READY=1) timed out after 1s 500ms"),
        "{failed}"
    );
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert!(
        ended.stderr.contains("ignored a malformed datagram"),
        "{}",
        ended.stderr
    );
    assert!(
        ended.stderr.contains("longer than 4096 bytes"),
        "{}",
        ended.stderr
    );
    assert!(ended.of("noisy", "unhealthy").is_empty());
}

#[test]
fn wait_for_ports_holds_readiness_until_the_ports_listen_and_extend_timeout_is_honoured() {
    let port = free_port();
    let mut services = format!(
        r#"
[services.slow-bind]
command = ["python3", "-c", "import socket,time; time.sleep(0.5); s=socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(1000)"]
ports = ["127.0.0.1:{port}"]
wait-for-ports = true
"#
    );
    // The wait-for-ports half runs everywhere; EXTEND_TIMEOUT_USEC is sent by systemd's
    // own client.
    let extend = require(
        Need::Program("systemd-notify"),
        "EXTEND_TIMEOUT_USEC as systemd's own client sends it",
    );
    if extend {
        services.push_str(
            r#"
[services.slow-start]
shell = 'systemd-notify EXTEND_TIMEOUT_USEC=5000000; sleep 1.5; systemd-notify --ready; exec sleep 1000'
ready = { notify = true, timeout = "1s" }
"#,
        );
    }
    let mut up = Up::start(&config(&services), &[]);
    let spawned = up.wait_event("slow-bind", "spawned");
    let ready = up.wait_event("slow-bind", "ready");
    assert_eq!(message(&ready), format!("ports 127.0.0.1:{port} listening"));
    assert!(time(&ready).duration_since(time(&spawned)).unwrap() >= Duration::from_millis(450));
    if extend {
        let ready = up.wait_event("slow-start", "ready");
        assert!(message(&ready).contains("READY=1"));
    }
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert!(ended.of("slow-start", "failed").is_empty());
}

#[test]
fn an_exec_probe_that_outlives_its_timeout_is_killed_every_time() {
    // Each attempt writes its pid, then hangs: the attempt's timeout must kill it.
    let services = r#"[services.hung]
command = ["sleep", "1000"]
alive = { exec = ["sh", "-c", "echo $$$$ >> {dir}/probes; exec sleep 600"], interval = "200ms", timeout = "300ms", failures = 3 }
"#;
    /// Kills the probes a failed run of this test would leave behind.
    struct Leftovers(std::path::PathBuf);
    impl Leftovers {
        fn pids(&self) -> Vec<u32> {
            std::fs::read_to_string(&self.0)
                .unwrap_or_default()
                .lines()
                .filter_map(|line| line.trim().parse().ok())
                .collect()
        }
    }
    impl Drop for Leftovers {
        fn drop(&mut self) {
            for pid in self.pids() {
                // Only a probe still: its pid may have been given to another by now.
                let probe = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|line| line == b"sleep\x00600\x00");
                if !probe {
                    continue;
                }
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    let mut up = Up::start(&config(services), &[]);
    let leftovers = Leftovers(up.path("probes"));
    up.wait_event("hung", "unhealthy");
    let probes = leftovers.pids();
    assert!(probes.len() >= 3, "{probes:?}");
    // Gone, or a zombie waiting to be reaped: none is left running.
    let running = |pid: &u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
    };
    eventually("every timed-out probe killed", || {
        !probes.iter().take(3).any(running)
    });
    let _ = up.stop();
}
