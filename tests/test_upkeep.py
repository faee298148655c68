"""Upkeep deferred to the end of a write transaction (chalicelib/store/upkeep.py): message counts,
thread summaries and the full-text index applied once per group-committed batch stay exact, a
write rolled back in its savepoint takes its upkeep along, and no aggregate is read while upkeep
is pending."""

import asyncio

import pytest

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.ids import stable_id
from chalicelib.ops import metrics
from chalicelib.store import db, upkeep
from chalicelib.tools import tools_by_name
from chalicelib.tools.agents import agent_id

from .sql import migrated_until
from .test_threads_summary import AGENTS, assert_all_views_right, register

pytestmark = pytest.mark.both_backends

TOOLS = tools_by_name()
DEMO = "work-demo"


@pytest.fixture
def agents(call):
    register(call)


def handler(conn, tool_name: str, **arguments):
    tool = TOOLS[tool_name]
    return tool.handler(conn, tool.input.model_validate(arguments))


def send(conn, subject: str, **more):
    return handler(conn, "send_message", project_key=DEMO, sender_name="BlueLake", to=["GreenCastle"], subject=subject,
                   body_md="x", **more).message


def counted(settings) -> dict[str, tuple[int, int, int]]:
    """Each agent's (sent, received, unread) as whois answers it."""
    profiles = {}
    for project_key, names in AGENTS.items():
        for name in names:
            p = invoke.call(TOOLS["whois"], dict(project_key=project_key, agent_name=name), settings)
            profiles[name] = (p.messages_sent, p.messages_received, p.unread)
    return profiles


def recounted(settings) -> dict[str, tuple[int, int, int]]:
    """The same, counted from the rows (as whois did before the counters)."""
    with db.connection(settings) as conn:
        rows = conn.execute(
            "SELECT a.name, (SELECT count(*) FROM messages m WHERE m.sender_id = a.id),"
            " (SELECT count(*) FROM message_recipients r WHERE r.agent_id = a.id AND r.kind != 'bcc'),"
            " (SELECT count(*) FROM message_recipients r WHERE r.agent_id = a.id AND r.kind != 'bcc' AND r.read_ts IS NULL)"
            " FROM agents a WHERE a.kind = 'agent'"
        ).fetchall()
    return {name: (sent, received, unread) for name, sent, received, unread in rows}


def test_sends_group_committed_together_keep_counts_and_summaries_exact(call, settings, agents):
    first = call("send_message", project_key=DEMO, sender_name="BlueLake", to=["RedStone"], subject="Open", body_md="o")
    thread = first["message"]["thread_id"]
    sends = []
    for n in range(60):  # new threads, an existing thread, a thread named by the client; cc, bcc, across projects
        sender, to = AGENTS[DEMO][n % 4], AGENTS[DEMO][(n + 1) % 4]
        more = [{}, {"thread_id": thread}, {"thread_id": "NAMED", "cc": ["RedStone"]}, {"bcc": ["GoldHill@work-other"]}][n % 4]
        sends.append(dict(project_key=DEMO, sender_name=sender, to=[to], subject=f"s{n}", body_md="b", **more))
    read = dict(project_key=DEMO, agent_name="RedStone", message_id=first["message"]["id"])

    async def concurrently():
        calls = [invoke.acall(TOOLS["send_message"], args, settings) for args in sends]
        return await asyncio.gather(*calls, invoke.acall(TOOLS["mark_message_read"], read, settings))

    batches, writes = batched()
    asyncio.run(concurrently())
    assert batched()[1] - writes > batched()[0] - batches  # some batch held several writes
    assert counted(settings) == recounted(settings)
    assert all(searched(call, f"s{n}") == [f"s{n}"] for n in range(0, 60, 7))
    index_matches_messages(settings)
    assert assert_all_views_right(settings, limits=(2, 500)) == 1 + 1 + 15 + 15  # the first, NAMED, and 30 new ones


def batched() -> tuple[int, int]:
    """(batches, writes) the writer threads committed so far (the metric agent_mail_write_batch_size)."""
    row = metrics.write_batch.values.get((), [0, 0])
    return sum(row[:-1]), row[-1]


