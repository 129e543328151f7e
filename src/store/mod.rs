//! The durable history: `state-dir/state.db`, SQLite in WAL mode.
//!
//! Two tables: `events` (every event the bus carries) and `runs` (one row per spawn:
//! pid, process group, the process's start time from `/proc`, when it ended and how).
//! The schema is versioned with `PRAGMA user_version` and grows by [`MIGRATIONS`] only;
//! a database made by a newer muster is refused, never rewritten. One connection writes
//! (the [`writer`] thread of a running supervisor); the CLI reads with its own
//! connection, with or without a supervisor running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags, params};
use serde::Serialize;

use crate::config::ServiceName;
use crate::event::Event;

/// The database's file name in the state directory.
pub const FILE_NAME: &str = "state.db";

/// Schema steps; `user_version` is how many have been applied. Append only: a step
/// that shipped is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: events and runs.
    "CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        time INTEGER NOT NULL,
        service TEXT NOT NULL,
        run_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        data TEXT NOT NULL
    );
    CREATE INDEX events_by_service ON events(service, id);
    CREATE INDEX events_by_time ON events(time);
    CREATE TABLE runs (
        run_id INTEGER PRIMARY KEY,
        service TEXT NOT NULL,
        pid INTEGER NOT NULL,
        pgid INTEGER NOT NULL,
        start_ticks INTEGER,
        boot_id TEXT,
        instance TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        exit_code INTEGER,
        signal TEXT,
        reason TEXT
    );
    CREATE INDEX runs_by_service ON runs(service, run_id);
    CREATE INDEX runs_open ON runs(run_id) WHERE ended_at IS NULL;",
];

/// The schema version this muster writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The page cache of the writing connection, in KiB.
const PAGE_CACHE_KIB: i64 = 256;

