//! `depends-on = { db = { restart = true } }`: a service that follows its dependency's
//! runs. A new run of the dependency, however it comes about, restarts each follower
//! exactly once, after the dependency meets the condition again; services that do not
//! ask for it keep running; a crash loop of the dependency restarts its followers once.

use hyper::Method;
use serde_json::Value;

use crate::helpers::up::{Up, eventually};
use crate::helpers::{muster, run};

/// Runs recorded by a fixture: one line per start.
fn runs(up: &Up, name: &str) -> usize {
    std::fs::read_to_string(up.path(&format!("{name}.runs")))
        .map(|text| text.lines().count())
        .unwrap_or(0)
}

/// The id of the newest event seen so far.
fn mark(up: &Up) -> u64 {
    up.events
        .iter()
        .filter_map(|e| e["id"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Waits for an event of `kind` for `service` newer than `after`.
fn next(up: &mut Up, after: u64, service: &str, kind: &str) -> Value {
    up.wait_for(&format!("{kind} of {service} after event {after}"), |e| {
        e["id"].as_u64() > Some(after) && e["service"] == service && e["kind"] == kind
    })
}

/// SIGKILLs the process group of `service`'s current run, as a crash would end it.
fn kill_group(up: &Up, service: &str) {
    let pid = up
        .call(Method::GET, &format!("/v1/services/{service}"))
        .body["pid"]
        .as_i64()
        .unwrap();
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

const CONFIG: &str = r#"
[settings]
state-dir = "{dir}/state"

[services.db]
shell = "rm -f sick hang; echo run >> db.runs; while [ ! -f hang ]; do touch \"$MUSTER_HEARTBEAT_FILE\"; sleep 0.05; done; exec sleep 1000"
cwd = "{dir}"
watchdog = "1s"
alive = { exec = ["sh", "-c", "test ! -f sick"], interval = "100ms", failures = 1 }
env = { VERSION = "1" }
backoff = { initial = "50ms" }
restart-limit = { count = 100, within = "1m" }

[services.app]
shell = "echo run >> app.runs; exec sleep 1000"
cwd = "{dir}"
depends-on = { db = { condition = "healthy", restart = true } }

[services.other]
shell = "echo run >> other.runs; exec sleep 1000"
cwd = "{dir}"
depends-on = ["db"]
"#;

#[test]
fn a_dependency_restarted_five_ways_restarts_its_followers_once_each() {
    let mut up = Up::start(CONFIG, &[]);
    up.wait_event("app", "ready");
    up.wait_event("other", "ready");
    assert_eq!(runs(&up, "app"), 1);

    type Way = Box<dyn Fn(&Up)>;
    let ways: Vec<(&str, Way)> = vec![
        ("a crash", Box::new(|up: &Up| kill_group(up, "db"))),
        (
            "muster restart",
            Box::new(|up: &Up| {
                let path = up.path("muster.toml");
                let out = run(&mut muster(&[
                    "restart",
                    "db",
                    "-f",
                    path.to_str().unwrap(),
                ]));
                assert_eq!(out.code, 0, "{}", out.stderr);
            }),
        ),
        (
            "a reload that changes it",
            Box::new(|up: &Up| {
                let path = up.path("muster.toml");
                let text = std::fs::read_to_string(&path).unwrap();
                std::fs::write(&path, text.replace("VERSION = \"1\"", "VERSION = \"2\"")).unwrap();
                let out = run(&mut muster(&["reload", "-f", path.to_str().unwrap()]));
                assert_eq!(out.code, 0, "{}", out.stderr);
            }),
        ),
        (
            "a failed liveness probe",
            Box::new(|up: &Up| std::fs::write(up.path("sick"), "").unwrap()),
        ),
        (
            "a missed watchdog heartbeat",
            Box::new(|up: &Up| std::fs::write(up.path("hang"), "").unwrap()),
        ),
    ];
    let mut marks = Vec::new();
    for (i, (how, way)) in ways.iter().enumerate() {
        let before = mark(&up);
        marks.push(before);
        way(&up);
        let stopped = next(&mut up, before, "app", "stopped");
        assert!(
            stopped["message"]
                .as_str()
                .unwrap()
                .contains("`db` restarted"),
            "{how}: {stopped}"
        );
        next(&mut up, before, "db", "ready");
        let ready = next(&mut up, before, "app", "ready");
        assert_eq!(
            runs(&up, "app"),
            i + 2,
            "{how}: app restarted more than once"
        );
        // The follower started again only once the dependency was healthy again.
        let db_ready = up
            .events
            .iter()
            .filter(|e| e["service"] == "db" && e["kind"] == "ready")
            .filter_map(|e| e["id"].as_u64())
            .max()
            .unwrap();
        let app_spawned = next(&mut up, before, "app", "spawned");
        assert!(
            app_spawned["id"].as_u64().unwrap() > db_ready,
            "{how}: app started before db was ready again"
        );
        assert!(ready["id"].as_u64() > Some(before));
    }
    // The restart by name stopped the follower before its dependency.
    let first = |service: &str| {
        up.events
            .iter()
            .filter(|e| e["id"].as_u64() > Some(marks[1]))
            .find(|e| e["service"] == service && e["kind"] == "stopping")
            .and_then(|e| e["id"].as_u64())
            .unwrap()
    };
    assert!(first("app") < first("db"), "db stopped before its follower");
    assert_eq!(
        runs(&up, "other"),
        1,
        "a service without restart = true was restarted"
    );
    let ended = up.stop();
    assert_eq!(ended.of("app", "spawned").len(), 6);
}

#[test]
fn a_crash_loop_of_the_dependency_restarts_its_followers_once() {
    let mut up = Up::start(
        r#"
[settings]
state-dir = "{dir}/state"

[services.db]
shell = "echo run >> db.runs; if [ -f crash ]; then exit 1; fi; echo up; exec sleep 1000"
cwd = "{dir}"
ready = { log = "^up$" }
backoff = { initial = "50ms", max = "50ms" }
restart-limit = { count = 100, within = "1m" }

[services.app]
shell = "echo run >> app.runs; exec sleep 1000"
cwd = "{dir}"
depends-on = { db = { restart = true } }
"#,
        &[],
    );
    up.wait_event("app", "ready");
    std::fs::write(up.path("crash"), "").unwrap();
    kill_group(&up, "db");
    eventually("db crashed five times", || runs(&up, "db") >= 6);
    let app = up.call(Method::GET, "/v1/services/app").body;
    assert_eq!(app["state"], "pending", "{app}");
    std::fs::remove_file(up.path("crash")).unwrap();
    let before = mark(&up);
    next(&mut up, before, "app", "ready");
    assert_eq!(runs(&up, "app"), 2, "one restart for the whole crash loop");
    let _ = up.stop();
}
