"""Connections and migrations: the embedded SQLite database, or a Turso replica.

`connection()` lends one connection to one tool invocation. `migrate()` brings the schema
up to date and runs once per process (on start-up or a cold start), never per request.
With TURSO_SYNC_URL set, connections come from the process's replica (chalicelib/store/replica.py)
and `transaction` pushes each committed write to the primary before returning.

Opening a SQLite connection costs 100-300 µs here (schema parse, WAL index mapping):
more than a whole inbox query. So a long-lived process keeps a few idle connections
(SQLITE_POOL_SIZE) and lends them out; a connection comes back only outside any
transaction, so an invocation never sees another's state. The pool is a cache: losing
it (a new Lambda container) costs only the open.
"""

import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from urllib.parse import quote

from ..config import Settings
from ..errors import Unavailable
from . import upkeep
from .replica import replica

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
_migrated: set[str] = set()  # databases already checked by this process; safe to lose
_pools: dict[str, list[sqlite3.Connection]] = {}  # idle connections per database; safe to lose


class connection:
    """`with connection(settings) as conn:` a connection for one invocation, from the pool
    or newly opened. (A class, not @contextmanager: this is on every request's path.)
    On a replica, `fresh` pulls before lending whatever the staleness allows."""

    def __init__(self, settings: Settings, fresh: bool = False) -> None:
        self.settings = settings
        self.fresh = fresh
        self.pool = _pools.setdefault(settings.database_url, [])

    def __enter__(self) -> sqlite3.Connection:
        if self.settings.turso_sync_url:
            migrate(self.settings)
            self.replica = replica(self.settings)
            return self.replica.lend(max_staleness_ms=0 if self.fresh else self.settings.replica_max_staleness_ms)
        try:
            self.conn = self.pool.pop()  # list.pop and append are atomic: no lock needed
        except IndexError:
            self.conn = connect(self.settings)
        return self.conn

    def __exit__(self, *exc_info) -> None:
        if self.settings.turso_sync_url:
            self.replica.give_back()
        elif self.conn.in_transaction or len(self.pool) >= self.settings.sqlite_pool_size:
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
    so a read-then-write never fails half way with SQLITE_BUSY), deferred for readers.
    On a replica, a committed write is pushed before the block ends (or Unavailable)."""

    def __init__(self, conn: sqlite3.Connection, write: bool) -> None:
        self.conn = conn
        self.write = write

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE" if self.write else "BEGIN")
        if self.write:
            self.upkeep = upkeep.begin(self.conn)  # what the writes defer, applied before COMMIT (upkeep.py)
        return self.conn

    def __exit__(self, kind, exc, tb) -> None:
        if not self.write:
            self._end(kind)
            return
        try:
            if not kind:
                upkeep.apply(self.conn)
        except BaseException:
            rollback(self.conn)
            raise
        else:
            self._end(kind)
        finally:
            upkeep.end(self.upkeep)
        if not kind and hasattr(self.conn, "replica"):
            self.conn.replica.push()

    def _end(self, failed) -> None:
        if failed:
            rollback(self.conn)
        else:
            self.conn.execute("COMMIT")


def rollback(conn) -> None:
    """ROLLBACK, unless SQLite already ended the transaction itself (it may on a full disk, and
    then a ROLLBACK's "no transaction is active" would hide the error that says why)."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def refresh(conn) -> None:
    """Pull now, on a replica, so other replicas' pushed writes show; nothing on embedded SQLite."""
    if hasattr(conn, "replica"):
        conn.replica.pull()


def database_file(conn) -> str:
    """The file of the connection's main database, absolute (whatever DATABASE_URL or cwd said)."""
    return next(row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main")


def placeholders(values) -> str:
    """`?, ?, ?` for an `IN (...)` of these values."""
    return ",".join("?" * len(values))


def values_of(rows: list[tuple]) -> tuple[str, list]:
    """`VALUES (?, ?), ...` of these rows, and their parameters: a table to join by equality on an
    index's columns. Turso's engine (a replica's) uses an index only up to a column compared with
    IN (...): `project_id = ? AND thread_id IN (...)` read every row of the project's."""
    return "VALUES " + ", ".join([f"({placeholders(rows[0])})"] * len(rows)), [value for row in rows for value in row]


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """Lists of `size` items (the last may be shorter), read from `items` as they are needed:
    an `IN (...)` or a write transaction of a bounded size."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def dicts(cursor: sqlite3.Cursor) -> list[dict]:
    """A cursor's rows as dicts; for result sets, faster than going through sqlite3.Row."""
    cursor.row_factory = None
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor]


def migrations(directory: Path = MIGRATIONS_DIR) -> list[tuple[str, str]]:
    """(version, sql) for every `NNNN_name.sql`, in order."""
    return [(path.stem, path.read_text()) for path in sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))]


