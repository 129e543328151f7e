//! The commands that talk to a running supervisor over its socket: `ensure`, `start`,
//! `stop`, `restart` and `down`. Each is one request; the answer is printed for people
//! or, with `--json`, as the API's JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use hyper::Method;

use super::out::{err, errln, outln};
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs};
use crate::api::client::{self, Answer, ClientError};

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
pub fn socket(global: &GlobalArgs) -> Result<(PathBuf, PathBuf), ExitCode> {
    let state_dir = match global.state_dir() {
        Some(dir) => dir,
        None => crate::config::state_dir_of(&global.file).map_err(|error| {
            errln!("muster: {error}");
            ExitCode::from(EXIT_USAGE)
        })?,
    };
    Ok((crate::api::socket_path(&state_dir), state_dir))
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

/// Says why a request got no answer (a missing supervisor: how to start one).
fn no_answer(global: &GlobalArgs, error: &ClientError) -> ExitCode {
    match error {
        ClientError::NotRunning { .. } => errln!(
            "muster: {error}; start one with `muster up -f {}`",
            global.file.display()
        ),
        ClientError::Broken { .. } => errln!("muster: {error}"),
    }
    ExitCode::from(EXIT_FAILED)
}

/// Sends one request; a missing supervisor is one line saying how to start one.
pub fn call(global: &GlobalArgs, method: Method, path: &str) -> Result<Answer, ExitCode> {
    let (socket, _) = socket(global)?;
    runtime()?
        .block_on(client::request(&socket, method, path))
        .map_err(|error| no_answer(global, &error))
}

/// A GET whose answer is read line by line into `on_line` until it ends. An error
/// answer is reported (exit 2 for a request the user got wrong, 1 otherwise).
pub fn stream(global: &GlobalArgs, path: &str, on_line: impl FnMut(&str)) -> Result<(), ExitCode> {
    let (socket, _) = socket(global)?;
    match runtime()?.block_on(client::each_line(&socket, path, on_line)) {
        Ok(None) => Ok(()),
        Ok(Some(answer)) => {
            errln!("muster: {}", error_message(&answer));
            Err(ExitCode::from(if answer.status.is_client_error() {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            }))
        }
        Err(error) => Err(no_answer(global, &error)),
    }
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

pub fn ensure(global: &GlobalArgs, args: &EnsureArgs) -> ExitCode {
    if crate::config::values::duration(&args.timeout).is_err() {
        errln!(
            "muster: --timeout {:?} is not a duration; write it with a unit, such as \"30s\"",
            args.timeout
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let path = format!(
        "/v1/services/{}/ensure?timeout={}",
        args.name,
        encode(&args.timeout)
    );
    let answer = match call(global, Method::POST, &path) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if args.json {
        print_json(&answer);
    }
    if answer.status.is_success() {
        if !args.json {
            let body = &answer.body;
            let ports: Vec<&str> = body["ports"]
                .as_array()
                .map(|p| p.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            let mut line = format!("{} is healthy", args.name);
            if let Some(pid) = body["pid"].as_u64() {
                line.push_str(&format!(" (pid {pid})"));
            }
            if !ports.is_empty() {
                line.push_str(&format!(" on {}", ports.join(", ")));
            }
            outln!("{line}");
        }
        return ExitCode::SUCCESS;
    }
    if !args.json {
        report_failure(&answer);
    }
    code_for(&answer)
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

/// 2 for a name that does not exist (a usage error), 1 for anything else that failed.
fn code_for(answer: &Answer) -> ExitCode {
    if answer.status == hyper::StatusCode::NOT_FOUND {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::from(EXIT_FAILED)
    }
}

/// `start`, `stop` or `restart`.
pub fn command(global: &GlobalArgs, args: &NameArgs, verb: &str) -> ExitCode {
    let answer = match call(
        global,
        Method::POST,
        &format!("/v1/services/{}/{verb}", args.name),
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
        outln!("{verb}: {} (now {state})", args.name);
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
    let Ok((_, state_dir)) = socket(global) else {
        return ExitCode::from(EXIT_FAILED);
    };
    // The lock is held until the supervisor has stopped everything and exited; its own
    // shutdown-timeout bounds the wait.
    errln!("muster: stopping; waiting for the supervisor to exit");
    match crate::supervisor::lock::StateLock::wait(&state_dir) {
        Ok(_) => {
            errln!("muster: the supervisor has exited");
            ExitCode::SUCCESS
        }
        Err(error) => {
            errln!("muster: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
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
