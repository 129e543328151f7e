//! pm2 ecosystem files: JSON (`process.json`, `ecosystem.json`), JSON5, and the common
//! JavaScript shape `module.exports = { apps: [...] }` (or `export default {...}`).
//!
//! The JavaScript is not run: the object literal after `module.exports =` is cut out
//! and read as JSON5, which covers what these files hold in practice (unquoted keys,
//! single quotes, trailing commas, comments). A file that computes its values
//! (`process.env.X`, function calls) is refused with the place json5 stopped at.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::model::{Draft, Restart, Run, Service};
use super::yaml::{shown, text};
use super::{ImportError, literal};

pub fn read(source: &str, path: &Path) -> Result<Draft, ImportError> {
    let is_script = path
        .extension()
        .is_some_and(|e| e == "js" || e == "cjs" || e == "mjs")
        || source.contains("module.exports")
        || source.contains("export default");
    let (offset, body) = if is_script {
        object_literal(source)?
    } else {
        (0, source)
    };
    let root: Value = json5::from_str(body).map_err(|error| {
        let (line, column) = match error.position() {
            Some(p) => position_in(source, offset, p.line + 1, p.column + 1),
            None => (1, 1),
        };
        let message = error.to_string();
        let message = message
            .split(" at line ")
            .next()
            .unwrap_or(&message)
            .to_owned();
        ImportError::Syntax {
            line,
            column,
            message: if is_script {
                format!(
                    "{message} (muster reads the object literal as JSON5 and runs no JavaScript)"
                )
            } else {
                message
            },
        }
    })?;
    let apps = match &root {
        Value::Object(map) => match map.get("apps") {
            Some(Value::Array(apps)) => apps.clone(),
            Some(single @ Value::Object(_)) => vec![single.clone()],
            _ => {
                return Err(ImportError::Shape(
                    "it has no `apps` list; is it a pm2 ecosystem file?".to_owned(),
                ));
            }
        },
        Value::Array(apps) => apps.clone(),
        _ => {
            return Err(ImportError::Shape(
                "a pm2 ecosystem file holds `apps`".to_owned(),
            ));
        }
    };
    let mut draft = Draft {
        tool: "pm2 ecosystem",
        ..Draft::default()
    };
    if let Value::Object(map) = &root {
        for (key, value) in map {
            if key != "apps" {
                let why = if key == "deploy" {
                    "deployment is pm2's; muster runs what is on this host"
                } else {
                    "no equivalent in muster"
                };
                let text = shown(value);
                let text = if text.chars().count() > 100 {
                    format!("{}...", text.chars().take(97).collect::<String>())
                } else {
                    text
                };
                draft.notes.push(format!("{key}: {text} — {why}"));
            }
        }
    }
    for (index, app) in apps.iter().enumerate() {
        let Value::Object(app) = app else { continue };
        draft.services.push(application(index, app));
    }
    Ok(draft)
}

/// The 1-based line and column in `source` of a 1-based place in the cut-out body
/// that starts at byte `offset`.
fn position_in(source: &str, offset: usize, line: usize, column: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let lines_before = before.matches('\n').count();
    if line == 1 {
        let start_column = before.len() - before.rfind('\n').map_or(0, |i| i + 1);
        (lines_before + 1, start_column + column)
    } else {
        (lines_before + line, column)
    }
}

/// The object literal assigned to `module.exports` (or exported by default): where it
/// starts, and its text up to the matching `}`.
fn object_literal(source: &str) -> Result<(usize, &str), ImportError> {
    let anchor = ["module.exports", "export default"]
        .iter()
        .filter_map(|a| source.find(a))
        .min()
        .ok_or_else(|| {
            ImportError::Shape(
                "no `module.exports = {...}` in it; muster reads that shape of ecosystem file"
                    .to_owned(),
            )
        })?;
    let start = source[anchor..]
        .find(['{', '['])
        .map(|i| anchor + i)
        .ok_or_else(|| {
            ImportError::Shape("`module.exports` is not followed by an object".to_owned())
        })?;
    let bytes = source.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'"' | b'\'' | b'`' => quote = Some(b),
                b'/' if bytes.get(i + 1) == Some(&b'/') => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    i += 2;
                    while i + 1 < bytes.len() && !(bytes[i] == b'*' && bytes[i + 1] == b'/') {
                        i += 1;
                    }
                    i += 1;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok((start, &source[start..=i]));
                    }
                }
                _ => {}
            },
        }
        i += 1;
    }
    let line = source[..start].matches('\n').count() + 1;
    Err(ImportError::Syntax {
        line,
        column: 1,
        message: "the object after `module.exports` is not closed".to_owned(),
    })
}

/// The program pm2 would run a script with, by its extension.
fn interpreter_for(script: &str) -> Option<&'static str> {
    let ext = Path::new(script).extension()?.to_str()?;
    Some(match ext {
        "js" | "cjs" | "mjs" => "node",
        "ts" => "ts-node",
        "py" => "python3",
        "sh" => "bash",
        "rb" => "ruby",
        "php" => "php",
        "pl" => "perl",
        "coffee" => "coffee",
        _ => return None,
    })
}

fn words(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().filter_map(text).collect(),
        other => text(other)
            .and_then(|line| shlex::split(&line))
            .unwrap_or_default(),
    }
}

