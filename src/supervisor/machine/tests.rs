use std::collections::BTreeSet;

use super::*;

fn policy(restart: RestartPolicy, ready: Option<Readiness>) -> Policy {
    Policy {
        restart,
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
            reset_after: Duration::from_secs(30),
        },
        restart_limit: RestartLimit {
            count: 3,
            within: Duration::from_secs(60),
        },
        stop_signal: Signal::SIGTERM,
        stop_timeout: Duration::from_secs(10),
        on_unhealthy: OnUnhealthy::Restart,
        ready,
        alive: None,
        watchdog: None,
        pidfile: None,
        phase_seed: name_hash("web"),
    }
}

/// A program that can only run in the background, with its pid file.
fn forking(restart: RestartPolicy, ready: Option<Readiness>) -> Policy {
    let mut p = policy(restart, ready);
    p.pidfile = Some("/run/app.pid".to_owned());
    p
}

fn watched(restart: RestartPolicy) -> Policy {
    let mut p = policy(restart, None);
    p.alive = Some(Liveness {
        describe: "liveness probe http http://127.0.0.1:1/health".to_owned(),
        interval: Duration::from_secs(1),
        failures: 3,
        successes: 2,
    });
    p.watchdog = Some(Duration::from_secs(30));
    p
}

fn polling() -> Option<Readiness> {
    Some(Readiness {
        describe: "readiness probe tcp 127.0.0.1:5433".to_owned(),
        poll_every: Some(Duration::from_millis(100)),
        deadline: Duration::from_secs(60),
    })
}

fn pushed() -> Option<Readiness> {
    Some(Readiness {
        describe: "readiness probe notify".to_owned(),
        poll_every: None,
        deadline: Duration::from_secs(5),
    })
}

fn policies() -> Vec<Policy> {
    let mut all = Vec::new();
    for restart in [
        RestartPolicy::Never,
        RestartPolicy::OnFailure,
        RestartPolicy::Always,
    ] {
        for ready in [None, polling(), pushed()] {
            for on_unhealthy in [OnUnhealthy::Restart, OnUnhealthy::Report] {
                let mut p = policy(restart, ready.clone());
                p.on_unhealthy = on_unhealthy;
                all.push(p.clone());
                let mut w = watched(restart);
                w.ready = ready.clone();
                w.on_unhealthy = on_unhealthy;
                all.push(w.clone());
                w.pidfile = Some("/run/app.pid".to_owned());
                all.push(w);
            }
        }
    }
    all
}

/// Representative states of every phase: with and without a process, every
/// `after_stop`, a spent restart budget.
fn states(now: Instant) -> Vec<State> {
    let mut all = Vec::new();
    for phase in Phase::ALL {
        let base = State::new().to(phase, "test");
        all.push(base.clone());
        let mut running = base.clone();
        running.pid = Some(42);
        running.runs = 1;
        all.push(running.clone());
        for after in [
            AfterStop::Stopped(Cause::Asked),
            AfterStop::Stopped(Cause::Idle(Duration::from_secs(600))),
            AfterStop::Restart,
            AfterStop::Heal(Cause::Watchdog("no heartbeat for 30s".into())),
            AfterStop::Heal(Cause::Liveness("liveness probe failed".into())),
            AfterStop::Fail(Cause::StartDeadline("timed out".into())),
        ] {
            let mut s = running.clone();
            s.after_stop = after;
            all.push(s);
        }
        let mut spent = running.clone();
        spent.restart_times = (0..3).map(|_| now).collect();
        all.push(spent);
        let mut watching = running.clone();
        watching.watchdog = Some(Duration::from_secs(30));
        watching.alive_streak = 2;
        all.push(watching.clone());
        watching.hung = true;
        all.push(watching);
        // Only a starting service waits for its daemon's pid.
        if phase == Phase::Starting {
            let mut launched = running.clone();
            launched.awaiting_pid = true;
            all.push(launched.clone());
            launched.early_ready = Some("READY=1".into());
            all.push(launched);
        }
        let mut adopted = running.clone();
        adopted.adopted = true;
        all.push(adopted);
        let mut young = running.clone();
        young.spawned_at = Some(now);
        all.push(young);
        // Failed by itself, and needed again: bound by the restart policy. (Being
        // healthy or completing clears it, so only these phases can carry it.)
        if !matches!(phase, Phase::Failed | Phase::Pending | Phase::Stopped) {
            continue;
        }
        let mut crashed = base.clone();
        crashed.last_exit = Some(Exit::Code(1));
        crashed.own_failure = true;
        crashed.attempt = 1;
        all.push(crashed.clone());
        crashed.restart_times = (0..3).map(|_| now).collect();
        all.push(crashed);
    }
    all
}

fn inputs() -> Vec<Input> {
    let mut all = vec![
        Input::Start,
        Input::Demand,
        Input::Await("`db` (healthy)".into()),
        Input::DependencyFailed {
            dependency: ServiceName::new("db").unwrap(),
            reason: "failed".into(),
        },
        Input::Stop,
        Input::IdleStop(Duration::from_secs(600)),
        Input::Restart,
        Input::Spawned { pid: 7 },
        Input::SpawnFailed("cannot spawn".into()),
        Input::Ready("probe passed".into()),
        Input::ProbeFailed("connection refused".into()),
        Input::Unhealthy("no heartbeat".into()),
        Input::Recovered,
        Input::Alive(Ok("ok".into())),
        Input::Alive(Err("refused".into())),
        Input::Heartbeat {
            age: Duration::ZERO,
        },
        Input::WatchdogExpired {
            last_status: Some("busy".into()),
        },
        Input::WatchdogTrigger,
        Input::WatchdogChanged(Some(Duration::from_secs(5))),
        Input::WatchdogChanged(None),
        Input::ExtendTimeout(Duration::from_secs(5)),
        Input::Exited(Exit::Code(0)),
        Input::Exited(Exit::Code(1)),
        Input::Exited(Exit::Signal(Signal::SIGKILL)),
        Input::Daemonized {
            left: "pid 8 (`sleep 1000`)".into(),
        },
        Input::MainPid(8),
        Input::MainPidPending("/run/app.pid does not exist".into()),
        Input::OverMemory("80MiB over memory-max 64MiB".into()),
        Input::Exited(Exit::OomKilled),
    ];
    all.extend(Timer::ALL.map(Input::Timer));
    all
}

