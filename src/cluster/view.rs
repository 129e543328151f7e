//! What every host published, read back: the documents of `muster cluster` and `muster
//! status --cluster` (`GET /v1/cluster`, `GET /v1/cluster/services`), and the
//! follower that keeps every live host's record in `Fences::peers` for cross-host
//! dependencies, `ensure` and the proxy.
//!
//! The documents are read from etcd when asked (two range requests), not from the
//! follower's copy: a user asking wants what etcd says now. Remote phases stay text,
//! since another host may run another version of muster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::Keys;
use super::etcd::{Change, Etcd, EtcdError};
use crate::config::ClusterSettings;
use crate::fence::{Fences, Peers};

/// `GET /v1/cluster`: the hosts and the singletons of this host's cluster.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterView {
    /// The cluster's name (`cluster.name`).
    pub cluster: String,
    /// The host that answered.
    pub host: String,
    /// Every host that ever joined, by name.
    pub hosts: Vec<HostView>,
    /// Every singleton some host competes for (or owns), by name.
    pub singletons: Vec<SingletonView>,
    /// Requests this host's muster sent to etcd since it started (a watch counts once).
    pub etcd_requests: u64,
}

/// One host of the cluster.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostView {
    pub name: String,
    /// Where other hosts reach its services (`cluster.advertise`).
    pub address: String,
    /// Whether its lease is alive (its muster runs and reaches etcd).
    pub alive: bool,
    /// Its supervisor's pid, while alive.
    pub pid: Option<u32>,
}

/// One singleton and its owner.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SingletonView {
    pub name: String,
    /// The host that owns it; none while no host does.
    pub owner: Option<String>,
    /// The owner key's revision, given to the instance as `MUSTER_FENCE`.
    pub fence: Option<i64>,
    /// Where it is reached (`address:port`).
    pub endpoint: Option<String>,
    /// Its state on its owner (`healthy`, `starting`, ...), or `no-owner`.
    pub state: String,
}

/// Where a singleton runs: `ensure`'s answer for one, from any host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Placement {
    /// The owner host.
    pub host: String,
    /// Where it is reached (`address:port`), when it has a port.
    pub endpoint: Option<String>,
    /// The owner key's revision (`MUSTER_FENCE`).
    pub fence: i64,
    /// Whether the owner is the host that answered.
    pub here: bool,
}

/// `GET /v1/cluster/services`: every live host's services.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClusterServices {
    pub cluster: String,
    /// The host that answered.
    pub host: String,
    pub hosts: Vec<HostServices>,
}

/// One host's services, as it last published them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostServices {
    pub host: String,
    pub address: String,
    pub alive: bool,
    pub services: Vec<RemoteService>,
}

/// A service as its host published it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RemoteService {
    pub name: String,
    /// `healthy`, `pending`, ...
    pub state: String,
    /// Its current (or last) run on that host.
    pub run_id: u64,
    pub pid: Option<u32>,
    pub singleton: bool,
    /// Where other hosts reach it, when it has a port.
    pub endpoint: Option<String>,
}

