"""Wake-ups for waiting calls (wait_for_mail): who got mail, told right after the COMMIT.

A write that delivers mail names its recipients (`delivered`); once its transaction
committed, `committed` wakes the waiters of those agents in this process. Writes of other
processes on the same file are seen by ONE watcher thread per database, which polls
`PRAGMA data_version` (a counter another connection's commit bumps; reading it costs
microseconds) every WATCH_SECONDS while anyone waits, and then wakes the waiters of the
agents that got mail recently. On a Turso replica other hosts' writes show only after a
pull, so waiters there re-check about once a second instead (invoke.py).

Waking only ever means "check again": a spurious wake-up costs one indexed query, a missed
one at most a timeout, never a message (the check itself reads the database).
"""

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Hashable, Iterable

from ..config import Settings
from ..errors import TooManyRequests, Unavailable
from ..ids import id_at

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.05
RECENT_SECONDS = 10  # the watcher wakes the recipients of messages made this recently

_pending = threading.local()  # recipients delivered by this thread's open transaction


def delivered(agent_ids: Iterable[int]) -> None:
    """Note recipients who get mail when the current transaction commits."""
    if not hasattr(_pending, "ids"):
        _pending.ids = set()
    _pending.ids.update(agent_ids)


def committed(database_url: str) -> None:
    """The current transaction committed: wake the waiters of the recipients it delivered to."""
    ids = getattr(_pending, "ids", None)
    if ids:
        _pending.ids = set()
        board = _boards.get(database_url)
        if board is not None:
            board.wake(ids)


def rolled_back() -> None:
    _pending.ids = set()


class Waiter:
    """One waiting call: an event set by a wake-up, from any thread."""

    def __init__(self, board: "Board", asynchronous: bool, caller: str | None) -> None:
        self.board = board
        self.caller = caller
        self.key: Hashable | None = None
        self.loop = asyncio.get_running_loop() if asynchronous else None
        self.event = asyncio.Event() if asynchronous else threading.Event()

    def watch(self, key: Hashable) -> None:
        self.board.watch(self, key)

    def arm(self) -> None:
        """Forget earlier wake-ups: called before each check, so a commit after it still wakes."""
        self.event.clear()

    def wake(self) -> None:
        if self.loop is None:
            self.event.set()
        else:
            self.loop.call_soon_threadsafe(self.event.set)

    async def sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.event.wait(), seconds)
        except TimeoutError:
            pass

    def sleep_sync(self, seconds: float) -> None:
        self.event.wait(seconds)

    def __enter__(self) -> "Waiter":
        return self

    def __exit__(self, *exc_info) -> None:
        self.board.leave(self)


class Board:
    """The waiters of one database in this process, by key (an agent id); at most `limit`, and
    at most `per_caller` of one caller (a credential): one reader token's 1,000 waits left no
    place for anyone else's."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limit = settings.max_mail_waiters
        self.per_caller = settings.max_mail_waiters_per_caller
        self.lock = threading.Lock()
        self.waiters: dict[Hashable, set[Waiter]] = {}
        self.count = 0
        self.by_caller: dict[str, int] = {}
        self.watcher: threading.Thread | None = None

    def join(self, asynchronous: bool, caller: str | None = None) -> Waiter:
        """A place to wait, for `caller` (None: not counted apart, as the operator in process or
        everyone on an unauthenticated loopback server, who are one caller)."""
        with self.lock:
            if self.count >= self.limit:
                raise Unavailable(
                    f"Too many calls are waiting for mail on this server ({self.limit}).",
                    "Retry in a few seconds, or read fetch_inbox instead of waiting.",
                )
            if caller is not None and self.by_caller.get(caller, 0) >= self.per_caller:
                raise TooManyRequests(
                    f"This credential has {self.per_caller} calls waiting for mail already (MAX_MAIL_WAITERS_PER_CALLER).",
                    "Wait once per agent, each with the previous answer's cursor; give each client a credential of its own.",
                    retry_after=5,
                )
            self.count += 1
            if caller is not None:
                self.by_caller[caller] = self.by_caller.get(caller, 0) + 1
            waiter = Waiter(self, asynchronous, caller)
            if not self.settings.turso_sync_url and (self.watcher is None or not self.watcher.is_alive()):
                self.watcher = threading.Thread(target=self._watch, name="mail-watcher", daemon=True)
                self.watcher.start()
        return waiter

    def watch(self, waiter: Waiter, key: Hashable) -> None:
        with self.lock:
            self._unwatch(waiter)
            waiter.key = key
            self.waiters.setdefault(key, set()).add(waiter)

    def leave(self, waiter: Waiter) -> None:
        with self.lock:
            self._unwatch(waiter)
            self.count -= 1
            if waiter.caller is not None:
                left = self.by_caller.pop(waiter.caller) - 1
                if left:
                    self.by_caller[waiter.caller] = left

    def _unwatch(self, waiter: Waiter) -> None:
        if waiter.key is not None:
            others = self.waiters.get(waiter.key, set())
            others.discard(waiter)
            if not others:
                self.waiters.pop(waiter.key, None)

    def wake(self, keys: Iterable[Hashable]) -> None:
        with self.lock:
            woken = [waiter for key in keys for waiter in self.waiters.get(key, ())]
        for waiter in woken:
            waiter.wake()

    def _watch(self) -> None:
        """The one watcher of this database: runs while anyone waits, then ends."""
        conn = sqlite3.connect(self.settings.database_path, timeout=1, check_same_thread=False)
        try:
            version = conn.execute("PRAGMA data_version").fetchone()[0]
            while True:
                time.sleep(WATCH_SECONDS)
                with self.lock:
                    if self.count == 0:
                        self.watcher = None
                        return
                    keys = set(self.waiters)
                current = conn.execute("PRAGMA data_version").fetchone()[0]
                if current == version or not keys:
                    version = current
                    continue
                version = current
                since = id_at(time.time() - RECENT_SECONDS)
                got_mail = {row[0] for row in conn.execute(
                    "SELECT DISTINCT agent_id FROM message_recipients WHERE message_id >= ?", (since,))}
                self.wake(keys & got_mail)
        except Exception:
            log.exception("the mail watcher stopped; waiters fall back to their timeout")
            with self.lock:
                self.watcher = None
        finally:
            conn.close()


_boards: dict[str, Board] = {}
_boards_lock = threading.Lock()
closing = threading.Event()  # the server is stopping: waits answer at once (with their cursors), new ones after one check


def close_all() -> None:
    """End every wait of this process now (a stopping server's): each answers what it has, its
    cursor losing nothing, instead of holding the shutdown up to its timeout (25 s)."""
    closing.set()
    with _boards_lock:
        boards = list(_boards.values())
    for each in boards:
        with each.lock:
            waiting = list(each.waiters)
        each.wake(waiting)


def board(settings: Settings) -> Board:
    with _boards_lock:
        if settings.database_url not in _boards:
            _boards[settings.database_url] = Board(settings)
        return _boards[settings.database_url]
