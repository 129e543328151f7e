//! Orphan recovery: stopping what a supervisor that was killed left running.
//!
//! Every run is recorded with its pid (also its process group), its start time, the
//! boot id and the supervisor instance (the `NOTIFY_SOCKET` address every child
//! inherits). A run with no recorded end belonged to a supervisor that died. Before a
//! new supervisor starts anything, each such run is looked up in `/proc`:
//!
//! - its leader, when it still has the recorded start time in this boot, vouches for its
//!   whole process group (a group id cannot be reused while its leader lives);
//! - any other process carrying that run's `MUSTER_RUN_ID` and `NOTIFY_SOCKET` and
//!   started no earlier belongs to it too (a daemon that left the group, a child whose
//!   leader is gone).
//!
//! Nothing else is ever signalled: a pid now used by another program is left alone. The
//! run's processes get the service's stop signal, then SIGKILL after its stop timeout;
//! each group stopped gives one `orphan-stopped` event. These processes are not
//! muster's children, so nothing announces their end: `/proc` is looked at every few
//! milliseconds, only during this recovery, and within its deadline.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::json;

use super::bus::{Draft, EventBus, EventKind};
use super::procfs::{self, Stat};
use crate::config::{ServiceName, Spec};
use crate::store::{Run, RunEnd};

/// How long to wait after SIGKILL before calling a process a survivor.
const AFTER_KILL: Duration = Duration::from_secs(5);
/// Stop timeout for a run whose service is no longer in the config.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A process that did not stop, even on SIGKILL (stuck in the kernel, say).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub pid: u32,
    pub service: String,
    pub run_id: u64,
}

/// What a recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Runs whose processes were found and stopped (one `orphan-stopped` each).
    pub stopped: usize,
    /// Processes that would not stop.
    pub leftovers: Vec<Leftover>,
}

/// Closes every run in `open`: stops the processes still running, records how each
/// ended.
pub async fn recover(open: Vec<Run>, spec: &Spec, bus: &EventBus) -> Recovery {
    if open.is_empty() {
        return Recovery::default();
    }
    let boot = procfs::boot_id();
    let table = procfs::processes();
    let carriers = carriers(&table, &open);
    let stops = open.into_iter().map(|run| {
        let members = members(&run, boot.as_deref(), &table, &carriers);
        async move {
            match members {
                Members::None(reason) => {
                    close(bus, &run, reason, None);
                    None
                }
                Members::Found { group, pids } => Some(stop(spec, bus, run, group, pids).await),
            }
        }
    });
    let stopped: Vec<Vec<Leftover>> = futures_util::future::join_all(stops)
        .await
        .into_iter()
        .flatten()
        .collect();
    Recovery {
        stopped: stopped.len(),
        leftovers: stopped.into_iter().flatten().collect(),
    }
}

/// Who belongs to a run.
#[derive(Debug, PartialEq, Eq)]
enum Members {
    /// Nothing to stop, and why.
    None(String),
    /// `group`: the leader still lives, so its whole group is the run's.
    Found { group: bool, pids: Vec<u32> },
}

/// The processes carrying some open run's supervisor instance in their environment,
/// with the run id they carry. Each environment is read once.
fn carriers(table: &[(u32, Stat)], open: &[Run]) -> BTreeMap<u32, u64> {
    let instances: Vec<String> = open
        .iter()
        .map(|run| format!("NOTIFY_SOCKET={}", run.instance))
        .collect();
    table
        .iter()
        .filter(|(_, stat)| !stat.is_zombie())
        .filter_map(|&(pid, _)| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let entries: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
            if !instances.iter().any(|i| entries.contains(&i.as_bytes())) {
                return None;
            }
            let run = entries
                .iter()
                .find_map(|e| e.strip_prefix(b"MUSTER_RUN_ID="))
                .and_then(|value| std::str::from_utf8(value).ok()?.parse().ok())?;
            Some((pid, run))
        })
        .collect()
}

