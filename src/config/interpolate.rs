//! `${VAR}` in string values, with docker compose's rules.
//!
//! `${VAR}` is the variable's value (an error when it is unset), `${VAR:-default}` the
//! default when it is unset or empty (`${VAR-default}`: only when unset),
//! `${VAR:?message}` an error with that message when it is unset or empty
//! (`${VAR?message}`: only when unset), `${VAR:+other}` `other` when it is set and not
//! empty (`${VAR+other}`: when set), and `$$` a literal `$`. A default may itself hold
//! `${...}`. A `$` before anything else (`$PORT`, `$1`) is left as written: commands
//! are often for a shell, which reads those when the service runs.
//!
//! Expansion is one pass over the text as written: a value that holds `${...}` is put
//! in as it is, never expanded again. This module works on one string and knows
//! nothing of TOML; [`super::sources`] walks the parsed file and maps places back to it.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use super::envfile;

/// Where the values of variables come from: the environment first, then the `.env`
/// file beside the config (compose's order: the environment wins).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    dotenv: HashMap<String, String>,
    /// The environment as read when the config was loaded; `None` reads the process's.
    environment: Option<HashMap<String, String>>,
}

/// Why the `.env` beside the config could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DotenvProblem {
    pub path: std::path::PathBuf,
    pub message: String,
}

impl Vars {
    /// The process environment and the `.env` file in `dir`, if there is one.
    pub fn for_dir(dir: &Path) -> (Self, Option<DotenvProblem>) {
        let path = dir.join(".env");
        let mut vars = Self::default();
        let text = match envfile::read(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return (vars, None),
            Err(error) => {
                let problem = DotenvProblem {
                    path,
                    message: error.to_string(),
                };
                return (vars, Some(problem));
            }
        };
        match envfile::parse(&text) {
            Ok(pairs) => {
                vars.dotenv = pairs.into_iter().collect();
                (vars, None)
            }
            Err(error) => {
                let problem = DotenvProblem {
                    path,
                    message: error.to_string(),
                };
                (vars, Some(problem))
            }
        }
    }

    /// Fixed variables, for tests: no environment, no file.
    #[cfg(test)]
    pub fn fixed(pairs: &[(&str, &str)]) -> Self {
        Self {
            dotenv: HashMap::new(),
            environment: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        let from_environment = match &self.environment {
            Some(fixed) => fixed.get(name).cloned(),
            // A value that is not UTF-8 cannot go into a TOML string; treat it as unset
            // rather than mangle it.
            None => std::env::var(name).ok(),
        };
        from_environment.or_else(|| self.dotenv.get(name).cloned())
    }
}

/// An expression that could not be expanded: where it is in the text, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The byte range of the whole `${...}` in the text given to [`expand`].
    pub span: Range<usize>,
    pub message: String,
    pub help: String,
}

/// Whether `text` has anything [`expand`] would change.
pub fn has_expressions(text: &str) -> bool {
    text.contains('$')
}

/// Expands every expression of `text`, or says where the first that cannot be is.
pub fn expand(text: &str, vars: &Vars) -> Result<String, Failure> {
    let mut out = String::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut literal_from = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => {
                out.push_str(&text[literal_from..i]);
                out.push('$');
                i += 2;
                literal_from = i;
            }
            Some(b'{') => {
                out.push_str(&text[literal_from..i]);
                let end = closing_brace(text, i + 2).ok_or_else(|| Failure {
                    span: i..text.len(),
                    message: "`${` is not closed".to_owned(),
                    help: "close it with `}`, or write `$${` for a literal `${`".to_owned(),
                })?;
                out.push_str(&braced(text, i, end, vars)?);
                i = end + 1;
                literal_from = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&text[literal_from..]);
    Ok(out)
}

