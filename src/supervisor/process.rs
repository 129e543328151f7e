//! Processes: spawning a service in its own process group, signalling groups, and
//! reaping every child, grandchildren included.
//!
//! muster makes itself a child subreaper, so anything a service leaves behind becomes
//! muster's child. One reaper task owns `waitpid`: on each SIGCHLD it peeks at exited
//! children without reaping them (`WNOWAIT`), kills what is left of a registered child's
//! process group while the zombie still pins the group id (so the id cannot have been
//! reused), then reaps it and tells whoever registered it. Unregistered children
//! (orphaned grandchildren) are reaped and forgotten.
//!
//! Registration happens under the same lock as the spawn, so an exit cannot be reaped
//! before its waiter is known. `waitpid` is process-wide, so the table of waiters is too:
//! several supervisors in one process (tests, embedders) each run a reaper task, and
//! whichever wakes first reaps for all of them.
//!
//! What a child inherits is decided here too. [`disinherit`], first thing in `main`,
//! closes the descriptors muster was started with and empties its signal mask;
//! [`Reaper::start`] gives every signal muster inherited as ignored a handler that does
//! nothing, so that `exec` resets it to its default in every child. Services, hooks and
//! exec probes therefore start with stdin, stdout and stderr only, an empty signal mask
//! and default dispositions, whatever muster's own caller left ignored, blocked or open.

use std::collections::BTreeMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use super::machine::Exit;
use super::procfs;

/// Told how a registered child ended, from the reaper task.
pub type OnExit = Box<dyn FnOnce(Exit) + Send>;

/// Registered children of this process, by pid.
static WAITERS: Mutex<BTreeMap<i32, OnExit>> = Mutex::new(BTreeMap::new());
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
        handle_inherited_ignores();
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

    /// Spawns `command` (which must put the child in its own process group); `on_exit`
    /// is called with how it ended.
    pub fn spawn(
        &self,
        command: &mut Command,
        on_exit: impl FnOnce(Exit) + Send + 'static,
    ) -> io::Result<Child> {
        let mut waiters = lock();
        let child = command.spawn()?;
        waiters.insert(child.id() as i32, Box::new(on_exit));
        Ok(child)
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

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<i32, OnExit>> {
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
        let waiter = waiters.remove(&pid.as_raw());
        if waiter.is_some() {
            // The leader is a zombie, so its group id is still its own: kill
            // whatever the service left running in the group.
            let _ = killpg(pid, Signal::SIGKILL);
        }
        let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG));
        drop(waiters);
        if let Some(on_exit) = waiter {
            on_exit(exit);
        }
    }
    REAPED.notify_waiters();
}

/// Sends `signal` to the process group led by `pid`. A group that is already gone is
/// not an error.
pub fn signal_group(pid: u32, signal: Signal) -> io::Result<()> {
    match killpg(Pid::from_raw(pid as i32), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// Closes every descriptor above stderr this process was started with, and empties its
/// signal mask. Call first thing in `main`, while the process has one thread and
/// nothing in it owns a descriptor.
///
/// A caller's descriptors must not reach the services: a pipe a service holds open
/// keeps `x=$(muster up -d)` or `muster up -d | cat` waiting until it exits, and a
/// service should not be able to write to whatever the caller had open. Everything
/// muster opens itself is close-on-exec (std, tokio and SQLite all ask for it), so the
/// inherited descriptors are the only ones that would leak, and muster has no use for
/// them. They are closed rather than marked close-on-exec because a raw descriptor
/// number can only be closed without `unsafe` (`nix::unistd::close`); setting a flag
/// takes a borrowed descriptor, which only ownership can vouch for.
///
/// A blocked signal would never reach muster (`SIGTERM` could not stop it); children get
/// an empty mask from std anyway.
pub fn disinherit() {
    for fd in inherited_descriptors() {
        // The listing's own descriptor is among them, already closed: EBADF.
        let _ = nix::unistd::close(fd);
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}

/// The descriptors above stderr open now: from `/proc/self/fd`, or, without `/proc`,
/// every number below the descriptor limit (capped: closing a number that is not open
/// costs a system call each).
fn inherited_descriptors() -> Vec<i32> {
    if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
        return entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
            .filter(|&fd| fd > 2)
            .collect();
    }
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft.min(65_536));
    (3..limit as i32).collect()
}

/// Gives every signal this process inherited as ignored a handler that does nothing.
/// For muster nothing changes (the signal is still without effect), but `exec` resets a
/// handled signal to its default while it keeps an ignored one ignored: without this, a
/// muster started with `SIGINT` or `SIGHUP` ignored (`cmd &` in a script, `nohup`) would
/// start services that cannot be interrupted or hung up. The handlers are tokio's, which
/// stay installed for the life of the process once registered.
///
/// Left as they are: `SIGPIPE` (std resets it in every child), `SIGTTIN` and `SIGTTOU`
/// (with a handler instead of `SIG_IGN`, a background muster writing to its terminal
/// under `stty tostop` would be sent `SIGTTOU` and restart the write forever; a service
/// runs in its own process group with no terminal on its standard streams), and what
/// cannot be handled: `SIGKILL`, `SIGSTOP`, the faults tokio refuses, and the two
/// signals glibc keeps for its threads (32 and 33), which its `posix_spawn` sets to
/// ignored in every child and no program can use.
fn handle_inherited_ignores() {
    let Some(ignored) = procfs::signal_set(std::process::id(), "SigIgn") else {
        return;
    };
    for number in 1..=64 {
        let left_alone = matches!(
            Signal::try_from(number).ok(),
            Some(Signal::SIGPIPE | Signal::SIGTTIN | Signal::SIGTTOU)
        );
        if ignored & (1 << (number - 1)) != 0 && !left_alone {
            // Refused for the signals that cannot be handled: they stay as they were.
            let _ = signal(SignalKind::from_raw(number));
        }
    }
}
