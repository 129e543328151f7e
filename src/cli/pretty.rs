//! JSON text laid out as `--json` prints it, straight from the text the API sent.
//!
//! `--json` prints a [`serde_json::Value`] with `to_string_pretty`: keys sorted (the
//! value's maps are ordered by key), two spaces of indent. For the list of ten
//! thousand services (4.5 MB) decoding the answer into a `Value` and encoding it again
//! took longer than the supervisor took to answer, so the text is laid out here
//! instead, byte for byte as that would print it: members sorted by key, strings and
//! numbers copied as the API wrote them (serde_json writes them the one way it would
//! write them again). One difference, for the better: serde_json reads a float fast
//! rather than exactly, so the round trip could print one a unit off in its last digit;
//! here every number is the one the supervisor wrote.

use std::ops::Range;

/// `text` (one JSON value) laid out as `serde_json::to_string_pretty` lays out its
/// `Value`; `None` when it is not well-formed JSON.
pub fn pretty(text: &[u8]) -> Option<Vec<u8>> {
    let mut layout = Layout {
        text,
        at: 0,
        // Pages are only taken when written: room enough not to grow.
        out: Vec::with_capacity(text.len() * 2),
        scratch: Vec::new(),
        shapes: Vec::new(),
    };
    layout.value(0)?;
    layout.skip_space();
    (layout.at == text.len()).then_some(layout.out)
}

/// A reader of the text that writes as it reads, in one pass.
struct Layout<'a> {
    text: &'a [u8],
    /// Where reading is.
    at: usize,
    out: Vec<u8>,
    /// Where an object's members are put while they are reordered.
    scratch: Vec<u8>,
    /// By depth: see [`Layout::order`].
    shapes: Vec<Shape>,
}

