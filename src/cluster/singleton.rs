//! One task per singleton of the config: who owns it, and this host's bid for it.
//!
//! Ownership is the key `singletons/NAME`, created only if absent (a transaction whose
//! compare is `create_revision == 0`) and bound to the creator's lease; its create
//! revision is the fence. A candidate that wants the service (it is selected, started
//! or demanded here) and finds no owner creates the key; every other host watches it
//! and tries again when it goes. While this host owns it, the task stops the service
//! (`fenced`) as soon as the lease's soft deadline passes unrenewed, the lease is
//! lost, or the watch says the key was deleted or re-created: then the guard's hard
//! deadline is still ahead. When the service is stopped here on purpose (or fails for
//! good), the key is deleted (`released`) so another candidate takes over at once.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::Keys;
use super::etcd::{Change, Etcd};
use super::member::Lease;
use crate::config::{ClusterSettings, ServiceName};
use crate::event::EventKind;
use crate::fence::{Fences, Ownership, boottime};
use crate::supervisor::{Phase, Supervisor};

#[derive(Debug)]
pub struct Context {
    pub etcd: Arc<Etcd>,
    pub settings: ClusterSettings,
    pub fences: Arc<Fences>,
    pub supervisor: Arc<Supervisor>,
    pub lease: watch::Receiver<Lease>,
    pub name: ServiceName,
    pub candidate: bool,
    pub endpoint: Option<String>,
}

impl Context {
    fn set(&self, ownership: Ownership) {
        self.fences.set(self.name.as_str(), ownership);
    }

    fn event(&self, kind: EventKind, message: String, fence: i64) {
        let run = self
            .supervisor
            .service(self.name.as_str())
            .map_or(0, |h| h.status().run_id);
        self.supervisor.bus().publish(
            &self.name,
            run,
            kind,
            message,
            json!({ "fence": fence, "host": self.settings.host }),
        );
    }

    fn retry(&self) -> Duration {
        self.settings.lease_ttl / 3
    }
}

pub async fn run(mut cx: Context) {
    let key = Keys::new(&cx.settings.name).singleton(cx.name.as_str());
    let mut closing = cx.supervisor.closing();
    loop {
        if *closing.borrow() {
            return;
        }
        let lease = cx.lease.borrow_and_update().clone();
        let id = match lease {
            Lease::Held { id } => id,
            Lease::Waiting(why) => {
                cx.set(Ownership::Unknown(format!("waiting for etcd: {why}")));
                tokio::select! {
                    changed = cx.lease.changed() => if changed.is_err() { return },
                    _ = closing.changed() => {}
                }
                continue;
            }
        };
        let (kvs, revision) = match cx.etcd.range(&key, false).await {
            Ok(read) => read,
            Err(error) => {
                cx.set(Ownership::Unknown(format!("waiting for etcd: {error}")));
                tokio::time::sleep(cx.retry()).await;
                continue;
            }
        };
        if let Some(kv) = kvs.first() {
            if kv.lease == id {
                hold(&mut cx, &key, id, kv.create_revision).await;
            } else {
                let owner: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
                cx.set(Ownership::Elsewhere {
                    host: owner["host"].as_str().unwrap_or("?").to_owned(),
                    fence: kv.create_revision,
                });
                wait_for_change(&mut cx, &key, revision).await;
            }
            continue;
        }
        if !cx.candidate {
            cx.set(Ownership::Unknown(format!(
                "no host runs it, and this host (`{}`) is not one of its `hosts`",
                cx.settings.host
            )));
            wait_for_change(&mut cx, &key, revision).await;
            continue;
        }
        if !cx.fences.is_wanted(cx.name.as_str()) {
            cx.set(Ownership::Unknown("no host runs it".to_owned()));
            wait_for_change(&mut cx, &key, revision).await;
            continue;
        }
        let value = json!({
            "host": cx.settings.host,
            "advertise": cx.settings.advertise,
            "endpoint": cx.endpoint,
            "pid": std::process::id(),
        });
        match cx.etcd.create(&key, value.to_string().as_bytes(), id).await {
            Ok(Ok(fence)) => {
                cx.event(
                    EventKind::Acquired,
                    format!(
                        "this host (`{}`) owns singleton `{}`, fence {fence}",
                        cx.settings.host, cx.name
                    ),
                    fence,
                );
                hold(&mut cx, &key, id, fence).await;
            }
            // Someone else was first; the next read says who.
            Ok(Err(_)) => {}
            Err(error) => {
                cx.set(Ownership::Unknown(format!("waiting for etcd: {error}")));
                tokio::time::sleep(cx.retry()).await;
            }
        }
    }
}

