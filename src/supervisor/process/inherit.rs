//! What muster's children inherit from muster: nothing of what muster's own caller
//! left open, blocked or ignored. [`disinherit`] runs first thing in `main`;
//! [`handle_inherited_ignores`] when the reaper starts, inside the runtime.

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};

use super::procfs;

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
///
/// Except as the first process of a PID namespace (a container's entrypoint): the
/// kernel discards a signal sent to it that it has no handler for, so a `docker stop`
/// that came before `up` installed its handlers would be lost, and muster would boot
/// and run on until it is killed. There the stop signals are blocked instead, which
/// keeps them pending, until [`unblock_stop_signals`] once their handlers are in place.
pub fn disinherit() {
    for fd in inherited_descriptors() {
        // The listing's own descriptor is among them, already closed: EBADF.
        let _ = nix::unistd::close(fd);
    }
    let mut mask = nix::sys::signal::SigSet::empty();
    if std::process::id() == 1 {
        for signal in STOP_SIGNALS {
            mask.add(signal);
        }
    }
    let _ =
        nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_SETMASK, Some(&mask), None);
}

/// The signals `up` stops (or, SIGHUP, reloads) on.
const STOP_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
];

/// Lets the stop signals [`disinherit`] held back in: call once their handlers are
/// installed. One that came meanwhile is delivered now.
pub fn unblock_stop_signals() {
    let mut mask = nix::sys::signal::SigSet::empty();
    for signal in STOP_SIGNALS {
        mask.add(signal);
    }
    let _ =
        nix::sys::signal::sigprocmask(nix::sys::signal::SigmaskHow::SIG_UNBLOCK, Some(&mask), None);
}

/// Leaves out of a child's environment what muster's own starter addressed to muster:
/// systemd's `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`. A service gets
/// muster's notify socket and its own watchdog instead (set after this); a hook or a
/// probe gets neither, so none of them can speak to systemd in muster's name, and a
/// `WATCHDOG_PID` naming muster cannot turn off a service's own watchdog.
pub fn forget_starter(command: &mut std::process::Command) {
    for key in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        command.env_remove(key);
    }
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
pub(super) fn handle_inherited_ignores() {
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
