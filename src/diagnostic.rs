//! Problems found in a file the user wrote, with where they are and how to fix them.
//!
//! A [`Diagnostic`] is plain data: a severity, a stable code, a one-line message, labelled
//! byte spans into the source and an optional help line. A [`Report`] ties diagnostics to
//! the file they point into and renders them either like a compiler (source snippet with
//! the offending span underlined, via `codespan-reporting`) or as JSON for scripts.
//! This module knows nothing about TOML or services; the config module produces the
//! diagnostics and the CLI decides where they are printed.
//!
//! A config may be read from several files (`include`). Their texts share one space of
//! offsets: the main file starts at 0 and each included file at its own `base`, past the
//! end of the one before, so a span alone says which file it is in and every check can
//! keep using plain byte ranges.

use std::ops::Range;
use std::path::{Path, PathBuf};

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term;
use codespan_reporting::term::termcolor::WriteColor;
use serde::Serialize;

/// How bad a problem is: errors stop muster from running the file, warnings do not,
/// and a note is no problem at all but something the file may not say as clearly as
/// its author thinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Note,
}

/// A byte range of the source with a short explanation of what is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Range<usize>,
    pub message: String,
}

/// One problem: what is wrong, where, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable, kebab-case identifier of the kind of problem (`unknown-key`, `cycle`, ...).
    pub code: &'static str,
    pub message: String,
    /// The place the problem is, if it has one in the source.
    pub primary: Option<Label>,
    /// Other places that explain it (the other end of a port clash, a cycle's edges).
    pub secondary: Vec<Label>,
    pub notes: Vec<String>,
    /// The fix, when it is known.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Warning, code, message)
    }

    /// A remark about a valid file (shown as `note[code]`); see [`Severity::Note`].
    pub fn remark(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Note, code, message)
    }

    fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity,
            code,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// Points the diagnostic at `span`, labelled with `message` (may be empty).
    pub fn at(mut self, span: Range<usize>, message: impl Into<String>) -> Self {
        self.primary = Some(Label {
            span,
            message: message.into(),
        });
        self
    }

    pub fn also(mut self, span: Range<usize>, message: impl Into<String>) -> Self {
        self.secondary.push(Label {
            span,
            message: message.into(),
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        self.help = help.or(self.help);
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

/// Every diagnostic of one config, with the files' texts so that spans can be shown.
#[derive(Debug, Clone)]
pub struct Report {
    /// The main file, whose text starts at offset 0.
    pub path: PathBuf,
    pub source: String,
    /// The files it includes, each at its own offset.
    pub included: Vec<Included>,
    pub diagnostics: Vec<Diagnostic>,
}

/// A file read through `include`: its text occupies `base..base + source.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Included {
    pub path: PathBuf,
    pub source: String,
    pub base: usize,
}

/// A 1-based line and column (in characters), as editors count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Report {
    pub fn new(path: &Path, source: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            source: source.into(),
            included: Vec::new(),
            diagnostics: Vec::new(),
        }
    }

    /// The file an offset is in: its index (0 the main file, then the included ones in
    /// order), path, text and base.
    fn file_at(&self, offset: usize) -> (usize, &Path, &str, usize) {
        for (index, file) in self.included.iter().enumerate().rev() {
            if offset >= file.base {
                return (index + 1, &file.path, &file.source, file.base);
            }
        }
        (0, &self.path, &self.source, 0)
    }

    /// The path of the file a diagnostic is in: where its primary label points, or the
    /// main file.
    pub fn file_of(&self, diagnostic: &Diagnostic) -> &Path {
        match &diagnostic.primary {
            Some(label) => self.file_at(label.span.start).1,
            None => &self.path,
        }
    }

    /// The same report without its notes: remarks `muster check` makes, which commands
    /// that only use the file need not repeat each time.
    pub fn without_notes(&self) -> Self {
        Self {
            path: self.path.clone(),
            source: self.source.clone(),
            included: self.included.clone(),
            diagnostics: self
                .diagnostics
                .iter()
                .filter(|d| d.severity != Severity::Note)
                .cloned()
                .collect(),
        }
    }

    pub fn push(&mut self, diagnostic: Diagnostic) {
        self.diagnostics.push(diagnostic);
    }

    pub fn error_count(&self) -> usize {
        self.count(Severity::Error)
    }

    pub fn warning_count(&self) -> usize {
        self.count(Severity::Warning)
    }

    pub fn note_count(&self) -> usize {
        self.count(Severity::Note)
    }

    fn count(&self, severity: Severity) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == severity)
            .count()
    }

    pub fn has_errors(&self) -> bool {
        self.error_count() > 0
    }

    /// Orders diagnostics by where they are in the file, so the output reads top to
    /// bottom; problems without a place (the file as a whole) come first.
    pub fn sort(&mut self) {
        self.diagnostics
            .sort_by_key(|d| d.primary.as_ref().map(|l| (l.span.start, l.span.end)));
    }

    /// The line and column of a byte offset (clamped to the file it is in).
    pub fn position(&self, offset: usize) -> Position {
        let (_, _, source, base) = self.file_at(offset);
        let mut offset = (offset - base).min(source.len());
        while !source.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &source[..offset];
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        Position {
            line: before.matches('\n').count() + 1,
            column: before[line_start..].chars().count() + 1,
        }
    }

    /// Writes every diagnostic like a compiler would: header, `file:line:column`, the
    /// source lines with the spans underlined, then notes and help.
    pub fn render(&self, out: &mut dyn WriteColor) -> std::io::Result<()> {
        let mut files = SimpleFiles::new();
        files.add(self.path.display().to_string(), self.source.as_str());
        for file in &self.included {
            files.add(file.path.display().to_string(), file.source.as_str());
        }
        let config = term::Config::default();
        for diagnostic in &self.diagnostics {
            let rendered = self.to_codespan(diagnostic);
            term::emit_to_write_style(out, &config, &files, &rendered).map_err(|e| match e {
                codespan_reporting::files::Error::Io(io) => io,
                other => std::io::Error::other(other.to_string()),
            })?;
        }
        Ok(())
    }

    /// The rendering without colour, as a string (for JSON errors and logs).
    pub fn render_plain(&self) -> String {
        let mut out = codespan_reporting::term::termcolor::NoColor::new(Vec::new());
        // Writing into a Vec cannot fail.
        let _ = self.render(&mut out);
        String::from_utf8_lossy(&out.into_inner()).into_owned()
    }

    fn to_codespan(&self, diagnostic: &Diagnostic) -> cs::Diagnostic<usize> {
        let severity = match diagnostic.severity {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
            Severity::Note => cs::Severity::Note,
        };
        // Each span into its file, clamped to that file's text.
        let place = |span: &Range<usize>| {
            let (id, _, source, base) = self.file_at(span.start);
            let end = span.end.saturating_sub(base).min(source.len());
            (id, (span.start - base).min(end)..end)
        };
        let mut labels = Vec::new();
        if let Some(label) = &diagnostic.primary {
            let (id, range) = place(&label.span);
            labels.push(cs::Label::primary(id, range).with_message(&label.message));
        }
        for label in &diagnostic.secondary {
            let (id, range) = place(&label.span);
            labels.push(cs::Label::secondary(id, range).with_message(&label.message));
        }
        let mut notes = diagnostic.notes.clone();
        if diagnostic.primary.is_none() {
            // Without a label codespan prints no location; say which file it is about.
            notes.insert(0, format!("in `{}`", self.path.display()));
        }
        if let Some(help) = &diagnostic.help {
            notes.push(format!("help: {help}"));
        }
        cs::Diagnostic::new(severity)
            .with_code(diagnostic.code)
            .with_message(&diagnostic.message)
            .with_labels(labels)
            .with_notes(notes)
    }

    /// The machine-readable form: one object per diagnostic with 1-based positions.
    pub fn to_json(&self) -> Vec<serde_json::Value> {
        self.diagnostics
            .iter()
            .map(|d| {
                let span_json = |label: &Label| {
                    serde_json::json!({
                        "start": self.position(label.span.start),
                        "end": self.position(label.span.end),
                        "message": label.message,
                    })
                };
                let start = d.primary.as_ref().map(|l| self.position(l.span.start));
                serde_json::json!({
                    "severity": d.severity,
                    "code": d.code,
                    "message": d.message,
                    "file": self.file_of(d).display().to_string(),
                    "line": start.map(|p| p.line),
                    "column": start.map(|p| p.column),
                    "primary": d.primary.as_ref().map(span_json),
                    "secondary": d.secondary.iter().map(span_json).collect::<Vec<_>>(),
                    "notes": d.notes,
                    "help": d.help,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_count_characters() {
        let report = Report::new(Path::new("m.toml"), "a = 1\nbé = 2\n");
        assert_eq!(report.position(0), Position { line: 1, column: 1 });
        assert_eq!(report.position(6), Position { line: 2, column: 1 });
        // `é` is two bytes but one column.
        assert_eq!(report.position(9), Position { line: 2, column: 3 });
        // Past the end and inside a character are clamped, never a panic.
        assert_eq!(report.position(8), Position { line: 2, column: 2 });
        assert_eq!(report.position(999).line, 3);
    }

    #[test]
    fn sort_puts_fileless_problems_first_then_source_order() {
        let mut report = Report::new(Path::new("m.toml"), "0123456789");
        report.push(Diagnostic::error("b", "b").at(5..6, ""));
        report.push(Diagnostic::error("a", "a").at(1..2, ""));
        report.push(Diagnostic::error("file", "file"));
        report.sort();
        let codes: Vec<_> = report.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(codes, ["file", "a", "b"]);
    }
}
