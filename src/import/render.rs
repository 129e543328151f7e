//! From a [`Draft`] to the text of a `muster.toml` that `muster check` accepts on this
//! machine, with comments for everything that did not carry over.
//!
//! What a file means can be translated; whether it runs here cannot. So the renderer
//! looks at the host the way `check` will: a working directory or env file that does
//! not exist, a program that is not installed, a dependency on a service that is not
//! in the file, a cycle, a port two services claim, a wait for the completion of a
//! service that always restarts. Each is written so that the file checks (commented
//! out, or run through `sh -c` so the shell says what is missing when it starts) with
//! a comment saying what to do.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::model::{Condition, Draft, Probe, ProbeKind, Restart, Run, Service, duration_text};
use crate::config::executable;
use crate::name::{MAX_NAME_LEN, ServiceName};

/// Where the source is and where the output goes: relative paths in the source start
/// at its directory; those written start at the output's.
#[derive(Debug, Clone)]
pub struct Places {
    pub source_file: PathBuf,
    pub source_dir: PathBuf,
    pub output_dir: PathBuf,
}

/// The file, and how many services need attention before they can run.
#[derive(Debug)]
pub struct Rendered {
    pub text: String,
    pub services: usize,
    /// Services with nothing to run here yet (container images).
    pub placeholders: Vec<String>,
}

