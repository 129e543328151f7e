//! `[cluster]` and the keys of a service that only mean something in a cluster
//! (`singleton`, `hosts`).

use std::collections::BTreeMap;

use toml::Spanned;

use super::{Validator, defaults};
use crate::config::raw::{RawCluster, RawDependsOn, RawService};
use crate::config::spec::{ClusterSettings, Singleton};
use crate::diagnostic::Diagnostic;

/// A host name as the cluster knows it: it becomes a key segment in etcd, so no `/`.
pub fn valid_host(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// This machine's host name, as the kernel has it.
pub fn hostname() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = text.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

impl Validator<'_> {
    pub(super) fn cluster(&mut self, raw: &Spanned<RawCluster>) -> Option<ClusterSettings> {
        let before = self.errors;
        let span = raw.span();
        let raw = raw.get_ref();
        let name = match &raw.name {
            None => {
                self.error(
                    Diagnostic::error("missing-key", "`cluster` has no `name`")
                        .at(span.clone(), "")
                        .help("add name = \"lab\": it keeps this cluster's keys apart from any other cluster sharing the etcd"),
                );
                None
            }
            Some(name) => {
                let text = name.get_ref();
                let ok = !text.is_empty()
                    && text.len() <= 63
                    && text.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
                    });
                if !ok {
                    self.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!("`cluster.name`: `{text}` is not a valid cluster name"),
                        )
                        .at(name.span(), "")
                        .help("use 1 to 63 of a-z, 0-9, `-` and `_`, e.g. name = \"lab\""),
                    );
                }
                Some(text.clone())
            }
        };
        let mut etcd = Vec::new();
        match &raw.etcd {
            None => self.error(
                Diagnostic::error("missing-key", "`cluster` has no `etcd` endpoints")
                    .at(span.clone(), "")
                    .help("add etcd = [\"http://10.0.0.1:2379\", ...]: the client URLs of the etcd members"),
            ),
            Some(list) if list.get_ref().is_empty() => self.error(
                Diagnostic::error("invalid-value", "`cluster.etcd` is empty")
                    .at(list.span(), "")
                    .help("name at least one etcd member, e.g. etcd = [\"http://127.0.0.1:2379\"]"),
            ),
            Some(list) => {
                for url in list.get_ref() {
                    match etcd_url(url.get_ref()) {
                        Ok(url) => etcd.push(url),
                        Err(help) => self.error(
                            Diagnostic::error(
                                "invalid-value",
                                format!("`cluster.etcd`: `{}` is not an etcd client URL", url.get_ref()),
                            )
                            .at(url.span(), "")
                            .help(help),
                        ),
                    }
                }
            }
        }
        let host = match &raw.host {
            Some(host) => {
                if !valid_host(host.get_ref()) {
                    self.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!(
                                "`cluster.host`: `{}` is not a valid host name",
                                host.get_ref()
                            ),
                        )
                        .at(host.span(), "")
                        .help("use letters, digits, `-`, `_` and `.`, e.g. host = \"gpu-a\""),
                    );
                }
                Some(host.get_ref().clone())
            }
            None => match hostname().filter(|h| valid_host(h)) {
                Some(name) => Some(name),
                None => {
                    self.error(
                        Diagnostic::error(
                            "missing-key",
                            "`cluster` has no `host` and this machine's host name cannot be used",
                        )
                        .at(span.clone(), "")
                        .help("add host = \"gpu-a\": the name other hosts know this one by"),
                    );
                    None
                }
            },
        };
        let advertise = match &raw.advertise {
            Some(address)
                if address.get_ref().trim().is_empty() || address.get_ref().contains('/') =>
            {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`cluster.advertise`: `{}` is not an address", address.get_ref()),
                    )
                    .at(address.span(), "")
                    .help("write the address other hosts reach this one at, e.g. advertise = \"10.0.0.11\""),
                );
                None
            }
            Some(address) => Some(address.get_ref().trim().to_owned()),
            None => host.clone(),
        };
        let lease_ttl = self.positive(
            "cluster.lease-ttl",
            raw.lease_ttl.as_ref(),
            defaults::LEASE_TTL,
        );
        if let Some(value) = &raw.lease_ttl
            && !(defaults::LEASE_TTL_MIN..=defaults::LEASE_TTL_MAX).contains(&lease_ttl)
        {
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!(
                        "`cluster.lease-ttl` is {}, it must be from 2s to 1h",
                        humantime::format_duration(lease_ttl)
                    ),
                )
                .at(value.span(), "out of range")
                .help("etcd grants no lease shorter than 2s; the default is 10s"),
            );
        }
        if self.errors != before {
            return None;
        }
        Some(ClusterSettings {
            name: name?,
            etcd,
            host: host?,
            advertise: advertise?,
            lease_ttl,
        })
    }

    /// `singleton` and `hosts` of one service.
    pub(super) fn singleton(
        &mut self,
        key: &dyn Fn(&str) -> String,
        raw: &RawService,
    ) -> Option<Singleton> {
        let singleton = raw.singleton.as_ref().is_some_and(|s| *s.get_ref());
        if let Some(hosts) = &raw.hosts {
            if !singleton {
                self.error(
                    Diagnostic::error(
                        "invalid-value",
                        format!("`{}` is only for a singleton", key("hosts")),
                    )
                    .at(hosts.span(), "")
                    .help("add singleton = true, or remove `hosts`"),
                );
            }
            if hosts.get_ref().is_empty() {
                self.error(
                    Diagnostic::error("invalid-value", format!("`{}` is empty", key("hosts")))
                        .at(hosts.span(), "")
                        .help("name the candidate hosts, or remove `hosts` to let every host of the cluster whose config has the service run it"),
                );
            }
            for host in hosts.get_ref() {
                if !valid_host(host.get_ref()) {
                    self.error(
                        Diagnostic::error(
                            "invalid-value",
                            format!(
                                "`{}`: `{}` is not a valid host name",
                                key("hosts"),
                                host.get_ref()
                            ),
                        )
                        .at(host.span(), "")
                        .help("use letters, digits, `-`, `_` and `.`, as in `cluster.host`"),
                    );
                }
            }
        }
        if singleton && let Some(pidfile) = &raw.pidfile {
            self.error(
                Diagnostic::error(
                    "invalid-value",
                    format!("`{}` cannot be used on a singleton", key("pidfile")),
                )
                .at(pidfile.span(), "")
                .help("a singleton's processes must stay in the group muster starts, so that they go down with it when this host loses the singleton; run the program in the foreground"),
            );
        }
        singleton.then(|| Singleton {
            hosts: raw
                .hosts
                .iter()
                .flat_map(|h| h.get_ref())
                .map(|h| h.get_ref().clone())
                .collect(),
        })
    }

    /// `singleton = true` needs a `[cluster]` to be one across.
    pub(super) fn singletons_need_a_cluster(
        &mut self,
        services: &BTreeMap<Spanned<String>, Spanned<RawService>>,
        has_cluster: bool,
    ) {
        if has_cluster {
            return;
        }
        for (name, raw) in services {
            // `NAME@HOST` in `depends-on` reads what that host publishes in etcd.
            let remote = match raw.get_ref().depends_on.as_ref().map(Spanned::get_ref) {
                Some(RawDependsOn::List(names)) => names
                    .iter()
                    .find(|n| n.get_ref().contains('@'))
                    .map(|n| (n.get_ref().clone(), n.span())),
                Some(RawDependsOn::Table(entries)) => entries
                    .iter()
                    .map(|(n, _)| n)
                    .find(|n| n.get_ref().contains('@'))
                    .map(|n| (n.get_ref().clone(), n.span())),
                None => None,
            };
            if let Some((dep, span)) = remote {
                self.error(
                    Diagnostic::error(
                        "no-cluster",
                        format!(
                            "`services.{}` depends on `{dep}`, a service of another host, but there is no [cluster]",
                            name.get_ref()
                        ),
                    )
                    .at(span, "")
                    .help("add a [cluster] table with name and etcd endpoints, or depend on a service of this file"),
                );
            }
            if let Some(singleton) = &raw.get_ref().singleton
                && *singleton.get_ref()
            {
                self.error(
                    Diagnostic::error(
                        "no-cluster",
                        format!("`services.{}` is a singleton but there is no [cluster]", name.get_ref()),
                    )
                    .at(singleton.span(), "")
                    .help("add a [cluster] table with name and etcd endpoints, or remove singleton = true"),
                );
            }
        }
    }
}

/// `http://host:port` with nothing after it: the gateway's paths are added to it.
fn etcd_url(text: &str) -> Result<String, String> {
    let trimmed = text.trim().trim_end_matches('/');
    let example = "write http://HOST:PORT, e.g. \"http://10.0.0.1:2379\"";
    let Some(rest) = trimmed.strip_prefix("http://") else {
        return Err(if trimmed.starts_with("https://") {
            "muster speaks plain http to etcd; reach it over a private network, e.g. \"http://10.0.0.1:2379\"".to_owned()
        } else {
            example.to_owned()
        });
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(format!("it has no port; {example}"));
    };
    if host.is_empty() || rest.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(example.to_owned());
    }
    Ok(trimmed.to_owned())
}
