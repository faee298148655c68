"""list_threads from the thread summaries kept by the write path (chalicelib/tools/thread_summaries.py)
equals the threads computed from scratch over the messages: for the whole project and for each
agent's own mail, after sends, replies, cc/bcc, mail across projects, notices, an overseer, a
retention purge, and on a database made before migration 0019 and migrated forward."""

import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from chalicelib import clock, invoke
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.worker import drain
from chalicelib.config import Settings
from chalicelib.store import db
from chalicelib.tools import thread_summaries, tools_by_name
from chalicelib.tools.messages import visible_to
from chalicelib.tools.projects import find_project
from chalicelib.tools.retention import run_retention
from chalicelib.tools.threads import messages_in_thread, reader
from chalicelib.transports.cli import cli

from .sql import sql

pytestmark = pytest.mark.both_backends

TOOLS = tools_by_name()
AGENTS = {"work-demo": ("BlueLake", "GreenCastle", "RedStone", "amberfox"), "work-other": ("GoldHill",)}


def from_scratch(settings, project_key: str, agent_name: str | None, limit: int) -> list[dict]:
    """What list_threads answered before the summaries: every message of the project grouped, and
    each listed thread read whole (as its reader sees it)."""
    with db.connection(settings) as conn:
        project = find_project(conn, project_key)
        viewers = reader(conn, project, agent_name)
        where, params = visible_to(list(viewers)) if viewers is not None else ("1", [])
        rows = conn.execute(
            f"SELECT thread_id FROM messages m WHERE project_id = ? AND {where} GROUP BY thread_id ORDER BY max(id) DESC LIMIT ?",
            (project["id"], *params, limit),
        ).fetchall()
        return [thread_info(tid, messages_in_thread(conn, project, tid, bodies=False, viewers=viewers)) for (tid,) in rows]


def thread_info(thread_id: str, messages: list) -> dict:
    """ThreadInfo's fields from the thread's messages (oldest first): participants are senders
    and visible recipients in order of first appearance."""
    seen: dict[str, None] = {}
    for message in messages:
        for name in (message.sender, *message.to, *message.cc):
            seen.setdefault(name, None)
    return dict(thread_id=thread_id, subject=messages[0].subject, message_count=len(messages), participants=list(seen),
                first_ts=messages[0].created_ts, last_ts=messages[-1].created_ts)


def listed(settings, project_key: str, agent_name: str | None, limit: int) -> list[dict]:
    args = dict(project_key=project_key, limit=limit) | ({"agent_name": agent_name} if agent_name else {})
    return invoke.call(TOOLS["list_threads"], args, settings).model_dump(mode="json")["threads"]


def paged(settings, project_key: str, agent_name: str | None, limit: int) -> list[dict]:
    """Every page of list_threads, following next_cursor."""
    args = dict(project_key=project_key, limit=limit) | ({"agent_name": agent_name} if agent_name else {})
    threads, cursor = [], None
    while True:
        page = invoke.call(TOOLS["list_threads"], args | ({"cursor": cursor} if cursor else {}), settings)
        threads += page.model_dump(mode="json")["threads"]
        if (cursor := page.next_cursor) is None:
            return threads


def assert_all_views_right(settings, limits=(1, 3, 500)) -> int:
    """Every view of every project, at a few limits and page by page, equals the computation
    from scratch; how many threads there are."""
    for project_key, names in AGENTS.items():
        for agent_name in (None, *names):
            for limit in limits:
                assert listed(settings, project_key, agent_name, limit) == from_scratch(settings, project_key, agent_name, limit), (
                    project_key, agent_name, limit)
            assert paged(settings, project_key, agent_name, 2) == from_scratch(settings, project_key, agent_name, 500), (
                project_key, agent_name)
            # summarize_thread's header (thread_summaries.header) is the same, thread by thread
            for thread in from_scratch(settings, project_key, agent_name, 4):
                args = dict(project_key=project_key, thread_id=thread["thread_id"]) | ({"agent_name": agent_name} if agent_name else {})
                summary = invoke.call(TOOLS["summarize_thread"], args, settings).model_dump(mode="json")
                assert {key: summary[key] for key in thread} == thread, (project_key, agent_name, thread["thread_id"])
    return len(listed(settings, "work-demo", None, 500))


@pytest.fixture
def agents(call):
    register(call)