pub fn render(draft: &Draft, places: &Places) -> Rendered {
    let services = expand_replicas(&draft.services);
    let names = muster_names(&services);
    // Source name → the muster names of its copies, for dependencies.
    let mut by_source: HashMap<&str, Vec<String>> = HashMap::new();
    for (service, name) in services.iter().zip(&names) {
        by_source
            .entry(service.source_name.as_str())
            .or_default()
            .push(name.clone());
    }
    let restarts: HashMap<&str, Option<Restart>> = services
        .iter()
        .zip(&names)
        .map(|(s, n)| (n.as_str(), s.service.restart))
        .collect();

    // Dependencies resolved to muster names, each with its comments.
    let mut edges: Vec<Vec<Edge>> = Vec::new();
    let mut dropped: Vec<Vec<String>> = Vec::new();
    for (service, name) in services.iter().zip(&names) {
        let mut resolved = Vec::new();
        let mut notes = Vec::new();
        for dep in &service.service.depends_on {
            let Some(targets) = by_source.get(dep.name.as_str()) else {
                notes.push(format!(
                    "depended on `{}` ({}), which this file does not define",
                    dep.name,
                    dep.condition.as_str()
                ));
                continue;
            };
            for target in targets {
                if target == name {
                    continue;
                }
                let mut condition = dep.condition;
                let mut note = dep.note.clone();
                if condition == Condition::Completed
                    && restarts.get(target.as_str()).copied().flatten() == Some(Restart::Always)
                {
                    condition = Condition::Started;
                    note = Some(format!(
                        "waits for `{target}` to start: it restarts always, so it never completes"
                    ));
                }
                resolved.push((target.clone(), condition, note, dep.restart));
            }
        }
        edges.push(resolved);
        dropped.push(notes);
    }
    break_cycles(&names, &mut edges, &mut dropped);

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Imported by `muster import` from the {} file `{}`.",
        draft.tool,
        places.source_file.display()
    );
    out.push_str(
        "# Check it with `muster check`, see it merged with `muster check --show`, run it\n\
         # with `muster up`. Comments say what did not carry over and why.\n",
    );
    for note in &draft.notes {
        comment(&mut out, "", note);
    }
    // A stop that may take longer than muster's whole shutdown would be cut short.
    let longest_stop = services
        .iter()
        .filter_map(|c| c.service.stop_timeout)
        .max()
        .unwrap_or_default();
    if longest_stop > crate::config::defaults::SHUTDOWN_TIMEOUT {
        let _ = writeln!(
            out,
            "\n[settings]\n# room for the longest stop-timeout below\nshutdown-timeout = \"{}\"",
            duration_text(longest_stop + std::time::Duration::from_secs(10))
        );
    }
    let mut claimed_ports: BTreeMap<u16, String> = BTreeMap::new();
    let mut placeholders = Vec::new();
    for (index, (copy, name)) in services.iter().zip(&names).enumerate() {
        out.push('\n');
        let service = &copy.service;
        let _ = writeln!(out, "[services.{name}]");
        if copy.source_name != *name {
            comment(
                &mut out,
                "",
                &format!("`{}` in the source", copy.source_name),
            );
        }
        for note in &service.notes {
            comment(&mut out, "", note);
        }
        for note in &copy.notes {
            comment(&mut out, "", note);
        }
        for line in &service.untranslated {
            comment(&mut out, "", line);
        }
        if let Some(description) = &service.description {
            let _ = writeln!(out, "description = {}", string(description));
        }

        let cwd = directory(service.cwd.as_deref(), places);
        match &cwd {
            Directory::Default => {}
            Directory::Here(text) => {
                let _ = writeln!(out, "cwd = {}", string(text));
            }
            Directory::Missing(text, why) => {
                comment(&mut out, "", &format!("{why}; add it here once it does:"));
                let _ = writeln!(out, "# cwd = {}", string(text));
            }
        }
        let run_dir = match &cwd {
            Directory::Here(text) => places.output_dir.join(text),
            _ => places.output_dir.clone(),
        };
        let path_var = service
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| OsString::from(v))
            .or_else(|| std::env::var_os("PATH"));

        write_run(
            &mut out,
            name,
            &service.run,
            &run_dir,
            path_var.as_deref(),
            &mut placeholders,
        );
        if service.replicas > 1 {
            let _ = writeln!(out, "replicas = {}", service.replicas);
        }

        if !service.env.is_empty() {
            let pairs: Vec<String> = service
                .env
                .iter()
                .map(|(k, v)| format!("{} = {}", key(k), string(v)))
                .collect();
            let inline = format!("env = {{ {} }}", pairs.join(", "));
            if inline.len() <= 100 {
                let _ = writeln!(out, "{inline}");
            } else {
                out.push_str("env.");
                out.push_str(&pairs.join("\nenv."));
                out.push('\n');
            }
        }
        let mut env_files = Vec::new();
        for file in &service.env_files {
            let absolute = places.source_dir.join(file);
            if absolute.is_file() {
                env_files.push(relative_to(&absolute, &places.output_dir));
            } else {
                comment(
                    &mut out,
                    "",
                    &format!(
                        "env file `{file}` does not exist here; add it to `env-file` once it does"
                    ),
                );
            }
        }
        if !env_files.is_empty() {
            let list: Vec<String> = env_files.iter().map(|f| string(f)).collect();
            let _ = writeln!(out, "env-file = [{}]", list.join(", "));
        }

        let mut ports = Vec::new();
        for port in &service.ports {
            match claimed_ports.get(port) {
                Some(other) if other != name => comment(
                    &mut out,
                    "",
                    &format!("port {port} is also claimed by `{other}`: listed there only"),
                ),
                _ => {
                    claimed_ports.insert(*port, name.clone());
                    if !ports.contains(port) {
                        ports.push(*port);
                    }
                }
            }
        }
        if !ports.is_empty() {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            let _ = writeln!(out, "ports = [{}]", list.join(", "));
        }

        for note in &dropped[index] {
            comment(&mut out, "", note);
        }
        let deps = &edges[index];
        if !deps.is_empty() {
            for (target, _, note, _) in deps {
                if let Some(note) = note {
                    comment(&mut out, "", &format!("`{target}`: {note}"));
                }
            }
            let list: Vec<String> = deps
                .iter()
                .map(|(target, condition, _, restart)| {
                    if *restart {
                        format!(
                            "{} = {{ condition = \"{}\", restart = true }}",
                            key(target),
                            condition.as_str()
                        )
                    } else {
                        format!("{} = \"{}\"", key(target), condition.as_str())
                    }
                })
                .collect();
            let _ = writeln!(out, "depends-on = {{ {} }}", list.join(", "));
        }

        let placeholder = matches!(service.run, Run::Missing { .. });
        for (label, probe) in [("ready", &service.ready), ("alive", &service.alive)] {
            if let Some(probe) = probe {
                write_probe(
                    &mut out,
                    label,
                    probe,
                    &run_dir,
                    path_var.as_deref(),
                    placeholder,
                );
            }
        }

        if let Some(restart) = service.restart {
            let _ = writeln!(out, "restart = \"{}\"", restart.as_str());
        }
        if let Some(initial) = service.backoff_initial.filter(|d| !d.is_zero()) {
            let _ = writeln!(
                out,
                "backoff = {{ initial = \"{}\" }}",
                duration_text(initial)
            );
        }
        if let Some(count) = service.restart_limit.filter(|c| *c > 0) {
            let _ = writeln!(
                out,
                "restart-limit = {{ count = {count}, within = \"60s\" }}"
            );
        }
        if let Some(signal) = &service.stop_signal {
            let _ = writeln!(out, "stop-signal = {}", string(signal));
        }
        if let Some(timeout) = service.stop_timeout.filter(|d| !d.is_zero()) {
            let _ = writeln!(out, "stop-timeout = \"{}\"", duration_text(timeout));
        }
        if !service.autostart {
            let _ = writeln!(out, "autostart = false");
        }
    }
    Rendered {
        text: out,
        services: services.len(),
        placeholders,
    }
}

