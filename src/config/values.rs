//! Parsers for the scalar values of `muster.toml`: durations, sizes, signals, ports,
//! addresses, URLs and command lines.
//!
//! Each takes the text as written and returns the typed value or a [`Problem`]: a
//! message in the project's style (lowercase, values in backticks) and the fix when one
//! is known. They know nothing of spans; `validate` attaches the place.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::suggest;

/// Why a value was refused, and how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    pub help: Option<String>,
}

impl Problem {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            help: None,
        }
    }

    fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

type Parsed<T> = Result<T, Problem>;

/// The longest duration accepted. Far past any sensible timeout or retention, and far
/// enough from the clock's limits that "now plus this" can never overflow (which would
/// crash the supervisor the moment a timer is armed).
// A year as humantime counts it (365.25 days), so that "100y" itself is accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 31_557_600);

/// `"30s"`, `"1m 30s"`, `"250ms"`. A unit is required; at most [`MAX_DURATION`].
pub fn duration(text: &str) -> Parsed<Duration> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(
            Problem::new("empty duration").help("write a number with a unit, such as \"30s\"")
        );
    }
    if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(
            Problem::new(format!("`{trimmed}` has no unit")).help(format!(
                "write \"{trimmed}s\" for seconds or \"{trimmed}ms\" for milliseconds"
            )),
        );
    }
    let parsed = humantime::parse_duration(trimmed).map_err(|e| {
        Problem::new(format!("`{trimmed}` is not a duration ({e})"))
            .help("use a number and a unit: ms, s, m, h or d, such as \"500ms\" or \"1m 30s\"")
    })?;
    if parsed > MAX_DURATION {
        return Err(
            Problem::new(format!("`{trimmed}` is longer than 100 years"))
                .help("a duration may be at most 100 years; write a shorter one"),
        );
    }
    Ok(parsed)
}

/// `24GiB`, `512MiB`, `100 bytes`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (unit, size) in UNITS {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return if value.fract() == 0.0 {
                format!("{value:.0}{unit}")
            } else {
                format!("{value:.1}{unit}")
            };
        }
    }
    format!("{bytes} bytes")
}

/// `"10MiB"`, `"512 KB"`, `"1G"`, or a plain number of bytes.
pub fn size(text: &str) -> Parsed<u64> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let bad = || {
        Problem::new(format!("`{trimmed}` is not a size"))
            .help("write a number and a unit, such as \"10MiB\" or \"500KB\"")
    };
    let number: f64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(Problem::new(format!("`{trimmed}` is out of range"))
            .help("use a size of at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// `"SIGTERM"`, `"TERM"`, `"sigint"`.
pub fn signal(text: &str) -> Parsed<Signal> {
    let upper = text.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper.clone()
    } else {
        format!("SIG{upper}")
    };
    // Only signals that make sense to ask a process to stop with; SIGKILL is what muster
    // sends after `stop-timeout` anyway, and SIGSTOP would leave the process hanging.
    const STOP_SIGNALS: &[&str] = &[
        "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGKILL", "SIGUSR1", "SIGUSR2", "SIGWINCH",
        "SIGABRT", "SIGALRM", "SIGPWR",
    ];
    match full.parse::<Signal>() {
        Ok(sig) if STOP_SIGNALS.contains(&sig.as_str()) => Ok(sig),
        Ok(sig) => Err(
            Problem::new(format!("`{}` cannot stop a process", sig.as_str()))
                .help("use SIGTERM, SIGINT, SIGQUIT or SIGHUP"),
        ),
        Err(_) => {
            let problem = Problem::new(format!("`{text}` is not a signal"));
            Err(
                match suggest::nearest(&full, STOP_SIGNALS.iter().copied()) {
                    Some(near) => problem.help(format!("did you mean `{near}`?")),
                    None => problem.help("use a name such as SIGTERM, SIGINT, SIGQUIT or SIGHUP"),
                },
            )
        }
    }
}

/// Any signal by name (`"SIGHUP"`, `"HUP"`, `"usr1"`) or number (`"1"`, `"10"`): what
/// `muster signal` sends and what `reload-signal` may be.
pub fn any_signal(text: &str) -> Parsed<Signal> {
    let trimmed = text.trim();
    if let Ok(number) = trimmed.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| {
            Problem::new(format!("{number} is not a signal number"))
                .help("`kill -l` lists the signals and their numbers")
        });
    }
    let upper = trimmed.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>().map_err(|_| {
        let names: Vec<&str> = Signal::iterator().map(Signal::as_str).collect();
        let problem = Problem::new(format!("`{text}` is not a signal"));
        match suggest::nearest(&full, names.iter().copied()) {
            Some(near) => problem.help(format!("did you mean `{near}`?")),
            None => {
                problem.help("use a name such as SIGHUP, SIGUSR1 or SIGTERM (`kill -l` lists them)")
            }
        }
    })
}

