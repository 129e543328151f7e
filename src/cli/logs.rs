//! `muster logs [NAME] [-F] [-n N]`: the last lines of one service or of all of them
//! (by time), then, with `-f`, every new line as it comes.

use std::process::ExitCode;

use clap::Args;
use console::style;

use super::control::{error_message, socket};
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs};
use crate::api::client::{self, ClientError};

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Only this service (default: every service, interleaved by time)
    pub name: Option<String>,
    /// Keep printing new lines until interrupted
    // `-f` is `--file` everywhere, so following is `-F` (as `tail -F`).
    #[arg(short = 'F', long)]
    pub follow: bool,
    /// How many of the last lines to print first
    #[arg(short = 'n', long = "lines", default_value_t = 100, value_name = "N")]
    pub lines: usize,
    /// Print each line as a JSON object
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, args: &LogsArgs) -> ExitCode {
    let (socket, _) = match socket(global) {
        Ok(found) => found,
        Err(code) => return code,
    };
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
    let print = move |line: &str| {
        if json {
            println!("{line}");
            return;
        }
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else {
            return;
        };
        let text = value["text"].as_str().unwrap_or_default();
        let text = match value["stream"].as_str() {
            Some("stderr") => style(text).red().to_string(),
            Some("muster") => style(text).dim().to_string(),
            _ => text.to_owned(),
        };
        if prefix {
            println!(
                "{} {text}",
                style(value["service"].as_str().unwrap_or("?")).cyan()
            );
        } else {
            println!("{text}");
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("muster: cannot start the runtime: {error}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(client::each_line(&socket, &path, print)) {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(answer)) => {
            eprintln!("muster: {}", error_message(&answer));
            ExitCode::from(if answer.status == hyper::StatusCode::NOT_FOUND {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            })
        }
        Err(error @ ClientError::NotRunning { .. }) => {
            eprintln!(
                "muster: {error}; start one with `muster up -f {}`",
                global.file.display()
            );
            ExitCode::from(EXIT_FAILED)
        }
        Err(error) => {
            eprintln!("muster: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
