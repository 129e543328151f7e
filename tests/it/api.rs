//! The API's answers, pinned: a snapshot of the JSON of every endpoint (and of the
//! `status` / `events` CLI output) against a real `muster up`, with pids, times, ports
//! and paths filtered. Plus the bad-input edges: 404s, 405, 400s, 413, and a client that
//! connects and says nothing.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use hyper::Method;
use muster::api::client::{Answer, each_line, request};

use crate::helpers::up::{Up, free_port};
use crate::helpers::{muster, run, runtime};

/// A chain (db → api → broken) so events come in one order, plus an on-demand worker.
const CONFIG: &str = r#"
[settings]
state-dir = "{dir}/state"

[services.db]
description = "a stand-in database"
shell = 'echo "db starting"; echo ready; exec sleep 1000'
ready = { log = "^ready$", timeout = "10s" }

[services.api]
command = ["sleep", "1000"]
ports = ["127.0.0.1:{port}"]
depends-on = ["db"]
ready = { exec = "true", timeout = "10s" }

[services.broken]
shell = 'echo "cannot open /data: permission denied" >&2; exit 3'
restart = "never"
depends-on = ["api"]
ready = { log = "^up$", timeout = "10s" }

[services.worker]
shell = 'echo ready; exec sleep 1000'
autostart = false
ready = { log = "^ready$", timeout = "10s" }
"#;

