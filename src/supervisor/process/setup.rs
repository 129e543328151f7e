//! What a service's process is given between `fork` and `exec`: its cgroup, resource
//! limits, priority, OOM score, umask, and last its groups and user.
//!
//! Everything is decided and allocated before the fork ([`Setup::new`]); the child only
//! makes system calls on what was prepared ([`Setup::install`]), because after a fork in
//! a threaded program only async-signal-safe calls are allowed: no allocation, no lock.
//! The user is switched here rather than with `CommandExt::uid`, because std switches
//! it before running `pre_exec` code, and the steps before it need muster's privileges
//! (a hard limit raised, a negative nice, the cgroup joined, the supplementary groups).
//!
//! A step the kernel refuses fails the spawn with its errno; the child also writes which
//! step it was into a pipe, so that the failure names it ([`Report::explain`]).

use std::ffi::CStr;
use std::io;
use std::os::fd::OwnedFd;
use std::process::Command;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::resource::{RLIM_INFINITY, Resource};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};

use crate::account::Identity;
use crate::config::ProcessSettings;

/// Where the child sets its own OOM score (what it writes is inherited by its children).
const OOM_SCORE_ADJ: &CStr = c"/proc/self/oom_score_adj";

/// A step of the setup, as the child reports it: its code, and an index for limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    Cgroup = 1,
    Limit = 2,
    Nice = 3,
    OomScoreAdj = 4,
    Groups = 5,
    Gid = 6,
    Uid = 7,
}

impl Step {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Step::Cgroup,
            2 => Step::Limit,
            3 => Step::Nice,
            4 => Step::OomScoreAdj,
            5 => Step::Groups,
            6 => Step::Gid,
            7 => Step::Uid,
            _ => return None,
        })
    }
}

/// One resource limit, ready for `setrlimit`.
#[derive(Debug, Clone, Copy)]
struct Rlimit {
    resource: Resource,
    soft: u64,
    hard: u64,
}

/// What a setup is made from, decided before the spawn: the settings, who to switch to
/// (`None`: the process stays muster's user), and the `cgroup.procs` files to join.
#[derive(Debug)]
pub struct Plan {
    pub settings: ProcessSettings,
    pub identity: Option<Identity>,
    pub cgroups: Vec<OwnedFd>,
}

/// Everything the child does before `exec`, prepared.
#[derive(Debug)]
pub struct Setup {
    /// `cgroup.procs` files to write "0" to (the writer joins the group).
    cgroups: Vec<OwnedFd>,
    limits: Vec<Rlimit>,
    nice: Option<i32>,
    /// The score as text, and its length.
    oom_score_adj: Option<([u8; 8], usize)>,
    umask: Option<Mode>,
    /// Groups first, then the gid, then the uid.
    identity: Option<(Vec<Gid>, Gid, Uid)>,
    /// Where the child says which step failed.
    report: OwnedFd,
}

/// What the parent keeps to name a failed step.
#[derive(Debug)]
pub struct Report {
    read: OwnedFd,
    /// For the words: the limits by index, the settings as configured.
    limits: Vec<(&'static str, u64, u64)>,
    settings: ProcessSettings,
    identity: Option<(String, u32, u32)>,
}

impl Setup {
    /// Prepares the setup of `settings`, switching to `identity` when given (`None`:
    /// the process stays muster's user), joining the cgroups whose `cgroup.procs` are
    /// open in `cgroups`.
    pub fn new(
        settings: &ProcessSettings,
        identity: Option<&Identity>,
        cgroups: Vec<OwnedFd>,
    ) -> io::Result<(Setup, Report)> {
        let (read, report) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let limits = settings
            .limits
            .iter()
            .map(|limit| Rlimit {
                resource: limit.resource,
                soft: limit.soft,
                hard: limit.hard,
            })
            .collect();
        let oom_score_adj = settings.oom_score_adj.map(|score| {
            let text = score.to_string();
            let mut bytes = [0u8; 8];
            bytes[..text.len()].copy_from_slice(text.as_bytes());
            (bytes, text.len())
        });
        let setup = Setup {
            cgroups,
            limits,
            nice: settings.nice,
            oom_score_adj,
            umask: settings
                .umask
                .map(|mask| Mode::from_bits_truncate(mask as nix::libc::mode_t)),
            identity: identity.map(|id| {
                (
                    id.groups.iter().map(|&g| Gid::from_raw(g)).collect(),
                    Gid::from_raw(id.gid),
                    Uid::from_raw(id.uid),
                )
            }),
            report,
        };
        let report = Report {
            read,
            limits: settings
                .limits
                .iter()
                .map(|limit| (limit.name, limit.soft, limit.hard))
                .collect(),
            settings: settings.clone(),
            identity: identity.map(|id| (id.name.clone(), id.uid, id.gid)),
        };
        Ok((setup, report))
    }

    /// Has `command` run the setup in the child, between fork and exec.
    #[allow(unsafe_code)]
    pub fn install(self, command: &mut Command) {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child after `fork`, where only
        // async-signal-safe calls may be made. It allocates nothing and takes no lock:
        // it reads what `Setup::new` prepared and makes raw system calls through nix and
        // rustix (write, setrlimit, setpriority, open, close, umask, setgroups, setgid,
        // setuid); its errors are `io::Error`s made from an errno, which do not allocate.
        unsafe {
            command.pre_exec(move || self.run());
        }
    }

