//! Dependencies that another host may meet (`[cluster]`): a singleton, wherever it
//! runs, and `NAME@HOST`, a service of one other host. Each becomes a status channel
//! like a local service's, fed from the ownership table and the peers' records in
//! `crate::fence`, so that a gate waits for it with the same conditions as for any
//! dependency. And, at each spawn, their endpoints for the dependent's environment.
//!
//! Another host's failure never fails a dependent here: that host may restart it, or
//! (a singleton) another host takes it over. The dependent waits, and says for what.

use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;
use tokio::sync::watch;

use super::Phase;
use super::status::Status;
use crate::config::{RemoteDependency, Service, ServiceName};
use crate::fence::{Fences, Ownership, Peers};

/// Where a dependency is met.
#[derive(Debug)]
pub enum Source {
    /// A singleton of this config: on this host while it owns it (`local`), else on
    /// its owner.
    Singleton { local: watch::Receiver<Status> },
    /// A service of the named host.
    Host(String),
}

fn blank(name: &ServiceName, phase: Phase, reason: String) -> Status {
    Status {
        service: name.clone(),
        phase,
        reason,
        blocked_by: None,
        pid: None,
        run_id: 0,
        restarts: 0,
        since: SystemTime::now(),
        last_exit: None,
        notify_status: None,
        notify_state: None,
        main_pid: None,
        probe_failures: 0,
        last_probe: None,
        port: None,
        transitions: 0,
        refused_demands: 0,
    }
}

/// `name` as `host` published it, or why it cannot be known.
fn published(peers: Option<&Peers>, host: &str, name: &ServiceName) -> Status {
    let Some(peers) = peers else {
        return blank(
            name,
            Phase::Pending,
            "etcd has not been read yet".to_owned(),
        );
    };
    let Some(record) = peers.get(host) else {
        return blank(
            name,
            Phase::Pending,
            format!(
                "no host `{host}` is in the cluster (not joined yet, gone, or a misspelt name)"
            ),
        );
    };
    let service = &record["services"][name.as_str()];
    let Some(phase) = service["phase"]
        .as_str()
        .and_then(|text| Phase::ALL.into_iter().find(|p| p.as_str() == text))
    else {
        return blank(
            name,
            Phase::Pending,
            format!("host `{host}` has no service `{name}`"),
        );
    };
    // Its failure is that host's to deal with: here it is something to wait for.
    let (phase, reason) = match phase {
        Phase::Failed => (
            Phase::Pending,
            format!("it failed on host `{host}`; waiting for it to run again"),
        ),
        phase => (phase, format!("{phase} on host `{host}`")),
    };
    let mut status = blank(name, phase, reason);
    // Run numbers are that host's; a dependency's status must count as a run.
    status.run_id = service["run"].as_u64().unwrap_or(0).max(1);
    status.pid = service["pid"].as_u64().map(|p| p as u32);
    status
}

fn current(
    name: &ServiceName,
    source: &mut Source,
    ownership: &mut Option<watch::Receiver<Ownership>>,
    peers: &mut watch::Receiver<Option<Arc<Peers>>>,
) -> Status {
    let known = peers.borrow_and_update().clone();
    match source {
        Source::Host(host) => published(known.as_deref(), host, name),
        Source::Singleton { local } => {
            let owned = ownership
                .as_mut()
                .map(|o| o.borrow_and_update().clone())
                .unwrap_or(Ownership::Unknown("etcd has not answered yet".to_owned()));
            match owned {
                Ownership::Here { .. } => local.borrow_and_update().clone(),
                Ownership::Elsewhere { host, fence } => {
                    let mut status = published(known.as_deref(), &host, name);
                    status.reason = format!("{} (singleton, fence {fence})", status.reason);
                    status
                }
                Ownership::Unknown(why) => {
                    let mut status = local.borrow_and_update().clone();
                    // Not running here: what it waits for is ownership.
                    if !status.phase.has_process() {
                        status = blank(name, Phase::Pending, format!("singleton: {why}"));
                    }
                    status
                }
            }
        }
    }
}

