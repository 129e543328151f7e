//! The `muster` binary: parse the command line and hand it to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Before anything opens a descriptor or starts a thread: what muster was started
    // with must not reach the services (see `disinherit`).
    muster::supervisor::process::disinherit();
    muster::cli::run(muster::cli::Cli::parse())
}
