//! docker compose files (`compose.yaml`, `docker-compose.yml`).
//!
//! A compose service runs a container image; muster runs programs on the host. What
//! carries over is the graph and the policies: `depends_on` and its conditions,
//! `healthcheck` as a readiness probe, `restart` and `deploy`'s restart policy and
//! replicas, published ports, `stop_signal` and `stop_grace_period`, `environment`,
//! `env_file`, `working_dir`. The image itself cannot: such a service gets a command
//! that says so and, in a comment, a `docker run` line to start from. Volumes,
//! networks, secrets and the like are kept as comments with the reason.

use std::time::Duration;

use serde_json::Value;

use super::model::{
    Condition, Dependency, Draft, Probe, ProbeKind, Restart, Run, Service, parse_go_duration,
};
use super::yaml::{self, shown, text};
use super::{ImportError, tool_expanded};

pub fn read(source: &str) -> Result<Draft, ImportError> {
    let root = yaml::parse(source)?;
    let Value::Object(top) = &root else {
        return Err(ImportError::Shape(
            "a compose file is a mapping with a `services` key".to_owned(),
        ));
    };
    let Some(Value::Object(services)) = top.get("services") else {
        return Err(ImportError::Shape(
            "it has no `services` mapping; is it a compose file?".to_owned(),
        ));
    };
    let mut draft = Draft {
        tool: "docker compose",
        ..Draft::default()
    };
    for (key, value) in top {
        let why = match key.as_str() {
            "services" => continue,
            "version" | "name" => continue,
            "volumes" => {
                "named volumes are docker's; a service here reads and writes the host's files in its `cwd`"
            }
            "networks" => {
                "networks are docker's; services here share the host's network (127.0.0.1)"
            }
            "secrets" | "configs" => {
                "docker mounts these into containers; give the files' paths to the programs, or use `env-file`"
            }
            "include" => {
                "import each included compose file too, and list the results in `include = [...]`"
            }
            k if k.starts_with("x-") => "an extension field: anchors are already merged where used",
            _ => "no equivalent in muster",
        };
        draft.notes.push(format!("{key}: {} — {why}", short(value)));
    }
    if source.contains(":?") || source.contains("?}") {
        draft.notes.push("required variables (`${VAR:?message}`) are imported as `${VAR:-}`, so that the file checks where they are not set; write `${VAR:?message}` again where a value must be given".to_owned());
    }
    for (name, value) in services {
        let Value::Object(spec) = value else {
            continue;
        };
        draft.services.push(service(name, spec));
    }
    yaml::in_file_order(
        &mut draft.services,
        &yaml::keys_in_order(source, "services"),
        |s| s.name.as_str(),
    );
    Ok(draft)
}

fn short(value: &Value) -> String {
    let text = shown(value);
    if text.chars().count() > 100 {
        format!("{}...", text.chars().take(97).collect::<String>())
    } else {
        text
    }
}

fn words(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::String(line) => shlex::split(line),
        Value::Array(items) => items.iter().map(text).collect(),
        _ => None,
    }
}

