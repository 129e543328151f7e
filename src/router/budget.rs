//! Who may run, and when: each routed service's requests (queued, admitted, in flight)
//! and each pool's budget.
//!
//! A request holds a [`Ticket`] from its arrival to the end of its answer. It is
//! *admitted* once its service runs or has room to start: a service outside a pool
//! always has room; a member of a pool has room when the members that run (or are
//! about to) leave enough of the budget for it. Models waiting for room take turns, first
//! come first served, and only the first may make room: it picks the members to stop,
//! least recently used first and idle ones before busy ones, just enough of them.
//!
//! A member picked to make room is *evicting*: the door closes behind the requests that
//! had already arrived for it (they are owed their answer, so a model is never stopped
//! before it has served the requests that made it load), later ones wait for its next
//! load, and once nothing is owed, admitted or in flight it is stopped, with an
//! `evicted` event saying for whom.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use serde_json::json;
use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use crate::config::{ServiceName, Spec};
use crate::event::EventKind;
use crate::supervisor::Supervisor;
use crate::supervisor::usage::Usage;

/// The routed services' requests and the pools' budgets.
#[derive(Debug)]
pub struct Scheduler {
    supervisor: Arc<Supervisor>,
    table: Mutex<Table>,
    /// Woken at every change a waiting request may care about: a request ending, a
    /// member stopping, any event of the supervisor (a service that stopped by itself).
    changed: Notify,
}

#[derive(Debug, Default)]
struct Table {
    slots: HashMap<ServiceName, Slot>,
    /// Per pool, the services waiting for room, in the order they asked.
    rooms: HashMap<String, VecDeque<ServiceName>>,
}

#[derive(Debug, Default)]
struct Slot {
    /// The sequence number the next request gets.
    next_seq: u64,
    queued: usize,
    admitted: usize,
    in_flight: usize,
    /// Room was claimed for a start that is not under way yet.
    reserved: bool,
    evicting: Option<Eviction>,
    /// Its eviction's stop is under way.
    stopping: bool,
    last_used: Option<Instant>,
    /// `max-concurrent`, and the permits for it.
    permits: Option<(usize, Arc<Semaphore>)>,
    /// The run whose load was last counted.
    counted_run: u64,
}

#[derive(Debug)]
struct Eviction {
    /// Requests numbered below this arrived before the eviction: they are served first.
    door: u64,
    /// How many of them still wait.
    owed: usize,
    for_whom: ServiceName,
    pool: String,
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Queued,
    Admitted,
    InFlight,
}

/// One request's place, from arrival to the end of its answer.
#[derive(Debug)]
pub struct Ticket {
    scheduler: Arc<Scheduler>,
    name: ServiceName,
    usage: Arc<Usage>,
    seq: u64,
    stage: Stage,
    arrived: Instant,
}

/// What an admission attempt found.
enum Verdict {
    Admitted,
    Wait,
    Gone,
}

/// Why a request was not admitted.
#[derive(Debug)]
pub enum NotAdmitted {
    /// `max-queued` requests already wait.
    QueueFull(usize),
    /// The deadline passed while it waited for room.
    Timeout { waiting_for: Vec<ServiceName> },
    /// The service was removed from the config meanwhile.
    Gone,
}

