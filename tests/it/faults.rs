//! The supervisor itself killed: `muster up` SIGKILLed at a random moment of a bootstrap
//! (ten services in three layers, each taking its time to become ready) and of a
//! shutdown (services that take a while to stop, or ignore SIGTERM until their stop
//! timeout), four seeds of each. After every kill, the next `muster up` on the same state
//! directory proves that:
//!
//! - every process the killed supervisor left is stopped before anything starts, with
//!   one `orphan-stopped` event for each run it found running; a run it found ended is
//!   closed as such, and only when its process had really been asked to stop before;
//! - the history is intact: SQLite's integrity check passes on the file as the kill left
//!   it and afterwards, every event the killed supervisor published is stored as it was,
//!   ids go on contiguously, run ids continue past the old ones, every run is closed;
//! - the graph comes up healthy again, and a clean stop then leaves nothing running.
//!
//! The kill moment: the supervisor is frozen (SIGSTOP) at a random moment and killed
//! while frozen, which is the same as a SIGKILL at that moment. If the freeze caught a
//! spawn between its fork and the commit of its run's row (the window muster documents
//! as the one a SIGKILL can slip through: that process would be unknown to the next
//! supervisor; in a debug build on a busy machine it lasts a few milliseconds), it is
//! thawed and frozen again a moment later; the number of such shifts is printed.
//!
//! ```sh
//! MUSTER_FAULTS_SEED=1234 cargo test --test it faults -- --nocapture   # replay
//! MUSTER_FAULTS_SEEDS=50 cargo test --test it faults -- --nocapture    # soak
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use muster::supervisor::procfs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::helpers::evidence::{self, Stored, StoredRun, Sweep};
use crate::helpers::muster;
use crate::helpers::up::{Up, free_port};

/// Seeds per scenario unless `MUSTER_FAULTS_SEEDS` says otherwise.
const SEEDS: u64 = 4;

/// The fixture: sleeps `delay` seconds, then listens on `port` (so readiness takes that
/// long). Once its SIGTERM handler is in place it leaves a mark (`MARKS/armed-PID`); on
/// SIGTERM another (`MARKS/term-PID`), then either exits after `grace` seconds or,
/// `stubborn`, carries on until it is killed. It never writes to stdout or stderr: once
/// its supervisor is killed nobody reads them, and a write would end it.
const FIXTURE: &str = r#"
import os, signal, socket, sys, time
port, delay, mode, marks = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3], sys.argv[4]

def on_term(*_):
    open(os.path.join(marks, "term-%d" % os.getpid()), "w").close()
    if mode != "stubborn":
        time.sleep(float(mode))
        os._exit(0)

signal.signal(signal.SIGTERM, on_term)
open(os.path.join(marks, "armed-%d" % os.getpid()), "w").close()
time.sleep(delay)
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
for attempt in range(400):
    try:
        listener.bind(("127.0.0.1", port))
        break
    except OSError:
        if attempt == 399:
            raise
        time.sleep(0.05)
listener.listen(64)
while True:
    conn, _ = listener.accept()
    conn.close()
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Moment {
    /// While the graph is starting.
    Bootstrap,
    /// While the graph is being stopped.
    Shutdown,
}

/// Ten services in three layers (3, 4, 3), each depending on one or two of the layer
/// before; readiness delays and stop behaviour drawn from the seed. Returns the config
/// and each service with whether it ignores SIGTERM.
fn config(rng: &mut fastrand::Rng, python: &str) -> (String, Vec<(String, bool)>) {
    let mut text =
        String::from("[settings]\nstate-dir = \"{dir}/state\"\nshutdown-timeout = \"30s\"\n\n");
    let layers = [("a", 3), ("b", 4), ("c", 3)];
    let mut names = Vec::new();
    for (layer, &(prefix, count)) in layers.iter().enumerate() {
        for i in 0..count {
            let name = format!("{prefix}{i}");
            let port = free_port();
            let delay = 0.1 + 0.4 * rng.f64();
            let stubborn = rng.u32(..10) < 4;
            let (mode, stop_timeout) = if stubborn {
                ("stubborn".to_owned(), "500ms")
            } else {
                (format!("{:.2}", 0.1 + 0.4 * rng.f64()), "5s")
            };
            text.push_str(&format!(
                "[services.{name}]\n\
                 command = [\"{python}\", \"{{dir}}/svc.py\", \"{port}\", \"{delay:.2}\", \
                 \"{mode}\", \"{{dir}}/marks\"]\n\
                 ready = {{ tcp = \"127.0.0.1:{port}\", timeout = \"30s\" }}\n\
                 stop-timeout = \"{stop_timeout}\"\n"
            ));
            if layer > 0 {
                let (before, size) = layers[layer - 1];
                let mut deps = BTreeSet::from([format!("{before}{}", i % size)]);
                if rng.bool() {
                    deps.insert(format!("{before}{}", rng.usize(..size)));
                }
                let deps: Vec<String> = deps.into_iter().map(|d| format!("\"{d}\"")).collect();
                text.push_str(&format!("depends-on = [{}]\n", deps.join(", ")));
            }
            text.push('\n');
            names.push((name, stubborn));
        }
    }
    (text, names)
}

