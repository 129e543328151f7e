//! Many services on one supervisor: the descriptors each costs, what a limit too low
//! for two pipes each gives them (and that `check` and `up` say so before anything
//! starts), a status answered while a large boot is under way, and the memory each
//! service costs.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::Method;
use nix::sys::resource::{Resource, getrlimit};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use crate::helpers::up::collect;
use crate::helpers::{heavy, muster, runtime};

/// How long a boot in these tests may take (debug build, 2 cores).
const BOOT: Duration = Duration::from_secs(25);
/// What `supervisor::descriptors` keeps for everything but the services' output, and
/// the log files it keeps open between writes.
const RESERVE: usize = 1024;
const KEEP_OPEN_LOGS: usize = 256;

/// A `muster up` started under a hard descriptor limit of `nofile` (or the inherited
/// one), stdout discarded; killed with every process group it spawned when dropped.
struct Supervisor {
    child: Option<Child>,
    dir: tempfile::TempDir,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Supervisor {
    fn start(config: &str, nofile: Option<usize>) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::write(dir.path().join("muster.toml"), config).expect("write muster.toml");
        let mut command = under_limit(&["up", "--json", "-f", "muster.toml"], nofile);
        command
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().expect("spawn muster up");
        let stderr = collect(child.stderr.take().expect("stderr"));
        Self {
            child: Some(child),
            dir,
            stderr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.path().join("state/muster.sock")
    }

    /// `/v1/services`, and how long it took; `None` before the socket answers.
    fn list(&self) -> Option<(Duration, Value)> {
        let began = Instant::now();
        let answer = runtime()
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(10),
                    muster::api::client::request(&self.socket(), Method::GET, "/v1/services"),
                )
                .await
            })
            .ok()?
            .ok()?;
        Some((began.elapsed(), answer.body))
    }

    /// Waits until every one of `n` services is healthy; panics after [`BOOT`].
    fn wait_healthy(&self, n: usize) {
        wait_all_healthy(n, || self.list().map(|(_, body)| body), || self.stderr());
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr").clone()
    }

    /// SIGTERM, and the exit within 30 s.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.kill();
                let _ = child.wait();
                panic!("muster up did not stop within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGSTOP);
        // Every service's group: the spawned pids are the group ids.
        if let Ok(entries) = fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|p| p.parse::<u32>().ok())
                else {
                    continue;
                };
                let parent = fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let rest = stat.rsplit_once(')')?.1.to_owned();
                        rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                    });
                if parent == Some(child.id()) {
                    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits until `list` (the API's `/v1/services`, `None` before it answers) has `n`
/// services, all healthy; panics at a failed one, or after [`BOOT`] with `stderr`.
fn wait_all_healthy(n: usize, list: impl Fn() -> Option<Value>, stderr: impl Fn() -> String) {
    let deadline = Instant::now() + BOOT;
    loop {
        if let Some(body) = list() {
            let services = body["services"].as_array().cloned().unwrap_or_default();
            if let Some(failed) = services.iter().find(|s| s["state"] == "failed") {
                panic!("{} failed: {}", failed["name"], failed["reason"]);
            }
            if services.len() == n && services.iter().all(|s| s["state"] == "healthy") {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{n} services not healthy within {BOOT:?}; stderr: {}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `muster ARGS` under a hard (and soft) descriptor limit of `nofile`, through `sh`'s
/// `ulimit`, or under the inherited limits.
fn under_limit(args: &[&str], nofile: Option<usize>) -> Command {
    let Some(nofile) = nofile else {
        return muster(args);
    };
    let mut command = Command::new("/bin/sh");
    command
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_muster"))
        .args(args)
        .env_remove("MUSTER_FILE")
        .env_remove("MUSTER_STATE_DIR")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    command
}

/// `n` services; those numbered in `noisy` print one line on stdout and one on stderr.
fn config(n: usize, noisy: &[usize]) -> String {
    let mut text = String::from("[settings]\nstate-dir = \"state\"\n\n");
    for i in 0..n {
        if noisy.contains(&i) {
            text.push_str(&format!(
                "[services.s{i:04}]\ncommand = [\"sh\", \"-c\", \"echo out-{i}; echo err-{i} >&2; exec sleep 600\"]\n\n"
            ));
        } else {
            text.push_str(&format!(
                "[services.s{i:04}]\ncommand = [\"sleep\", \"600\"]\n\n"
            ));
        }
    }
    text
}

fn descriptors(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// The descriptors in the table of `pid`'s thread named `muster-spawner`.
fn spawner_table(pid: u32) -> Option<usize> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .find(|task| {
            fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == "muster-spawner")
        })
        .map(|task| fs::read_dir(task.path().join("fd")).map_or(0, Iterator::count))
}

/// The log file's lines of a stream (`stdout`, `stderr`), without their stamps.
fn logged(dir: &Path, service: &str, stream: &str) -> Vec<String> {
    fs::read_to_string(dir.join(format!("state/logs/{service}.log")))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ' ');
            let _stamp = parts.next()?;
            (parts.next()? == stream).then(|| parts.next().unwrap_or("").to_owned())
        })
        .collect()
}

/// Waits until `service`'s log has `line` on `stream`.
fn wait_logged(dir: &Path, service: &str, stream: &str, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logged(dir, service, stream).iter().any(|l| l == line) {
        assert!(
            Instant::now() < deadline,
            "{service}: no {stream} line {line:?}; its log: {:?}",
            fs::read_to_string(dir.join(format!("state/logs/{service}.log")))
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn descriptors_two_pipes_per_service_and_log_files_closed_between_writes() {
    const N: usize = 600;
    let _turn = heavy();
    let mut up = Supervisor::start(&config(N, &[0, N - 1]), None);
    up.wait_healthy(N);
    let held = descriptors(up.pid());
    // Two pipes each, the log files of at most 256 kept open, and muster's own.
    assert!(
        (2 * N..=2 * N + KEEP_OPEN_LOGS + 100).contains(&held),
        "{held} descriptors for {N} services"
    );
    // The spawns came from a thread whose own table holds a handful: what each spawn
    // copies does not grow with the services.
    let spawner = spawner_table(up.pid()).expect("a muster-spawner thread");
    assert!(
        spawner <= 8,
        "the spawner's table holds {spawner} descriptors"
    );
    // The last service's log was opened for its writes, not kept: its lines are there,
    // each on its own stream.
    let last = format!("s{:04}", N - 1);
    wait_logged(up.dir.path(), &last, "stdout", &format!("out-{}", N - 1));
    wait_logged(up.dir.path(), &last, "stderr", &format!("err-{}", N - 1));
    up.stop();
}

#[test]
fn descriptors_past_the_budget_share_one_pipe_and_check_and_up_say_so() {
    const N: usize = 300;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    // Room for two pipes for 100 services and one for the other 200.
    let limit = RESERVE + KEEP_OPEN_LOGS + N + 100;
    if (hard as usize) < limit {
        eprintln!("scale: the hard descriptor limit is {hard}, below {limit}: not run");
        return;
    }
    let _turn = heavy();
    let text = config(N, &[0, N - 1]);

    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("muster.toml"), &text).expect("write muster.toml");
    let checked = under_limit(&["check", "-f", "muster.toml"], Some(limit))
        .current_dir(dir.path())
        .output()
        .expect("muster check");
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success(), "check: {checked:?}");
    assert!(
        said.contains(&format!(
            "holds separate stdout and stderr pipes for 100 of the {N} services"
        )),
        "check said: {said}"
    );

    let mut up = Supervisor::start(&text, Some(limit));
    up.wait_healthy(N);
    let stderr = up.stderr();
    let warned = stderr
        .lines()
        .position(|l| l.contains("descriptors:") && l.contains("100 of the 300 services"));
    assert!(warned.is_some(), "up did not say it: {stderr}");
    let held = descriptors(up.pid());
    assert!(held <= limit, "{held} descriptors under a limit of {limit}");
    // The first service spawned kept its streams apart; the last shares one pipe, and
    // both its lines are there, recorded as stdout.
    wait_logged(up.dir.path(), "s0000", "stderr", "err-0");
    let last = format!("s{:04}", N - 1);
    wait_logged(up.dir.path(), &last, "stdout", &format!("out-{}", N - 1));
    wait_logged(up.dir.path(), &last, "stdout", &format!("err-{}", N - 1));
    up.stop();
}

#[test]
fn status_answered_within_a_second_during_a_large_boot() {
    const N: usize = 1000;
    let _turn = heavy();
    // Each with an exec readiness probe: the probes' spawns, queued four per core, go
    // on while the answers are asked for, and must not hold them up either.
    let probed = config(N, &[]).replace(
        "command = [\"sleep\", \"600\"]\n",
        "command = [\"sleep\", \"600\"]\nready = { exec = [\"true\"] }\n",
    );
    assert!(probed.matches("ready =").count() == N, "{probed}");
    let up = Supervisor::start(&probed, None);
    let deadline = Instant::now() + BOOT;
    let mut answers = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "not all {N} healthy within {BOOT:?}; stderr: {}",
            up.stderr()
        );
        let Some((took, body)) = up.list() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let services = body["services"].as_array().cloned().unwrap_or_default();
        let healthy = services.iter().filter(|s| s["state"] == "healthy").count();
        answers.push((took, healthy));
        if healthy == N {
            break;
        }
    }
    let mut during: Vec<Duration> = answers
        .iter()
        .filter(|(_, healthy)| *healthy < N)
        .map(|(took, _)| *took)
        .collect();
    assert!(
        during.len() >= 3,
        "too few answers came before the boot was done: {answers:?}"
    );
    during.sort();
    // Typical answers within a second (a debug build on a busy 2-core machine), and
    // none held for long behind the boot's spawns.
    let median = during[during.len() / 2];
    let slowest = during[during.len() - 1];
    assert!(
        median < Duration::from_secs(1) && slowest < Duration::from_secs(3),
        "status during the boot: median {median:?}, slowest {slowest:?}: {answers:?}"
    );
}

/// The supervisor's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no VmRSS for pid {pid}"))
}

