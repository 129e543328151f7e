//! The files a config is made of, and the one tree they make together.
//!
//! A config file may name others with `include = ["base.toml", "gpu.toml"]` (relative
//! to the file that names them). The included files come first, in their order, and
//! the file itself last: each later file overrides the earlier ones key by key, tables
//! merged deeply and any other value (arrays too) replaced whole. An included file may
//! include others; a cycle is an error that shows its path.
//!
//! Every file's text is given its own range of offsets (see [`crate::diagnostic`]), so
//! the spans of the merged tree still say which file each value came from, and `${VAR}`
//! in string values is expanded here, on the parsed values with their places (see
//! [`super::interpolate`]): expanding the text before parsing would break the spans and
//! let a value's quotes or newlines change the file's structure.
//!
//! This module reads files and builds the tree; what the keys mean is left to `recover`
//! and `validate`.

use std::borrow::Cow;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::interpolate::{self, Vars};
use super::keypath::{KeyPath, Segment};
use crate::diagnostic::{Diagnostic, Included};

/// The key that names the files a file includes.
pub const INCLUDE: &str = "include";

/// How deep includes may nest; past it the files are almost surely a cycle through
/// symbolic links or generated names.
pub(super) const MAX_DEPTH: usize = 32;

/// One file of the config.
#[derive(Debug)]
pub struct Source {
    /// The path as shown in messages: as given for the main file, joined to the
    /// directory of the including file for the others.
    pub shown: PathBuf,
    /// Where the file really is, to find cycles and the files it includes.
    pub absolute: PathBuf,
    pub text: String,
    /// Where its text starts in the shared space of offsets.
    pub base: usize,
}

/// Every file of a config, in the order they were found (the main file first), and the
/// order in which they are merged.
#[derive(Debug)]
pub struct Sources {
    pub files: Vec<Source>,
    order: Vec<usize>,
    pub vars: Vars,
}

impl Sources {
    /// Reads the main file's includes, and theirs, reporting files that cannot be read
    /// and cycles. `text` is the main file's.
    pub fn gather(
        shown: &Path,
        absolute: &Path,
        text: String,
        problems: &mut Vec<Diagnostic>,
    ) -> Self {
        let dir = absolute.parent().unwrap_or(Path::new("/"));
        let (vars, dotenv_problem) = Vars::for_dir(dir);
        if let Some(problem) = dotenv_problem {
            problems.push(
                Diagnostic::warning(
                    "dotenv",
                    format!(
                        "`{}` cannot be read for `${{...}}` in the config: {}",
                        problem.path.display(),
                        problem.message
                    ),
                )
                .help("fix the file (KEY=VALUE lines), or remove it; the environment is used alone meanwhile"),
            );
        }
        let mut sources = Self {
            files: vec![Source {
                shown: shown.to_path_buf(),
                absolute: absolute.to_path_buf(),
                text,
                base: 0,
            }],
            order: Vec::new(),
            vars,
        };
        sources.visit(0, &mut vec![0], problems);
        sources
    }

    /// Every file, in the order they are merged (the later ones win).
    pub fn merge_order(&self) -> Vec<&Path> {
        self.order
            .iter()
            .map(|&i| self.files[i].shown.as_path())
            .collect()
    }

    /// The included files, for a report that can show them.
    pub fn included(&self) -> Vec<Included> {
        self.files[1..]
            .iter()
            .map(|file| Included {
                path: file.shown.clone(),
                source: file.text.clone(),
                base: file.base,
            })
            .collect()
    }

