//! What each service's processes use: CPU as a percentage between two readings, and
//! memory as the RSS and PSS of the whole process group. Read from `/proc` when someone
//! asks (`muster status`, the API, `/metrics`), never by a loop of its own: a supervisor
//! nobody asks costs nothing.
//!
//! A percentage needs two readings of the group's CPU time (the user and system time of
//! its live processes). The second is now; the first is the reading the previous
//! request left for the same run, when it is at least [`MIN_INTERVAL`] old. Otherwise
//! (the first request, a new run, or two requests in quick succession) the first is
//! taken now and the second [`SAMPLE`] later: one wait for every service asked about.
//! The CPU time of processes that ended between the readings is not counted.
//!
//! Memory: RSS counts every resident page of each process, so pages the processes share
//! (a forking server's) are counted once per process; PSS divides each shared page among
//! the processes that share it, which makes the group's sum what it really holds. Both
//! come from `/proc/PID/smaps_rollup`; where it cannot be read (another user's process
//! under a muster that is not root) RSS comes from `/proc/PID/statm` and PSS is unknown.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::procfs;
use crate::config::ServiceName;

/// The shortest interval a percentage is measured over.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// How long the short sampling waits between its two readings.
pub const SAMPLE: Duration = Duration::from_millis(250);

/// What one service's process group uses now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Use {
    /// Percent of one CPU: 200 is two CPUs busy.
    pub cpu_percent: f64,
    /// What the percentage is measured over.
    pub cpu_interval: Duration,
    /// Resident memory of its processes, summed, in bytes.
    pub rss: u64,
    /// Proportional memory of its processes, summed, in bytes; `None` when unknown.
    pub pss: Option<u64>,
    /// Live processes in the group.
    pub processes: u32,
}

/// A group's numbers at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    cpu_ticks: u64,
    rss: u64,
    pss: u64,
    /// A process's PSS could not be read: the sum is unknown.
    pss_unknown: bool,
    processes: u32,
}

/// The reading a request leaves for the next one.
#[derive(Debug, Clone, Copy)]
struct Reading {
    group: u32,
    at: Instant,
    cpu_ticks: u64,
}

/// The last reading of each service, kept between requests.
#[derive(Debug, Default)]
pub struct Meter {
    last: Mutex<HashMap<ServiceName, Reading>>,
}

