//! `muster logs [NAME] [-F] [-n N] [--since T] [--until T] [--stream S] [--timestamps]`:
//! the last lines of one service or of all of them (by time), or those of a stretch of
//! time, read from the log files in the state directory (rotated ones too), with or
//! without a supervisor running; then, with `-F`, every new line as it comes, from the
//! supervisor. Every line on disk carries the time it was written, so selecting by time
//! needs nothing but the files.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Args;
use console::style;

use super::control::{Client, encode, socket};
use super::logfiles::{self, Line, Position};
use super::out::{errln, outln};
use super::printable::printable;
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs};
use crate::config::ServiceName;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only this service (default: every service, interleaved by time)
    pub name: Option<String>,
    /// Keep printing new lines until interrupted (or until the supervisor stops)
    // `-f` is `--file` everywhere, so following is `-F` (as `tail -F`).
    #[arg(short = 'F', long)]
    pub follow: bool,
    /// How many of the last lines to print first, from the log files (rotated ones
    /// included); default 100, or every line of --since/--until
    #[arg(short = 'n', long = "lines", value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=crate::api::MAX_TAIL as i64))]
    pub lines: Option<u32>,
    /// Only lines written since then: a duration ago (10m, 2h) or a time
    /// (2026-12-01T10:00, UTC)
    #[arg(long, value_name = "WHEN", value_parser = super::when::parse_arg)]
    pub since: Option<std::time::SystemTime>,
    /// Only lines written until then (a duration ago or a time, as --since)
    #[arg(long, value_name = "WHEN", value_parser = super::when::parse_arg, conflicts_with = "follow")]
    pub until: Option<std::time::SystemTime>,
    /// Only lines of this stream
    #[arg(long, value_enum, value_name = "STREAM")]
    pub stream: Option<StreamArg>,
    /// Begin each line with the time it was written (RFC 3339, UTC)
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Print each line as a JSON object
    #[arg(long)]
    pub json: bool,
    /// Print lines exactly as the service wrote them, terminal escape sequences
    /// included (by default control characters are shown as `\x1b`)
    #[arg(long)]
    pub raw: bool,
}

/// The streams a line can come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamArg {
    Stdout,
    Stderr,
    /// muster's own notes in the log: spawned, exited, killed
    Muster,
}

impl StreamArg {
    fn as_str(self) -> &'static str {
        match self {
            StreamArg::Stdout => "stdout",
            StreamArg::Stderr => "stderr",
            StreamArg::Muster => "muster",
        }
    }
}

