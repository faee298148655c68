"""Full-text search in replica mode: an FTS5 index in a sidecar stdlib-sqlite file.

Turso has no FTS5, so each process keeps `<replica>.search` beside its replica, with the same
FTS table name, tokenizer and bm25 columns as migrations/0002_search.sql, and `messages` and
`message_recipients` tables holding the columns search filters on: the search SQL in
tools/search.py then runs unchanged on either. (Messages and their recipients are written
together and never changed, so the copy stays right.) An index file of an older layout
(user_version) is replaced by an empty one and filled again, and one a search found damaged
(discard_damaged: FTS5's tables or the file itself) is removed and made anew: it is only a
cache. Before each search the index catches up with the replica. Messages are never edited;
only retention (tools/retention.py) deletes them or archives their bodies. So catching up is:
re-indexing the bodies archived lately; then, once the replica's stamp (how many messages it
holds and how many were ever purged, counted by the write path: tools/counts.py mail_stamp)
is not the one the index was last whole at, indexing the ids it lacks: the recent ones (ids
are time-ordered; a window covers messages that other replicas pushed late), and, unless
those were all the messages stored since, comparing every id, which also drops purged ones.
(It compared a checksum of every id instead, at every search: ~600 ms at a million messages
on Turso's engine, which scans the table for it.)

Indexing is bounded per search: a new replica's index of a million messages takes minutes (over
a Lambda's timeout, and in one transaction it was lost with the killed process, so every new
container started over and never searched). So it is committed BATCH messages at a time, newest
first, for BUILD_SECONDS a search; each search builds on what the earlier ones kept. Meanwhile
the index holds every message from its `floor` up, the newest: a search answers from those,
and a page of older mail waits until it is indexed (tools/search.py).
"""

import os
import re
import sqlite3
from contextlib import contextmanager, suppress
from time import monotonic

from .. import clock
from ..errors import Unavailable

from . import search_runs
from .db import placeholders, rollback, transaction
from ..ids import RANDOM_BITS
from .per_process import OnePerKey
from .tokenizer import TOKENIZER, folded

VERSION = 7  # 7: message_runs. An index of another layout is made anew (a cache: filled again)
_PROJECT_TOKEN = re.compile(r"(?<![0-9a-z])p[0-9]+(?![0-9a-z])", re.IGNORECASE)


def in_text(fts: str) -> str:
    """An FTS5 query kept to the text columns when a word of it could be a `project` column's token
    (`p<project id>`, migration 0045); others as they are (FTS5 checks a column filter on every
    match: +0.1 ms a search for a common word). Looked for as the tokenizer reads the query: without
    diacritics (`ṗ123` and `p̈123` are its p123)."""
    return f"{{subject body_md}} : ({fts})" if _PROJECT_TOKEN.search(folded(fts)) else fts


def project_token(project_id: int) -> str:
    """A message's `project` column in the index (migration 0045 writes it in SQL: 'p' || project_id)."""
    return f"p{project_id}"


def in_projects(fts: str, project_ids: list[int]) -> str:
    """An FTS5 query of these projects' messages only: FTS5 intersects the query's lists with the
    projects' (a search walked every project's matches and dropped the others')."""
    return f"project : ({' OR '.join(map(project_token, project_ids))}) AND {fts}"


# whole_at: the replica's stamp when the index last held every message of it (none yet: compare
# every id). messages_by_thread: a search in a thread walks the thread's messages (tools/search.py
# _window_sql; without, it read every message: 23 ms at 100k). An archived body is indexed empty,
# as migration 0050 does on embedded SQLite (the database's note, "archived on …: the git archive
# keeps it", matched every archived message); the bodies archived so far are in archived_bodies.
# message_runs: ids and paths (store/search_runs.py, as migration 0052), filled with the full-text
# rows, so never behind them (message_runs_backfill says so to the search).
SCHEMA = f"""
CREATE VIRTUAL TABLE messages_fts USING fts5 (subject, body_md, project, tokenize = '{TOKENIZER}');
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, sender_id INTEGER NOT NULL, thread_id TEXT NOT NULL,
    importance TEXT NOT NULL, created_ts TEXT NOT NULL
);
CREATE TABLE message_recipients (message_id INTEGER NOT NULL, agent_id INTEGER NOT NULL, kind TEXT NOT NULL);
CREATE INDEX recipients_by_message ON message_recipients (message_id, agent_id);
CREATE TABLE archived_bodies (id INTEGER PRIMARY KEY, archived_ts TEXT NOT NULL);
CREATE TABLE whole_at (id INTEGER PRIMARY KEY CHECK (id = 1), messages INTEGER NOT NULL, purged INTEGER NOT NULL);
CREATE INDEX messages_by_thread ON messages (project_id, thread_id, id);
CREATE TABLE message_runs (term TEXT NOT NULL, project_id INTEGER NOT NULL, message_id INTEGER NOT NULL,
                           place INTEGER NOT NULL, PRIMARY KEY (term, project_id, place, message_id)) WITHOUT ROWID;
CREATE INDEX message_runs_by_message ON message_runs (message_id);
CREATE TABLE message_runs_backfill (id INTEGER PRIMARY KEY CHECK (id = 1), below INTEGER NOT NULL);
INSERT INTO message_runs_backfill (id, below) VALUES (1, 0);
PRAGMA user_version = {VERSION};
"""
MESSAGE_COLUMNS = "id, project_id, sender_id, thread_id, importance, created_ts"
LATE_WINDOW_SECONDS = 15 * 60
LATE_WINDOW_IDS = (15 * 60 * 1000) << RANDOM_BITS  # ids made in the 15 minutes before the newest indexed
CHUNK = 500
BATCH = 10_000  # messages indexed in one transaction: kept if the process is stopped after it
BUILD_SECONDS = 5.0  # of indexing in one search (at least a CHUNK), before its own budget (SEARCH_TIMEOUT_MS) starts

