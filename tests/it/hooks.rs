//! `[[hooks]]` with a real `muster up`: the event in the hook's environment, a failing
//! hook and a hanging one (killed at its timeout) recorded as `hook-failed`, and
//! supervision going on while a hook hangs.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::helpers::up::{Up, alive, eventually};

const STATE: &str = "[settings]\nstate-dir = \"{dir}/state\"\nshutdown-timeout = \"20s\"\n";

/// `KEY=VALUE` lines into a map.
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn a_hook_gets_the_event_in_its_environment() {
    let mut up = Up::start(
        &format!(
            r#"{STATE}
[services.svc]
command = ["sleep", "600"]

[services.other]
command = ["sleep", "600"]

[[hooks]]
on = ["ready"]
services = ["svc"]
run = ["sh", "-c", "env | grep '^MUSTER_EVENT_' > {{dir}}/ready.$MUSTER_EVENT_ID.env"]
"#
        ),
        &[],
    );
    let ready = up.wait_event("svc", "ready");
    up.wait_event("other", "ready");
    let id = ready["id"].as_u64().unwrap();
    let path = up.path(&format!("ready.{id}.env"));
    eventually("the hook wrote its environment", || {
        std::fs::read_to_string(&path).is_ok_and(|t| t.contains("MUSTER_EVENT_JSON"))
    });
    let env = env_file(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(env["MUSTER_EVENT_KIND"], "ready");
    assert_eq!(env["MUSTER_EVENT_SERVICE"], "svc");
    assert_eq!(env["MUSTER_EVENT_ID"], id.to_string());
    assert_eq!(env["MUSTER_EVENT_RUN_ID"], ready["run_id"].to_string());
    let json: Value = serde_json::from_str(&env["MUSTER_EVENT_JSON"]).unwrap();
    assert_eq!(json, ready, "the hook sees the event as the API shows it");
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    // Only `svc`'s `ready` matched: no file for `other` or for any other kind.
    let files = std::fs::read_dir(up.dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".env"))
        })
        .count();
    assert_eq!(files, 1);
    assert!(ended.events.iter().all(|e| e["kind"] != "hook-failed"));
}

#[test]
fn failing_and_hanging_hooks_are_recorded_and_never_hold_up_supervision() {
    let mut up = Up::start(
        &format!(
            r#"{STATE}
[services.first]
command = ["sleep", "600"]

[services.second]
shell = 'sleep 0.5; exec sleep 600'
depends-on = ["first"]
ready = {{ exec = ["true"], interval = "50ms" }}

[[hooks]]
on = ["spawned"]
services = ["first"]
run = ["sh", "-c", "echo $$$$ > {{dir}}/hang.pid; exec sleep 600"]
timeout = "2s"

[[hooks]]
on = ["ready"]
services = ["first"]
run = ["sh", "-c", "echo failing on purpose >&2; exit 7"]
"#
        ),
        &[],
    );
    // While the first hook hangs, the graph comes up: `second` starts and is ready.
    let second_ready = up.wait_event("second", "ready");
    let failures: Vec<Value> = (0..2)
        .map(|n| {
            up.wait_for(&format!("hook failure {n}"), |e| {
                e["kind"] == "hook-failed" && e["data"]["hook"] == n && e["service"] == "first"
            })
        })
        .collect();
    let hang_pid: i32 = std::fs::read_to_string(up.path("hang.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let exit = &failures[1];
    assert!(
        exit["message"]
            .as_str()
            .unwrap()
            .ends_with("exited with status 7"),
        "{exit}"
    );
    assert_eq!(exit["data"]["event_kind"], "ready");
    let hang = &failures[0];
    assert!(
        hang["message"]
            .as_str()
            .unwrap()
            .ends_with("still running after 2s; killed"),
        "{hang}"
    );
    assert_eq!(hang["data"]["event_kind"], "spawned");
    // Supervision did not wait for the hook: `second` was ready before it was killed.
    assert!(second_ready["id"].as_u64() < hang["id"].as_u64());
    eventually("the hanging hook is gone", || !alive(hang_pid));
    let log = std::fs::read_to_string(up.path("state/hooks.log")).unwrap();
    assert!(log.contains("failing on purpose"), "{log}");

    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert_eq!(
        ended
            .events
            .iter()
            .filter(|e| e["kind"] == "hook-failed")
            .count(),
        2
    );
}

#[test]
fn a_hook_still_running_at_shutdown_does_not_outlive_muster() {
    let mut up = Up::start(
        &format!(
            r#"{STATE}
[services.svc]
command = ["sleep", "600"]

[[hooks]]
on = ["ready"]
run = ["sh", "-c", "echo $$$$ > {{dir}}/hook.pid; exec sleep 600"]
timeout = "10m"
"#
        ),
        &[],
    );
    up.wait_event("svc", "ready");
    let pid_file = up.path("hook.pid");
    eventually("the hook is running", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|t| t.ends_with('\n'))
    });
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    eventually("the hook is gone with muster", || !alive(pid));
}
