//! Events: past-tense facts about services, numbered and broadcast to every observer.
//!
//! The bus hands out event ids and run ids, continuing from the history's. Actors and
//! the supervisor publish; every entry goes through the history writer, which writes it
//! to the database and only then broadcasts it to subscribers (the API, `muster up`,
//! hooks). A slow subscriber never slows the actors down, and never loses an event
//! either: a [`Feed`] notices a gap in the ids (event ids are contiguous) and fills it
//! from the events kept in memory, or from the history database beyond those.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tokio::sync::{broadcast, watch};

mod writer;

use crate::config::{HistorySettings, ServiceName};
pub use crate::event::{Event, EventKind};
use crate::store::{Entry, LastIds, RunEnd, RunStart, Store};
pub use writer::HISTORY_IN_MEMORY;
use writer::{Message, Outlets};

/// Where events are published.
#[derive(Debug, Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
    /// Only the writer sends on it, after the events are written.
    /// Weak: the writer holds the one strong sender, so when it has closed the history
    /// every subscription ends (after what was released before).
    events: broadcast::WeakSender<Arc<Event>>,
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
    /// The id the first event of this bus gets.
    first_event: u64,
    /// The history database, read by feeds that fall behind.
    store: Option<std::path::PathBuf>,
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

/// A subscription that hands out every event released after it began, in id order,
/// each once, whatever the reader's pace.
///
/// The broadcast channel is a cache, not the source of truth: it holds [`BACKLOG`]
/// events, and a reader that falls further behind (a `muster up --json` writing to a
/// slow file while a thousand services boot, an SSE client that pauses) would lose the
/// oldest. Event ids are contiguous, so a feed sees a gap as a jump in ids and fills it
/// from the events the writer keeps in memory, or from the database beyond those.
///
/// It also takes every event already waiting at once: `broadcast::Receiver::recv` counts
/// against tokio's cooperative budget, so a task looping on it gives the thread back
/// every 128 events, and on the one thread, busy with a crash loop, that drained about
/// as fast as events came. `try_recv` is not budgeted.
#[derive(Debug)]
pub struct Feed {
    receiver: broadcast::Receiver<Arc<Event>>,
    ready: VecDeque<Arc<Event>>,
    /// The id of the last event handed out (or of the last one before the feed began).
    last: u64,
    recent: writer::Recent,
    /// The history database, to fill a gap older than what is kept in memory.
    store: Option<std::path::PathBuf>,
    closed: bool,
}