def register(call) -> None:
    for key, names in AGENTS.items():
        call("ensure_project", human_key=f"/work/{key.removeprefix('work-')}")
        for name in names:
            call("register_agent", project_key=key, program="p", model="m", name=name)
            call("set_contact_policy", project_key=key, agent_name=name, policy="open")


def mixed_history(call, rounds: int = 2) -> None:
    """Threads of several lengths with cc and bcc, replies, a notice, an overseer, mail across projects."""
    demo = "work-demo"
    for n in range(rounds):
        first = call("send_message", project_key=demo, sender_name="BlueLake", to=["RedStone", "GreenCastle"], cc=["amberfox"],
                     subject=f"Plan {n}", body_md="x", thread_id=f"PLAN-{n}")["message"]
        call("reply_message", project_key=demo, message_id=first["id"], sender_name="RedStone", body_md="ok")
        call("send_message", project_key=demo, sender_name="GreenCastle", to=["BlueLake"], bcc=["RedStone"],
             subject="Quiet", body_md="bcc", thread_id=f"PLAN-{n}")
        call("send_message", project_key=demo, sender_name="amberfox", to=["GreenCastle"], subject=f"Alone {n}", body_md="y")
        call("send_message", project_key=demo, sender_name="BlueLake", to=["GoldHill@work-other"], cc=["BlueLake"],
             subject=f"Across {n}", body_md="z", thread_id="ACROSS")
        call("send_message", project_key="work-other", sender_name="GoldHill", to=["RedStone@work-demo"], subject="From away",
             body_md="w", thread_id="ACROSS")
        call("send_message", project_key=demo, sender_name="RedStone", to=["RedStone"], cc=["GreenCastle"], bcc=["amberfox"],
             subject=f"Note to self {n}", body_md="n")
    call("request_contact", project_key=demo, from_agent="amberfox", to_agent="BlueLake", reason="hello")
    call("send_overseer_message", project_key=demo, to=["amberfox", "RedStone"], cc=["BlueLake"], subject="From the human",
         body_md="h", thread_id="PLAN-0")


def test_every_view_equals_the_threads_computed_from_the_messages(call, settings, agents):
    assert assert_all_views_right(settings) == 0
    mixed_history(call)
    assert assert_all_views_right(settings) >= 6
    threads = {t["thread_id"]: t for t in call("list_threads", project_key="work-demo", limit=500)["threads"]}
    assert threads["PLAN-0"]["participants"] == ["BlueLake", "GreenCastle", "RedStone", "amberfox", "Overseer"]
    assert threads["ACROSS"]["participants"] == ["BlueLake", "GoldHill@work-other"]
    red = {t["thread_id"]: t for t in call("list_threads", project_key="work-demo", agent_name="RedStone")["threads"]}
    green = {t["thread_id"]: t for t in call("list_threads", project_key="work-demo", agent_name="GreenCastle")["threads"]}
    assert red["PLAN-1"]["message_count"] == 3 and green["PLAN-1"]["message_count"] == 2  # Red: its bcc copy; Green: not the reply
    amber = {t["thread_id"]: t for t in call("list_threads", project_key="work-demo", agent_name="amberfox")["threads"]}
    assert "ACROSS" not in amber  # not its mail: none of its names leak
    note = next(t for t in amber.values() if t["subject"] == "Note to self 1")
    assert note["participants"] == ["RedStone", "GreenCastle"]  # bcc recipients are never participants


def test_a_retention_purge_recounts_the_threads_it_cut(call, settings, agents):
    mixed_history(call, rounds=3)
    call("set_retention_policy", project_key="work-demo", mode="purge", days=1)
    ahead = datetime.now(timezone.utc) + timedelta(days=2)
    original = clock.now
    clock.now = lambda: ahead.isoformat(timespec="microseconds")
    try:
        assert run_retention(settings, budget=5)["messages_purged"] == 5  # the oldest 5: threads cut in the middle
    finally:
        clock.now = original
    before = assert_all_views_right(settings)
    mixed_history(call, rounds=1)  # written on top of the recounted rows
    assert assert_all_views_right(settings) > before


