//! `muster run NAME [-- CMD...]`: a one-off command (a migration, a shell) in a
//! service's working directory, with its environment and env files, as its user and
//! group (and umask, nice, limits), attached to the terminal; muster's status is the
//! command's.
//!
//! muster becomes the command (`exec`): its standard input, output and terminal are the
//! command's, Ctrl-C reaches it as it would from a shell, and its exit status is
//! muster's without a process in between. No supervisor is needed or asked; the
//! command is not supervised.

use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

use clap::Args;

use super::out::errln;
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs};
use crate::config::{AssignedPort, Run, ServiceName, envfile, executable};
use crate::supervisor::process::setup::Setup;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The service whose directory and environment to run in
    #[arg(value_name = "NAME")]
    pub name: String,

    /// The command and its arguments, after `--` (default: the service's own command)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// The shell's statuses for a command that cannot be run.
const NOT_FOUND: u8 = 127;
const NOT_EXECUTABLE: u8 = 126;

pub fn run(global: &GlobalArgs, args: &RunArgs) -> ExitCode {
    let spec = match global.load(false, false) {
        Ok(loaded) => loaded.spec,
        Err(code) => return code,
    };
    // A service with replicas runs its command as its first instance would.
    let first = spec.members(&args.name).into_iter().next();
    let Some(service) = first.and_then(|name| spec.services.get(name.as_str())) else {
        let known: Vec<&str> = spec.services.keys().map(ServiceName::as_str).collect();
        let hint = crate::suggest::nearest(&args.name, known.iter().copied())
            .map(|near| format!("; did you mean `{near}`?"))
            .unwrap_or_default();
        errln!(
            "muster: no service named `{}` in {}{hint}",
            args.name,
            spec.path.display()
        );
        return ExitCode::from(EXIT_USAGE);
    };
    if !service.cwd.is_dir() {
        errln!(
            "muster: the working directory of `{}`, {}, does not exist; create it or fix `cwd`",
            service.name,
            service.cwd.display()
        );
        return ExitCode::from(EXIT_FAILED);
    }
    // As a run of the service is: its user and group, umask, nice and limits (not its
    // cgroup: this command is not supervised).
    let identity = match crate::supervisor::actor::identity(service) {
        Ok(identity) => identity,
        Err(why) => {
            errln!("muster: cannot run in `{}`: {why}", service.name);
            return ExitCode::from(EXIT_FAILED);
        }
    };
    // As a run of the service gets it: the user's own variables, env files in order,
    // then `env` over them.
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(identity) = identity.as_ref().filter(|_| service.process.user.is_some()) {
        env.push(("USER".to_owned(), identity.name.clone()));
        env.push(("LOGNAME".to_owned(), identity.name.clone()));
        if let Some(home) = &identity.home {
            env.push(("HOME".to_owned(), home.clone()));
        }
    }
    for file in &service.env_files {
        let pairs = envfile::read(file)
            .map_err(|error| error.to_string())
            .and_then(|text| envfile::parse(&text).map_err(|error| error.to_string()));
        match pairs {
            Ok(pairs) => env.extend(pairs),
            Err(error) => {
                errln!(
                    "muster: cannot read env-file {} of `{}`: {error}",
                    file.display(),
                    service.name
                );
                return ExitCode::from(EXIT_FAILED);
            }
        }
    }
    env.extend(service.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    if let Some(AssignedPort::Fixed(port)) = service.port {
        env.push(("PORT".to_owned(), port.to_string()));
    }
    env.push(("MUSTER_SERVICE".to_owned(), service.name.to_string()));
    if let Some(replica) = &service.replica {
        env.push(("MUSTER_REPLICA".to_owned(), replica.index.to_string()));
    }

    let argv: Vec<String> = if args.command.is_empty() {
        match &service.run {
            Run::Argv(argv) => argv.clone(),
            Run::Shell(line) => vec!["/bin/sh".to_owned(), "-c".to_owned(), line.clone()],
        }
    } else {
        args.command.clone()
    };
    let path_var = env
        .iter()
        .rev()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| std::ffi::OsString::from(value))
        .or_else(|| std::env::var_os("PATH"));
    let program = match executable::resolve(&argv[0], &service.cwd, path_var.as_deref()) {
        Ok(program) => program,
        Err(error) => {
            errln!(
                "muster: cannot run the command: {error} (in {}, with the PATH of `{}`)",
                service.cwd.display(),
                service.name
            );
            return ExitCode::from(match error {
                executable::ExecutableError::NotExecutable { .. }
                | executable::ExecutableError::Directory { .. } => NOT_EXECUTABLE,
                _ => NOT_FOUND,
            });
        }
    };
    let mut command = Command::new(&program);
    command
        .arg0(&argv[0])
        .args(&argv[1..])
        .current_dir(&service.cwd)
        .envs(env);
    let report = if service.process.needs_setup() {
        match Setup::new(&service.process, identity.as_ref(), Vec::new()) {
            Ok((setup, report)) => {
                setup.install(&mut command);
                Some(report)
            }
            Err(error) => {
                errln!(
                    "muster: cannot prepare the run of `{}`: {error}",
                    service.name
                );
                return ExitCode::from(EXIT_FAILED);
            }
        }
    } else {
        None
    };
    let error = command.exec();
    // `exec` only returns when it failed: a step of the setup, or the program itself.
    if let Some(why) = report.as_ref().and_then(|report| report.explain(&error)) {
        errln!("muster: cannot run in `{}`: {why}", service.name);
        return ExitCode::from(EXIT_FAILED);
    }
    errln!("muster: cannot run {}: {error}", program.display());
    ExitCode::from(NOT_EXECUTABLE)
}
