//! The services table's columns: their titles and how rows sort by each. `s` moves the
//! sort to the next column, `S` reverses it; `order` is the order the supervisor lists.

use std::cmp::Ordering;

use crate::api::model::ServiceView;
use crate::supervisor::Phase;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Order,
    Name,
    State,
    Pid,
    Uptime,
    Restarts,
    Cpu,
    Memory,
    Reason,
}

impl Column {
    pub const ALL: [Column; 9] = [
        Column::Order,
        Column::Name,
        Column::State,
        Column::Pid,
        Column::Uptime,
        Column::Restarts,
        Column::Cpu,
        Column::Memory,
        Column::Reason,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Order => "order",
            Column::Name => "NAME",
            Column::State => "STATE",
            Column::Pid => "PID",
            Column::Uptime => "UPTIME",
            Column::Restarts => "RESTARTS",
            Column::Cpu => "CPU",
            Column::Memory => "MEM",
            Column::Reason => "REASON / STATUS",
        }
    }

    /// The next column to sort by.
    pub fn next(self) -> Column {
        let at = Self::ALL.iter().position(|&c| c == self).unwrap_or(0);
        Self::ALL[(at + 1) % Self::ALL.len()]
    }

    /// Orders two services (at `ia` and `ib` in the supervisor's list) by this column; ties
    /// keep the list's order.
    pub fn compare(self, a: &ServiceView, b: &ServiceView, ia: usize, ib: usize) -> Ordering {
        let by = match self {
            Column::Order => Ordering::Equal,
            Column::Name => a.name.cmp(&b.name),
            Column::State => rank(a.state).cmp(&rank(b.state)),
            Column::Pid => a.pid.cmp(&b.pid),
            Column::Uptime => float(a.uptime_seconds).total_cmp(&float(b.uptime_seconds)),
            Column::Restarts => a.restarts.cmp(&b.restarts),
            Column::Cpu => float(a.resources.as_ref().map(|r| r.cpu_percent))
                .total_cmp(&float(b.resources.as_ref().map(|r| r.cpu_percent))),
            Column::Memory => memory(a).cmp(&memory(b)),
            Column::Reason => a.reason.cmp(&b.reason),
        };
        by.then(ia.cmp(&ib))
    }
}

/// Trouble first: failed, unhealthy, exited, then the ones on their way, then the rest.
fn rank(phase: Phase) -> u8 {
    match phase {
        Phase::Failed => 0,
        Phase::Unhealthy => 1,
        Phase::Exited => 2,
        Phase::Starting => 3,
        Phase::Pending => 4,
        Phase::Stopping => 5,
        Phase::Healthy => 6,
        Phase::Completed => 7,
        Phase::Stopped => 8,
    }
}

fn float(value: Option<f64>) -> f64 {
    value.unwrap_or(-1.0)
}

fn memory(service: &ServiceView) -> u64 {
    service.resources.as_ref().map_or(0, |r| r.memory_rss_bytes)
}
