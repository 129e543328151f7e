//! What observers see of a service: the [`Status`] its actor publishes on a `watch`
//! after every step. A leaf, so that whoever watches a service (idle-stop, gates, the
//! API) needs nothing of the actor itself.

use std::time::SystemTime;

use serde::Serialize;

use super::machine::Phase;
use crate::config::ServiceName;

/// What observers see of a service.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub service: ServiceName,
    pub phase: Phase,
    pub reason: String,
    /// Failed because this dependency will not meet its condition.
    pub blocked_by: Option<ServiceName>,
    pub pid: Option<u32>,
    /// The current (or last) run; 0 before the first spawn.
    pub run_id: u64,
    pub restarts: u32,
    /// When the phase was entered.
    #[serde(serialize_with = "rfc3339")]
    pub since: SystemTime,
    pub last_exit: Option<String>,
    /// The last `STATUS=` the service sent on the notify socket.
    pub notify_status: Option<String>,
    /// What the service last said it is doing: `reloading` (`RELOADING=1`, until the
    /// next `READY=1`) or `stopping` (`STOPPING=1`).
    pub notify_state: Option<String>,
    /// The main pid the service named with `MAINPID=`, when it is in its process group.
    pub main_pid: Option<u32>,
    /// Failed probe attempts (readiness and liveness) since the supervisor started.
    pub probe_failures: u64,
    /// The last readiness or liveness attempt of the current (or last) run.
    pub last_probe: Option<ProbeOutcome>,
    /// The port of the current (or last) run, for a service with `port`.
    pub port: Option<u16>,
    /// How many times the phase has changed: orders statuses without a clock (a
    /// wall-clock `since` can repeat or go back).
    #[serde(skip)]
    pub transitions: u64,
    /// How many demands (an `ensure`, a proxied connection) its spent restart limit
    /// turned down: each is an answer to give at once, though nothing changed.
    #[serde(skip)]
    pub refused_demands: u64,
}

/// One probe attempt's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeOutcome {
    /// `ready` or `alive`.
    pub kind: &'static str,
    pub ok: bool,
    /// What it saw: "tcp 127.0.0.1:8080 accepted", or why it failed.
    pub message: String,
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}
