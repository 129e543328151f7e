//! How one service's process is set up: `user` and `group` (which must exist, and the
//! group be one the user is in), `umask`, `nice`, `oom-score-adj`, `limits` (values the
//! kernel would refuse are refused here), `memory-max`, `cpu-max` and `reload-signal`.

use nix::sys::resource::{RLIM_INFINITY, Resource};
use nix::sys::signal::Signal;
use toml::Spanned;

use super::Validator;
use crate::account::{self, AccountError};
use crate::config::raw::{RawLimits, RawScalar, RawService};
use crate::config::spec::{Limit, ProcessSettings};
use crate::config::values;
use crate::diagnostic::Diagnostic;

/// The smallest `memory-max`: below it no program gets as far as its first line.
pub const MIN_MEMORY_MAX: u64 = 1 << 20;
/// The largest `cpu-max`, in CPUs.
const MAX_CPUS: f64 = 1024.0;

/// What a limit counts, which decides how its value may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    /// Sizes: `"8MiB"` or a number of bytes.
    Bytes,
    /// A plain count.
    Count,
    /// CPU time: a number of seconds, or a duration.
    Seconds,
}

/// Every key of `limits` with its resource and unit, in name order.
const LIMITS: &[(&str, Resource, Unit)] = &[
    ("as", Resource::RLIMIT_AS, Unit::Bytes),
    ("core", Resource::RLIMIT_CORE, Unit::Bytes),
    ("cpu", Resource::RLIMIT_CPU, Unit::Seconds),
    ("data", Resource::RLIMIT_DATA, Unit::Bytes),
    ("fsize", Resource::RLIMIT_FSIZE, Unit::Bytes),
    ("memlock", Resource::RLIMIT_MEMLOCK, Unit::Bytes),
    ("msgqueue", Resource::RLIMIT_MSGQUEUE, Unit::Bytes),
    ("nice", Resource::RLIMIT_NICE, Unit::Count),
    ("nofile", Resource::RLIMIT_NOFILE, Unit::Count),
    ("nproc", Resource::RLIMIT_NPROC, Unit::Count),
    ("rss", Resource::RLIMIT_RSS, Unit::Bytes),
    ("rtprio", Resource::RLIMIT_RTPRIO, Unit::Count),
    ("sigpending", Resource::RLIMIT_SIGPENDING, Unit::Count),
    ("stack", Resource::RLIMIT_STACK, Unit::Bytes),
];

/// The most open files the kernel allows a process (`fs.nr_open`); 1048576 is the
/// kernel's default when it cannot be read.
pub fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(1 << 20)
}

