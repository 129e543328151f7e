//! One spawn, described so that it can run on the spawner's thread: the command, what
//! each standard stream is, and the setup between fork and exec, with every descriptor
//! the child is given held apart from the command (they travel to the spawner's table).
//!
//! A child starts with an empty signal mask whichever thread spawns it (the spawner
//! blocks every signal; std leaves the mask as the spawning thread has it). Without a
//! setup, and with a program that is found, the spawn is `posix_spawn` called here
//! with the mask, the process group and the streams as attributes: the child shares
//! muster's memory until it has exec'd, with no page tables copied. Otherwise it is
//! std's spawn (a fork), whose code between fork and exec empties the mask first.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;

use super::setup::{Plan, Setup};
use super::spawner;

/// What one of a child's standard streams is.
#[derive(Debug)]
pub enum Io {
    /// `/dev/null`.
    Null,
    /// A pipe whose read end the caller gets back ([`Spawned`]).
    Piped,
    /// muster's own stream.
    Inherit,
    /// This descriptor (a pipe's write end, a file).
    Fd(OwnedFd),
}

/// A process to start: the command (program, arguments, environment, directory; its
/// standard streams are set from `stdin`, `stdout` and `stderr`), and the setup it
/// needs between fork and exec, if any. The child leads a process group of its own.
#[derive(Debug)]
pub struct Spawn {
    pub command: Command,
    /// The child's `argv[0]`, when it is not the program as given (set it here, not
    /// with `CommandExt::arg0`, which cannot be read back).
    pub arg0: Option<OsString>,
    pub stdin: Io,
    pub stdout: Io,
    pub stderr: Io,
    pub setup: Option<Plan>,
}

/// A started process: its pid, and the read ends of the streams asked [`Io::Piped`].
#[derive(Debug)]
pub struct Spawned {
    pub pid: u32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Why a spawn failed: the error, and in words the step of the setup the kernel
/// refused, when it was one.
#[derive(Debug)]
pub struct SpawnError {
    pub error: io::Error,
    pub step: Option<String>,
}

impl From<io::Error> for SpawnError {
    fn from(error: io::Error) -> Self {
        SpawnError { error, step: None }
    }
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.step {
            Some(step) => f.write_str(step),
            None => write!(f, "{}", self.error),
        }
    }
}

impl Spawn {
    /// A command with its streams on `/dev/null` and nothing to set up.
    pub fn new(command: Command) -> Self {
        Spawn {
            command,
            arg0: None,
            stdin: Io::Null,
            stdout: Io::Null,
            stderr: Io::Null,
            setup: None,
        }
    }

    /// Starts the process (from the spawner's thread when there is one).
    pub(super) fn start(self) -> Result<Spawned, SpawnError> {
        let Spawn {
            command,
            arg0,
            stdin,
            stdout,
            stderr,
            setup,
        } = self;
        // Every descriptor given, in order: the streams' own, then the setup's.
        let mut give = Vec::new();
        let streams = [stdin, stdout, stderr].map(|io| match io {
            Io::Fd(fd) => {
                give.push(fd);
                Shape::Given
            }
            Io::Null => Shape::Null,
            Io::Piped => Shape::Piped,
            Io::Inherit => Shape::Inherit,
        });
        let setup = setup.map(|mut plan| {
            let cgroups = std::mem::take(&mut plan.cgroups);
            let count = cgroups.len();
            give.extend(cgroups);
            (plan, count)
        });
        let (outcome, back) = spawner::run(give, move |given| {
            let mut given = given.into_iter();
            match spawn_here(command, arg0, streams, setup, &mut given) {
                Ok((pid, stdout, stderr)) => {
                    let (has_out, has_err) = (stdout.is_some(), stderr.is_some());
                    let back = stdout.into_iter().chain(stderr).collect();
                    (Ok((pid, has_out, has_err)), back)
                }
                Err(error) => (Err(error), Vec::new()),
            }
        })?;
        let (pid, has_out, has_err) = outcome?;
        let mut back = back.into_iter();
        let stdout = if has_out { back.next() } else { None };
        let stderr = if has_err { back.next() } else { None };
        Ok(Spawned {
            pid,
            stdout,
            stderr,
        })
    }
}

/// A stream as it travels: its descriptor, when it has one, is among those given.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Null,
    Piped,
    Inherit,
    Given,
}