/// The index of the `}` that closes the expression whose body starts at `from`,
/// counting the braces of nested expressions in a default.
fn closing_brace(text: &str, from: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'$') => i += 1,
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// One `${...}`: `start` is the index of its `$`, `end` of its closing `}`.
fn braced(text: &str, start: usize, end: usize, vars: &Vars) -> Result<String, Failure> {
    let body = &text[start + 2..end];
    let span = start..end + 1;
    let whole = &text[span.clone()];
    let name_len = body
        .char_indices()
        .find(|&(i, c)| !(c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())))
        .map_or(body.len(), |(i, _)| i);
    let name = &body[..name_len];
    if name.is_empty() {
        return Err(Failure {
            span,
            message: format!("`{whole}` does not name a variable"),
            help: "a name is letters, digits and `_`, not starting with a digit, such as `${PORT}`; write `$${` for a literal `${`".to_owned(),
        });
    }
    let rest = &body[name_len..];
    let (colon, rest) = match rest.strip_prefix(':') {
        Some(after) => (true, after),
        None => (false, rest),
    };
    let value = vars.get(name);
    // With a colon, an empty value counts as unset (compose's and the shell's rule).
    let set = value.as_deref().is_some_and(|v| !colon || !v.is_empty());
    let operator = rest.chars().next();
    // The word after the operator, expanded in its turn; its failures point into it.
    let word_start = start + 2 + name_len + usize::from(colon) + 1;
    let word = |vars: &Vars| {
        expand(&rest[1..], vars).map_err(|failure| Failure {
            span: failure.span.start + word_start..failure.span.end + word_start,
            ..failure
        })
    };
    match operator {
        None if !colon => value.ok_or_else(|| Failure {
            span,
            message: format!("`{name}` is not set"),
            help: format!(
                "set `{name}` in the environment or in `.env` beside the file, or give a default: `${{{name}:-value}}` (`$${{{name}}}` is a literal `${{{name}}}`)"
            ),
        }),
        Some('-') if set => Ok(value.unwrap_or_default()),
        Some('-') => word(vars),
        Some('+') if set => word(vars),
        Some('+') => Ok(String::new()),
        Some('?') if set => Ok(value.unwrap_or_default()),
        Some('?') => {
            let said = word(vars)?;
            let why = if value.is_some() { "is empty" } else { "is not set" };
            Err(Failure {
                span,
                message: if said.trim().is_empty() {
                    format!("`{name}` {why}")
                } else {
                    format!("`{name}` {why}: {said}")
                },
                help: format!("set `{name}` in the environment or in `.env` beside the file"),
            })
        }
        _ => Err(Failure {
            span,
            message: format!("`{whole}` is not an expression muster knows"),
            help: format!(
                "write `${{{name}}}`, `${{{name}:-default}}` or `${{{name}:?message}}`; `$${{` is a literal `${{`"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::fixed(&[("HOME", "/home/a"), ("EMPTY", ""), ("TRICK", "${HOME}")])
    }

    #[test]
    fn compose_forms() {
        let v = vars();
        let cases = [
            ("${HOME}/x", "/home/a/x"),
            ("${NOPE:-d}", "d"),
            ("${EMPTY:-d}", "d"),
            ("${EMPTY-d}", ""),
            ("${NOPE-d}", "d"),
            ("${HOME:+yes}", "yes"),
            ("${EMPTY:+yes}", ""),
            ("${EMPTY+yes}", "yes"),
            ("${NOPE+yes}", ""),
            ("${HOME:?needed}", "/home/a"),
            ("$$HOME $${HOME} $$", "$HOME ${HOME} $"),
            ("$HOME $1 $ a$", "$HOME $1 $ a$"),
            ("${NOPE:-${HOME}/d}", "/home/a/d"),
            ("${NOPE:-a}b}", "ab}"),
            ("${EMPTY}", ""),
            ("é${HOME}é", "é/home/aé"),
        ];
        for (text, want) in cases {
            assert_eq!(expand(text, &v).as_deref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn values_are_not_expanded_twice() {
        assert_eq!(expand("${TRICK}", &vars()).as_deref(), Ok("${HOME}"));
    }

    #[test]
    fn failures_point_at_the_expression() {
        let v = vars();
        let failure = expand("a ${NOPE} b", &v).unwrap_err();
        assert_eq!(failure.span, 2..9);
        assert_eq!(failure.message, "`NOPE` is not set");
        let failure = expand("x${NOPE:?give a token}", &v).unwrap_err();
        assert_eq!(failure.span, 1..22);
        assert_eq!(failure.message, "`NOPE` is not set: give a token");
        let failure = expand("${EMPTY:?}", &v).unwrap_err();
        assert_eq!(failure.message, "`EMPTY` is empty");
        let failure = expand("ab ${NOPE:-${ALSO}}", &v).unwrap_err();
        assert_eq!(failure.span, 11..18);
        assert!(
            expand("${HOME", &v)
                .unwrap_err()
                .message
                .contains("not closed")
        );
        assert!(
            expand("${1x}", &v)
                .unwrap_err()
                .message
                .contains("does not name")
        );
        assert!(
            expand("${HOME:=x}", &v)
                .unwrap_err()
                .message
                .contains("not an expression")
        );
    }
}
