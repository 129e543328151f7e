//! The kernel's limits on a service's whole process group, `memory-max` and `cpu-max`:
//! a cgroup per service where muster can have one, and what it does where it cannot.
//!
//! Which hierarchy holds each controller is read from `/proc/self/mountinfo` and
//! `/proc/self/cgroup`, for muster's own group: cgroup v2 when its group there offers
//! the controller (root, or a delegated group), else cgroup v1's controller of that
//! name (hybrid machines keep `memory` and `cpu` on v1), else none. [`Machine::plan`]
//! says which applies and why in one line per limit; `check` and `up` print it.
//!
//! Under each hierarchy used, muster makes `muster-<pid>` inside its own group, and a
//! group per service inside that, given its limits before each start. The child joins
//! them between fork and exec (writing `0` to `cgroup.procs`, see
//! [`super::process::setup`]), so every process of the run is inside from its first
//! instruction. On cgroup v2 a group that holds processes cannot hand controllers to its
//! children, so when muster's own group refuses, muster moves itself into
//! `muster-<pid>/supervisor` first (what systemd asks of a delegated service).
//!
//! `memory-max` counts swap too (v1 `memory.memsw.limit_in_bytes`, v2
//! `memory.swap.max = 0`): a service past it is killed, not swapped out. Whether the
//! kernel's OOM killer struck during a run is read from the group's `oom_kill` counter
//! (v2 `memory.events`, v1 `memory.oom_control`) when the run ends. Without a kernel
//! memory limit, muster samples the group's memory instead ([`over_memory`]) and the
//! actor restarts the service past the limit; `cpu-max` then has no effect.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::config::{ProcessSettings, ServiceName};

/// How often the fallback samples a group's memory.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// cgroup v1 or v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// A hierarchy where a controller is, and muster's own group in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    pub version: Version,
    /// Muster's own group: the directory its children are made in.
    pub own: PathBuf,
    /// Whether muster may make groups there.
    pub writable: bool,
}

/// Where the controllers muster may use are, as `/proc` says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    /// cgroup v2, with the controllers muster's group offers (`cgroup.controllers`).
    pub v2: Option<(Hierarchy, Vec<String>)>,
    /// cgroup v1's `memory` controller.
    pub v1_memory: Option<Hierarchy>,
    /// cgroup v1's `cpu` controller.
    pub v1_cpu: Option<Hierarchy>,
}

/// How one limit is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Way {
    /// By the kernel, through this hierarchy.
    Kernel(Hierarchy),
    /// Not by the kernel; the text says why.
    Not(String),
}

/// How `memory-max` and `cpu-max` are enforced on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub memory: Way,
    pub cpu: Way,
}

impl Machine {
    /// Reads the mounts and muster's own groups. Nothing is written.
    pub fn detect() -> Self {
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let groups = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self::from_proc(&mounts, &groups, &|path| {
            fs::read_to_string(path.join("cgroup.controllers")).ok()
        })
    }

    /// [`Self::detect`] on the text of `/proc/self/mountinfo` and `/proc/self/cgroup`;
    /// `controllers` reads a v2 group's `cgroup.controllers`.
    fn from_proc(
        mounts: &str,
        groups: &str,
        controllers: &dyn Fn(&Path) -> Option<String>,
    ) -> Self {
        let mut machine = Machine::default();
        for line in mounts.lines() {
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = before.split_whitespace().collect();
            let after: Vec<&str> = after.split_whitespace().collect();
            let (Some(root), Some(point), Some(fstype)) =
                (fields.get(3), fields.get(4), after.first())
            else {
                continue;
            };
            let options = after.get(2).copied().unwrap_or_default();
            match *fstype {
                "cgroup2" => {
                    let Some(own) = own_group(groups, None).and_then(|g| under(point, root, &g))
                    else {
                        continue;
                    };
                    let offered = controllers(&own).unwrap_or_default();
                    let offered = offered.split_whitespace().map(str::to_owned).collect();
                    let writable = writable(&own);
                    machine.v2 = Some((
                        Hierarchy {
                            version: Version::V2,
                            own,
                            writable,
                        },
                        offered,
                    ));
                }
                "cgroup" => {
                    let names: Vec<&str> = options.split(',').collect();
                    for (controller, slot) in [
                        ("memory", &mut machine.v1_memory),
                        ("cpu", &mut machine.v1_cpu),
                    ] {
                        if !names.contains(&controller) {
                            continue;
                        }
                        let Some(own) = own_group(groups, Some(controller))
                            .and_then(|g| under(point, root, &g))
                        else {
                            continue;
                        };
                        let writable = writable(&own);
                        *slot = Some(Hierarchy {
                            version: Version::V1,
                            own,
                            writable,
                        });
                    }
                }
                _ => {}
            }
        }
        machine
    }

