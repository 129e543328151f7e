//! Reading the TOML text into the raw schema while collecting every problem at once.
//!
//! serde stops at the first error. To report all of them, the document is first parsed
//! into toml's spanned tree (syntax errors are all collected by the parser itself); then
//! the raw schema is deserialized from that tree, and each time serde refuses a key, the
//! problem is recorded, that key is removed from the tree, and deserialization runs
//! again. Every retry removes a key, so it ends; the raw types have no required keys, so
//! removing one never causes a second, made-up error.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::keypath::{KeyPath, Segment};
use super::raw::RawConfig;
use crate::diagnostic::Diagnostic;
use crate::suggest;

/// The raw config and what was dropped from it to get there.
#[derive(Debug, Default)]
pub struct Recovered {
    pub config: RawConfig,
    /// Paths of the keys removed because serde refused them. Later checks use this to
    /// stay quiet about things those removals caused (a service whose table was wrong
    /// is still a known name for its dependents).
    pub removed: Vec<KeyPath>,
}

/// The most problems reported for one file; past it the rest would be noise.
const MAX_PROBLEMS: usize = 200;

/// Parses and deserializes `source` alone (no includes, no `${...}`), pushing every
/// problem into `problems`. Returns `None` when the file cannot be read as TOML at all.
#[cfg(test)]
pub fn deserialize(source: &str, problems: &mut Vec<Diagnostic>) -> Option<Recovered> {
    let (tree, syntax_errors) = DeTable::parse_recoverable(source);
    if let Some(error) = syntax_errors.first() {
        // Only the first: once the parser has lost its footing (an unclosed array
        // swallows every line after it), what it says next is mostly echo.
        problems.push(super::syntax::diagnose(source, error));
        return None;
    }
    deserialize_tree(tree, Vec::new(), problems)
}

/// Deserializes the raw schema from a parsed (and merged) tree, pushing every problem
/// into `problems`. `removed` lists keys already taken out of the tree (values whose
/// `${...}` could not be expanded).
pub fn deserialize_tree(
    mut tree: Spanned<DeTable<'_>>,
    mut removed: Vec<KeyPath>,
    problems: &mut Vec<Diagnostic>,
) -> Option<Recovered> {
    loop {
        let attempt = RawConfig::deserialize(toml::de::Deserializer::from(tree.clone()));
        let error = match attempt {
            Ok(config) => return Some(Recovered { config, removed }),
            Err(error) => error,
        };
        let span = error.span();
        let path = span.as_ref().and_then(|span| locate(tree.get_ref(), span));
        problems.push(translate(&error, path.as_ref()));
        match path {
            Some(path) if removed.len() < MAX_PROBLEMS && remove(tree.get_mut(), &path.0) => {
                removed.push(path)
            }
            // The problem cannot be pinned to a key: what remains cannot be trusted.
            _ => return None,
        }
    }
}

/// The innermost key whose key or (scalar) value covers `span`.
fn locate(table: &DeTable<'_>, span: &Range<usize>) -> Option<KeyPath> {
    let mut path = Vec::new();
    locate_in_table(table, span, &mut path).then_some(KeyPath(path))
}

fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

