//! Every path that starts a service honours its restart policy, and the background
//! supervisor's log tells the truth: through the real binary.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::helpers::muster_run;
use crate::helpers::up::{Up, free_port};

/// Connects to `port` and waits (bounded) until the proxy closes the connection.
fn closed_by_the_proxy(port: u16) -> Duration {
    let began = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("the proxy listens");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
    began.elapsed()
}

#[test]
fn every_start_path_honours_the_restart_policy() {
    let (listen, upstream) = (free_port(), free_port());
    let mut up = Up::start(
        &format!(
            r#"
[settings]
state-dir = "{{dir}}/state"

[settings.history]
max-events = 50

[services.quiet]
command = ["sh", "-c", "echo the reason quiet failed; exit 7"]
restart = "never"

[services.dies]
command = ["false"]
autostart = false
restart = "never"
backoff = {{ initial = "200ms", max = "200ms" }}
restart-limit = {{ count = 2, within = "1m" }}
proxy = {{ listen = "127.0.0.1:{listen}", upstream = "127.0.0.1:{upstream}" }}
"#
        ),
        &[],
    );
    up.wait_event("quiet", "failed");
    // One connection to a plain proxy of a service that exits at once: one start, and
    // the connection ends as soon as that start has failed (not at its deadline).
    let took = closed_by_the_proxy(listen);
    assert!(took < Duration::from_secs(10), "held {took:?}");
    up.wait_event("dies", "failed");
    let spawned = |up: &Up| {
        up.events
            .iter()
            .filter(|e| e["service"] == "dies" && e["kind"] == "spawned")
            .count()
    };
    assert_eq!(spawned(&up), 1, "{:#?}", up.events);

    // Many more connections: each is a demand, bound by the backoff and the restart
    // limit (2 within a minute), so at most two more spawns however many come.
    for _ in 0..30 {
        closed_by_the_proxy(listen);
    }
    let file = up.path("muster.toml");
    let ensure = muster_run(&[
        "ensure",
        "dies",
        "-f",
        file.to_str().unwrap(),
        "--timeout",
        "5s",
    ]);
    assert_eq!(ensure.code, 1, "{}{}", ensure.stdout, ensure.stderr);
    let ended = up.stop();
    let spawns = ended.of("dies", "spawned").len();
    assert!(
        (2..=3).contains(&spawns),
        "{spawns} spawns: {:#?}",
        ended.events
    );
    // Every spawn after the first waited its backoff, announced by `restarting`.
    assert_eq!(ended.of("dies", "restarting").len(), spawns - 1);

    // The crash loop's events did not push the other service's out of the history
    // (max-events 50 is far below what was written).
    let state = up.path("state");
    let events = muster_run(&[
        "events",
        "--json",
        "--service",
        "quiet",
        "-f",
        file.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(events.code, 0, "{}", events.stderr);
    assert!(
        events.stdout.contains("\"kind\":\"failed\""),
        "the failure of `quiet` was pruned: {}",
        events.stdout
    );
}

#[test]
fn smaller_truths_the_background_log_has_times_and_says_how_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("muster.toml");
    std::fs::write(&file, "[services.a]\ncommand = [\"sleep\", \"1000\"]\n").unwrap();
    let path = file.to_str().unwrap();
    let up = muster_run(&["up", "-d", "-f", path]);
    assert_eq!(up.code, 0, "{}{}", up.stdout, up.stderr);
    let down = muster_run(&["down", "-f", path]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    let log = std::fs::read_to_string(dir.path().join(".muster/muster.log")).unwrap();
    assert!(!log.contains("Ctrl-C"), "{log}");
    assert!(log.contains("`muster down -f "), "{log}");
    // Every line of muster's own begins with the wall-clock time, like 2026-12-01T...Z.
    for line in log
        .lines()
        .filter(|l| l.contains(" a ") || l.contains("muster:"))
    {
        let stamp = line.split_whitespace().next().unwrap_or_default();
        assert!(
            humantime::parse_rfc3339(stamp).is_ok(),
            "no time on: {line}\n{log}"
        );
    }
}
