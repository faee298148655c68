"""Counts kept by the write path (chalicelib/tools/counts.py) and the index-backed reads of
issue 12 item 2: whois and get_project stay right through sends, reads, failed writes in a
group commit and migration from an older database; EXPLAIN QUERY PLAN guards the key queries."""

import asyncio
import re
import sqlite3

import pytest

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.store import db as store
from chalicelib.tools import tools_by_name
from chalicelib.tools.counts import mail_total

from .sql import migrated_until

TOOLS = tools_by_name()


def counts(call, project, name):
    profile = call("whois", project_key=project, agent_name=name)
    return profile["messages_sent"], profile["messages_received"], profile["unread"]


@pytest.mark.both_backends
def test_sends_and_first_reads_are_counted(call, project):
    first = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle", "RedStone"],
                 subject="a", body_md="", bcc=["BlueLake"])["message"]
    call("send_message", project_key=project, sender_name="GreenCastle", to=["BlueLake"], subject="b", body_md="")
    assert counts(call, project, "BlueLake") == (1, 1, 1)  # GreenCastle's message; a bcc copy is never counted (whois shows counts)
    assert counts(call, project, "GreenCastle") == (1, 1, 1)
    for _ in range(2):  # reading again does not count again
        call("mark_message_read", project_key=project, agent_name="GreenCastle", message_id=first["id"])
    call("acknowledge_message", project_key=project, agent_name="RedStone", message_id=first["id"])
    assert counts(call, project, "GreenCastle") == (1, 1, 0)
    assert counts(call, project, "RedStone") == (0, 1, 0)
    assert call("get_project", project_key=project)["messages"] == 2


@pytest.mark.both_backends
def test_counts_stay_right_past_thirty_agents(call):
    """On Turso, the 31st agent to send failed ("Payload too small for indicated header size"):
    the engine's UPSERT of its counter row (counts.py now makes a row, then adds to it)."""
    call("ensure_project", human_key="/work/crowd")
    names = [f"Agent{n:02d}" for n in range(40)]
    for name in names:
        call("register_agent", project_key="work-crowd", program="p", model="m", name=name)
        call("set_contact_policy", project_key="work-crowd", agent_name=name, policy="open")
    for n, name in enumerate(names):
        call("send_message", project_key="work-crowd", sender_name=name, to=[names[(n + 1) % 40]], subject="s", body_md="")
    assert {counts(call, "work-crowd", name) for name in names} == {(1, 1, 1)}
    found = call("get_project", project_key="work-crowd")
    assert (found["messages"], found["agents"]) == (40, 40)


@pytest.mark.both_backends
def test_a_projects_messages_and_agents_are_counted(call, project, settings):
    def details(key=project):
        found = call("get_project", project_key=key)
        return found["messages"], found["agents"]

    assert details() == (0, 3)
    call("register_agent", project_key=project, program="p", model="m", name="BlueLake")  # known: updated, not counted again
    call("register_agent", project_key=project, program="p", model="m")  # a new name
    call("retire_agent", project_key=project, agent_name="RedStone")  # still one of the project's agents
    assert details() == (0, 4)
    call("send_overseer_message", project_key=project, to=["BlueLake"], subject="s", body_md="")  # a person's row, and a message
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="a", body_md="")
    call("ensure_project", human_key="/work/other")
    call("register_agent", project_key="work-other", program="p", model="m", name="Elsewhere")
    call("send_message", project_key="work-other", sender_name="Elsewhere", to=["Elsewhere"], subject="b", body_md="")
    assert details() == (2, 5) and details("work-other") == (1, 1)
    with store.connection(settings) as conn:  # and all projects' mail (a search's scope weighs a project's share of it)
        assert mail_total(conn) == 3


@pytest.mark.both_backends
def test_a_refused_send_counts_nothing(call, project):
    call("retire_agent", project_key=project, agent_name="RedStone")
    with pytest.raises(Exception, match="retired"):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle", "RedStone"], subject="x", body_md="")
    assert counts(call, project, "BlueLake") == (0, 0, 0) and counts(call, project, "GreenCastle") == (0, 0, 0)
    assert call("get_project", project_key=project)["messages"] == 0


