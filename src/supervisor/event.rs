//! Events: past-tense facts about services, numbered and broadcast to every observer.
//!
//! The bus hands out event ids and run ids; the actors publish, the CLI (and later the
//! API and the store) subscribe. A slow subscriber loses the oldest events (it is told
//! how many), never slows the actors down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;

use crate::config::ServiceName;

/// The stable event kinds (the JSON field `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
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
    IdleStopped,
    Reloaded,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
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
            EventKind::IdleStopped => "idle-stopped",
            EventKind::Reloaded => "reloaded",
        }
    }
}

/// One event: `{"id", "time", "service", "run_id", "kind", "message", "data"}`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: u64,
    /// RFC 3339.
    #[serde(serialize_with = "rfc3339")]
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

/// Where events are published.
#[derive(Debug, Clone)]
pub struct EventBus {
    inner: Arc<Counters>,
    sender: broadcast::Sender<Arc<Event>>,
}

#[derive(Debug)]
struct Counters {
    /// Held while an event is numbered and sent, so ids reach subscribers in order.
    next_event: Mutex<u64>,
    next_run: AtomicU64,
}

/// How many events a subscriber may fall behind before it loses the oldest. Slots
/// are allocated up front, so events travel as `Arc`s: a slot is a pointer.
const BACKLOG: usize = 1024;

impl EventBus {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        Self {
            inner: Arc::new(Counters {
                next_event: Mutex::new(1),
                next_run: AtomicU64::new(1),
            }),
            sender,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.sender.subscribe()
    }

    /// A run id no other spawn of this supervisor has.
    pub fn next_run_id(&self) -> u64 {
        self.inner.next_run.fetch_add(1, Ordering::Relaxed)
    }

    pub fn publish(
        &self,
        service: &ServiceName,
        run_id: u64,
        kind: EventKind,
        message: String,
        data: serde_json::Value,
    ) {
        let mut next = self
            .inner
            .next_event
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let event = Event {
            id: *next,
            time: SystemTime::now(),
            service: service.clone(),
            run_id,
            kind,
            message,
            data,
        };
        *next += 1;
        // No subscriber is not an error: the status holds the outcome too.
        let _ = self.sender.send(Arc::new(event));
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}
