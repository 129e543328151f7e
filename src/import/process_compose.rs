//! process-compose files (`process-compose.yaml`).
//!
//! process-compose is the closest to muster: processes on the host, `depends_on` with
//! conditions, readiness and liveness probes, restart policies with backoff, shutdown
//! signals and timeouts, replicas. Its commands run through a shell; one with no shell
//! syntax becomes an argv `command`, any other a `shell` line.

use std::time::Duration;

use serde_json::Value;

use super::model::{
    Condition, Dependency, Draft, Probe, ProbeKind, Restart, Run, Service, needs_shell, signal_name,
};
use super::yaml::{self, shown, text};
use super::{ImportError, tool_expanded};

/// How process-compose writes a replica's number in a command.
const REPLICA_MARKERS: &[&str] = &["{{.PC_REPLICA_NUM}}", "{{ .PC_REPLICA_NUM }}"];

pub fn read(source: &str) -> Result<Draft, ImportError> {
    let root = yaml::parse(source)?;
    let Value::Object(top) = &root else {
        return Err(ImportError::Shape(
            "a process-compose file is a mapping with a `processes` key".to_owned(),
        ));
    };
    let Some(Value::Object(processes)) = top.get("processes") else {
        return Err(ImportError::Shape(
            "it has no `processes` mapping; is it a process-compose file?".to_owned(),
        ));
    };
    let mut draft = Draft {
        tool: "process-compose",
        ..Draft::default()
    };
    let mut global_env = Vec::new();
    let global_vars = vars(top.get("vars"));
    let shell = shell_of(top.get("shell"));
    for (key, value) in top {
        match key.as_str() {
            "processes" | "version" | "vars" => {}
            "environment" => global_env = environment(value),
            "env_cmds" => draft.notes.push(format!(
                "env_cmds: {} — run these yourself and put the values in `.env` beside muster.toml",
                shown(value)
            )),
            "log_location" | "log_level" | "log_length" | "log_configuration" => draft.notes.push(format!(
                "{key}: {} — muster writes each service's output to state-dir/logs/NAME.log (see [settings.logs])",
                shown(value)
            )),
            "shell" => {}
            _ => draft.notes.push(format!("{key}: {} — no equivalent in muster", shown(value))),
        }
    }
    for (name, value) in processes {
        let Value::Object(spec) = value else { continue };
        let mut own_vars = global_vars.clone();
        own_vars.extend(vars(spec.get("vars")));
        let mut service = process(name, spec, &own_vars, &shell);
        // The global environment first: a process's own wins.
        let mut env = global_env.clone();
        env.retain(|(k, _)| !service.env.iter().any(|(own, _)| own == k));
        env.append(&mut service.env);
        service.env = env;
        draft.services.push(service);
    }
    yaml::in_file_order(
        &mut draft.services,
        &yaml::keys_in_order(source, "processes"),
        |s| s.name.as_str(),
    );
    Ok(draft)
}

fn environment(value: &Value) -> Vec<(String, String)> {
    let mut env = Vec::new();
    match value {
        Value::Array(items) => {
            for item in items.iter().filter_map(text) {
                if let Some((k, v)) = item.split_once('=') {
                    env.push((k.to_owned(), tool_expanded(v, false)));
                }
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                if let Some(v) = text(v) {
                    env.push((k.clone(), tool_expanded(&v, false)));
                }
            }
        }
        _ => {}
    }
    env
}

/// `vars:`, for Go-template substitution (`{{.NAME}}`) in commands.
fn vars(value: Option<&Value>) -> Vec<(String, String)> {
    match value {
        Some(Value::Object(map)) => map
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), text(v)?)))
            .collect(),
        _ => Vec::new(),
    }
}

fn substitute_vars(text: &str, vars: &[(String, String)]) -> String {
    let mut out = text.to_owned();
    for (name, value) in vars {
        for form in [format!("{{{{.{name}}}}}"), format!("{{{{ .{name} }}}}")] {
            out = out.replace(&form, value);
        }
    }
    out
}

/// The shell process-compose runs commands with: bash -c unless the file says.
fn shell_of(value: Option<&Value>) -> Vec<String> {
    let command = value
        .and_then(|v| v.get("shell_command"))
        .and_then(text)
        .unwrap_or_else(|| "bash".to_owned());
    let argument = value
        .and_then(|v| v.get("shell_argument"))
        .and_then(text)
        .unwrap_or_else(|| "-c".to_owned());
    vec![command, argument]
}

