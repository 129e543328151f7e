//! `muster logs [NAME] [-F] [-n N]`: the last lines of one service or of all of them
//! (by time), then, with `-f`, every new line as it comes.

use std::process::ExitCode;

use clap::Args;
use console::style;

use super::GlobalArgs;
use super::control::stream;
use super::out::outln;
use super::printable::printable;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only this service (default: every service, interleaved by time)
    pub name: Option<String>,
    /// Keep printing new lines until interrupted
    // `-f` is `--file` everywhere, so following is `-F` (as `tail -F`).
    #[arg(short = 'F', long)]
    pub follow: bool,
    /// How many of the last lines to print first
    #[arg(short = 'n', long = "lines", default_value_t = 100, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=crate::api::MAX_TAIL as i64))]
    pub lines: u32,
    /// Print each line as a JSON object
    #[arg(long)]
    pub json: bool,
    /// Print lines exactly as the service wrote them, terminal escape sequences
    /// included (by default control characters are shown as `\x1b`)
    #[arg(long)]
    pub raw: bool,
}

pub fn run(global: &GlobalArgs, args: &LogsArgs) -> ExitCode {
    let path = match &args.name {
        Some(name) => format!(
            "/v1/services/{name}/logs?tail={}&follow={}",
            args.lines, args.follow
        ),
        None => format!("/v1/logs?tail={}&follow={}", args.lines, args.follow),
    };
    let colour = global.colour_on(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    console::set_colors_enabled(colour);
    let prefix = args.name.is_none();
    let json = args.json;
    let raw = args.raw;
    let print = move |line: &str| {
        if json {
            outln!("{line}");
            return;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let text = value["text"].as_str().unwrap_or_default();
        let text = if raw { text.into() } else { printable(text) };
        let text = match value["stream"].as_str() {
            Some("stderr") => style(text).red().to_string(),
            Some("muster") => style(text).dim().to_string(),
            _ => text.into_owned(),
        };
        if prefix {
            outln!(
                "{} {text}",
                style(value["service"].as_str().unwrap_or("?")).cyan()
            );
        } else {
            outln!("{text}");
        }
    };
    match stream(global, &path, print) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}
