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
    let spec = &loaded.spec;
    // What the router will serve, when there is one: "a router on 127.0.0.1:8080 for
    // 6 model names, 1 pool".
    let routing = spec.router.as_ref().map_or(String::new(), |router| {
        let names: usize = spec
            .services
            .values()
            .filter_map(|s| s.routing.as_ref())
            .map(|r| r.models.len())
            .sum();
        let pools = if spec.pools.is_empty() {
            String::new()
        } else {
            format!(", {}", plural(spec.pools.len(), "pool"))
        };
        format!(
            ", a router on {} for {}{pools}",
            router.listen,
            plural(names, "model name")
        )
    });
    outln!(
        "{}, {}{routing}, {verdict}",
        plural(spec.services.len(), "service"),
        plural(spec.waves.len(), "start wave"),
    );
    ExitCode::SUCCESS
}
