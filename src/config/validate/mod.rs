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
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use crate::config::keypath::{KeyPath, Segment};
use crate::config::raw::{RawConfig, RawDuration};
use crate::config::spec::{Condition, Dependency, Port, RestartPolicy, Service, ServiceName, Spec};
use crate::config::values;
use crate::diagnostic::Diagnostic;
use crate::suggest;

mod across;
mod cluster;
mod hooks;
mod probe;
mod process;
mod route;
mod service;
mod settings;
mod state_dir;

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
    pub const ROUTER_MAX_BODY: u64 = 64 << 20;
    pub const ROUTE_MAX_QUEUED: usize = 1024;
    pub const LEASE_TTL: Duration = Duration::from_secs(10);
    /// etcd grants no lease shorter than about 2 s (1.5 election timeouts, rounded up).
    pub const LEASE_TTL_MIN: Duration = Duration::from_secs(2);
    pub const LEASE_TTL_MAX: Duration = Duration::from_secs(3600);
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
    let router = v.router(raw.router.as_ref());
    let cluster = raw.cluster.as_ref().and_then(|c| v.cluster(c));
    let router_span = raw.router.as_ref().map(Spanned::span);
    let pools = v.pools(raw.pools.as_ref());
    let shutdown_span = raw
        .settings
        .as_ref()
        .and_then(|s| s.get_ref().shutdown_timeout.as_ref().map(Spanned::span));

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
    v.routes_across(&drafts, router.as_ref(), router_span, &pools);
    if let Some(settings) = &settings {
        v.stop_outlasts_shutdown(&drafts, settings.shutdown_timeout, shutdown_span);
    }
    let waves = v.waves(&drafts, &edges);
    v.singletons_need_a_cluster(&raw_services, raw.cluster.is_some());
    let hooks = raw
        .hooks
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, hook)| v.hook(i, hook, &known))
        .collect::<Vec<_>>();

    // Advice for a file that is otherwise right; next to errors it would be noise.
    if v.errors > 0 {
        return None;
    }
    v.healthy_without_probe(&drafts);
    // No errors: every dependency names a valid service, so none is dropped here.
    let services: BTreeMap<ServiceName, Arc<Service>> = drafts
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
                        restart: dep.restart,
                    })
                })
                .collect();
            Some((service.name.clone(), Arc::new(service)))
        })
        .collect();
    Some(Spec {
        path: file.to_path_buf(),
        settings: settings?,
        services,
        waves: waves?,
        hooks: hooks.into_iter().collect::<Option<Vec<_>>>()?,
        router,
        pools: pools
            .into_iter()
            .map(|(name, (pool, _))| (name, pool))
            .collect(),
        replica_sets: BTreeMap::new(),
        origin: Default::default(),
        cluster,
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
    route: Option<route::RouteRef>,
    restart: RestartPolicy,
    restart_span: Option<Range<usize>>,
    name_span: Range<usize>,
    stop_timeout_span: Option<Range<usize>>,
}

struct DepRef {
    name: String,
    span: Range<usize>,
    condition: Condition,
    /// `restart = true`: a new run of the dependency restarts this service.
    restart: bool,
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

    /// Records a warning or a note: reported, but the file can still be run.
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
}
