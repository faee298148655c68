"""list_threads from the summary rows alone (migration 0021; 0024 narrowed their index): the
same answers as computed from the messages, with rows of several writers per view (two Turso
replicas; a database that had rows from before and after migration 0019), on a database
migrated from before 0021, and without reading a message row or scanning an index
(chalicelib/tools/thread_summaries.py)."""

import re
import sqlite3

import pytest

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.store import db
from chalicelib.tools import thread_summaries, tools_by_name
from chalicelib.tools.projects import find_project

from .sql import sql, turso_plans
from .test_threads_summary import AGENTS, assert_all_views_right, listed, mixed_history, register
from .turso import turso_server

TOOLS = tools_by_name()


def caller(*settings: Settings):
    """call(tool, **arguments) that takes turns between these settings (replicas), call by call."""
    turn = iter(range(1_000_000))

    def call(tool_name: str, /, **arguments):
        chosen = settings[next(turn) % len(settings)]
        return invoke.call(TOOLS[tool_name], arguments, chosen).model_dump(mode="json")

    return call


def views_by_rows(settings) -> dict[int, int]:
    """{number of rows a view has: how many views have that many}."""
    with db.connection(settings) as conn:
        db.refresh(conn)
        rows = conn.execute("SELECT count(*) FROM thread_summaries GROUP BY project_id, thread_id, viewer_id").fetchall()
    sizes: dict[int, int] = {}
    for (size,) in rows:
        sizes[size] = sizes.get(size, 0) + 1
    return sizes


def test_two_replicas_writing_the_same_threads_list_them_alike(tmp_path):
    """Each replica writes its own summary rows: a view combines two writers' rows, one of them
    often older than the walk of the newest index goes, whichever replica lists it."""
    with turso_server(tmp_path) as primary:
        a, b = (Settings(database_url=f"sqlite:///{tmp_path}/{name}.db", turso_sync_url=primary.url,
                         replica_max_staleness_ms=0) for name in ("a", "b"))
        call = caller(a, b)
        register(call)
        mixed_history(call, rounds=3)
        assert views_by_rows(a).get(2, 0) > 5  # views made of both replicas' rows
        assert assert_all_views_right(a) == assert_all_views_right(b) >= 6
        with sql(a) as conn:  # the summaries as 0019 left them (writer -1) and migrated again: writer 0's
            conn.execute("DROP TABLE thread_summaries")
            conn.execute("DELETE FROM schema_migrations WHERE version LIKE '0019%' OR version LIKE '0021%' OR version LIKE '0024%'")
        db._migrated.clear()
        db.migrate(a)
        assert views_by_rows(b) == {1: sum(views_by_rows(b).values())}
        mixed_history(call, rounds=1)  # each replica's rows beside writer 0's
        assert views_by_rows(a).get(3, 0) > 0
        assert_all_views_right(a)
        assert_all_views_right(b)


