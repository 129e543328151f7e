//! Running the `muster` binary with a deadline, and keeping its output stable for
//! snapshots.

pub mod evidence;
pub mod up;

use std::io::Write;
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

/// Something optional a test drives for real, beyond a Rust toolchain and python3.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// A program found on PATH, such as `systemd-notify`.
    Program(&'static str),
    /// A module `python3` can import, such as the `sdnotify` package.
    PythonModule(&'static str),
}

impl Need {
    fn present(self) -> bool {
        match self {
            Need::Program(name) => std::env::var_os("PATH").is_some_and(|path| {
                std::env::split_paths(&path).any(|dir| {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::metadata(dir.join(name))
                        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                })
            }),
            Need::PythonModule(module) => {
                let mut import = Command::new("python3");
                import.args(["-c", &format!("import {module}")]);
                run(&mut import).code == 0
            }
        }
    }

    fn install(self) -> String {
        match self {
            Need::Program("systemd-notify") => "apt-get install systemd".to_owned(),
            Need::Program(name) => format!("install `{name}`"),
            Need::PythonModule(module) => format!("python3 -m pip install {module}"),
        }
    }
}

impl std::fmt::Display for Need {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Need::Program(name) => write!(f, "the program `{name}`"),
            Need::PythonModule(module) => write!(f, "the python module `{module}`"),
        }
    }
}

/// Whether `need` is installed. When it is not, the calling test leaves out what
/// needs it (returning early if that is all of it) and passes; this says on stderr
/// what was skipped (`what`, such as "readiness sent by systemd's own client") in which
/// test, and why. With
/// `MUSTER_REQUIRE_ALL=1` (CI sets it, having installed everything) a missing need
/// fails the test instead, so nothing is skipped there unnoticed.
pub fn require(need: Need, what: &str) -> bool {
    if need.present() {
        return true;
    }
    let test = std::thread::current().name().unwrap_or("a test").to_owned();
    if std::env::var("MUSTER_REQUIRE_ALL").is_ok_and(|v| v == "1") {
        panic!(
            "{test}: {need} is not installed, and MUSTER_REQUIRE_ALL=1 requires it (for {what}); install it with `{}`",
            need.install()
        );
    }
    // Straight to the process's stderr: the test harness captures `eprintln!` of
    // passing tests, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED in {test}: {what}, because {need} is not installed; install it with `{}`, or set MUSTER_REQUIRE_ALL=1 to make this a failure",
        need.install()
    );
    false
}

/// The python interpreter itself, not a shim: `python3` on PATH may be a script that
/// forks helpers of its own (pyenv), which would be counted as the service's processes.
pub fn python() -> String {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    assert!(output.status.success(), "python3 -c failed: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Held for its whole run by each test that loads the machine on purpose (thousands of
/// services, floods, crash loops, timed chaos): two of them at once on a 2-core machine
/// starve each other's deadlines, and their figures would measure each other.
pub fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
