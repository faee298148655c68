"""A batch of writes is one transaction (invoke.Writer): what one write does to that transaction
must not cost another write its acknowledgement. SQLite may end the whole transaction when a
statement fails on a full disk (SQLITE_FULL, also IOERR and NOMEM: "it might be necessary for
SQLite to rollback and cancel the entire transaction"); the write after it then began a new one
of its own, which its savepoint's release committed, while the batch answered every write with a
500. Real SQLite file, the writer's own commit of one batch."""

import asyncio
import dataclasses
import sqlite3

import pytest

from chalicelib import invoke
from chalicelib.errors import Unavailable
from chalicelib.ops import readiness, refusals
from chalicelib.security import auth
from chalicelib.store import db, replica, upkeep
from chalicelib.tools import tools_by_name

TOOLS = tools_by_name()


def commit_one_batch(settings, jobs: list) -> list:
    """The outcomes (outputs or exceptions) of the (tool, arguments) jobs committed as one batch."""
    async def run():
        loop = asyncio.get_running_loop()
        # (Writer.submit's jobs: no Lambda transport, so answers measured as locally: ())
        batch = [(tool, invoke.parse(tool, arguments), auth.OPERATOR, (), loop.create_future()) for tool, arguments in jobs]
        await asyncio.to_thread(invoke._writer(settings)._commit, batch)
        return await asyncio.gather(*(job[-1] for job in batch), return_exceptions=True)

    return asyncio.run(run())


def failing(handler):
    return dataclasses.replace(TOOLS["send_message"], handler=handler)


def mail(project, subject):
    return {"project_key": project, "sender_name": "BlueLake", "to": ["GreenCastle"], "subject": subject, "body_md": "b"}


def subjects(settings) -> set[str]:
    return {row[0] for row in sqlite3.connect(settings.database_path).execute("SELECT subject FROM messages")}


def connections_with(pragma: str, settings, monkeypatch) -> None:
    """Every connection the server opens from now on runs `pragma` first (the pool's are dropped)."""
    def connect(settings):
        conn = real_connect(settings)
        conn.execute(f"PRAGMA {pragma}")
        return conn

    real_connect = db.connect
    monkeypatch.setattr(db, "connect", connect)
    db._pools.pop(settings.database_url, None)


def test_a_write_that_fills_the_disk_fails_its_batch_whole_and_stores_nothing(settings, call, project, monkeypatch):
    """A real SQLITE_FULL: the database may grow by 40 pages (PRAGMA max_page_count), and the
    middle write's body needs more. SQLite then ends the whole transaction."""
    room = sqlite3.connect(settings.database_path).execute("PRAGMA page_count").fetchone()[0] + 40
    connections_with(f"max_page_count = {room}", settings, monkeypatch)
    send = TOOLS["send_message"]
    outcomes = commit_one_batch(settings, [(send, mail(project, "before")), (send, mail(project, "large") | {"body_md": "x" * 250_000}),
                                           (send, mail(project, "after"))])
    assert subjects(settings) == set()  # as when a batch's COMMIT fails: none of it stands, none acknowledged
    assert all(isinstance(outcome, Unavailable) and "disk is full" in outcome.message for outcome in outcomes), outcomes


def test_a_write_that_fails_on_a_full_disk_alone_answers_503_and_the_others_stand(settings, call, project):
    """SQLite may undo just the statement (a handler raising its error stands for that here): that
    write fails (503, not a 500), the batch goes on."""
    def full_statement(conn, args):
        raise sqlite3.OperationalError("database or disk is full")

    send = TOOLS["send_message"]
    before, failed, after = commit_one_batch(settings, [(send, mail(project, "before")),
                                                        (failing(full_statement), mail(project, "failed")),
                                                        (send, mail(project, "after"))])
    assert (before.message.subject, after.message.subject) == ("before", "after") and subjects(settings) == {"before", "after"}
    assert isinstance(failed, Unavailable) and failed.status == 503 and "disk is full" in failed.message


