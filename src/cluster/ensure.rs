//! `ensure` of a singleton from any host: the owner's host, endpoint and fence once it
//! is healthy there. With no owner, a candidate starts it here (the ownership
//! transaction keeps that single-flight across hosts); a host that is not a candidate
//! waits for one to, within the timeout, and says what it waited for.

use std::time::Duration;

use super::view::Placement;
use crate::fence::Ownership;
use crate::supervisor::{Failure, Supervisor};

/// What the owner host published of `name`: its phase and endpoint.
fn published(
    peers: Option<&crate::fence::Peers>,
    host: &str,
    name: &str,
) -> Option<(String, Option<String>)> {
    let service = &peers?.get(host)?["services"][name];
    Some((
        service["phase"].as_str()?.to_owned(),
        service["endpoint"].as_str().map(str::to_owned),
    ))
}

/// Where singleton `handle` runs, as this host knows now; `None` for a service that is
/// not a singleton, or while no host owns it.
pub fn placement(
    supervisor: &Supervisor,
    handle: &crate::supervisor::ServiceHandle,
) -> Option<Placement> {
    handle.service.singleton.as_ref()?;
    let fences = supervisor.fences()?;
    let settings = supervisor.spec().cluster.clone()?;
    match fences.owned(handle.name().as_str())? {
        Ownership::Here { fence } => Some(Placement {
            host: settings.host.clone(),
            endpoint: super::endpoint(&handle.service, &settings.advertise),
            fence,
            here: true,
        }),
        Ownership::Elsewhere { host, fence } => {
            let peers = fences.peers.borrow().clone();
            let endpoint = published(peers.as_deref(), &host, handle.name().as_str())
                .and_then(|(_, endpoint)| endpoint);
            Some(Placement {
                host,
                endpoint,
                fence,
                here: false,
            })
        }
        Ownership::Unknown(_) => None,
    }
}

/// Makes singleton `name` healthy somewhere in the cluster, within `timeout`. `None`
/// when there is no cluster (the caller ensures it as any service).
pub async fn ensure(
    supervisor: &Supervisor,
    name: &str,
    timeout: Duration,
) -> Option<Result<Placement, Failure>> {
    let fences = supervisor.fences()?;
    let settings = supervisor.spec().cluster.clone()?;
    let handle = supervisor.service(name)?;
    let role = handle.service.singleton.clone()?;
    let candidate = role.is_candidate(&settings.host);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ownership = fences.ownership(name);
    let mut peers = fences.peers.subscribe();
    let mut asked = false;
    loop {
        let now = ownership.borrow_and_update().clone();
        let waiting = match now {
            Ownership::Here { fence } => {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                return Some(supervisor.ensure(name, left).await.map(|_| Placement {
                    host: settings.host.clone(),
                    endpoint: super::endpoint(&handle.service, &settings.advertise),
                    fence,
                    here: true,
                }));
            }
            Ownership::Elsewhere { host, fence } => {
                let known = peers.borrow_and_update().clone();
                match published(known.as_deref(), &host, name) {
                    Some((phase, endpoint)) if phase == "healthy" => {
                        return Some(Ok(Placement {
                            host,
                            endpoint,
                            fence,
                            here: false,
                        }));
                    }
                    Some((phase, _)) => {
                        format!("it runs on host `{host}` (fence {fence}), where it is {phase}")
                    }
                    None => format!(
                        "it runs on host `{host}` (fence {fence}), which has not published it yet"
                    ),
                }
            }
            Ownership::Unknown(why) => {
                if candidate && !asked {
                    // Competes for it: whoever creates the owner key first runs it.
                    asked = true;
                    if let Err(failure) = supervisor.start(name).await {
                        return Some(Err(failure));
                    }
                }
                if candidate {
                    why
                } else {
                    format!(
                        "{why}; this host (`{}`) is not one of its candidates ({}), so it waits for one of them to start it",
                        settings.host,
                        role.hosts.join(", ")
                    )
                }
            }
        };
        tokio::select! {
            _ = ownership.changed() => {}
            _ = peers.changed() => {}
            () = tokio::time::sleep_until(deadline) => {
                let mut status = handle.status();
                status.reason = format!("singleton `{name}`: {waiting}");
                return Some(Err(Failure::Timeout {
                    after: timeout,
                    explanation: supervisor.explain(status),
                }));
            }
        }
    }
}