    /// How each limit would be enforced.
    pub fn plan(&self) -> Plan {
        Plan {
            memory: self.way("memory", self.v1_memory.as_ref()),
            cpu: self.way("cpu", self.v1_cpu.as_ref()),
        }
    }

    fn way(&self, controller: &str, v1: Option<&Hierarchy>) -> Way {
        let mut why = Vec::new();
        match &self.v2 {
            Some((v2, offered)) if offered.iter().any(|c| c == controller) => {
                if v2.writable {
                    return Way::Kernel(v2.clone());
                }
                why.push(format!(
                    "muster's cgroup v2 group {} is not writable by uid {} (run muster as root, \
                     or in a delegated group: systemd-run -p Delegate=yes)",
                    v2.own.display(),
                    nix::unistd::geteuid()
                ));
            }
            Some((v2, _)) => why.push(format!(
                "muster's cgroup v2 group {} offers no {controller} controller",
                v2.own.display()
            )),
            None => why.push("no cgroup v2 is mounted".to_owned()),
        }
        match v1 {
            Some(v1) if v1.writable => return Way::Kernel(v1.clone()),
            Some(v1) => why.push(format!(
                "cgroup v1's {controller} group {} is not writable by uid {}",
                v1.own.display(),
                nix::unistd::geteuid()
            )),
            None => why.push(format!("no cgroup v1 {controller} controller is mounted")),
        }
        Way::Not(why.join(", and "))
    }
}

