//! `ready` and `alive` probes: exactly one check each, and only the tuning keys that
//! apply to it.

use std::ffi::OsStr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::{Validator, defaults};
use crate::config::raw::RawProbe;
use crate::config::spec::{AliveProbe, Check, PORT_PLACEHOLDER, ReadyProbe};
use crate::config::values;
use crate::diagnostic::Diagnostic;

impl Validator<'_> {
    /// The check of a probe: exactly one kind, and `kinds` says which are allowed here.
    pub(super) fn check(
        &mut self,
        key: &str,
        probe: &Spanned<RawProbe>,
        kinds: &[&str],
        cwd: &Path,
        path_var: Option<&OsStr>,
    ) -> Option<Check> {
        let raw = probe.get_ref();
        let mut present: Vec<(&str, Range<usize>)> = Vec::new();
        let mut note = |kind: &'static str, span: Option<Range<usize>>| {
            if let Some(span) = span {
                present.push((kind, span));
            }
        };
        note("tcp", raw.tcp.as_ref().map(Spanned::span));
        note("http", raw.http.as_ref().map(Spanned::span));
        note("exec", raw.exec.as_ref().map(Spanned::span));
        note("log", raw.log.as_ref().map(Spanned::span));
        note(
            "notify",
            raw.notify
                .as_ref()
                .filter(|n| *n.get_ref())
                .map(Spanned::span),
        );
        let listed = kinds.join(", ");
        let (kind, span) = match present.as_slice() {
            [] => {
                self.error(
                    Diagnostic::error("missing-key", format!("`{key}` says nothing to check"))
                        .at(probe.span(), "")
                        .help(format!(
                            "add one of: {listed}; for example {{ tcp = \"127.0.0.1:5432\" }}"
                        )),
                );
                return None;
            }
            [one] => one.clone(),
            [first, second, ..] => {
                self.error(
                    Diagnostic::error(
                        "conflict",
                        format!(
                            "`{key}` has both `{}` and `{}`; a probe checks one thing",
                            first.0, second.0
                        ),
                    )
                    .at(second.1.clone(), "")
                    .also(first.1.clone(), "")
                    .help("keep one of them"),
                );
                return None;
            }
        };
        if !kinds.contains(&kind) {
            let help = match kind {
                "notify" | "log" => {
                    "liveness of a hung process is what `watchdog` is for: the service sends WATCHDOG=1 or touches $MUSTER_HEARTBEAT_FILE"
                }
                _ => "use another kind of check here",
            };
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!("`{key}` cannot use a `{kind}` check (use {listed})"),
                )
                .at(span, "")
                .help(help),
            );
            return None;
        }
        let http_only = [
            ("status", raw.status.as_ref().map(Spanned::span)),
            ("body", raw.body.as_ref().map(Spanned::span)),
        ];
        if kind != "http" {
            for (field, field_span) in http_only {
                if let Some(field_span) = field_span {
                    self.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!("`{key}.{field}` only applies to `http` checks"),
                        )
                        .at(field_span, "")
                        .help(format!("remove `{field}`")),
                    );
                }
            }
        }
        let sub = |k: &str| format!("{key}.{k}");
        match kind {
            "tcp" => {
                let text = raw.tcp.as_ref()?;
                // `{port}` is the run's port: checked with a stand-in, kept as port 0.
                let templated = text.get_ref().contains(PORT_PLACEHOLDER);
                let (host, port) =
                    values::host_port(&text.get_ref().replace(PORT_PLACEHOLDER, "1"))
                        .map_err(|problem| self.invalid(&sub("tcp"), text.span(), problem))
                        .ok()?;
                Some(Check::Tcp {
                    host,
                    port: if templated { 0 } else { port },
                })
            }
            "http" => {
                let text = raw.http.as_ref()?;
                let url = if text.get_ref().contains(PORT_PLACEHOLDER) {
                    values::http_url(&text.get_ref().replace(PORT_PLACEHOLDER, "1"))
                        .map(|_| text.get_ref().trim().to_owned())
                } else {
                    values::http_url(text.get_ref())
                }
                .map_err(|problem| self.invalid(&sub("http"), text.span(), problem))
                .ok();
                let status = match &raw.status {
                    Some(status) if !(100..600).contains(status.get_ref()) => {
                        self.error(
                            Diagnostic::error(
                                "invalid-value",
                                format!(
                                    "`{}` is {}, not an HTTP status",
                                    sub("status"),
                                    status.get_ref()
                                ),
                            )
                            .at(status.span(), "")
                            .help("use a status from 100 to 599, such as 200"),
                        );
                        None
                    }
                    Some(status) => Some(*status.get_ref() as u16),
                    None => None,
                };
                Some(Check::Http {
                    url: url?,
                    status,
                    body: raw.body.as_ref().map(|b| b.get_ref().clone()),
                })
            }
            "exec" => {
                let command = raw.exec.as_ref()?;
                let argv = self.argv(&sub("exec"), command)?;
                self.program(&sub("exec"), &argv[0], command.span(), cwd, path_var);
                Some(Check::Exec(argv))
            }
            "log" => {
                let text = raw.log.as_ref()?;
                match regex::Regex::new(text.get_ref()) {
                    Ok(pattern) => Some(Check::Log(pattern)),
                    Err(err) => {
                        let detail = err.to_string();
                        let last = detail
                            .lines()
                            .rev()
                            .find(|l| !l.trim().is_empty())
                            .unwrap_or("invalid");
                        let message = last.trim().trim_start_matches("error: ");
                        self.error(
                            Diagnostic::error("bad-regex", format!("`{}` is not a valid regex: {message}", sub("log")))
                                .at(text.span(), "")
                                .help("escape special characters with \\\\ (in a TOML basic string) or use a 'literal string'"),
                        );
                        None
                    }
                }
            }
            _ => Some(Check::Notify),
        }
    }

    pub(super) fn ready(
        &mut self,
        key: &str,
        probe: &Spanned<RawProbe>,
        cwd: &Path,
        path_var: Option<&OsStr>,
    ) -> Option<ReadyProbe> {
        let check = self.check(
            key,
            probe,
            &["tcp", "http", "exec", "log", "notify"],
            cwd,
            path_var,
        );
        let raw = probe.get_ref();
        for (field, value) in [("failures", &raw.failures), ("successes", &raw.successes)] {
            if let Some(value) = value {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`{key}.{field}` only applies to `alive` probes"),
                    )
                    .at(value.span(), "")
                    .help("readiness keeps trying until `timeout`; remove this key"),
                );
            }
        }
        let (interval, timeout) =
            self.timing(key, raw, defaults::READY_INTERVAL, defaults::READY_TIMEOUT);
        Some(ReadyProbe {
            check: check?,
            interval,
            timeout,
        })
    }

    pub(super) fn alive(
        &mut self,
        key: &str,
        probe: &Spanned<RawProbe>,
        cwd: &Path,
        path_var: Option<&OsStr>,
    ) -> Option<AliveProbe> {
        let check = self.check(key, probe, &["tcp", "http", "exec"], cwd, path_var);
        let raw = probe.get_ref();
        let (interval, timeout) =
            self.timing(key, raw, defaults::ALIVE_INTERVAL, defaults::ALIVE_TIMEOUT);
        let failures = self.count(
            &format!("{key}.failures"),
            raw.failures.as_ref(),
            1..1001,
            defaults::ALIVE_FAILURES.into(),
        );
        let successes = self.count(
            &format!("{key}.successes"),
            raw.successes.as_ref(),
            1..1001,
            defaults::ALIVE_SUCCESSES.into(),
        );
        Some(AliveProbe {
            check: check?,
            interval,
            timeout,
            failures: failures as u32,
            successes: successes as u32,
        })
    }

    /// A probe's `interval` and `timeout`, both longer than zero.
    fn timing(
        &mut self,
        key: &str,
        raw: &RawProbe,
        interval: Duration,
        timeout: Duration,
    ) -> (Duration, Duration) {
        (
            self.positive(&format!("{key}.interval"), raw.interval.as_ref(), interval),
            self.positive(&format!("{key}.timeout"), raw.timeout.as_ref(), timeout),
        )
    }
}