fn locate_in_table(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<Segment>) -> bool {
    for (key, value) in table.iter() {
        path.push(Segment::Key(key.get_ref().to_string()));
        // The key first: a `[table.header]` lies inside the spans of the tables it
        // opens, and an error about the header's own key must not land in them.
        if covers(&key.span(), span) || locate_in_value(value, span, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn locate_in_value(
    value: &Spanned<DeValue<'_>>,
    span: &Range<usize>,
    path: &mut Vec<Segment>,
) -> bool {
    match value.get_ref() {
        // Tables are searched whatever their own span says: a table built from
        // `[a.b]` headers is spread over the file.
        DeValue::Table(table) => locate_in_table(table, span, path) || covers(&value.span(), span),
        DeValue::Array(array) => {
            for (index, item) in array.iter().enumerate() {
                if let DeValue::Table(table) = item.get_ref() {
                    path.push(Segment::Index(index));
                    if locate_in_table(table, span, path) {
                        return true;
                    }
                    path.pop();
                }
            }
            covers(&value.span(), span)
        }
        _ => covers(&value.span(), span),
    }
}

/// Removes the key at `path`. Paths from `locate` always end at a key: an error in a
/// scalar array item is pinned to the array's own key.
fn remove(table: &mut DeTable<'_>, path: &[Segment]) -> bool {
    match path {
        [Segment::Key(key)] => table.remove(key.as_str()).is_some(),
        [Segment::Key(key), rest @ ..] => match table.get_mut(key.as_str()).map(|v| v.get_mut()) {
            Some(DeValue::Table(inner)) => remove(inner, rest),
            Some(DeValue::Array(array)) => match rest {
                [Segment::Index(index), inner_rest @ ..] => {
                    match array.get_mut(*index).map(|v| v.get_mut()) {
                        Some(DeValue::Table(inner)) => remove(inner, inner_rest),
                        _ => false,
                    }
                }
                _ => false,
            },
            _ => false,
        },
        _ => false,
    }
}

/// Turns serde's message into one in muster's voice, naming the key and the fix.
fn translate(error: &toml::de::Error, path: Option<&KeyPath>) -> Diagnostic {
    let message = error.message().trim();
    let at = |d: Diagnostic| match error.span() {
        Some(span) => d.at(span, ""),
        None => d,
    };
    let where_ = path.map(ToString::to_string).unwrap_or_default();
    if let Some(rest) = message.strip_prefix("unknown field ") {
        let words = backticked(rest);
        if let Some((unknown, expected)) = words.split_first() {
            let table = path
                .map(|p| KeyPath(p.0[..p.0.len().saturating_sub(1)].to_vec()).to_string())
                .filter(|t| !t.is_empty());
            let in_table =
                table.map_or_else(|| "at the top level".to_owned(), |t| format!("in `{t}`"));
            let diagnostic = at(Diagnostic::error(
                "unknown-key",
                format!("unknown key `{unknown}` {in_table}"),
            ));
            if let Some(advice) = super::foreign::advice(unknown, expected) {
                return diagnostic.help(advice);
            }
            let known = expected.iter().map(String::as_str);
            return match suggest::nearest(unknown, known) {
                Some(near) => diagnostic.help(format!("did you mean `{near}`?")),
                None if expected.is_empty() => diagnostic,
                None => diagnostic.note(format!("valid keys here: {}", expected.join(", "))),
            };
        }
    }
    if let Some(rest) = message.strip_prefix("invalid type: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        let expected = toml_words(expected);
        let found = toml_words(found);
        let help = (expected == "a table").then(|| match path.and_then(|p| p.0.last()) {
            Some(Segment::Key(key)) if key == "ready" || key == "alive" => {
                format!("a probe is a table: {key} = {{ tcp = \"127.0.0.1:8080\" }} or {key} = {{ notify = true }}")
            }
            Some(Segment::Key(key)) => format!("write it as a table: {key} = {{ ... }}, or as a [{where_}] section"),
            _ => "write it as a table".to_owned(),
        });
        return at(Diagnostic::error(
            "wrong-type",
            format!("`{where_}` must be {expected}, not {found}"),
        ))
        .help_opt(help);
    }
    if let Some(rest) = message.strip_prefix("invalid value: ")
        && let Some((found, expected)) = rest.split_once(", expected ")
    {
        return at(Diagnostic::error(
            "invalid-value",
            format!("`{where_}` must be {expected}, not {found}"),
        ));
    }
    let text = if where_.is_empty() {
        message.to_owned()
    } else {
        format!("`{where_}`: {message}")
    };
    at(Diagnostic::error("invalid-value", text))
}

/// serde speaks of structs, sequences and maps; a TOML user of tables and arrays.
fn toml_words(text: &str) -> String {
    let text = text.trim();
    if text.starts_with("struct ") || text == "map" || text == "a map" {
        return "a table".to_owned();
    }
    if text == "sequence" || text == "a sequence" {
        return "an array".to_owned();
    }
    text.to_owned()
}

/// The words between backticks in serde's "unknown field `x`, expected one of `a`, `b`".
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(source: &str) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        deserialize(source, &mut problems);
        problems
    }

    #[test]
    fn every_bad_key_is_reported_not_just_the_first() {
        let source = "[services.a]\ncomand = \"x\"\nautostart = \"yes\"\n\n[services.b]\nrestart-limt = {}\n";
        let problems = problems_of(source);
        let messages: Vec<_> = problems.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(messages.len(), 3, "{messages:#?}");
        assert!(messages.contains(&"unknown key `comand` in `services.a`"));
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("`services.a.autostart` must be a boolean"))
        );
        assert!(messages.contains(&"unknown key `restart-limt` in `services.b`"));
        let comand = problems
            .iter()
            .find(|d| d.message.contains("comand"))
            .unwrap();
        assert_eq!(comand.help.as_deref(), Some("did you mean `command`?"));
        assert_eq!(
            &source[comand.primary.as_ref().unwrap().span.clone()],
            "comand"
        );
    }

    #[test]
    fn a_syntax_error_is_reported_once_not_echoed() {
        let source = "[services.a]\ncommand = [\"x\"\nready = {}\n[services.b]\ncommand = \"y\"\n";
        let problems = problems_of(source);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].code, "syntax");
        assert_eq!(
            problems[0].primary.as_ref().unwrap().span.start,
            source.find("ready").unwrap()
        );
    }

    #[test]
    fn errors_inside_arrays_of_tables_are_located() {
        let source =
            "[[hooks]]\non = [\"failed\"]\nrun = \"x\"\n\n[[hooks]]\nrun = \"y\"\ntimeout = 5\n";
        let problems = problems_of(source);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(
            problems[0]
                .message
                .starts_with("`hooks[1].timeout`: a duration needs a unit"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn type_errors_speak_toml_not_rust() {
        let problems = problems_of("[services.a]\nready = \"notify\"\nenv = [\"A=1\"]\n");
        let mut messages: Vec<_> = problems.iter().map(|d| d.message.as_str()).collect();
        messages.sort_unstable();
        assert_eq!(
            messages,
            [
                "`services.a.env` must be a table, not an array",
                "`services.a.ready` must be a table, not string \"notify\"",
            ]
        );
        let ready = problems
            .iter()
            .find(|d| d.message.contains("ready"))
            .unwrap();
        assert!(ready.help.as_deref().unwrap().contains("{ notify = true }"));
    }

    #[test]
    fn key_paths_read_like_toml() {
        let path = KeyPath(vec![
            Segment::Key("hooks".into()),
            Segment::Index(2),
            Segment::Key("run".into()),
        ]);
        assert_eq!(path.to_string(), "hooks[2].run");
    }
}
