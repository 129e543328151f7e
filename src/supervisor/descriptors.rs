//! The supervisor's descriptor budget: how many of its open descriptors the services'
//! output may hold, and what a service gets when the limit cannot give it two pipes.
//!
//! A running service costs muster one descriptor per pipe it reads (stdout, stderr)
//! and, for its log, one more only while it is among the [`KEEP_OPEN_LOGS`] logs kept
//! open between writes (the others open their file for each write). With the usual
//! hard limit of 20,000, two pipes each hold about 9,300 services: past the budget a
//! service's stderr goes into its stdout pipe (as `2>&1` would), one descriptor, and
//! its lines are recorded as stdout. Which services those are is decided at each
//! spawn, in the order they spawn: the budget is what is left of the limit, minus
//! [`RESERVE`] for the API's clients, proxied connections, probes, hooks and the
//! history. `check` and `up` say before anything starts how many services keep their
//! streams apart ([`plan`]).
//!
//! A leaf: counters and arithmetic, no knowledge of services.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Log files kept open between writes, at most, across the process.
pub const KEEP_OPEN_LOGS: usize = 256;
/// Descriptors kept free of services' output for everything else muster opens.
pub const RESERVE: usize = 1024;

/// Pipe ends held for services' output now, across the process.
static PIPES: AtomicUsize = AtomicUsize::new(0);
/// Log files open between writes now, across the process.
static OPEN_LOGS: AtomicUsize = AtomicUsize::new(0);

/// The soft limit on this process's descriptors (`up` raised it to the hard limit).
pub fn soft_limit() -> usize {
    limits().0
}

/// (soft, hard) limits on descriptors; a limit that cannot be read counts as 1,024.
pub fn limits() -> (usize, usize) {
    use nix::sys::resource::{Resource, getrlimit};
    let clamp = |value: u64| usize::try_from(value).unwrap_or(usize::MAX);
    getrlimit(Resource::RLIMIT_NOFILE)
        .map_or((1024, 1024), |(soft, hard)| (clamp(soft), clamp(hard)))
}

/// How many pipe ends the services' output may hold under `limit`.
fn budget(limit: usize) -> usize {
    limit.saturating_sub(RESERVE + KEEP_OPEN_LOGS)
}

/// One pipe end counted in the budget while it lives.
#[derive(Debug)]
pub struct Lease(());

impl Lease {
    fn take() -> Self {
        PIPES.fetch_add(1, Ordering::Relaxed);
        Lease(())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        PIPES.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How one run's output reaches muster.
#[derive(Debug)]
pub enum Output {
    /// A pipe for stdout and one for stderr (std makes them at the spawn).
    Separate([Lease; 2]),
    /// One pipe for both: its read end and its lease.
    Merged { read: OwnedFd, lease: Lease },
}

impl Output {
    /// Two pipes while the budget holds them, otherwise one, whose write end (for
    /// the child's stdout and, duplicated, its stderr) comes with it.
    pub fn for_spawn() -> io::Result<(Self, Option<OwnedFd>)> {
        let limit = budget(soft_limit());
        if PIPES.load(Ordering::Relaxed) + 2 <= limit {
            return Ok((Output::Separate([Lease::take(), Lease::take()]), None));
        }
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let lease = Lease::take();
        Ok((Output::Merged { read, lease }, Some(write)))
    }
}

/// A log file counted among those kept open, while it is.
#[derive(Debug)]
pub struct KeptLog(());

impl KeptLog {
    /// A place among the logs kept open, if one is free.
    pub fn take() -> Option<Self> {
        let before = OPEN_LOGS.fetch_add(1, Ordering::Relaxed);
        if before < KEEP_OPEN_LOGS {
            Some(KeptLog(()))
        } else {
            OPEN_LOGS.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

impl Drop for KeptLog {
    fn drop(&mut self) {
        OPEN_LOGS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a limit of descriptors means for `services` running services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub services: usize,
    /// The limit the plan is for.
    pub limit: usize,
    /// Services whose stdout and stderr keep a pipe each.
    pub separate: usize,
    /// Services that can run at all (one pipe each past `separate`).
    pub most: usize,
}

/// How `limit` descriptors serve `services` running services.
pub fn plan(services: usize, limit: usize) -> Plan {
    let budget = budget(limit);
    // Two pipes each for the first `separate`, one for each of the rest.
    let separate = budget.saturating_sub(services).min(services);
    let most = budget;
    Plan {
        services,
        limit,
        separate,
        most,
    }
}

impl Plan {
    /// What a user should know before `up`, or nothing when every service keeps its
    /// streams apart.
    pub fn describe(&self) -> Option<String> {
        if self.separate >= self.services {
            return None;
        }
        if self.services > self.most {
            return Some(format!(
                "{} services need at least {} open descriptors, and the limit is {}: at \
                 most {} of them can run at once; raise the hard limit (`ulimit -Hn`, \
                 `LimitNOFILE=` in a systemd unit) to {} or more",
                self.services,
                self.services + RESERVE + KEEP_OPEN_LOGS,
                self.limit,
                self.most,
                self.services * 2 + RESERVE + KEEP_OPEN_LOGS,
            ));
        }
        Some(format!(
            "the descriptor limit ({}) holds separate stdout and stderr pipes for {} of \
             the {} services; the other {} get one pipe for both (their stderr is \
             recorded as stdout); a hard limit of {} keeps every service's streams apart",
            self.limit,
            self.separate,
            self.services,
            self.services - self.separate,
            self.services * 2 + RESERVE + KEEP_OPEN_LOGS,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_gives_two_pipes_while_they_fit_and_one_after() {
        let roomy = plan(100, 20_000);
        assert_eq!(roomy.separate, 100);
        assert_eq!(roomy.describe(), None);
        let tight = plan(10_000, 20_000);
        let budget = 20_000 - RESERVE - KEEP_OPEN_LOGS;
        assert_eq!(tight.separate, budget - 10_000);
        assert_eq!(tight.separate * 2 + (10_000 - tight.separate), budget);
        assert!(tight.describe().unwrap().contains("one pipe for both"));
        let over = plan(30_000, 20_000);
        assert_eq!(over.separate, 0);
        assert!(over.describe().unwrap().contains("at most"));
    }
}
