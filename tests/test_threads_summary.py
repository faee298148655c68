"""list_threads from the thread summaries kept by the write path (chalicelib/tools/thread_summaries.py)
equals the threads computed from scratch over the messages: for the whole project and for each
agent's own mail, after sends, replies, cc/bcc, mail across projects, notices, an overseer, a
retention purge, and on a database made before migration 0019 and migrated forward."""

import json
import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner

from chalicelib import clock, invoke
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.worker import drain
from chalicelib.config import Settings
from chalicelib.store import db
from chalicelib.ids import time_of
from chalicelib.tools import retention, thread_summaries, tools_by_name
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
    shown = thread_summaries.PARTICIPANTS_SHOWN
    return dict(thread_id=thread_id, subject=messages[0].subject, message_count=len(messages), participants=list(seen)[:shown],
                participants_more=max(0, len(seen) - shown), first_ts=messages[0].created_ts, last_ts=messages[-1].created_ts)


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


def clock_at(monkeypatch, when: datetime) -> None:
    monkeypatch.setattr(clock, "now", lambda: when.isoformat(timespec="microseconds"))


def kept_and_recounted(settings) -> tuple[dict, dict]:
    """Every view of every thread as the summaries keep it (a view's rows of all writers
    combined, participants in any order), and as thread_summaries.recount makes it from scratch
    (in a transaction undone); the threads a recount has yet to finish."""
    undo = RuntimeError("undo")
    found = {}
    try:
        with db.connection(settings) as conn, db.transaction(conn, write=True):
            found["pending"] = conn.execute("SELECT count(*) FROM threads_to_recount").fetchone()[0]
            found["kept"] = summary_views(conn)
            for (project_id,) in conn.execute("SELECT id FROM projects").fetchall():
                threads = {row[0] for row in conn.execute(
                    "SELECT thread_id FROM messages WHERE project_id = ? UNION SELECT thread_id FROM thread_summaries"
                    " WHERE project_id = ?", (project_id, project_id))}
                thread_summaries.recount(conn, project_id, sorted(threads))
            found["recounted"] = summary_views(conn)
            raise undo
    except RuntimeError as error:
        assert error is undo
    assert found["pending"] == 0
    return found["kept"], found["recounted"]


def summary_views(conn) -> dict:
    views = {}
    for project_id, thread, viewer, count, first, subject, first_ts, last, last_ts, participants in conn.execute(
        "SELECT project_id, thread_id, viewer_id, messages, first_id, subject, first_ts, last_id, last_ts, participants"
        " FROM thread_summaries"
    ):
        view = views.setdefault((project_id, thread, viewer), [0, (first, subject, first_ts), (last, last_ts), {}])
        view[0] += count
        view[1], view[2] = min(view[1], (first, subject, first_ts)), max(view[2], (last, last_ts))
        view[3] = thread_summaries.merged(view[3], {agent: (at, rank) for agent, at, rank in json.loads(participants)})
    return views


def runs_until_recounted(settings, most: int = 100) -> int:
    """Retention runs until no thread waits for its recount (and no purge is left): the steps they
    took to recount (their results' thread_recount_steps: a message read, a thread finished)."""
    read = 0
    for _ in range(most):
        done = run_retention(settings)
        read += done["thread_recount_steps"]
        with sql(settings) as conn:
            (pending,) = conn.execute("SELECT count(*) FROM threads_to_recount").fetchone()
        if not pending and not done["messages_purged"]:
            return read
    raise AssertionError(f"threads still wait for their recount after {most} runs")


def test_a_retention_purge_recounts_the_threads_it_cut(call, settings, agents, monkeypatch, caught_up):
    mixed_history(call, rounds=3)
    call("set_retention_policy", project_key="work-demo", mode="purge", days=1)
    caught_up()  # a purge waits for the archive
    clock_at(monkeypatch, datetime.now(timezone.utc) + timedelta(days=2))
    assert run_retention(settings, budget=5)["messages_purged"] == 5  # the oldest 5: threads cut in the middle
    call("set_retention_policy", project_key="work-demo", mode="keep")
    runs_until_recounted(settings)  # what the run's budget (5 messages read) left
    before = assert_all_views_right(settings)
    kept, recounted = kept_and_recounted(settings)
    assert kept == recounted
    mixed_history(call, rounds=1)  # written on top of the recounted rows
    assert assert_all_views_right(settings) > before


