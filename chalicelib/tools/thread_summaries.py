"""Thread summaries kept by the write path (migrations/0019_thread_summaries.sql, 0021_thread_summary_heads.sql).

list_threads used to group every message of the project and read every message of the
threads it listed (140 ms at 10k messages and at 100k). Instead every stored message updates,
in the same transaction, a summary of its thread for each view that shows it: the whole
project (viewer 0) and the mail of each agent that sent or received it (any kind, as
`visible_to`). A view keeps its message count, first and last message (with the first's
subject and both timestamps: what list_threads shows), and its participants (sender, to, cc:
never bcc) with where each first appears, in one row. list_threads walks the project's (or the
agent's) summaries newest first through an index of their last messages, and reads no message;
summarize_thread reads one thread's (`header`) instead of counting its messages.

As in counts.py, each writer (0 on embedded SQLite, a replica's own id on Turso) writes only
its own rows, so two replicas never overwrite one another; a view combines its few rows (sum
of counts, min of firsts, max of lasts). Writer 0 is also who owns the rows migrations made
(no replica has id 0), so on embedded SQLite a view has one row. Rows are found by project,
thread, writer and viewer; a new
one gets a time-ordered id (new_id), so it is appended to the table: hashed ids put each new
row on a random page, and a batch of sends then wrote ~11% fewer per second (bench/compare.py).
A retention purge lists the threads it cut (threads_to_recount, migration 0030), and the run
recounts each from its remaining messages, a bounded part a transaction (`recount_some`,
migration 0051; until its last part list_threads still counts the purged messages):
exact on embedded SQLite; on Turso a message delivered to one of those threads through another
replica while the purge runs may be counted twice or not at all, until the thread's next purge.

Cost per message: one row read and updated per view (the project, the sender, each
recipient); a view's participant list is rewritten only when someone new appears in it. A
send's summary upkeep is deferred to the end of its transaction (chalicelib/store/upkeep.py),
so a group-committed batch reads its threads' rows in one statement and writes them in one
more; a thread that a message of the batch started has no row to read yet (its id is the
message's new_id: no other message can have used it).
"""

import sqlite3
from collections import defaultdict

import orjson

from ..ids import new_ids, stable_id
from ..store import upkeep
from ..store.db import chunks, placeholders, values_of
from .counts import writer

COLUMNS = "id, thread_id, writer, messages, first_id, subject, first_ts, last_id, last_ts, participants"
PARTICIPANTS_SHOWN = 100  # of a thread's participants, those its outputs list (shown)
RANKS = {"to": 1, "notice": 1, "cc": 2}  # a participant's place in a message after the sender (0); bcc: none
NOCASE = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")  # SQLite's COLLATE NOCASE


def add(db, project_id: int, message: tuple[int, str, int, dict[int, str], str, str], new_thread: bool) -> None:
    """A stored message (as `record` takes it) onto its thread's summaries when its transaction
    ends; `new_thread`: the message started the thread."""
    upkeep.later(db, _record_deferred, (project_id, message, new_thread))


def _record_deferred(db, items: list[tuple[int, tuple, bool]]) -> None:
    by_project: dict[int, tuple[list, set]] = {}
    for project_id, message, new_thread in items:
        messages, new_threads = by_project.setdefault(project_id, ([], set()))
        messages.append(message)
        if new_thread:
            new_threads.add(message[1])
    for project_id, (messages, new_threads) in by_project.items():
        record(db, project_id, messages, new_threads)


