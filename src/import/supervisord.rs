//! supervisord configs (`supervisord.conf`, `conf.d/*.conf`): `[program:x]` sections.
//!
//! The INI dialect is Python's ConfigParser, as supervisord reads it: `key = value` or
//! `key: value`, `;` and `#` comment lines, ` ;` starting an inline comment, indented
//! lines continuing a value, and `%(name)s` expansions (`here`, `program_name`,
//! `process_num`, `group_name`, `host_node_name`, `ENV_X`). `numprocs` makes copies;
//! `priority` is an order (lower starts first) without a wait for readiness, so
//! programs of a later priority wait for those of the one before to have *started*.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::model::{Condition, Dependency, Draft, Restart, Run, Service};
use super::{ImportError, literal};

/// One section: its name, its keys in order, and the line it starts on.
#[derive(Debug)]
struct Section {
    name: String,
    keys: Vec<(String, String)>,
}

fn parse_ini(source: &str) -> Result<Vec<Section>, ImportError> {
    let mut sections: Vec<Section> = Vec::new();
    let mut last_key: Option<usize> = None;
    for (index, raw) in source.lines().enumerate() {
        let line_no = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            // A blank line ends a continued value, as in ConfigParser.
            if trimmed.is_empty() {
                last_key = None;
            }
            continue;
        }
        if raw.starts_with([' ', '\t'])
            && let (Some(section), Some(key)) = (sections.last_mut(), last_key)
        {
            let value = &mut section.keys[key].1;
            value.push('\n');
            value.push_str(strip_inline_comment(trimmed));
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(ImportError::Syntax {
                    line: line_no,
                    column: raw.len().max(1),
                    message: format!("the section header `{trimmed}` is not closed with `]`"),
                });
            };
            sections.push(Section {
                name: name.trim().to_owned(),
                keys: Vec::new(),
            });
            last_key = None;
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            return Err(ImportError::Syntax {
                line: line_no,
                column: raw.len() - raw.trim_start().len() + 1,
                message: format!("expected `key = value`, found `{trimmed}`"),
            });
        };
        let Some(section) = sections.last_mut() else {
            return Err(ImportError::Syntax {
                line: line_no,
                column: 1,
                message: "a key before any [section] header".to_owned(),
            });
        };
        let key = trimmed[..split].trim().to_ascii_lowercase();
        let value = strip_inline_comment(trimmed[split + 1..].trim()).to_owned();
        section.keys.push((key, value));
        last_key = Some(section.keys.len() - 1);
    }
    Ok(sections)
}

/// supervisord drops ` ;...` from a value (a `;` after whitespace).
fn strip_inline_comment(value: &str) -> &str {
    let bytes = value.as_bytes();
    for i in 1..bytes.len() {
        if bytes[i] == b';' && bytes[i - 1].is_ascii_whitespace() {
            return value[..i].trim_end();
        }
    }
    value
}

/// Expands `%(name)s` / `%(name)d` / `%(name)02d` with `vars`; `%(ENV_X)s` becomes
/// muster's `${X}` (read when muster loads the file, as supervisord reads it at
/// start); `%%` a `%`. Everything else is made literal for muster.
fn expand(text: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&literal(&rest[..at]));
        let after = &rest[at + 1..];
        if let Some(after_pct) = after.strip_prefix('%') {
            out.push('%');
            rest = after_pct;
            continue;
        }
        let parsed = after.strip_prefix('(').and_then(|inner| {
            let close = inner.find(')')?;
            let name = &inner[..close];
            let spec_end = inner[close + 1..].find(|c: char| c.is_ascii_alphabetic())?;
            let spec = &inner[close + 1..close + 1 + spec_end + 1];
            Some((name, spec, 1 + close + 1 + spec_end + 1))
        });
        match parsed {
            Some((name, spec, used)) => {
                if let Some(var) = name.strip_prefix("ENV_") {
                    // Empty when unset, so the file checks anywhere; supervisord
                    // itself would refuse to start (the draft's notes say so).
                    out.push_str(&format!("${{{var}:-}}"));
                } else if let Some(value) = vars.get(name) {
                    let width = spec
                        .trim_end_matches(|c: char| c.is_ascii_alphabetic())
                        .parse::<usize>()
                        .unwrap_or(0);
                    out.push_str(&literal(&format!("{value:0>width$}")));
                } else {
                    out.push_str(&literal(&format!("%({name}){spec}")));
                }
                rest = &after[used..];
            }
            None => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(&literal(rest));
    out
}