def test_a_cut_thread_is_recounted_in_bounded_transactions_and_one_a_run_left_half_done_is_finished(
        call, settings, agents, monkeypatch, caught_up):
    """A thread a purge cut was recounted whole in one transaction (0.32 s of the one writer at
    20,000 messages): now no transaction of a run reads more than RETENTION_CHUNK of its
    messages; list_threads shows the summary from before the purge until the last part, and a
    process that dies between parts leaves them for the next run."""
    send = dict(project_key="work-demo", body_md="x", thread_id="LONG")
    for n in range(24):
        call("send_message", sender_name=("BlueLake", "RedStone")[n % 2], to=[("RedStone", "BlueLake")[n % 2]],
             cc=["GreenCastle"] if n % 3 == 0 else [], subject=f"Long {n}", **send)
    clock_at(monkeypatch, datetime.now(timezone.utc) + timedelta(days=2))
    settings = settings.model_copy(update={"retention_chunk": 3})

    def purge(count: int) -> int:
        call("set_retention_policy", project_key="work-demo", mode="purge", days=1)
        caught_up()  # a purge waits for the archive
        done = run_retention(settings, budget=count)
        assert done["messages_purged"] == count  # and the first part of the recount
        call("set_retention_policy", project_key="work-demo", mode="keep")
        return done["thread_recount_steps"]

    recorded: list[list[int]] = []  # the messages recorded onto summaries, per write transaction of a run
    record, transaction = thread_summaries.record, retention.transaction

    class counted(transaction):
        def __enter__(self):
            if self.write:
                recorded.append([])
            return super().__enter__()

    def counting(db_, project_id, messages, *args, **kwargs):
        if recorded:
            recorded[-1].extend(message[0] for message in messages)
        return record(db_, project_id, messages, *args, **kwargs)

    monkeypatch.setattr(retention, "transaction", counted)
    monkeypatch.setattr(thread_summaries, "record", counting)
    read = purge(2)
    assert read == 2  # the run's budget: 2 messages
    read += runs_until_recounted(settings)
    assert max(map(len, recorded)) <= 3, [len(part) for part in recorded]
    every = [message for part in recorded for message in part]
    assert len(every) == len(set(every)) == 22 == read - 1  # each remaining message read once (and one thread finished)
    kept, recounted = kept_and_recounted(settings)
    assert kept == recounted

    purge(2)
    recorded.clear()
    parts = thread_summaries.recount_some

    def dies_after_one_part(db_, limit, settled):
        monkeypatch.setattr(thread_summaries, "recount_some", parts)
        parts(db_, limit, settled)
        raise KeyboardInterrupt  # the process dies: this part is undone, the ones before stay

    monkeypatch.setattr(thread_summaries, "recount_some", lambda *args: dies_after_one_part(*args) if len(recorded) > 2 else
                        parts(*args))
    with pytest.raises(KeyboardInterrupt):
        run_retention(settings)
    assert len(recorded) == 3 and sum(map(len, recorded[:2])) == 6  # two parts done
    thread = {t["thread_id"]: t for t in listed(settings, "work-demo", None, 10)}["LONG"]
    assert thread["message_count"] == 22 and thread["subject"] == "Long 2"  # as before the purge, until the last part
    for name in ("amberfox", "GreenCastle"):  # mail that comes while the recount is half done: counted too
        call("send_message", sender_name=name, to=["BlueLake"], subject="Late", **send)
    runs_until_recounted(settings)
    thread = {t["thread_id"]: t for t in listed(settings, "work-demo", None, 10)}["LONG"]
    assert thread["message_count"] == 22 and thread["subject"] == "Long 4" and "amberfox" in thread["participants"]
    kept, recounted = kept_and_recounted(settings)
    assert kept == recounted
    assert_all_views_right(settings)