    fn visit(&mut self, index: usize, stack: &mut Vec<usize>, problems: &mut Vec<Diagnostic>) {
        for (name, span) in self.include_entries(index, problems) {
            let including = &self.files[index];
            let absolute = including
                .absolute
                .parent()
                .unwrap_or(Path::new("/"))
                .join(&name);
            let shown = including
                .shown
                .parent()
                .unwrap_or(Path::new(""))
                .join(&name);
            let identity = std::fs::canonicalize(&absolute).unwrap_or_else(|_| absolute.clone());
            let known = self.files.iter().position(|f| {
                f.absolute == absolute
                    || std::fs::canonicalize(&f.absolute).is_ok_and(|c| c == identity)
            });
            if let Some(known) = known
                && let Some(at) = stack.iter().position(|&i| i == known)
            {
                // Named from the main file's directory: short, and each name distinct.
                let top = self.files[0].shown.parent().unwrap_or(Path::new(""));
                let name = |i: usize| {
                    let shown = &self.files[i].shown;
                    shown
                        .strip_prefix(top)
                        .unwrap_or(shown)
                        .display()
                        .to_string()
                };
                let mut path: Vec<String> = stack[at..].iter().map(|&i| name(i)).collect();
                path.push(name(known));
                problems.push(
                    Diagnostic::error(
                        "include-cycle",
                        format!("`include` forms a cycle: {}", path.join(" -> ")),
                    )
                    .at(span, "includes a file that includes this one")
                    .help("remove one of the includes; put what both files share in a third file that each includes"),
                );
                continue;
            }
            if stack.len() >= MAX_DEPTH {
                problems.push(
                    Diagnostic::error(
                        "include-depth",
                        format!("includes nest more than {MAX_DEPTH} files deep"),
                    )
                    .at(span, ""),
                );
                continue;
            }
            let next = match known {
                // Included twice (by two files): merged at each place, read once.
                Some(known) => known,
                None => match read(&absolute) {
                    Ok(text) => {
                        let last = self.files.last().expect("the main file is always there");
                        // One offset of gap, so that an empty file still has a place.
                        let base = last.base + last.text.len() + 1;
                        self.files.push(Source {
                            shown,
                            absolute,
                            text,
                            base,
                        });
                        self.files.len() - 1
                    }
                    Err(why) => {
                        problems.push(
                            Diagnostic::error(
                                "include-unreadable",
                                format!("cannot include `{}`: {why}", shown.display()),
                            )
                            .at(span, "")
                            .help("include paths are relative to the file that names them; fix the path or create the file"),
                        );
                        continue;
                    }
                },
            };
            stack.push(next);
            self.visit(next, stack, problems);
            stack.pop();
        }
        self.order.push(index);
    }

    /// The file names a file's `include` lists, with their places. Problems with the
    /// list itself are reported here; an entry whose `${...}` cannot be expanded is
    /// skipped, because the expansion of the whole file reports it.
    fn include_entries(
        &self,
        index: usize,
        problems: &mut Vec<Diagnostic>,
    ) -> Vec<(String, Range<usize>)> {
        let file = &self.files[index];
        let (tree, errors) = DeTable::parse_recoverable(&file.text);
        if !errors.is_empty() {
            // Reported when the file is merged.
            return Vec::new();
        }
        let Some(value) = tree.get_ref().get(INCLUDE) else {
            return Vec::new();
        };
        let shift = |span: Range<usize>| span.start + file.base..span.end + file.base;
        let wrong = |span| {
            Diagnostic::error("wrong-type", "`include` must be an array of file names")
                .at(shift(span), "")
                .help("write include = [\"base.toml\"]")
        };
        let DeValue::Array(entries) = value.get_ref() else {
            problems.push(wrong(value.span()));
            return Vec::new();
        };
        let mut names = Vec::new();
        for entry in entries.iter() {
            match entry.get_ref() {
                DeValue::String(name) => {
                    if let Ok(name) = interpolate::expand(name, &self.vars) {
                        if name.trim().is_empty() {
                            problems.push(
                                Diagnostic::error("invalid-value", "`include` names an empty path")
                                    .at(shift(entry.span()), ""),
                            );
                        } else {
                            names.push((name, shift(entry.span())));
                        }
                    }
                }
                _ => problems.push(wrong(entry.span())),
            }
        }
        names
    }