/// Filters for what differs from run to run.
fn settings(dir: &Path, port: Option<u16>) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex::escape(&dir.display().to_string()), "[dir]");
    if let Some(port) = port {
        settings.add_filter(&format!(r"\b{port}\b"), "[port]");
    }
    settings.add_filter(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "[time]");
    settings.add_filter(r#""(pid|main_pid)": \d+"#, r#""$1": "[pid]""#);
    settings.add_filter(r"\bpid \d+", "pid [pid]");
    // The `status` table's PID and UPTIME columns.
    settings.add_filter(
        r"(healthy|unhealthy|starting|stopping) +\d+ +\d+(ms|s|m|h)",
        "$1 [pid] [uptime]",
    );
    settings.add_filter(
        r#""uptime_seconds": [0-9.e-]+"#,
        r#""uptime_seconds": "[uptime]""#,
    );
    settings.add_filter(r#""version": "[^"]+""#, r#""version": "[version]""#);
    // What the services use: read from /proc as the request is answered.
    settings.add_filter(r" +\d+\.\d% +\d+(\.\d)? (B|KiB|MiB|GiB)", " [cpu] [memory]");
    settings.add_filter(
        r#""(cpu_percent|cpu_interval_seconds|memory_rss_bytes|memory_pss_bytes)": [0-9.e-]+"#,
        r#""$1": "[$1]""#,
    );
    settings.add_filter(
        r"(CPU )\d+\.\d% over the last \d+\.\ds; memory \d+(\.\d)? \S+ PSS, \d+(\.\d)? \S+ RSS",
        "${1}[cpu] over [interval]; memory [pss] PSS, [rss] RSS",
    );
    settings
}

/// `STATUS\nPRETTY-JSON`, the form every JSON snapshot takes.
fn shown(answer: &Answer) -> String {
    format!(
        "{}\n{}",
        answer.status,
        serde_json::to_string_pretty(&answer.body).unwrap()
    )
}

/// One request and its answer, as shown in a snapshot.
fn call(socket: &Path, method: Method, path: &str) -> String {
    shown(&runtime().block_on(request(socket, method, path)).unwrap())
}

/// A streamed answer's lines (logs, metrics).
fn lines(socket: &Path, path: &str) -> String {
    let mut out = String::new();
    let error = runtime()
        .block_on(each_line(socket, path, |line| {
            out.push_str(line);
            out.push('\n');
        }))
        .unwrap();
    assert!(error.is_none(), "{path}: {error:?}");
    out
}

/// Sends `raw` bytes and reads the answer until the server closes.
fn raw(socket: &Path, raw: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(raw).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

#[test]
fn every_endpoint_answers_as_pinned() {
    let port = free_port();
    let mut up = Up::start(&CONFIG.replace("{port}", &port.to_string()), &[]);
    up.wait_event("broken", "failed");
    let socket = up.path("state/muster.sock");
    let file = up.path("muster.toml");
    let file = file.to_str().unwrap();
    let cli = |args: &[&str]| run(muster(args).args(["-f", file]));
    // The bootstrap has settled once the list says so.
    crate::helpers::up::eventually("the bootstrap settles", || {
        runtime()
            .block_on(request(&socket, Method::GET, "/v1/services"))
            .is_ok_and(|a| a.body["booted"] == true)
    });
    let _filters = settings(up.dir.path(), Some(port)).bind_to_scope();

    insta::assert_snapshot!("list", call(&socket, Method::GET, "/v1/services"));
    insta::assert_snapshot!("detail", call(&socket, Method::GET, "/v1/services/db"));
    insta::assert_snapshot!("events", call(&socket, Method::GET, "/v1/events"));
    insta::assert_snapshot!(
        "events_filtered",
        call(
            &socket,
            Method::GET,
            "/v1/events?service=broken&kind=failed"
        )
    );
    insta::assert_snapshot!("logs", lines(&socket, "/v1/services/db/logs?tail=5"));
    insta::assert_snapshot!("logs_all", lines(&socket, "/v1/logs?tail=3"));

    let status = cli(&["status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    insta::assert_snapshot!("cli_status", status.stdout);
    let detail = cli(&["status", "broken"]);
    insta::assert_snapshot!("cli_status_one", detail.stdout);
    let events = cli(&["events"]);
    insta::assert_snapshot!("cli_events", events.stdout);
    let events = cli(&["events", "--json", "--kind", "failed"]);
    insta::assert_snapshot!("cli_events_json", events.stdout);

    // What a caller gets when a service cannot be made healthy: the chain and the log.
    insta::assert_snapshot!(
        "ensure_failed",
        call(&socket, Method::POST, "/v1/services/broken/ensure")
    );
    let worker = runtime()
        .block_on(request(
            &socket,
            Method::POST,
            "/v1/services/worker/ensure?timeout=10s",
        ))
        .unwrap();
    insta::assert_snapshot!("ensure_on_demand", shown(&worker));
    insta::assert_snapshot!(
        "stop",
        call(&socket, Method::POST, "/v1/services/worker/stop")
    );
    // start and restart answer at once, in whatever state the worker is at that instant.
    let mut run = worker.body["run_id"].as_u64().unwrap();
    for action in ["start", "restart"] {
        let answer = runtime()
            .block_on(request(
                &socket,
                Method::POST,
                &format!("/v1/services/worker/{action}"),
            ))
            .unwrap();
        assert_eq!(answer.status, hyper::StatusCode::ACCEPTED, "{answer:?}");
        assert_eq!(answer.body["name"], "worker");
        let ready = up.wait_for("the worker ready again", |e| {
            e["service"] == "worker" && e["kind"] == "ready" && e["run_id"].as_u64() > Some(run)
        });
        run = ready["run_id"].as_u64().unwrap();
    }

    insta::assert_snapshot!(
        "unknown_service",
        call(&socket, Method::GET, "/v1/services/dv")
    );
    insta::assert_snapshot!("unknown_route", call(&socket, Method::GET, "/v2/nothing"));
    insta::assert_snapshot!(
        "wrong_method",
        call(&socket, Method::DELETE, "/v1/services")
    );
    insta::assert_snapshot!(
        "bad_timeout",
        call(&socket, Method::POST, "/v1/services/db/ensure?timeout=soon")
    );
    insta::assert_snapshot!(
        "bad_query",
        call(&socket, Method::GET, "/v1/events?since=yesterday")
    );
    insta::assert_snapshot!(
        "bad_kind",
        call(&socket, Method::GET, "/v1/events?kind=exploded")
    );

    let metrics = lines(&socket, "/metrics");
    assert!(
        metrics.contains("muster_services{state=\"failed\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("muster_ensure_calls_total 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("muster_ensure_failures_total 1\n"),
        "{metrics}"
    );
    // Counters that depend on timing (probe attempts, waits) are left out of the pin.
    let stable: String = metrics
        .lines()
        .filter(|l| {
            !l.starts_with("muster_probe_failures_total{")
                && !l.starts_with("muster_ensure_wait")
                && !l.starts_with("muster_service_cpu_percent{")
                && !l.starts_with("muster_service_memory_")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    insta::assert_snapshot!("metrics", stable);

    // Reload: an invalid edit changes nothing and says why; a valid one restarts only
    // what changed.
    let config = std::fs::read_to_string(file).unwrap();
    std::fs::write(
        file,
        config.replace("restart = \"never\"", "restart = \"sometimes\""),
    )
    .unwrap();
    insta::assert_snapshot!("reload_invalid", call(&socket, Method::POST, "/v1/reload"));
    std::fs::write(
        file,
        config.replace("\"db starting\"", "\"db starting again\""),
    )
    .unwrap();
    insta::assert_snapshot!("reload", call(&socket, Method::POST, "/v1/reload"));

    insta::assert_snapshot!("shutdown", call(&socket, Method::POST, "/v1/shutdown"));
    let ended = up.wait_exit();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn the_openapi_document_covers_every_route() {
    let mut up = Up::start(
        "[settings]\nstate-dir = \"{dir}/state\"\n\n[services.db]\ncommand = [\"sleep\", \"1000\"]\n",
        &[],
    );
    up.wait_event("db", "ready");
    let socket = up.path("state/muster.sock");
    let answer = runtime()
        .block_on(request(&socket, Method::GET, "/v1/openapi.json"))
        .unwrap();
    assert_eq!(answer.status, hyper::StatusCode::OK);
    // Every documented operation is served: none answers "no route" or 405.
    let paths = answer.body["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 18, "{:?}", paths.keys());
    for (path, operations) in paths {
        for method in operations.as_object().unwrap().keys() {
            if path == "/v1/shutdown" {
                continue;
            }
            let concrete = format!("{}?timeout=1ms", path.replace("{name}", "db"));
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let served = runtime()
                .block_on(request(&socket, method.clone(), &concrete))
                .unwrap();
            assert!(
                served.body["error"]["kind"] != "not-found"
                    && served.body["error"]["kind"] != "method-not-allowed",
                "{method} {path}: {served:?}"
            );
        }
    }
    let _filters = settings(up.dir.path(), None).bind_to_scope();
    insta::assert_snapshot!("openapi", shown(&answer));
}

#[test]
fn oversized_bodies_and_silent_clients_are_refused_while_others_are_served() {
    let mut up = Up::start(
        "[settings]\nstate-dir = \"{dir}/state\"\n\n[services.db]\ncommand = [\"sleep\", \"1000\"]\n",
        &[],
    );
    up.wait_event("db", "ready");
    let socket = up.path("state/muster.sock");

    let answer = raw(
        &socket,
        b"POST /v1/reload HTTP/1.1\r\nHost: muster\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(answer.contains(r#""kind":"too-large""#), "{answer}");

    let garbage = raw(&socket, b"\x16\x03\x01 not http at all\r\n\r\n");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 400 "),
        "{garbage}"
    );

    // A hundred clients that connect and send half a request, then nothing.
    let silent: Vec<UnixStream> = (0..100)
        .map(|_| {
            let mut stream = UnixStream::connect(&socket).unwrap();
            stream
                .write_all(b"GET /v1/services HTTP/1.1\r\nHost:")
                .unwrap();
            stream
        })
        .collect();
    let served = runtime()
        .block_on(request(&socket, Method::GET, "/v1/services/db"))
        .unwrap();
    assert_eq!(served.body["state"], "healthy", "{served:?}");

    // Each is closed once the deadline for a request's head has passed.
    let began = Instant::now();
    for mut stream in silent {
        stream
            .set_read_timeout(Some(muster::api::serve::HEAD_TIMEOUT * 3))
            .unwrap();
        let mut rest = Vec::new();
        let read = stream.read_to_end(&mut rest);
        assert!(read.is_ok(), "not closed: {read:?}");
    }
    assert!(
        began.elapsed() < muster::api::serve::HEAD_TIMEOUT * 3,
        "{:?}",
        began.elapsed()
    );
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}
