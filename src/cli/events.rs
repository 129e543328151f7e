//! `muster events [-F] [--since ID] [--service S] [--kind K] [-n N] [--json]`: what
//! happened, one line per event (JSON Lines with `--json`), read from the state
//! directory's database, with or without a supervisor running; then, with `-F`, what
//! happens next, from the running supervisor.

use std::process::ExitCode;

use clap::Args;

use super::control::{Client, encode};
use super::out::{errln, outln};
use super::printable::printable;
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs};
use crate::config::EVENT_KINDS;
use crate::store::EventFilter;

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Keep printing events as they happen
    // `-f` is `--file` everywhere, so following is `-F` (as `tail -F`).
    #[arg(short = 'F', long)]
    pub follow: bool,
    /// Only events after this id
    #[arg(long, default_value_t = 0, value_name = "ID")]
    pub since: u64,
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
    let json = args.json;
    let print = |event: &serde_json::Value| {
        if json {
            outln!("{event}");
        } else {
            outln!(
                "{:>6} {} {:<12} {:<10} {}",
                event["id"].as_u64().unwrap_or(0),
                event["time"].as_str().unwrap_or(""),
                event["service"].as_str().unwrap_or(""),
                event["kind"].as_str().unwrap_or(""),
                printable(event["message"].as_str().unwrap_or(""))
            );
        }
    };
    // What is recorded first; following picks up after the last event printed.
    let mut since = args.since;
    match super::history::open(global) {
        Ok(store) => {
            let filter = EventFilter {
                since: args.since,
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
                            since: 0,
                            service: Some(service.clone()),
                            kind: None,
                        },
                        Some(1),
                    )
                    .is_ok_and(|any| any.is_empty())
                && !super::history::known(global, service, "events")
            {
                return ExitCode::from(EXIT_USAGE);
            }
            for event in &events {
                print(&serde_json::to_value(event).unwrap_or_default());
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
    // The answer is server-sent events: the JSON is on `data:` lines.
    let on_line = |line: &str| {
        if let Some(data) = line.strip_prefix("data:")
            && let Ok(event) = serde_json::from_str(data.trim_start())
        {
            print(&event);
        }
    };
    let client = match Client::new(global) {
        Ok(client) => client,
        Err(code) => return code,
    };
    match client.follow(&path) {
        Ok(mut stream) => client.follow_to_end(&mut stream, on_line),
        Err(code) => code,
    }
}