@pytest.mark.sqlite_only
def test_a_database_from_between_0019_and_0021_migrates_forward(settings):
    """Rows 0019 made (writer -1) and rows written after it (writer 0): 0021 fills in the subject
    and times of both, makes the -1 rows writer 0's where the view has no writer 0 row, and keeps
    both rows where it has (the walk then finds the other one in thread_summaries_shared)."""
    call = caller(settings)
    register(call)
    mixed_history(call, rounds=2)
    with sql(settings) as conn:
        conn.execute("UPDATE thread_summaries SET writer = -1")  # as 0019's backfill made them
    mixed_history(call, rounds=2)  # writer 0's rows beside them
    for _ in range(4):  # and threads that push the older rows out of a short walk
        call("send_message", project_key="work-demo", sender_name="amberfox", to=["RedStone"], subject="filler", body_md="f")
    expected = {(key, name, limit): listed(settings, key, name, limit)
                for key, names in AGENTS.items() for name in (None, *names) for limit in (1, 3, 500)}
    with sql(settings) as conn:  # back to 0020's schema: 0021's columns and indexes gone
        conn.execute("DROP INDEX thread_summaries_newest")
        conn.execute("DROP INDEX thread_summaries_shared")
        for column in ("subject", "first_ts", "last_ts"):
            conn.execute(f"ALTER TABLE thread_summaries DROP COLUMN {column}")
        conn.execute("CREATE INDEX thread_summaries_recent ON thread_summaries (project_id, viewer_id, last_id, thread_id)")
        conn.execute("DELETE FROM schema_migrations WHERE version LIKE '0021%' OR version LIKE '0024%'")
        (doubles,) = conn.execute("SELECT count(*) FROM thread_summaries o WHERE writer = -1 AND EXISTS (SELECT 1"
                                  " FROM thread_summaries n WHERE n.writer = 0 AND (n.project_id, n.thread_id, n.viewer_id)"
                                  " = (o.project_id, o.thread_id, o.viewer_id))").fetchone()
        (old,) = conn.execute("SELECT count(*) FROM thread_summaries WHERE writer = -1").fetchone()
    db._migrated.clear()
    db.migrate(settings)
    with sql(settings) as conn:
        assert conn.execute("SELECT count(*) FROM thread_summaries WHERE subject = '' OR first_ts = '' OR last_ts = ''"
                            ).fetchone()[0] == 0
        (kept,) = conn.execute("SELECT count(*) FROM thread_summaries WHERE writer = -1").fetchone()
    assert 0 < kept == doubles < old  # the others adopted
    assert views_by_rows(settings)[2] > 0
    for (key, name, limit), threads in expected.items():
        assert listed(settings, key, name, limit) == threads, (key, name, limit)
    assert_all_views_right(settings)
    mixed_history(call, rounds=1)  # the write path updates the rows it now owns
    assert_all_views_right(settings)
    assert views_by_rows(settings).get(3, 0) == 0


@pytest.mark.sqlite_only
def test_the_summaries_are_read_and_written_through_indexes_only(call, settings):
    """Every statement on thread_summaries (and thread_recounts) of list_threads, send_message and
    a recount (whole, and in parts) searches an index (the newest-first one only by view);
    list_threads reads no message. The test database has no planner statistics, as
    thread_summaries had none at a million messages."""
    register(call)
    mixed_history(call, rounds=1)
    statements: list[str] = []
    with db.connection(settings) as conn:  # back into the pool: the next calls are traced on it
        conn.set_trace_callback(statements.append)
    call("list_threads", project_key="work-demo")
    call("list_threads", project_key="work-demo", agent_name="RedStone", limit=2)
    assert statements and not [s for s in statements if re.search(r"\b(FROM|JOIN) messages\b", s)]
    call("send_message", project_key="work-demo", sender_name="BlueLake", to=["RedStone"], subject="s", body_md="b",
         thread_id="PLAN-0")
    with db.connection(settings) as conn:
        project = find_project(conn, "work-demo")
        thread_summaries.recount(conn, project["id"], ["PLAN-0", "ACROSS"])
        thread_summaries.queue_recounts(conn, project["id"], ["PLAN-0", "ACROSS"])  # as a purge: remade in parts
        while conn.execute("SELECT 1 FROM threads_to_recount").fetchone():
            thread_summaries.recount_some(conn, 2, settled=2**62)
        conn.set_trace_callback(None)
    plain = sqlite3.connect(settings.database_path)
    touched = [s for s in statements if "thread_summaries" in s or "thread_recounts" in s]
    assert any(s.startswith("DELETE FROM thread_recounts") for s in touched)
    assert any(s.startswith("UPDATE") for s in touched) and any(s.startswith("DELETE") for s in touched)
    given = re.compile(r"CO-ROUTINE wanted|SCAN wanted|SCAN \d+ CONSTANT ROWS")  # the rows a statement gives (values_of)
    for statement in touched:
        if statement.startswith("INSERT"):
            continue
        steps = [row[3] for row in plain.execute(f"EXPLAIN QUERY PLAN {statement}") if not given.fullmatch(row[3])]
        for step in steps:
            assert step.startswith("SEARCH") and ("INDEX" in step or "PRIMARY KEY" in step), (statement, steps)
            assert "thread_summaries_newest (project_id=?)" not in step, (statement, steps)
    # Turso's engine (a replica's) plans them too: each look-up by thread goes to its thread's rows.
    for statement, steps in turso_plans(settings.database_path, statements).items():
        assert not [step for step in steps if step.endswith("(project_id=?)")], (statement, steps)
