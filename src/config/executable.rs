//! Finding the program a command names, the way `execvp` will, before anything runs.
//!
//! A name with a `/` is a path (relative to the service's working directory); a bare
//! name is searched on `PATH`. The answer says why a program cannot run, so that
//! `muster check` can say "not found on PATH" or "not executable" instead of letting
//! the spawn fail later.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a command's program cannot be run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecutableError {
    #[error("`{name}` is not found on PATH")]
    NotOnPath { name: String },
    #[error("`{}` does not exist", path.display())]
    Missing { path: PathBuf },
    #[error("`{}` is a directory", path.display())]
    Directory { path: PathBuf },
    #[error("`{}` is not executable", path.display())]
    NotExecutable { path: PathBuf },
}

/// Resolves `program` as `execvp` would, with `cwd` for relative paths and `path_var`
/// (the `PATH` the service will get) for bare names.
pub fn resolve(
    program: &str,
    cwd: &Path,
    path_var: Option<&OsStr>,
) -> Result<PathBuf, ExecutableError> {
    if program.contains('/') {
        // `components` drops interior `.`s, so messages show `dir/x`, not `dir/./x`.
        let path: PathBuf = cwd.join(program).components().collect();
        return check(&path).map(|()| path);
    }
    let mut found_unusable = None;
    for dir in std::env::split_paths(path_var.unwrap_or_default()) {
        // An empty PATH entry means the current directory, as in POSIX.
        let dir = if dir.as_os_str().is_empty() {
            cwd.to_path_buf()
        } else {
            cwd.join(dir)
        };
        let candidate = dir.join(program);
        match check(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(ExecutableError::Missing { .. }) => {}
            Err(other) => {
                found_unusable.get_or_insert(other);
            }
        }
    }
    Err(found_unusable.unwrap_or(ExecutableError::NotOnPath {
        name: program.to_owned(),
    }))
}

fn check(path: &Path) -> Result<(), ExecutableError> {
    let meta = std::fs::metadata(path).map_err(|_| ExecutableError::Missing {
        path: path.to_path_buf(),
    })?;
    if meta.is_dir() {
        return Err(ExecutableError::Directory {
            path: path.to_path_buf(),
        });
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(ExecutableError::NotExecutable {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn finds_programs_on_path_and_explains_failures() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        let tool = bin.join("tool");
        fs::write(&tool, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        let plain = bin.join("plain");
        fs::write(&plain, "data").unwrap();
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();

        let path_var = bin.as_os_str();
        assert_eq!(
            resolve("tool", dir.path(), Some(path_var)),
            Ok(tool.clone())
        );
        assert_eq!(resolve("bin/tool", dir.path(), None), Ok(tool));
        assert_eq!(
            resolve("nope", dir.path(), Some(path_var)),
            Err(ExecutableError::NotOnPath {
                name: "nope".into()
            })
        );
        assert!(matches!(
            resolve("plain", dir.path(), Some(path_var)),
            Err(ExecutableError::NotExecutable { .. })
        ));
        assert!(matches!(
            resolve("./bin", dir.path(), None),
            Err(ExecutableError::Directory { .. })
        ));
        assert!(matches!(
            resolve("./missing", dir.path(), None),
            Err(ExecutableError::Missing { .. })
        ));
    }
}
