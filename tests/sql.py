"""The tests' own SQL on a test's database, whichever the backend (embedded or a Turso replica)."""

from contextlib import contextmanager

from chalicelib.store import db


@contextmanager
def sql(settings):
    """`with sql(settings) as conn:` one transaction, committed (and pushed, on a replica) at the end."""
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        yield conn


def migrated_until(path, version: str):
    """A database file with the migrations before `version` only (an older release's schema), as
    an open connection (autocommit) for the test to write old rows with the old SQL."""
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    with db.transaction(conn, write=True):
        conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, applied_ts TEXT NOT NULL)")
        for name, text in db.migrations():
            if name >= version:
                break
            for statement in db.split_statements(text):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (name,))
    return conn


def write_lock_free(settings) -> bool:
    """Whether another connection could take the database's write lock at once (an embedded file)."""
    import sqlite3

    other = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        other.close()


def turso_plans(database_path, statements: list[str]) -> dict[str, list[str]]:
    """The query plan Turso's engine (a replica's) makes of each of these SELECT statements (traced
    on embedded SQLite), on an empty copy of the database's schema (FTS5 tables left out: Turso
    has none). Its planner differs from SQLite's: it uses an index only up to a column compared
    with IN (...)."""
    import sqlite3

    import turso

    engine = turso.connect(":memory:")
    for (text,) in sqlite3.connect(database_path).execute(
        "SELECT sql FROM sqlite_master WHERE type IN ('table', 'index') AND sql IS NOT NULL AND tbl_name NOT LIKE 'messages_fts%'"
        " AND tbl_name NOT LIKE 'message_runs%'"  # (embedded only too: migration 0052's WITHOUT ROWID table)
    ):
        engine.execute(text)
    return {statement: [row[-1] for row in engine.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()]
            for statement in statements if statement.startswith(("SELECT", "WITH")) and "messages_fts" not in statement}
