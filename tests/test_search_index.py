"""Replica mode's sidecar FTS5 index catching up with a replica's messages (chalicelib/store/search_index.py).
The replica here is a plain sqlite3 file with the messages table: catch_up only reads it."""

import importlib
import re
import sqlite3
import time

import pytest
from chalice.test import Client

from chalicelib.config import get_settings
from chalicelib.errors import InvalidArgument, Unavailable
from chalicelib.ids import RANDOM_BITS, new_id
from chalicelib.store import search_index
from chalicelib.store.search_index import SearchIndex
from chalicelib.tools.search import one_budget

MINUTE = (60 * 1000) << RANDOM_BITS  # one minute of new_id()s


def replica(tmp_path) -> sqlite3.Connection:
    conn = sqlite3.connect(tmp_path / "replica.db", isolation_level=None)
    conn.execute(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, project_id INTEGER, sender_id INTEGER, thread_id TEXT,"
        " importance TEXT, created_ts TEXT, subject TEXT, body_md TEXT, body_archived_ts TEXT)"
    )
    conn.execute("CREATE TABLE message_recipients (message_id INTEGER, agent_id INTEGER, kind TEXT)")
    return conn


def add(conn, message_id: int, subject: str, project_id: int = 1) -> None:
    conn.execute(
        "INSERT INTO messages (id, project_id, sender_id, thread_id, importance, created_ts, subject, body_md)"
        " VALUES (?, ?, 7, 'T-1', 'normal', '2026-01-01T00:00:00.000Z', ?, ?)",
        (message_id, project_id, subject, f"body of {subject}"),
    )
    conn.execute("INSERT INTO message_recipients VALUES (?, 8, 'bcc')", (message_id,))


def stamp(conn, purged: int = 0) -> tuple[int, int]:
    """The replica's stamp (tools/counts.py mail_stamp): its messages, and how many were purged."""
    return conn.execute("SELECT count(*) FROM messages").fetchone()[0], purged


def found(index: SearchIndex, query: str, project_id: int = 1) -> list[int]:
    sql = ("SELECT messages_fts.rowid FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
           " WHERE messages_fts MATCH ? AND m.project_id = ? ORDER BY bm25(messages_fts, 2.0, 1.0)")
    return [row[0] for row in index.conn.execute(sql, (query, project_id))]


def test_catches_up_with_new_late_and_very_late_messages(tmp_path):
    conn, index = replica(tmp_path), SearchIndex(tmp_path / "replica.db.search")
    newest = new_id()
    add(conn, newest, "deploy plan")
    add(conn, newest - MINUTE, "deploy rollback", project_id=2)
    assert index.catch_up(conn, stamp(conn)) == 2
    assert found(index, "deploy") == [newest] and found(index, "deploy", project_id=2) == [newest - MINUTE]
    assert index.catch_up(conn, stamp(conn)) == 0  # nothing new: counts match, nothing read
    # Pushed late by other replicas: older than the newest indexed, one by far.
    add(conn, newest - 5 * MINUTE, "deploy window")
    add(conn, newest - 600 * MINUTE, "deploy freeze")
    assert index.catch_up(conn, stamp(conn)) == 2
    assert sorted(found(index, "deploy")) == sorted([newest, newest - 5 * MINUTE, newest - 600 * MINUTE])
    assert found(index, '"deploy freeze"') == [newest - 600 * MINUTE]


def test_while_the_stamp_stays_the_same_no_id_is_read(tmp_path):
    """Each search compared a checksum of every id of the replica with the index's (~600 ms at a
    million messages on Turso's engine). Now the replica's stamp tells when to look."""
    conn, index = replica(tmp_path), SearchIndex(tmp_path / "replica.db.search")
    for number in range(3):
        add(conn, new_id(), f"deploy {number}")
    assert index.catch_up(conn, stamp(conn)) == 3
    statements = []
    conn.set_trace_callback(statements.append)
    assert index.catch_up(conn, stamp(conn)) == 0
    assert [sql for sql in statements if "message_recipients" in sql or "SELECT id FROM messages" in sql] == []
    add(conn, new_id(), "deploy 3")  # stored since: the recent ids are read, not every one
    assert index.catch_up(conn, stamp(conn)) == 1
    reads = [sql for sql in statements if sql.startswith("SELECT id FROM messages")]
    assert len(reads) == 1 and "WHERE id >" in reads[0]


