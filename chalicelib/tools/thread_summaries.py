"""Thread summaries kept by the write path (migrations/0019_thread_summaries.sql).

list_threads used to group every message of the project and read every message of the
threads it listed (140 ms at 10k messages and at 100k). Instead every stored message updates,
in the same transaction, a summary of its thread for each view that shows it: the whole
project (viewer 0) and the mail of each agent that sent or received it (any kind, as
`visible_to`). A view keeps its message count, first and last message, and its participants
(sender, to, cc: never bcc) with where each first appears. list_threads walks the project's
(or the agent's) summaries newest first through an index and reads a few rows per thread.

As in counts.py, each writer (0 on embedded SQLite, a replica's own id on Turso) writes only
its own rows, so two replicas never overwrite one another; a view combines its few rows (sum
of counts, min of firsts, max of lasts). A retention purge recounts the threads it touched
from their remaining messages (`recount`): exact on embedded SQLite; on Turso a message
delivered to one of those threads through another replica while the purge runs may be
counted twice or not at all, until the thread's next purge.

Cost per message: one row per view and one per (view, participant); after the thread's first
messages the participant rows already hold an earlier appearance and are not written.
"""

import sqlite3
from collections import defaultdict

from ..ids import stable_id
from ..store.db import placeholders
from .counts import writer

RANKS = {"to": 1, "notice": 1, "cc": 2}  # a participant's place in a message after the sender (0); bcc: none


def record(db, project_id: int, messages: list[tuple[int, str, int, dict[int, str]]]) -> None:
    """Stored messages (id, thread_id, sender_id, {recipient id: kind}), oldest first:
    onto their threads' summaries, for the project and for each agent that sees them."""
    summaries: dict[tuple[str, int], list[int]] = {}  # (thread, viewer) -> [count, first, last]
    appearances: dict[tuple[str, int, int], tuple[int, int]] = {}  # (thread, viewer, agent) -> (first, rank)
    for message_id, thread_id, sender_id, kinds in messages:
        ranks = {sender_id: 0}
        for agent, kind in kinds.items():
            if kind in RANKS:
                ranks.setdefault(agent, RANKS[kind])
        for viewer in dict.fromkeys((0, sender_id, *kinds)):
            summary = summaries.setdefault((thread_id, viewer), [0, message_id, message_id])
            summary[0] += 1
            summary[1], summary[2] = min(summary[1], message_id), max(summary[2], message_id)
            for agent, rank in ranks.items():
                key = (thread_id, viewer, agent)
                if key not in appearances or (message_id, rank) < appearances[key]:
                    appearances[key] = (message_id, rank)
    me = writer(db)
    rows = [(stable_id("thread", project_id, thread, viewer, me), project_id, thread, viewer, me, count, first, last)
            for (thread, viewer), (count, first, last) in summaries.items()]
    # UPDATE, then INSERT what is new: tursodb 0.7 reports "TEXT value contains invalid UTF-8" on
    # some INSERT ... ON CONFLICT DO UPDATE of these rows.
    updated = db.executemany(
        "UPDATE thread_summaries SET messages = messages + ?, first_id = min(first_id, ?), last_id = max(last_id, ?)"
        " WHERE id = ?", [(count, first, last, key) for key, _, _, _, _, count, first, last in rows],
    ).rowcount
    if updated < len(rows):
        db.executemany(
            "INSERT INTO thread_summaries (id, project_id, thread_id, viewer_id, writer, messages, first_id, last_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING", rows,
        )
    db.executemany(  # a participant already seen earlier in the view is not written again
        "INSERT INTO thread_participants (id, project_id, thread_id, viewer_id, agent_id, writer, first_id, rank)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET first_id = excluded.first_id,"
        " rank = excluded.rank WHERE excluded.first_id < first_id",
        [(stable_id("participant", project_id, thread, viewer, agent, me), project_id, thread, viewer, agent, me, first, rank)
         for (thread, viewer, agent), (first, rank) in appearances.items()],
    )


