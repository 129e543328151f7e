//! The dashboard's state: the services as last read, what is selected, sorted and
//! filtered, the log window, the feed, the connection, and what overlay is open. It
//! changes only through [`App::apply`] (what the supervisor sent) and the key handlers
//! in [`super::keys`]; rendering reads it and never changes it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use crate::api::model::ServiceView;
use crate::event::{Event, EventKind};

use super::actions::Action;
use super::columns::Column;
use super::text::escaped;
pub use super::update::Update;

/// The most lines the log pane keeps: a window of the service's output, never the whole
/// file (the supervisor sends at most this many past lines, then new ones).
pub const LOG_WINDOW: usize = 2000;
/// The most lines the feed keeps.
pub const FEED_LINES: usize = 500;
/// The runs kept per service for the detail view.
const RUNS_KEPT: usize = 20;

/// Where the keys go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Table,
    Log,
    Feed,
}

/// What fills the upper part of the screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Table,
    Detail,
    Tree,
}

/// An overlay over everything, taking the keys while open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    Help,
    /// `y` carries the action out.
    Confirm(Action),
    /// A value to type for an action (a signal, a replica count).
    Prompt {
        action: PromptFor,
        input: String,
    },
    /// A long answer: the diagnostics of a refused reload.
    Report {
        title: String,
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptFor {
    Signal,
    Scale,
}

/// The state of the connection to the supervisor.
#[derive(Debug, Clone, PartialEq)]
pub enum Link {
    Connecting,
    Up { pid: Option<u32> },
    Lost { reason: String, since: Instant },
}

/// One line of the feed.
#[derive(Debug, Clone)]
pub struct FeedLine {
    pub time: String,
    pub service: String,
    pub kind: FeedKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    Event(EventKind),
    Ok,
    Failed,
    Note,
}

/// One run of a service, as its events tell it.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub run_id: u64,
    pub started: String,
    pub ended: Option<String>,
    pub how: Option<String>,
}

/// A line of the log window.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub time: String,
    pub stderr: bool,
    /// Escaped: safe to draw.
    pub text: String,
}

/// The log pane.
#[derive(Debug, Default)]
pub struct LogPane {
    /// The service followed.
    pub service: Option<String>,
    /// Which follow the lines belong to: a newer one replaces an older one's.
    pub generation: u64,
    pub lines: VecDeque<LogEntry>,
    /// Lines that came while paused, shown on resume.
    pub held: Vec<LogEntry>,
    pub paused: bool,
    pub wrap: bool,
    /// Lines up from the newest (0: following the end).
    pub scroll: usize,
    pub search: String,
    pub searching: bool,
    pub note: Option<String>,
}

/// Everything the screen shows.
#[derive(Debug)]
pub struct App {
    /// Where the supervisor is, as the header names it.
    pub place: String,
    pub colour: bool,
    pub services: Vec<ServiceView>,
    pub lifecycle: String,
    pub booted: bool,
    pub history_problem: Option<String>,
    /// Indices into `services`, filtered and sorted: the table's rows.
    pub rows: Vec<usize>,
    /// The selected service, by name (it keeps its place across re-sorts and updates).
    pub selected: Option<String>,
    /// The first row shown.
    pub offset: usize,
    pub sort: Column,
    pub descending: bool,
    pub filter: String,
    pub filtering: bool,
    pub focus: Focus,
    pub view: View,
    pub overlay: Option<Overlay>,
    pub log: LogPane,
    pub feed: VecDeque<FeedLine>,
    pub feed_scroll: usize,
    pub runs: HashMap<String, VecDeque<Run>>,
    pub link: Link,
    /// Why actions are refused (a read token), when they are.
    pub read_only: Option<String>,
    /// The last event seen: a reconnection resumes after it.
    pub last_event: u64,
    /// Connections made again after one was lost: shown in the header, so a
    /// reconnection stays visible after its feed line scrolls away.
    pub reconnects: u32,
    pub quit: bool,
    /// The table's height in rows at the last draw, for paging.
    pub page: usize,
}