def test_a_purge_is_noticed_by_its_count(tmp_path):
    """One purged, two stored (one pushed later than the window): the recent ids add as many as
    the count grew, so only the purge's count says that every id must be compared."""
    conn, index = replica(tmp_path), SearchIndex(tmp_path / "replica.db.search")
    ids = [new_id() for _ in range(3)]
    for number, message_id in enumerate(ids):
        add(conn, message_id, f"deploy {number}")
    index.catch_up(conn, stamp(conn))
    conn.execute("DELETE FROM messages WHERE id = ?", (ids[0],))
    add(conn, new_id(), "deploy new")
    add(conn, ids[0] - 600 * MINUTE, "deploy late")
    assert index.catch_up(conn, stamp(conn, purged=1)) == 2
    assert sorted(found(index, "deploy")) == sorted(row[0] for row in conn.execute("SELECT id FROM messages"))  # not ids[0]


def runs(index: SearchIndex, term: str) -> list[tuple[int, int]]:
    return index.conn.execute("SELECT message_id, place FROM message_runs WHERE term = ? ORDER BY message_id", (term,)).fetchall()


def test_an_index_of_another_layout_is_made_anew_with_every_messages_runs(tmp_path):
    conn = replica(tmp_path)
    first, second = new_id(), new_id()
    add(conn, first, "kept CART-12")
    index = SearchIndex(tmp_path / "replica.db.search")
    index.catch_up(conn, stamp(conn))
    assert runs(index, "cart 12") == [(first, 3)]  # the subject's whole run (body "body of kept CART-12": its whole run too)
    index.conn.executescript("DROP TABLE message_runs; PRAGMA user_version = 6;")  # as version 6 left it
    add(conn, second, "CART-12 again")
    index = SearchIndex(tmp_path / "replica.db.search")
    assert index.catch_up(conn, stamp(conn)) == 2 and runs(index, "cart 12") == [(first, 3), (second, 3)]
    assert index.conn.execute("SELECT messages, purged FROM whole_at").fetchone() == (2, 0)


def test_an_archived_body_is_indexed_empty_its_runs_leave_and_the_subjects_stay(tmp_path):
    """QA, session 36: the note replacing an archived body ("the git archive keeps it") was
    indexed, so its words found every archived message. An archived body is indexed empty, and
    its runs (ids, paths) leave with it; the subject's stay."""
    conn = replica(tmp_path)
    old, new = new_id(), new_id()
    add(conn, old, "old plan")
    conn.execute("UPDATE messages SET body_md = 'archived note', body_archived_ts = '2026-02-01T00:00:00.000000+00:00' WHERE id = ?",
                 (old,))
    index = SearchIndex(tmp_path / "replica.db.search")
    index.catch_up(conn, stamp(conn))
    assert found(index, "note") == [] and found(index, "plan") == [old]  # indexed empty from the start
    add(conn, new, "new plan for CART-7")
    conn.execute("UPDATE messages SET body_md = 'see src/api.py' WHERE id = ?", (new,))
    index.catch_up(conn, stamp(conn))
    assert runs(index, "src api") == [(new, 0)] and runs(index, "cart 7") == [(new, 3)]
    conn.execute("UPDATE messages SET body_md = 'archived note', body_archived_ts = '2026-03-01T00:00:00.000000+00:00' WHERE id = ?",
                 (new,))
    index.catch_up(conn, stamp(conn))
    assert found(index, "note") == [] and sorted(found(index, "plan")) == sorted([old, new])  # archived after
    assert runs(index, "src api") == [] and runs(index, "cart 7") == [(new, 3)]


