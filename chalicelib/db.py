"""Connections and migrations for the embedded SQLite database.

`connection()` lends one connection to one tool invocation. `migrate()` brings the schema
up to date and runs once per process (on start-up or a cold start), never per request.

Opening a SQLite connection costs 100-300 µs here (schema parse, WAL index mapping):
more than a whole inbox query. So a long-lived process keeps a few idle connections
(SQLITE_POOL_SIZE) and lends them out; a connection comes back only outside any
transaction, so an invocation never sees another's state. The pool is a cache: losing
it (a new Lambda container) costs only the open.
"""

import sqlite3
from pathlib import Path

from .config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_migrated: set[str] = set()  # databases already checked by this process; safe to lose
_pools: dict[str, list[sqlite3.Connection]] = {}  # idle connections per database; safe to lose


class connection:
    """`with connection(settings) as conn:` a connection for one invocation, from the pool
    or newly opened. (A class, not @contextmanager: this is on every request's path.)"""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = _pools.setdefault(settings.database_url, [])

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.conn = self.pool.pop()  # list.pop and append are atomic: no lock needed
        except IndexError:
            self.conn = connect(self.settings)
        return self.conn

    def __exit__(self, *exc_info) -> None:
        if self.conn.in_transaction or len(self.pool) >= self.settings.sqlite_pool_size:
            self.conn.close()
        else:
            self.pool.append(self.conn)


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


class transaction:
    """`with transaction(conn, write):` IMMEDIATE for writers (take the write lock up front,
    so a read-then-write never fails half way with SQLITE_BUSY), deferred for readers."""

    def __init__(self, conn: sqlite3.Connection, write: bool) -> None:
        self.conn = conn
        self.write = write

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")
        return self.conn

    def __exit__(self, kind, exc, tb) -> None:
        self.conn.execute("ROLLBACK" if kind else "COMMIT")


def placeholders(values) -> str:
    """`?, ?, ?` for an `IN (...)` of these values."""
    return ",".join("?" * len(values))


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