/// What each running service adds to the supervisor's RSS, measured between two sizes
/// so that the fixed part (the binary, the runtime, the history) cancels out. The debug
/// build this runs holds 10 KiB per service (the release build 10 KiB too), and held
/// 14.4 KiB before the actor's channel carried boxed messages, the actor was boxed in its
/// task, the definitions were shared with the spec, and the allocator gave back what the
/// boot and the status answers freed; the bound sits between the two.
#[test]
fn memory_per_service_stays_bounded() {
    const SMALL: usize = 200;
    const LARGE: usize = 1200;
    const BOUND_KIB: f64 = 12.5;
    let _turn = heavy();
    let resident = |n: usize| {
        let mut up = Supervisor::start(&config(n, &[]), None);
        up.wait_healthy(n);
        let kib = rss_kib(up.pid());
        up.stop();
        kib
    };
    let small = resident(SMALL);
    let large = resident(LARGE);
    let per_service = large.saturating_sub(small) as f64 / (LARGE - SMALL) as f64;
    eprintln!(
        "RSS: {small} KiB with {SMALL} services, {large} KiB with {LARGE}: {per_service:.1} KiB per service"
    );
    assert!(
        per_service < BOUND_KIB,
        "{per_service:.1} KiB of RSS per service (bound {BOUND_KIB}): {small} KiB with \
         {SMALL} services, {large} KiB with {LARGE}"
    );
}