def test_a_search_in_a_thread_walks_the_threads_messages_in_the_index_too(tmp_path):
    """On a replica a search in one thread read every message of the sidecar (23 ms at 100k)."""
    from chalicelib.tools.search import _window_sql

    index = SearchIndex(tmp_path / "replica.db.search")
    sql = _window_sql("m.project_id = ? AND m.thread_id = ?", by_thread=True)
    plan = " ".join(row[-1] for row in index.conn.execute("EXPLAIN QUERY PLAN " + sql, ('"x"', 2**62, 0, 1, "T", 100)))
    assert "SEARCH m USING COVERING INDEX messages_by_thread (project_id=? AND thread_id=? AND id>? AND id<?)" in plan, plan


def test_the_index_copies_what_search_filters_on(tmp_path):
    conn, index = replica(tmp_path), SearchIndex(tmp_path / "replica.db.search")
    add(conn, new_id(), "filtered")
    index.catch_up(conn, stamp(conn))
    assert index.conn.execute("SELECT sender_id, thread_id, importance FROM messages").fetchall() == [(7, "T-1", "normal")]
    assert index.conn.execute("SELECT agent_id, kind FROM message_recipients").fetchall() == [(8, "bcc")]


def test_an_index_of_an_older_layout_is_rebuilt(tmp_path):
    old = sqlite3.connect(tmp_path / "replica.db.search")
    old.executescript(
        "CREATE VIRTUAL TABLE messages_fts USING fts5 (subject, body_md);"
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL);"
        "INSERT INTO messages VALUES (1, 1);"
    )
    old.close()
    conn = replica(tmp_path)
    add(conn, new_id(), "rebuilt")
    index = SearchIndex(tmp_path / "replica.db.search")
    assert index.catch_up(conn, stamp(conn)) == 1 and len(found(index, "rebuilt")) == 1


def test_the_index_file_survives_a_restart(tmp_path):
    conn = replica(tmp_path)
    add(conn, new_id(), "persisted")
    assert SearchIndex(tmp_path / "replica.db.search").catch_up(conn, stamp(conn)) == 1
    assert SearchIndex(tmp_path / "replica.db.search").catch_up(conn, stamp(conn)) == 0


def test_archived_bodies_are_found_through_their_partial_index_on_both_engines():
    """The catch-up's look for archived bodies uses the index that holds only archived rows
    (migration 0023), on SQLite and on Turso's engine (a replica's), instead of a scan."""
    import turso

    from chalicelib.store.db import MIGRATIONS_DIR, split_statements
    from chalicelib.store.search_index import ARCHIVED_SINCE

    migration = (MIGRATIONS_DIR / "0023_body_archived_index_partial.sql").read_text()
    for engine in (sqlite3, turso):
        conn = engine.connect(":memory:")
        conn.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, subject TEXT, body_md TEXT, body_archived_ts TEXT)")
        conn.execute("CREATE INDEX messages_by_body_archived ON messages (body_archived_ts)")
        for statement in split_statements(migration):
            conn.execute(statement)
        plan = " ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + ARCHIVED_SINCE, ("",)))
        assert "INDEX messages_by_body_archived" in plan, (engine.__name__, plan)


def test_a_new_index_is_built_a_batch_at_a_time_newest_first_and_kept(tmp_path, monkeypatch):
    """A new replica's index at a million messages took minutes in one transaction: a Lambda killed
    at its timeout lost it all, and each new container started over. Now each search indexes for
    BUILD_SECONDS (at least a BATCH), keeps it, and says how far down it holds every message."""
    monkeypatch.setattr(search_index, "BATCH", 500)
    monkeypatch.setattr(search_index, "BUILD_SECONDS", 0)
    conn = replica(tmp_path)
    ids = [new_id() for _ in range(1200)]
    for number, message_id in enumerate(ids):
        add(conn, message_id, f"note {number}")
    path = tmp_path / "replica.db.search"
    for indexed in (500, 1000):
        index = SearchIndex(path)  # a new process each time: what the one before committed stays
        assert index.catch_up(conn, stamp(conn)) == 500
        assert index.floor == sorted(ids)[-indexed]
        assert index.progress() == f"This server's search index is being built: {indexed:,} of 1,200 messages so far, the newest first."
        assert {row[0] for row in sqlite3.connect(path).execute("SELECT id FROM messages")} == set(sorted(ids)[-indexed:])
    index = SearchIndex(path)
    assert index.catch_up(conn, stamp(conn)) == 200 and index.floor is None
    assert sorted(found(SearchIndex(path), "note")) == sorted(ids)