fn service(name: &str, spec: &serde_json::Map<String, Value>) -> Service {
    let image = spec.get("image").and_then(text);
    let command = spec.get("command").and_then(words);
    let entrypoint = spec.get("entrypoint").and_then(words);
    let build = spec.get("build");
    let context = build.and_then(|b| b.get("context").and_then(text).or_else(|| text(b)));
    // A service built from a directory here with a command of its own (Django's
    // `python manage.py runserver`, a Node `npm start`) runs that command in that
    // directory: the code is on this host; only its dependencies may not be.
    let built_here = image.is_none()
        && command.is_some()
        && context
            .as_deref()
            .is_some_and(|c| !c.contains("://") && !c.starts_with("git@"));
    let run = if built_here {
        let mut argv = entrypoint.clone().unwrap_or_default();
        argv.extend(command.clone().unwrap_or_default());
        Run::Argv(argv.iter().map(|w| tool_expanded(w, true)).collect())
    } else if image.is_none() && build.is_none() {
        match (&entrypoint, &command) {
            (Some(entry), command) => {
                let mut argv = entry.clone();
                argv.extend(command.clone().unwrap_or_default());
                Run::Argv(argv.iter().map(|w| tool_expanded(w, true)).collect())
            }
            (None, Some(command)) => {
                Run::Argv(command.iter().map(|w| tool_expanded(w, true)).collect())
            }
            (None, None) => Run::Missing {
                why: "the service names no image, build or command".to_owned(),
                instead: None,
            },
        }
    } else {
        let why = match (&image, build) {
            (Some(image), _) => format!("it ran the container image `{image}`"),
            (None, Some(build)) => format!(
                "it ran an image built from `{}` (see its Dockerfile's CMD)",
                build
                    .get("context")
                    .and_then(text)
                    .or_else(|| text(build))
                    .unwrap_or_else(|| ".".to_owned())
            ),
            (None, None) => unreachable!("one of them is set"),
        };
        Run::Missing {
            why,
            instead: Some(docker_run(name, spec, image.as_deref())),
        }
    };
    let mut service = Service::new(name, run);
    let container = image.is_some() || build.is_some();
    if built_here {
        service.cwd = context.clone();
        service.notes.push(format!(
            "it ran in an image built from `{}`; here its command runs in that directory on this host, so what the Dockerfile installs must be installed here",
            context.as_deref().unwrap_or(".")
        ));
        let docker = docker_run(name, spec, None);
        service.notes.push(format!(
            "to run the image instead, build it (docker build -t {name}-image {}) and use:\ncommand = [{}]",
            context.as_deref().unwrap_or("."),
            docker.iter().map(|w| super::render::string(w)).collect::<Vec<_>>().join(", ")
        ));
    }

    for (key, value) in spec {
        match key.as_str() {
            "image" | "command" | "entrypoint" => {
                if container && !built_here && key != "image" {
                    service.untranslated(
                        key,
                        short(value),
                        "arguments of the container, in the docker run line below",
                    );
                }
            }
            "build" => service.untranslated(key, short(value), "muster does not build images"),
            "environment" => service.env = environment(value),
            "env_file" => {
                let files: Vec<String> = match value {
                    Value::Array(items) => items
                        .iter()
                        .filter_map(|i| text(i).or_else(|| i.get("path").and_then(text)))
                        .collect(),
                    other => text(other).into_iter().collect(),
                };
                service.env_files = files;
            }
            "working_dir" => {
                if container {
                    service.untranslated(key, short(value), "a directory inside the container");
                } else {
                    service.cwd = text(value);
                }
            }
            "ports" => service.ports = ports(value, &mut service.untranslated),
            "expose" => service.untranslated(
                key,
                short(value),
                "ports open only to other containers; muster checks the ports in `ports`",
            ),
            "depends_on" => service.depends_on = depends_on(value),
            "healthcheck" => healthcheck(value, &mut service),
            "restart" => match text(value).as_deref() {
                Some("no") => service.restart = Some(Restart::Never),
                Some("always") | Some("unless-stopped") => service.restart = Some(Restart::Always),
                Some(policy) if policy.starts_with("on-failure") => {
                    service.restart = Some(Restart::OnFailure);
                    if let Some((_, count)) = policy.split_once(':') {
                        service.restart_limit = count.trim().parse().ok();
                    }
                }
                _ => service.untranslated(key, short(value), "not a restart policy muster knows"),
            },
            "deploy" => deploy(value, &mut service),
            "stop_signal" => service.stop_signal = text(value),
            "stop_grace_period" => {
                service.stop_timeout = text(value).and_then(|t| parse_go_duration(&t));
            }
            "container_name" | "hostname" => {}
            "volumes" => service.untranslated(
                key,
                short(value),
                "the service uses the host's files; set `cwd` to where they are",
            ),
            "networks" | "network_mode" | "links" | "extra_hosts" | "dns" => {
                service.untranslated(key, short(value), "services here share the host's network")
            }
            "user" => service.untranslated(
                key,
                short(value),
                "run muster as that user, or use `sudo -u` in the command",
            ),
            "profiles" => {
                // compose starts a service with profiles only when one is asked for.
                service.autostart = false;
                service.untranslated(key, short(value), "compose starts it only for these profiles: here it starts when asked (`muster start`, or `muster up NAME`)");
            }
            "scale" => replicas(value, &mut service),
            "labels" | "logging" | "secrets" | "configs" | "cap_add" | "cap_drop"
            | "privileged" | "devices" | "ulimits" | "security_opt" | "tmpfs" | "shm_size"
            | "platform" | "pull_policy" | "stdin_open" | "tty" | "init" | "ipc" | "pid"
            | "sysctls" | "runtime" | "gpus" | "mem_limit" | "cpus" | "develop" | "extends" => {
                service.untranslated(
                    key,
                    short(value),
                    "a container setting with no meaning for a host process",
                );
            }
            _ => service.untranslated(key, short(value), "no equivalent in muster"),
        }
    }
    service
}