fn application(index: usize, app: &serde_json::Map<String, Value>) -> Service {
    let script = app.get("script").and_then(text).unwrap_or_default();
    // pm2 names an app after its script when it has no name.
    let name = app.get("name").and_then(text).unwrap_or_else(|| {
        Path::new(&script).file_stem().map_or_else(
            || format!("app{}", index + 1),
            |s| s.to_string_lossy().into_owned(),
        )
    });
    let args = app.get("args").map(words).unwrap_or_default();
    let interpreter = app
        .get("interpreter")
        .or_else(|| app.get("exec_interpreter"))
        .and_then(text);
    let interpreter_args = app
        .get("interpreter_args")
        .or_else(|| app.get("node_args"))
        .map(words)
        .unwrap_or_default();
    let mut argv = Vec::new();
    let (script_words, script_is_line) = match shlex::split(&script) {
        Some(w) if w.len() > 1 => (w, true),
        _ => (vec![script.clone()], false),
    };
    match interpreter.as_deref() {
        Some("none") => {}
        Some(program) => {
            argv.push(program.to_owned());
            argv.extend(interpreter_args.clone());
        }
        None if !script_is_line => {
            if let Some(program) = interpreter_for(&script) {
                argv.push(program.to_owned());
                argv.extend(interpreter_args.clone());
            }
        }
        None => {}
    }
    let script_words = script_words
        .into_iter()
        .map(|w| {
            // A bare file name with an interpreter is a path relative to `cwd`.
            if !argv.is_empty() && !w.starts_with(['/', '.']) && w.contains('.') && !w.contains('/')
            {
                format!("./{w}")
            } else {
                w
            }
        })
        .collect::<Vec<_>>();
    argv.extend(script_words);
    argv.extend(args);
    let run = if script.trim().is_empty() {
        Run::Missing {
            why: "the app names no `script`".to_owned(),
            instead: None,
        }
    } else {
        Run::Argv(argv.iter().map(|w| literal(w)).collect())
    };
    let mut service = Service::new(name, run);
    // pm2 restarts an app however it ended unless told not to.
    service.restart = Some(Restart::Always);
    for (key, value) in app {
        match key.as_str() {
            "name" | "script" | "args" | "interpreter" | "exec_interpreter" | "interpreter_args"
            | "node_args" => {}
            "cwd" => service.cwd = text(value),
            "env" => {
                if let Value::Object(env) = value {
                    service.env = env
                        .iter()
                        .filter_map(|(k, v)| Some((k.clone(), literal(&text(v)?))))
                        .collect();
                }
            }
            k if k.starts_with("env_") => service.untranslated(key, shown(value), "pm2's `--env` variant: merge it into `env`, or put it in a file for `include`"),
            "instances" => {
                let count = match value {
                    Value::Number(n) => n.as_u64().unwrap_or(1),
                    // "max" and -1 mean one per CPU.
                    _ => std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
                };
                service.replicas = count.clamp(1, 64) as u32;
                if count > 1 {
                    service.notes.push(format!("instances: {} — run as separate services", shown(value)));
                }
            }
            "exec_mode" => {
                if text(value).as_deref() == Some("cluster") {
                    service.untranslated(key, shown(value), "pm2's cluster mode shares one port between Node workers; here each copy is its own process and needs its own port");
                }
            }
            "autorestart" => {
                if value.as_bool() == Some(false) {
                    service.restart = Some(Restart::Never);
                }
            }
            "max_restarts" => {
                service.restart_limit = value.as_u64().map(|n| n.min(1000) as u32).filter(|n| *n > 0);
            }
            "restart_delay" => service.backoff_initial = value.as_u64().map(Duration::from_millis),
            "kill_timeout" => service.stop_timeout = value.as_u64().map(Duration::from_millis),
            "wait_ready" => {
                if value.as_bool() == Some(true) {
                    service.untranslated(key, shown(value), "pm2 waits for process.send('ready'); with muster, have the app call `systemd-notify --ready` (or write READY=1 to $NOTIFY_SOCKET) and add ready = { notify = true }");
                }
            }
            "listen_timeout" => service.untranslated(key, shown(value), "set `ready.timeout` with a `ready` probe"),
            "watch" | "ignore_watch" | "watch_options" => service.untranslated(key, shown(value), "muster does not restart on file changes"),
            "max_memory_restart" => service.untranslated(key, shown(value), "muster does not restart on memory use; see `memory` and pools for budgets"),
            "out_file" | "error_file" | "err_file" | "log_file" | "log" | "output" | "error"
            | "log_date_format" | "merge_logs" | "combine_logs" | "time" => service.untranslated(key, shown(value), "muster writes output to state-dir/logs/NAME.log; `muster logs --timestamps` shows times"),
            "cron_restart" => service.untranslated(key, shown(value), "run `muster restart NAME` from cron"),
            "min_uptime" => service.untranslated(key, shown(value), "see `backoff.reset-after`"),
            "port" => {
                if let Some(port) = value.as_u64().and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) {
                    service.ports.push(port);
                }
            }
            _ => service.untranslated(key, shown(value), "no equivalent in muster"),
        }
    }
    service
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_after_module_exports_is_cut_out() {
        let source = "// c\nconst x = 1;\nmodule.exports = {\n  apps: [{ name: 'a', script: 'a.js' /* } */ }],\n};\n";
        let (_, body) = object_literal(source).unwrap();
        assert!(body.starts_with('{') && body.ends_with('}'));
        let draft = read(source, Path::new("ecosystem.config.js")).unwrap();
        assert_eq!(
            draft.services[0].run,
            Run::Argv(vec!["node".into(), "./a.js".into()])
        );
    }

    #[test]
    fn javascript_that_computes_is_refused_at_its_place() {
        let source = "module.exports = {\n  apps: [{\n    name: process.env.NAME,\n  }]\n};\n";
        let error = read(source, Path::new("ecosystem.config.js")).unwrap_err();
        let ImportError::Syntax { line, .. } = error else {
            panic!("{error:?}")
        };
        assert_eq!(line, 3);
    }
}
