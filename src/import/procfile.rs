//! Procfiles (heroku, foreman, honcho, overmind): `name: command` per line.
//!
//! foreman and honcho run each line through a shell with `PORT` set (5000 for the
//! first process, 5100 for the next, ...). A line with no shell syntax becomes an argv
//! `command`; any other a `shell` line, with a note. A process whose line mentions
//! `PORT` gets that same `PORT` in its `env`.

use super::model::{Draft, Run, Service, needs_shell};
use super::{ImportError, literal};

/// `name: command`, if the line is one.
pub fn entry(line: &str) -> Option<(&str, &str)> {
    let (name, command) = line.split_once(':')?;
    let name = name.trim();
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    valid.then(|| (name, command.trim()))
}

pub fn read(source: &str) -> Result<Draft, ImportError> {
    let mut draft = Draft {
        tool: "Procfile",
        ..Draft::default()
    };
    for (index, line) in source.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((name, command)) = entry(trimmed) else {
            return Err(ImportError::Syntax {
                line: index + 1,
                column: 1,
                message: format!("expected `name: command`, found `{trimmed}`"),
            });
        };
        if command.is_empty() {
            return Err(ImportError::Syntax {
                line: index + 1,
                column: line.find(':').map_or(1, |c| c + 2),
                message: format!("process `{name}` has no command after the `:`"),
            });
        }
        let port = 5000 + 100 * draft.services.len() as u32;
        let uses_port = command.contains("$PORT") || command.contains("${PORT");
        let mut service = if needs_shell(command) {
            let mut service = Service::new(name, Run::Shell(literal(command)));
            service.notes.push(
                "the line uses shell syntax, so it runs with /bin/sh -c as foreman and honcho run it"
                    .to_owned(),
            );
            service
        } else {
            match shlex::split(command) {
                Some(words) if !words.is_empty() => {
                    Service::new(name, Run::Argv(words.iter().map(|w| literal(w)).collect()))
                }
                _ => Service::new(name, Run::Shell(literal(command))),
            }
        };
        if uses_port && port <= u16::MAX as u32 {
            service.env.push(("PORT".to_owned(), port.to_string()));
            service.notes.push(format!(
                "PORT is {port}, as foreman gives the process in this place"
            ));
            service.ports.push(port as u16);
        }
        if name == "release" {
            service.notes.push(
                "heroku runs `release` once before a deploy: here it runs once (restart = \"never\"); make others wait for it with depends-on = { release = \"completed\" }"
                    .to_owned(),
            );
            service.restart = Some(super::model::Restart::Never);
        }
        draft.services.push(service);
    }
    Ok(draft)
}
