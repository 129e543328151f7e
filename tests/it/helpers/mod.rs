//! Running the `muster` binary with a deadline, and keeping its output stable for
//! snapshots.

pub mod evidence;
pub mod up;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// No command in these tests should come near this; past it the child is killed and
/// the test fails instead of hanging.
const DEADLINE: Duration = Duration::from_secs(60);

/// The repository root: examples are addressed relative to it.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `muster` command run from the repository root, with no colour and none of the
/// caller's `MUSTER_*` settings.
pub fn muster(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_muster"));
    command
        .args(args)
        .current_dir(repo())
        .env_remove("MUSTER_FILE")
        .env_remove("MUSTER_STATE_DIR")
        .env_remove("MUSTER_COLOR")
        .env_remove("MUSTER_TIMEOUT")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// What a finished command printed, decoded.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `command` to completion, killing it if it outlives [`DEADLINE`].
pub fn run(command: &mut Command) -> Run {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn muster");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, finished) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if finished.recv_timeout(DEADLINE).is_err() {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    let output: Output = child.wait_with_output().expect("wait for muster");
    let _ = done.send(());
    watchdog.join().expect("watchdog thread");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `muster ARGS...` from the repository root.
pub fn muster_run(args: &[&str]) -> Run {
    run(&mut muster(args))
}

/// Runs `muster check` on `source` written to a `muster.toml` in a fresh temp dir
/// (kept alive in the return value, with any files a test adds beside it).
pub fn check_source(source: &[u8], beside: &[(&str, &str)]) -> Run {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, contents) in beside {
        std::fs::write(dir.path().join(name), contents).expect("write fixture");
    }
    let path = dir.path().join("muster.toml");
    std::fs::write(&path, source).expect("write muster.toml");
    muster_run(&["check", "-f", path.to_str().expect("utf-8 temp path")])
}

/// A single-threaded runtime for calling the API from a test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Replaces machine-specific paths so snapshots hold on any checkout.
pub fn stable(text: &str, extra: &[&Path]) -> String {
    let mut text = text.replace(&repo().display().to_string(), "[repo]");
    for path in extra {
        text = text.replace(&path.display().to_string(), "[tmp]");
    }
    text
}
