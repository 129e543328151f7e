//! The one way the CLI writes: [`outln!`] and [`out!`] to stdout, [`errln!`] to stderr.
//!
//! A reader that goes away (`muster events | head -3`) is the normal end of a command,
//! as it is for `cat` or `git log`: the next write to stdout fails with EPIPE, and the
//! command exits at once with status 0 and says nothing. Rust ignores SIGPIPE, so
//! without this every `println!` into a closed pipe panicked (an abort and status 134 in
//! release builds).
//!
//! Why one writer rather than SIGPIPE's default disposition: restoring it needs
//! `signal(2)`, which is unsafe (the crate denies unsafe code), would have to be undone
//! for `muster up` (a supervisor must outlive whoever reads its output), and would kill
//! the process with no chance to tell a full disk (ENOSPC, EIO) from a reader that left.
//! Here those other failures are reported and end the command with status 1.
//!
//! `clippy::print_stdout` and `clippy::print_stderr` are denied in the CLI modules, so a
//! `println!` cannot creep back in.

use std::io::Write;

/// Writes to stdout; a closed stdout ends the command quietly (see the module).
pub fn stdout(args: std::fmt::Arguments<'_>) {
    let result = std::io::stdout().lock().write_fmt(args);
    if let Err(error) = result {
        failed(&error);
    }
}

/// Writes bytes to stdout, as [`stdout`] does.
pub fn stdout_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_all(bytes).and_then(|()| out.flush()) {
        failed(&error);
    }
}

/// Writes to stderr. Nothing is left to report a failed write to, so it is ignored.
pub fn stderr(args: std::fmt::Arguments<'_>) {
    let _ = std::io::stderr().lock().write_fmt(args);
}

fn failed(error: &std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    stderr(format_args!("muster: cannot write to stdout: {error}\n"));
    std::process::exit(i32::from(super::EXIT_FAILED));
}

/// `println!` for the CLI: see the module.
macro_rules! outln {
    () => { $crate::cli::out::stdout(format_args!("\n")) };
    ($($arg:tt)*) => {
        $crate::cli::out::stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` for the CLI: see the module.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::out::stdout(format_args!($($arg)*)) };
}

/// `eprint!` for the CLI: see the module.
macro_rules! err {
    ($($arg:tt)*) => { $crate::cli::out::stderr(format_args!($($arg)*)) };
}

/// `eprintln!` for the CLI: see the module.
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::out::stderr(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {err, errln, out, outln};
