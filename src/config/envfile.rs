//! `env-file` contents: `KEY=VALUE` lines, as docker compose and systemd read them.
//!
//! Blank lines and `#` comments are skipped, `export KEY=VALUE` is accepted, a value may
//! be wrapped in single quotes (taken literally) or double quotes (with `\n`, `\"` and
//! `\\` escapes). No variable expansion: what is written is what the service gets.

use std::io::Read;
use std::path::Path;

/// The largest env file read. Real ones are a few lines; this keeps a wrong path
/// (`/dev/zero`, a log file) from being read into memory without end.
pub const MAX_SIZE: u64 = 1 << 20;

/// Reads an env file as text: at most [`MAX_SIZE`] bytes (more is an error of kind
/// `FileTooLarge`), and UTF-8.
pub fn read(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SIZE + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SIZE {
        return Err(std::io::ErrorKind::FileTooLarge.into());
    }
    Ok(text)
}

/// A line of an env file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct EnvFileError {
    pub line: usize,
    pub message: String,
}

/// Parses an env file into its pairs, in order.
pub fn parse(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut pairs = Vec::new();
    for (index, raw_line) in text.lines().enumerate() {
        let fail = |message: &str| EnvFileError {
            line: index + 1,
            message: message.to_owned(),
        };
        let line = raw_line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.contains('\0') {
            return Err(fail(
                "holds a NUL byte, which no environment variable can hold",
            ));
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| fail("expected KEY=VALUE"))?;
        let key = key.trim_end();
        let valid_key = key
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_key {
            return Err(fail(&format!(
                "`{key}` is not a variable name (letters, digits and `_`, not starting with a digit)"
            )));
        }
        pairs.push((key.to_owned(), unquote(value.trim()).map_err(fail)?));
    }
    Ok(pairs)
}

fn unquote(value: &str) -> Result<String, &'static str> {
    if let Some(inner) = value.strip_prefix('\'') {
        return inner
            .strip_suffix('\'')
            .map(str::to_owned)
            .ok_or("unterminated single quote");
    }
    if let Some(inner) = value.strip_prefix('"') {
        let inner = inner.strip_suffix('"').ok_or("unterminated double quote")?;
        let mut out = String::with_capacity(inner.len());
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        }
        return Ok(out);
    }
    // An unquoted value ends at a ` #` comment.
    Ok(value
        .split(" #")
        .next()
        .unwrap_or(value)
        .trim_end()
        .to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_common_forms() {
        let text =
            "# comment\n\nA=1\nexport B = two words \nC='lit $X'\nD=\"a\\nb\"\nE=v # note\nF=\n";
        let pairs = parse(text).unwrap();
        let expect = [
            ("A", "1"),
            ("B", "two words"),
            ("C", "lit $X"),
            ("D", "a\nb"),
            ("E", "v"),
            ("F", ""),
        ];
        assert_eq!(pairs.len(), expect.len());
        for ((k, v), (ek, ev)) in pairs.iter().zip(expect) {
            assert_eq!((k.as_str(), v.as_str()), (ek, ev));
        }
    }

    #[test]
    fn names_the_bad_line() {
        assert_eq!(parse("A=1\nnonsense\n").unwrap_err().line, 2);
        assert_eq!(parse("1A=x").unwrap_err().line, 1);
        assert_eq!(
            parse("A='x").unwrap_err().message,
            "unterminated single quote"
        );
        assert_eq!(parse("A=1\nB=x\0y\n").unwrap_err().line, 2);
    }

    #[test]
    fn reading_stops_at_the_size_limit() {
        let error = read(Path::new("/dev/zero")).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::FileTooLarge);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".env");
        std::fs::write(&file, "A=1\n").unwrap();
        assert_eq!(read(&file).unwrap(), "A=1\n");
    }
}