    /// Every file parsed, its strings expanded, merged in order. `None` when a file is
    /// not valid TOML (reported). The paths of values whose expansion failed are
    /// returned, already removed from the tree, so later checks can stay quiet about
    /// their absence.
    pub fn merge(
        &self,
        problems: &mut Vec<Diagnostic>,
    ) -> Option<(Spanned<DeTable<'_>>, Vec<KeyPath>)> {
        let mut merged = DeTable::new();
        let mut failed = false;
        let mut removed = Vec::new();
        for &index in &self.order {
            let file = &self.files[index];
            let (tree, errors) = DeTable::parse_recoverable(&file.text);
            if let Some(error) = errors.first() {
                // Only the first: see `recover`.
                problems.push(shift_diagnostic(
                    super::syntax::diagnose(&file.text, error),
                    file.base,
                ));
                failed = true;
                continue;
            }
            let mut table = tree.into_inner();
            shift_table(&mut table, file.base);
            let mut expander = Expander {
                file,
                vars: &self.vars,
                problems,
                failed: Vec::new(),
            };
            expander.table(&mut table, &mut Vec::new());
            for path in expander.failed {
                remove(&mut table, &path.0);
                removed.push(path);
            }
            table.remove(INCLUDE);
            merge_tables(&mut merged, table);
        }
        if failed {
            return None;
        }
        let main_len = self.files[0].text.len();
        Some((Spanned::new(0..main_len, merged), removed))
    }
}

/// Reads an included file: at most [`super::MAX_FILE_SIZE`], UTF-8.
pub(super) fn read(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(super::MAX_FILE_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > super::MAX_FILE_SIZE {
        return Err(format!(
            "it is larger than {} MiB",
            super::MAX_FILE_SIZE >> 20
        ));
    }
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())
}

/// Moves a diagnostic's spans from a file's own offsets to the shared ones.
fn shift_diagnostic(mut diagnostic: Diagnostic, base: usize) -> Diagnostic {
    let shift = |span: &mut Range<usize>| *span = span.start + base..span.end + base;
    if let Some(label) = &mut diagnostic.primary {
        shift(&mut label.span);
    }
    for label in &mut diagnostic.secondary {
        shift(&mut label.span);
    }
    diagnostic
}

fn shifted<T>(value: Spanned<T>, base: usize) -> Spanned<T> {
    let span = value.span();
    Spanned::new(span.start + base..span.end + base, value.into_inner())
}

fn shift_table(table: &mut DeTable<'_>, base: usize) {
    if base == 0 {
        return;
    }
    let old = std::mem::replace(table, DeTable::new());
    for (key, mut value) in old {
        shift_value(&mut value, base);
        table.insert(shifted(key, base), value);
    }
}

fn shift_value(value: &mut Spanned<DeValue<'_>>, base: usize) {
    match value.get_mut() {
        DeValue::Table(table) => shift_table(table, base),
        DeValue::Array(array) => array.iter_mut().for_each(|item| shift_value(item, base)),
        _ => {}
    }
    let inner = std::mem::replace(value.get_mut(), DeValue::Boolean(false));
    *value = shifted(Spanned::new(value.span(), inner), base);
}

/// Later over earlier, key by key: tables merge, anything else is replaced.
fn merge_tables<'a>(into: &mut DeTable<'a>, from: DeTable<'a>) {
    for (key, value) in from {
        let both_tables = matches!(value.get_ref(), DeValue::Table(_))
            && matches!(
                into.get(key.get_ref().as_ref()).map(Spanned::get_ref),
                Some(DeValue::Table(_))
            );
        if both_tables {
            let span = value.span();
            let DeValue::Table(from_inner) = value.into_inner() else {
                unreachable!("checked above");
            };
            if let Some((old_key, old)) = into.remove_entry(key.get_ref().as_ref()) {
                let DeValue::Table(mut inner) = old.into_inner() else {
                    unreachable!("checked above");
                };
                merge_tables(&mut inner, from_inner);
                // The later file's place for the key, the whole table's merged content.
                drop(old_key);
                into.insert(key, Spanned::new(span, DeValue::Table(inner)));
            }
        } else {
            // Remove first: inserting over an equal key would keep the old key's place.
            into.remove(key.get_ref().as_ref());
            into.insert(key, value);
        }
    }
}

