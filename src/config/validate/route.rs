//! Model routing: `[router]`, `[pools.NAME]`, and a service's `port`, `models`,
//! `upstream`, `max-concurrent`, `max-queued`, `pool` and `memory`, on their own and
//! across services (a model name served twice, a pool that does not exist, a member
//! that can never fit its pool's budget).

use std::collections::BTreeMap;
use std::ops::Range;

use toml::Spanned;

use super::{Draft, Validator, defaults};
use crate::config::raw::{RawPool, RawPort, RawRouter, RawService, StringOrList};
use crate::config::spec::{
    AssignedPort, Budget, Membership, PORT_PLACEHOLDER, Pool, RouterSettings, Routing, Upstream,
};
use crate::config::values;
use crate::diagnostic::Diagnostic;
use crate::suggest;

/// What the checks across services need of one service's routing.
pub(super) struct RouteRef {
    models: Vec<(String, Range<usize>)>,
    pool: Option<(String, Range<usize>)>,
    memory: Option<(u64, Range<usize>)>,
}

impl RouteRef {
    /// The service's share of its pool's budget, as the spec holds it.
    pub(super) fn membership(&self) -> Option<Membership> {
        let (pool, _) = self.pool.as_ref()?;
        Some(Membership {
            pool: pool.clone(),
            memory: self.memory.as_ref().map(|(bytes, _)| *bytes),
        })
    }
}

/// The pools as written, with where each is.
pub(super) type PoolsRef = BTreeMap<String, (Pool, Range<usize>)>;

