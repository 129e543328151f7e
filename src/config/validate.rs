//! From the raw schema to a [`Spec`]: every value parsed, every rule checked, every
//! problem collected.
//!
//! Validation never stops at the first problem. Each service is checked on its own
//! (values, probes, files, the program it runs), then the services are checked together
//! (dependencies, cycles, ports). A `Spec` is built only when nothing is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::executable;
use super::raw::{
    RawApiSettings, RawBackoff, RawConfig, RawDependsOn, RawDuration, RawHistorySettings, RawHook,
    RawLogSettings, RawPort, RawProbe, RawProxy, RawRestartLimit, RawService, RawSettings,
    StringOrList,
};
use super::recover::{KeyPath, Segment};
use super::spec::{
    AliveProbe, ApiSettings, Backoff, Check, Condition, Dependency, EVENT_KINDS, HistorySettings,
    Hook, LogSettings, OnUnhealthy, Port, Proxy, ReadyProbe, RestartLimit, RestartPolicy, Run,
    Service, ServiceName, Settings, Spec,
};
use super::{envfile, values};
use crate::diagnostic::Diagnostic;
use crate::graph;
use crate::suggest;

/// Defaults, in one place so that docs/config.md can be checked against them.
pub mod defaults {
    use std::time::Duration;

    pub const STATE_DIR: &str = ".muster";
    pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    pub const LOG_MAX_SIZE: u64 = 10 << 20;
    pub const LOG_KEEP: u32 = 3;
    pub const LOG_TAIL_LINES: usize = 1000;
    pub const HISTORY_MAX_EVENTS: u64 = 100_000;
    pub const HISTORY_MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);
    pub const READY_INTERVAL: Duration = Duration::from_millis(100);
    pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
    pub const ALIVE_INTERVAL: Duration = Duration::from_secs(10);
    pub const ALIVE_TIMEOUT: Duration = Duration::from_secs(5);
    pub const ALIVE_FAILURES: u32 = 3;
    pub const ALIVE_SUCCESSES: u32 = 1;
    pub const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
    pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
    pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);
    pub const RESTART_LIMIT_COUNT: u32 = 5;
    pub const RESTART_LIMIT_WITHIN: Duration = Duration::from_secs(60);
    pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
    pub const PROXY_MAX_PENDING: usize = 1024;
    pub const HOOK_TIMEOUT: Duration = Duration::from_secs(30);
}

/// Validates `raw` read from `file` (absolute). Returns the spec when there was no
/// error; problems (errors and warnings) go to `problems` either way.
pub fn validate(
    raw: RawConfig,
    removed: &[KeyPath],
    file: &Path,
    problems: &mut Vec<Diagnostic>,
) -> Option<Spec> {
    let dir = file.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut v = Validator {
        dir,
        removed,
        problems,
        errors: 0,
        path_var: std::env::var_os("PATH"),
    };
    let settings = v.settings(raw.settings.as_ref());

    let services_span = raw.services.as_ref().map(Spanned::span);
    let raw_services = raw.services.map(Spanned::into_inner).unwrap_or_default();
    if raw_services.is_empty() && !removed_under(removed, &["services"]) {
        let diagnostic = Diagnostic::error("no-services", "no services are defined")
            .help("add a table such as:\n[services.web]\ncommand = [\"python3\", \"-m\", \"http.server\", \"8000\"]");
        v.error(match services_span {
            Some(span) => diagnostic.at(span, "this table is empty"),
            None => diagnostic,
        });
    }

    // Names that exist, even if their table had problems, so that dependents of a broken
    // service are not also told that it does not exist.
    let mut known: BTreeSet<String> = raw_services.keys().map(|k| k.get_ref().clone()).collect();
    known.extend(removed.iter().filter_map(|p| match p.0.as_slice() {
        [Segment::Key(s), Segment::Key(name)] if s == "services" => Some(name.clone()),
        _ => None,
    }));

    let mut drafts = Vec::new();
    for (name, service) in &raw_services {
        drafts.push(v.service(name, service));
    }
    let edges = v.dependencies(&drafts, &known);
    v.port_clashes(&drafts);
    let waves = v.waves(&drafts, &edges);
    let hooks = raw
        .hooks
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, hook)| v.hook(i, hook, &known))
        .collect::<Vec<_>>();

    if v.errors > 0 {
        return None;
    }
    // No errors: every dependency names a valid service, so none is dropped here.
    let services: BTreeMap<ServiceName, Service> = drafts
        .into_iter()
        .filter_map(|draft| {
            let mut service = draft.service?;
            service.depends_on = draft
                .deps
                .iter()
                .filter_map(|dep| {
                    Some(Dependency {
                        service: ServiceName::new(&dep.name).ok()?,
                        condition: dep.condition,
                    })
                })
                .collect();
            Some((service.name.clone(), service))
        })
        .collect();
    Some(Spec {
        path: file.to_path_buf(),
        settings: settings?,
        services,
        waves: waves?,
        hooks: hooks.into_iter().collect::<Option<Vec<_>>>()?,
    })
}