# Bodies retention archived after a time, through the partial index messages_by_body_archived
# (migration 0023): Turso's planner takes a partial index only when the query states its WHERE.
ARCHIVED_SINCE = (
    "SELECT id, subject, body_md, body_archived_ts FROM messages WHERE body_archived_ts IS NOT NULL AND body_archived_ts > ?"
)


class SearchIndex:
    floor: int | None = None  # after a catch-up stopped with more to go: every message from this id up is indexed
    total = 0  # the replica's messages at the last catch-up

    def __init__(self, path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            if self.conn.execute("PRAGMA user_version").fetchone()[0] != VERSION:
                self._start_anew()
        except sqlite3.DatabaseError:
            self.conn.close()  # a malformed file, which discard_damaged removes: nothing left open on it
            raise

    def _start_anew(self) -> None:
        """Replace the file's content by an empty index of this layout: copied over it whole (SQLite's
        backup, one write transaction: a connection reading the file meanwhile sees the old index or
        the new one), not dropped table by table, which a damaged FTS5 table may refuse."""
        empty = sqlite3.connect(":memory:")
        try:
            empty.executescript(SCHEMA)
            empty.backup(self.conn)
        finally:
            empty.close()

    def catch_up(self, replica, stamp: tuple[int, int]) -> int:
        """Index the replica's messages this index lacks (and drop purged ones); how many were
        added. `stamp`: the replica's (messages, purged) counts (tools/counts.py mail_stamp).
        After BUILD_SECONDS of indexing with more to go, it stops, keeps what it did and sets
        `floor` (None once every message is indexed)."""
        deadline = monotonic() + BUILD_SECONDS
        self._archive_bodies(replica)
        self.total, self.floor = stamp[0], None
        whole = self.conn.execute("SELECT messages, purged FROM whole_at").fetchone()
        if whole == tuple(stamp):  # nothing stored or purged since the index held every message
            return 0
        (newest,) = self.conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
        recent = [row[0] for row in replica.execute("SELECT id FROM messages WHERE id > ?", (newest - LATE_WINDOW_IDS,))]
        added, self.floor = self._add(replica, recent, deadline)
        if self.floor is None and (whole is None or stamp[1] != whole[1] or stamp[0] - whole[0] != added):
            # Older messages missing (a new index; other replicas' pushes later than the window) or purged ones left.
            every = [row[0] for row in replica.execute("SELECT id FROM messages")]
            more, self.floor = self._add(replica, every, deadline)
            added += more
            if self.floor is None:
                self._drop_all_but(set(every))
        if self.floor is None:
            self.conn.execute("INSERT OR REPLACE INTO whole_at (id, messages, purged) VALUES (1, ?, ?)", tuple(stamp))
        return added

    def progress(self) -> str:
        """How far a build has got (while `floor` is set)."""
        (indexed,) = self.conn.execute("SELECT count(*) FROM messages").fetchone()
        return f"This server's search index is being built: {indexed:,} of {self.total:,} messages so far, the newest first."

    def building(self) -> Unavailable:
        """The answer to a search of mail older than the index holds yet."""
        error = Unavailable(f"{self.progress()} The mail this search asks for is not indexed yet.",
                            "Retry the search in a moment: each one builds more of it. The other tools work meanwhile.")
        error.headers = {"Retry-After": "1"}
        return error

    def _archive_bodies(self, replica) -> None:
        """Re-index the messages whose bodies retention archived since the last look (and a
        window before it, for other replicas' late pushes)."""
        (seen,) = self.conn.execute("SELECT max(archived_ts) FROM archived_bodies").fetchone()
        since = clock.later(seen, -LATE_WINDOW_SECONDS) if seen else ""
        rows = replica.execute(ARCHIVED_SINCE, (since,)).fetchall()
        done = {row[0] for row in self.conn.execute("SELECT id FROM archived_bodies WHERE archived_ts > ?", (since,))}
        rows = [row for row in rows if row[0] not in done]
        if not rows:
            return
        with self._transaction():
            for message_id, subject, _, archived_ts in rows:  # the body is a note now: found by its subject only
                if self.conn.execute("DELETE FROM messages_fts WHERE rowid = ?", (message_id,)).rowcount:
                    self.conn.execute("INSERT INTO messages_fts (rowid, subject, body_md, project) SELECT ?, ?, '', 'p' || project_id"
                                      " FROM messages WHERE id = ?", (message_id, subject, message_id))
                    self.conn.execute("DELETE FROM message_runs WHERE message_id = ? AND place < ?",
                                      (message_id, search_runs.PLACE_SUBJECT))  # the body's
                self.conn.execute("INSERT OR REPLACE INTO archived_bodies (id, archived_ts) VALUES (?, ?)", (message_id, archived_ts))

    def _drop_all_but(self, ids: set[int]) -> None:
        """Drop indexed messages the replica no longer has (purged)."""
        gone = [row[0] for row in self.conn.execute("SELECT id FROM messages") if row[0] not in ids]
        with self._transaction():
            for start in range(0, len(gone), CHUNK):
                chunk = gone[start : start + CHUNK]
                self.conn.execute(f"DELETE FROM messages_fts WHERE rowid IN ({placeholders(chunk)})", chunk)
                self.conn.execute(f"DELETE FROM message_runs WHERE message_id IN ({placeholders(chunk)})", chunk)
                self.conn.execute(f"DELETE FROM message_recipients WHERE message_id IN ({placeholders(chunk)})", chunk)
                self.conn.execute(f"DELETE FROM messages WHERE id IN ({placeholders(chunk)})", chunk)

    @contextmanager
    def _transaction(self):
        self.conn.execute("BEGIN")
        try:
            yield
        except BaseException:
            rollback(self.conn)
            raise
        self.conn.execute("COMMIT")

    def _add(self, replica, ids: list[int], deadline: float) -> tuple[int, int | None]:
        """Index those of `ids` not indexed yet, newest first, a BATCH per transaction, until
        `deadline`: how many it indexed, and None if that was all of them, else the lowest id
        it reached (every one of `ids` from there up is indexed)."""
        if not ids:
            return 0, None
        # One range scan (a rowid table): a new index's each search went through a million ids 500 at a time.
        known = {row[0] for row in self.conn.execute("SELECT id FROM messages WHERE id >= ?", (min(ids),))}
        missing = sorted((message_id for message_id in ids if message_id not in known), reverse=True)
        done = 0
        while done < len(missing):
            if done and monotonic() > deadline:
                return done, missing[done - 1]
            done += self._add_batch(replica, missing[done : done + BATCH], deadline)
        return done, None

    def _add_batch(self, replica, missing: list[int], deadline: float) -> int:
        """Index `missing` in one transaction, ended early (CHUNK messages past `deadline`: long
        bodies make a batch slow); how many it indexed."""
        with self._transaction():
            for start in range(0, len(missing), CHUNK):
                if start and monotonic() > deadline:
                    return start
                chunk = missing[start : start + CHUNK]
                rows = replica.execute(
                    f"SELECT {MESSAGE_COLUMNS}, subject, CASE WHEN body_archived_ts IS NULL THEN body_md ELSE '' END"
                    f" FROM messages WHERE id IN ({placeholders(chunk)})", chunk  # an archived body: its note is not searched
                ).fetchall()
                self.conn.executemany(f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", [r[:6] for r in rows])
                self.conn.executemany(
                    "INSERT INTO messages_fts (rowid, subject, body_md, project) VALUES (?, ?, ?, ?)",
                    [(r[0], r[6], r[7], project_token(r[1])) for r in rows],
                )
                search_runs.add(self.conn, [(r[0], r[1], r[6], r[7]) for r in rows])
                self.conn.executemany(
                    "INSERT INTO message_recipients (message_id, agent_id, kind) VALUES (?, ?, ?)",
                    replica.execute(
                        f"SELECT message_id, agent_id, kind FROM message_recipients WHERE message_id IN ({placeholders(chunk)})",
                        chunk,
                    ).fetchall(),
                )
        return len(missing)


_indexes = OnePerKey(SearchIndex)  # per replica file; safe to lose (the file stays, and catches up)


def search_index(replica) -> SearchIndex:
    """The index of this replica (a pyturso connection lent by chalicelib/store/replica.py), to catch up."""
    path = _path(replica)
    return _indexes.get(path, path)


def damaged(exc: sqlite3.DatabaseError) -> bool:
    """Whether SQLite's error says the index is damaged: FTS5's tables (SQLITE_CORRUPT_VTAB, an
    extended SQLITE_CORRUPT), the file itself ("database disk image is malformed", "file is
    not a database"), or the file deleted (or moved) under its connection, which then takes no
    write (SQLITE_READONLY_DBMOVED: it was answered as a read-only database, search after search)."""
    code = getattr(exc, "sqlite_errorcode", 0)
    return (code & 0xFF) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or code == sqlite3.SQLITE_READONLY_DBMOVED


def discard_damaged(replica) -> str:
    """Remove the replica's index, found damaged (opening, catching up or searching): the next
    search_index makes the file anew and fills it, as a new process does. Removed, not marked
    outdated: a malformed file takes no write. This process's connection to it is forgotten and
    closed first (none is left on the file: searches use it one at a time, under the replica's
    lock); a stale journal beside the new, empty file is deleted by SQLite. The file's path."""
    path = _path(replica)
    if index := _indexes.forget(path):
        index.conn.close()
    with suppress(FileNotFoundError):
        os.remove(path)
    return path


def _path(replica) -> str:
    return f"{replica.replica.path}.search"


# The embedded database's own index (migrations/0002_search.sql): an external-content FTS5
# table over `messages`, kept by triggers. `doctor` checks and repairs it.


def fts_problem(db: sqlite3.Connection) -> str | None:
    """Why the embedded full-text index disagrees with the messages (None if it agrees). FTS5 says
    so with SQLITE_CORRUPT_VTAB; any other error is the file's (read-only, not a database, corrupt
    itself) or the schema's, which rebuilding the index cannot mend: raised."""
    try:
        db.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorcode", 0) != sqlite3.SQLITE_CORRUPT_VTAB:
            raise
        return f"the full-text index does not match the messages ({exc})"
    return None


def rebuild_fts(db: sqlite3.Connection) -> None:
    """Rebuild the embedded full-text index from the messages (in the caller's transaction)."""
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")


# Keeping the embedded index merged (run by retention, tools/retention.py). Each committed
# write adds a segment, and FTS5's automerge leaves up to ~4 a level, many of them large at
# 1M messages; a search reads every segment, so a merged index searches 15–35% faster
# (bench/README.md, "Merging the search index"). FTS5's ('merge', N) does ~N pages of that
# work per call, continuing where the last call stopped, in a write transaction of its own:
# so the senders wait for at most one step.
MERGE_ABOVE_SEGMENTS = 4  # so few segments cost a search little: left as they are
MERGE_STEP_PAGES = 250  # one step's work: ~30–70 ms of write lock at 1M messages (bench/fts_merge.py)
MERGE_RUN_PAGES = 20_000  # a run's: 80 steps; the 1M bench database (1,548 steps) takes ~20 hourly runs


def fts_segments(db: sqlite3.Connection) -> int:
    """How many segments the embedded index has (its page index has a row per segment's leaf page start)."""
    return db.execute("SELECT count(DISTINCT segid) FROM messages_fts_idx").fetchone()[0]


def merge_fts_step(db: sqlite3.Connection, pages: int = MERGE_STEP_PAGES) -> bool:
    """Merge ~`pages` pages of the embedded index's segments (in the caller's write transaction);
    whether there was work. usermerge 2 merges any level of two segments or more, so repeated
    steps converge towards one segment even while sends add new ones (a negative N, which merges
    across levels, starts over at every new segment and never finishes on a live server)."""
    db.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('usermerge', 2)")
    before = db.total_changes
    db.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('merge', ?)", (pages,))
    return db.total_changes - before >= 2  # FTS5's documented sign that the step merged something


def merge_fts(conn: sqlite3.Connection, budget: int = MERGE_RUN_PAGES) -> int:
    """Merge the embedded index while it has more than MERGE_ABOVE_SEGMENTS segments, a step
    per write transaction, up to `budget` pages; how many steps merged something."""
    steps = 0
    while (steps + 1) * MERGE_STEP_PAGES <= budget:
        with transaction(conn, write=True):
            if fts_segments(conn) <= MERGE_ABOVE_SEGMENTS or not merge_fts_step(conn):
                return steps
        steps += 1
    return steps