fn members(
    run: &Run,
    boot: Option<&str>,
    table: &[(u32, Stat)],
    carriers: &BTreeMap<u32, u64>,
) -> Members {
    if let (Some(then), Some(now)) = (run.boot_id.as_deref(), boot)
        && then != now
    {
        return Members::None("the host restarted since".to_owned());
    }
    let leader = table
        .iter()
        .find(|(pid, _)| *pid == run.pid)
        .map(|(_, s)| s);
    let leader_is_ours = leader.is_some_and(|stat| {
        !stat.is_zombie() && run.start_ticks == Some(stat.start_ticks) && stat.pgrp == run.pgid
    });
    let not_older = |stat: &Stat| run.start_ticks.is_none_or(|t| stat.start_ticks >= t);
    let mut pids: Vec<u32> = table
        .iter()
        .filter(|(pid, stat)| {
            let in_group = leader_is_ours && stat.pgrp == run.pgid && !stat.is_zombie();
            let carries = carriers.get(pid) == Some(&run.run_id) && not_older(stat);
            in_group || carries
        })
        .map(|(pid, _)| *pid)
        .collect();
    pids.sort_unstable();
    if !pids.is_empty() {
        return Members::Found {
            group: leader_is_ours,
            pids,
        };
    }
    Members::None(match leader {
        Some(stat) if !stat.is_zombie() => format!(
            "ended while no supervisor watched it; pid {} now belongs to another process \
             (`{}`), left alone",
            run.pid,
            procfs::command_line(run.pid)
        ),
        _ => "ended while no supervisor watched it".to_owned(),
    })
}

/// Stops one run's processes; returns those that survived SIGKILL.
async fn stop(spec: &Spec, bus: &EventBus, run: Run, group: bool, pids: Vec<u32>) -> Vec<Leftover> {
    let service = spec.services.get(run.service.as_str());
    let signal = service.map_or(Signal::SIGTERM, |s| s.stop_signal);
    let patience = service.map_or(DEFAULT_STOP_TIMEOUT, |s| s.stop_timeout);
    let started = tokio::time::Instant::now();
    send(&run, group, &pids, signal);
    let mut alive = wait_gone(&run, &pids, patience).await;
    let mut used = signal;
    if !alive.is_empty() {
        used = Signal::SIGKILL;
        send(&run, group, &alive, Signal::SIGKILL);
        alive = wait_gone(&run, &alive, AFTER_KILL).await;
    }
    let took = started.elapsed();
    let count = pids.len();
    let processes = if count == 1 {
        "1 process".to_owned()
    } else {
        format!("{count} processes")
    };
    let them = if count == 1 { "it" } else { "them" };
    let mut message = format!(
        "stopped {processes} of run {} (pid {}) left running by a supervisor that ended \
         without stopping {them}: {}",
        run.run_id,
        run.pid,
        used.as_str()
    );
    if used != signal {
        message.push_str(&format!(" after {} did not stop {them}", signal.as_str()));
    }
    if !alive.is_empty() {
        message.push_str(&format!(
            "; {} still running: {:?}",
            alive.len(),
            alive.iter().collect::<Vec<_>>()
        ));
    }
    let data = json!({
        "pid": run.pid,
        "pgid": run.pgid,
        "run": run.run_id,
        "processes": pids,
        "signal": used.as_str(),
        "took_ms": took.as_millis() as u64,
        "survivors": alive,
    });
    let event = Draft::Event {
        kind: EventKind::OrphanStopped,
        message,
        data,
    };
    close(
        bus,
        &run,
        format!(
            "left running when its supervisor ended; stopped by the next one with {}",
            used.as_str()
        ),
        Some((used, event)),
    );
    alive
        .into_iter()
        .map(|pid| Leftover {
            pid,
            service: run.service.clone(),
            run_id: run.run_id,
        })
        .collect()
}

/// Records the run's end, and the event that goes with it.
fn close(bus: &EventBus, run: &Run, reason: String, stopped: Option<(Signal, Draft)>) {
    let Ok(service) = ServiceName::new(&run.service) else {
        return;
    };
    let (signal, event) = match stopped {
        Some((signal, event)) => (Some(signal.as_str().to_owned()), Some(event)),
        None => (None, None),
    };
    let mut drafts = vec![Draft::RunEnded(RunEnd {
        run_id: run.run_id,
        ended_at: SystemTime::now(),
        exit_code: None,
        signal,
        reason,
    })];
    drafts.extend(event);
    bus.publish_step(&service, run.run_id, drafts, || {});
}

