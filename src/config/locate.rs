//! Where a config's supervisor keeps its state, found without building the config.
//!
//! Every client command (`status`, `logs`, `stop` ...) first needs `settings.state-dir`
//! to find the supervisor's socket. Merging and expanding a config of ten thousand
//! services only for that one key took longer than the supervisor's answer, so the
//! files are scanned instead: only their top-level keys (`include`, dotted `settings.*`
//! keys, an inline `settings`) and their `[settings]` sections are cut out and parsed,
//! in the order the files merge, the later ones winning as [`super::sources`] merges
//! them. Whatever the scan cannot vouch for (a multi-line string, which could hold a
//! line that looks like a header; a value of an unexpected type; a `${VAR}` that does
//! not expand; an include that cannot be read or forms a cycle) makes it give up, and
//! the caller builds the merged tree as before: the answer is the same either way.

use std::path::{Path, PathBuf};

use super::interpolate::{self, Vars};
use super::sources::{INCLUDE, MAX_DEPTH, read};

/// `settings.state-dir` as the merged config has it (`Some(None)`: no file sets it), or
/// `None` when the scan cannot vouch for its answer.
pub fn named_state_dir(absolute: &Path, text: &str) -> Option<Option<String>> {
    let dir = absolute.parent().unwrap_or(Path::new("/"));
    let (vars, _) = Vars::for_dir(dir);
    let mut scan = Scan {
        vars,
        stack: vec![absolute.to_path_buf()],
        named: None,
    };
    scan.file(absolute, text)?;
    Some(scan.named)
}

struct Scan {
    vars: Vars,
    /// The files being scanned, each included by the one before: a cycle gives up.
    stack: Vec<PathBuf>,
    /// The latest `state-dir` in merge order.
    named: Option<String>,
}

impl Scan {
    /// One file: its includes first, in their order, then its own `state-dir`.
    fn file(&mut self, absolute: &Path, text: &str) -> Option<()> {
        let head: toml::Table = toml::from_str(&head_text(text)?).ok()?;
        if let Some(entries) = head.get(INCLUDE) {
            if self.stack.len() >= MAX_DEPTH {
                return None;
            }
            let dir = absolute.parent().unwrap_or(Path::new("/"));
            for entry in entries.as_array()? {
                let name = interpolate::expand(entry.as_str()?, &self.vars).ok()?;
                if name.trim().is_empty() {
                    return None;
                }
                let included = dir.join(name);
                let identity = std::fs::canonicalize(&included).ok()?;
                if self
                    .stack
                    .iter()
                    .any(|f| std::fs::canonicalize(f).is_ok_and(|c| c == identity))
                {
                    return None;
                }
                let text = read(&included).ok()?;
                self.stack.push(included.clone());
                self.file(&included, &text)?;
                self.stack.pop();
            }
        }
        if let Some(settings) = head.get("settings")
            && let Some(named) = settings.as_table()?.get("state-dir")
        {
            self.named = Some(interpolate::expand(named.as_str()?, &self.vars).ok()?);
        }
        Some(())
    }
}

/// The part of a file's text that can hold `include` and `settings.state-dir`: the
/// lines before the first table header, and the `[settings]` sections under their
/// header. `None` when the file has a multi-line string, or a header the scan does not
/// read (an escape in a quoted key).
fn head_text(text: &str) -> Option<String> {
    if text.contains("\"\"\"") || text.contains("'''") {
        return None;
    }
    let mut head = String::new();
    let mut keep = true;
    // Open `[` and `{` of a value that goes on over lines: a line starting with `[`
    // there is an element, not a header.
    let mut depth = 0usize;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if depth == 0 && trimmed.starts_with('[') {
            keep = match header_key(trimmed)? {
                Header::Settings => {
                    head.push_str("[settings]\n");
                    true
                }
                Header::Other => false,
            };
            continue;
        }
        depth = depth_after(line, depth);
        if keep {
            head.push_str(line);
            head.push('\n');
        }
    }
    Some(head)
}

enum Header {
    /// `[settings]`, however written (`[ settings ]`, `["settings"]`).
    Settings,
    /// Any other table, or an array of tables.
    Other,
}

