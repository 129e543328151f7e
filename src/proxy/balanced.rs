//! The proxy of a service with `replicas`: one listener for every instance. Each client
//! goes to the healthy instance with the fewest open connections (least connections;
//! ties taken in turn), never to one that is not healthy (starting, stopping, crashed)
//! or that `muster scale` is taking away. With none healthy, the client starts the
//! instances (once, as for a single service) and is sent to the first that is ready.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Refusal, forward, refuse, upstream_of};
use crate::config::ServiceName;
use crate::supervisor::usage::Usage;
use crate::supervisor::{Failure, Phase, ServiceHandle, Supervisor};

/// Where the next tie starts, so that equally loaded instances take clients in turn.
static TURN: AtomicUsize = AtomicUsize::new(0);

/// One client of the set `set`.
pub(super) async fn connection(
    mut client: TcpStream,
    supervisor: Arc<Supervisor>,
    set: ServiceName,
) {
    let first = set.instance(0);
    let Some(proxy) = supervisor
        .service(first.as_str())
        .and_then(|handle| handle.service.proxy.clone())
    else {
        return;
    };
    if *supervisor.closing().borrow() {
        let refusal = Refusal::Failed(Failure::ShuttingDown.to_string(), Vec::new());
        refuse(&mut client, &proxy, refusal).await;
        return;
    }
    let began = Instant::now();
    let budget = supervisor.spec().start_budget(&first);
    let deadline = began + proxy.request_timeout.map_or(budget, |t| t.min(budget));
    // As for one service: a client asks for a start once, and a start that fails
    // refuses it rather than starting again.
    let mut asked = false;
    let mut retry = Duration::from_millis(10);
    loop {
        let members = instances(&supervisor, &set);
        if members.is_empty() {
            let refusal =
                Refusal::Failed(format!("`{set}` was removed from the config"), Vec::new());
            refuse(&mut client, &proxy, refusal).await;
            return;
        }
        let Some(chosen) = least_connections(&members) else {
            if asked && members.iter().all(|h| h.status().phase.is_settled()) {
                let explanation = supervisor.explain(members[0].status());
                let refusal = Refusal::Failed(
                    crate::supervisor::chain(&explanation.cause),
                    explanation.log_tail,
                );
                refuse(&mut client, &proxy, refusal).await;
                return;
            }
            asked = true;
            if let Err(refusal) = start_any(&supervisor, &set, &members, deadline).await {
                refuse(&mut client, &proxy, refusal).await;
                return;
            }
            continue;
        };
        let Some(own) = chosen.service.proxy.clone() else {
            return;
        };
        // Counted before the connection is made, so that clients arriving together
        // spread over the instances.
        let in_use = chosen.usage.connection();
        let address = upstream_of(&own, &chosen.status());
        match TcpStream::connect(address).await {
            Ok(upstream) => {
                let _ = upstream.set_nodelay(true);
                let counters = &chosen.usage.proxy;
                Usage::add(&counters.served, 1);
                forward(client, upstream, counters, &own).await;
                drop(in_use);
                return;
            }
            // Healthy a moment ago, refused now: it is going, or crashed. Another
            // instance (or this one's next run) within the same deadline.
            Err(_) if Instant::now() < deadline => {
                drop(in_use);
                let mut status = chosen.watch();
                status.borrow_and_update();
                let _ = tokio::time::timeout(retry, status.changed()).await;
                retry = (retry * 2).min(Duration::from_millis(500));
            }
            Err(error) => {
                Usage::add(&chosen.usage.proxy.refused, 1);
                let cause = format!(
                    "`{}` is healthy but {} refused: {error}",
                    chosen.name(),
                    address
                );
                refuse(&mut client, &proxy, Refusal::Failed(cause, Vec::new())).await;
                return;
            }
        }
    }
}

/// The instances of `set` now, but those being taken away.
fn instances(supervisor: &Supervisor, set: &ServiceName) -> Vec<ServiceHandle> {
    supervisor
        .spec()
        .members(set.as_str())
        .iter()
        .filter_map(|name| supervisor.service(name.as_str()))
        .filter(|handle| !handle.usage.is_draining())
        .collect()
}

/// The healthy instance with the fewest open connections; ties in turn.
fn least_connections(members: &[ServiceHandle]) -> Option<&ServiceHandle> {
    let offset = TURN.fetch_add(1, Relaxed);
    let count = members.len();
    (0..count)
        .map(|i| &members[(i + offset) % count])
        .filter(|handle| handle.status().phase == Phase::Healthy)
        .min_by_key(|handle| handle.usage.activity().open)
}

/// Starts every instance (single-flight, through `ensure`) and returns once one is
/// healthy; refused when none can be made so by the deadline.
async fn start_any(
    supervisor: &Supervisor,
    set: &ServiceName,
    members: &[ServiceHandle],
    deadline: Instant,
) -> Result<(), Refusal> {
    let left = deadline.saturating_duration_since(Instant::now());
    let starts = members.iter().map(|handle| {
        let name = handle.name().clone();
        Box::pin(async move { supervisor.ensure(name.as_str(), left).await })
    });
    match futures_util::future::select_ok(starts).await {
        Ok(_) => Ok(()),
        Err(Failure::Timeout { after, explanation }) => Err(Refusal::Timeout(format!(
            "no instance of `{set}` was healthy within {}: {}",
            crate::supervisor::machine::human(after),
            crate::supervisor::chain(&explanation.cause)
        ))),
        Err(Failure::NotHealthy(explanation)) => Err(Refusal::Failed(
            crate::supervisor::chain(&explanation.cause),
            explanation.log_tail.clone(),
        )),
        Err(other) => Err(Refusal::Failed(other.to_string(), Vec::new())),
    }
}
