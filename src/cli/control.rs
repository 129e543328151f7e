//! The commands that talk to a running supervisor over its socket: `ensure`, `start`,
//! `stop`, `restart`, `down` and `reload`, and the plumbing every client command shares:
//! one request with a deadline ([`call`]), or a follow ([`Client::follow`]) that ends
//! quietly when the supervisor stops. The answer is printed for people or, with
//! `--json`, as the API's JSON.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use hyper::Method;

use super::out::{err, errln, outln};
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs};
use crate::api::client::{self, Answer, ClientError, Patience};

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
        ClientError::NoAnswer { .. } | ClientError::Broken { .. } => errln!("muster: {error}"),
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
            Ok(Err(answer)) => {
                errln!("muster: {}", error_message(&answer));
                Err(ExitCode::from(if answer.status.is_client_error() {
                    EXIT_USAGE
                } else {
                    EXIT_FAILED
                }))
            }
            Err(error) => Err(no_answer(self.global, &error)),
        }
    }

    /// Reads a follow's lines into `on_line` until it ends. The supervisor going away
    /// (`muster down`, Ctrl-C) is the normal end of a follow: one line on stderr and
    /// status 0. An answer cut off while the supervisor is still there is an error.
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
    let deadline = Instant::now() + patience;
    loop {
        if gone(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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

/// The one-line message of an error answer.
pub fn error_message(answer: &Answer) -> String {
    answer.body["error"]["message"]
        .as_str()
        .map_or_else(|| answer.body.to_string(), str::to_owned)
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
    let wait = match timeout(&args.timeout) {
        Ok(wait) => wait,
        Err(code) => return code,
    };
    let path = format!(
        "/v1/services/{}/ensure?timeout={}",
        encode(&args.name),
        encode(&args.timeout)
    );
    let patience = Patience::waiting(global.api_timeout, wait);
    let answer = match Client::new(global).and_then(|c| c.call(Method::POST, &path, patience)) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    conclude(&args.name, &answer, args.json)
}

/// Prints a waited-for outcome (healthy or completed, or why not) and gives its code.
fn conclude(name: &str, answer: &Answer, json: bool) -> ExitCode {
    if json {
        print_json(answer);
    }
    if !answer.status.is_success() {
        if !json {
            report_failure(answer);
        }
        return code_for(answer);
    }
    if !json {
        outln!("{}", outcome_line(name, &answer.body));
    }
    ExitCode::SUCCESS
}

/// "web is healthy (pid 42) on 127.0.0.1:8080", or "migrate completed (exited with
/// status 0)".
fn outcome_line(name: &str, body: &serde_json::Value) -> String {
    if body["state"] == "completed" {
        let how = body["last_exit"]
            .as_str()
            .or_else(|| body["reason"].as_str())
            .unwrap_or("exited with status 0");
        return format!("{name} completed ({how})");
    }
    let ports: Vec<&str> = body["ports"]
        .as_array()
        .map(|p| p.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let mut line = format!("{name} is healthy");
    if let Some(pid) = body["pid"].as_u64() {
        line.push_str(&format!(" (pid {pid})"));
    }
    if !ports.is_empty() {
        line.push_str(&format!(" on {}", ports.join(", ")));
    }
    line
}

/// An error answer for people: the message, the cause chain, the log tail.
fn report_failure(answer: &Answer) {
    errln!("muster: {}", error_message(answer));
    let error = &answer.body["error"];
    if let Some(cause) = error["cause"].as_array().filter(|c| c.len() > 1) {
        errln!("because:");
        for step in cause.iter().skip(1).filter_map(|c| c.as_str()) {
            errln!("  {step}");
        }
    }
    if let Some(tail) = error["log_tail"].as_array().filter(|t| !t.is_empty()) {
        errln!("last lines of its log:");
        for line in tail.iter().filter_map(|l| l.as_str()) {
            errln!("  | {line}");
        }
    }
}

/// 2 for a name that does not exist or a request the user got wrong, 1 for anything
/// else that failed.
fn code_for(answer: &Answer) -> ExitCode {
    if matches!(
        answer.status,
        hyper::StatusCode::NOT_FOUND | hyper::StatusCode::BAD_REQUEST
    ) {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::from(EXIT_FAILED)
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
    let wait = match timeout(&args.timeout) {
        Ok(wait) => wait,
        Err(code) => return code,
    };
    let path = format!(
        "/v1/services/{}/{verb}?wait=true&timeout={}",
        encode(&args.name),
        encode(&args.timeout)
    );
    let patience = Patience::waiting(global.api_timeout, wait);
    let answer = match Client::new(global).and_then(|c| c.call(Method::POST, &path, patience)) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    conclude(&args.name, &answer, args.json)
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
    if args.json {
        print_json(&answer);
    }
    if !answer.status.is_success() {
        if !args.json {
            report_failure(&answer);
        }
        return code_for(&answer);
    }
    if !args.json {
        let state = answer.body["state"].as_str().unwrap_or("?");
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
    if !answer.status.is_success() {
        report_failure(&answer);
        return ExitCode::from(EXIT_FAILED);
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
        if gone(pid) {
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
        std::thread::sleep(Duration::from_millis(20));
    }
}

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
    /// Print the API's JSON answer
    #[arg(long)]
    pub json: bool,
}

/// `reload`: apply the edited config, restarting only what changed.
pub fn reload(global: &GlobalArgs, args: &ReloadArgs) -> ExitCode {
    let answer = match call(global, Method::POST, "/v1/reload") {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if args.json {
        print_json(&answer);
    }
    if answer.status == hyper::StatusCode::UNPROCESSABLE_ENTITY {
        if !args.json {
            err!(
                "{}",
                answer.body["error"]["report"].as_str().unwrap_or_default()
            );
            errln!("muster: {}", error_message(&answer));
        }
        return ExitCode::from(EXIT_USAGE);
    }
    if !answer.status.is_success() {
        if !args.json {
            report_failure(&answer);
        }
        return ExitCode::from(EXIT_FAILED);
    }
    if !args.json {
        let report = &answer.body["reloaded"];
        let list = |key: &str| -> Vec<String> {
            report[key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut parts = Vec::new();
        for (key, verb) in [
            ("restarted", "restarted"),
            ("added", "added"),
            ("removed", "removed"),
        ] {
            let names = list(key);
            if !names.is_empty() {
                parts.push(format!("{verb} {}", names.join(", ")));
            }
        }
        parts.push(format!("{} unchanged", list("unchanged").len()));
        outln!("reloaded: {}", parts.join("; "));
    }
    ExitCode::SUCCESS
}
