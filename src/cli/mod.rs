//! The `muster` command line: argument definitions and one module per subcommand.
//!
//! Each subcommand is a function from its parsed arguments to an exit code; what the
//! user asked for goes to stdout, diagnostics and progress to stderr. Exit codes follow
//! one rule everywhere: 0 done, 1 the operation failed, 2 bad usage or bad config.
//! Everything is written through [`out`], which ends a command quietly when its reader
//! goes away.

// Writes go through `out`; see there why.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod check;
mod cluster;
mod control;
mod events;
mod generate;
mod graph;
mod history;
mod import;
mod lines;
mod logfiles;
mod logs;
mod out;
mod pretty;
mod printable;
mod run;
mod status;
mod ui;
// `up` writes through its own `say`, which ignores a reader that went away: the
// supervisor must outlive it.
#[allow(clippy::print_stdout, clippy::print_stderr)]
mod up;
mod view;
mod when;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use codespan_reporting::term::termcolor::{self, StandardStream};

use crate::config::{self, Loaded};
use crate::diagnostic::Report;
use out::{errln, outln};

/// Exit code for bad usage or a bad config file.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for an operation that failed.
pub const EXIT_FAILED: u8 = 1;

/// Bring up a graph of services in dependency order, keep one shared instance of each,
/// and say why something is not up.
#[derive(Debug, Parser)]
#[command(
    name = "muster",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every subcommand takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// The config file, or a directory holding muster.toml
    #[arg(short = 'f', long = "file", env = "MUSTER_FILE", default_value = config::DEFAULT_FILE_NAME, global = true, value_name = "FILE")]
    pub file: PathBuf,

    /// Where the socket, database and logs live (default: the config's state-dir)
    #[arg(long, env = "MUSTER_STATE_DIR", global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// When to use colour (NO_COLOR in the environment also turns it off)
    #[arg(long, value_enum, env = "MUSTER_COLOR", default_value_t = ColorWhen::Auto, global = true, value_name = "WHEN")]
    pub color: ColorWhen,

    /// How long a command waits for the supervisor to answer before saying that it does
    /// not, naming its pid (`ensure`, `start` and `restart` wait their --timeout on top;
    /// `-F` waits this long for the answer to begin, then follows it without limit)
    #[arg(long, env = "MUSTER_TIMEOUT", default_value = "10s", global = true, value_name = "DURATION", value_parser = positive_duration)]
    pub api_timeout: std::time::Duration,
}

/// A duration such as "10s" or "1m 30s", more than zero.
fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match config::values::duration(text) {
        Ok(duration) if duration.is_zero() => Err("it must be more than 0s".to_owned()),
        Ok(duration) => Ok(duration),
        Err(problem) => Err(match problem.help {
            Some(help) => format!("{}; {help}", problem.message),
            None => problem.message,
        }),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorWhen {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config file and report every problem at once
    Check(check::CheckArgs),
    /// Show the start order: waves of services that can start in parallel
    Graph(graph::GraphArgs),
    /// Start the services in dependency order and supervise them until Ctrl-C
    Up(up::UpArgs),
    /// Show the state of every service of the running supervisor
    Status(status::StatusArgs),
    /// With [cluster]: the cluster's hosts, its singletons, their owners and fences
    Cluster(cluster::ClusterArgs),
    /// Make a service healthy (starting it and its dependencies if needed) and wait
    Ensure(control::EnsureArgs),
    /// Start a service and what it depends on, and wait for the outcome: healthy,
    /// completed (a one-shot) or failed (exit 1, with the cause)
    Start(control::StartArgs),
    /// Stop a service
    Stop(control::NameArgs),
    /// Restart a service and wait for the outcome of the new run, as `start` does
    Restart(control::StartArgs),
    /// Stop every service and the supervisor, and wait until it has exited
    Down(control::DownArgs),
    /// Apply the edited config: restart only the services whose definition changed;
    /// with NAME, reload that service (its reload-signal, or a restart)
    Reload(control::ReloadArgs),
    /// Send a signal to a service's process group (or, with --main, its main process)
    Signal(control::SignalArgs),
    /// Run N instances of a service with `replicas`: new ones start, extra ones stop
    /// (the highest first, once their proxied clients are done)
    Scale(control::ScaleArgs),
    /// Print the last lines of a service's output (or all services'), and follow
    Logs(logs::LogsArgs),
    /// Run a one-off command in a service's directory and environment (a migration, a
    /// shell), attached to the terminal; exits with its status
    Run(run::RunArgs),
    /// Print what happened: spawns, readiness, exits, restarts, failures
    Events(events::EventsArgs),
    /// Print every recorded run of a service: start, end, exit, why it ended
    History(history::HistoryArgs),
    /// A terminal dashboard: the services, their logs and events, and actions on them,
    /// here or (with --url) on another host
    Ui(ui::UiArgs),
    /// Turn a Procfile, docker compose, process-compose, supervisord or pm2 file into a
    /// commented muster.toml
    Import(import::ImportArgs),
    /// Print shell completions (bash, zsh, fish, elvish, powershell)
    Completions(generate::CompletionsArgs),
    /// Print the man page (roff)
    Man(generate::ManArgs),
    /// Hold a singleton's run to this host's lease (started by `up`, not by hand)
    #[command(hide = true)]
    Guard,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Check(args) => check::run(&cli.global, &args),
        Command::Graph(args) => graph::run(&cli.global, &args),
        Command::Up(args) => up::run(&cli.global, &args),
        Command::Status(args) => status::run(&cli.global, &args),
        Command::Cluster(args) => cluster::run(&cli.global, &args),
        Command::Ensure(args) => control::ensure(&cli.global, &args),
        Command::Start(args) => control::start(&cli.global, &args, "start"),
        Command::Stop(args) => control::command(&cli.global, &args, "stop"),
        Command::Restart(args) => control::start(&cli.global, &args, "restart"),
        Command::Down(args) => control::down(&cli.global, &args),
        Command::Reload(args) => control::reload(&cli.global, &args),
        Command::Signal(args) => control::signal(&cli.global, &args),
        Command::Scale(args) => control::scale(&cli.global, &args),
        Command::Logs(args) => logs::run(&cli.global, &args),
        Command::Run(args) => run::run(&cli.global, &args),
        Command::Events(args) => events::run(&cli.global, &args),
        Command::History(args) => history::run(&cli.global, &args),
        Command::Ui(args) => ui::run(&cli.global, &args),
        Command::Import(args) => import::run(&cli.global, &args),
        Command::Completions(args) => generate::completions(&args),
        Command::Man(args) => generate::man(&args),
        Command::Guard => ExitCode::from(crate::fence::run_guard()),
    }
}

