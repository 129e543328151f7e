//! The commands that talk to a running supervisor over its socket: `ensure`, `start`,
//! `stop`, `restart`, `down`, `reload` and `signal`, and the plumbing every client command shares:
//! one request with a deadline ([`call`]), or a follow ([`Client::follow`]) that ends
//! quietly when the supervisor stops. Answers are read as the API's types ([`typed`]);
//! an error answer is printed from its [`ErrorBody`] and its kind decides the exit
//! status. The answer is printed for people or, with `--json`, as the API's JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use hyper::Method;
use serde::de::DeserializeOwned;

use super::out::{err, errln, outln};
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs};
use crate::api::client::{self, Answer, ClientError, Patience, Raw, Unreadable};
use crate::api::model::{
    ErrorBody, ErrorKind, Reloaded, Scaled, ServiceView, ShuttingDown, Signaled,
};
use crate::supervisor::Phase;

#[derive(Debug, Args)]
pub struct EnsureArgs {
    /// The service to make healthy
    pub name: String,
    /// How long to wait for it, such as "30s" or "5m"
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub timeout: String,
    /// Print the API's JSON answer
    #[arg(long)]
    pub json: bool,
}

/// `start` and `restart`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// The service
    pub name: String,
    /// How long to wait for the outcome (healthy, completed or failed), such as "30s"
    #[arg(
        long,
        default_value = "60s",
        value_name = "DURATION",
        conflicts_with = "no_wait"
    )]
    pub timeout: String,
    /// Only ask, and print the state it is in at that instant
    #[arg(long)]
    pub no_wait: bool,
    /// Print the API's JSON answer
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NameArgs {
    /// The service
    pub name: String,
    /// Print the API's JSON answer
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DownArgs {}

/// Where the supervisor of this config listens: `--state-dir`, or the config's. A
/// config being edited may be invalid while its supervisor runs, so this needs only
/// `settings.state-dir` (default `.muster` beside the file), not a valid file.
///
/// When the config's `state-dir` was edited while its supervisor runs, that supervisor
/// still keeps its state where the file named it then (it cannot move it): if nothing
/// answers at the directory the file names now, the one the running supervisor of this
/// file recorded is used, and that is said on stderr.
pub fn socket(global: &GlobalArgs) -> Result<(PathBuf, PathBuf), ExitCode> {
    let state_dir = match global.state_dir() {
        Some(dir) => dir,
        None => {
            let named = crate::config::state_dir_of(&global.file).map_err(|error| {
                errln!("muster: {error}");
                ExitCode::from(EXIT_USAGE)
            })?;
            running_elsewhere(global, &named).unwrap_or(named)
        }
    };
    Ok((crate::api::socket_path(&state_dir), state_dir))
}

/// The state directory of the supervisor running this config file, when it is not
/// `named` (the one the file names now) and no supervisor answers at `named`.
fn running_elsewhere(global: &GlobalArgs, named: &std::path::Path) -> Option<PathBuf> {
    let file = if global.file.is_dir() {
        global.file.join(crate::config::DEFAULT_FILE_NAME)
    } else {
        global.file.clone()
    };
    let running = crate::supervisor::lock::running_state_dir(&file)?;
    if running == named
        || std::os::unix::net::UnixStream::connect(crate::api::socket_path(named)).is_ok()
    {
        return None;
    }
    // Said once per command, however many times it looks the directory up.
    static TOLD: std::sync::Once = std::sync::Once::new();
    TOLD.call_once(|| {
        errln!(
            "muster: the supervisor of {} keeps its state in {}, and that is where this \
             command looks (the file now names {}, which takes effect after `muster down` \
             and `muster up`)",
            file.display(),
            running.display(),
            named.display()
        );
    });
    Some(running)
}

/// A runtime for one command, or the exit code after saying why there is none.
pub fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| {
            errln!("muster: cannot start the runtime: {error}");
            ExitCode::from(EXIT_FAILED)
        })
}

