//! `muster history NAME [-n N] [--json]`: every recorded run of a service (start, end,
//! duration, exit, why it ended), read from the state directory's database, with or
//! without a supervisor running.

use std::process::ExitCode;

use clap::Args;

use super::out::{errln, outln};
use super::printable::printable;
use super::{EXIT_FAILED, EXIT_USAGE, GlobalArgs};
use crate::store::{self, Run, Store};

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The service
    pub name: String,
    /// Only the last N runs
    #[arg(short = 'n', long = "last", value_name = "N")]
    pub last: Option<usize>,
    /// One JSON document: {"service", "runs": [...]}
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &GlobalArgs, args: &HistoryArgs) -> ExitCode {
    let store = match open(global) {
        Ok(store) => store,
        Err(code) => return code,
    };
    let runs = match store.runs(&args.name, args.last) {
        Ok(runs) => runs,
        Err(error) => {
            errln!("muster: cannot read {}: {error}", store.path().display());
            return ExitCode::from(EXIT_FAILED);
        }
    };
    if runs.is_empty() && !known(global, &args.name, "runs") {
        return ExitCode::from(EXIT_USAGE);
    }
    if args.json {
        super::print_json(&serde_json::json!({ "service": args.name, "runs": runs }));
        return ExitCode::SUCCESS;
    }
    if runs.is_empty() {
        outln!("no runs of `{}` recorded yet", args.name);
        return ExitCode::SUCCESS;
    }
    outln!(
        "{:>6}  {:>7}  {:<20}  {:>9}  {:<22}  REASON",
        "RUN",
        "PID",
        "STARTED",
        "RAN",
        "EXIT"
    );
    for run in &runs {
        outln!(
            "{:>6}  {:>7}  {:<20}  {:>9}  {:<22}  {}",
            run.run_id,
            run.pid,
            humantime::format_rfc3339_seconds(run.started_at).to_string(),
            ran(run),
            exit(run),
            printable(run.reason.as_deref().unwrap_or(""))
        );
    }
    ExitCode::SUCCESS
}

/// Opens the state directory's history, or says why it cannot.
pub fn open(global: &GlobalArgs) -> Result<Store, ExitCode> {
    let (_, state_dir) = super::control::socket(global)?;
    Store::open_existing(&store::path_in(&state_dir)).map_err(|error| {
        errln!("muster: {error}");
        ExitCode::from(match error {
            store::OpenError::Missing { .. } => EXIT_USAGE,
            _ => EXIT_FAILED,
        })
    })
}

/// Whether `name` is a service of the config; if not, says so (nothing of it is
/// recorded either: `what`, such as "runs") with the nearest name.
pub(super) fn known(global: &GlobalArgs, name: &str, what: &str) -> bool {
    match unknown_service(global, name) {
        // No valid config to compare with: an empty history is answer enough.
        Unknown::NoConfig | Unknown::Known => true,
        Unknown::Not { file, hint } => {
            errln!(
                "muster: no service named `{name}` in {} and no {what} recorded for it{hint}",
                file.display()
            );
            false
        }
    }
}

/// What the config says of a service name the history or the logs do not know.
pub(super) enum Unknown {
    /// The config cannot be read: nothing to compare with.
    NoConfig,
    Known,
    /// Not in `file`; `hint` names the nearest name ("; did you mean `db`?") or is empty.
    Not {
        file: std::path::PathBuf,
        hint: String,
    },
}

/// Whether the config names a service `name`, and if not, which name is nearest.
pub(super) fn unknown_service(global: &GlobalArgs, name: &str) -> Unknown {
    let Ok(loaded) = crate::config::load(&global.file) else {
        return Unknown::NoConfig;
    };
    if loaded.spec.services.contains_key(name) {
        return Unknown::Known;
    }
    let names = loaded.spec.services.keys().map(|n| n.as_str());
    let hint = crate::suggest::nearest(name, names)
        .map(|near| format!("; did you mean `{near}`?"))
        .unwrap_or_default();
    Unknown::Not {
        file: loaded.spec.path.clone(),
        hint,
    }
}

/// How long it ran: "3m 12s", or "running" for a run with no end yet.
fn ran(run: &Run) -> String {
    let end = match run.ended_at {
        Some(end) => end,
        None => return "running".to_owned(),
    };
    let took = end
        .duration_since(run.started_at)
        .unwrap_or_default()
        .as_secs();
    crate::supervisor::machine::human(std::time::Duration::from_secs(took))
}

fn exit(run: &Run) -> String {
    match (run.exit_code, &run.signal, run.ended_at) {
        (Some(code), _, _) => format!("status {code}"),
        (None, Some(signal), _) => signal.clone(),
        (None, None, Some(_)) => "-".to_owned(),
        (None, None, None) => String::new(),
    }
}