#[test]
fn the_table_lists_each_transition_once_and_no_self_loops() {
    let set: BTreeSet<_> = ALLOWED.iter().collect();
    assert_eq!(set.len(), ALLOWED.len(), "duplicate rows");
    assert!(ALLOWED.iter().all(|(from, to)| from != to));
}

#[test]
fn inputs_reach_exactly_the_allowed_transitions() {
    let now = Instant::now();
    let mut reached = BTreeSet::new();
    for policy in policies() {
        for state in states(now) {
            for input in inputs() {
                let (next, _) = step(&policy, &state, input.clone(), now);
                assert!(
                    allowed(state.phase, next.phase),
                    "{:?} --{input:?}--> {:?} is forbidden",
                    state.phase,
                    next.phase
                );
                if state.phase != next.phase {
                    reached.insert((state.phase, next.phase));
                }
            }
        }
    }
    let table: BTreeSet<_> = ALLOWED.iter().copied().collect();
    let unreached: Vec<_> = table.difference(&reached).collect();
    assert!(unreached.is_empty(), "no input reaches {unreached:?}");
    // And every pair outside the table is forbidden.
    for from in Phase::ALL {
        for to in Phase::ALL {
            if from != to && !table.contains(&(from, to)) {
                assert!(!reached.contains(&(from, to)));
                assert!(!allowed(from, to));
            }
        }
    }
}

#[test]
fn a_demand_after_a_failure_waits_its_backoff_and_is_charged_to_the_restart_limit() {
    let now = Instant::now();
    let mut p = policy(RestartPolicy::Never, None);
    p.restart_limit = RestartLimit {
        count: 2,
        within: Duration::from_secs(60),
    };
    // It ran, and exited with status 1: restart = "never" gives up at once.
    let (s, _) = step(&p, &State::new(), Input::Start, now);
    let (s, _) = step(&p, &s, Input::Spawned { pid: 7 }, now);
    let (s, _) = step(&p, &s, Input::Exited(Exit::Code(1)), now);
    assert_eq!(s.phase, Phase::Failed);
    assert!(s.own_failure);
    // Needed again (an ensure, a proxied connection): after the backoff, counted.
    let (s, effects) = step(&p, &s, Input::Demand, now);
    assert_eq!(s.phase, Phase::Exited, "{}", s.reason);
    assert!(effects.contains(&Effect::Arm(Timer::Restart, p.backoff.initial)));
    let (s, _) = step(&p, &s, Input::Timer(Timer::Restart), now);
    let (s, _) = step(&p, &s, Input::Spawned { pid: 8 }, now);
    let (s, _) = step(&p, &s, Input::Exited(Exit::Code(1)), now);
    let (s, effects) = step(&p, &s, Input::Demand, now);
    assert_eq!(s.phase, Phase::Exited);
    // The backoff doubles like a restart's.
    assert!(effects.contains(&Effect::Arm(Timer::Restart, p.backoff.initial * 2)));
    let (s, _) = step(&p, &s, Input::Timer(Timer::Restart), now);
    let (s, _) = step(&p, &s, Input::Spawned { pid: 9 }, now);
    let (s, _) = step(&p, &s, Input::Exited(Exit::Code(1)), now);
    // The limit is spent: a demand changes nothing, however often it comes.
    let (after, effects) = step(&p, &s, Input::Demand, now);
    assert_eq!((after.clone(), effects), (s.clone(), vec![]));
    // Asked for by name, it starts, with a fresh budget.
    let (s, effects) = step(&p, &after, Input::Start, now);
    assert_eq!((s.phase, effects), (Phase::Starting, vec![Effect::Spawn]));
    assert!(!s.own_failure);
}

#[test]
fn settled_phases_ignore_everything_but_start_demand_await_and_restart() {
    let now = Instant::now();
    for policy in policies() {
        for phase in [Phase::Stopped, Phase::Completed, Phase::Failed] {
            let state = State::new().to(phase, "test");
            for input in inputs() {
                let expected_change = matches!(
                    input,
                    Input::Start | Input::Demand | Input::Await(_) | Input::Restart
                );
                let (next, effects) = step(&policy, &state, input.clone(), now);
                assert_eq!(
                    next != state,
                    expected_change,
                    "{phase} with {input:?} gave {next:?} {effects:?}"
                );
            }
        }
    }
}

fn run(policy: &Policy, state: &State, inputs: &[Input], now: Instant) -> (State, Vec<Effect>) {
    let mut state = state.clone();
    let mut all = Vec::new();
    for input in inputs {
        let (next, effects) = step(policy, &state, input.clone(), now);
        state = next;
        all.extend(effects);
    }
    (state, all)
}

#[test]
fn a_service_without_readiness_is_healthy_once_spawned() {
    let p = policy(RestartPolicy::OnFailure, None);
    let (s, effects) = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 9 }],
        Instant::now(),
    );
    assert_eq!(s.phase, Phase::Healthy);
    assert_eq!(s.pid, Some(9));
    assert_eq!(effects[0], Effect::Spawn);
    assert!(effects.contains(&Effect::Emit(Emit::Spawned { pid: 9 })));
}