/// Says why a request got no answer: how to start a missing supervisor, how to resume
/// a stopped one, how to wait longer for a slow one.
fn no_answer(global: &GlobalArgs, error: &ClientError) -> ExitCode {
    match error {
        ClientError::NotRunning { .. } => errln!(
            "muster: {error}; start one with `muster up -f {}`",
            global.file.display()
        ),
        ClientError::NoAnswer { stopped: false, .. } => {
            errln!("muster: {error}; wait longer with --api-timeout or MUSTER_TIMEOUT")
        }
        ClientError::NoAnswer { .. }
        | ClientError::Broken { .. }
        | ClientError::Unreachable { .. } => errln!("muster: {error}"),
    }
    ExitCode::from(EXIT_FAILED)
}

/// The supervisor of this config, for one command.
#[derive(Debug)]
pub struct Client<'a> {
    global: &'a GlobalArgs,
    runtime: tokio::runtime::Runtime,
    socket: PathBuf,
}

impl<'a> Client<'a> {
    pub fn new(global: &'a GlobalArgs) -> Result<Self, ExitCode> {
        let (socket, _) = socket(global)?;
        Ok(Self {
            global,
            runtime: runtime()?,
            socket,
        })
    }

    /// Sends one request, waiting at most `patience`; no answer is reported.
    pub fn call(&self, method: Method, path: &str, patience: Patience) -> Result<Answer, ExitCode> {
        let changes = method != Method::GET;
        self.runtime
            .block_on(client::request_within(&self.socket, method, path, patience))
            .map_err(|error| {
                let code = no_answer(self.global, &error);
                if changes && matches!(error, ClientError::NoAnswer { .. }) {
                    // A stopped supervisor reads its queue when it resumes.
                    errln!("muster: the request was sent, and may still be carried out later");
                }
                code
            })
    }

    /// [`Client::call`], the body left as the bytes that came (see [`client::Raw`]).
    pub fn fetch(&self, method: Method, path: &str, patience: Patience) -> Result<Raw, ExitCode> {
        self.runtime
            .block_on(client::fetch_within(&self.socket, method, path, patience))
            .map_err(|error| no_answer(self.global, &error))
    }

    /// Starts a follow: its head within the patience of a plain request, then the
    /// stream. An error answer is reported (exit 2 for a request the user got wrong, 1
    /// otherwise).
    pub fn follow(&self, path: &str) -> Result<client::Stream, ExitCode> {
        let patience = Patience::follow(self.global.api_timeout);
        match self
            .runtime
            .block_on(client::follow(&self.socket, path, patience))
        {
            Ok(Ok(stream)) => Ok(stream),
            Ok(Err(answer)) => Err(match answer.parse::<ErrorBody>() {
                Ok(error) => {
                    errln!("muster: {}", error.error.message);
                    exit_for(&error)
                }
                Err(unreadable) => report_unreadable(&unreadable),
            }),
            Err(error) => Err(no_answer(self.global, &error)),
        }
    }

    /// Reads a follow's lines into `on_line` until it ends. The supervisor going away
    /// (`muster down`, Ctrl-C) is the normal end of a follow: one line on stderr and
    /// status 0. An answer cut off while the supervisor is still there is an error.
    /// Follows `stream` to its end, reading as a `T` the text `item` picks out of each
    /// line (lines it picks nothing from are skipped). One that cannot be read is said
    /// once, and the rest still shown.
    pub fn follow_items<T: DeserializeOwned>(
        &self,
        stream: &mut client::Stream,
        item: impl Fn(&str) -> Option<&str>,
        mut show: impl FnMut(T),
    ) -> ExitCode {
        let reader = stream.reader();
        let mut unreadable = false;
        self.follow_to_end(stream, |line| {
            let Some(text) = item(line) else {
                return;
            };
            match reader.parse::<T>(text) {
                Ok(value) => show(value),
                Err(error) if !unreadable => {
                    unreadable = true;
                    errln!("muster: {error}");
                }
                Err(_) => {}
            }
        })
    }

