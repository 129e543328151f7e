//! What a test reads after the fact: `/proc` (the processes carrying a supervisor's
//! marker, a supervisor's zombie children, its memory) and the history database (events,
//! runs, integrity). Also a guard that kills whatever carries a supervisor's marker, for
//! tests that SIGKILL the supervisor or have more runs than they follow one by one.

use std::path::Path;
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use muster::supervisor::procfs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

/// The `NOTIFY_SOCKET` address of the supervisor with this pid (`@muster-PID-...`), read
/// from the kernel's table of unix sockets while it is alive (or stopped). Every process
/// it spawns carries it in its environment: it names that supervisor's processes.
pub fn instance_of(supervisor: u32) -> Option<String> {
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let prefix = format!("@muster-{supervisor}-");
    table
        .lines()
        .filter_map(|line| line.split_whitespace().nth(7))
        .find(|path| path.starts_with(&prefix))
        .map(str::to_owned)
}

/// A value of the process's environment.
pub fn env_value(pid: u32, key: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// Every live (not zombie) process whose environment carries `NOTIFY_SOCKET=instance`:
/// what that supervisor spawned and whatever those processes forked.
pub fn carriers(instance: &str) -> Vec<u32> {
    let entry = format!("NOTIFY_SOCKET={instance}");
    procfs::processes()
        .into_iter()
        .filter(|(_, stat)| !stat.is_zombie())
        .filter(|(pid, _)| procfs::environ_has(*pid, &[entry.as_str()]))
        .map(|(pid, _)| pid)
        .collect()
}

/// Zombie children of `parent`: exited, never reaped.
pub fn zombies_of(parent: u32) -> Vec<(u32, u64)> {
    procfs::processes()
        .into_iter()
        .filter(|(_, stat)| stat.ppid == parent && stat.is_zombie())
        .map(|(pid, stat)| (pid, stat.start_ticks))
        .collect()
}

/// Live children of `parent` (zombies not counted).
pub fn children_of(parent: u32) -> Vec<u32> {
    procfs::children_of(parent)
}

/// A process's memory, in KiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident, all kinds.
    pub rss: u64,
    /// `RssAnon`: resident anonymous memory (the heap and stacks): what the process
    /// allocated, as opposed to the pages of its binary and libraries it touched.
    pub anon: u64,
    /// `RssFile`: resident pages of mapped files (the binary, libraries).
    pub file: u64,
    /// `Pss` from `smaps_rollup`: resident, shared pages divided among their sharers.
    pub pss: u64,
}

pub fn memory(pid: u32) -> Option<Memory> {
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
    };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    Some(Memory {
        rss: field(&status, "VmRSS:")?,
        anon: field(&status, "RssAnon:")?,
        file: field(&status, "RssFile:")?,
        pss: field(&rollup, "Pss:")?,
    })
}

/// Kills, when dropped, every process that carries one of the registered supervisor
/// markers: the cleanup of a test whose supervisor was SIGKILLed (its services are
/// nobody's children then) or that cannot follow every run's process group. A marker is
/// a supervisor's unique notify address, so nothing else can match it.
#[derive(Debug, Default)]
pub struct Sweep {
    instances: Mutex<Vec<String>>,
}

impl Sweep {
    pub fn add(&self, instance: &str) {
        let mut instances = self.instances.lock().unwrap();
        if !instances.iter().any(|known| known == instance) {
            instances.push(instance.to_owned());
        }
    }
}