/// A resolved dependency: the muster name waited for, the condition, why it is not
/// the source's own (when it is not), and whether a new run of it restarts the
/// dependent.
type Edge = (String, Condition, Option<String>, bool);

/// One service of the output: a source service, or one copy of a replicated one.
struct Copy {
    source_name: String,
    service: Service,
    notes: Vec<String>,
}

fn expand_replicas(services: &[Service]) -> Vec<Copy> {
    let mut copies = Vec::new();
    for service in services {
        let count = service.replicas.clamp(1, 64);
        if count == 1 {
            let mut single = service.clone();
            if let Some((marker, first)) = &service.replica_marker {
                substitute(&mut single, marker, &first.to_string());
            }
            copies.push(Copy {
                source_name: service.name.clone(),
                service: single,
                notes: Vec::new(),
            });
            continue;
        }
        // Copies numbered from 0 (or not at all) are muster's replicas: one table.
        if service
            .replica_marker
            .as_ref()
            .is_none_or(|(_, first)| *first == 0)
        {
            let mut set = service.clone();
            set.replicas = count;
            let mut notes = vec![format!(
                "{count} copies in the source: `replicas` runs them as `{0}.0` … `{0}.{1}`",
                service.name,
                count - 1
            )];
            if let Some((marker, _)) = &service.replica_marker {
                substitute(&mut set, marker, "{replica}");
            }
            if !set.ports.is_empty() {
                let list: Vec<String> = set.ports.iter().map(u16::to_string).collect();
                notes.push(format!(
                    "its ports ({}) are left out: every instance would claim them; give each its \
                     own with `port = N` (instance i gets N + i) and `{{port}}` in the command",
                    list.join(", ")
                ));
                set.ports.clear();
            }
            copies.push(Copy {
                source_name: service.name.clone(),
                service: set,
                notes,
            });
            continue;
        }
        for i in 0..count {
            let mut copy = service.clone();
            copy.name = format!("{}-{}", service.name, i + 1);
            let mut notes = vec![format!(
                "copy {} of {count} of `{}`: muster runs one process per service",
                i + 1,
                service.name
            )];
            match &service.replica_marker {
                Some((marker, first)) => {
                    substitute(&mut copy, marker, &(first + i).to_string());
                }
                None if i > 0 && !copy.ports.is_empty() => {
                    notes.push("its ports are listed on the first copy only".to_owned());
                    copy.ports.clear();
                }
                None => {}
            }
            copies.push(Copy {
                source_name: service.name.clone(),
                service: copy,
                notes,
            });
        }
    }
    copies
}

fn substitute(service: &mut Service, marker: &str, value: &str) {
    let swap = |text: &mut String| *text = text.replace(marker, value);
    match &mut service.run {
        Run::Argv(argv) => argv.iter_mut().for_each(swap),
        Run::Shell(line) => swap(line),
        Run::Missing { .. } => {}
    }
    if let Some(cwd) = &mut service.cwd {
        swap(cwd);
    }
    for (_, v) in &mut service.env {
        swap(v);
    }
    for probe in [&mut service.ready, &mut service.alive]
        .into_iter()
        .flatten()
    {
        match &mut probe.kind {
            ProbeKind::Exec(argv) => argv.iter_mut().for_each(swap),
            ProbeKind::Http(t) | ProbeKind::Tcp(t) | ProbeKind::Log(t) => swap(t),
        }
    }
}

/// Valid, distinct muster names: lowercase, `a-z0-9-_`, starting with a letter or digit.
fn muster_names(services: &[Copy]) -> Vec<String> {
    let mut taken = BTreeSet::new();
    services
        .iter()
        .map(|copy| {
            let base = sanitize(&copy.service.name);
            let mut name = base.clone();
            let mut n = 2;
            while !taken.insert(name.clone()) {
                let suffix = format!("-{n}");
                let keep = MAX_NAME_LEN - suffix.len();
                name = format!("{}{suffix}", &base[..base.len().min(keep)]);
                n += 1;
            }
            name
        })
        .collect()
}

fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let start = out
        .find(|c: char| c.is_ascii_alphanumeric())
        .unwrap_or(out.len());
    out.drain(..start);
    out.truncate(MAX_NAME_LEN);
    let out = out.trim_end_matches(['-', '_']).to_owned();
    if ServiceName::new(&out).is_ok() {
        out
    } else {
        "service".to_owned()
    }
}

/// Drops the dependencies that close a cycle (muster refuses cycles), noting each.
fn break_cycles(names: &[String], edges: &mut [Vec<Edge>], dropped: &mut [Vec<String>]) {
    let index: HashMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    // 0 unvisited, 1 on the path, 2 done.
    let mut state = vec![0u8; names.len()];
    let mut removals: Vec<(usize, String)> = Vec::new();
    for start in 0..names.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some((target, _, _, _)) = edges[node].get(*next) {
                *next += 1;
                let Some(&t) = index.get(target.as_str()) else {
                    continue;
                };
                match state[t] {
                    0 => {
                        state[t] = 1;
                        stack.push((t, 0));
                    }
                    1 => removals.push((node, target.clone())),
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
    for (node, target) in removals {
        edges[node].retain(|(t, _, _, _)| *t != target);
        dropped[node].push(format!(
            "depended on `{target}`, which depends back on this service: muster refuses cycles, so this wait is left out"
        ));
    }
}

enum Directory {
    Default,
    Here(String),
    Missing(String, String),
}

fn directory(cwd: Option<&str>, places: &Places) -> Directory {
    let Some(cwd) = cwd.filter(|c| !c.trim().is_empty()) else {
        // The source tool ran its programs from the source's directory: so does the
        // output, wherever it is written.
        let relative = relative_to(&places.source_dir, &places.output_dir);
        return if relative == "." {
            Directory::Default
        } else {
            Directory::Here(relative)
        };
    };
    if cwd.contains("${") {
        return Directory::Here(cwd.to_owned());
    }
    let absolute = places.source_dir.join(cwd);
    if absolute.is_dir() {
        let relative = relative_to(&absolute, &places.output_dir);
        if relative == "." {
            Directory::Default
        } else {
            Directory::Here(relative)
        }
    } else {
        Directory::Missing(
            relative_to(&absolute, &places.output_dir),
            format!("working directory `{cwd}` does not exist on this machine"),
        )
    }
}

/// `path` as written in the output: relative to its directory when inside it.
fn relative_to(path: &Path, dir: &Path) -> String {
    let normal: PathBuf = path.components().collect();
    let dir: PathBuf = dir.components().collect();
    match normal.strip_prefix(&dir) {
        Ok(rest) if rest.as_os_str().is_empty() => ".".to_owned(),
        Ok(rest) => rest.display().to_string(),
        Err(_) => normal.display().to_string(),
    }
}

fn write_run(
    out: &mut String,
    name: &str,
    run: &Run,
    dir: &Path,
    path_var: Option<&std::ffi::OsStr>,
    placeholders: &mut Vec<String>,
) {
    match run {
        Run::Argv(argv) if !argv.is_empty() => match executable::resolve(&argv[0], dir, path_var) {
            Ok(_) => {
                let _ = writeln!(out, "command = {}", array(argv));
            }
            Err(why) => {
                comment(
                    out,
                    "",
                    &format!("{why} on this machine: run through a shell until it is, then use"),
                );
                let _ = writeln!(out, "# command = {}", array(argv));
                let _ = writeln!(
                    out,
                    "shell = {}",
                    string(&format!("exec {}", shell_join(argv)))
                );
            }
        },
        Run::Argv(_) => placeholder(out, name, "the source gives no command", None, placeholders),
        Run::Shell(line) => {
            let _ = writeln!(out, "shell = {}", string(line));
        }
        Run::Missing { why, instead } => {
            placeholder(out, name, why, instead.as_deref(), placeholders);
        }
    }
}

/// A service with nothing to run here: a line that fails saying so, and the way to
/// run it instead, commented.
fn placeholder(
    out: &mut String,
    name: &str,
    why: &str,
    instead: Option<&[String]>,
    placeholders: &mut Vec<String>,
) {
    comment(
        out,
        "",
        &format!("{why}: give it the command that runs it on this host"),
    );
    if let Some(instead) = instead {
        out.push_str("# or run the container with docker:\n");
        let _ = writeln!(out, "# command = {}", array(instead));
    }
    let message = format!("{name}: no command yet, see muster.toml");
    let _ = writeln!(
        out,
        "shell = {}",
        string(&format!("echo {} >&2; exit 78", shell_quote(&message)))
    );
    placeholders.push(name.to_owned());
}

fn write_probe(
    out: &mut String,
    label: &str,
    probe: &Probe,
    dir: &Path,
    path_var: Option<&std::ffi::OsStr>,
    placeholder: bool,
) {
    for note in &probe.notes {
        comment(out, "", &format!("{label}: {note}"));
    }
    let mut parts = Vec::new();
    let mut commented = None;
    match &probe.kind {
        ProbeKind::Exec(argv) if argv.is_empty() => return,
        ProbeKind::Exec(argv) => {
            if placeholder {
                commented = Some("it ran inside the container");
            }
            match executable::resolve(&argv[0], dir, path_var) {
                Ok(_) => parts.push(format!("exec = {}", array(argv))),
                Err(why) => {
                    comment(
                        out,
                        "",
                        &format!("{label}: {why} on this machine: run through a shell"),
                    );
                    let line = vec!["sh".to_owned(), "-c".to_owned(), shell_join(argv)];
                    parts.push(format!("exec = {}", array(&line)));
                }
            }
        }
        ProbeKind::Http(url) => {
            if !url.contains("${")
                && let Err(problem) = crate::config::values::http_url(url)
            {
                commented = Some("muster cannot probe it as written");
                probe_problem(out, label, &problem.message);
            }
            parts.push(format!("http = {}", string(url)));
        }
        ProbeKind::Tcp(addr) => {
            if !addr.contains("${")
                && let Err(problem) = crate::config::values::host_port(addr)
            {
                commented = Some("muster cannot probe it as written");
                probe_problem(out, label, &problem.message);
            }
            parts.push(format!("tcp = {}", string(addr)));
        }
        ProbeKind::Log(pattern) => {
            if label == "alive" {
                comment(
                    out,
                    "",
                    "a log line proves readiness only; not kept as a liveness check",
                );
                return;
            }
            parts.push(format!("log = {}", string(pattern)));
        }
    }
    if let Some(interval) = probe.interval.filter(|d| !d.is_zero()) {
        parts.push(format!("interval = \"{}\"", duration_text(interval)));
    }
    if let Some(timeout) = probe.timeout.filter(|d| !d.is_zero()) {
        parts.push(format!("timeout = \"{}\"", duration_text(timeout)));
    }
    if label == "alive"
        && let Some(failures) = probe.failures.filter(|f| (1..=100).contains(f))
    {
        parts.push(format!("failures = {failures}"));
    }
    let line = format!("{label} = {{ {} }}", parts.join(", "));
    match commented {
        Some(why) => {
            comment(
                out,
                "",
                &format!("{label}: {why}; once the service runs here:"),
            );
            let _ = writeln!(out, "# {line}");
        }
        None => {
            let _ = writeln!(out, "{line}");
        }
    }
}

fn probe_problem(out: &mut String, label: &str, message: &str) {
    comment(out, "", &format!("{label}: {message}"));
}

fn comment(out: &mut String, indent: &str, text: &str) {
    for line in text.lines() {
        // TOML allows no control character in a comment but tab; the source's are
        // shown as escapes.
        let line: String = line
            .trim_end()
            .chars()
            .map(|c| match c {
                '\t' => "\t".to_owned(),
                c if c.is_control() => c.escape_default().to_string(),
                c => c.to_string(),
            })
            .collect();
        let _ = writeln!(out, "{indent}# {line}");
    }
}

/// A TOML basic string.
pub fn string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|i| string(i)).collect();
    format!("[{}]", items.join(", "))
}

/// A key, bare when TOML allows it.
fn key(text: &str) -> String {
    if !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        text.to_owned()
    } else {
        string(text)
    }
}

fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn shell_join(argv: &[String]) -> String {
    argv.iter()
        .map(|w| shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_valid_and_distinct() {
        assert_eq!(sanitize("_process2"), "process2");
        assert_eq!(sanitize("My.App"), "my-app");
        assert_eq!(sanitize("__"), "service");
    }
}
