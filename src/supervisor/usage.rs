//! How clients use each service: proxied connections and routed requests open now, the
//! last `ensure`, connection or request, and the proxy's and the router's counters.
//! `idle-stop` measures this; status, the API and `/metrics` show it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use super::bus::{EventBus, EventKind};
use super::machine::{Input, Phase, human};
use super::status::Status;
use crate::config::ServiceName;

/// Clients' use of one service.
#[derive(Debug)]
pub struct Usage {
    activity: watch::Sender<Activity>,
    /// Set when the service is about to go (`muster scale` down): its proxy sends it no
    /// new client.
    draining: std::sync::atomic::AtomicBool,
    pub proxy: ProxyCounters,
    pub route: RouteCounters,
}

/// What idle-stop looks at.
#[derive(Debug, Clone, Copy)]
pub struct Activity {
    /// Proxied connections open now (waiting for a start or forwarded).
    pub open: u64,
    /// When a connection last closed or an `ensure` was last made.
    pub last: Instant,
}

/// A proxy's numbers since the supervisor started.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Connections handed to the upstream.
    pub served: AtomicU64,
    /// Connections waiting for a start now.
    pub waiting: AtomicU64,
    /// Connections refused: too many waiting, or the start failed.
    pub refused: AtomicU64,
    /// Bytes from clients to the service.
    pub bytes_in: AtomicU64,
    /// Bytes from the service to clients.
    pub bytes_out: AtomicU64,
    /// Time connections spent waiting for starts, in microseconds.
    pub wait_micros: AtomicU64,
}

/// The router's numbers for a service that serves models, since the supervisor started.
#[derive(Debug, Default)]
pub struct RouteCounters {
    /// Requests routed to it.
    pub requests: AtomicU64,
    /// Requests the router answered with an error itself (queue full, load failed,
    /// timed out, the server went away before answering).
    pub failed: AtomicU64,
    /// Requests being answered now.
    pub in_flight: AtomicU64,
    /// Requests waiting now: for room in its group, for the load, or for a slot.
    pub queued: AtomicU64,
    /// Time requests spent waiting before they were sent, in microseconds.
    pub queue_micros: AtomicU64,
    /// Starts that requests waited for, and their time in microseconds.
    pub loads: AtomicU64,
    pub load_micros: AtomicU64,
    /// The last load's time, in microseconds.
    pub last_load_micros: AtomicU64,
    /// Times it was stopped to make room for another member of its group.
    pub evictions: AtomicU64,
    /// When a request last ended, in milliseconds since the Unix epoch (0: never).
    pub last_used_ms: AtomicU64,
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            activity: watch::Sender::new(Activity {
                open: 0,
                last: Instant::now(),
            }),
            draining: std::sync::atomic::AtomicBool::new(false),
            proxy: ProxyCounters::default(),
            route: RouteCounters::default(),
        }
    }
}

impl Usage {
    pub fn activity(&self) -> Activity {
        *self.activity.borrow()
    }

    /// No new client is to be sent to the service: it is about to be stopped.
    pub fn set_draining(&self) {
        self.draining.store(true, Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Relaxed)
    }

    /// Returns once no proxied connection is open, or `limit` has passed.
    pub async fn drained(&self, limit: Duration) {
        let mut activity = self.activity.subscribe();
        let _ = tokio::time::timeout(limit, activity.wait_for(|a| a.open == 0)).await;
    }

    /// An `ensure` was made: the service is in use now.
    pub fn touch(&self) {
        self.activity.send_modify(|a| a.last = Instant::now());
    }

    /// A connection opened; it counts as use until the guard is dropped.
    pub fn connection(self: &Arc<Self>) -> InUse {
        self.activity.send_modify(|a| a.open += 1);
        InUse(Arc::clone(self))
    }

    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Relaxed);
    }
}

/// An open connection; dropping it ends the use.
#[derive(Debug)]
pub struct InUse(Arc<Usage>);

impl Drop for InUse {
    fn drop(&mut self) {
        self.0.activity.send_modify(|a| {
            a.open = a.open.saturating_sub(1);
            a.last = Instant::now();
        });
    }
}

/// Stops the service gracefully once it has been healthy and unused for `idle`: no
/// connection open, no `ensure`. Ends when the actor does.
pub(super) async fn idle_stop(
    name: ServiceName,
    idle: Duration,
    usage: Arc<Usage>,
    mut status: watch::Receiver<Status>,
    stop: impl Fn(Input) -> bool + Send + 'static,
    bus: EventBus,
) {
    let mut activity = usage.activity.subscribe();
    loop {
        if status
            .wait_for(|s| s.phase == Phase::Healthy)
            .await
            .is_err()
        {
            return;
        }
        let healthy_since = Instant::now();
        loop {
            let now = *activity.borrow_and_update();
            let (phase, run) = {
                let status = status.borrow_and_update();
                (status.phase, status.run_id)
            };
            if phase != Phase::Healthy {
                break;
            }
            let deadline = now.last.max(healthy_since) + idle;
            if now.open == 0 && Instant::now() >= deadline {
                bus.publish(
                    &name,
                    run,
                    EventKind::IdleStopped,
                    format!("not used for {}; stopping", human(idle)),
                    json!({ "idle_seconds": idle.as_secs_f64() }),
                );
                // The actor is gone: so is the service.
                if !stop(Input::IdleStop(idle)) {
                    return;
                }
                if status
                    .wait_for(|s| s.phase != Phase::Healthy)
                    .await
                    .is_err()
                {
                    return;
                }
                break;
            }
            // Wake at the deadline, or when use or the state changes.
            let sleep = async {
                if now.open == 0 {
                    tokio::time::sleep_until(deadline).await;
                } else {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = sleep => {}
                changed = activity.changed() => if changed.is_err() { return },
                changed = status.changed() => if changed.is_err() { return },
            }
        }
    }
}
