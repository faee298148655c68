"""Writes the database refused (a full disk, a read-only file, a disk error): one error line a
while for them, not one a call (a flood of lines could fill the disk that is full), and the
latest, for GET /ready (a full disk still takes BEGIN IMMEDIATE, so its write probe passes).
Per process, safe to lose. Imports nothing of the project: invoke records, readiness reads."""

import logging
import threading
import time

log = logging.getLogger("chalicelib.invoke")

LOG_SECONDS = 10.0  # at most one error line this often
READY_SECONDS = 60.0  # /ready answers 503 this long after the latest refusal


class Refusals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.logged_at = float("-inf")
        self.unlogged = 0
        self.latest_at = float("-inf")
        self.latest = ""
        self.recent = 0  # refused since the last quiet READY_SECONDS

    def note(self, exc: BaseException, why: str) -> None:
        """One refused call; `why` in words ("its disk is full")."""
        now = time.monotonic()
        with self.lock:
            self.recent = (self.recent if now - self.latest_at < READY_SECONDS else 0) + 1
            self.latest_at, self.latest = now, why
            self.unlogged += 1
            if now - self.logged_at < LOG_SECONDS:
                return
            count, self.unlogged, self.logged_at = self.unlogged, 0, now
        log.error("the server cannot write its database (%s): %d call(s) refused since the last such line; writes"
                  " fail until an operator mends it", exc, count)

    def lately(self) -> str | None:
        """What /ready reports while refusals are recent (None once READY_SECONDS passed without one)."""
        with self.lock:
            ago = time.monotonic() - self.latest_at
            if ago >= READY_SECONDS:
                return None
            return (f"the database refused {self.recent} write(s), the latest {ago:.0f} s ago: {self.latest}"
                    " (python -m chalicelib doctor says what to mend)")


_refused = Refusals()


def note(exc: BaseException, why: str) -> None:
    _refused.note(exc, why)


def lately() -> str | None:
    return _refused.lately()
