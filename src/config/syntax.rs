//! TOML syntax errors in muster's words: what the parser found, where, and the fix.
//!
//! The parser's own messages are terse ("duplicate key", "unclosed array"). A duplicate
//! key in particular is reported by it at the second definition only, with no name and
//! no link to the first; this module names the key, its table, and both places, and
//! does not guess at unclosed brackets when the problem is a repeated key.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::keypath::{KeyPath, Segment};
use crate::diagnostic::Diagnostic;

/// The diagnostic for the first syntax error of `source`.
pub fn diagnose(source: &str, error: &toml::de::Error) -> Diagnostic {
    let message = error.message().trim();
    let span = error.span();
    if message == "duplicate key"
        && let Some(span) = &span
        && let Some(duplicate) = duplicate(source, span)
    {
        return duplicate;
    }
    let mut diagnostic = Diagnostic::error("syntax", format!("invalid TOML: {message}"))
        .note("the rest of the file is checked once this is fixed");
    if let Some(span) = span {
        let at_line_start =
            span.start == 0 || source.as_bytes().get(span.start - 1) == Some(&b'\n');
        if at_line_start && span.start > 0 {
            diagnostic = diagnostic.help("is a `[` or `{` on a line above left unclosed?");
        }
        diagnostic = diagnostic.at(span, "");
    }
    diagnostic
}

/// A key (or table header) defined twice, `span` being the parser's place for the
/// second definition. `None` when the place does not hold a key.
fn duplicate(source: &str, span: &Range<usize>) -> Option<Diagnostic> {
    let written = source.get(span.clone())?;
    let name = key_name(written)?;
    // Which table the second definition is in: put a name that cannot clash in its
    // place and see where the parser files it. The first definition is then the key of
    // that name in the same table.
    let marker = unused_marker(source);
    let edited = format!("{}{marker}{}", &source[..span.start], &source[span.end..]);
    let (tree, _) = DeTable::parse_recoverable(&edited);
    let mut path = Vec::new();
    let first = find_key(tree.get_ref(), &marker, &mut path).and_then(|parent| {
        parent
            .get_key_value(name.as_str())
            .map(|(key, _)| key.span())
            .filter(|first| first.end <= span.start)
    });
    let header = source[..span.start]
        .rsplit('\n')
        .next()
        .is_some_and(|line| line.trim_start().starts_with('['));
    let table = KeyPath(path.clone()).to_string();
    path.push(Segment::Key(name.clone()));
    let full = KeyPath(path).to_string();
    let (message, help) = if header {
        (
            format!("the table `[{full}]` is defined twice"),
            "a table is written once: merge the two into one, or rename one of them",
        )
    } else if table.is_empty() {
        (
            format!("duplicate key `{name}` at the top level"),
            "a key is written once per table: remove one of them",
        )
    } else {
        (
            format!("duplicate key `{name}` in `{table}`"),
            "a key is written once per table: remove one of them, or merge their values",
        )
    };
    let mut diagnostic = Diagnostic::error("duplicate-key", message)
        .at(span.clone(), "defined again here")
        .help(help);
    if let Some(first) = first {
        diagnostic = diagnostic.also(first, "first defined here");
    }
    Some(diagnostic)
}

/// The name a key is written as: bare, or quoted (read as TOML reads it).
fn key_name(written: &str) -> Option<String> {
    let line = format!("{written} = 0");
    let (table, _) = DeTable::parse_recoverable(&line);
    let table = table.into_inner();
    let mut keys = table.iter();
    match (keys.next(), keys.next()) {
        (Some((key, _)), None) => Some(key.get_ref().to_string()),
        _ => None,
    }
}

fn unused_marker(source: &str) -> String {
    let mut marker = "muster-duplicate-key".to_owned();
    while source.contains(&marker) {
        marker.push('-');
    }
    marker
}