impl Layout<'_> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.text.get(self.at).copied()
    }

    #[inline(always)]
    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    /// Reads `byte` (after blanks), or fails.
    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_space();
        (self.peek()? == byte).then(|| self.at += 1)
    }

    #[inline(always)]
    fn indent(&mut self, level: usize) {
        // A newline and two spaces a level; deeper than this is written in pieces.
        const INDENT: &[u8; 33] = b"\n                                ";
        let mut spaces = 2 * level;
        let first = spaces.min(INDENT.len() - 1);
        self.out.extend_from_slice(&INDENT[..=first]);
        spaces -= first;
        while spaces > 0 {
            let more = spaces.min(INDENT.len() - 1);
            self.out.extend_from_slice(&INDENT[1..=more]);
            spaces -= more;
        }
    }

    /// Reads the value at the cursor (after blanks) and writes it.
    fn value(&mut self, level: usize) -> Option<()> {
        self.skip_space();
        match self.peek()? {
            b'{' => self.object(level),
            b'[' => self.array(level),
            b'"' => {
                let string = self.string()?;
                self.out.extend_from_slice(&self.text[string]);
                Some(())
            }
            _ => self.atom(),
        }
    }

    /// A string at the cursor, quotes included, as it is in the text.
    fn string(&mut self) -> Option<Range<usize>> {
        self.skip_space();
        let start = self.at;
        if self.peek()? != b'"' {
            return None;
        }
        self.at = self.string_end(start)?;
        Some(start..self.at)
    }

    /// A number, `true`, `false` or `null`, copied as it is.
    fn atom(&mut self) -> Option<()> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| !matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
        {
            self.at += 1;
        }
        let atom = &self.text[start..self.at];
        let number = |atom: &[u8]| {
            atom.first()
                .is_some_and(|b| b.is_ascii_digit() || *b == b'-')
                && atom
                    .iter()
                    .all(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'))
        };
        if !(matches!(atom, b"true" | b"false" | b"null") || number(atom)) {
            return None;
        }
        self.out.extend_from_slice(atom);
        Some(())
    }

    fn array(&mut self, level: usize) -> Option<()> {
        self.at += 1;
        self.skip_space();
        if self.peek()? == b']' {
            self.at += 1;
            self.out.extend_from_slice(b"[]");
            return Some(());
        }
        self.out.push(b'[');
        loop {
            self.indent(level + 1);
            self.value(level + 1)?;
            self.skip_space();
            match self.peek()? {
                b',' => {
                    self.at += 1;
                    self.out.push(b',');
                }
                b']' => break,
                _ => return None,
            }
        }
        self.at += 1;
        self.indent(level);
        self.out.push(b']');
        Some(())
    }

    fn object(&mut self, level: usize) -> Option<()> {
        self.at += 1;
        self.skip_space();
        if self.peek()? == b'}' {
            self.at += 1;
            self.out.extend_from_slice(b"{}");
            return Some(());
        }
        // Each member is written as it comes (its text depends only on its depth, not
        // on its place), then the members are put in the order of their keys.
        self.out.push(b'{');
        let start = self.out.len();
        let mut members: Vec<(Range<usize>, Range<usize>)> = Vec::new();
        loop {
            if !members.is_empty() {
                self.out.push(b',');
            }
            let key = self.string()?;
            self.expect(b':')?;
            let written = self.out.len();
            self.indent(level + 1);
            self.out.extend_from_slice(&self.text[key.clone()]);
            self.out.extend_from_slice(b": ");
            self.value(level + 1)?;
            members.push((key, written..self.out.len()));
            self.skip_space();
            match self.peek()? {
                b',' => self.at += 1,
                b'}' => break,
                _ => return None,
            }
        }
        self.at += 1;
        let sorted = self.order(level, &members);
        self.reorder(start, &members, &sorted);
        self.indent(level);
        self.out.push(b'}');
        Some(())
    }

    /// Puts the members written from `start` (`written`, separated by commas) in the
    /// order of `sorted`. The members that end both orders stay where they are: the
    /// list's last member, its services, is most of the text.
    fn reorder(
        &mut self,
        start: usize,
        written: &[(Range<usize>, Range<usize>)],
        sorted: &[(Range<usize>, Range<usize>)],
    ) {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        if sorted.len() == written.len() {
            let n = written.len();
            let kept = (0..n)
                .take_while(|i| written[n - 1 - i].1 == sorted[n - 1 - i].1)
                .count();
            // Before the comma that precedes the first member kept.
            let end = match kept {
                0 => self.out.len(),
                kept if kept == n => start,
                kept => written[n - kept].1.start - 1,
            };
            scratch.extend_from_slice(&self.out[start..end]);
            let mut at = start;
            for (index, (_, member)) in sorted[..n - kept].iter().enumerate() {
                if index > 0 {
                    self.out[at] = b',';
                    at += 1;
                }
                let piece = &scratch[member.start - start..member.end - start];
                self.out[at..at + piece.len()].copy_from_slice(piece);
                at += piece.len();
            }
        } else {
            // Duplicates were dropped: written again whole.
            scratch.extend_from_slice(&self.out[start..]);
            self.out.truncate(start);
            for (index, (_, member)) in sorted.iter().enumerate() {
                if index > 0 {
                    self.out.push(b',');
                }
                self.out
                    .extend_from_slice(&scratch[member.start - start..member.end - start]);
            }
        }
        self.scratch = scratch;
    }

    /// The end (past the closing quote) of the string whose opening quote is at `start`.
    #[inline]
    fn string_end(&self, start: usize) -> Option<usize> {
        let text = self.text;
        let mut at = start + 1;
        loop {
            // Most of the text is in strings: eight bytes at a time while none of them
            // is a quote or a backslash.
            while let Some(chunk) = text.get(at..at + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let word = u64::from_le_bytes(word);
                if has_byte(word, b'"') || has_byte(word, b'\\') {
                    break;
                }
                at += 8;
            }
            match *text.get(at)? {
                b'"' => return Some(at + 1),
                b'\\' => at += 2,
                _ => at += 1,
            }
        }
    }

    /// Members in the order a `Value`'s map keeps them: by the key's text, a later
    /// duplicate's value in the place of the earlier one. Objects in a list have the
    /// same keys one after the other (ten thousand services): the order found for the
    /// last object at the same depth is used again when the keys are the same.
    fn order(
        &mut self,
        level: usize,
        members: &[(Range<usize>, Range<usize>)],
    ) -> Vec<(Range<usize>, Range<usize>)> {
        let text = self.text;
        if self.shapes.len() <= level {
            self.shapes.resize_with(level + 1, Shape::default);
        }
        let shape = &mut self.shapes[level];
        let same_keys = shape.keys.len() == members.len()
            && shape
                .keys
                .iter()
                .zip(members)
                .all(|(known, (key, _))| text[known.clone()] == text[key.clone()]);
        if !same_keys {
            shape.keys = members.iter().map(|(key, _)| key.clone()).collect();
            shape.order = sorted(text, &shape.keys);
        }
        shape.order.iter().map(|&i| members[i].clone()).collect()
    }
}

/// The keys of the last object at one depth, and the order they are written in.
#[derive(Default)]
struct Shape {
    keys: Vec<Range<usize>>,
    /// Indexes into `keys`.
    order: Vec<usize>,
}

/// Whether any of the eight bytes of `word` is `byte` (the classic test for a zero
/// byte, on the word with `byte` taken out of each).
#[inline(always)]
fn has_byte(word: u64, byte: u8) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let x = word ^ (u64::from(byte) * ONES);
    x.wrapping_sub(ONES) & !x & (ONES << 7) != 0
}