impl Meter {
    /// What each of `services` (a name and the pid of its running process) uses now.
    /// Those whose group cannot be read (it has just ended) are left out.
    pub async fn measure(&self, services: &[(ServiceName, u32)]) -> HashMap<ServiceName, Use> {
        let targets: Vec<(ServiceName, u32)> = services
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), group_of(*pid)?)))
            .collect();
        if targets.is_empty() {
            return HashMap::new();
        }
        let groups: Vec<u32> = targets.iter().map(|(_, group)| *group).collect();
        let first = read(groups.clone()).await;
        let now = Instant::now();
        let mut previous: HashMap<ServiceName, Reading> = {
            let last = self.lock();
            targets
                .iter()
                .filter_map(|(name, group)| {
                    let reading = last.get(name)?;
                    (reading.group == *group && now.duration_since(reading.at) >= MIN_INTERVAL)
                        .then(|| (name.clone(), *reading))
                })
                .collect()
        };
        // Those with no usable reading get one now, and the second after a short wait.
        let unread: Vec<u32> = targets
            .iter()
            .filter(|(name, _)| !previous.contains_key(name))
            .map(|(_, group)| *group)
            .collect();
        let mut second = HashMap::new();
        let mut at = now;
        if !unread.is_empty() {
            for (name, group) in &targets {
                if let (false, Some(sample)) = (previous.contains_key(name), first.get(group)) {
                    previous.insert(
                        name.clone(),
                        Reading {
                            group: *group,
                            at: now,
                            cpu_ticks: sample.cpu_ticks,
                        },
                    );
                }
            }
            tokio::time::sleep(SAMPLE).await;
            second = read(unread).await;
            at = Instant::now();
        }
        let mut uses = HashMap::new();
        let mut last = self.lock();
        for (name, group) in &targets {
            let Some(memory) = first.get(group) else {
                continue;
            };
            let (taken, cpu_ticks) = match second.get(group) {
                Some(sample) => (at, sample.cpu_ticks),
                None => (now, memory.cpu_ticks),
            };
            let cpu_percent = previous.get(name).map_or(0.0, |before| {
                let interval = taken.duration_since(before.at).as_secs_f64();
                let ticks = cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
                if interval > 0.0 {
                    ticks / procfs::TICKS_PER_SECOND / interval * 100.0
                } else {
                    0.0
                }
            });
            let cpu_interval = previous
                .get(name)
                .map_or(Duration::ZERO, |before| taken.duration_since(before.at));
            uses.insert(
                name.clone(),
                Use {
                    cpu_percent,
                    cpu_interval,
                    rss: memory.rss,
                    pss: (!memory.pss_unknown).then_some(memory.pss),
                    processes: memory.processes,
                },
            );
            last.insert(
                name.clone(),
                Reading {
                    group: *group,
                    at: taken,
                    cpu_ticks,
                },
            );
        }
        // Services that have no process any more leave nothing to compare with.
        if services.len() > 1 {
            last.retain(|name, _| uses.contains_key(name));
        }
        uses
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceName, Reading>> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The process group a service's process runs in, unless it is muster's own (a daemon
/// taken over that stayed in muster's group: then there is no group to count).
fn group_of(pid: u32) -> Option<u32> {
    let stat = procfs::stat(pid).filter(|stat| !stat.is_zombie())?;
    let own = nix::unistd::getpgrp().as_raw() as u32;
    (stat.pgrp > 1 && stat.pgrp != own).then_some(stat.pgrp)
}

/// Reads `groups` off the async runtime: a pass over `/proc` costs a read per process.
async fn read(groups: Vec<u32>) -> HashMap<u32, Sample> {
    tokio::task::spawn_blocking(move || scan(&groups))
        .await
        .unwrap_or_default()
}

/// One pass over `/proc`: the numbers of every live process in `groups`, summed by group.
fn scan(groups: &[u32]) -> HashMap<u32, Sample> {
    let mut samples: HashMap<u32, Sample> = HashMap::new();
    for (pid, stat) in procfs::processes() {
        if stat.is_zombie() || !groups.contains(&stat.pgrp) {
            continue;
        }
        let sample = samples.entry(stat.pgrp).or_default();
        sample.cpu_ticks = sample.cpu_ticks.saturating_add(stat.cpu_ticks);
        sample.processes += 1;
        let (rss, pss) = procfs::memory(pid).unwrap_or_default();
        sample.rss = sample.rss.saturating_add(rss);
        match pss {
            Some(pss) => sample.pss = sample.pss.saturating_add(pss),
            None => sample.pss_unknown = true,
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_group_uses_cpu_and_an_idle_one_does_not() {
        use std::os::unix::process::CommandExt;
        let mut busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .process_group(0)
            .spawn()
            .unwrap();
        let mut idle = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let meter = Meter::default();
        let busy_name = ServiceName::new("busy").unwrap();
        let idle_name = ServiceName::new("idle").unwrap();
        let asked = [
            (busy_name.clone(), busy.id()),
            (idle_name.clone(), idle.id()),
        ];
        let first = meter.measure(&asked).await;
        // The first request samples for a moment; the next measures since the first.
        assert!(first[&busy_name].cpu_interval >= SAMPLE, "{first:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = meter.measure(&asked).await;
        let _ = busy.kill();
        let _ = idle.kill();
        let _ = busy.wait();
        let _ = idle.wait();
        for uses in [&first, &second] {
            // Loose bounds: other work on the machine takes its share of the CPU.
            assert!(uses[&busy_name].cpu_percent > 10.0, "{uses:?}");
            assert!(uses[&idle_name].cpu_percent < 5.0, "{uses:?}");
            assert!(
                uses[&busy_name].rss > 0 && uses[&idle_name].rss > 0,
                "{uses:?}"
            );
            assert!(uses[&idle_name].pss.is_some_and(|pss| pss > 0), "{uses:?}");
        }
        assert!(second[&busy_name].cpu_interval >= Duration::from_millis(300));
    }
}