fn environment(value: &Value) -> Vec<(String, String)> {
    let mut env = Vec::new();
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                // A key without a value passes the host's through, which a child of
                // muster inherits anyway.
                if let Some(v) = text(v) {
                    env.push((k.clone(), tool_expanded(&v, true)));
                }
            }
        }
        Value::Array(items) => {
            for item in items.iter().filter_map(text) {
                if let Some((k, v)) = item.split_once('=') {
                    env.push((k.to_owned(), tool_expanded(v, true)));
                }
            }
        }
        _ => {}
    }
    env
}

/// Host ports from `ports` (`"8000:8000"`, `"127.0.0.1:80:80/tcp"`, long form).
fn ports(value: &Value, untranslated: &mut Vec<String>) -> Vec<u16> {
    let mut found = Vec::new();
    let Value::Array(items) = value else {
        return found;
    };
    for item in items {
        let host = match item {
            Value::Object(long) => long.get("published").and_then(text),
            other => text(other).map(|spec| {
                let spec = spec.split('/').next().unwrap_or_default().to_owned();
                let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
                // "container" alone publishes a random host port: nothing to check.
                if parts.len() >= 2 {
                    parts[1].to_owned()
                } else {
                    String::new()
                }
            }),
        };
        match host.as_deref().map(str::parse::<u16>) {
            Some(Ok(port)) if port > 0 => found.push(port),
            _ => untranslated.push(format!(
                "ports: {} — not a single host port muster can check",
                shown(item)
            )),
        }
    }
    found
}