/// The records under `prefix`, by the last part of their key.
fn by_name(kvs: &[super::etcd::Kv], prefix: &str) -> BTreeMap<String, (Value, i64)> {
    kvs.iter()
        .filter_map(|kv| {
            let name = kv.key.strip_prefix(prefix)?.to_owned();
            let value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            Some((name, (value, kv.create_revision)))
        })
        .collect()
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

/// Reads the hosts (live and known) and the singletons.
pub async fn cluster(etcd: &Etcd, settings: &ClusterSettings) -> Result<ClusterView, EtcdError> {
    let keys = Keys::new(&settings.name);
    let (live, known) = hosts(etcd, &keys).await?;
    let (owners, _) = etcd.range(&keys.singletons(), true).await?;
    let owners = by_name(&owners, &keys.singletons());
    let mut hosts: BTreeMap<String, HostView> = known
        .iter()
        .map(|(name, (record, _))| {
            (
                name.clone(),
                HostView {
                    name: name.clone(),
                    address: text(&record["advertise"]).unwrap_or_default(),
                    alive: false,
                    pid: None,
                },
            )
        })
        .collect();
    for (name, (record, _)) in &live {
        hosts.insert(
            name.clone(),
            HostView {
                name: name.clone(),
                address: text(&record["advertise"]).unwrap_or_default(),
                alive: true,
                pid: record["pid"].as_u64().map(|p| p as u32),
            },
        );
    }
    // Every singleton a live host declares, owned or not, and every owned one.
    let mut singletons: BTreeMap<String, SingletonView> = BTreeMap::new();
    for (record, _) in live.values() {
        let Some(services) = record["services"].as_object() else {
            continue;
        };
        for (name, service) in services {
            if service["singleton"].as_bool() == Some(true) {
                singletons.entry(name.clone()).or_insert(SingletonView {
                    name: name.clone(),
                    owner: None,
                    fence: None,
                    endpoint: None,
                    state: "no-owner".to_owned(),
                });
            }
        }
    }
    for (name, (owner, fence)) in owners {
        let host = text(&owner["host"]);
        let state = host
            .as_ref()
            .and_then(|host| live.get(host))
            .and_then(|(record, _)| text(&record["services"][&name]["phase"]))
            .unwrap_or_else(|| "unknown".to_owned());
        singletons.insert(
            name.clone(),
            SingletonView {
                name,
                owner: host,
                fence: Some(fence),
                endpoint: text(&owner["endpoint"]),
                state,
            },
        );
    }
    Ok(ClusterView {
        cluster: settings.name.clone(),
        host: settings.host.clone(),
        hosts: hosts.into_values().collect(),
        singletons: singletons.into_values().collect(),
        etcd_requests: etcd.requests.load(std::sync::atomic::Ordering::Relaxed),
    })
}

type Records = BTreeMap<String, (Value, i64)>;

async fn hosts(etcd: &Etcd, keys: &Keys) -> Result<(Records, Records), EtcdError> {
    let (live, _) = etcd.range(&keys.hosts(), true).await?;
    let (known, _) = etcd.range(&keys.known_hosts(), true).await?;
    Ok((
        by_name(&live, &keys.hosts()),
        by_name(&known, &keys.known_hosts()),
    ))
}

/// Every host's services: live hosts with what they published, gone ones empty.
pub async fn services(
    etcd: &Etcd,
    settings: &ClusterSettings,
) -> Result<ClusterServices, EtcdError> {
    let keys = Keys::new(&settings.name);
    let (live, known) = hosts(etcd, &keys).await?;
    let mut hosts: BTreeMap<String, HostServices> = known
        .iter()
        .map(|(name, (record, _))| {
            (
                name.clone(),
                HostServices {
                    host: name.clone(),
                    address: text(&record["advertise"]).unwrap_or_default(),
                    alive: false,
                    services: Vec::new(),
                },
            )
        })
        .collect();
    for (name, (record, _)) in &live {
        hosts.insert(
            name.clone(),
            HostServices {
                host: name.clone(),
                address: text(&record["advertise"]).unwrap_or_default(),
                alive: true,
                services: published(record),
            },
        );
    }
    Ok(ClusterServices {
        cluster: settings.name.clone(),
        host: settings.host.clone(),
        hosts: hosts.into_values().collect(),
    })
}

/// The services of one host's record.
pub fn published(record: &Value) -> Vec<RemoteService> {
    record["services"]
        .as_object()
        .map(|services| {
            services
                .iter()
                .map(|(name, service)| RemoteService {
                    name: name.clone(),
                    state: text(&service["phase"]).unwrap_or_else(|| "unknown".to_owned()),
                    run_id: service["run"].as_u64().unwrap_or(0),
                    pid: service["pid"].as_u64().map(|p| p as u32),
                    singleton: service["singleton"].as_bool().unwrap_or(false),
                    endpoint: text(&service["endpoint"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Keeps `fences.peers` equal to the live hosts' records: a read, then a watch from
/// the revision read; read again when the watch ends, and every half minute in case
/// it ended without a word. Until etcd answers, `peers` stays as it was.
pub async fn follow_peers(
    etcd: Arc<Etcd>,
    keys: Keys,
    fences: Arc<Fences>,
    mut closing: tokio::sync::watch::Receiver<bool>,
) {
    let prefix = keys.hosts();
    loop {
        if *closing.borrow() {
            return;
        }
        let (kvs, revision) = match etcd.range(&prefix, true).await {
            Ok(read) => read,
            Err(_) => {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = closing.changed() => {}
                }
                continue;
            }
        };
        let mut peers: Peers = by_name(&kvs, &prefix)
            .into_iter()
            .map(|(name, (record, _))| (name, record))
            .collect();
        fences.peers.send_replace(Some(Arc::new(peers.clone())));
        let Ok(mut changes) = etcd.watch(&prefix, true, revision + 1).await else {
            continue;
        };
        let resync = tokio::time::sleep(Duration::from_secs(30));
        tokio::pin!(resync);
        loop {
            tokio::select! {
                batch = changes.recv() => {
                    let Some(batch) = batch else { break };
                    for change in batch {
                        match change {
                            Change::Put(kv) => {
                                if let Some(name) = kv.key.strip_prefix(&prefix) {
                                    let record = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                                    peers.insert(name.to_owned(), record);
                                }
                            }
                            Change::Delete { key, .. } => {
                                if let Some(name) = key.strip_prefix(&prefix) {
                                    peers.remove(name);
                                }
                            }
                        }
                    }
                    fences.peers.send_replace(Some(Arc::new(peers.clone())));
                }
                () = &mut resync => break,
                _ = closing.changed() => return,
            }
        }
    }
}