def record(db, project_id: int, messages: list[tuple[int, str, int, dict[int, str], str, str]], new_threads=frozenset(),
           table: str = "thread_summaries") -> None:
    """Stored messages (id, thread_id, sender_id, {recipient id: kind}, subject, created_ts): onto
    their threads' summaries, for the project and for each agent that sees them. `new_threads`
    have no summary yet (started by one of these messages). `table`: thread_recounts for the
    rows a recount is making (recount_some)."""
    views: dict[tuple[str, int], list] = {}  # (thread, viewer) -> [count, first, subject, first_ts, last, last_ts, {agent: (first, rank)}]
    for message_id, thread_id, sender_id, kinds, subject, created_ts in messages:
        places = {sender_id: (message_id, 0)}  # shared by the views this message opens: never changed in place
        for agent, kind in kinds.items():
            rank = RANKS.get(kind)
            if rank is not None and agent not in places:
                places[agent] = (message_id, rank)
        viewers = (0, sender_id, *kinds) if sender_id not in kinds else dict.fromkeys((0, sender_id, *kinds))  # once each
        for viewer in viewers:
            view = views.get((thread_id, viewer))
            if view is None:
                views[(thread_id, viewer)] = [1, message_id, subject, created_ts, message_id, created_ts, places]
                continue
            view[0] += 1
            if message_id < view[1]:
                view[1:4] = message_id, subject, created_ts
            if message_id > view[4]:
                view[4:6] = message_id, created_ts
            view[6] = merged(view[6], places)
    me = writer(db)
    old = [key for key in views if key[0] not in new_threads]  # a thread started here has no rows yet
    stored = _stored(db, project_id, me, old, table) if old else {}
    updates, inserts, encoded = [], [], {}  # encoded: id(participants) -> JSON, once for the views that share them
    for (thread, viewer), (count, first, subject, first_ts, last, last_ts, seen) in views.items():
        row = stored.get((thread, viewer))
        if row is not None:
            # Only this writer writes the row, and it holds the write lock: the ends just read are current.
            row_id, first_id, last_id, participants = row
            known = {agent: (appeared, rank) for agent, appeared, rank in orjson.loads(participants)}
            now_known = merged(known, seen)
            updates.append((
                count, *((first, subject, first_ts) if first < first_id else (None, None, None)),
                *((last, last_ts) if last > last_id else (None, None)), encode(now_known) if now_known is not known else None,
                row_id,
            ))
        else:
            participants = encoded.get(id(seen))
            if participants is None:
                participants = encoded[id(seen)] = encode(seen)
            inserts.append((project_id, thread, viewer, me, count, first, last, participants, subject, first_ts, last_ts))
    if updates:
        # UPDATE and INSERT, not an upsert (docs/turso.md). NULL: that column stays.
        db.executemany(
            f"UPDATE {table} SET messages = messages + ?, first_id = coalesce(?, first_id), subject = coalesce(?, subject),"
            " first_ts = coalesce(?, first_ts), last_id = coalesce(?, last_id), last_ts = coalesce(?, last_ts),"
            " participants = coalesce(?, participants) WHERE id = ?",
            updates,
        )
    if inserts:
        # A new row goes at the end of the table (ids grow with time), not on a random page.
        db.executemany(
            f"INSERT INTO {table} (project_id, thread_id, viewer_id, writer, messages, first_id, last_id, participants,"
            " subject, first_ts, last_ts, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row + (row_id,) for row, row_id in zip(inserts, new_ids(len(inserts)))),
        )


def _stored(db, project_id: int, me: int, keys: list[tuple[str, int]], table: str) -> dict[tuple[str, int], tuple]:
    """This writer's rows of these (thread, viewer) pairs: (thread, viewer) -> (row id, first, last, participants).
    Each pair looked up whole in the index (values_of): `thread_id IN (...)` read every summary of
    the project on a Turso replica (10-15 ms a send at 100k messages)."""
    stored = {}
    for chunk in chunks(dict.fromkeys(keys), 400):
        pairs, params = values_of(chunk)
        for row_id, thread, viewer, first_id, last_id, participants in db.execute(
            f"WITH wanted (thread_id, viewer_id) AS ({pairs}) SELECT s.id, s.thread_id, s.viewer_id, s.first_id, s.last_id,"
            f" s.participants FROM wanted CROSS JOIN {table} s INDEXED BY {table}_by_thread"
            " WHERE s.project_id = ? AND s.thread_id = wanted.thread_id AND s.writer = ? AND s.viewer_id = wanted.viewer_id",
            (*params, project_id, me),
        ):
            stored[(thread, viewer)] = (row_id, first_id, last_id, participants)
    return stored


