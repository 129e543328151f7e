//! `muster check`: validate the config and report every problem, or one summary line
//! (with the count of warnings and notes, shown above it).

use std::process::ExitCode;

use clap::Args;

use super::out::outln;
use super::{GlobalArgs, plural, print_json, report_json};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Print the result and every diagnostic as JSON on stdout
    #[arg(long, conflicts_with = "show")]
    pub json: bool,

    /// Print the config as muster runs it: included files merged, every `${VAR}`
    /// expanded (TOML on stdout; problems on stderr as usual)
    #[arg(long)]
    pub show: bool,
}

pub fn run(global: &GlobalArgs, args: &CheckArgs) -> ExitCode {
    if args.show {
        return match global.load_by(false, true, crate::config::load_shown, |(loaded, _)| loaded) {
            Ok(shown) => {
                super::out::out!("{}", shown.1);
                ExitCode::SUCCESS
            }
            Err(code) => code,
        };
    }
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