/// The indexes of `keys` in the order of their text, each duplicate's last one only.
fn sorted(text: &[u8], keys: &[Range<usize>]) -> Vec<usize> {
    // Keys without escapes sort by their bytes; the rare one with escapes by its
    // decoded text.
    let decoded: Vec<Vec<u8>> = keys
        .iter()
        .map(|key| {
            let quoted = &text[key.clone()];
            if quoted.contains(&b'\\') {
                serde_json::from_slice::<String>(quoted)
                    .unwrap_or_default()
                    .into_bytes()
            } else {
                quoted[1..quoted.len() - 1].to_vec()
            }
        })
        .collect();
    let mut order: Vec<usize> = (0..keys.len()).collect();
    // Stable: duplicates stay in the order they came.
    order.sort_by(|&a, &b| decoded[a].cmp(&decoded[b]));
    order.dedup_by(|later, earlier| {
        let same = decoded[*later] == decoded[*earlier];
        if same {
            *earlier = *later;
        }
        same
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `--json` printed before: through a `Value`. The texts below are as
    /// serde_json writes them, as the API's are.
    fn through_value(text: &str) -> String {
        let value: serde_json::Value = serde_json::from_str(text).expect("JSON");
        serde_json::to_string_pretty(&value).expect("print")
    }

    fn laid_out(text: &str) -> String {
        String::from_utf8(pretty(text.as_bytes()).expect("well-formed")).expect("UTF-8")
    }

    #[test]
    fn lays_out_as_a_value_prints() {
        for text in [
            r#"{"services":[{"name":"a","state":"healthy","pid":12,"cpu":0.25,"tags":[],"env":{}}],"zeta":null,"alpha":true}"#,
            r#"{"b":{"d":[1,[2,[]],{"x":"y"}],"c":-1.5e-7},"a":"q\"uote\\ é \n \u001b"}"#,
            r#"[]"#,
            r#"{}"#,
            r#""just a string""#,
            r#"42"#,
            " { \"spaced\" : [ 1 , 2 ] , \"a\" : { } } ",
            r#"{"é":1,"e":2,"E":3,"ea":4,"A":5,"\n":6,"\"q":7}"#,
            r#"{"a!":1,"a":2,"a\"":3,"ab":4}"#,
            r#"{"a!":1,"a":2,"ab":4}"#,
            r#"{"long":"0123456789abcdefghij\"0123456789\\\\","x":["a\\","\"\"\"\"\"\"\"\"\"\"","0123456789abcdef"]}"#,
            r#"{"c":{"z":1,"y":[2,{"x":3,"w":4}]},"b":[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]],"d":0}"#,
            r#"[{"b":1,"a":2},{"b":3,"a":4},{"b":5,"c":6},{"a":7,"a":8,"b":9},{"b":0,"a":1}]"#,
            r#"{"k":1,"k":2}"#,
        ] {
            assert_eq!(laid_out(text), through_value(text), "{text}");
        }
    }

    /// Random JSON text as serde_json writes it, its members in random order (a
    /// `Value` would write them sorted), duplicates included.
    fn random_text(rng: &mut fastrand::Rng, depth: usize, out: &mut String) {
        let keys = ["a", "b", "ab", "a!", "B", "é", "\\n", "\\\"", "zz", "a\\\\"];
        match rng.usize(0..if depth > 4 { 4 } else { 6 }) {
            0 => out.push_str(["null", "true", "false"][rng.usize(0..3)]),
            1 => out.push_str(&rng.i64(-1000..1000).to_string()),
            // Eighths: exact in binary, so the `Value` round trip keeps them (see below).
            2 => out.push_str(
                &serde_json::to_string(&(f64::from(rng.i32(-8000..8000)) / 8.0)).expect("float"),
            ),
            3 => out
                .push_str(&serde_json::to_string(&keys[rng.usize(0..keys.len())]).expect("string")),
            4 => {
                out.push('[');
                for index in 0..rng.usize(0..4) {
                    if index > 0 {
                        out.push(',');
                    }
                    random_text(rng, depth + 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                for index in 0..rng.usize(0..6) {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push_str(&format!("\"{}\":", keys[rng.usize(0..keys.len())]));
                    random_text(rng, depth + 1, out);
                }
                out.push('}');
            }
        }
    }

    #[test]
    fn random_documents_lay_out_as_a_value_prints() {
        let mut rng = fastrand::Rng::with_seed(25);
        for _ in 0..2000 {
            let mut text = String::new();
            random_text(&mut rng, 0, &mut text);
            assert_eq!(laid_out(&text), through_value(&text), "{text}");
        }
    }

    #[test]
    fn numbers_are_kept_as_the_supervisor_wrote_them() {
        // serde_json reads floats fast rather than exactly: through a `Value` this one
        // came out a unit off in its last digit. Here it is printed as it was written.
        let text = r#"{"uptime_seconds":-130339.01217553887}"#;
        assert_eq!(
            laid_out(text),
            "{\n  \"uptime_seconds\": -130339.01217553887\n}"
        );
    }

    #[test]
    fn malformed_text_is_refused() {
        for text in [
            "",
            "{",
            "{\"a\"}",
            "{\"a\":}",
            "[1,]",
            "[1 2]",
            "{\"a\":1,}",
            "nul",
            "{} {}",
            "\"open",
        ] {
            assert!(pretty(text.as_bytes()).is_none(), "{text:?}");
        }
    }
}