def merged(known: dict[int, tuple[int, int]], more: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
    """Participants {agent: (first message id, rank)}: `known` with `more`'s new agents and earlier
    appearances; `known` itself (never changed: it may be shared) when nothing is new."""
    changes = {agent: place for agent, place in more.items() if agent not in known or place < known[agent]}
    return {**known, **changes} if changes else known


def encode(participants: dict[int, tuple[int, int]]) -> str:
    return orjson.dumps([[agent, first, rank] for agent, (first, rank) in participants.items()]).decode()


def recount(db, project_id: int, thread_ids: list[str]) -> None:
    """Summaries of these threads made again from all their messages, in the caller's
    transaction: for a database filled with bulk SQL (bench/), and what recount_some's parts
    add up to (tests). Both found by thread through a VALUES table (values_of: `thread_id IN
    (...)` read all the project's rows on a Turso replica)."""
    for chunk in chunks(thread_ids, 500):
        wanted, params = values_of([(thread,) for thread in chunk])
        gone = [row_id for (row_id,) in db.execute(
            f"WITH wanted (thread_id) AS ({wanted}) SELECT s.id FROM wanted CROSS JOIN thread_summaries s"
            " INDEXED BY thread_summaries_by_thread WHERE s.project_id = ? AND s.thread_id = wanted.thread_id",
            (*params, project_id),
        )]
        for ids in chunks(gone, 500):
            db.execute(f"DELETE FROM thread_summaries WHERE id IN ({placeholders(ids)})", ids)
        _fold(db, project_id, db.execute(
            f"WITH wanted (thread_id) AS ({wanted}) SELECT m.id, m.thread_id, m.sender_id, m.subject, m.created_ts"
            " FROM wanted CROSS JOIN messages m WHERE m.project_id = ? AND m.thread_id = wanted.thread_id ORDER BY m.id",
            (*params, project_id),
        ).fetchall(), "thread_summaries")


def _fold(db, project_id: int, rows: list[tuple], table: str) -> None:
    """Messages (id, thread_id, sender_id, subject, created_ts) with their recipients onto the summaries in `table`."""
    for batch in chunks(rows, 500):
        kinds: dict[int, dict[int, str]] = defaultdict(dict)
        ids = [row[0] for row in batch]
        for message_id, agent, kind in db.execute(
            f"SELECT message_id, agent_id, kind FROM message_recipients WHERE message_id IN ({placeholders(ids)})", ids
        ):
            kinds[message_id][agent] = kind
        record(db, project_id, [(mid, thread, sender, kinds[mid], subject, ts) for mid, thread, sender, subject, ts in batch],
               table=table)


# Remaking the threads a retention purge cut, a part at a time (migrations 0030, 0051)

SUMMARY_COLUMNS = "id, project_id, thread_id, viewer_id, writer, messages, first_id, last_id, participants, subject, first_ts, last_ts"


def recount_some(db, limit: int, settled: int) -> int:
    """Remake, from their remaining messages, the summaries of threads a retention purge cut
    (threads_to_recount), reading at most `limit` of their messages in this transaction (and
    the last minute's of a thread it finishes): how many it read, plus one a thread finished.
    Ids below `settled` are of messages all committed (made a minute or more ago).

    All of a thread in one transaction held the one writer 0.32 s at 20,000 messages, more with
    the thread. Instead its new rows grow in thread_recounts, transaction after transaction,
    from the newest message settled at its start down to its first, then up through what came
    since, and replace its rows in the transaction that reads the last part: until then
    list_threads shows the summary from before the purge, and a process that dies between parts
    leaves the parts done for the next run. A purge deletes only below what a recount has read
    (held_back), so the parts read stay the thread's. The thread begun goes on before another
    begins: one is in hand at a time, finished within the runs its length takes."""
    done = 0
    for begun in ("IS NOT NULL", "IS NULL"):
        for queued, project_id, thread, low, high in db.execute(
            f"SELECT id, project_id, thread_id, low_id, high_id FROM threads_to_recount WHERE low_id {begun} LIMIT ?", (limit,)
        ).fetchall():
            if done >= limit:
                return done
            done += _recount_part(db, queued, project_id, thread, low, high, limit - done, settled)
    return done


def _recount_part(db, queued: int, project_id: int, thread: str, low: int | None, high: int | None, room: int,
                  settled: int) -> int:
    """One part of a thread's recount (recount_some), of at most `room` messages: the new rows
    hold its messages from `low` up to `high`; down from `low`, then up from `high`."""
    if low is None:
        db.execute("DELETE FROM thread_recounts WHERE project_id = ? AND thread_id = ?", (project_id, thread))  # none: in case
        (top,) = db.execute("SELECT max(id) FROM messages WHERE project_id = ? AND thread_id = ?", (project_id, thread)).fetchone()
        low = high = min(settled, (top or 0) + 1)
    down = _messages(db, project_id, thread, "id < ? ORDER BY id DESC", (low,), room)
    up = [] if len(down) == room else _messages(db, project_id, thread, "id >= ? AND id < ? ORDER BY id", (high, settled),
                                                 room - len(down))
    _fold(db, project_id, down + up, "thread_recounts")
    low, high = down[-1][0] if down else low, up[-1][0] + 1 if up else high
    if len(down) + len(up) == room:  # maybe more: in the next part
        db.execute("UPDATE threads_to_recount SET low_id = ?, high_id = ? WHERE id = ?", (low, high, queued))
        return room
    # The last part: with the messages of the last minute, not all committed until now. One
    # committed after this transaction is added to the new rows by its own (record).
    latest = _messages(db, project_id, thread, "id >= ? ORDER BY id", (high,), -1)
    _fold(db, project_id, latest, "thread_recounts")
    db.execute("DELETE FROM thread_summaries WHERE project_id = ? AND thread_id = ?", (project_id, thread))
    db.execute(f"INSERT INTO thread_summaries ({SUMMARY_COLUMNS}) SELECT {SUMMARY_COLUMNS} FROM thread_recounts"
               " WHERE project_id = ? AND thread_id = ?", (project_id, thread))
    db.execute("DELETE FROM thread_recounts WHERE project_id = ? AND thread_id = ?", (project_id, thread))
    db.execute("DELETE FROM threads_to_recount WHERE id = ?", (queued,))
    return len(down) + len(up) + len(latest) + 1


def _messages(db, project_id: int, thread: str, where: str, params: tuple, limit: int) -> list[tuple]:
    """The thread's messages as _fold takes them, through messages_by_thread (project, thread, id)."""
    return db.execute(
        f"SELECT id, thread_id, sender_id, subject, created_ts FROM messages WHERE project_id = ? AND thread_id = ? AND {where}"
        " LIMIT ?", (project_id, thread, *params, limit),
    ).fetchall()


def held_back(db, project_id: int, messages: list[tuple[int, str]]) -> int | None:
    """The first of these messages (id, thread), oldest first, that a purge must keep for now:
    one a recount begun has read (recount_some); None if none."""
    threads = {thread for _, thread in messages}
    wanted, params = values_of([(stable_id("thread_to_recount", project_id, thread),) for thread in threads])
    lows = dict(db.execute(
        f"WITH wanted (id) AS ({wanted}) SELECT q.thread_id, q.low_id FROM wanted CROSS JOIN threads_to_recount q"
        " WHERE q.id = wanted.id AND q.low_id IS NOT NULL", params,
    ).fetchall())
    return next((message_id for message_id, thread in messages if thread in lows and message_id >= lows[thread]), None)


def queue_recounts(db, project_id: int, threads) -> None:
    """Threads a purge cut, for recount_some (once each: a thread already listed keeps its place and its parts)."""
    db.executemany(
        "INSERT OR IGNORE INTO threads_to_recount (id, project_id, thread_id) VALUES (?, ?, ?)",
        [(stable_id("thread_to_recount", project_id, thread), project_id, thread) for thread in threads],
    )


def newest(db: sqlite3.Connection, project: sqlite3.Row, viewer: int, limit: int, before: int | None = None) -> tuple[list[dict], int | None]:
    """The fields of ThreadInfo for the `limit` most recently active threads of a view (viewer
    0: the whole project; an agent's id: its mail), newest first, of those last active before
    message `before` if given; and where the next page starts (the last one's last message id),
    None if no thread is left.

    Walks the index thread_summaries_newest (project, viewer, last message) a page at a time,
    reading each walked row: a page of the table per thread (migration 0024: the index held
    whole rows, which made every send write each of its views twice). A view also has the
    rows of other writers, maybe older than the walk went: a view has at most one row of
    writer 0 (embedded SQLite's, and what migrations wrote), so beside a walked row of writer 0
    only the other writers' rows are looked up, in the small index thread_summaries_shared (on
    embedded SQLite it holds the rare views that also have a row from before migration 0021);
    other views are looked up whole."""
    upkeep.settled(db)
    walked: dict[str, list] = {}  # thread -> its rows seen in the walk
    page_start = before
    while len(walked) <= limit:  # one more than the page: whether a next page has any
        page = db.execute(
            f"SELECT {COLUMNS} FROM thread_summaries INDEXED BY thread_summaries_newest WHERE project_id = ? AND viewer_id = ?"
            + (" AND last_id < ?" if before is not None else "") + " ORDER BY last_id DESC LIMIT ?",
            (project["id"], viewer, *([before] if before is not None else []), limit + 8),
        ).fetchall()
        for row in page:
            walked.setdefault(row[1], []).append(row)
            before = row[7]
        if len(page) < limit + 8:
            break
    threads = list(walked)[:limit]
    if not threads:
        return [], None
    next_page = walked[threads[-1]][0][7] if len(walked) > limit else None  # a thread's first row walked: its newest
    seen = {row[0] for thread in threads for row in walked[thread]}
    local = [thread for thread in threads if any(row[2] == 0 for row in walked[thread])]
    others = [thread for thread in threads if thread not in local]
    missing = []
    for chunk, index, shared in ((local, "shared", " AND s.writer != 0"), (others, "by_thread", "")):
        if chunk:  # (INDEXED BY: the planner, without statistics on these indexes, may prefer the walk's; values_of: Turso's)
            wanted, params = values_of([(thread,) for thread in chunk])
            missing += [row_id for (row_id,) in db.execute(
                f"WITH wanted (thread_id) AS ({wanted}) SELECT s.id FROM wanted CROSS JOIN thread_summaries s"
                f" INDEXED BY thread_summaries_{index} WHERE s.project_id = ? AND s.thread_id = wanted.thread_id"
                f" AND s.viewer_id = ?{shared}",
                (*params, project["id"], viewer),
            ) if row_id not in seen]
    rows = [row for thread in threads for row in walked[thread]]
    if missing:
        rows += db.execute(f"SELECT {COLUMNS} FROM thread_summaries WHERE id IN ({placeholders(missing)})", missing).fetchall()
    views = _combined(rows)
    if page_start is not None:  # another writer's newer row: the thread was on an earlier page
        threads = [thread for thread in threads if views[thread][2][0] < page_start]
    addresses = _addresses(db, project, {agent for thread in threads for agent in views[thread][3]})
    return [
        dict(thread_id=thread_id, subject=subject, message_count=count, **shown(_placed(seen, addresses)),
             first_ts=first_ts, last_ts=last_ts)
        for thread_id in threads
        for count, (_, subject, first_ts), (_, last_ts), seen in [views[thread_id]]
    ], next_page


def header(db: sqlite3.Connection, project: sqlite3.Row, thread_id: str, viewers: frozenset[int] | None) -> dict | None:
    """What summarize_thread says of one thread of the project as `viewers` (an agent's
    identities; None: the whole project) see it, from its few summary rows however long the
    thread: first_id, subject, message_count, participants (placed: (first message, rank,
    address)), first_ts and last_ts. None when they see none of its messages."""
    upkeep.settled(db)
    viewer_ids = [0] if viewers is None else list(viewers)
    rows = db.execute(
        f"SELECT {COLUMNS}, viewer_id FROM thread_summaries INDEXED BY thread_summaries_by_thread"
        f" WHERE project_id = ? AND thread_id = ? AND viewer_id IN ({placeholders(viewer_ids)})",
        (project["id"], thread_id, *viewer_ids),
    ).fetchall()
    if not rows:
        return None
    count, (first, subject, first_ts), (_, last_ts), seen = _combined([row[:10] for row in rows])[thread_id]
    if len({row[10] for row in rows}) > 1:  # a message two of the identities took part in is in both views: once
        from .messages import seen_in_thread  # not at the top: messages imports this module

        count = len(seen_in_thread(db, project["id"], thread_id, viewer_ids))
    return dict(first_id=first, subject=subject, message_count=count, participants=_placed(seen, _addresses(db, project, seen)),
                first_ts=first_ts, last_ts=last_ts)


def _combined(rows) -> dict[str, list]:
    """Summary rows (COLUMNS) combined per thread: [count, (first, subject, first_ts), (last,
    last_ts), {agent: (first message, rank)}] (a view's rows are one per writer)."""
    views: dict[str, list] = {}
    for _, thread_id, _, count, first, subject, first_ts, last, last_ts, participants in rows:
        view = views.setdefault(thread_id, [0, (first, subject, first_ts), (last, last_ts), {}])
        view[0] += count
        view[1], view[2] = min(view[1], (first, subject, first_ts)), max(view[2], (last, last_ts))
        view[3] = merged(view[3], {agent: (first_id, rank) for agent, first_id, rank in orjson.loads(participants)})
    return views


def _addresses(db, project: sqlite3.Row, agents) -> dict[int, str]:
    """{agent id: its name, or Name@project when it is another project's}."""
    agents = list(agents)
    return dict(db.execute(
        "SELECT a.id, CASE WHEN a.project_id = ? THEN a.name ELSE a.name || '@' || p.slug END"
        f" FROM agents a JOIN projects p ON p.id = a.project_id WHERE a.id IN ({placeholders(agents)})",
        (project["id"], *agents),
    ))


def shown(placed: list[tuple[int, int, str]]) -> dict:
    """A thread's participants as its outputs list them: the first PARTICIPANTS_SHOWN addresses
    in order of appearance, and how many more (a thread every agent of a big project took part in
    made each of a page's threads as long as its list of agents)."""
    return {"participants": [place[2] for place in placed[:PARTICIPANTS_SHOWN]],
            "participants_more": max(0, len(placed) - PARTICIPANTS_SHOWN)}


def _placed(seen: dict[int, tuple[int, int]], addresses: dict[int, str]) -> list[tuple[int, int, str]]:
    """Participants in order of first appearance: by message, then sender, to, cc, each by
    address (as recipients_of)."""
    return sorted(((*seen[agent], addresses[agent]) for agent in seen), key=place_order)


def place_order(place: tuple[int, int, str]) -> tuple:
    return place[0], place[1], place[2].translate(NOCASE)
