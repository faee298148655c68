"""fetch_inbox's filters and the attention views walk partial indexes of just the rows they want
(migrations/0020_inbox_filters.sql): the plans of the queries the tools really run (traced), and
the answers on both backends, also for mail stored before the migration."""

import re
import sqlite3

import pytest

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.ids import stable_id
from chalicelib.store import db as store
from chalicelib.tools import tools_by_name
from chalicelib.tools.agents import agent_id

from .sql import migrated_until, sql

pytestmark = pytest.mark.both_backends
TOOLS = tools_by_name()


def send(call, project, to, subject, sender="BlueLake", **options):
    return call("send_message", project_key=project, agent_name=sender, to=to, subject=subject, body_md="b", **options)["message"]


def plans(settings, statements: list[str], query: str) -> list[str]:
    """The query plan of each traced query with `query` in it, on the real SQLite."""
    conn = sqlite3.connect(settings.database_path)
    queries = [sql for sql in statements if query in sql]
    assert queries, f"no {query} ran"
    return [" | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")) for sql in queries]


INBOX = "FROM message_recipients r JOIN messages m"  # inbox_page's query
LAST = "ORDER BY r.message_id LIMIT 1 OFFSET"  # a project's attention view: its page's last message
PAGE = "SELECT r.message_id, r.agent_id, a.name"  # and the page's copies, to order by name


# (tool, arguments, the partial index its inbox query walks)
FILTERS = [
    ("fetch_inbox", {"agent_name": "GreenCastle", "urgent_only": True}, "inbox_urgent"),
    ("fetch_inbox", {"agent_name": "GreenCastle", "unread_only": True}, "inbox_unread"),
    ("fetch_inbox", {"agent_name": "GreenCastle", "unread_only": True, "cursor": str(2**62)}, "inbox_unread"),
    ("fetch_inbox", {"agent_name": "GreenCastle", "ack_pending_only": True}, "inbox_ack_pending"),
    ("fetch_inbox", {"agent_name": "GreenCastle", "urgent_only": True, "unread_only": True}, "inbox_urgent_unread"),
    ("fetch_inbox", {"agent_name": "GreenCastle", "urgent_only": True, "ack_pending_only": True}, "inbox_ack_pending"),
    ("fetch_inbox", {"agent_name": "GreenCastle", "unread_only": True, "ack_pending_only": True}, "inbox_ack_pending"),
    ("list_ack_required", {"agent_name": "GreenCastle"}, "inbox_ack_pending"),
    ("list_ack_overdue", {"agent_name": "GreenCastle", "older_than_minutes": 1e-6}, "inbox_ack_pending"),
    ("list_urgent_unread", {"agent_name": "GreenCastle"}, "inbox_urgent_unread"),
]
# (a project's view: tool, arguments, the partial index by project its choice of messages walks)
VIEWS = [
    ("list_ack_required", {}, "acks_pending_by_project"),
    ("list_ack_overdue", {}, "acks_pending_by_project"),
    ("list_urgent_unread", {}, "urgent_unread_by_project"),
]


@pytest.mark.sqlite_only
@pytest.mark.parametrize(("tool", "arguments", "index"), FILTERS, ids=[f"{c[0]}-{'+'.join(c[1])}" for c in FILTERS])
def test_filters_and_an_agents_views_walk_their_partial_index(call, project, settings, traced, tool, arguments, index):
    send(call, project, ["GreenCastle"], "x", importance="urgent", ack_required=True)
    traced.clear()
    call(tool, project_key=project, **arguments)
    for plan in plans(settings, traced, INBOX):
        # The recipient rows come from the partial index, by agent, already in order: no scan of the
        # inbox, no sort of every match.
        assert plan.startswith(f"SEARCH r USING INDEX {index} (agent_id=?"), plan
        assert "TEMP B-TREE" not in plan and "SCAN" not in plan, plan


@pytest.mark.sqlite_only
@pytest.mark.parametrize(("tool", "index"), [(tool, index) for tool, _, index in VIEWS])
def test_a_projects_views_pick_through_their_partial_index_and_read_only_what_they_show(call, project, settings, traced,
                                                                                       tool, index):
    """The page's oldest messages come from the project's rows in the partial index, in order,
    whatever the number of its agents (not agent by agent); only the messages shown are read
    whole, by id."""
    send(call, project, ["GreenCastle"], "x", importance="urgent", ack_required=True)
    traced.clear()
    shown = call(tool, project_key=project)["messages"]
    [last] = plans(settings, traced, LAST)
    assert last.startswith(f"SEARCH r USING INDEX {index} (project_id=?)"), last
    [page] = plans(settings, traced, PAGE)
    assert page.startswith(f"SEARCH r USING INDEX {index} (project_id=? AND message_id<?)"), page  # up to the page's last
    assert bool(shown) == (tool != "list_ack_overdue")  # the message is not an hour old
    for plan in [last, page, *(plans(settings, traced, INBOX) if shown else [])]:
        assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan


# (unified_inbox's arguments, a statement it runs, the partial index that statement walks)
UNIFIED_VIEWS = [
    ({"view": "urgent"}, "SELECT id FROM messages", "messages_urgent"),
    ({"view": "urgent", "project_key": "work-demo"}, "SELECT id FROM messages", "messages_urgent_by_project (project_id=?"),
    ({"view": "ack_pending"}, "SELECT DISTINCT message_id", "acks_pending"),
    ({"view": "ack_pending", "project_key": "work-demo"}, "SELECT DISTINCT message_id",
     "acks_pending_in_project (message_project_id=?"),
    ({"view": "to_overseer"}, "SELECT DISTINCT message_id", "to_humans"),
    ({"view": "to_overseer", "project_key": "work-demo"}, "SELECT DISTINCT message_id", "to_humans_in_project (message_project_id=?"),
    # A product's page: each linked project's newest; and every page's newest acknowledgement (0036_acks_given.sql, 0048).
    ({"product_key": "demo"}, "SELECT id FROM messages WHERE project_id", "messages_by_project (project_id=?"),
    ({}, "SELECT max(ack_ts)", "acks_given"),
    ({"project_key": "work-demo"}, "SELECT max(r.ack_ts)", "acks_given_in_project (message_project_id=?"),
    # ... and newest read (0037_reads_made.sql, 0048).
    ({}, "SELECT max(read_ts)", "reads_made"),
    ({"project_key": "work-demo"}, "SELECT max(r.read_ts)", "reads_made_in_project (message_project_id=?"),
]


@pytest.mark.sqlite_only
@pytest.mark.parametrize(("arguments", "query", "index"), UNIFIED_VIEWS, ids=lambda v: str(v).replace(" ", ""))
def test_the_unified_inboxs_views_walk_their_partial_index(call, project, settings, traced, arguments, query, index):
    """Each view's page of ids comes newest first from an index of just such rows: no scan of all
    the mail, no sort of every match (migrations/0032_unified_inbox_views.sql)."""
    send(call, project, ["GreenCastle"], "x", importance="urgent", ack_required=True)
    asked = call("send_overseer_message", project_key=project, to=["BlueLake"], subject="?", body_md="?")["message"]
    call("reply_message", project_key=project, message_id=asked["id"], sender_name="BlueLake", body_md="ok")
    call("ensure_product", product_key="demo")
    call("products_link", product_key="demo", project_key=project)
    traced.clear()
    assert call("unified_inbox", **arguments)["messages"]
    for plan in plans(settings, traced, query):
        assert f"USING INDEX {index}" in plan or f"USING COVERING INDEX {index}" in plan, plan
        # (A scan of a partial index reads only its rows: the people, one or a few a project.)
        assert "TEMP B-TREE" not in plan and not re.search(r"SCAN \w+(?! USING (COVERING )?INDEX)( |$)", plan), plan


@pytest.mark.sqlite_only
def test_the_view_to_the_people_costs_the_same_however_many_projects_have_one(call, project, traced):
    """Every project has its person (Overseer): the view of all projects read each one's inbox,
    a statement a project per call (60 ms at 12,000 projects, polled every 1.5 s by a live tab)."""
    def statements() -> int:
        traced.clear()
        call("unified_inbox", view="to_overseer", limit=1, include_newest_ack=False, include_newest_read=False)
        return len(traced)

    asked = call("send_overseer_message", project_key=project, to=["BlueLake"], subject="?", body_md="?")["message"]
    call("reply_message", project_key=project, message_id=asked["id"], sender_name="BlueLake", body_md="ok")
    few = statements()
    for n in range(10):
        call("ensure_project", human_key=f"/work/many-{n}")
        call("ensure_overseer", project_key=f"work-many-{n}")
    assert statements() == few


