//! `muster import FILE [-o muster.toml]`: another tool's file as a commented
//! `muster.toml`, checked before it is written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::out::{self, errln};
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs, plural};
use crate::import::{self, Format};

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A Procfile, docker compose file, process-compose.yaml, supervisord.conf or pm2
    /// ecosystem file (JSON, JSON5 or `module.exports = {...}`)
    #[arg(value_name = "FILE")]
    pub source: PathBuf,

    /// Where to write the result (default: stdout)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// The source's format, when its name does not tell
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub from: Option<Format>,

    /// Replace the output file if it exists
    #[arg(long)]
    pub force: bool,
}

pub fn run(_global: &GlobalArgs, args: &ImportArgs) -> ExitCode {
    if let Some(output) = &args.output
        && output.exists()
        && !args.force
    {
        errln!(
            "muster: `{}` exists; pass --force to replace it, or -o another file",
            output.display()
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let output_dir = match &args.output {
        Some(output) => output
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        None => PathBuf::from("."),
    };
    let imported = match import::import(&args.source, args.from, &output_dir) {
        Ok(imported) => imported,
        Err(error) => {
            let help = match &error {
                import::ImportError::Unknown => {
                    "\nmuster: name it with --from procfile|compose|process-compose|supervisord|pm2"
                }
                import::ImportError::Syntax { .. } => {
                    "\nmuster: fix the file (its own tool would refuse it too), then import it again"
                }
                _ => "",
            };
            errln!(
                "muster: cannot import `{}`: {error}{help}",
                args.source.display()
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let rendered = &imported.rendered;

    // What `muster check` will say, before anything is written: the renderer's promise
    // is a file that checks here, and a break of it must not pass silently.
    let target = args
        .output
        .clone()
        .unwrap_or_else(|| output_dir.join(crate::config::DEFAULT_FILE_NAME));
    let absolute = std::path::absolute(&target).unwrap_or_else(|_| target.clone());
    let verdict = crate::config::from_source(&target, &absolute, rendered.text.clone());

    match &args.output {
        Some(output) => {
            if let Err(error) = std::fs::write(output, &rendered.text) {
                errln!("muster: cannot write `{}`: {error}", output.display());
                return ExitCode::from(EXIT_FAILED);
            }
        }
        None => out::stdout_bytes(rendered.text.as_bytes()),
    }
    let into = args
        .output
        .as_ref()
        .map_or_else(String::new, |o| format!(" into `{}`", o.display()));
    errln!(
        "muster: imported {} from `{}` ({}){into}",
        plural(rendered.services, "service"),
        args.source.display(),
        imported.format.tool()
    );
    if !rendered.placeholders.is_empty() {
        errln!(
            "muster: {} no command to run on this host yet (see the comments above them): {}",
            if rendered.placeholders.len() == 1 {
                "1 service has"
            } else {
                "these services have"
            },
            rendered.placeholders.join(", ")
        );
    }
    if let Err(error) = verdict {
        let report = error.into_report();
        errln!(
            "muster: the result does not pass `muster check` here:\n{}",
            report.render_plain()
        );
        return ExitCode::from(EXIT_FAILED);
    }
    ExitCode::SUCCESS
}
