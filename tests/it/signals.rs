//! What signals mean to `muster up`: a closed terminal is a clean shutdown, stray user
//! signals are ignored (and said once each), and SIGHUP makes a background supervisor
//! read its config again.
//!
//! Every service carries `MUSTER_TEST_TAG` (see `tests/common/tagged.rs`) so that `/proc`
//! tells its processes from everyone else's.

use std::process::Command;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::helpers::evidence::{self, TagSweep, env_value, tagged};
use crate::helpers::up::{Detached, Up, eventually};
use crate::helpers::{muster, python, run};

/// Runs `muster up -f FILE` on a terminal (a pty from python's `pty.fork`, so `up` is
/// a session leader whose controlling terminal it is), waits for its boot summary,
/// then closes the terminal: the kernel hangs it up and sends `up` SIGHUP. With
/// `stdout_file`, `up`'s stdout goes to that file instead (its stderr and stdin stay
/// on the terminal). Prints what it saw as JSON: `up`'s exit code and the terminal's
/// output.
const ON_A_TERMINAL: &str = r#"
import json, os, pty, select, signal, sys, time
signal.alarm(90)
muster, config, stdout_file = sys.argv[1], sys.argv[2], sys.argv[3]
pid, fd = pty.fork()
if pid == 0:
    if stdout_file:
        out = os.open(stdout_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(out, 1)
    os.execv(muster, [muster, "up", "-f", config])
seen = b""
def booted():
    text = seen
    if stdout_file and os.path.exists(stdout_file):
        text += open(stdout_file, "rb").read()
    return b"Ctrl-C stops them" in text
deadline = time.time() + 60
while not booted():
    if time.time() > deadline:
        os.kill(pid, signal.SIGKILL)
        print(json.dumps({"error": "no boot summary", "seen": seen.decode(errors="replace")}))
        sys.exit(1)
    ready, _, _ = select.select([fd], [], [], 0.05)
    if ready:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            chunk = b""
        if not chunk:
            break
        seen += chunk
os.close(fd)
_, status = os.waitpid(pid, 0)
print(json.dumps({"pid": pid, "code": os.waitstatus_to_exitcode(status), "seen": seen.decode(errors="replace")}))
"#;

#[test]
fn signals_a_closed_terminal_stops_everything_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let tag = dir.path().display().to_string();
    let _sweep = TagSweep(tag.clone());
    let file = dir.path().join("muster.toml");
    std::fs::write(
        &file,
        format!(
            "[settings]\nstate-dir = \"{tag}/state\"\n\n[services.db]\ncommand = [\"sleep\", \"1000\"]\nenv = {{ MUSTER_TEST_TAG = \"{tag}\" }}\n\n[services.api]\ncommand = [\"sleep\", \"1000\"]\ndepends-on = {{ db = \"started\" }}\nenv = {{ MUSTER_TEST_TAG = \"{tag}\" }}\n"
        ),
    )
    .unwrap();
    let script = dir.path().join("terminal.py");
    std::fs::write(&script, ON_A_TERMINAL).unwrap();
    let stdout_file = dir.path().join("up.out");
    // Everything on the terminal; then stdout to a file, where `up` can say why it
    // stopped after the terminal is gone.
    for stdout in [None, Some(&stdout_file)] {
        let mut command = Command::new(python());
        command
            .arg(&script)
            .arg(env!("CARGO_BIN_EXE_muster"))
            .arg(&file)
            .arg(stdout.map_or(String::new(), |p| p.display().to_string()))
            .env_remove("MUSTER_FILE")
            .env_remove("MUSTER_STATE_DIR")
            .env_remove("MUSTER_COLOR")
            .env_remove("MUSTER_TIMEOUT")
            .env("NO_COLOR", "1");
        let ran = run(&mut command);
        assert_eq!(ran.code, 0, "{ran:?}");
        let seen: Value = serde_json::from_str(ran.stdout.trim()).unwrap();
        assert_eq!(
            seen["code"], 0,
            "up's exit code after its terminal closed: {seen:#}"
        );
        // `up` has exited: what it started must be gone already.
        let left = tagged(&tag);
        assert!(left.is_empty(), "left behind: {left:?}; {seen:#}");
        let db = evidence::open_history(&dir.path().join("state"));
        let runs = evidence::stored_runs(&db);
        assert!(runs.iter().all(|r| r.ended), "{runs:#?}");
        if let Some(stdout) = stdout {
            let said = std::fs::read_to_string(stdout).unwrap();
            assert!(
                said.contains(
                    "SIGHUP (the terminal went away): stopping 2 services in reverse dependency order"
                ),
                "{said}"
            );
            assert!(said.contains("muster: all services stopped"), "{said}");
        }
    }
}

