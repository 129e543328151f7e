//! What the background tasks (the feed, the log follow, actions) send the screen. A
//! leaf: the tasks and the app state both speak it without importing each other.

use crate::api::model::{LogLine, ServiceList};
use crate::event::Event;

/// What the background tasks send the screen.
#[derive(Debug)]
pub enum Update {
    /// Connected (again): who answers, and whether actions are refused (why).
    Connected {
        pid: Option<u32>,
        read_only: Option<String>,
        again: bool,
    },
    /// The supervisor cannot be reached; the feed task keeps trying.
    Lost {
        reason: String,
    },
    Services(ServiceList),
    Event(Event),
    /// Lines of the log of the service followed under `generation`.
    Log {
        generation: u64,
        lines: Vec<LogLine>,
    },
    /// The log follow of `generation` ended (the service went away, or the supervisor).
    LogEnded {
        generation: u64,
        why: String,
    },
    /// What an action came to, for the feed; `report` is shown in an overlay.
    Outcome {
        ok: bool,
        text: String,
        report: Option<String>,
    },
}
