//! Processes: spawning a service in its own process group, signalling groups, and
//! reaping every child, grandchildren included.
//!
//! muster makes itself a child subreaper, so anything a service leaves behind becomes
//! muster's child; as the first process of a PID namespace (a container's entrypoint)
//! every orphan of the namespace is re-parented to it anyway, and the same reaper
//! reaps them. Nothing else in muster waits for a child: no `Child::wait`, no tokio
//! process driver, so no status is ever taken from the reaper. One reaper task owns `waitpid`: on each SIGCHLD it peeks at exited
//! children without reaping them (`WNOWAIT`), kills what is left of a registered child's
//! process group while the zombie still pins the group id (so the id cannot have been
//! reused), then reaps it and tells whoever registered it. Unregistered children
//! (orphaned grandchildren) are reaped and forgotten.
//!
//! A service's main process is watched more closely: when it exits with status 0, the
//! other processes of its run still alive (its group's, and any carrying its
//! `MUSTER_RUN_ID` and `NOTIFY_SOCKET`, which a daemon that left the group keeps) are
//! reported with the exit, so that a program that went into the background is told
//! from one that finished. With a `pidfile` they are left alone at that moment: the
//! launcher has exited and its daemon is about to be taken over ([`Reaper::adopt`],
//! [`daemon`]). A daemon muster takes over is its child by then (an orphan re-parented
//! to the subreaper), so its exit reaches the reaper like any other.
//!
//! Every child is spawned from one thread with a descriptor table of its own
//! ([`spawner`]; what a spawn is given is described by [`Spawn`]), so that a spawn
//! costs the same whatever number of descriptors the supervisor holds.
//!
//! Registration happens under the same lock as the spawn, so an exit cannot be reaped
//! before its waiter is known. `waitpid` is process-wide, so the table of waiters is too:
//! several supervisors in one process (tests, embedders) each run a reaper task, and
//! whichever wakes first reaps for all of them.
//!
//! What a child inherits is decided here too ([`inherit`]). [`disinherit`], first thing in `main`,
//! closes the descriptors muster was started with and empties its signal mask;
//! [`Reaper::start`] gives every signal muster inherited as ignored a handler that does
//! nothing, so that `exec` resets it to its default in every child. Services, hooks and
//! exec probes therefore start with stdin, stdout and stderr only, an empty signal mask
//! and default dispositions, whatever muster's own caller left ignored, blocked or open.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use super::exit::Exit;
use super::procfs;

pub mod daemon;
mod inherit;
mod launch;
pub mod setup;
pub mod spawner;

pub use inherit::{disinherit, forget_starter, unblock_stop_signals};
pub use launch::{Io, Spawn, SpawnError, Spawned};

/// Told how a registered child ended, from the reaper task.
pub type OnExit = Box<dyn FnOnce(Exit) + Send>;

/// How a service's main process ended, and what of its run it left alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    pub exit: Exit,
    /// After an exit with status 0: the run's other processes alive at that moment
    /// (pid and command line), in its process group or carrying its marker.
    pub left: Vec<(u32, String)>,
}

/// How the reaper treats a service's main process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// `KEY=VALUE` entries every process of the run carries in its environment
    /// (`MUSTER_RUN_ID=...`, `NOTIFY_SOCKET=...`).
    pub marker: Vec<String>,
    /// After an exit with status 0, leave the run's other processes running: a
    /// launcher whose daemon muster is to take over from its pid file.
    pub keep_on_success: bool,
    /// The run's first process, when it is not this one (the launcher of a daemon
    /// muster took over): every other process of the run was created after it.
    pub first: Option<u32>,
}

/// Someone waiting for a child's end.
enum Waiter {
    /// A hook or a probe: its group is killed, nothing else is looked at.
    Plain(OnExit),
    /// A service's main process.
    Watched(Watch, Box<dyn FnOnce(Ended) + Send>),
}

/// Registered children of this process, by pid.
static WAITERS: Mutex<BTreeMap<i32, Waiter>> = Mutex::new(BTreeMap::new());
/// Woken after every round of reaping.
static REAPED: Notify = Notify::const_new();

/// A handle on the process's reaping; its task runs on the runtime that started it.
#[derive(Debug)]
pub struct Reaper {
    _private: (),
}

