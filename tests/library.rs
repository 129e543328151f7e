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
