//! What muster promises about access and about hostile input, each as a test against a
//! real `muster up`:
//!
//! - the state directory is the owner's alone (0700) and the socket 0600, owned by the
//!   user who ran muster;
//! - over TCP, a token must match exactly, and the read token cannot act on anything;
//! - a service name can never name a path outside the state directory;
//! - `env` values (secrets) are in no API answer and no CLI output;
//! - `command`, exec probes and hooks never go through a shell (only `shell =` does);
//! - escape sequences a service prints are shown, not replayed, by `logs`, `events`,
//!   `status` and `up`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use hyper::Method;

use crate::helpers::up::{Up, eventually, free_port, http};
use crate::helpers::{check_source, muster, run};

const STATE: &str = "[settings]\nstate-dir = \"{dir}/state\"\n";

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_state_directory_and_the_socket_are_the_owners_alone() {
    let mut up = Up::start(
        &format!("{STATE}\n[services.a]\ncommand = [\"sleep\", \"1000\"]\n"),
        &[],
    );
    up.wait_event("a", "ready");
    let socket = up.socket();
    for dir in ["state", "state/logs", "state/run"] {
        assert_eq!(mode(&up.path(dir)), 0o700, "{dir}");
    }
    assert_eq!(mode(&socket), 0o600);
    // The test made the temp dir, so its owner is the user running muster.
    let user = std::fs::metadata(up.dir.path()).unwrap().uid();
    assert_eq!(std::fs::metadata(&socket).unwrap().uid(), user);
    let _ = up.stop();
}

#[test]
fn a_token_must_match_exactly_and_the_read_token_cannot_act() {
    let port = free_port();
    let mut up = Up::behind_tokens(port);
    let pid = up.wait_event("a", "spawned")["data"]["pid"].clone();
    up.wait_event("a", "ready");

    // Near misses of both tokens: a prefix, an extension, one byte changed, the case of
    // one letter, and the two tokens glued together.
    for wrong in [
        "c0ntrol-secre",
        "c0ntrol-secret!",
        "c0ntrol-secreT",
        "C0ntrol-secret",
        "read-secre",
        "read-secretread-secret",
        "c0ntrol-secretread-secret",
        "",
    ] {
        let (code, body) = http(port, "GET", "/v1/services", Some(wrong));
        assert_eq!(code, 401, "token {wrong:?} was accepted: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"]["kind"], "unauthorized", "{body}");
    }

    // Every route that changes anything, with the read token: refused, and nothing
    // happened.
    for path in [
        "/v1/services/a/stop",
        "/v1/services/a/restart",
        "/v1/services/a/start",
        "/v1/services/a/ensure",
        "/v1/reload",
        "/v1/shutdown",
    ] {
        let (code, body) = http(port, "POST", path, Some("read-secret"));
        assert_eq!(code, 403, "POST {path} with the read token: {body}");
    }
    let (code, body) = http(port, "GET", "/v1/services/a", Some("read-secret"));
    assert_eq!(code, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["state"], "healthy", "{body}");
    assert_eq!(view["pid"], pid, "the service was not restarted");
    assert!(
        up.events.iter().all(|e| e["kind"] != "stopping"),
        "{:#?}",
        up.events
    );

    // The control token may act (the positive control for the refusals above).
    let (code, body) = http(
        port,
        "POST",
        "/v1/services/a/restart",
        Some("c0ntrol-secret"),
    );
    assert_eq!(code, 202, "{body}");
    up.wait_event("a", "stopping");
    let _ = up.stop();
}

#[test]
fn a_service_name_cannot_name_a_path_outside_the_state_directory() {
    for name in ["../escape", "a/b", "..", ".hidden", "/etc/passwd", "a\\b"] {
        let checked = check_source(
            format!("[services.{name:?}]\ncommand = [\"sleep\", \"1\"]\n").as_bytes(),
            &[],
        );
        let said = format!("{}{}", checked.stdout, checked.stderr);
        assert_eq!(checked.code, 2, "{name:?} was accepted: {said}");
        assert!(said.contains("a service name"), "{name:?}: {said}");
    }
    let mut up = Up::start(
        &format!("{STATE}\n[services.a]\ncommand = [\"sleep\", \"1000\"]\n"),
        &[],
    );
    up.wait_event("a", "ready");
    for path in [
        "/v1/services/..%2F..%2Fmuster.toml/logs",
        "/v1/services/..%2Fstate.db",
        "/v1/services/%2E%2E/logs",
        "/v1/services/a%2F..%2F..%2Flock/logs",
    ] {
        let answer = up.call(Method::GET, path);
        assert_eq!(answer.status, 404, "{path}: {}", answer.body);
        assert_eq!(answer.body["error"]["kind"], "unknown-service", "{path}");
    }
    let logs: Vec<String> = std::fs::read_dir(up.path("state/logs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(logs, ["a.log"]);
    let _ = up.stop();
}

#[test]
fn env_values_are_in_no_answer() {
    const SECRET: &str = "hunter2-3f9a1c";
    const FILE_SECRET: &str = "pa55-from-file-77d2";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("secrets.env"),
        format!("DB_PASSWORD={FILE_SECRET}\n"),
    )
    .unwrap();
    let mut up = Up::start_in(
        dir,
        &format!(
            "{STATE}\n[services.a]\ncommand = [\"sleep\", \"1000\"]\nenv = {{ API_KEY = \"{SECRET}\" }}\nenv-file = \"secrets.env\"\n"
        ),
        &[],
    );
    up.wait_event("a", "ready");
    // The service does get them (the positive control).
    let pid = up.call(Method::GET, "/v1/services/a").body["pid"]
        .as_u64()
        .unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains(SECRET) && environ.contains(FILE_SECRET));

    let mut answers = Vec::new();
    for path in [
        "/v1/services",
        "/v1/services/a",
        "/v1/events",
        "/v1/logs?tail=1000",
        "/v1/services/a/logs?tail=1000",
        "/metrics",
        "/v1/openapi.json",
    ] {
        let answer = up.call(Method::GET, path);
        answers.push((path.to_owned(), answer.body.to_string()));
    }
    let file = up.path("muster.toml");
    let file = file.to_str().unwrap();
    for args in [
        vec!["status", "-f", file],
        vec!["status", "--json", "-f", file],
        vec!["status", "a", "-f", file],
        vec!["events", "--json", "-f", file],
        vec!["history", "a", "--json", "-f", file],
        vec!["logs", "a", "-f", file],
    ] {
        let out = run(&mut muster(&args));
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        answers.push((args.join(" "), format!("{}{}", out.stdout, out.stderr)));
    }
    for (what, text) in &answers {
        assert!(
            !text.contains(SECRET) && !text.contains(FILE_SECRET),
            "{what} shows an env value: {text}"
        );
    }
    let _ = up.stop();
}

