//! What `muster check` must not let through, and what it must say plainly: one test per
//! class of mistake, each with the values that used to pass or be misreported.
//!
//! - ports out of range in URLs, probe and proxy addresses;
//! - a state directory that cannot be created;
//! - a `stop-timeout` the shutdown would cut short;
//! - an empty program name; a duplicate key; keys brought from other tools;
//! - values out of range or that no program can be given (huge durations, NUL bytes,
//!   unnamed variables, an endless env file);
//! - "healthy" on a service with nothing to prove it (a note, not an error);
//! - an edited env file is a change of the service, so `reload` restarts it;
//! - and, for the suite itself, a test that needs an optional program skips aloud
//!   without it, or fails when `MUSTER_REQUIRE_ALL=1` asks for everything.

use std::path::Path;

use crate::helpers::evidence::env_value;
use crate::helpers::up::{Up, eventually};
use crate::helpers::{Need, Run, check_source, muster, require, run};

/// `muster check -f muster.toml` run beside the file, so messages name it the same way
/// on every machine (snapshots).
fn check_here(source: &str, beside: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    for (name, contents) in beside {
        std::fs::write(dir.path().join(name), contents).unwrap();
    }
    std::fs::write(dir.path().join("muster.toml"), source).unwrap();
    run(muster(&["check", "-f", "muster.toml"]).current_dir(dir.path()))
}

/// Asserts that `out` failed as a config error and said each of `expected`.
fn refused(out: &Run, expected: &[&str]) {
    assert_eq!(out.code, 2, "{}", out.stderr);
    for text in expected {
        assert!(
            out.stderr.contains(text),
            "missing {text:?} in:\n{}",
            out.stderr
        );
    }
}

