//! How fast muster notices, measured on the real binary:
//!
//! - **ready-latency**: from a service sending `READY=1` to muster's `ready` event
//!   reaching a reader of `muster up --json`;
//! - **hang-latency**: from a heartbeat deadline passing (last `WATCHDOG=1` plus
//!   `watchdog`) to the `unhealthy` event reaching that reader.
//!
//! Run with `cargo bench --bench health`. The fixture is a few lines of Python that
//! record the time (nanoseconds, wall clock) just before they send.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod support;

use support::{stop, up};
const ROUNDS: usize = 20;
const WATCHDOG_MS: u64 = 200;

/// Sends `READY=1`, then one `WATCHDOG=1`, each right after writing its time to
/// `<dir>/<kind>.<run id>`; then stays alive and silent until killed.
const FIXTURE: &str = r#"
import os, socket, sys, time
address = os.environ["NOTIFY_SOCKET"]
if address.startswith("@"):
    address = "\0" + address[1:]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
run = os.environ["MUSTER_RUN_ID"]
def send(kind, message):
    with open(os.path.join(sys.argv[1], kind + "." + run), "w") as f:
        f.write(str(time.time_ns()))
    s.sendto(message, address)
send("ready", b"READY=1")
time.sleep(0.05)
send("beat", b"WATCHDOG=1")
time.sleep(1000)
"#;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("health.toml");
    std::fs::write(
        &config,
        format!(
            "[settings]\nstate-dir = \"{0}/state\"\n\n[services.probe]\ncommand = [\"python3\", \"-c\", '''{FIXTURE}''', \"{0}\"]\nready = {{ notify = true }}\nwatchdog = \"{WATCHDOG_MS}ms\"\nbackoff = {{ initial = \"0s\", max = \"0s\" }}\nrestart-limit = {{ count = 1000, within = \"1s\" }}\nstop-timeout = \"1s\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (mut child, lines) = up(&config);
    let mut lines = lines.lines();
    let mut ready = Vec::new();
    let mut hang = Vec::new();
    while hang.len() < ROUNDS {
        let line = lines.next().expect("muster up ended").unwrap();
        let seen = now_ns();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        let run = event["run_id"].as_u64().unwrap();
        match event["kind"].as_str() {
            Some("ready") => ready.push(since(stamp(dir.path(), "ready", run), seen)),
            Some("unhealthy") => {
                let deadline = stamp(dir.path(), "beat", run) + u128::from(WATCHDOG_MS) * 1_000_000;
                hang.push(since(deadline, seen));
            }
            _ => {}
        }
    }
    stop(&mut child);

    println!("muster health benchmark ({ROUNDS} rounds, watchdog {WATCHDOG_MS} ms)");
    println!();
    println!("| measure | median | min | max |");
    println!("|---|---|---|---|");
    row(
        "ready-latency: READY=1 sent to `ready` event read",
        &mut ready,
    );
    row(
        "hang-latency: heartbeat deadline to `unhealthy` event read",
        &mut hang,
    );
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn stamp(dir: &Path, kind: &str, run: u64) -> u128 {
    let path = dir.join(format!("{kind}.{run}"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .unwrap()
}

fn since(from: u128, to: u128) -> Duration {
    Duration::from_nanos(to.saturating_sub(from) as u64)
}

fn row(name: &str, values: &mut [Duration]) {
    values.sort();
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!(
        "| {name} | {} | {} | {} |",
        ms(values[values.len() / 2]),
        ms(values[0]),
        ms(values[values.len() - 1])
    );
}
