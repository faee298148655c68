"""Full-text search in replica mode: an FTS5 index in a sidecar stdlib-sqlite file.

Turso has no FTS5, so each process keeps `<replica>.search` beside its replica, with the same
FTS table name, tokenizer and bm25 columns as migrations/0002_search.sql, and `messages` and
`message_recipients` tables holding the columns search filters on: the search SQL in
tools/search.py then runs unchanged on either. (Messages and their recipients are written
together and never changed, so the copy stays right.) An index file of an older layout
(user_version) is dropped and rebuilt: it is only a cache. Before each search the index catches up with the replica. Messages are never edited
or deleted, so catching up is indexing the ids it lacks: the recent ones (ids are
time-ordered; a window covers messages that other replicas pushed late), and, if the counts
still differ, every missing id.
"""

import sqlite3

from .db import placeholders
from ..ids import RANDOM_BITS
from .per_process import OnePerKey

VERSION = 2
SCHEMA = f"""
DROP TABLE IF EXISTS messages_fts;
DROP TABLE IF EXISTS messages;
DROP TABLE IF EXISTS message_recipients;
CREATE VIRTUAL TABLE messages_fts USING fts5 (subject, body_md, tokenize = 'porter unicode61');
CREATE TABLE messages (
    id INTEGER PRIMARY KEY, project_id INTEGER NOT NULL, sender_id INTEGER NOT NULL, thread_id TEXT NOT NULL,
    importance TEXT NOT NULL, created_ts TEXT NOT NULL
);
CREATE TABLE message_recipients (message_id INTEGER NOT NULL, agent_id INTEGER NOT NULL, kind TEXT NOT NULL);
CREATE INDEX recipients_by_message ON message_recipients (message_id, agent_id);
PRAGMA user_version = {VERSION};
"""
MESSAGE_COLUMNS = "id, project_id, sender_id, thread_id, importance, created_ts"
LATE_WINDOW_IDS = (15 * 60 * 1000) << RANDOM_BITS  # ids made in the 15 minutes before the newest indexed
CHUNK = 500


class SearchIndex:
    def __init__(self, path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        if self.conn.execute("PRAGMA user_version").fetchone()[0] != VERSION:
            self.conn.executescript(SCHEMA)

    def catch_up(self, replica) -> int:
        """Index the replica's messages this index lacks; how many were added."""
        total, newest = self.conn.execute("SELECT count(*), coalesce(max(id), 0) FROM messages").fetchone()
        if replica.execute("SELECT count(*) FROM messages").fetchone()[0] == total:
            return 0
        recent = [row[0] for row in replica.execute("SELECT id FROM messages WHERE id > ?", (newest - LATE_WINDOW_IDS,))]
        added = self._add(replica, recent)
        if replica.execute("SELECT count(*) FROM messages").fetchone()[0] != total + added:
            added += self._add(replica, [row[0] for row in replica.execute("SELECT id FROM messages")])
        return added

    def _add(self, replica, ids: list[int]) -> int:
        """Index those of `ids` not indexed yet."""
        known = set()
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            known.update(row[0] for row in self.conn.execute(f"SELECT id FROM messages WHERE id IN ({placeholders(chunk)})", chunk))
        missing = [message_id for message_id in ids if message_id not in known]
        self.conn.execute("BEGIN")
        try:
            for start in range(0, len(missing), CHUNK):
                chunk = missing[start : start + CHUNK]
                rows = replica.execute(
                    f"SELECT {MESSAGE_COLUMNS}, subject, body_md FROM messages WHERE id IN ({placeholders(chunk)})", chunk
                ).fetchall()
                self.conn.executemany(f"INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", [r[:6] for r in rows])
                self.conn.executemany(
                    "INSERT INTO messages_fts (rowid, subject, body_md) VALUES (?, ?, ?)", [(r[0], r[6], r[7]) for r in rows]
                )
                self.conn.executemany(
                    "INSERT INTO message_recipients (message_id, agent_id, kind) VALUES (?, ?, ?)",
                    replica.execute(
                        f"SELECT message_id, agent_id, kind FROM message_recipients WHERE message_id IN ({placeholders(chunk)})",
                        chunk,
                    ).fetchall(),
                )
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return len(missing)


_indexes = OnePerKey(SearchIndex)  # per replica file; safe to lose (the file stays, and catches up)


def search_index(replica) -> SearchIndex:
    """The caught-up index of this replica (a pyturso connection lent by chalicelib/store/replica.py)."""
    path = f"{replica.replica.path}.search"
    index = _indexes.get(path, path)
    index.catch_up(replica)
    return index