/// The table holding `key`, searched depth-first; `path` is left as its place.
fn find_key<'t, 'i>(
    table: &'t DeTable<'i>,
    key: &str,
    path: &mut Vec<Segment>,
) -> Option<&'t DeTable<'i>> {
    if table.contains_key(key) {
        return Some(table);
    }
    for (name, value) in table.iter() {
        path.push(Segment::Key(name.get_ref().to_string()));
        if let Some(found) = find_in_value(value, key, path) {
            return Some(found);
        }
        path.pop();
    }
    None
}

fn find_in_value<'t, 'i>(
    value: &'t Spanned<DeValue<'i>>,
    key: &str,
    path: &mut Vec<Segment>,
) -> Option<&'t DeTable<'i>> {
    match value.get_ref() {
        DeValue::Table(table) => find_key(table, key, path),
        // In an array of tables the marker is in one of them, usually the last.
        DeValue::Array(array) => array.iter().enumerate().rev().find_map(|(index, item)| {
            let DeValue::Table(table) = item.get_ref() else {
                return None;
            };
            path.push(Segment::Index(index));
            let found = find_key(table, key, path);
            if found.is_none() {
                path.pop();
            }
            found
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_error(source: &str) -> Diagnostic {
        let (_, errors) = DeTable::parse_recoverable(source);
        diagnose(source, errors.first().expect("a syntax error"))
    }

    fn labelled<'s>(source: &'s str, diagnostic: &Diagnostic) -> (&'s str, Vec<usize>) {
        let primary = diagnostic.primary.as_ref().unwrap().span.clone();
        let lines = diagnostic
            .secondary
            .iter()
            .map(|l| source[..l.span.start].matches('\n').count() + 1)
            .collect();
        (&source[primary], lines)
    }

    #[test]
    fn a_duplicate_key_is_named_with_both_places() {
        let source = "[services.a]\ncommand = [\"x\"]\nenv = {}\ncommand = [\"y\"]\n";
        let d = first_error(source);
        assert_eq!(d.code, "duplicate-key");
        assert_eq!(d.message, "duplicate key `command` in `services.a`");
        assert_eq!(labelled(source, &d), ("command", vec![2]));
        assert!(d.help.unwrap().contains("remove one of them"));
    }

    #[test]
    fn the_first_place_is_in_the_same_table_not_a_namesake() {
        let source = "[services.a]\ncommand = \"x\"\n[services.b]\nshell = \"y\"\n\n[services.b.env]\nA = 1\n[services.c]\ncommand = \"z\"\nshell = \"w\"\ncommand = \"v\"\n";
        let d = first_error(source);
        assert_eq!(d.message, "duplicate key `command` in `services.c`");
        assert_eq!(labelled(source, &d).1, vec![9]);
    }

    #[test]
    fn duplicates_in_inline_tables_quoted_keys_and_headers() {
        let source = "[services.a]\nenv = { A = 1, \"A\" = 2 }\n";
        let d = first_error(source);
        assert_eq!(d.message, "duplicate key `A` in `services.a.env`");
        assert_eq!(labelled(source, &d), ("\"A\"", vec![2]));

        let source = "[services.a]\ncommand = \"x\"\n\n[services.a]\nshell = \"y\"\n";
        let d = first_error(source);
        assert_eq!(d.message, "the table `[services.a]` is defined twice");
        assert_eq!(labelled(source, &d).1, vec![1]);
        assert!(d.help.unwrap().contains("merge"));

        let source = "top = 1\ntop = 2\n";
        assert_eq!(
            first_error(source).message,
            "duplicate key `top` at the top level"
        );

        let source = "[[hooks]]\non = [\"failed\"]\nrun = \"x\"\n[[hooks]]\non = [\"failed\"]\non = [\"exited\"]\n";
        let d = first_error(source);
        assert_eq!(d.message, "duplicate key `on` in `hooks[1]`");
        assert_eq!(labelled(source, &d).1, vec![5]);
    }

    #[test]
    fn other_syntax_errors_keep_the_parsers_words() {
        let d = first_error("[services.a]\ncommand = [\"x\"\nready = {}\n");
        assert_eq!(d.code, "syntax");
        assert!(d.message.starts_with("invalid TOML: "), "{}", d.message);
    }
}
