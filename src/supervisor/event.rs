//! Events: past-tense facts about services, numbered and broadcast to every observer.
//!
//! The bus hands out event ids and run ids, continuing from the history's. Actors and
//! the supervisor publish; every entry goes through the history writer, which writes it
//! to the database and only then broadcasts it to subscribers (the API, `muster up`,
//! hooks). A slow subscriber loses the oldest events (it is told how many), never slows
//! the actors down.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{broadcast, watch};

use crate::config::{HistorySettings, ServiceName};
use crate::store::writer::{self, Message, Outlets};
use crate::store::{Entry, LastIds, RunEnd, RunStart, Store};

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
    OrphanStopped,
    IdleStopped,
    HookFailed,
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
            EventKind::OrphanStopped => "orphan-stopped",
            EventKind::IdleStopped => "idle-stopped",
            EventKind::HookFailed => "hook-failed",
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
    inner: Arc<Inner>,
    /// Only the writer sends on it, after the events are written.
    events: broadcast::Sender<Arc<Event>>,
    /// The most recent events released, kept by the writer.
    recent: writer::Recent,
}

#[derive(Debug)]
struct Inner {
    /// Held while entries are numbered and queued, so they reach the writer in order.
    queue: Mutex<Queue>,
    next_run: AtomicU64,
    /// How many queued entries the writer has handled.
    released: watch::Receiver<u64>,
    problem: watch::Receiver<Option<String>>,
}

#[derive(Debug)]
struct Queue {
    next_event: u64,
    /// How many entries have been queued.
    sent: u64,
    writer: std::sync::mpsc::Sender<Message>,
}

/// Something to record about a service, before it is numbered.
#[derive(Debug, Clone)]
pub enum Draft {
    Event {
        kind: EventKind,
        message: String,
        data: serde_json::Value,
    },
    RunStarted(RunStart),
    RunEnded(RunEnd),
}

/// How many events a subscriber may fall behind before it loses the oldest. Slots
/// are allocated up front, so events travel as `Arc`s: a slot is a pointer.
const BACKLOG: usize = 1024;

/// A subscription that takes every event already released each time it waits.
///
/// `broadcast::Receiver::recv` counts against tokio's cooperative budget, so a task
/// looping on it gives the thread back every 128 events and waits its turn again. On
/// the one thread, busy with fifty services crash-looping, that drained about as fast
/// as events came: the in-memory history, hooks and event streams fell [`BACKLOG`]
/// behind and lost events (gaps of about seventy, every second or so, at 1,700
/// events/s). `try_recv` is not budgeted, so a feed empties the channel in one turn.
#[derive(Debug)]
pub struct Feed {
    receiver: broadcast::Receiver<Arc<Event>>,
    ready: VecDeque<Arc<Event>>,
    missed: u64,
}

impl Feed {
    /// The next event, or how many were lost (the oldest go first), or `Closed`.
    /// Cancel-safe: nothing is taken before the only `.await`.
    pub async fn recv(&mut self) -> Result<Arc<Event>, broadcast::error::RecvError> {
        if let Some(event) = self.take() {
            return event;
        }
        let first = self.receiver.recv().await;
        self.fill();
        first
    }

    /// The next event if one is there, without waiting.
    pub fn try_recv(&mut self) -> Result<Arc<Event>, broadcast::error::TryRecvError> {
        if let Some(event) = self.take() {
            return event.map_err(|error| match error {
                broadcast::error::RecvError::Lagged(n) => broadcast::error::TryRecvError::Lagged(n),
                broadcast::error::RecvError::Closed => broadcast::error::TryRecvError::Closed,
            });
        }
        self.receiver.try_recv()
    }

    fn take(&mut self) -> Option<Result<Arc<Event>, broadcast::error::RecvError>> {
        if let Some(event) = self.ready.pop_front() {
            return Some(Ok(event));
        }
        (self.missed > 0).then(|| {
            Err(broadcast::error::RecvError::Lagged(std::mem::take(
                &mut self.missed,
            )))
        })
    }