#[test]
fn a_polling_probe_retries_soon_then_on_its_interval_until_ready() {
    let p = policy(RestartPolicy::OnFailure, polling());
    let now = Instant::now();
    let (s, effects) = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 9 }],
        now,
    );
    assert_eq!(s.phase, Phase::Starting);
    assert!(effects.contains(&Effect::Arm(Timer::StartDeadline, Duration::from_secs(60))));
    assert!(effects.contains(&Effect::Probe(ProbeKind::Ready)));
    // Retries come soon after the first refusal, then back off to the interval; from
    // there the attempts keep to the run's grid: an interval apart, from its phase
    // after the spawn. Each answer comes 5 ms after its attempt.
    let mut s = s;
    let interval = Duration::from_millis(100);
    let grid = now + phased(interval, probe_phase(&p, &s));
    let answer = Duration::from_millis(5);
    let mut at = now + answer;
    for round in 0..8 {
        let (failed, effects) = step(&p, &s, Input::ProbeFailed("connection refused".into()), at);
        let wait = match round {
            0..4 => Duration::from_millis(10 << round),
            _ => to_next_slot(grid, interval, at),
        };
        assert_eq!(effects, vec![Effect::Arm(Timer::Probe, wait)]);
        if round >= 4 {
            let attempt = at + wait;
            assert!(attempt > at && wait <= interval, "{wait:?}");
            assert_eq!((attempt - grid).as_nanos() % interval.as_nanos(), 0);
        }
        let (again, effects) = step(&p, &failed, Input::Timer(Timer::Probe), at + wait);
        assert_eq!(effects, vec![Effect::Probe(ProbeKind::Ready)]);
        s = again;
        at += wait + answer;
    }
    let (s, effects) = step(&p, &s, Input::Ready("tcp connected".into()), now);
    assert_eq!(s.phase, Phase::Healthy);
    assert!(effects.contains(&Effect::Disarm(Timer::StartDeadline)));
}

#[test]
fn a_new_run_retries_readiness_soon_again() {
    let p = policy(RestartPolicy::Always, polling());
    let now = Instant::now();
    let refused = || Input::ProbeFailed("connection refused".into());
    let (s, _) = run(
        &p,
        &State::new(),
        &[
            Input::Start,
            Input::Spawned { pid: 9 },
            refused(),
            refused(),
            refused(),
        ],
        now,
    );
    assert_eq!(s.ready_failures, 3);
    let (s, _) = run(
        &p,
        &s,
        &[
            Input::Exited(Exit::Code(1)),
            Input::Timer(Timer::Restart),
            Input::Spawned { pid: 10 },
        ],
        now,
    );
    assert_eq!(s.pid, Some(10));
    let (_, effects) = step(&p, &s, refused(), now);
    assert_eq!(
        effects,
        vec![Effect::Arm(Timer::Probe, Duration::from_millis(10))]
    );
}

#[test]
fn a_missed_start_deadline_stops_the_process_then_fails_with_the_last_attempt() {
    let p = policy(RestartPolicy::Always, polling());
    let now = Instant::now();
    let (s, effects) = run(
        &p,
        &State::new(),
        &[
            Input::Start,
            Input::Spawned { pid: 9 },
            Input::ProbeFailed("connection refused".into()),
            Input::Timer(Timer::StartDeadline),
        ],
        now,
    );
    assert_eq!(s.phase, Phase::Stopping);
    assert!(effects.contains(&Effect::Signal(Signal::SIGTERM)));
    let (s, effects) = step(&p, &s, Input::Exited(Exit::Signal(Signal::SIGTERM)), now);
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(
        s.reason,
        "readiness probe tcp 127.0.0.1:5433 timed out after 1m (last attempt: connection refused)"
    );
    assert!(matches!(
        effects.last(),
        Some(Effect::Emit(Emit::Failed { .. }))
    ));
}

#[test]
fn a_process_that_ignores_the_stop_signal_is_killed_at_the_deadline() {
    let p = policy(RestartPolicy::OnFailure, None);
    let now = Instant::now();
    let (s, _) = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 9 }, Input::Stop],
        now,
    );
    assert_eq!(s.phase, Phase::Stopping);
    let (s, effects) = step(&p, &s, Input::Timer(Timer::StopDeadline), now);
    assert_eq!(effects, vec![Effect::Signal(Signal::SIGKILL)]);
    assert!(
        s.reason.contains("did not stop within 10s of SIGTERM"),
        "{}",
        s.reason
    );
    let (s, _) = step(&p, &s, Input::Exited(Exit::Signal(Signal::SIGKILL)), now);
    assert_eq!(s.phase, Phase::Stopped);
}

#[test]
fn backoff_doubles_up_to_its_cap() {
    let p = policy(RestartPolicy::OnFailure, None);
    let delays: Vec<_> = (1..=6).map(|a| backoff_delay(&p.backoff, a)).collect();
    let ms = |m| Duration::from_millis(m);
    assert_eq!(
        delays,
        [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
    );
    assert_eq!(backoff_delay(&p.backoff, u32::MAX), ms(1000));
}

#[test]
fn failures_restart_with_growing_backoff_until_the_limit() {
    let p = policy(RestartPolicy::OnFailure, None);
    let start = Instant::now();
    let (mut s, _) = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 1 }],
        start,
    );
    let mut delays = Vec::new();
    for i in 0..3u64 {
        let at = start + Duration::from_secs(i);
        let (next, effects) = step(&p, &s, Input::Exited(Exit::Code(1)), at);
        assert_eq!(next.phase, Phase::Exited, "{}", next.reason);
        delays.extend(effects.iter().filter_map(|e| match e {
            Effect::Arm(Timer::Restart, d) => Some(*d),
            _ => None,
        }));
        (s, _) = run(
            &p,
            &next,
            &[Input::Timer(Timer::Restart), Input::Spawned { pid: 2 }],
            at,
        );
        assert_eq!(s.phase, Phase::Healthy);
    }
    assert_eq!(delays, [100, 200, 400].map(Duration::from_millis));
    assert_eq!(s.restarts, 3);
    let (s, _) = step(
        &p,
        &s,
        Input::Exited(Exit::Code(1)),
        start + Duration::from_secs(3),
    );
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(
        s.reason,
        "exited with status 1; gave up after 3 restarts within 1m (restart-limit)"
    );
}

