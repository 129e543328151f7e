//! `muster logs --since/--until/--stream/--timestamps` and `muster events --since` by
//! time: on log files as muster writes them, rotated ones included, and on a real run.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::helpers::muster_run;
use crate::helpers::up::Up;

fn stamp(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// A config whose state directory holds `logs/`, written by hand in muster's format.
fn state_with_logs(files: &[(&str, Vec<String>)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("muster.toml"),
        "[settings]\nstate-dir = \"state\"\n\n[services.a]\ncommand = [\"true\"]\n\n[services.b]\ncommand = [\"true\"]\n",
    )
    .unwrap();
    let logs = dir.path().join("state/logs");
    fs::create_dir_all(&logs).unwrap();
    for (name, lines) in files {
        fs::write(logs.join(name), lines.join("")).unwrap();
    }
    dir
}

fn line(time: &str, stream: &str, text: &str) -> String {
    format!("{time} {stream} {text}\n")
}

fn logs(dir: &Path, args: &[&str]) -> crate::helpers::Run {
    let file = dir.join("muster.toml");
    let mut all = vec!["logs", "-f", file.to_str().unwrap()];
    all.extend_from_slice(args);
    muster_run(&all)
}

#[test]
fn logs_since_selects_by_time_across_a_rotated_log() {
    let at = |minute: u32, second: u32| format!("2026-12-01T10:{minute:02}:{second:02}.000Z");
    let dir = state_with_logs(&[
        // Oldest first: a.log.2, then a.log.1, then a.log.
        (
            "a.log.2",
            (0..10)
                .map(|s| line(&at(0, s * 5), "stdout", &format!("a0-{s}")))
                .collect(),
        ),
        (
            "a.log.1",
            (0..10)
                .map(|s| line(&at(1, s * 5), "stdout", &format!("a1-{s}")))
                .collect(),
        ),
        (
            "a.log",
            (0..10)
                .map(|s| line(&at(2, s * 5), "stderr", &format!("a2-{s}")))
                .collect(),
        ),
        (
            "b.log",
            (0..30)
                .map(|s| line(&at(s / 10, (s % 10) * 5 + 2), "stdout", &format!("b-{s}")))
                .collect(),
        ),
    ]);
    let out = logs(
        dir.path(),
        &[
            "--since",
            "2026-12-01T10:00:40",
            "--until",
            "2026-12-01T10:01:07",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        got,
        [
            "a a0-8", "b b-8", "a a0-9", "b b-9", "a a1-0", "b b-10", "a a1-1", "b b-11",
        ],
        "{}",
        out.stdout
    );
    // One service, one stream, with times; -n keeps the last of the stretch.
    let out = logs(
        dir.path(),
        &[
            "a",
            "--since",
            "2026-12-01T10:01",
            "--stream",
            "stderr",
            "--timestamps",
            "-n",
            "2",
        ],
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout,
        "2026-12-01T10:02:40.000Z a2-8\n2026-12-01T10:02:45.000Z a2-9\n"
    );
}

#[test]
fn logs_since_a_duration_counts_back_from_now() {
    let now = SystemTime::now();
    let old = stamp(now - Duration::from_secs(20 * 60));
    let recent = stamp(now - Duration::from_secs(5 * 60));
    let dir = state_with_logs(&[(
        "a.log",
        vec![
            line(&old, "stdout", "twenty minutes ago"),
            line(&recent, "stdout", "five minutes ago"),
        ],
    )]);
    let out = logs(dir.path(), &["a", "--since", "10m"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stdout, "five minutes ago\n");
    let out = logs(dir.path(), &["a", "--since", "soon"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("neither a duration"), "{}", out.stderr);
}

#[test]
fn logs_and_events_by_time_on_a_real_run() {
    let began = stamp(SystemTime::now() - Duration::from_secs(1));
    let mut up = Up::start(
        "[settings]\nstate-dir = \"{dir}/state\"\n\n[services.job]\nshell = 'echo to stdout; echo to stderr >&2'\n",
        &[],
    );
    up.wait_event("job", "completed");
    let ended = up.wait_exit();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    let file = up.path("muster.toml");
    let file = file.to_str().unwrap();
    let out = muster_run(&[
        "logs", "job", "-f", file, "--stream", "stderr", "--since", &began, "-t",
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stdout);
    let (time, text) = lines[0].split_once(' ').unwrap();
    assert_eq!(text, "to stderr");
    assert!(humantime::parse_rfc3339(time).is_ok(), "{time}");

    let events = |since: &str| {
        let out = muster_run(&["events", "-f", file, "--json", "--since", since]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout.lines().count()
    };
    let all = events("0");
    assert!(all >= 3, "spawned, exited, completed at least");
    assert_eq!(events("10m"), all);
    assert_eq!(events(&began), all);
    assert_eq!(events("2099-01-01"), 0);
    assert_eq!(events("1"), all - 1);
}
