//! One supervisor per state directory: an exclusive `flock` on `state-dir/lock`, held
//! for the supervisor's life, with the holder's pid written inside so a second
//! `muster up` can say who is already running.
//!
//! And one supervisor per config file, wherever its state directory is: a second lock
//! in the user's runtime directory, named after the config file's canonical path, with
//! the holder's pid and its state directory inside. Clients read it to find a
//! supervisor whose config file now names another state directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Creates `dir` and its missing parents readable by the owner only: the state
/// directory holds the services' logs (which may print secrets), the history and the
/// control socket. A directory that already exists keeps its mode: the user chose it.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The held lock; released when dropped (or when the process dies, whatever the way).
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another supervisor (pid {pid}) is running on {}", dir.display())]
    Held { pid: String, dir: PathBuf },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StateLock {
    /// Takes the lock now, or says who holds it.
    pub fn acquire(state_dir: &Path) -> Result<Self, LockError> {
        Self::take(state_dir, FlockArg::LockExclusiveNonblock)
    }

    /// Blocks until the holder (if any) has let go: a supervisor has exited.
    pub fn wait(state_dir: &Path) -> Result<Self, LockError> {
        Self::take(state_dir, FlockArg::LockExclusive)
    }

    /// Takes the lock of the config file `file` for a supervisor keeping its state in
    /// `state_dir`, or says who holds it (and where its state is).
    pub fn acquire_for_config(file: &Path, state_dir: &Path) -> Result<Self, LockError> {
        let Some(path) = config_lock_path(file) else {
            // No private runtime directory to be had: the state lock alone guards.
            return Self::take_at(
                state_dir.join("config.lock"),
                state_dir,
                FlockArg::LockExclusiveNonblock,
                "",
            );
        };
        let dir = path.parent().unwrap_or(state_dir).to_path_buf();
        let record = format!("{}", state_dir.display());
        Self::take_at(path, &dir, FlockArg::LockExclusiveNonblock, &record).map_err(|error| {
            match error {
                LockError::Held { pid, .. } => LockError::Held {
                    dir: running_state_dir(file).unwrap_or_else(|| state_dir.to_path_buf()),
                    pid,
                },
                other => other,
            }
        })
    }

    fn take(state_dir: &Path, how: FlockArg) -> Result<Self, LockError> {
        Self::take_at(state_dir.join("lock"), state_dir, how, "")
    }

    /// Locks `path` (in `dir`, created private), writing our pid and `record` inside.
    fn take_at(path: PathBuf, dir: &Path, how: FlockArg, record: &str) -> Result<Self, LockError> {
        let state_dir = dir;
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        private_dir(state_dir).map_err(io)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        let mut lock = match Flock::lock(file, how) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let written = text.lines().next().unwrap_or_default().trim().to_owned();
                // A holder that has just taken the lock may not have written its pid
                // yet: the kernel knows who holds it.
                let pid = Some(written)
                    .filter(|pid| !pid.is_empty())
                    .or_else(|| holder(&file))
                    .unwrap_or_else(|| "unknown".to_owned());
                return Err(LockError::Held {
                    pid,
                    dir: state_dir.to_path_buf(),
                });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;
        if !record.is_empty() {
            writeln!(lock, "{record}").map_err(io)?;
        }
        Ok(Self { _lock: lock, path })
    }
}

/// The pid holding a `flock` on `file`, as `/proc/locks` tells it
/// (`1: FLOCK  ADVISORY  WRITE 541 fd:00:123456 0 EOF`).
fn holder(file: &File) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let inode = file.metadata().ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, place) = (fields.get(1)?, fields.get(4)?, fields.get(5)?);
        let locked_inode = place.rsplit(':').next()?.parse::<u64>().ok()?;
        (*kind == "FLOCK" && locked_inode == inode).then(|| (*pid).to_owned())
    })
}

/// The state directory of the supervisor running `file`, if one is: read from the
/// config lock while someone holds it.
pub fn running_state_dir(file: &Path) -> Option<PathBuf> {
    let path = config_lock_path(file)?;
    let file = OpenOptions::new().read(true).write(true).open(&path).ok()?;
    // Free means nobody runs it (the record is stale).
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_free) => None,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            file.read_to_string(&mut text).ok()?;
            let dir = text.lines().nth(1)?.trim();
            (!dir.is_empty()).then(|| PathBuf::from(dir))
        }
        Err(_) => None,
    }
}

/// `<runtime dir>/muster/config-<hash of the canonical path>.lock`, where the runtime
/// directory is `$XDG_RUNTIME_DIR`, or `/tmp/muster-<uid>` made private to the user.
/// `None` when the file cannot be resolved or the directory is not the user's alone.
fn config_lock_path(file: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let canonical = std::fs::canonicalize(file).ok()?;
    let uid = nix::unistd::getuid().as_raw();
    let base = match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("muster"),
        _ => std::env::temp_dir().join(format!("muster-{uid}")),
    };
    private_dir(&base).ok()?;
    let meta = std::fs::symlink_metadata(&base).ok()?;
    // Someone else's directory (made first, in /tmp) must not decide who runs what.
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return None;
    }
    let name = format!(
        "config-{:016x}.lock",
        fnv1a(canonical.as_os_str().as_encoded_bytes())
    );
    Some(base.join(name))
}

/// FNV-1a: stable across builds and versions, unlike `std`'s hasher, so two muster
/// binaries agree on a config's lock.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = StateLock::acquire(dir.path()).unwrap();
        match StateLock::acquire(dir.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("{other:?}"),
        }
        drop(first);
        assert!(StateLock::acquire(dir.path()).is_ok());
    }

    #[test]
    fn a_holder_that_has_not_written_its_pid_yet_is_named_by_the_kernel() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path()).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join("lock"))
            .unwrap();
        // Locked, nothing written: the moment between a start's flock and its write.
        let _held = Flock::lock(file, FlockArg::LockExclusiveNonblock).unwrap();
        match StateLock::acquire(dir.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_config_file_has_one_supervisor_whatever_its_state_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("muster.toml");
        std::fs::write(&file, "").unwrap();
        let first = StateLock::acquire_for_config(&file, &dir.path().join("a")).unwrap();
        assert_eq!(running_state_dir(&file), Some(dir.path().join("a")));
        // The same file through another spelling of its path.
        let other = dir.path().join(".").join("muster.toml");
        match StateLock::acquire_for_config(&other, &dir.path().join("b")) {
            Err(LockError::Held { pid, dir: held }) => {
                assert_eq!(pid, std::process::id().to_string());
                assert_eq!(held, dir.path().join("a"));
            }
            other => panic!("{other:?}"),
        }
        drop(first);
        assert_eq!(running_state_dir(&file), None);
        assert!(StateLock::acquire_for_config(&file, &dir.path().join("b")).is_ok());
    }
}
