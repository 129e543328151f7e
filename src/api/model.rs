//! The API's documents as types: what each endpoint answers. The handlers serialize
//! these, the OpenAPI document (`GET /v1/openapi.json`) is generated from the same
//! definitions, and the CLI deserializes them: server, document and client cannot drift
//! apart.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::supervisor::actor::ProbeOutcome;
use crate::supervisor::logs::Stream;
use crate::supervisor::{Lifecycle, Phase, ReloadReport, ServiceHandle, Target};

/// `GET /v1/services`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceList {
    /// Where the supervisor is in its life: `booting` while it starts the selected
    /// services, `running` once it has launched them all, then `shutting-down` and
    /// `done`.
    pub lifecycle: Lifecycle,
    /// Whether the bootstrap has settled: every selected service reached its condition,
    /// failed, or waits on one that failed. Once true it stays true, whatever happens
    /// to the services later.
    pub booted: bool,
    /// Whether each running service's `resources` were read: by default only when at
    /// most 500 services run (`?resources=true` asks for them whatever the number).
    #[serde(default = "yes")]
    pub resources_read: bool,
    pub services: Vec<ServiceView>,
    /// Why events cannot be written to the history database at the moment (they are
    /// kept in memory and supervision goes on); absent when all is well.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_problem: Option<String>,
}

fn yes() -> bool {
    true
}

/// A service: its live status and what the config declares.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ServiceView {
    pub name: String,
    pub description: Option<String>,
    pub state: Phase,
    /// Why it is in that state, in one line.
    pub reason: String,
    /// Failed because this dependency will not meet its condition: the next link of the
    /// cause chain.
    #[serde(default)]
    pub blocked_by: Option<String>,
    /// The process group leader of the current run.
    pub pid: Option<u32>,
    /// The current (or last) run; 0 before the first spawn.
    pub run_id: u64,
    /// When it entered its state (RFC 3339).
    pub since: String,
    /// Seconds since it became healthy, while it runs.
    pub uptime_seconds: Option<f64>,
    pub restarts: u32,
    /// How the last run ended: "exited with status 1", "killed by SIGKILL".
    pub last_exit: Option<String>,
    pub last_probe: Option<ProbeView>,
    /// Failed probe attempts since the supervisor started: liveness ones, and readiness
    /// ones too (a service that takes a while to listen fails several while starting).
    pub probe_failures: u64,
    /// The last `STATUS=` text the service sent on the notify socket.
    pub notify_status: Option<String>,
    /// `reloading` or `stopping`, when the service said so on the notify socket.
    pub notify_state: Option<String>,
    /// The main pid the service named with `MAINPID=`.
    pub main_pid: Option<u32>,
    /// Declared ports, as `host:port`.
    pub ports: Vec<String>,
    /// What it waits on before it starts, each with the condition it waits for.
    #[serde(default)]
    pub depends_on: Vec<DependsOn>,
    /// Whether it starts with the graph (false: on demand, through `ensure`).
    pub autostart: bool,
    /// With `idle-stop`: stopped after this many seconds without use.
    pub idle_stop_seconds: Option<f64>,
    pub proxy: Option<ProxyView>,
    /// The port of the current (or last) run, for a service with `port`.
    #[serde(default)]
    pub port: Option<u16>,
    /// The models the router sends here, and its numbers.
    #[serde(default)]
    pub models: Option<ModelsView>,
    /// What its processes use now, while it has any: read when `GET /v1/services` or
    /// `GET /v1/services/{name}` is answered (absent from other answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesView>,
    /// With `reload-signal`: what `muster reload NAME` sends it instead of a restart.
    #[serde(default)]
    pub reload_signal: Option<String>,
    /// For an instance of a service with `replicas`: that service's name (`web` for
    /// `web.2`) and the instance's number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaView>,
    /// In the list only: whether `muster up` selected it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected: Option<bool>,
    /// A singleton (`[cluster]`): where it runs, while some host owns it, which may be
    /// another host (then `state` and the rest are this host's idle copy's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub singleton: Option<crate::cluster::view::Placement>,
}

/// Which instance of which service with `replicas`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplicaView {
    /// The service's name in the config.
    pub of: String,
    /// The instance's number (`MUSTER_REPLICA`).
    pub index: u32,
}

/// One dependency of a service.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DependsOn {
    /// A service of this host, or `NAME@HOST`, another host's (`[cluster]`).
    pub service: String,
    /// `started`, `healthy` or `completed`.
    pub condition: String,
}

