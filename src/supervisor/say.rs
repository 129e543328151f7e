//! What the supervisor says about itself on its own stderr. A leaf: every part of the
//! supervisor may warn without importing the rest.

/// Writes `muster: <text>` on stderr. A closed stderr (whoever read it went away) is
/// not a reason to stop supervising, so a failed write is ignored.
pub fn warn(text: impl std::fmt::Display) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "muster: {text}");
}