impl Reaper {
    /// Makes this process a child subreaper and starts the reaper task. Call once, from
    /// inside the runtime.
    pub fn start() -> io::Result<Arc<Self>> {
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        inherit::handle_inherited_ignores();
        let reaper = Arc::new(Self { _private: () });
        let mut sigchld = signal(SignalKind::child())?;
        tokio::spawn(async move {
            loop {
                reap_all();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }

    /// Spawns `spawn` (whose command must put the child in its own process group);
    /// `on_exit` is called with how it ended.
    pub fn spawn(
        &self,
        spawn: Spawn,
        on_exit: impl FnOnce(Exit) + Send + 'static,
    ) -> Result<Spawned, SpawnError> {
        let mut waiters = lock();
        let child = spawn.start()?;
        waiters.insert(child.pid as i32, Waiter::Plain(Box::new(on_exit)));
        Ok(child)
    }

    /// Spawns a service's main process (`spawn`'s command must put it in its own
    /// process group); `on_exit` is told how it ended and what of its run it left alive.
    pub fn spawn_watched(
        &self,
        spawn: Spawn,
        watch: Watch,
        on_exit: impl FnOnce(Ended) + Send + 'static,
    ) -> Result<Spawned, SpawnError> {
        let mut waiters = lock();
        let child = spawn.start()?;
        waiters.insert(child.pid as i32, Waiter::Watched(watch, Box::new(on_exit)));
        Ok(child)
    }

    /// Takes over `pid`, the daemon a service's launcher left: `on_exit` is told how it
    /// ends, as for a spawned main process. It must already be this process's child (an
    /// orphan re-parented to muster, the child subreaper), or its end would never be
    /// seen. `announce` runs once it is registered, under the reaper's lock: whatever
    /// it sends arrives before anything `on_exit` sends. `Err` says why not (yet).
    pub fn adopt(
        &self,
        pid: u32,
        watch: Watch,
        announce: impl FnOnce(),
        on_exit: impl FnOnce(Ended) + Send + 'static,
    ) -> Result<(), String> {
        let mut waiters = lock();
        // A zombie still here has not been reaped: the reaper will find it registered.
        let Some(stat) = procfs::stat(pid) else {
            return Err(format!("pid {pid} has exited"));
        };
        if stat.ppid != std::process::id() {
            return Err(format!(
                "pid {pid} is not muster's child yet (its parent, pid {}, has not exited)",
                stat.ppid
            ));
        }
        if waiters.contains_key(&(pid as i32)) {
            return Err(format!("pid {pid} is already supervised"));
        }
        waiters.insert(pid as i32, Waiter::Watched(watch, Box::new(on_exit)));
        announce();
        Ok(())
    }

    /// Kills every remaining child of this process that carries `marker` in its
    /// environment (daemons that left their service's process group but kept the
    /// `NOTIFY_SOCKET=...` muster gave them) until none is left or `within` has passed.
    /// Returns how many were killed. The marker keeps a process that embeds muster
    /// from losing children of its own.
    pub async fn sweep(&self, marker: &str, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        let mut killed = std::collections::BTreeSet::new();
        loop {
            let reaped = REAPED.notified();
            // Registered children belong to a live service (of another supervisor in
            // this process, since this one has stopped all of its own).
            let children: Vec<i32> = {
                let waiters = lock();
                procfs::children_of(std::process::id())
                    .into_iter()
                    .map(|pid| pid as i32)
                    .filter(|pid| {
                        !waiters.contains_key(pid) && procfs::environ_has(*pid as u32, &[marker])
                    })
                    .collect()
            };
            if children.is_empty() {
                return killed.len();
            }
            for pid in children {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
                    killed.insert(pid);
                }
            }
            if tokio::time::timeout_at(deadline, reaped).await.is_err() {
                return killed.len();
            }
        }
    }
}

/// As the first process of a PID namespace (a container's entrypoint), once every
/// service has stopped: whatever else still runs in the namespace (what services left
/// behind outside their process groups and without muster's marker) gets SIGTERM, then
/// SIGKILL once `grace` has passed, and is reaped. When muster exits the kernel would
/// kill them all with SIGKILL at once; this gives them the chance to stop cleanly.
/// Returns how many there were. Does nothing elsewhere, or when `/proc` is not the
/// namespace's own (nothing could be counted or waited for).
pub async fn end_the_rest(grace: Duration) -> usize {
    if std::process::id() != 1 || !procfs::is_own_namespace() {
        return 0;
    }
    let others = || {
        procfs::processes()
            .into_iter()
            .filter(|(pid, stat)| *pid != 1 && !stat.is_zombie())
            .count()
    };
    let left = others();
    if left == 0 {
        return 0;
    }
    // -1: every process of the namespace but its first.
    let everyone = Pid::from_raw(-1);
    let _ = kill(everyone, Signal::SIGTERM);
    for (signal, within) in [
        (Some(Signal::SIGKILL), grace),
        (None, Duration::from_secs(1)),
    ] {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let reaped = REAPED.notified();
            if others() == 0 {
                return left;
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            // Woken by a reaping, or a look every 50 ms: a process whose parent is not
            // muster ends without telling it.
            let next = deadline.min(tokio::time::Instant::now() + Duration::from_millis(50));
            let _ = tokio::time::timeout_at(next, reaped).await;
        }
        if let Some(signal) = signal {
            let _ = kill(everyone, signal);
        }
    }
    left
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<i32, Waiter>> {
    WAITERS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Reaps every exited child, telling registered waiters how theirs ended.
fn reap_all() {
    loop {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        let (pid, exit) = match waitid(Id::All, flags) {
            Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
            Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, Exit::Signal(signal)),
            Err(Errno::EINTR) => continue,
            // Nothing has exited, no children at all, or a status not asked for.
            _ => break,
        };
        let mut waiters = lock();
        let tell: Option<Box<dyn FnOnce()>> = match waiters.remove(&pid.as_raw()) {
            Some(Waiter::Plain(on_exit)) => {
                // The leader is a zombie, so its group id is still its own: kill
                // whatever it left running in the group.
                let _ = killpg(pid, Signal::SIGKILL);
                Some(Box::new(move || on_exit(exit)))
            }
            Some(Waiter::Watched(watch, on_exit)) => {
                let ended = end_of_run(pid.as_raw() as u32, exit, &watch);
                Some(Box::new(move || on_exit(ended)))
            }
            None => None,
        };
        let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        drop(waiters);
        if let Some(tell) = tell {
            tell();
        }
    }
    REAPED.notify_waiters();
}

/// What a service's main process, a zombie not yet reaped, leaves: after an exit with
/// status 0 the run's other live processes are listed; then, unless a launcher's
/// daemon is to be taken over, they are killed. Its group is the one its stat names
/// (its own for a spawned process; a daemon muster took over may have stayed in its
/// launcher's), pinned by the zombie so the id cannot have been reused.
fn end_of_run(pid: u32, exit: Exit, watch: &Watch) -> Ended {
    let group = group_of(pid);
    let left = if exit.success() {
        let first = watch.first.unwrap_or(pid);
        run_processes(pid, first, group, &watch.marker)
    } else {
        Vec::new()
    };
    if !(exit.success() && watch.keep_on_success) {
        if let Some(group) = group {
            let _ = killpg(Pid::from_raw(group as i32), Signal::SIGKILL);
        }
        for (other, _) in &left {
            kill_process(*other, Signal::SIGKILL);
        }
    }
    Ended { exit, left }
}

/// The process group of `pid`, unless it is muster's own (never to be signalled).
fn group_of(pid: u32) -> Option<u32> {
    let group = procfs::stat(pid).map_or(pid, |stat| stat.pgrp);
    let own = nix::unistd::getpgrp().as_raw() as u32;
    (group > 1 && group != own).then_some(group)
}

/// The live processes of a run other than `pid`: in `group`, or carrying every entry of
/// `marker` in their environment; with their command lines. Only processes created
/// since the run's `first` are read: an exit does not cost a read of the whole process
/// table (a crash loop exits hundreds of times a second).
fn run_processes(
    pid: u32,
    first: u32,
    group: Option<u32>,
    marker: &[String],
) -> Vec<(u32, String)> {
    let entries: Vec<&str> = marker.iter().map(String::as_str).collect();
    procfs::processes_where(procfs::created_since(first))
        .into_iter()
        .filter(|(other, stat)| *other != pid && !stat.is_zombie())
        .filter(|(other, stat)| {
            Some(stat.pgrp) == group
                || (!entries.is_empty() && procfs::environ_has(*other, &entries))
        })
        .map(|(other, _)| (other, procfs::command_line(other)))
        .collect()
}

/// Signals one process, and its group too when it leads one (a daemon that called
/// `setsid`). Gone is not an error.
fn kill_process(pid: u32, signal: Signal) {
    let target = Pid::from_raw(pid as i32);
    if procfs::stat(pid).is_some_and(|stat| stat.pgrp == pid) {
        let _ = killpg(target, signal);
    }
    let _ = kill(target, signal);
}

/// Sends `signal` to a run: its process group, and with a `marker`, every process
/// carrying it outside the group too (what a launcher, the run's `first` process, left
/// before its daemon is known).
pub fn signal_run(group: u32, marker: Option<(&[String], u32)>, signal: Signal) -> io::Result<()> {
    let result = signal_group(group, signal);
    if let Some((marker, first)) = marker {
        let entries: Vec<&str> = marker.iter().map(String::as_str).collect();
        for (pid, stat) in procfs::processes_where(procfs::created_since(first)) {
            // The group has had it; a second stop signal may mean "now" to some.
            if stat.pgrp != group && !stat.is_zombie() && procfs::environ_has(pid, &entries) {
                kill_process(pid, signal);
            }
        }
    }
    result
}

/// Sends `signal` to the process group led by `pid`. A group that is already gone is
/// not an error.
pub fn signal_group(pid: u32, signal: Signal) -> io::Result<()> {
    match killpg(Pid::from_raw(pid as i32), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// Sends `signal` to the one process `pid`. One that is already gone is not an error.
pub fn signal_pid(pid: u32, signal: Signal) -> io::Result<()> {
    match kill(Pid::from_raw(pid as i32), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}
