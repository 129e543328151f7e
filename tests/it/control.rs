//! The control plane against a real `muster up`: single-flight `ensure` under 1,000
//! concurrent callers, one supervisor per state directory, the socket's mode, and the
//! CLI commands that talk to it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hyper::{Method, StatusCode};
use muster::api::client::{Answer, request};

use crate::helpers::up::{Up, http};
use crate::helpers::{muster, run};

const STATE: &str = "[settings]\nstate-dir = \"{dir}/state\"\n";

fn config(services: &str) -> String {
    format!("{STATE}\n{services}")
}

/// `count` concurrent requests, each on its own connection.
fn concurrently(socket: &Path, count: usize, path: &str) -> Vec<Answer> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let calls: Vec<_> = (0..count)
            .map(|_| {
                let socket = socket.to_path_buf();
                let path = path.to_owned();
                tokio::spawn(async move { request(&socket, Method::POST, &path).await })
            })
            .collect();
        let mut answers = Vec::new();
        for call in calls {
            answers.push(call.await.unwrap().expect("an answer"));
        }
        answers
    })
}

/// An on-demand service that appends a line to `starts` at each start and is ready
/// (or exits 1, with `fail`) about a second later.
fn slow_service(fail: bool) -> String {
    let then = if fail {
        "exit 1"
    } else {
        "echo ready; exec sleep 1000"
    };
    config(&format!(
        r#"
[services.model]
shell = 'echo started >> {{dir}}/starts; sleep 1; {then}'
autostart = false
restart = "never"
ready = {{ log = "^ready$", timeout = "30s" }}
"#
    ))
}

#[test]
fn a_thousand_concurrent_ensures_start_the_service_once() {
    let mut up = Up::start(&slow_service(false), &[]);
    let socket = up.socket();
    let answers = concurrently(&socket, 1000, "/v1/services/model/ensure?timeout=30s");
    let healthy = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK && a.body["state"] == "healthy")
        .count();
    assert_eq!(
        healthy,
        1000,
        "{:?}",
        answers.iter().find(|a| a.status != StatusCode::OK)
    );
    let starts = std::fs::read_to_string(up.path("starts")).unwrap();
    assert_eq!(starts.lines().count(), 1, "{starts}");
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert_eq!(ended.of("model", "spawned").len(), 1);
}

#[test]
fn concurrent_ensures_of_a_failing_service_share_one_attempt_and_one_error() {
    let mut up = Up::start(&slow_service(true), &[]);
    let socket = up.socket();
    let answers = concurrently(&socket, 200, "/v1/services/model/ensure?timeout=30s");
    let starts = std::fs::read_to_string(up.path("starts")).unwrap();
    assert_eq!(starts.lines().count(), 1, "{starts}");
    let first = &answers[0];
    assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(first.body["error"]["kind"], "not-healthy");
    assert_eq!(
        first.body["error"]["message"],
        "`model` failed: exited with status 1 while starting (restart = \"never\")"
    );
    let tail = first.body["error"]["log_tail"].to_string();
    assert!(tail.contains("exited with status 1"), "{tail}");
    for answer in &answers {
        assert_eq!(answer.status, first.status);
        assert_eq!(
            answer.body["error"]["message"],
            first.body["error"]["message"]
        );
    }
    let _ = up.stop();
}