/// What a header line names; `None` when it cannot be read plainly.
fn header_key(line: &str) -> Option<Header> {
    if line.starts_with("[[") {
        return Some(Header::Other);
    }
    let inner = &line[1..];
    let mut quote = None;
    let mut end = None;
    for (at, c) in inner.char_indices() {
        match (quote, c) {
            (_, '\\') => return None,
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ']') => {
                end = Some(at);
                break;
            }
            _ => {}
        }
    }
    let key = inner[..end?].trim();
    Some(match key {
        "settings" | "\"settings\"" | "'settings'" => Header::Settings,
        _ => Header::Other,
    })
}

/// The depth of open brackets and braces after `line`, outside strings and comments.
/// Everything that matters is ASCII, so the line is read as bytes.
fn depth_after(line: &str, mut depth: usize) -> usize {
    let mut quote = None;
    let mut escaped = false;
    for &b in line.as_bytes() {
        match quote {
            Some(b'"') if escaped => escaped = false,
            Some(b'"') if b == b'\\' => escaped = true,
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'#' => break,
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(text: &str) -> Option<Option<String>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("muster.toml");
        std::fs::write(&path, text).expect("write");
        named_state_dir(&path, text)
    }

    #[test]
    fn finds_state_dir_however_settings_is_written() {
        let some = |s: &str| Some(Some(s.to_owned()));
        assert_eq!(named("[settings]\nstate-dir = \"a\"\n"), some("a"));
        assert_eq!(
            named("[ \"settings\" ] # here\nstate-dir = 'b'\n"),
            some("b")
        );
        assert_eq!(
            named("settings.state-dir = \"c\"\n[services.x]\ncommand = [\"true\"]\n"),
            some("c")
        );
        assert_eq!(named("settings = { state-dir = \"d\" }\n"), some("d"));
        assert_eq!(
            named("[settings.logs]\nmax-size = \"1M\"\n[settings]\nstate-dir = \"e\"\n"),
            some("e")
        );
        assert_eq!(named("[services.x]\ncommand = [\"true\"]\n"), Some(None));
    }

    #[test]
    fn a_header_like_line_inside_a_value_is_not_a_header() {
        // The `["settings"]` line is an element of a multi-line array, not a table.
        let text = "[services.x]\ncommand = [\n  \"a\",\n]\nenv-files = [\n[\"settings\"]\n]\nstate-dir = \"no\"\n[settings]\nstate-dir = \"yes\"\n";
        assert_eq!(named(text), Some(Some("yes".to_owned())));
        // Brackets, quotes and `#` inside a string neither open nor close anything.
        let text = "[services.x]\ncommand = [\"echo\", \"[settings] # \\\"x\"]\nstate-dir = \"no\"\n[settings]\nstate-dir = \"yes\"\n";
        assert_eq!(named(text), Some(Some("yes".to_owned())));
    }

    #[test]
    fn what_the_scan_cannot_vouch_for_is_left_to_the_full_build() {
        assert_eq!(
            named("[services.x]\nshell = \"\"\"\n[settings]\n\"\"\"\n"),
            None
        );
        assert_eq!(named("[settings]\nstate-dir = 5\n"), None);
        assert_eq!(
            named("[settings]\nstate-dir = \"${NO_SUCH_VARIABLE_FOR_MUSTER}\"\n"),
            None
        );
        assert_eq!(named("include = [\"missing.toml\"]\n"), None);
        assert_eq!(named("[\"sett\\u0069ngs\"]\nstate-dir = \"x\"\n"), None);
    }

    #[test]
    fn included_files_come_first_and_the_including_one_wins() {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            path
        };
        write("base.toml", "[settings]\nstate-dir = \"from-base\"\n");
        write("loop.toml", "include = [\"main.toml\"]\n");
        let main = write("main.toml", "include = [\"base.toml\"]\n");
        let text = std::fs::read_to_string(&main).expect("read");
        assert_eq!(
            named_state_dir(&main, &text),
            Some(Some("from-base".to_owned()))
        );
        let text = "include = [\"base.toml\"]\n[settings]\nstate-dir = \"own\"\n";
        let main = write("main.toml", text);
        assert_eq!(named_state_dir(&main, text), Some(Some("own".to_owned())));
        // A cycle is for the full build to report.
        let text = "include = [\"loop.toml\"]\n";
        let main = write("main.toml", text);
        assert_eq!(named_state_dir(&main, text), None);
    }
}
