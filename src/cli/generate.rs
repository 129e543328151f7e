//! `muster completions SHELL` and `muster man`: shell completions and a man page,
//! generated from the same clap definition the parser uses, so they cannot drift.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, EXIT_FAILED};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {}

pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "muster", &mut std::io::stdout());
    ExitCode::SUCCESS
}

pub fn man(_args: &ManArgs) -> ExitCode {
    let page = clap_mangen::Man::new(Cli::command());
    match page.render(&mut std::io::stdout()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("muster: cannot write the man page: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