/// A port number, 1 to 65535.
pub fn port_number(number: i64) -> Parsed<u16> {
    u16::try_from(number)
        .ok()
        .filter(|&p| p != 0)
        .ok_or_else(|| {
            Problem::new(format!("port {number} is out of range"))
                .help("a port is a number from 1 to 65535")
        })
}

/// Why the port of `host_port` (from `text`, as written) cannot be used, when it is
/// written as digits: an empty port, port 0 or a number past 65535. Other text is left
/// to the caller's parser, which has a better message for it.
fn bad_port(text: &str, host_port: &str) -> Option<Problem> {
    let (_, port) = host_port.trim().rsplit_once(':')?;
    if port.is_empty() {
        return Some(
            Problem::new(format!("`{text}` has no port after the `:`"))
                .help("write the port, a number from 1 to 65535, such as \"127.0.0.1:8080\""),
        );
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match port.parse::<u64>() {
        Ok(0) => Some(Problem::new(format!("`{text}` has port 0")).help(
            "port 0 means \"any free port\", which nothing could then find: name the port, a number from 1 to 65535",
        )),
        Ok(1..=65535) => None,
        _ => Some(
            Problem::new(format!("`{text}` has port {port}, which is out of range"))
                .help("a port is a number from 1 to 65535"),
        ),
    }
}

/// `"127.0.0.1:8080"`, `"[::1]:8080"`.
pub fn socket_addr(text: &str) -> Parsed<SocketAddr> {
    if let Some(problem) = bad_port(text, text) {
        return Err(problem);
    }
    let addr: SocketAddr = text.trim().parse().map_err(|_| {
        let problem = Problem::new(format!("`{text}` is not an address"));
        match text.rsplit_once(':') {
            Some(("localhost", port)) => problem.help(format!("write \"127.0.0.1:{port}\"")),
            _ if text.trim().parse::<u16>().is_ok() => {
                problem.help(format!("write \"127.0.0.1:{}\"", text.trim()))
            }
            _ => problem.help("write an IP address and a port, such as \"127.0.0.1:8080\""),
        }
    })?;
    Ok(addr)
}

/// `"127.0.0.1:5433"` or `"localhost:5433"`: where a TCP probe connects.
pub fn host_port(text: &str) -> Parsed<(String, u16)> {
    if let Some(problem) = bad_port(text, text) {
        return Err(problem);
    }
    let bad = || {
        Problem::new(format!("`{text}` is not a host and port"))
            .help("write \"host:port\", such as \"127.0.0.1:5433\" or \"localhost:5433\"")
    };
    let (host, port) = text.trim().rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().ok().filter(|&p| p != 0).ok_or_else(bad)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let valid_host = host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }));
    if !valid_host {
        return Err(bad());
    }
    Ok((host.to_owned(), port))
}