/// Signals the run's processes: the whole group when its leader vouches for it, and
/// each process by pid (members that left the group, or all of them without a leader).
fn send(run: &Run, group: bool, pids: &[u32], signal: Signal) {
    if group {
        let _ = killpg(Pid::from_raw(run.pgid as i32), signal);
        let _ = killpg(Pid::from_raw(run.pgid as i32), Signal::SIGCONT);
    }
    for &pid in pids {
        let _ = kill(Pid::from_raw(pid as i32), signal);
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
    }
}

/// Waits up to `within` for `pids` to be gone; returns those still there. A zombie is
/// gone: whoever inherited it reaps it, or not, but it runs no more. These processes
/// are not muster's children, so no SIGCHLD tells of their end: each is watched through
/// a pidfd, which becomes readable when the process exits (waited on in a blocking
/// `poll`, one per process and only during this recovery).
async fn wait_gone(run: &Run, pids: &[u32], within: Duration) -> Vec<u32> {
    let start_ticks = run.start_ticks;
    let waits = pids.iter().map(|&pid| {
        tokio::task::spawn_blocking(move || (pid, exits_within(pid, start_ticks, within)))
    });
    futures_util::future::join_all(waits)
        .await
        .into_iter()
        .filter_map(|joined| match joined {
            Ok((pid, false)) => Some(pid),
            _ => None,
        })
        .collect()
}

/// Whether `pid` stops being the run's live process within `within`.
fn exits_within(pid: u32, start_ticks: Option<u64>, within: Duration) -> bool {
    procfs::exits_within(pid, within, || {
        procfs::stat(pid).is_some_and(|stat| {
            !stat.is_zombie() && start_ticks.is_none_or(|t| stat.start_ticks >= t)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pid: u32, start_ticks: u64) -> Run {
        Run {
            run_id: 7,
            service: "api".to_owned(),
            pid,
            pgid: pid,
            start_ticks: Some(start_ticks),
            boot_id: procfs::boot_id(),
            instance: "@muster-test".to_owned(),
            started_at: SystemTime::now(),
            ended_at: None,
            exit_code: None,
            signal: None,
            reason: None,
        }
    }

    fn stat(pgrp: u32, start_ticks: u64) -> Stat {
        Stat {
            state: 'S',
            ppid: 1,
            pgrp,
            start_ticks,
            cpu_ticks: 0,
        }
    }

    #[test]
    fn a_pid_with_another_start_time_is_never_a_member() {
        let table = vec![(100, stat(100, 5000)), (101, stat(100, 5001))];
        let found = members(
            &run(100, 4000),
            procfs::boot_id().as_deref(),
            &table,
            &BTreeMap::new(),
        );
        assert!(
            matches!(&found, Members::None(reason) if reason.contains("pid 100 now belongs to another process")),
            "{found:?}"
        );
    }

    #[test]
    fn a_live_leader_vouches_for_its_group() {
        let table = vec![
            (100, stat(100, 4000)),
            (101, stat(100, 4001)),
            (102, stat(102, 4002)),
        ];
        let found = members(&run(100, 4000), None, &table, &BTreeMap::new());
        assert_eq!(
            found,
            Members::Found {
                group: true,
                pids: vec![100, 101]
            }
        );
    }

    #[test]
    fn without_its_leader_a_run_keeps_only_processes_carrying_its_marks() {
        let table = vec![
            (101, stat(100, 4001)),
            (102, stat(102, 4002)),
            (103, stat(100, 3000)),
        ];
        // 101 carries the run, 103 claims to but is older than the run: not it.
        let carriers = BTreeMap::from([(101, 7), (103, 7), (102, 8)]);
        let found = members(&run(100, 4000), None, &table, &carriers);
        assert_eq!(
            found,
            Members::Found {
                group: false,
                pids: vec![101]
            }
        );
    }

    #[test]
    fn runs_of_another_boot_are_closed_untouched() {
        let mut old = run(100, 4000);
        old.boot_id = Some("another-boot".to_owned());
        let table = vec![(100, stat(100, 4000))];
        assert_eq!(
            members(&old, Some("this-boot"), &table, &BTreeMap::new()),
            Members::None("the host restarted since".to_owned())
        );
    }
}
