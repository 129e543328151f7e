//! `settings.state-dir`: that muster can have it, before anything is started.
//!
//! `muster up` creates the state directory (and its parents) if it is missing, then
//! writes the socket, the database and the logs in it. Whether that can work is decided
//! here without writing anything: the directory itself, or the nearest part of its path
//! that exists, must be a directory on a filesystem that holds files, writable.
//! Permission is per user (`check` may run as someone else than `up`), so a missing
//! permission is a warning; a file in the way, a read-only or a kernel filesystem are
//! errors for every user.

use std::ops::Range;
use std::path::{Path, PathBuf};

use nix::sys::statfs;
use nix::unistd::AccessFlags;
use toml::Spanned;

use super::{Validator, defaults};
use crate::diagnostic::Diagnostic;

/// Why the state directory cannot be had.
#[derive(Debug, PartialEq, Eq)]
enum Blocked {
    /// `at` (the directory itself or a parent) exists and is not a directory.
    NotDir { at: PathBuf },
    /// `at` is on a kernel filesystem (`/proc`, `/sys`, ...), which holds no files.
    KernelFs { at: PathBuf, kind: &'static str },
    /// `at` is on a read-only filesystem.
    ReadOnly { at: PathBuf },
    /// This user may not write in `at`.
    Denied { at: PathBuf },
}

/// Filesystems that only the kernel fills: creating a directory there fails, or worse
/// (in a cgroup filesystem) creates something that is not a directory for files.
const KERNEL_FILESYSTEMS: &[(statfs::FsType, &str)] = &[
    (statfs::PROC_SUPER_MAGIC, "the proc filesystem"),
    (statfs::SYSFS_MAGIC, "sysfs"),
    (statfs::CGROUP_SUPER_MAGIC, "a cgroup filesystem"),
    (statfs::CGROUP2_SUPER_MAGIC, "a cgroup filesystem"),
    (statfs::DEBUGFS_MAGIC, "debugfs"),
    (statfs::TRACEFS_MAGIC, "tracefs"),
    (statfs::SECURITYFS_MAGIC, "securityfs"),
    (statfs::DEVPTS_SUPER_MAGIC, "devpts"),
    (statfs::BPF_FS_MAGIC, "the bpf filesystem"),
    (statfs::SELINUX_MAGIC, "selinuxfs"),
    (statfs::SMACK_MAGIC, "smackfs"),
    (statfs::NSFS_MAGIC, "nsfs"),
];

/// Whether `dir` exists as a usable directory or could be created as one.
fn usable(dir: &Path) -> Result<(), Blocked> {
    // The directory itself if it exists, else the nearest parent that does: the one
    // `create_dir_all` would have to create in.
    let existing = dir
        .ancestors()
        .find(|p| p.symlink_metadata().is_ok())
        .unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(Blocked::NotDir {
            at: existing.to_path_buf(),
        });
    }
    if let Ok(fs) = statfs::statfs(existing)
        && let Some((_, kind)) = KERNEL_FILESYSTEMS
            .iter()
            .find(|(magic, _)| *magic == fs.filesystem_type())
    {
        return Err(Blocked::KernelFs {
            at: existing.to_path_buf(),
            kind,
        });
    }
    match nix::unistd::access(existing, AccessFlags::W_OK | AccessFlags::X_OK) {
        Err(nix::errno::Errno::EROFS) => Err(Blocked::ReadOnly {
            at: existing.to_path_buf(),
        }),
        Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => Err(Blocked::Denied {
            at: existing.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

impl Validator<'_> {
    /// Reports a state directory that `muster up` could not create or use.
    pub(super) fn state_dir(&mut self, written: Option<&Spanned<String>>, dir: &Path) {
        let Err(blocked) = usable(dir) else { return };
        let exists = dir.is_dir();
        let (subject, span): (String, Option<Range<usize>>) = match written {
            Some(text) => (
                format!("`settings.state-dir`: `{}`", text.get_ref()),
                Some(text.span()),
            ),
            None => (
                format!(
                    "the state directory `{}` (the default, beside the config file)",
                    defaults::STATE_DIR
                ),
                None,
            ),
        };
        let shown = |at: &Path| match at.strip_prefix(&self.dir) {
            Ok(inside) if !inside.as_os_str().is_empty() => inside.display().to_string(),
            _ => at.display().to_string(),
        };
        let elsewhere = "keep state on an ordinary writable filesystem: the default `.muster` beside the config file, or a directory such as /var/lib/NAME";
        let verb = if exists { "used" } else { "created" };
        let diagnostic = match &blocked {
            Blocked::NotDir { at } if at == dir => {
                Diagnostic::error("invalid-value", format!("{subject} is not a directory"))
                    .help("point state-dir at a directory (it is created if missing)")
            }
            Blocked::NotDir { at } => Diagnostic::error(
                "invalid-value",
                format!(
                    "{subject} cannot be created: `{}` is a file, not a directory",
                    shown(at)
                ),
            )
            .help("point state-dir at a directory that exists or can be created"),
            Blocked::KernelFs { at, kind } => Diagnostic::error(
                "invalid-value",
                format!(
                    "{subject} cannot be {verb}: `{}` is on {kind}, which only the kernel writes",
                    shown(at)
                ),
            )
            .help(elsewhere),
            Blocked::ReadOnly { at } => Diagnostic::error(
                "invalid-value",
                format!(
                    "{subject} cannot be {verb}: `{}` is on a read-only filesystem",
                    shown(at)
                ),
            )
            .help(elsewhere),
            Blocked::Denied { at } => Diagnostic::warning(
                "state-dir-permission",
                format!(
                    "{subject} cannot be {verb} by this user: no write permission in `{}`",
                    shown(at)
                ),
            )
            .help("run `muster up` as a user who may write there, or create the directory for it first"),
        };
        let label = match &blocked {
            Blocked::NotDir { .. } => "a file is in the way",
            Blocked::KernelFs { .. } | Blocked::ReadOnly { .. } => "cannot hold files",
            Blocked::Denied { .. } => "not writable by this user",
        };
        let diagnostic = match span {
            Some(span) => diagnostic.at(span, label),
            None => diagnostic,
        };
        if matches!(blocked, Blocked::Denied { .. }) {
            self.warn(diagnostic);
        } else {
            self.error(diagnostic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_through_a_file_or_the_kernels_filesystems_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(usable(&file), Err(Blocked::NotDir { at: file.clone() }));
        assert_eq!(
            usable(&file.join("a/b")),
            Err(Blocked::NotDir { at: file.clone() })
        );
        assert_eq!(usable(&dir.path().join("new/deeper")), Ok(()));
        assert_eq!(usable(dir.path()), Ok(()));
        assert!(matches!(
            usable(Path::new("/proc/muster-state")),
            Err(Blocked::KernelFs {
                kind: "the proc filesystem",
                ..
            })
        ));
        assert!(matches!(
            usable(Path::new("/proc/self/muster")),
            Err(Blocked::KernelFs { .. })
        ));
    }
}
