//! `muster status [NAME] [--json]`: every service (or one) of the running supervisor: a
//! summary line (where the supervisor is in its life, and the services' states), then a
//! table of state, pid, uptime, restarts, CPU and memory use, and reason.

use std::process::ExitCode;

use clap::Args;
use console::style;
use hyper::Method;

use super::control::{call, exit_for, fetch, report_unreadable, typed};
use super::out::{errln, out, outln, stdout_bytes};
use super::printable::printable;
use super::{EXIT_FAILED, GlobalArgs, print_json};
use crate::api::model::{ServiceList, ServiceView};
use crate::supervisor::Phase;

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
    /// Read every running service's CPU and memory use, however many run (by default
    /// the list reads them when at most 500 run; `status NAME` always does)
    #[arg(long)]
    pub resources: bool,
    /// With [cluster]: every host's services, as each host published them
    #[arg(long, conflicts_with = "name")]
    pub cluster: bool,
}

pub fn run(global: &GlobalArgs, args: &StatusArgs) -> ExitCode {
    let colour = global.colour_on(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    console::set_colors_enabled(colour);
    if args.cluster {
        return super::cluster::services(global, args.json);
    }
    let Some(name) = &args.name else {
        let path = if args.resources {
            "/v1/services?resources=true"
        } else {
            "/v1/services"
        };
        return list(global, path, args.json);
    };
    let path = format!("/v1/services/{}", super::control::encode(name));
    let answer = match call(global, Method::GET, &path) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    match typed::<ServiceView>(&answer) {
        Ok(Ok(view)) => {
            if args.json {
                print_json(&answer.body);
            } else {
                out!("{}", table(std::slice::from_ref(&view)));
                out!("{}", detail(&view));
            }
            // Scripts ask `muster status db` whether db is up: the exit status says.
            state_code(view.state)
        }
        Ok(Err(error)) => match &error.error.instances {
            Some(instances) => set_status(global, instances, args.json),
            None => {
                errln!("muster: {}", error.error.message);
                exit_for(&error)
            }
        },
        Err(code) => code,
    }
}

/// `status` without a name: the list. Its answer runs to megabytes with ten thousand
/// services, so it is read from the bytes that came; with `--json` a success is
/// printed from them without being decoded (laid out as a decoded document would
/// print; see [`super::pretty`]): the API's document is what was asked for.
fn list(global: &GlobalArgs, path: &str, json: bool) -> ExitCode {
    let answer = match fetch(global, path) {
        Ok(answer) => answer,
        Err(code) => return code,
    };
    // A body that is not JSON is said below, as for any answer that cannot be read.
    if json
        && answer.status.is_success()
        && let Some(mut text) = super::pretty::pretty(&answer.bytes)
    {
        text.push(b'\n');
        stdout_bytes(&text);
        return ExitCode::SUCCESS;
    }
    match answer.outcome::<ServiceList>() {
        Ok(Ok(list)) => {
            if json {
                print_json(&answer.into_answer().body);
                return ExitCode::SUCCESS;
            }
            outln!("{}", summary(&list));
            if let Some(problem) = &list.history_problem {
                outln!("history: {problem}");
            }
            out!("{}", table(&list.services));
            if !list.resources_read {
                outln!(
                    "CPU and memory are not read for {} services at once: `muster status \
                     --resources` reads them all, `muster status NAME` one",
                    list.services.len()
                );
            }
            ExitCode::SUCCESS
        }
        Ok(Err(error)) => {
            errln!("muster: {}", error.error.message);
            exit_for(&error)
        }
        Err(unreadable) => report_unreadable(&unreadable),
    }
}

/// `status NAME` for a service with `replicas`: a table of its instances (with
/// `--json`, an array of their views). The exit status is the first instance's that is
/// not healthy, as for one service.
fn set_status(global: &GlobalArgs, instances: &[String], json: bool) -> ExitCode {
    let mut views = Vec::new();
    let mut bodies = Vec::new();
    for instance in instances {
        let path = format!("/v1/services/{}", super::control::encode(instance));
        let answer = match call(global, Method::GET, &path) {
            Ok(answer) => answer,
            Err(code) => return code,
        };
        match typed::<ServiceView>(&answer) {
            Ok(Ok(view)) => views.push(view),
            // Scaled down since: no longer an instance.
            Ok(Err(_)) => continue,
            Err(code) => return code,
        }
        bodies.push(answer.body);
    }
    if json {
        print_json(&serde_json::Value::Array(bodies));
    } else {
        out!("{}", table(&views));
    }
    views
        .iter()
        .map(|view| state_code(view.state))
        .find(|code| *code != ExitCode::SUCCESS)
        .unwrap_or(ExitCode::SUCCESS)
}

/// Exit status 3 for a service that is not running, as LSB init scripts' `status`.
const EXIT_STOPPED: u8 = 3;

/// What `status NAME` exits with, by the service's state (see the command's help).
fn state_code(state: Phase) -> ExitCode {
    match state {
        Phase::Healthy | Phase::Completed => ExitCode::SUCCESS,
        Phase::Stopped => ExitCode::from(EXIT_STOPPED),
        _ => ExitCode::from(EXIT_FAILED),
    }
}

/// "running: 4/5 healthy, 1 restarting": "bootstrapping" until the bootstrap has
/// settled, "running" from then on (a service that restarts later does not make it a
/// bootstrap again), "shutting down" once the shutdown has begun.
pub(super) fn summary(list: &ServiceList) -> String {
    crate::supervisor::summary::line(
        list.lifecycle,
        list.booted,
        list.services.iter().map(|s| (s.name.as_str(), s.state)),
        false,
    )
}

/// "12.5 KiB".
fn bytes(count: u64) -> String {
    match count {
        0..1024 => format!("{count} B"),
        1024..1_048_576 => format!("{:.1} KiB", count as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", count as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", count as f64 / 1_073_741_824.0),
    }
}

/// The lines `status NAME` adds under the table: what the list leaves out.
fn detail(service: &ServiceView) -> String {
    let mut out = String::new();
    let mut field = |label: &str, value: String| out.push_str(&format!("  {label:<12} {value}\n"));
    if let Some(text) = &service.description {
        field("description", text.clone());
    }
    if !service.ports.is_empty() {
        field("ports", service.ports.join(", "));
    }
    if let Some(probe) = &service.last_probe {
        let verdict = if probe.ok { "passed" } else { "failed" };
        let kind = if probe.kind == "ready" {
            "readiness"
        } else {
            "liveness"
        };
        field(
            "last probe",
            format!("{kind} {verdict}: {}", printable(&probe.message)),
        );
    }
    // The count is of every failed attempt, readiness ones included: a service that
    // takes a while to listen fails many before it is ready, which is no fault. Said
    // so, rather than shown as a bare number that reads like trouble.
    let failures = service.probe_failures;
    if failures > 0 {
        field(
            "probes",
            format!(
                "{failures} failed since the supervisor started (readiness attempts while \
                 starting included)"
            ),
        );
    }
    if let Some(used) = &service.resources {
        let pss = used
            .memory_pss_bytes
            .map_or(String::new(), |pss| format!("{} PSS, ", bytes(pss)));
        let processes = match used.processes {
            1 => "1 process".to_owned(),
            n => format!("{n} processes"),
        };
        field(
            "resources",
            format!(
                "CPU {:.1}% over the last {:.1}s; memory {pss}{} RSS; {processes}",
                used.cpu_percent,
                used.cpu_interval_seconds,
                bytes(used.memory_rss_bytes),
            ),
        );
    }
    if let Some(signal) = &service.reload_signal {
        field(
            "reload",
            format!("`muster reload {}` sends {signal}", service.name),
        );
    }
    if let Some(exit) = &service.last_exit {
        field("last exit", exit.clone());
    }
    if let Some(main) = service.main_pid {
        field("main pid", main.to_string());
    }
    if let Some(proxy) = &service.proxy {
        field("proxy", format!("{} -> {}", proxy.listen, proxy.upstream));
        field(
            "connections",
            format!(
                "{} open ({} waiting), {} served, {} refused; {} in, {} out",
                proxy.open_connections,
                proxy.waiting,
                proxy.served,
                proxy.refused,
                bytes(proxy.bytes_in),
                bytes(proxy.bytes_out),
            ),
        );
    }
    if let Some(port) = service.port {
        field("port", port.to_string());
    }
    if let Some(models) = &service.models {
        let pool = match (&models.pool, models.memory) {
            (Some(pool), Some(memory)) => format!(
                " (pool {pool}, {})",
                crate::config::values::human_size(memory)
            ),
            (Some(pool), None) => format!(" (pool {pool})"),
            _ => String::new(),
        };
        field(
            "models",
            format!("{} -> {}{pool}", models.names.join(", "), models.upstream),
        );
        let last_used = models
            .last_used
            .as_deref()
            .map_or("never used".to_owned(), |t| format!("last used {t}"));
        let load = models
            .last_load_seconds
            .map_or(String::new(), |s| format!(", last load {s:.1}s"));
        field(
            "requests",
            format!(
                "{} in flight, {} queued; {} routed, {} failed; {} loads{load}, {} evictions; {last_used}",
                models.in_flight,
                models.queued,
                models.requests,
                models.failed,
                models.loads,
                models.evictions,
            ),
        );
    }
    if let Some(idle) = service.idle_stop_seconds {
        field(
            "idle stop",
            format!(
                "after {} without use",
                crate::supervisor::machine::human(std::time::Duration::from_secs_f64(idle))
            ),
        );
    }
    if !service.autostart {
        field(
            "on demand",
            "started by `muster ensure` or the API".to_owned(),
        );
    }
    out
}

pub(super) fn table(services: &[ServiceView]) -> String {
    let width = services
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut out = format!(
        "{:<width$}  {:<9}  {:>7}  {:>8}  {:>8}  {:>6}  {:>10}  REASON\n",
        "NAME", "STATE", "PID", "UPTIME", "RESTARTS", "CPU", "MEMORY"
    );
    for service in services {
        let state = service.state.as_str();
        let painted = match service.state {
            Phase::Healthy | Phase::Completed => style(format!("{state:<9}")).green(),
            Phase::Failed => style(format!("{state:<9}")).red().bold(),
            Phase::Unhealthy | Phase::Exited => style(format!("{state:<9}")).yellow(),
            _ => style(format!("{state:<9}")).cyan(),
        };
        let pid = service.pid.map_or("-".to_owned(), |p| p.to_string());
        let uptime = service.uptime_seconds.map_or("-".to_owned(), |secs| {
            crate::supervisor::machine::human(std::time::Duration::from_secs(secs as u64))
        });
        let mut reason = printable(&service.reason).into_owned();
        if let Some(text) = &service.notify_status {
            reason.push_str(&format!(" [STATUS={}]", printable(text)));
        }
        let (cpu, memory) = match &service.resources {
            Some(used) => (
                format!("{:.1}%", used.cpu_percent),
                bytes(used.memory_pss_bytes.unwrap_or(used.memory_rss_bytes)),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        out.push_str(&format!(
            "{:<width$}  {painted}  {pid:>7}  {uptime:>8}  {:>8}  {cpu:>6}  {memory:>10}  {reason}\n",
            service.name, service.restarts,
        ));
    }
    out
}