def test_a_purge_in_many_chunks_recounts_each_thread_it_cut_once_and_an_interrupted_run_is_finished(
        call, settings, agents, monkeypatch):
    """A chunk of a long thread recounted it whole each time (0.6 s a chunk at 100,000 messages):
    the threads cut are listed with their chunk and recounted once at the end of the run, and
    what a run that stopped before left is recounted by the next."""
    mixed_history(call, rounds=3)
    call("set_retention_policy", project_key="work-demo", mode="purge", days=1)
    recounted = []
    recount = thread_summaries.recount
    monkeypatch.setattr(thread_summaries, "recount", lambda db, project_id, threads: recounted.extend(threads) or
                        recount(db, project_id, threads))
    ahead = datetime.now(timezone.utc) + timedelta(days=2)
    monkeypatch.setattr(clock, "now", lambda: ahead.isoformat(timespec="microseconds"))
    chunked = settings.model_copy(update={"retention_chunk": 2})
    assert run_retention(chunked, budget=9)["messages_purged"] == 9  # 5 chunks, PLAN-0 and others cut in several
    assert sorted(recounted) == sorted(set(recounted)) and "PLAN-0" in recounted  # once each
    assert assert_all_views_right(settings) > 0
    with sql(settings) as conn:  # a run that stopped after a purge's chunk, before its recount
        conn.execute("UPDATE thread_summaries SET messages = messages + 7 WHERE thread_id = 'PLAN-1'")
        (project_id,) = conn.execute("SELECT id FROM projects WHERE slug = 'work-demo'").fetchone()
        conn.execute("INSERT INTO threads_to_recount (id, project_id, thread_id) VALUES (1, ?, 'PLAN-1')", (project_id,))
    run_retention(settings, budget=1)
    assert assert_all_views_right(settings) > 0
    with sql(settings) as conn:
        assert conn.execute("SELECT count(*) FROM threads_to_recount").fetchone()[0] == 0


def test_a_database_made_before_the_summaries_migrates_forward(call, settings, agents):
    mixed_history(call)
    with sql(settings) as conn:  # as before migration 0019: its tables and its record gone
        conn.execute("DROP TABLE thread_summaries")
        conn.execute("DELETE FROM schema_migrations WHERE version LIKE '0019%' OR version LIKE '0021%'")  # 0021: its columns
    db._migrated.clear()
    db.migrate(settings)
    with db.connection(settings) as conn:
        assert conn.execute("SELECT count(*) FROM thread_summaries WHERE id < 0").fetchone()[0] > 0  # backfilled
    assert_all_views_right(settings)
    mixed_history(call, rounds=1)  # new rows combine with the backfilled ones
    assert_all_views_right(settings)


def test_a_database_restored_from_the_archive_lists_the_same_threads(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path}/agent_mail.db", archive_dir=tmp_path / "archive")

    def call(tool_name: str, /, **arguments):
        return invoke.call(TOOLS[tool_name], arguments, settings).model_dump(mode="json")

    register(call)
    mixed_history(call)
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    restored = Settings(database_url=f"sqlite:///{tmp_path}/restored.db")
    env = {"ARCHIVE_DIR": str(settings.archive_dir)}
    result = CliRunner().invoke(cli, ["--database-url", restored.database_url, "db", "restore-from-archive"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["messages"] > 10
    assert_all_views_right(restored, limits=(500,))
    for project_key, names in AGENTS.items():
        for agent_name in (None, *names):
            assert listed(restored, project_key, agent_name, 500) == listed(settings, project_key, agent_name, 500)


@pytest.mark.sqlite_only
def test_list_threads_walks_an_index_newest_first(call, settings, agents):
    mixed_history(call, rounds=1)
    conn = sqlite3.connect(settings.database_path)
    walk = plan(conn, f"SELECT {thread_summaries.COLUMNS} FROM thread_summaries WHERE project_id = ? AND viewer_id = ?"
                      " ORDER BY last_id DESC LIMIT ?", (1, 0, 58))
    assert "USING INDEX thread_summaries_newest (project_id=? AND viewer_id=?)" in walk, walk
    assert "TEMP B-TREE" not in walk  # walked in order: no sort of the view's rows
    for index, shared in (("shared", " AND writer != 0"), ("by_thread", "")):
        probe = plan(conn, f"SELECT id FROM thread_summaries INDEXED BY thread_summaries_{index} WHERE project_id = ?"
                           f" AND thread_id IN (?, ?) AND viewer_id = ?{shared}", (1, "a", "b", 0))
        assert f"USING COVERING INDEX thread_summaries_{index} (project_id=? AND thread_id=?" in probe, probe


def plan(conn, sql: str, params) -> str:
    return " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