/// The real interpreter behind `python3` (not a version manager's shim, which would run
/// a shell between the supervisor and its service).
fn python() -> String {
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3");
    assert!(output.status.success(), "python3 -c failed: {output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

fn base_seed() -> u64 {
    match std::env::var("MUSTER_FAULTS_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("MUSTER_FAULTS_SEED={text:?}: {e}")),
        Err(_) => fastrand::u64(..),
    }
}

/// What the freeze found.
struct Frozen {
    /// The supervisor's notify address, once it had one.
    instance: Option<String>,
    /// Times the freeze fell between a spawn and its run's commit and was moved on.
    shifts: u32,
    /// Whether the supervisor had already exited by itself.
    exited: bool,
}

/// The runs stored so far, by (pid, start time); empty while there is no database or
/// no schema yet (the supervisor may be frozen before it made them).
fn recorded(state_dir: &Path) -> BTreeSet<(u32, Option<u64>)> {
    if !state_dir.join("state.db").exists() {
        return BTreeSet::new();
    }
    let db = evidence::open_history(state_dir);
    let runs = db
        .prepare("SELECT pid, start_ticks FROM runs")
        .and_then(|mut s| {
            s.query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)? as u32,
                    row.get::<_, Option<i64>>(1)?.map(|t| t as u64),
                ))
            })?
            .collect::<Result<BTreeSet<_>, _>>()
        });
    runs.unwrap_or_default()
}

/// Whether every thread of the process is stopped (or it has exited).
fn all_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.filter_map(Result::ok).all(|task| {
        std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
            let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
            matches!(
                after.trim_start().chars().next(),
                Some('T' | 't' | 'Z' | 'X')
            )
        })
    })
}

/// Stops the supervisor where it is (see the module's header), so that it can be killed
/// at exactly that point.
fn freeze(supervisor: u32, state_dir: &Path, sweep: &Sweep) -> Frozen {
    let pid = Pid::from_raw(supervisor as i32);
    let mut shifts = 0;
    loop {
        let state = |want: char| procfs::stat(supervisor).is_some_and(|s| s.state == want);
        if state('Z') {
            return Frozen {
                instance: None,
                shifts,
                exited: true,
            };
        }
        kill(pid, Signal::SIGSTOP).unwrap();
        // Every thread, the history writer too, must have stopped: a thread still
        // running could commit or spawn after the look below.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !all_stopped(supervisor) {
            assert!(
                Instant::now() < deadline,
                "SIGSTOP did not stop the supervisor"
            );
            thread::sleep(Duration::from_millis(1));
        }
        let instance = evidence::instance_of(supervisor);
        if let Some(instance) = &instance {
            sweep.add(instance);
        }
        let known = recorded(state_dir);
        let unknown: Vec<u32> = evidence::children_of(supervisor)
            .into_iter()
            .filter(|&child| !known.contains(&(child, procfs::start_ticks(child))))
            .collect();
        if unknown.is_empty() {
            return Frozen {
                instance,
                shifts,
                exited: state('Z'),
            };
        }
        shifts += 1;
        assert!(shifts < 1000, "children never recorded: {unknown:?}");
        kill(pid, Signal::SIGCONT).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
}