/// What a service's process group uses, read from `/proc` as the request is answered.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResourcesView {
    /// CPU time used, in percent of one CPU (200: two CPUs busy), over
    /// `cpu_interval_seconds`: since the reading the previous status request took (by
    /// any client, `/metrics` included), or, when that was less than 0.1 s ago, the
    /// share it measured. A run not read before is measured since its start when it
    /// started less than 2 s ago, else over a sampling of 0.25 s while answering.
    pub cpu_percent: f64,
    pub cpu_interval_seconds: f64,
    /// Resident memory of every process in its group, summed (pages they share are
    /// counted once per process).
    pub memory_rss_bytes: u64,
    /// Proportional memory of every process in its group, summed: shared pages divided
    /// among those sharing them. Absent when it cannot be read.
    pub memory_pss_bytes: Option<u64>,
    /// Live processes in its group.
    pub processes: u32,
}

impl From<&crate::supervisor::resources::Use> for ResourcesView {
    fn from(used: &crate::supervisor::resources::Use) -> Self {
        Self {
            cpu_percent: (used.cpu_percent * 10.0).round() / 10.0,
            cpu_interval_seconds: (used.cpu_interval.as_secs_f64() * 1000.0).round() / 1000.0,
            memory_rss_bytes: used.rss,
            memory_pss_bytes: used.pss,
            processes: used.processes,
        }
    }
}

/// The proxy in front of a service, and its numbers since the supervisor started.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProxyView {
    /// Where clients connect.
    pub listen: String,
    /// Where the service listens.
    pub upstream: String,
    /// Connections open now (waiting or forwarded).
    pub open_connections: u64,
    /// Connections waiting for a start now.
    pub waiting: u64,
    /// Connections forwarded to the service.
    pub served: u64,
    /// Connections turned away (start failed, timed out, or too many waiting).
    pub refused: u64,
    /// Bytes from clients to the service.
    pub bytes_in: u64,
    /// Bytes from the service to clients.
    pub bytes_out: u64,
    /// Time connections spent waiting for starts, summed.
    pub wait_seconds: f64,
}

impl ProxyView {
    fn of(handle: &ServiceHandle) -> Option<Self> {
        use std::sync::atomic::Ordering::Relaxed;
        let proxy = handle.service.proxy.as_ref()?;
        let counters = &handle.usage.proxy;
        Some(Self {
            listen: proxy.listen.to_string(),
            upstream: proxy.upstream.to_string(),
            open_connections: handle.usage.activity().open,
            waiting: counters.waiting.load(Relaxed),
            served: counters.served.load(Relaxed),
            refused: counters.refused.load(Relaxed),
            bytes_in: counters.bytes_in.load(Relaxed),
            bytes_out: counters.bytes_out.load(Relaxed),
            wait_seconds: counters.wait_micros.load(Relaxed) as f64 / 1e6,
        })
    }
}

/// A service's models behind the router, and the router's numbers for it since the
/// supervisor started.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelsView {
    /// The model names and aliases routed here.
    pub names: Vec<String>,
    /// Where requests go: `127.0.0.1:8001` (with `{port}` filled in for the current run).
    pub upstream: String,
    /// The pool whose budget it draws on.
    pub pool: Option<String>,
    /// What it holds in its pool while it runs, in bytes.
    pub memory: Option<u64>,
    /// Requests being answered now.
    pub in_flight: u64,
    /// Requests waiting now: for room, for the load, or for a slot.
    pub queued: u64,
    pub requests: u64,
    /// Requests the router answered with an error itself.
    pub failed: u64,
    /// Starts that requests waited for.
    pub loads: u64,
    /// The time those starts took, summed.
    pub load_seconds: f64,
    /// The time the last of them took.
    pub last_load_seconds: Option<f64>,
    /// Time requests waited before they were sent, summed.
    pub queue_seconds: f64,
    /// Times it was stopped to make room in its pool.
    pub evictions: u64,
    /// When a request last ended (RFC 3339).
    pub last_used: Option<String>,
}

