//! `${VAR}` in values and `include`: through `muster check`, `check --show` and a reload
//! of a running supervisor.

use std::fs;
use std::path::Path;

use crate::helpers::up::Up;
use crate::helpers::{muster, muster_run, run};

fn write(dir: &Path, name: &str, text: &str) {
    fs::write(dir.join(name), text).unwrap();
}

fn check_json(dir: &Path, env: &[(&str, &str)]) -> serde_json::Value {
    let file = dir.join("muster.toml");
    let mut command = muster(&["check", "--json", "-f", file.to_str().unwrap()]);
    command.env_remove("MUSTER_TEST_UNSET");
    for (key, value) in env {
        command.env(key, value);
    }
    let out = run(&mut command);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn show(dir: &Path, env: &[(&str, &str)]) -> crate::helpers::Run {
    let file = dir.join("muster.toml");
    let mut command = muster(&["check", "--show", "-f", file.to_str().unwrap()]);
    for (key, value) in env {
        command.env(key, value);
    }
    run(&mut command)
}

#[test]
fn interpolation_an_unset_variable_is_an_error_at_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "muster.toml",
        "[services.api]\ndescription = \"api\"\ncommand = [\"sleep\", \"${MUSTER_TEST_UNSET}\"]\n\n[services.db]\ncommand = \"sleep 1\"\nenv = { A = \"x\\ty ${MUSTER_TEST_NEEDED:?give the db a password}\" }\n",
    );
    let report = check_json(dir.path(), &[]);
    assert_eq!(report["ok"], false);
    let diagnostics = report["diagnostics"].as_array().unwrap();
    assert_eq!(diagnostics.len(), 2, "{diagnostics:#?}");
    let first = &diagnostics[0];
    assert_eq!(first["code"], "interpolation");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(3), Some(22))
    );
    assert_eq!(first["primary"]["end"]["column"], 42);
    assert!(
        first["message"]
            .as_str()
            .unwrap()
            .contains("`MUSTER_TEST_UNSET` is not set")
    );
    // Past an escape (`\t`) the place is still the expression's own.
    let second = &diagnostics[1];
    assert_eq!(
        (second["line"].as_u64(), second["column"].as_u64()),
        (Some(7), Some(19))
    );
    assert!(
        second["message"]
            .as_str()
            .unwrap()
            .ends_with("`MUSTER_TEST_NEEDED` is not set: give the db a password"),
        "{second}"
    );
    // The service whose value could not be expanded is not also said to lack a command.
    assert!(diagnostics.iter().all(|d| d["code"] == "interpolation"));
}

#[test]
fn interpolation_reads_the_environment_then_dotenv_and_expands_once() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), ".env", "FROM_FILE=file\nBOTH=file\n");
    write(
        dir.path(),
        "muster.toml",
        "[services.a]\ncommand = [\"echo\", \"${FROM_FILE}\", \"${BOTH}\", \"${MUSTER_TEST_UNSET:-fallback}\", \"$${LITERAL}\", \"a$$b\", \"$HOME\", \"${TRICK}\"]\n",
    );
    let out = show(
        dir.path(),
        &[("BOTH", "environment"), ("TRICK", "${FROM_FILE}")],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains(
            r#"command = ["echo", "file", "environment", "fallback", "${LITERAL}", "a$b", "$HOME", "${FROM_FILE}"]"#
        ),
        "{}",
        out.stdout
    );
}

#[test]
fn include_later_files_override_earlier_ones_key_by_key() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "base.toml",
        "[settings]\nshutdown-timeout = \"20s\"\n\n[services.db]\ncommand = \"sleep 100\"\nenv = { A = \"base\", B = \"base\" }\n",
    );
    write(dir.path(), "gpu.toml", "[services.db.env]\nB = \"gpu\"\n");
    write(
        dir.path(),
        "muster.toml",
        "include = [\"base.toml\", \"gpu.toml\"]\n\n[services.api]\ncommand = \"sleep 100\"\ndepends-on = [\"db\"]\n",
    );
    let out = show(dir.path(), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let shown: toml::Table = out.stdout.parse().unwrap();
    assert_eq!(shown["services"]["db"]["env"]["A"].as_str(), Some("base"));
    assert_eq!(shown["services"]["db"]["env"]["B"].as_str(), Some("gpu"));
    assert_eq!(shown["settings"]["shutdown-timeout"].as_str(), Some("20s"));
    assert!(shown.get("include").is_none());
    let report = check_json(dir.path(), &[]);
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["services"], 2);
}

