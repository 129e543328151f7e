//! The events' vocabulary: the kinds (`spawned`, `ready`, ... as hooks' `on`, the
//! history and the API name them) and the shape of one event. A leaf module, shared by
//! config, the store, the supervisor and the API, so none of them imports another
//! for it.

use std::time::SystemTime;

use serde::Serialize;

use crate::name::ServiceName;

/// Every kind's stable name, as [`EventKind::as_str`] gives it.
pub const EVENT_KINDS: [&str; EventKind::ALL.len()] = {
    let mut names = [""; EventKind::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = EventKind::ALL[i].as_str();
        i += 1;
    }
    names
};

/// The stable event kinds (the JSON field `kind`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Spawned,
    Ready,
    Unhealthy,
    Healthy,
    Exited,
    Restarting,
    Stopping,
    Stopped,
    Completed,
    Failed,
    OrphanStopped,
    IdleStopped,
    Evicted,
    HookFailed,
    Reloaded,
    Signaled,
    /// This host took ownership of a singleton (with its fence).
    Acquired,
    /// This host gave up ownership of a singleton (it was stopped here).
    Released,
    /// This host lost ownership of a singleton, or could no longer be sure of it, and
    /// stopped its instance.
    Fenced,
}

impl EventKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [EventKind; 19] = [
        EventKind::Spawned,
        EventKind::Ready,
        EventKind::Unhealthy,
        EventKind::Healthy,
        EventKind::Exited,
        EventKind::Restarting,
        EventKind::Stopping,
        EventKind::Stopped,
        EventKind::Completed,
        EventKind::Failed,
        EventKind::OrphanStopped,
        EventKind::IdleStopped,
        EventKind::Evicted,
        EventKind::HookFailed,
        EventKind::Reloaded,
        EventKind::Signaled,
        EventKind::Acquired,
        EventKind::Released,
        EventKind::Fenced,
    ];

    /// The kind named `name` (`orphan-stopped`), if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Spawned => "spawned",
            EventKind::Ready => "ready",
            EventKind::Unhealthy => "unhealthy",
            EventKind::Healthy => "healthy",
            EventKind::Exited => "exited",
            EventKind::Restarting => "restarting",
            EventKind::Stopping => "stopping",
            EventKind::Stopped => "stopped",
            EventKind::Completed => "completed",
            EventKind::Failed => "failed",
            EventKind::OrphanStopped => "orphan-stopped",
            EventKind::IdleStopped => "idle-stopped",
            EventKind::Evicted => "evicted",
            EventKind::HookFailed => "hook-failed",
            EventKind::Acquired => "acquired",
            EventKind::Released => "released",
            EventKind::Fenced => "fenced",
            EventKind::Reloaded => "reloaded",
            EventKind::Signaled => "signaled",
        }
    }
}

/// One event: `{"id", "time", "service", "run_id", "kind", "message", "data"}`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Event {
    pub id: u64,
    /// RFC 3339.
    #[serde(serialize_with = "rfc3339", deserialize_with = "from_rfc3339")]
    #[schema(value_type = String)]
    pub time: SystemTime,
    #[schema(value_type = String)]
    pub service: ServiceName,
    /// The run (one spawn) it concerns; 0 when there was none.
    pub run_id: u64,
    pub kind: EventKind,
    /// One line for people.
    pub message: String,
    pub data: serde_json::Value,
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// The reverse of [`rfc3339`], for clients that read events back.
fn from_rfc3339<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(deserializer)?;
    humantime::parse_rfc3339(&text)
        .map_err(|error| serde::de::Error::custom(format!("time {text:?}: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_name() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EVENT_KINDS.len(), EventKind::ALL.len());
    }
}
