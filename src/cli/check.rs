//! `muster check`: validate the config and report every problem, or one summary line
//! (with the count of warnings and notes, shown above it).

use std::process::ExitCode;

use clap::Args;

use super::out::outln;
use super::{GlobalArgs, plural, print_json, report_json};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the result and every diagnostic as JSON on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, args: &CheckArgs) -> ExitCode {
    let loaded = match global.load(args.json, true) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if args.json {
        print_json(&report_json(&loaded.warnings, Some(&loaded)));
        return ExitCode::SUCCESS;
    }
    let warnings = loaded.warnings.warning_count();
    let mut verdict = if warnings == 0 {
        "no problems".to_owned()
    } else {
        plural(warnings, "warning")
    };
    // Notes are not problems, but a summary that hides them would be read as "all clear".
    let notes = loaded.warnings.note_count();
    if notes > 0 {
        verdict = format!("{verdict}, {}", plural(notes, "note"));
    }
    outln!(
        "{}, {}, {verdict}",
        plural(loaded.spec.services.len(), "service"),
        plural(loaded.spec.waves.len(), "start wave"),
    );
    ExitCode::SUCCESS
}
