//! `muster events [-F] [--since ID] [--service S] [--kind K] [--json]`: what happened,
//! one line per event (JSON Lines with `--json`), then, with `-f`, as it happens.

use std::process::ExitCode;

use clap::Args;

use super::GlobalArgs;
use super::control::stream;

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
    /// One JSON object per line
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, args: &EventsArgs) -> ExitCode {
    let mut path = format!("/v1/events?since={}&follow={}", args.since, args.follow);
    if let Some(service) = &args.service {
        path.push_str(&format!("&service={service}"));
    }
    if let Some(kind) = &args.kind {
        path.push_str(&format!("&kind={kind}"));
    }
    let json = args.json;
    let print = |event: &serde_json::Value| {
        if json {
            println!("{event}");
        } else {
            println!(
                "{:>6} {} {:<12} {:<10} {}",
                event["id"].as_u64().unwrap_or(0),
                event["time"].as_str().unwrap_or(""),
                event["service"].as_str().unwrap_or(""),
                event["kind"].as_str().unwrap_or(""),
                event["message"].as_str().unwrap_or("")
            );
        }
    };
    let follow = args.follow;
    // Following, the answer is server-sent events: the JSON is on `data:` lines.
    // Otherwise it is one document holding them all.
    let mut document = String::new();
    let on_line = |line: &str| {
        if follow {
            if let Some(data) = line.strip_prefix("data:")
                && let Ok(event) = serde_json::from_str(data.trim_start())
            {
                print(&event);
            }
        } else {
            document.push_str(line);
        }
    };
    if let Err(code) = stream(global, &path, on_line) {
        return code;
    }
    if !follow {
        let value: serde_json::Value = serde_json::from_str(&document).unwrap_or_default();
        for event in value["events"].as_array().into_iter().flatten() {
            print(event);
        }
    }
    ExitCode::SUCCESS
}