def test_a_full_disk_while_a_write_applies_its_counts_answers_503(settings, call, project, monkeypatch):
    """The counts a write defers are applied before its COMMIT (store/upkeep.py). A full disk there
    may end the transaction too: its ROLLBACK then failed ("no transaction is active"), and that
    error, a 500, hid the one that said why."""
    def apply_on_a_full_disk(conn):
        conn.execute("ROLLBACK")
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(upkeep, "apply", apply_on_a_full_disk)
    with pytest.raises(Unavailable, match="disk is full"):
        call("send_message", **mail(project, "counted"))
    assert subjects(settings) == set()


def test_a_database_that_cannot_be_written_answers_503(settings, call, project, monkeypatch):
    """A real SQLITE_READONLY (PRAGMA query_only): a write answered a 500."""
    connections_with("query_only = 1", settings, monkeypatch)
    with pytest.raises(Unavailable, match="its database is read-only. Nothing of it was stored"):
        call("send_message", **mail(project, "refused"))
    assert call("fetch_inbox", project_key=project, agent_name="GreenCastle")["messages"] == []  # reads work


@pytest.mark.parametrize("settings", ["turso"], indirect=True)
def test_a_replica_whose_disk_is_full_answers_503_and_stores_nothing(settings, call, project, monkeypatch):
    """pyturso's errors are not sqlite3's: on a replica a full disk was a 500."""
    open_replica = replica.Replica._open

    def opened_with_little_room(self):
        conn = open_replica(self)
        room = conn.execute("PRAGMA page_count").fetchone()[0] + 40
        conn.execute(f"PRAGMA max_page_count = {room}").fetchall()  # (pyturso runs a pragma once its rows are read)
        return conn

    monkeypatch.setattr(replica.Replica, "_open", opened_with_little_room)
    replica._replicas.forget(settings.database_url).conn.close()  # opened again, with the limit
    with pytest.raises(Unavailable, match="its disk is full. Nothing of it was stored"):
        call("send_message", **mail(project, "large") | {"body_md": "x" * 250_000})
    assert call("send_message", **mail(project, "small"))["message"]["subject"] == "small"  # the next write goes on
    assert [m["subject"] for m in call("fetch_inbox", project_key=project, agent_name="GreenCastle")["messages"]] == ["small"]


def test_a_database_that_refuses_every_write_logs_a_line_a_while_not_one_a_call(settings, call, project, monkeypatch, caplog):
    """Each refused write logged an error: thousands of lines a second, on a disk that may be the full one."""
    connections_with("query_only = 1", settings, monkeypatch)
    monkeypatch.setattr(refusals, "_refused", refusals.Refusals())
    for number in range(20):
        with pytest.raises(Unavailable):
            call("send_message", **mail(project, f"refused {number}"))
    lines = [record.getMessage() for record in caplog.records if "cannot write its database" in record.getMessage()]
    assert len(lines) == 1 and "1 call(s) refused since the last such line" in lines[0], lines
    monkeypatch.setattr(refusals, "LOG_SECONDS", 0)
    with pytest.raises(Unavailable):
        call("send_message", **mail(project, "refused again"))
    lines = [record.getMessage() for record in caplog.records if "cannot write its database" in record.getMessage()]
    assert len(lines) == 2 and "20 call(s) refused since the last such line" in lines[1], lines  # the 19 unlogged, and this one


def test_ready_answers_503_for_a_minute_after_the_database_refused_a_write(settings, call, project, monkeypatch):
    """A full disk still takes BEGIN IMMEDIATE (it writes nothing), so /ready's write probe passed
    while every write answered 503."""
    monkeypatch.setattr(refusals, "_refused", refusals.Refusals())
    assert readiness.report(settings, None)[0] == 200
    room = sqlite3.connect(settings.database_path).execute("PRAGMA page_count").fetchone()[0] + 40
    connections_with(f"max_page_count = {room}", settings, monkeypatch)
    with pytest.raises(Unavailable, match="disk is full"):
        call("send_message", **mail(project, "large") | {"body_md": "x" * 250_000})
    status, body = readiness.report(settings, None)
    assert status == 503 and body["status"] == "unavailable", body
    assert len(body["problems"]) == 1 and "refused 1 write(s), the latest 0 s ago: its disk is full" in body["problems"][0]
    monkeypatch.setattr(refusals, "READY_SECONDS", 0)  # a minute without another
    status, body = readiness.report(settings, None)
    assert (status, body["problems"]) == (200, [])