def test_a_write_that_fails_in_a_group_commit_rolls_its_counts_back(settings, call, project):
    async def batch():  # one writer batch: each write in its own savepoint
        send = TOOLS["send_message"]
        ok = dict(project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="ok", body_md="")
        bad = dict(ok, to=["GreenCastle", "Nobody"])
        return await asyncio.gather(*[invoke.acall(send, args, settings) for args in (ok, bad, ok)], return_exceptions=True)

    outcomes = asyncio.run(batch())
    assert [isinstance(outcome, Exception) for outcome in outcomes] == [False, True, False]
    assert counts(call, project, "BlueLake") == (2, 0, 0) and counts(call, project, "GreenCastle") == (0, 2, 2)
    assert call("get_project", project_key=project)["messages"] == 2


def test_an_older_database_migrates_forward_with_its_counts(tmp_path):
    path = tmp_path / "old.db"
    migrated_until(path, "0013").close()
    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
    # Mail written by the old schema's SQL, straight into its tables.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (1, 'old', '/old', 't')")
    for agent in (1, 2):
        conn.execute("INSERT INTO agents (id, project_id, name, program, model, inception_ts, last_active_ts)"
                     " VALUES (?, 1, ?, 'p', 'm', 't', 't')", (agent, f"Agent{agent}"))
    for message in (10, 11, 12):
        conn.execute("INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, created_ts)"
                     " VALUES (?, 1, 1, 'T', 's', 'b', ?, 't')", (message, "urgent" if message == 12 else "normal"))
        conn.execute("INSERT INTO message_recipients (id, message_id, agent_id, kind, read_ts) VALUES (?, ?, 2, 'to', ?)",
                     (message, message, "t" if message == 10 else None))
    conn.close()
    store._migrated.discard(settings.database_url)
    store.migrate(settings)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT sum(sent), sum(received), sum(read) FROM message_counts WHERE agent_id = 1").fetchone() == (3, 0, 0)
    assert conn.execute("SELECT sum(sent), sum(received), sum(read) FROM message_counts WHERE agent_id = 2").fetchone() == (0, 3, 1)
    assert conn.execute("SELECT message_id FROM message_recipients WHERE urgent").fetchall() == [(12,)]
    project = invoke.call(TOOLS["get_project"], {"project_key": "/old"}, settings)
    assert (project.messages, project.agents) == (3, 2)


def plan(conn, sql: str, params) -> str:
    return " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def test_the_key_queries_are_index_backed(settings, call, project):
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="x", body_md="")
    conn = sqlite3.connect(settings.database_path)
    # whois, get_project: the counter rows of one agent / of the project's agents
    assert "USING INDEX message_counts_by_agent" in plan(conn, "SELECT sum(sent) FROM message_counts WHERE agent_id = ?", (1,))
    project_counts = plan(conn, "SELECT sum(c.sent) FROM agents a JOIN message_counts c ON c.agent_id = a.id WHERE a.project_id = ?", (1,))
    # (either index of agents that starts with project_id: which one is the planner's choice)
    assert re.search(r"INDEX agents_by_(project|name) \(project_id=\?\)", project_counts), project_counts
    assert "message_counts_by_agent" in project_counts
    # get_project: the project's counter rows (not its agents': 6.7 ms at 50,000 agents)
    assert "USING INDEX project_counts_by_project" in plan(conn, "SELECT sum(messages) FROM project_counts WHERE project_id = ?", (1,))
    # fetch_inbox(urgent_only): the agent's urgent mail, newest first, without sorting
    urgent = plan(conn, "SELECT r.message_id FROM message_recipients r WHERE r.agent_id = ? AND r.urgent = 1"
                  " ORDER BY r.message_id DESC LIMIT 20", (1,))
    assert "inbox_urgent" in urgent and "TEMP B-TREE" not in urgent
    # search: the index's matches newest first (no sort of every match), each checked by primary key
    from chalicelib.tools.search import _window_sql

    window = plan(conn, _window_sql("m.project_id = ?", by_thread=False), ('"x"', 2**62, 0, 1, 500))
    # (each match looked up by its id: through messages_by_project, which covers the project's test)
    assert "VIRTUAL TABLE" in window and "SEARCH m USING COVERING INDEX messages_by_project (project_id=? AND id=?" in window
    assert "TEMP B-TREE" not in window
    in_thread = plan(conn, _window_sql("m.project_id = ? AND m.thread_id = ?", by_thread=True), ('"x"', 2**62, 0, 1, "T", 100))
    assert "messages_by_thread" in in_thread and "TEMP B-TREE" not in in_thread
