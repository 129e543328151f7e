//! Who may run a singleton here, and until when: the table the cluster fills in and the
//! supervisor reads before every start of a singleton, and the guard process that
//! holds each running singleton to the host's lease even when the supervisor cannot.
//!
//! A leaf: the cluster module (which talks to etcd) writes [`Fences`], the supervisor's
//! owner and actors read it; neither needs the other.
//!
//! Deadlines are `CLOCK_BOOTTIME` nanoseconds: monotonic (a step of the wall clock does
//! not move them), counting a suspended machine's sleep (which etcd's clock also
//! counts), and the same in every process of the machine, so the guard can be handed
//! an absolute deadline.
//!
//! **The guard.** Each run of a singleton has a small process of its own (`muster
//! guard`, hidden), started before the service, in its own process group. Its stdin is
//! a pipe only the supervisor holds the other end of (close-on-exec, so no service
//! inherits it). The supervisor tells it the run's process group and signal, and
//! renews its deadline after every acknowledged keepalive. It kills the group when:
//! the deadline passes unrenewed (the supervisor is stopped, frozen, or cut off from
//! etcd), or its stdin reaches end of file (the supervisor died: the kernel closed the
//! pipe). It exits without touching the group when told `release` (the run ended).
//! This is what keeps a killed -9 or SIGSTOPped supervisor from leaving a singleton
//! running past its lease; see docs/architecture.md for why not `PR_SET_PDEATHSIG`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::sync::{Notify, watch};

/// Nanoseconds of `CLOCK_BOOTTIME`.
pub fn boottime() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Where a singleton's ownership stands, as this host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// Not known: why (etcd not reached yet, this host's name taken, not a candidate).
    Unknown(String),
    /// Another host owns it.
    Elsewhere { host: String, fence: i64 },
    /// This host owns it, with this fence (the owner key's revision).
    Here { fence: i64 },
}

impl Ownership {
    /// What a service waiting for ownership is waiting for, in words.
    pub fn waiting(&self, name: &str) -> String {
        match self {
            Ownership::Unknown(why) => format!("ownership of singleton `{name}`: {why}"),
            Ownership::Elsewhere { host, fence } => {
                format!("singleton `{name}` to be free: it runs on host `{host}` (fence {fence})")
            }
            Ownership::Here { .. } => String::new(),
        }
    }
}

/// The lease's deadlines, from the last acknowledged keepalive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadlines {
    /// From here a singleton is stopped (its stop signal), and no new run may start.
    pub soft: u64,
    /// By here every singleton process is killed: before the lease can have expired.
    pub hard: u64,
}

/// The ownership table, the lease's deadlines and the guards of running singletons.
#[derive(Debug)]
pub struct Fences {
    table: Mutex<BTreeMap<String, watch::Sender<Ownership>>>,
    deadlines: Mutex<Deadlines>,
    guards: Mutex<Vec<Weak<Mutex<std::fs::File>>>>,
    /// Singletons something here asked to run (a start, a demand, the boot).
    wanted: Mutex<BTreeSet<String>>,
    /// Woken when `wanted` grows.
    pub asked: Notify,
    /// Every live host's record as etcd has it (`hosts/HOST`, by host name); `None`
    /// until it was first read. Cross-host dependencies and `ensure` of a singleton
    /// owned elsewhere read the owner's services here.
    pub peers: watch::Sender<Option<Arc<Peers>>>,
    /// Requests this supervisor sent to etcd (`muster cluster` shows them).
    pub requests: Arc<std::sync::atomic::AtomicU64>,
    /// This host's name in the cluster, once joined.
    pub host: std::sync::OnceLock<String>,
    /// Counts changes of any singleton's ownership, for whoever sums them up (the
    /// bootstrap's end, the starter's status).
    pub changes: watch::Sender<u64>,
}

/// The records of the cluster's live hosts, by host name.
pub type Peers = BTreeMap<String, serde_json::Value>;

