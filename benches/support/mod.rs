//! What every benchmark does with the real binary: run `muster up --json` on a config,
//! read its events, and stop it with SIGTERM.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

pub const MUSTER: &str = env!("CARGO_BIN_EXE_muster");

/// `muster up --json -f CONFIG` in its own process group, with its event lines.
pub fn up(config: &Path) -> (Child, BufReader<ChildStdout>) {
    let mut child = Command::new(MUSTER)
        .args(["up", "--json", "-f"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn muster up");
    let lines = BufReader::new(child.stdout.take().expect("stdout"));
    (child, lines)
}

/// Reads events until `count` of them are `ready`.
pub fn wait_for_ready(lines: &mut BufReader<ChildStdout>, count: usize) {
    let mut ready = 0;
    let mut line = String::new();
    while ready < count {
        line.clear();
        let read = lines.read_line(&mut line).expect("read an event");
        assert!(read > 0, "muster up ended early");
        if line.contains("\"kind\":\"ready\"") {
            ready += 1;
        }
    }
}

/// SIGTERM, then wait for the clean shutdown.
pub fn stop(child: &mut Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).expect("signal muster up");
    child.wait().expect("wait for muster up");
}

/// A TCP port free right now on loopback, from the OS.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value at fraction `p` of sorted durations.
pub fn percentile(sorted: &[std::time::Duration], p: f64) -> std::time::Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

pub fn micros(d: std::time::Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

pub fn millis(d: std::time::Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