#[test]
fn one_supervisor_per_state_directory_and_a_private_socket() {
    let mut up = Up::start(
        &config("[services.a]\ncommand = [\"sleep\", \"1000\"]\n"),
        &[],
    );
    up.wait_event("a", "ready");
    let socket = up.path("state/muster.sock");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let second = run(&mut muster(&[
        "up",
        "-f",
        up.path("muster.toml").to_str().unwrap(),
    ]));
    assert_eq!(second.code, 2, "{}", second.stderr);
    let expected = format!("another supervisor (pid {}) is running on", up.pid());
    assert!(second.stderr.contains(&expected), "{}", second.stderr);
    let ended = up.stop();
    assert_eq!(ended.code, 0);
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[test]
fn the_cli_shows_status_drives_services_and_brings_the_supervisor_down() {
    let mut up = Up::start(
        &config(
            r#"
[services.db]
command = ["sleep", "1000"]

[services.api]
command = ["sleep", "1000"]
depends-on = ["db"]

[services.report]
command = ["sleep", "1000"]
autostart = false
"#,
        ),
        &[],
    );
    up.wait_event("api", "ready");
    let file = up.path("muster.toml");
    let file = file.to_str().unwrap();
    let cli = |args: &[&str]| run(muster(args).args(["-f", file]));

    let status = cli(&["status"]);
    assert_eq!(status.code, 0, "{}", status.stderr);
    assert!(
        status.stdout.contains(": 2/3 healthy, 1 stopped\n"),
        "{}",
        status.stdout
    );
    let report = status
        .stdout
        .lines()
        .find(|l| l.starts_with("report "))
        .unwrap();
    assert!(
        report.split_whitespace().nth(1) == Some("stopped"),
        "{}",
        status.stdout
    );

    let ensure = cli(&["ensure", "report"]);
    assert_eq!(ensure.code, 0, "{}", ensure.stderr);
    assert!(
        ensure.stdout.starts_with("report is healthy (pid "),
        "{}",
        ensure.stdout
    );

    let unknown = cli(&["ensure", "reprot"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("did you mean `report`?"),
        "{}",
        unknown.stderr
    );

    let stop = cli(&["stop", "api"]);
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    assert_eq!(stop.stdout.trim(), "stop: api (now stopped)");

    let json = cli(&["status", "api", "--json"]);
    let detail: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(detail["state"], "stopped");

    let down = cli(&["down"]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    let ended = up.wait_exit();
    assert_eq!(ended.code, 0, "{}", ended.stderr);

    let after = cli(&["status"]);
    assert_eq!(after.code, 1);
    assert!(
        after.stderr.contains("no supervisor is running"),
        "{}",
        after.stderr
    );
    assert!(
        after.stderr.contains("start one with `muster up -f"),
        "{}",
        after.stderr
    );
}

#[test]
fn logs_and_events_are_served_and_followed() {
    let mut up = Up::start(
        &config(
            r#"
[services.talker]
shell = 'echo "hello from $MUSTER_SERVICE"; echo "to stderr" >&2; exec sleep 1000'
ready = { log = "^hello" }
"#,
        ),
        &[],
    );
    up.wait_event("talker", "ready");
    let file = up.path("muster.toml");
    let file = file.to_str().unwrap();
    let cli = |args: &[&str]| run(muster(args).args(["-f", file]));

    let logs = cli(&["logs", "talker", "-n", "10"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert!(
        logs.stdout.contains("hello from talker\n"),
        "{}",
        logs.stdout
    );
    assert!(logs.stdout.contains("to stderr\n"), "{}", logs.stdout);

    let events = cli(&["events", "--kind", "ready", "--json"]);
    assert_eq!(events.code, 0, "{}", events.stderr);
    let ready: Vec<serde_json::Value> = events
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0]["service"], "talker");
    assert_eq!(ready[0]["message"], "log line matched /^hello/");

    let bad = cli(&["events", "--kind", "exploded"]);
    assert_eq!(bad.code, 2);
    assert!(
        bad.stderr.contains("`exploded` is not an event kind"),
        "{}",
        bad.stderr
    );

    // Following: a restart shows up live, after everything already there.
    let mut follower = muster(&["events", "-F", "--json", "-f", file])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let first: serde_json::Value =
        serde_json::from_str(&lines.recv_timeout(crate::helpers::up::WAIT).unwrap()).unwrap();
    assert_eq!(first["id"], 1, "the kept events come first");
    assert_eq!(cli(&["restart", "talker"]).code, 0);
    let deadline = std::time::Instant::now() + crate::helpers::up::WAIT;
    assert_eq!(first["kind"], "spawned");
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = lines.recv_timeout(left).expect("a live event");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["kind"] == "spawned" && event["run_id"] != first["run_id"] {
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn over_tcp_every_request_needs_a_token_and_the_read_token_only_reads() {
    let port = crate::helpers::up::free_port();
    let mut up = Up::behind_tokens(port);
    up.wait_event("a", "ready");
    assert_eq!(http(port, "GET", "/v1/services", None).0, 401);
    assert_eq!(http(port, "GET", "/v1/services", Some("guess")).0, 401);
    let (code, body) = http(port, "GET", "/v1/services/a", Some("read-secret"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"state\":\"healthy\""), "{body}");
    assert_eq!(
        http(port, "POST", "/v1/services/a/stop", Some("read-secret")).0,
        403
    );
    let (code, metrics) = http(port, "GET", "/metrics", Some("read-secret"));
    assert_eq!(code, 200);
    assert!(
        metrics.contains("muster_services{state=\"healthy\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("muster_service_up{service=\"a\"} 1"),
        "{metrics}"
    );
    let (code, body) = http(port, "POST", "/v1/services/a/stop", Some("c0ntrol-secret"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"state\":\"stopped\""), "{body}");
    // Bad input is a 4xx with the error shape, never a 500.
    let (code, body) = http(
        port,
        "POST",
        "/v1/services/a/ensure?timeout=soon",
        Some("c0ntrol-secret"),
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"kind\":\"bad-request\""), "{body}");
    let (code, body) = http(port, "GET", "/v1/nothing-here", Some("read-secret"));
    assert_eq!(code, 404, "{body}");
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
}

#[test]
fn reload_restarts_exactly_what_changed_and_an_invalid_edit_changes_nothing() {
    let services = |api_arg: &str| {
        config(&format!(
            r#"
[services.db]
command = ["sleep", "1000"]

[services.api]
command = ["sleep", "{api_arg}"]
depends-on = ["db"]

[services.cache]
command = ["sleep", "1000"]
"#
        ))
    };
    let mut up = Up::start(&services("1000"), &[]);
    for name in ["db", "api", "cache"] {
        up.wait_event(name, "ready");
    }
    let file = up.path("muster.toml");
    let file_arg = file.to_str().unwrap().to_owned();
    let cli = |args: &[&str]| run(muster(args).args(["-f", &file_arg]));
    let pids = || -> std::collections::BTreeMap<String, serde_json::Value> {
        let status = cli(&["status", "--json"]);
        let body: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
        body["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].as_str().unwrap().to_owned(), s["pid"].clone()))
            .collect()
    };
    let before = pids();

    // An invalid edit: nothing changes, the diagnostics come back.
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("depends-on = [\"db\"]", "depends-on = [\"dbb\"]"),
    )
    .unwrap();
    let invalid = cli(&["reload"]);
    assert_eq!(invalid.code, 2, "{}", invalid.stderr);
    assert!(invalid.stderr.contains("dbb"), "{}", invalid.stderr);
    assert!(
        invalid.stderr.contains("nothing was changed"),
        "{}",
        invalid.stderr
    );
    assert_eq!(pids(), before);

    // One service edited, one added: only those move.
    std::fs::write(
        &file,
        services("999").replace("{dir}", up.dir.path().to_str().unwrap())
            + "\n[services.extra]\ncommand = [\"sleep\", \"1000\"]\n",
    )
    .unwrap();
    let reload = cli(&["reload"]);
    assert_eq!(reload.code, 0, "{}", reload.stderr);
    assert_eq!(
        reload.stdout.trim(),
        "reloaded: restarted api; added extra; 2 unchanged"
    );
    up.wait_for("api running again", |e| {
        e["service"] == "api" && e["kind"] == "spawned" && e["data"]["pid"] != before["api"]
    });
    up.wait_event("extra", "ready");
    let after = pids();
    assert_eq!(after["db"], before["db"]);
    assert_eq!(after["cache"], before["cache"]);
    assert_ne!(after["api"], before["api"]);
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert_eq!(ended.of("api", "reloaded").len(), 1);
}