    pub fn follow_to_end(
        &self,
        stream: &mut client::Stream,
        on_line: impl FnMut(&str),
    ) -> ExitCode {
        let result = self.runtime.block_on(stream.each_line(on_line));
        // The supervisor closes its connections as it exits: give it a moment to be gone.
        let gone = stream.pid.filter(|&pid| exits_within(pid, EXIT_PATIENCE));
        match (result, gone) {
            (_, Some(pid)) => {
                errln!("muster: the supervisor (pid {pid}) stopped; nothing more to follow");
                ExitCode::SUCCESS
            }
            (Ok(()), None) => {
                errln!("muster: the supervisor ended the answer; nothing more to follow");
                ExitCode::SUCCESS
            }
            (Err(error), None) => {
                errln!("muster: {error}");
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}

/// How long a follow whose answer was cut gives the supervisor to finish exiting.
const EXIT_PATIENCE: Duration = Duration::from_secs(5);

/// Whether process `pid` is gone (or a zombie) within `patience`.
fn exits_within(pid: u32, patience: Duration) -> bool {
    crate::supervisor::procfs::exits_within(pid, patience, || !gone(pid))
}

/// Whether process `pid` has exited (its descriptors, and so the state lock, are gone).
fn gone(pid: u32) -> bool {
    crate::supervisor::procfs::stat(pid).is_none_or(|stat| stat.is_zombie())
}

/// Sends one plain request; no supervisor, or no answer in time, is one line saying
/// what to do.
pub fn call(global: &GlobalArgs, method: Method, path: &str) -> Result<Answer, ExitCode> {
    Client::new(global)?.call(method, path, Patience::plain(global.api_timeout))
}

/// [`call`] for a GET whose answer may be large: the body as the bytes that came.
pub fn fetch(global: &GlobalArgs, path: &str) -> Result<Raw, ExitCode> {
    Client::new(global)?.fetch(Method::GET, path, Patience::plain(global.api_timeout))
}

/// The answer as the document `T` its endpoint promises, or its error body; an answer
/// that is neither is reported.
pub fn typed<T: DeserializeOwned>(answer: &Answer) -> Result<Result<T, ErrorBody>, ExitCode> {
    answer
        .outcome()
        .map_err(|unreadable| report_unreadable(&unreadable))
}

/// Says that an answer could not be read, and gives the exit code.
pub fn report_unreadable(unreadable: &Unreadable) -> ExitCode {
    errln!("muster: {unreadable}");
    ExitCode::from(EXIT_FAILED)
}

/// 2 for what the user got wrong (a name that does not exist, a malformed request, an
/// invalid config), 1 for anything else that failed.
pub fn exit_for(error: &ErrorBody) -> ExitCode {
    match error.error.kind {
        ErrorKind::UnknownService
        | ErrorKind::BadRequest
        | ErrorKind::InvalidConfig
        | ErrorKind::NoCluster => ExitCode::from(EXIT_USAGE),
        _ => ExitCode::from(EXIT_FAILED),
    }
}

fn print_json(answer: &Answer) {
    super::print_json(&answer.body);
}

/// A `--timeout` value, or the exit code after saying what is wrong with it.
fn timeout(text: &str) -> Result<Duration, ExitCode> {
    crate::config::values::duration(text).map_err(|_| {
        errln!(
            "muster: --timeout {text:?} is not a duration; write it with a unit, such as \"30s\""
        );
        ExitCode::from(EXIT_USAGE)
    })
}

pub fn ensure(global: &GlobalArgs, args: &EnsureArgs) -> ExitCode {
    waited(global, &args.name, "ensure?", &args.timeout, args.json)
}

/// `POST /v1/services/NAME/{action}timeout=…`, waited for up to its timeout (on top
/// of the API's own), and its outcome printed.
fn waited(global: &GlobalArgs, name: &str, action: &str, limit: &str, json: bool) -> ExitCode {
    let wait = match timeout(limit) {
        Ok(wait) => wait,
        Err(code) => return code,
    };
    let path = format!(
        "/v1/services/{}/{action}timeout={}",
        encode(name),
        encode(limit)
    );
    let patience = Patience::waiting(global.api_timeout, wait);
    let answer = match Client::new(global).and_then(|c| c.call(Method::POST, &path, patience)) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if let Some(code) = each_instance(&answer, |instance| {
        waited(global, instance, action, limit, json)
    }) {
        return code;
    }
    conclude(name, &answer, json)
}

/// When `answer` says the name asked about is a service with `replicas` (the API takes
/// its instances' names), runs `each` for every instance, all at once, and gives the
/// first failure's exit code (or success).
pub fn each_instance(answer: &Answer, each: impl Fn(&str) -> ExitCode + Sync) -> Option<ExitCode> {
    if answer.status != hyper::StatusCode::NOT_FOUND {
        return None;
    }
    let instances = answer.parse::<ErrorBody>().ok()?.error.instances?;
    let codes: Vec<ExitCode> = std::thread::scope(|scope| {
        let each = &each;
        let running: Vec<_> = instances
            .iter()
            .map(|instance| scope.spawn(move || each(instance)))
            .collect();
        running
            .into_iter()
            .map(|thread| thread.join().unwrap_or(ExitCode::from(EXIT_FAILED)))
            .collect()
    });
    Some(
        codes
            .into_iter()
            .find(|code| *code != ExitCode::SUCCESS)
            .unwrap_or(ExitCode::SUCCESS),
    )
}

/// Prints a waited-for outcome (healthy or completed, or why not) and gives its code.
fn conclude(name: &str, answer: &Answer, json: bool) -> ExitCode {
    if json {
        print_json(answer);
    }
    let view = match typed::<ServiceView>(answer) {
        Ok(Ok(view)) => view,
        Ok(Err(error)) => {
            if !json {
                report_failure(&error);
            }
            return exit_for(&error);
        }
        Err(code) => return code,
    };
    if !json {
        outln!("{}", outcome_line(name, &view));
    }
    ExitCode::SUCCESS
}

/// "web is healthy (pid 42) on 127.0.0.1:8080", or "migrate completed (exited with
/// status 0)".
fn outcome_line(name: &str, view: &ServiceView) -> String {
    if view.state == Phase::Completed {
        let how = view.last_exit.as_deref().unwrap_or(&view.reason);
        return format!("{name} completed ({how})");
    }
    if let Some(placed) = view.singleton.as_ref().filter(|p| !p.here) {
        let mut line = format!("{name} is healthy on host {}", placed.host);
        if let Some(endpoint) = &placed.endpoint {
            line.push_str(&format!(" at {endpoint}"));
        }
        line.push_str(&format!(" (fence {})", placed.fence));
        return line;
    }
    let mut line = format!("{name} is healthy");
    if let Some(placed) = &view.singleton {
        line.push_str(&format!(" here (fence {})", placed.fence));
    }
    if let Some(pid) = view.pid {
        line.push_str(&format!(" (pid {pid})"));
    }
    if !view.ports.is_empty() {
        line.push_str(&format!(" on {}", view.ports.join(", ")));
    }
    line
}

/// An error answer for people: the message, the cause chain, the log tail.
fn report_failure(error: &ErrorBody) {
    let error = &error.error;
    errln!("muster: {}", error.message);
    if error.cause.len() > 1 {
        errln!("because:");
        for step in &error.cause[1..] {
            errln!("  {step}");
        }
    }
    if !error.log_tail.is_empty() {
        errln!("last lines of its log:");
        for line in &error.log_tail {
            errln!("  | {line}");
        }
    }
}

/// `start` or `restart`: asks, then (unless `--no-wait`) waits for the outcome, which
/// the supervisor reports: healthy, completed for a one-shot, or failed with the cause.
pub fn start(global: &GlobalArgs, args: &StartArgs, verb: &str) -> ExitCode {
    if args.no_wait {
        let names = NameArgs {
            name: args.name.clone(),
            json: args.json,
        };
        return command(global, &names, verb);
    }
    let action = format!("{verb}?wait=true&");
    waited(global, &args.name, &action, &args.timeout, args.json)
}

/// `stop`, or `start`/`restart --no-wait`: one request, and the state it answers with.
pub fn command(global: &GlobalArgs, args: &NameArgs, verb: &str) -> ExitCode {
    let answer = match call(
        global,
        Method::POST,
        &format!("/v1/services/{}/{verb}", encode(&args.name)),
    ) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if let Some(code) = each_instance(&answer, |instance| {
        let one = NameArgs {
            name: instance.to_owned(),
            json: args.json,
        };
        command(global, &one, verb)
    }) {
        return code;
    }
    if args.json {
        print_json(&answer);
    }
    let view = match typed::<ServiceView>(&answer) {
        Ok(Ok(view)) => view,
        Ok(Err(error)) => {
            if !args.json {
                report_failure(&error);
            }
            return exit_for(&error);
        }
        Err(code) => return code,
    };
    if !args.json {
        let state = view.state;
        if verb == "stop" {
            outln!("stop: {} (now {state})", args.name);
        } else {
            outln!("{verb}: asked; {} is {state} at this instant", args.name);
        }
    }
    ExitCode::SUCCESS
}

/// `down`: asks for a graceful shutdown and waits until the supervisor is gone.
pub fn down(global: &GlobalArgs, _args: &DownArgs) -> ExitCode {
    let answer = match call(global, Method::POST, "/v1/shutdown") {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    match typed::<ShuttingDown>(&answer) {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            report_failure(&error);
            return ExitCode::from(EXIT_FAILED);
        }
        Err(code) => return code,
    }
    errln!("muster: stopping; waiting for the supervisor to exit");
    let Some(pid) = answer.pid else {
        // The system did not say who answered: wait on the state lock, which the
        // supervisor holds until it has exited.
        let Ok((_, state_dir)) = socket(global) else {
            return ExitCode::from(EXIT_FAILED);
        };
        return match crate::supervisor::lock::StateLock::wait(&state_dir) {
            Ok(_) => {
                errln!("muster: the supervisor has exited");
                ExitCode::SUCCESS
            }
            Err(error) => {
                errln!("muster: {error}");
                ExitCode::from(EXIT_FAILED)
            }
        };
    };
    // Its own shutdown-timeout bounds how long stopping takes; a supervisor stopped by
    // SIGSTOP never finishes, and that is said once it has been stopped a while.
    let mut stopped_since: Option<Instant> = None;
    loop {
        // Woken by its exit; every so often, to see whether it was stopped instead.
        if exits_within(pid, STOPPED_LOOK) {
            errln!("muster: the supervisor has exited");
            return ExitCode::SUCCESS;
        }
        if client::is_stopped(pid) {
            let since = *stopped_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= global.api_timeout {
                errln!(
                    "muster: the supervisor (pid {pid}) is stopped (SIGSTOP, or Ctrl-Z in its \
                     terminal) and cannot finish shutting down; resume it with `kill -CONT {pid}`"
                );
                return ExitCode::from(EXIT_FAILED);
            }
        } else {
            stopped_since = None;
        }
    }
}

/// How often `down` looks whether a supervisor that has not exited yet was stopped.
const STOPPED_LOOK: Duration = Duration::from_millis(200);

/// Percent-encodes a query value.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// Reload only this service: send it its `reload-signal`, or, without one, restart
    /// it (and wait for the outcome, as `restart` does). Without NAME: apply the edited
    /// config file
    pub name: Option<String>,
    /// With NAME and no reload-signal: how long to wait for the new run's outcome
    #[arg(
        long,
        default_value = "60s",
        value_name = "DURATION",
        conflicts_with = "no_wait",
        requires = "name"
    )]
    pub timeout: String,
    /// With NAME and no reload-signal: only ask for the restart
    #[arg(long, requires = "name")]
    pub no_wait: bool,
    /// Print the API's JSON answer
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status: 0 sent; 1 the service has no process, or no supervisor \
    answered; 2 no such service, or not a signal."
)]
pub struct SignalArgs {
    /// The service
    pub name: String,
    /// The signal: a name (SIGHUP, HUP, usr1) or a number
    pub signal: String,
    /// Only the main process (the one MAINPID= named, or the one muster started), not
    /// its whole process group
    #[arg(long)]
    pub main: bool,
    /// Print the API's JSON answer
    #[arg(long)]
    pub json: bool,
}

