//! The services' own output in `muster up`: every line a service prints, as it prints
//! it, prefixed by the service's name in a colour of its own (stderr marked), as
//! compose, honcho and foreman show it.
//!
//! Lines come from each service's log (the same lines the log file gets), through the
//! log's broadcast, which the view reads. A service added or replaced by a reload is
//! followed from the moment the view sees it. A view that falls behind a flooding
//! service says how many lines it skipped; the log file has them all.

use std::collections::HashMap;
use std::sync::Arc;

use console::{Color, style};
use tokio::sync::broadcast;

use crate::config::ServiceName;
use crate::supervisor::Supervisor;
use crate::supervisor::logs::{Line, Log, SharedLog, Stream, Tagged, ViewSender};

/// What `up` shows besides its summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// The services' output lines and muster's events, interleaved
    All,
    /// muster's events only
    Events,
    /// Only the summary and muster's own notes
    None,
}

/// One line for the view: a service's output, or how many of them were skipped.
#[derive(Debug)]
pub enum Item {
    Line(ServiceName, Line),
    Skipped(u64),
}

/// How many lines the view's channel holds for a view that is busy.
const BACKLOG: usize = 4096;

/// Follows the output of every service, and of those that come later.
///
/// Every service's log sends its lines, tagged with its name, into one channel: a
/// line costs the same with ten services or ten thousand, and so does the memory
/// (waiting on one receiver per service polled every receiver for each line, which
/// made a 4,000-service boot quadratic; and each receiver's channel held its own
/// backlog).
#[derive(Debug)]
pub struct Lines {
    sender: ViewSender,
    receiver: broadcast::Receiver<Tagged>,
    /// The log each service sends from (to notice one replaced by a reload).
    logs: HashMap<ServiceName, SharedLog>,
}

impl Lines {
    /// Subscribes to every service there is now: call before the services start, so
    /// that no first line is missed.
    pub fn follow(supervisor: &Supervisor) -> Self {
        let (sender, receiver) = broadcast::channel(BACKLOG);
        let mut lines = Self {
            sender,
            receiver,
            logs: HashMap::new(),
        };
        lines.catch_up(supervisor);
        lines
    }

    /// Follows the services that appeared (or whose log was replaced) since.
    pub fn catch_up(&mut self, supervisor: &Supervisor) {
        for handle in supervisor.services() {
            if self
                .logs
                .get(handle.name())
                .is_some_and(|log| Arc::ptr_eq(log, handle.log()))
            {
                continue;
            }
            Log::lock(handle.log()).show_in(handle.name().clone(), self.sender.clone());
            self.logs
                .insert(handle.name().clone(), Arc::clone(handle.log()));
        }
    }

    /// The next line of any service. A view that fell more than the backlog behind
    /// gets a count of what it skipped instead.
    pub async fn next(&mut self) -> Item {
        match self.receiver.recv().await {
            Ok((name, line)) => Item::Line(name, line),
            Err(broadcast::error::RecvError::Lagged(skipped)) => Item::Skipped(skipped),
            // This holds a sender: never closed.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }

    /// Every line already sent and not yet taken: the last words of services that
    /// ended just before muster did.
    pub fn drain(&mut self) -> Vec<Item> {
        let mut items = Vec::new();
        loop {
            match self.receiver.try_recv() {
                Ok((name, line)) => items.push(Item::Line(name, line)),
                Err(broadcast::error::TryRecvError::Lagged(skipped)) => {
                    items.push(Item::Skipped(skipped));
                }
                Err(_) => break,
            }
        }
        items
    }
}

/// The colour of a service's name: the same for a name in every run.
pub fn colour_of(name: &str) -> Color {
    const PALETTE: [Color; 6] = [
        Color::Cyan,
        Color::Green,
        Color::Yellow,
        Color::Blue,
        Color::Magenta,
        Color::Color256(208),
    ];
    // FNV-1a: stable across runs and builds, unlike the std hasher.
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    PALETTE[(hash % PALETTE.len() as u64) as usize]
}

/// `api     | text`, `api     ! text` for stderr: the name in its colour.
pub fn prefixed(name: &str, width: usize, stream: Stream, text: &str) -> String {
    let padded = format!("{name:<width$}");
    let mark = match stream {
        Stream::Stderr => style("!").red().bold().to_string(),
        _ => style("|").dim().to_string(),
    };
    format!(
        "{} {mark} {}",
        style(padded).fg(colour_of(name)),
        super::printable::printable(text)
    )
}

/// The JSON object of a line in `up --json --output all`: `kind` is `output`, which no
/// event has, and it has no `id`.
pub fn json(name: &str, line: &Line) -> String {
    serde_json::json!({
        "kind": "output",
        "service": name,
        "time": humantime::format_rfc3339_millis(line.time).to_string(),
        "stream": line.stream,
        "text": line.text,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_has_one_colour() {
        assert_eq!(colour_of("api"), colour_of("api"));
        let colours: std::collections::BTreeSet<String> = ["api", "db", "web", "worker", "queue"]
            .iter()
            .map(|n| format!("{:?}", colour_of(n)))
            .collect();
        assert!(colours.len() > 1, "names are told apart");
    }

    #[test]
    fn stderr_is_marked() {
        console::set_colors_enabled(false);
        assert_eq!(prefixed("db", 4, Stream::Stdout, "hi"), "db   | hi");
        assert_eq!(prefixed("db", 4, Stream::Stderr, "oops"), "db   ! oops");
        assert_eq!(
            prefixed("db", 2, Stream::Stdout, "\x1b[31m"),
            "db | \\x1b[31m"
        );
    }
}