def embedded_only(sql: str) -> bool:
    """A migration marked `-- embedded only` (FTS5: Turso has none; replica mode indexes
    in a sidecar file instead, chalicelib/store/search_index.py) is recorded but not run on replicas."""
    return sql.startswith("-- embedded only")


def migrate(settings: Settings) -> None:
    if settings.database_url in _migrated:
        return
    if settings.turso_sync_url:
        # On the primary, through this process's replica: pulled first, so migrations another
        # replica already applied are seen; pushed at the end, so they apply once.
        the_replica = replica(settings)
        conn = the_replica.lend(max_staleness_ms=settings.replica_max_staleness_ms)
        try:
            apply_migrations(conn, on_replica=True)
        finally:
            the_replica.give_back()
    else:
        try:
            settings.database_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # (a file where a folder should be; no permission): a database error like SQLite's
            raise sqlite3.OperationalError(f"cannot make its folder {exc.filename}: {exc.strerror}") from exc
        conn = sqlite3.connect(settings.database_path, isolation_level=None, timeout=settings.sqlite_busy_timeout_ms / 1000)
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            apply_migrations(conn, on_replica=False)
        finally:
            conn.close()
    _migrated.add(settings.database_url)


def apply_migrations(conn, on_replica: bool) -> None:
    with transaction(conn, write=True):
        # Only our own table: a replica also holds Turso's (turso_cdc, turso_sync_*), never touched.
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_ts TEXT NOT NULL)")
        applied = applied_migrations(conn)
        refuse_newer_schema(applied)
        for version, sql in migrations():
            if version in applied:
                continue
            if not (on_replica and embedded_only(sql)):
                # executescript would commit our transaction; run statement by statement instead.
                for statement in split_statements(sql):
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, applied_ts) VALUES (?, strftime('%Y-%m-%dT%H:%M:%fZ'))",
                (version,),
            )


class NewerSchema(RuntimeError):
    """The database was migrated by a newer build of Agent Mail than this one."""


def refuse_newer_schema(applied: set[str]) -> None:
    # This build would write rows the newer schema may not expect, and miss what it needs.
    unknown = sorted(applied - {version for version, _ in migrations()})
    if unknown:
        raise NewerSchema(
            f"the database has migrations this build of Agent Mail does not know ({', '.join(unknown)}):"
            " a newer build wrote it; upgrade Agent Mail to use it"
        )


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


def applied_migrations(conn) -> set[str]:
    return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def missing_migrations(conn) -> list[str]:
    """Migrations on disk that this database has not applied."""
    applied = applied_migrations(conn)
    return [version for version, _ in migrations() if version not in applied]


def error_line(exc: sqlite3.Error, settings: Settings | None) -> str:
    """A database error as the operator's commands say it, in one line naming the file."""
    return f"database error ({settings.database_path}): {exc}" if settings else f"database error: {exc}"


def cannot_open(exc: BaseException, settings: Settings) -> tuple[str, str] | None:
    """(what failed, what to fix) when migrate could not open the database (a directory, a file this
    process may not open, one that is no SQLite database, one a newer build wrote, a replica whose
    primary does not answer or whose file another process has open), as the servers
    that refuse to start on it say it; None for any other exception."""
    if isinstance(exc, NewerSchema):
        return str(exc), "Point DATABASE_URL at this build's database, or upgrade Agent Mail"
    if isinstance(exc, Unavailable):  # a replica not made: its primary unreachable, or its file another process's
        return exc.message, exc.hint
    if isinstance(exc, sqlite3.Error):
        return error_line(exc, settings), ("DATABASE_URL must name a SQLite database file, or a path where one may be"
                                           " created, that this process may read and write")
    return None


class NoDatabase(FileNotFoundError):
    """as_it_is found no database file: it creates none (a mistyped DATABASE_URL would look like a new, empty one)."""