/// `signal NAME SIGNAL`: sends the signal to the service's process group (or its main
/// process).
pub fn signal(global: &GlobalArgs, args: &SignalArgs) -> ExitCode {
    let signal = match crate::config::values::any_signal(&args.signal) {
        Ok(signal) => signal,
        Err(problem) => {
            let help = problem.help.map(|h| format!("; {h}")).unwrap_or_default();
            errln!("muster: {}{help}", problem.message);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut path = format!(
        "/v1/services/{}/signal?signal={}",
        encode(&args.name),
        signal.as_str()
    );
    if args.main {
        path.push_str("&main=true");
    }
    let answer = match call(global, Method::POST, &path) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if let Some(code) = each_instance(&answer, |instance| {
        let one = SignalArgs {
            name: instance.to_owned(),
            signal: args.signal.clone(),
            main: args.main,
            json: args.json,
        };
        self::signal(global, &one)
    }) {
        return code;
    }
    if args.json {
        print_json(&answer);
    }
    match typed::<Signaled>(&answer) {
        Ok(Ok(sent)) => {
            if !args.json {
                let whom = match sent.target {
                    crate::supervisor::Target::Group => "process group",
                    crate::supervisor::Target::Main => "main process",
                };
                outln!(
                    "signal: sent {} to {}'s {whom} (pid {})",
                    sent.signal,
                    sent.service,
                    sent.pid
                );
            }
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            if !args.json {
                report_failure(&error);
            }
            exit_for(&error)
        }
        Err(code) => code,
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "The count holds until the config file's `replicas` for the service changes.\n\
    Exit status: 0 scaled; 1 the service has no replicas, the config cannot run that many, or \
    no supervisor answered; 2 no such service, or not a count from 1 to 1000."
)]
pub struct ScaleArgs {
    /// The service (the name in the config, such as `web`, not `web.0`)
    pub name: String,
    /// How many instances to run, from 1 to 1000
    pub replicas: String,
    /// Print the API's JSON answer
    #[arg(long)]
    pub json: bool,
}

/// `scale NAME N`: runs N instances of a service with `replicas`.
pub fn scale(global: &GlobalArgs, args: &ScaleArgs) -> ExitCode {
    let max = crate::name::MAX_REPLICAS;
    let count = match args.replicas.trim().parse::<u32>() {
        Ok(count) if (1..=max).contains(&count) => count,
        _ => {
            errln!(
                "muster: `{}` is not a number of instances; give one from 1 to {max} (to run none: muster stop {})",
                args.replicas,
                args.name
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let path = format!("/v1/services/{}/scale?replicas={count}", encode(&args.name));
    let answer = match call(global, Method::POST, &path) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if args.json {
        print_json(&answer);
    }
    match typed::<Scaled>(&answer) {
        Ok(Ok(scaled)) => {
            if !args.json {
                let list = |names: &[crate::config::ServiceName]| {
                    names
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                let mut line = format!(
                    "scale: {} runs {} instance(s)",
                    scaled.service, scaled.replicas
                );
                if !scaled.changes.added.is_empty() {
                    line.push_str(&format!("; added {}", list(&scaled.changes.added)));
                }
                if !scaled.changes.removed.is_empty() {
                    line.push_str(&format!("; stopped {}", list(&scaled.changes.removed)));
                }
                if scaled.replicas != scaled.declared {
                    line.push_str(&format!(" (the config says {})", scaled.declared));
                }
                outln!("{line}");
            }
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            if !args.json {
                report_failure(&error);
            }
            exit_for(&error)
        }
        Err(code) => code,
    }
}

/// `reload NAME`: the service's own reload, by its `reload-signal` or a restart.
fn reload_service(global: &GlobalArgs, args: &ReloadArgs, name: &str) -> ExitCode {
    if args.no_wait {
        let answer = match call(
            global,
            Method::POST,
            &format!("/v1/services/{}/reload", encode(name)),
        ) {
            Ok(answer) => answer,
            Err(code) => return code,
        };
        if let Some(code) =
            each_instance(&answer, |instance| reload_service(global, args, instance))
        {
            return code;
        }
        return reloaded(args.json, name, &answer, false);
    }
    let wait = match timeout(&args.timeout) {
        Ok(wait) => wait,
        Err(code) => return code,
    };
    let path = format!(
        "/v1/services/{}/reload?wait=true&timeout={}",
        encode(name),
        encode(&args.timeout)
    );
    let patience = Patience::waiting(global.api_timeout, wait);
    let answer = match Client::new(global).and_then(|c| c.call(Method::POST, &path, patience)) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if let Some(code) = each_instance(&answer, |instance| reload_service(global, args, instance)) {
        return code;
    }
    reloaded(args.json, name, &answer, true)
}

/// The answer to `reload NAME`, printed as asked; the exit code it means.
fn reloaded(json: bool, name: &str, answer: &Answer, waited: bool) -> ExitCode {
    if json {
        print_json(answer);
    }
    match typed::<ServiceView>(answer) {
        Ok(Ok(view)) => {
            if !json {
                outln!("{}", reload_line(name, &view, waited));
            }
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            if !json {
                report_failure(&error);
            }
            exit_for(&error)
        }
        Err(code) => code,
    }
}

/// "reload: sent SIGHUP to web (pid 42)", or how the restart that stood for it went.
fn reload_line(name: &str, view: &ServiceView, waited: bool) -> String {
    match (&view.reload_signal, view.pid) {
        (Some(signal), Some(pid)) => {
            format!("reload: sent {signal} to {name}'s process group (pid {pid})")
        }
        (Some(signal), None) => format!("reload: sent {signal} to {name}"),
        (None, _) if waited => format!(
            "reload: restarted (no reload-signal); {}",
            outcome_line(name, view)
        ),
        (None, _) => format!(
            "reload: restarting {name} (no reload-signal); it is {} at this instant",
            view.state
        ),
    }
}

/// `reload`: apply the edited config, restarting only what changed; with a name,
/// that service's own reload.
pub fn reload(global: &GlobalArgs, args: &ReloadArgs) -> ExitCode {
    if let Some(name) = &args.name {
        return reload_service(global, args, name);
    }
    let answer = match call(global, Method::POST, "/v1/reload") {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if args.json {
        print_json(&answer);
    }
    let report = match typed::<Reloaded>(&answer) {
        Ok(Ok(reloaded)) => reloaded.reloaded,
        Ok(Err(error)) => {
            if !args.json {
                match &error.error.report {
                    // The diagnostics as `muster check` prints them, then the verdict.
                    Some(report) if error.error.kind == ErrorKind::InvalidConfig => {
                        err!("{report}");
                        errln!("muster: {}", error.error.message);
                    }
                    _ => report_failure(&error),
                }
            }
            return exit_for(&error);
        }
        Err(code) => return code,
    };
    if !args.json {
        let mut parts = Vec::new();
        for (names, verb) in [
            (&report.restarted, "restarted"),
            (&report.added, "added"),
            (&report.removed, "removed"),
        ] {
            if !names.is_empty() {
                let names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
                parts.push(format!("{verb} {}", names.join(", ")));
            }
        }
        parts.push(format!("{} unchanged", report.unchanged.len()));
        outln!("reloaded: {}", parts.join("; "));
    }
    ExitCode::SUCCESS
}