/// Spawns on the calling thread, with the descriptors given (streams first, then the
/// setup's cgroups) as they are in its table.
fn spawn_here(
    command: Command,
    arg0: Option<OsString>,
    streams: [Shape; 3],
    setup: Option<(Plan, usize)>,
    given: &mut impl Iterator<Item = OwnedFd>,
) -> Result<(u32, Option<OwnedFd>, Option<OwnedFd>), SpawnError> {
    let mut ends = Vec::with_capacity(3);
    for shape in streams {
        ends.push(match shape {
            Shape::Null => End::Null,
            Shape::Piped => End::Piped,
            Shape::Inherit => End::Inherit,
            Shape::Given => End::Fd(
                given
                    .next()
                    .ok_or_else(|| io::Error::other("a descriptor was lost on its way"))?,
            ),
        });
    }
    match (setup, program_path(&command)) {
        (None, Some(program)) => Ok(posix_spawn(&command, &program, arg0.as_deref(), ends)?),
        (setup, _) => forked(command, arg0, ends, setup, given),
    }
}

/// A stream on the spawning thread's side.
enum End {
    Null,
    Piped,
    Inherit,
    Fd(OwnedFd),
}

/// std's spawn: a fork, with the mask emptied and the setup run before `exec`.
fn forked(
    mut command: Command,
    arg0: Option<OsString>,
    ends: Vec<End>,
    setup: Option<(Plan, usize)>,
    given: &mut impl Iterator<Item = OwnedFd>,
) -> Result<(u32, Option<OwnedFd>, Option<OwnedFd>), SpawnError> {
    if let Some(arg0) = arg0 {
        command.arg0(arg0);
    }
    command.process_group(0);
    let mut stdio = ends.into_iter().map(|end| match end {
        End::Null => Stdio::null(),
        End::Piped => Stdio::piped(),
        End::Inherit => Stdio::inherit(),
        End::Fd(fd) => Stdio::from(fd),
    });
    if let (Some(stdin), Some(stdout), Some(stderr)) = (stdio.next(), stdio.next(), stdio.next()) {
        command.stdin(stdin).stdout(stdout).stderr(stderr);
    }
    empty_mask_at_exec(&mut command);
    let report = match setup {
        Some((plan, count)) => {
            let cgroups = given.take(count).collect();
            let (setup, report) = Setup::new(&plan.settings, plan.identity.as_ref(), cgroups)?;
            setup.install(&mut command);
            Some(report)
        }
        None => None,
    };
    match command.spawn() {
        Ok(mut child) => Ok((
            child.id(),
            child.stdout.take().map(OwnedFd::from),
            child.stderr.take().map(OwnedFd::from),
        )),
        Err(error) => {
            let step = report.as_ref().and_then(|report| report.explain(&error));
            Err(SpawnError { error, step })
        }
    }
}

/// Has the child of `command` empty its signal mask between fork and exec.
#[allow(unsafe_code)]
fn empty_mask_at_exec(command: &mut Command) {
    // SAFETY: `pthread_sigmask` is async-signal-safe; the set is built on the stack.
    unsafe {
        command.pre_exec(|| {
            nix::sys::signal::pthread_sigmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&SigSet::empty()),
                None,
            )
            .map_err(io::Error::from)
        });
    }
}

/// The program `command` runs: as given when it is a path; a bare name searched on the
/// `PATH` the child gets, as std's spawn would. `None` when not found (std's spawn then
/// fails with the error it always gives).
fn program_path(command: &Command) -> Option<OsString> {
    let program = command.get_program();
    if program.as_bytes().contains(&b'/') {
        return Some(program.to_owned());
    }
    let path_var = match command.get_envs().find(|(key, _)| *key == "PATH") {
        Some((_, value)) => value.map(OsStr::to_owned),
        None => std::env::var_os("PATH"),
    };
    let cwd = command.get_current_dir().map_or_else(
        || std::path::PathBuf::from("."),
        std::path::Path::to_path_buf,
    );
    crate::config::executable::resolve(program.to_str()?, &cwd, path_var.as_deref())
        .ok()
        .map(std::path::PathBuf::into_os_string)
}