/// Removes the key at `path` (paths from the expander end at a key).
fn remove(table: &mut DeTable<'_>, path: &[Segment]) {
    match path {
        [Segment::Key(key)] => {
            table.remove(key.as_str());
        }
        [Segment::Key(key), rest @ ..] => match table.get_mut(key.as_str()).map(Spanned::get_mut) {
            Some(DeValue::Table(inner)) => remove(inner, rest),
            Some(DeValue::Array(array)) => {
                if let [Segment::Index(i), inner_rest @ ..] = rest
                    && let Some(DeValue::Table(inner)) = array.get_mut(*i).map(Spanned::get_mut)
                {
                    remove(inner, inner_rest);
                }
            }
            _ => {}
        },
        _ => {}
    }
}

/// Expands `${...}` in every string value of one file's tree.
struct Expander<'s, 'p> {
    file: &'s Source,
    vars: &'s Vars,
    problems: &'p mut Vec<Diagnostic>,
    /// Keys whose value could not be expanded.
    failed: Vec<KeyPath>,
}

impl Expander<'_, '_> {
    fn table(&mut self, table: &mut DeTable<'_>, path: &mut Vec<Segment>) {
        for (key, value) in table.iter_mut() {
            path.push(Segment::Key(key.get_ref().to_string()));
            self.value(value, path);
            path.pop();
        }
    }

