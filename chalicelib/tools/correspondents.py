"""Who has written to whom, kept by the write path (migrations/0033_correspondents.sql), so the
`auto` contact policy's check (tools/contacts.py) is a few index lookups, however much mail the
two agents have.

It used to look for such mail among the messages, from the side with less of it: two agents
with big mailboxes that never met cost a walk of one of them (133 ms at 200,000 messages each,
bench/contact_check.py). Now every delivery (`store_recipients`: send, reply, the archive
restore) records, in its own transaction, one row per relation it makes:

- `to`: the sender wrote to the agent as to or cc (the sender → agent);
- `bcc`: the sender wrote to it as bcc;
- `both`: two agents were to/cc recipients of one message (lower id → higher id).

Notices make none. A row is never changed: its id is stable_id of what it says, so a second
message between the same agents writes nothing (INSERT OR IGNORE), and two Turso replicas
writing the same row write the same thing. Rows are kept when retention purges the messages
(mail exchanged never expires, docs/contacts.md). A message to n > 2 agents (to and cc) writes
n(n-1)/2 `both` rows the first time those n are written to together (a `group` row remembers
that): a send to 100 + 100 agents took 126 ms instead of 25, again 22 ms.
"""

import sqlite3
from itertools import combinations

from ..ids import stable_id
from ..store.db import values_of

TO, BCC, BOTH, GROUP = "to", "bcc", "both", "group"


def record(db, sender_id: int, kinds: dict[int, str]) -> None:
    """A message from `sender_id` to these recipients ({agent id: kind}) was stored."""
    rows = [(sender_id, agent, BCC if kind == "bcc" else TO) for agent, kind in kinds.items()
            if kind != "notice" and agent != sender_id]
    addressed = sorted(agent for agent, kind in kinds.items() if kind in ("to", "cc"))
    if len(addressed) == 2 or (len(addressed) > 2 and _new_group(db, addressed)):
        rows += [(one, two, BOTH) for one, two in combinations(addressed, 2)]
    if rows:
        db.executemany(
            "INSERT OR IGNORE INTO correspondents (id, agent_id, peer_id, relation) VALUES (?, ?, ?, ?)",
            [(stable_id("correspondents", relation, agent, peer), agent, peer, relation) for agent, peer, relation in rows],
        )


def _new_group(db, addressed: list[int]) -> bool:
    """Whether no message to these to/cc recipients (sorted ids) was recorded before: a GROUP row
    says one was, so writing to the same agents again costs one row lookup, not n(n-1)/2."""
    return db.execute(
        "INSERT OR IGNORE INTO correspondents (id, agent_id, peer_id, relation) VALUES (?, 0, 0, ?)",
        (stable_id("correspondents", GROUP, *addressed), GROUP),
    ).rowcount == 1


def wrote_to(db: sqlite3.Connection, writers: list[int], reader: int, relations: tuple[str, ...]) -> set[int]:
    """Those of `writers` that wrote to `reader` in one of these ways (rows writer → reader), each
    row looked up whole (values_of: Turso's engine used the index only up to `agent_id IN (...)`)."""
    if not writers:
        return set()
    wanted, params = values_of([(writer, relation) for writer in writers for relation in relations])
    return {row[0] for row in db.execute(
        f"WITH wanted (agent_id, relation) AS ({wanted}) SELECT c.agent_id FROM wanted CROSS JOIN correspondents c"
        " WHERE c.agent_id = wanted.agent_id AND c.peer_id = ? AND c.relation = wanted.relation", [*params, reader],
    )}


def written_to(db: sqlite3.Connection, writer: int, readers: list[int], relations: tuple[str, ...]) -> set[int]:
    """Those of `readers` that `writer` wrote to in one of these ways (rows writer → reader), each
    row looked up whole (values_of: `peer_id IN (...)` read all the writer's rows on a Turso replica)."""
    if not readers:
        return set()
    wanted, params = values_of([(reader, relation) for reader in readers for relation in relations])
    return {row[0] for row in db.execute(
        f"WITH wanted (peer_id, relation) AS ({wanted}) SELECT c.peer_id FROM wanted CROSS JOIN correspondents c"
        " WHERE c.agent_id = ? AND c.peer_id = wanted.peer_id AND c.relation = wanted.relation", [*params, writer],
    )}


def addressed_with(db: sqlite3.Connection, agent: int, others: list[int]) -> set[int]:
    """Those of `others` that were to/cc recipients of one message together with `agent` (a
    BOTH row goes from the lower id to the higher)."""
    return (wrote_to(db, [other for other in others if other < agent], agent, (BOTH,))
            | written_to(db, agent, [other for other in others if other > agent], (BOTH,)))
