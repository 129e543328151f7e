//! One supervisor per state directory: an exclusive `flock` on `state-dir/lock`, held
//! for the supervisor's life, with the holder's pid written inside so a second
//! `muster up` can say who is already running.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

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

    fn take(state_dir: &Path, how: FlockArg) -> Result<Self, LockError> {
        let path = state_dir.join("lock");
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        super::private_dir(state_dir).map_err(io)?;
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
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                return Err(LockError::Held {
                    pid: if pid.is_empty() {
                        "unknown".to_owned()
                    } else {
                        pid.to_owned()
                    },
                    dir: state_dir.to_path_buf(),
                });
            }
            Err((_, errno)) => return Err(io(errno.into())),
        };
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _lock: lock, path })
    }
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
}