impl GlobalArgs {
    /// A writer for stderr that colours only when it should.
    fn stderr(&self) -> StandardStream {
        let choice = if self.colour_on(std::io::stderr().is_terminal()) {
            termcolor::ColorChoice::Always
        } else {
            termcolor::ColorChoice::Never
        };
        StandardStream::stderr(choice)
    }

    /// Whether to colour output going to a stream that is (or is not) a terminal. An
    /// explicit --color wins; NO_COLOR only turns off the automatic choice.
    fn colour_on(&self, terminal: bool) -> bool {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        match self.color {
            ColorWhen::Never => false,
            ColorWhen::Always => true,
            ColorWhen::Auto => terminal && !no_color,
        }
    }

    /// `--state-dir` made absolute, if given.
    fn state_dir(&self) -> Option<PathBuf> {
        let dir = self.state_dir.as_ref()?;
        Some(std::path::absolute(dir).unwrap_or_else(|_| dir.clone()))
    }

    /// Loads the config, or reports why not (as text on stderr, or as JSON on stdout)
    /// and returns the exit code to leave with.
    /// Notes are shown by `muster check` only (`notes`); warnings by every command.
    fn load(&self, json: bool, notes: bool) -> Result<Loaded, ExitCode> {
        self.load_by(json, notes, config::load, |loaded| loaded)
    }

    /// [`Self::load`] with another loader (`check --show` wants the merged text too).
    fn load_by<T>(
        &self,
        json: bool,
        notes: bool,
        loader: impl FnOnce(&std::path::Path) -> Result<T, config::Error>,
        loaded_of: impl Fn(&T) -> &Loaded,
    ) -> Result<T, ExitCode> {
        match loader(&self.file) {
            Ok(result) => {
                let loaded = loaded_of(&result);
                if !json && notes {
                    self.render(&loaded.warnings);
                } else if !json {
                    self.render(&loaded.warnings.without_notes());
                }
                Ok(result)
            }
            Err(error) => {
                let report = error.into_report();
                if json {
                    print_json(&report_json(&report, None));
                } else {
                    self.render(&report);
                    errln!("{}: {}", report.path.display(), counts(&report));
                }
                Err(ExitCode::from(EXIT_USAGE))
            }
        }
    }

    fn render(&self, report: &Report) {
        let mut out = self.stderr();
        // A closed stderr leaves nothing to tell the user with; carry on regardless.
        let _ = report.render(&mut out);
        let _ = out.flush();
    }
}

/// "2 errors, 1 warning".
fn counts(report: &Report) -> String {
    let mut parts = vec![plural(report.error_count(), "error")];
    if report.warning_count() > 0 {
        parts.push(plural(report.warning_count(), "warning"));
    }
    parts.join(", ")
}

/// "1 service", "3 services".
pub fn plural(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// The JSON document of a check: the verdict, the counts and every diagnostic.
fn report_json(report: &Report, loaded: Option<&Loaded>) -> serde_json::Value {
    serde_json::json!({
        "file": report.path.display().to_string(),
        "ok": !report.has_errors(),
        "services": loaded.map(|l| l.spec.services.len()),
        "waves": loaded.map(|l| l.spec.waves.len()),
        "errors": report.error_count(),
        "warnings": report.warning_count(),
        "diagnostics": report.to_json(),
    })
}

fn print_json(value: &serde_json::Value) {
    let text = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_owned());
    outln!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn plurals() {
        assert_eq!(plural(1, "wave"), "1 wave");
        assert_eq!(plural(0, "wave"), "0 waves");
    }
}