#[test]
fn check_refuses_ports_out_of_range_in_urls_probes_proxies_and_listeners() {
    let out = check_source(
        br#"
[settings.api]
listen = "127.0.0.1:65536"
token-file = "token"

[services.zero]
command = ["true"]
ready = { http = "http://127.0.0.1:0/" }

[services.high]
command = ["true"]
ready = { http = "http://127.0.0.1:70000/health" }
alive = { tcp = "127.0.0.1:70000" }

[services.tcp0]
command = ["true"]
ready = { tcp = "localhost:0" }

[services.proxied]
command = ["true"]
ports = [0, "127.0.0.1:99999"]
proxy = { listen = "127.0.0.1:70000", upstream = "127.0.0.1:0" }
"#,
        &[("token", "secret")],
    );
    refused(
        &out,
        &[
            "`settings.api.listen`: `127.0.0.1:65536` has port 65536, which is out of range",
            "`services.zero.ready.http`: `http://127.0.0.1:0/` has port 0",
            "`services.high.ready.http`: `http://127.0.0.1:70000/health` has port 70000, which is out of range",
            "`services.high.alive.tcp`: `127.0.0.1:70000` has port 70000, which is out of range",
            "`services.tcp0.ready.tcp`: `localhost:0` has port 0",
            "`services.proxied.ports`: port 0 is out of range",
            "`services.proxied.ports`: `127.0.0.1:99999` has port 99999, which is out of range",
            "`services.proxied.proxy.listen`: `127.0.0.1:70000` has port 70000, which is out of range",
            "`services.proxied.proxy.upstream`: `127.0.0.1:0` has port 0",
            "a port is a number from 1 to 65535",
        ],
    );
    assert!(!out.stderr.contains("is not an address"), "{}", out.stderr);
    assert!(
        !out.stderr.contains("is not a host and port"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(": 9 errors"), "{}", out.stderr);
}

#[test]
fn check_refuses_a_state_dir_that_cannot_be_created() {
    let service = "[services.a]\ncommand = [\"true\"]\n";
    let under_a_file = format!("[settings]\nstate-dir = \"blocker/state\"\n{service}");
    let out = check_source(under_a_file.as_bytes(), &[("blocker", "not a directory")]);
    refused(
        &out,
        &[
            "`settings.state-dir`: `blocker/state` cannot be created: `blocker` is a file, not a directory",
            "a file is in the way",
        ],
    );

    for kernel in ["/proc/muster-state", "/sys/muster-state"] {
        let source = format!("[settings]\nstate-dir = \"{kernel}\"\n{service}");
        let out = check_source(source.as_bytes(), &[]);
        refused(
            &out,
            &[
                &format!("`settings.state-dir`: `{kernel}` cannot be created"),
                "which only the kernel writes",
                "keep state on an ordinary writable filesystem",
            ],
        );
    }

    // The default `.muster` is checked too, though no line names it.
    let out = check_source(service.as_bytes(), &[(".muster", "a file")]);
    refused(
        &out,
        &["the state directory `.muster` (the default, beside the config file) is not a directory"],
    );
    // And one that can be created is fine.
    let out = check_source(
        format!("[settings]\nstate-dir = \"new/deeper/state\"\n{service}").as_bytes(),
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn check_warns_when_a_stop_timeout_outlasts_the_shutdown() {
    let out = check_here(
        r#"
[settings]
shutdown-timeout = "20s"

[services.db]
command = ["true"]
stop-timeout = "1m"

[services.quick]
command = ["true"]
stop-timeout = "20s"
"#,
        &[],
    );
    assert_eq!(out.code, 0, "a warning, not an error: {}", out.stderr);
    assert_eq!(out.stdout, "2 services, 1 start wave, 1 warning\n");
    insta::assert_snapshot!("stop_outlasts_shutdown", out.stderr);

    // Against the default shutdown-timeout (30s), which no line shows.
    let out = check_source(
        b"[services.db]\ncommand = [\"true\"]\nstop-timeout = \"45s\"\n",
        &[],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("`services.db.stop-timeout` (45s) is longer than `settings.shutdown-timeout` (default 30s)"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_says_the_program_name_is_empty() {
    let out = check_source(
        br#"
[services.array]
command = ["", "x"]

[services.line]
command = "'' x"

[services.probe]
command = ["true"]
ready = { exec = ["", "-c", "true"] }

[[hooks]]
on = ["failed"]
run = ["", "x"]
"#,
        &[],
    );
    refused(
        &out,
        &[
            "`services.array.command`: the program name is empty",
            "`services.line.command`: the program name is empty",
            "`services.probe.ready.exec`: the program name is empty",
            "`hooks[0].run`: the program name is empty",
            "the first word is the program to run",
        ],
    );
    assert!(!out.stderr.contains("is a directory"), "{}", out.stderr);
}

#[test]
fn check_names_a_duplicate_key_and_both_places() {
    let out = check_here(
        r#"[services.api]
command = ["python3", "-m", "api"]
env = { LEVEL = "debug" }
command = ["python3", "-m", "api", "--fast"]
"#,
        &[],
    );
    assert_eq!(out.code, 2);
    assert!(!out.stderr.contains("unclosed"), "{}", out.stderr);
    insta::assert_snapshot!("duplicate_key", out.stderr);

    let out = check_here(
        "[services.a]\ncommand = \"true\"\n\n[services.b]\ncommand = \"true\"\n\n[services.a]\nshell = \"true\"\n",
        &[],
    );
    assert_eq!(out.code, 2);
    insta::assert_snapshot!("duplicate_table", out.stderr);
}

#[test]
fn check_suggests_the_muster_key_for_keys_from_other_tools() {
    let out = check_here(
        r#"version = "3.8"

[services.web]
cmd = ["python3", "-m", "http.server"]
environment = { DEBUG = "1" }
working_dir = "."
depends_on = ["db"]
restart_policy = "always"
stop_grace_period = "10s"
expose = [8000]
uid = "www-data"
healthcheck = { test = ["curl", "-f", "http://127.0.0.1:8000/"], retries = 3 }

[services.db]
entrypoint = "postgres"
env_file = ".env"

[[hooks]]
on = ["failed"]
command = ["notify-send", "muster"]
"#,
        &[],
    );
    assert_eq!(out.code, 2);
    for (foreign, advice) in [
        ("cmd", "did you mean `command`?"),
        ("environment", "did you mean `env`?"),
        ("working_dir", "did you mean `cwd`?"),
        ("depends_on", "did you mean `depends-on`?"),
        ("restart_policy", "did you mean `restart`?"),
        ("stop_grace_period", "did you mean `stop-timeout`?"),
        ("expose", "did you mean `ports`?"),
        ("uid", "did you mean `user`?"),
        ("healthcheck", "did you mean `ready`?"),
        ("entrypoint", "did you mean `command`?"),
        ("env_file", "did you mean `env-file`?"),
        ("command", "did you mean `run`?"),
        ("version", "muster has no `version`: remove it"),
    ] {
        assert!(
            out.stderr.contains(&format!("unknown key `{foreign}`")),
            "{foreign}: {}",
            out.stderr
        );
        assert!(
            out.stderr.contains(advice),
            "{foreign}: {advice}\n{}",
            out.stderr
        );
    }
    // The command was misnamed, not missing: no second error saying so.
    assert!(!out.stderr.contains("has no `command`"), "{}", out.stderr);
    insta::assert_snapshot!("foreign_keys", out.stderr);
}

#[test]
fn check_refuses_values_out_of_range_or_that_no_program_can_be_given() {
    let out = check_source(
        br#"
[settings]
shutdown-timeout = "18000000000000000000s"

[services.a]
command = ["echo", "a\u0000b"]
env = { "" = "x", "A=B" = "y", GOOD = "x\u0000y" }
env-file = "/dev/zero"
stop-timeout = "1000000y"
ready = { tcp = "127.0.0.1:5432", interval = "0s" }
alive = { tcp = "127.0.0.1:5432", failures = 0 }
restart-limit = { count = 0 }
backoff = { initial = "10s", max = "1s" }
watchdog = "0ms"

[services.b]
shell = "echo \u0000"
ports = [70000]
on-unhealthy = "report"

[settings.api]
listen = "127.0.0.1:7070"
token-file = "control.token"
read-token-file = "read.token"

[[hooks]]
on = ["failed"]
services = []
run = ["true"]
"#,
        &[
            ("control.token", "same-secret\n"),
            ("read.token", " same-secret "),
        ],
    );
    refused(
        &out,
        &[
            "`settings.shutdown-timeout`: `18000000000000000000s` is longer than 100 years",
            "`services.a.stop-timeout`: `1000000y` is longer than 100 years",
            "`services.a.command` holds a NUL byte",
            "`services.a.env` has a variable with an empty name",
            "`services.a.env`: `A=B` is not a variable name: it holds `=`",
            "`services.a.env.GOOD` holds a NUL byte",
            "`services.a.env-file`: `/dev/zero` is larger than 1024 KiB",
            "`services.a.ready.interval` must be longer than zero",
            "`services.a.alive.failures` is 0, it must be from 1 to 1000",
            "`services.a.restart-limit.count` is 0",
            "`services.a.backoff.max` is shorter than `services.a.backoff.initial`",
            "`services.a.watchdog` must be longer than zero",
            "`services.b.shell` holds a NUL byte",
            "`services.b.ports`: port 70000 is out of range",
            "warning[no-effect]: `services.b.on-unhealthy` has no effect: nothing watches `b` once it runs",
            "`settings.api.read-token-file` holds the same token as `token-file`",
            "`hooks[0].services` is empty: the hook would never run",
        ],
    );
    assert!(!out.stderr.contains("same-secret"), "{}", out.stderr);

    let out = check_source(
        br#"
[settings.api]
listen = "127.0.0.1:7070"
token-file = "api.token"

[services.a]
command = ["true"]
"#,
        &[("api.token", " \n")],
    );
    refused(
        &out,
        &[
            "`settings.api.token-file`: `api.token` is empty",
            "head -c 32 /dev/urandom",
        ],
    );
}

#[test]
fn check_notes_a_healthy_wait_on_a_service_without_a_ready_probe() {
    let source = r#"
[services.db]
command = ["sleep", "1000"]
ports = ["127.0.0.1:5433"]

[services.api]
command = ["sleep", "1000"]
depends-on = ["db"]

[services.worker]
command = ["sleep", "1000"]
depends-on = { db = "healthy", api = "started" }
"#;
    let out = check_here(source, &[]);
    assert_eq!(out.code, 0, "a note is not an error: {}", out.stderr);
    assert_eq!(
        out.stdout,
        "3 services, 3 start waves, no problems, 1 note\n"
    );
    insta::assert_snapshot!("healthy_without_probe", out.stderr);

    // A probe, wait-for-ports or an explicit "started" each settle it.
    for settled in [
        source.replace(
            "ports = [",
            "ready = { tcp = \"127.0.0.1:5433\" }\nports = [",
        ),
        source.replace("ports = [", "wait-for-ports = true\nports = ["),
        source
            .replace("depends-on = [\"db\"]", "depends-on = { db = \"started\" }")
            .replace("db = \"healthy\"", "db = \"started\""),
    ] {
        let out = check_here(&settled, &[]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!(
            out.stdout, "3 services, 3 start waves, no problems\n",
            "{settled}"
        );
        assert!(out.stderr.is_empty(), "{}", out.stderr);
    }

    // In JSON it is a diagnostic of severity "note", and the file is ok.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("muster.toml"), source).unwrap();
    let out = run(muster(&["check", "--json", "-f", "muster.toml"]).current_dir(dir.path()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["diagnostics"][0]["severity"], "note");
    assert_eq!(report["diagnostics"][0]["code"], "healthy-without-probe");
}

/// Loads `dir/muster.toml` with the library, as `reload` does.
fn load(dir: &Path) -> muster::config::Spec {
    match muster::config::load(&dir.join("muster.toml")) {
        Ok(loaded) => loaded.spec,
        Err(error) => panic!("{}", error.into_report().render_plain()),
    }
}

#[test]
fn an_edited_env_file_is_a_change_of_the_service() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("muster.toml"),
        "[services.api]\ncommand = [\"true\"]\nenv-file = \"api.env\"\n\n[services.other]\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let env_file = dir.path().join("api.env");
    std::fs::write(&env_file, "# credentials\nTOKEN=first-secret\n").unwrap();
    let before = load(dir.path());

    // A comment or a blank line is no change; a value is.
    std::fs::write(&env_file, "# credentials, rotated\n\nTOKEN=first-secret\n").unwrap();
    assert_eq!(load(dir.path()), before);
    std::fs::write(&env_file, "TOKEN=second-secret\n").unwrap();
    let after = load(dir.path());
    assert_ne!(after.services["api"], before.services["api"]);
    assert_eq!(after.services["other"], before.services["other"]);

    // What the file said is held, but never shown.
    let shown = format!("{:?}", after.services["api"]);
    assert!(shown.contains("TOKEN"), "{shown}");
    assert!(!shown.contains("second-secret"), "{shown}");
}

#[test]
fn reload_restarts_the_service_whose_env_file_changed() {
    let config = r#"
[settings]
state-dir = "{dir}/state"

[services.api]
command = ["sleep", "1000"]
env-file = "api.env"

[services.other]
command = ["sleep", "1000"]
"#;
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("api.env");
    std::fs::write(&env_file, "TOKEN=first-secret\n").unwrap();
    let mut up = Up::start_in(dir, config, &[]);
    let api = up.wait_event("api", "spawned")["data"]["pid"]
        .as_u64()
        .unwrap() as u32;
    let other = up.wait_event("other", "spawned")["data"]["pid"]
        .as_u64()
        .unwrap() as u32;
    up.wait_event("api", "ready");
    up.wait_event("other", "ready");
    assert_eq!(env_value(api, "TOKEN").as_deref(), Some("first-secret"));

    std::fs::write(&env_file, "TOKEN=second-secret\n").unwrap();
    let file = up.path("muster.toml");
    let reload = run(&mut muster(&["reload", "-f", file.to_str().unwrap()]));
    assert_eq!(reload.code, 0, "{}", reload.stderr);
    assert_eq!(reload.stdout.trim(), "reloaded: restarted api; 1 unchanged");
    assert!(!reload.stdout.contains("second-secret") && !reload.stderr.contains("secret"));
    let respawned = up.wait_for("api spawned again", |e| {
        e["service"] == "api" && e["kind"] == "spawned" && e["data"]["pid"] != api
    });
    let new_pid = respawned["data"]["pid"].as_u64().unwrap() as u32;
    eventually("the new api sees the new value", || {
        env_value(new_pid, "TOKEN").as_deref() == Some("second-secret")
    });
    // The other service was not touched.
    assert_eq!(env_value(other, "MUSTER_SERVICE").as_deref(), Some("other"));
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert_eq!(ended.of("other", "spawned").len(), 1);
    assert_eq!(ended.of("api", "spawned").len(), 2);
    assert!(!ended.stderr.contains("second-secret"), "{}", ended.stderr);
}

/// Not a test of its own: run by the one below, in a child test process, to see what a
/// test needing something missing does. Without that process's marker it does nothing.
#[test]
fn needs_a_missing_program() {
    if std::env::var_os("MUSTER_TEST_NEEDS_MISSING").is_none() {
        return;
    }
    let program = require(
        Need::Program("muster-test-no-such-program"),
        "the part that runs a program nobody has",
    );
    let module = require(
        Need::PythonModule("muster_test_no_such_module"),
        "the part that imports a module nobody has",
    );
    assert!(!program && !module);
}

#[test]
fn a_test_needing_a_missing_program_says_it_skipped_and_passes_unless_all_are_required() {
    let test = |require_all: Option<&str>| {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "check_hardening::needs_a_missing_program"])
            .env("MUSTER_TEST_NEEDS_MISSING", "1")
            .env_remove("MUSTER_REQUIRE_ALL");
        if let Some(value) = require_all {
            command.env("MUSTER_REQUIRE_ALL", value);
        }
        run(&mut command)
    };

    // Skipped aloud, without --nocapture, and passing.
    let out = test(None);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("1 passed"), "{}", out.stdout);
    for skipped in [
        "SKIPPED in check_hardening::needs_a_missing_program: the part that runs a program nobody has, because the program `muster-test-no-such-program` is not installed",
        "SKIPPED in check_hardening::needs_a_missing_program: the part that imports a module nobody has, because the python module `muster_test_no_such_module` is not installed",
        "python3 -m pip install muster_test_no_such_module",
        "set MUSTER_REQUIRE_ALL=1 to make this a failure",
    ] {
        assert!(out.stderr.contains(skipped), "{skipped}\n{}", out.stderr);
    }

    // Required: the same test fails, naming what is missing.
    let out = test(Some("1"));
    assert_ne!(out.code, 0, "{}", out.stdout);
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("1 failed"), "{said}");
    assert!(
        said.contains("the program `muster-test-no-such-program` is not installed, and MUSTER_REQUIRE_ALL=1 requires it"),
        "{said}"
    );
    // Any other value is not a request.
    assert_eq!(test(Some("0")).code, 0);
}