    /// The steps, in order; the first that fails ends the setup with its errno.
    fn run(&self) -> io::Result<()> {
        for procs in &self.cgroups {
            self.step(Step::Cgroup, 0, || {
                nix::unistd::write(procs, b"0").map(drop)
            })?;
        }
        for (index, limit) in self.limits.iter().enumerate() {
            self.step(Step::Limit, index as u8, || {
                nix::sys::resource::setrlimit(limit.resource, limit.soft, limit.hard)
            })?;
        }
        if let Some(nice) = self.nice {
            self.step(Step::Nice, 0, || {
                rustix::process::setpriority_process(None, nice)
                    .map_err(|e| Errno::from_raw(e.raw_os_error()))
            })?;
        }
        if let Some((bytes, len)) = &self.oom_score_adj {
            self.step(Step::OomScoreAdj, 0, || {
                let file = nix::fcntl::open(
                    OOM_SCORE_ADJ,
                    OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )?;
                nix::unistd::write(&file, &bytes[..*len]).map(drop)
            })?;
        }
        if let Some(mask) = self.umask {
            nix::sys::stat::umask(mask);
        }
        if let Some((groups, gid, uid)) = &self.identity {
            self.step(Step::Groups, 0, || nix::unistd::setgroups(groups))?;
            self.step(Step::Gid, 0, || nix::unistd::setgid(*gid))?;
            self.step(Step::Uid, 0, || nix::unistd::setuid(*uid))?;
        }
        Ok(())
    }

    /// Runs one step; on failure, reports which (best effort) and returns its errno.
    fn step(
        &self,
        step: Step,
        index: u8,
        call: impl FnOnce() -> nix::Result<()>,
    ) -> io::Result<()> {
        call().map_err(|errno| {
            let _ = nix::unistd::write(&self.report, &[step as u8, index]);
            io::Error::from_raw_os_error(errno as i32)
        })
    }
}

impl Report {
    /// The spawn failed with `error`: which step it was, in one line, when the child
    /// said; `None` when it failed elsewhere (the program could not be executed).
    pub fn explain(&self, error: &io::Error) -> Option<String> {
        let mut said = [0u8; 2];
        let read = nix::unistd::read(&self.read, &mut said).ok()?;
        if read != 2 {
            return None;
        }
        let step = Step::from_code(said[0])?;
        let errno = Errno::from_raw(error.raw_os_error()?);
        let why = format!("{} ({errno:?})", errno.desc());
        let settings = &self.settings;
        Some(match step {
            Step::Cgroup => format!("cannot join its cgroup: {why}"),
            Step::Limit => {
                let (name, soft, hard) = self.limits.get(usize::from(said[1]))?;
                let value = if soft == hard {
                    shown(*soft)
                } else {
                    format!("{}:{}", shown(*soft), shown(*hard))
                };
                let hint = match errno {
                    Errno::EPERM if *name == "nofile" => {
                        "; a hard limit above muster's own needs root, and `nofile` may not pass fs.nr_open"
                    }
                    Errno::EPERM => "; a hard limit above muster's own needs root",
                    _ => "",
                };
                format!("limits.{name}: cannot set it to {value}: {why}{hint}")
            }
            Step::Nice => format!(
                "nice: cannot set it to {}: {why}; a priority above muster's own needs root",
                settings.nice.unwrap_or_default()
            ),
            Step::OomScoreAdj => format!(
                "oom-score-adj: cannot set it to {}: {why}; a score below muster's own needs root",
                settings.oom_score_adj.unwrap_or_default()
            ),
            Step::Groups | Step::Gid | Step::Uid => {
                let (name, uid, gid) = self.identity.clone().unwrap_or_default();
                format!("cannot run as user `{name}` (uid {uid}, gid {gid}): {why}")
            }
        })
    }
}

/// A limit as people read it.
fn shown(value: u64) -> String {
    if value == RLIM_INFINITY {
        "unlimited".to_owned()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limit;

    /// Runs `sh -c SCRIPT` with `settings` set up; its output, or the spawn's error as
    /// the report explains it.
    fn run(
        settings: &ProcessSettings,
        identity: Option<&Identity>,
        script: &str,
    ) -> Result<String, String> {
        let (setup, report) = Setup::new(settings, identity, Vec::new()).unwrap();
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]);
        setup.install(&mut command);
        match command.output() {
            Ok(output) => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
            Err(error) => Err(report.explain(&error).unwrap_or_else(|| error.to_string())),
        }
    }

    #[test]
    fn limits_umask_and_priority_reach_the_program() {
        let settings = ProcessSettings {
            umask: Some(0o027),
            nice: Some(7),
            limits: vec![Limit {
                resource: Resource::RLIMIT_NOFILE,
                name: "nofile",
                soft: 512,
                hard: 1024,
            }],
            ..ProcessSettings::default()
        };
        let out = run(
            &settings,
            None,
            "umask; ulimit -Sn; ulimit -Hn; cut -d' ' -f19 /proc/self/stat",
        )
        .unwrap();
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["0027", "512", "1024", "7"]
        );
    }

    #[test]
    fn a_limit_the_kernel_refuses_is_named_with_its_errno() {
        let settings = ProcessSettings {
            limits: vec![Limit {
                resource: Resource::RLIMIT_NOFILE,
                name: "nofile",
                soft: RLIM_INFINITY,
                hard: RLIM_INFINITY,
            }],
            ..ProcessSettings::default()
        };
        let why = run(&settings, None, "true").unwrap_err();
        assert!(
            why.starts_with(
                "limits.nofile: cannot set it to unlimited: Operation not permitted (EPERM)"
            ),
            "{why}"
        );
    }
}
