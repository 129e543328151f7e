//! `muster ui`: finds the supervisor (this config's socket, or `--url` with
//! `--token-file`) and hands over to [`crate::ui`], which draws the dashboard.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::out::errln;
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs};
use crate::api::client::Endpoint;

#[derive(Debug, Args)]
pub struct UiArgs {
    /// A supervisor's API listener (its `[settings.api] listen`), such as
    /// http://host:7070, instead of this config's socket
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The file holding the token for --url: the control token, or the read token to
    /// watch without acting
    #[arg(long, value_name = "FILE", requires = "url")]
    pub token_file: Option<PathBuf>,
    /// How often the CPU, memory and uptime figures are read again, such as "2s"
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = super::positive_duration)]
    pub refresh: std::time::Duration,
}

pub fn run(global: &GlobalArgs, args: &UiArgs) -> ExitCode {
    let endpoint = match endpoint(global, args) {
        Ok(endpoint) => endpoint,
        Err(code) => return code,
    };
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        errln!(
            "muster: `muster ui` draws on a terminal, and stdin or stdout is not one; in a \
             script use `muster status` or `muster events -F`"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let options = crate::ui::Options {
        endpoint,
        colour: global.colour_on(true),
        patience: global.api_timeout,
        tick: args.refresh,
    };
    match crate::ui::run(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            errln!("muster: {}", failure.message);
            if failure.message.starts_with("no supervisor is running") {
                errln!(
                    "muster: start one with `muster up -f {}`",
                    global.file.display()
                );
            }
            ExitCode::from(if failure.usage {
                EXIT_USAGE
            } else {
                EXIT_FAILED
            })
        }
    }
}

/// The supervisor to show: `--url` (with its token), or this config's socket.
fn endpoint(global: &GlobalArgs, args: &UiArgs) -> Result<Endpoint, ExitCode> {
    let Some(url) = &args.url else {
        let (socket, _) = super::control::socket(global)?;
        return Ok(Endpoint::Socket(socket));
    };
    let token = match &args.token_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|error| {
                errln!(
                    "muster: cannot read the token file {}: {error}; give the file named by \
                     the supervisor's token-file or read-token-file",
                    path.display()
                );
                ExitCode::from(EXIT_USAGE)
            })?;
            let token = text.trim();
            if token.is_empty() {
                errln!("muster: the token file {} is empty", path.display());
                return Err(ExitCode::from(EXIT_USAGE));
            }
            Some(token.to_owned())
        }
    };
    Endpoint::remote(url, token).map_err(|problem| {
        errln!("muster: --url {problem}");
        ExitCode::from(EXIT_USAGE)
    })
}