impl Validator<'_> {
    /// The process settings of service `name`, every problem reported.
    pub(super) fn process_settings(&mut self, name: &str, raw: &RawService) -> ProcessSettings {
        let key = |field: &str| format!("services.{name}.{field}");
        let user = raw
            .user
            .as_ref()
            .and_then(|value| self.account_name(&key("user"), value, "user"));
        let group = raw
            .group
            .as_ref()
            .and_then(|value| self.account_name(&key("group"), value, "group"));
        if user.is_some() || group.is_some() {
            self.account(name, raw, user.as_deref(), group.as_deref());
        }
        let umask = raw
            .umask
            .as_ref()
            .and_then(|v| self.umask(&key("umask"), v));
        let nice = raw
            .nice
            .as_ref()
            .map(|n| self.count(&key("nice"), Some(n), -20..20, 0) as i32);
        let oom_score_adj = raw
            .oom_score_adj
            .as_ref()
            .map(|n| self.count(&key("oom-score-adj"), Some(n), -1000..1001, 0) as i32);
        let limits = raw
            .limits
            .as_ref()
            .map(|l| self.limits(&key("limits"), l.get_ref()))
            .unwrap_or_default();
        let memory_max = raw
            .memory_max
            .as_ref()
            .and_then(|v| self.memory_max(&key("memory-max"), v));
        let cpu_max = raw
            .cpu_max
            .as_ref()
            .and_then(|v| self.cpu_max(&key("cpu-max"), v));
        ProcessSettings {
            user,
            group,
            umask,
            nice,
            oom_score_adj,
            limits,
            memory_max,
            cpu_max,
        }
    }

    /// `reload-signal`: any signal a process can catch.
    pub(super) fn reload_signal(
        &mut self,
        key: &str,
        raw: Option<&Spanned<String>>,
    ) -> Option<Signal> {
        let raw = raw?;
        match values::any_signal(raw.get_ref()) {
            Ok(Signal::SIGKILL | Signal::SIGSTOP) => {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!(
                            "`{key}` cannot be {}: a process cannot catch it",
                            raw.get_ref()
                        ),
                    )
                    .at(raw.span(), "")
                    .help("use the signal the program reloads on, usually SIGHUP"),
                );
                None
            }
            Ok(signal) => Some(signal),
            Err(problem) => {
                self.invalid(key, raw.span(), problem);
                None
            }
        }
    }

    /// A user or group as written: a name, or a number.
    fn account_name(
        &mut self,
        key: &str,
        value: &Spanned<RawScalar>,
        what: &str,
    ) -> Option<String> {
        let bad = |this: &mut Self, why: String| {
            this.error(
                Diagnostic::error("invalid-value", format!("`{key}` {why}"))
                    .at(value.span(), "")
                    .help(format!(
                        "write the {what}'s name, such as \"www-data\", or its number"
                    )),
            );
            None
        };
        match value.get_ref() {
            RawScalar::Int(n) if (0..i64::from(u32::MAX)).contains(n) => Some(n.to_string()),
            RawScalar::Int(n) => bad(self, format!("is {n}, which is not a {what} id")),
            RawScalar::Float(x) => bad(self, format!("is {x}, which is not a {what} id")),
            RawScalar::Text(text) if text.trim().is_empty() => bad(self, "is empty".to_owned()),
            RawScalar::Text(text) if text.contains('\0') => {
                self.nul_byte(key, value.span());
                None
            }
            RawScalar::Text(text) => Some(text.clone()),
        }
    }

    /// That the user and group exist, and the user is in the group.
    fn account(&mut self, name: &str, raw: &RawService, user: Option<&str>, group: Option<&str>) {
        let Err(problem) = account::resolve(user, group) else {
            return;
        };
        let key = |field: &str| format!("services.{name}.{field}");
        let user_span = raw.user.as_ref().map(Spanned::span);
        let group_span = raw.group.as_ref().map(Spanned::span);
        let (field, span) = match &problem {
            AccountError::NoGroup(_) | AccountError::NotInGroup { .. } => ("group", group_span),
            _ => ("user", user_span.clone()),
        };
        let mut help = problem.help();
        // `group` used to be refused as the name of a budget: a pool written the old way
        // gets the fix that makes it one.
        if matches!(problem, AccountError::NoGroup(_)) && raw.memory.is_some() && raw.pool.is_none()
        {
            help = format!(
                "`group` is the Unix group the service runs as; a budget services share is a pool: \
                 write pool = \"{}\" with a [pools.{}] table",
                group.unwrap_or_default(),
                group.unwrap_or_default()
            );
        }
        let mut diagnostic = match problem {
            AccountError::Lookup(_) => Diagnostic::warning(
                "account-lookup",
                format!(
                    "`{}`: {problem}; it is looked up again at each start",
                    key(field)
                ),
            ),
            _ => Diagnostic::error("unknown-account", format!("`{}`: {problem}", key(field))),
        };
        if let Some(span) = span {
            diagnostic = diagnostic.at(span, "");
        }
        if field == "group"
            && let Some(span) = user_span
        {
            diagnostic = diagnostic.also(span, "the user");
        }
        let diagnostic = diagnostic.help(help);
        if diagnostic.severity == crate::diagnostic::Severity::Error {
            self.error(diagnostic);
        } else {
            self.warn(diagnostic);
        }
    }

    /// `umask`: octal digits as a string (`"0027"`), or a number (`0o027`).
    fn umask(&mut self, key: &str, value: &Spanned<RawScalar>) -> Option<u32> {
        let parsed = match value.get_ref() {
            RawScalar::Text(text) => {
                let digits = text.trim();
                (!digits.is_empty() && digits.len() <= 4)
                    .then(|| u32::from_str_radix(digits, 8).ok())
                    .flatten()
            }
            RawScalar::Int(n) => u32::try_from(*n).ok(),
            RawScalar::Float(_) => None,
        };
        match parsed.filter(|mask| *mask <= 0o777) {
            Some(mask) => Some(mask),
            None => {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`{key}` is {}, not a umask", value.get_ref()),
                    )
                    .at(value.span(), "")
                    .help("write the mask in octal as a string, such as umask = \"0027\" (or the number 0o027)"),
                );
                None
            }
        }
    }

    /// `limits`: each value checked the way the kernel will check it.
    fn limits(&mut self, key: &str, raw: &RawLimits) -> Vec<Limit> {
        let values = [
            &raw.address_space,
            &raw.core,
            &raw.cpu,
            &raw.data,
            &raw.fsize,
            &raw.memlock,
            &raw.msgqueue,
            &raw.nice,
            &raw.nofile,
            &raw.nproc,
            &raw.rss,
            &raw.rtprio,
            &raw.sigpending,
            &raw.stack,
        ];
        let mut limits = Vec::new();
        for (&(name, resource, unit), value) in LIMITS.iter().zip(values) {
            let Some(value) = value else { continue };
            let key = format!("{key}.{name}");
            if let Some((soft, hard)) = self.limit(&key, value, resource, unit) {
                limits.push(Limit {
                    resource,
                    name,
                    soft,
                    hard,
                });
            }
        }
        limits
    }

    /// One limit: `65536`, `"unlimited"`, `"8MiB"`, or `"SOFT:HARD"` of those.
    fn limit(
        &mut self,
        key: &str,
        value: &Spanned<RawScalar>,
        resource: Resource,
        unit: Unit,
    ) -> Option<(u64, u64)> {
        let span = value.span();
        let parsed = match value.get_ref() {
            RawScalar::Int(n) => u64::try_from(*n)
                .map(|n| (n, n))
                .map_err(|_| limit_problem(key, &n.to_string(), unit)),
            RawScalar::Float(x) => Err(limit_problem(key, &x.to_string(), unit)),
            RawScalar::Text(text) => match text.split_once(':') {
                Some((soft, hard)) => limit_value(key, soft, unit)
                    .and_then(|soft| Ok((soft, limit_value(key, hard, unit)?))),
                None => limit_value(key, text, unit).map(|n| (n, n)),
            },
        };
        let (soft, hard) = match parsed {
            Ok(pair) => pair,
            Err(problem) => {
                self.invalid(key, span, problem);
                return None;
            }
        };
        if soft > hard {
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!(
                        "`{key}`: the soft limit {} is above the hard limit {}",
                        shown(soft),
                        shown(hard)
                    ),
                )
                .at(span, "the kernel refuses this (EINVAL)")
                .help("the soft limit is what applies, the hard limit how far the program may raise it: write \"SOFT:HARD\" with SOFT at most HARD"),
            );
            return None;
        }
        if resource == Resource::RLIMIT_NOFILE {
            let most = nr_open();
            if hard > most {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!(
                            "`{key}` is {}, above the {most} open files the kernel allows a process (fs.nr_open)",
                            shown(hard)
                        ),
                    )
                    .at(span, "the kernel refuses this (EPERM)")
                    .help(format!(
                        "write at most {most}, or raise fs.nr_open first (sysctl -w fs.nr_open=N)"
                    )),
                );
                return None;
            }
        }
        if !nix::unistd::Uid::effective().is_root()
            && let Ok((_, current)) = nix::sys::resource::getrlimit(resource)
            && hard > current
        {
            self.warn(
                Diagnostic::warning(
                    "needs-root",
                    format!(
                        "`{key}` raises the hard limit to {} (it is {} here): only root may, so \
                         the service will not start unless `muster up` runs as root",
                        shown(hard),
                        shown(current)
                    ),
                )
                .at(span, ""),
            );
        }
        Some((soft, hard))
    }

    /// `memory-max`: a size of at least [`MIN_MEMORY_MAX`].
    fn memory_max(&mut self, key: &str, value: &Spanned<RawScalar>) -> Option<u64> {
        let parsed = match value.get_ref() {
            RawScalar::Int(n) if *n > 0 => Ok(*n as u64),
            RawScalar::Text(text) => values::size(text),
            other => Err(values::Problem {
                message: format!("`{other}` is not a size"),
                help: Some("write a size such as \"512MiB\" or \"2GiB\"".to_owned()),
            }),
        };
        match parsed {
            Ok(bytes) if bytes < MIN_MEMORY_MAX => {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`{key}` is {}, too little for any program to start", values::human_size(bytes)),
                    )
                    .at(value.span(), "")
                    .help("give at least 1MiB; the limit covers every process of the service, with the memory its files take in the page cache"),
                );
                None
            }
            Ok(bytes) => Some(bytes),
            Err(problem) => {
                self.invalid(key, value.span(), problem);
                None
            }
        }
    }

    /// `cpu-max`: a number of CPUs (`1.5`), or a percentage of one (`"150%"`).
    fn cpu_max(&mut self, key: &str, value: &Spanned<RawScalar>) -> Option<u32> {
        let cpus = match value.get_ref() {
            RawScalar::Int(n) => Some(*n as f64),
            RawScalar::Float(x) => Some(*x),
            RawScalar::Text(text) => {
                let text = text.trim();
                match text.strip_suffix('%') {
                    Some(percent) => percent.trim().parse::<f64>().ok().map(|p| p / 100.0),
                    None => text.parse::<f64>().ok(),
                }
            }
        };
        match cpus {
            Some(cpus) if (0.01..=MAX_CPUS).contains(&cpus) => Some((cpus * 1000.0).round() as u32),
            _ => {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`{key}` is {}, not a share of CPU time", value.get_ref()),
                    )
                    .at(value.span(), "")
                    .help("write a number of CPUs, such as 1.5, or a percentage of one CPU, such as \"150%\" (from 1% to 1024 CPUs)"),
                );
                None
            }
        }
    }
}

