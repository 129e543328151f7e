//! `muster run NAME -- CMD...`: a one-off command in a service's directory and
//! environment, attached to the terminal, exiting with its status.

use std::io::Write;
use std::process::Stdio;

use crate::helpers::{muster, muster_run};

fn config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    std::fs::write(dir.path().join("svc.env"), "B=from-file\nA=loses-to-env\n").unwrap();
    std::fs::write(
        dir.path().join("muster.toml"),
        "[services.web]\nshell = 'echo serving from $(pwd)'\ncwd = \"work\"\nenv = { A = \"from-env\" }\nenv-file = \"svc.env\"\n",
    )
    .unwrap();
    dir
}

fn file(dir: &tempfile::TempDir) -> String {
    dir.path().join("muster.toml").display().to_string()
}

#[test]
fn run_once_gets_the_services_directory_environment_and_env_files() {
    let dir = config();
    let out = muster_run(&[
        "run",
        "-f",
        &file(&dir),
        "web",
        "--",
        "sh",
        "-c",
        "pwd; echo \"$A $B $MUSTER_SERVICE\"; exit 7",
    ]);
    assert_eq!(out.code, 7, "{}", out.stderr);
    let work = dir.path().join("work").canonicalize().unwrap();
    assert_eq!(
        out.stdout,
        format!("{}\nfrom-env from-file web\n", work.display())
    );
}

#[test]
fn run_once_without_a_command_runs_the_services_own() {
    let dir = config();
    let out = muster_run(&["run", "-f", &file(&dir), "web"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.starts_with("serving from "), "{}", out.stdout);
    assert!(out.stdout.trim_end().ends_with("/work"), "{}", out.stdout);
}

#[test]
fn run_once_is_attached_to_its_input() {
    let dir = config();
    let mut child = muster(&["run", "-f", &file(&dir), "web", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"typed in\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "typed in\n");
}

#[test]
fn run_once_refuses_an_unknown_service_or_program() {
    let dir = config();
    let out = muster_run(&["run", "-f", &file(&dir), "wbe", "--", "true"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("did you mean `web`?"), "{}", out.stderr);
    let out = muster_run(&[
        "run",
        "-f",
        &file(&dir),
        "web",
        "--",
        "no-such-program-here",
    ]);
    assert_eq!(out.code, 127);
    assert!(
        out.stderr
            .contains("`no-such-program-here` is not found on PATH"),
        "{}",
        out.stderr
    );
}

#[test]
fn run_once_runs_as_the_services_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED in run_once_runs_as_the_services_user: switching users needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("muster.toml"),
        "[services.job]\ncommand = [\"true\"]\nuser = \"nobody\"\numask = \"027\"\n",
    )
    .unwrap();
    let out = muster_run(&[
        "run",
        "-f",
        &file(&dir),
        "job",
        "--",
        "sh",
        "-c",
        "echo $(id -u) $USER $(umask)",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    assert_eq!(
        out.stdout.trim(),
        format!("{} nobody 0027", nobody.uid),
        "{}",
        out.stderr
    );
}
