"""Workers' heartbeats: a running worker writes one every few seconds; readers judge it
alive while its heartbeat is recent (table worker_heartbeats, migrations/0018)."""

import socket
import sqlite3

from .. import clock
from ..ids import stable_id

ARCHIVE_WORKER = "archive"  # a database's outbox has one archive (worker) at a time
# Written by the server when its archive worker dies (pid: the server's; restarts; last_error: the
# exit status): a worker that dies before its first heartbeat leaves no other trace doctor can read.
ARCHIVE_EXITS = "archive exits"


def beat(db: sqlite3.Connection, name: str, pid: int, started_ts: str, restarts: int, last_error: str | None = None) -> None:
    row = (pid, socket.gethostname(), started_ts, clock.now(), restarts, last_error, stable_id("worker", name))
    # Updated, or else inserted: not an upsert (docs/turso.md).
    db.execute(
        "UPDATE worker_heartbeats SET pid = ?, host = ?, started_ts = ?, heartbeat_ts = ?, restarts = ?, last_error = ?"
        " WHERE id = ?",
        row,
    )
    db.execute(
        "INSERT INTO worker_heartbeats (pid, host, started_ts, heartbeat_ts, restarts, last_error, id, name)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (*row, name),
    )


def last(db: sqlite3.Connection, name: str) -> dict | None:
    """The worker's last heartbeat, with its age in seconds; None if it never beat."""
    row = db.execute(
        "SELECT pid, host, started_ts, heartbeat_ts, restarts, last_error FROM worker_heartbeats WHERE id = ?",
        (stable_id("worker", name),),
    ).fetchone()
    if row is None:
        return None
    return {**dict(row), "age_seconds": round(clock.age_seconds(row["heartbeat_ts"]), 3)}
