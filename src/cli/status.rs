//! `muster status [NAME] [--json]`: every service (or one) of the running supervisor: a
//! summary line, then a table of state, pid, uptime, restarts and reason.

use std::process::ExitCode;

use clap::Args;
use console::style;
use hyper::Method;

use super::control::{call, error_message};
use super::out::{errln, out, outln};
use super::printable::printable;
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs, print_json};

#[derive(Debug, Args)]
#[command(
    after_help = "Exit status with NAME: 0 healthy, or a one-shot that completed; \
    1 not healthy (pending, starting, unhealthy, exited and due to restart, stopping, \
    failed), or no supervisor answered; 2 no such service; 3 stopped. Without NAME: 0 \
    once the supervisor has answered."
)]
pub struct StatusArgs {
    /// Only this service
    pub name: Option<String>,
    /// Print the API's JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, args: &StatusArgs) -> ExitCode {
    let colour = global.colour_on(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    console::set_colors_enabled(colour);
    let path = match &args.name {
        Some(name) => format!("/v1/services/{}", super::control::encode(name)),
        None => "/v1/services".to_owned(),
    };
    let answer = match call(global, Method::GET, &path) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if !answer.status.is_success() {
        errln!("muster: {}", error_message(&answer));
        return ExitCode::from(if answer.status == hyper::StatusCode::NOT_FOUND {
            EXIT_USAGE
        } else {
            EXIT_FAILED
        });
    }
    // Scripts ask `muster status db` whether db is up: the exit status says.
    let code = match &args.name {
        Some(_) => state_code(answer.body["state"].as_str().unwrap_or("")),
        None => ExitCode::SUCCESS,
    };
    if args.json {
        print_json(&answer.body);
        return code;
    }
    let services: Vec<serde_json::Value> = match &args.name {
        Some(_) => vec![answer.body.clone()],
        None => answer.body["services"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    };
    if args.name.is_none() {
        outln!("{}", summary(answer.body["booted"] == true, &services));
        if let Some(problem) = answer.body["history_problem"].as_str() {
            outln!("history: {problem}");
        }
    }
    out!("{}", table(&services));
    if let Some(service) = services.first().filter(|_| args.name.is_some()) {
        out!("{}", detail(service));
    }
    code
}

/// Exit status 3 for a service that is not running, as LSB init scripts' `status`.
const EXIT_STOPPED: u8 = 3;

/// What `status NAME` exits with, by the service's state (see the command's help).
fn state_code(state: &str) -> ExitCode {
    match state {
        "healthy" | "completed" => ExitCode::SUCCESS,
        "stopped" => ExitCode::from(EXIT_STOPPED),
        _ => ExitCode::from(EXIT_FAILED),
    }
}

/// "bootstrap complete: 4/5 healthy, 1 failed" (or "bootstrapping: ..." before the
/// bootstrap has settled).
pub(super) fn summary(booted: bool, services: &[serde_json::Value]) -> String {
    let mut others: Vec<(String, usize)> = Vec::new();
    let mut healthy = 0;
    for service in services {
        let state = service["state"].as_str().unwrap_or("?");
        if state == "healthy" {
            healthy += 1;
            continue;
        }
        match others.iter_mut().find(|(s, _)| s == state) {
            Some((_, n)) => *n += 1,
            None => others.push((state.to_owned(), 1)),
        }
    }
    let mut line = format!(
        "{}: {healthy}/{} healthy",
        if booted {
            "bootstrap complete"
        } else {
            "bootstrapping"
        },
        services.len()
    );
    for (state, n) in others {
        line.push_str(&format!(", {n} {state}"));
    }
    line
}

/// "12.5 KiB".
fn bytes(count: u64) -> String {
    match count {
        0..1024 => format!("{count} B"),
        1024..1_048_576 => format!("{:.1} KiB", count as f64 / 1024.0),
        _ => format!("{:.1} MiB", count as f64 / 1_048_576.0),
    }
}

/// The lines `status NAME` adds under the table: what the list leaves out.
fn detail(service: &serde_json::Value) -> String {
    let mut out = String::new();
    let mut field = |label: &str, value: String| out.push_str(&format!("  {label:<12} {value}\n"));
    if let Some(text) = service["description"].as_str() {
        field("description", text.to_owned());
    }
    if let Some(ports) = service["ports"].as_array().filter(|p| !p.is_empty()) {
        let ports: Vec<&str> = ports.iter().filter_map(|p| p.as_str()).collect();
        field("ports", ports.join(", "));
    }
    let probe = &service["last_probe"];
    if let (Some(kind), Some(message)) = (probe["kind"].as_str(), probe["message"].as_str()) {
        let verdict = if probe["ok"] == true {
            "passed"
        } else {
            "failed"
        };
        let kind = if kind == "ready" {
            "readiness"
        } else {
            "liveness"
        };
        field(
            "last probe",
            format!("{kind} {verdict}: {}", printable(message)),
        );
    }
    // The count is of every failed attempt, readiness ones included: a service that
    // takes a while to listen fails many before it is ready, which is no fault. Said
    // so, rather than shown as a bare number that reads like trouble.
    let failures = service["probe_failures"].as_u64().unwrap_or(0);
    if failures > 0 {
        field(
            "probes",
            format!(
                "{failures} failed since the supervisor started (readiness attempts while \
                 starting included)"
            ),
        );
    }
    if let Some(exit) = service["last_exit"].as_str() {
        field("last exit", exit.to_owned());
    }
    if let Some(main) = service["main_pid"].as_u64() {
        field("main pid", main.to_string());
    }
    let proxy = &service["proxy"];
    if let (Some(listen), Some(upstream)) = (proxy["listen"].as_str(), proxy["upstream"].as_str()) {
        field("proxy", format!("{listen} -> {upstream}"));
        let number = |key: &str| proxy[key].as_u64().unwrap_or(0);
        field(
            "connections",
            format!(
                "{} open ({} waiting), {} served, {} refused; {} in, {} out",
                number("open_connections"),
                number("waiting"),
                number("served"),
                number("refused"),
                bytes(number("bytes_in")),
                bytes(number("bytes_out")),
            ),
        );
    }
    if let Some(idle) = service["idle_stop_seconds"].as_f64() {
        field(
            "idle stop",
            format!(
                "after {} without use",
                crate::supervisor::machine::human(std::time::Duration::from_secs_f64(idle))
            ),
        );
    }
    if service["autostart"] == false {
        field(
            "on demand",
            "started by `muster ensure` or the API".to_owned(),
        );
    }
    out
}

pub(super) fn table(services: &[serde_json::Value]) -> String {
    let width = services
        .iter()
        .filter_map(|s| s["name"].as_str())
        .map(str::len)
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<9}  {:>7}  {:>8}  {:>8}  REASON\n",
        "NAME", "STATE", "PID", "UPTIME", "RESTARTS"
    );
    for service in services {
        let state = service["state"].as_str().unwrap_or("?");
        let painted = match state {
            "healthy" | "completed" => style(format!("{state:<9}")).green(),
            "failed" => style(format!("{state:<9}")).red().bold(),
            "unhealthy" | "exited" => style(format!("{state:<9}")).yellow(),
            _ => style(format!("{state:<9}")).cyan(),
        };
        let pid = service["pid"]
            .as_u64()
            .map_or("-".to_owned(), |p| p.to_string());
        let uptime = service["uptime_seconds"]
            .as_f64()
            .map_or("-".to_owned(), |secs| {
                crate::supervisor::machine::human(std::time::Duration::from_secs(secs as u64))
            });
        let mut reason = printable(service["reason"].as_str().unwrap_or("")).into_owned();
        if let Some(text) = service["notify_status"].as_str() {
            reason.push_str(&format!(" [STATUS={}]", printable(text)));
        }
        out.push_str(&format!(
            "{:<width$}  {painted}  {pid:>7}  {uptime:>8}  {:>8}  {reason}\n",
            service["name"].as_str().unwrap_or("?"),
            service["restarts"].as_u64().unwrap_or(0),
        ));
    }
    out
}