/// A limit's value as text: a number, `unlimited`, or (for sizes) `"8MiB"`, (for CPU
/// time) a duration.
fn limit_value(key: &str, text: &str, unit: Unit) -> Result<u64, values::Problem> {
    let text = text.trim();
    if matches!(text, "unlimited" | "infinity") {
        return Ok(RLIM_INFINITY);
    }
    if let Ok(number) = text.parse::<u64>() {
        return Ok(number);
    }
    match unit {
        Unit::Bytes => values::size(text).map_err(|_| limit_problem(key, text, unit)),
        Unit::Seconds => values::duration(text)
            .map(|d| d.as_secs())
            .map_err(|_| limit_problem(key, text, unit)),
        Unit::Count => Err(limit_problem(key, text, unit)),
    }
}

fn limit_problem(key: &str, value: &str, unit: Unit) -> values::Problem {
    let example = match unit {
        Unit::Bytes => "a size such as \"8MiB\" (or a number of bytes)",
        Unit::Count => "a whole number such as 65536",
        Unit::Seconds => "a number of seconds, or a duration such as \"1h\"",
    };
    values::Problem {
        message: format!("`{value}` is not a limit"),
        help: Some(format!(
            "write {example}, \"unlimited\", or \"SOFT:HARD\" to set the two apart; `{}` sets both",
            key.rsplit('.').next().unwrap_or(key)
        )),
    }
}

/// A limit as people read it.
fn shown(value: u64) -> String {
    if value == RLIM_INFINITY {
        "unlimited".to_owned()
    } else {
        value.to_string()
    }
}

/// Whether `group` of this service names no Unix group: a budget written the way the
/// first sketch had it, which the group check already explained.
pub(super) fn group_is_not_a_unix_group(raw: &RawService) -> bool {
    match raw.group.as_ref().map(Spanned::get_ref) {
        Some(RawScalar::Text(name)) if name.parse::<u32>().is_err() => {
            matches!(nix::unistd::Group::from_name(name), Ok(None))
        }
        _ => false,
    }
}