def test_filters_and_views_answer_right(call, project, settings):
    assert call("list_ack_required", project_key=project)["messages"] == []  # every agent's, none yet
    plain = send(call, project, ["GreenCastle"], "plain")
    urgent = send(call, project, ["GreenCastle", "RedStone"], "urgent", importance="urgent")
    high_ack = send(call, project, ["GreenCastle"], "high ack", importance="high", ack_required=True)
    ack = send(call, project, ["GreenCastle", "RedStone"], "ack", ack_required=True)
    read_ack = send(call, project, ["GreenCastle"], "read ack", ack_required=True)
    done = send(call, project, ["GreenCastle"], "done", importance="urgent", ack_required=True)
    me = {"project_key": project, "agent_name": "GreenCastle"}
    call("mark_message_read", **me, message_id=read_ack["id"])
    call("acknowledge_message", **me, message_id=done["id"])  # also marks it read
    call("mark_message_read", **me, message_id=plain["id"])

    def inbox(**filters):
        return [m["subject"] for m in call("fetch_inbox", **me, **filters)["messages"]]

    assert inbox(unread_only=True) == ["ack", "high ack", "urgent"]
    assert inbox(ack_pending_only=True) == ["read ack", "ack", "high ack"]
    assert inbox(urgent_only=True) == ["done", "high ack", "urgent"]
    assert inbox(urgent_only=True, unread_only=True) == ["high ack", "urgent"]
    assert inbox(urgent_only=True, ack_pending_only=True) == ["high ack"]
    assert inbox(unread_only=True, ack_pending_only=True) == ["ack", "high ack"]
    assert inbox(unread_only=True, limit=2) == ["ack", "high ack"]
    cursor = call("fetch_inbox", **me, unread_only=True, limit=2)["next_cursor"]
    assert inbox(unread_only=True, cursor=cursor) == ["urgent"]

    def view(tool, **options):
        return [(m["recipient"], m["subject"]) for m in call(tool, project_key=project, **options)["messages"]]

    assert view("list_ack_required", agent_name="GreenCastle") == [("GreenCastle", "high ack"), ("GreenCastle", "ack"),
                                                                   ("GreenCastle", "read ack")]
    assert view("list_ack_required") == [("GreenCastle", "high ack"), ("GreenCastle", "ack"), ("RedStone", "ack"),
                                         ("GreenCastle", "read ack")]
    assert view("list_urgent_unread") == [("GreenCastle", "urgent"), ("RedStone", "urgent"), ("GreenCastle", "high ack")]
    with sql(settings) as conn:  # "ack" was sent long ago
        conn.execute("UPDATE messages SET created_ts = '2020-01-01T00:00:00+00:00' WHERE id = ?", (int(ack["id"]),))
    assert view("list_ack_overdue", older_than_minutes=60) == [("GreenCastle", "ack"), ("RedStone", "ack")]
    call("acknowledge_message", project_key=project, agent_name="RedStone", message_id=ack["id"])
    call("mark_message_read", project_key=project, agent_name="RedStone", message_id=urgent["id"])
    assert view("list_ack_overdue") == [("GreenCastle", "ack")]
    assert view("list_urgent_unread", agent_name="RedStone") == []


@pytest.mark.sqlite_only
def test_mail_stored_before_the_migration_is_found_by_the_filters(tmp_path):
    path = tmp_path / "old.db"
    conn = migrated_until(path, "0020")
    with store.transaction(conn, write=True):
        # Mail written by the old schema's SQL (no message_recipients.ack_required yet).
        project = stable_id("project", "/old")
        conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, 'old', '/old', 't')", (project,))
        for name in ("BlueLake", "GreenCastle"):
            conn.execute("INSERT INTO agents (id, project_id, name, program, model, inception_ts, last_active_ts)"
                         " VALUES (?, ?, ?, 'p', 'm', 't', 't')", (agent_id(project, name), project, name))
        mail = {10: ("normal", True, None, None), 11: ("urgent", False, None, None), 12: ("normal", True, "t", "t"),
                13: ("normal", False, "t", None)}
        for message, (importance, ack_required, read, acked) in mail.items():
            conn.execute("INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, ack_required,"
                         " created_ts) VALUES (?, ?, ?, 'T', ?, 'b', ?, ?, '2020-01-01T00:00:00+00:00')",
                         (message, project, agent_id(project, "BlueLake"), f"m{message}", importance, ack_required))
            conn.execute("INSERT INTO message_recipients (id, message_id, agent_id, kind, read_ts, ack_ts, urgent)"
                         " VALUES (?, ?, ?, 'to', ?, ?, ?)", (message, message, agent_id(project, "GreenCastle"), read, acked,
                                                               importance == "urgent"))
    conn.close()
    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
    me = {"project_key": "/old", "agent_name": "GreenCastle"}

    def subjects(tool, **arguments):
        return [m.subject for m in invoke.call(TOOLS[tool], arguments, settings).messages]

    assert subjects("fetch_inbox", **me, ack_pending_only=True) == ["m10"]
    assert subjects("fetch_inbox", **me, unread_only=True) == ["m11", "m10"]
    assert subjects("fetch_inbox", **me, urgent_only=True, unread_only=True) == ["m11"]
    assert subjects("fetch_inbox", **me, urgent_only=True) == ["m11"]
    assert subjects("list_ack_overdue", project_key="/old") == ["m10"]


