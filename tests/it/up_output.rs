//! The services' own output in `muster up`: interleaved with the events, each line
//! prefixed by its service (stderr marked), in order per service; `--output` chooses.

use std::process::Stdio;

use crate::helpers::up::Up;
use crate::helpers::{muster, run};

/// Two one-shots that print numbered lines (and one on stderr) and end: `up` ends by
/// itself once both completed, so nothing outlives the test.
fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let file = dir.join("muster.toml");
    std::fs::write(
        &file,
        "[services.alpha]\nshell = 'i=1; while [ $i -le 300 ]; do echo \"alpha $i\"; i=$((i+1)); done; echo \"alpha trouble\" >&2'\n\n\
         [services.beta-long-name]\nshell = 'i=1; while [ $i -le 300 ]; do echo \"beta $i\"; i=$((i+1)); done'\n",
    )
    .unwrap();
    file
}

fn up_plain(extra: &[&str]) -> crate::helpers::Run {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path());
    let mut args = vec!["up", "--no-progress", "-f", file.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut command = muster(&args);
    command.stdin(Stdio::null());
    run(&mut command)
}

#[test]
fn up_output_lines_arrive_in_order_per_service_with_their_prefix() {
    let out = up_plain(&[]);
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    for (service, word) in [("alpha", "alpha"), ("beta-long-name", "beta")] {
        let numbers: Vec<u32> = out
            .stdout
            .lines()
            .filter_map(|line| {
                // "   0.012s alpha          | alpha 7"
                let (_, rest) = line.split_once("s ")?;
                let (name, text) = rest.split_once(" | ")?;
                (name.trim_end() == service).then_some(text)
            })
            .filter_map(|text| text.strip_prefix(&format!("{word} "))?.parse().ok())
            .collect();
        assert_eq!(
            numbers,
            (1..=300).collect::<Vec<_>>(),
            "{service}:\n{}",
            out.stdout
        );
    }
    // Names are padded to one width, so the texts line up.
    assert!(
        out.stdout.contains("alpha          | alpha 1\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("alpha          ! alpha trouble"),
        "{}",
        out.stdout
    );
    // The events are among them.
    assert!(
        out.stdout.contains(" alpha          completed "),
        "{}",
        out.stdout
    );
}

#[test]
fn up_output_events_and_none_leave_the_lines_out() {
    let events = up_plain(&["--output", "events"]);
    assert_eq!(events.code, 0, "{}", events.stderr);
    assert!(!events.stdout.contains(" | "), "{}", events.stdout);
    assert!(events.stdout.contains(" completed "), "{}", events.stdout);
    let none = up_plain(&["--output", "none"]);
    assert_eq!(none.code, 0, "{}", none.stderr);
    assert!(!none.stdout.contains(" | "), "{}", none.stdout);
    // No event line (`alpha completed exited with status 0`), only muster's notes.
    assert!(
        !none.stdout.contains("exited with status"),
        "{}",
        none.stdout
    );
    assert!(
        none.stdout.contains("muster: all services stopped"),
        "{}",
        none.stdout
    );
}

#[test]
fn up_output_in_json_stays_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(config(dir.path())).unwrap();
    // `Up` reads `--json` and fails on any stdout line that is not JSON.
    let mut up = Up::start_in(dir, &text, &["--output", "all"]);
    let ended = up.wait_exit();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    let alpha: Vec<&str> = ended
        .events
        .iter()
        .filter(|e| e["kind"] == "output" && e["service"] == "alpha" && e["stream"] == "stdout")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (1..=300).map(|i| format!("alpha {i}")).collect();
    assert_eq!(alpha, expected);
    assert!(
        ended
            .events
            .iter()
            .any(|e| e["kind"] == "output" && e["stream"] == "stderr")
    );
    assert!(ended.events.iter().any(|e| e["kind"] == "completed"));
    // Without --output, --json stays events only, as scripts expect.
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start_in(dir, &text, &[]);
    let ended = up.wait_exit();
    assert!(ended.events.iter().all(|e| e["kind"] != "output"));
}

/// Kills a `muster up` (and its group) on drop, whatever the test did.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::killpg(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn up_output_a_stdout_nobody_reads_does_not_stop_the_supervisor() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("muster.toml");
    // 5 MB of lines, far past what a pipe holds; then it idles (and ends by itself).
    std::fs::write(
        &file,
        "[services.flood]\nshell = 'yes flood | head -c 5000000; exec sleep 30'\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let mut command = muster(&["up", "--no-progress", "-f", file]);
    // stdout is a pipe this test never reads.
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0);
    let mut up = Guard(command.spawn().unwrap());
    let log = dir.path().join(".muster/logs/flood.log");
    crate::helpers::up::eventually("the flood is written to its log", || {
        std::fs::metadata(&log).is_ok_and(|m| m.len() > 5_000_000)
    });
    // The supervisor still answers, quickly, with stdout long full.
    let started = std::time::Instant::now();
    let status = muster_status(file);
    assert_eq!(status.code, 0, "{}{}", status.stdout, status.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // And stops on request, its last notes given up on after a bounded wait.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if up.0.try_wait().unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "muster up did not end"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn muster_status(file: &str) -> crate::helpers::Run {
    run(&mut muster(&["status", "flood", "-f", file]))
}
