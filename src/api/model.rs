//! The API's documents as types: what each endpoint answers. The handlers serialize
//! these, and the OpenAPI document (`GET /v1/openapi.json`) is generated from the same
//! definitions, so the two cannot drift apart.

use serde::Serialize;
use utoipa::ToSchema;

use crate::supervisor::actor::ProbeOutcome;
use crate::supervisor::logs::Stream;
use crate::supervisor::{Phase, ReloadReport, ServiceHandle};

/// `GET /v1/services`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceList {
    /// Whether the bootstrap has settled: every selected service reached its condition,
    /// failed, or waits on one that failed.
    pub booted: bool,
    pub services: Vec<ServiceView>,
    /// Why events cannot be written to the history database at the moment (they are
    /// kept in memory and supervision goes on); absent when all is well.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_problem: Option<String>,
}

/// A service: its live status and what the config declares.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceView {
    pub name: String,
    pub description: Option<String>,
    pub state: Phase,
    /// Why it is in that state, in one line.
    pub reason: String,
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
    /// Whether it starts with the graph (false: on demand, through `ensure`).
    pub autostart: bool,
    /// With `idle-stop`: stopped after this many seconds without use.
    pub idle_stop_seconds: Option<f64>,
    pub proxy: Option<ProxyView>,
    /// In the list only: whether `muster up` selected it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selected: Option<bool>,
}

/// The proxy in front of a service, and its numbers since the supervisor started.
#[derive(Debug, Serialize, ToSchema)]
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

/// The last probe attempt.
#[derive(Debug, Serialize, ToSchema)]
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
            autostart: handle.service.autostart,
            idle_stop_seconds: handle.service.idle_stop.map(|d| d.as_secs_f64()),
            proxy: ProxyView::of(handle),
            selected: None,
        }
    }
}

fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Every error: `{"error": {...}}` with a fitting status code.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable: `unknown-service`, `not-found`, `bad-request`, `not-healthy`, `timeout`,
    /// `invalid-config`, `unauthorized`, `forbidden`, `too-large`.
    pub kind: String,
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
}

/// `GET /v1/events` without `follow`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    pub events: Vec<crate::supervisor::Event>,
}

/// One line of `GET /v1/services/{name}/logs` and `GET /v1/logs` (JSON Lines).
#[derive(Debug, Serialize, ToSchema)]
pub struct LogLine {
    pub service: String,
    /// RFC 3339.
    pub time: String,
    pub stream: Stream,
    pub text: String,
}

/// `POST /v1/reload`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reloaded {
    pub reloaded: ReloadReport,
}

/// `POST /v1/shutdown`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShuttingDown {
    pub shutting_down: bool,
}
