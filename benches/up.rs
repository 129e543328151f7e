//! The supervisor's own costs, measured on the real binary:
//!
//! - **boot-100**: from launching `muster up` until all 100 trivial services are running
//!   (the 100th `ready` event on its JSON output);
//! - **rss-100**: the supervisor's resident memory with those 100 services;
//! - **respawn**: SIGKILL a service's process, time until its replacement runs (the
//!   fixture writes a nanosecond timestamp when it starts; zero backoff);
//! - **idle-cpu**: CPU used by the supervisor over 30 s with nothing to do.
//!
//! Run with `cargo bench --bench up`. `MUSTER_BENCH_RUNS` (default 10) sets the boot
//! repetitions, `MUSTER_BENCH_IDLE_SECS` (default 30) the idle window. The fixture is
//! this very binary, started with `--stamp FILE`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod support;

use support::{stop, up, wait_for_ready};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--stamp") {
        stamp(Path::new(&args[at + 1]));
    }
    let runs = env_number("MUSTER_BENCH_RUNS", 10);
    let idle_secs = env_number("MUSTER_BENCH_IDLE_SECS", 30);
    let dir = tempfile::tempdir().unwrap();

    let config = boot_config(dir.path(), 100);
    let mut boots = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let began = Instant::now();
        let (mut child, mut lines) = up(&config);
        wait_for_ready(&mut lines, 100);
        boots.push(began.elapsed());
        rss.push(rss_kib(child.id()));
        stop(&mut child);
    }

    let (mut child, mut lines) = up(&config);
    wait_for_ready(&mut lines, 100);
    let idle = idle_cpu(child.id(), Duration::from_secs(idle_secs));
    stop(&mut child);

    let (fixture, fixture_name) = fixture(dir.path());
    let respawns = respawn(dir.path(), &fixture, 20);

    println!(
        "muster supervisor benchmark ({runs} boots, {} respawns with {fixture_name}, {idle_secs} s idle)",
        respawns.len()
    );
    println!();
    println!("| measure | median | min | max | target |");
    println!("|---|---|---|---|---|");
    row(
        "boot-100: `up` to 100 services running",
        &boots,
        ms,
        "< 150 ms",
    );
    let rss_bytes: Vec<Duration> = rss.iter().map(|k| Duration::from_micros(*k)).collect();
    row(
        "rss-100: supervisor RSS with 100 services",
        &rss_bytes,
        |d| format!("{:.1} MiB", d.as_micros() as f64 / 1024.0),
        "< 6 MiB",
    );
    row(
        "respawn: SIGKILL to replacement running",
        &respawns,
        ms,
        "< 1.5 ms",
    );
    println!("| idle-cpu: supervisor CPU over {idle_secs} s idle | {idle:.2} % | | | 0.00 % |");
}

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The fixture: record "pid nanoseconds" atomically, then wait to be killed.
fn stamp(file: &Path) -> ! {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let temp = file.with_extension(format!("{}", std::process::id()));
    std::fs::write(&temp, format!("{} {now}\n", std::process::id())).unwrap();
    std::fs::rename(&temp, file).unwrap();
    loop {
        std::thread::park();
    }
}

fn boot_config(dir: &Path, count: usize) -> PathBuf {
    let mut text = format!("[settings]\nstate-dir = \"{}/state\"\n", dir.display());
    for i in 0..count {
        text.push_str(&format!(
            "\n[services.s{i:03}]\ncommand = [\"sleep\", \"3600\"]\n"
        ));
    }
    let path = dir.join("boot.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// CPU time (user + system) of `pid`, in clock ticks of 10 ms.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // After the command: state(0) ppid(1) ... utime(11) stime(12).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn idle_cpu(pid: u32, window: Duration) -> f64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(window);
    let used = cpu_ticks(pid) - before;
    used as f64 * 0.01 / window.as_secs_f64() * 100.0
}

/// The respawn fixture: a static C program when a C compiler is at hand (it starts in
/// a fraction of the time a dynamically linked one needs, so the figure is the
/// supervisor's), else this binary.
fn fixture(dir: &Path) -> (PathBuf, &'static str) {
    let source = dir.join("stamp.c");
    std::fs::write(&source, STAMP_C).unwrap();
    let binary = dir.join("stamp");
    for flags in [&["-O2", "-static"][..], &["-O2"][..]] {
        let built = Command::new("cc")
            .args(flags)
            .arg("-o")
            .arg(&binary)
            .arg(&source)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if built {
            let name = if flags.len() == 2 {
                "a static C fixture"
            } else {
                "a C fixture"
            };
            return (binary, name);
        }
    }
    (std::env::current_exe().unwrap(), "a Rust fixture")
}

/// Writes "pid nanoseconds" to the file named by its second argument, then waits.
const STAMP_C: &str = r#"
#include <stdio.h>
#include <time.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    char temp[4096];
    snprintf(temp, sizeof temp, "%s.%d", argv[2], getpid());
    FILE *file = fopen(temp, "w");
    fprintf(file, "%d %lld%09ld\n", getpid(), (long long)now.tv_sec, now.tv_nsec);
    fclose(file);
    rename(temp, argv[2]);
    for (;;) pause();
}
"#;

fn respawn(dir: &Path, me: &Path, count: usize) -> Vec<Duration> {
    let file = dir.join("stamp.txt");
    let config = dir.join("respawn.toml");
    std::fs::write(
        &config,
        format!(
            "[settings]\nstate-dir = \"{0}/state\"\n\n[services.target]\ncommand = [{1:?}, \"--stamp\", {2:?}]\nrestart = \"always\"\nbackoff = {{ initial = \"0s\", max = \"0s\" }}\nrestart-limit = {{ count = 1000000, within = \"1s\" }}\n",
            dir.display(),
            me.display().to_string(),
            file.display().to_string()
        ),
    )
    .unwrap();
    let (mut child, _lines) = up(&config);
    let read = || -> Option<(i32, u128)> {
        let text = std::fs::read_to_string(&file).ok()?;
        let (pid, ns) = text.trim().split_once(' ')?;
        Some((pid.parse().ok()?, ns.parse().ok()?))
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while read().is_none() {
        assert!(Instant::now() < deadline, "the fixture never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut latencies = Vec::new();
    for round in 0..count + 2 {
        let (pid, _) = read().unwrap();
        let killed_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let started = loop {
            if let Some((new, ns)) = read()
                && new != pid
            {
                break ns;
            }
            assert!(Instant::now() < deadline, "no respawn");
            std::thread::sleep(Duration::from_micros(50));
        };
        // The first rounds warm caches; they are not counted.
        if round >= 2 {
            latencies.push(Duration::from_nanos((started - killed_at) as u64));
        }
    }
    stop(&mut child);
    latencies
}

fn ms(duration: &Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn row(name: &str, values: &[Duration], show: impl Fn(&Duration) -> String, target: &str) {
    let mut sorted = values.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    println!(
        "| {name} | {} | {} | {} | {target} |",
        show(&median),
        show(&sorted[0]),
        show(&sorted[sorted.len() - 1])
    );
}