impl Plan {
    /// One line saying how the limits `asked` for (memory, cpu) are enforced, or `None`
    /// when no service asks for either.
    pub fn describe(&self, memory: bool, cpu: bool) -> Option<String> {
        let mut parts = Vec::new();
        if memory {
            parts.push(match &self.memory {
                Way::Kernel(hierarchy) => {
                    format!(
                        "memory-max is enforced by the kernel ({})",
                        place(hierarchy, "memory")
                    )
                }
                Way::Not(why) => format!(
                    "memory-max is not enforced by the kernel here ({why}): muster samples each \
                     such service's memory every {}s and restarts it past its memory-max",
                    SAMPLE_EVERY.as_secs()
                ),
            });
        }
        if cpu {
            parts.push(match &self.cpu {
                Way::Kernel(hierarchy) => {
                    format!(
                        "cpu-max is enforced by the kernel ({})",
                        place(hierarchy, "cpu")
                    )
                }
                Way::Not(why) => format!("cpu-max has no effect here ({why})"),
            });
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// "cgroup v1 memory controller under /sys/fs/cgroup/memory/x".
fn place(hierarchy: &Hierarchy, controller: &str) -> String {
    let version = match hierarchy.version {
        Version::V1 => "v1",
        Version::V2 => "v2",
    };
    format!(
        "cgroup {version} {controller} controller, a group per service under {}",
        hierarchy.own.display()
    )
}

/// Muster's group in the v2 hierarchy (`0::/path`), or in the v1 hierarchy that holds
/// `controller` (`4:memory:/path`, `2:cpu,cpuacct:/path`).
fn own_group(groups: &str, controller: Option<&str>) -> Option<String> {
    groups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, names, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = match controller {
            None => names.is_empty(),
            Some(controller) => names.split(',').any(|name| name == controller),
        };
        matches.then(|| path.to_owned())
    })
}

/// The directory of `group` in a hierarchy mounted at `point` whose root is `root`.
fn under(point: &str, root: &str, group: &str) -> Option<PathBuf> {
    let relative = if root == "/" {
        group
    } else {
        // A mount of a sub-tree (a container's): the group must be inside it.
        group.strip_prefix(root)?
    };
    let relative = relative.trim_matches('/');
    Some(if relative.is_empty() {
        PathBuf::from(point)
    } else {
        Path::new(point).join(relative)
    })
}

fn writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// This supervisor's groups, made when a service first needs one.
#[derive(Debug)]
pub struct Cgroups {
    plan: Plan,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// This supervisor's directory in each hierarchy used, once made.
    roots: Vec<(Version, PathBuf)>,
    /// Why a hierarchy could not be used after all (made once, said once).
    broken: Vec<(Version, String)>,
}

/// A run's groups: what the child joins and how its memory is watched.
#[derive(Debug, Default)]
pub struct RunGroups {
    /// The `cgroup.procs` of each group the child joins.
    pub procs: Vec<OwnedFd>,
    /// With a kernel memory limit: the group's OOM counter file and its value now.
    pub oom: Option<(PathBuf, u64)>,
    /// Without one but with `memory-max`: the limit muster watches itself.
    pub sampled: Option<u64>,
    /// What the service's log should say about it.
    pub notes: Vec<String>,
}

impl Cgroups {
    pub fn new(plan: Plan) -> Self {
        Self {
            plan,
            state: Mutex::new(State::default()),
        }
    }

    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The groups for the next run of `service`, its limits written. Whatever cannot be
    /// done falls back (the memory watched by muster) and is said in `notes`.
    pub fn for_run(&self, service: &ServiceName, settings: &ProcessSettings) -> RunGroups {
        let mut run = RunGroups::default();
        if !settings.wants_cgroup() {
            return run;
        }
        let mut joined: Vec<PathBuf> = Vec::new();
        if let Some(limit) = settings.memory_max {
            match &self.plan.memory {
                Way::Kernel(hierarchy) => match self.group(hierarchy, service).and_then(|dir| {
                    set_memory(hierarchy.version, &dir, limit)?;
                    Ok(dir)
                }) {
                    Ok(dir) => {
                        let counter = oom_counter(hierarchy.version, &dir);
                        let now = read_oom_kills(&counter).unwrap_or(0);
                        run.oom = Some((counter, now));
                        joined.push(dir);
                    }
                    Err(why) => {
                        run.notes.push(format!(
                            "memory-max: the kernel cannot hold this run to it ({why}); muster \
                             samples its memory instead"
                        ));
                        run.sampled = Some(limit);
                    }
                },
                Way::Not(_) => run.sampled = Some(limit),
            }
        }
        if let Some(millis) = settings.cpu_max
            && let Way::Kernel(hierarchy) = &self.plan.cpu
        {
            match self.group(hierarchy, service).and_then(|dir| {
                set_cpu(hierarchy.version, &dir, millis)?;
                Ok(dir)
            }) {
                Ok(dir) => {
                    if !joined.contains(&dir) {
                        joined.push(dir);
                    }
                }
                Err(why) => run
                    .notes
                    .push(format!("cpu-max: not enforced for this run ({why})")),
            }
        }
        for dir in joined {
            match fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
            {
                Ok(file) => run.procs.push(OwnedFd::from(file)),
                Err(error) => run.notes.push(format!(
                    "cannot open {}: {}",
                    dir.join("cgroup.procs").display(),
                    super::exit::plain(&error)
                )),
            }
        }
        run
    }

    /// The group of `service` in `hierarchy`, made (with this supervisor's own) if
    /// needed.
    fn group(&self, hierarchy: &Hierarchy, service: &ServiceName) -> Result<PathBuf, String> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, why)) = state.broken.iter().find(|(v, _)| *v == hierarchy.version) {
            return Err(why.clone());
        }
        let root = match state.roots.iter().find(|(v, _)| *v == hierarchy.version) {
            Some((_, root)) => root.clone(),
            None => match make_root(hierarchy) {
                Ok(root) => {
                    state.roots.push((hierarchy.version, root.clone()));
                    root
                }
                Err(why) => {
                    state.broken.push((hierarchy.version, why.clone()));
                    return Err(why);
                }
            },
        };
        let dir = root.join(service.as_str());
        match fs::create_dir(&dir) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => {
                return Err(format!(
                    "cannot make {}: {}",
                    dir.display(),
                    super::exit::plain(&error)
                ));
            }
        }
        Ok(dir)
    }

    /// Removes the groups this supervisor made, once its services are gone. Groups
    /// that still hold a process stay (the kernel refuses), as does the one muster
    /// itself moved into.
    pub fn remove(&self) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, root) in &state.roots {
            remove_tree(root);
        }
    }
}