/// Until the key changes, the lease changes, this host comes to want the service, or
/// a while passes (a watch can end without a word).
async fn wait_for_change(cx: &mut Context, key: &str, revision: i64) {
    let watch = cx.etcd.watch(key, false, revision + 1).await;
    let asked = cx.fences.asked.notified();
    let changes = async {
        match watch {
            Ok(mut changes) => {
                let _ = changes.recv().await;
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    };
    tokio::select! {
        () = changes => {}
        _ = cx.lease.changed() => {}
        () = asked => {}
        () = tokio::time::sleep(cx.settings.lease_ttl) => {}
    }
}

/// This host owns the singleton with `fence`: lets it start, and stops it the moment
/// that may no longer be true.
async fn hold(cx: &mut Context, key: &str, id: i64, fence: i64) {
    cx.set(Ownership::Here { fence });
    let Some(handle) = cx.supervisor.service(cx.name.as_str()) else {
        return;
    };
    let mut status = handle.watch();
    let mut watch = cx.etcd.watch(key, false, fence + 1).await.ok();
    loop {
        // First, before anything else after a pause: is the lease still surely ours?
        let soft = cx.fences.deadlines().soft;
        let now = boottime();
        if now >= soft {
            return fenced(
                cx,
                fence,
                "this host's lease was not renewed in time (etcd unreachable, or this supervisor was stopped)",
            )
            .await;
        }
        let until_soft = Duration::from_nanos(soft - now).min(Duration::from_millis(250));
        let watched = async {
            match &mut watch {
                Some(changes) => changes.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep(until_soft) => {}
            changes = watched => match changes {
                Some(changes) => {
                    let gone = changes.iter().any(|change| match change {
                        Change::Delete { .. } => true,
                        Change::Put(kv) => kv.create_revision != fence,
                    });
                    if gone {
                        return fenced(cx, fence, "etcd says this host no longer owns it").await;
                    }
                }
                None => {
                    // The watch ended (its member went away): read, then watch again.
                    match cx.etcd.range(key, false).await {
                        Ok((kvs, _)) if !kvs.iter().any(|kv| kv.create_revision == fence) => {
                            return fenced(cx, fence, "etcd says this host no longer owns it").await;
                        }
                        _ => {}
                    }
                    watch = cx.etcd.watch(key, false, fence + 1).await.ok();
                }
            },
            changed = cx.lease.changed() => {
                if changed.is_err() || !matches!(*cx.lease.borrow(), Lease::Held { id: now } if now == id) {
                    return fenced(cx, fence, "this host's lease in etcd was lost").await;
                }
            }
            changed = status.changed() => {
                if changed.is_err() {
                    return;
                }
                let phase = status.borrow().phase;
                let given_up = !cx.fences.is_wanted(cx.name.as_str())
                    && matches!(phase, Phase::Stopped | Phase::Completed | Phase::Failed);
                if given_up || phase == Phase::Failed {
                    cx.fences.unwant(cx.name.as_str());
                    cx.set(Ownership::Unknown("released by this host".to_owned()));
                    let _ = cx.etcd.delete_if(key, fence).await;
                    cx.event(
                        EventKind::Released,
                        format!(
                            "this host (`{}`) gave up singleton `{}` ({}), fence {fence}",
                            cx.settings.host,
                            cx.name,
                            phase.as_str()
                        ),
                        fence,
                    );
                    return;
                }
            }
        }
    }
}

/// Ownership is gone or in doubt: the instance is stopped now, and the service waits
/// for ownership again.
async fn fenced(cx: &mut Context, fence: i64, why: &str) {
    cx.set(Ownership::Unknown(why.to_owned()));
    cx.event(
        EventKind::Fenced,
        format!(
            "singleton `{}` stopped on host `{}` (fence {fence}): {why}",
            cx.name, cx.settings.host
        ),
        fence,
    );
    if *cx.supervisor.closing().borrow() {
        return;
    }
    let _ = cx.supervisor.stop(cx.name.as_str()).await;
    // Wanted again: it starts when this host owns it again.
    let _ = cx.supervisor.start(cx.name.as_str()).await;
}
