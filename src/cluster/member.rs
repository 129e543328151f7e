//! This host's membership: one lease, renewed at a third of its TTL, and the host's
//! record bound to it (`hosts/HOST`: address, pid, its services' state), written when
//! something in it changed.
//!
//! Every acknowledged keepalive moves the fences' deadlines (`crate::fence`) on, from
//! the moment the keepalive was *sent*: etcd renewed the lease no earlier than that, so
//! the lease lives at least until then plus its TTL. The soft deadline (two thirds of
//! the TTL) is when singletons are stopped; the hard one (the TTL less a margin) is
//! when their guards kill what is left.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::Keys;
use super::etcd::{Etcd, EtcdError};
use crate::config::ClusterSettings;
use crate::fence::{Deadlines, Fences, boottime};
use crate::supervisor::Supervisor;

/// This host's lease, as the singleton tasks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// None yet, or it was lost: why.
    Waiting(String),
    Held {
        id: i64,
    },
}

#[derive(Debug)]
pub struct Member {
    etcd: Arc<Etcd>,
    settings: ClusterSettings,
    fences: Arc<Fences>,
    keys: Keys,
}

impl Member {
    pub fn new(etcd: Arc<Etcd>, settings: ClusterSettings, fences: Arc<Fences>) -> Self {
        let keys = Keys::new(&settings.name);
        Self {
            etcd,
            settings,
            fences,
            keys,
        }
    }

    fn ttl(&self) -> u64 {
        self.settings.lease_ttl.as_secs().max(2)
    }
}

/// What stops this host from joining.
enum Refusal {
    /// etcd could not be asked; try again.
    Unreachable(String),
    /// Another live muster holds this host's name.
    Taken(String),
}

/// Takes the host's name and starts the membership task. `Err` when etcd says another
/// live muster holds the name; when etcd cannot be reached, the task keeps trying.
pub async fn start(
    member: Member,
    supervisor: Arc<Supervisor>,
) -> Result<watch::Receiver<Lease>, String> {
    let (lease, receiver) = watch::channel(Lease::Waiting("etcd has not answered yet".to_owned()));
    let first = join(&member, &supervisor).await;
    let joined = match first {
        Ok(joined) => Some(joined),
        Err(Refusal::Taken(why)) => return Err(why),
        Err(Refusal::Unreachable(why)) => {
            crate::supervisor::warn(format_args!(
                "cluster `{}`: {why}; local services run, singletons wait until etcd answers",
                member.settings.name
            ));
            lease.send_replace(Lease::Waiting(why));
            None
        }
    };
    tokio::spawn(keep(member, supervisor, lease, joined));
    Ok(receiver)
}

/// A lease granted and the host's record written under it.
struct Joined {
    id: i64,
    ttl: u64,
    /// The record's create revision: updates are made only to this record.
    created: i64,
    record: Value,
}

async fn join(member: &Member, supervisor: &Supervisor) -> Result<Joined, Refusal> {
    let unreachable = |e: EtcdError| Refusal::Unreachable(e.to_string());
    let sent = boottime();
    let (id, ttl) = member.etcd.grant(member.ttl()).await.map_err(unreachable)?;
    member.fences.renew(deadlines(sent, ttl));
    let key = member.keys.host(&member.settings.host);
    let record = record(member, supervisor, id);
    for _ in 0..3 {
        match member
            .etcd
            .create(&key, record.to_string().as_bytes(), id)
            .await
        {
            Ok(Ok(created)) => {
                // Listed for good, so that `muster cluster` shows it as gone when it is.
                let known = json!({
                    "host": member.settings.host,
                    "advertise": member.settings.advertise,
                });
                let _ = member
                    .etcd
                    .put(
                        &member.keys.known_host(&member.settings.host),
                        known.to_string().as_bytes(),
                    )
                    .await;
                return Ok(Joined {
                    id,
                    ttl,
                    created,
                    record,
                });
            }
            Ok(Err(holder)) => {
                let theirs: Value = serde_json::from_slice(&holder.value).unwrap_or(Value::Null);
                // The same machine (boot) and state directory: the muster before this one,
                // killed before it could let go (this one holds the state directory's lock,
                // so that one is gone). Its lease is revoked at once, and with it what it
                // owned, rather than left to expire.
                if theirs["boot"] == record["boot"] && theirs["state_dir"] == record["state_dir"] {
                    let _ = member.etcd.revoke(holder.lease).await;
                    continue;
                }
                let _ = member.etcd.revoke(id).await;
                return Err(Refusal::Taken(format!(
                    "host name `{}` is taken in cluster `{}` by a live muster (pid {} at {}, state directory {}); give this one another `cluster.host`, or stop that one",
                    member.settings.host,
                    member.settings.name,
                    theirs["pid"],
                    theirs["advertise"].as_str().unwrap_or("?"),
                    theirs["state_dir"].as_str().unwrap_or("?"),
                )));
            }
            Err(error) => return Err(unreachable(error)),
        }
    }
    Err(Refusal::Unreachable(
        "the host's record kept changing while it was written".to_owned(),
    ))
}

