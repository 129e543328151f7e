//! The validated configuration: what the rest of muster runs from.
//!
//! A [`Spec`] can only be built by `config::load`, after every check has passed, so code
//! that holds one may rely on it: names are safe, every dependency exists and the graph
//! has no cycle, durations and signals are parsed, paths are absolute. Types here are
//! plain data with no I/O; they compare by value so that a reload can tell exactly which
//! services changed.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;

pub use crate::event::{EVENT_KINDS, EventKind};
pub use crate::name::{MAX_NAME_LEN, NameError, ServiceName};

/// How long a client may wait for a service with no readiness probe (and so no start
/// deadline of its own).
pub const DEFAULT_START_WAIT: Duration = Duration::from_secs(60);

/// Everything in one `muster.toml`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The config file, absolute.
    pub path: PathBuf,
    pub settings: Settings,
    /// Shared with the supervisor's actors, which hold each definition while the spec
    /// holds it too (a definition is about 1 KiB).
    pub services: BTreeMap<ServiceName, Arc<Service>>,
    /// The start order: each wave holds the services whose dependencies are all in
    /// earlier waves, so a wave can start in parallel. Every service is in exactly one.
    pub waves: Vec<Vec<ServiceName>>,
    pub hooks: Vec<Hook>,
    /// `[router]`: where OpenAI-style requests are routed to services by model.
    pub router: Option<RouterSettings>,
    /// `[pools.NAME]`: budgets that services share.
    pub pools: BTreeMap<String, Pool>,
    /// Services with `replicas`, by the name in the file; their instances are in
    /// `services` as `NAME.0` ….
    pub replica_sets: BTreeMap<ServiceName, ReplicaSet>,
    /// The config as it was read, to expand again with other counts (`muster scale`).
    pub origin: Origin,
    /// `[cluster]`: the hosts this one shares singletons with, through etcd.
    pub cluster: Option<ClusterSettings>,
}

/// A service run as several instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSet {
    /// How many run now.
    pub count: u32,
    /// How many the file asks for.
    pub declared: u32,
}

/// Which instance of which set a service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub set: ServiceName,
    pub index: u32,
}

/// The files of a config as they were read (and the variables their `${...}` saw), so
/// that it can be expanded again without reading the files anew: `muster scale` changes
/// a count, never the rest of the config. Not part of what a config means: two specs
/// compare equal whatever their origin.
#[derive(Clone, Default)]
pub struct Origin(pub(super) Option<std::sync::Arc<super::sources::Sources>>);

impl PartialEq for Origin {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Origin")
    }
}

/// `[cluster]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Keeps clusters that share one etcd apart: every key is under `/muster/NAME/`.
    pub name: String,
    /// Client URLs of the etcd members (`http://host:port`, no path).
    pub etcd: Vec<String>,
    /// This host's name in the cluster (default: the hostname).
    pub host: String,
    /// The address other hosts reach this host's services at.
    pub advertise: String,
    pub lease_ttl: std::time::Duration,
}

/// `singleton = true`: the service runs on exactly one host of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Singleton {
    /// The candidate hosts; empty: every host whose config has the service.
    pub hosts: Vec<String>,
}

impl Singleton {
    pub fn is_candidate(&self, host: &str) -> bool {
        self.hosts.is_empty() || self.hosts.iter().any(|h| h == host)
    }
}

