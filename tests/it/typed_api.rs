//! The API read as types, as the CLI reads it: every answer of a real supervisor
//! deserializes into the type the server wrote it from (list, one service, events, log
//! lines, reload, shutdown, and an error body of every kind a request can provoke); and
//! `status` tells the bootstrap from a service restarting later, and from a shutdown.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;

use hyper::{Method, StatusCode};
use muster::api::client::{self, Answer, Patience};
use muster::api::model::{
    ErrorBody, ErrorKind, EventList, LogLine, Reloaded, ServiceList, ServiceView, ShuttingDown,
};
use muster::supervisor::{Event, EventKind, Lifecycle, Phase};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::helpers::up::{Up, WAIT, eventually, free_port, http};
use crate::helpers::{muster, run, runtime};

/// `muster ARGS -f <up's file>`.
fn at(up: &Up, args: &[&str]) -> Command {
    let mut command = muster(args);
    command.arg("-f").arg(up.path("muster.toml"));
    command
}

/// The first line `muster status` prints.
fn summary(up: &Up) -> String {
    let status = run(&mut at(up, &["status"]));
    assert_eq!(status.code, 0, "{}", status.stderr);
    status.stdout.lines().next().unwrap_or_default().to_owned()
}

/// A success answer as its document, asserting the status code.
fn document<T: serde::de::DeserializeOwned>(answer: &Answer, status: StatusCode) -> T {
    assert_eq!(answer.status, status, "{answer:?}");
    match answer.outcome::<T>() {
        Ok(Ok(document)) => document,
        Ok(Err(error)) => panic!("{}: {error:?}", answer.asked),
        Err(unreadable) => panic!("{unreadable}"),
    }
}

/// An error answer as its body, asserting the status code and the kind.
fn error(answer: &Answer, status: StatusCode, kind: ErrorKind) -> ErrorBody {
    assert_eq!(answer.status, status, "{answer:?}");
    let body = match answer.outcome::<serde_json::Value>() {
        Ok(Err(body)) => body,
        Ok(Ok(_)) => unreachable!("{} is not a success", answer.status),
        Err(unreadable) => panic!("{unreadable}"),
    };
    assert_eq!(body.error.kind, kind, "{body:?}");
    assert!(!body.error.message.is_empty(), "{body:?}");
    body
}

/// An error body read from the text of an answer's body, asserting the status code
/// and the kind.
fn error_text(code: u16, body: &str, status: StatusCode, kind: ErrorKind) -> ErrorBody {
    assert_eq!(code, status.as_u16(), "{body}");
    let body: ErrorBody = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(body.error.kind, kind, "{body:?}");
    body
}