#[test]
fn restarts_outside_the_window_do_not_count_and_a_long_healthy_run_resets_backoff() {
    let p = policy(RestartPolicy::Always, None);
    let start = Instant::now();
    let (mut s, _) = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 1 }],
        start,
    );
    // Crash every 61 s after 61 s of health: never over the limit, never backing off.
    for i in 1..10u64 {
        let at = start + Duration::from_secs(61 * i);
        let (next, effects) = step(&p, &s, Input::Exited(Exit::Code(0)), at);
        assert_eq!(next.phase, Phase::Exited);
        assert!(effects.contains(&Effect::Arm(Timer::Restart, Duration::from_millis(100))));
        (s, _) = run(
            &p,
            &next,
            &[Input::Timer(Timer::Restart), Input::Spawned { pid: 2 }],
            at,
        );
    }
}

#[test]
fn a_clean_exit_completes_unless_restart_is_always() {
    let now = Instant::now();
    for (restart, phase) in [
        (RestartPolicy::Never, Phase::Completed),
        (RestartPolicy::OnFailure, Phase::Completed),
        (RestartPolicy::Always, Phase::Exited),
    ] {
        let p = policy(restart, None);
        let (s, _) = run(
            &p,
            &State::new(),
            &[
                Input::Start,
                Input::Spawned { pid: 1 },
                Input::Exited(Exit::Code(0)),
            ],
            now,
        );
        assert_eq!(s.phase, phase, "{restart:?}");
    }
    let p = policy(RestartPolicy::Never, None);
    let (s, _) = run(
        &p,
        &State::new(),
        &[
            Input::Start,
            Input::Spawned { pid: 1 },
            Input::Exited(Exit::Code(3)),
        ],
        now,
    );
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.reason, "exited with status 3 (restart = \"never\")");
}

#[test]
fn a_failed_dependency_fails_a_pending_service_with_the_chain() {
    let p = policy(RestartPolicy::OnFailure, None);
    let now = Instant::now();
    let (s, _) = step(
        &p,
        &State::new(),
        Input::Await("`db` (healthy)".into()),
        now,
    );
    assert_eq!(s.phase, Phase::Pending);
    assert_eq!(s.reason, "waiting for `db` (healthy)");
    let reason = "dependency `db` failed: exited with status 1 (restart = \"never\")";
    let failed = Input::DependencyFailed {
        dependency: ServiceName::new("db").unwrap(),
        reason: "exited with status 1 (restart = \"never\")".into(),
    };
    let (s, effects) = step(&p, &s, failed, now);
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(s.reason, reason);
    // The chain is data: the next link is named, not parsed out of the words.
    assert_eq!(s.blocked_by.as_ref().map(ServiceName::as_str), Some("db"));
    assert_eq!(
        effects,
        vec![Effect::Emit(Emit::Failed {
            reason: reason.into()
        })]
    );
}

#[test]
fn unhealthy_restarts_or_only_reports() {
    let now = Instant::now();
    let mut p = policy(RestartPolicy::OnFailure, None);
    let (healthy, _) = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 1 }],
        now,
    );
    let (s, _) = step(
        &p,
        &healthy,
        Input::Unhealthy("no heartbeat for 30s".into()),
        now,
    );
    assert_eq!(
        (s.phase, s.after_stop.clone()),
        (
            Phase::Stopping,
            AfterStop::Heal(Cause::Liveness("no heartbeat for 30s".into()))
        )
    );
    let (s, effects) = step(&p, &s, Input::Exited(Exit::Signal(Signal::SIGTERM)), now);
    assert_eq!(s.phase, Phase::Starting);
    assert!(effects.contains(&Effect::Spawn));
    p.on_unhealthy = OnUnhealthy::Report;
    let (s, _) = step(
        &p,
        &healthy,
        Input::Unhealthy("no heartbeat for 30s".into()),
        now,
    );
    assert_eq!(s.phase, Phase::Unhealthy);
    assert_eq!(s.reason, "no heartbeat for 30s");
    let (s, _) = step(&p, &s, Input::Recovered, now);
    assert_eq!(s.phase, Phase::Healthy);
}

#[test]
fn stale_inputs_change_nothing() {
    let p = policy(RestartPolicy::OnFailure, polling());
    let now = Instant::now();
    // Readiness before the spawn finished, an exit with no process, a probe timer after ready.
    let (starting, _) = step(&p, &State::new(), Input::Start, now);
    for input in [
        Input::Ready("x".into()),
        Input::Exited(Exit::Code(1)),
        Input::Timer(Timer::Probe),
    ] {
        assert_eq!(step(&p, &starting, input, now).0, starting);
    }
}

fn healthy(p: &Policy, now: Instant) -> State {
    let (s, effects) = run(
        p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 1 }],
        now,
    );
    assert_eq!(s.phase, Phase::Healthy);
    assert!(effects.contains(&Effect::Arm(Timer::Watchdog, Duration::from_secs(30))));
    let first = phased(Duration::from_secs(1), probe_phase(p, &s));
    assert!(effects.contains(&Effect::Arm(Timer::Alive, first)));
    s
}