@contextmanager
def as_it_is(settings: Settings, writable: bool = False):
    """A connection to the database as it is, for doctor: not created (NoDatabase), not migrated
    (an operator checking a database before an upgrade must still be able to go back to the build
    that wrote it), and read-only unless `writable`. On a replica, this process's replica, pulled now."""
    if settings.turso_sync_url:
        the_replica = replica(settings)
        conn = the_replica.lend(max_staleness_ms=0)  # (a lend that fails gives its lock back itself)
        try:
            yield conn
        finally:
            the_replica.give_back()
        return
    if settings.no_database:
        raise NoDatabase(f"no database at {settings.database_path}")
    uri = f"file:{quote(str(settings.database_path.resolve()))}?mode={'rw' if writable else 'ro'}"  # never creates it
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False,
                           timeout=settings.sqlite_busy_timeout_ms / 1000)
    conn.row_factory = sqlite3.Row
    try:
        yield conn
    finally:
        conn.close()


def write_probe(settings: Settings, timeout_seconds: float = 1.0) -> str | None:
    """Why the database cannot take a write now (None if it can): the write lock is tried
    on a connection of its own, and given back at once. A replica is pulled instead: its
    writes go to the primary."""
    if settings.turso_sync_url:
        the_replica = replica(settings)
        try:
            the_replica.lend(max_staleness_ms=0, patience_s=timeout_seconds)  # pulls now (gives the lock back if it cannot)
        except Exception as exc:  # (Unavailable says why: the primary unreachable, or the file another process's)
            return f"{exc.message} ({exc.hint})" if isinstance(exc, Unavailable) else f"the Turso replica failed: {exc}"
        the_replica.give_back()
        return None
    try:
        conn = sqlite3.connect(settings.database_path, isolation_level=None, timeout=timeout_seconds)
        try:
            conn.execute("BEGIN IMMEDIATE")
            # A write, rolled back: a file SQLite could open read-only only takes the lock (in WAL mode) and refuses this.
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            conn.execute(f"PRAGMA user_version = {int(version)}")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"the database cannot be written: {exc}"
    return None


def backup(settings: Settings, target: Path) -> int:
    """Copy the embedded database to `target` with SQLite's online backup API, in one step: one
    consistent snapshot of what was committed (the WAL's pages included), taken while the server
    goes on writing (a reader in WAL mode blocks no writer). The copy is made beside `target` and
    renamed into place, so `target` is never a partial copy; it is left in rollback-journal mode, a
    single file (the server's migrations set WAL again when it is restored), readable by this user
    only. Its size in bytes. The partial copy has a name of its own (mkstemp), so no file of anyone's
    is replaced or deleted but `target`; an OSError (an unwritable directory, a full disk) is about the target."""
    descriptor, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    os.close(descriptor)
    partial = Path(name)
    try:
        _online_copy(settings, partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    return target.stat().st_size


# What SQLite answers when writing a file failed (a full disk, a file size limit, a failing disk): in
# a backup, which only reads the database, the copy's. The database's own errors stay sqlite3's.
_WRITE_FAILED = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR_WRITE, sqlite3.SQLITE_IOERR_FSYNC,
                           sqlite3.SQLITE_IOERR_DIR_FSYNC, sqlite3.SQLITE_IOERR_TRUNCATE})


def _online_copy(settings: Settings, target: Path) -> None:
    with as_it_is(settings, writable=True) as source:  # a missing database is an error, never a new empty file
        copy = sqlite3.connect(target)
        try:
            source.backup(copy)  # all pages in one step: a step that meets a write in between would start over
            copy.execute("PRAGMA journal_mode = DELETE")
        except sqlite3.Error as exc:  # (the backup API reports both files' errors on the copy's connection)
            if exc.sqlite_errorcode in _WRITE_FAILED:  # the CLI said "database error (<the database>)"
                raise OSError(f"{exc} ({exc.sqlite_errorname})") from exc
            raise
        finally:
            copy.close()


def integrity_problems(conn, limit: int = 20) -> list[str]:
    """What PRAGMA integrity_check finds (an empty list: the file is sound)."""
    found = [row[0] for row in conn.execute(f"PRAGMA integrity_check({int(limit)})")]
    return [] if found == ["ok"] else found
