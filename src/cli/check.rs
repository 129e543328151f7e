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
    let limits = limits(&loaded.spec);
    let descriptors = descriptors(&loaded.spec);
    if args.json {
        let mut report = report_json(&loaded.warnings, Some(&loaded));
        if let Some(object) = report.as_object_mut() {
            for (key, line) in [("limits", &limits), ("descriptors", &descriptors)] {
                if let Some(line) = line {
                    object.insert(key.to_owned(), serde_json::Value::String(line.clone()));
                }
            }
        }
        print_json(&report);
        return ExitCode::SUCCESS;
    }
    if let Some(line) = &limits {
        outln!("limits: {line}");
    }
    if let Some(line) = &descriptors {
        outln!("descriptors: {line}");
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
    let replicas = if spec.replica_sets.is_empty() {
        String::new()
    } else {
        let sets: Vec<String> = spec
            .replica_sets
            .iter()
            .map(|(name, set)| format!("{name} ×{}", set.count))
            .collect();
        format!(" ({})", sets.join(", "))
    };
    outln!(
        "{}{replicas}, {}{routing}, {verdict}",
        plural(spec.services.len(), "service"),
        plural(spec.waves.len(), "start wave"),
    );
    ExitCode::SUCCESS
}

/// How `memory-max` and `cpu-max` would be enforced on this machine, for a muster
/// running as this user, when a service sets either.
/// What the hard limit on descriptors (which `up` raises its soft limit to) means for
/// this many services, when it is not "every service keeps its streams apart".
fn descriptors(spec: &crate::config::Spec) -> Option<String> {
    use crate::supervisor::descriptors;
    descriptors::plan(spec.services.len(), descriptors::limits().1).describe()
}

fn limits(spec: &crate::config::Spec) -> Option<String> {
    let memory = spec
        .services
        .values()
        .any(|s| s.process.memory_max.is_some());
    let cpu = spec.services.values().any(|s| s.process.cpu_max.is_some());
    crate::supervisor::cgroup::Machine::detect()
        .plan()
        .describe(memory, cpu)
}
