//! The history's cost, measured:
//!
//! - **sustained write rate**: events per second the writer takes into `state.db`
//!   (WAL, one transaction per batch, retention pruning included), with one thread
//!   publishing as fast as it can;
//! - **crash-loop rate**: the events per second a real `muster up` produces when 50
//!   services exit at once and are restarted with no backoff, the worst a config can
//!   ask for; the write rate must stay well above it;
//! - **size**: bytes of database per 100,000 events.
//!
//! Run with `cargo bench --bench history`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use muster::config::{HistorySettings, ServiceName};
use muster::store::Store;
use muster::supervisor::{EventBus, EventKind};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

mod support;

const EVENTS: u64 = 300_000;
const SERVICES: usize = 50;
const CRASH_LOOP: Duration = Duration::from_secs(5);

fn main() {
    let (rate, size) = write_rate();
    let crash = crash_loop_rate();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| sustained write rate | {rate:.0} events/s |");
    println!("| {SERVICES}-service crash loop (no backoff) | {crash:.0} events/s |");
    println!("| headroom | {:.1}x |", rate / crash);
    println!(
        "| database size per 100k events | {:.1} MiB |",
        size as f64 / 1024.0 / 1024.0
    );
}

/// Events per second written, and the database's size holding 100,000 of them.
fn write_rate() -> (f64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let retention = HistorySettings {
        max_events: 100_000,
        max_age: Duration::from_secs(30 * 86400),
    };
    let took = runtime.block_on(async {
        let bus = EventBus::start(Some(Store::open(&path).unwrap()), retention).unwrap();
        let names: Vec<ServiceName> = (0..SERVICES)
            .map(|i| ServiceName::new(&format!("service-{i}")).unwrap())
            .collect();
        let began = Instant::now();
        for i in 0..EVENTS {
            bus.publish(
                &names[i as usize % SERVICES],
                i,
                EventKind::Exited,
                "exited with status 1".to_owned(),
                serde_json::json!({ "code": 1, "signal": null }),
            );
        }
        bus.flush().await;
        began.elapsed()
    });
    // Retention runs after every 10,000 entries: prune once more to land on the limit,
    // and fold the WAL into the file so its size is the data's.
    let mut store = Store::open(&path).unwrap();
    store
        .prune(
            100_000,
            Duration::from_secs(30 * 86400),
            std::time::SystemTime::now(),
        )
        .unwrap();
    drop(store);
    let connection = rusqlite::Connection::open(&path).unwrap();
    connection.execute_batch("VACUUM").unwrap();
    connection
        .pragma_update(None, "wal_checkpoint", "TRUNCATE")
        .unwrap();
    let count: i64 = connection
        .query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(count, 100_000);
    let size = std::fs::metadata(&path).unwrap().len();
    (EVENTS as f64 / took.as_secs_f64(), size)
}

/// Events per second a real supervisor records with every service in a crash loop.
fn crash_loop_rate() -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crash.toml");
    let mut text = format!(
        "[settings]\nstate-dir = \"{}/state\"\n",
        dir.path().display()
    );
    for i in 0..SERVICES {
        text.push_str(&format!(
            "\n[services.crash-{i}]\ncommand = [\"false\"]\nrestart = \"always\"\n\
             backoff = {{ initial = \"0s\", max = \"0s\" }}\n\
             restart-limit = {{ count = 1000000, within = \"1s\" }}\n"
        ));
    }
    std::fs::write(&config, text).unwrap();
    let mut child = Command::new(support::MUSTER)
        .args(["up", "--json", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn muster up");
    let database = dir.path().join("state/state.db");
    let count = || {
        Store::open_existing(&database)
            .map(|store| store.last_ids().unwrap_or_default().event)
            .unwrap_or(0)
    };
    // Measured from the first event written, so start-up is not counted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while count() == 0 {
        assert!(Instant::now() < deadline, "no event written within 30s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (first, began) = (count(), Instant::now());
    std::thread::sleep(CRASH_LOOP);
    let (last, took) = (count(), began.elapsed());
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    child.wait().unwrap();
    (last - first) as f64 / took.as_secs_f64()
}