pub fn run(global: &GlobalArgs, args: &LogsArgs) -> ExitCode {
    if let Some(name) = &args.name
        && let Err(error) = ServiceName::new(name)
    {
        errln!("muster: `{name}` is not a service name: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    let state_dir = match socket(global) {
        Ok((_, state_dir)) => state_dir,
        Err(code) => return code,
    };
    let colour = global.colour_on(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    console::set_colors_enabled(colour);
    let select = logfiles::Select {
        since: args.since.map(super::when::stamp),
        until: args.until.map(super::when::stamp),
        stream: args.stream.map(|s| s.as_str().to_owned()),
    };
    let logs_dir = state_dir.join("logs");
    // A service with replicas: its instances' lines, each with its name, as for all.
    let several = args.name.as_deref().is_some_and(|name| {
        !logs_dir.join(format!("{name}.log")).exists() && instances_on_disk(&logs_dir, name)
    });
    let printer = Printer {
        prefix: args.name.is_none() || several,
        json: args.json,
        raw: args.raw,
        timestamps: args.timestamps,
    };
    // Following starts first: the supervisor sends every line written from then on and
    // says where in each file that is, and the files are read up to there. No line is
    // missed between the two, and none printed twice.
    let mut follow = None;
    let mut positions = BTreeMap::new();
    if args.follow {
        let path = match &args.name {
            Some(name) if !several => {
                format!("/v1/services/{}/logs?tail=0&follow=true", encode(name))
            }
            _ => "/v1/logs?tail=0&follow=true".to_owned(),
        };
        let client = match Client::new(global) {
            Ok(client) => client,
            Err(code) => return code,
        };
        let stream = match client.follow(&path) {
            Ok(stream) => stream,
            Err(code) => return code,
        };
        positions = parse_positions(
            stream
                .headers
                .get(crate::api::POSITIONS)
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        );
        follow = Some((client, stream));
    }
    let by_time = args.since.is_some() || args.until.is_some();
    let found = if select.is_all() {
        logfiles::last_lines(
            &logs_dir,
            args.name.as_deref(),
            args.lines.unwrap_or(100) as usize,
            &positions,
            |line| printer.print(&line),
        )
    } else {
        // A stretch of time means all of it unless -n says otherwise; a stream alone,
        // its last 100 lines.
        let want = match args.lines {
            Some(n) => Some(n as usize),
            None if by_time => None,
            None => Some(100),
        };
        logfiles::selected_lines(
            &logs_dir,
            args.name.as_deref(),
            &select,
            want,
            &positions,
            |line| printer.print(&line),
        )
    };
    let found = match found {
        Ok(found) => found,
        Err(error) => {
            errln!(
                "muster: cannot read the logs in {}: {error}",
                logs_dir.display()
            );
            return ExitCode::from(EXIT_FAILED);
        }
    };
    for service in &found.lost {
        errln!(
            "muster: the log of `{service}` was rotated while it was read; its earlier lines are in {}",
            logs_dir.display()
        );
    }
    if let Some(name) = &args.name
        && found.services.is_empty()
        && follow.is_none()
    {
        if !known(global, name, &logs_dir) {
            return ExitCode::from(EXIT_USAGE);
        }
        errln!(
            "muster: `{name}` has written nothing yet (no log in {})",
            logs_dir.display()
        );
    }
    let Some((client, mut stream)) = follow else {
        return ExitCode::SUCCESS;
    };
    client.follow_items(
        &mut stream,
        |text| Some(text),
        |line: crate::api::model::LogLine| {
            let line = Line::from(line);
            let asked = args
                .name
                .as_deref()
                .is_none_or(|name| logfiles::names(name, &line.service));
            if asked && select.keeps(&line) {
                printer.print(&line);
            }
        },
    )
}

/// How lines are printed.
#[derive(Debug, Clone, Copy)]
struct Printer {
    /// Each line begins with its service's name (when showing every service).
    prefix: bool,
    json: bool,
    raw: bool,
    /// Each line begins with its time.
    timestamps: bool,
}

impl Printer {
    fn print(&self, line: &Line) {
        if self.json {
            // The API's `LogLine`, field for field and in its order.
            #[derive(serde::Serialize)]
            struct Json<'a> {
                service: &'a str,
                time: &'a str,
                stream: &'a str,
                text: &'a str,
            }
            let json = Json {
                service: &line.service,
                time: &line.time,
                stream: &line.stream,
                text: &line.text,
            };
            outln!("{}", serde_json::to_string(&json).unwrap_or_default());
            return;
        }
        let text = if self.raw {
            line.text.as_str().into()
        } else {
            printable(&line.text)
        };
        let text = match line.stream.as_str() {
            "stderr" => style(text).red().to_string(),
            "muster" => style(text).dim().to_string(),
            _ => text.into_owned(),
        };
        let time = if self.timestamps {
            format!("{} ", style(&line.time).dim())
        } else {
            String::new()
        };
        if self.prefix {
            outln!("{time}{} {text}", style(&line.service).cyan());
        } else {
            outln!("{time}{text}");
        }
    }
}

/// `a=12:345,b=none` (see [`crate::api::POSITIONS`]).
fn parse_positions(header: &str) -> BTreeMap<String, Position> {
    header
        .split(',')
        .filter_map(|entry| {
            let (service, at) = entry.trim().split_once('=')?;
            let position = match at.split_once(':') {
                Some((inode, offset)) => Some((inode.parse().ok()?, offset.parse().ok()?)),
                None if at == "none" => None,
                None => return None,
            };
            Some((service.to_owned(), position))
        })
        .collect()
}

/// Whether `logs_dir` holds a log of an instance of `name` (a service with replicas).
fn instances_on_disk(logs_dir: &std::path::Path, name: &str) -> bool {
    std::fs::read_dir(logs_dir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|file| file.strip_suffix(".log"))
                .is_some_and(|service| logfiles::names(name, service) && service != name)
        })
    })
}

/// Whether a service with no log on disk is one of the config's (it has written
/// nothing yet); if not, says so with the nearest name.
fn known(global: &GlobalArgs, name: &str, logs_dir: &std::path::Path) -> bool {
    use super::history::{Unknown, unknown_service};
    match unknown_service(global, name) {
        Unknown::Known => true,
        Unknown::NoConfig => {
            errln!("muster: no log of `{name}` in {}", logs_dir.display());
            false
        }
        Unknown::Not { file, hint } => {
            errln!(
                "muster: no service named `{name}` in {} and no log of it in {}{hint}",
                file.display(),
                logs_dir.display()
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_read_from_the_header() {
        let positions = parse_positions("a=12:345, b=none,c=bad,d");
        assert_eq!(positions.get("a"), Some(&Some((12, 345))));
        assert_eq!(positions.get("b"), Some(&None));
        assert_eq!(positions.len(), 2);
        assert!(parse_positions("").is_empty());
    }
}