    /// Moves what the channel holds into `ready`, up to a loss (reported after the
    /// events before it) and at most a backlog's worth.
    fn fill(&mut self) {
        while self.ready.len() < BACKLOG {
            match self.receiver.try_recv() {
                Ok(event) => self.ready.push_back(event),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.missed = n;
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

impl EventBus {
    /// Starts the history writer on `store` (none: events are only released, in
    /// order). Event and run ids continue from the highest the store holds.
    pub fn start(store: Option<Store>, retention: HistorySettings) -> std::io::Result<Self> {
        let last = match &store {
            Some(store) => store.last_ids().unwrap_or_default(),
            None => LastIds::default(),
        };
        let (events, _) = broadcast::channel(BACKLOG);
        let (released_sender, released) = watch::channel(0);
        let (problem_sender, problem) = watch::channel(None);
        let recent = writer::Recent::default();
        let writer = writer::start(
            store,
            retention,
            Outlets {
                events: events.clone(),
                recent: Arc::clone(&recent),
                released: released_sender,
                problem: problem_sender,
            },
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(Queue {
                    next_event: last.event + 1,
                    sent: 0,
                    writer,
                }),
                next_run: AtomicU64::new(last.run + 1),
                released,
                problem,
            }),
            events,
            recent,
        })
    }

    /// The kept events (the last [`super::HISTORY_IN_MEMORY`] released) after `since`.
    /// Subscribe first, then read these: every event is in one or the other.
    pub fn recent(&self, since: u64) -> Vec<Arc<Event>> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        // Ids rise along the queue: skip the older ones without looking at each.
        let start = recent.partition_point(|event| event.id <= since);
        recent.range(start..).cloned().collect()
    }

    /// Events as they are released: after they are written to the history.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    /// Like [`Self::subscribe`], taking whatever has arrived at once: see [`Feed`].
    pub fn feed(&self) -> Feed {
        Feed {
            receiver: self.events.subscribe(),
            ready: VecDeque::new(),
            missed: 0,
        }
    }

    /// A run id no other spawn has had in this state directory.
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
        let draft = Draft::Event {
            kind,
            message,
            data,
        };
        self.publish_step(service, run_id, vec![draft], || {});
    }

    /// Numbers and queues `drafts` for the writer, calling `publish_status` first
    /// under the same lock: whoever sees the new status and then calls [`Self::flush`]
    /// waits for these entries too, and whoever receives the events sees the status.
    pub fn publish_step(
        &self,
        service: &ServiceName,
        run_id: u64,
        drafts: Vec<Draft>,
        publish_status: impl FnOnce(),
    ) {
        let stamped = drafts.into_iter().map(|draft| (run_id, draft));
        self.publish_runs(service, stamped, publish_status);
    }

    /// [`Self::publish_step`] with each event's own run id: one step of an actor can
    /// end a run and spawn the next (a restart, a heal, a zero backoff), and the end of
    /// the old run must not be told under the new run's id.
    pub fn publish_runs(
        &self,
        service: &ServiceName,
        drafts: impl IntoIterator<Item = (u64, Draft)>,
        publish_status: impl FnOnce(),
    ) {
        let mut queue = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        publish_status();
        for (run_id, draft) in drafts {
            let entry = match draft {
                Draft::Event {
                    kind,
                    message,
                    data,
                } => {
                    let event = Event {
                        id: queue.next_event,
                        time: SystemTime::now(),
                        service: service.clone(),
                        run_id,
                        kind,
                        message,
                        data,
                    };
                    queue.next_event += 1;
                    Entry::Event(Arc::new(event))
                }
                Draft::RunStarted(run) => Entry::RunStarted(run),
                Draft::RunEnded(end) => Entry::RunEnded(end),
            };
            // The writer only stops with the process; an entry it cannot take is not
            // counted, so `flush` does not wait for it.
            if queue.writer.send(Message::Entry(entry)).is_ok() {
                queue.sent += 1;
            }
        }
    }

    /// Waits until everything queued so far is written (or, with the database
    /// failing, kept for later) and released.
    pub async fn flush(&self) {
        let target = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sent;
        let mut released = self.inner.released.clone();
        let _ = released.wait_for(|handled| *handled >= target).await;
    }

    /// Writes and releases everything queued, then closes the history cleanly. Entries
    /// published afterwards are dropped: call it last.
    pub async fn close(&self) {
        let (done, closed) = tokio::sync::oneshot::channel();
        let sent = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .writer
            .send(Message::Close(done))
            .is_ok();
        if sent {
            let _ = closed.await;
        }
    }

    /// Why the history cannot be written, while it cannot.
    pub fn problem(&self) -> Option<String> {
        self.inner.problem.borrow().clone()
    }
}
