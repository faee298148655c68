"""Upkeep a write leaves to the end of its transaction, done once for everything deferred.

What the write path keeps besides a message's own rows (message counts, thread summaries, its
entry in the full-text index) costs the writer a few statements per message. The writer group-commits up to MAX_BATCH writes in one transaction
(chalicelib/invoke.py), so a write defers its upkeep (`later`) and the transaction applies it
for the whole batch just before COMMIT: two count rows and one statement for fifty sends
between the same agents, where each send used to read and write its own (and FTS5, which
flushes its pending index at every SAVEPOINT, writes one segment, not fifty). Same transaction:
nobody ever sees a message without its counts. A write whose savepoint rolls back takes its
deferred upkeep with it (`savepoint`).

Nothing in a write transaction reads an aggregate before COMMIT (whois, get_project and
list_threads are read tools); `settled` makes that loud should it ever change. Outside a
write transaction (restore, migrations' helpers, tests) `later` applies at once.
"""

import sqlite3
from contextvars import ContextVar
from typing import Callable

FLUSH_AT = 2000  # outside a savepoint, a long transaction (a restore) applies its upkeep every so many items

Apply = Callable[[sqlite3.Connection, list], None]


class Upkeep:
    """What one write transaction deferred: (apply, item) in order, and how many savepoints are open."""

    __slots__ = ("conn", "items", "depth")

    def __init__(self, conn) -> None:
        self.conn, self.items, self.depth = conn, [], 0

    def apply(self) -> None:
        """Each function once, with its items in the order they came."""
        by_function: dict[Apply, list] = {}
        for function, item in self.items:
            by_function.setdefault(function, []).append(item)
        self.items = []
        for function, items in by_function.items():
            function(self.conn, items)


_current: ContextVar[Upkeep | None] = ContextVar("upkeep", default=None)


def later(db, function: Apply, item) -> None:
    """`function(db, [item, ...])` at the end of db's write transaction, with every other item
    deferred to it; at once when db is in no write transaction."""
    upkeep = _current.get()
    if upkeep is None or upkeep.conn is not db:
        function(db, [item])
        return
    upkeep.items.append((function, item))
    if upkeep.depth == 0 and len(upkeep.items) >= FLUSH_AT:
        upkeep.apply()


def settled(db) -> None:
    """Before reading an aggregate: nothing deferred may be pending on this connection."""
    upkeep = _current.get()
    if upkeep is not None and upkeep.conn is db and upkeep.items:
        raise RuntimeError("an aggregate was read in a write transaction before its deferred upkeep was applied")


def begin(conn):
    """A write transaction began on conn: its upkeep is collected from now (a token for `end`)."""
    return _current.set(Upkeep(conn))


def apply(conn) -> None:
    """The transaction is about to commit: its deferred upkeep, applied."""
    upkeep = _current.get()
    if upkeep is not None and upkeep.conn is conn and upkeep.items:
        upkeep.apply()


def end(token) -> None:
    _current.reset(token)


class savepoint:
    """`with savepoint(conn, name):` a nested write that, on an exception (re-raised), rolls
    back alone, with the upkeep it deferred."""

    __slots__ = ("conn", "name", "upkeep", "mark")

    def __init__(self, conn, name: str) -> None:
        self.conn, self.name = conn, name

    def __enter__(self):
        self.conn.execute(f"SAVEPOINT {self.name}")
        upkeep = _current.get()
        self.upkeep = upkeep if upkeep is not None and upkeep.conn is self.conn else None
        if self.upkeep is not None:
            self.mark = len(self.upkeep.items)
            self.upkeep.depth += 1
        return self.conn

    def __exit__(self, kind, exc, tb) -> None:
        if kind is not None:
            if not self.conn.in_transaction:
                return  # SQLite ended the whole transaction (a full disk may): no savepoint is left to undo
            self.conn.execute(f"ROLLBACK TO {self.name}")
            if self.upkeep is not None:
                del self.upkeep.items[self.mark:]
        self.conn.execute(f"RELEASE {self.name}")
        if self.upkeep is not None:
            self.upkeep.depth -= 1