@pytest.mark.sqlite_only
def test_mail_stored_before_0048_is_in_its_own_projects_views_and_its_agents_threads(tmp_path):
    path = tmp_path / "old.db"
    conn = migrated_until(path, "0048")
    p, q = stable_id("project", "/p"), stable_id("project", "/q")
    with store.transaction(conn, write=True):  # the old schema's rows: P asks Q's agent; Q writes to P's person; P's to BlueLake
        for project, slug in ((p, "p"), (q, "q")):
            conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, ?, ?, 't')", (project, slug, f"/{slug}"))
        for project, name, kind in ((p, "BlueLake", "agent"), (p, "Overseer", "human"), (q, "RedFox", "agent")):
            conn.execute("INSERT INTO agents (id, project_id, name, program, model, inception_ts, last_active_ts, kind)"
                         " VALUES (?, ?, ?, 'p', 'm', 't', 't', ?)", (agent_id(project, name), project, name, kind))
        for message, project, sender, to in ((10, p, "BlueLake", (q, "RedFox")), (11, q, "RedFox", (p, "Overseer")),
                                             (12, p, "Overseer", (p, "BlueLake"))):
            conn.execute("INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, ack_required,"
                         " created_ts) VALUES (?, ?, ?, 'T', ?, 'b', 'normal', 1, 't')",
                         (message, project, agent_id(project, sender), f"m{message}"))
            conn.execute("INSERT INTO message_recipients (id, message_id, agent_id, kind, ack_required, project_id)"
                         " VALUES (?, ?, ?, 'to', 1, ?)", (message, message, agent_id(*to), to[0]))
    conn.close()
    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)

    def subjects(**arguments):
        return [m.subject for m in invoke.call(TOOLS["unified_inbox"], arguments, settings).messages]

    assert subjects(project_key="/p", view="ack_pending") == ["m12", "m10"] and subjects(project_key="/p", view="to_overseer") == []
    assert subjects(project_key="/q", view="ack_pending") == subjects(project_key="/q", view="to_overseer") == ["m11"]
    assert subjects(view="to_overseer") == ["m11"]
    thread = invoke.call(TOOLS["get_thread"], {"project_key": "/p", "thread_id": "T", "agent_name": "BlueLake"}, settings)
    assert [m.subject for m in thread.messages] == ["m10", "m12"]  # sent, received


@pytest.mark.sqlite_only
def test_a_thread_without_a_project_is_looked_for_only_where_it_is(call, project, settings, traced):
    """A thread id is a project's: without project_key, unified_inbox reads the thread of each
    project that has it, found through an index of the threads' summaries (0044), not every project."""
    call("ensure_project", human_key="/work/elsewhere")
    call("register_agent", project_key="work-elsewhere", program="p", model="m", name="RedFox")
    for n in range(3):
        call("ensure_project", human_key=f"/work/idle-{n}")
    first = send(call, project, ["GreenCastle"], "here", thread_id="FEAT-1")
    send(call, project, ["GreenCastle"], "another thread", thread_id="FEAT-2")
    there = call("send_message", project_key="work-elsewhere", agent_name="RedFox", to=["RedFox"], subject="there", body_md="b",
                 thread_id="FEAT-1")["message"]
    traced.clear()
    found = call("unified_inbox", thread_id="FEAT-1")["messages"]
    assert [(m["project"], m["subject"]) for m in found] == [("work-elsewhere", "there"), (project, "here")]
    assert [m["id"] for m in found] == [there["id"], first["id"]]
    [projects] = plans(settings, traced, "FROM thread_summaries WHERE thread_id")
    assert "USING INDEX thread_summaries_projects (thread_id=?)" in projects, projects
    assert sum("SELECT m.id FROM messages m WHERE m.project_id" in sql for sql in traced) == 2  # the two that have it