/// `"http://127.0.0.1:8080/health"`. Only plain HTTP: probes talk to local services.
pub fn http_url(text: &str) -> Parsed<String> {
    let uri: http::Uri = text.trim().parse().map_err(|e| {
        Problem::new(format!("`{text}` is not a URL ({e})"))
            .help("write a URL such as \"http://127.0.0.1:8080/health\"")
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(Problem::new("https probes are not supported").help(
                "probe the service over plain http on loopback, or use an `exec` probe with curl",
            ));
        }
        Some(other) => {
            return Err(
                Problem::new(format!("`{other}` URLs cannot be probed")).help("use an http:// URL")
            );
        }
        None => {
            return Err(Problem::new(format!("`{text}` has no scheme"))
                .help(format!("write \"http://{}\"", text.trim())));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(Problem::new(format!("`{text}` has no host"))
            .help("write a URL such as \"http://127.0.0.1:8080/health\""));
    }
    // The URL parser takes any digits as a port (`:0`, `:70000`); a probe could never
    // connect to them. Userinfo (`user:pass@`) is not part of the host and port.
    if let Some(authority) = uri.authority() {
        let host_port = authority.as_str().rsplit('@').next().unwrap_or_default();
        if let Some(problem) = bad_port(text, host_port) {
            return Err(problem);
        }
    }
    Ok(uri.to_string())
}

/// Splits a command line like a POSIX shell would (quotes, escapes), without running a
/// shell: no variables, globs, pipes or redirections.
pub fn command_line(text: &str) -> Parsed<Vec<String>> {
    let words = shlex::split(text).ok_or_else(|| {
        Problem::new("unbalanced quotes in the command line")
            .help("close the quote, or write the command as an array: [\"prog\", \"arg one\"]")
    })?;
    if words.is_empty() {
        return Err(Problem::new("the command is empty")
            .help("name the program to run, such as \"python3 -m http.server\""));
    }
    Ok(words)
}

/// Whether a command line uses shell syntax that a plain argv would pass on literally.
pub fn shell_syntax(words: &[String]) -> Option<&str> {
    const OPERATORS: &[&str] = &["|", "||", "&&", ";", ">", ">>", "<", "&", "2>&1"];
    words
        .iter()
        .map(String::as_str)
        .find(|w| OPERATORS.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        let problem = duration("30").unwrap_err();
        assert_eq!(problem.message, "`30` has no unit");
        assert!(duration("soon").is_err());
        assert!(duration("").is_err());
    }

    #[test]
    fn sizes_accept_decimal_and_binary_units() {
        assert_eq!(size("10MiB"), Ok(10 << 20));
        assert_eq!(size("500 KB"), Ok(500_000));
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("1.5k"), Ok(1500));
        assert!(size("ten").is_err());
        assert!(size("5 parsecs").is_err());
        assert!(size("0").is_err());
    }

    #[test]
    fn signals_take_names_with_or_without_prefix() {
        assert_eq!(signal("SIGTERM"), Ok(Signal::SIGTERM));
        assert_eq!(signal("int"), Ok(Signal::SIGINT));
        assert_eq!(
            signal("SIGTREM").unwrap_err().help.as_deref(),
            Some("did you mean `SIGTERM`?")
        );
        assert!(signal("SIGSTOP").is_err());
        assert_eq!(any_signal("hup"), Ok(Signal::SIGHUP));
        assert_eq!(any_signal("10"), Ok(Signal::SIGUSR1));
        assert_eq!(any_signal("SIGSTOP"), Ok(Signal::SIGSTOP));
        assert!(any_signal("99").is_err());
        assert_eq!(
            any_signal("SIGHPU").unwrap_err().help.as_deref(),
            Some("did you mean `SIGHUP`?")
        );
    }

    #[test]
    fn addresses_and_urls() {
        assert_eq!(
            socket_addr("127.0.0.1:80"),
            Ok("127.0.0.1:80".parse().unwrap())
        );
        assert!(
            socket_addr("localhost:80")
                .unwrap_err()
                .help
                .unwrap()
                .contains("127.0.0.1:80")
        );
        assert!(socket_addr("127.0.0.1:0").is_err());
        assert_eq!(host_port("localhost:5433"), Ok(("localhost".into(), 5433)));
        assert_eq!(host_port("[::1]:5433"), Ok(("::1".into(), 5433)));
        assert!(host_port("5433").is_err());
        assert!(host_port("a b:1").is_err());
        assert!(http_url("http://127.0.0.1:8080/health").is_ok());
        assert!(http_url("https://x/").is_err());
        assert!(http_url("127.0.0.1:8080/health").is_err());
        assert!(http_url("http://").is_err());
    }

    #[test]
    fn ports_out_of_range_are_named_as_such_everywhere() {
        for text in [
            "127.0.0.1:70000",
            "[::1]:65536",
            "localhost:99999999999999999999",
        ] {
            let problem = host_port(text).unwrap_err();
            assert!(
                problem.message.contains("out of range"),
                "{text}: {problem:?}"
            );
        }
        let problem = socket_addr("127.0.0.1:70000").unwrap_err();
        assert_eq!(
            problem.message,
            "`127.0.0.1:70000` has port 70000, which is out of range"
        );
        assert_eq!(
            socket_addr("127.0.0.1:0").unwrap_err().message,
            "`127.0.0.1:0` has port 0"
        );
        assert_eq!(
            host_port("127.0.0.1:0").unwrap_err().message,
            "`127.0.0.1:0` has port 0"
        );
        for url in [
            "http://127.0.0.1:0/",
            "http://127.0.0.1:70000/health",
            "http://u:p@[::1]:0/",
        ] {
            assert!(http_url(url).is_err(), "{url}");
        }
        assert!(
            http_url("http://127.0.0.1:/")
                .unwrap_err()
                .message
                .contains("no port")
        );
        assert!(http_url("http://u:p@127.0.0.1:8080/").is_ok());
        assert!(http_url("http://[::1]/x").is_ok());
        assert!(socket_addr("[::1]:65535").is_ok());
    }

    #[test]
    fn durations_past_a_century_are_refused_before_they_can_overflow_a_timer() {
        assert_eq!(duration("100y"), Ok(MAX_DURATION));
        assert!(duration("100y 1s").is_err());
        let problem = duration("18000000000000000000s").unwrap_err();
        assert_eq!(
            problem.message,
            "`18000000000000000000s` is longer than 100 years"
        );
        assert!(duration("1000000y").is_err());
    }

    #[test]
    fn command_lines_split_like_a_shell_without_one() {
        assert_eq!(
            command_line("python3 -c 'print(1)'"),
            Ok(vec!["python3".into(), "-c".into(), "print(1)".into()])
        );
        assert!(command_line("echo 'open").is_err());
        assert!(command_line("   ").is_err());
        let words = command_line("redis-server | tee x").unwrap();
        assert_eq!(shell_syntax(&words), Some("|"));
    }
}