impl ModelsView {
    fn of(handle: &ServiceHandle, port: Option<u16>) -> Option<Self> {
        use std::sync::atomic::Ordering::Relaxed;
        let routing = handle.service.routing.as_ref()?;
        let route = &handle.usage.route;
        let mut upstream = routing.upstream.clone();
        upstream.port = upstream.port.or(port);
        let last_used = route.last_used_ms.load(Relaxed);
        let last_load = route.last_load_micros.load(Relaxed);
        Some(Self {
            names: routing.models.clone(),
            upstream: upstream.to_string(),
            pool: handle.service.member.as_ref().map(|m| m.pool.clone()),
            memory: handle.service.member.as_ref().and_then(|m| m.memory),
            in_flight: route.in_flight.load(Relaxed),
            queued: route.queued.load(Relaxed),
            requests: route.requests.load(Relaxed),
            failed: route.failed.load(Relaxed),
            loads: route.loads.load(Relaxed),
            load_seconds: route.load_micros.load(Relaxed) as f64 / 1e6,
            last_load_seconds: (last_load > 0).then(|| last_load as f64 / 1e6),
            queue_seconds: route.queue_micros.load(Relaxed) as f64 / 1e6,
            evictions: route.evictions.load(Relaxed),
            last_used: (last_used > 0).then(|| {
                rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(last_used))
            }),
        })
    }
}

/// The last probe attempt.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProbeView {
    /// `ready` (readiness) or `alive` (liveness).
    pub kind: String,
    pub ok: bool,
    /// What it saw, or why it failed.
    pub message: String,
    /// RFC 3339.
    pub time: String,
}

impl From<&ProbeOutcome> for ProbeView {
    fn from(outcome: &ProbeOutcome) -> Self {
        Self {
            kind: outcome.kind.to_owned(),
            ok: outcome.ok,
            message: outcome.message.clone(),
            time: rfc3339(outcome.time),
        }
    }
}

impl ServiceView {
    pub fn of(handle: &ServiceHandle) -> Self {
        let status = handle.status();
        let uptime = match status.phase {
            Phase::Healthy | Phase::Unhealthy => {
                status.since.elapsed().ok().map(|d| d.as_secs_f64())
            }
            _ => None,
        };
        Self {
            name: status.service.to_string(),
            description: handle.service.description.clone(),
            state: status.phase,
            reason: status.reason,
            blocked_by: status.blocked_by.as_ref().map(ToString::to_string),
            pid: status.pid,
            run_id: status.run_id,
            since: rfc3339(status.since),
            uptime_seconds: uptime,
            restarts: status.restarts,
            last_exit: status.last_exit,
            last_probe: status.last_probe.as_ref().map(ProbeView::from),
            probe_failures: status.probe_failures,
            notify_status: status.notify_status,
            notify_state: status.notify_state,
            main_pid: status.main_pid,
            ports: handle
                .service
                .ports
                .iter()
                .map(ToString::to_string)
                .collect(),
            depends_on: handle
                .service
                .depends_on
                .iter()
                .map(|dependency| DependsOn {
                    service: dependency.service.to_string(),
                    condition: dependency.condition.as_str().to_owned(),
                })
                .chain(
                    handle
                        .service
                        .remote_deps
                        .iter()
                        .map(|dependency| DependsOn {
                            service: dependency.to_string(),
                            condition: dependency.condition.as_str().to_owned(),
                        }),
                )
                .collect(),
            autostart: handle.service.autostart,
            idle_stop_seconds: handle.service.idle_stop.map(|d| d.as_secs_f64()),
            proxy: ProxyView::of(handle),
            port: status.port,
            models: ModelsView::of(handle, status.port),
            resources: None,
            reload_signal: handle.service.reload_signal.map(|s| s.as_str().to_owned()),
            replica: handle.service.replica.as_ref().map(|r| ReplicaView {
                of: r.set.to_string(),
                index: r.index,
            }),
            selected: None,
            singleton: None,
        }
    }
}

fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Every error: `{"error": {...}}` with a fitting status code.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong, as a stable name for programs (the message is for people, and may
/// be reworded): `unknown-service` (404, no service by that name), `not-found` (404,
/// no such route), `method-not-allowed` (405), `bad-request` (400, a malformed query),
/// `not-healthy` (503, the service cannot be made healthy), `timeout` (504, not
/// healthy in time; 408, a request body that did not arrive), `invalid-config` (422,
/// `reload` of an invalid config), `unauthorized` (401, no valid token), `forbidden`
/// (403, the read token tried to act), `too-large` (413, a request body over the
/// limit), `shutting-down` (409, nothing starts any more), `refused` (409, the request
/// cannot be honoured; the message says why). A service's HTTP proxy answers with
/// these too, and with `busy` (503, too many connections already wait for a start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    UnknownService,
    NotFound,
    MethodNotAllowed,
    BadRequest,
    NotHealthy,
    Timeout,
    InvalidConfig,
    Unauthorized,
    Forbidden,
    TooLarge,
    ShuttingDown,
    Refused,
    Busy,
    /// The config has no `[cluster]`.
    NoCluster,
    /// `[cluster]`: etcd did not answer.
    EtcdUnavailable,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::UnknownService => "unknown-service",
            ErrorKind::NotFound => "not-found",
            ErrorKind::MethodNotAllowed => "method-not-allowed",
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::NotHealthy => "not-healthy",
            ErrorKind::Timeout => "timeout",
            ErrorKind::InvalidConfig => "invalid-config",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::TooLarge => "too-large",
            ErrorKind::ShuttingDown => "shutting-down",
            ErrorKind::Refused => "refused",
            ErrorKind::Busy => "busy",
            ErrorKind::NoCluster => "no-cluster",
            ErrorKind::EtcdUnavailable => "etcd-unavailable",
        }
    }

    /// Every kind.
    pub const ALL: [ErrorKind; 15] = [
        ErrorKind::UnknownService,
        ErrorKind::NotFound,
        ErrorKind::MethodNotAllowed,
        ErrorKind::BadRequest,
        ErrorKind::NotHealthy,
        ErrorKind::Timeout,
        ErrorKind::InvalidConfig,
        ErrorKind::Unauthorized,
        ErrorKind::Forbidden,
        ErrorKind::TooLarge,
        ErrorKind::ShuttingDown,
        ErrorKind::Refused,
        ErrorKind::Busy,
        ErrorKind::NoCluster,
        ErrorKind::EtcdUnavailable,
    ];
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for programs to match on.
    pub kind: ErrorKind,
    pub message: String,
    /// The service concerned, when there is one.
    pub service: Option<String>,
    /// `service: state (reason)`, from the service asked about to the root cause.
    pub cause: Vec<String>,
    /// The root cause's last log lines.
    pub log_tail: Vec<String>,
    /// `invalid-config` only: the diagnostics as `muster check` prints them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    /// `invalid-config` only: the diagnostics as data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diagnostics: Option<Vec<serde_json::Value>>,
    /// `unknown-service` for the name of a service with `replicas`: its instances,
    /// which are the names the per-service endpoints take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instances: Option<Vec<String>>,
}

/// `GET /v1/events` without `follow`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<crate::supervisor::Event>,
}

/// One line of `GET /v1/services/{name}/logs` and `GET /v1/logs` (JSON Lines).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub service: String,
    /// RFC 3339.
    pub time: String,
    pub stream: Stream,
    pub text: String,
}

/// `POST /v1/reload`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Reloaded {
    pub reloaded: ReloadReport,
}

/// `POST /v1/services/{name}/signal`: the signal sent.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Signaled {
    pub service: String,
    /// Its name: `SIGHUP`.
    pub signal: String,
    /// `group`: the run's process group; `main`: its main process only.
    pub target: Target,
    /// The process group's id (its leader's pid), or the main process's pid.
    pub pid: u32,
}

/// `POST /v1/services/{name}/scale`: the instances that run now.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Scaled {
    pub service: String,
    /// How many instances run now.
    pub replicas: u32,
    /// How many the config file asks for.
    pub declared: u32,
    /// Their names, in order: `web.0` ….
    pub instances: Vec<String>,
    /// Instances started and stopped (`added`, `removed`), and those left as they were.
    pub changes: ReloadReport,
}

/// `POST /v1/shutdown`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ShuttingDown {
    pub shutting_down: bool,
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn error_kinds_read_back_and_are_all_listed() {
        for kind in ErrorKind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
            assert_eq!(serde_json::from_value::<ErrorKind>(json).unwrap(), kind);
        }
        // The document's enum is generated from the type: `ALL` misses none of it.
        let schema = serde_json::to_value(<ErrorKind as utoipa::PartialSchema>::schema()).unwrap();
        assert_eq!(
            schema["enum"].as_array().map(Vec::len),
            Some(ErrorKind::ALL.len()),
            "{schema}"
        );
        assert!(serde_json::from_str::<ErrorKind>("\"exploded\"").is_err());
    }
}
