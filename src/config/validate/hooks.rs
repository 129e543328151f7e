//! `[[hooks]]`: event kinds, service names and the command each hook runs.

use std::collections::BTreeSet;

use toml::Spanned;

use super::{Validator, defaults};
use crate::config::foreign;
use crate::config::keypath::Segment;
use crate::config::raw::{RawHook, keys_of};
use crate::config::spec::{EVENT_KINDS, EventKind, Hook, ServiceName};
use crate::diagnostic::Diagnostic;
use crate::suggest;

impl Validator<'_> {
    pub(super) fn hook(
        &mut self,
        index: usize,
        raw: &Spanned<RawHook>,
        known: &BTreeSet<String>,
    ) -> Option<Hook> {
        let key = format!("hooks[{index}]");
        let span = raw.span();
        let raw = raw.get_ref();
        let before = self.errors;
        let mut on = Vec::new();
        match &raw.on {
            Some(kinds) if !kinds.get_ref().is_empty() => {
                for kind in kinds.get_ref() {
                    if let Some(known) = EventKind::parse(kind.get_ref()) {
                        on.push(known);
                    } else {
                        let help =
                            match suggest::nearest(kind.get_ref(), EVENT_KINDS.iter().copied()) {
                                Some(near) => format!("did you mean \"{near}\"?"),
                                None => format!("event kinds are: {}", EVENT_KINDS.join(", ")),
                            };
                        self.error(
                            Diagnostic::error(
                                "unknown-event",
                                format!("`{key}.on`: unknown event kind \"{}\"", kind.get_ref()),
                            )
                            .at(kind.span(), "")
                            .help(help),
                        );
                    }
                }
            }
            other => self.error(
                Diagnostic::error("missing-key", format!("`{key}` has no event kinds in `on`"))
                    .at(other.as_ref().map_or(span.clone(), Spanned::span), "")
                    .help("add on = [\"failed\", \"unhealthy\"] (any of the event kinds)"),
            ),
        }
        let services = match &raw.services {
            None => None,
            Some(list) if list.get_ref().is_empty() => {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`{key}.services` is empty: the hook would never run"),
                    )
                    .at(list.span(), "")
                    .help("name the services it is for, or remove `services` (or write [\"*\"]) for all of them"),
                );
                None
            }
            Some(list) if list.get_ref().iter().any(|s| s.get_ref() == "*") => None,
            Some(list) => Some(
                list.get_ref()
                    .iter()
                    .filter_map(|name| {
                        if !known.contains(name.get_ref()) {
                            self.unknown_service(&format!("`{key}.services` names"), name, known);
                        }
                        ServiceName::new(name.get_ref()).ok()
                    })
                    .collect::<Vec<_>>(),
            ),
        };
        let run = match &raw.run {
            Some(command) => {
                let run_key = format!("{key}.run");
                let argv = self.argv(&run_key, command);
                if let Some(argv) = &argv {
                    // Hooks run from the config file's directory with muster's PATH.
                    let (dir, path_var) = (self.dir.clone(), self.path_var.clone());
                    self.program(
                        &run_key,
                        &argv[0],
                        command.span(),
                        &dir,
                        path_var.as_deref(),
                    );
                }
                argv
            }
            // A `run` dropped for being malformed or misnamed was reported already.
            None if self.run_was_dropped(index) => None,
            None => {
                self.error(
                    Diagnostic::error("missing-key", format!("`{key}` has no `run` command"))
                        .at(span, "")
                        .help("add run = [\"program\", \"arg\"]; the event is in its environment as MUSTER_EVENT_JSON"),
                );
                None
            }
        };
        let timeout = self.positive(
            &format!("{key}.timeout"),
            raw.timeout.as_ref(),
            defaults::HOOK_TIMEOUT,
        );
        (self.errors == before).then_some(Hook {
            on,
            services,
            run: run?,
            timeout,
        })
    }

    /// Whether a key of hook `index` that was refused stands for `run` (`run` of the
    /// wrong type, `rnu`, `command`), so "no run command" would repeat the news.
    fn run_was_dropped(&self, index: usize) -> bool {
        let hook_keys: Vec<String> = keys_of::<RawHook>()
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        self.removed.iter().any(|path| match path.0.as_slice() {
            [Segment::Key(h), Segment::Index(i), Segment::Key(key)]
                if h == "hooks" && *i == index =>
            {
                key == "run"
                    || suggest::nearest(key, ["run"]).is_some()
                    || foreign::meant(key, &hook_keys) == Some("run")
            }
            _ => false,
        })
    }

    pub(super) fn unknown_service(
        &mut self,
        context: &str,
        name: &Spanned<String>,
        known: &BTreeSet<String>,
    ) {
        let help = match suggest::nearest(name.get_ref(), known.iter().map(String::as_str)) {
            Some(near) => format!("did you mean `{near}`?"),
            None if known.is_empty() => "define it under [services]".to_owned(),
            None => format!(
                "known services: {}",
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        };
        self.error(
            Diagnostic::error(
                "unknown-service",
                format!("{context} unknown service `{}`", name.get_ref()),
            )
            .at(name.span(), "not defined")
            .help(help),
        );
    }
}