impl App {
    pub fn new(place: String, colour: bool) -> Self {
        Self {
            place,
            colour,
            services: Vec::new(),
            lifecycle: String::new(),
            booted: false,
            history_problem: None,
            rows: Vec::new(),
            selected: None,
            offset: 0,
            sort: Column::Order,
            descending: false,
            filter: String::new(),
            filtering: false,
            focus: Focus::Table,
            view: View::Table,
            overlay: None,
            log: LogPane::default(),
            feed: VecDeque::new(),
            feed_scroll: 0,
            runs: HashMap::new(),
            link: Link::Connecting,
            read_only: None,
            last_event: 0,
            reconnects: 0,
            quit: false,
            page: 10,
        }
    }

    /// Takes in what a background task sent.
    pub fn apply(&mut self, update: Update) {
        match update {
            Update::Connected {
                pid,
                read_only,
                again,
            } => {
                if again {
                    self.reconnects += 1;
                    let who = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
                    self.note(format!("reconnected to the supervisor{who}"));
                }
                if read_only.is_some() && self.read_only.is_none() {
                    self.note("read-only: actions are disabled (the token may only read)".into());
                }
                self.read_only = read_only;
                self.link = Link::Up { pid };
            }
            Update::Lost { reason } => {
                if !matches!(self.link, Link::Lost { .. }) {
                    self.push(FeedLine {
                        time: now_clock(),
                        service: String::new(),
                        kind: FeedKind::Failed,
                        text: format!("connection lost: {reason}; reconnecting"),
                    });
                    self.link = Link::Lost {
                        reason,
                        since: Instant::now(),
                    };
                } else if let Link::Lost { reason: old, .. } = &mut self.link {
                    *old = reason;
                }
            }
            Update::Services(list) => {
                self.lifecycle = list.lifecycle.as_str().to_owned();
                self.booted = list.booted;
                self.history_problem = list.history_problem;
                self.services = list.services;
                self.refresh_rows();
            }
            Update::Event(event) => self.event(event),
            Update::Log { generation, lines } => {
                if generation != self.log.generation {
                    return;
                }
                self.log.note = None;
                let entries = lines.into_iter().map(|line| LogEntry {
                    time: super::text::clock(&line.time).to_owned(),
                    stderr: matches!(line.stream, crate::supervisor::logs::Stream::Stderr),
                    text: escaped(&line.text),
                });
                if self.log.paused {
                    self.log.held.extend(entries);
                    let over = self.log.held.len().saturating_sub(LOG_WINDOW);
                    self.log.held.drain(..over);
                } else {
                    let before = self.log.lines.len();
                    self.log.lines.extend(entries);
                    let added = self.log.lines.len() - before;
                    // A reader scrolled up keeps looking at the same lines.
                    if self.log.scroll > 0 {
                        self.log.scroll += added;
                    }
                    self.trim_log();
                }
            }
            Update::LogEnded { generation, why } => {
                if generation == self.log.generation {
                    self.log.note = Some(why);
                }
            }
            Update::Outcome { ok, text, report } => {
                self.push(FeedLine {
                    time: now_clock(),
                    service: String::new(),
                    kind: if ok { FeedKind::Ok } else { FeedKind::Failed },
                    text: escaped(&text),
                });
                if let Some(report) = report {
                    self.overlay = Some(Overlay::Report {
                        title: text,
                        text: report,
                    });
                }
            }
        }
    }

    fn event(&mut self, event: Event) {
        self.last_event = self.last_event.max(event.id);
        let service = event.service.to_string();
        let time = humantime::format_rfc3339_millis(event.time).to_string();
        let runs = self.runs.entry(service.clone()).or_default();
        match event.kind {
            EventKind::Spawned => {
                runs.push_back(Run {
                    run_id: event.run_id,
                    started: time.clone(),
                    ..Run::default()
                });
                if runs.len() > RUNS_KEPT {
                    runs.pop_front();
                }
            }
            EventKind::Exited
            | EventKind::Completed
            | EventKind::Stopped
            | EventKind::OrphanStopped
            | EventKind::IdleStopped
            | EventKind::Evicted
            | EventKind::Failed => {
                if let Some(run) = runs
                    .iter_mut()
                    .rev()
                    .find(|r| r.run_id == event.run_id && r.ended.is_none())
                {
                    run.ended = Some(time.clone());
                    run.how = Some(event.message.clone());
                }
            }
            _ => {}
        }
        self.push(FeedLine {
            time: super::text::clock(&time).to_owned(),
            service,
            kind: FeedKind::Event(event.kind),
            text: escaped(&event.message),
        });
    }