impl Spec {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.get(name).map(|service| &**service)
    }

    /// Every one-shot (see [`Self::is_one_shot`]), in one pass over the dependencies.
    pub fn one_shots(&self) -> std::collections::BTreeSet<&ServiceName> {
        self.services
            .values()
            .flat_map(|service| &service.depends_on)
            .filter(|dep| dep.condition == Condition::Completed)
            .map(|dep| &dep.service)
            .collect()
    }

    /// Whether `name` is a one-shot: a service another waits on with `condition =
    /// "completed"`, which is how a config says so. Its outcome is completing, not
    /// being up.
    pub fn is_one_shot(&self, name: &str) -> bool {
        self.services.values().any(|service| {
            service
                .depends_on
                .iter()
                .any(|dep| dep.service.as_str() == name && dep.condition == Condition::Completed)
        })
    }

    /// The longest a start of `name` may take: its own start deadline after the slowest
    /// chain of its dependencies' deadlines. A service with no readiness probe (and so
    /// no deadline of its own) counts [`DEFAULT_START_WAIT`].
    pub fn start_budget(&self, name: &ServiceName) -> Duration {
        // Memoized: each service's budget is computed once, so a diamond-shaped graph
        // costs its size, not the number of its paths. The graph is acyclic (checked at
        // load).
        fn budget(
            spec: &Spec,
            name: &ServiceName,
            known: &mut BTreeMap<ServiceName, Duration>,
        ) -> Duration {
            if let Some(done) = known.get(name) {
                return *done;
            }
            let Some(service) = spec.services.get(name) else {
                return Duration::ZERO;
            };
            let own = service
                .ready
                .as_ref()
                .map_or(DEFAULT_START_WAIT, |ready| ready.timeout);
            let deps = service
                .depends_on
                .iter()
                .map(|dep| budget(spec, &dep.service, known))
                .max()
                .unwrap_or_default();
            let total = own.saturating_add(deps);
            known.insert(name.clone(), total);
            total
        }
        budget(self, name, &mut BTreeMap::new())
    }

    /// The service that serves `model` (a name or an alias), with its routing.
    pub fn route_of(&self, model: &str) -> Option<(&Service, &Routing)> {
        self.services.values().find_map(|service| {
            let routing = service.routing.as_ref()?;
            routing
                .models
                .iter()
                .any(|m| m == model)
                .then_some((&**service, routing))
        })
    }

    /// The services a name stands for: the instances of a set with `replicas`, in
    /// order, or the one service of that name.
    pub fn members(&self, name: &str) -> Vec<ServiceName> {
        if let Some((set, replicas)) = self.replica_sets.get_key_value(name) {
            return (0..replicas.count).map(|i| set.instance(i)).collect();
        }
        self.services
            .get_key_value(name)
            .map(|(name, _)| vec![name.clone()])
            .unwrap_or_default()
    }

    /// The wave (0-based) a service starts in.
    pub fn wave_of(&self, name: &str) -> Option<usize> {
        self.waves
            .iter()
            .position(|wave| wave.iter().any(|n| n.as_str() == name))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Socket, database and logs live here; absolute.
    pub state_dir: PathBuf,
    pub shutdown_timeout: Duration,
    pub logs: LogSettings,
    pub api: Option<ApiSettings>,
    pub history: HistorySettings,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// A service's log file is rotated when it reaches this many bytes.
    pub max_size: u64,
    /// How many rotated files are kept beside the current one.
    pub keep: u32,
    /// How many recent lines of each service are kept in memory for the API.
    pub tail_lines: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    pub listen: SocketAddr,
    /// Token that may read and control.
    pub token_file: Option<PathBuf>,
    /// Token that may only read.
    pub read_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HistorySettings {
    pub max_events: u64,
    pub max_age: Duration,
}

/// One supervised service.
#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: ServiceName,
    pub description: Option<String>,
    pub run: Run,
    /// Working directory, absolute.
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Read at each spawn, in order; `env` wins over them.
    pub env_files: Vec<PathBuf>,
    /// What those files said when the config was loaded: part of the service's
    /// definition, so that a reload restarts a service whose env file was edited.
    pub env_file_values: EnvFileValues,
    pub ports: Vec<Port>,
    /// `None`: ready as soon as the process is spawned.
    pub ready: Option<ReadyProbe>,
    pub alive: Option<AliveProbe>,
    pub on_unhealthy: OnUnhealthy,
    pub watchdog: Option<Duration>,
    pub wait_for_ports: bool,
    pub restart: RestartPolicy,
    pub backoff: Backoff,
    pub restart_limit: RestartLimit,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub depends_on: Vec<Dependency>,
    pub autostart: bool,
    pub proxy: Option<Proxy>,
    pub idle_stop: Option<Duration>,
    /// For a program that can only run in the background: the file it writes its
    /// daemon's pid to. muster supervises that process once the launcher exits 0.
    pub pidfile: Option<PathBuf>,
    /// `port`: the port given to each run, as `$PORT` and `{port}`.
    pub port: Option<AssignedPort>,
    /// `models` and what goes with them: how the router reaches this service.
    pub routing: Option<Routing>,
    /// `pool` and `memory`: the budget this service draws on.
    pub member: Option<Membership>,
    /// Who the process runs as, its umask, priority and limits.
    pub process: ProcessSettings,
    /// `reload-signal`: what `muster reload NAME` sends instead of restarting it.
    pub reload_signal: Option<Signal>,
    /// For an instance of a service with `replicas`: which one.
    pub replica: Option<Replica>,
    /// `singleton = true` (with `hosts`): one instance across the cluster.
    pub singleton: Option<Singleton>,
    /// `depends-on` entries `NAME@HOST`: services of other hosts of the cluster.
    pub remote_deps: Vec<RemoteDependency>,
}

