//! Checks across services: dependencies that exist and can be met, cycles with their
//! paths, ports claimed twice, stop timeouts the shutdown would cut short, and
//! "healthy" waits on services that have no way to prove it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::time::Duration;

use toml::Spanned;

use super::{Draft, Validator};
use crate::config::spec::{Condition, Port, RestartPolicy, ServiceName};
use crate::diagnostic::Diagnostic;
use crate::graph;

impl Validator<'_> {
    /// Unknown and self dependencies, and `completed` on what cannot complete. Fills
    /// each valid service's `depends_on` with what survived.
    pub(super) fn dependencies(
        &mut self,
        drafts: &[Draft],
        known: &BTreeSet<String>,
    ) -> Vec<Vec<usize>> {
        let index: BTreeMap<&str, usize> = drafts
            .iter()
            .enumerate()
            .map(|(i, d)| (d.name.as_str(), i))
            .collect();
        let mut edges = vec![Vec::new(); drafts.len()];
        for (i, draft) in drafts.iter().enumerate() {
            let mut seen = BTreeMap::new();
            for dep in &draft.deps {
                if let Some(first) = seen.insert(dep.name.as_str(), dep.span.clone()) {
                    self.error(
                        Diagnostic::error(
                            "duplicate-dependency",
                            format!(
                                "service `{}` lists `{}` twice in `depends-on`",
                                draft.name, dep.name
                            ),
                        )
                        .at(dep.span.clone(), "again")
                        .also(first, "first here")
                        .help("remove one of them"),
                    );
                    continue;
                }
                if dep.name == draft.name {
                    self.error(
                        Diagnostic::error(
                            "self-dependency",
                            format!("service `{}` depends on itself", draft.name),
                        )
                        .at(dep.span.clone(), "")
                        .help(format!("remove `{}` from its `depends-on`", dep.name)),
                    );
                    continue;
                }
                let Some(&target) = index.get(dep.name.as_str()) else {
                    if !known.contains(&dep.name) {
                        let spanned = Spanned::new(dep.span.clone(), dep.name.clone());
                        self.unknown_service(
                            &format!("service `{}` depends on", draft.name),
                            &spanned,
                            known,
                        );
                    }
                    continue;
                };
                let target_draft = &drafts[target];
                if dep.condition == Condition::Completed
                    && target_draft.restart == RestartPolicy::Always
                {
                    let mut diagnostic = Diagnostic::error(
                        "never-completes",
                        format!(
                            "service `{}` waits for `{}` to complete, but `{}` restarts always and never completes",
                            draft.name, dep.name, dep.name
                        ),
                    )
                    .at(dep.span.clone(), "waits for `completed`")
                    .help(format!(
                        "wait for `{}` to be \"healthy\" or \"started\", or give `{}` restart = \"on-failure\"",
                        dep.name, dep.name
                    ));
                    if let Some(span) = &target_draft.restart_span {
                        diagnostic =
                            diagnostic.also(span.clone(), "restarts even after a clean exit");
                    }
                    self.error(diagnostic);
                }
                edges[i].push(target);
            }
        }
        edges
    }

    /// The start waves, or every cycle reported with its path.
    pub(super) fn waves(
        &mut self,
        drafts: &[Draft],
        edges: &[Vec<usize>],
    ) -> Option<Vec<Vec<ServiceName>>> {
        if let Ok(waves) = graph::waves(edges) {
            return Some(
                waves
                    .into_iter()
                    .map(|wave| {
                        wave.into_iter()
                            .filter_map(|i| drafts[i].valid_name.clone())
                            .collect()
                    })
                    .collect(),
            );
        }
        for cycle in graph::cycles(edges) {
            let path = cycle
                .iter()
                .map(|&i| drafts[i].name.as_str())
                .collect::<Vec<_>>()
                .join(" -> ");
            let mut diagnostic = Diagnostic::error("cycle", format!("dependency cycle: `{path}`"))
                .help("a service cannot start before itself: remove one of these dependencies");
            for (n, pair) in cycle.windows(2).enumerate() {
                let (from, to) = (&drafts[pair[0]], &drafts[pair[1]]);
                let Some(dep) = from.deps.iter().find(|d| d.name == to.name) else {
                    continue;
                };
                let label = format!("`{}` depends on `{}`", from.name, to.name);
                diagnostic = if n == 0 {
                    diagnostic.at(dep.span.clone(), label)
                } else {
                    diagnostic.also(dep.span.clone(), label)
                };
            }
            self.error(diagnostic);
        }
        None
    }

    /// Two declarations of one port, or a proxy listening where a service does.
    pub(super) fn port_clashes(&mut self, drafts: &[Draft]) {
        #[derive(PartialEq)]
        enum Kind {
            Declared,
            Listen,
            Upstream,
        }
        struct Claim<'a> {
            port: Port,
            span: Range<usize>,
            what: String,
            owner: &'a str,
            kind: Kind,
        }
        let mut claims: Vec<Claim> = Vec::new();
        for draft in drafts {
            for (port, span) in &draft.ports {
                let what = format!("port {port} of `{}`", draft.name);
                claims.push(Claim {
                    port: *port,
                    span: span.clone(),
                    what,
                    owner: &draft.name,
                    kind: Kind::Declared,
                });
            }
            if let Some(proxy) = &draft.proxy {
                let mut add = |(addr, span): &(SocketAddr, Range<usize>), kind: Kind| {
                    let role = if kind == Kind::Listen {
                        "listen"
                    } else {
                        "upstream"
                    };
                    claims.push(Claim {
                        port: Port {
                            ip: Some(addr.ip()),
                            port: addr.port(),
                        },
                        span: span.clone(),
                        what: format!("the proxy {role} {addr} of `{}`", draft.name),
                        owner: &draft.name,
                        kind,
                    });
                };
                add(&proxy.listen, Kind::Listen);
                // Port 0: the run's own `{port}`, chosen free at each start.
                if let Some(upstream) = proxy.upstream.as_ref().filter(|u| u.0.port() != 0) {
                    add(upstream, Kind::Upstream);
                }
            }
        }
        for (j, later) in claims.iter().enumerate() {
            // A service declaring the port its own proxy forwards to is the normal case.
            // The instances of a service with `replicas` share its proxy's listener.
            let set = |owner: &str| {
                owner
                    .split_once('.')
                    .map_or(owner, |(set, _)| set)
                    .to_owned()
            };
            let compatible = |earlier: &Claim| {
                (earlier.owner == later.owner
                    && matches!(
                        (&earlier.kind, &later.kind),
                        (Kind::Declared, Kind::Upstream) | (Kind::Upstream, Kind::Declared)
                    ))
                    || (earlier.kind == Kind::Listen
                        && later.kind == Kind::Listen
                        && earlier.owner.contains('.')
                        && set(earlier.owner) == set(later.owner))
            };
            let Some(earlier) = claims[..j]
                .iter()
                .find(|c| c.port.overlaps(&later.port) && !compatible(c))
            else {
                continue;
            };
            let help = if later.kind == Kind::Listen || earlier.kind == Kind::Listen {
                "clients connect to the proxy's `listen`; the service itself must listen elsewhere, on the proxy's `upstream`"
            } else if earlier.owner == later.owner {
                "remove the duplicate"
            } else {
                "give each service its own port"
            };
            self.error(
                Diagnostic::error(
                    "port-clash",
                    format!("{} clashes with {}", later.what, earlier.what),
                )
                .at(later.span.clone(), "")
                .also(earlier.span.clone(), "already claimed here")
                .help(help),
            );
        }
    }

    /// A service whose `stop-timeout` is longer than the whole shutdown may take: on
    /// shutdown, what is still running at `shutdown-timeout` is killed, so it never
    /// gets the time its `stop-timeout` promises. A warning: `muster stop` and restarts
    /// do honour the full `stop-timeout`.
    pub(super) fn stop_outlasts_shutdown(
        &mut self,
        drafts: &[Draft],
        shutdown: Duration,
        shutdown_span: Option<Range<usize>>,
    ) {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        for draft in drafts {
            let (Some(service), Some(span)) = (&draft.service, &draft.stop_timeout_span) else {
                continue;
            };
            if service.stop_timeout <= shutdown {
                continue;
            }
            let (stop, all) = (human(service.stop_timeout), human(shutdown));
            let setting = if shutdown_span.is_some() {
                format!("`settings.shutdown-timeout` ({all})")
            } else {
                format!("`settings.shutdown-timeout` (default {all})")
            };
            let mut diagnostic = Diagnostic::warning(
                "stop-outlasts-shutdown",
                format!(
                    "`services.{}.stop-timeout` ({stop}) is longer than {setting}",
                    draft.name
                ),
            )
            .at(span.clone(), format!("`{}` may take {stop} to stop", draft.name))
            .note(format!(
                "when muster shuts down, whatever still runs after {all} is killed with SIGKILL, so `{}` gets at most {all} of its {stop}",
                draft.name
            ))
            .help(format!(
                "raise `settings.shutdown-timeout` to at least {stop}, or shorten `stop-timeout`"
            ));
            if let Some(shutdown_span) = &shutdown_span {
                diagnostic = diagnostic.also(shutdown_span.clone(), "the whole shutdown's limit");
            }
            self.warn(diagnostic);
        }
    }

    /// A note for each service others wait on to be `healthy` that has nothing to prove
    /// it: no `ready` probe and no `wait-for-ports`. It is healthy the moment it is
    /// spawned, which is rarely what "wait until the database is healthy" means.
    pub(super) fn healthy_without_probe(&mut self, drafts: &[Draft]) {
        for target in drafts {
            let Some(service) = &target.service else {
                continue;
            };
            if service.ready.is_some() || service.wait_for_ports {
                continue;
            }
            let waiting: Vec<(&str, Range<usize>)> = drafts
                .iter()
                .flat_map(|d| {
                    d.deps
                        .iter()
                        .filter(|dep| {
                            dep.name == target.name && dep.condition == Condition::Healthy
                        })
                        .map(|dep| (d.name.as_str(), dep.span.clone()))
                })
                .collect();
            if waiting.is_empty() {
                continue;
            }
            let name = &target.name;
            let probe = match service.ports.first() {
                Some(port) => {
                    let ip = match port.ip {
                        Some(ip) if !ip.is_unspecified() => ip,
                        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    };
                    format!(
                        "ready = {{ tcp = \"{}\" }} (or wait-for-ports = true)",
                        SocketAddr::new(ip, port.port)
                    )
                }
                None => {
                    "ready = { tcp = \"127.0.0.1:PORT\" } (or http, exec, log or notify)".to_owned()
                }
            };
            let mut diagnostic = Diagnostic::remark(
                "healthy-without-probe",
                format!(
                    "`{name}` has no `ready` probe, so it counts as healthy as soon as it is spawned"
                ),
            )
            .at(target.name_span.clone(), "no `ready` probe")
            .help(format!(
                "give `{name}` a probe so that what depends on it waits until it can serve: {probe}; \
                 if being spawned is enough, say so with depends-on = {{ {name} = \"started\" }}"
            ));
            for (dependent, span) in &waiting {
                diagnostic = diagnostic.also(
                    span.clone(),
                    format!("`{dependent}` waits for `{name}` to be healthy"),
                );
            }
            self.warn(diagnostic);
        }
    }
}