#[test]
fn commands_probes_and_hooks_never_go_through_a_shell() {
    let mut up = Up::start(
        &format!(
            r#"{STATE}
[services.literal]
command = ["echo", "$(touch {{dir}}/by-command)", ";", "touch", "{{dir}}/by-semicolon", "|", "`touch {{dir}}/by-backtick`"]
restart = "never"

[services.probed]
command = ["sleep", "1000"]
ready = {{ exec = ["test", "-n", "$(touch {{dir}}/by-probe)"] }}

[services.shell]
shell = "touch {{dir}}/by-shell && echo ran"
restart = "never"

[[hooks]]
on = ["completed"]
run = ["echo", "$(touch {{dir}}/by-hook)", "&&", "touch", "{{dir}}/by-hook-and"]
"#
        )
        .replace("{{dir}}", "{dir}"),
        &[],
    );
    up.wait_event("literal", "completed");
    up.wait_event("shell", "completed");
    // Ready means its exec probe ran and passed.
    up.wait_event("probed", "ready");
    // The hook runs after `completed`; its output line is the sign it has run.
    let hooks_log = up.path("state/hooks.log");
    eventually("both hooks ran", || {
        std::fs::read_to_string(&hooks_log).is_ok_and(|log| log.matches("&& touch").count() == 2)
    });
    // `shell =` is the one way to a shell: the positive control.
    assert!(up.path("by-shell").exists());
    for made in [
        "by-command",
        "by-semicolon",
        "by-backtick",
        "by-probe",
        "by-hook",
        "by-hook-and",
    ] {
        assert!(!up.path(made).exists(), "{made}: a shell ran");
    }
    let log = std::fs::read_to_string(up.path("state/logs/literal.log")).unwrap();
    let dir = up.dir.path().display().to_string();
    assert!(
        log.contains(&format!(
            "stdout $(touch {dir}/by-command) ; touch {dir}/by-semicolon | `touch {dir}/by-backtick`"
        )),
        "{log}"
    );
    let _ = up.stop();
}

#[test]
fn escape_sequences_a_service_prints_are_shown_not_replayed() {
    // Set the window title, clear the screen, an 8-bit CSI; `printf` makes the bytes.
    let mut up = Up::start(
        &format!(
            "{STATE}\n[services.a]\ncommand = [\"printf\", \"\\\\033]0;pwned\\\\007\\\\033[2J\\\\302\\\\233after\\\\n\"]\nrestart = \"never\"\n\n[services.keep]\ncommand = [\"sleep\", \"1000\"]\n"
        ),
        &[],
    );
    up.wait_event("a", "completed");
    let file = up.path("muster.toml");
    let file = file.to_str().unwrap();
    // The exit can be seen before the pipe is drained: wait for the line.
    let logs = || run(&mut muster(&["logs", "a", "-f", file]));
    eventually("the line is in the log", || logs().stdout.contains("after"));
    let shown = logs();
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    assert!(
        shown
            .stdout
            .contains("\\x1b]0;pwned\\x07\\x1b[2J\\u{9b}after"),
        "{:?}",
        shown.stdout
    );
    assert!(
        !shown.stdout.contains(['\x1b', '\x07', '\u{9b}']),
        "{:?}",
        shown.stdout
    );
    // `--raw` is the way to the bytes as written (the positive control).
    let raw = run(&mut muster(&["logs", "a", "--raw", "-f", file]));
    assert!(
        raw.stdout.contains("\x1b]0;pwned\x07\x1b[2J\u{9b}after"),
        "{:?}",
        raw.stdout
    );
    // JSON escapes them itself.
    let json = run(&mut muster(&["logs", "a", "--json", "-f", file]));
    assert!(json.stdout.contains("\\u001b]0;pwned"), "{:?}", json.stdout);
    assert!(!json.stdout.contains('\x1b'), "{:?}", json.stdout);
    let _ = up.stop();
}
