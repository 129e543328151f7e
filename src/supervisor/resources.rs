//! What each service's processes use: CPU as a percentage between two readings, and
//! memory as the RSS and PSS of the whole process group. Read from `/proc` when someone
//! asks (`muster status`, the API, `/metrics`), never by a loop of its own: a supervisor
//! nobody asks costs nothing.
//!
//! A percentage needs two readings of the group's CPU time (the user and system time of
//! its live processes). The second is now; the first is the reading the previous
//! request left for the same run. When that is younger than [`MIN_INTERVAL`] (requests
//! in quick succession) the share it measured is given again, and the next request
//! measures from it. With no reading of the run (the first request, a new run), the
//! first is taken now and the second [`SAMPLE`] later: one wait for every service asked
//! about. The CPU time of processes that ended between the readings is not counted.
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
/// A run younger than this, not read before, is measured since its start: its average
/// so far is its use now, and a boot of many services is not held up by samples.
pub const YOUNG: Duration = Duration::from_secs(2);
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
#[derive(Debug, Clone, Default)]
struct Sample {
    cpu_ticks: u64,
    rss: u64,
    pss: u64,
    /// A process's PSS could not be read: the sum is unknown.
    pss_unknown: bool,
    processes: u32,
    /// Its live processes, for a second reading of their CPU time alone.
    pids: Vec<u32>,
}

/// The reading a request leaves for the next one, with the share it measured.
#[derive(Debug, Clone, Copy)]
struct Reading {
    group: u32,
    at: Instant,
    cpu_ticks: u64,
    /// The share measured up to `at`, and over how long.
    cpu_percent: f64,
    cpu_interval: Duration,
}

/// The last reading of each service, kept between requests.
#[derive(Debug, Default)]
pub struct Meter {
    last: Mutex<HashMap<ServiceName, Reading>>,
}

/// How a service's share is had this time.
enum Share {
    /// Since its last reading, old enough.
    Since(Reading),
    /// Its last reading is too recent to measure against: its share stands.
    Recent(Reading),
    /// No reading of this run, which started this long ago: measured since its start.
    SinceStart(Duration),
    /// No reading of this run, an older one: sampled now.
    Sampled,
}