def test_a_build_stopped_among_new_mail_holds_all_of_it_from_its_floor_up(tmp_path, monkeypatch):
    """A burst of new mail on an index that was whole: the catch-up stops among it, and its floor
    is there (the older part of the burst not indexed yet), not at the old mail below the gap."""
    conn = replica(tmp_path)
    old = [new_id() for _ in range(5)]
    for number, message_id in enumerate(old):
        add(conn, message_id, f"old {number}")
    index = SearchIndex(tmp_path / "replica.db.search")
    assert index.catch_up(conn, stamp(conn)) == 5 and index.floor is None
    burst = [new_id() for _ in range(30)]
    for number, message_id in enumerate(burst):
        add(conn, message_id, f"new {number}")
    monkeypatch.setattr(search_index, "BATCH", 10)
    monkeypatch.setattr(search_index, "BUILD_SECONDS", 0)
    assert index.catch_up(conn, stamp(conn)) == 10 and index.floor == sorted(burst)[-10]
    assert index.catch_up(conn, stamp(conn)) == 10 and index.floor == sorted(burst)[-20]
    assert index.catch_up(conn, stamp(conn)) == 10 and index.floor is None


def test_a_batch_ends_early_once_the_search_has_built_for_long_enough(tmp_path, monkeypatch):
    """A batch of long bodies is slow: past BUILD_SECONDS it stops after the chunk it is on (and keeps it)."""
    monkeypatch.setattr(search_index, "CHUNK", 100)
    monkeypatch.setattr(search_index, "BUILD_SECONDS", 0)
    conn = replica(tmp_path)
    for number in range(300):
        add(conn, new_id(), f"note {number}")
    index = SearchIndex(tmp_path / "replica.db.search")
    assert index.catch_up(conn, stamp(conn)) == 100 and "being built: 100 of 300 messages" in index.progress()


def building_replica(call, project, monkeypatch, messages: int = 25) -> list[int]:
    """The ids of `messages` sends, newest first, on a replica whose index is then built 10 a search."""
    monkeypatch.setattr(search_index, "BATCH", 10)
    monkeypatch.setattr(search_index, "BUILD_SECONDS", 0)
    sent = [call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"deploy {number}",
                 body_md="b")["message"]["id"] for number in range(messages)]
    return sorted(map(int, sent), reverse=True)


def ids(results) -> list[int]:
    return [int(hit["id"]) for hit in results["results"]]


@pytest.mark.parametrize("settings", ["turso"], indirect=True)
def test_a_search_on_a_replica_whose_index_is_being_built_answers_from_the_newest_mail(call, project, monkeypatch):
    """A new replica's searches answered 503 until its index was whole (~28 of them at a million
    messages). Now each answers from the newest mail indexed so far and says so; next_cursor goes
    on to older mail, which a search reaches once it is indexed (503 until then)."""
    sent = building_replica(call, project, monkeypatch)
    first = call("search_messages", project_key=project, query="deploy", limit=50)
    assert ids(first) == sent[:10] and first["next_cursor"] == f"{sent[9]}.0"
    assert first["indexing"] == "This server's search index is being built: 10 of 25 messages so far, the newest first."
    with pytest.raises(Unavailable, match="20 of 25 messages so far, the newest first. The mail this search asks for is"
                                          " not indexed yet") as building:  # older than even this search has indexed
        call("search_messages", project_key=project, query="deploy", cursor=f"{sent[-1]}.0")
    assert building.value.status == 503 and building.value.headers == {"Retry-After": "1"}
    rest = call("search_messages", project_key=project, query="deploy", limit=50, cursor=first["next_cursor"])
    assert ids(rest) == sent[10:] and rest["next_cursor"] is None and rest["indexing"] is None
    whole = call("search_messages", project_key=project, query="deploy", limit=50)
    assert ids(whole) == sent and whole["indexing"] is None