fn command(line: &str, vars: &[(String, String)], shell: &[String]) -> Run {
    let line = tool_expanded(substitute_vars(line.trim(), vars).as_str(), false);
    if !needs_shell(&line)
        && let Some(words) = shlex::split(&line)
        && !words.is_empty()
    {
        return Run::Argv(words);
    }
    // process-compose runs its commands with bash (or the file's `shell`), whose
    // syntax is not /bin/sh's: the same shell here.
    let mut argv = shell.to_vec();
    argv.push(line);
    Run::Argv(argv)
}

fn seconds(value: Option<&Value>) -> Option<Duration> {
    let value = value?;
    let number = value.as_f64().or_else(|| text(value)?.parse().ok())?;
    Duration::try_from_secs_f64(number.max(0.0)).ok()
}

fn process(
    name: &str,
    spec: &serde_json::Map<String, Value>,
    vars: &[(String, String)],
    shell: &[String],
) -> Service {
    // `{{.NAME}}` stands anywhere (probes' ports and paths too): substituted once, in
    // every string of the process.
    let substituted = if vars.is_empty() {
        None
    } else {
        serde_json::to_string(spec)
            .ok()
            .map(|json| substitute_vars(&json, vars))
            .and_then(|json| serde_json::from_str::<serde_json::Map<String, Value>>(&json).ok())
    };
    let spec = substituted.as_ref().unwrap_or(spec);
    let run = match spec.get("command").and_then(text) {
        Some(line) if !line.trim().is_empty() => command(&line, vars, shell),
        _ => match spec.get("entrypoint") {
            Some(Value::Array(items)) => Run::Argv(
                items
                    .iter()
                    .filter_map(text)
                    .map(|w| tool_expanded(&w, false))
                    .collect(),
            ),
            _ => Run::Missing {
                why: "the process has no `command`".to_owned(),
                instead: None,
            },
        },
    };
    let mut service = Service::new(name, run);
    if let Some(marker) = REPLICA_MARKERS.iter().find(|m| spec_mentions(spec, m)) {
        service.replica_marker = Some(((*marker).to_owned(), 0));
    }
    for (key, value) in spec {
        match key.as_str() {
            "command" | "entrypoint" | "vars" => {}
            "description" => service.description = text(value),
            "working_dir" => service.cwd = text(value),
            "environment" => service.env = environment(value),
            "env_file" => service.env_files = text(value).into_iter().collect(),
            "depends_on" => {
                if let Value::Object(deps) = value {
                    for (dep, how) in deps {
                        let said = how.get("condition").and_then(text);
                        let (condition, note) = match said.as_deref() {
                            Some("process_healthy") | Some("process_log_ready") => (Condition::Healthy, None),
                            Some("process_completed_successfully") => (Condition::Completed, None),
                            Some("process_completed") => (
                                Condition::Completed,
                                Some("was `process_completed` (any exit status); muster waits for a clean exit".to_owned()),
                            ),
                            _ => (Condition::Started, None),
                        };
                        service.depends_on.push(Dependency {
                            name: dep.clone(),
                            condition,
                            note,
                            restart: false,
                        });
                    }
                }
            }
            "availability" => availability(value, &mut service),
            "readiness_probe" => service.ready = probe(value, false),
            "liveness_probe" => service.alive = probe(value, true),
            "ready_log_line" => {
                if let Some(line) = text(value) {
                    service.ready = Some(Probe::new(ProbeKind::Log(regex_escape(&line))));
                }
            }
            "shutdown" => {
                if let Value::Object(shutdown) = value {
                    for (k, v) in shutdown {
                        match k.as_str() {
                            "signal" => {
                                service.stop_signal = v
                                    .as_i64()
                                    .and_then(signal_name)
                                    .map(str::to_owned)
                                    .or_else(|| text(v));
                            }
                            "timeout_seconds" => service.stop_timeout = seconds(Some(v)),
                            "command" => service.untranslated("shutdown.command", shown(v), "muster stops a service with `stop-signal`, then SIGKILL after `stop-timeout`; run this from a [[hooks]] entry on \"stopping\" if it matters"),
                            _ => service.untranslated(&format!("shutdown.{k}"), shown(v), "no equivalent in muster"),
                        }
                    }
                }
            }
            "disabled" => {
                if value.as_bool() == Some(true) {
                    service.autostart = false;
                    service.notes.push(
                        "disabled in the source: starts only when asked (`muster start`)"
                            .to_owned(),
                    );
                }
            }
            "replicas" => service.replicas = value.as_u64().map_or(1, |n| n.clamp(1, 64) as u32),
            "is_daemon" => {
                if value.as_bool() == Some(true) {
                    service.untranslated(key, shown(value), "muster supervises programs that stay in the foreground; run it without daemonizing, or set `pidfile`");
                }
            }
            "namespace" => {
                service.untranslated(key, shown(value), "muster has one namespace per file")
            }
            "log_location" | "log_configuration" | "disable_ansi_colors" => service.untranslated(
                key,
                shown(value),
                "muster writes output to state-dir/logs/NAME.log",
            ),
            "is_tty" | "is_interactive" => {
                service.untranslated(key, shown(value), "services here run without a terminal")
            }
            _ => service.untranslated(key, shown(value), "no equivalent in muster"),
        }
    }
    service
}