/// Makes this supervisor's directory in `hierarchy`, after removing those of
/// supervisors that are gone.
fn make_root(hierarchy: &Hierarchy) -> Result<PathBuf, String> {
    sweep(&hierarchy.own);
    let root = hierarchy.own.join(format!("muster-{}", std::process::id()));
    let made = |error: io::Error| {
        format!(
            "cannot make {}: {}",
            root.display(),
            super::exit::plain(&error)
        )
    };
    match fs::create_dir(&root) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
        Err(error) => return Err(made(error)),
    }
    if hierarchy.version == Version::V2 {
        delegate(&hierarchy.own, &root)?;
    }
    Ok(root)
}

/// On cgroup v2: hands the memory and cpu controllers down from muster's group to
/// `root`, and from `root` to the services' groups. A group with processes cannot hand
/// controllers down (unless it is the root of the hierarchy), so when muster's own
/// group refuses, muster moves itself into `root/supervisor` and tries again.
fn delegate(own: &Path, root: &Path) -> Result<(), String> {
    let offered = fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    let wanted: Vec<String> = ["memory", "cpu"]
        .into_iter()
        .filter(|c| offered.split_whitespace().any(|o| o == *c))
        .map(|c| format!("+{c}"))
        .collect();
    let enable = |dir: &Path| fs::write(dir.join("cgroup.subtree_control"), wanted.join(" "));
    if let Err(error) = enable(own) {
        if error.raw_os_error() != Some(nix::libc::EBUSY) {
            return Err(format!(
                "cannot enable {} in {}: {}",
                wanted.join(" "),
                own.display(),
                super::exit::plain(&error)
            ));
        }
        let leaf = root.join("supervisor");
        let _ = fs::create_dir(&leaf);
        fs::write(leaf.join("cgroup.procs"), std::process::id().to_string()).map_err(|error| {
            format!(
                "cannot move muster into {}: {}",
                leaf.display(),
                super::exit::plain(&error)
            )
        })?;
        enable(own).map_err(|_| {
            format!(
                "{} holds processes other than muster, and cgroup v2 lets only a group \
                 without processes hand its controllers down: run muster in a group of its own \
                 (systemd-run -p Delegate=yes muster up)",
                own.display()
            )
        })?;
    }
    enable(root).map_err(|error| {
        format!(
            "cannot enable {} in {}: {}",
            wanted.join(" "),
            root.display(),
            super::exit::plain(&error)
        )
    })
}

/// Removes the directories of supervisors that are gone (`muster-<pid>` whose pid is
/// not alive), as far as the kernel lets: a group with a process stays.
fn sweep(own: &Path) {
    let Ok(entries) = fs::read_dir(own) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("muster-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !super::procfs::is_alive(pid) {
            remove_tree(&entry.path());
        }
    }
}

/// Removes a cgroup and the groups under it, deepest first (a cgroup directory is
/// removed with `rmdir`, its files go with it).
fn remove_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

/// Writes the memory limit, swap included.
fn set_memory(version: Version, dir: &Path, limit: u64) -> Result<(), String> {
    let write = |file: &str, value: &str| {
        fs::write(dir.join(file), value).map_err(|error| {
            format!(
                "cannot write {value} to {}: {}",
                dir.join(file).display(),
                super::exit::plain(&error)
            )
        })
    };
    match version {
        Version::V2 => {
            write("memory.max", &limit.to_string())?;
            // Without swap accounting the file is missing: there is no swap to limit.
            if dir.join("memory.swap.max").exists() {
                write("memory.swap.max", "0")?;
            }
        }
        Version::V1 => {
            // memsw (memory and swap) may never be below the memory limit: lift it
            // first, set the memory limit, then bring memsw down to it.
            let memsw = dir.join("memory.memsw.limit_in_bytes").exists();
            if memsw {
                write("memory.memsw.limit_in_bytes", "-1")?;
            }
            write("memory.limit_in_bytes", &limit.to_string())?;
            if memsw {
                write("memory.memsw.limit_in_bytes", &limit.to_string())?;
            }
        }
    }
    Ok(())
}