#[test]
fn liveness_keeps_to_its_grid_when_answers_come_late() {
    let now = Instant::now();
    let p = watched(RestartPolicy::OnFailure);
    let s = healthy(&p, now);
    let interval = Duration::from_secs(1);
    let first = now + phased(interval, probe_phase(&p, &s));
    // An answer soon after its attempt: the next slot is one interval after it.
    let answered = first + Duration::from_millis(30);
    let (s, effects) = step(&p, &s, Input::Alive(Ok("ok".into())), answered);
    assert_eq!(
        effects,
        vec![Effect::Arm(Timer::Alive, Duration::from_millis(970))]
    );
    // The supervisor held up for 2.5 intervals: the next attempt goes back to the grid,
    // not one interval after the late answer.
    let late = first + Duration::from_millis(2500);
    let (_, effects) = step(&p, &s, Input::Alive(Ok("ok".into())), late);
    assert_eq!(
        effects,
        vec![Effect::Arm(Timer::Alive, Duration::from_millis(500))]
    );
}

#[test]
fn probe_phases_are_stable_per_run_and_spread_over_services_and_runs() {
    let now = Instant::now();
    let interval = Duration::from_secs(1);
    let mut phases = Vec::new();
    for service in 0..1000 {
        let mut p = watched(RestartPolicy::Always);
        p.phase_seed = name_hash(&format!("s{service:05}"));
        let s = healthy(&p, now);
        // The same run has the same phase however often it is asked.
        assert_eq!(probe_phase(&p, &s), probe_phase(&p, &s));
        let first = phased(interval, probe_phase(&p, &s));
        assert!(
            first >= interval / 2 && first < interval * 3 / 2,
            "{first:?}"
        );
        phases.push(probe_phase(&p, &s));
        // The next run of the same service falls elsewhere.
        let mut next_run = s.clone();
        next_run.runs += 1;
        assert_ne!(probe_phase(&p, &s), probe_phase(&p, &next_run));
    }
    // A thousand services started together: every tenth of the interval holds about a
    // tenth of them.
    let mut tenths = [0usize; 10];
    for phase in &phases {
        tenths[(phase * 10.0) as usize] += 1;
    }
    assert!(
        tenths.iter().all(|&n| (50..=150).contains(&n)),
        "{tenths:?}"
    );
}

#[test]
fn a_missed_heartbeat_makes_the_service_unhealthy_and_restarts_it() {
    let now = Instant::now();
    let p = watched(RestartPolicy::OnFailure);
    let s = healthy(&p, now);
    let (s, effects) = step(
        &p,
        &s,
        Input::Heartbeat {
            age: Duration::from_secs(4),
        },
        now,
    );
    assert_eq!(
        effects,
        vec![Effect::Arm(Timer::Watchdog, Duration::from_secs(26))]
    );
    let expired = Input::WatchdogExpired {
        last_status: Some("step 3/7".into()),
    };
    let (s, effects) = step(&p, &s, expired, now);
    assert_eq!(s.phase, Phase::Stopping);
    assert_eq!(
        s.after_stop,
        AfterStop::Heal(Cause::Watchdog(
            "no heartbeat for 30s (last: STATUS=step 3/7)".into()
        ))
    );
    assert!(effects.contains(&Effect::Emit(Emit::Unhealthy {
        reason: "no heartbeat for 30s (last: STATUS=step 3/7)".into()
    })));
    assert!(
        effects.contains(&Effect::Signal(Signal::SIGCONT)),
        "a stopped process must get to act"
    );
}

#[test]
fn with_report_only_a_hung_service_heals_when_heartbeats_return() {
    let now = Instant::now();
    let mut p = watched(RestartPolicy::Always);
    p.on_unhealthy = OnUnhealthy::Report;
    let s = healthy(&p, now);
    let (s, _) = step(&p, &s, Input::WatchdogTrigger, now);
    assert_eq!((s.phase, s.hung), (Phase::Unhealthy, true));
    // Liveness passing does not clear a hang; a heartbeat does.
    let (s, _) = step(&p, &s, Input::Alive(Ok("fine".into())), now);
    assert_eq!(s.phase, Phase::Unhealthy);
    let (s, effects) = step(
        &p,
        &s,
        Input::Heartbeat {
            age: Duration::ZERO,
        },
        now,
    );
    assert_eq!(s.phase, Phase::Healthy);
    assert!(effects.contains(&Effect::Arm(Timer::Watchdog, Duration::from_secs(30))));
}

#[test]
fn liveness_needs_failures_in_a_row_and_flapping_is_tolerated() {
    let now = Instant::now();
    let p = watched(RestartPolicy::OnFailure);
    let mut s = healthy(&p, now);
    // Each answer 10 ms after its slot: the next slot is 990 ms away.
    let mut slot = now + phased(Duration::from_secs(1), probe_phase(&p, &s));
    // fail, fail, pass, fail, fail: never three in a row.
    for ok in [false, false, true, false, false] {
        let result = if ok {
            Ok("200".to_owned())
        } else {
            Err("503".to_owned())
        };
        let answered = slot + Duration::from_millis(10);
        let (next, effects) = step(&p, &s, Input::Alive(result), answered);
        assert_eq!(next.phase, Phase::Healthy);
        assert_eq!(
            effects,
            vec![Effect::Arm(Timer::Alive, Duration::from_millis(990))]
        );
        s = next;
        slot += Duration::from_secs(1);
    }
    let (s, effects) = step(&p, &s, Input::Alive(Err("503".into())), now);
    assert_eq!(s.phase, Phase::Stopping);
    assert!(
        effects.contains(&Effect::Emit(Emit::Unhealthy {
            reason:
                "liveness probe http http://127.0.0.1:1/health failed 3 times in a row (last: 503)"
                    .into()
        }))
    );
}