fn spec_mentions(spec: &serde_json::Map<String, Value>, marker: &str) -> bool {
    serde_json::to_string(spec).is_ok_and(|s| s.contains(marker))
}

fn availability(value: &Value, service: &mut Service) {
    let Value::Object(map) = value else { return };
    for (key, value) in map {
        match key.as_str() {
            "restart" => match text(value).as_deref() {
                Some("always") => service.restart = Some(Restart::Always),
                Some("on_failure") => service.restart = Some(Restart::OnFailure),
                Some("exit_on_failure") => {
                    service.restart = Some(Restart::Never);
                    service.untranslated("availability.restart", "exit_on_failure", "muster does not stop every service when one fails; it is left failed and said so");
                }
                Some("no") => service.restart = Some(Restart::Never),
                _ => service.untranslated(
                    "availability.restart",
                    shown(value),
                    "not a restart policy muster knows",
                ),
            },
            "backoff_seconds" => service.backoff_initial = seconds(Some(value)),
            "max_restarts" => {
                service.restart_limit = value
                    .as_u64()
                    .map(|n| n.min(1000) as u32)
                    .filter(|n| *n > 0)
            }
            _ => service.untranslated(
                &format!("availability.{key}"),
                shown(value),
                "no equivalent in muster",
            ),
        }
    }
}

fn probe(value: &Value, alive: bool) -> Option<Probe> {
    let Value::Object(map) = value else {
        return None;
    };
    let kind = if let Some(exec) = map.get("exec") {
        let line = exec.get("command").and_then(text)?;
        ProbeKind::Exec(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            tool_expanded(&line, false),
        ])
    } else if let Some(get) = map.get("http_get") {
        let host = get
            .get("host")
            .and_then(text)
            .unwrap_or_else(|| "127.0.0.1".to_owned());
        let scheme = get
            .get("scheme")
            .and_then(text)
            .unwrap_or_else(|| "http".to_owned());
        let port = get.get("port").and_then(text);
        let path = get
            .get("path")
            .and_then(text)
            .unwrap_or_else(|| "/".to_owned());
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let authority = match port {
            Some(port) => format!("{host}:{port}"),
            None => host,
        };
        let url = format!("{scheme}://{authority}{path}");
        if scheme != "http" {
            let mut probe = Probe::new(ProbeKind::Exec(vec![
                "curl".to_owned(),
                "-fsS".to_owned(),
                "-o".to_owned(),
                "/dev/null".to_owned(),
                url.clone(),
            ]));
            probe.notes.push(format!(
                "was an {scheme} check of {url}; muster probes plain http, so curl asks"
            ));
            return Some(tuned(probe, map, alive));
        }
        ProbeKind::Http(url)
    } else {
        return None;
    };
    Some(tuned(Probe::new(kind), map, alive))
}

fn tuned(mut probe: Probe, map: &serde_json::Map<String, Value>, alive: bool) -> Probe {
    let period = seconds(map.get("period_seconds"));
    let attempt = seconds(map.get("timeout_seconds"));
    let delay = seconds(map.get("initial_delay_seconds")).unwrap_or_default();
    let failures = map
        .get("failure_threshold")
        .and_then(Value::as_u64)
        .map(|n| n.clamp(1, 100) as u32);
    probe.interval = period;
    if alive {
        probe.timeout = attempt;
        probe.failures = failures;
    } else {
        // process-compose gives up after `failure_threshold` failed checks past the
        // initial delay; as a start deadline, no less than muster's minute.
        let deadline = delay + period.unwrap_or(Duration::from_secs(10)) * failures.unwrap_or(3);
        probe.timeout = Some(deadline.max(Duration::from_secs(60)));
    }
    probe
}

fn regex_escape(text: &str) -> String {
    super::literal(&regex::escape(text))
}