@pytest.mark.parametrize("settings", ["turso"], indirect=True)
def test_a_query_refused_builds_nothing(call, project, monkeypatch):
    """A query the search refuses (too short a prefix) is answered before the index is built for it."""
    building_replica(call, project, monkeypatch)
    with pytest.raises(InvalidArgument, match="prefix de"):
        call("search_messages", project_key=project, query="de*")
    assert "10 of 25" in call("search_messages", project_key=project, query="deploy")["indexing"]


@pytest.mark.parametrize("settings", ["turso"], indirect=True)
def test_a_product_search_on_a_replica_whose_index_is_being_built_says_so(call, project, monkeypatch):
    call("ensure_product", product_key="shop")
    call("products_link", product_key="shop", project_key=project)
    sent = building_replica(call, project, monkeypatch)
    first = call("search_messages_product", product_key="shop", query="deploy", limit=50)
    assert ids(first) == sent[:10] and first["next_cursor"] == f"{sent[9]}.0" and "10 of 25" in first["indexing"]
    more = call("search_messages_product", product_key="shop", query="deploy", limit=50, cursor=first["next_cursor"])
    assert ids(more) == sent[10:20] and more["next_cursor"] == f"{sent[19]}.0" and "20 of 25" in more["indexing"]
    rest = call("search_messages_product", product_key="shop", query="deploy", limit=50, cursor=more["next_cursor"])
    assert ids(rest) == sent[20:] and rest["next_cursor"] is None and rest["indexing"] is None


@pytest.mark.parametrize("settings", ["turso"], indirect=True)
def test_the_searches_of_one_budget_catch_up_once_and_their_time_starts_after_it(call, project, monkeypatch):
    """The web UI searches each project inside one budget: each search's catch-up built the index
    again (and on a large index each took BUILD_SECONDS), and the budget counted the build."""
    building_replica(call, project, monkeypatch)
    monkeypatch.setenv("SEARCH_TIMEOUT_MS", "1500")  # three searches' time, with room on a loaded machine
    get_settings.cache_clear()
    catch_up = SearchIndex.catch_up

    def slow(index, replica, stamp):  # a build longer than the search budget, as at a million messages
        time.sleep(2)
        return catch_up(index, replica, stamp)

    monkeypatch.setattr(SearchIndex, "catch_up", slow)
    try:
        with one_budget():
            answers = [call("search_messages", project_key=project, query="deploy")["indexing"] for _ in range(3)]
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    assert answers == ["This server's search index is being built: 10 of 25 messages so far, the newest first."] * 3


def test_a_full_disk_while_indexing_says_so(tmp_path):
    """SQLite may end the transaction itself on a full disk: the index's ROLLBACK then failed, and
    its error ("no transaction is active") hid the one that said why (a search answers 503 for it)."""
    conn = replica(tmp_path)
    for number in range(200):
        add(conn, new_id(), f"note {number} " + "word " * 400)
    index = SearchIndex(tmp_path / "replica.db.search")
    index.conn.execute(f"PRAGMA max_page_count = {index.conn.execute('PRAGMA page_count').fetchone()[0] + 20}")
    with pytest.raises(sqlite3.OperationalError, match="disk is full"):
        index.catch_up(conn, stamp(conn))


@pytest.mark.parametrize("settings", ["turso"], indirect=True)
def test_the_web_ui_searches_a_replica_being_built_and_says_so(settings, call, project, monkeypatch):
    """On AWS (the Chalice app, a Turso replica): the search page lists the newest mail's hits,
    says the index is being built, and links to more."""
    sent = building_replica(call, project, monkeypatch)
    call("ensure_project", human_key="/work/other")  # searched in the same page: one catch-up for both
    with Client(importlib.import_module("app").create_app(settings)) as client:
        page = client.http.get("/ui/search?q=deploy").body.decode()
        assert "search index is being built: 10 of 25 messages so far" in page
        assert re.findall(r"&amp;m=(\d+)#m", page) == [str(i) for i in sent[:10]]
        more = client.http.get(f"/ui/search?q=deploy&p=work-demo&cursor={sent[9]}.0").body.decode()
        assert re.findall(r"&amp;m=(\d+)#m", more) == [str(i) for i in sent[10:20]]