def recount(db, project_id: int, thread_ids: list[str]) -> None:
    """Summaries of these threads made again from their messages (after a retention purge)."""
    for start in range(0, len(thread_ids), 500):
        chunk = thread_ids[start:start + 500]
        where, params = f"project_id = ? AND thread_id IN ({placeholders(chunk)})", [project_id, *chunk]
        db.execute(f"DELETE FROM thread_summaries WHERE {where}", params)
        db.execute(f"DELETE FROM thread_participants WHERE {where}", params)
        rows = db.execute(f"SELECT id, thread_id, sender_id FROM messages WHERE {where} ORDER BY id", params).fetchall()
        for first in range(0, len(rows), 500):
            batch = rows[first:first + 500]
            kinds: dict[int, dict[int, str]] = defaultdict(dict)
            ids = [row[0] for row in batch]
            for message_id, agent, kind in db.execute(
                f"SELECT message_id, agent_id, kind FROM message_recipients WHERE message_id IN ({placeholders(ids)})", ids
            ):
                kinds[message_id][agent] = kind
            record(db, project_id, [(mid, thread, sender, kinds[mid]) for mid, thread, sender in batch])


def newest(db: sqlite3.Connection, project: sqlite3.Row, viewer: int, limit: int) -> list[dict]:
    """The fields of ThreadInfo for the `limit` most recently active threads of a view (viewer
    0: the whole project; an agent's id: its mail), newest first. Reads the index
    thread_summaries_recent a page at a time (a thread has a row per writer: a few)."""
    found: list[str] = []
    before = None
    while len(found) < limit:
        page = db.execute(
            "SELECT thread_id, last_id FROM thread_summaries WHERE project_id = ? AND viewer_id = ?"
            + (" AND last_id < ?" if before is not None else "") + " ORDER BY last_id DESC LIMIT ?",
            (project["id"], viewer, *([before] if before is not None else []), limit + 8),
        ).fetchall()
        for thread_id, before in page:
            if thread_id not in found:
                found.append(thread_id)
        if len(page) < limit + 8:
            break
    found = found[:limit]
    if not found:
        return []
    marks = placeholders(found)
    views = {
        thread_id: (count, first, last)
        for thread_id, count, first, last in db.execute(
            "SELECT thread_id, sum(messages), min(first_id), max(last_id) FROM thread_summaries"
            f" WHERE project_id = ? AND thread_id IN ({marks}) AND viewer_id = ? GROUP BY thread_id",
            (project["id"], *found, viewer),
        )
    }
    ends = [message_id for _, first, last in views.values() for message_id in (first, last)]
    messages = {
        row[0]: row for row in db.execute(f"SELECT id, subject, created_ts FROM messages WHERE id IN ({placeholders(ends)})", ends)
    }
    participants: dict[str, dict[str, None]] = defaultdict(dict)
    for thread_id, address in db.execute(
        "SELECT t.thread_id, CASE WHEN a.project_id = ? THEN a.name ELSE a.name || '@' || p.slug END AS address"
        " FROM thread_participants t JOIN agents a ON a.id = t.agent_id JOIN projects p ON p.id = a.project_id"
        f" WHERE t.project_id = ? AND t.thread_id IN ({marks}) AND t.viewer_id = ?"
        " ORDER BY t.first_id, t.rank, address COLLATE NOCASE",
        (project["id"], project["id"], *found, viewer),
    ):
        participants[thread_id].setdefault(address, None)  # a writer's later first appearance comes after
    return [
        dict(
            thread_id=thread_id,
            subject=messages[views[thread_id][1]][1],
            message_count=views[thread_id][0],
            participants=list(participants[thread_id]),
            first_ts=messages[views[thread_id][1]][2],
            last_ts=messages[views[thread_id][2]][2],
        )
        for thread_id in found
        # On Turso a thread purged by another replica's retention run can lag its summary: not listed.
        if views[thread_id][1] in messages and views[thread_id][2] in messages
    ]