def test_a_long_thread_cut_again_while_its_recount_spans_runs_converges_to_a_recount(call, settings, agents, monkeypatch,
                                                                                     caught_up):
    """Purges go on while a long thread's recount spans runs (RETENTION_BATCH messages read a
    run): they cut below what it has read, are held back where it has read (until it ends),
    and the mail that comes meanwhile is counted. At the end each view equals a recount from
    scratch: first messages gone, a participant (amberfox) and a bcc recipient who appear only
    in purged messages, a thread purged whole, one cut twice."""
    send = dict(project_key="work-demo", body_md="x")
    for n in range(2):
        call("send_message", sender_name="GreenCastle", to=["RedStone"], subject="Gone", thread_id="GONE", **send)
    call("send_message", sender_name="RedStone", to=["GreenCastle"], subject="Short", thread_id="SHORT", **send)
    call("send_message", sender_name="amberfox", to=["BlueLake"], cc=["RedStone"], subject="Long", thread_id="LONG", **send)
    call("send_message", sender_name="BlueLake", to=["amberfox"], bcc=["GreenCastle"], subject="Re", thread_id="LONG", **send)
    ids = []
    for n in range(2, 30):
        ids.append(int(call("send_message", sender_name=("BlueLake", "RedStone")[n % 2], to=[("RedStone", "BlueLake")[n % 2]],
                            cc=["GreenCastle"] if n % 5 == 0 else [], subject=f"Long {n}", thread_id="LONG",
                            **send)["message"]["id"]))
    time.sleep(0.002)  # ids are of the millisecond: "Long 29" must be older than "Short 2", as purging_before(short) expects
    short = int(call("send_message", sender_name="GreenCastle", to=["RedStone"], subject="Short 2", thread_id="SHORT",
                     **send)["message"]["id"])

    def purging_before(message_id: int) -> None:  # the clock at which a day old is older than this message
        clock_at(monkeypatch, datetime.fromtimestamp(time_of(message_id), timezone.utc) + timedelta(days=1))

    def long_begun() -> bool:
        with sql(settings) as conn:
            return conn.execute("SELECT count(*) FROM threads_to_recount WHERE thread_id = 'LONG' AND low_id IS NOT NULL"
                                ).fetchone()[0] > 0

    call("set_retention_policy", project_key="work-demo", mode="purge", days=1)
    caught_up()  # a purge waits for the archive
    held = []
    hold = thread_summaries.held_back
    monkeypatch.setattr(thread_summaries, "held_back", lambda *args: held.append(hold(*args)) or held[-1])
    small = settings.model_copy(update={"retention_chunk": 3, "retention_batch": 4})
    purging_before(ids[18])  # "Long 20"
    for _ in range(20):
        run_retention(small)
        if long_begun():
            break
    for _ in range(3):  # a few messages a run: LONG's recount spans runs, and each purges more of LONG below it
        assert run_retention(small)["messages_purged"] > 0 and long_begun()
    call("send_message", sender_name="GreenCastle", to=["GoldHill@work-other"], subject="New", thread_id="LONG", **send)
    call("send_message", sender_name="RedStone", to=["GreenCastle"], subject="Newer", thread_id="LONG", **send)
    caught_up()
    purging_before(short)  # all of LONG but the new mail is old now: the purge meets what its recount has read
    assert run_retention(small, budget=100)["messages_purged"] > 0
    runs_until_recounted(small)
    kept, recounted = kept_and_recounted(settings)
    assert kept == recounted
    assert any(found is not None for found in held)  # held back, then purged once that recount ended
    assert_all_views_right(settings)
    threads = {t["thread_id"]: t for t in listed(settings, "work-demo", None, 10)}
    assert "GONE" not in threads and threads["SHORT"]["message_count"] == 1 and threads["SHORT"]["subject"] == "Short 2"
    assert threads["LONG"]["subject"] == "New" and threads["LONG"]["message_count"] == 2
    assert threads["LONG"]["participants"] == ["GreenCastle", "GoldHill@work-other", "RedStone"]
    assert "LONG" not in {t["thread_id"] for t in listed(settings, "work-demo", "amberfox", 10)}


def test_archiving_bodies_leaves_the_summaries_as_a_recount_makes_them(call, settings, agents, monkeypatch, tmp_path):
    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    mixed_history(call, rounds=2)
    call("set_retention_policy", project_key="work-demo", mode="archive_only", days=1)
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    clock_at(monkeypatch, datetime.now(timezone.utc) + timedelta(days=2))
    assert run_retention(settings)["bodies_archived"] > 0
    kept, recounted = kept_and_recounted(settings)
    assert kept == recounted
    assert_all_views_right(settings)


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
