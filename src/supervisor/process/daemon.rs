//! Taking over a program that can only run in the background (`pidfile`, what systemd
//! calls `Type=forking` with `PIDFile=`): once its launcher has exited with status 0,
//! the daemon's pid is read from the file and vouched for, then handed to the reaper
//! ([`super::Reaper::adopt`]).
//!
//! A pid in a file proves nothing by itself: the file may be left from an earlier run
//! and the pid since reused. It is taken only for a live process that started no
//! earlier than the launcher and belongs to this run (in the launcher's process group,
//! or carrying the run's `MUSTER_RUN_ID` and `NOTIFY_SOCKET`). It must also be muster's
//! child already, or its end would never reach the reaper; an orphan becomes muster's
//! child as soon as its parent exits.
//!
//! Waiting does not poll the file: [`Wake`] is woken by inotify on the file's directory
//! when something there is created, written or renamed. What no file event announces (a
//! daemon becoming muster's child once its intermediate parent exits), and a directory
//! that does not exist yet, are covered by a backoff from 10 ms to 1 s. The caller
//! bounds the wait (the start deadline) and drops it to stop.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::super::exit::plain;
use super::procfs;

/// The first wait between attempts that no file event wakes; it doubles up to [`LONGEST`].
const FIRST: Duration = Duration::from_millis(10);
const LONGEST: Duration = Duration::from_secs(1);

/// What a pid must be to be the run's daemon.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The pid file.
    pub path: PathBuf,
    /// The launcher's pid, also its process group's id.
    pub launcher: u32,
    /// The launcher's start time, in clock ticks since boot.
    pub since_ticks: Option<u64>,
    /// `KEY=VALUE` entries every process of the run carries.
    pub marker: Vec<String>,
}

/// The daemon's pid, read from the file and vouched for; `Err` says why not (yet).
pub fn vouch(claim: &Claim) -> Result<u32, String> {
    let shown = claim.path.display();
    let text = match std::fs::read_to_string(&claim.path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{shown} does not exist"));
        }
        Err(error) => return Err(format!("cannot read {shown}: {}", plain(&error))),
    };
    let pid = match text.trim().parse::<u32>() {
        Ok(pid) if pid > 1 => pid,
        _ => {
            let start: String = text.trim().chars().take(20).collect();
            return Err(format!("{shown} holds {start:?}, not a pid"));
        }
    };
    let Some(stat) = procfs::stat(pid).filter(|stat| !stat.is_zombie()) else {
        return Err(format!("pid {pid} (from {shown}) is not running"));
    };
    let entries: Vec<&str> = claim.marker.iter().map(String::as_str).collect();
    let recent = claim
        .since_ticks
        .is_none_or(|since| stat.start_ticks >= since);
    let of_run = stat.pgrp == claim.launcher || procfs::environ_has(pid, &entries);
    if !(recent && of_run) {
        return Err(format!(
            "pid {pid} (from {shown}) is not a process of this run (the file is left from before?)"
        ));
    }
    Ok(pid)
}

/// Wakes the wait for a pid file: on a change in its directory, or at the next step of
/// the backoff, whichever comes first.
#[derive(Debug)]
pub struct Wake {
    inotify: Option<Inotify>,
    backoff: Duration,
}

impl Wake {
    /// Watches the directory of `path`, if it exists.
    pub fn new(path: &Path) -> Self {
        let inotify = path.parent().and_then(|dir| {
            let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
            let events = AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_MOVED_TO;
            inotify.add_watch(dir, events).ok()?;
            Some(inotify)
        });
        Self {
            inotify,
            backoff: FIRST,
        }
    }

    /// Returns at the next change in the directory or step of the backoff.
    pub async fn next(&mut self) {
        let step = self.backoff;
        self.backoff = (self.backoff * 2).min(LONGEST);
        let Some(inotify) = self.inotify.take() else {
            return tokio::time::sleep(step).await;
        };
        // A thread of the blocking pool waits on the descriptor, for one step at most:
        // tokio's `AsyncFd` would take it only through `unsafe` code.
        let waited = tokio::task::spawn_blocking(move || {
            {
                let millis = u16::try_from(step.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(millis));
            }
            // Drained, so the next wait waits for the next change.
            let _ = inotify.read_events();
            inotify
        })
        .await;
        self.inotify = waited.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(path: PathBuf) -> Claim {
        Claim {
            path,
            launcher: std::process::id(),
            since_ticks: None,
            marker: Vec::new(),
        }
    }

    #[test]
    fn a_pid_is_taken_only_from_a_file_naming_a_live_process_of_the_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        let mut me = claim(path.clone());
        assert!(vouch(&me).unwrap_err().ends_with("does not exist"));
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(
            vouch(&me)
                .unwrap_err()
                .contains("holds \"garbage\", not a pid")
        );
        // This test process is in its own group only if it leads it; name the group.
        let own = procfs::stat(std::process::id()).unwrap();
        me.launcher = own.pgrp;
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        assert_eq!(vouch(&me), Ok(std::process::id()));
        // Started before the launcher: a file from before.
        me.since_ticks = Some(own.start_ticks + 1);
        assert!(
            vouch(&me)
                .unwrap_err()
                .contains("not a process of this run")
        );
        // Neither in the group nor carrying the marker.
        me.since_ticks = None;
        me.launcher = 1;
        me.marker = vec!["MUSTER_RUN_ID=no-such-run".to_owned()];
        assert!(
            vouch(&me)
                .unwrap_err()
                .contains("not a process of this run")
        );
    }

    #[tokio::test]
    async fn a_change_in_the_directory_wakes_the_wait_before_the_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.pid");
        let mut wake = Wake::new(&path);
        assert!(wake.inotify.is_some());
        // Past the first steps of the backoff, so only the file can wake it soon.
        wake.backoff = Duration::from_secs(30);
        let writer = tokio::spawn({
            let path = path.clone();
            async move { std::fs::write(path, "42\n") }
        });
        tokio::time::timeout(Duration::from_secs(10), wake.next())
            .await
            .expect("woken by the write");
        writer.await.unwrap().unwrap();
    }
}