/// Writes the CPU quota: `millis` thousandths of a CPU per 100 ms period.
fn set_cpu(version: Version, dir: &Path, millis: u32) -> Result<(), String> {
    const PERIOD_US: u64 = 100_000;
    let quota = (u64::from(millis) * PERIOD_US / 1000).max(1000);
    let write = |file: &str, value: String| {
        fs::write(dir.join(file), &value).map_err(|error| {
            format!(
                "cannot write {value} to {}: {}",
                dir.join(file).display(),
                super::exit::plain(&error)
            )
        })
    };
    match version {
        Version::V2 => write("cpu.max", format!("{quota} {PERIOD_US}")),
        Version::V1 => {
            write("cpu.cfs_period_us", PERIOD_US.to_string())?;
            write("cpu.cfs_quota_us", quota.to_string())
        }
    }
}

/// The file that counts the OOM killer's kills in a group.
fn oom_counter(version: Version, dir: &Path) -> PathBuf {
    match version {
        Version::V2 => dir.join("memory.events"),
        Version::V1 => dir.join("memory.oom_control"),
    }
}

/// The `oom_kill` count in a `memory.events` or `memory.oom_control` file.
pub fn read_oom_kills(file: &Path) -> Option<u64> {
    let text = fs::read_to_string(file).ok()?;
    text.lines().find_map(|line| {
        let count = line.strip_prefix("oom_kill ")?;
        count.trim().parse().ok()
    })
}

