"""Turso replica mode: the database file is a local replica of a Turso primary (docs/turso.md).

One `Replica` per database per process (a Lambda container, a server). It lends its one
pyturso connection to one invocation at a time, pulls before lending when its last pull is
older than REPLICA_MAX_STALENESS_MS, and pushes after every committed write, so a write is
acknowledged only once the primary has it. A push that keeps failing for
REPLICA_SYNC_TIMEOUT_MS refuses the write and throws the replica away: its unpushed change
must not reach the primary later, unannounced. The replica is only a cache of the primary
(everything acknowledged was pushed), so the next invocation bootstraps a fresh one.
"""

import logging
import threading
import time
from pathlib import Path

from ..config import Settings
from ..ops import metrics
from ..errors import Unavailable
from ..ids import new_id
from .per_process import OnePerKey

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 0.05
LAST_RETRY_SECONDS = 1.0
UNREACHABLE_HINT = "The Turso primary (TURSO_SYNC_URL) did not answer; retry when it is back."
LOCKED_HINT = ("Another process has this replica file open: each process (the server, agent-mail stdio, the CLI)"
               " needs a replica file of its own (DATABASE_URL; docs/turso.md).")


class Replica:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = settings.database_path
        self.lock = threading.RLock()  # a pyturso connection serves one thread at a time
        self.conn = None
        self.pulled_at = float("-inf")  # time.monotonic() of the last pull
        self.writer_id = new_id()  # this replica's own counter rows (chalicelib/tools/counts.py)

    def lend(self, max_staleness_ms: float, patience_s: float | None = None):
        """The replica's connection, pulled unless it pulled within max_staleness_ms; `patience_s`:
        how long to wait for it and to retry the primary (else REPLICA_SYNC_TIMEOUT_MS): a
        readiness probe waits a second, not the ten a call may."""
        if not self.lock.acquire(timeout=-1 if patience_s is None else patience_s):
            raise Unavailable(f"The Turso replica stayed busy for {patience_s:g} s.", UNREACHABLE_HINT)
        try:
            if self.conn is None:
                self.conn = self._open()
            self.pull(if_older_than_ms=max_staleness_ms, patience_s=patience_s)
        except BaseException:
            self.lock.release()
            raise
        return self.conn

    def give_back(self) -> None:
        try:
            if self.conn is not None and self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        finally:
            self.lock.release()

    def _open(self):
        import turso  # only replica mode loads pyturso

        self.path.parent.mkdir(parents=True, exist_ok=True)
        bootstrapping = not self.path.exists()
        if bootstrapping:  # pyturso's files of a replica whose main file is gone refuse a bootstrap (a discard cut short)
            self._delete_files()
        started = time.monotonic()  # a download holds what was written before it started, as a pull
        conn = self._connect()
        if not bootstrapping and conn.stats().cdc_operations:
            # Writes committed here that no push confirmed (a process stopped mid-push): never
            # acknowledged, they must not reach the primary with the next push, as a failed push's.
            log.warning("the Turso replica %s holds writes no push confirmed: discarded", self.path)
            conn.close()
            self._delete_files()
            bootstrapping = True
            started = time.monotonic()
            conn = self._connect()
        conn.isolation_level = None  # explicit BEGIN/COMMIT, as on the sqlite3 connections
        conn.row_factory = turso.Row
        conn.replica = self  # transaction() finds its replica through the connection
        if bootstrapping:  # a fresh copy of the primary is as good as a pull; an old file is not
            self.pulled_at = started
        return conn

    def _connect(self):
        import turso.sync

        return self._retrying("bootstrap", lambda: turso.sync.connect(
            str(self.path), self.settings.turso_sync_url, auth_token=self.settings.turso_auth_token or None))

    def pull(self, if_older_than_ms: float = 0, patience_s: float | None = None) -> None:
        if (time.monotonic() - self.pulled_at) * 1000 < if_older_than_ms:
            return
        started = time.monotonic()
        self._retrying("pull", self.conn.pull, patience_s)
        self.pulled_at = started

    def push(self) -> None:
        """Push the committed writes; Unavailable (and a discarded replica) if the primary
        cannot take them within REPLICA_SYNC_TIMEOUT_MS."""
        try:
            self._retrying("push", self.conn.push)
        except Unavailable as exc:
            self.discard()
            raise Unavailable(
                "The Turso primary did not confirm the write, so it was not acknowledged"
                " (if the primary did store it, it shows after the next pull).",
                exc.hint,
            ) from exc

    def _retrying(self, what: str, operation, patience_s: float | None = None):
        started = time.monotonic()
        deadline = started + (self.settings.replica_sync_timeout_ms / 1000 if patience_s is None else patience_s)
        wait = FIRST_RETRY_SECONDS
        while True:
            try:
                result = operation()
                metrics.replica_seconds.observe(time.monotonic() - started, what)
                return result
            except Exception as exc:
                if not is_network_error(exc) or time.monotonic() + wait > deadline:
                    log.warning("replica %s failed: %s", what, exc)
                    metrics.replica_failures.inc(what)
                    hint = LOCKED_HINT if "locked" in str(exc).lower() else UNREACHABLE_HINT
                    raise Unavailable(f"Turso replica {what} failed: {exc}", hint) from exc
                log.info("replica %s failed (%s); retrying in %.2fs", what, exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, LAST_RETRY_SECONDS)

    def discard(self) -> None:
        """Close and delete the local replica; the next lend bootstraps a fresh one."""
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                log.debug("closing a discarded replica failed", exc_info=True)
            self.conn = None
        self._delete_files()
        log.warning("discarded the Turso replica %s", self.path)

    def _delete_files(self) -> None:
        for path in replica_files(self.path):
            path.unlink(missing_ok=True)


def is_network_error(exc: Exception) -> bool:
    """pyturso reports an unreachable primary as a DatabaseError naming the cause."""
    text = str(exc).lower()
    return any(word in text for word in ("network", "connection", "timed out", "http", "502", "503", "504"))


def replica_files(path: Path) -> list[Path]:
    """The replica file and pyturso's companions (-wal, -changes, -info, ...)."""
    return [path, *path.parent.glob(path.name + "-*")]


_replicas = OnePerKey(Replica)  # per database; safe to lose (a fresh one bootstraps)


def replica(settings: Settings) -> Replica:
    return _replicas.get(settings.database_url, settings)
