//! `muster import` on real files of each format (tests/fixtures/import, with their
//! licences): the result passes `muster check`, and runs under `muster up` where its
//! programs exist on any machine.

use std::fs;
use std::path::{Path, PathBuf};

use crate::helpers::up::Up;
use crate::helpers::{muster_run, repo};

fn fixtures(format: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo().join("tests/fixtures/import").join(format))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Imports `source` into `dir/muster.toml`; the run and the file's text.
fn import_into(source: &Path, dir: &Path, extra: &[&str]) -> (crate::helpers::Run, String) {
    let out = dir.join("muster.toml");
    let mut args = vec![
        "import",
        source.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = muster_run(&args);
    let text = fs::read_to_string(&out).unwrap_or_default();
    (run, text)
}

fn every_file_imports_and_checks(format: &str) {
    let files = fixtures(format);
    assert!(files.len() >= 3, "only {} {format} files", files.len());
    for file in files {
        let dir = tempfile::tempdir().unwrap();
        let (run, text) = import_into(&file, dir.path(), &[]);
        assert_eq!(run.code, 0, "{}: {}", file.display(), run.stderr);
        assert!(text.starts_with("# Imported by `muster import`"), "{text}");
        let out = dir.path().join("muster.toml");
        let check = muster_run(&["check", "-f", out.to_str().unwrap()]);
        assert_eq!(
            check.code,
            0,
            "{}:\n{}\n{text}",
            file.display(),
            check.stderr
        );
    }
}

#[test]
fn import_compose_files_check() {
    every_file_imports_and_checks("compose");
}

#[test]
fn import_process_compose_files_check() {
    every_file_imports_and_checks("process-compose");
}

#[test]
fn import_supervisord_files_check() {
    every_file_imports_and_checks("supervisord");
}

#[test]
fn import_procfiles_check() {
    every_file_imports_and_checks("procfile");
}

#[test]
fn import_pm2_files_check() {
    every_file_imports_and_checks("pm2");
}

#[test]
fn import_compose_keeps_what_has_no_meaning_here_as_comments() {
    let dir = tempfile::tempdir().unwrap();
    let source = repo().join("tests/fixtures/import/compose/nginx-flask-mysql.compose.yaml");
    let (run, text) = import_into(&source, dir.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(text.contains("# networks: "), "{text}");
    assert!(text.contains("# volumes: "), "{text}");
    assert!(
        text.contains("# command = [\"docker\", \"run\", \"--rm\", \"--name\", \"db\""),
        "{text}"
    );
    assert!(text.contains("depends-on = { db = \"healthy\" }"), "{text}");
    assert!(text.contains("ports = [8000]"), "{text}");
    // The image's health check is kept, commented: it ran inside the container.
    assert!(
        text.contains("# ready = { exec = [\"sh\", \"-c\", \"mysqladmin ping"),
        "{text}"
    );
    assert!(
        run.stderr.contains("no command to run on this host yet"),
        "{}",
        run.stderr
    );
}

#[test]
fn import_procfile_shell_syntax_becomes_a_shell_line_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("Procfile");
    fs::write(
        &source,
        "web: python3 -m http.server $PORT\nworker: sleep 100\n",
    )
    .unwrap();
    let (run, text) = import_into(&source, dir.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        text.contains("shell = \"python3 -m http.server $PORT\""),
        "{text}"
    );
    assert!(text.contains("# the line uses shell syntax"), "{text}");
    assert!(text.contains("env = { PORT = \"5000\" }"), "{text}");
    assert!(text.contains("command = [\"sleep\", \"100\"]"), "{text}");
}

#[test]
fn import_malformed_sources_are_refused_with_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "compose.yaml",
            "services:\n  web:\n    image: [nginx\n",
            "line 4",
        ),
        (
            "supervisord.conf",
            "[program:a]\ncommand=sleep 1\n[program:b\n",
            "line 3",
        ),
        (
            "Procfile",
            "web: sleep 1\nthis is not a process\n",
            "line 2",
        ),
        (
            "ecosystem.config.js",
            "module.exports = {\n  apps: [{\n    name: 'a',,\n  }]\n};\n",
            "line 3",
        ),
        (
            "process-compose.yaml",
            "processes:\n  a:\n    command: \"x\n",
            "line ",
        ),
    ];
    for (name, text, place) in cases {
        let source = dir.path().join(name);
        fs::write(&source, text).unwrap();
        let out = dir.path().join(format!("{name}.toml"));
        let run = muster_run(&[
            "import",
            source.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(run.code, 2, "{name}: {}", run.stderr);
        assert!(run.stderr.contains(place), "{name}: {}", run.stderr);
        assert!(run.stderr.contains(name), "{name}: {}", run.stderr);
        assert!(!out.exists(), "{name}: nothing is written");
    }
}

#[test]
fn import_does_not_replace_a_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("Procfile");
    fs::write(&source, "worker: sleep 100\n").unwrap();
    let out = dir.path().join("muster.toml");
    fs::write(&out, "# mine\n").unwrap();
    let run = muster_run(&[
        "import",
        source.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(fs::read_to_string(&out).unwrap(), "# mine\n");
    let run = muster_run(&[
        "import",
        source.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
}

/// Imports a fixture into a temp dir and runs `muster up` on it until `service`
/// reaches `kind`.
fn import_and_run(format: &str, file: &str, waits: &[(&str, &str)]) {
    let dir = tempfile::tempdir().unwrap();
    let source = repo().join("tests/fixtures/import").join(format).join(file);
    let (run, text) = import_into(&source, dir.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut up = Up::start_in(dir, &text, &[]);
    for (service, kind) in waits {
        up.wait_event(service, kind);
    }
    up.stop();
}

#[test]
fn import_process_compose_chain_runs_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let source = repo().join("tests/fixtures/import/process-compose/chain.yaml");
    let (run, text) = import_into(&source, dir.path(), &[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let mut up = Up::start_in(dir, &text, &[]);
    up.wait_event("process1", "completed");
    let order: Vec<String> = up
        .events
        .iter()
        .filter(|e| e["kind"] == "completed")
        .map(|e| e["service"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (1..=8).rev().map(|i| format!("process{i}")).collect();
    assert_eq!(order, expected);
    up.stop();
}

#[test]
fn import_supervisord_program_runs() {
    import_and_run(
        "supervisord",
        "issue-638.conf",
        &[("produce-unicode-error", "completed")],
    );
}

#[test]
fn import_procfile_runs() {
    import_and_run("procfile", "foreman-bad.Procfile", &[("good", "completed")]);
}
