//! What `/proc` says about processes: parent, process group, state, start time,
//! environment and command line.
//!
//! A pid alone does not name a process for long: it is reused. A pid together with its
//! start time (field 22 of `/proc/PID/stat`, in clock ticks since boot) and the boot id
//! does, which is what lets the next supervisor tell its predecessor's orphans from
//! strangers that got the same pid.

use std::time::Duration;

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`, 100 on every Linux port).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// The fields of `/proc/PID/stat` muster uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// `R`, `S`, `D`, `Z`, `T`, ...
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
    /// When it started, in clock ticks since boot.
    pub start_ticks: u64,
    /// CPU time it has used, user and system, in clock ticks (its threads' included,
    /// its reaped children's not).
    pub cpu_ticks: u64,
}

impl Stat {
    pub fn is_zombie(&self) -> bool {
        matches!(self.state, 'Z' | 'X')
    }
}

pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a `/proc/PID/stat` line. The command name may hold spaces and parentheses,
/// so fields are counted from the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state (field 3), ppid (4), pgrp (5), ..., utime (14), stime
    // (15), ..., starttime (22).
    let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: ticks(19)?,
        cpu_ticks: ticks(11)?.saturating_add(ticks(12)?),
    })
}

/// The resident and proportional memory of `pid` in bytes, from
/// `/proc/PID/smaps_rollup`; where that cannot be read (another user's process, for a
/// supervisor that is not root), the resident memory from `/proc/PID/statm` and no PSS.
/// `None` when the process is gone.
pub fn memory(pid: u32) -> Option<(u64, Option<u64>)> {
    if let Ok(rollup) = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
        let field = |name: &str| {
            rollup.lines().find_map(|line| {
                let kib = line.strip_prefix(name)?.trim().strip_suffix("kB")?;
                kib.trim().parse::<u64>().ok().map(|kib| kib * 1024)
            })
        };
        if let Some(rss) = field("Rss:") {
            return Some((rss, field("Pss:")));
        }
    }
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |size| size as u64);
    Some((pages * page, None))
}

/// Waits up to `within` for `pid` to stop being the process `still_it` vouches for
/// (gone, a zombie, or another process by now); whether it did. Through a pidfd, which
/// becomes readable when the process exits: no polling, and it works for processes
/// that are not the caller's children. `still_it` is asked once the pidfd is open, so
/// the pid cannot change hands in between, and again at the end.
pub fn exits_within(pid: u32, within: Duration, still_it: impl Fn() -> bool) -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let Some(raw) = rustix::process::Pid::from_raw(pid as i32) else {
        return true;
    };
    let pidfd = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty());
    if !still_it() {
        return true;
    }
    if let Ok(pidfd) = pidfd {
        let timeout = Timespec::try_from(within).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        // Interrupted or failed: the look below decides.
        let _ = poll(&mut fds, Some(&timeout));
    }
    // Without a pidfd (a kernel before 5.3) there is nothing to wait on: one look now.
    !still_it()
}

/// Whether this process has a controlling terminal (field 7 of `/proc/self/stat`,
/// `tty_nr`, is not 0): a SIGHUP then means the terminal went away. Under systemd, in a
/// container or in the background it has none.
pub fn has_controlling_terminal() -> bool {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|line| {
            let rest = &line[line.rfind(')')? + 1..];
            // After the name: state, ppid, pgrp, session, tty_nr.
            rest.split_whitespace().nth(4)?.parse::<i64>().ok()
        })
        .is_some_and(|tty| tty != 0)
}

/// Whether `/proc` is the one of this process's own PID namespace (`/proc/self` names
/// the pid the process has in it). A container's first process is pid 1 and sees its
/// namespace's processes only when `/proc` was mounted for that namespace.
pub fn is_own_namespace() -> bool {
    std::fs::read_link("/proc/self")
        .is_ok_and(|pid| pid.as_os_str() == std::process::id().to_string().as_str())
}

/// Whether `pid` is a live process (not gone, not a zombie waiting to be reaped).
pub fn is_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|stat| !stat.is_zombie())
}

pub fn start_ticks(pid: u32) -> Option<u64> {
    stat(pid).map(|stat| stat.start_ticks)
}

/// This boot's id: start times only compare within one boot.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_owned())
}

/// Every process visible in `/proc` with its stat, zombies included.
pub fn processes() -> Vec<(u32, Stat)> {
    processes_where(|_| true)
}

/// The processes visible in `/proc` whose pid passes `keep`, with their stat: only
/// those are read.
pub fn processes_where(keep: impl Fn(u32) -> bool) -> Vec<(u32, Stat)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| keep(pid))
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

/// Whether `pid` may have been created after `first`: pids are handed out going up
/// from the last one given (`ns_last_pid`), wrapping around at `pid_max`. Every pid
/// may, when the last one given is not known.
pub fn created_since(first: u32) -> impl Fn(u32) -> bool {
    let last = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok());
    move |pid| match last {
        Some(last) if last >= first => pid > first && pid <= last,
        Some(last) => pid > first || pid <= last,
        None => true,
    }
}

/// The pids whose parent is `parent`, not counting zombies. Read from each of its
/// threads' `children` file: a pass over every `/proc/PID/stat` of the machine cost
/// 100 ms at each shutdown of a loaded host, whatever the number of services. Where
/// the kernel has no such file (`CONFIG_PROC_CHILDREN` off), the whole table is read.
pub fn children_of(parent: u32) -> Vec<u32> {
    if let Some(children) = listed_children(parent) {
        return children
            .into_iter()
            .filter(|pid| stat(*pid).is_some_and(|stat| stat.ppid == parent && !stat.is_zombie()))
            .collect();
    }
    processes()
        .into_iter()
        .filter(|(_, stat)| stat.ppid == parent && !stat.is_zombie())
        .map(|(pid, _)| pid)
        .collect()
}

/// The children each thread of `parent` made, from `/proc/PID/task/TID/children`; `None`
/// when the kernel does not provide those files.
fn listed_children(parent: u32) -> Option<Vec<u32>> {
    let mut children = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{parent}/task")).ok()? {
        let path = task.ok()?.path().join("children");
        let text = std::fs::read_to_string(path).ok()?;
        children.extend(
            text.split_whitespace()
                .filter_map(|pid| pid.parse::<u32>().ok()),
        );
    }
    Some(children)
}

/// Whether every one of `entries` (`KEY=VALUE`) is in the process's environment.
pub fn environ_has(pid: u32, entries: &[&str]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        let present: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        entries
            .iter()
            .all(|entry| present.contains(&entry.as_bytes()))
    })
}

/// A signal set of `/proc/PID/status` (`SigIgn`, `SigBlk`, ...): bit `n - 1` is signal
/// `n`.
pub fn signal_set(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        u64::from_str_radix(value.trim(), 16).ok()
    })
}

/// The command line, shortened to 100 characters; the command name when there is none.
pub fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    let mut text = words.join(" ");
    if text.is_empty() {
        text = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
    }
    if text.chars().count() > 100 {
        text = text.chars().take(99).collect::<String>() + "…";
    }
    text
}

/// How long the process has run: system uptime less its start time.
pub fn age(pid: u32) -> Option<Duration> {
    Some(age_of(start_ticks(pid)?, uptime()?))
}

/// How long ago a process that started at `start_ticks` (since boot) started, given
/// the system's `uptime`.
pub fn age_of(start_ticks: u64, uptime: Duration) -> Duration {
    uptime.saturating_sub(Duration::from_secs_f64(
        start_ticks as f64 / TICKS_PER_SECOND,
    ))
}

/// How long the system has been up.
pub fn uptime() -> Option<Duration> {
    let seconds: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(Duration::from_secs_f64(seconds.max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_are_read_from_the_last_parenthesis() {
        let line = "123 (a) b) c) S 45 123 123 0 -1 4194560 0 0 0 0 31 11 0 0 20 0 1 0 98765 0 0";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                ppid: 45,
                pgrp: 123,
                start_ticks: 98765,
                cpu_ticks: 42,
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_seen_with_its_start_time() {
        let me = std::process::id();
        let stat = stat(me).unwrap();
        assert_eq!(start_ticks(me), Some(stat.start_ticks));
        assert!(processes().iter().any(|(pid, _)| *pid == me));
        assert!(boot_id().is_some_and(|id| id.len() == 36));
        assert!(!command_line(me).is_empty());
        assert!(signal_set(me, "SigIgn").is_some());
        // A child is created after its parent; the parent is not.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let since = created_since(me);
        assert!(since(child.id()));
        assert!(!since(me));
        child.wait().unwrap();
        assert_eq!(signal_set(me, "NoSuchField"), None);
        let (rss, pss) = memory(me).unwrap();
        assert!(
            rss > 0 && pss.is_some_and(|pss| pss > 0 && pss <= rss),
            "{rss} {pss:?}"
        );
    }
}