#[test]
fn an_unhealthy_service_needs_successes_in_a_row_to_be_healthy_again() {
    let now = Instant::now();
    let mut p = watched(RestartPolicy::OnFailure);
    p.on_unhealthy = OnUnhealthy::Report;
    let mut s = healthy(&p, now);
    for _ in 0..3 {
        s = step(&p, &s, Input::Alive(Err("503".into())), now).0;
    }
    assert_eq!(s.phase, Phase::Unhealthy);
    for (ok, phase) in [
        (true, Phase::Unhealthy),
        (false, Phase::Unhealthy),
        (true, Phase::Unhealthy),
        (true, Phase::Healthy),
    ] {
        let result = if ok {
            Ok("200".to_owned())
        } else {
            Err("503".to_owned())
        };
        s = step(&p, &s, Input::Alive(result), now).0;
        assert_eq!(s.phase, phase);
    }
}

#[test]
fn the_service_may_move_its_deadlines() {
    let now = Instant::now();
    let p = watched(RestartPolicy::OnFailure);
    let s = healthy(&p, now);
    let (s, effects) = step(
        &p,
        &s,
        Input::WatchdogChanged(Some(Duration::from_secs(5))),
        now,
    );
    assert_eq!(
        effects,
        vec![Effect::Arm(Timer::Watchdog, Duration::from_secs(5))]
    );
    let (s, effects) = step(&p, &s, Input::WatchdogChanged(None), now);
    assert_eq!(effects, vec![Effect::Disarm(Timer::Watchdog)]);
    let (s, _) = step(&p, &s, Input::WatchdogExpired { last_status: None }, now);
    assert_eq!(s.phase, Phase::Healthy, "no deadline, no hang");
    let mut starting = policy(RestartPolicy::OnFailure, pushed());
    starting.watchdog = None;
    let (s, _) = run(
        &starting,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 1 }],
        now,
    );
    let (_, effects) = step(
        &starting,
        &s,
        Input::ExtendTimeout(Duration::from_secs(90)),
        now,
    );
    assert_eq!(
        effects,
        vec![Effect::Extend(
            Timer::StartDeadline,
            Duration::from_secs(90)
        )]
    );
}

#[test]
fn restarts_for_health_are_charged_to_the_restart_budget() {
    let now = Instant::now();
    let p = watched(RestartPolicy::Always);
    let mut s = healthy(&p, now);
    for round in 0..4 {
        let (stopping, _) = step(&p, &s, Input::WatchdogTrigger, now);
        let (next, _) = step(
            &p,
            &stopping,
            Input::Exited(Exit::Signal(Signal::SIGTERM)),
            now,
        );
        if round < 3 {
            assert_eq!(next.phase, Phase::Starting, "round {round}");
            s = step(&p, &next, Input::Spawned { pid: 2 }, now).0;
        } else {
            assert_eq!(next.phase, Phase::Failed);
            assert_eq!(
                next.reason,
                "the service reported itself hung (WATCHDOG=trigger); gave up after 3 restarts within 1m (restart-limit)"
            );
        }
    }
}

/// The `restarting` events and the recorded run ends among `effects`.
fn restarts_and_ends(effects: &[Effect]) -> (Vec<Cause>, Vec<String>) {
    let restarts = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Emit(Emit::Restarting { cause, .. }) => Some(cause.clone()),
            _ => None,
        })
        .collect();
    let ends = effects
        .iter()
        .filter_map(|e| match e {
            Effect::EndRun(reason) => Some(reason.clone()),
            _ => None,
        })
        .collect();
    (restarts, ends)
}

#[test]
fn every_restart_has_one_restarting_event_with_its_cause_and_the_run_ends_with_it() {
    let now = Instant::now();
    let p = watched(RestartPolicy::OnFailure);
    let term = || Input::Exited(Exit::Signal(Signal::SIGTERM));
    let heartbeat = "no heartbeat for 30s (last: STATUS=busy)";
    let liveness =
        "liveness probe http http://127.0.0.1:1/health failed 3 times in a row (last: 503)";
    let cases: Vec<(Vec<Input>, Cause, String)> = vec![
        (
            vec![Input::Exited(Exit::Code(3))],
            Cause::Exit(Exit::Code(3)),
            "exited with status 3; restarting in 100ms".to_owned(),
        ),
        (
            vec![
                Input::WatchdogExpired {
                    last_status: Some("busy".into()),
                },
                term(),
            ],
            Cause::Watchdog(heartbeat.into()),
            format!("stopped to restart: {heartbeat}; exited on SIGTERM"),
        ),
        (
            vec![
                Input::Alive(Err("503".into())),
                Input::Alive(Err("503".into())),
                Input::Alive(Err("503".into())),
                term(),
            ],
            Cause::Liveness(liveness.into()),
            format!("stopped to restart: {liveness}; exited on SIGTERM"),
        ),
        (
            vec![Input::Restart, term()],
            Cause::Asked,
            "stopped to restart on request; exited on SIGTERM".to_owned(),
        ),
    ];
    for (inputs, cause, end) in cases {
        let (s, effects) = run(&p, &healthy(&p, now), &inputs, now);
        let (restarts, ends) = restarts_and_ends(&effects);
        assert_eq!(restarts, std::slice::from_ref(&cause), "{inputs:?}");
        assert_eq!(ends, [end], "{inputs:?}");
        // The event comes before the next spawn, so it belongs to the run that ended.
        let restarting = effects
            .iter()
            .position(|e| matches!(e, Effect::Emit(Emit::Restarting { .. })));
        let spawn = effects.iter().position(|e| *e == Effect::Spawn);
        assert!(spawn.is_none() || restarting < spawn, "{effects:?}");
        assert!(matches!(s.phase, Phase::Starting | Phase::Exited), "{s:?}");
    }
    assert_eq!(Cause::Watchdog(String::new()).kind(), "watchdog");
    assert_eq!(Cause::StartDeadline(String::new()).kind(), "start-deadline");
}