def test_a_write_rolled_back_in_its_savepoint_takes_its_upkeep_along(call, settings, agents):
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        with upkeep.savepoint(conn, "tool"):
            kept = send(conn, "kept")
        with pytest.raises(ValueError), upkeep.savepoint(conn, "tool"):
            send(conn, "lost")
            send(conn, "lost too", thread_id=kept.thread_id)
            raise ValueError("the tool failed after storing its messages")
        with upkeep.savepoint(conn, "tool"):
            send(conn, "reply", thread_id=kept.thread_id)
    assert counted(settings)["BlueLake"] == (2, 0, 0) and counted(settings)["GreenCastle"] == (0, 2, 2)
    threads = call("list_threads", project_key=DEMO)["threads"]
    assert [(t["subject"], t["message_count"]) for t in threads] == [("kept", 2)]
    assert assert_all_views_right(settings) == 1
    assert searched(call, "kept") == ["kept"] and searched(call, "lost") == [] and searched(call, "reply") == ["reply"]
    index_matches_messages(settings)


def searched(call, query: str) -> list[str]:
    return [hit["subject"] for hit in call("search_messages", project_key=DEMO, query=query)["results"]]


def index_matches_messages(settings) -> None:
    """FTS5's own check of the full-text index against the messages it indexes (embedded SQLite;
    a replica's sidecar index is tested in test_search_index.py)."""
    if settings.turso_sync_url:
        return
    with db.connection(settings) as conn:
        conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")


def test_a_reply_in_the_transaction_that_started_its_thread(call, settings, agents):
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        started = send(conn, "start")  # a new thread: its summaries are not looked for
        handler(conn, "reply_message", project_key=DEMO, message_id=started.id, sender_name="GreenCastle", body_md="r")
    assert summary_rows(settings, started.thread_id) == [(1, 2)] * 3  # each view (project, sender, recipient): one row
    with db.connection(settings) as conn, db.transaction(conn, write=True):  # a later batch finds and updates those rows
        handler(conn, "reply_message", project_key=DEMO, message_id=started.id, sender_name="BlueLake", body_md="r")
    assert summary_rows(settings, started.thread_id) == [(1, 3)] * 3
    assert assert_all_views_right(settings) == 1


def summary_rows(settings, thread_id: str) -> list[tuple[int, int]]:
    """(rows, messages) of each of the thread's views."""
    with db.connection(settings) as conn:
        return [tuple(row) for row in conn.execute(
            "SELECT count(*), sum(messages) FROM thread_summaries WHERE thread_id = ? GROUP BY viewer_id", (thread_id,))]


def test_an_aggregate_read_before_the_upkeep_is_applied_is_refused(settings, agents):
    with db.connection(settings) as conn:
        with pytest.raises(RuntimeError, match="deferred upkeep"), db.transaction(conn, write=True):
            send(conn, "pending")
            handler(conn, "whois", project_key=DEMO, agent_name="BlueLake")
        with pytest.raises(RuntimeError, match="deferred upkeep"), db.transaction(conn, write=True):
            send(conn, "pending")
            handler(conn, "list_threads", project_key=DEMO)
    assert counted(settings)["BlueLake"] == (0, 0, 0)  # both rolled back, upkeep included


def test_a_long_transaction_applies_its_upkeep_as_it_goes(call, settings, agents, monkeypatch):
    monkeypatch.setattr(upkeep, "FLUSH_AT", 10)  # a restore's transaction holds thousands of messages
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        for n in range(25):
            send(conn, f"m{n}")
    assert counted(settings)["GreenCastle"] == (0, 25, 25) == recounted(settings)["GreenCastle"]
    assert assert_all_views_right(settings, limits=(500,)) == 25


@pytest.mark.sqlite_only
def test_a_database_made_with_the_insert_trigger_migrates_forward(tmp_path):
    path = tmp_path / "old.db"
    conn = migrated_until(path, "0022")  # the search index still kept by the insert trigger
    project = stable_id("project", "/old")
    blue = agent_id(project, "BlueLake")
    with db.transaction(conn, write=True):
        conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, 'old', '/old', 't')", (project,))
        conn.execute("INSERT INTO agents (id, project_id, name, program, model, inception_ts, last_active_ts)"
                     " VALUES (?, ?, 'BlueLake', 'p', 'm', 't', 't')", (blue, project))
        conn.execute("INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, created_ts)"
                     " VALUES (10, ?, ?, 'T', 'walrus', 'old body', 'normal', '2020-01-01T00:00:00+00:00')", (project, blue))
    conn.close()
    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
    invoke.call(TOOLS["send_message"], dict(project_key="/old", sender_name="BlueLake", to=["BlueLake"], subject="walrus too",
                                            body_md="new body"), settings)
    hits = invoke.call(TOOLS["search_messages"], dict(project_key="/old", query="walrus"), settings).results
    assert sorted(hit.subject for hit in hits) == ["walrus", "walrus too"]
    with db.connection(settings) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'messages_fts_insert'").fetchone()[0] == 0
    index_matches_messages(settings)
