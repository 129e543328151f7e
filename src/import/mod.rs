//! `muster import`: a Procfile, a docker compose file, a process-compose file, a
//! supervisord config or a pm2 ecosystem file, turned into a commented `muster.toml`.
//!
//! Each format has its own module that reads the file into a [`model::Draft`], mapping
//! what has a meaning in muster and keeping the rest as notes with the reason;
//! [`render`] writes the draft so that `muster check` accepts it on this machine. This
//! module owns the formats' detection and their errors; it writes no file itself.

mod compose;
pub mod model;
mod pm2;
mod process_compose;
mod procfile;
pub mod render;
mod supervisord;
mod yaml;

use std::path::{Path, PathBuf};

/// The formats `muster import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Procfile,
    Compose,
    ProcessCompose,
    Supervisord,
    Pm2,
}

impl Format {
    pub fn tool(self) -> &'static str {
        match self {
            Format::Procfile => "Procfile",
            Format::Compose => "docker compose",
            Format::ProcessCompose => "process-compose",
            Format::Supervisord => "supervisord",
            Format::Pm2 => "pm2 ecosystem",
        }
    }
}

/// Why a file could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    #[error("it is not UTF-8 text")]
    NotUtf8,
    #[error("it is larger than 4 MiB; is it really a config file?")]
    TooLarge,
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{0}")]
    Shape(String),
    #[error("which format it is cannot be told from its name or contents")]
    Unknown,
}

/// What an import produced.
#[derive(Debug)]
pub struct Imported {
    pub format: Format,
    pub rendered: render::Rendered,
}

/// Imports `source` as `format` (or the format its name and contents say), for an
/// output written in `output_dir`.
pub fn import(
    source: &Path,
    format: Option<Format>,
    output_dir: &Path,
) -> Result<Imported, ImportError> {
    let text = read(source)?;
    let format = match format {
        Some(format) => format,
        None => detect(source, &text).ok_or(ImportError::Unknown)?,
    };
    let absolute = std::path::absolute(source).map_err(ImportError::Read)?;
    let source_dir = absolute.parent().unwrap_or(Path::new("/")).to_path_buf();
    let draft = match format {
        Format::Procfile => procfile::read(&text)?,
        Format::Compose => compose::read(&text)?,
        Format::ProcessCompose => process_compose::read(&text)?,
        Format::Supervisord => supervisord::read(&text, &source_dir)?,
        Format::Pm2 => pm2::read(&text, source)?,
    };
    let places = render::Places {
        source_file: source.to_path_buf(),
        source_dir,
        output_dir: std::path::absolute(output_dir).unwrap_or_else(|_| PathBuf::from(output_dir)),
    };
    if draft.services.is_empty() {
        return Err(ImportError::Shape(format!(
            "it defines no services to import (read as a {} file)",
            format.tool()
        )));
    }
    Ok(Imported {
        format,
        rendered: render::render(&draft, &places),
    })
}

fn read(path: &Path) -> Result<String, ImportError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(ImportError::Read)?;
    let mut bytes = Vec::new();
    file.take(crate::config::MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(ImportError::Read)?;
    if bytes.len() as u64 > crate::config::MAX_FILE_SIZE {
        return Err(ImportError::TooLarge);
    }
    String::from_utf8(bytes).map_err(|_| ImportError::NotUtf8)
}

/// The format a file is in, from its name first, then its contents.
pub fn detect(path: &Path, text: &str) -> Option<Format> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    if name.starts_with("procfile") {
        return Some(Format::Procfile);
    }
    if name.contains("process-compose") {
        return Some(Format::ProcessCompose);
    }
    if name.contains("supervisor") || text.contains("[program:") {
        return Some(Format::Supervisord);
    }
    if name.contains("ecosystem")
        || name.ends_with(".js")
        || name.ends_with(".cjs")
        || name.ends_with(".mjs")
        || name.ends_with(".json")
        || name.ends_with(".json5")
    {
        return Some(Format::Pm2);
    }
    if name.ends_with(".yml") || name.ends_with(".yaml") || name.contains("compose") {
        // A file that does not parse goes to the importer its contents suggest, which
        // reports the syntax error with its place.
        let processes = match yaml::parse(text) {
            Ok(value) => value.get("processes").is_some(),
            Err(_) => text.lines().any(|l| l.starts_with("processes:")),
        };
        return Some(if processes {
            Format::ProcessCompose
        } else {
            Format::Compose
        });
    }
    if name.ends_with(".conf") || name.ends_with(".ini") {
        return Some(Format::Supervisord);
    }
    // No telling name: a line of `name: command` is a Procfile.
    let procfile_like = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .all(|l| procfile::entry(l).is_some());
    procfile_like.then_some(Format::Procfile)
}