fn removed_under(removed: &[KeyPath], prefix: &[&str]) -> bool {
    removed.iter().any(|p| {
        p.0.len() >= prefix.len()
            && p.0
                .iter()
                .zip(prefix)
                .all(|(seg, want)| matches!(seg, Segment::Key(k) if k == want))
    })
}

/// What the cross-service checks need to know of one service, with the places to point
/// at; `service` is `None` when the service itself had problems.
struct Draft {
    name: String,
    valid_name: Option<ServiceName>,
    service: Option<Service>,
    deps: Vec<DepRef>,
    ports: Vec<(Port, Range<usize>)>,
    proxy: Option<ProxyRef>,
    restart: RestartPolicy,
    restart_span: Option<Range<usize>>,
}

struct DepRef {
    name: String,
    span: Range<usize>,
    condition: Condition,
}

struct ProxyRef {
    listen: (SocketAddr, Range<usize>),
    upstream: Option<(SocketAddr, Range<usize>)>,
}

struct Validator<'p> {
    dir: PathBuf,
    removed: &'p [KeyPath],
    problems: &'p mut Vec<Diagnostic>,
    errors: usize,
    path_var: Option<OsString>,
}

impl Validator<'_> {
    fn error(&mut self, diagnostic: Diagnostic) {
        self.errors += 1;
        self.problems.push(diagnostic);
    }

    fn warn(&mut self, diagnostic: Diagnostic) {
        self.problems.push(diagnostic);
    }

    /// Reports a refused value at its place, under its key.
    fn invalid(&mut self, key: &str, span: Range<usize>, problem: values::Problem) {
        self.error(
            Diagnostic::error("invalid-value", format!("`{key}`: {}", problem.message))
                .at(span, "")
                .help_opt(problem.help),
        );
    }

    fn duration(
        &mut self,
        key: &str,
        value: Option<&Spanned<RawDuration>>,
        default: Duration,
    ) -> Duration {
        self.duration_opt(key, value).unwrap_or(default)
    }

    fn duration_opt(
        &mut self,
        key: &str,
        value: Option<&Spanned<RawDuration>>,
    ) -> Option<Duration> {
        let value = value?;
        match values::duration(&value.get_ref().0) {
            Ok(d) => Some(d),
            Err(problem) => {
                self.invalid(key, value.span(), problem);
                None
            }
        }
    }

    /// A duration that must be more than zero (intervals, timeouts, deadlines).
    fn positive(
        &mut self,
        key: &str,
        value: Option<&Spanned<RawDuration>>,
        default: Duration,
    ) -> Duration {
        let parsed = self.duration(key, value, default);
        if parsed.is_zero()
            && let Some(value) = value
        {
            self.error(
                Diagnostic::error("invalid-value", format!("`{key}` must be longer than zero"))
                    .at(value.span(), "zero"),
            );
            return default;
        }
        parsed
    }

    fn count(
        &mut self,
        key: &str,
        value: Option<&Spanned<i64>>,
        range: Range<i64>,
        default: i64,
    ) -> i64 {
        let Some(value) = value else { return default };
        let number = *value.get_ref();
        if range.contains(&number) {
            number
        } else {
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!(
                        "`{key}` is {number}, it must be from {} to {}",
                        range.start,
                        range.end - 1
                    ),
                )
                .at(value.span(), "out of range"),
            );
            default
        }
    }

    /// A path from the file, relative to the file's directory.
    fn path(&self, text: &str) -> PathBuf {
        self.dir.join(text)
    }

    fn settings(&mut self, raw: Option<&Spanned<RawSettings>>) -> Option<Settings> {
        let before = self.errors;
        let default = RawSettings::default();
        let raw = raw.map_or(&default, Spanned::get_ref);
        let state_dir = self.path(
            raw.state_dir
                .as_ref()
                .map_or(defaults::STATE_DIR, |s| s.get_ref().as_str()),
        );
        let shutdown_timeout = self.positive(
            "settings.shutdown-timeout",
            raw.shutdown_timeout.as_ref(),
            defaults::SHUTDOWN_TIMEOUT,
        );
        let logs = self.log_settings(raw.logs.as_ref().map(Spanned::get_ref));
        let api = raw.api.as_ref().and_then(|api| self.api_settings(api));
        let history = self.history_settings(raw.history.as_ref().map(Spanned::get_ref));
        (self.errors == before).then_some(Settings {
            state_dir,
            shutdown_timeout,
            logs,
            api,
            history,
        })
    }

    fn log_settings(&mut self, raw: Option<&RawLogSettings>) -> LogSettings {
        let default = RawLogSettings::default();
        let raw = raw.unwrap_or(&default);
        let max_size = match &raw.max_size {
            Some(text) => values::size(text.get_ref()).unwrap_or_else(|problem| {
                self.invalid("settings.logs.max-size", text.span(), problem);
                defaults::LOG_MAX_SIZE
            }),
            None => defaults::LOG_MAX_SIZE,
        };
        LogSettings {
            max_size,
            keep: self.count(
                "settings.logs.keep",
                raw.keep.as_ref(),
                0..1001,
                defaults::LOG_KEEP.into(),
            ) as u32,
            tail_lines: self.count(
                "settings.logs.tail-lines",
                raw.tail_lines.as_ref(),
                1..1_000_001,
                defaults::LOG_TAIL_LINES as i64,
            ) as usize,
        }
    }

    fn api_settings(&mut self, raw: &Spanned<RawApiSettings>) -> Option<ApiSettings> {
        let span = raw.span();
        let raw = raw.get_ref();
        let Some(listen) = &raw.listen else {
            self.error(
                Diagnostic::error("missing-key", "`settings.api` has no `listen` address")
                    .at(span, "")
                    .help("add listen = \"127.0.0.1:7070\", or remove [settings.api] to serve only the unix socket"),
            );
            return None;
        };
        let listen_addr = values::socket_addr(listen.get_ref())
            .map_err(|problem| self.invalid("settings.api.listen", listen.span(), problem))
            .ok();
        let token_file = raw
            .token_file
            .as_ref()
            .map(|t| self.existing_file("settings.api.token-file", t));
        let read_token_file = raw
            .read_token_file
            .as_ref()
            .map(|t| self.existing_file("settings.api.read-token-file", t));
        if token_file.is_none() && read_token_file.is_none() {
            self.error(
                Diagnostic::error("missing-key", "the TCP API needs a token: `settings.api` has no `token-file`")
                    .at(listen.span(), "served over TCP")
                    .help("add token-file = \"api.token\" (create it with: head -c 32 /dev/urandom | base64 > api.token; chmod 600 api.token)"),
            );
        }
        Some(ApiSettings {
            listen: listen_addr?,
            token_file: token_file.flatten(),
            read_token_file: read_token_file.flatten(),
        })
    }

    fn existing_file(&mut self, key: &str, value: &Spanned<String>) -> Option<PathBuf> {
        let path = self.path(value.get_ref());
        if path.is_file() {
            Some(path)
        } else {
            self.error(
                Diagnostic::error("missing-file", format!("`{key}`: `{}` does not exist", value.get_ref()))
                    .at(value.span(), "no such file")
                    .help("create the file, or fix the path (relative paths start at the config file's directory)"),
            );
            None
        }
    }

    fn history_settings(&mut self, raw: Option<&RawHistorySettings>) -> HistorySettings {
        let default = RawHistorySettings::default();
        let raw = raw.unwrap_or(&default);
        HistorySettings {
            max_events: self.count(
                "settings.history.max-events",
                raw.max_events.as_ref(),
                1..i64::MAX,
                defaults::HISTORY_MAX_EVENTS as i64,
            ) as u64,
            max_age: self.positive(
                "settings.history.max-age",
                raw.max_age.as_ref(),
                defaults::HISTORY_MAX_AGE,
            ),
        }
    }

    fn service(&mut self, name: &Spanned<String>, raw: &Spanned<RawService>) -> Draft {
        let before = self.errors;
        let key = |field: &str| format!("services.{}.{field}", name.get_ref());
        let valid_name = match ServiceName::new(name.get_ref()) {
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
        };
        let table_span = raw.span();
        let raw = raw.get_ref();

        let cwd = match &raw.cwd {
            Some(cwd) => {
                let path = self.path(cwd.get_ref());
                if !path.is_dir() {
                    let what = if path.exists() {
                        "is not a directory"
                    } else {
                        "does not exist"
                    };
                    self.error(
                        Diagnostic::error("missing-cwd", format!("`{}`: `{}` {what}", key("cwd"), cwd.get_ref()))
                            .at(cwd.span(), "")
                            .help("create the directory, or fix the path (relative paths start at the config file's directory)"),
                    );
                }
                path
            }
            None => self.dir.clone(),
        };
        let env = raw
            .env
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                let valid = !k.get_ref().is_empty() && !k.get_ref().contains(['=', '\0']);
                if !valid {
                    self.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!("`{}`: `{}` is not a variable name", key("env"), k.get_ref()),
                        )
                        .at(k.span(), ""),
                    );
                }
                valid.then(|| (k.get_ref().clone(), v.get_ref().0.clone()))
            })
            .collect::<BTreeMap<_, _>>();
        let env_files = self.env_files(&key("env-file"), raw.env_file.as_ref());
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
        let autostart = raw.autostart.as_ref().is_none_or(|a| *a.get_ref());
        let proxy = raw
            .proxy
            .as_ref()
            .and_then(|p| self.proxy(&key("proxy"), p));
        let idle_stop = raw
            .idle_stop
            .as_ref()
            .map(|d| self.positive(&key("idle-stop"), Some(d), Duration::from_secs(600)));

        let valid = self.errors == before;
        let service = match (valid, valid_name.clone(), run) {
            (true, Some(name), Some(run)) => Some(Service {
                name,
                description: raw.description.as_ref().map(|d| d.get_ref().clone()),
                run,
                cwd,
                env,
                env_files,
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
                autostart,
                proxy: proxy.as_ref().and_then(|p| p.1.clone()),
                idle_stop,
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
            restart,
            restart_span,
        }
    }

    /// Whether a key of service `name` that was refused looks like `command` or `shell`
    /// (`command` of the wrong type, `comand`), so "no command" would repeat the news.
    fn command_was_dropped(&self, name: &str) -> bool {
        self.removed.iter().any(|path| match path.0.as_slice() {
            [Segment::Key(s), Segment::Key(n), Segment::Key(key)]
                if s == "services" && n == name =>
            {
                key == "command"
                    || key == "shell"
                    || suggest::nearest(key, ["command", "shell"]).is_some()
            }
            _ => false,
        })
    }

    fn one_of(&mut self, key: &str, value: &str, span: Range<usize>, allowed: &[&str]) {
        let listed = allowed
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let help = match suggest::nearest(value, allowed.iter().copied()) {
            Some(near) => format!("did you mean \"{near}\"?"),
            None => format!("use one of {listed}"),
        };
        self.error(
            Diagnostic::error(
                "invalid-value",
                format!("`{key}` is \"{value}\", it must be one of {listed}"),
            )
            .at(span, "")
            .help(help),
        );
    }

    /// `command` or `shell`, exactly one, with the program found.
    fn run(
        &mut self,
        key: &dyn Fn(&str) -> String,
        name: &Spanned<String>,
        raw: &RawService,
        cwd: &Path,
        path_var: Option<&std::ffi::OsStr>,
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
                Some(Run::Shell(shell.get_ref().clone()))
            }
        }
    }

    /// A command as a string (split like a shell) or an array, non-empty.
    fn argv(&mut self, key: &str, value: &Spanned<StringOrList>) -> Option<Vec<String>> {
        match value.get_ref() {
            StringOrList::One(line) => values::command_line(line)
                .map_err(|problem| self.invalid(key, value.span(), problem))
                .ok(),
            StringOrList::List(items) if items.is_empty() => {
                self.error(
                    Diagnostic::error("invalid-value", format!("`{key}` is an empty array"))
                        .at(value.span(), "")
                        .help("name the program to run first, then its arguments: [\"python3\", \"app.py\"]"),
                );
                None
            }
            StringOrList::List(items) => Some(items.iter().map(|i| i.get_ref().clone()).collect()),
        }
    }

    fn program(
        &mut self,
        key: &str,
        program: &str,
        span: Range<usize>,
        cwd: &Path,
        path_var: Option<&std::ffi::OsStr>,
    ) {
        if let Err(problem) = executable::resolve(program, cwd, path_var) {
            use executable::ExecutableError as E;
            // Name the program as written; the full path goes in the fix.
            let (what, help) = match &problem {
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

    fn env_files(&mut self, key: &str, value: Option<&Spanned<StringOrList>>) -> Vec<PathBuf> {
        let Some(value) = value else {
            return Vec::new();
        };
        let entries: Vec<(String, Range<usize>)> = match value.get_ref() {
            StringOrList::One(path) => vec![(path.clone(), value.span())],
            StringOrList::List(paths) => paths
                .iter()
                .map(|p| (p.get_ref().clone(), p.span()))
                .collect(),
        };
        let mut files = Vec::new();
        for (text, span) in entries {
            let path = self.path(&text);
            match std::fs::read_to_string(&path) {
                Ok(contents) => {
                    if let Err(problem) = envfile::parse(&contents) {
                        self.error(
                            Diagnostic::error(
                                "bad-env-file",
                                format!("`{key}`: `{text}` {problem}"),
                            )
                            .at(span, "")
                            .help("each line is KEY=VALUE; blank lines and # comments are skipped"),
                        );
                    }
                }
                Err(err) => {
                    let what = if err.kind() == std::io::ErrorKind::NotFound {
                        "does not exist".to_owned()
                    } else {
                        format!("cannot be read ({err})")
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
        files
    }

    fn port(&mut self, key: &str, value: &Spanned<RawPort>) -> Option<Port> {
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

    /// The check of a probe: exactly one kind, and `kinds` says which are allowed here.
    fn check(
        &mut self,
        key: &str,
        probe: &Spanned<RawProbe>,
        kinds: &[&str],
        cwd: &Path,
        path_var: Option<&std::ffi::OsStr>,
    ) -> Option<Check> {
        let raw = probe.get_ref();
        let mut present: Vec<(&str, Range<usize>)> = Vec::new();
        let mut note = |kind: &'static str, span: Option<Range<usize>>| {
            if let Some(span) = span {
                present.push((kind, span));
            }
        };
        note("tcp", raw.tcp.as_ref().map(Spanned::span));
        note("http", raw.http.as_ref().map(Spanned::span));
        note("exec", raw.exec.as_ref().map(Spanned::span));
        note("log", raw.log.as_ref().map(Spanned::span));
        note(
            "notify",
            raw.notify
                .as_ref()
                .filter(|n| *n.get_ref())
                .map(Spanned::span),
        );
        let listed = kinds.join(", ");
        let (kind, span) = match present.as_slice() {
            [] => {
                self.error(
                    Diagnostic::error("missing-key", format!("`{key}` says nothing to check"))
                        .at(probe.span(), "")
                        .help(format!(
                            "add one of: {listed}; for example {{ tcp = \"127.0.0.1:5432\" }}"
                        )),
                );
                return None;
            }
            [one] => one.clone(),
            [first, second, ..] => {
                self.error(
                    Diagnostic::error(
                        "conflict",
                        format!(
                            "`{key}` has both `{}` and `{}`; a probe checks one thing",
                            first.0, second.0
                        ),
                    )
                    .at(second.1.clone(), "")
                    .also(first.1.clone(), "")
                    .help("keep one of them"),
                );
                return None;
            }
        };
        if !kinds.contains(&kind) {
            let help = match kind {
                "notify" | "log" => {
                    "liveness of a hung process is what `watchdog` is for: the service sends WATCHDOG=1 or touches $MUSTER_HEARTBEAT_FILE"
                }
                _ => "use another kind of check here",
            };
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!("`{key}` cannot use a `{kind}` check (use {listed})"),
                )
                .at(span, "")
                .help(help),
            );
            return None;
        }
        let http_only = [
            ("status", raw.status.as_ref().map(Spanned::span)),
            ("body", raw.body.as_ref().map(Spanned::span)),
        ];
        if kind != "http" {
            for (field, field_span) in http_only {
                if let Some(field_span) = field_span {
                    self.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!("`{key}.{field}` only applies to `http` checks"),
                        )
                        .at(field_span, "")
                        .help(format!("remove `{field}`")),
                    );
                }
            }
        }
        let sub = |k: &str| format!("{key}.{k}");
        match kind {
            "tcp" => {
                let text = raw.tcp.as_ref()?;
                let (host, port) = values::host_port(text.get_ref())
                    .map_err(|problem| self.invalid(&sub("tcp"), text.span(), problem))
                    .ok()?;
                Some(Check::Tcp { host, port })
            }
            "http" => {
                let text = raw.http.as_ref()?;
                let url = values::http_url(text.get_ref())
                    .map_err(|problem| self.invalid(&sub("http"), text.span(), problem))
                    .ok();
                let status = match &raw.status {
                    Some(status) if !(100..600).contains(status.get_ref()) => {
                        self.error(
                            Diagnostic::error(
                                "invalid-value",
                                format!(
                                    "`{}` is {}, not an HTTP status",
                                    sub("status"),
                                    status.get_ref()
                                ),
                            )
                            .at(status.span(), "")
                            .help("use a status from 100 to 599, such as 200"),
                        );
                        None
                    }
                    Some(status) => Some(*status.get_ref() as u16),
                    None => None,
                };
                Some(Check::Http {
                    url: url?,
                    status,
                    body: raw.body.as_ref().map(|b| b.get_ref().clone()),
                })
            }
            "exec" => {
                let command = raw.exec.as_ref()?;
                let argv = self.argv(&sub("exec"), command)?;
                self.program(&sub("exec"), &argv[0], command.span(), cwd, path_var);
                Some(Check::Exec(argv))
            }
            "log" => {
                let text = raw.log.as_ref()?;
                match regex::Regex::new(text.get_ref()) {
                    Ok(pattern) => Some(Check::Log(pattern)),
                    Err(err) => {
                        let detail = err.to_string();
                        let last = detail
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("invalid");
                        let message = last.trim().trim_start_matches("error: ");
                        self.error(
                            Diagnostic::error("bad-regex", format!("`{}` is not a valid regex: {message}", sub("log")))
                                .at(text.span(), "")
                                .help("escape special characters with \\\\ (in a TOML basic string) or use a 'literal string'"),
                        );
                        None
                    }
                }
            }
            _ => Some(Check::Notify),
        }
    }

    fn ready(
        &mut self,
        key: &str,
        probe: &Spanned<RawProbe>,
        cwd: &Path,
        path_var: Option<&std::ffi::OsStr>,
    ) -> Option<ReadyProbe> {
        let check = self.check(
            key,
            probe,
            &["tcp", "http", "exec", "log", "notify"],
            cwd,
            path_var,
        );
        let raw = probe.get_ref();
        for (field, value) in [("failures", &raw.failures), ("successes", &raw.successes)] {
            if let Some(value) = value {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`{key}.{field}` only applies to `alive` probes"),
                    )
                    .at(value.span(), "")
                    .help("readiness keeps trying until `timeout`; remove this key"),
                );
            }
        }
        let interval = self.positive(
            &format!("{key}.interval"),
            raw.interval.as_ref(),
            defaults::READY_INTERVAL,
        );
        let timeout = self.positive(
            &format!("{key}.timeout"),
            raw.timeout.as_ref(),
            defaults::READY_TIMEOUT,
        );
        Some(ReadyProbe {
            check: check?,
            interval,
            timeout,
        })
    }

    fn alive(
        &mut self,
        key: &str,
        probe: &Spanned<RawProbe>,
        cwd: &Path,
        path_var: Option<&std::ffi::OsStr>,
    ) -> Option<AliveProbe> {
        let check = self.check(key, probe, &["tcp", "http", "exec"], cwd, path_var);
        let raw = probe.get_ref();
        let interval = self.positive(
            &format!("{key}.interval"),
            raw.interval.as_ref(),
            defaults::ALIVE_INTERVAL,
        );
        let timeout = self.positive(
            &format!("{key}.timeout"),
            raw.timeout.as_ref(),
            defaults::ALIVE_TIMEOUT,
        );
        let failures = self.count(
            &format!("{key}.failures"),
            raw.failures.as_ref(),
            1..1001,
            defaults::ALIVE_FAILURES.into(),
        );
        let successes = self.count(
            &format!("{key}.successes"),
            raw.successes.as_ref(),
            1..1001,
            defaults::ALIVE_SUCCESSES.into(),
        );
        Some(AliveProbe {
            check: check?,
            interval,
            timeout,
            failures: failures as u32,
            successes: successes as u32,
        })
    }

    fn backoff(&mut self, key: &str, raw: Option<&Spanned<RawBackoff>>) -> Backoff {
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

    fn restart_limit(&mut self, key: &str, raw: Option<&Spanned<RawRestartLimit>>) -> RestartLimit {
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

    fn depends_on(&mut self, key: &str, raw: Option<&Spanned<RawDependsOn>>) -> Vec<DepRef> {
        let Some(raw) = raw else { return Vec::new() };
        match raw.get_ref() {
            RawDependsOn::List(names) => names
                .iter()
                .map(|n| DepRef {
                    name: n.get_ref().clone(),
                    span: n.span(),
                    condition: Condition::Healthy,
                })
                .collect(),
            RawDependsOn::Table(entries) => entries
                .iter()
                .filter_map(|(name, condition)| {
                    let parsed = Condition::parse(condition.get_ref());
                    if parsed.is_none() {
                        self.one_of(
                            &format!("{key}.{}", name.get_ref()),
                            condition.get_ref(),
                            condition.span(),
                            Condition::NAMES,
                        );
                    }
                    Some(DepRef {
                        name: name.get_ref().clone(),
                        span: name.span(),
                        condition: parsed?,
                    })
                })
                .collect(),
        }
    }

    /// The proxy as checked, and (when valid) as it goes into the spec.
    fn proxy(&mut self, key: &str, raw: &Spanned<RawProxy>) -> Option<(ProxyRef, Option<Proxy>)> {
        let span = raw.span();
        let raw = raw.get_ref();
        let before = self.errors;
        let address = |this: &mut Self, field: &str, value: &Option<Spanned<String>>| match value {
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

    fn hook(
        &mut self,
        index: usize,
        raw: &Spanned<RawHook>,
        known: &BTreeSet<String>,
    ) -> Option<Hook> {
        let key = format!("hooks[{index}]");
        let span = raw.span();
        let raw = raw.get_ref();
        let before = self.errors;
        let mut on = Vec::new();
        match &raw.on {
            Some(kinds) if !kinds.get_ref().is_empty() => {
                for kind in kinds.get_ref() {
                    if EVENT_KINDS.contains(&kind.get_ref().as_str()) {
                        on.push(kind.get_ref().clone());
                    } else {
                        let help =
                            match suggest::nearest(kind.get_ref(), EVENT_KINDS.iter().copied()) {
                                Some(near) => format!("did you mean \"{near}\"?"),
                                None => format!("event kinds are: {}", EVENT_KINDS.join(", ")),
                            };
                        self.error(
                            Diagnostic::error(
                                "unknown-event",
                                format!("`{key}.on`: unknown event kind \"{}\"", kind.get_ref()),
                            )
                            .at(kind.span(), "")
                            .help(help),
                        );
                    }
                }
            }
            other => self.error(
                Diagnostic::error("missing-key", format!("`{key}` has no event kinds in `on`"))
                    .at(other.as_ref().map_or(span.clone(), Spanned::span), "")
                    .help("add on = [\"failed\", \"unhealthy\"] (any of the event kinds)"),
            ),
        }
        let services = match &raw.services {
            None => None,
            Some(list) if list.get_ref().iter().any(|s| s.get_ref() == "*") => None,
            Some(list) => Some(
                list.get_ref()
                    .iter()
                    .filter_map(|name| {
                        if !known.contains(name.get_ref()) {
                            self.unknown_service(&format!("`{key}.services` names"), name, known);
                        }
                        ServiceName::new(name.get_ref()).ok()
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        let run = match &raw.run {
            Some(command) => self.argv(&format!("{key}.run"), command).inspect(|argv| {
                self.program(
                    &format!("{key}.run"),
                    &argv[0],
                    command.span(),
                    &self.dir.clone(),
                    self.path_var.clone().as_deref(),
                );
            }),
            None => {
                self.error(
                    Diagnostic::error("missing-key", format!("`{key}` has no `run` command"))
                        .at(span, "")
                        .help("add run = [\"program\", \"arg\"]; the event is in its environment as MUSTER_EVENT_JSON"),
                );
                None
            }
        };
        let timeout = self.positive(
            &format!("{key}.timeout"),
            raw.timeout.as_ref(),
            defaults::HOOK_TIMEOUT,
        );
        (self.errors == before).then_some(Hook {
            on,
            services,
            run: run?,
            timeout,
        })
    }

    fn unknown_service(&mut self, context: &str, name: &Spanned<String>, known: &BTreeSet<String>) {
        let help = match suggest::nearest(name.get_ref(), known.iter().map(String::as_str)) {
            Some(near) => format!("did you mean `{near}`?"),
            None if known.is_empty() => "define it under [services]".to_owned(),
            None => format!(
                "known services: {}",
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        self.error(
            Diagnostic::error(
                "unknown-service",
                format!("{context} unknown service `{}`", name.get_ref()),
            )
            .at(name.span(), "not defined")
            .help(help),
        );
    }

    /// Unknown and self dependencies, and `completed` on what cannot complete. Fills
    /// each valid service's `depends_on` with what survived.
    fn dependencies(&mut self, drafts: &[Draft], known: &BTreeSet<String>) -> Vec<Vec<usize>> {
        let index: BTreeMap<&str, usize> = drafts
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.as_str(), i))
            .collect();
        let mut edges = vec![Vec::new(); drafts.len()];
        for (i, draft) in drafts.iter().enumerate() {
            let mut seen = BTreeMap::new();
            for dep in &draft.deps {
                if let Some(first) = seen.insert(dep.name.as_str(), dep.span.clone()) {
                    self.error(
                        Diagnostic::error(
                            "duplicate-dependency",
                            format!(
                                "service `{}` lists `{}` twice in `depends-on`",
                                draft.name, dep.name
                            ),
                        )
                        .at(dep.span.clone(), "again")
                        .also(first, "first here")
                        .help("remove one of them"),
                    );
                    continue;
                }
                if dep.name == draft.name {
                    self.error(
                        Diagnostic::error(
                            "self-dependency",
                            format!("service `{}` depends on itself", draft.name),
                        )
                        .at(dep.span.clone(), "")
                        .help(format!("remove `{}` from its `depends-on`", dep.name)),
                    );
                    continue;
                }
                let Some(&target) = index.get(dep.name.as_str()) else {
                    if !known.contains(&dep.name) {
                        let spanned = Spanned::new(dep.span.clone(), dep.name.clone());
                        self.unknown_service(
                            &format!("service `{}` depends on", draft.name),
                            &spanned,
                            known,
                        );
                    }
                    continue;
                };
                let target_draft = &drafts[target];
                if dep.condition == Condition::Completed
                    && target_draft.restart == RestartPolicy::Always
                {
                    let mut diagnostic = Diagnostic::error(
                        "never-completes",
                        format!(
                            "service `{}` waits for `{}` to complete, but `{}` restarts always and never completes",
                            draft.name, dep.name, dep.name
                        ),
                    )
                    .at(dep.span.clone(), "waits for `completed`")
                    .help(format!(
                        "wait for `{}` to be \"healthy\" or \"started\", or give `{}` restart = \"on-failure\"",
                        dep.name, dep.name
                    ));
                    if let Some(span) = &target_draft.restart_span {
                        diagnostic =
                            diagnostic.also(span.clone(), "restarts even after a clean exit");
                    }
                    self.error(diagnostic);
                }
                edges[i].push(target);
            }
        }
        edges
    }

    /// The start waves, or every cycle reported with its path.
    fn waves(&mut self, drafts: &[Draft], edges: &[Vec<usize>]) -> Option<Vec<Vec<ServiceName>>> {
        if graph::waves(edges).is_ok() {
            let waves = graph::waves(edges).ok()?;
            return Some(
                waves
                    .into_iter()
                    .map(|wave| {
                        wave.into_iter()
                            .filter_map(|i| drafts[i].valid_name.clone())
                            .collect()
                    })
                    .collect(),
            );
        }
        for cycle in graph::cycles(edges) {
            let path = cycle
                .iter()
                .map(|&i| drafts[i].name.as_str())
                .collect::<Vec<_>>()
                .join(" -> ");
            let mut diagnostic = Diagnostic::error("cycle", format!("dependency cycle: `{path}`"))
                .help("a service cannot start before itself: remove one of these dependencies");
            for (n, pair) in cycle.windows(2).enumerate() {
                let (from, to) = (&drafts[pair[0]], &drafts[pair[1]]);
                let Some(dep) = from.deps.iter().find(|d| d.name == to.name) else {
                    continue;
                };
                let label = format!("`{}` depends on `{}`", from.name, to.name);
                diagnostic = if n == 0 {
                    diagnostic.at(dep.span.clone(), label)
                } else {
                    diagnostic.also(dep.span.clone(), label)
                };
            }
            self.error(diagnostic);
        }
        None
    }

    /// Two declarations of one port, or a proxy listening where a service does.
    fn port_clashes(&mut self, drafts: &[Draft]) {
        #[derive(PartialEq)]
        enum Kind {
            Declared,
            Listen,
            Upstream,
        }
        struct Claim<'a> {
            port: Port,
            span: Range<usize>,
            what: String,
            owner: &'a str,
            kind: Kind,
        }
        let mut claims: Vec<Claim> = Vec::new();
        for draft in drafts {
            for (port, span) in &draft.ports {
                let what = format!("port {port} of `{}`", draft.name);
                claims.push(Claim {
                    port: *port,
                    span: span.clone(),
                    what,
                    owner: &draft.name,
                    kind: Kind::Declared,
                });
            }
            if let Some(proxy) = &draft.proxy {
                let mut add = |(addr, span): &(SocketAddr, Range<usize>), kind: Kind| {
                    let role = if kind == Kind::Listen {
                        "listen"
                    } else {
                        "upstream"
                    };
                    claims.push(Claim {
                        port: Port {
                            ip: Some(addr.ip()),
                            port: addr.port(),
                        },
                        span: span.clone(),
                        what: format!("the proxy {role} {addr} of `{}`", draft.name),
                        owner: &draft.name,
                        kind,
                    });
                };
                add(&proxy.listen, Kind::Listen);
                if let Some(upstream) = &proxy.upstream {
                    add(upstream, Kind::Upstream);
                }
            }
        }
        for (j, later) in claims.iter().enumerate() {
            // A service declaring the port its own proxy forwards to is the normal case.
            let compatible = |earlier: &Claim| {
                earlier.owner == later.owner
                    && matches!(
                        (&earlier.kind, &later.kind),
                        (Kind::Declared, Kind::Upstream) | (Kind::Upstream, Kind::Declared)
                    )
            };
            let Some(earlier) = claims[..j]
                .iter()
                .find(|c| c.port.overlaps(&later.port) && !compatible(c))
            else {
                continue;
            };
            let help = if later.kind == Kind::Listen || earlier.kind == Kind::Listen {
                "clients connect to the proxy's `listen`; the service itself must listen elsewhere, on the proxy's `upstream`"
            } else if earlier.owner == later.owner {
                "remove the duplicate"
            } else {
                "give each service its own port"
            };
            self.error(
                Diagnostic::error(
                    "port-clash",
                    format!("{} clashes with {}", later.what, earlier.what),
                )
                .at(later.span.clone(), "")
                .also(earlier.span.clone(), "already claimed here")
                .help(help),
            );
        }
    }
}
