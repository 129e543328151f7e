//! One `[services.NAME]` table on its own: what it runs, where, with which files,
//! ports, restart policy, dependencies (as written) and proxy.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::{DepRef, Draft, ProxyRef, Validator, defaults};
use crate::config::keypath::Segment;
use crate::config::raw::{
    EnvValue, RawBackoff, RawDependency, RawDependsOn, RawPort, RawProxy, RawRestartLimit,
    RawService, StringOrList,
};
use crate::config::spec::PORT_PLACEHOLDER;
use crate::config::spec::{
    Backoff, Condition, EnvFileValues, OnUnhealthy, Port, Proxy, RemoteDependency, RestartLimit,
    RestartPolicy, Run, Service, ServiceName,
};
use crate::config::{envfile, executable, values};
use crate::diagnostic::Diagnostic;
use crate::suggest;

/// The keys of a service table, as the foreign-key advice wants them.
fn service_keys() -> Vec<String> {
    crate::config::raw::keys_of::<RawService>()
        .iter()
        .map(|k| (*k).to_owned())
        .collect()
}

impl Validator<'_> {
    /// Checks one service table on its own; what the cross-service checks need comes
    /// back in the draft whether or not the service itself is valid.
    pub(super) fn service(&mut self, name: &Spanned<String>, raw: &Spanned<RawService>) -> Draft {
        let before = self.errors;
        let key = |field: &str| format!("services.{}.{field}", name.get_ref());
        let valid_name = self.service_name(name);
        let table_span = raw.span();
        let raw = raw.get_ref();

        let cwd = self.cwd(&key("cwd"), raw.cwd.as_ref());
        let env = self.env(&key("env"), raw.env.as_ref());
        let (env_files, env_file_values) = self.env_files(&key("env-file"), raw.env_file.as_ref());
        let path_var = env
            .get("PATH")
            .map(OsString::from)
            .or_else(|| self.path_var.clone());
        let run = self.run(&key, name, raw, &cwd, path_var.as_deref());

        let ports = raw
            .ports
            .iter()
            .flatten()
            .filter_map(|p| self.port(&key("ports"), p).map(|port| (port, p.span())))
            .collect::<Vec<_>>();
        let ready = raw
            .ready
            .as_ref()
            .and_then(|p| self.ready(&key("ready"), p, &cwd, path_var.as_deref()));
        let alive = raw
            .alive
            .as_ref()
            .and_then(|p| self.alive(&key("alive"), p, &cwd, path_var.as_deref()));
        let on_unhealthy = match &raw.on_unhealthy {
            None => OnUnhealthy::Restart,
            Some(text) => match text.get_ref().as_str() {
                "restart" => OnUnhealthy::Restart,
                "report" => OnUnhealthy::Report,
                other => {
                    self.one_of(
                        &key("on-unhealthy"),
                        other,
                        text.span(),
                        &["restart", "report"],
                    );
                    OnUnhealthy::Restart
                }
            },
        };
        let watchdog = raw
            .watchdog
            .as_ref()
            .map(|w| self.positive(&key("watchdog"), Some(w), Duration::from_secs(1)));
        if let Some(text) = &raw.on_unhealthy
            && raw.alive.is_none()
            && raw.watchdog.is_none()
        {
            self.warn(
                Diagnostic::warning(
                    "no-effect",
                    format!(
                        "`{}` has no effect: nothing watches `{}` once it runs",
                        key("on-unhealthy"),
                        name.get_ref()
                    ),
                )
                .at(text.span(), "")
                .help("a service becomes unhealthy through an `alive` probe or a missed `watchdog` heartbeat: add one, or remove `on-unhealthy`"),
            );
        }
        let wait_for_ports = raw.wait_for_ports.as_ref().is_some_and(|w| *w.get_ref());
        if wait_for_ports && ports.is_empty() && raw.ports.as_ref().is_none_or(Vec::is_empty) {
            let span = raw
                .wait_for_ports
                .as_ref()
                .map(Spanned::span)
                .unwrap_or(table_span.clone());
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!(
                        "`{}` is set but no ports are declared",
                        key("wait-for-ports")
                    ),
                )
                .at(span, "nothing to wait for")
                .help("declare the ports the service listens on: ports = [8080]"),
            );
        }
        let (restart, restart_span) = match &raw.restart {
            None => (RestartPolicy::OnFailure, None),
            Some(text) => match RestartPolicy::parse(text.get_ref()) {
                Some(policy) => (policy, Some(text.span())),
                None => {
                    self.one_of(
                        &key("restart"),
                        text.get_ref(),
                        text.span(),
                        RestartPolicy::NAMES,
                    );
                    (RestartPolicy::OnFailure, None)
                }
            },
        };
        let backoff = self.backoff(&key("backoff"), raw.backoff.as_ref());
        let restart_limit = self.restart_limit(&key("restart-limit"), raw.restart_limit.as_ref());
        let stop_signal = match &raw.stop_signal {
            None => nix::sys::signal::Signal::SIGTERM,
            Some(text) => values::signal(text.get_ref()).unwrap_or_else(|problem| {
                self.invalid(&key("stop-signal"), text.span(), problem);
                nix::sys::signal::Signal::SIGTERM
            }),
        };
        let stop_timeout = self.duration(
            &key("stop-timeout"),
            raw.stop_timeout.as_ref(),
            defaults::STOP_TIMEOUT,
        );
        let deps = self.depends_on(&key("depends-on"), raw.depends_on.as_ref());
        // `NAME@HOST`: another host's service, not part of this host's graph.
        let (remote, deps): (Vec<DepRef>, Vec<DepRef>) =
            deps.into_iter().partition(|dep| dep.name.contains('@'));
        let remote_deps = self.remote_deps(&key("depends-on"), remote);
        let autostart = raw.autostart.as_ref().is_none_or(|a| *a.get_ref());
        let proxy = raw
            .proxy
            .as_ref()
            .and_then(|p| self.proxy(&key("proxy"), p));
        let idle_stop = raw
            .idle_stop
            .as_ref()
            .map(|d| self.positive(&key("idle-stop"), Some(d), Duration::from_secs(600)));
        let pidfile = raw.pidfile.as_ref().and_then(|text| {
            if text.get_ref().trim().is_empty() {
                self.error(
                    Diagnostic::error("invalid-value", format!("`{}` is empty", key("pidfile")))
                        .at(text.span(), "")
                        .help("name the file the program writes its pid to, e.g. `pidfile = \"run/app.pid\"` (relative paths start at the config file's directory)"),
                );
                return None;
            }
            Some(self.path(text.get_ref()))
        });

        let process = self.process_settings(name.get_ref(), raw);
        let reload_signal = self.reload_signal(&key("reload-signal"), raw.reload_signal.as_ref());

        let port = self.assigned_port(&key("port"), raw.port.as_ref());
        self.placeholders_need_a_port(name.get_ref(), raw);
        let proxy_upstream = proxy
            .as_ref()
            .and_then(|p| p.1.as_ref().map(|p| p.upstream));
        let (routing, route) = self.routing(
            name.get_ref(),
            raw,
            port,
            proxy_upstream,
            table_span.clone(),
        );

        let singleton = self.singleton(&key, raw);

        let valid = self.errors == before;
        let service = match (valid, valid_name.clone(), run) {
            (true, Some(name), Some(run)) => Some(Service {
                name,
                description: raw.description.as_ref().map(|d| d.get_ref().clone()),
                run,
                cwd,
                env,
                env_files,
                env_file_values,
                ports: ports.iter().map(|(p, _)| *p).collect(),
                ready,
                alive,
                on_unhealthy,
                watchdog,
                wait_for_ports,
                restart,
                backoff,
                restart_limit,
                stop_signal,
                stop_timeout,
                depends_on: Vec::new(), // filled in once every dependency is known to exist
                remote_deps,
                autostart,
                proxy: proxy.as_ref().and_then(|p| p.1.clone()),
                idle_stop,
                pidfile,
                port,
                routing,
                member: route.as_ref().and_then(|r| r.membership()),
                process,
                reload_signal,
                replica: None,
                singleton,
            }),
            _ => None,
        };
        Draft {
            name: name.get_ref().clone(),
            valid_name,
            service,
            deps,
            ports,
            proxy: proxy.map(|p| p.0),
            route,
            restart,
            restart_span,
            name_span: name.span(),
            stop_timeout_span: raw.stop_timeout.as_ref().map(Spanned::span),
        }
    }

    /// Whether a key of service `name` that was refused looks like `command` or `shell`
    /// (`command` of the wrong type, `comand`), so "no command" would repeat the news.
    /// The name, or why it is not one, with a fixed spelling to rename it to.
    fn service_name(&mut self, name: &Spanned<String>) -> Option<ServiceName> {
        match ServiceName::new(name.get_ref()) {
            Ok(valid) => Some(valid),
            Err(problem) => {
                let fixed: String = name
                    .get_ref()
                    .to_lowercase()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '-'
                        }
                    })
                    .collect();
                self.error(
                    Diagnostic::error(
                        "bad-name",
                        format!(
                            "`{}` is not a valid service name: {problem}",
                            name.get_ref()
                        ),
                    )
                    .at(name.span(), "")
                    .help_opt(
                        ServiceName::new(&fixed)
                            .ok()
                            .map(|f| format!("rename it `{f}`")),
                    ),
                );
                None
            }
        }
    }

    /// The working directory: absolute, and it must exist.
    fn cwd(&mut self, key: &str, cwd: Option<&Spanned<String>>) -> PathBuf {
        match cwd {
            Some(cwd) => {
                let path = self.path(cwd.get_ref());
                if !path.is_dir() {
                    let what = if path.exists() {
                        "is not a directory"
                    } else {
                        "does not exist"
                    };
                    self.error(
                        Diagnostic::error("missing-cwd", format!("`{}`: `{}` {what}", key, cwd.get_ref()))
                            .at(cwd.span(), "")
                            .help("create the directory, or fix the path (relative paths start at the config file's directory)"),
                    );
                }
                path
            }
            None => self.dir.clone(),
        }
    }

    /// `env`: names that can be set, values as text.
    fn env(
        &mut self,
        key: &str,
        env: Option<&BTreeMap<Spanned<String>, Spanned<EnvValue>>>,
    ) -> BTreeMap<String, String> {
        env.into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let name = k.get_ref();
                let problem = if name.is_empty() {
                    Some((
                        format!("`{key}` has a variable with an empty name"),
                        "name the variable: env = { NAME = \"value\" }".to_owned(),
                    ))
                } else if let Some((before, after)) = name.split_once('=') {
                    Some((
                        format!("`{key}`: `{name}` is not a variable name: it holds `=`"),
                        match before {
                            "" => "a variable name cannot hold `=`: rename it".to_owned(),
                            before => format!(
                                "a variable name cannot hold `=`: write {before} = \"{after}\" if that is what you meant"
                            ),
                        },
                    ))
                } else if name.contains('\0') {
                    Some((
                        format!("`{key}`: a variable name holds a NUL byte"),
                        "remove the \\u0000 from the name".to_owned(),
                    ))
                } else {
                    None
                };
                if let Some((message, help)) = problem {
                    self.error(
                        Diagnostic::error("invalid-value", message)
                            .at(k.span(), "")
                            .help(help),
                    );
                    return None;
                }
                if v.get_ref().0.contains('\0') {
                    self.nul_byte(&format!("{key}.{name}"), v.span());
                    return None;
                }
                Some((name.clone(), v.get_ref().0.clone()))
            })
            .collect()
    }

    pub(super) fn command_was_dropped(&self, name: &str) -> bool {
        self.removed.iter().any(|path| match path.0.as_slice() {
            [Segment::Key(s), Segment::Key(n), Segment::Key(key)]
                if s == "services" && n == name =>
            {
                let meant = crate::config::foreign::meant(key, &service_keys());
                key == "command"
                    || key == "shell"
                    || suggest::nearest(key, ["command", "shell"]).is_some()
                    || matches!(meant, Some("command" | "shell"))
            }
            _ => false,
        })
    }

    /// `command` or `shell`, exactly one, with the program found.
    pub(super) fn run(
        &mut self,
        key: &dyn Fn(&str) -> String,
        name: &Spanned<String>,
        raw: &RawService,
        cwd: &Path,
        path_var: Option<&OsStr>,
    ) -> Option<Run> {
        match (&raw.command, &raw.shell) {
            (Some(command), Some(shell)) => {
                self.error(
                    Diagnostic::error("conflict", format!("service `{}` has both `command` and `shell`", name.get_ref()))
                        .at(shell.span(), "")
                        .also(command.span(), "")
                        .help("keep `command` to run a program directly, or `shell` to run a line with /bin/sh -c"),
                );
                None
            }
            // A `command` dropped for being malformed or misspelt was reported already.
            (None, None) if self.command_was_dropped(name.get_ref()) => None,
            (None, None) => {
                let span = name.span();
                self.error(
                    Diagnostic::error("missing-key", format!("service `{}` has no `command`", name.get_ref()))
                        .at(span, "")
                        .help("add command = [\"program\", \"arg\"], or shell = \"...\" to run a line through /bin/sh"),
                );
                None
            }
            (Some(command), None) => {
                let argv = self.argv(&key("command"), command)?;
                if let Some(op) = values::shell_syntax(&argv) {
                    self.warn(
                        Diagnostic::warning(
                            "shell-syntax",
                            format!(
                                "`{}` holds `{op}`, which the program gets as a plain argument",
                                key("command")
                            ),
                        )
                        .at(command.span(), "not run through a shell")
                        .help("write shell = \"...\" instead to run the line with /bin/sh -c"),
                    );
                }
                self.program(&key("command"), &argv[0], command.span(), cwd, path_var);
                Some(Run::Argv(argv))
            }
            (None, Some(shell)) => {
                if shell.get_ref().trim().is_empty() {
                    self.error(
                        Diagnostic::error("invalid-value", format!("`{}` is empty", key("shell")))
                            .at(shell.span(), ""),
                    );
                    return None;
                }
                if shell.get_ref().contains('\0') {
                    self.nul_byte(&key("shell"), shell.span());
                    return None;
                }
                Some(Run::Shell(shell.get_ref().clone()))
            }
        }
    }

    /// A command as a string (split like a shell) or an array: non-empty, a program
    /// name first, and nothing a program cannot be given.
    pub(super) fn argv(&mut self, key: &str, value: &Spanned<StringOrList>) -> Option<Vec<String>> {
        let (argv, spans): (Vec<String>, Vec<Range<usize>>) = match value.get_ref() {
            StringOrList::One(line) => {
                let words = values::command_line(line)
                    .map_err(|problem| self.invalid(key, value.span(), problem))
                    .ok()?;
                let spans = vec![value.span(); words.len()];
                (words, spans)
            }
            StringOrList::List(items) if items.is_empty() => {
                self.error(
                    Diagnostic::error("invalid-value", format!("`{key}` is an empty array"))
                        .at(value.span(), "")
                        .help("name the program to run first, then its arguments: [\"python3\", \"app.py\"]"),
                );
                return None;
            }
            StringOrList::List(items) => items
                .iter()
                .map(|i| (i.get_ref().clone(), i.span()))
                .unzip(),
        };
        if argv[0].trim().is_empty() {
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!("`{key}`: the program name is empty"),
                )
                .at(spans[0].clone(), "no program here")
                .help("the first word is the program to run: [\"python3\", \"app.py\"]"),
            );
            return None;
        }
        if let Some(at) = argv.iter().position(|arg| arg.contains('\0')) {
            self.nul_byte(key, spans[at].clone());
            return None;
        }
        Some(argv)
    }

    /// A NUL byte in text handed to a program: the operating system cannot pass it.
    pub(super) fn nul_byte(&mut self, key: &str, span: Range<usize>) {
        self.error(
            Diagnostic::error("invalid-value", format!("`{key}` holds a NUL byte"))
                .at(span, "holds \\u0000")
                .help("arguments and environment values cannot hold NUL (\\u0000): remove it"),
        );
    }

    pub(super) fn program(
        &mut self,
        key: &str,
        program: &str,
        span: Range<usize>,
        cwd: &Path,
        path_var: Option<&OsStr>,
    ) {
        if let Err(problem) = executable::resolve(program, cwd, path_var) {
            use executable::ExecutableError as E;
            // Name the program as written; the full path goes in the fix.
            let (what, help) = match &problem {
                E::NotOnPath { .. } if program.trim() != program => (
                    "is not found on PATH",
                    format!("remove the spaces around the name: `{}`", program.trim()),
                ),
                E::NotOnPath { .. } => (
                    "is not found on PATH",
                    "install it, give its full path, or set PATH in the service's `env`".to_owned(),
                ),
                E::NotExecutable { path } => {
                    ("is not executable", format!("chmod +x {}", path.display()))
                }
                E::Missing { .. } => (
                    "does not exist",
                    "fix the path (relative paths start at the service's `cwd`)".to_owned(),
                ),
                E::Directory { .. } => ("is a directory", "name the program inside it".to_owned()),
            };
            self.error(
                Diagnostic::error("missing-program", format!("`{key}`: `{program}` {what}"))
                    .at(span, "cannot be run")
                    .help(help),
            );
        }
    }

    pub(super) fn env_files(
        &mut self,
        key: &str,
        value: Option<&Spanned<StringOrList>>,
    ) -> (Vec<PathBuf>, EnvFileValues) {
        let Some(value) = value else {
            return (Vec::new(), EnvFileValues::default());
        };
        let entries: Vec<(String, Range<usize>)> = match value.get_ref() {
            StringOrList::One(path) => vec![(path.clone(), value.span())],
            StringOrList::List(paths) => paths
                .iter()
                .map(|p| (p.get_ref().clone(), p.span()))
                .collect(),
        };
        let mut files = Vec::new();
        let mut pairs = Vec::new();
        for (text, span) in entries {
            let path = self.path(&text);
            match envfile::read(&path) {
                Ok(contents) => match envfile::parse(&contents) {
                    Ok(read) => pairs.extend(read),
                    Err(problem) => {
                        self.error(
                            Diagnostic::error(
                                "bad-env-file",
                                format!("`{key}`: `{text}` {problem}"),
                            )
                            .at(span, "")
                            .help("each line is KEY=VALUE; blank lines and # comments are skipped"),
                        );
                    }
                },
                Err(err) => {
                    let what = match err.kind() {
                        std::io::ErrorKind::NotFound => "does not exist".to_owned(),
                        std::io::ErrorKind::FileTooLarge => format!(
                            "is larger than {} KiB: is it really an env file?",
                            envfile::MAX_SIZE >> 10
                        ),
                        _ => format!("cannot be read ({err})"),
                    };
                    self.error(
                        Diagnostic::error("missing-file", format!("`{key}`: `{text}` {what}"))
                            .at(span, "")
                            .help("create the file, or fix the path (relative paths start at the config file's directory)"),
                    );
                }
            }
            files.push(path);
        }
        (files, EnvFileValues::new(pairs))
    }

    pub(super) fn port(&mut self, key: &str, value: &Spanned<RawPort>) -> Option<Port> {
        let parsed = match value.get_ref() {
            RawPort::Number(n) => values::port_number(*n).map(|port| Port { ip: None, port }),
            RawPort::Address(text) => values::socket_addr(text).map(|a| Port {
                ip: Some(a.ip()),
                port: a.port(),
            }),
        };
        parsed
            .map_err(|problem| self.invalid(key, value.span(), problem))
            .ok()
    }

    pub(super) fn backoff(&mut self, key: &str, raw: Option<&Spanned<RawBackoff>>) -> Backoff {
        let default = RawBackoff::default();
        let raw_ref = raw.map_or(&default, Spanned::get_ref);
        let initial = self.duration(
            &format!("{key}.initial"),
            raw_ref.initial.as_ref(),
            defaults::BACKOFF_INITIAL,
        );
        let max = self.duration(
            &format!("{key}.max"),
            raw_ref.max.as_ref(),
            defaults::BACKOFF_MAX.max(initial),
        );
        let reset_after = self.positive(
            &format!("{key}.reset-after"),
            raw_ref.reset_after.as_ref(),
            defaults::BACKOFF_RESET_AFTER,
        );
        if max < initial
            && let Some(raw) = raw
        {
            self.error(
                Diagnostic::error("invalid-value", format!("`{key}.max` is shorter than `{key}.initial`"))
                    .at(raw.span(), "")
                    .help("the delay starts at `initial` and doubles up to `max`: make `max` at least `initial`"),
            );
        }
        Backoff {
            initial,
            max,
            reset_after,
        }
    }

    pub(super) fn restart_limit(
        &mut self,
        key: &str,
        raw: Option<&Spanned<RawRestartLimit>>,
    ) -> RestartLimit {
        let default = RawRestartLimit::default();
        let raw = raw.map_or(&default, Spanned::get_ref);
        if let Some(count) = &raw.count
            && *count.get_ref() == 0
        {
            self.error(
                Diagnostic::error("invalid-value", format!("`{key}.count` is 0"))
                    .at(count.span(), "")
                    .help("to never restart, write restart = \"never\""),
            );
        }
        RestartLimit {
            count: self.count(
                &format!("{key}.count"),
                raw.count.as_ref().filter(|c| *c.get_ref() != 0),
                1..1_000_001,
                defaults::RESTART_LIMIT_COUNT.into(),
            ) as u32,
            within: self.positive(
                &format!("{key}.within"),
                raw.within.as_ref(),
                defaults::RESTART_LIMIT_WITHIN,
            ),
        }
    }

    pub(super) fn depends_on(
        &mut self,
        key: &str,
        raw: Option<&Spanned<RawDependsOn>>,
    ) -> Vec<DepRef> {
        let Some(raw) = raw else { return Vec::new() };
        match raw.get_ref() {
            RawDependsOn::List(names) => names
                .iter()
                .map(|n| DepRef {
                    name: n.get_ref().clone(),
                    span: n.span(),
                    condition: Condition::Healthy,
                    restart: false,
                })
                .collect(),
            RawDependsOn::Table(entries) => entries
                .iter()
                .filter_map(|(name, value)| {
                    let entry_key = format!("{key}.{}", name.get_ref());
                    let (condition, restart) = match value.get_ref() {
                        RawDependency::Condition(text) => {
                            (Some((text.clone(), value.span())), false)
                        }
                        RawDependency::Table(table) => (
                            table
                                .condition
                                .as_ref()
                                .map(|c| (c.get_ref().clone(), c.span())),
                            table.restart.as_ref().is_some_and(|r| *r.get_ref()),
                        ),
                    };
                    let parsed = match &condition {
                        None => Some(Condition::Healthy),
                        Some((text, span)) => {
                            let parsed = Condition::parse(text);
                            if parsed.is_none() {
                                self.one_of(
                                    &format!("{entry_key}.condition"),
                                    text,
                                    span.clone(),
                                    Condition::NAMES,
                                );
                            }
                            parsed
                        }
                    };
                    Some(DepRef {
                        name: name.get_ref().clone(),
                        span: name.span(),
                        condition: parsed?,
                        restart,
                    })
                })
                .collect(),
        }
    }

    /// `NAME@HOST` entries of `depends-on`, checked: a service name, a host name, and
    /// no `restart` (a run of another host's service is not followed).
    fn remote_deps(&mut self, key: &str, deps: Vec<DepRef>) -> Vec<RemoteDependency> {
        deps.into_iter()
            .filter_map(|dep| {
                let (name, host) = dep.name.split_once('@')?;
                let service = ServiceName::new(name).ok();
                let host_ok = super::cluster::valid_host(host);
                if service.is_none() || !host_ok {
                    self.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!(
                                "`{key}`: `{}` does not name a service of another host",
                                dep.name
                            ),
                        )
                        .at(dep.span.clone(), "")
                        .help("write NAME@HOST, e.g. \"rpc@gpu-b\": a service name, `@`, and a host name as in `cluster.host`"),
                    );
                    return None;
                }
                if dep.restart {
                    self.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!(
                                "`{key}.\"{}\".restart`: a run of another host's service cannot be followed",
                                dep.name
                            ),
                        )
                        .at(dep.span.clone(), "")
                        .help("remove restart = true from this dependency"),
                    );
                    return None;
                }
                Some(RemoteDependency {
                    service: service?,
                    host: host.to_owned(),
                    condition: dep.condition,
                })
            })
            .collect()
    }

    /// The proxy as checked, and (when valid) as it goes into the spec.
    pub(super) fn proxy(
        &mut self,
        key: &str,
        raw: &Spanned<RawProxy>,
    ) -> Option<(ProxyRef, Option<Proxy>)> {
        let span = raw.span();
        let raw = raw.get_ref();
        let before = self.errors;
        let address = |this: &mut Self, field: &str, value: &Option<Spanned<String>>| match value {
            // `{port}` with `port = "auto"`: the run's port, known at each start (a
            // number `port` was put in already). Port 0 stands for it.
            Some(text) if field == "upstream" && text.get_ref().contains(PORT_PLACEHOLDER) => {
                values::socket_addr(&text.get_ref().replace(PORT_PLACEHOLDER, "1"))
                    .map(|addr| (SocketAddr::new(addr.ip(), 0), text.span()))
                    .map_err(|problem| {
                        this.invalid(&format!("{key}.{field}"), text.span(), problem)
                    })
                    .ok()
            }
            Some(text) => values::socket_addr(text.get_ref())
                .map(|addr| (addr, text.span()))
                .map_err(|problem| this.invalid(&format!("{key}.{field}"), text.span(), problem))
                .ok(),
            None => {
                this.error(
                    Diagnostic::error("missing-key", format!("`{key}` has no `{field}` address"))
                        .at(span.clone(), "")
                        .help("a proxy needs listen (where clients connect) and upstream (where the service listens)"),
                );
                None
            }
        };
        let listen = address(self, "listen", &raw.listen);
        let upstream = address(self, "upstream", &raw.upstream);
        if let (Some(l), Some(u)) = (&listen, &upstream)
            && l.0 == u.0
        {
            self.error(
                Diagnostic::error("conflict", format!("`{key}` listens on its own upstream `{}`", l.0))
                    .at(u.1.clone(), "")
                    .also(l.1.clone(), "")
                    .help("the service listens on `upstream`; clients connect to `listen`: give them different ports"),
            );
        }
        let http = raw.http.as_ref().is_some_and(|h| *h.get_ref());
        let request_timeout = raw.request_timeout.as_ref().map(|t| {
            self.positive(
                &format!("{key}.request-timeout"),
                Some(t),
                Duration::from_secs(60),
            )
        });
        if let Some(timeout) = &raw.request_timeout
            && !http
        {
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!("`{key}.request-timeout` needs `http = true`"),
                )
                .at(timeout.span(), "")
                .help(
                    "a request timeout is answered with an HTTP 504; set http = true, or remove it",
                ),
            );
        }
        let max_pending = self.count(
            &format!("{key}.max-pending"),
            raw.max_pending.as_ref(),
            1..1_000_001,
            defaults::PROXY_MAX_PENDING as i64,
        ) as usize;
        let checked = ProxyRef {
            listen: listen.clone()?,
            upstream: upstream.clone(),
        };
        let proxy = (self.errors == before).then(|| Proxy {
            listen: checked.listen.0,
            upstream: upstream.map(|u| u.0).unwrap_or(checked.listen.0),
            http,
            request_timeout,
            max_pending,
        });
        Some((checked, proxy))
    }
}