/// How long a statement waits for another connection's lock before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "{} was written by a newer muster (schema {found}; this one knows {SCHEMA_VERSION}); \
         upgrade muster, or move the file away to start a new history",
        path.display()
    )]
    Newer { path: PathBuf, found: u32 },
    #[error("no history at {}: no supervisor has run with this state directory", path.display())]
    Missing { path: PathBuf },
    #[error("cannot open {}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot move the unreadable {} aside: {source}", path.display())]
    MoveAside {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One connection to a history database.
#[derive(Debug)]
pub struct Store {
    connection: Connection,
    path: PathBuf,
}

/// What the writer stores, in the order the supervisor produced it.
#[derive(Debug, Clone)]
pub enum Entry {
    Event(Arc<Event>),
    RunStarted(RunStart),
    RunEnded(RunEnd),
}

/// A spawn, recorded before anything else uses its pid.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub run_id: u64,
    pub service: ServiceName,
    /// Also the process group id: every service leads its own group.
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`: with the boot id, tells this process from a later
    /// one that got the same pid.
    pub start_ticks: Option<u64>,
    pub boot_id: Option<String>,
    /// The supervisor that spawned it (its notify socket address, which every child
    /// carries in `NOTIFY_SOCKET`).
    pub instance: String,
    pub started_at: SystemTime,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    pub run_id: u64,
    pub ended_at: SystemTime,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub reason: String,
}

/// A run as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub run_id: u64,
    pub service: String,
    pub pid: u32,
    pub pgid: u32,
    pub start_ticks: Option<u64>,
    pub boot_id: Option<String>,
    pub instance: String,
    #[serde(serialize_with = "rfc3339")]
    pub started_at: SystemTime,
    #[serde(serialize_with = "rfc3339_opt")]
    pub ended_at: Option<SystemTime>,
    pub exit_code: Option<i32>,
    pub signal: Option<String>,
    pub reason: Option<String>,
}

/// An event as stored; serializes like a live [`Event`].
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    pub id: u64,
    #[serde(serialize_with = "rfc3339")]
    pub time: SystemTime,
    pub service: String,
    pub run_id: u64,
    pub kind: String,
    pub message: String,
    pub data: serde_json::Value,
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events with an id above this.
    pub since: u64,
    /// Only events at or after this time (milliseconds since the epoch).
    pub since_time: Option<i64>,
    pub service: Option<String>,
    pub kind: Option<String>,
}

/// The highest event and run ids stored, so a new supervisor continues the numbering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LastIds {
    pub event: u64,
    pub run: u64,
}

impl Store {
    /// Opens (creating it if needed) and migrates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        let sqlite = |source| OpenError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let connection = Connection::open(path).map_err(sqlite)?;
        connection.busy_timeout(BUSY_TIMEOUT).map_err(sqlite)?;
        // WAL: readers never block the writer; NORMAL: a commit survives a crash of
        // the process (not necessarily a power cut), without an fsync per batch.
        connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
            .map_err(sqlite)?;
        connection
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        // Appends touch the last pages of each table and index: a small page cache
        // does, and the supervisor's memory stays small.
        connection
            .pragma_update(None, "cache_size", -PAGE_CACHE_KIB)
            .map_err(sqlite)?;
        let mut store = Self {
            connection,
            path: path.to_owned(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Opens the database at `path`; one that is not a database or is corrupt is moved
    /// aside (`state.db.unreadable-<unix time>`) and a new one created. Returns where
    /// the old file went, if it was moved.
    pub fn open_or_replace(path: &Path) -> Result<(Self, Option<PathBuf>), OpenError> {
        match Self::open(path) {
            Ok(store) => Ok((store, None)),
            Err(OpenError::Sqlite { source, .. }) if is_unreadable(&source) => {
                let stamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs();
                let aside = path.with_file_name(format!("{FILE_NAME}.unreadable-{stamp}"));
                std::fs::rename(path, &aside).map_err(|source| OpenError::MoveAside {
                    path: path.to_owned(),
                    source,
                })?;
                for suffix in ["-wal", "-shm"] {
                    let companion = PathBuf::from(format!("{}{suffix}", path.display()));
                    let moved = PathBuf::from(format!("{}{suffix}", aside.display()));
                    let _ = std::fs::rename(companion, moved);
                }
                Ok((Self::open(path)?, Some(aside)))
            }
            Err(error) => Err(error),
        }
    }

    /// Opens an existing database to read it (the CLI); never creates or migrates.
    pub fn open_existing(path: &Path) -> Result<Self, OpenError> {
        if !path.exists() {
            return Err(OpenError::Missing {
                path: path.to_owned(),
            });
        }
        let sqlite = |source| OpenError::Sqlite {
            path: path.to_owned(),
            source,
        };
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags).map_err(sqlite)?;
        connection
            .busy_timeout(Duration::from_secs(5))
            .map_err(sqlite)?;
        let found = user_version(&connection).map_err(sqlite)?;
        if found > SCHEMA_VERSION {
            return Err(OpenError::Newer {
                path: path.to_owned(),
                found,
            });
        }
        Ok(Self {
            connection,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Folds the write-ahead log into the database and closes it: the next open need
    /// not replay the log. Failing that, the next open replays it; nothing is lost.
    pub fn close(self) {
        let _ = self
            .connection
            .pragma_update(None, "wal_checkpoint", "TRUNCATE");
        let _ = self.connection.close();
    }

    fn migrate(&mut self) -> Result<(), OpenError> {
        let sqlite = |source| OpenError::Sqlite {
            path: self.path.clone(),
            source,
        };
        let found = user_version(&self.connection).map_err(sqlite)?;
        if found > SCHEMA_VERSION {
            return Err(OpenError::Newer {
                path: self.path.clone(),
                found,
            });
        }
        for (index, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let transaction = self.connection.transaction().map_err(sqlite)?;
            transaction.execute_batch(step).map_err(sqlite)?;
            transaction
                .pragma_update(None, "user_version", index as u32 + 1)
                .map_err(sqlite)?;
            transaction.commit().map_err(sqlite)?;
        }
        Ok(())
    }

    /// Writes `entries` in one transaction: all of them or none.
    pub fn write<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> rusqlite::Result<()> {
        let transaction = self.connection.transaction()?;
        {
            let mut event = transaction.prepare_cached(
                "INSERT OR REPLACE INTO events (id, time, service, run_id, kind, message, data)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut started = transaction.prepare_cached(
                "INSERT OR REPLACE INTO runs
                 (run_id, service, pid, pgid, start_ticks, boot_id, instance, started_at)
                 VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut ended = transaction.prepare_cached(
                "UPDATE runs SET ended_at = ?2, exit_code = ?3, signal = ?4, reason = ?5
                 WHERE run_id = ?1",
            )?;
            for entry in entries {
                match entry {
                    Entry::Event(e) => {
                        event.execute(params![
                            e.id as i64,
                            millis(e.time),
                            e.service.as_str(),
                            e.run_id as i64,
                            e.kind.as_str(),
                            e.message,
                            e.data.to_string(),
                        ])?;
                    }
                    Entry::RunStarted(run) => {
                        started.execute(params![
                            run.run_id as i64,
                            run.service.as_str(),
                            run.pid,
                            run.start_ticks.map(|t| t as i64),
                            run.boot_id,
                            run.instance,
                            millis(run.started_at),
                        ])?;
                    }
                    Entry::RunEnded(end) => {
                        ended.execute(params![
                            end.run_id as i64,
                            millis(end.ended_at),
                            end.exit_code,
                            end.signal,
                            end.reason,
                        ])?;
                    }
                }
            }
        }
        transaction.commit()
    }

    /// Deletes events beyond the newest `max_events` or older than `max_age`, and
    /// ended runs by the same rules. The count is a budget shared by every service, so
    /// it never takes a service's newest [`KEPT_PER_SERVICE`] events or runs: one
    /// service crash-looping must not erase the history that explains another's
    /// failure. Returns how many rows went.
    pub fn prune(
        &mut self,
        max_events: u64,
        max_age: Duration,
        now: SystemTime,
    ) -> rusqlite::Result<usize> {
        let cutoff = millis(now.checked_sub(max_age).unwrap_or(UNIX_EPOCH));
        let keep = max_events.min(i64::MAX as u64) as i64;
        let transaction = self.connection.transaction()?;
        let mut removed = transaction.execute(
            "DELETE FROM events WHERE time < ?1
             OR (id <= (SELECT MAX(id) FROM events) - ?2
                 AND id NOT IN (SELECT id FROM (
                     SELECT id, ROW_NUMBER() OVER (PARTITION BY service ORDER BY id DESC) AS newest
                     FROM events) WHERE newest <= ?3))",
            params![cutoff, keep, KEPT_PER_SERVICE],
        )?;
        removed += transaction.execute(
            "DELETE FROM runs WHERE ended_at IS NOT NULL AND (ended_at < ?1
             OR (run_id <= (SELECT MAX(run_id) FROM runs) - ?2
                 AND run_id NOT IN (SELECT run_id FROM (
                     SELECT run_id, ROW_NUMBER() OVER (PARTITION BY service ORDER BY run_id DESC) AS newest
                     FROM runs) WHERE newest <= ?3)))",
            params![cutoff, keep, KEPT_PER_SERVICE],
        )?;
        transaction.commit()?;
        Ok(removed)
    }

    pub fn last_ids(&self) -> rusqlite::Result<LastIds> {
        self.connection.query_row(
            "SELECT (SELECT IFNULL(MAX(id), 0) FROM events),
                    (SELECT IFNULL(MAX(run_id), 0) FROM runs)",
            [],
            |row| {
                Ok(LastIds {
                    event: row.get::<_, i64>(0)? as u64,
                    run: row.get::<_, i64>(1)? as u64,
                })
            },
        )
    }

    /// Runs with no recorded end: what a supervisor that died may have left running.
    pub fn open_runs(&self) -> rusqlite::Result<Vec<Run>> {
        self.select_runs("WHERE ended_at IS NULL ORDER BY run_id", params![])
    }

    /// The runs of `service`, oldest first; the last `limit` when given.
    pub fn runs(&self, service: &str, limit: Option<usize>) -> rusqlite::Result<Vec<Run>> {
        let limit = limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64);
        let mut runs = self.select_runs(
            "WHERE service = ?1 ORDER BY run_id DESC LIMIT ?2",
            params![service, limit],
        )?;
        runs.reverse();
        Ok(runs)
    }

    pub fn run(&self, run_id: u64) -> rusqlite::Result<Option<Run>> {
        Ok(self
            .select_runs("WHERE run_id = ?1", params![run_id as i64])?
            .pop())
    }

    fn select_runs(
        &self,
        tail: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> rusqlite::Result<Vec<Run>> {
        let sql = format!(
            "SELECT run_id, service, pid, pgid, start_ticks, boot_id, instance, started_at,
                    ended_at, exit_code, signal, reason FROM runs {tail}"
        );
        let mut statement = self.connection.prepare_cached(&sql)?;
        let rows = statement.query_map(params, |row| {
            Ok(Run {
                run_id: row.get::<_, i64>(0)? as u64,
                service: row.get(1)?,
                pid: row.get(2)?,
                pgid: row.get(3)?,
                start_ticks: row.get::<_, Option<i64>>(4)?.map(|t| t as u64),
                boot_id: row.get(5)?,
                instance: row.get(6)?,
                started_at: from_millis(row.get(7)?),
                ended_at: row.get::<_, Option<i64>>(8)?.map(from_millis),
                exit_code: row.get(9)?,
                signal: row.get(10)?,
                reason: row.get(11)?,
            })
        })?;
        rows.collect()
    }

    /// Events with ids strictly between `after` and `before`, oldest first.
    pub fn events_between(&self, after: u64, before: u64) -> rusqlite::Result<Vec<StoredEvent>> {
        let mut statement = self.connection.prepare_cached(
            "SELECT id, time, service, run_id, kind, message, data FROM events
             WHERE id > ?1 AND id < ?2 ORDER BY id",
        )?;
        let rows = statement.query_map(
            params![
                after.min(i64::MAX as u64) as i64,
                before.min(i64::MAX as u64) as i64
            ],
            stored_event,
        )?;
        rows.collect()
    }

    /// Events matching `filter`, oldest first; the last `limit` when given.
    pub fn events(
        &self,
        filter: &EventFilter,
        limit: Option<usize>,
    ) -> rusqlite::Result<Vec<StoredEvent>> {
        let limit = limit.map_or(-1, |l| l.min(i64::MAX as usize) as i64);
        let mut statement = self.connection.prepare_cached(
            "SELECT id, time, service, run_id, kind, message, data FROM events
             WHERE id > ?1 AND (?2 IS NULL OR service = ?2) AND (?3 IS NULL OR kind = ?3)
               AND (?5 IS NULL OR time >= ?5)
             ORDER BY id DESC LIMIT ?4",
        )?;
        let rows = statement.query_map(
            params![
                filter.since.min(i64::MAX as u64) as i64,
                filter.service,
                filter.kind,
                limit,
                filter.since_time
            ],
            stored_event,
        )?;
        let mut events = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        events.reverse();
        Ok(events)
    }
}

/// An event row (`id, time, service, run_id, kind, message, data`).
fn stored_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let data: String = row.get(6)?;
    Ok(StoredEvent {
        id: row.get::<_, i64>(0)? as u64,
        time: from_millis(row.get(1)?),
        service: row.get(2)?,
        run_id: row.get::<_, i64>(3)? as u64,
        kind: row.get(4)?,
        message: row.get(5)?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
    })
}

/// How many of each service's newest events (and runs) retention by count never
/// deletes, whatever the other services wrote.
pub const KEPT_PER_SERVICE: i64 = 200;

/// The database file of a state directory.
pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

fn user_version(connection: &Connection) -> rusqlite::Result<u32> {
    connection.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Whether opening failed because the file is not a usable database (as opposed to,
/// say, a permission problem, which moving the file would not fix).
fn is_unreadable(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

/// Milliseconds since the Unix epoch, as SQLite stores integers.
fn millis(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(i64::MAX as u128) as i64)
}

fn from_millis(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64)
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

fn rfc3339_opt<S: serde::Serializer>(
    time: &Option<SystemTime>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => rfc3339(time, serializer),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    fn event(id: u64, service: &str, kind: EventKind, time: SystemTime) -> Entry {
        Entry::Event(Arc::new(Event {
            id,
            time,
            service: ServiceName::new(service).unwrap(),
            run_id: 1,
            kind,
            message: format!("event {id}"),
            data: serde_json::json!({ "n": id }),
        }))
    }

    fn fresh() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join(FILE_NAME)).unwrap();
        (dir, store)
    }

    #[test]
    fn a_new_database_gets_the_latest_schema_and_reopening_changes_nothing() {
        let (dir, store) = fresh();
        assert_eq!(user_version(&store.connection).unwrap(), SCHEMA_VERSION);
        drop(store);
        let again = Store::open(&dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(user_version(&again.connection).unwrap(), SCHEMA_VERSION);
        let mode: String = again
            .connection
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn events_and_runs_read_back_as_written() {
        let (_dir, mut store) = fresh();
        let now = SystemTime::now();
        let start = RunStart {
            run_id: 4,
            service: ServiceName::new("db").unwrap(),
            pid: 4242,
            start_ticks: Some(77),
            boot_id: Some("boot".into()),
            instance: "@muster-1".into(),
            started_at: now,
        };
        let entries = [
            Entry::RunStarted(start),
            event(1, "db", EventKind::Spawned, now),
            event(2, "api", EventKind::Ready, now),
            event(3, "db", EventKind::Exited, now),
        ];
        store.write(&entries).unwrap();
        assert_eq!(store.last_ids().unwrap(), LastIds { event: 3, run: 4 });
        assert_eq!(store.open_runs().unwrap().len(), 1);
        store
            .write(&[Entry::RunEnded(RunEnd {
                run_id: 4,
                ended_at: now,
                exit_code: None,
                signal: Some("SIGKILL".into()),
                reason: "killed".into(),
            })])
            .unwrap();
        assert!(store.open_runs().unwrap().is_empty());
        let run = store.run(4).unwrap().unwrap();
        assert_eq!((run.pid, run.pgid, run.start_ticks), (4242, 4242, Some(77)));
        assert_eq!(run.signal.as_deref(), Some("SIGKILL"));

        let db_only = EventFilter {
            service: Some("db".into()),
            ..EventFilter::default()
        };
        let ids = |events: Vec<StoredEvent>| events.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(store.events(&db_only, None).unwrap()), [1, 3]);
        assert_eq!(ids(store.events(&db_only, Some(1)).unwrap()), [3]);
        let since = EventFilter {
            since: 1,
            kind: Some("ready".into()),
            ..EventFilter::default()
        };
        let ready = store.events(&since, None).unwrap();
        assert_eq!(ids(ready.clone()), [2]);
        assert_eq!(ready[0].data["n"], 2);
        assert_eq!(ready[0].message, "event 2");
    }

    #[test]
    fn retention_keeps_the_newest_events_of_every_service_and_nothing_too_old() {
        let (_dir, mut store) = fresh();
        let now = SystemTime::now();
        let old = now - Duration::from_secs(3 * 86400);
        let entries: Vec<Entry> = (1..=10)
            .map(|id| {
                let time = if id <= 2 { old } else { now };
                event(id, "db", EventKind::Spawned, time)
            })
            .collect();
        store.write(&entries).unwrap();
        // By age: the two old ones go.
        store.prune(100, Duration::from_secs(86400), now).unwrap();
        let left = |store: &Store| {
            store
                .events(&EventFilter::default(), None)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(left(&store), (3..=10).collect::<Vec<_>>());
        // By count: a thousand events of a crash loop, then five kept overall. The
        // newest of every service stay however many the others wrote.
        let storm: Vec<Entry> = (11..=1010)
            .map(|id| event(id, "storm", EventKind::Exited, now))
            .collect();
        store.write(&storm).unwrap();
        store.prune(5, Duration::from_secs(86400), now).unwrap();
        let floor = KEPT_PER_SERVICE as u64;
        let mut expected: Vec<u64> = (3..=10).collect();
        expected.extend(1011 - floor..=1010);
        assert_eq!(left(&store), expected);
        // Numbering goes on from the highest id kept.
        assert_eq!(store.last_ids().unwrap().event, 1010);
    }

    #[test]
    fn garbage_is_moved_aside_and_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "not a database at all\n".repeat(100)).unwrap();
        let (store, aside) = Store::open_or_replace(&path).unwrap();
        let aside = aside.expect("moved aside");
        assert!(
            std::fs::read_to_string(&aside)
                .unwrap()
                .starts_with("not a database")
        );
        assert_eq!(store.last_ids().unwrap(), LastIds::default());
        store
            .connection
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(store);
        for result in [
            Store::open_or_replace(&path).map(|_| ()),
            Store::open_existing(&path).map(|_| ()),
        ] {
            assert!(
                matches!(result, Err(OpenError::Newer { found, .. }) if found == SCHEMA_VERSION + 1)
            );
        }
        let missing = Store::open_existing(&dir.path().join("nothing.db"));
        assert!(matches!(missing, Err(OpenError::Missing { .. })));
    }

    /// A database made by schema version 1, kept as it was written: every later
    /// muster must open it, migrate it and read it.
    #[test]
    fn a_version_1_database_opens_and_reads() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v1.db");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::copy(&fixture, &path).unwrap();
        let (store, aside) = Store::open_or_replace(&path).unwrap();
        assert!(aside.is_none());
        assert_eq!(user_version(&store.connection).unwrap(), SCHEMA_VERSION);
        assert_eq!(store.last_ids().unwrap(), LastIds { event: 16, run: 4 });
        let job = store.runs("job", None).unwrap();
        assert_eq!(job.len(), 3);
        assert!(job.iter().all(|run| run.exit_code == Some(3)));
        let failed = EventFilter {
            kind: Some("failed".into()),
            ..EventFilter::default()
        };
        let failed = store.events(&failed, None).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].service, "job");
    }
}
