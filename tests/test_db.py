import asyncio
import sqlite3
import threading

import pytest

from chalicelib.config import SQLITE_MAX_BUSY_TIMEOUT_MS
from chalicelib.store import db
from chalicelib import invoke
from chalicelib.errors import NotFound
from chalicelib.ids import new_id, new_ids, stable_id
from chalicelib.tools import tools_by_name

TOOLS = tools_by_name()


@pytest.mark.fresh_database
def test_migrations_apply_once_and_are_recorded(settings):
    db.migrate(settings)
    db._migrated.clear()  # as a new process would
    db.migrate(settings)
    with sqlite3.connect(settings.database_path) as conn:
        versions = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert versions == [version for version, _ in db.migrations()]
    assert versions[:2] == ["0001_core", "0002_search"]


@pytest.mark.parametrize("on_replica", [False, True])
def test_a_database_from_a_newer_build_is_refused(settings, on_replica):
    db.migrate(settings)
    conn = sqlite3.connect(settings.database_path, isolation_level=None)
    conn.execute("INSERT INTO schema_migrations VALUES ('9999_from_the_future', '2099-01-01T00:00:00Z')")
    with pytest.raises(db.NewerSchema, match=r"does not know \(9999_from_the_future\).*upgrade Agent Mail"):
        db.apply_migrations(conn, on_replica=on_replica)
    conn.close()


def test_migrate_on_the_command_line_names_the_unknown_version(settings):
    from click.testing import CliRunner

    from chalicelib.transports.cli import cli

    db.migrate(settings)
    with sqlite3.connect(settings.database_path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('9999_from_the_future', '2099-01-01T00:00:00Z')")
    db._migrated.clear()  # as a new process would
    result = CliRunner().invoke(cli, ["--database-url", settings.database_url, "migrate"])
    assert result.exit_code == 1
    assert "9999_from_the_future" in result.stderr and "upgrade Agent Mail" in result.stderr
    assert "Traceback" not in result.output


def test_schema_check_costs_nothing_per_request(call, settings, monkeypatch):
    call("ensure_project", human_key="/x")
    looked = []
    monkeypatch.setattr(db, "migrations", lambda *a: looked.append(1) or [])
    for _ in range(5):
        call("list_projects")
    assert looked == []


def test_connections_are_lent_outside_transactions(settings):
    with db.connection(settings) as conn:
        conn.execute("BEGIN")
        conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (1, 's', '/s', 'now')")
    # A connection left inside a transaction is closed, not pooled: its write is gone.
    with db.connection(settings) as conn:
        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM projects").fetchone()[0] == 0


def test_pool_size_zero_opens_a_connection_per_invocation(settings):
    settings = settings.model_copy(update={"sqlite_pool_size": 0})
    with db.connection(settings) as first:
        pass
    with db.connection(settings) as second:
        assert second is not first
    with pytest.raises(sqlite3.ProgrammingError):
        first.execute("SELECT 1")  # closed


def test_the_longest_busy_timeout_allowed_still_waits_for_another_writer(settings):
    """SQLITE_BUSY_TIMEOUT_MS past a C int (3,000,000,000) was taken, and Python's sqlite3 wrapped it
    to a negative wait: a write meeting another process's lock failed at once. Its bound waits."""
    settings = settings.model_copy(update={"sqlite_busy_timeout_ms": SQLITE_MAX_BUSY_TIMEOUT_MS})
    db.migrate(settings)
    other_process = sqlite3.connect(settings.database_path, isolation_level=None)
    other_process.execute("BEGIN IMMEDIATE")
    conn = db.connect(settings)
    outcome = []
    writer = threading.Thread(target=lambda: outcome.append(conn.execute("BEGIN IMMEDIATE") and "took the lock"))
    try:
        writer.start()
        writer.join(1.0)
        assert writer.is_alive() and outcome == []  # waiting, not failed with "database is locked"
    finally:
        other_process.execute("ROLLBACK")
        other_process.close()
    writer.join(60)
    assert outcome == ["took the lock"]
    conn.execute("ROLLBACK")
    conn.close()


def test_stable_ids_are_deterministic_63_bit():
    assert stable_id("project", "/a") == stable_id("project", "/a") != stable_id("project", "/b")
    assert 0 < stable_id("x") < 2**63


def test_new_ids_are_time_ordered_and_unique():
    ids = [new_id() for _ in range(10_000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(0 < i < 2**63 for i in ids)


def test_ids_reserved_at_once_interleave_with_single_ones_in_order():
    ids = []
    for count in (0, 1, 3, 250, 2):
        ids.append(new_id())
        reserved = list(new_ids(count))
        assert reserved == list(range(reserved[0], reserved[0] + count)) if count else reserved == []
        ids += reserved
    ids.append(new_id())
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and all(0 < i < 2**63 for i in ids)


def test_group_commit_isolates_a_failing_write(call, project, settings):
    """Writes queued together share one COMMIT, but a failing one rolls back alone."""
    send = TOOLS["send_message"]
    good = dict(project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="ok", body_md="")
    bad = good | {"to": ["GreenCastle", "Ghost"], "subject": "bad"}

    async def burst():
        return await asyncio.gather(
            *(invoke.acall(send, args, settings) for args in (good, bad, good, bad, good)), return_exceptions=True
        )

    results = asyncio.run(burst())
    assert [type(r).__name__ for r in results] == ["SentMessage", "NotFound", "SentMessage", "NotFound", "SentMessage"]
    assert all(str(r) == "No agent named Ghost in project 'work-demo'." for r in results if isinstance(r, NotFound))
    inbox = call("fetch_inbox", project_key=project, agent_name="GreenCastle")["messages"]
    assert sorted(m["id"] for m in inbox) == sorted(r.message.model_dump(mode="json")["id"] for r in results[::2])


def test_invalid_input_never_reaches_the_database(tmp_path):
    """A database that cannot even be opened still gets a clean 422 for bad input."""
    from chalicelib.config import Settings
    from chalicelib.errors import InvalidArgument

    unreachable = Settings(database_url="sqlite:////proc/no/such/dir/agent_mail.db")
    with pytest.raises(InvalidArgument):
        invoke.call(TOOLS["send_message"], {"project_key": "x", "to": []}, unreachable)