/// A status channel for `name` met at `source`, kept current until every receiver is
/// gone.
pub fn follow(
    fences: &Arc<Fences>,
    name: ServiceName,
    mut source: Source,
) -> watch::Receiver<Status> {
    let mut ownership =
        matches!(source, Source::Singleton { .. }).then(|| fences.ownership(name.as_str()));
    let mut peers = fences.peers.subscribe();
    let first = current(&name, &mut source, &mut ownership, &mut peers);
    let (sender, receiver) = watch::channel(first);
    tokio::spawn(async move {
        loop {
            let local = async {
                match &mut source {
                    Source::Singleton { local } => local.changed().await.is_ok(),
                    Source::Host(_) => std::future::pending().await,
                }
            };
            let owned = async {
                match &mut ownership {
                    Some(ownership) => ownership.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let alive = tokio::select! {
                ok = local => ok,
                ok = owned => ok,
                ok = peers.changed() => ok.is_ok(),
                () = sender.closed() => false,
            };
            if !alive {
                return;
            }
            let next = current(&name, &mut source, &mut ownership, &mut peers);
            sender.send_if_modified(|now| {
                let changed = now.phase != next.phase
                    || now.reason != next.reason
                    || now.run_id != next.run_id
                    || now.pid != next.pid;
                if changed {
                    *now = next;
                }
                changed
            });
        }
    });
    receiver
}

/// The environment name part of a dependency: `coordinator` → `COORDINATOR`,
/// `rpc@gpu-b` → `RPC_AT_GPU_B`.
pub fn env_name(label: &str) -> String {
    label
        .replace('@', "_at_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// `MUSTER_DEP_<NAME>_HOST`, `_PORT` and `_ADDR` (`host:port`) for each dependency of
/// `service` that another host may meet and that has an endpoint: a singleton (where
/// it runs now) and each `NAME@HOST`. `_FENCE` too for a singleton.
pub fn environment(service: &Service, fences: &Fences) -> Vec<(String, String)> {
    let peers = fences.peers.borrow().clone();
    let endpoint = |host: &str, name: &str| -> Option<String> {
        let record: &Value = peers.as_deref()?.get(host)?;
        record["services"][name]["endpoint"]
            .as_str()
            .map(str::to_owned)
    };
    let mut found: Vec<(String, String, Option<i64>)> = Vec::new();
    for dep in &service.depends_on {
        let placed = match fences.owned(dep.service.as_str()) {
            Some(Ownership::Here { fence }) => fences
                .host
                .get()
                .and_then(|host| endpoint(host, dep.service.as_str()))
                .map(|e| (e, Some(fence))),
            Some(Ownership::Elsewhere { host, fence }) => {
                endpoint(&host, dep.service.as_str()).map(|e| (e, Some(fence)))
            }
            _ => None,
        };
        if let Some((address, fence)) = placed {
            found.push((env_name(dep.service.as_str()), address, fence));
        }
    }
    for RemoteDependency {
        service: name,
        host,
        ..
    } in &service.remote_deps
    {
        if let Some(address) = endpoint(host, name.as_str()) {
            found.push((env_name(&format!("{name}@{host}")), address, None));
        }
    }
    let mut vars = Vec::new();
    for (label, address, fence) in found {
        let (host, port) = address.rsplit_once(':').unwrap_or((address.as_str(), ""));
        let host = host.trim_start_matches('[').trim_end_matches(']');
        vars.push((format!("MUSTER_DEP_{label}_HOST"), host.to_owned()));
        vars.push((format!("MUSTER_DEP_{label}_PORT"), port.to_owned()));
        vars.push((format!("MUSTER_DEP_{label}_ADDR"), address.clone()));
        if let Some(fence) = fence {
            vars.push((format!("MUSTER_DEP_{label}_FENCE"), fence.to_string()));
        }
    }
    vars
}

#[cfg(test)]
mod tests {
    use super::env_name;

    #[test]
    fn dependency_names_become_environment_names() {
        assert_eq!(env_name("coordinator"), "COORDINATOR");
        assert_eq!(env_name("rpc@gpu-b"), "RPC_AT_GPU_B");
        assert_eq!(env_name("web.0@h.lab"), "WEB_0_AT_H_LAB");
    }
}