impl Meter {
    /// What each of `services` (a name and the pid of its running process) uses now.
    /// Those whose group cannot be read (it has just ended) are left out.
    pub async fn measure(&self, services: &[(ServiceName, u32)]) -> HashMap<ServiceName, Use> {
        if services.is_empty() {
            return HashMap::new();
        }
        let leaders: Vec<u32> = services.iter().map(|(_, pid)| *pid).collect();
        let (leaders, first) = tokio::task::spawn_blocking(move || scan(&leaders))
            .await
            .unwrap_or_default();
        let targets: Vec<(ServiceName, (u32, Option<Duration>))> = services
            .iter()
            .filter_map(|(name, pid)| Some((name.clone(), *leaders.get(pid)?)))
            .collect();
        let now = Instant::now();
        let shares: Vec<Share> = {
            let last = self.lock();
            targets
                .iter()
                .map(|(name, (group, age))| match last.get(name) {
                    Some(reading) if reading.group == *group => {
                        if now.duration_since(reading.at) >= MIN_INTERVAL {
                            Share::Since(*reading)
                        } else {
                            Share::Recent(*reading)
                        }
                    }
                    _ => match age {
                        Some(age) if *age < YOUNG => Share::SinceStart(*age),
                        _ => Share::Sampled,
                    },
                })
                .collect()
        };
        // Those with no reading get a second one after a short wait: of the CPU time of
        // the processes the first found, which is all it needs.
        let sampled: Vec<(u32, Vec<u32>)> = targets
            .iter()
            .zip(&shares)
            .filter(|(_, share)| matches!(share, Share::Sampled))
            .filter_map(|((_, (group, _)), _)| Some((*group, first.get(group)?.pids.clone())))
            .collect();
        let (second, second_at) = if sampled.is_empty() {
            (HashMap::new(), now)
        } else {
            tokio::time::sleep(SAMPLE).await;
            let ticks = tokio::task::spawn_blocking(move || cpu_ticks(&sampled))
                .await
                .unwrap_or_default();
            (ticks, Instant::now())
        };
        let mut uses = HashMap::new();
        let mut last = self.lock();
        for ((name, (group, _)), share) in targets.iter().zip(shares) {
            let Some(sample) = first.get(group) else {
                continue;
            };
            let reading = |before_at: Instant, before_ticks: u64, at: Instant, ticks: u64| {
                let interval = at.duration_since(before_at);
                let used = ticks.saturating_sub(before_ticks) as f64 / procfs::TICKS_PER_SECOND;
                Reading {
                    group: *group,
                    at,
                    cpu_ticks: ticks,
                    cpu_percent: if interval.is_zero() {
                        0.0
                    } else {
                        used / interval.as_secs_f64() * 100.0
                    },
                    cpu_interval: interval,
                }
            };
            let reading = match share {
                Share::Since(before) => reading(before.at, before.cpu_ticks, now, sample.cpu_ticks),
                // Kept as it is: the next request measures from it, over a longer time.
                Share::Recent(before) => before,
                // At its start the group had used no CPU time.
                Share::SinceStart(age) => reading(
                    now.checked_sub(age).unwrap_or(now),
                    0,
                    now,
                    sample.cpu_ticks,
                ),
                Share::Sampled => match second.get(group) {
                    Some(ticks) => reading(now, sample.cpu_ticks, second_at, *ticks),
                    None => continue,
                },
            };
            uses.insert(
                name.clone(),
                Use {
                    cpu_percent: reading.cpu_percent,
                    cpu_interval: reading.cpu_interval,
                    rss: sample.rss,
                    pss: (!sample.pss_unknown).then_some(sample.pss),
                    processes: sample.processes,
                },
            );
            last.insert(name.clone(), reading);
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

/// One pass over `/proc`: the process group and the age of each of `leaders` (a
/// service's running process), and the numbers of every live process in those groups,
/// summed by group. A group that is muster's own is left out (a daemon taken over that
/// stayed in muster's group: there is no group of its own to count).
#[allow(clippy::type_complexity)]
fn scan(leaders: &[u32]) -> (HashMap<u32, (u32, Option<Duration>)>, HashMap<u32, Sample>) {
    let processes: HashMap<u32, procfs::Stat> = procfs::processes()
        .into_iter()
        .filter(|(_, stat)| !stat.is_zombie())
        .collect();
    let own = nix::unistd::getpgrp().as_raw() as u32;
    let uptime = procfs::uptime();
    let groups: HashMap<u32, (u32, Option<Duration>)> = leaders
        .iter()
        .filter_map(|pid| {
            let stat = processes.get(pid)?;
            let age = uptime.map(|uptime| procfs::age_of(stat.start_ticks, uptime));
            (stat.pgrp > 1 && stat.pgrp != own).then_some((*pid, (stat.pgrp, age)))
        })
        .collect();
    let wanted: std::collections::HashSet<u32> = groups.values().map(|(group, _)| *group).collect();
    let mut samples: HashMap<u32, Sample> = HashMap::new();
    for (pid, stat) in &processes {
        if !wanted.contains(&stat.pgrp) {
            continue;
        }
        let sample = samples.entry(stat.pgrp).or_default();
        sample.cpu_ticks = sample.cpu_ticks.saturating_add(stat.cpu_ticks);
        sample.processes += 1;
        sample.pids.push(*pid);
        let (rss, pss) = procfs::memory(*pid).unwrap_or_default();
        sample.rss = sample.rss.saturating_add(rss);
        match pss {
            Some(pss) => sample.pss = sample.pss.saturating_add(pss),
            None => sample.pss_unknown = true,
        }
    }
    (groups, samples)
}

/// The CPU time of each group's `pids` now, summed by group (those gone count nothing).
fn cpu_ticks(groups: &[(u32, Vec<u32>)]) -> HashMap<u32, u64> {
    groups
        .iter()
        .map(|(group, pids)| {
            let ticks = pids
                .iter()
                .filter_map(|&pid| procfs::stat(pid))
                .filter(|stat| stat.pgrp == *group && !stat.is_zombie())
                .map(|stat| stat.cpu_ticks)
                .sum();
            (*group, ticks)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_busy_group_uses_cpu_and_an_idle_one_does_not() {
        use std::os::unix::process::CommandExt;
        /// Kills and reaps its children when dropped, a failed assertion included.
        struct Children(Vec<std::process::Child>);
        impl Drop for Children {
            fn drop(&mut self) {
                for child in &mut self.0 {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
        let busy = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .process_group(0)
            .spawn()
            .unwrap();
        let idle = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let children = Children(vec![busy, idle]);
        let (busy, idle) = (&children.0[0], &children.0[1]);
        let meter = Meter::default();
        let busy_name = ServiceName::new("busy").unwrap();
        let idle_name = ServiceName::new("idle").unwrap();
        let asked = [
            (busy_name.clone(), busy.id()),
            (idle_name.clone(), idle.id()),
        ];
        // Young runs are measured since their start; the next request since the first.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let first = meter.measure(&asked).await;
        assert!(
            first[&busy_name].cpu_interval >= Duration::from_millis(250),
            "{first:?}"
        );
        assert!(first[&busy_name].cpu_interval < YOUNG, "{first:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second = meter.measure(&asked).await;
        let answered = Instant::now();
        // A request right after another gives the same figures, measured then (when
        // this test was quick enough to ask within the interval).
        let again = meter.measure(&asked).await;
        if answered.elapsed() < MIN_INTERVAL {
            assert_eq!(
                again[&busy_name].cpu_interval,
                second[&busy_name].cpu_interval
            );
        }
        // Runs older than YOUNG that were never read are sampled for a moment.
        tokio::time::sleep(YOUNG).await;
        let third = Meter::default().measure(&asked).await;
        drop(children);
        let sampled = third[&busy_name].cpu_interval;
        assert!(sampled >= SAMPLE && sampled < SAMPLE * 4, "{third:?}");
        for uses in [&first, &second, &third] {
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