fn seconds(text: &str) -> Option<Duration> {
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

pub fn read(source: &str, dir: &Path) -> Result<Draft, ImportError> {
    let sections = parse_ini(source)?;
    let mut draft = Draft {
        tool: "supervisord",
        ..Draft::default()
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    // Programs by the group that lists them, for `%(group_name)s`.
    let mut group_of: BTreeMap<String, String> = BTreeMap::new();
    for section in &sections {
        if let Some(group) = section.name.strip_prefix("group:") {
            for (key, value) in &section.keys {
                if key == "programs" {
                    for program in value.split(',') {
                        group_of.insert(program.trim().to_owned(), group.trim().to_owned());
                    }
                }
            }
        }
    }
    // `[supervisord] environment=` reaches every child; a program's own wins.
    let global_env: Vec<(String, String)> = sections
        .iter()
        .filter(|s| s.name == "supervisord")
        .flat_map(|s| s.keys.iter())
        .filter(|(k, _)| k == "environment")
        .flat_map(|(_, v)| environment(&expand(v, &BTreeMap::new())))
        .collect();
    let mut priorities: Vec<(i64, String)> = Vec::new();
    for section in &sections {
        let (kind, name) = section
            .name
            .split_once(':')
            .unwrap_or((section.name.as_str(), ""));
        match kind {
            "program" | "fcgi-program" => {}
            "eventlistener" => {
                draft.notes.push(format!(
                    "[{}] — an event listener speaks supervisord's event protocol on stdin; use [[hooks]] for muster's events",
                    section.name
                ));
                continue;
            }
            "group" => {
                draft.notes.push(format!(
                    "[{}] — groups have no meaning here; `muster up NAME...` starts a subset",
                    section.name
                ));
                continue;
            }
            "include" => {
                let files = section
                    .keys
                    .iter()
                    .find(|(k, _)| k == "files")
                    .map(|(_, v)| v.clone());
                draft.notes.push(format!(
                    "[include] files = {} — import each of those files too, and list the results in `include = [...]`",
                    files.unwrap_or_default()
                ));
                continue;
            }
            "supervisord" if section.keys.iter().any(|(k, _)| k == "environment") => {
                draft.notes.push(
                    "[supervisord] — settings of supervisord itself; its `environment` is in every service's `env`"
                        .to_owned(),
                );
                continue;
            }
            _ => {
                draft.notes.push(format!(
                    "[{}] — settings of supervisord itself; muster's are in [settings]",
                    section.name
                ));
                continue;
            }
        }
        let name = name.trim();
        let keys: BTreeMap<&str, &str> = section
            .keys
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let numprocs = keys
            .get("numprocs")
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(1)
            .clamp(1, 64);
        let start = keys
            .get("numprocs_start")
            .and_then(|n| n.trim().parse::<u32>().ok())
            .unwrap_or(0);
        for copy in 0..numprocs {
            let number = start + copy;
            let mut vars: BTreeMap<&str, String> = BTreeMap::new();
            vars.insert("here", dir.display().to_string());
            vars.insert("program_name", name.to_owned());
            vars.insert("process_num", number.to_string());
            vars.insert(
                "group_name",
                group_of
                    .get(name)
                    .cloned()
                    .unwrap_or_else(|| name.to_owned()),
            );
            vars.insert("host_node_name", host.clone());
            let process_name = keys
                .get("process_name")
                .map_or_else(|| name.to_owned(), |p| expand(p, &vars).replace("$$", "$"));
            let process_name = if numprocs > 1 && process_name == name {
                format!("{name}_{number:02}")
            } else {
                process_name
            };
            let mut service = program(&process_name, &keys, &vars, kind);
            let mut env: Vec<(String, String)> = global_env
                .iter()
                .filter(|(k, _)| !service.env.iter().any(|(own, _)| own == k))
                .cloned()
                .collect();
            env.append(&mut service.env);
            service.env = env;
            let priority = keys
                .get("priority")
                .and_then(|p| p.trim().parse::<i64>().ok());
            if let Some(priority) = priority {
                priorities.push((priority, process_name.clone()));
            }
            draft.services.push(service);
        }
    }
    if source.contains("%(ENV_") {
        draft.notes.push("`%(ENV_X)s` became `${X:-}`: empty when X is unset, where supervisord would refuse to start; write `${X}` to require it".to_owned());
    }
    order_by_priority(&mut draft, &priorities);
    Ok(draft)
}

/// Programs of a higher `priority` wait for those of the next lower one to start.
fn order_by_priority(draft: &mut Draft, priorities: &[(i64, String)]) {
    let mut levels: Vec<i64> = priorities.iter().map(|(p, _)| *p).collect();
    levels.sort_unstable();
    levels.dedup();
    if levels.len() < 2 {
        return;
    }
    for service in &mut draft.services {
        let Some((mine, _)) = priorities.iter().find(|(_, n)| *n == service.name) else {
            continue;
        };
        let Some(before) = levels.iter().rev().find(|l| *l < mine) else {
            continue;
        };
        for (_, other) in priorities.iter().filter(|(p, _)| p == before) {
            service.depends_on.push(Dependency {
                name: other.clone(),
                condition: Condition::Started,
                note: Some(format!(
                    "priority {mine} after {before}: supervisord starts lower priorities first, without waiting for them to be ready"
                )),
                restart: false,
            });
        }
    }
}

fn program(
    name: &str,
    keys: &BTreeMap<&str, &str>,
    vars: &BTreeMap<&str, String>,
    kind: &str,
) -> Service {
    let command = keys.get("command").map(|c| expand(c, vars));
    let run = match command {
        // supervisord splits the line itself and runs no shell: an argv, always.
        Some(line) if !line.trim().is_empty() => match shlex::split(&line) {
            Some(words) if !words.is_empty() => Run::Argv(words),
            _ => Run::Shell(line),
        },
        _ => Run::Missing {
            why: "the program has no `command`".to_owned(),
            instead: None,
        },
    };
    let mut service = Service::new(name, run);
    if matches!(service.run, Run::Shell(_)) {
        service.notes.push("its quotes do not balance, so it runs as a shell line; check that it means what it did".to_owned());
    }
    if kind == "fcgi-program" {
        service.notes.push("an fcgi-program: supervisord opened its socket; muster does not, so the program must bind it itself".to_owned());
    }
    for (key, value) in keys {
        let expanded = || expand(value, vars);
        match *key {
            "command" | "process_name" | "numprocs" | "numprocs_start" | "priority" => {}
            "directory" => service.cwd = Some(expand(value, vars).replace("$$", "$")),
            "environment" => service.env = environment(&expanded()),
            "autostart" => service.autostart = !is_false(value),
            "autorestart" => {
                service.restart = Some(match value.trim().to_ascii_lowercase().as_str() {
                    "false" | "no" | "off" | "0" => Restart::Never,
                    "unexpected" => Restart::OnFailure,
                    _ => Restart::Always,
                });
            }
            "startretries" => {
                service.restart_limit = value.trim().parse::<u32>().ok().filter(|n| *n > 0);
            }
            "stopsignal" => service.stop_signal = Some(format!("SIG{}", value.trim().to_ascii_uppercase().trim_start_matches("SIG"))),
            "stopwaitsecs" => service.stop_timeout = seconds(value),
            "startsecs" => service.untranslated(key, value, "muster counts a service started when it spawns; a `ready` probe says when it works"),
            "exitcodes" => service.untranslated(key, value, "muster counts only exit status 0 as a clean exit"),
            "user" => service.untranslated(key, value, "run muster as that user, or use `sudo -u` in the command"),
            "redirect_stderr" | "stdout_logfile" | "stderr_logfile" | "stdout_logfile_maxbytes"
            | "stdout_logfile_backups" | "stderr_logfile_maxbytes" | "stderr_logfile_backups"
            | "stdout_capture_maxbytes" | "stderr_capture_maxbytes" | "stdout_events_enabled"
            | "stderr_events_enabled" | "stdout_syslog" | "stderr_syslog" => {
                service.untranslated(key, value, "muster writes stdout and stderr to state-dir/logs/NAME.log, rotated per [settings.logs]");
            }
            "stopasgroup" | "killasgroup" => service.untranslated(key, value, "muster always signals the whole process group"),
            "umask" | "serverurl" | "socket" | "socket_owner" | "socket_mode" => service.untranslated(key, value, "no equivalent in muster"),
            _ => service.untranslated(key, value, "no equivalent in muster"),
        }
    }
    if let Some(limit) = service.restart_limit
        && service.restart.is_none()
    {
        // supervisord's default autorestart is "unexpected".
        service.restart = Some(Restart::OnFailure);
        service.restart_limit = Some(limit);
    }
    service
}

fn is_false(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "false" | "no" | "off" | "0"
    )
}

/// `KEY="value",KEY2=value2`, commas inside quotes kept.
fn environment(text: &str) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut current = String::new();
    let mut quote = None;
    let mut items = Vec::new();
    for c in text.chars() {
        match (c, quote) {
            ('"' | '\'', None) => {
                quote = Some(c);
                current.push(c);
            }
            (c, Some(q)) if c == q => {
                quote = None;
                current.push(c);
            }
            (',', None) => items.push(std::mem::take(&mut current)),
            ('\n', None) => {}
            (c, _) => current.push(c),
        }
    }
    items.push(current);
    for item in items {
        let Some((key, value)) = item.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        pairs.push((key.trim().to_owned(), value.to_owned()));
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansions_follow_supervisord() {
        let mut vars = BTreeMap::new();
        vars.insert("program_name", "web".to_owned());
        vars.insert("process_num", "3".to_owned());
        assert_eq!(
            expand("%(program_name)s-%(process_num)02d", &vars),
            "web-03"
        );
        assert_eq!(
            expand("%(ENV_HOME)s/x 100%% ${A}", &vars),
            "${HOME:-}/x 100% $${A}"
        );
    }

    #[test]
    fn ini_values_continue_and_lose_inline_comments() {
        let sections =
            parse_ini("[program:a]\ncommand = sleep 1 ; why\nenvironment = A=1,\n  B=2\n").unwrap();
        assert_eq!(sections[0].keys[0].1, "sleep 1");
        assert_eq!(environment(&sections[0].keys[1].1).len(), 2);
        assert!(matches!(
            parse_ini("[program:a\n"),
            Err(ImportError::Syntax { line: 1, .. })
        ));
    }
}
