"""Connections and migrations for the embedded SQLite database.

`connection()` lends one connection to one tool invocation. `migrate()` brings the schema
up to date and runs once per process (on start-up or a cold start), never per request.

Opening a SQLite connection costs 100-300 µs here (schema parse, WAL index mapping):
more than a whole inbox query. So a long-lived process keeps a few idle connections
(SQLITE_POOL_SIZE) and lends them out; a connection comes back only outside any
transaction, so an invocation never sees another's state. The pool is a cache: losing
it (a new Lambda container) costs only the open.
"""

import queue
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_migrated: set[str] = set()  # databases already checked by this process; safe to lose
_pools: dict[str, queue.LifoQueue] = {}  # idle connections per database; safe to lose


@contextmanager
def connection(settings: Settings) -> Iterator[sqlite3.Connection]:
    """A connection for one invocation: from the pool, or newly opened."""
    pool = _pools.get(settings.database_url)
    if pool is None:
        pool = _pools.setdefault(settings.database_url, queue.LifoQueue())
    try:
        conn = pool.get_nowait()
    except queue.Empty:
        conn = connect(settings)
    try:
        yield conn
    finally:
        if conn.in_transaction or pool.qsize() >= settings.sqlite_pool_size:
            conn.close()
        else:
            pool.put_nowait(conn)


def connect(settings: Settings) -> sqlite3.Connection:
    migrate(settings)
    conn = sqlite3.connect(
        settings.database_path, isolation_level=None, check_same_thread=False, timeout=settings.sqlite_busy_timeout_ms / 1000
    )
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute(f"PRAGMA synchronous = {settings.sqlite_synchronous}")
    conn.execute("PRAGMA temp_store = MEMORY")  # savepoint journals stay off the disk
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection, write: bool) -> Iterator[sqlite3.Connection]:
    """One transaction: IMMEDIATE for writers (take the write lock up front, so a
    read-then-write never fails half way with SQLITE_BUSY), deferred for readers."""
    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def dicts(cursor: sqlite3.Cursor) -> list[dict]:
    """A cursor's rows as dicts; for result sets, faster than going through sqlite3.Row."""
    cursor.row_factory = None
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


def migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[str, str]]:
    """(version, sql) for every `NNNN_name.sql`, in order."""
    return [(path.stem, path.read_text()) for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))]


def migrate(settings: Settings) -> None:
    if settings.database_url in _migrated:
        return
    path = settings.database_path
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=settings.sqlite_busy_timeout_ms / 1000)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_ts TEXT NOT NULL)"
        )
        with transaction(conn, write=True):
            applied = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in migrations():
                if version not in applied:
                    # executescript would commit our transaction; run statement by statement instead.
                    for statement in split_statements(sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (version, applied_ts) VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ'))",
                        (version,),
                    )
    finally:
        conn.close()
    _migrated.add(settings.database_url)


def split_statements(sql: str) -> list[str]:
    """Split a script into complete statements (triggers contain `;` inside BEGIN…END)."""
    statements, current = [], ""
    for line in sql.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements
