"""Local mode: drain the outbox into the archive repository.

`drain_once` takes up to a batch of pending rows, applies them (one commit per project),
and marks them done only once the commit exists. Killed at any point, the next drain
applies the same rows again: the repository already holding them makes that a no-op, so
nothing is lost and nothing is written twice. A batch that fails is retried entry by
entry, so one bad entry cannot hold the others back; its failure is recorded on its row,
which is retried later (ARCHIVE_RETRY_SECONDS, doubling) and alone, off the fast path.
"""

import json
import logging
import threading

from ..config import Settings
from ..db import connection, transaction
from . import outbox
from .gitrepo import GitArchive

log = logging.getLogger(__name__)


def drain_once(settings: Settings, archive: GitArchive, limit: int | None = None) -> int:
    """Archive up to `limit` pending rows; the number now done (failed ones stay pending)."""
    with connection(settings) as conn:
        rows = outbox.take(conn, limit or settings.archive_batch_size)
    if not rows:
        return 0
    fresh = [row for row in rows if not row["attempts"]]
    outcomes = [apply_one(archive, row) for row in rows if row["attempts"]]  # failed before: alone
    try:
        commits = archive.apply([json.loads(row["payload"]) for row in fresh])
        outcomes += [(row, commits.get(row["project"]) or head_id(archive), None) for row in fresh]
    except Exception:
        log.warning("archive batch of %d failed; retrying entry by entry", len(fresh), exc_info=True)
        outcomes += [apply_one(archive, row) for row in fresh]
    with connection(settings) as conn, transaction(conn, write=True):
        for row, commit, error in outcomes:
            if error is None:
                outbox.mark_done(conn, [row["id"]], commit)
            else:
                outbox.mark_failed(conn, [row["id"]], error, settings.archive_retry_seconds)
    return sum(1 for _, _, error in outcomes if error is None)


def apply_one(archive: GitArchive, row) -> tuple:
    try:
        commit = archive.apply([json.loads(row["payload"])]).get(row["project"])
        return row, commit or head_id(archive), None
    except Exception as exc:
        return row, None, f"{type(exc).__name__}: {exc}"


def head_id(archive: GitArchive) -> str | None:
    head = archive.head()
    return head.decode() if head else None


def drain(settings: Settings, archive: GitArchive, on_batch=None) -> int:
    """Drain while batches make progress (only failing rows left: a later run retries them);
    the number of rows archived."""
    total = 0
    while done := drain_once(settings, archive):
        total += done
        if on_batch:
            on_batch(done)
    return total


class LocalWorker:
    """A thread that drains the outbox every ARCHIVE_POLL_SECONDS, started and stopped by
    the server's lifespan."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name="archive-worker", daemon=True)

    def start(self) -> None:
        self.archive = GitArchive.local(self.settings)
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=30)
        self.archive.close()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                done = drain_once(self.settings, self.archive)
            except Exception:
                log.exception("archive drain failed")  # the rows stay pending; try again later
                done = 0
            if done < self.settings.archive_batch_size:
                self.stopping.wait(self.settings.archive_poll_seconds)
