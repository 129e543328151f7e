//! The shape of the source: no module imports a module that imports it back.
//!
//! Reads `src/` as text: every `crate::a::b` and `super::x` path a module names (outside
//! its tests and comments) is an edge to the deepest module file that path reaches. Two
//! modules with edges both ways are a loop, and a loop is where a change in one
//! silently needs the other.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// `src/supervisor/mod.rs` is `["supervisor"]`, `src/lib.rs` is `[]`.
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(root).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn is_module(root: &Path, parts: &[String]) -> bool {
    let base = parts.iter().fold(root.to_path_buf(), |p, s| p.join(s));
    base.with_extension("rs").exists() || base.join("mod.rs").exists()
}

/// The text a module's own code is: without its `#[cfg(test)] mod tests` and comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::…` and `super::…` path in `code`, split into segments.
fn paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for start in 0..bytes.len() {
        if !code.is_char_boundary(start) {
            continue;
        }
        let rest = &code[start..];
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if !boundary || !(rest.starts_with("crate::") || rest.starts_with("super::")) {
            continue;
        }
        let path: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':')
            .collect();
        let mut segments: Vec<String> = path
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        let supers = segments.iter().take_while(|s| *s == "super").count();
        if segments.first().is_some_and(|s| s == "crate") {
            segments.remove(0);
            found.push((usize::MAX, segments));
        } else {
            found.push((supers, segments.split_off(supers)));
        }
    }
    found
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut edges = BTreeSet::new();
    for file in &files {
        let me = module_of(&root, file);
        let text = std::fs::read_to_string(file).unwrap();
        for (supers, rest) in paths(&code(&text)) {
            let base: Vec<String> = if supers == usize::MAX {
                Vec::new()
            } else {
                me[..me.len().saturating_sub(supers)].to_vec()
            };
            let full: Vec<String> = base.iter().chain(&rest).cloned().collect();
            let target = (1..=full.len())
                .rev()
                .map(|n| full[..n].to_vec())
                .find(|candidate| is_module(&root, candidate))
                .unwrap_or(base);
            if target != me {
                edges.insert((me.join("::"), target.join("::")));
            }
        }
    }
    let loops: Vec<String> = edges
        .iter()
        .filter(|(a, b)| a < b && edges.contains(&(b.clone(), a.clone())))
        .map(|(a, b)| format!("`{a}` <-> `{b}`"))
        .collect();
    assert!(
        loops.is_empty(),
        "modules that import each other (put what both need in a leaf module): {}",
        loops.join(", ")
    );
    // The check sees the real graph: some edges exist.
    assert!(edges.contains(&(
        "supervisor::owner".to_owned(),
        "supervisor::actor".to_owned()
    )));
}