/// Sends a signal by number (real-time signals have no name in `nix`).
fn send(pid: u32, number: &str) {
    let ran = run(Command::new(python()).args([
        "-c",
        "import os, signal, sys; os.kill(int(sys.argv[1]), eval(sys.argv[2], vars(signal)))",
        &pid.to_string(),
        number,
    ]));
    assert_eq!(ran.code, 0, "{ran:?}");
}

#[test]
fn signals_stray_user_signals_are_ignored_and_logged() {
    let mut up = Up::start(
        "[settings]\nstate-dir = \"{dir}/state\"\n\n[services.a]\ncommand = [\"sleep\", \"1000\"]\nenv = { MUSTER_TEST_TAG = \"{dir}\" }\n",
        &[],
    );
    let tag = up.dir.path().display().to_string();
    let _sweep = TagSweep(tag.clone());
    up.wait_event("a", "ready");
    let strays = [
        ("SIGUSR1", "SIGUSR1"),
        ("SIGUSR2", "SIGUSR2"),
        ("SIGALRM", "SIGALRM"),
        ("SIGRTMIN + 1", "SIGRTMIN+1"),
    ];
    let told = |name: &str| format!("muster: {name} ignored (SIGINT or SIGTERM stops muster)");
    for (signal, name) in strays {
        send(up.pid(), signal);
        eventually(&format!("{name} is logged"), || {
            up.stderr().contains(&told(name))
        });
        send(up.pid(), signal);
    }
    // Still supervising: a killed service is started again.
    let first = up.wait_event("a", "spawned")["data"]["pid"]
        .as_i64()
        .unwrap();
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let again = up.wait_for("a spawned again", |e| {
        e["service"] == "a" && e["kind"] == "spawned" && e["data"]["pid"] != first
    });
    let again = again["data"]["pid"].as_u64().unwrap() as u32;
    assert_eq!(env_value(again, "MUSTER_SERVICE").as_deref(), Some("a"));

    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    for (_, name) in strays {
        assert_eq!(
            ended.stderr.matches(&told(name)).count(),
            1,
            "{name} should be logged once: {}",
            ended.stderr
        );
    }
    assert!(
        ended.stderr.contains("SIGTERM: stopping 1 service"),
        "{}",
        ended.stderr
    );
    assert!(tagged(&tag).is_empty(), "{:?}", tagged(&tag));
}

#[test]
fn signals_sighup_reloads_a_background_supervisor() {
    let dir = tempfile::tempdir().unwrap();
    let tag = dir.path().display().to_string();
    let config = |version: u32| {
        format!(
            "[settings]\nstate-dir = \"{tag}/state\"\n\n[services.a]\ncommand = [\"sleep\", \"1000\"]\nenv = {{ MUSTER_TEST_TAG = \"{tag}\", VERSION = \"{version}\" }}\n\n[services.b]\ncommand = [\"sleep\", \"1000\"]\nenv = {{ MUSTER_TEST_TAG = \"{tag}\" }}\n"
        )
    };
    let file = dir.path().join("muster.toml");
    std::fs::write(&file, config(1)).unwrap();
    let (started, background) = Detached::start(&file, &tag, &[]);
    assert_eq!(started.code, 0, "{started:?}");
    let background = background.expect("the pid of the background supervisor");
    let of = |service: &str| -> Vec<u32> {
        tagged(&tag)
            .into_iter()
            .filter(|(_, s)| s == service)
            .map(|(pid, _)| pid)
            .collect()
    };
    let (a_before, b_before) = (of("a"), of("b"));
    assert_eq!((a_before.len(), b_before.len()), (1, 1));

    std::fs::write(&file, config(2)).unwrap();
    kill(Pid::from_raw(background.pid as i32), Signal::SIGHUP).unwrap();
    let log = dir.path().join("state/muster.log");
    eventually("muster.log says the config was reloaded", || {
        std::fs::read_to_string(&log).is_ok_and(|text| {
            text.contains(&format!(
                "SIGHUP: reloaded {}: 1 restarted, 0 added, 0 removed",
                file.display()
            ))
        })
    });
    eventually("`a` runs again with VERSION=2", || {
        let a = of("a");
        a.len() == 1 && a != a_before && env_value(a[0], "VERSION").as_deref() == Some("2")
    });
    assert_eq!(of("b"), b_before, "`b` did not change and keeps running");

    let down = run(&mut muster(&["down", "-f", file.to_str().unwrap()]));
    assert_eq!(down.code, 0, "{down:?}");
    background.wait_gone();
    assert!(tagged(&tag).is_empty(), "{:?}", tagged(&tag));
}
