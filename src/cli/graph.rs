//! `muster graph`: the start order as waves, as text, Graphviz or JSON.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;

use super::out::out;
use super::{GlobalArgs, print_json};
use crate::config::Spec;

#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Print the graph in Graphviz dot format
    #[arg(long, conflicts_with = "json")]
    pub dot: bool,
    /// Print the graph as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, args: &GraphArgs) -> ExitCode {
    let loaded = match global.load(args.json, false) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let spec = &loaded.spec;
    if args.json {
        print_json(&to_json(spec));
    } else if args.dot {
        out!("{}", to_dot(spec));
    } else {
        out!("{}", to_text(spec));
    }
    ExitCode::SUCCESS
}

/// One block per wave; each service with what it waits for.
pub fn to_text(spec: &Spec) -> String {
    let width = spec
        .services
        .keys()
        .map(|n| n.as_str().len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (index, wave) in spec.waves.iter().enumerate() {
        let _ = writeln!(out, "wave {}", index + 1);
        for name in wave {
            let Some(service) = spec.service(name.as_str()) else {
                continue;
            };
            let mut line = format!("  {name:<width$}");
            if !service.depends_on.is_empty() {
                let deps: Vec<String> = service
                    .depends_on
                    .iter()
                    .map(|d| format!("{} ({})", d.service, d.condition))
                    .collect();
                let _ = write!(line, "  after {}", deps.join(", "));
            }
            if !service.autostart {
                line.push_str("  [on demand]");
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
    out
}

/// Graphviz: an edge from each dependency to its dependent, labelled with the
/// condition; on-demand services dashed.
pub fn to_dot(spec: &Spec) -> String {
    let mut out = String::from("digraph muster {\n  rankdir=LR;\n  node [shape=box];\n");
    for service in spec.services.values() {
        let style = if service.autostart {
            ""
        } else {
            " [style=dashed]"
        };
        let _ = writeln!(out, "  \"{}\"{style};", service.name);
    }
    for service in spec.services.values() {
        for dep in &service.depends_on {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{}\"];",
                dep.service, service.name, dep.condition
            );
        }
    }
    out.push_str("}\n");
    out
}

pub fn to_json(spec: &Spec) -> serde_json::Value {
    let services: Vec<_> = spec
        .services
        .values()
        .map(|service| {
            serde_json::json!({
                "name": service.name,
                "wave": spec.wave_of(service.name.as_str()).map(|w| w + 1),
                "autostart": service.autostart,
                "depends_on": service.depends_on.iter().map(|d| serde_json::json!({
                    "service": d.service,
                    "condition": d.condition,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({ "waves": spec.waves, "services": services })
}
