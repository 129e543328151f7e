//! Cluster-wide singletons against a real three-member etcd on loopback and three real
//! `muster up` processes, each with its own directory, state and config.
//!
//! Every instance of the singleton (a python fixture) appends `start HOST FENCE T` and
//! then `alive HOST FENCE T` every 20 ms to one log (`T`: `CLOCK_MONOTONIC` ns, which
//! every process of the machine shares). The checks: no two instances' lives overlap,
//! fences only grow, and a sampler that counts the fixture's processes in `/proc`
//! every 10 ms never sees two.
//!
//! These tests need etcd (`apt-get install etcd-server`); without it they say they
//! were skipped, and fail under `MUSTER_REQUIRE_ALL=1`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::helpers::up::{Up, free_port};
use crate::helpers::{Need, require};

const TTL: Duration = Duration::from_secs(3);

fn etcd_present(what: &str) -> bool {
    require(Need::Program("etcd"), what)
}

/// A three-member etcd on loopback; every member is killed on drop.
struct Etcd {
    members: Vec<Option<Child>>,
    clients: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let names = ["e0", "e1", "e2"];
        let peers: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let clients: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let initial: Vec<String> = names
            .iter()
            .zip(&peers)
            .map(|(name, port)| format!("{name}=http://127.0.0.1:{port}"))
            .collect();
        let members = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
                Some(
                    Command::new("etcd")
                        .args(["--name", name])
                        .arg("--data-dir")
                        .arg(dir.path().join(name))
                        .args([
                            "--listen-client-urls",
                            &format!("http://127.0.0.1:{}", clients[i]),
                            "--advertise-client-urls",
                            &format!("http://127.0.0.1:{}", clients[i]),
                            "--listen-peer-urls",
                            &format!("http://127.0.0.1:{}", peers[i]),
                            "--initial-advertise-peer-urls",
                            &format!("http://127.0.0.1:{}", peers[i]),
                            "--initial-cluster",
                            &initial.join(","),
                            "--initial-cluster-state",
                            "new",
                            "--heartbeat-interval",
                            "50",
                            "--election-timeout",
                            "500",
                        ])
                        .stdout(Stdio::null())
                        .stderr(log)
                        .process_group(0)
                        .spawn()
                        .expect("spawn etcd"),
                )
            })
            .collect();
        let etcd = Self {
            members,
            clients: clients
                .iter()
                .map(|p| format!("http://127.0.0.1:{p}"))
                .collect(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !etcd
            .clients
            .iter()
            .all(|c| post(c, "/v3/kv/range", r#"{"key":"eA=="}"#).is_some())
        {
            assert!(Instant::now() < deadline, "etcd did not come up");
            thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    /// The index of the member that is the raft leader now.
    fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for (i, client) in self.clients.iter().enumerate() {
                if let Some(status) = post(client, "/v3/maintenance/status", "{}") {
                    let leader = status["leader"].as_str().unwrap_or("");
                    let me = status["header"]["member_id"].as_str().unwrap_or("-");
                    if leader == me {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no etcd leader");
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self, member: usize) {
        if let Some(mut child) = self.members[member].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

/// One POST to etcd's gateway, answered with JSON, or `None`.
fn post(base: &str, path: &str, body: &str) -> Option<serde_json::Value> {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    if !answer.starts_with("HTTP/1.1 200") {
        return None;
    }
    serde_json::from_str(answer.split("\r\n\r\n").nth(1)?).ok()
}

/// A TCP relay the test can cut: every connection through it is closed, and new ones
/// are refused, from `cut` on.
struct Relay {
    port: u16,
    cut: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn to(target: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = target.trim_start_matches("http://").to_owned();
        let cut = Arc::new(AtomicBool::new(false));
        let streams = Arc::new(Mutex::new(Vec::new()));
        let (flag, open) = (Arc::clone(&cut), Arc::clone(&streams));
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let pairs = [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ];
                open.lock().unwrap().extend([client, server]);
                for (mut from, mut to) in pairs {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, cut, streams }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for stream in self.streams.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The singleton's fixture: logs its start and then that it is alive, every 20 ms.
/// With `SERVE=ADDRESS:PORT` it also answers every connection there with its host and
/// fence.
const FIXTURE: &str = r#"import os, socket, sys, threading, time
log, host, fence = sys.argv[1], sys.argv[2], os.environ["MUSTER_FENCE"]
serve = os.environ.get("SERVE")
if serve:
    address, port = serve.rsplit(":", 1)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, int(port)))
    server.listen(64)
    def answer():
        while True:
            client, _ = server.accept()
            client.sendall(f"{host} {fence}\n".encode())
            client.close()
    threading.Thread(target=answer, daemon=True).start()
def say(what):
    with open(log, "a") as f:
        f.write(f"{what} {host} {fence} {time.monotonic_ns()}\n")
say("start")
while True:
    say("alive")
    time.sleep(0.02)
"#;

/// Three hosts of one cluster sharing a log directory.
struct Cluster {
    hosts: Vec<Option<Up>>,
    log: PathBuf,
    _shared: tempfile::TempDir,
    sampler: Sampler,
}

fn config(name: &str, etcd: &[String], host: &str, log: &Path, script: &Path) -> String {
    config_with(name, etcd, host, log, script, "")
}

/// Host `hI` advertises 127.0.0.(I+1), as if each were a machine of its own.
fn advertise(host: &str) -> String {
    let i: u8 = host.trim_start_matches('h').parse().unwrap_or(0);
    format!("127.0.0.{}", i.saturating_add(1))
}

/// [`config`] with `extra` after the singleton's keys: more of its keys first, then
/// other tables.
fn config_with(
    name: &str,
    etcd: &[String],
    host: &str,
    log: &Path,
    script: &Path,
    extra: &str,
) -> String {
    let name = name.replace(|c: char| !c.is_ascii_alphanumeric(), "-");
    let endpoints: Vec<String> = etcd.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        r#"[settings]
state-dir = "{{dir}}/state"
shutdown-timeout = "5s"

[cluster]
name = "{name}"
etcd = [{}]
host = "{host}"
advertise = "{}"
lease-ttl = "{}s"

[services.coordinator]
command = ["{}", "{}", "{}", "{host}"]
singleton = true
stop-timeout = "1s"
{extra}
"#,
        endpoints.join(", "),
        advertise(host),
        TTL.as_secs(),
        crate::helpers::python(),
        script.display(),
        log.display(),
    )
}

impl Cluster {
    /// Three hosts; `etcd_of(i)` gives host i's endpoints.
    fn start(etcd_of: impl Fn(usize) -> Vec<String>) -> Self {
        Self::start_with(etcd_of, false)
    }

    /// With `first_alone`, host 0 starts (and owns the singleton) before the others.
    fn start_with(etcd_of: impl Fn(usize) -> Vec<String>, first_alone: bool) -> Self {
        Self::start_custom(etcd_of, first_alone, |_| String::new())
    }

    /// [`Self::start_with`], with `extra(i)` added to host i's config (see
    /// [`config_with`]).
    fn start_custom(
        etcd_of: impl Fn(usize) -> Vec<String>,
        first_alone: bool,
        extra: impl Fn(usize) -> String,
    ) -> Self {
        let shared = tempfile::tempdir().unwrap();
        let log = shared.path().join("instances.log");
        let script = shared.path().join("coordinator.py");
        std::fs::write(&script, FIXTURE).unwrap();
        let name = format!("t{}-{}", std::process::id(), fastrand::u32(..));
        let sampler = Sampler::start(script.display().to_string());
        let mut cluster = Self {
            hosts: Vec::new(),
            log,
            _shared: shared,
            sampler,
        };
        for i in 0..3 {
            let host = Up::start(
                &config_with(
                    &name,
                    &etcd_of(i),
                    &format!("h{i}"),
                    &cluster.log,
                    &script,
                    &extra(i),
                ),
                &[],
            );
            cluster.hosts.push(Some(host));
            if first_alone && i == 0 {
                let first = cluster.wait_instance(0, Duration::from_secs(20));
                assert_eq!(first.0, "h0");
            }
        }
        cluster
    }

    fn entries(&self) -> Vec<(String, String, i64, u128)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    [what, host, fence, t] => Some((
                        (*what).to_owned(),
                        (*host).to_owned(),
                        fence.parse().ok()?,
                        t.parse().ok()?,
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    /// Each instance's (host, fence, first, last) in order of start.
    fn lives(&self) -> Vec<(String, i64, u128, u128)> {
        let mut lives: Vec<(String, i64, u128, u128)> = Vec::new();
        for (what, host, fence, t) in self.entries() {
            match lives.iter_mut().find(|l| l.0 == host && l.1 == fence) {
                Some(life) => life.3 = life.3.max(t),
                None => {
                    assert_eq!(what, "start", "an instance's first line is its start");
                    lives.push((host, fence, t, t));
                }
            }
        }
        lives.sort_by_key(|l| l.2);
        lives
    }

    /// Waits for an instance with a fence above `above` to be alive; returns it.
    fn wait_instance(&self, above: i64, within: Duration) -> (String, i64, u128, u128) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(life) = self.lives().into_iter().find(|l| l.1 > above)
                && self
                    .entries()
                    .iter()
                    .filter(|e| e.0 == "alive" && e.2 == life.1)
                    .count()
                    >= 2
            {
                return life;
            }
            assert!(
                Instant::now() < deadline,
                "no instance with a fence above {above} within {within:?}; lives: {:?}",
                self.lives()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// No two lives overlap; fences grow with starts; never two processes at a sample.
    fn check(&self) {
        let lives = self.lives();
        for pair in lives.windows(2) {
            assert!(
                pair[1].2 > pair[0].3,
                "two instances overlapped: {:?} and {:?}",
                pair[0],
                pair[1]
            );
            assert!(pair[1].1 > pair[0].1, "fences went back: {lives:?}");
        }
        assert!(
            self.sampler.most.load(Ordering::SeqCst) <= 1,
            "the sampler saw {} instances at once",
            self.sampler.most.load(Ordering::SeqCst)
        );
    }

    fn host_of(&self, name: &str) -> usize {
        name.trim_start_matches('h').parse().unwrap()
    }
}

/// Counts the fixture's live processes every 10 ms; keeps the most seen at once.
struct Sampler {
    most: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Sampler {
    fn start(token: String) -> Self {
        let most = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, done) = (Arc::clone(&most), Arc::clone(&stop));
        thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                let count = std::fs::read_dir("/proc")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|entry| {
                        let path = entry.path();
                        let cmdline = std::fs::read(path.join("cmdline")).unwrap_or_default();
                        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
                        let state = stat
                            .rfind(')')
                            .and_then(|i| stat[i + 1..].split_whitespace().next());
                        String::from_utf8_lossy(&cmdline).contains(&token)
                            && !matches!(state, Some("Z" | "X") | None)
                    })
                    .count();
                seen.fetch_max(count, Ordering::SeqCst);
                thread::sleep(Duration::from_millis(10));
            }
        });
        Self { most, stop }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// `CLOCK_MONOTONIC` in ns, the fixture's clock.
fn mono_ns() -> u128 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u128 * 1_000_000_000 + t.tv_nsec() as u128
}

fn pid_alive(pid: i32) -> bool {
    crate::helpers::up::alive(pid)
}

#[test]
fn singleton_fails_over_when_its_owners_supervisor_is_killed() {
    if !etcd_present("failover of a singleton when its owner's supervisor is SIGKILLed") {
        return;
    }
    let etcd = Etcd::start();
    let mut cluster = Cluster::start(|_| etcd.clients.clone());
    let first = cluster.wait_instance(0, Duration::from_secs(20));
    let owner = cluster.host_of(&first.0);
    let killed_at = Instant::now();
    let up = cluster.hosts[owner].take().unwrap();
    let (_dir, _events) = up.kill_supervisor();
    // Another host's instance is up within the TTL and its start time.
    let second = cluster.wait_instance(first.1, TTL + Duration::from_secs(3));
    let took = killed_at.elapsed();
    assert_ne!(second.0, first.0, "a surviving host took over");
    assert!(
        took < TTL + Duration::from_secs(3),
        "failover took {took:?}"
    );
    cluster.check();
    drop(etcd);
}

#[test]
fn singleton_owner_paused_past_its_lease_has_its_instance_stopped() {
    if !etcd_present("a singleton owner stopped with SIGSTOP past its lease") {
        return;
    }
    let etcd = Etcd::start();
    let mut cluster = Cluster::start(|_| etcd.clients.clone());
    let first = cluster.wait_instance(0, Duration::from_secs(20));
    let owner = cluster.host_of(&first.0);
    let pid = cluster.hosts[owner].as_ref().unwrap().pid() as i32;
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let second = cluster.wait_instance(first.1, TTL * 3);
    assert_ne!(second.0, first.0);
    kill(Pid::from_raw(pid), Signal::SIGCONT).unwrap();
    // Resumed, the old owner says it was fenced and does not start the service again
    // while another host owns it.
    let up = cluster.hosts[owner].as_mut().unwrap();
    let fenced = up.wait_event("coordinator", "fenced");
    assert!(
        fenced["message"]
            .as_str()
            .unwrap()
            .contains("not renewed in time"),
        "{fenced}"
    );
    // A little more life for everyone, then the log must still be clean.
    let until = Instant::now() + TTL;
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(50));
    }
    cluster.check();
    assert_eq!(cluster.lives().len(), 2, "{:?}", cluster.lives());
}

#[test]
fn singleton_owner_cut_off_from_etcd_stops_before_its_lease_expires() {
    if !etcd_present("a singleton owner cut off from etcd") {
        return;
    }
    let etcd = Etcd::start();
    // Host 0 reaches etcd only through relays the test controls.
    let relays: Vec<Relay> = etcd.clients.iter().map(|c| Relay::to(c)).collect();
    let through: Vec<String> = relays
        .iter()
        .map(|r| format!("http://127.0.0.1:{}", r.port))
        .collect();
    let clients = etcd.clients.clone();
    // Host 0 starts first, so that it is the owner.
    let mut cluster = Cluster::start_with(
        move |i| {
            if i == 0 {
                through.clone()
            } else {
                clients.clone()
            }
        },
        true,
    );
    let owned = cluster.wait_instance(0, Duration::from_secs(20));
    let cut_at = mono_ns();
    for relay in &relays {
        relay.cut();
    }
    let up = cluster.hosts[0].as_mut().unwrap();
    let fenced = up.wait_event("coordinator", "fenced");
    assert!(
        fenced["message"]
            .as_str()
            .unwrap()
            .contains("not renewed in time"),
        "{fenced}"
    );
    let next = cluster.wait_instance(owned.1, TTL * 4);
    assert_ne!(next.0, "h0");
    // h0's instance was gone before the lease could have expired: its last sign of
    // life is less than a TTL after the cut.
    let lives = cluster.lives();
    let old = lives.iter().find(|l| l.1 == owned.1).unwrap();
    assert!(
        old.3 < cut_at + TTL.as_nanos(),
        "the cut-off owner's instance lived {:?} past the cut",
        Duration::from_nanos((old.3 - cut_at) as u64)
    );
    cluster.check();
}

#[test]
fn killing_the_etcd_leader_causes_no_failover() {
    if !etcd_present("killing etcd's leader under a singleton") {
        return;
    }
    let mut etcd = Etcd::start();
    let cluster = Cluster::start(|_| etcd.clients.clone());
    let first = cluster.wait_instance(0, Duration::from_secs(20));
    let leader = etcd.leader();
    etcd.kill(leader);
    let until = Instant::now() + TTL * 3;
    while Instant::now() < until {
        thread::sleep(Duration::from_millis(50));
    }
    let lives = cluster.lives();
    assert_eq!(
        lives.len(),
        1,
        "the leader's death moved the singleton: {lives:?}"
    );
    let entries = cluster.entries();
    let last = entries
        .iter()
        .filter(|e| e.2 == first.1)
        .map(|e| e.3)
        .max()
        .unwrap();
    assert!(
        mono_ns() - last < Duration::from_secs(1).as_nanos(),
        "the owner's instance stopped"
    );
    for up in cluster.hosts.iter().flatten() {
        assert!(
            !up.events.iter().any(|e| e["kind"] == "fenced"),
            "a host fenced: {:?}",
            up.events
        );
    }
    cluster.check();
}

#[test]
fn a_host_name_held_by_a_live_muster_is_refused() {
    if !etcd_present("a host name already taken in the cluster") {
        return;
    }
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("c.py");
    std::fs::write(&script, FIXTURE).unwrap();
    let log = dir.path().join("log");
    let mut first = Up::start(&config("taken", &etcd.clients, "same", &log, &script), &[]);
    first.wait_event("coordinator", "acquired");
    let mut second = Up::start(&config("taken", &etcd.clients, "same", &log, &script), &[]);
    let ended = second.wait_exit();
    assert_eq!(ended.code, 2, "{}", ended.stderr);
    assert!(
        ended
            .stderr
            .contains("host name `same` is taken in cluster `taken` by a live muster")
            && ended.stderr.contains(&format!("pid {}", first.pid())),
        "{}",
        ended.stderr
    );
    assert!(pid_alive(first.pid() as i32));
}

/// `muster ARGS -f` host `up`'s config.
fn on(up: &Up, args: &[&str]) -> crate::helpers::Run {
    let file = up.path("muster.toml").display().to_string();
    let mut all = vec!["-f", file.as_str()];
    all.extend_from_slice(args);
    crate::helpers::muster_run(&all)
}

fn json(run: &crate::helpers::Run) -> serde_json::Value {
    assert_eq!(run.code, 0, "{run:?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", run.stdout))
}

#[test]
fn cluster_view_shows_hosts_owners_fences_and_every_hosts_services() {
    if !etcd_present("`muster cluster` and `status --cluster`") {
        return;
    }
    let etcd = Etcd::start();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut cluster = Cluster::start_custom(
        |_| etcd.clients.clone(),
        false,
        |i| {
            format!(
                "ports = [{}]\n\n[services.local{i}]\ncommand = [\"sleep\", \"1000\"]\n",
                ports[i]
            )
        },
    );
    let first = cluster.wait_instance(0, Duration::from_secs(20));
    let owner = cluster.host_of(&first.0);
    let asker = (owner + 1) % 3;
    let up = cluster.hosts[asker].as_ref().unwrap();
    // Each host publishes its record when something in it changes: wait for the
    // owner's to say the singleton is healthy.
    let deadline = Instant::now() + Duration::from_secs(10);
    let view = loop {
        let view = json(&on(up, &["cluster", "--json"]));
        // Every host joined (they start one after another), and the owner's record
        // says the singleton is healthy.
        let joined = view["hosts"]
            .as_array()
            .is_some_and(|hosts| hosts.len() == 3 && hosts.iter().all(|h| h["alive"] == true));
        if joined && view["singletons"][0]["state"] == "healthy" {
            break view;
        }
        assert!(Instant::now() < deadline, "{view}");
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(view["host"], format!("h{asker}"));
    let hosts = view["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3, "{view}");
    for (i, host) in hosts.iter().enumerate() {
        assert_eq!(host["name"], format!("h{i}"));
        assert_eq!(host["alive"], true);
        assert_eq!(host["address"], format!("127.0.0.{}", i + 1));
        assert_eq!(
            host["pid"].as_u64(),
            Some(u64::from(cluster.hosts[i].as_ref().unwrap().pid()))
        );
    }
    let singleton = &view["singletons"][0];
    assert_eq!(singleton["name"], "coordinator");
    assert_eq!(singleton["owner"], first.0.as_str());
    assert_eq!(singleton["fence"].as_i64(), Some(first.1));
    assert_eq!(
        singleton["endpoint"],
        format!("127.0.0.{}:{}", owner + 1, ports[owner])
    );
    assert!(view["etcd_requests"].as_u64().unwrap() > 0);
    // The table says the same in words.
    let table = on(up, &["cluster"]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(
        table.stdout.contains("3 of 3 hosts alive"),
        "{}",
        table.stdout
    );
    assert!(
        table
            .stdout
            .lines()
            .any(|l| l.starts_with("coordinator") && l.contains(&first.0) && l.contains("healthy")),
        "{}",
        table.stdout
    );

    // Every host's services, from any host (each host writes its record within a
    // second or so of a change).
    let deadline = Instant::now() + Duration::from_secs(10);
    let services = loop {
        let services = json(&on(up, &["status", "--cluster", "--json"]));
        let settled = services["hosts"].as_array().unwrap().iter().all(|host| {
            host["services"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["state"] == "healthy" || s["state"] == "pending")
        });
        if settled {
            break services;
        }
        assert!(Instant::now() < deadline, "{services}");
        thread::sleep(Duration::from_millis(100));
    };
    for (i, host) in services["hosts"].as_array().unwrap().iter().enumerate() {
        let names: Vec<&str> = host["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["coordinator", &format!("local{i}")], "{services}");
        let coordinator = &host["services"][0];
        assert_eq!(coordinator["singleton"], true);
        let expected = if i == owner { "healthy" } else { "pending" };
        assert_eq!(coordinator["state"], expected, "{services}");
    }
    let table = on(up, &["status", "--cluster"]);
    assert!(
        table.stdout.contains(&format!("local{owner}")) && table.stdout.contains("(singleton)"),
        "{}",
        table.stdout
    );

    // A host that is gone stays listed, not alive.
    let killed = cluster.hosts[owner].take().unwrap();
    let (_dir, _events) = killed.kill_supervisor();
    let up = cluster.hosts[asker].as_ref().unwrap();
    let deadline = Instant::now() + TTL * 3;
    loop {
        let view = json(&on(up, &["cluster", "--json"]));
        let gone = &view["hosts"][owner];
        if gone["alive"] == false && view["singletons"][0]["owner"] != first.0.as_str() {
            assert_eq!(gone["pid"], serde_json::Value::Null);
            break;
        }
        assert!(Instant::now() < deadline, "{view}");
        thread::sleep(Duration::from_millis(100));
    }
    let gone = on(up, &["status", "--cluster"]);
    assert!(
        gone.stdout
            .lines()
            .any(|l| l.starts_with(&format!("h{owner}")) && l.contains("gone")),
        "{}",
        gone.stdout
    );
    cluster.check();
}

#[test]
fn cluster_commands_without_a_cluster_say_so_in_one_line() {
    let mut up = Up::start(
        "[settings]\nstate-dir = \"{dir}/state\"\n\n[services.a]\ncommand = [\"sleep\", \"1000\"]\n",
        &[],
    );
    up.wait_event("a", "spawned");
    for args in [&["cluster"][..], &["status", "--cluster"]] {
        let run = on(&up, args);
        assert_eq!(run.code, 2, "{run:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
        assert!(
            run.stderr.contains("has no [cluster] section"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn cluster_view_says_when_etcd_does_not_answer() {
    if !etcd_present("`muster cluster` with etcd gone") {
        return;
    }
    let mut etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("c.py");
    std::fs::write(&script, FIXTURE).unwrap();
    let log = dir.path().join("log");
    let mut up = Up::start(&config("gone", &etcd.clients, "h0", &log, &script), &[]);
    up.wait_event("coordinator", "acquired");
    for member in 0..3 {
        etcd.kill(member);
    }
    let run = on(&up, &["cluster"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("cannot read cluster `gone` from etcd"),
        "{}",
        run.stderr
    );
}

#[test]
fn ensure_of_a_singleton_from_any_host_answers_with_its_owner() {
    if !etcd_present("`ensure` of a singleton owned by another host") {
        return;
    }
    let etcd = Etcd::start();
    // h2 is not a candidate; h0 starts alone and owns it.
    let port = free_port();
    let cluster = Cluster::start_custom(
        |_| etcd.clients.clone(),
        true,
        move |_| format!("ports = [{port}]\nhosts = [\"h0\", \"h1\"]\n"),
    );
    let first = cluster.wait_instance(0, Duration::from_secs(20));
    assert_eq!(first.0, "h0");
    for asker in [1, 2] {
        let up = cluster.hosts[asker].as_ref().unwrap();
        let answer = json(&on(
            up,
            &["ensure", "coordinator", "--json", "--timeout", "10s"],
        ));
        let placed = &answer["singleton"];
        assert_eq!(placed["host"], "h0", "{answer}");
        assert_eq!(placed["endpoint"], format!("127.0.0.1:{port}"));
        assert_eq!(placed["fence"].as_i64(), Some(first.1));
        assert_eq!(placed["here"], false);
        let said = on(up, &["ensure", "coordinator"]);
        assert_eq!(said.code, 0, "{said:?}");
        assert_eq!(
            said.stdout.trim(),
            format!(
                "coordinator is healthy on host h0 at 127.0.0.1:{port} (fence {})",
                first.1
            )
        );
    }
    // The Python client says the same.
    let file = cluster.hosts[2].as_ref().unwrap().path("muster.toml");
    let said = crate::helpers::run(
        Command::new(crate::helpers::python())
            .arg("-c")
            .arg("import sys, muster; e = muster.Client(sys.argv[1]).ensure('coordinator'); print(e.owner, e.fence, e.address)")
            .arg(&file)
            .env("PYTHONPATH", crate::helpers::repo().join("python")),
    );
    assert_eq!(said.code, 0, "{said:?}");
    assert_eq!(
        said.stdout.trim(),
        format!("h0 {} 127.0.0.1:{port}", first.1)
    );
    // Asked on the owner: here.
    let answer = json(&on(
        cluster.hosts[0].as_ref().unwrap(),
        &["ensure", "coordinator", "--json"],
    ));
    assert_eq!(answer["singleton"]["here"], true, "{answer}");
    assert_eq!(answer["state"], "healthy");
    assert_eq!(cluster.lives().len(), 1, "{:?}", cluster.lives());
    cluster.check();
}

#[test]
fn ensure_on_a_host_that_is_not_a_candidate_waits_for_an_owner_and_says_why() {
    if !etcd_present("`ensure` of an unowned singleton on a host that is not a candidate") {
        return;
    }
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("c.py");
    std::fs::write(&script, FIXTURE).unwrap();
    let log = dir.path().join("log");
    // The only candidate never runs: h2 waits in vain.
    let extra = "hosts = [\"h9\"]\n";
    let up = Up::start(
        &config_with("nocand", &etcd.clients, "h2", &log, &script, extra),
        &[],
    );
    crate::helpers::up::eventually("h2 joined the cluster", || {
        let run = on(&up, &["cluster", "--json"]);
        run.code == 0 && run.stdout.contains("\"h2\"")
    });
    let run = on(&up, &["ensure", "coordinator", "--timeout", "2s"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("no host runs it")
            && run
                .stderr
                .contains("this host (`h2`) is not one of its candidates (h9)"),
        "{}",
        run.stderr
    );
    assert!(!log.exists() || std::fs::read_to_string(&log).unwrap().is_empty());
}

#[test]
fn depends_on_a_singleton_or_another_hosts_service_waits_for_it_there_and_gets_its_endpoint() {
    if !etcd_present("cross-host `depends-on`") {
        return;
    }
    let etcd = Etcd::start();
    let shared = tempfile::tempdir().unwrap();
    let out = shared.path().to_owned();
    let (singleton_port, rpc_port) = (free_port(), free_port());
    // Every host: a worker on the singleton. h0: `rpc`; h1: `client` on `rpc@h0`;
    // h2: `lost` on a host that does not exist.
    let extra = |i: usize| {
        let worker = format!(
            "\n[services.worker]\ncommand = [\"sh\", \"-c\", \"echo $MUSTER_DEP_COORDINATOR_ADDR $MUSTER_DEP_COORDINATOR_FENCE > {}/worker{i}; exec sleep 1000\"]\ndepends-on = [\"coordinator\"]\n",
            out.display()
        );
        let own = match i {
            0 => format!("\n[services.rpc]\ncommand = [\"sleep\", \"1000\"]\nports = [{rpc_port}]\n"),
            1 => format!(
                "\n[services.client]\ncommand = [\"sh\", \"-c\", \"echo $MUSTER_DEP_RPC_AT_H0_ADDR > {}/client; exec sleep 1000\"]\ndepends-on = [\"rpc@h0\"]\n",
                out.display()
            ),
            _ => "\n[services.lost]\ncommand = [\"sleep\", \"1000\"]\ndepends-on = { \"rpc@h9\" = \"started\" }\n".to_owned(),
        };
        format!("ports = [{singleton_port}]\n{worker}{own}")
    };
    let mut cluster = Cluster::start_custom(|_| etcd.clients.clone(), true, extra);
    let first = cluster.wait_instance(0, Duration::from_secs(20));
    assert_eq!(first.0, "h0");
    for i in 0..3 {
        let up = cluster.hosts[i].as_mut().unwrap();
        up.wait_event("worker", "ready");
        // `ready` is the spawn (no probe): the line may not be written yet.
        let said = written(&shared.path().join(format!("worker{i}")));
        assert_eq!(
            said.trim(),
            format!("127.0.0.1:{singleton_port} {}", first.1),
            "host h{i}"
        );
    }
    cluster.hosts[1]
        .as_mut()
        .unwrap()
        .wait_event("client", "ready");
    let said = written(&shared.path().join("client"));
    assert_eq!(said.trim(), format!("127.0.0.1:{rpc_port}"));
    let view = json(&on(
        cluster.hosts[1].as_ref().unwrap(),
        &["status", "client", "--json"],
    ));
    assert_eq!(view["depends_on"][0]["service"], "rpc@h0", "{view}");
    // An unknown host is a reason to wait, in status.
    let up = cluster.hosts[2].as_ref().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = on(up, &["status", "lost", "--json"]);
        assert_eq!(run.code, 1, "{run:?}");
        let status: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        assert_eq!(status["state"], "pending", "{status}");
        let reason = status["reason"].as_str().unwrap();
        if reason.contains("`rpc@h9` (started; no host `h9` is in the cluster") {
            break;
        }
        assert!(Instant::now() < deadline, "{reason}");
        thread::sleep(Duration::from_millis(100));
    }
    cluster.check();
}

#[test]
fn check_validates_another_hosts_service_in_depends_on() {
    let header = "[cluster]\nname = \"lab\"\netcd = [\"http://127.0.0.1:2379\"]\nhost = \"a\"\n\n";
    for (entry, expected) in [
        ("rpc@", "`rpc@` does not name a service of another host"),
        ("Rpc@b", "`Rpc@b` does not name a service of another host"),
        (
            "rpc@b/c",
            "`rpc@b/c` does not name a service of another host",
        ),
    ] {
        let source = format!(
            "{header}[services.w]\ncommand = [\"sleep\", \"1\"]\ndepends-on = [\"{entry}\"]\n"
        );
        let run = crate::helpers::check_source(source.as_bytes(), &[]);
        assert_eq!(run.code, 2, "{entry}: {run:?}");
        assert!(run.stderr.contains(expected), "{entry}: {}", run.stderr);
    }
    let good = format!(
        "{header}[services.w]\ncommand = [\"sleep\", \"1\"]\ndepends-on = {{ \"rpc@gpu-b\" = \"healthy\" }}\n"
    );
    let run = crate::helpers::check_source(good.as_bytes(), &[]);
    assert_eq!(run.code, 0, "{run:?}");
    let restart = format!(
        "{header}[services.w]\ncommand = [\"sleep\", \"1\"]\ndepends-on = {{ \"rpc@b\" = {{ restart = true }} }}\n"
    );
    let run = crate::helpers::check_source(restart.as_bytes(), &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("cannot be followed"), "{}", run.stderr);
    let alone = "[services.w]\ncommand = [\"sleep\", \"1\"]\ndepends-on = [\"rpc@b\"]\n";
    let run = crate::helpers::check_source(alone.as_bytes(), &[]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains(
            "`services.w` depends on `rpc@b`, a service of another host, but there is no [cluster]"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn singleton_proxy_on_every_host_forwards_to_the_owner_across_a_failover() {
    if !etcd_present("a singleton's proxy on every host") {
        return;
    }
    let etcd = Etcd::start();
    // Each host's instance would listen on its own address; each host's proxy on its
    // own, forwarding to wherever the singleton runs.
    let (upstream, listen) = (free_port(), free_port());
    let mut cluster = Cluster::start_custom(
        |_| etcd.clients.clone(),
        true,
        |i| {
            let address = format!("127.0.0.{}", i + 1);
            format!(
                "env = {{ SERVE = \"{address}:{upstream}\" }}\nproxy = {{ listen = \"{address}:{listen}\", upstream = \"{address}:{upstream}\" }}\n"
            )
        },
    );
    let first = cluster.wait_instance(0, Duration::from_secs(20));
    assert_eq!(first.0, "h0");
    let ask = |i: usize| -> String {
        let mut stream = TcpStream::connect(format!("127.0.0.{}:{listen}", i + 1)).unwrap();
        stream
            .set_read_timeout(Some(TTL * 4 + Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer.trim().to_owned()
    };
    // Every host's proxy answers (the owner's record must say healthy first).
    for i in 0..3 {
        assert_eq!(ask(i), format!("h0 {}", first.1), "through h{i}'s proxy");
    }
    // The owner's supervisor dies; a client of h2's proxy that connects now is served
    // by the next owner, once there is one.
    let up = cluster.hosts[0].take().unwrap();
    let (_dir, _events) = up.kill_supervisor();
    // Its guard stops its instance at once (its record stays until its lease ends).
    crate::helpers::up::eventually("h0's instance is gone", || {
        TcpStream::connect(format!("127.0.0.1:{upstream}")).is_err()
    });
    let answer = ask(2);
    let second = cluster.wait_instance(first.1, TTL + Duration::from_secs(3));
    assert_eq!(
        answer,
        format!("{} {}", second.0, second.1),
        "{:?}",
        cluster.lives()
    );
    for i in 1..3 {
        assert_eq!(
            ask(i),
            format!("{} {}", second.0, second.1),
            "through h{i}'s proxy"
        );
    }
    cluster.check();
}

#[test]
fn the_cluster_example_is_a_valid_config_for_each_host() {
    let example = crate::helpers::repo().join("examples/cluster");
    let file = example.join("muster.toml");
    for (host, address) in [("a", "127.0.0.1"), ("b", "127.0.0.2"), ("c", "127.0.0.3")] {
        let run = crate::helpers::run(
            crate::helpers::muster(&["check", "-f", file.to_str().unwrap()])
                .env("HOST", host)
                .env("ADDRESS", address)
                .env("ETCD1", "http://127.0.0.1:23791")
                .env("ETCD2", "http://127.0.0.1:23792")
                .env("ETCD3", "http://127.0.0.1:23793")
                .env("EXAMPLE", &example),
        );
        assert_eq!(run.code, 0, "host {host}: {run:?}");
    }
}

#[test]
fn up_detached_on_a_host_that_does_not_own_a_singleton_returns_once_it_runs_elsewhere() {
    if !etcd_present("`up -d` on a host whose singleton runs on another host") {
        return;
    }
    let etcd = Etcd::start();
    let shared = tempfile::tempdir().unwrap();
    let script = shared.path().join("c.py");
    std::fs::write(&script, FIXTURE).unwrap();
    let log = shared.path().join("log");
    let mut owner = Up::start(&config("detached", &etcd.clients, "h0", &log, &script), &[]);
    // Kept running throughout: the others never own the singleton.
    owner.wait_event("coordinator", "acquired");
    // h1, then h2, in the background: one with a worker on the singleton, one with
    // nothing but the singleton (no event of its own ends its bootstrap).
    for (host, worker, summary) in [
        ("h1", true, "running: 1/2 healthy"),
        ("h2", false, "running: 0/1 healthy"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let tag = dir.path().display().to_string();
        let extra = if worker {
            format!(
                "\n[services.worker]\ncommand = [\"sleep\", \"1000\"]\ndepends-on = [\"coordinator\"]\nenv = {{ MUSTER_TEST_TAG = \"{tag}\" }}\n"
            )
        } else {
            String::new()
        };
        let text = config_with("detached", &etcd.clients, host, &log, &script, &extra)
            .replace("{dir}", &tag);
        let file = dir.path().join("muster.toml");
        std::fs::write(&file, text).unwrap();
        let (started, background) = crate::helpers::up::Detached::start(&file, &tag, &[]);
        let background = background.expect("the pid of the background supervisor");
        assert_eq!(started.code, 0, "{host}: {started:?}");
        assert!(started.stdout.starts_with(summary), "{host}: {started:?}");
        assert!(
            started
                .stdout
                .contains("waiting for singleton `coordinator` to be free: it runs on host `h0`"),
            "{host}: {started:?}"
        );
        let down = crate::helpers::muster_run(&["down", "-f", file.to_str().unwrap()]);
        assert_eq!(down.code, 0, "{down:?}");
        background.wait_gone();
    }
    assert_eq!(cluster_lives(&log), 1);
}

/// How many instances the log at `log` saw start.
fn cluster_lives(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.starts_with("start "))
        .count()
}

/// The whole line a fixture writes to `path`, once it is there (within 20 s).
fn written(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && text.ends_with('\n')
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} was not written within 20 s",
            path.display()
        );
        thread::sleep(Duration::from_millis(10));
    }
}
