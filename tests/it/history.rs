//! The durable history with a real `muster up` and a real SQLite file: orphans of a
//! killed supervisor stopped by the next one, recycled pids left alone, one `exited`
//! per kill, a locked or unreadable database, `history` and `events` read offline.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::SystemTime;

use hyper::Method;
use muster::store::{Entry, RunStart, Store};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use rusqlite::Connection;
use serde_json::Value;

use crate::helpers::muster_run;
use crate::helpers::up::{Up, alive, eventually, free_port};

const STATE: &str = "[settings]\nstate-dir = \"{dir}/state\"\nshutdown-timeout = \"20s\"\n";

fn config(services: &str) -> String {
    format!("{STATE}\n{services}")
}

/// Process groups a test started or inherited: killed on drop unless their leader's pid
/// now belongs to another process (same pid, another start time).
struct Groups(Vec<(i32, u64)>);

impl Groups {
    fn of(pids: &[i32]) -> Self {
        Self(
            pids.iter()
                .filter_map(|&pid| Some((pid, start_ticks(pid)?)))
                .collect(),
        )
    }
}

impl Drop for Groups {
    fn drop(&mut self) {
        for &(pid, ticks) in &self.0 {
            if start_ticks(pid) == Some(ticks) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn start_ticks(pid: i32) -> Option<u64> {
    muster::supervisor::procfs::start_ticks(pid as u32)
}

/// A `sleep` in its own process group, outside any supervisor.
fn stranger() -> (Child, Groups) {
    let child = Command::new("sleep")
        .arg("600")
        .process_group(0)
        .spawn()
        .expect("spawn sleep");
    let groups = Groups::of(&[child.id() as i32]);
    (child, groups)
}

fn database(up_dir: &Path) -> Connection {
    Connection::open(up_dir.join("state/state.db")).expect("open state.db")
}

/// Every stored event, oldest first: (id, service, run_id, kind, data).
fn stored_events(db: &Connection) -> Vec<(u64, String, u64, String, Value)> {
    let mut statement = db
        .prepare("SELECT id, service, run_id, kind, data FROM events ORDER BY id")
        .unwrap();
    statement
        .query_map([], |row| {
            let data: String = row.get(4)?;
            Ok((
                row.get::<_, i64>(0)? as u64,
                row.get(1)?,
                row.get::<_, i64>(2)? as u64,
                row.get(3)?,
                serde_json::from_str(&data).unwrap(),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn assert_contiguous(events: &[(u64, String, u64, String, Value)]) {
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.0, index as u64 + 1, "ids have a gap or a double");
    }
}

fn pids_of(events: &[Value], kind: &str) -> Vec<(String, i32, u64)> {
    events
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| {
            (
                e["service"].as_str().unwrap().to_owned(),
                e["data"]["pid"].as_i64().unwrap() as i32,
                e["run_id"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_next_supervisor_stops_what_a_killed_one_left_and_keeps_its_history() {
    let port = free_port();
    let services = config(&format!(
        r#"
[services.db]
command = ["python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]
ports = ["127.0.0.1:{port}"]
ready = {{ tcp = "127.0.0.1:{port}" }}

[services.worker]
shell = 'sleep 600 & sleep 600 & wait'
depends-on = ["db"]

[services.stubborn]
shell = 'trap "" TERM; while true; do sleep 0.1; done'
stop-timeout = "1s"
"#
    ));
    let mut first = Up::start(&services, &[]);
    for name in ["db", "worker", "stubborn"] {
        first.wait_event(name, "ready");
    }
    let (dir, first_events) = first.kill_supervisor();
    let orphans = pids_of(&first_events, "spawned");
    assert_eq!(orphans.len(), 3, "{first_events:#?}");
    let _guard = Groups::of(&orphans.iter().map(|(_, pid, _)| *pid).collect::<Vec<_>>());
    for (name, pid, _) in &orphans {
        assert!(alive(*pid), "{name} (pid {pid}) died with its supervisor");
    }

    let mut second = Up::start_in(dir, &services, &[]);
    for name in ["db", "worker", "stubborn"] {
        second.wait_event(name, "ready");
    }
    // Nothing of the first run is left; the port was free for the new db.
    for (name, pid, _) in &orphans {
        assert!(!alive(*pid), "{name}'s orphan (pid {pid}) still runs");
    }
    let stopped: Vec<&Value> = second
        .events
        .iter()
        .filter(|e| e["kind"] == "orphan-stopped")
        .collect();
    assert_eq!(stopped.len(), 3, "one event per orphan group: {stopped:#?}");
    for (name, pid, run) in &orphans {
        let mine: Vec<_> = stopped.iter().filter(|e| e["service"] == *name).collect();
        assert_eq!(mine.len(), 1, "{name}: {stopped:#?}");
        assert_eq!(mine[0]["data"]["pid"], *pid);
        assert_eq!(mine[0]["run_id"], *run);
    }
    let worker = stopped.iter().find(|e| e["service"] == "worker").unwrap();
    assert_eq!(worker["data"]["processes"].as_array().unwrap().len(), 3);
    let stubborn = stopped.iter().find(|e| e["service"] == "stubborn").unwrap();
    assert_eq!(stubborn["data"]["signal"], "SIGKILL", "{stubborn}");
    // Every orphan was stopped before anything started again.
    let first_spawn = second.events.iter().position(|e| e["kind"] == "spawned");
    let last_stop = second
        .events
        .iter()
        .rposition(|e| e["kind"] == "orphan-stopped");
    assert!(last_stop < first_spawn);
    // New runs, numbered after the old ones.
    let old_max = orphans.iter().map(|(_, _, run)| *run).max().unwrap();
    for (name, _, run) in pids_of(&second.events, "spawned") {
        assert!(run > old_max, "{name} run {run} reuses an old run id");
    }
    let ended = second.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);

    let db = database(second.dir.path());
    let events = stored_events(&db);
    assert_contiguous(&events);
    // The first supervisor's history is intact: what it published is stored as it was.
    for event in &first_events {
        let id = event["id"].as_u64().unwrap();
        let stored = &events[id as usize - 1];
        assert_eq!(
            (stored.1.as_str(), stored.3.as_str()),
            (
                event["service"].as_str().unwrap(),
                event["kind"].as_str().unwrap()
            )
        );
    }
    for (name, _, run) in &orphans {
        let (ended_at, reason): (Option<i64>, Option<String>) = db
            .query_row(
                "SELECT ended_at, reason FROM runs WHERE run_id = ?1",
                [*run as i64],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .unwrap();
        assert!(ended_at.is_some(), "{name}: run {run} has no end");
        assert!(
            reason
                .as_deref()
                .unwrap_or("")
                .contains("stopped by the next one"),
            "{name}: {reason:?}"
        );
    }
    let open: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM runs WHERE ended_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(open, 0, "every run has an end after a clean stop");
}

#[test]
fn a_recycled_pid_is_never_signalled() {
    let (mut ours, _ours_guard) = stranger();
    let (mut recycled, _recycled_guard) = stranger();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    {
        // Two runs a dead supervisor recorded: one really is that process (same start
        // time), the other names a pid that has since gone to another process.
        let mut store = Store::open(&dir.path().join("state/state.db")).unwrap();
        let run = |run_id: u64, child: &Child, ticks: u64| {
            Entry::RunStarted(RunStart {
                run_id,
                service: muster::config::ServiceName::new("svc").unwrap(),
                pid: child.id(),
                start_ticks: Some(ticks),
                boot_id: muster::supervisor::procfs::boot_id(),
                instance: "@muster-gone".to_owned(),
                started_at: SystemTime::now(),
            })
        };
        let ticks = |child: &Child| start_ticks(child.id() as i32).unwrap();
        store
            .write(&[
                run(1, &ours, ticks(&ours)),
                run(2, &recycled, ticks(&recycled) - 1),
            ])
            .unwrap();
    }
    let mut up = Up::start_in(
        dir,
        &config("[services.svc]\ncommand = [\"sleep\", \"600\"]\n"),
        &[],
    );
    up.wait_event("svc", "ready");
    // The one that matched was stopped (so the check can fail); the other was not touched.
    let stopped: Vec<&Value> = up
        .events
        .iter()
        .filter(|e| e["kind"] == "orphan-stopped")
        .collect();
    assert_eq!(stopped.len(), 1, "{stopped:#?}");
    assert_eq!(stopped[0]["run_id"], 1);
    let ours_pid = ours.id() as i32;
    eventually("our orphan is stopped", || !alive(ours_pid));
    let _ = ours.wait();
    assert!(
        recycled.try_wait().unwrap().is_none(),
        "the stranger was signalled"
    );
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert!(
        recycled.try_wait().unwrap().is_none(),
        "the stranger was signalled"
    );
    let reason: String = database(up.dir.path())
        .query_row("SELECT reason FROM runs WHERE run_id = 2", [], |r| r.get(0))
        .unwrap();
    assert!(
        reason.contains(&format!(
            "pid {} now belongs to another process",
            recycled.id()
        )),
        "{reason}"
    );
}

#[test]
fn every_kill_is_exactly_one_exited_event() {
    const KILLS: usize = 60;
    let services: String = (0..3)
        .map(|i| {
            format!(
                "[services.s{i}]\ncommand = [\"sleep\", \"600\"]\nrestart = \"always\"\n\
                 backoff = {{ initial = \"1ms\", max = \"1ms\" }}\n\
                 restart-limit = {{ count = 1000, within = \"1m\" }}\n\n"
            )
        })
        .collect();
    let mut up = Up::start(&config(&services), &[]);
    let mut current: Vec<(i32, u64)> = (0..3)
        .map(|i| {
            let spawned = up.wait_event(&format!("s{i}"), "spawned");
            (
                spawned["data"]["pid"].as_i64().unwrap() as i32,
                spawned["run_id"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut killed_runs = Vec::new();
    for kill in 0..KILLS {
        let index = kill % 3;
        let (pid, run) = current[index];
        killpg(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        killed_runs.push(run);
        let name = format!("s{index}");
        let next = up.wait_for(&format!("{name} spawned after run {run}"), |e| {
            e["service"] == name.as_str()
                && e["kind"] == "spawned"
                && e["run_id"].as_u64().unwrap() > run
        });
        current[index] = (
            next["data"]["pid"].as_i64().unwrap() as i32,
            next["run_id"].as_u64().unwrap(),
        );
    }
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);

    let events = stored_events(&database(up.dir.path()));
    assert_contiguous(&events);
    let killed: Vec<u64> = events
        .iter()
        .filter(|e| e.3 == "exited" && e.4["signal"] == "SIGKILL")
        .map(|e| e.2)
        .collect();
    assert_eq!(killed, killed_runs, "one `exited` per kill, in order");
    // And no run exited twice.
    let mut exits: Vec<u64> = events
        .iter()
        .filter(|e| e.3 == "exited")
        .map(|e| e.2)
        .collect();
    let all = exits.len();
    exits.dedup();
    assert_eq!(exits.len(), all);
    // What the stream showed is what the database holds.
    let streamed: Vec<u64> = ended
        .events
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    let stored: Vec<u64> = events.iter().map(|e| e.0).collect();
    assert_eq!(streamed, stored);
}

#[test]
fn a_locked_database_is_reported_and_nothing_is_lost() {
    let mut up = Up::start(
        &config("[services.svc]\ncommand = [\"sleep\", \"600\"]\nrestart = \"always\"\n"),
        &[],
    );
    up.wait_event("svc", "ready");
    // Another program takes the write lock and keeps it until its stdin closes.
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             db = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             db.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             sys.stdin.read()\n\
             db.execute('COMMIT')\n",
            up.path("state/state.db").to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");

    // Supervision goes on: three restarts, each seen as it happens.
    for round in 0..3 {
        let answer = up.call(Method::POST, "/v1/services/svc/restart");
        assert!(answer.status.is_success(), "{:?}", answer.body);
        up.wait_for(&format!("restart {round}"), |e| {
            e["kind"] == "ready" && e["run_id"].as_u64().unwrap() > round + 1
        });
    }
    let problem = up.call(Method::GET, "/v1/services").body["history_problem"].clone();
    assert!(
        problem
            .as_str()
            .is_some_and(|p| p.contains("database is locked") && p.contains("supervision goes on")),
        "{problem}"
    );
    assert!(
        up.stderr().contains("cannot write the history"),
        "{}",
        up.stderr()
    );

    drop(holder.stdin.take());
    holder.wait().unwrap();
    eventually("the history is written again", || {
        up.call(Method::GET, "/v1/services").body["history_problem"].is_null()
    });
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    let events = stored_events(&database(up.dir.path()));
    assert_contiguous(&events);
    let streamed: Vec<u64> = ended
        .events
        .iter()
        .map(|e| e["id"].as_u64().unwrap())
        .collect();
    assert_eq!(streamed, events.iter().map(|e| e.0).collect::<Vec<_>>());
}

#[test]
fn an_unreadable_database_is_moved_aside_and_a_new_one_begins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let garbage = "this is not a database\n".repeat(200);
    std::fs::write(dir.path().join("state/state.db"), &garbage).unwrap();
    let mut up = Up::start_in(
        dir,
        &config("[services.svc]\ncommand = [\"sleep\", \"600\"]\n"),
        &[],
    );
    up.wait_event("svc", "ready");
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    assert!(
        ended
            .stderr
            .contains("could not be read as a database; it was moved to"),
        "{}",
        ended.stderr
    );
    let aside: Vec<_> = std::fs::read_dir(up.path("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.db.unreadable-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read_to_string(aside[0].path()).unwrap(), garbage);
    assert!(!stored_events(&database(up.dir.path())).is_empty());
}

#[test]
fn history_and_events_are_read_with_no_supervisor_running() {
    let mut up = Up::start(
        &config(
            "[services.job]\nshell = 'exit 3'\nrestart = \"on-failure\"\n\
             backoff = { initial = \"10ms\", max = \"10ms\" }\n\
             restart-limit = { count = 2, within = \"1m\" }\n",
        ),
        &[],
    );
    up.wait_event("job", "failed");
    let ended = up.wait_exit();
    assert_eq!(ended.code, 1);
    let file = up.path("muster.toml");
    let file = file.to_str().unwrap();

    let history = muster_run(&["history", "job", "-f", file]);
    assert_eq!(history.code, 0, "{}", history.stderr);
    let lines: Vec<&str> = history.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "a header and three runs:\n{}",
        history.stdout
    );
    assert!(lines[0].starts_with("   RUN"), "{}", history.stdout);
    for line in &lines[1..] {
        assert!(line.contains("status 3"), "{line}");
    }
    let json = muster_run(&["history", "job", "--json", "-n", "2", "-f", file]);
    let document: Value = serde_json::from_str(&json.stdout).unwrap();
    let runs = document["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[1]["exit_code"], 3);
    assert!(
        runs[1]["reason"].as_str().unwrap().contains("restart"),
        "{}",
        runs[1]
    );

    let exited = muster_run(&["events", "--kind", "exited", "--json", "-f", file]);
    assert_eq!(exited.code, 0, "{}", exited.stderr);
    assert_eq!(exited.stdout.lines().count(), 3, "{}", exited.stdout);
    let all = muster_run(&["events", "-f", file]);
    assert_eq!(all.stdout.lines().count(), ended.events.len());

    let unknown = muster_run(&["history", "jbo", "-f", file]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("did you mean `job`?"),
        "{}",
        unknown.stderr
    );
    let kind = muster_run(&["events", "--kind", "exitted", "-f", file]);
    assert_eq!(kind.code, 2);
    assert!(
        kind.stderr.contains("did you mean `exited`?"),
        "{}",
        kind.stderr
    );

    let fresh = tempfile::tempdir().unwrap();
    let never = fresh.path().join("muster.toml");
    std::fs::write(&never, "[services.x]\ncommand = [\"true\"]\n").unwrap();
    let none = muster_run(&["events", "-f", never.to_str().unwrap()]);
    assert_eq!(none.code, 2);
    assert!(
        none.stderr.contains("no supervisor has run"),
        "{}",
        none.stderr
    );
}

#[test]
fn a_database_from_a_newer_muster_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let path = dir.path().join("state/state.db");
    Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let file = dir.path().join("muster.toml");
    std::fs::write(
        &file,
        config("[services.svc]\ncommand = [\"sleep\", \"600\"]\n")
            .replace("{dir}", dir.path().to_str().unwrap()),
    )
    .unwrap();
    let up = muster_run(&["up", "-f", file.to_str().unwrap()]);
    assert_eq!(up.code, 1, "{}", up.stderr);
    assert!(
        up.stderr.contains("written by a newer muster (schema 99"),
        "{}",
        up.stderr
    );
    let version: u32 = Connection::open(&path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 99);
}

/// A client that follows the API's events and reconnects after the supervisor restarts
/// asks for what came after the last event it saw. The new supervisor keeps only its own
/// events in memory: what the old one wrote after that event (its last events, which a
/// SIGKILL or a dropped connection kept from the client) is read from the history, so
/// the follow begins right after `since`, not at the new supervisor's first event.
#[test]
fn events_follow_after_a_restart_resumes_from_the_history() {
    let services = config("[services.a]\ncommand = [\"sleep\", \"1000\"]\n");
    let mut up = Up::start(&services, &[]);
    up.wait_event("a", "ready");
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    let dir = std::mem::replace(&mut up.dir, tempfile::tempdir().expect("temp dir"));
    drop(up);

    let mut up = Up::start_in(dir, &services, &[]);
    up.wait_event("a", "ready");
    // Seen by the client: the first event of the old supervisor, and nothing since.
    let socket = up.socket();
    let (opened, open) = std::sync::mpsc::channel();
    let follower = std::thread::spawn(move || {
        let runtime = crate::helpers::runtime();
        let patience = muster::api::client::Patience::follow(crate::helpers::up::WAIT);
        let mut stream = match runtime.block_on(muster::api::client::follow(
            &socket,
            "/v1/events?since=1&follow=true",
            patience,
        )) {
            Ok(Ok(stream)) => stream,
            other => panic!("{other:?}"),
        };
        let _ = opened.send(());
        let mut ids: Vec<u64> = Vec::new();
        let _ = runtime.block_on(stream.each_line(|line| {
            if let Some(data) = line.strip_prefix("data:") {
                let event: Value = serde_json::from_str(data.trim()).expect("an event");
                ids.push(event["id"].as_u64().expect("an id"));
            }
        }));
        ids
    });
    open.recv_timeout(crate::helpers::up::WAIT)
        .expect("the follow's head");
    // The stream ends with the supervisor, once it has sent its last events.
    let ended = up.stop();
    assert_eq!(ended.code, 0, "{}", ended.stderr);
    let ids = follower.join().expect("the follower");
    let all: Vec<u64> = stored_events(&database(up.dir.path()))
        .iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(ids, all[1..].to_vec(), "followed {ids:?}, stored {all:?}");
}