fn show_runs(runs: &[&StoredRun]) -> String {
    runs.iter()
        .map(|r| format!("  {r:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether the run's leader is still that process, and running.
fn leader_alive(run: &StoredRun) -> bool {
    procfs::stat(run.pid)
        .is_some_and(|stat| !stat.is_zombie() && Some(stat.start_ticks) == run.start_ticks)
}

/// Waits for a `muster down` client with a deadline: its exit code and what it said.
fn wait_client(mut child: Child) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut said = String::new();
            if let Some(mut stderr) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut said);
            }
            return (status.code().unwrap_or(-1), said);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`muster down` did not return within 30 s of its supervisor's death");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// One kill and the recovery after it. Returns a line of figures.
fn scenario(seed: u64, moment: Moment, python: &str) -> String {
    let began = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    let (config, services) = config(&mut rng, python);
    let names: Vec<&String> = services.iter().map(|(name, _)| name).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("svc.py"), FIXTURE).unwrap();
    std::fs::create_dir(dir.path().join("marks")).unwrap();
    let state_dir = dir.path().join("state");
    let marks = dir.path().join("marks");
    let sweep = Sweep::default();

    let mut first = Up::start_in(dir, &config, &[]);
    let supervisor = first.pid();
    let file = first.path("muster.toml");
    let mut down = None;
    let delay = match moment {
        Moment::Bootstrap => Duration::from_millis(rng.u64(0..1800)),
        Moment::Shutdown => {
            for name in &names {
                first.wait_event(name, "ready");
            }
            sweep.add(&evidence::instance_of(supervisor).unwrap());
            // Half the seeds ask through `muster down` (the API), half with SIGTERM.
            if seed.is_multiple_of(2) {
                kill(Pid::from_raw(supervisor as i32), Signal::SIGTERM).unwrap();
            } else {
                let client = muster(&["down", "-f", file.to_str().unwrap()])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("muster down");
                down = Some(client);
            }
            first.wait_for("the first stop signal", |e| e["kind"] == "stopping");
            Duration::from_millis(rng.u64(0..1200))
        }
    };
    // The fault schedule: a random moment, not a condition to wait for.
    thread::sleep(delay);
    let frozen = freeze(supervisor, &state_dir, &sweep);
    let (dir, first_events) = first.kill_supervisor();
    let ready_at_kill = first_events.iter().filter(|e| e["kind"] == "ready").count();
    if let Some(client) = down {
        let (code, said) = wait_client(client);
        assert_eq!(
            code, 0,
            "`muster down` when its supervisor was killed: {said}"
        );
    }

    // What the kill left: the file must be sound as it is, the runs without an end are
    // what the next supervisor has to deal with, and every process of the killed one
    // belongs to one of those runs (the freeze saw to that).
    let mut stored_at_kill: Vec<Stored> = Vec::new();
    let mut runs_at_kill: Vec<StoredRun> = Vec::new();
    if state_dir.join("state.db").exists() {
        let (_copy, db) = evidence::open_copy(&state_dir);
        let sound = evidence::integrity(&db);
        assert_eq!(sound, "ok", "seed {seed}: the history as the kill left it");
        // A kill before the schema was committed leaves an empty file.
        let has_schema: bool = db
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'runs'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            == 1;
        if has_schema {
            stored_at_kill = evidence::stored_events(&db);
            runs_at_kill = evidence::stored_runs(&db);
        }
    }
    evidence::assert_contiguous(&stored_at_kill);
    let open: Vec<&StoredRun> = runs_at_kill.iter().filter(|r| !r.ended).collect();
    for run in &open {
        assert_eq!(
            Some(&run.instance),
            frozen.instance.as_ref(),
            "seed {seed}: an open run of another supervisor: {run:?}"
        );
    }
    let open_ids: BTreeSet<u64> = open.iter().map(|r| r.run_id).collect();
    let left: Vec<u32> = frozen
        .instance
        .as_deref()
        .map(evidence::carriers)
        .unwrap_or_default();
    for &pid in &left {
        let run: Option<u64> =
            evidence::env_value(pid, "MUSTER_RUN_ID").and_then(|r| r.parse().ok());
        assert!(
            run.is_some_and(|run| open_ids.contains(&run)),
            "seed {seed}: pid {pid} (run {run:?}) of the killed supervisor is in no open run:\n{}",
            show_runs(&open)
        );
    }
    // Which of them ignore SIGTERM by now (a python process still starting up would
    // die of it).
    let armed: BTreeSet<u64> = open
        .iter()
        .filter(|r| marks.join(format!("armed-{}", r.pid)).exists())
        .map(|r| r.run_id)
        .collect();
    let alive_at_kill: BTreeSet<u64> = open
        .iter()
        .filter(|r| leader_alive(r))
        .map(|r| r.run_id)
        .collect();
    // Nothing the killed supervisor published is missing from the file.
    for event in &first_events {
        let id = event["id"].as_u64().unwrap() as usize;
        let stored = stored_at_kill
            .get(id.wrapping_sub(1))
            .unwrap_or_else(|| panic!("seed {seed}: event {event} was published, not stored"));
        assert_eq!(
            (stored.service.as_str(), stored.kind.as_str(), stored.run_id),
            (
                event["service"].as_str().unwrap(),
                event["kind"].as_str().unwrap(),
                event["run_id"].as_u64().unwrap()
            ),
            "seed {seed}"
        );
    }
    let last_event = stored_at_kill.last().map_or(0, |e| e.id);
    let last_run = runs_at_kill.last().map_or(0, |r| r.run_id);

    // The next supervisor on the same state directory.
    let mut second = Up::start_in(dir, &config, &[]);
    let first_spawn = second.wait_for("the first spawn after recovery", |e| e["kind"] == "spawned");
    let second_instance = evidence::instance_of(second.pid()).unwrap();
    sweep.add(&second_instance);
    // Recovery is over before anything starts: nothing of the killed supervisor runs.
    if let Some(instance) = &frozen.instance {
        let still = evidence::carriers(instance);
        assert!(
            still.is_empty(),
            "seed {seed}: processes of the killed supervisor still run once the next one \
             starts services: {still:?}"
        );
    }
    for name in &names {
        second.wait_event(name, "ready");
    }
    let orphan_stopped: Vec<&Value> = second
        .events
        .iter()
        .filter(|e| e["kind"] == "orphan-stopped")
        .collect();
    let spawn_index = second
        .events
        .iter()
        .position(|e| e["id"] == first_spawn["id"])
        .unwrap();
    assert!(
        second.events[..spawn_index]
            .iter()
            .filter(|e| e["kind"] == "orphan-stopped")
            .count()
            == orphan_stopped.len(),
        "seed {seed}: an orphan was stopped after the first spawn: {:#?}",
        second.events
    );
    let mut stopped_runs: BTreeMap<u64, usize> = BTreeMap::new();
    for event in &orphan_stopped {
        *stopped_runs
            .entry(event["run_id"].as_u64().unwrap())
            .or_default() += 1;
    }
    assert!(
        stopped_runs.values().all(|&n| n == 1),
        "seed {seed}: a run stopped twice: {orphan_stopped:#?}"
    );
    let stopped_ids: BTreeSet<u64> = stopped_runs.keys().copied().collect();
    // A service that stops on SIGTERM was stopped by it; one that ignored it by then,
    // by SIGKILL after its stop timeout.
    for event in &orphan_stopped {
        let stubborn = services
            .iter()
            .find(|(name, _)| event["service"] == name.as_str())
            .is_some_and(|(_, stubborn)| *stubborn);
        let run = event["run_id"].as_u64().unwrap();
        let signal = event["data"]["signal"].as_str().unwrap_or_default();
        let expected: &[&str] = match (stubborn, armed.contains(&run)) {
            (false, _) => &["SIGTERM"],
            (true, true) => &["SIGKILL"],
            (true, false) => &["SIGTERM", "SIGKILL"],
        };
        assert!(expected.contains(&signal), "seed {seed}: {event}");
    }
    assert!(
        stopped_ids.is_subset(&open_ids),
        "seed {seed}: orphan-stopped for runs that were not open: {orphan_stopped:#?}\nopen:\n{}",
        show_runs(&open)
    );
    if moment == Moment::Bootstrap {
        // Nothing asks a starting service to stop: each run alive at the kill was still
        // alive for the recovery to stop.
        assert_eq!(
            stopped_ids,
            alive_at_kill,
            "seed {seed}: orphan-stopped runs against the runs alive at the kill; open:\n{}",
            show_runs(&open)
        );
    }
    // The numbering goes on after the stored history: no id lost, none reused.
    let second_first_id = second.events[0]["id"].as_u64().unwrap();
    assert_eq!(
        second_first_id,
        last_event + 1,
        "seed {seed}: {:#?}",
        second.events
    );
    for event in second.events.iter().filter(|e| e["kind"] == "spawned") {
        assert!(
            event["run_id"].as_u64().unwrap() > last_run,
            "seed {seed}: run id reused: {event}"
        );
    }
    // Every open run is closed now: stopped by the recovery, or found ended, which is
    // only right for a process the killed supervisor had asked to stop (it left a mark).
    {
        let db = evidence::open_history(&state_dir);
        let runs = evidence::stored_runs(&db);
        for run in &open {
            let now = runs.iter().find(|r| r.run_id == run.run_id).unwrap();
            let reason = now.reason.as_deref().unwrap_or("");
            assert!(
                now.ended,
                "seed {seed}: run {} still open: {now:?}",
                run.run_id
            );
            if stopped_ids.contains(&run.run_id) {
                assert!(
                    reason.contains("stopped by the next one"),
                    "seed {seed}: {now:?}"
                );
            } else {
                let marked = marks.join(format!("term-{}", run.pid)).exists();
                assert!(
                    reason.starts_with("ended while no supervisor watched it") && marked,
                    "seed {seed}: run {} was neither stopped by the recovery nor asked to \
                     stop before the kill (mark: {marked}): {now:?}",
                    run.run_id
                );
            }
        }
    }

    // A clean stop, then nothing of either supervisor may run.
    let ended = second.stop();
    assert_eq!(ended.code, 0, "seed {seed}: {}", ended.stderr);
    let db = evidence::open_history(&state_dir);
    assert_eq!(evidence::integrity(&db), "ok", "seed {seed}");
    let events = evidence::stored_events(&db);
    evidence::assert_contiguous(&events);
    let runs = evidence::stored_runs(&db);
    let open_now: Vec<&StoredRun> = runs.iter().filter(|r| !r.ended).collect();
    assert!(
        open_now.is_empty(),
        "seed {seed}: runs without an end:\n{}",
        show_runs(&open_now)
    );
    let living: Vec<&StoredRun> = runs.iter().filter(|r| leader_alive(r)).collect();
    assert!(
        living.is_empty(),
        "seed {seed}: still running:\n{}",
        show_runs(&living)
    );
    let mut carriers = evidence::carriers(&second_instance);
    if let Some(instance) = &frozen.instance {
        carriers.extend(evidence::carriers(instance));
    }
    assert!(
        carriers.is_empty(),
        "seed {seed}: still running: {carriers:?}"
    );
    drop(sweep);

    format!(
        "{moment:?} seed {seed}: killed after {delay:?} ({ready_at_kill} of {} ready{}, \
         {} freeze shifts), {} runs open, {} alive, {} orphan-stopped, {} events stored; \
         {:.1?} in all",
        names.len(),
        if frozen.exited { ", it had exited" } else { "" },
        frozen.shifts,
        open.len(),
        alive_at_kill.len(),
        stopped_ids.len(),
        events.len(),
        began.elapsed()
    )
}

fn scenarios(moment: Moment) {
    let python = python();
    let base = base_seed();
    eprintln!("faults: {moment:?}: seeds {base}.. (replay with MUSTER_FAULTS_SEED={base})");
    let seeds = std::env::var("MUSTER_FAULTS_SEEDS").map_or(SEEDS, |text| {
        text.trim()
            .parse()
            .unwrap_or_else(|e| panic!("MUSTER_FAULTS_SEEDS={text:?}: {e}"))
    });
    for seed in (0..seeds).map(|i| base.wrapping_add(i)) {
        let line = scenario(seed, moment, &python);
        eprintln!("faults: {line}");
    }
}

#[test]
fn a_supervisor_killed_during_the_bootstrap_is_cleaned_up_after_by_the_next() {
    scenarios(Moment::Bootstrap);
}

#[test]
fn a_supervisor_killed_during_the_shutdown_is_cleaned_up_after_by_the_next() {
    scenarios(Moment::Shutdown);
}