impl Feed {
    /// The next event; `None` once the history is closed and every event released
    /// before that was handed out. Cancel-safe: nothing is taken before the only
    /// `.await`.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        loop {
            if let Some(event) = self.next_ready() {
                return Some(event);
            }
            if self.closed {
                return None;
            }
            match self.receiver.recv().await {
                Ok(event) => {
                    self.ready.push_back(event);
                    self.fill();
                }
                // The jump in ids shows what was lost; it is filled then.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => self.closed = true,
            }
        }
    }

    /// The next event if one is there, without waiting.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        if self.ready.is_empty() {
            self.fill();
        }
        self.next_ready()
    }

    /// The id of the last event handed out.
    pub fn last_id(&self) -> u64 {
        self.last
    }

    /// The next event in `ready`, with any gap before it filled first.
    fn next_ready(&mut self) -> Option<Arc<Event>> {
        loop {
            let event = self.ready.pop_front()?;
            if event.id <= self.last {
                continue;
            }
            if event.id > self.last + 1 {
                let missing = self.missing(event.id);
                self.ready.push_front(event);
                for earlier in missing.into_iter().rev() {
                    self.ready.push_front(earlier);
                }
                let first = self.ready.pop_front()?;
                // What the history no longer holds (pruned by retention) cannot be
                // told; the feed goes on from what it has.
                self.last = first.id;
                return Some(first);
            }
            self.last = event.id;
            return Some(event);
        }
    }

    /// Moves what the channel holds into `ready`, at most a backlog's worth.
    fn fill(&mut self) {
        while self.ready.len() < BACKLOG {
            match self.receiver.try_recv() {
                Ok(event) => self.ready.push_back(event),
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(broadcast::error::TryRecvError::Closed) => {
                    self.closed = true;
                    break;
                }
                Err(broadcast::error::TryRecvError::Empty) => break,
            }
        }
    }

    /// The events with ids after `self.last` and before `before`: from memory, and from
    /// the database for what memory no longer holds.
    fn missing(&self, before: u64) -> Vec<Arc<Event>> {
        let after = self.last;
        let kept: Vec<Arc<Event>> = {
            let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            let start = recent.partition_point(|event| event.id <= after);
            recent
                .range(start..)
                .take_while(|event| event.id < before)
                .cloned()
                .collect()
        };
        let oldest_kept = kept.first().map_or(before, |event| event.id);
        if oldest_kept == after + 1 {
            return kept;
        }
        let mut older = self.stored(after, oldest_kept);
        older.extend(kept);
        older
    }

    /// Events with ids in (`after`, `before`) read from the history database.
    fn stored(&self, after: u64, before: u64) -> Vec<Arc<Event>> {
        let Some(path) = &self.store else {
            return Vec::new();
        };
        let Ok(store) = Store::open_existing(path) else {
            return Vec::new();
        };
        store
            .events_between(after, before)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|stored| {
                Some(Arc::new(Event {
                    id: stored.id,
                    time: stored.time,
                    service: ServiceName::new(&stored.service).ok()?,
                    run_id: stored.run_id,
                    kind: EventKind::parse(&stored.kind)?,
                    message: stored.message,
                    data: stored.data,
                }))
            })
            .collect()
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
        let store_path = store.as_ref().map(|store| store.path().to_path_buf());
        let (sender, _) = broadcast::channel(BACKLOG);
        let events = sender.downgrade();
        let (released_sender, released) = watch::channel(0);
        let (problem_sender, problem) = watch::channel(None);
        let recent = writer::Recent::default();
        let writer = writer::start(
            store,
            retention,
            Outlets {
                events: sender,
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
                first_event: last.event + 1,
                store: store_path,
            }),
            events,
            recent,
        })
    }

    /// The kept events (the last [`HISTORY_IN_MEMORY`] released) after `since`.
    /// Subscribe first, then read these: every event is in one or the other.
    pub fn recent(&self, since: u64) -> Vec<Arc<Event>> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        // Ids rise along the queue: skip the older ones without looking at each.
        let start = recent.partition_point(|event| event.id <= since);
        recent.range(start..).cloned().collect()
    }

    /// Events as they are released: after they are written to the history.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        subscribe(&self.events)
    }

    /// Every event released from now on, none lost: see [`Feed`].
    pub fn feed(&self) -> Feed {
        let receiver = subscribe(&self.events);
        // Subscribed first: an event released meanwhile is both kept and sent, and the
        // feed skips it as already past.
        let last = {
            let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent
                .back()
                .map_or(self.inner.first_event - 1, |event| event.id)
        };
        self.feed_after(receiver, last)
    }

    /// Every event with an id above `since`, then every event released from now on.
    pub fn feed_since(&self, since: u64) -> Feed {
        let receiver = subscribe(&self.events);
        let mut feed = self.feed_after(receiver, since);
        // What was released before the subscription comes first.
        let newest = {
            let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            recent.back().map(Arc::clone)
        };
        if let Some(newest) = newest.filter(|event| event.id > since) {
            feed.ready.push_back(newest);
        }
        feed
    }

    fn feed_after(&self, receiver: broadcast::Receiver<Arc<Event>>, last: u64) -> Feed {
        Feed {
            receiver,
            ready: VecDeque::new(),
            last,
            recent: Arc::clone(&self.recent),
            store: self.inner.store.clone(),
            closed: false,
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

/// A subscription to `events`; one that is already closed once the writer is gone.
fn subscribe(events: &broadcast::WeakSender<Arc<Event>>) -> broadcast::Receiver<Arc<Event>> {
    match events.upgrade() {
        Some(sender) => sender.subscribe(),
        None => broadcast::channel(1).1,
    }
}