/// `NAME@HOST` in `depends-on`: a service of another host, waited for through what
/// that host publishes in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteDependency {
    pub service: ServiceName,
    pub host: String,
    pub condition: Condition,
}

impl fmt::Display for RemoteDependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.service, self.host)
    }
}

impl Service {
    /// Whether `other` runs the same process: they differ at most in how the router
    /// reaches them and in their pool, which a reload applies without a restart.
    /// Nor does a dependency on a set whose count changed (`muster scale`): the process
    /// is the same, and it waits for the instances there are at its next start.
    pub fn same_process(&self, other: &Service) -> bool {
        let process = |service: &Service| Service {
            routing: None,
            member: None,
            depends_on: service
                .depends_on
                .iter()
                .map(|dep| Dependency {
                    service: dep
                        .service
                        .replica_of()
                        .and_then(|(set, _)| ServiceName::new(set).ok())
                        .unwrap_or_else(|| dep.service.clone()),
                    ..dep.clone()
                })
                .fold(Vec::new(), |mut deps, dep| {
                    if !deps.contains(&dep) {
                        deps.push(dep);
                    }
                    deps
                }),
            ..service.clone()
        };
        process(self) == process(other)
    }

    /// The service as one run sees it: `{port}` replaced by `port` wherever a run reads
    /// it (command, env, probes, route target).
    pub fn with_port(&self, port: u16) -> Service {
        let fill = |text: &String| text.replace(PORT_PLACEHOLDER, &port.to_string());
        let check = |check: &Check| match check {
            Check::Tcp { host, port: 0 } => Check::Tcp {
                host: host.clone(),
                port,
            },
            Check::Http { url, status, body } => Check::Http {
                url: fill(url),
                status: *status,
                body: body.clone(),
            },
            Check::Exec(argv) => Check::Exec(argv.iter().map(fill).collect()),
            other => other.clone(),
        };
        let mut run = self.clone();
        run.run = match &self.run {
            Run::Argv(argv) => Run::Argv(argv.iter().map(fill).collect()),
            Run::Shell(line) => Run::Shell(fill(line)),
        };
        run.env = self
            .env
            .iter()
            .map(|(key, value)| (key.clone(), fill(value)))
            .collect();
        if let Some(ready) = &mut run.ready {
            ready.check = check(&ready.check);
        }
        if let Some(alive) = &mut run.alive {
            alive.check = check(&alive.check);
        }
        if let Some(routing) = &mut run.routing
            && routing.upstream.port.is_none()
        {
            routing.upstream.port = Some(port);
        }
        run
    }
}

