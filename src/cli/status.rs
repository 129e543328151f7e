//! `muster status [NAME] [--json]`: every service (or one) of the running supervisor: a
//! summary line, then a table of state, pid, uptime, restarts and reason.

use std::process::ExitCode;

use clap::Args;
use console::style;
use hyper::Method;

use super::control::{call, error_message};
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs, print_json};

#[derive(Debug, Args)]
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
        Some(name) => format!("/v1/services/{name}"),
        None => "/v1/services".to_owned(),
    };
    let answer = match call(global, Method::GET, &path) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    if !answer.status.is_success() {
        eprintln!("muster: {}", error_message(&answer));
        return ExitCode::from(if answer.status == hyper::StatusCode::NOT_FOUND {
            EXIT_USAGE
        } else {
            EXIT_FAILED
        });
    }
    if args.json {
        print_json(&answer.body);
        return ExitCode::SUCCESS;
    }
    let services: Vec<serde_json::Value> = match &args.name {
        Some(_) => vec![answer.body.clone()],
        None => answer.body["services"]
            .as_array()
            .cloned()
            .unwrap_or_default(),
    };
    if args.name.is_none() {
        println!("{}", summary(&services));
    }
    print!("{}", table(&services));
    ExitCode::SUCCESS
}

/// "5 services: 4 healthy, 1 failed".
pub(super) fn summary(services: &[serde_json::Value]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for service in services {
        let state = service["state"].as_str().unwrap_or("?").to_owned();
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    let parts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!(
        "{}: {}",
        super::plural(services.len(), "service"),
        parts.join(", ")
    )
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
        let mut reason = service["reason"].as_str().unwrap_or("").to_owned();
        if let Some(text) = service["notify_status"].as_str() {
            reason.push_str(&format!(" [STATUS={text}]"));
        }
        out.push_str(&format!(
            "{:<width$}  {painted}  {pid:>7}  {uptime:>8}  {:>8}  {reason}\n",
            service["name"].as_str().unwrap_or("?"),
            service["restarts"].as_u64().unwrap_or(0),
        ));
    }
    out
}
