"""The history database, `STATE_DIR/state.db`, read as `muster events` reads it: with or
without a supervisor running, every event it holds (the supervisor itself keeps only the
last 10,000 in memory, and a new one starts with none).

SQLite in WAL mode: reading never blocks the supervisor's writes. The database is
opened read-write without creating it (a reader of a WAL database writes its shared
memory index), never migrated; one made by a newer muster (a higher `user_version`) is
left alone, and the client reads what the API gives instead.
"""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import datetime, timezone
from typing import List, Optional

from .models import Event

FILE_NAME = "state.db"
#: The schema version this client reads (`PRAGMA user_version`).
SCHEMA_VERSION = 1
#: Events read per query: a long history is read a page at a time.
PAGE = 1000


class History:
    """An open history database."""

    def __init__(self, connection: sqlite3.Connection, path: str) -> None:
        self._connection = connection
        self.path = path

    @classmethod
    def open(cls, state_dir: str) -> Optional["History"]:
        """The database of `state_dir`, or None when there is none this client can read."""
        path = os.path.join(state_dir, FILE_NAME)
        if not os.path.exists(path):
            return None
        try:
            connection = sqlite3.connect(
                f"file:{path}?mode=rw", uri=True, timeout=5.0, check_same_thread=False
            )
        except sqlite3.Error:
            return None
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version < 1 or version > SCHEMA_VERSION:
                connection.close()
                return None
        except sqlite3.Error:
            connection.close()
            return None
        return cls(connection, path)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "History":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def last_id(self) -> int:
        """The highest event id stored (0 for none)."""
        row = self._connection.execute("SELECT IFNULL(MAX(id), 0) FROM events").fetchone()
        return int(row[0])

    def page(
        self,
        after: int,
        upto: Optional[int] = None,
        service: Optional[str] = None,
        kind: Optional[str] = None,
        limit: int = PAGE,
    ) -> List[Event]:
        """Up to `limit` events with ids after `after` (and at most `upto`), oldest first."""
        rows = self._connection.execute(
            "SELECT id, time, service, run_id, kind, message, data FROM events "
            "WHERE id > ?1 AND (?2 IS NULL OR id <= ?2) AND (?3 IS NULL OR service = ?3) "
            "AND (?4 IS NULL OR kind = ?4) ORDER BY id LIMIT ?5",
            (after, upto, service, kind, limit),
        ).fetchall()
        return [_event(row) for row in rows]

    def knows_service(self, service: str) -> bool:
        row = self._connection.execute(
            "SELECT 1 FROM events WHERE service = ?1 LIMIT 1", (service,)
        ).fetchone()
        return row is not None


def _event(row: tuple) -> Event:  # type: ignore[type-arg]
    event_id, millis, service, run_id, kind, message, data = row
    try:
        payload = json.loads(data)
    except (TypeError, ValueError):
        payload = None
    return Event(
        id=int(event_id),
        time=datetime.fromtimestamp(max(int(millis), 0) / 1000.0, tz=timezone.utc),
        service=str(service),
        run_id=int(run_id),
        kind=str(kind),
        message=str(message),
        data=payload,
    )