/// How a service's process is set up between fork and exec (who it runs as, its umask,
/// priority and resource limits), and what the kernel holds its whole group to
/// (`memory-max`, `cpu-max`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessSettings {
    /// `user`, as written: a name or a number. Looked up again at each start.
    pub user: Option<String>,
    /// `group`, as written.
    pub group: Option<String>,
    pub umask: Option<u32>,
    pub nice: Option<i32>,
    pub oom_score_adj: Option<i32>,
    /// `limits`, in the order of their names.
    pub limits: Vec<Limit>,
    /// `memory-max`, in bytes.
    pub memory_max: Option<u64>,
    /// `cpu-max`, in thousandths of a CPU: 1500 is one and a half.
    pub cpu_max: Option<u32>,
}

impl ProcessSettings {
    /// Whether the child needs anything done between fork and exec.
    pub fn needs_setup(&self) -> bool {
        self.user.is_some()
            || self.group.is_some()
            || self.umask.is_some()
            || self.nice.is_some()
            || self.oom_score_adj.is_some()
            || !self.limits.is_empty()
    }

    /// Whether the kernel is asked to hold the group to a limit.
    pub fn wants_cgroup(&self) -> bool {
        self.memory_max.is_some() || self.cpu_max.is_some()
    }
}

/// One `limits` entry: a resource limit set with `setrlimit` in the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub resource: nix::sys::resource::Resource,
    /// Its key under `limits` (`nofile`), for messages.
    pub name: &'static str,
    /// [`nix::sys::resource::RLIM_INFINITY`] for "unlimited".
    pub soft: u64,
    pub hard: u64,
}

/// Where a run's port goes in the strings of its definition.
pub const PORT_PLACEHOLDER: &str = "{port}";

/// `port = 8000` or `port = "auto"` (a free port chosen at each start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignedPort {
    Fixed(u16),
    Auto,
}

/// How the router reaches a service and how much it may send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// The model names (and aliases) routed to this service.
    pub models: Vec<String>,
    pub upstream: Upstream,
    /// Requests forwarded at once; more wait in the queue.
    pub max_concurrent: Option<usize>,
    /// Requests allowed to wait (for the load, or for a slot); more get 429.
    pub max_queued: usize,
}

/// Where routed requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    /// `None`: the run's `{port}`.
    pub port: Option<u16>,
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match self.port {
            Some(port) => write!(f, "{host}:{port}"),
            None => write!(f, "{host}:{PORT_PLACEHOLDER}"),
        }
    }
}

/// A service's share of a pool's budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub pool: String,
    /// Bytes it holds while it runs (in a `capacity` pool).
    pub memory: Option<u64>,
}

/// `[router]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterSettings {
    pub listen: SocketAddr,
    /// The largest request body accepted, in bytes.
    pub max_body: u64,
    /// How long a request may wait for its model (queue and load) before a 504;
    /// `None`: the model's own start deadline.
    pub request_timeout: Option<Duration>,
}

/// Services that share a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    pub name: String,
    pub budget: Budget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// One member runs at a time.
    Exclusive,
    /// The members running hold at most this many bytes (their `memory`).
    Capacity(u64),
}

impl Budget {
    /// What a member costs against this budget.
    pub fn cost(&self, member: &Membership) -> u64 {
        match self {
            Budget::Exclusive => 1,
            Budget::Capacity(_) => member.memory.unwrap_or(0),
        }
    }

    pub fn limit(&self) -> u64 {
        match self {
            Budget::Exclusive => 1,
            Budget::Capacity(bytes) => *bytes,
        }
    }
}

/// The `KEY=VALUE` pairs of a service's env files, in order, as read at load time.
///
/// Env files hold secrets as often as `env` does, so the values never leave this type
/// except through [`EnvFileValues::pairs`]: `Debug` shows the names only, and there is
/// no `Serialize`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvFileValues(Vec<(String, String)>);

impl EnvFileValues {
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        Self(pairs)
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

impl fmt::Debug for EnvFileValues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("EnvFileValues")
            .field("names", &names)
            .finish_non_exhaustive()
    }
}