impl Scheduler {
    pub fn new(supervisor: Arc<Supervisor>) -> Arc<Self> {
        let scheduler = Arc::new(Self {
            supervisor,
            table: Mutex::new(Table::default()),
            changed: Notify::new(),
        });
        // A member that stops by itself (idle, crash) frees room: every event wakes
        // the waiting requests to look again.
        let watcher = Arc::downgrade(&scheduler);
        let mut events = scheduler.supervisor.bus().subscribe();
        tokio::spawn(async move {
            loop {
                let received = events.recv().await;
                let Some(scheduler) = watcher.upgrade() else {
                    return;
                };
                if matches!(
                    received,
                    Err(tokio::sync::broadcast::error::RecvError::Closed)
                ) {
                    return;
                }
                scheduler.changed.notify_waiters();
            }
        });
        scheduler
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A request arrives for `name`: it queues, unless `max_queued` already wait.
    pub fn enter(
        self: &Arc<Self>,
        name: &ServiceName,
        usage: Arc<Usage>,
        max_queued: usize,
    ) -> Result<Ticket, NotAdmitted> {
        let mut table = self.lock();
        usage.route.requests.fetch_add(1, Relaxed);
        let slot = table.slots.entry(name.clone()).or_default();
        if slot.queued + slot.admitted >= max_queued {
            return Err(NotAdmitted::QueueFull(max_queued));
        }
        slot.queued += 1;
        let seq = slot.next_seq;
        slot.next_seq += 1;
        usage.route.queued.fetch_add(1, Relaxed);
        Ok(Ticket {
            scheduler: Arc::clone(self),
            name: name.clone(),
            usage,
            seq,
            stage: Stage::Queued,
            arrived: Instant::now(),
        })
    }

    /// Waits until the ticket's service runs or has room to start, up to `deadline`.
    pub async fn admit(
        self: &Arc<Self>,
        ticket: &mut Ticket,
        deadline: Instant,
    ) -> Result<(), NotAdmitted> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (verdict, evict) = {
                let spec = self.supervisor.spec();
                let mut table = self.lock();
                let mut evict = Vec::new();
                let verdict = self.try_admit(&mut table, &spec, ticket, &mut evict);
                (verdict, evict)
            };
            for name in evict {
                self.drain_if_done(&name);
            }
            match verdict {
                Verdict::Admitted => return Ok(()),
                Verdict::Gone => return Err(NotAdmitted::Gone),
                Verdict::Wait => {}
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    return Err(NotAdmitted::Timeout { waiting_for: self.blocking(&ticket.name) });
                }
            }
        }
    }

    /// The members a waiting service waits on: those that still hold its pool's room.
    fn blocking(&self, name: &ServiceName) -> Vec<ServiceName> {
        let spec = self.supervisor.spec();
        let Some(pool) = spec
            .services
            .get(name)
            .and_then(|s| s.member.as_ref())
            .map(|m| m.pool.clone())
        else {
            return Vec::new();
        };
        let table = self.lock();
        members(&spec, &pool)
            .filter(|(other, _)| *other != name && self.occupies(&table, other))
            .map(|(other, _)| other.clone())
            .collect()
    }

    /// Whether `name` holds room in its group: it runs (or is about to, or is stopping),
    /// or room was claimed for it.
    fn occupies(&self, table: &Table, name: &ServiceName) -> bool {
        table.slots.get(name).is_some_and(|slot| slot.reserved)
            || self
                .supervisor
                .service(name.as_str())
                .is_some_and(|handle| !handle.status().phase.is_settled())
    }

    fn try_admit(
        &self,
        table: &mut Table,
        spec: &Spec,
        ticket: &mut Ticket,
        evict: &mut Vec<ServiceName>,
    ) -> Verdict {
        let name = &ticket.name;
        let Some(service) = spec.services.get(name) else {
            return Verdict::Gone;
        };
        let slot = table.slots.entry(name.clone()).or_default();
        let behind_door = slot
            .evicting
            .as_ref()
            .is_some_and(|eviction| ticket.seq >= eviction.door);
        if behind_door || (slot.stopping && slot.evicting.is_none()) {
            return Verdict::Wait;
        }
        let pool = service
            .member
            .as_ref()
            .and_then(|member| Some((member, spec.pools.get(&member.pool)?)));
        let Some((member, pool)) = pool else {
            admit(table, ticket);
            return Verdict::Admitted;
        };
        if self.occupies(table, name) {
            admit(table, ticket);
            return Verdict::Admitted;
        }
        // Waiting for room: in turn, and only the first in line makes room.
        let waiting: Vec<ServiceName> = {
            let queue = table.rooms.entry(pool.name.clone()).or_default();
            if !queue.contains(name) {
                queue.push_back(name.clone());
            }
            queue.iter().cloned().collect()
        };
        let still_waiting: VecDeque<ServiceName> = waiting
            .into_iter()
            .filter(|other| {
                table.slots.get(other).is_some_and(|s| s.queued > 0) && !self.occupies(table, other)
            })
            .collect();
        let first = still_waiting.front() == Some(name);
        table.rooms.insert(pool.name.clone(), still_waiting);
        if !first {
            return Verdict::Wait;
        }
        let cost = pool.budget.cost(member);
        let limit = pool.budget.limit();
        let holding: Vec<(ServiceName, u64)> = members(spec, &pool.name)
            .filter(|(other, _)| self.occupies(table, other))
            .map(|(other, cost)| (other.clone(), cost))
            .collect();
        let used: u64 = holding.iter().map(|(_, cost)| cost).sum();
        if used.saturating_add(cost) <= limit {
            if let Some(queue) = table.rooms.get_mut(&pool.name) {
                queue.pop_front();
            }
            let slot = table.slots.entry(name.clone()).or_default();
            slot.reserved = true;
            admit(table, ticket);
            return Verdict::Admitted;
        }
        let mut freeing: u64 = holding
            .iter()
            .filter(|(other, _)| {
                table
                    .slots
                    .get(other)
                    .is_some_and(|s| s.evicting.is_some() || s.stopping)
            })
            .map(|(_, cost)| cost)
            .sum();
        let fits = |freeing: u64| used.saturating_sub(freeing).saturating_add(cost) <= limit;
        if fits(freeing) {
            return Verdict::Wait;
        }
        // Idle before busy, then least recently used.
        let mut candidates: Vec<(bool, Option<Instant>, ServiceName, u64)> = holding
            .into_iter()
            .filter(|(other, _)| other != name)
            .filter_map(|(other, cost)| {
                let slot = table.slots.get(&other);
                if slot.is_some_and(|s| s.evicting.is_some() || s.stopping) {
                    return None;
                }
                let busy = slot.is_some_and(|s| s.queued + s.admitted + s.in_flight > 0);
                Some((busy, slot.and_then(|s| s.last_used), other, cost))
            })
            .collect();
        candidates.sort_by_key(|a| (a.0, a.1));
        for (_, _, victim, victim_cost) in candidates {
            if fits(freeing) {
                break;
            }
            let slot = table.slots.entry(victim.clone()).or_default();
            slot.evicting = Some(Eviction {
                door: slot.next_seq,
                owed: slot.queued,
                for_whom: name.clone(),
                pool: pool.name.clone(),
            });
            freeing = freeing.saturating_add(victim_cost);
            evict.push(victim);
        }
        Verdict::Wait
    }

    /// Stops an evicting service once it owes nothing and serves nothing.
    fn drain_if_done(self: &Arc<Self>, name: &ServiceName) {
        let (for_whom, pool) = {
            let mut table = self.lock();
            let Some(slot) = table.slots.get_mut(name) else {
                return;
            };
            let done = slot.in_flight == 0 && slot.admitted == 0;
            match &slot.evicting {
                Some(eviction) if done && eviction.owed == 0 && !slot.stopping => {
                    slot.stopping = true;
                    (eviction.for_whom.clone(), eviction.pool.clone())
                }
                _ => return,
            }
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let scheduler = Arc::clone(self);
        let name = name.clone();
        runtime.spawn(async move {
            let supervisor = &scheduler.supervisor;
            if let Some(handle) = supervisor.service(name.as_str()) {
                handle.usage.route.evictions.fetch_add(1, Relaxed);
                let run = handle.status().run_id;
                supervisor.bus().publish(
                    &name,
                    run,
                    EventKind::Evicted,
                    format!("stopping to make room for `{for_whom}` in pool `{pool}`"),
                    json!({ "for": for_whom.as_str(), "pool": pool }),
                );
            }
            let _ = supervisor.stop(name.as_str()).await;
            {
                let mut table = scheduler.lock();
                if let Some(slot) = table.slots.get_mut(&name) {
                    slot.evicting = None;
                    slot.stopping = false;
                    slot.reserved = false;
                }
            }
            scheduler.changed.notify_waiters();
        });
    }

    /// The start a request waited for is under way or done: the room it claimed is
    /// held by the running service from now on. Counts the load once per run.
    pub fn loaded(&self, name: &ServiceName, run_id: u64, waited: std::time::Duration) {
        let mut table = self.lock();
        if let Some(slot) = table.slots.get_mut(name) {
            slot.reserved = false;
            if run_id != 0 && slot.counted_run != run_id {
                slot.counted_run = run_id;
                if let Some(handle) = self.supervisor.service(name.as_str()) {
                    let micros = waited.as_micros() as u64;
                    handle.usage.route.loads.fetch_add(1, Relaxed);
                    handle.usage.route.load_micros.fetch_add(micros, Relaxed);
                    handle.usage.route.last_load_micros.store(micros, Relaxed);
                }
            }
        }
        drop(table);
        self.changed.notify_waiters();
    }

    /// The permits of `max-concurrent` for `name`.
    pub fn permits(&self, name: &ServiceName, max: usize) -> Arc<Semaphore> {
        let mut table = self.lock();
        let slot = table.slots.entry(name.clone()).or_default();
        match &slot.permits {
            Some((size, permits)) if *size == max => Arc::clone(permits),
            _ => {
                let permits = Arc::new(Semaphore::new(max));
                slot.permits = Some((max, Arc::clone(&permits)));
                permits
            }
        }
    }

    /// Requests queued and in flight for `name`, and when it was last used.
    pub fn figures(&self, name: &ServiceName) -> (usize, usize, bool) {
        let table = self.lock();
        table.slots.get(name).map_or((0, 0, false), |slot| {
            (
                slot.queued + slot.admitted,
                slot.in_flight,
                slot.evicting.is_some(),
            )
        })
    }
}

