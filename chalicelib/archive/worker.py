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
import os
import subprocess
import sys
import threading
import time

from ..config import Settings
from ..store.db import connection, transaction
from . import outbox
from .gitrepo import GitArchive
from .lock import WorkerLock

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
    archived: dict[str | None, list[int]] = {}  # commit -> its rows
    for row, commit, error in outcomes:
        if error is None:
            archived.setdefault(commit, []).append(row["id"])
    with connection(settings) as conn, transaction(conn, write=True):
        for commit, ids in archived.items():
            outbox.mark_done(conn, ids, commit)
        for row, _, error in outcomes:
            if error is not None:
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


PRUNE_EVERY_SECONDS = 600


def work(settings: Settings, stopping: threading.Event) -> None:
    """Drain every ARCHIVE_POLL_SECONDS until `stopping` is set (`python -m chalicelib archive work`);
    when idle, prune archived rows every 10 minutes. Only while holding the archive
    directory's worker lock (archive/lock.py): another server's worker may hold it, and
    this one then stands by until it is released."""
    with WorkerLock(settings.archive_dir) as lock:
        if not lock.try_acquire():
            log.info("another archive worker (pid %s) holds %s; standing by", lock.holder(), lock.path)
            if not lock.wait(stopping):
                return
        _work(settings, stopping)


def _work(settings: Settings, stopping: threading.Event) -> None:
    pruned_at = float("-inf")
    with GitArchive.local(settings) as archive:
        while not stopping.is_set():
            try:
                done = drain_once(settings, archive)
                if done < settings.archive_batch_size and time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS:
                    prune(settings)
                    pruned_at = time.monotonic()
            except Exception:
                log.exception("archive drain failed")  # the rows stay pending; try again later
                done = 0
            if done < settings.archive_batch_size:
                stopping.wait(settings.archive_poll_seconds)


def prune(settings: Settings) -> int:
    with connection(settings) as conn, transaction(conn, write=True):
        return outbox.prune(conn, settings.archive_keep_done_days)


class LocalWorker:
    """The local server's archive worker: a child process running `archive work`, started
    and stopped by the server's lifespan. A process, not a thread: writing git objects is
    CPU work, and inside the server it would take the GIL from the requests (send_message
    p99 went from 25 to over 100 ms under load)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def start(self) -> None:
        command = [sys.executable, "-m", "chalicelib", "archive", "work"]
        environment = settings_environment(self.settings)
        if self.settings.turso_sync_url:  # a replica file serves one process: the worker gets its own
            path = self.settings.database_path
            environment["DATABASE_URL"] = f"sqlite:///{path.with_name(f'{path.stem}.archive-worker{path.suffix}')}"
        self.process = subprocess.Popen(command, env=environment, preexec_fn=lowest_priority)

    def stop(self) -> None:
        self.process.terminate()  # `archive work` finishes its batch, then exits
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()  # safe: an interrupted batch is applied again next time


def lowest_priority() -> None:
    """Run only on otherwise idle CPU (SCHED_IDLE; nice 19 where that is refused): under load
    the archive falls behind and catches up afterwards, instead of taking CPU from requests."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)


def settings_environment(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these same settings."""
    environment = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            environment.pop(name.upper(), None)
        elif isinstance(value, bool):
            environment[name.upper()] = "true" if value else "false"
        elif isinstance(value, (list, dict)):
            environment[name.upper()] = json.dumps(value)
        else:
            environment[name.upper()] = str(value)
    return environment
