//! What every importer produces: services as the source tool described them, in
//! muster's terms, with every key that has no equivalent kept as a note saying why.
//!
//! Nothing here knows a source format or the host: the importers fill a [`Draft`], and
//! [`super::render`] turns it into a `muster.toml` that checks on this machine.

use std::time::Duration;

/// A whole imported file.
#[derive(Debug, Default)]
pub struct Draft {
    /// What the source tool was, for the file's header (`docker compose`, ...).
    pub tool: &'static str,
    /// Notes for the top of the file: settings of the whole source with no place here.
    pub notes: Vec<String>,
    pub services: Vec<Service>,
}

/// How a service is run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// A program and its arguments, run directly.
    Argv(Vec<String>),
    /// A line the source tool ran through a shell.
    Shell(String),
    /// Nothing runs on this host as written (a container image); the reason, and
    /// what could run it instead (a `docker run` line), for the comments.
    Missing {
        why: String,
        instead: Option<Vec<String>>,
    },
}

/// What a dependent waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Started,
    Healthy,
    Completed,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        }
    }
}

/// One dependency, by the source's name of the other service.
#[derive(Debug, Clone)]
pub struct Dependency {
    pub name: String,
    pub condition: Condition,
    /// Why this condition, when it is not what the source said word for word.
    pub note: Option<String>,
    /// Restart the dependent when the dependency gets a new run (compose's
    /// `restart: true`).
    pub restart: bool,
}

/// A probe, in muster's kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    Exec(Vec<String>),
    Http(String),
    Tcp(String),
    Log(String),
}

#[derive(Debug, Clone)]
pub struct Probe {
    pub kind: ProbeKind,
    pub interval: Option<Duration>,
    /// For `ready`: the start deadline; for `alive`: one attempt's limit.
    pub timeout: Option<Duration>,
    /// `alive` only.
    pub failures: Option<u32>,
    /// Notes about the parts that did not carry over.
    pub notes: Vec<String>,
}

impl Probe {
    pub fn new(kind: ProbeKind) -> Self {
        Self {
            kind,
            interval: None,
            timeout: None,
            failures: None,
            notes: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    Never,
    OnFailure,
    Always,
}

impl Restart {
    pub fn as_str(self) -> &'static str {
        match self {
            Restart::Never => "never",
            Restart::OnFailure => "on-failure",
            Restart::Always => "always",
        }
    }
}

/// One service of the source.
#[derive(Debug, Clone)]
pub struct Service {
    /// The name in the source; made a valid muster name when rendered.
    pub name: String,
    pub description: Option<String>,
    pub run: Run,
    /// The working directory as the source wrote it (relative to the source file).
    pub cwd: Option<String>,
    pub env: Vec<(String, String)>,
    /// Env files, relative to the source file.
    pub env_files: Vec<String>,
    pub depends_on: Vec<Dependency>,
    pub ready: Option<Probe>,
    pub alive: Option<Probe>,
    pub restart: Option<Restart>,
    pub backoff_initial: Option<Duration>,
    pub restart_limit: Option<u32>,
    pub stop_signal: Option<String>,
    pub stop_timeout: Option<Duration>,
    /// Ports on this host the service listens on.
    pub ports: Vec<u16>,
    pub autostart: bool,
    /// How many copies the source runs; each becomes its own service.
    pub replicas: u32,
    /// Text in the command, cwd and env that stands for the copy's number, with the
    /// number of the first copy (process-compose's `{{.PC_REPLICA_NUM}}` is 0-based,
    /// supervisord's `%(process_num)d` counts from `numprocs_start`).
    pub replica_marker: Option<(String, u32)>,
    /// Keys with no equivalent in muster: `key: value — why`, kept as comments.
    pub untranslated: Vec<String>,
    /// Other remarks for the comments above the service.
    pub notes: Vec<String>,
}

impl Service {
    pub fn new(name: impl Into<String>, run: Run) -> Self {
        Self {
            name: name.into(),
            description: None,
            run,
            cwd: None,
            env: Vec::new(),
            env_files: Vec::new(),
            depends_on: Vec::new(),
            ready: None,
            alive: None,
            restart: None,
            backoff_initial: None,
            restart_limit: None,
            stop_signal: None,
            stop_timeout: None,
            ports: Vec::new(),
            autostart: true,
            replicas: 1,
            replica_marker: None,
            untranslated: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Keeps a key with no equivalent as a comment: what it said and why it is not here.
    pub fn untranslated(&mut self, key: &str, value: impl std::fmt::Display, why: &str) {
        let value = value.to_string();
        let value = if value.chars().count() > 120 {
            let cut: String = value.chars().take(117).collect();
            format!("{cut}...")
        } else {
            value
        };
        self.untranslated
            .push(format!("{key}: {} — {why}", value.replace('\n', " ")));
    }
}

/// A signal number as a name (`15` → `SIGTERM`), for tools that write numbers.
pub fn signal_name(number: i64) -> Option<&'static str> {
    Some(match number {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        12 => "SIGUSR2",
        14 => "SIGALRM",
        15 => "SIGTERM",
        28 => "SIGWINCH",
        _ => return None,
    })
}

/// Whether a command line needs a shell to mean what it says: operators, variables,
/// globs, quotes a split would change, substitutions.
pub fn needs_shell(line: &str) -> bool {
    const MARKS: &[char] = &[
        '|', '&', ';', '<', '>', '$', '`', '*', '?', '(', ')', '~', '\\', '\n', '#',
    ];
    line.contains(MARKS)
        || line
            .split_whitespace()
            .next()
            .is_some_and(|w| w.contains('='))
}

/// Formats a duration the way muster writes them: `"30s"`, `"1500ms"`, `"2m"`.
pub fn duration_text(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Reads the durations other tools write: `"1m30s"`, `"10s"`, `"500ms"`, `"1h"`.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ns" => number / 1e9,
            "us" | "µs" => number / 1e6,
            "ms" => number / 1e3,
            "s" | "" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            "d" => number * 86400.0,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(seconds).ok()?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_both_ways() {
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_go_duration("x"), None);
        assert_eq!(duration_text(Duration::from_secs(90)), "90s");
        assert_eq!(duration_text(Duration::from_secs(120)), "2m");
        assert_eq!(duration_text(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn shell_lines_are_recognised() {
        assert!(needs_shell("bundle exec rails s -p $PORT"));
        assert!(needs_shell("a && b"));
        assert!(needs_shell("FOO=1 node x.js"));
        assert!(!needs_shell("gunicorn app:app --workers 2"));
    }
}