/// A listener on a port from the OS that notes when each connection came; with
/// `http`, each is answered `503` (a readiness probe that keeps failing).
struct Stamps {
    port: u16,
    times: std::sync::Arc<std::sync::Mutex<Vec<Instant>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Stamps {
    fn start(http: bool) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let port = listener.local_addr().expect("address").port();
        let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (noted, stopping) = (times.clone(), stop.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                noted.lock().expect("times").push(Instant::now());
                if http {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let _ = stream.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                }
            }
        });
        Self { port, times, stop }
    }

    /// The connections that came within `from..to`, in windows of `width`: how many in
    /// each.
    fn histogram(&self, from: Instant, to: Instant, width: Duration) -> Vec<usize> {
        let windows = ((to - from).as_secs_f64() / width.as_secs_f64()).round() as usize;
        let mut counts = vec![0; windows];
        for time in self.times.lock().expect("times").iter() {
            if *time >= from && *time < to {
                let index = ((*time - from).as_secs_f64() / width.as_secs_f64()) as usize;
                counts[index.min(windows - 1)] += 1;
            }
        }
        counts
    }
}

impl Drop for Stamps {
    fn drop(&mut self) {
        // The accepting thread sees the flag at its next connection: this one.
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Services started together (a boot) probe at their own phase of the interval, not
/// all at once: 150 whose readiness probe keeps failing (so it polls on its interval)
/// and 150 healthy ones with a liveness probe, each probe to a listener of the test's
/// that notes when it came. Over three intervals, no tenth of the interval holds more
/// than three times its share. Without the phases each group's probes come within the
/// few hundred milliseconds the boot took to spawn them, interval after interval.
#[test]
fn probes_of_services_started_together_spread_over_their_interval() {
    const EACH: usize = 150;
    let _turn = heavy();
    let ready = Stamps::start(true);
    let alive = Stamps::start(false);
    let mut config = String::from("[settings]\nstate-dir = \"{dir}/state\"\n\n");
    for i in 0..EACH {
        config.push_str(&format!(
            "[services.r{i:03}]\ncommand = [\"sleep\", \"600\"]\nready = {{ http = \"http://127.0.0.1:{}/\", interval = \"1s\", timeout = \"10m\" }}\n\n",
            ready.port
        ));
        config.push_str(&format!(
            "[services.a{i:03}]\ncommand = [\"sleep\", \"600\"]\nalive = {{ tcp = \"127.0.0.1:{}\", interval = \"1s\", timeout = \"5s\" }}\n\n",
            alive.port
        ));
    }
    let up = crate::helpers::up::Up::start(&config, &[]);
    // Every one spawned: those probing readiness are starting, the others healthy.
    let deadline = Instant::now() + BOOT;
    loop {
        let answer = up.call(Method::GET, "/v1/services");
        let services = answer.body["services"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let spawned = services
            .iter()
            .filter(|s| (s["state"] == "starting" && s["pid"].is_u64()) || s["state"] == "healthy")
            .count();
        if services.len() == 2 * EACH && spawned == 2 * EACH {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all {} spawned within {BOOT:?}: {spawned}; stderr: {}",
            2 * EACH,
            up.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Readiness retries back off to the interval within 1.3 s of the spawn (10 ms,
    // 20 ms ... 640 ms), and the first attempt at the interval falls within one and a
    // half intervals of that: from then on each service probes once an interval.
    let from = Instant::now() + Duration::from_secs(3);
    let to = from + Duration::from_secs(3);
    let interval = Duration::from_secs(1);
    // The probes are counted over this span of time, whatever happens in it.
    std::thread::sleep(to.saturating_duration_since(Instant::now()));
    for (what, stamps) in [("readiness", &ready), ("liveness", &alive)] {
        let counts = stamps.histogram(from, to, interval / 10);
        let total: usize = counts.iter().sum();
        // Each service about three times (a loaded machine may be late with some).
        assert!(
            total >= 2 * EACH,
            "{what}: only {total} probes of {EACH} services in 3 intervals: {counts:?}"
        );
        let share = total as f64 / counts.len() as f64;
        let most = counts.iter().copied().max().unwrap_or(0);
        eprintln!(
            "{what}: {total} probes in 3 intervals, at most {most} in a tenth of one \
             (average {share:.1}): {counts:?}"
        );
        assert!(
            (most as f64) <= 3.0 * share,
            "{what} probes came in a herd: {most} within a tenth of the interval, against \
             {share:.0} on average; per tenth: {counts:?}"
        );
    }
}

/// Exec probes take turns: 100 services whose readiness probe (a shell script) notes
/// how many probes are running as it starts (a file each, while it runs) never see
/// more than the cap (four per core) at once, and every one becomes ready. Without the
/// cap the boot forks them all within a few hundred milliseconds and each runs 200 ms.
#[test]
fn exec_probes_run_at_most_four_per_core_at_once() {
    const N: usize = 100;
    let _turn = heavy();
    let cap = 4 * std::thread::available_parallelism().map_or(1, usize::from);
    let dir = tempfile::tempdir().expect("temp dir");
    let running = dir.path().join("running");
    fs::create_dir(&running).expect("mkdir running");
    let counts = dir.path().join("counts");
    let script = dir.path().join("probe.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\n: > {running}/$$\nset -- {running}/*\necho $# >> {counts}\nsleep 0.2\nrm -f {running}/$$\n",
            running = running.display(),
            counts = counts.display()
        ),
    )
    .expect("write probe.sh");
    let mut config = String::from("[settings]\nstate-dir = \"{dir}/state\"\n\n");
    for i in 0..N {
        config.push_str(&format!(
            "[services.s{i:03}]\ncommand = [\"sleep\", \"600\"]\nready = {{ exec = [\"sh\", \"{}\"], timeout = \"10m\" }}\n\n",
            script.display()
        ));
    }
    let up = crate::helpers::up::Up::start_in(dir, &config, &[]);
    wait_all_healthy(
        N,
        || Some(up.call(Method::GET, "/v1/services").body),
        || up.stderr(),
    );
    let seen: Vec<usize> = fs::read_to_string(&counts)
        .expect("counts")
        .lines()
        .map(|line| line.trim().parse().expect("a count"))
        .collect();
    assert!(
        seen.len() >= N,
        "{} probes ran for {N} services",
        seen.len()
    );
    let most = seen.iter().copied().max().unwrap_or(0);
    eprintln!(
        "{} exec probes, at most {most} at once (cap {cap})",
        seen.len()
    );
    assert!(
        most <= cap,
        "{most} exec probes ran at once, more than the cap of {cap}: {seen:?}"
    );
}
