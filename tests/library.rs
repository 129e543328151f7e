//! The supervisor as a library, in-process, on tokio's paused clock: restart delays of
//! tens of seconds pass in no real time, with real processes.
//!
//! A test binary of its own: a process running a supervisor becomes a subreaper and
//! reaps every child it has, which would take the children of unrelated tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use muster::supervisor::{EventKind, Phase, Supervisor};

#[path = "common/tagged.rs"]
mod tagged;

/// Aborts the test process if a test outlives `limit` of real time. (A tokio timeout
/// cannot serve: on the paused clock it would fire as soon as the runtime idles.)
struct RealTimeLimit(Arc<AtomicBool>);

impl RealTimeLimit {
    fn new(limit: Duration) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&done);
        std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if flag.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("test exceeded {limit:?} of real time");
            std::process::abort();
        });
        Self(done)
    }
}

impl Drop for RealTimeLimit {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn spec(dir: &std::path::Path, services: &str) -> muster::config::Spec {
    let source = format!(
        "[settings]\nstate-dir = \"{}/state\"\n\n{services}",
        dir.display()
    );
    let path = dir.join("muster.toml");
    muster::config::from_source(&path, &path, source)
        .map_err(|e| e.into_report().render_plain())
        .expect("valid config")
        .spec
}

#[tokio::test(start_paused = true)]
async fn backoff_and_restart_limit_follow_the_runtime_clock() {
    let _limit = RealTimeLimit::new(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let spec = spec(
        dir.path(),
        r#"
[services.flaky]
command = ["false"]
backoff = { initial = "10s", max = "40s" }
restart-limit = { count = 3, within = "10m" }
"#,
    );
    let supervisor = Supervisor::new(spec).unwrap();
    let mut events = supervisor.bus().subscribe();
    let began = tokio::time::Instant::now();
    let real_began = Instant::now();
    supervisor.boot(&[]).await;
    let mut delays = Vec::new();
    let reason = loop {
        let event = events.recv().await.unwrap();
        match event.kind {
            EventKind::Restarting => delays.push(event.data["delay_ms"].as_u64().unwrap()),
            EventKind::Failed => break event.message.clone(),
            _ => {}
        }
    };
    assert_eq!(delays, [10_000, 20_000, 40_000]);
    assert_eq!(
        reason,
        "exited with status 1; gave up after 3 restarts within 10m (restart-limit)"
    );
    // The clock moved by the delays less at most a fifth of jitter; real time did not.
    assert!(
        began.elapsed() >= Duration::from_secs(56),
        "{:?}",
        began.elapsed()
    );
    assert!(real_began.elapsed() < Duration::from_secs(20));
    let status = supervisor.service("flaky").unwrap().status();
    assert_eq!((status.phase, status.restarts), (Phase::Failed, 3));
    supervisor.shutdown().await;
}

/// Random sequences of requests, sent a small batch at a time, against a supervisor of
/// four `sleep` services (`b` waits on `a` healthy, `c` on `b` started, `d` alone),
/// with the shutdown begun at a random point and more requests after it.
mod one_actor_per_service {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use muster::supervisor::{Event, EventKind, Failure, Lifecycle, Supervisor};
    use proptest::prelude::*;

    use super::RealTimeLimit;

    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    /// How long an `ensure` may wait: one whose dependency a stop in the same batch
    /// took away waits for it in vain until then.
    const ENSURE_WAIT: Duration = Duration::from_secs(2);
    /// Every request is answered well within this (`sleep` stops at once).
    const ANSWER_WITHIN: Duration = Duration::from_secs(20);

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        Start(usize),
        Stop(usize),
        Restart(usize),
        Ensure(usize),
        /// To the other of the two configs (they differ in `b`'s environment).
        Reload,
        /// Begins the shutdown without waiting for it.
        Shutdown,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..NAMES.len()).prop_map(Op::Start),
            (0..NAMES.len()).prop_map(Op::Stop),
            (0..NAMES.len()).prop_map(Op::Restart),
            (0..NAMES.len()).prop_map(Op::Ensure),
            Just(Op::Reload),
        ]
    }

    /// The requests in order, the shutdown among them (never last), cut in batches of
    /// one to four.
    fn plan() -> impl Strategy<Value = Vec<Vec<Op>>> {
        (
            proptest::collection::vec(op(), 4..14),
            any::<proptest::sample::Index>(),
            proptest::collection::vec(1..=4usize, 14),
        )
            .prop_map(|(mut ops, at, sizes)| {
                ops.insert(at.index(ops.len()), Op::Shutdown);
                let mut batches = Vec::new();
                let mut rest = ops.as_slice();
                for size in sizes.into_iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (batch, after) = rest.split_at(size.min(rest.len()));
                    batches.push(batch.to_vec());
                    rest = after;
                }
                batches
            })
    }

    fn spec(dir: &std::path::Path, tag: &str, version: u32) -> muster::config::Spec {
        let env = format!("env = {{ MUSTER_TEST_TAG = \"{tag}\" }}");
        super::spec(
            dir,
            &format!(
                r#"
[services.a]
command = ["sleep", "1000"]
{env}

[services.b]
command = ["sleep", "1000"]
depends-on = ["a"]
env = {{ MUSTER_TEST_TAG = "{tag}", VERSION = "{version}" }}

[services.c]
command = ["sleep", "1000"]
depends-on = {{ b = "started" }}
{env}

[services.d]
command = ["sleep", "1000"]
{env}
"#
            ),
        )
    }

    /// Live processes carrying `MUSTER_TEST_TAG=tag`, by service.
    fn live(tag: &str) -> BTreeMap<String, Vec<u32>> {
        let mut by_service: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (pid, service) in super::tagged::tagged(tag) {
            by_service.entry(service).or_default().push(pid);
        }
        by_service
    }

    /// Kills, when dropped, whatever of the case is still alive: a case that fails
    /// returns before its shutdown.
    struct Sweep(String);

    impl Drop for Sweep {
        fn drop(&mut self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left: Vec<u32> = live(&self.0).into_values().flatten().collect();
                if left.is_empty() || Instant::now() > deadline {
                    return;
                }
                for pid in left {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Samples `/proc` every few milliseconds until stopped; the first sample where a
    /// service had two live processes.
    fn sample(tag: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Option<String>> {
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let now = live(&tag);
                if now.values().any(|pids| pids.len() > 1) {
                    return Some(format!("{now:?}"));
                }
                // The sampling period, not a wait for anything.
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        })
    }

    /// What a request got.
    #[derive(Debug)]
    enum Answer {
        Done,
        ShuttingDown,
        /// No answer within [`ANSWER_WITHIN`]: always wrong.
        Hung,
        /// Why, shown (through `Debug`) when the answer was wrong.
        #[allow(dead_code)]
        Other(String),
    }

    fn answer<T>(result: Result<T, Failure>) -> Answer {
        match result {
            Ok(_) => Answer::Done,
            Err(Failure::ShuttingDown) => Answer::ShuttingDown,
            Err(other) => Answer::Other(other.to_string()),
        }
    }

    async fn case(batches: Vec<Vec<Op>>) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let tag = dir.path().display().to_string();
        let _sweep = Sweep(tag.clone());
        let specs = [spec(dir.path(), &tag, 1), spec(dir.path(), &tag, 2)];
        let supervisor = Supervisor::new(specs[0].clone()).unwrap();
        let seen = Arc::new(Mutex::new(Vec::<Arc<Event>>::new()));
        let collector = {
            let mut feed = supervisor.bus().feed();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                while let Some(event) = feed.recv().await {
                    seen.lock().unwrap().push(event);
                }
            })
        };
        supervisor.boot(&[]).await;
        let stop_sampling = Arc::new(AtomicBool::new(false));
        let sampler = sample(tag.clone(), Arc::clone(&stop_sampling));

        let mut reloads = 0usize;
        let mut in_force = 0usize;
        // Whether the shutdown was asked for, and the newest event once the owner had
        // begun it (every event published until then released).
        let mut shutdown_asked = false;
        let mut shutdown_from: Option<u64> = None;
        let mut wrong = Vec::new();
        for batch in &batches {
            // Each request is sent at its future's first poll, and `join_all` polls in
            // order: the owner receives them in the batch's order.
            let mut after_shutdown = shutdown_asked;
            let calls = batch.iter().map(|&op| {
                let refused = after_shutdown;
                let target = match op {
                    Op::Reload => {
                        reloads += 1;
                        reloads % 2
                    }
                    Op::Shutdown => {
                        after_shutdown = true;
                        0
                    }
                    _ => 0,
                };
                let supervisor = &supervisor;
                let specs = &specs;
                async move {
                    let request = async {
                        match op {
                            Op::Start(i) => answer(supervisor.start(NAMES[i]).await),
                            Op::Stop(i) => answer(supervisor.stop(NAMES[i]).await),
                            Op::Restart(i) => answer(supervisor.restart(NAMES[i]).await),
                            Op::Ensure(i) => answer(supervisor.ensure(NAMES[i], ENSURE_WAIT).await),
                            Op::Reload => answer(supervisor.reload(specs[target].clone()).await),
                            Op::Shutdown => {
                                supervisor.begin_shutdown("the test");
                                Answer::Done
                            }
                        }
                    };
                    let got = tokio::time::timeout(ANSWER_WITHIN, request)
                        .await
                        .unwrap_or(Answer::Hung);
                    (op, target, refused, got)
                }
            });
            let batch_began_after = shutdown_asked;
            for (op, target, refused, got) in futures_util::future::join_all(calls).await {
                shutdown_asked |= op == Op::Shutdown;
                if op == Op::Reload && matches!(got, Answer::Done) {
                    in_force = target;
                }
                // An ensure of a healthy service answers without asking the owner: it
                // sees the shutdown once the owner has begun it, so only from the next
                // batch on.
                let strict = refused && (batch_began_after || !matches!(op, Op::Ensure(_)));
                let ok = match (op, &got) {
                    (_, Answer::Hung) => false,
                    (Op::Stop(_), Answer::Done) => true,
                    (_, Answer::ShuttingDown) => true,
                    _ => !strict,
                };
                if !ok {
                    let when = if refused { "after" } else { "before" };
                    wrong.push(format!("{op:?} {when} the shutdown began: {got:?}"));
                }
            }
            if shutdown_asked && shutdown_from.is_none() {
                // The next batch comes once the owner has begun the shutdown.
                let mut graph = supervisor.watch_graph();
                let _ = graph
                    .wait_for(|g| matches!(g.lifecycle, Lifecycle::ShuttingDown | Lifecycle::Done))
                    .await;
                supervisor.bus().flush().await;
                shutdown_from = Some(supervisor.events_since(0).last().map_or(0, |e| e.id));
            }
        }
        let strays = tokio::time::timeout(ANSWER_WITHIN, supervisor.shutdown()).await;
        prop_assert!(
            strays.is_ok(),
            "the shutdown did not end within {ANSWER_WITHIN:?}"
        );
        let strays = strays.unwrap_or_default();
        let left = live(&tag);
        stop_sampling.store(true, Ordering::Relaxed);
        let double = sampler.join().unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), collector).await;

        prop_assert!(
            double.is_none(),
            "two live processes of one service: {double:?}"
        );
        prop_assert!(left.is_empty(), "alive after the shutdown: {left:?}");
        prop_assert_eq!(strays, 0, "processes no actor stopped");
        prop_assert!(wrong.is_empty(), "{wrong:#?}");
        // Once the shutdown has begun, a service may still be spawned by a start or a
        // restart ordered before (its actor takes its orders in turn, the shutdown's
        // last), but never once it has stopped for good (a stop not followed by a
        // restart): nothing starts it again.
        let from = shutdown_from.unwrap_or(0);
        let events = seen.lock().unwrap().clone();
        for name in NAMES {
            let late: Vec<&Arc<Event>> = events
                .iter()
                .filter(|e| e.id > from && e.service.as_str() == name)
                .collect();
            let stopped = late
                .iter()
                .position(|e| e.kind == EventKind::Stopped && !e.message.contains("to restart"));
            let spawned_after =
                stopped.is_some_and(|at| late[at..].iter().any(|e| e.kind == EventKind::Spawned));
            prop_assert!(
                !spawned_after,
                "{name} spawned during the shutdown: {:#?}",
                late.iter()
                    .map(|e| format!("#{} {} {}", e.id, e.kind.as_str(), e.message))
                    .collect::<Vec<_>>()
            );
        }
        prop_assert_eq!(
            &supervisor.spec().services,
            &specs[in_force].services,
            "the config in force is not the last one reloaded"
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 32,
            max_shrink_iters: 20,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn random_command_sequences_keep_one_actor_per_service(batches in plan()) {
            let _limit = RealTimeLimit::new(Duration::from_secs(120));
            let began = Instant::now();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let result = runtime.block_on(case(batches.clone()));
            eprintln!("{} batches in {:?}", batches.len(), began.elapsed());
            result?;
        }
    }
}