impl Default for Fences {
    fn default() -> Self {
        Self {
            table: Mutex::new(BTreeMap::new()),
            deadlines: Mutex::new(Deadlines::default()),
            guards: Mutex::new(Vec::new()),
            wanted: Mutex::new(BTreeSet::new()),
            asked: Notify::new(),
            peers: watch::channel(None).0,
            requests: Arc::default(),
            host: std::sync::OnceLock::new(),
            changes: watch::channel(0).0,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Fences {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn sender(&self, name: &str) -> watch::Sender<Ownership> {
        lock(&self.table)
            .entry(name.to_owned())
            .or_insert_with(|| {
                watch::channel(Ownership::Unknown("etcd has not answered yet".to_owned())).0
            })
            .clone()
    }

    /// Follows `name`'s ownership.
    pub fn ownership(&self, name: &str) -> watch::Receiver<Ownership> {
        self.sender(name).subscribe()
    }

    /// `name`'s ownership, when `name` is a singleton this host knows of (unlike
    /// [`Self::ownership`], asking does not add it).
    pub fn owned(&self, name: &str) -> Option<Ownership> {
        lock(&self.table)
            .get(name)
            .map(|sender| sender.borrow().clone())
    }

    /// Records `name`'s ownership; returns whether it changed.
    pub fn set(&self, name: &str, ownership: Ownership) -> bool {
        let changed = self.sender(name).send_if_modified(|now| {
            let changed = *now != ownership;
            *now = ownership;
            changed
        });
        if changed {
            self.changes.send_modify(|count| *count += 1);
        }
        changed
    }

    /// Something here wants `name` to run: its candidates compete for it.
    pub fn want(&self, name: &str) {
        if lock(&self.wanted).insert(name.to_owned()) {
            self.asked.notify_waiters();
        }
        self.asked.notify_one();
    }

    /// Nothing here wants `name` any more (it was stopped).
    pub fn unwant(&self, name: &str) {
        lock(&self.wanted).remove(name);
    }

    pub fn is_wanted(&self, name: &str) -> bool {
        lock(&self.wanted).contains(name)
    }

    pub fn deadlines(&self) -> Deadlines {
        *lock(&self.deadlines)
    }

    /// Whether a run of `name` may start now: this host owns it and the lease is
    /// good for a while yet. `Ok` is the fence to give it.
    pub fn may_start(&self, name: &str) -> Result<i64, String> {
        let ownership = self.ownership(name).borrow().clone();
        match ownership {
            Ownership::Here { fence } => {
                if boottime() < self.deadlines().soft {
                    Ok(fence)
                } else {
                    Err(format!(
                        "singleton `{name}`: this host's lease in etcd has not been renewed in time, so it may no longer own it"
                    ))
                }
            }
            other => Err(other.waiting(name)),
        }
    }

    /// A keepalive was acknowledged: new deadlines, passed on to every guard.
    pub fn renew(&self, deadlines: Deadlines) {
        *lock(&self.deadlines) = deadlines;
        let mut guards = lock(&self.guards);
        guards.retain(|guard| match guard.upgrade() {
            Some(pipe) => {
                let _ = writeln!(lock(&pipe), "until {}", deadlines.hard);
                true
            }
            None => false,
        });
    }

    /// The lease is gone: nothing may start until the next is granted.
    pub fn lapse(&self) {
        *lock(&self.deadlines) = Deadlines::default();
    }

    /// Prepares a guard for one run: the command to spawn (as `muster guard`, in its
    /// own process group, with the returned pipe end as its stdin, stdout on
    /// `/dev/null` and muster's stderr) and the handle that speaks to it. Tell it the
    /// group with [`Guard::watch`].
    pub fn guard(self: &Arc<Self>) -> io::Result<(Command, OwnedFd, Guard)> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut command = Command::new("/proc/self/exe");
        command.arg("guard");
        command.process_group(0);
        let pipe = Arc::new(Mutex::new(std::fs::File::from(write)));
        let deadline = self.deadlines().hard;
        let _ = writeln!(lock(&pipe), "until {deadline}");
        lock(&self.guards).push(Arc::downgrade(&pipe));
        Ok((command, read, Guard { pipe }))
    }
}

/// The supervisor's end of one guard: dropping it releases the run.
#[derive(Debug)]
pub struct Guard {
    pipe: Arc<Mutex<std::fs::File>>,
}

impl Guard {
    /// The run's process group and the signal that stops it gracefully.
    pub fn watch(&self, group: u32, signal: Signal, grace: Duration) {
        let _ = writeln!(
            lock(&self.pipe),
            "group {group} {} {}",
            signal as i32,
            grace.as_millis()
        );
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = writeln!(lock(&self.pipe), "release");
    }
}

/// `muster guard`: the process that holds one singleton run to the lease (see the
/// module's header). Returns its exit status.
pub fn run_guard() -> u8 {
    // A hang-up of muster's terminal is no reason to let a singleton run unguarded.
    let mut hup = nix::sys::signal::SigSet::empty();
    hup.add(Signal::SIGHUP);
    let _ = hup.thread_block();
    let mut stdin = io::stdin().lock();
    let mut group: Option<(Pid, Signal, Duration)> = None;
    // No deadline until the supervisor gives one (it does before anything else).
    let mut until: Option<u64> = None;
    let mut pending = Vec::new();
    loop {
        let now = boottime();
        let timeout = match until {
            Some(until) if now >= until => {
                if let Some((pgid, _, _)) = group {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                return if group.is_some() { 3 } else { 0 };
            }
            Some(until) => {
                let wait = Duration::from_nanos(until - now);
                nix::poll::PollTimeout::try_from(wait.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(nix::poll::PollTimeout::MAX)
            }
            None => nix::poll::PollTimeout::NONE,
        };
        let mut fds = [nix::poll::PollFd::new(
            stdin.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, timeout) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return supervisor_gone(group, until.unwrap_or(0)),
        }
        let mut buffer = [0u8; 512];
        let read = match stdin.read(&mut buffer) {
            Ok(0) | Err(_) => return supervisor_gone(group, until.unwrap_or(0)),
            Ok(read) => read,
        };
        pending.extend_from_slice(&buffer[..read]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["release"] => return 0,
                ["until", at] => until = Some(at.parse().unwrap_or(0)),
                ["group", pgid, signal, grace] => {
                    let signal = signal
                        .parse::<i32>()
                        .ok()
                        .and_then(|s| Signal::try_from(s).ok())
                        .unwrap_or(Signal::SIGTERM);
                    if let Ok(pgid) = pgid.parse::<i32>()
                        && pgid > 1
                    {
                        group = Some((
                            Pid::from_raw(pgid),
                            signal,
                            Duration::from_millis(grace.parse().unwrap_or(0)),
                        ));
                    }
                }
                _ => {}
            }
        }
    }
}

/// The supervisor is gone: the group gets its stop signal, then SIGKILL once it had
/// its grace or the lease's deadline comes, whichever is first.
fn supervisor_gone(group: Option<(Pid, Signal, Duration)>, until: u64) -> u8 {
    let Some((pgid, signal, grace)) = group else {
        return 0;
    };
    if killpg(pgid, signal).is_err() {
        return 2;
    }
    let kill_at = until.min(boottime() + grace.as_nanos() as u64);
    while boottime() < kill_at {
        // Signal 0: is anything of the group left?
        if killpg(pgid, None).is_err() {
            return 2;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    2
}
