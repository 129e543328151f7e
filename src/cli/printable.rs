//! Text that came from a service, made safe to print on a terminal.
//!
//! A service's output, its `STATUS=` text and the messages built from them reach the
//! user's terminal through `muster logs`, `up` and `status`. Printed raw, an escape
//! sequence in them could move the cursor, rewrite what was already printed, change the
//! window title or, on some terminals, answer back into the user's input. So every
//! control character except tab is shown as a visible escape (`\x1b`, `\u{9b}`), and
//! the text itself is kept: nothing is dropped. `muster logs --raw` opts out.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `text` with every control character but tab written as a visible escape: C0 and DEL
/// as `\xNN`, C1 as `\u{NN}`. A backslash stays a backslash, so an escape shown is
/// either one muster wrote or one the text spelled out.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !needs_escape(c) {
            shown.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(shown, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(shown, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(shown)
}

fn needs_escape(c: char) -> bool {
    c.is_control() && c != '\t'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_borrowed_unchanged() {
        assert!(matches!(
            printable("ready on :8080\tok ✓"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        // Clear screen, set the window title, an 8-bit CSI, a bell, a carriage return.
        let hostile = "\x1b[2J\x1b]0;pwned\x07\u{9b}31m\rdone";
        let shown = printable(hostile);
        assert_eq!(shown, "\\x1b[2J\\x1b]0;pwned\\x07\\u{9b}31m\\x0ddone");
        assert!(!shown.chars().any(|c| c.is_control()));
    }

    proptest::proptest! {
        #[test]
        fn nothing_printed_is_a_control_character(text in ".*") {
            let shown = printable(&text);
            proptest::prop_assert!(!shown.chars().any(|c| c.is_control() && c != '\t'));
            // Nothing else changes: removing the escapes muster added gives the
            // text's printable characters back, in order.
            let kept: String = text.chars().filter(|c| !needs_escape(*c)).collect();
            let mut rest = shown.as_ref();
            for c in kept.chars() {
                let at = rest.find(c);
                proptest::prop_assert!(at.is_some(), "lost {c:?}");
                rest = &rest[at.unwrap_or(0) + c.len_utf8()..];
            }
        }
    }
}