impl Validator<'_> {
    /// `[router]`, when there is one.
    pub(super) fn router(&mut self, raw: Option<&Spanned<RawRouter>>) -> Option<RouterSettings> {
        let raw = raw?;
        let span = raw.span();
        let raw = raw.get_ref();
        let listen = match &raw.listen {
            Some(text) => values::socket_addr(text.get_ref())
                .map_err(|problem| self.invalid("router.listen", text.span(), problem))
                .ok(),
            None => {
                self.error(
                    Diagnostic::error("missing-key", "`router` has no `listen` address")
                        .at(span, "")
                        .help("say where clients connect: listen = \"127.0.0.1:8080\""),
                );
                None
            }
        };
        let max_body = match &raw.max_body {
            Some(text) => values::size(text.get_ref())
                .map_err(|problem| self.invalid("router.max-body", text.span(), problem))
                .unwrap_or(defaults::ROUTER_MAX_BODY),
            None => defaults::ROUTER_MAX_BODY,
        };
        let request_timeout = raw
            .request_timeout
            .as_ref()
            .map(|t| self.positive("router.request-timeout", Some(t), defaults::READY_TIMEOUT));
        Some(RouterSettings {
            listen: listen?,
            max_body,
            request_timeout,
        })
    }

    /// Every `[pools.NAME]`.
    pub(super) fn pools(
        &mut self,
        raw: Option<&Spanned<BTreeMap<Spanned<String>, Spanned<RawPool>>>>,
    ) -> PoolsRef {
        let mut pools = BTreeMap::new();
        for (name, pool) in raw.map(Spanned::get_ref).into_iter().flatten() {
            let key = format!("pools.{}", name.get_ref());
            let span = pool.span();
            let raw = pool.get_ref();
            let exclusive = raw.exclusive.as_ref().is_some_and(|e| *e.get_ref());
            let budget = match (&raw.capacity, exclusive) {
                (Some(capacity), true) => {
                    self.error(
                        Diagnostic::error(
                            "conflict",
                            format!("`{key}` has both `capacity` and `exclusive = true`"),
                        )
                        .at(capacity.span(), "")
                        .help("a pool is either one member at a time (exclusive) or a memory budget (capacity): keep one"),
                    );
                    None
                }
                (Some(capacity), false) => values::size(capacity.get_ref())
                    .map(Budget::Capacity)
                    .map_err(|problem| {
                        self.invalid(&format!("{key}.capacity"), capacity.span(), problem)
                    })
                    .ok(),
                (None, true) => Some(Budget::Exclusive),
                (None, false) => {
                    self.error(
                        Diagnostic::error("missing-key", format!("`{key}` sets no budget"))
                            .at(span.clone(), "")
                            .help("add capacity = \"24GiB\" (members declare their `memory`) or exclusive = true (one member at a time)"),
                    );
                    None
                }
            };
            if let Some(budget) = budget {
                let pool = Pool {
                    name: name.get_ref().clone(),
                    budget,
                };
                pools.insert(name.get_ref().clone(), (pool, name.span()));
            }
        }
        pools
    }

    /// `port`: a number, or `"auto"` for a free port at each start.
    pub(super) fn assigned_port(
        &mut self,
        key: &str,
        raw: Option<&Spanned<RawPort>>,
    ) -> Option<AssignedPort> {
        let raw = raw?;
        match raw.get_ref() {
            RawPort::Number(number) => values::port_number(*number)
                .map(AssignedPort::Fixed)
                .map_err(|problem| self.invalid(key, raw.span(), problem))
                .ok(),
            RawPort::Address(text) if text == "auto" => Some(AssignedPort::Auto),
            // Digits in a string: what `"80{replica:02}"` becomes in an instance.
            RawPort::Address(text)
                if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) =>
            {
                values::port_number(text.parse().unwrap_or(i64::MAX))
                    .map(AssignedPort::Fixed)
                    .map_err(|problem| self.invalid(key, raw.span(), problem))
                    .ok()
            }
            RawPort::Address(text) => {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`{key}` is \"{text}\", not a port"),
                    )
                    .at(raw.span(), "")
                    .help("write a port number (port = 8000), or port = \"auto\" for a free port at each start"),
                );
                None
            }
        }
    }

    /// A service that writes `{port}` must have a `port` to put there.
    pub(super) fn placeholders_need_a_port(&mut self, name: &str, raw: &RawService) {
        if raw.port.is_some() {
            return;
        }
        let mut places: Vec<(&str, Range<usize>)> = Vec::new();
        let mut look = |key: &'static str, text: &str, span: Range<usize>| {
            if text.contains(PORT_PLACEHOLDER) {
                places.push((key, span));
            }
        };
        match raw.command.as_ref().map(|c| (c.get_ref(), c.span())) {
            Some((StringOrList::One(text), span)) => look("command", text, span),
            Some((StringOrList::List(items), _)) => {
                for item in items {
                    look("command", item.get_ref(), item.span());
                }
            }
            None => {}
        }
        if let Some(shell) = &raw.shell {
            look("shell", shell.get_ref(), shell.span());
        }
        for (_, value) in raw.env.iter().flatten() {
            look("env", &value.get_ref().0, value.span());
        }
        for probe in [&raw.ready, &raw.alive].into_iter().flatten() {
            let probe = probe.get_ref();
            for text in [&probe.tcp, &probe.http].into_iter().flatten() {
                look("probe", text.get_ref(), text.span());
            }
        }
        if let Some(upstream) = &raw.upstream {
            look("upstream", upstream.get_ref(), upstream.span());
        }
        if let Some(upstream) = raw
            .proxy
            .as_ref()
            .and_then(|p| p.get_ref().upstream.as_ref())
        {
            look("proxy.upstream", upstream.get_ref(), upstream.span());
        }
        if let Some((key, span)) = places.into_iter().next() {
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!("`services.{name}.{key}` uses `{PORT_PLACEHOLDER}` but the service has no `port`"),
                )
                .at(span, "")
                .help("add port = \"auto\" (a free port at each start) or port = 8000"),
            );
        }
    }

    /// `models` and what only applies with them.
    pub(super) fn routing(
        &mut self,
        name: &str,
        raw: &RawService,
        port: Option<AssignedPort>,
        proxy_upstream: Option<std::net::SocketAddr>,
        table_span: Range<usize>,
    ) -> (Option<Routing>, Option<RouteRef>) {
        let key = |field: &str| format!("services.{name}.{field}");
        let member = self.membership(name, raw);
        let Some(models_raw) = &raw.models else {
            let stray = [
                ("upstream", raw.upstream.as_ref().map(Spanned::span)),
                (
                    "max-concurrent",
                    raw.max_concurrent.as_ref().map(Spanned::span),
                ),
                ("max-queued", raw.max_queued.as_ref().map(Spanned::span)),
            ];
            for (field, span) in stray {
                if let Some(span) = span {
                    self.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!("`{}` only applies to a service with `models`", key(field)),
                        )
                        .at(span, "")
                        .help("list the models the router sends here: models = [\"llama3\"]; or remove it"),
                    );
                }
            }
            let route = member.map(|(pool, memory)| RouteRef {
                models: Vec::new(),
                pool: Some(pool),
                memory,
            });
            return (None, route);
        };
        let mut models = Vec::new();
        if models_raw.get_ref().is_empty() {
            self.error(
                Diagnostic::error("invalid-value", format!("`{}` is empty", key("models")))
                    .at(models_raw.span(), "")
                    .help("name at least one model, such as models = [\"llama3-8b\", \"llama3\"]"),
            );
        }
        for model in models_raw.get_ref() {
            let text = model.get_ref();
            if text.trim().is_empty() || text.chars().any(char::is_control) || text != text.trim() {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`{}`: {text:?} is not a model name", key("models")),
                    )
                    .at(model.span(), "")
                    .help("a model name is the text clients send as `model`, with no surrounding spaces"),
                );
            } else if models.iter().any(|(m, _)| m == text) {
                self.error(
                    Diagnostic::error(
                        "duplicate",
                        format!("`{}` lists `{text}` twice", key("models")),
                    )
                    .at(model.span(), "")
                    .help("remove one of them"),
                );
            } else {
                models.push((text.clone(), model.span()));
            }
        }
        let upstream = match &raw.upstream {
            Some(text) => self.upstream(&key("upstream"), text),
            None => match (port, proxy_upstream) {
                (Some(AssignedPort::Fixed(port)), _) => Some(Upstream {
                    host: "127.0.0.1".to_owned(),
                    port: Some(port),
                }),
                (Some(AssignedPort::Auto), _) => Some(Upstream {
                    host: "127.0.0.1".to_owned(),
                    port: None,
                }),
                (None, Some(address)) => Some(Upstream {
                    host: address.ip().to_string(),
                    port: Some(address.port()),
                }),
                (None, None) => {
                    self.error(
                        Diagnostic::error(
                            "missing-key",
                            format!("`services.{name}` serves models but says nowhere to send them"),
                        )
                        .at(models_raw.span(), "")
                        .also(table_span, "")
                        .help("add upstream = \"127.0.0.1:8000\", or port = \"auto\" and use {port} in the command"),
                    );
                    None
                }
            },
        };
        let max_concurrent = raw
            .max_concurrent
            .as_ref()
            .map(|value| self.count(&key("max-concurrent"), Some(value), 1..1_000_001, 1) as usize);
        let max_queued = self.count(
            &key("max-queued"),
            raw.max_queued.as_ref(),
            // Every request is counted while it is let in, even one served at once.
            1..1_000_001,
            defaults::ROUTE_MAX_QUEUED as i64,
        ) as usize;
        let (pool, memory) = match member {
            Some((pool, memory)) => (Some(pool), memory),
            None => (None, None),
        };
        let route = RouteRef {
            models: models.clone(),
            pool,
            memory,
        };
        let routing = upstream.map(|upstream| Routing {
            models: models.into_iter().map(|(m, _)| m).collect(),
            upstream,
            max_concurrent,
            max_queued,
        });
        (routing, Some(route))
    }

    /// `upstream = "127.0.0.1:8000"`, `"127.0.0.1:{port}"` or with `http://` before it.
    fn upstream(&mut self, key: &str, text: &Spanned<String>) -> Option<Upstream> {
        let written = text.get_ref().trim();
        let bare = written
            .strip_prefix("http://")
            .unwrap_or(written)
            .trim_end_matches('/');
        if bare.contains('/') || written.starts_with("https://") {
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!("`{key}` is \"{written}\": the router needs a host and port"),
                )
                .at(text.span(), "")
                .help("write \"127.0.0.1:8000\" (plain HTTP; the request's own path is kept)"),
            );
            return None;
        }
        let templated = bare.contains(PORT_PLACEHOLDER);
        let (host, port) = values::host_port(&bare.replace(PORT_PLACEHOLDER, "1"))
            .map_err(|problem| self.invalid(key, text.span(), problem))
            .ok()?;
        Some(Upstream {
            host,
            port: (!templated).then_some(port),
        })
    }

    /// `pool` and `memory`, with their places.
    #[allow(clippy::type_complexity)]
    fn membership(
        &mut self,
        name: &str,
        raw: &RawService,
    ) -> Option<((String, Range<usize>), Option<(u64, Range<usize>)>)> {
        let memory = raw.memory.as_ref().and_then(|text| {
            values::size(text.get_ref())
                .map(|bytes| (bytes, text.span()))
                .map_err(|problem| {
                    self.invalid(&format!("services.{name}.memory"), text.span(), problem)
                })
                .ok()
        });
        match (&raw.pool, &raw.memory) {
            (Some(pool), _) => Some(((pool.get_ref().clone(), pool.span()), memory)),
            // A `group` that names no Unix group already said to write `pool`.
            (None, Some(_)) if super::process::group_is_not_a_unix_group(raw) => None,
            (None, Some(text)) => {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`services.{name}.memory` needs a `pool` to count against"),
                    )
                    .at(text.span(), "")
                    .help("add pool = \"gpu0\" and declare [pools.gpu0] capacity = \"24GiB\""),
                );
                None
            }
            (None, None) => None,
        }
    }

    /// Across services: each model routed once, pools that exist, members that fit,
    /// and a router for the models.
    pub(super) fn routes_across(
        &mut self,
        drafts: &[Draft],
        router: Option<&RouterSettings>,
        router_span: Option<Range<usize>>,
        pools: &PoolsRef,
    ) {
        let mut served: BTreeMap<&str, (&str, Range<usize>)> = BTreeMap::new();
        let mut any_models = None;
        for draft in drafts {
            let Some(route) = &draft.route else { continue };
            for (model, span) in &route.models {
                any_models.get_or_insert(span.clone());
                if let Some((other, first)) = served.get(model.as_str()) {
                    self.error(
                        Diagnostic::error(
                            "duplicate",
                            format!(
                                "model `{model}` is served by both `{other}` and `{}`",
                                draft.name
                            ),
                        )
                        .at(span.clone(), "")
                        .also(first.clone(), "first here")
                        .help("a model name routes to one service: rename one of them"),
                    );
                } else {
                    served.insert(model, (&draft.name, span.clone()));
                }
            }
            let Some((pool_name, pool_span)) = &route.pool else {
                continue;
            };
            let Some((pool, _)) = pools.get(pool_name) else {
                let help = match suggest::nearest(pool_name, pools.keys().map(String::as_str)) {
                    Some(near) => format!("did you mean \"{near}\"?"),
                    None => format!(
                        "declare it: [pools.{pool_name}] capacity = \"24GiB\" (or exclusive = true)"
                    ),
                };
                self.error(
                    Diagnostic::error(
                        "unknown-pool",
                        format!(
                            "`services.{}.pool`: there is no pool `{pool_name}`",
                            draft.name
                        ),
                    )
                    .at(pool_span.clone(), "")
                    .help(help),
                );
                continue;
            };
            match (pool.budget, &route.memory) {
                (Budget::Capacity(_), None) => self.error(
                    Diagnostic::error(
                        "missing-key",
                        format!(
                            "`services.{}` is in pool `{pool_name}`, which has a capacity, but declares no `memory`",
                            draft.name
                        ),
                    )
                    .at(pool_span.clone(), "")
                    .help("say what it holds while it runs: memory = \"8GiB\""),
                ),
                (Budget::Capacity(capacity), Some((memory, span))) if *memory > capacity => self
                    .error(
                        Diagnostic::error(
                            "never-fits",
                            format!(
                                "`services.{}` needs {} but pool `{pool_name}` holds {} in all: it could never run",
                                draft.name,
                                values::human_size(*memory),
                                values::human_size(capacity)
                            ),
                        )
                        .at(span.clone(), "")
                        .help("lower its `memory`, or raise the pool's `capacity`"),
                    ),
                _ => {}
            }
        }
        // Members that start with `muster up` must fit together.
        for (pool_name, (pool, span)) in pools {
            let at_boot: Vec<(&str, u64)> = drafts
                .iter()
                .filter_map(|draft| {
                    let service = draft.service.as_ref()?;
                    let member = service.member.as_ref().filter(|m| &m.pool == pool_name)?;
                    service
                        .autostart
                        .then(|| (draft.name.as_str(), pool.budget.cost(member)))
                })
                .collect();
            let needed: u64 = at_boot.iter().map(|(_, cost)| cost).sum();
            if needed > pool.budget.limit() {
                let names: Vec<String> = at_boot.iter().map(|(n, _)| format!("`{n}`")).collect();
                let needs = match pool.budget {
                    Budget::Exclusive => format!("{} members", at_boot.len()),
                    Budget::Capacity(_) => values::human_size(needed),
                };
                self.warn(
                    Diagnostic::warning(
                        "over-budget",
                        format!(
                            "pool `{pool_name}` cannot hold what starts with `muster up`: {} need {needs}",
                            names.join(", ")
                        ),
                    )
                    .at(span.clone(), "")
                    .help("set autostart = false on the members the router should start on demand"),
                );
            }
        }
        if let (Some(span), None) = (any_models, router) {
            self.error(
                Diagnostic::error(
                    "missing-router",
                    "services declare `models` but there is no [router] to route them",
                )
                .at(span, "")
                .help("add:\n[router]\nlisten = \"127.0.0.1:8080\""),
            );
        }
        if let (Some(span), true) = (router_span, served.is_empty()) {
            self.warn(
                Diagnostic::warning(
                    "no-effect",
                    "[router] routes no model: no service declares `models`",
                )
                .at(span, "")
                .help("list what a service serves: models = [\"llama3\"]"),
            );
        }
    }
}