/// What is executed: an argv (never through a shell) or an explicit shell line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    Argv(Vec<String>),
    Shell(String),
}

/// A port the service will listen on: checked free before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Port {
    /// `None` means every local address.
    pub ip: Option<IpAddr>,
    pub port: u16,
}

impl Port {
    /// Whether two declarations would fight over the same socket.
    pub fn overlaps(&self, other: &Port) -> bool {
        self.port == other.port
            && match (self.ip, other.ip) {
                (Some(a), Some(b)) => a == b || a.is_unspecified() || b.is_unspecified(),
                _ => true,
            }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            Some(ip) => write!(f, "{}", SocketAddr::new(ip, self.port)),
            None => write!(f, "{}", self.port),
        }
    }
}

/// What a probe checks.
#[derive(Debug, Clone)]
pub enum Check {
    /// A TCP connection succeeds. Port 0 stands for the run's `{port}`.
    Tcp { host: String, port: u16 },
    /// A GET answers with `status` (or any 2xx), and the body holds `body` if given.
    Http {
        url: String,
        status: Option<u16>,
        body: Option<String>,
    },
    /// The command exits 0.
    Exec(Vec<String>),
    /// A line of the service's output matches.
    Log(regex::Regex),
    /// The service sends `READY=1` on its `NOTIFY_SOCKET`.
    Notify,
}

impl Check {
    /// The probe in a few words, as reasons show it: `tcp 127.0.0.1:5433`.
    pub fn describe(&self) -> String {
        match self {
            Check::Tcp { host, port: 0 } => format!("tcp {host}:{PORT_PLACEHOLDER}"),
            Check::Tcp { host, port } => format!("tcp {host}:{port}"),
            Check::Http { url, .. } => format!("http {url}"),
            Check::Exec(argv) => format!(
                "exec `{}`",
                shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| argv.join(" "))
            ),
            Check::Log(regex) => format!("log /{}/", regex.as_str()),
            Check::Notify => "notify (READY=1)".to_owned(),
        }
    }

    /// Whether muster runs the check on an interval (rather than being told).
    pub fn polls(&self) -> bool {
        matches!(
            self,
            Check::Tcp { .. } | Check::Http { .. } | Check::Exec(_)
        )
    }
}

impl PartialEq for Check {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Check::Tcp { host: h1, port: p1 }, Check::Tcp { host: h2, port: p2 }) => {
                h1 == h2 && p1 == p2
            }
            (
                Check::Http {
                    url: u1,
                    status: s1,
                    body: b1,
                },
                Check::Http {
                    url: u2,
                    status: s2,
                    body: b2,
                },
            ) => u1 == u2 && s1 == s2 && b1 == b2,
            (Check::Exec(a), Check::Exec(b)) => a == b,
            // Regexes compare by their source: the same pattern is the same check.
            (Check::Log(a), Check::Log(b)) => a.as_str() == b.as_str(),
            (Check::Notify, Check::Notify) => true,
            _ => false,
        }
    }
}

/// How readiness is proven after a spawn.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadyProbe {
    pub check: Check,
    /// Time between attempts of a polling check (tcp, http, exec).
    pub interval: Duration,
    /// The start deadline: not ready by then means the start failed.
    pub timeout: Duration,
}

