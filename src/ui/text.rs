//! Text as the dashboard shows it: service output and names made safe for the terminal
//! (every control character written out, never passed through), and the short forms of
//! durations, sizes and shares the table uses.

use std::fmt::Write;

/// `text` with every control character (C0, DEL, C1) written as an escape: `\e` for
/// ESC, `\t` for a tab, `\u{9b}` for the others. An escape sequence in a service's
/// output is shown as text, so it can neither move the cursor nor recolour the screen.
/// Bytes that were not UTF-8 reach the client as U+FFFD, which is printable.
pub fn escaped(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\u{1b}' => out.push_str("\\e"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".to_owned();
    }
    let s = seconds as u64;
    let (d, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// `512B`, `3.2K`, `41M`, `1.5G` (powers of 1024).
pub fn bytes(count: u64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut value = count as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{count}B")
    } else if value < 10.0 {
        format!("{value:.1}{}", UNITS[unit])
    } else {
        format!("{value:.0}{}", UNITS[unit])
    }
}

/// The part of `text` that fits in `width` columns (one per char: the table's fields
/// are names, states and short reasons), with `…` when cut.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// The clock time (UTC, `HH:MM:SS`) of an RFC 3339 stamp, or the stamp as it is.
pub fn clock(rfc3339: &str) -> &str {
    rfc3339.get(11..19).unwrap_or(rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_and_controls_are_written_out() {
        assert_eq!(escaped("plain"), "plain");
        assert_eq!(escaped("\u{1b}[2J\u{1b}[31mred"), "\\e[2J\\e[31mred");
        assert_eq!(escaped("a\tb\r\u{7}\u{9b}c"), "a\\tb\\r\\u{7}\\u{9b}c");
        assert_eq!(escaped("bad \u{fffd} byte"), "bad \u{fffd} byte");
        assert!(!escaped("\u{1b}]0;title\u{7}").chars().any(char::is_control));
    }

    #[test]
    fn short_forms() {
        assert_eq!(duration(5.2), "5s");
        assert_eq!(duration(250.0), "4m 10s");
        assert_eq!(duration(7500.0), "2h 5m");
        assert_eq!(duration(3.0 * 86_400.0 + 4.0 * 3600.0), "3d 4h");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(3 * 1024 + 300), "3.3K");
        assert_eq!(bytes(41 * 1024 * 1024), "41M");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
        assert_eq!(clock("2026-01-02T03:04:05.678Z"), "03:04:05");
    }
}
