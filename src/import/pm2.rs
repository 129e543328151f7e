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
    // A value computed in JavaScript (`process.env.PORT || 3000`, `path.join(...)`)
    // is kept as its source text, marked, when the plain reading fails: the app is
    // imported and the value shown in a comment, rather than the whole file refused.
    let parsed = json5::from_str::<Value>(body).or_else(|error| {
        if is_script {
            json5::from_str::<Value>(&computed_as_text(body)).map_err(|_| error)
        } else {
            Err(error)
        }
    });
    let root: Value = parsed.map_err(|error| {
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
        // `pm2` is what older files call `apps`; a file may also be one app.
        Value::Object(map) => match map.get("apps").or_else(|| map.get("pm2")) {
            Some(Value::Array(apps)) => apps.clone(),
            Some(single @ Value::Object(_)) => vec![single.clone()],
            None if map.contains_key("script") => vec![root.clone()],
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
            if key != "apps" && key != "pm2" && !map.contains_key("script") {
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

/// What marks a value computed in JavaScript, kept as its source text.
const COMPUTED: &str = "\u{1}js:";

/// The JavaScript expression a value was computed with, if it was.
fn computed(value: &Value) -> Option<&str> {
    value.as_str()?.strip_prefix(COMPUTED)
}

/// The few computed values whose meaning is plain, in muster's words:
/// `process.env.X` (`${X:-}`), `process.env.X || 'd'` or `?? 'd'` (`${X:-d}`),
/// `__dirname` (`.`), and `path.join(__dirname, 'a', 'b')` or `path.resolve(...)`.
fn known_expression(expr: &str) -> Option<String> {
    let expr = expr.trim();
    let literal_text = |source: &str| -> Option<String> {
        json5::from_str::<Value>(source.trim())
            .ok()
            .as_ref()
            .and_then(text)
    };
    let env_name = |text: &str| -> Option<String> {
        let name = text.trim().strip_prefix("process.env.")?;
        (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
            .then(|| name.to_owned())
    };
    if let Some(name) = env_name(expr) {
        return Some(format!("${{{name}:-}}"));
    }
    for operator in ["||", "??"] {
        if let Some((left, right)) = expr.split_once(operator)
            && let Some(name) = env_name(left)
            && let Some(default) = literal_text(right)
        {
            return Some(format!("${{{name}:-{}}}", literal(&default)));
        }
    }
    if expr == "__dirname" {
        return Some(".".to_owned());
    }
    for call in ["path.join(", "path.resolve("] {
        if let Some(inner) = expr.strip_prefix(call).and_then(|e| e.strip_suffix(')')) {
            let mut parts = Vec::new();
            for (index, part) in inner.split(',').enumerate() {
                let part = part.trim();
                if index == 0 && part == "__dirname" {
                    continue;
                }
                parts.push(literal(&literal_text(part)?));
            }
            return Some(if parts.is_empty() {
                ".".to_owned()
            } else {
                parts.join("/")
            });
        }
    }
    None
}

/// `body` with every value that is not a JSON5 literal replaced by a string holding
/// its source text, marked with [`COMPUTED`].
fn computed_as_text(body: &str) -> String {
    let bytes = body.as_bytes();
    let mut out = String::with_capacity(body.len());
    // The containers we are in: `{` or `[`.
    let mut stack: Vec<u8> = Vec::new();
    let mut i = 0;
    let mut copied = 0;
    // Whether the next token is a value (after `:` in an object, `[` or `,` in an array).
    let mut expect_value = false;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(end) = skip_string_or_comment(bytes, i) {
            if expect_value && matches!(b, b'"' | b'\'' | b'`') {
                expect_value = false;
                if let Some(expr_end) = value_end(bytes, i) {
                    let expr = &body[i..expr_end];
                    if json5::from_str::<Value>(expr).is_err() {
                        out.push_str(&body[copied..i]);
                        out.push_str(&marked(expr));
                        copied = expr_end;
                        i = expr_end;
                        continue;
                    }
                }
            }
            i = end;
            continue;
        }
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if expect_value && !matches!(b, b'{' | b'[') {
            expect_value = false;
            if let Some(expr_end) = value_end(bytes, i) {
                let expr = &body[i..expr_end];
                if json5::from_str::<Value>(expr).is_err() {
                    out.push_str(&body[copied..i]);
                    out.push_str(&marked(expr));
                    copied = expr_end;
                }
                i = expr_end;
                continue;
            }
        }
        expect_value = false;
        match b {
            b'{' => stack.push(b'{'),
            b'[' => {
                stack.push(b'[');
                expect_value = true;
            }
            b'}' | b']' => {
                stack.pop();
            }
            b':' if stack.last() == Some(&b'{') => expect_value = true,
            b',' if stack.last() == Some(&b'[') => expect_value = true,
            _ => {}
        }
        i += 1;
    }
    out.push_str(&body[copied..]);
    out
}

fn marked(expr: &str) -> String {
    serde_json::to_string(&format!("{COMPUTED}{}", expr.trim())).unwrap_or_default()
}

/// Where a string or comment that starts at `i` ends, if one does.
fn skip_string_or_comment(bytes: &[u8], i: usize) -> Option<usize> {
    match bytes[i] {
        quote @ (b'"' | b'\'' | b'`') => {
            let mut j = i + 1;
            while j < bytes.len() && bytes[j] != quote {
                j += if bytes[j] == b'\\' { 2 } else { 1 };
            }
            Some((j + 1).min(bytes.len()))
        }
        b'/' if bytes.get(i + 1) == Some(&b'/') => {
            let mut j = i;
            while j < bytes.len() && bytes[j] != b'\n' {
                j += 1;
            }
            Some(j)
        }
        b'/' if bytes.get(i + 1) == Some(&b'*') => {
            let mut j = i + 2;
            while j + 1 < bytes.len() && !(bytes[j] == b'*' && bytes[j + 1] == b'/') {
                j += 1;
            }
            Some((j + 2).min(bytes.len()))
        }
        _ => None,
    }
}

/// Where the value expression that starts at `start` ends: at a `,` or a closing
/// bracket of the container it is in, past nested brackets, strings and comments.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    let mut last_code = start;
    while i < bytes.len() {
        if let Some(end) = skip_string_or_comment(bytes, i) {
            if !matches!(bytes[i], b'/') {
                last_code = end;
            }
            i = end;
            continue;
        }
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' if depth > 0 => depth -= 1,
            b',' | b')' | b']' | b'}' if depth == 0 => return Some(last_code.max(start)),
            b if b.is_ascii_whitespace() => {
                i += 1;
                continue;
            }
            _ => {}
        }
        i += 1;
        last_code = i;
    }
    None
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
    let plain = |key: &str| app.get(key).filter(|v| computed(v).is_none());
    let script = plain("script").and_then(text).unwrap_or_default();
    // pm2 names an app after its script when it has no name.
    let name = plain("name").and_then(text).unwrap_or_else(|| {
        Path::new(&script).file_stem().map_or_else(
            || format!("app{}", index + 1),
            |s| s.to_string_lossy().into_owned(),
        )
    });
    let args = plain("args").map(words).unwrap_or_default();
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
    // Values computed in JavaScript: those whose meaning is plain are translated,
    // the others shown, not guessed at.
    for (key, value) in app {
        if let Some(expr) = computed(value) {
            match (key.as_str(), known_expression(expr)) {
                ("cwd", Some(cwd)) => service.cwd = Some(cwd),
                _ => service.untranslated(
                    key,
                    expr,
                    "computed in JavaScript when pm2 reads the file; write the value it has here",
                ),
            }
        }
    }
    // pm2 restarts an app however it ended unless told not to.
    service.restart = Some(Restart::Always);
    for (key, value) in app {
        if computed(value).is_some() {
            continue;
        }
        match key.as_str() {
            "name" | "script" | "args" | "interpreter" | "exec_interpreter" | "interpreter_args"
            | "node_args" => {}
            "cwd" => service.cwd = text(value),
            "env" => {
                if let Value::Object(env) = value {
                    for (k, v) in env {
                        match computed(v).map(|expr| (expr, known_expression(expr))) {
                            Some((_, Some(value))) => service.env.push((k.clone(), value)),
                            Some((expr, None)) => service.untranslated(
                                &format!("env.{k}"),
                                expr,
                                "computed in JavaScript when pm2 reads the file; write the value it has here",
                            ),
                            None => {
                                if let Some(v) = text(v) {
                                    service.env.push((k.clone(), literal(&v)));
                                }
                            }
                        }
                    }
                }
            }
            k if k.starts_with("env_") => service.untranslated(key, shown(value), "pm2's `--env` variant: merge it into `env`, or put it in a file for `include`"),
            "instances" => {
                let count = match value {
                    Value::Number(n) if n.as_i64().is_some_and(|n| n > 0) => n.as_u64().unwrap_or(1),
                    Value::String(n) if n.parse::<u64>().is_ok_and(|n| n > 0) => n.parse().unwrap_or(1),
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
    fn values_computed_in_javascript_are_translated_or_shown() {
        let source = "const path = require('path');\nmodule.exports = {\n  apps: [{\n    name: 'api',\n    script: 'server.js',\n    cwd: path.join(__dirname, 'api'),\n    instances: os.cpus().length,\n    env: { PORT: process.env.PORT || 3000, KEY: process.env.KEY, WHEN: `${Date.now()}` },\n  }]\n};\n";
        let draft = read(source, Path::new("ecosystem.config.js")).unwrap();
        let app = &draft.services[0];
        assert_eq!(app.cwd.as_deref(), Some("api"));
        let env: Vec<(&str, &str)> = app
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, [("KEY", "${KEY:-}"), ("PORT", "${PORT:-3000}")]);
        assert!(
            app.untranslated
                .iter()
                .any(|u| u.starts_with("instances: os.cpus().length")),
            "{:?}",
            app.untranslated
        );
        assert!(
            app.untranslated
                .iter()
                .any(|u| u.starts_with("env.WHEN: `${Date.now()}`")),
            "{:?}",
            app.untranslated
        );
    }

    #[test]
    fn javascript_that_is_not_an_object_is_refused_at_its_place() {
        let source = "module.exports = {\n  apps: [{\n    name: 'a',,\n  }]\n};\n";
        let error = read(source, Path::new("ecosystem.config.js")).unwrap_err();
        let ImportError::Syntax { line, .. } = error else {
            panic!("{error:?}")
        };
        assert_eq!(line, 3);
    }
}