/// The deadlines a keepalive sent at `sent` (boot-time ns) and acknowledged with `ttl`
/// seconds gives.
pub fn deadlines(sent: u64, ttl: u64) -> Deadlines {
    let ttl_ns = ttl * 1_000_000_000;
    // The margin covers the guard's wake-up and the kill; at least 200 ms, a tenth of
    // the TTL for longer ones.
    let margin = (ttl_ns / 10).max(200_000_000);
    Deadlines {
        soft: sent + ttl_ns * 2 / 3,
        hard: sent + ttl_ns.saturating_sub(margin),
    }
}

fn record(member: &Member, supervisor: &Supervisor, lease: i64) -> Value {
    let graph = supervisor.graph();
    let services: BTreeMap<String, Value> = graph
        .services
        .values()
        .map(|handle| {
            let status = handle.status();
            (
                handle.name().to_string(),
                json!({
                    "phase": status.phase.as_str(),
                    "run": status.run_id,
                    "pid": status.pid,
                    "singleton": handle.service.singleton.is_some(),
                    "endpoint": super::endpoint(&handle.service, &member.settings.advertise),
                }),
            )
        })
        .collect();
    json!({
        "host": member.settings.host,
        "advertise": member.settings.advertise,
        "pid": std::process::id(),
        "boot": crate::supervisor::procfs::boot_id(),
        "state_dir": graph.spec.settings.state_dir.display().to_string(),
        "lease": lease.to_string(),
        "services": services,
    })
}

/// Keeps the lease and the record, for as long as the supervisor runs.
async fn keep(
    member: Member,
    supervisor: Arc<Supervisor>,
    lease: watch::Sender<Lease>,
    mut joined: Option<Joined>,
) {
    let mut closing = supervisor.closing();
    loop {
        let Some(current) = joined.as_mut() else {
            // Not joined: try again, a keepalive interval apart.
            match join(&member, &supervisor).await {
                Ok(new) => {
                    lease.send_replace(Lease::Held { id: new.id });
                    joined = Some(new);
                }
                Err(Refusal::Unreachable(why) | Refusal::Taken(why)) => {
                    member.fences.lapse();
                    lease.send_replace(Lease::Waiting(why));
                    tokio::time::sleep(member.settings.lease_ttl / 3).await;
                }
            }
            continue;
        };
        if !matches!(*lease.borrow(), Lease::Held { id } if id == current.id) {
            lease.send_replace(Lease::Held { id: current.id });
        }
        let interval = Duration::from_secs(current.ttl) / 3;
        // The record is written when it changed, looked at every second or so.
        let tick = interval.min(Duration::from_secs(1));
        let next_keepalive = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next_keepalive) => break,
                () = tokio::time::sleep(tick) => {}
                _ = closing.changed() => {}
            }
            if *closing.borrow() {
                return leave(&member, &supervisor, current).await;
            }
            let record = record(&member, &supervisor, current.id);
            if record != current.record {
                let key = member.keys.host(&member.settings.host);
                if let Ok(true) = member
                    .etcd
                    .update(
                        &key,
                        record.to_string().as_bytes(),
                        current.id,
                        current.created,
                    )
                    .await
                {
                    current.record = record;
                }
            }
        }
        let sent = boottime();
        match member.etcd.keepalive(current.id).await {
            Ok(0) => {
                // The lease is gone (it expired while this host was cut off or stopped):
                // nothing here may run a singleton until a new one is granted.
                member.fences.lapse();
                lease.send_replace(Lease::Waiting(
                    "this host's lease in etcd expired; joining again".to_owned(),
                ));
                joined = None;
            }
            Ok(ttl) => member.fences.renew(deadlines(sent, ttl)),
            Err(error) => {
                // Kept: the deadlines run out on their own if this goes on.
                if boottime() >= member.fences.deadlines().soft {
                    lease.send_replace(Lease::Waiting(format!(
                        "cannot renew this host's lease: {error}"
                    )));
                }
            }
        }
    }
}

/// At shutdown: waits for the singletons to be down, then revokes the lease, so that
/// another candidate takes over at once rather than when the lease expires.
async fn leave(member: &Member, supervisor: &Supervisor, joined: &Joined) {
    let down = supervisor
        .services()
        .into_iter()
        .filter(|h| h.service.singleton.is_some())
        .map(|handle| async move {
            let mut status = handle.watch();
            let _ = status
                .wait_for(|s| {
                    !matches!(
                        s.phase,
                        crate::supervisor::Phase::Starting
                            | crate::supervisor::Phase::Healthy
                            | crate::supervisor::Phase::Unhealthy
                            | crate::supervisor::Phase::Stopping
                    )
                })
                .await;
        });
    let _ = tokio::time::timeout(
        supervisor.spec().settings.shutdown_timeout,
        futures_util::future::join_all(down),
    )
    .await;
    member.fences.lapse();
    let _ = member.etcd.revoke(joined.id).await;
}
