//! The `muster` binary: parse the command line and hand it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    muster::cli::run(muster::cli::Cli::parse())
}
