"""Message counts kept up to date by the write path (migrations/0013_scale.sql).

whois and get_project used to count rows, which costs time in proportion to the mailbox
(18 ms at 100k messages). Instead every delivery and every first read adds to counters, in
the same transaction (and savepoint) as the rows it counts: a rolled-back write rolls its
counts back too.

Each writer keeps its own row per agent: 0 on embedded SQLite (one writer thread), a replica's
own id on Turso. Two replicas that write at once therefore never update the same row, and
the primary never has to choose between their increments; a count is the sum of the
agent's rows (one per replica that ever wrote for it: a handful, read through an index).
Trade-off: on Turso two replicas marking the same message read at the same moment each
count that first read (unread is clamped at 0); sent and received are exact.

A send's counts are deferred to the end of its transaction (chalicelib/store/upkeep.py): a
group-committed batch of sends adds to each agent's row once, not once per send.

A project's messages and agents are counted the same way (project_counts, migration 0042):
summing its agents' rows cost get_project time in proportion to its agents (6.7 ms at 50,000).
So is all the mail (mail_totals, migration 0046): summing every project's rows cost a search
time in proportion to the projects (3.3 ms at 50,000, 0.18 ms now); with the messages purged
(0047), the stamp a replica's search index compares with its own.
"""

import sqlite3
from collections import Counter

from ..ids import stable_id
from ..store import upkeep
from ..store.db import placeholders


def writer(db) -> int:
    """Whose rows this connection writes: 0 on embedded SQLite, the replica's own id on Turso."""
    replica = getattr(db, "replica", None)
    return replica.writer_id if replica is not None else 0


def _add_to_rows(db, table: str, key: str, owner: str | None, counters: tuple[str, ...], rows) -> None:
    """Add rows (owner id, *deltas) to this writer's counter rows (id stable_id(key, owner,
    writer)), one statement each for all of an owner's: made first if new, then added to. A table
    without an owner column (owner None) has one row per writer, stable_id(key, writer): every
    row's deltas go to it. (Two statements, not one UPSERT: Turso's engine, pyturso 0.8.3, failed
    `ON CONFLICT ... DO UPDATE` once the table held ~31 rows, "Payload too small for indicated
    header size": a send in a project of 31 agents.)"""
    me, totals = writer(db), {}
    for row_owner, *deltas in rows:
        total = totals.setdefault(row_owner if owner else None, [0] * len(counters))
        for column, delta in enumerate(deltas):
            total[column] += delta
    if owner:
        ids = {row_owner: stable_id(key, row_owner, me) for row_owner in totals}
        db.executemany(f"INSERT OR IGNORE INTO {table} (id, {owner}, writer) VALUES (?, ?, ?)",
                       [(ids[row_owner], row_owner, me) for row_owner in totals])
    else:
        ids = {None: stable_id(key, me)}
        db.execute(f"INSERT OR IGNORE INTO {table} (id, writer) VALUES (?, ?)", (ids[None], me))
    db.executemany(f"UPDATE {table} SET {', '.join(f'{name} = {name} + ?' for name in counters)} WHERE id = ?",
                   [(*total, ids[row_owner]) for row_owner, total in totals.items()])


def _add(db, items: list[tuple[tuple[int, int, int, int], ...]]) -> None:
    """Add each item's rows (agent_id, sent, received, read) to this writer's counters, one row per agent."""
    _add_to_rows(db, "message_counts", "counts", "agent_id", ("sent", "received", "read"), (row for rows in items for row in rows))


def _add_to_projects(db, items: list[tuple[int, int, int]]) -> None:
    """Add each item (project_id, messages, agents) to this writer's row of the project, and its
    messages to this writer's row of all the mail."""
    _add_to_rows(db, "project_counts", "project_counts", "project_id", ("messages", "agents"), items)
    if messages := [(None, messages) for _, messages, _ in items if messages]:
        _add_to_rows(db, "mail_totals", "mail_totals", None, ("messages",), messages)


def count_message(db, project_id: int, sender_id: int, kinds: dict[int, str]) -> None:
    """A message was stored in its sender's project: one sent for its sender, one received per
    recipient row but bcc (whois counts are seen by others: they must not reveal a bcc copy)."""
    rows = [(sender_id, 1, 0, 0)]  # one deferred item for the message (_add sums an agent's rows)
    for agent, kind in kinds.items():
        if kind != "bcc":
            rows.append((agent, 0, 1, 0))
    upkeep.later(db, _add, rows)
    upkeep.later(db, _add_to_projects, (project_id, 1, 0))


def count_agent(db, project_id: int) -> None:
    """An agent (or a person's sender row) was added to the project."""
    upkeep.later(db, _add_to_projects, (project_id, 0, 1))


def count_reads(db, agent_ids: list[int]) -> None:
    """Received messages were read for the first time, one per item (an agent as often as it read).
    One deferred row per agent: a restore's batch of reads is held until its upkeep is applied."""
    if agent_ids:
        upkeep.later(db, _add, tuple((agent_id, 0, 0, reads) for agent_id, reads in Counter(agent_ids).items()))


def agent_counts(db: sqlite3.Connection, agent_id: int) -> tuple[int, int, int]:
    """(sent, received, unread) of one agent."""
    upkeep.settled(db)
    sent, received, read = db.execute(
        "SELECT coalesce(sum(sent), 0), coalesce(sum(received), 0), coalesce(sum(read), 0)"
        " FROM message_counts WHERE agent_id = ?",
        (agent_id,),
    ).fetchone()
    return sent, received, max(received - read, 0)


def project_counts(db: sqlite3.Connection, project_id: int) -> tuple[int, int]:
    """(messages, agents) of the project: the messages stored in it (a message lives in its
    sender's project), its agents and people, retired ones included."""
    upkeep.settled(db)
    return db.execute(
        "SELECT coalesce(sum(messages), 0), coalesce(sum(agents), 0) FROM project_counts WHERE project_id = ?", (project_id,)
    ).fetchone()


def mail_total(db: sqlite3.Connection) -> int:
    """The messages of every project (a handful of rows: one per writer)."""
    return mail_stamp(db)[0]


def mail_stamp(db: sqlite3.Connection) -> tuple[int, int]:
    """(messages stored, messages ever purged) of every project: it changes whenever a message
    is stored or purged (a replica's search index catches up only then: store/search_index.py)."""
    upkeep.settled(db)
    return tuple(db.execute("SELECT coalesce(sum(messages), 0), coalesce(sum(purged), 0) FROM mail_totals").fetchone())


def uncount_messages(db, message_ids: list[int]) -> None:
    """Messages about to be deleted (retention): off their senders' and recipients' counts."""
    marks = placeholders(message_ids)
    sent = db.execute(f"SELECT project_id, sender_id, count(*) FROM messages WHERE id IN ({marks}) GROUP BY project_id, sender_id",
                      message_ids).fetchall()
    _add_to_projects(db, [(project, -count, 0) for project, _, count in sent])
    if purged := sum(count for *_, count in sent):
        _add_to_rows(db, "mail_totals", "mail_totals", None, ("purged",), [(None, purged)])
    rows = {agent: [-count, 0, 0] for _, agent, count in sent}
    received = db.execute(
        f"SELECT agent_id, count(*), count(read_ts) FROM message_recipients WHERE message_id IN ({marks}) AND kind != 'bcc'"
        " GROUP BY agent_id",
        message_ids,
    )
    for agent, count, read in received:
        rows.setdefault(agent, [0, 0, 0])[1:] = [-count, -read]
    _add(db, [[(agent, sent, received, read) for agent, (sent, received, read) in rows.items()]])