/// Sends `raw` bytes to the socket and reads the answer until the server closes.
fn raw(socket: &Path, raw: &[u8]) -> String {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.write_all(raw).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// The process group of the first run of `service`, from its `spawned` event.
fn group_of(up: &mut Up, service: &str) -> Pid {
    let spawned = up.wait_event(service, "spawned");
    Pid::from_raw(spawned["data"]["pid"].as_i64().unwrap() as i32)
}

#[test]
fn booted_stays_true_status_says_running_not_bootstrapping_when_a_service_restarts_after_the_boot()
{
    let mut up = Up::start(
        r#"
[settings]
state-dir = "{dir}/state"

[services.steady]
command = ["sleep", "1000"]

[services.flaky]
command = ["sleep", "1000"]
restart = "always"
backoff = { initial = "1m", max = "1m" }
"#,
        &[],
    );
    let flaky = group_of(&mut up, "flaky");
    eventually("the bootstrap settles", || {
        up.call(Method::GET, "/v1/services")
            .parse::<ServiceList>()
            .is_ok_and(|list| list.booted)
    });
    assert_eq!(summary(&up), "running: 2/2 healthy");

    // It crashes after the boot, and waits a minute to be restarted.
    killpg(flaky, Signal::SIGKILL).unwrap();
    up.wait_event("flaky", "exited");
    let list: ServiceList = document(&up.call(Method::GET, "/v1/services"), StatusCode::OK);
    let state = |name: &str| list.services.iter().find(|s| s.name == name).unwrap().state;
    assert_eq!(state("flaky"), Phase::Exited, "{list:?}");
    assert!(list.booted, "{list:?}");
    assert_eq!(list.lifecycle, Lifecycle::Running);
    let line = summary(&up);
    assert_eq!(line, "running: 1/2 healthy, 1 restarting");

    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn shutting_down_status_says_so_while_services_stop() {
    let mut up = Up::start(
        r#"
[settings]
state-dir = "{dir}/state"

[services.stubborn]
shell = 'trap "" TERM; echo ready; while :; do sleep 0.05; done'
ready = { log = "^ready$", timeout = "10s" }
stop-timeout = "30s"
"#,
        &[],
    );
    let stubborn = group_of(&mut up, "stubborn");
    up.wait_event("stubborn", "ready");
    let answer = up.call(Method::POST, "/v1/shutdown");
    let shutting: ShuttingDown = document(&answer, StatusCode::ACCEPTED);
    assert!(shutting.shutting_down);
    // It ignores SIGTERM: the shutdown lasts until its stop-timeout, or the kill below.
    up.wait_event("stubborn", "stopping");
    let list: ServiceList = document(&up.call(Method::GET, "/v1/services"), StatusCode::OK);
    assert_eq!(list.lifecycle, Lifecycle::ShuttingDown, "{list:?}");
    assert_eq!(summary(&up), "shutting down: 0/1 healthy, 1 stopping");

    killpg(stubborn, Signal::SIGKILL).unwrap();
    let ended = up.wait_exit();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn every_answer_of_a_real_supervisor_reads_back_as_its_type() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("control.token"), "c0ntrol-secret\n").unwrap();
    std::fs::write(dir.path().join("read.token"), "read-secret\n").unwrap();
    let config = r#"
[settings]
state-dir = "{dir}/state"

[settings.api]
listen = "127.0.0.1:{port}"
token-file = "control.token"
read-token-file = "read.token"

[services.db]
shell = 'echo "db starting"; echo ready; exec sleep 1000'
ready = { log = "^ready$", timeout = "10s" }

[services.broken]
shell = 'echo "cannot open /data: permission denied" >&2; exit 3'
restart = "never"
depends-on = ["db"]
ready = { log = "^up$", timeout = "10s" }

[services.worker]
command = ["sleep", "1000"]
autostart = false

[services.slow]
command = ["sleep", "1000"]
autostart = false
ready = { log = "^never$", timeout = "1m" }

[services.stubborn]
shell = 'trap "" TERM; echo ready; while :; do sleep 0.05; done'
ready = { log = "^ready$", timeout = "10s" }
stop-timeout = "30s"
"#
    .replace("{port}", &port.to_string());
    let mut up = Up::start_in(dir, &config, &[]);
    let stubborn = group_of(&mut up, "stubborn");
    up.wait_event("stubborn", "ready");
    up.wait_event("broken", "failed");
    let socket = up.socket();

    // Every event, as the CLI follows them, until the supervisor ends.
    let follower = {
        let socket = socket.clone();
        std::thread::spawn(move || {
            let runtime = runtime();
            let patience = Patience::follow(WAIT);
            let mut stream =
                match runtime.block_on(client::follow(&socket, "/v1/events?follow=true", patience))
                {
                    Ok(Ok(stream)) => stream,
                    other => panic!("{other:?}"),
                };
            let reader = stream.reader();
            let mut events: Vec<Event> = Vec::new();
            // The stream ends (or is cut) when the supervisor exits.
            let _ = runtime.block_on(stream.each_line(|line| {
                if let Some(data) = line.strip_prefix("data:") {
                    events.push(reader.parse(data.trim_start()).unwrap());
                }
            }));
            events
        })
    };

    let mut kinds = BTreeSet::new();
    let mut seen = |body: ErrorBody| {
        kinds.insert(body.error.kind.as_str());
        body
    };

    let list: ServiceList = document(&up.call(Method::GET, "/v1/services"), StatusCode::OK);
    assert_eq!(list.services.len(), 5, "{list:?}");
    assert!(
        list.services.iter().all(|s| s.selected.is_some()),
        "{list:?}"
    );
    let db: ServiceView = document(&up.call(Method::GET, "/v1/services/db"), StatusCode::OK);
    assert_eq!((db.name.as_str(), db.state), ("db", Phase::Healthy));
    assert_eq!(db.selected, None);

    let events: EventList = document(&up.call(Method::GET, "/v1/events"), StatusCode::OK);
    assert!(
        events
            .events
            .iter()
            .any(|e| e.service.as_str() == "broken" && e.kind == EventKind::Failed),
        "{events:?}"
    );
    for path in ["/v1/services/db/logs?tail=5", "/v1/logs?tail=20"] {
        let mut lines: Vec<LogLine> = Vec::new();
        let failed = runtime()
            .block_on(client::each_line(&socket, path, |line| {
                lines.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")));
            }))
            .unwrap();
        assert!(failed.is_none(), "{failed:?}");
        assert!(lines.iter().any(|l| l.text == "db starting"), "{lines:?}");
    }

    let ensured: ServiceView = document(
        &up.call(Method::POST, "/v1/services/worker/ensure"),
        StatusCode::OK,
    );
    assert_eq!(ensured.state, Phase::Healthy);
    let stopped: ServiceView = document(
        &up.call(Method::POST, "/v1/services/worker/stop"),
        StatusCode::OK,
    );
    assert_eq!(stopped.state, Phase::Stopped);
    for action in ["start", "restart"] {
        let asked: ServiceView = document(
            &up.call(Method::POST, &format!("/v1/services/worker/{action}")),
            StatusCode::ACCEPTED,
        );
        assert_eq!(asked.name, "worker");
    }

    // The errors, one of each kind a request can provoke.
    let unknown = seen(error(
        &up.call(Method::GET, "/v1/services/dv"),
        StatusCode::NOT_FOUND,
        ErrorKind::UnknownService,
    ));
    assert_eq!(unknown.error.service.as_deref(), Some("dv"));
    seen(error(
        &up.call(Method::GET, "/v2/nothing"),
        StatusCode::NOT_FOUND,
        ErrorKind::NotFound,
    ));
    seen(error(
        &up.call(Method::DELETE, "/v1/services"),
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::MethodNotAllowed,
    ));
    seen(error(
        &up.call(Method::POST, "/v1/services/db/ensure?timeout=soon"),
        StatusCode::BAD_REQUEST,
        ErrorKind::BadRequest,
    ));
    let failed = seen(error(
        &up.call(Method::POST, "/v1/services/broken/ensure"),
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::NotHealthy,
    ));
    assert!(!failed.error.cause.is_empty(), "{failed:?}");
    assert!(
        failed
            .error
            .log_tail
            .iter()
            .any(|l| l.contains("permission denied")),
        "{failed:?}"
    );
    seen(error(
        &up.call(Method::POST, "/v1/services/slow/ensure?timeout=200ms"),
        StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Timeout,
    ));
    let too_large = raw(
        &socket,
        b"POST /v1/reload HTTP/1.1\r\nHost: muster\r\nContent-Length: 10000000\r\nConnection: close\r\n\r\n",
    );
    let code = too_large.split(' ').nth(1).and_then(|c| c.parse().ok());
    let body = too_large.split("\r\n\r\n").nth(1).unwrap_or_default();
    seen(error_text(
        code.unwrap_or(0),
        body,
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::TooLarge,
    ));
    // Over TCP: no token, and the read token trying to act. The read token reads.
    let (code, body) = http(port, "GET", "/v1/services", None);
    seen(error_text(
        code,
        &body,
        StatusCode::UNAUTHORIZED,
        ErrorKind::Unauthorized,
    ));
    let (code, body) = http(port, "POST", "/v1/services/db/stop", Some("read-secret"));
    seen(error_text(
        code,
        &body,
        StatusCode::FORBIDDEN,
        ErrorKind::Forbidden,
    ));
    let (code, body) = http(port, "GET", "/v1/services", Some("read-secret"));
    assert_eq!(code, 200, "{body}");
    let over_tcp: ServiceList = serde_json::from_str(&body).unwrap();
    assert_eq!(over_tcp.services.len(), 5);

    // Reload: an invalid config, one that moves the state directory, then a valid one.
    let file = up.path("muster.toml");
    let original = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        original.replace("restart = \"never\"", "restart = \"sometimes\""),
    )
    .unwrap();
    let invalid = seen(error(
        &up.call(Method::POST, "/v1/reload"),
        StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::InvalidConfig,
    ));
    assert!(
        invalid
            .error
            .report
            .is_some_and(|r| r.contains("sometimes"))
    );
    assert!(invalid.error.diagnostics.is_some_and(|d| !d.is_empty()));
    std::fs::write(&file, original.replace("/state\"", "/elsewhere\"")).unwrap();
    seen(error(
        &up.call(Method::POST, "/v1/reload"),
        StatusCode::CONFLICT,
        ErrorKind::Refused,
    ));
    std::fs::write(
        &file,
        original.replace(
            "[services.worker]\ncommand = [\"sleep\", \"1000\"]",
            "[services.worker]\ncommand = [\"sleep\", \"999\"]",
        ),
    )
    .unwrap();
    let reloaded: Reloaded = document(&up.call(Method::POST, "/v1/reload"), StatusCode::OK);
    let restarted: Vec<&str> = reloaded
        .reloaded
        .restarted
        .iter()
        .map(|n| n.as_str())
        .collect();
    assert_eq!(restarted, ["worker"], "{reloaded:?}");
    assert_eq!(reloaded.reloaded.unchanged.len(), 4, "{reloaded:?}");

    // The cluster's endpoints, on a supervisor with no `[cluster]`.
    for path in ["/v1/cluster", "/v1/cluster/services"] {
        seen(error(
            &up.call(Method::GET, path),
            StatusCode::CONFLICT,
            ErrorKind::NoCluster,
        ));
    }

    // Shutting down: `stubborn` ignores SIGTERM, so the shutdown lasts while nothing
    // may start.
    let shutting: ShuttingDown =
        document(&up.call(Method::POST, "/v1/shutdown"), StatusCode::ACCEPTED);
    assert!(shutting.shutting_down);
    seen(error(
        &up.call(Method::POST, "/v1/services/worker/start"),
        StatusCode::CONFLICT,
        ErrorKind::ShuttingDown,
    ));

    // Every kind the API answers with was read back (`busy` is the proxy's alone;
    // `etcd-unavailable` needs a cluster, and tests/it/cluster.rs reads it).
    let expected: BTreeSet<&str> = ErrorKind::ALL
        .iter()
        .filter(|&&kind| kind != ErrorKind::Busy && kind != ErrorKind::EtcdUnavailable)
        .map(|kind| kind.as_str())
        .collect();
    assert_eq!(kinds, expected);

    killpg(stubborn, Signal::SIGKILL).unwrap();
    let ended = up.wait_exit();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    let followed = follower
        .join()
        .expect("every followed event reads as an Event");
    assert!(
        followed
            .iter()
            .any(|e| e.service.as_str() == "stubborn" && e.kind == EventKind::Stopping),
        "{followed:?}"
    );
}
