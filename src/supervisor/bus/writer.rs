//! The history writer: one thread that owns the database connection.
//!
//! The event bus hands it every entry (events and run records) in the order they were
//! numbered. It takes whatever has queued up, writes it in one transaction, and only
//! then releases it: the events go out to subscribers (the API's stream, `muster up`'s
//! output, hooks), and then the `released` count moves on (so `ensure` answers and
//! `EventBus::flush` return, with the events already there to be read). Supervision never waits on it: the queue is unbounded.
//!
//! When the database fails (a full disk, a lock held by another program, corruption)
//! the entries are released anyway and kept in memory (up to [`MAX_WAITING`]) to be
//! written once it works again; the problem is published for `status` and printed once
//! on stderr. Old events are pruned in the background by the retention settings.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{broadcast, oneshot, watch};

use super::super::say::warn;
use crate::config::HistorySettings;
use crate::event::Event;
use crate::store::{Entry, Store};

/// How many recent events the supervisor keeps in memory.
pub const HISTORY_IN_MEMORY: usize = 10_000;
/// Entries written per transaction at most.
const MAX_BATCH: usize = 4096;
/// Entries kept in memory while the database cannot be written; older ones are lost
/// beyond this (and counted).
pub const MAX_WAITING: usize = 100_000;
/// How often writing is tried again while the database fails.
const RETRY: Duration = Duration::from_secs(1);
/// Retention runs at least this often, and after every [`PRUNE_AFTER`] entries.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
const PRUNE_AFTER: usize = 10_000;

/// The most recent events, oldest first, at most [`HISTORY_IN_MEMORY`].
pub type Recent = Arc<Mutex<VecDeque<Arc<Event>>>>;

/// Where the writer releases what it has written.
#[derive(Debug)]
pub struct Outlets {
    pub events: broadcast::Sender<Arc<Event>>,
    /// Filled here, before the events are sent, rather than by a subscriber: one who
    /// subscribes and then reads it misses nothing in between. (Filled by a task that
    /// subscribed, it lagged behind the sending, and a stream that started then lost
    /// the events released but not yet kept.)
    pub recent: Recent,
    /// How many entries have been handled (written, or kept for later when the
    /// database fails), counting from the first sent.
    pub released: watch::Sender<u64>,
    /// Why the history cannot be written at the moment.
    pub problem: watch::Sender<Option<String>>,
}

/// What the writer is sent.
#[derive(Debug)]
pub enum Message {
    Entry(Entry),
    /// Write what is left, fold the WAL into the database, close it and stop; then
    /// answer.
    Close(oneshot::Sender<()>),
}

/// Starts the writer thread. Without a store it only releases, in order.
pub fn start(
    store: Option<Store>,
    retention: HistorySettings,
    outlets: Outlets,
) -> std::io::Result<Sender<Message>> {
    let (sender, receiver) = std::sync::mpsc::channel();
    let mut writer = Writer {
        store,
        retention,
        outlets,
        waiting: VecDeque::new(),
        lost: 0,
        handled: 0,
        since_prune: 0,
        last_prune: Instant::now(),
    };
    std::thread::Builder::new()
        .name("muster-history".to_owned())
        .spawn(move || writer.run(receiver))?;
    Ok(sender)
}

struct Writer {
    store: Option<Store>,
    retention: HistorySettings,
    outlets: Outlets,
    /// Released but not yet written: the database failed.
    waiting: VecDeque<Entry>,
    /// Entries dropped from `waiting` because it was full.
    lost: u64,
    handled: u64,
    since_prune: usize,
    last_prune: Instant,
}

impl Writer {
    fn run(&mut self, receiver: Receiver<Message>) {
        self.prune();
        loop {
            let patience = if self.waiting.is_empty() {
                PRUNE_EVERY.saturating_sub(self.last_prune.elapsed())
            } else {
                RETRY
            };
            let mut batch = Vec::new();
            let mut closing = None;
            match receiver.recv_timeout(patience.max(Duration::from_millis(1))) {
                Ok(Message::Entry(entry)) => batch.push(entry),
                Ok(Message::Close(done)) => closing = Some(done),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.write(&[]);
                    return;
                }
            }
            while batch.len() < MAX_BATCH && closing.is_none() {
                match receiver.try_recv() {
                    Ok(Message::Entry(entry)) => batch.push(entry),
                    Ok(Message::Close(done)) => closing = Some(done),
                    Err(_) => break,
                }
            }
            self.write(&batch);
            self.release(batch);
            if let Some(done) = closing {
                self.close();
                let _ = done.send(());
                return;
            }
            if self.since_prune >= PRUNE_AFTER || self.last_prune.elapsed() >= PRUNE_EVERY {
                self.prune();
            }
        }
    }

    /// Closes the database cleanly, so the next start need not replay the WAL.
    fn close(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        if !self.waiting.is_empty() {
            warn(format_args!(
                "{} history entries could not be written to {}",
                self.waiting.len(),
                store.path().display()
            ));
        }
        store.close();
    }

    /// Writes what waits from earlier failures and `batch`, in one transaction.
    fn write(&mut self, batch: &[Entry]) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        if batch.is_empty() && self.waiting.is_empty() {
            return;
        }
        match store.write(self.waiting.iter().chain(batch)) {
            Ok(()) => {
                if self.outlets.problem.borrow().is_some() {
                    let mut text =
                        format!("the history is written to {} again", store.path().display());
                    if self.lost > 0 {
                        text.push_str(&format!(
                            "; {} entries were lost while it could not be",
                            self.lost
                        ));
                    }
                    warn(&text);
                    self.outlets.problem.send_replace(None);
                }
                self.waiting.clear();
                self.lost = 0;
            }
            Err(error) => {
                self.waiting.extend(batch.iter().cloned());
                while self.waiting.len() > MAX_WAITING {
                    self.waiting.pop_front();
                    self.lost += 1;
                }
                let text = format!(
                    "cannot write the history to {}: {error}; {} entries wait in memory, \
                     supervision goes on",
                    store.path().display(),
                    self.waiting.len()
                );
                if self.outlets.problem.borrow().is_none() {
                    warn(&text);
                }
                self.outlets.problem.send_replace(Some(text));
            }
        }
    }

    fn release(&mut self, batch: Vec<Entry>) {
        if batch.is_empty() {
            return;
        }
        self.handled += batch.len() as u64;
        self.since_prune += batch.len();
        let events: Vec<Arc<Event>> = batch
            .into_iter()
            .filter_map(|entry| match entry {
                Entry::Event(event) => Some(event),
                _ => None,
            })
            .collect();
        {
            let mut recent = self
                .outlets
                .recent
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for event in &events {
                if recent.len() == HISTORY_IN_MEMORY {
                    recent.pop_front();
                }
                recent.push_back(Arc::clone(event));
            }
        }
        for event in events {
            // No subscriber is not an error: the database and statuses hold it.
            let _ = self.outlets.events.send(event);
        }
        // Counted last: whoever waits for an event to be released (`flush`: the boot
        // summary, `ensure`'s answer) then finds it kept and sent. Counted first, on
        // this thread, a feed could look before it was sent and miss it.
        self.outlets.released.send_replace(self.handled);
    }

    fn prune(&mut self) {
        self.since_prune = 0;
        self.last_prune = Instant::now();
        if let Some(store) = self.store.as_mut() {
            // A failure here shows up in the next write, which reports it.
            let _ = store.prune(
                self.retention.max_events,
                self.retention.max_age,
                SystemTime::now(),
            );
        }
    }
}