/// The members of `pool` and what each costs against its budget.
fn members<'a>(spec: &'a Spec, pool: &'a str) -> impl Iterator<Item = (&'a ServiceName, u64)> {
    let budget = spec.pools.get(pool).map(|g| g.budget);
    spec.services.values().filter_map(move |service| {
        let member = service.member.as_ref().filter(|m| m.pool == pool)?;
        Some((&service.name, budget?.cost(member)))
    })
}

/// Moves a ticket from the queue to admitted.
fn admit(table: &mut Table, ticket: &mut Ticket) {
    let slot = table.slots.entry(ticket.name.clone()).or_default();
    leave_queue(slot, ticket.seq);
    slot.admitted += 1;
    ticket.stage = Stage::Admitted;
}

fn leave_queue(slot: &mut Slot, seq: u64) {
    slot.queued = slot.queued.saturating_sub(1);
    if let Some(eviction) = &mut slot.evicting
        && seq < eviction.door
    {
        eviction.owed = eviction.owed.saturating_sub(1);
    }
}

impl Ticket {
    pub fn name(&self) -> &ServiceName {
        &self.name
    }

    pub fn usage(&self) -> &Arc<Usage> {
        &self.usage
    }

    /// The request is sent to its service now.
    pub fn forwarding(&mut self) {
        if self.stage != Stage::Admitted {
            return;
        }
        let mut table = self.scheduler.lock();
        let slot = table.slots.entry(self.name.clone()).or_default();
        slot.admitted = slot.admitted.saturating_sub(1);
        slot.in_flight += 1;
        self.stage = Stage::InFlight;
        let route = &self.usage.route;
        route.queued.fetch_sub(1, Relaxed);
        route.in_flight.fetch_add(1, Relaxed);
        route
            .queue_micros
            .fetch_add(self.arrived.elapsed().as_micros() as u64, Relaxed);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        {
            let mut table = self.scheduler.lock();
            let slot = table.slots.entry(self.name.clone()).or_default();
            match self.stage {
                Stage::Queued => leave_queue(slot, self.seq),
                Stage::Admitted => slot.admitted = slot.admitted.saturating_sub(1),
                Stage::InFlight => {
                    slot.in_flight = slot.in_flight.saturating_sub(1);
                    slot.last_used = Some(Instant::now());
                }
            }
        }
        let route = &self.usage.route;
        match self.stage {
            Stage::Queued | Stage::Admitted => route.queued.fetch_sub(1, Relaxed),
            Stage::InFlight => route.in_flight.fetch_sub(1, Relaxed),
        };
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        route.last_used_ms.store(now_ms, Relaxed);
        self.scheduler.drain_if_done(&self.name);
        self.scheduler.changed.notify_waiters();
    }
}
