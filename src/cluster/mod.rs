//! `[cluster]`: this host's membership in etcd and the singletons it competes for.
//!
//! Keys, all under `/muster/CLUSTER/` so that clusters sharing one etcd stay apart:
//! `hosts/HOST` (this host's record: address, pid, its services' state; bound to the
//! host's lease, so it vanishes with the host) and `singletons/SERVICE` (the owner:
//! host, endpoint; bound to the owner's lease; its create revision is the fence), and
//! `known/HOST` (no lease: the host's address, so a host that is gone is listed as
//! not alive rather than forgotten).
//!
//! [`member`] keeps the lease and the host record; [`singleton`] runs one task per
//! singleton of the config; [`view`] reads what every host published, for `muster
//! cluster` and `status --cluster`. What the supervisor needs to know (who owns what,
//! until when) goes through `crate::fence`, which the supervisor reads.

pub mod ensure;
pub mod etcd;
pub mod member;
pub mod singleton;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{ClusterSettings, Spec};
use crate::supervisor::Supervisor;

/// The keys of one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Self {
        Self {
            prefix: format!("/muster/{cluster}/"),
        }
    }
    pub fn hosts(&self) -> String {
        format!("{}hosts/", self.prefix)
    }
    pub fn host(&self, host: &str) -> String {
        format!("{}hosts/{host}", self.prefix)
    }
    /// Every host that ever joined (no lease: a host that is gone stays listed).
    pub fn known_hosts(&self) -> String {
        format!("{}known/", self.prefix)
    }
    pub fn known_host(&self, host: &str) -> String {
        format!("{}known/{host}", self.prefix)
    }
    pub fn singletons(&self) -> String {
        format!("{}singletons/", self.prefix)
    }
    pub fn singleton(&self, service: &str) -> String {
        format!("{}singletons/{service}", self.prefix)
    }
}

/// How long one request to one etcd member may take: a third of the keepalive
/// interval, so that a dead member and a retry at the next still fit in it.
pub fn attempt_timeout(ttl: Duration) -> Duration {
    (ttl / 9).clamp(Duration::from_millis(200), Duration::from_secs(2))
}

/// A client for `settings`, counting its requests in `fences.requests`.
pub fn client(settings: &ClusterSettings, fences: &crate::fence::Fences) -> etcd::Etcd {
    etcd::Etcd::new(
        settings.etcd.clone(),
        attempt_timeout(settings.lease_ttl),
        Arc::clone(&fences.requests),
    )
}

/// Joins the cluster: takes this host's name (refused, naming the live muster that
/// holds it, when etcd says it is taken) and starts the membership and singleton
/// tasks. When etcd cannot be reached, local services run and singletons wait; the
/// name is checked once it can.
pub async fn start(supervisor: Arc<Supervisor>, spec: &Spec) -> Result<(), String> {
    let (Some(settings), Some(fences)) = (spec.cluster.clone(), supervisor.fences()) else {
        return Ok(());
    };
    let _ = fences.host.set(settings.host.clone());
    let etcd = Arc::new(client(&settings, &fences));
    let member = member::Member::new(Arc::clone(&etcd), settings.clone(), Arc::clone(&fences));
    let lease = member::start(member, Arc::clone(&supervisor)).await?;
    tokio::spawn(view::follow_peers(
        Arc::clone(&etcd),
        Keys::new(&settings.name),
        Arc::clone(&fences),
        supervisor.closing(),
    ));
    for service in spec.services.values() {
        if let Some(role) = &service.singleton {
            tokio::spawn(singleton::run(singleton::Context {
                etcd: Arc::clone(&etcd),
                settings: settings.clone(),
                fences: Arc::clone(&fences),
                supervisor: Arc::clone(&supervisor),
                lease: lease.clone(),
                name: service.name.clone(),
                candidate: role.is_candidate(&settings.host),
                endpoint: endpoint(service, &settings.advertise),
            }));
        }
    }
    Ok(())
}

/// Where other hosts reach `service` on this host: the advertised address and the
/// port its clients use (the proxy's upstream, its fixed `port`, its first declared
/// port).
pub fn endpoint(service: &crate::config::Service, advertise: &str) -> Option<String> {
    let port = service
        .proxy
        .as_ref()
        .map(|p| p.upstream.port())
        .or(match service.port {
            Some(crate::config::AssignedPort::Fixed(port)) => Some(port),
            _ => None,
        })
        .or(service.ports.first().map(|p| p.port))?;
    Some(if advertise.contains(':') && !advertise.starts_with('[') {
        format!("[{advertise}]:{port}")
    } else {
        format!("{advertise}:{port}")
    })
}