#[test]
fn a_run_ended_by_the_start_deadline_is_recorded_as_such_and_not_restarted() {
    let p = policy(RestartPolicy::Always, polling());
    let now = Instant::now();
    let (_, effects) = run(
        &p,
        &State::new(),
        &[
            Input::Start,
            Input::Spawned { pid: 9 },
            Input::Timer(Timer::StartDeadline),
            Input::Exited(Exit::Signal(Signal::SIGTERM)),
        ],
        now,
    );
    let (restarts, ends) = restarts_and_ends(&effects);
    assert!(restarts.is_empty());
    assert_eq!(
        ends,
        ["stopped: readiness probe tcp 127.0.0.1:5433 timed out after 1m; exited on SIGTERM"]
    );
}

#[test]
fn a_stop_on_request_or_for_idleness_does_not_read_as_a_crash() {
    let now = Instant::now();
    let p = policy(RestartPolicy::OnFailure, None);
    let running = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 9 }],
        now,
    )
    .0;
    let term = Input::Exited(Exit::Signal(Signal::SIGTERM));
    for (stop, reason, cause) in [
        (
            Input::Stop,
            "stopped on request; exited on SIGTERM",
            Cause::Asked,
        ),
        (
            Input::IdleStop(Duration::from_secs(600)),
            "stopped: idle for 10m; exited on SIGTERM",
            Cause::Idle(Duration::from_secs(600)),
        ),
    ] {
        let (s, effects) = run(&p, &running, &[stop, term.clone()], now);
        assert_eq!((s.phase, s.reason.as_str()), (Phase::Stopped, reason));
        assert!(effects.contains(&Effect::Emit(Emit::Stopped {
            how: reason.into(),
            cause
        })));
        assert_eq!(restarts_and_ends(&effects).1, [reason]);
    }
    // One that would not stop says it was killed, and why.
    let (s, _) = run(
        &p,
        &running,
        &[
            Input::Stop,
            Input::Timer(Timer::StopDeadline),
            Input::Exited(Exit::Signal(Signal::SIGKILL)),
        ],
        now,
    );
    assert_eq!(
        s.reason,
        "stopped on request; killed by SIGKILL after it did not stop within 10s of SIGTERM"
    );
    // One that handles the stop signal and exits with a status of its own says so.
    let (s, _) = run(
        &p,
        &running,
        &[Input::Stop, Input::Exited(Exit::Code(0))],
        now,
    );
    assert_eq!(s.reason, "stopped on request; exited with status 0");
}

#[test]
fn a_program_that_goes_into_the_background_fails_with_the_fix() {
    let now = Instant::now();
    for restart in [RestartPolicy::OnFailure, RestartPolicy::Always] {
        let p = policy(restart, None);
        let (s, effects) = run(
            &p,
            &State::new(),
            &[
                Input::Start,
                Input::Spawned { pid: 9 },
                Input::Daemonized {
                    left: "pid 10 (`sleep 1000`)".into(),
                },
            ],
            now + Duration::from_millis(20),
        );
        assert_eq!(
            s.phase,
            Phase::Failed,
            "{restart:?}: not retried, not completed"
        );
        assert!(
            s.reason.starts_with(
                "went into the background: exited with status 0 after 0s leaving pid 10 (`sleep 1000`) running"
            ),
            "{}",
            s.reason
        );
        assert!(s.reason.contains("`--nodaemon`") && s.reason.contains("set `pidfile`"));
        assert!(!s.reason.contains('\n'));
        assert_eq!(
            restarts_and_ends(&effects).1,
            std::slice::from_ref(&s.reason)
        );
    }
    // Long after its start, an exit 0 that leaves something is an exit 0 (the leftover
    // was stopped), not a daemon.
    let p = policy(RestartPolicy::OnFailure, None);
    let (s, _) = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 9 }],
        now,
    );
    let (s, _) = step(
        &p,
        &s,
        Input::Daemonized {
            left: "pid 10 (`sleep 1000`)".into(),
        },
        now + Duration::from_secs(3600),
    );
    assert_eq!(s.phase, Phase::Completed);
}

#[test]
fn with_a_pidfile_the_daemon_is_taken_over_once_the_launcher_exits() {
    let now = Instant::now();
    let p = forking(RestartPolicy::OnFailure, None);
    let (s, effects) = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 9 }],
        now,
    );
    assert_eq!(s.phase, Phase::Starting);
    assert!(effects.contains(&Effect::Arm(Timer::StartDeadline, Duration::from_secs(60))));
    // The launcher exits 0 (leaving its daemon): the pid is looked for.
    let (s, effects) = step(
        &p,
        &s,
        Input::Daemonized {
            left: "pid 10 (`app`)".into(),
        },
        now,
    );
    assert_eq!(
        (s.phase, s.awaiting_pid, s.pid),
        (Phase::Starting, true, Some(9))
    );
    assert_eq!(effects, [Effect::FindMainPid]);
    let (s, _) = step(&p, &s, Input::MainPidPending("not yet".into()), now);
    let (s, effects) = step(&p, &s, Input::MainPid(10), now);
    assert_eq!(
        (s.phase, s.pid, s.adopted),
        (Phase::Healthy, Some(10), true)
    );
    assert_eq!(s.reason, "running (daemon pid 10 from /run/app.pid)");
    assert!(effects.contains(&Effect::Disarm(Timer::StartDeadline)));
    // Its exit is the run's end, as for any process.
    let (s, effects) = step(&p, &s, Input::Exited(Exit::Code(1)), now);
    assert_eq!(s.phase, Phase::Exited);
    assert_eq!(restarts_and_ends(&effects).0, [Cause::Exit(Exit::Code(1))]);
    // And stopping it signals it, then waits for its exit.
    let (running, _) = run(
        &p,
        &State::new(),
        &[
            Input::Start,
            Input::Spawned { pid: 9 },
            Input::Exited(Exit::Code(0)),
            Input::MainPid(10),
            Input::Stop,
        ],
        now,
    );
    assert_eq!((running.phase, running.pid), (Phase::Stopping, Some(10)));
}