    fn value(&mut self, value: &mut Spanned<DeValue<'_>>, path: &mut Vec<Segment>) {
        let span = value.span();
        match value.get_mut() {
            DeValue::Table(table) => self.table(table, path),
            DeValue::Array(array) => {
                for (index, item) in array.iter_mut().enumerate() {
                    path.push(Segment::Index(index));
                    self.value(item, path);
                    path.pop();
                }
            }
            DeValue::String(text) if interpolate::has_expressions(text) => {
                match interpolate::expand(text, self.vars) {
                    Ok(expanded) => *text = Cow::Owned(expanded),
                    Err(failure) => {
                        // The key goes: an item of an array of strings takes its array.
                        let mut key = path.clone();
                        while matches!(key.last(), Some(Segment::Index(_))) {
                            key.pop();
                        }
                        let key = KeyPath(key);
                        if !self.failed.contains(&key) {
                            self.failed.push(key);
                        }
                        let place = self.place(span, text, &failure.span);
                        self.problems.push(
                            Diagnostic::error(
                                "interpolation",
                                format!("`{}`: {}", KeyPath(path.clone()), failure.message),
                            )
                            .at(place, "")
                            .help(failure.help),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    /// Where, in the shared offsets, the part `within` of the string value `decoded`
    /// (whose whole value, quotes included, is at `span`) is written. A string without
    /// escapes maps one to one; otherwise the same expression is found in the text as
    /// written (a `${...}` has no characters TOML escapes), else the whole value.
    fn place(&self, span: Range<usize>, decoded: &str, within: &Range<usize>) -> Range<usize> {
        let base = self.file.base;
        let local = span.start - base..span.end - base;
        let Some(raw) = self.file.text.get(local.clone()) else {
            return span;
        };
        let quote = ["\"\"\"", "'''", "\"", "'"]
            .into_iter()
            .find(|q| raw.starts_with(q) && raw.ends_with(q) && raw.len() >= 2 * q.len())
            .map_or(0, str::len);
        let content = &raw[quote..raw.len() - quote];
        let content_start = span.start + quote;
        if content == decoded {
            return content_start + within.start..content_start + within.end;
        }
        let expression = &decoded[within.clone()];
        let nth = decoded[..within.start].matches(expression).count();
        match content.match_indices(expression).nth(nth) {
            Some((at, _)) => content_start + at..content_start + at + expression.len(),
            None => span,
        }
    }
}

/// The merged tree as a plain TOML table, for `muster check --show`.
pub fn to_plain(table: &DeTable<'_>) -> toml::Table {
    table
        .iter()
        .map(|(key, value)| (key.get_ref().to_string(), plain_value(value.get_ref())))
        .collect()
}

fn plain_value(value: &DeValue<'_>) -> toml::Value {
    match value {
        DeValue::String(s) => toml::Value::String(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).map_or_else(
            |_| toml::Value::String(i.as_str().to_owned()),
            toml::Value::Integer,
        ),
        DeValue::Float(f) => {
            let text = f.as_str().replace('_', "");
            let number = match text.as_str() {
                "inf" | "+inf" => f64::INFINITY,
                "-inf" => f64::NEG_INFINITY,
                "nan" | "+nan" | "-nan" => f64::NAN,
                other => other.parse().unwrap_or(f64::NAN),
            };
            toml::Value::Float(number)
        }
        DeValue::Boolean(b) => toml::Value::Boolean(*b),
        DeValue::Datetime(d) => toml::Value::Datetime(*d),
        DeValue::Array(array) => {
            toml::Value::Array(array.iter().map(|v| plain_value(v.get_ref())).collect())
        }
        DeValue::Table(table) => toml::Value::Table(to_plain(table)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn gathered(dir: &Path, main: &str) -> (Sources, Vec<Diagnostic>) {
        let path = dir.join("muster.toml");
        let mut problems = Vec::new();
        let sources = Sources::gather(&path, &path, main.to_owned(), &mut problems);
        (sources, problems)
    }

    #[test]
    fn later_files_override_earlier_ones_key_by_key() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base.toml",
            "[services.a]\ncommand = \"base\"\nports = [1, 2]\nenv = { A = \"1\", B = \"2\" }\n",
        );
        write(
            dir.path(),
            "gpu.toml",
            "[services.a]\nports = [3]\nenv = { B = \"gpu\" }\n",
        );
        let main = "include = [\"base.toml\", \"gpu.toml\"]\n[services.a.env]\nC = \"main\"\n";
        let (sources, problems) = gathered(dir.path(), main);
        assert!(problems.is_empty(), "{problems:?}");
        let mut problems = Vec::new();
        let (tree, _) = sources.merge(&mut problems).unwrap();
        let plain = to_plain(tree.get_ref());
        let a = &plain["services"]["a"];
        assert_eq!(a["command"].as_str(), Some("base"));
        assert_eq!(a["ports"].as_array().unwrap().len(), 1);
        assert_eq!(a["env"]["A"].as_str(), Some("1"));
        assert_eq!(a["env"]["B"].as_str(), Some("gpu"));
        assert_eq!(a["env"]["C"].as_str(), Some("main"));
        assert!(plain.get("include").is_none());
        // Each value keeps the place in its own file.
        let services = tree.get_ref().get("services").unwrap();
        let DeValue::Table(services) = services.get_ref() else {
            panic!()
        };
        let DeValue::Table(a) = services.get("a").unwrap().get_ref() else {
            panic!()
        };
        let command = a.get("command").unwrap().span();
        let base = &sources
            .files
            .iter()
            .find(|f| f.shown.ends_with("base.toml"))
            .unwrap();
        assert_eq!(
            &base.text[command.start - base.base..command.end - base.base],
            "\"base\""
        );
    }

    #[test]
    fn a_cycle_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", "include = [\"b.toml\"]\n");
        write(dir.path(), "b.toml", "include = [\"muster.toml\"]\n");
        let (_, problems) = gathered(dir.path(), "include = [\"a.toml\"]\n");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].code, "include-cycle");
        assert!(
            problems[0]
                .message
                .ends_with("a.toml -> b.toml -> muster.toml")
                || problems[0].message.contains("muster.toml -> "),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn a_missing_file_is_named_at_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let main = "include = [\"nope.toml\"]\n";
        let (_, problems) = gathered(dir.path(), main);
        assert_eq!(problems[0].code, "include-unreadable");
        let span = problems[0].primary.as_ref().unwrap().span.clone();
        assert_eq!(&main[span], "\"nope.toml\"");
    }
}