    /// A line of the feed from the dashboard itself.
    pub fn note(&mut self, text: String) {
        self.push(FeedLine {
            time: now_clock(),
            service: String::new(),
            kind: FeedKind::Note,
            text,
        });
    }

    fn push(&mut self, line: FeedLine) {
        self.feed.push_back(line);
        if self.feed_scroll > 0 {
            self.feed_scroll += 1;
        }
        while self.feed.len() > FEED_LINES {
            self.feed.pop_front();
        }
        self.feed_scroll = self.feed_scroll.min(self.feed.len().saturating_sub(1));
    }

    fn trim_log(&mut self) {
        let over = self.log.lines.len().saturating_sub(LOG_WINDOW);
        self.log.lines.drain(..over);
        self.log.scroll = self.log.scroll.min(self.log.lines.len().saturating_sub(1));
    }

    /// Pauses or resumes the log; resuming shows what came meanwhile.
    pub fn toggle_pause(&mut self) {
        self.log.paused = !self.log.paused;
        if !self.log.paused {
            let held = std::mem::take(&mut self.log.held);
            self.log.lines.extend(held);
            self.trim_log();
        }
    }

    /// Starts a new log window for `service`: the follow task of this generation fills it.
    pub fn follow_log(&mut self, service: Option<String>) -> u64 {
        self.log.generation += 1;
        self.log.service = service;
        self.log.lines.clear();
        self.log.held.clear();
        self.log.scroll = 0;
        self.log.note = None;
        self.log.generation
    }

    /// Recomputes the rows from the filter and the sort, keeping the selection.
    pub fn refresh_rows(&mut self) {
        let filter = self.filter.to_lowercase();
        let mut rows: Vec<usize> = (0..self.services.len())
            .filter(|&i| filter.is_empty() || matches_filter(&self.services[i], &filter))
            .collect();
        let sort = self.sort;
        rows.sort_by(|&a, &b| sort.compare(&self.services[a], &self.services[b], a, b));
        if self.descending {
            rows.reverse();
        }
        self.rows = rows;
        let still_there = self
            .selected
            .as_ref()
            .is_some_and(|name| self.rows.iter().any(|&i| &self.services[i].name == name));
        if !still_there {
            self.selected = self.rows.first().map(|&i| self.services[i].name.clone());
        }
    }

    /// The row of the selected service.
    pub fn cursor(&self) -> Option<usize> {
        let name = self.selected.as_ref()?;
        self.rows
            .iter()
            .position(|&i| &self.services[i].name == name)
    }

    /// Moves the selection by `delta` rows (clamped).
    pub fn move_by(&mut self, delta: isize) {
        if self.rows.is_empty() {
            return;
        }
        let cursor = self.cursor().unwrap_or(0) as isize;
        let last = self.rows.len() as isize - 1;
        let next = (cursor + delta).clamp(0, last) as usize;
        self.selected = Some(self.services[self.rows[next]].name.clone());
    }

    pub fn service(&self, name: &str) -> Option<&ServiceView> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn selected_service(&self) -> Option<&ServiceView> {
        self.service(self.selected.as_deref()?)
    }

    /// Who depends on `name`, with the condition each waits for.
    pub fn dependents(&self, name: &str) -> Vec<(&ServiceView, &str)> {
        self.services
            .iter()
            .filter_map(|s| {
                s.depends_on
                    .iter()
                    .find(|d| d.service == name)
                    .map(|d| (s, d.condition.as_str()))
            })
            .collect()
    }

    /// How many services are in each state, for the header.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for service in &self.services {
            *counts.entry(service.state.as_str()).or_insert(0) += 1;
        }
        counts
    }
}

fn matches_filter(service: &ServiceView, filter: &str) -> bool {
    service.name.to_lowercase().contains(filter)
        || service.state.as_str().contains(filter)
        || service.reason.to_lowercase().contains(filter)
}

/// The time now, `HH:MM:SS` UTC, as the events' times are shown.
fn now_clock() -> String {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    super::text::clock(&now).to_owned()
}
