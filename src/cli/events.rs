//! `muster events [-F] [--since ID|WHEN] [--service S] [--kind K] [-n N] [--json]`: what
//! happened, one line per event (JSON Lines with `--json`), read from the state
//! directory's database, with or without a supervisor running; then, with `-F`, what
//! happens next, from the running supervisor.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::Args;

use super::control::{Client, encode};
use super::out::{errln, outln};
use super::printable::printable;
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs};
use crate::config::EVENT_KINDS;
use crate::store::{EventFilter, StoredEvent};
use crate::supervisor::Event;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing events as they happen
    // `-f` is `--file` everywhere, so following is `-F` (as `tail -F`).
    #[arg(short = 'F', long)]
    pub follow: bool,
    /// Only events after this id, or since this time: a duration ago (10m, 2h) or a
    /// time (2026-12-01T10:00, UTC)
    #[arg(long, value_name = "ID|WHEN", value_parser = since)]
    pub since: Option<Since>,
    /// Only events of this service
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Only events of this kind (spawned, ready, exited, failed, ...)
    #[arg(long, value_name = "KIND")]
    pub kind: Option<String>,
    /// Only the last N matching events
    #[arg(short = 'n', long = "last", value_name = "N")]
    pub last: Option<usize>,
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

/// Where `--since` starts: after an event id, or at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Id(u64),
    Time(SystemTime),
}

/// A number is an id (as it always was); anything else a time.
fn since(text: &str) -> Result<Since, String> {
    match text.trim().parse::<u64>() {
        Ok(id) => Ok(Since::Id(id)),
        Err(_) => super::when::parse_arg(text).map(Since::Time),
    }
}

pub fn run(global: &GlobalArgs, args: &EventsArgs) -> ExitCode {
    if let Some(kind) = &args.kind
        && !EVENT_KINDS.contains(&kind.as_str())
    {
        let hint = crate::suggest::nearest(kind, EVENT_KINDS.iter().copied())
            .map(|near| format!("did you mean `{near}`? "))
            .unwrap_or_default();
        errln!(
            "muster: `{kind}` is not an event kind; {hint}one of: {}",
            EVENT_KINDS.join(", ")
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let printer = Printer { json: args.json };
    // What is recorded first; following picks up after the last event printed.
    let (since_id, since_time) = match args.since {
        None => (0, None),
        Some(Since::Id(id)) => (id, None),
        Some(Since::Time(time)) => (0, Some(super::when::millis(time))),
    };
    let mut since = since_id;
    match super::history::open(global) {
        Ok(store) => {
            let filter = EventFilter {
                since: since_id,
                since_time,
                service: args.service.clone(),
                kind: args.kind.clone(),
            };
            let events = match store.events(&filter, args.last) {
                Ok(events) => events,
                Err(error) => {
                    errln!("muster: cannot read {}: {error}", store.path().display());
                    return ExitCode::from(EXIT_FAILED);
                }
            };
            // A name with no events at all, of any kind, and not in the config either,
            // is a typo: say so rather than print nothing.
            if events.is_empty()
                && let Some(service) = &args.service
                && store
                    .events(
                        &EventFilter {
                            service: Some(service.clone()),
                            ..EventFilter::default()
                        },
                        Some(1),
                    )
                    .is_ok_and(|any| any.is_empty())
                && !super::history::known(global, service, "events")
            {
                return ExitCode::from(EXIT_USAGE);
            }
            for event in &events {
                printer.stored(event);
            }
            // Following goes on after the last event stored (later ones of other services
            // or kinds were filtered out, not missed).
            since = store.last_ids().map_or(since, |last| last.event.max(since));
        }
        Err(code) if !args.follow => return code,
        // Following still works when the history cannot be read.
        Err(_) => {}
    }
    if !args.follow {
        return ExitCode::SUCCESS;
    }
    let mut path = format!("/v1/events?since={since}&follow=true");
    if let Some(service) = &args.service {
        path.push_str(&format!("&service={}", encode(service)));
    }
    if let Some(kind) = &args.kind {
        path.push_str(&format!("&kind={}", encode(kind)));
    }
    let client = match Client::new(global) {
        Ok(client) => client,
        Err(code) => return code,
    };
    let mut stream = match client.follow(&path) {
        Ok(stream) => stream,
        Err(code) => return code,
    };
    // The answer is server-sent events: each event's JSON is on a `data:` line.
    client.follow_items(
        &mut stream,
        |line| line.strip_prefix("data:").map(str::trim_start),
        |event: Event| printer.live(&event),
    )
}

/// Prints events, from the history or from the supervisor, in one form.
#[derive(Debug, Clone, Copy)]
struct Printer {
    /// One JSON object per line, as the API has it.
    json: bool,
}

impl Printer {
    fn stored(self, event: &StoredEvent) {
        let line = Line {
            id: event.id,
            time: event.time,
            service: &event.service,
            kind: &event.kind,
            message: &event.message,
        };
        self.print(event, &line);
    }

    fn live(self, event: &Event) {
        let line = Line {
            id: event.id,
            time: event.time,
            service: event.service.as_str(),
            kind: event.kind.as_str(),
            message: &event.message,
        };
        self.print(event, &line);
    }

    fn print(self, whole: &impl serde::Serialize, line: &Line<'_>) {
        if self.json {
            // Through a `Value`, whose keys are in order: the same line for an event
            // from the history as for one from the supervisor.
            outln!("{}", serde_json::to_value(whole).unwrap_or_default());
        } else {
            outln!(
                "{:>6} {} {:<12} {:<10} {}",
                line.id,
                humantime::format_rfc3339_millis(line.time),
                line.service,
                line.kind,
                printable(line.message)
            );
        }
    }
}

/// What a line of the listing shows.
#[derive(Debug)]
struct Line<'a> {
    id: u64,
    time: SystemTime,
    service: &'a str,
    kind: &'a str,
    message: &'a str,
}