/// `posix_spawn` of `command` running `program` (a path), in a new process group, with
/// an empty signal mask and `SIGPIPE` at its default, and the streams `ends`.
fn posix_spawn(
    command: &Command,
    program: &OsStr,
    arg0: Option<&OsStr>,
    ends: Vec<End>,
) -> io::Result<(u32, Option<OwnedFd>, Option<OwnedFd>)> {
    let text = |value: &OsStr| {
        CString::new(value.as_bytes()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} contains a NUL byte", value.to_string_lossy()),
            )
        })
    };
    let program = text(program)?;
    let mut argv = vec![text(arg0.unwrap_or(command.get_program()))?];
    for arg in command.get_args() {
        argv.push(text(arg)?);
    }
    let envp = environment(command)
        .iter()
        .map(|entry| text(entry))
        .collect::<io::Result<Vec<_>>>()?;
    let mut actions = PosixSpawnFileActions::init()?;
    // Held until the spawn has happened: the child's ends, and the read ends returned.
    let mut keep = Vec::new();
    let mut read_ends = [None, None];
    for (target, end) in ends.into_iter().enumerate() {
        let fd = match end {
            End::Inherit => continue,
            End::Null => OwnedFd::from(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open("/dev/null")?,
            ),
            End::Fd(fd) => fd,
            End::Piped => {
                let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
                if let Some(slot) = read_ends.get_mut(target.wrapping_sub(1)) {
                    *slot = Some(read);
                }
                write
            }
        };
        actions.add_dup2(fd.as_raw_fd(), target as i32)?;
        keep.push(fd);
    }
    if let Some(dir) = command.get_current_dir() {
        let dir = text(dir.as_os_str())?;
        add_chdir(&mut actions, &dir)?;
    }
    let mut attributes = PosixSpawnAttr::init()?;
    attributes.set_pgroup(Pid::from_raw(0))?;
    attributes.set_sigmask(&SigSet::empty())?;
    let mut defaults = SigSet::empty();
    defaults.add(Signal::SIGPIPE);
    attributes.set_sigdefault(&defaults)?;
    attributes.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETPGROUP
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )?;
    let pid = nix::spawn::posix_spawn(program.as_c_str(), &actions, &attributes, &argv, &envp)?;
    drop(keep);
    let [stdout, stderr] = read_ends;
    Ok((pid.as_raw() as u32, stdout, stderr))
}

/// The child's environment, `KEY=VALUE` each: muster's own with the command's changes.
fn environment(command: &Command) -> Vec<OsString> {
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => env.insert(key.to_owned(), value.to_owned()),
            None => env.remove(key),
        };
    }
    env.into_iter()
        .map(|(mut key, value)| {
            key.push("=");
            key.push(value);
            key
        })
        .collect()
}

/// Has the child change to `dir` before `exec`.
#[allow(unsafe_code)]
fn add_chdir(actions: &mut PosixSpawnFileActions, dir: &CString) -> io::Result<()> {
    // SAFETY: `actions` is an initialised file-actions object, which nix's type
    // guarantees and which it holds as its first and only field; `dir` is a valid C
    // string that glibc copies.
    let code = unsafe {
        nix::libc::posix_spawn_file_actions_addchdir_np(
            std::ptr::from_mut(actions).cast::<nix::libc::posix_spawn_file_actions_t>(),
            dir.as_ptr(),
        )
    };
    match code {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// What `script` prints, run by `shell` (with a setup, when `setup`).
    fn output_of(shell: &str, script: &str, setup: bool) -> String {
        let mut command = Command::new(shell);
        command.args(["-c", script]).current_dir("/proc");
        let mut spawn = Spawn::new(command);
        spawn.arg0 = Some("named-sh".into());
        spawn.stdout = Io::Piped;
        if setup {
            spawn.setup = Some(Plan {
                settings: crate::config::ProcessSettings {
                    umask: Some(0o077),
                    ..Default::default()
                },
                identity: None,
                cgroups: Vec::new(),
            });
        }
        let spawned = spawn.start().unwrap();
        let mut text = String::new();
        std::fs::File::from(spawned.stdout.unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let _ = nix::sys::wait::waitpid(Pid::from_raw(spawned.pid as i32), None);
        text
    }

    #[test]
    fn a_child_starts_unmasked_in_its_own_group_with_its_name_and_directory() {
        let script = "grep SigBlk /proc/self/status; echo $0; pwd; \
                      test $(cut -d' ' -f5 /proc/self/stat) = $$ && echo leader";
        // A path and a bare name (both spawned with `posix_spawn`), and with a setup
        // (std's fork).
        for (shell, setup) in [("/bin/sh", false), ("sh", false), ("/bin/sh", true)] {
            // Spawned from a thread that blocks every signal, as the spawner does.
            let text = std::thread::spawn(move || {
                use nix::sys::signal::{SigmaskHow, pthread_sigmask};
                pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None).unwrap();
                output_of(shell, script, setup)
            })
            .join()
            .unwrap();
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(
                lines,
                ["SigBlk:\t0000000000000000", "named-sh", "/proc", "leader"],
                "{shell}, with a setup: {setup}"
            );
        }
    }
}