#[test]
fn include_diagnostics_name_the_file_each_problem_is_in() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "base.toml",
        "[services.db]\ncomand = \"sleep 100\"\n",
    );
    write(
        dir.path(),
        "muster.toml",
        "include = [\"base.toml\"]\n\n[services.api]\ncommand = \"sleep 100\"\nrestart = \"sometimes\"\n",
    );
    let report = check_json(dir.path(), &[]);
    let diagnostics = report["diagnostics"].as_array().unwrap();
    let unknown = diagnostics
        .iter()
        .find(|d| d["code"] == "unknown-key")
        .unwrap();
    assert!(
        unknown["file"].as_str().unwrap().ends_with("base.toml"),
        "{unknown}"
    );
    assert_eq!(
        (unknown["line"].as_u64(), unknown["column"].as_u64()),
        (Some(2), Some(1))
    );
    let restart = diagnostics
        .iter()
        .find(|d| d["message"].as_str().unwrap().contains("restart"))
        .unwrap();
    assert!(
        restart["file"].as_str().unwrap().ends_with("muster.toml"),
        "{restart}"
    );
    assert_eq!(restart["line"], 5);
    let file = dir.path().join("muster.toml");
    let out = muster_run(&["check", "-f", file.to_str().unwrap()]);
    assert!(out.stderr.contains("base.toml:2:1"), "{}", out.stderr);
    assert!(out.stderr.contains("muster.toml:5:11"), "{}", out.stderr);
}

#[test]
fn include_a_cycle_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.toml", "include = [\"b.toml\"]\n");
    write(
        dir.path(),
        "b.toml",
        "include = [\"a.toml\"]\n[services.b]\ncommand = \"sleep 1\"\n",
    );
    write(
        dir.path(),
        "muster.toml",
        "include = [\"a.toml\", \"missing.toml\"]\n",
    );
    let report = check_json(dir.path(), &[]);
    assert_eq!(report["ok"], false);
    let diagnostics = report["diagnostics"].as_array().unwrap();
    let cycle = diagnostics
        .iter()
        .find(|d| d["code"] == "include-cycle")
        .unwrap();
    assert!(
        cycle["message"]
            .as_str()
            .unwrap()
            .ends_with("a.toml -> b.toml -> a.toml"),
        "{cycle}"
    );
    assert!(cycle["file"].as_str().unwrap().ends_with("b.toml"));
    let missing = diagnostics
        .iter()
        .find(|d| d["code"] == "include-unreadable")
        .unwrap();
    assert_eq!(
        (missing["line"].as_u64(), missing["column"].as_u64()),
        (Some(1), Some(22))
    );
}

#[test]
fn include_reload_reads_the_included_files_again() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "services.toml",
        "[services.a]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    let mut up = Up::start_in(
        dir,
        "include = [\"services.toml\"]\n[settings]\nstate-dir = \"{dir}/state\"\n",
        &[],
    );
    up.wait_event("a", "ready");
    write(
        up.dir.path(),
        "services.toml",
        "[services.a]\ncommand = [\"sleep\", \"1000\"]\n\n[services.b]\ncommand = [\"sleep\", \"1001\"]\n",
    );
    let file = up.path("muster.toml");
    let reloaded = muster_run(&["reload", "-f", file.to_str().unwrap()]);
    assert_eq!(reloaded.code, 0, "{}{}", reloaded.stdout, reloaded.stderr);
    up.wait_event("b", "ready");
    // An include that breaks is refused like any invalid file, naming the file.
    write(
        up.dir.path(),
        "services.toml",
        "[services.a]\ncommand = [\"sleep\"\n",
    );
    let reloaded = muster_run(&["reload", "-f", file.to_str().unwrap()]);
    assert_eq!(reloaded.code, 2, "{}{}", reloaded.stdout, reloaded.stderr);
    assert!(
        reloaded.stderr.contains("services.toml:"),
        "{}",
        reloaded.stderr
    );
    up.stop();
}

/// Client commands find the supervisor from `settings.state-dir` alone, read from the
/// file and the files it includes without building the rest: set in an include, it is
/// honoured; with a mistake in a service's table (the file cannot be built), it is
/// still the directory the file names, not the default (and no note that the
/// supervisor runs elsewhere).
#[test]
fn state_dir_from_an_include_and_beside_a_mistake_leads_to_the_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("elsewhere");
    write(
        dir.path(),
        "settings.toml",
        &format!("[settings]\nstate-dir = \"{}\"\n", state.display()),
    );
    let main = "include = [\"settings.toml\"]\n\n[services.a]\ncommand = [\"sleep\", \"1000\"]\n";
    let mut up = Up::start_in(dir, main, &[]);
    up.wait_event("a", "ready");
    assert!(
        state.join("muster.sock").exists(),
        "the include's state-dir is used"
    );
    let file = up.path("muster.toml");
    let status = muster_run(&["status", "--json", "-f", file.to_str().unwrap()]);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    let list: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(list["services"][0]["name"], "a");
    // A service's table broken while the supervisor runs.
    write(
        up.dir.path(),
        "muster.toml",
        &format!("{main}\n[services.b]\ncommand = [\"sleep\"\n"),
    );
    let status = muster_run(&["status", "-f", file.to_str().unwrap()]);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    assert!(status.stdout.contains("healthy"), "{}", status.stdout);
    assert!(
        !status.stderr.contains("keeps its state in"),
        "the file still names its state-dir: {}",
        status.stderr
    );
    up.stop();
}
