//! `muster completions SHELL` and `muster man`: shell completions and a man page,
//! generated from the same clap definition the parser uses, so they cannot drift.

use std::process::ExitCode;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::out::{self, errln};
use super::{Cli, EXIT_FAILED};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for
    pub shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {}

// Both are generated into memory first: `clap_complete` panics on a failed write, and
// the one writer decides what a closed stdout means.

pub fn completions(args: &CompletionsArgs) -> ExitCode {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "muster", &mut script);
    out::stdout_bytes(&script);
    ExitCode::SUCCESS
}

pub fn man(_args: &ManArgs) -> ExitCode {
    let page = clap_mangen::Man::new(Cli::command());
    let mut roff = Vec::new();
    match page.render(&mut roff) {
        Ok(()) => {
            out::stdout_bytes(&roff);
            ExitCode::SUCCESS
        }
        Err(error) => {
            errln!("muster: cannot render the man page: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}