#[test]
fn with_a_pidfile_readiness_is_looked_for_once_the_daemon_is_known() {
    let now = Instant::now();
    let p = forking(RestartPolicy::OnFailure, polling());
    let (s, effects) = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 9 }],
        now,
    );
    assert!(!effects.contains(&Effect::Probe(ProbeKind::Ready)));
    let (s, effects) = run(
        &p,
        &s,
        &[Input::Exited(Exit::Code(0)), Input::MainPid(10)],
        now,
    );
    assert_eq!(s.phase, Phase::Starting);
    assert!(effects.contains(&Effect::Probe(ProbeKind::Ready)));
    // A pushed signal that came before the daemon was known counts once it is.
    let p = forking(RestartPolicy::OnFailure, pushed());
    let (s, _) = run(
        &p,
        &State::new(),
        &[
            Input::Start,
            Input::Spawned { pid: 9 },
            Input::Ready("READY=1".into()),
            Input::Exited(Exit::Code(0)),
            Input::MainPid(10),
        ],
        now,
    );
    assert_eq!(s.phase, Phase::Healthy);
}

#[test]
fn with_a_pidfile_no_pid_by_the_deadline_fails_and_a_stop_meanwhile_ends_the_run_at_once() {
    let now = Instant::now();
    let p = forking(RestartPolicy::Always, None);
    let (launched, _) = run(
        &p,
        &State::new(),
        &[
            Input::Start,
            Input::Spawned { pid: 9 },
            Input::Exited(Exit::Code(0)),
            Input::MainPidPending("/run/app.pid does not exist".into()),
        ],
        now,
    );
    let (s, effects) = step(&p, &launched, Input::Timer(Timer::StartDeadline), now);
    assert_eq!(s.phase, Phase::Failed);
    assert_eq!(
        s.reason,
        "no usable pid in /run/app.pid within 1m (last attempt: /run/app.pid does not exist)"
    );
    assert!(effects.contains(&Effect::Signal(Signal::SIGKILL)));
    assert_eq!(restarts_and_ends(&effects).1.len(), 1);
    // No exit will come: a stop ends the run now.
    let (s, effects) = step(&p, &launched, Input::Stop, now);
    assert_eq!(
        (s.phase, s.pid, s.awaiting_pid),
        (Phase::Stopped, None, false)
    );
    assert!(effects.contains(&Effect::Signal(Signal::SIGKILL)));
    assert!(
        s.reason
            .starts_with("stopped on request; its launcher had exited")
    );
    // A launcher that never exits is told what `pidfile` needs.
    let (s, _) = run(
        &p,
        &State::new(),
        &[
            Input::Start,
            Input::Spawned { pid: 9 },
            Input::Timer(Timer::StartDeadline),
        ],
        now,
    );
    assert!(
        s.reason.contains("the launcher was still running after 1m"),
        "{}",
        s.reason
    );
}

#[test]
fn over_memory_restarts_as_a_heal_or_fails_when_it_never_restarts() {
    let now = Instant::now();
    let over = || Input::OverMemory("its processes hold 80MiB, over memory-max 64MiB".into());
    let p = policy(RestartPolicy::OnFailure, None);
    let (up, _) = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 1 }],
        now,
    );
    let (s, effects) = step(&p, &up, over(), now);
    assert_eq!(s.phase, Phase::Stopping);
    assert!(
        effects.contains(&Effect::Signal(Signal::SIGTERM)),
        "{effects:?}"
    );
    let (s, effects) = step(&p, &s, Input::Exited(Exit::Signal(Signal::SIGTERM)), now);
    assert_eq!(s.phase, Phase::Starting);
    let (restarts, ends) = restarts_and_ends(&effects);
    assert_eq!(restarts.len(), 1);
    assert_eq!(restarts[0].kind(), "memory-max");
    assert!(ends[0].contains("over memory-max 64MiB"), "{ends:?}");
    assert_eq!(s.restart_times.len(), 1, "charged to the restart limit");

    let never = policy(RestartPolicy::Never, None);
    let (s, _) = step(&never, &up, over(), now);
    let (s, _) = step(
        &never,
        &s,
        Input::Exited(Exit::Signal(Signal::SIGTERM)),
        now,
    );
    assert_eq!(s.phase, Phase::Failed);
    assert!(s.reason.contains("over memory-max"), "{}", s.reason);
}

#[test]
fn an_oom_kill_is_an_exit_with_its_own_cause() {
    let now = Instant::now();
    let p = policy(RestartPolicy::OnFailure, None);
    let (up, _) = run(
        &p,
        &State::new(),
        &[Input::Start, Input::Spawned { pid: 1 }],
        now,
    );
    let (s, effects) = step(&p, &up, Input::Exited(Exit::OomKilled), now);
    assert_eq!(s.phase, Phase::Exited);
    assert!(effects.contains(&Effect::Emit(Emit::Exited {
        exit: Exit::OomKilled
    })));
    let (restarts, _) = restarts_and_ends(&effects);
    assert_eq!(restarts[0].kind(), "oom-killed");
    assert_eq!(Exit::OomKilled.parts(), (None, Some(Signal::SIGKILL)));
}