/// `muster scale` racing reloads, stops, starts and restarts of the instances: whatever
/// the order, an instance never runs twice, no instance outlives the scale that took it
/// away, and the count in force is the last one asked for.
mod scale_races {
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use muster::supervisor::{Failure, Phase, Supervisor};
    use proptest::prelude::*;

    use super::RealTimeLimit;

    const ANSWER_WITHIN: Duration = Duration::from_secs(20);

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Op {
        Scale(u32),
        /// To the other of the two configs (they differ in the instances' environment).
        Reload,
        Stop(u32),
        Start(u32),
        Restart(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1..=4u32).prop_map(Op::Scale),
            1 => Just(Op::Reload),
            1 => (0..4u32).prop_map(Op::Stop),
            1 => (0..4u32).prop_map(Op::Start),
            1 => (0..4u32).prop_map(Op::Restart),
        ]
    }

    fn plan() -> impl Strategy<Value = Vec<Vec<Op>>> {
        proptest::collection::vec(proptest::collection::vec(op(), 1..=3), 2..6)
    }

    fn spec(dir: &std::path::Path, tag: &str, version: u32) -> muster::config::Spec {
        super::spec(
            dir,
            &format!(
                r#"
[services.web]
command = ["sleep", "1000"]
replicas = 2
env = {{ MUSTER_TEST_TAG = "{tag}", VERSION = "{version}" }}

[services.client]
command = ["sleep", "1000"]
depends-on = ["web"]
env = {{ MUSTER_TEST_TAG = "{tag}" }}
"#
            ),
        )
    }

    /// Live instances of the test's config, by service name.
    fn live(tag: &str) -> Vec<(u32, String)> {
        super::tagged::tagged(tag)
    }

    struct Sweep(String);

    impl Drop for Sweep {
        fn drop(&mut self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = live(&self.0);
                if left.is_empty() || Instant::now() > deadline {
                    return;
                }
                for (pid, _) in left {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    async fn case(batches: Vec<Vec<Op>>) -> Result<(), TestCaseError> {
        let dir = tempfile::tempdir().unwrap();
        let tag = dir.path().display().to_string();
        let _sweep = Sweep(tag.clone());
        let specs = [spec(dir.path(), &tag, 1), spec(dir.path(), &tag, 2)];
        let supervisor = Supervisor::new(specs[0].clone()).unwrap();
        supervisor.boot(&[]).await;
        let stop_sampling = Arc::new(AtomicBool::new(false));
        let sampler = {
            let tag = tag.clone();
            let stop = Arc::clone(&stop_sampling);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let now = live(&tag);
                    let names: BTreeSet<&String> = now.iter().map(|(_, s)| s).collect();
                    if names.len() < now.len() {
                        return Some(format!("{now:?}"));
                    }
                    // The sampling period, not a wait for anything.
                    std::thread::sleep(Duration::from_millis(2));
                }
                None
            })
        };
        let mut reloads = 0usize;
        let mut wanted = 2u32;
        let mut hung = Vec::new();
        for batch in &batches {
            let calls = batch.iter().map(|&op| {
                let target = if op == Op::Reload {
                    reloads += 1;
                    reloads % 2
                } else {
                    0
                };
                let supervisor = &supervisor;
                let specs = &specs;
                async move {
                    let instance = |i: u32| format!("web.{i}");
                    let request = async {
                        match op {
                            Op::Scale(n) => supervisor.scale("web", n).await.map(|_| ()),
                            Op::Reload => {
                                supervisor.reload(specs[target].clone()).await.map(|_| ())
                            }
                            Op::Stop(i) => supervisor.stop(&instance(i)).await.map(|_| ()),
                            Op::Start(i) => supervisor.start(&instance(i)).await.map(|_| ()),
                            Op::Restart(i) => supervisor.restart(&instance(i)).await.map(|_| ()),
                        }
                    };
                    (op, tokio::time::timeout(ANSWER_WITHIN, request).await)
                }
            });
            for (op, got) in futures_util::future::join_all(calls).await {
                match got {
                    Err(_) => hung.push(format!("{op:?}")),
                    Ok(Ok(())) => {
                        if let Op::Scale(n) = op {
                            wanted = n;
                        }
                    }
                    // An instance a scale took away is unknown to the others.
                    Ok(Err(Failure::Unknown(_))) => {}
                    Ok(Err(other)) => {
                        prop_assert!(!matches!(op, Op::Scale(_) | Op::Reload), "{op:?}: {other}")
                    }
                }
            }
        }
        prop_assert!(
            hung.is_empty(),
            "no answer within {ANSWER_WITHIN:?}: {hung:?}"
        );
        let spec = supervisor.spec();
        let members: Vec<String> = spec
            .members("web")
            .iter()
            .map(ToString::to_string)
            .collect();
        prop_assert_eq!(
            members.len() as u32,
            wanted,
            "the count in force is not the last asked"
        );
        // Every process alive now is an instance in force (or the client), and has an
        // actor that sees it running.
        let deadline = Instant::now() + Duration::from_secs(10);
        let strays = loop {
            let strays: Vec<(u32, String)> = live(&tag)
                .into_iter()
                .filter(|(_, service)| {
                    service != "client"
                        && (!members.contains(service)
                            || supervisor
                                .service(service)
                                .is_none_or(|h| !h.status().phase.has_process()))
                })
                .collect();
            if strays.is_empty() || Instant::now() > deadline {
                break strays;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        prop_assert!(
            strays.is_empty(),
            "processes no instance in force owns: {strays:?}"
        );
        let phases: Vec<Phase> = members
            .iter()
            .filter_map(|m| supervisor.service(m).map(|h| h.phase()))
            .collect();
        prop_assert_eq!(phases.len(), members.len());
        let strays = tokio::time::timeout(ANSWER_WITHIN, supervisor.shutdown()).await;
        prop_assert!(strays.is_ok(), "the shutdown did not end");
        prop_assert_eq!(strays.unwrap_or_default(), 0, "processes no actor stopped");
        stop_sampling.store(true, Ordering::Relaxed);
        let double = sampler.join().unwrap();
        prop_assert!(double.is_none(), "an instance ran twice: {double:?}");
        prop_assert!(
            live(&tag).is_empty(),
            "alive after the shutdown: {:?}",
            live(&tag)
        );
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 16,
            max_shrink_iters: 10,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn scale_racing_other_commands_leaves_exactly_the_instances_asked_for(batches in plan()) {
            let _limit = RealTimeLimit::new(Duration::from_secs(120));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(case(batches))?;
        }
    }
}
