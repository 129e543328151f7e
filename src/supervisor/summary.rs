//! The one-line summary of a supervisor: where it is in its life and how many services
//! are in each state ("running: 4/5 healthy, 1 restarting"). `muster status` prints it;
//! the `STATUS=` muster tells systemd is the same line with the failed services named
//! ("running: 10/12 healthy, 2 failed: db, api"). A leaf: it knows states, not services.

use super::machine::Phase;
use super::owner::Lifecycle;

/// At most this many failed services are named; the rest are counted.
const NAMED: usize = 5;

/// The summary of `services` (name and state, in the order to count them in). With
/// `name_failed`, the failed ones come last, by name.
pub fn line<'a>(
    lifecycle: Lifecycle,
    booted: bool,
    services: impl IntoIterator<Item = (&'a str, Phase)>,
    name_failed: bool,
) -> String {
    let mut others: Vec<(&str, usize)> = Vec::new();
    let mut failed: Vec<&str> = Vec::new();
    let mut healthy = 0;
    let mut total = 0;
    for (name, phase) in services {
        total += 1;
        let state = match phase {
            Phase::Healthy => {
                healthy += 1;
                continue;
            }
            Phase::Failed if name_failed => {
                failed.push(name);
                continue;
            }
            // Exited means a restart is scheduled: say what is happening to it.
            Phase::Exited => "restarting",
            phase => phase.as_str(),
        };
        match others.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => others.push((state, 1)),
        }
    }
    let heading = match lifecycle {
        Lifecycle::ShuttingDown | Lifecycle::Done => "shutting down",
        Lifecycle::Booting | Lifecycle::Running if !booted => "bootstrapping",
        Lifecycle::Booting | Lifecycle::Running => "running",
    };
    let mut line = format!("{heading}: {healthy}/{total} healthy");
    for (state, n) in others {
        line.push_str(&format!(", {n} {state}"));
    }
    if !failed.is_empty() {
        line.push_str(&format!(", {} failed: ", failed.len()));
        line.push_str(&failed[..failed.len().min(NAMED)].join(", "));
        if failed.len() > NAMED {
            line.push_str(&format!(" and {} more", failed.len() - NAMED));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_states_in_order_of_appearance() {
        let services = [
            ("a", Phase::Healthy),
            ("b", Phase::Exited),
            ("c", Phase::Stopped),
            ("d", Phase::Exited),
        ];
        assert_eq!(
            line(Lifecycle::Running, true, services, false),
            "running: 1/4 healthy, 2 restarting, 1 stopped"
        );
        assert_eq!(
            line(Lifecycle::Booting, false, services, false),
            "bootstrapping: 1/4 healthy, 2 restarting, 1 stopped"
        );
    }

    #[test]
    fn names_the_failed_last_and_caps_the_list() {
        let services = [
            ("api", Phase::Failed),
            ("db", Phase::Failed),
            ("web", Phase::Starting),
        ];
        assert_eq!(
            line(Lifecycle::Running, true, services, true),
            "running: 0/3 healthy, 1 starting, 2 failed: api, db"
        );
        assert_eq!(
            line(Lifecycle::Running, true, services, false),
            "running: 0/3 healthy, 2 failed, 1 starting"
        );
        let names: Vec<String> = (0..7).map(|i| format!("s{i}")).collect();
        let many = names.iter().map(|n| (n.as_str(), Phase::Failed));
        assert_eq!(
            line(Lifecycle::ShuttingDown, true, many, true),
            "shutting down: 0/7 healthy, 7 failed: s0, s1, s2, s3, s4 and 2 more"
        );
    }
}
