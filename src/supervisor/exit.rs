//! How a process ended, and how an OS call failed, in words: the small vocabulary the
//! state machine, the reaper and the probes share. A leaf: it imports nothing of muster.

use std::fmt;

use nix::sys::signal::Signal;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(Signal),
    /// Killed by the kernel's OOM killer (with SIGKILL) because its service's cgroup
    /// passed `memory-max`.
    OomKilled,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// Its status, or the signal that ended it.
    pub fn parts(self) -> (Option<i32>, Option<Signal>) {
        match self {
            Exit::Code(code) => (Some(code), None),
            Exit::Signal(signal) => (None, Some(signal)),
            Exit::OomKilled => (None, Some(Signal::SIGKILL)),
        }
    }

    /// What ended it, for event data: `oom-killed`, or `exit` for anything else.
    pub fn cause(self) -> &'static str {
        match self {
            Exit::OomKilled => "oom-killed",
            _ => "exit",
        }
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with status {code}"),
            Exit::Signal(signal) => write!(f, "killed by {}", signal.as_str()),
            Exit::OomKilled => f.write_str("killed by the kernel's OOM killer (out of memory)"),
        }
    }
}

/// An I/O error without the "(os error N)" tail.
pub fn plain(error: &std::io::Error) -> String {
    let text = error.to_string();
    match text.find(" (os error") {
        Some(end) => text[..end].to_lowercase(),
        None => text,
    }
}