/// Without a kernel limit: how much more than `limit` the group of `leader` holds, in
/// words, if it does. Its memory is the PSS of its processes (RSS where PSS cannot be
/// read), which counts shared pages once.
pub fn over_memory(leader: u32, limit: u64) -> Option<String> {
    let group = super::procfs::stat(leader)?.pgrp;
    let mut held = 0u64;
    for (pid, stat) in super::procfs::processes() {
        if stat.pgrp != group || stat.is_zombie() {
            continue;
        }
        if let Some((rss, pss)) = super::procfs::memory(pid) {
            held = held.saturating_add(pss.unwrap_or(rss));
        }
    }
    (held > limit).then(|| {
        format!(
            "its processes hold {}, over memory-max {} (sampled by muster: the kernel does not \
             enforce it here)",
            crate::config::values::human_size(held),
            crate::config::values::human_size(limit)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_GROUPS: &str = "\
4:memory:/process_api/abc
1:cpu:/
0::/
";

    #[test]
    fn a_hybrid_machine_uses_v1_for_what_v2_does_not_offer() {
        let machine = Machine::from_proc(HYBRID_MOUNTS, HYBRID_GROUPS, &|_| {
            Some("hugetlb\n".to_owned())
        });
        let (v2, offered) = machine.v2.clone().unwrap();
        assert_eq!(v2.own, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(offered, ["hugetlb"]);
        assert_eq!(
            machine.v1_memory.as_ref().unwrap().own,
            Path::new("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert_eq!(
            machine.v1_cpu.as_ref().unwrap().own,
            Path::new("/sys/fs/cgroup/cpu")
        );
        let mut writable = machine.clone();
        for h in [&mut writable.v1_memory, &mut writable.v1_cpu]
            .into_iter()
            .flatten()
        {
            h.writable = true;
        }
        let plan = writable.plan();
        assert!(matches!(&plan.memory, Way::Kernel(h) if h.version == Version::V1));
        let line = plan.describe(true, true).unwrap();
        assert!(
            line.starts_with("memory-max is enforced by the kernel (cgroup v1 memory controller"),
            "{line}"
        );
        // Nothing writable: memory falls back to muster's sampling, and says why.
        let mut closed = machine;
        for h in [&mut closed.v1_memory, &mut closed.v1_cpu]
            .into_iter()
            .flatten()
        {
            h.writable = false;
        }
        let line = closed.plan().describe(true, true).unwrap();
        assert!(line.contains("offers no memory controller"), "{line}");
        assert!(line.contains("is not writable by uid"), "{line}");
        assert!(line.contains("restarts it past its memory-max"), "{line}");
        assert!(line.contains("cpu-max has no effect here"), "{line}");
    }

    #[test]
    fn a_delegated_v2_group_is_used_for_both() {
        let mounts = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let groups = "0::/user.slice/user-1000.slice/user@1000.service/app.slice/muster.service\n";
        let mut machine = Machine::from_proc(mounts, groups, &|_| Some("cpu memory pids".into()));
        let (v2, _) = machine.v2.as_mut().unwrap();
        assert_eq!(
            v2.own,
            Path::new(
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/muster.service"
            )
        );
        v2.writable = true;
        let plan = machine.plan();
        assert!(matches!(&plan.memory, Way::Kernel(h) if h.version == Version::V2));
        assert!(matches!(&plan.cpu, Way::Kernel(h) if h.version == Version::V2));
        assert_eq!(machine.plan().describe(false, false), None);
    }

    #[test]
    fn no_cgroups_at_all_is_said() {
        let machine = Machine::from_proc("", "", &|_| None);
        let line = machine.plan().describe(true, false).unwrap();
        assert!(
            line.contains("no cgroup v2 is mounted, and no cgroup v1 memory controller is mounted"),
            "{line}"
        );
    }

    #[test]
    fn limits_are_written_in_each_versions_files() {
        let dir = tempfile::tempdir().unwrap();
        let v2 = dir.path().join("v2");
        fs::create_dir(&v2).unwrap();
        fs::write(v2.join("memory.swap.max"), "max").unwrap();
        set_memory(Version::V2, &v2, 64 << 20).unwrap();
        set_cpu(Version::V2, &v2, 1500).unwrap();
        assert_eq!(
            fs::read_to_string(v2.join("memory.max")).unwrap(),
            "67108864"
        );
        assert_eq!(fs::read_to_string(v2.join("memory.swap.max")).unwrap(), "0");
        assert_eq!(
            fs::read_to_string(v2.join("cpu.max")).unwrap(),
            "150000 100000"
        );
        let v1 = dir.path().join("v1");
        fs::create_dir(&v1).unwrap();
        fs::write(
            v1.join("memory.memsw.limit_in_bytes"),
            "9223372036854771712",
        )
        .unwrap();
        set_memory(Version::V1, &v1, 64 << 20).unwrap();
        set_cpu(Version::V1, &v1, 200).unwrap();
        assert_eq!(
            fs::read_to_string(v1.join("memory.limit_in_bytes")).unwrap(),
            "67108864"
        );
        assert_eq!(
            fs::read_to_string(v1.join("memory.memsw.limit_in_bytes")).unwrap(),
            "67108864"
        );
        assert_eq!(
            fs::read_to_string(v1.join("cpu.cfs_quota_us")).unwrap(),
            "20000"
        );
        assert_eq!(
            fs::read_to_string(v1.join("cpu.cfs_period_us")).unwrap(),
            "100000"
        );
    }

    #[test]
    fn the_groups_of_supervisors_that_are_gone_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that cannot be alive, one that is (this process's), and a stranger.
        for name in [
            "muster-4194304/db",
            &format!("muster-{}/db", std::process::id()),
            "other",
        ] {
            fs::create_dir_all(dir.path().join(name)).unwrap();
        }
        sweep(dir.path());
        assert!(!dir.path().join("muster-4194304").exists());
        assert!(
            dir.path()
                .join(format!("muster-{}/db", std::process::id()))
                .exists()
        );
        assert!(dir.path().join("other").exists());
    }

    #[test]
    fn oom_kills_are_read_from_either_file() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = dir.path().join("memory.oom_control");
        fs::write(&v1, "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n").unwrap();
        assert_eq!(read_oom_kills(&v1), Some(3));
        let v2 = dir.path().join("memory.events");
        fs::write(
            &v2,
            "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(read_oom_kills(&v2), Some(2));
    }
}
