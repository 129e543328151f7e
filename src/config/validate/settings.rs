//! `[settings]`: state directory, shutdown, logs, the TCP API and history retention.

use std::io::Read;
use std::path::PathBuf;

use toml::Spanned;

use super::{Validator, defaults};
use crate::config::raw::{RawApiSettings, RawHistorySettings, RawLogSettings, RawSettings};
use crate::config::spec::{ApiSettings, HistorySettings, LogSettings, Settings};
use crate::config::values;
use crate::diagnostic::Diagnostic;

impl Validator<'_> {
    pub(super) fn settings(&mut self, raw: Option<&Spanned<RawSettings>>) -> Option<Settings> {
        let before = self.errors;
        let default = RawSettings::default();
        let raw = raw.map_or(&default, Spanned::get_ref);
        let state_dir = self.path(
            raw.state_dir
                .as_ref()
                .map_or(defaults::STATE_DIR, |s| s.get_ref().as_str()),
        );
        self.state_dir(raw.state_dir.as_ref(), &state_dir);
        let shutdown_timeout = self.positive(
            "settings.shutdown-timeout",
            raw.shutdown_timeout.as_ref(),
            defaults::SHUTDOWN_TIMEOUT,
        );
        let logs = self.log_settings(raw.logs.as_ref().map(Spanned::get_ref));
        let api = raw.api.as_ref().and_then(|api| self.api_settings(api));
        let history = self.history_settings(raw.history.as_ref().map(Spanned::get_ref));
        (self.errors == before).then_some(Settings {
            state_dir,
            shutdown_timeout,
            logs,
            api,
            history,
        })
    }

    pub(super) fn log_settings(&mut self, raw: Option<&RawLogSettings>) -> LogSettings {
        let default = RawLogSettings::default();
        let raw = raw.unwrap_or(&default);
        let max_size = match &raw.max_size {
            Some(text) => values::size(text.get_ref()).unwrap_or_else(|problem| {
                self.invalid("settings.logs.max-size", text.span(), problem);
                defaults::LOG_MAX_SIZE
            }),
            None => defaults::LOG_MAX_SIZE,
        };
        LogSettings {
            max_size,
            keep: self.count(
                "settings.logs.keep",
                raw.keep.as_ref(),
                0..1001,
                defaults::LOG_KEEP.into(),
            ) as u32,
            tail_lines: self.count(
                "settings.logs.tail-lines",
                raw.tail_lines.as_ref(),
                1..1_000_001,
                defaults::LOG_TAIL_LINES as i64,
            ) as usize,
        }
    }

    pub(super) fn api_settings(&mut self, raw: &Spanned<RawApiSettings>) -> Option<ApiSettings> {
        let span = raw.span();
        let raw = raw.get_ref();
        let Some(listen) = &raw.listen else {
            self.error(
                Diagnostic::error("missing-key", "`settings.api` has no `listen` address")
                    .at(span, "")
                    .help("add listen = \"127.0.0.1:7070\", or remove [settings.api] to serve only the unix socket"),
            );
            return None;
        };
        let listen_addr = values::socket_addr(listen.get_ref())
            .map_err(|problem| self.invalid("settings.api.listen", listen.span(), problem))
            .ok();
        let token_file = raw
            .token_file
            .as_ref()
            .map(|t| self.token_file("settings.api.token-file", t));
        let read_token_file = raw
            .read_token_file
            .as_ref()
            .map(|t| self.token_file("settings.api.read-token-file", t));
        if let (Some(Some((_, control))), Some(Some((_, read))), Some(read_file)) =
            (&token_file, &read_token_file, &raw.read_token_file)
            && control == read
        {
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    "`settings.api.read-token-file` holds the same token as `token-file`",
                )
                .at(read_file.span(), "")
                .help("the read-only token must differ from the control token, or it could control: make a new one with head -c 32 /dev/urandom | base64"),
            );
        }
        let token_file = token_file.map(|t| t.map(|(path, _)| path));
        let read_token_file = read_token_file.map(|t| t.map(|(path, _)| path));
        if token_file.is_none() && read_token_file.is_none() {
            self.error(
                Diagnostic::error("missing-key", "the TCP API needs a token: `settings.api` has no `token-file`")
                    .at(listen.span(), "served over TCP")
                    .help("add token-file = \"api.token\" (create it with: head -c 32 /dev/urandom | base64 > api.token; chmod 600 api.token)"),
            );
        }
        Some(ApiSettings {
            listen: listen_addr?,
            token_file: token_file.flatten(),
            read_token_file: read_token_file.flatten(),
        })
    }

    /// A token file that `muster up` will be able to read a token from: the path and
    /// the token (surrounding whitespace is not part of it, as at start-up).
    pub(super) fn token_file(
        &mut self,
        key: &str,
        value: &Spanned<String>,
    ) -> Option<(PathBuf, String)> {
        let path = self.path(value.get_ref());
        if !path.is_file() {
            self.error(
                Diagnostic::error("missing-file", format!("`{key}`: `{}` does not exist", value.get_ref()))
                    .at(value.span(), "no such file")
                    .help("create the file, or fix the path (relative paths start at the config file's directory)"),
            );
            return None;
        }
        let make = "put a token in it: head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE";
        // Read no more than a token could sensibly be; a bigger file is the wrong one.
        let mut text = String::new();
        let read = std::fs::File::open(&path)
            .and_then(|file| std::io::Read::take(file, 64 << 10).read_to_string(&mut text));
        let problem = match read {
            Err(error) => Some((
                format!("cannot be read ({error})"),
                "make it a text file muster may read, holding the token".to_owned(),
            )),
            Ok(_) if text.trim().is_empty() => Some(("is empty".to_owned(), make.to_owned())),
            Ok(_) => None,
        };
        if let Some((what, help)) = problem {
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!("`{key}`: `{}` {what}", value.get_ref()),
                )
                .at(value.span(), "")
                .help(help),
            );
            return None;
        }
        Some((path, text.trim().to_owned()))
    }

    pub(super) fn history_settings(&mut self, raw: Option<&RawHistorySettings>) -> HistorySettings {
        let default = RawHistorySettings::default();
        let raw = raw.unwrap_or(&default);
        HistorySettings {
            max_events: self.count(
                "settings.history.max-events",
                raw.max_events.as_ref(),
                1..i64::MAX,
                defaults::HISTORY_MAX_EVENTS as i64,
            ) as u64,
            max_age: self.positive(
                "settings.history.max-age",
                raw.max_age.as_ref(),
                defaults::HISTORY_MAX_AGE,
            ),
        }
    }
}