/// Writes a literal text so that muster's `${...}` expansion gives it back unchanged.
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '$' && matches!(chars.peek(), Some('$' | '{')) {
            out.push('$');
        }
    }
    out
}

/// Text from a tool that expands `${VAR}` and `$VAR` itself, leaving an unset variable
/// empty (compose, process-compose): the same expansion in muster's words, with
/// `${VAR:-}` for an unset one so that it is empty rather than an error. `unbraced`
/// says whether `$VAR` is the tool's too (compose) or left to a shell.
pub fn tool_expanded(text: &str, unbraced: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if rest.starts_with("$$") {
            out.push_str("$$");
            i += 2;
            continue;
        }
        if rest.starts_with("${") {
            if let Some(end) = rest.find('}') {
                let body = &rest[2..end];
                let is_name =
                    !body.is_empty() && body.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                // A required variable (`${VAR:?message}`) would make the file fail
                // `muster check` wherever it is not set: imported as empty, as the
                // tool's own unset variable is (the importer's notes say so).
                let required = body
                    .split_once('?')
                    .map(|(name, _)| name.trim_end_matches(':'))
                    .filter(|n| {
                        !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    });
                if is_name {
                    out.push_str(&format!("${{{body}:-}}"));
                } else if let Some(name) = required {
                    out.push_str(&format!("${{{name}:-}}"));
                } else {
                    out.push_str(&rest[..=end]);
                }
                i += end + 1;
                continue;
            }
            out.push_str("$$");
            i += 1;
            continue;
        }
        if bytes[i] == b'$' && unbraced {
            let name_len = rest[1..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - 1);
            let name = &rest[1..1 + name_len];
            if !name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) {
                out.push_str(&format!("${{{name}:-}}"));
                i += 1 + name_len;
                continue;
            }
        }
        let c = rest.chars().next().unwrap_or('$');
        out.push(c);
        i += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_survive_expansion() {
        assert_eq!(literal("a $HOME ${X} $$"), "a $HOME $${X} $$$");
        assert_eq!(
            tool_expanded("${A} $B ${C:-d} $$x", true),
            "${A:-} ${B:-} ${C:-d} $$x"
        );
        assert_eq!(tool_expanded("${A} $B", false), "${A:-} $B");
        assert_eq!(tool_expanded("${T:?need it}", true), "${T:-}");
    }

    #[test]
    fn formats_are_told_by_name_then_contents() {
        let p = Path::new;
        assert_eq!(detect(p("Procfile"), ""), Some(Format::Procfile));
        assert_eq!(detect(p("Procfile.dev"), ""), Some(Format::Procfile));
        assert_eq!(
            detect(p("process-compose.yaml"), ""),
            Some(Format::ProcessCompose)
        );
        assert_eq!(
            detect(p("x.yaml"), "processes:\n  a:\n    command: b\n"),
            Some(Format::ProcessCompose)
        );
        assert_eq!(
            detect(p("compose.yaml"), "services: {}\n"),
            Some(Format::Compose)
        );
        assert_eq!(detect(p("supervisord.conf"), ""), Some(Format::Supervisord));
        assert_eq!(detect(p("ecosystem.config.js"), ""), Some(Format::Pm2));
        assert_eq!(
            detect(p("stuff"), "web: node a.js\n"),
            Some(Format::Procfile)
        );
    }
}