impl Drop for Sweep {
    fn drop(&mut self) {
        let instances = self.instances.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left: Vec<u32> = instances.iter().flat_map(|i| carriers(i)).collect();
            if left.is_empty() || Instant::now() > deadline {
                return;
            }
            for pid in left {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A read-only connection to a state directory's history. Read-only, so that it never
/// checkpoints or removes the write-ahead log: a supervisor that starts next finds the
/// files exactly as the last one left them.
pub fn open_history(state_dir: &Path) -> Connection {
    let path = state_dir.join("state.db");
    let db = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    db
}

/// A state directory's history as a crash left it, read the way the next opener reads
/// it: its files (database, write-ahead log, shared memory, rollback journal) are copied
/// and opened for writing, so SQLite recovers the copy (a kill while the database was
/// being created leaves a journal that a read-only connection cannot roll back). The
/// originals stay as they were for the next supervisor. Keep the directory while the
/// connection is in use.
pub fn open_copy(state_dir: &Path) -> (tempfile::TempDir, Connection) {
    let copy = tempfile::tempdir().unwrap();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let name = format!("state.db{suffix}");
        let from = state_dir.join(&name);
        if from.exists() {
            std::fs::copy(&from, copy.path().join(&name))
                .unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        }
    }
    let db = Connection::open(copy.path().join("state.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    (copy, db)
}

/// One stored event.
#[derive(Debug, Clone)]
pub struct Stored {
    pub id: u64,
    /// Milliseconds since the Unix epoch.
    pub time: u64,
    pub service: String,
    pub run_id: u64,
    pub kind: String,
    pub message: String,
    pub data: Value,
}

/// Every stored event, oldest first.
pub fn stored_events(db: &Connection) -> Vec<Stored> {
    let mut statement = db
        .prepare("SELECT id, time, service, run_id, kind, message, data FROM events ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| {
            let data: String = row.get(6)?;
            Ok(Stored {
                id: row.get::<_, i64>(0)? as u64,
                time: row.get::<_, i64>(1)? as u64,
                service: row.get(2)?,
                run_id: row.get::<_, i64>(3)? as u64,
                kind: row.get(4)?,
                message: row.get(5)?,
                data: serde_json::from_str(&data).unwrap_or(Value::Null),
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// One stored run.
#[derive(Debug, Clone)]
pub struct StoredRun {
    pub run_id: u64,
    pub service: String,
    pub pid: u32,
    pub start_ticks: Option<u64>,
    pub instance: String,
    pub ended: bool,
    pub signal: Option<String>,
    pub reason: Option<String>,
}

/// Every stored run, oldest first.
pub fn stored_runs(db: &Connection) -> Vec<StoredRun> {
    let mut statement = db
        .prepare(
            "SELECT run_id, service, pid, start_ticks, instance, ended_at, signal, reason \
             FROM runs ORDER BY run_id",
        )
        .unwrap();
    statement
        .query_map([], |row| {
            Ok(StoredRun {
                run_id: row.get::<_, i64>(0)? as u64,
                service: row.get(1)?,
                pid: row.get::<_, i64>(2)? as u32,
                start_ticks: row.get::<_, Option<i64>>(3)?.map(|t| t as u64),
                instance: row.get(4)?,
                ended: row.get::<_, Option<i64>>(5)?.is_some(),
                signal: row.get(6)?,
                reason: row.get(7)?,
            })
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// `PRAGMA integrity_check`: "ok", or what SQLite found wrong.
pub fn integrity(db: &Connection) -> String {
    let rows: Vec<String> = db
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.join("; ")
}

/// Panics, showing the first gap or double, unless the ids are exactly 1, 2, 3, ...
pub fn assert_contiguous(events: &[Stored]) {
    for (index, event) in events.iter().enumerate() {
        assert_eq!(
            event.id,
            index as u64 + 1,
            "event ids have a gap or a double at position {index}: {:#?}",
            &events[index.saturating_sub(3)..(index + 3).min(events.len())]
        );
    }
}

/// Events as lines for a failure message.
pub fn show(events: &[&Stored]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "  #{} {} {} run {} {}: {} {}",
                e.id, e.time, e.service, e.run_id, e.kind, e.message, e.data
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[path = "../../common/tagged.rs"]
mod tagged_processes;
pub use tagged_processes::tagged;

/// Kills, when dropped, every process still carrying `MUSTER_TEST_TAG=tag`: a failed
/// test leaves nothing behind.
#[derive(Debug)]
pub struct TagSweep(pub String);

impl Drop for TagSweep {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = tagged(&self.0);
            if left.is_empty() || Instant::now() > deadline {
                return;
            }
            for (pid, _) in left {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Looks at `/proc` every few milliseconds, from its start until [`Sampler::finish`],
/// counting the live processes of each service of a tagged config.
#[derive(Debug)]
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<thread::JoinHandle<Samples>>,
}

/// What a [`Sampler`] saw.
#[derive(Debug, Default)]
pub struct Samples {
    pub samples: usize,
    /// The most live processes any one service had at one sample.
    pub most: std::collections::BTreeMap<String, usize>,
    /// The first sample where a service had more than one, with its processes.
    pub first_double: Option<Vec<(u32, String, String)>>,
}

impl Samples {
    /// Panics, showing the sample, if a service ever had two live processes.
    pub fn assert_one_per_service(&self) {
        if let Some(double) = &self.first_double {
            panic!(
                "a service had two live processes at once (of {} samples): {double:#?}",
                self.samples
            );
        }
    }
}

impl Sampler {
    pub fn start(tag: &str) -> Self {
        let tag = tag.to_owned();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = std::sync::Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut seen = Samples::default();
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                let processes = tagged(&tag);
                let mut counts = std::collections::BTreeMap::<String, usize>::new();
                for (_, service) in &processes {
                    *counts.entry(service.clone()).or_default() += 1;
                }
                for (service, count) in counts {
                    let most = seen.most.entry(service).or_default();
                    *most = (*most).max(count);
                    if count > 1 && seen.first_double.is_none() {
                        seen.first_double = Some(
                            processes
                                .iter()
                                .map(|(pid, service)| {
                                    (*pid, service.clone(), procfs::command_line(*pid))
                                })
                                .collect(),
                        );
                    }
                }
                seen.samples += 1;
                // The sampling period: this is how often /proc is looked at, not a wait.
                thread::sleep(Duration::from_millis(2));
            }
            seen
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> Samples {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread
            .take()
            .expect("running")
            .join()
            .expect("the sampler thread")
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