/// How a running service is kept under watch.
#[derive(Debug, Clone, PartialEq)]
pub struct AliveProbe {
    pub check: Check,
    pub interval: Duration,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Consecutive failures before the service is `unhealthy`.
    pub failures: u32,
    /// Consecutive successes before an unhealthy service is `healthy` again.
    pub successes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnUnhealthy {
    /// Restart it per the `restart` policy.
    Restart,
    /// Only record and show it.
    Report,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Never,
    OnFailure,
    Always,
}

impl RestartPolicy {
    pub const NAMES: &'static [&'static str] = &["never", "on-failure", "always"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "never" => Some(Self::Never),
            "on-failure" => Some(Self::OnFailure),
            "always" => Some(Self::Always),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// After this long healthy, the next restart starts again from `initial`.
    pub reset_after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartLimit {
    /// More than this many restarts within `within` and the service is `failed`.
    pub count: u32,
    pub within: Duration,
}

/// What a dependent waits for before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    /// The process has been spawned.
    Started,
    /// The readiness probe passed (the default).
    Healthy,
    /// It exited with status 0 (a one-shot such as a migration).
    Completed,
}

impl Condition {
    pub const NAMES: &'static [&'static str] = &["started", "healthy", "completed"];

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "started" => Some(Self::Started),
            "healthy" => Some(Self::Healthy),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Healthy => "healthy",
            Self::Completed => "completed",
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    pub service: ServiceName,
    pub condition: Condition,
    /// `restart = true`: when the dependency gets a new run, this service is stopped
    /// and started again once the dependency meets the condition.
    pub restart: bool,
}

/// A listener muster owns in front of the service, starting it on first use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxy {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
    /// Answer waiting HTTP requests with 503/504 and a JSON cause instead of closing.
    pub http: bool,
    pub request_timeout: Option<Duration>,
    /// Connections allowed to wait for a start; more are refused at once.
    pub max_pending: usize,
}

/// A command run when matching events happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The kinds of event it runs for.
    pub on: Vec<EventKind>,
    /// `None`: every service.
    pub services: Option<Vec<ServiceName>>,
    pub run: Vec<String>,
    pub timeout: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_use_a_safe_alphabet() {
        for good in ["db", "api-2", "model_server", "0cache"] {
            assert!(ServiceName::new(good).is_ok(), "{good}");
        }
        assert_eq!(ServiceName::new(""), Err(NameError::Empty));
        assert_eq!(ServiceName::new("-x"), Err(NameError::BadStart));
        assert_eq!(ServiceName::new("Db"), Err(NameError::BadStart));
        assert_eq!(ServiceName::new("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(ServiceName::new("a.b"), Err(NameError::BadChar('.')));
        assert!(ServiceName::new("web.0").is_ok());
        assert!(ServiceName::new("web.999").is_ok());
        assert_eq!(ServiceName::new("web.01"), Err(NameError::BadInstance));
        assert_eq!(ServiceName::new("web.1000"), Err(NameError::BadInstance));
        assert_eq!(
            ServiceName::new("web.").err(),
            Some(NameError::BadChar('.'))
        );
        assert_eq!(ServiceName::new(".0"), Err(NameError::BadStart));
        assert_eq!(ServiceName::new("../x"), Err(NameError::BadStart));
        assert_eq!(
            ServiceName::new(&"a".repeat(64)),
            Err(NameError::TooLong(64))
        );
    }

    #[test]
    fn env_file_values_compare_by_value_and_never_show_them() {
        let one = EnvFileValues::new(vec![("TOKEN".into(), "hunter2".into())]);
        let two = EnvFileValues::new(vec![("TOKEN".into(), "hunter3".into())]);
        assert_ne!(one, two);
        assert_eq!(one, one.clone());
        let shown = format!("{one:?} {one:#?}");
        assert!(shown.contains("TOKEN"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn ports_overlap_on_the_same_number_unless_both_addresses_differ() {
        let any = Port { ip: None, port: 80 };
        let local: Port = Port {
            ip: Some("127.0.0.1".parse().unwrap()),
            port: 80,
        };
        let other: Port = Port {
            ip: Some("127.0.0.2".parse().unwrap()),
            port: 80,
        };
        let wildcard: Port = Port {
            ip: Some("0.0.0.0".parse().unwrap()),
            port: 80,
        };
        assert!(any.overlaps(&local));
        assert!(local.overlaps(&local));
        assert!(!local.overlaps(&other));
        assert!(wildcard.overlaps(&other));
        assert!(!local.overlaps(&Port { ip: None, port: 81 }));
    }
}