fn depends_on(value: &Value) -> Vec<Dependency> {
    match value {
        Value::Array(items) => items
            .iter()
            .filter_map(text)
            .map(|name| Dependency {
                name,
                condition: Condition::Started,
                note: None,
                restart: false,
            })
            .collect(),
        Value::Object(map) => map
            .iter()
            .map(|(name, spec)| {
                let condition = match spec.get("condition").and_then(text).as_deref() {
                    Some("service_healthy") => Condition::Healthy,
                    Some("service_completed_successfully") => Condition::Completed,
                    _ => Condition::Started,
                };
                Dependency {
                    name: name.clone(),
                    condition,
                    note: None,
                    restart: spec.get("restart").and_then(Value::as_bool) == Some(true),
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn healthcheck(value: &Value, service: &mut Service) {
    if value.get("disable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let argv = match value.get("test") {
        Some(Value::Array(items)) => {
            let items: Vec<String> = items.iter().filter_map(text).collect();
            match items.split_first() {
                Some((first, rest)) if first == "CMD" => rest.to_vec(),
                Some((first, rest)) if first == "CMD-SHELL" => {
                    vec!["sh".to_owned(), "-c".to_owned(), rest.join(" ")]
                }
                Some((first, _)) if first == "NONE" => return,
                _ => items,
            }
        }
        Some(Value::String(line)) => vec!["sh".to_owned(), "-c".to_owned(), line.clone()],
        _ => return,
    };
    if argv.is_empty() {
        return;
    }
    let argv = argv.iter().map(|w| tool_expanded(w, true)).collect();
    let duration = |key: &str| {
        value
            .get(key)
            .and_then(text)
            .and_then(|t| parse_go_duration(&t))
    };
    let interval = duration("interval");
    let retries = value.get("retries").and_then(Value::as_u64).unwrap_or(3) as u32;
    let start = duration("start_period").unwrap_or_default();
    let mut probe = Probe::new(ProbeKind::Exec(argv));
    probe.interval = interval;
    // Compose marks a container unhealthy after start_period and `retries` failed
    // checks; as a start deadline that is at least a minute, muster's default.
    let deadline = start + interval.unwrap_or(Duration::from_secs(30)) * retries;
    probe.timeout = Some(deadline.max(Duration::from_secs(60)));
    service.ready = Some(probe);
}

fn deploy(value: &Value, service: &mut Service) {
    let Value::Object(deploy) = value else { return };
    for (key, value) in deploy {
        match key.as_str() {
            "replicas" => replicas(value, service),
            "restart_policy" => {
                match value.get("condition").and_then(text).as_deref() {
                    Some("none") => service.restart = Some(Restart::Never),
                    Some("on-failure") => service.restart = Some(Restart::OnFailure),
                    Some("any") => service.restart = Some(Restart::Always),
                    _ => {}
                }
                if let Some(attempts) = value.get("max_attempts").and_then(Value::as_u64) {
                    service.restart_limit = Some(attempts.min(1000) as u32);
                }
                if let Some(delay) = value
                    .get("delay")
                    .and_then(text)
                    .and_then(|t| parse_go_duration(&t))
                {
                    service.backoff_initial = Some(delay);
                }
            }
            _ => service.untranslated(
                &format!("deploy.{key}"),
                shown(value),
                "a swarm or resource setting with no meaning here",
            ),
        }
    }
}

/// `scale` or `deploy.replicas`: copies, or none (the service is not started).
fn replicas(value: &Value, service: &mut Service) {
    match value.as_u64() {
        Some(0) => {
            service.autostart = false;
            service
                .notes
                .push("0 replicas in the source: it starts only when asked".to_owned());
        }
        Some(n) => service.replicas = n.min(64) as u32,
        None => {}
    }
}

/// A `docker run` line for a service, to start from.
fn docker_run(
    name: &str,
    spec: &serde_json::Map<String, Value>,
    image: Option<&str>,
) -> Vec<String> {
    let mut argv: Vec<String> = ["docker", "run", "--rm", "--name", name]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    if let Some(Value::Array(ports)) = spec.get("ports") {
        for port in ports.iter().filter_map(text) {
            argv.push("-p".to_owned());
            argv.push(port);
        }
    }
    if let Some(env) = spec.get("environment") {
        for (k, v) in environment(env) {
            argv.push("-e".to_owned());
            argv.push(format!("{k}={v}"));
        }
    }
    if let Some(Value::Array(volumes)) = spec.get("volumes") {
        for volume in volumes.iter().filter_map(text) {
            argv.push("-v".to_owned());
            argv.push(tool_expanded(&volume, true));
        }
    }
    if let Some(entry) = spec
        .get("entrypoint")
        .and_then(words)
        .and_then(|w| w.first().cloned())
    {
        argv.push("--entrypoint".to_owned());
        argv.push(entry);
    }
    argv.push(image.map_or_else(|| format!("{name}-image"), str::to_owned));
    if let Some(command) = spec.get("command").and_then(words) {
        argv.extend(command.iter().map(|w| tool_expanded(w, true)));
    }
    argv
}
