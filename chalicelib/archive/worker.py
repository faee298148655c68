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
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from pathlib import Path
from typing import TYPE_CHECKING

from .. import clock
from ..config import Settings
from ..ops.supervisor import RESTARTS_ENV, Supervised, exclusive, parent_gone
from ..store import heartbeats
from ..store.db import connection, transaction
from . import outbox, render

if TYPE_CHECKING:  # imported where git is written (_work): the server only starts the worker's process
    from .gitrepo import GitArchive

log = logging.getLogger(__name__)


def here(function, *args):
    """Run git's work on the calling thread (drain_once's default; the worker passes its idle thread)."""
    return function(*args)


def drain_once(settings: Settings, archive: "GitArchive", limit: int | None = None, git=here) -> int:
    """Archive up to `limit` pending rows (and BATCH_MAX_BYTES); the number now done (failed ones stay pending).
    The commits are made by `git(function, *args)`; the database is written on this thread."""
    with connection(settings) as conn:
        rows = outbox.take(conn, limit or settings.archive_batch_size, render.BATCH_MAX_BYTES)
    if not rows:
        return 0
    fresh = [row for row in rows if not row["attempts"]]
    outcomes = [git(apply_one, archive, row) for row in rows if row["attempts"]]  # failed before: alone
    try:
        commits = git(archive.apply, [json.loads(row["payload"]) for row in fresh])
        outcomes += [(row, commits.get(row["project"]) or head_id(archive), None) for row in fresh]
    except Exception:
        log.warning("archive batch of %d failed; retrying entry by entry", len(fresh), exc_info=True)
        outcomes += [git(apply_one, archive, row) for row in fresh]
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


def apply_one(archive: "GitArchive", row) -> tuple:
    try:
        commit = archive.apply([json.loads(row["payload"])]).get(row["project"])
        return row, commit or head_id(archive), None
    except Exception as exc:
        return row, None, f"{type(exc).__name__}: {exc}"


def head_id(archive: "GitArchive") -> str | None:
    head = archive.head()
    return head.decode() if head else None


def drain(settings: Settings, archive: "GitArchive", on_batch=None) -> int:
    """Drain while batches make progress (only failing rows left: a later run retries them);
    the number of rows archived."""
    total = 0
    while done := drain_once(settings, archive):
        total += done
        archive.maintain_if_due()
        if on_batch:
            on_batch(done)
    archive.maintain_if_due()
    return total


PRUNE_EVERY_SECONDS = 600


def lock_path(settings: Settings) -> Path:
    return settings.archive_dir.resolve().with_name(settings.archive_dir.name + ".lock")


def work(settings: Settings, stopping: threading.Event, on_idle=None) -> None:
    """Drain every ARCHIVE_POLL_SECONDS until `stopping` is set (`python -m chalicelib archive work`),
    as the only worker of this archive directory: another one waits for the lock and takes
    over when this one dies. Beats every ARCHIVE_HEARTBEAT_SECONDS; repacks the archive's small
    packs every MAINTAIN_EVERY commits (gitrepo.py); when idle, prunes archived rows every 10 minutes and calls `on_idle()` (the CLI passes retention's, which
    runs at most every RETENTION_EVERY_SECONDS). Stops by itself if the process that started it died."""
    with exclusive(lock_path(settings), stopping, on_wait=lambda: log.info("another archive worker holds %s; waiting", lock_path(settings))) as mine:
        if mine:
            log.info("archive worker %d running on %s", os.getpid(), settings.archive_dir)
            _work(settings, stopping, on_idle)


def _work(settings: Settings, stopping: threading.Event, on_idle) -> None:
    from .gitrepo import GitArchive  # dulwich: only here, in the process that writes (LocalWorker's child)
    from .migrate import migrate_layout

    pruned_at = float("-inf")
    started, restarts, error = clock.now(), int(os.environ.get(RESTARTS_ENV, 0)), None

    def beat() -> float:
        with connection(settings) as conn, transaction(conn, write=True):
            heartbeats.beat(conn, heartbeats.ARCHIVE_WORKER, os.getpid(), started, restarts, error)
        return time.monotonic()

    with GitArchive.local(settings) as archive, IdleCPU() as idle_cpu:
        git = lambda function, *args: idle_cpu.run(stopping, function, *args)  # noqa: E731
        # A beat before taking over and the layout check: they run on idle CPU, which a busy
        # machine may not have for a while, and the worker that just took the lock should show at once.
        beat_at = beat()
        take_over(archive, git)
        warn_if_beside_empty_database(settings, archive)
        git(migrate_layout, archive)
        while not stopping.is_set() and not parent_gone():
            try:
                if time.monotonic() - beat_at >= settings.archive_heartbeat_seconds:
                    beat_at = beat()
                done = drain_once(settings, archive, git=git)
                idle = done < settings.archive_batch_size
                if done:  # maintenance is due after commits only: an idle worker leaves that thread be
                    git(archive.maintain_if_due)
                if idle and time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS:
                    prune(settings)
                    pruned_at = time.monotonic()
                if on_idle and idle:
                    on_idle()
                error = None
            except Exception as exc:
                log.exception("archive drain failed")  # the rows stay pending; try again later
                error, done = f"{type(exc).__name__}: {exc}"[:500], 0
            if done < settings.archive_batch_size:
                stopping.wait(settings.archive_poll_seconds)


def take_over(archive: "GitArchive", git=here) -> None:
    """What a writer of the archive does first, holding its lock: put right what a writer killed
    mid-commit left, its git locks (git refuses to move the branch while they exist), then, with
    a working tree, the files it had still to write (GitArchive.sync_worktree)."""
    if stale := git(archive.clear_stale_locks):
        log.warning("removed stale git locks: %s", ", ".join(map(str, stale)))
    if git(archive.sync_worktree):
        log.warning("the working tree of %s was behind its branch (a writer killed mid-commit): checked out again", archive.path)


@contextmanager
def writing(settings: Settings, create: bool = True) -> Iterator["GitArchive | None"]:
    """ARCHIVE_DIR's repository for a command that writes it (archive drain, rebuild, migrate,
    doctor --repair), held as the worker holds it: under the archive's lock, taken over
    (take_over). None while another writer holds the lock (a running server's worker): two
    writers of one repository fail each other's commits. create=False: NoArchive rather than a
    new, empty one (a command that only changes an archive: migrate)."""
    from .gitrepo import GitArchive

    if not create:  # refused before the lock, which would leave ARCHIVE_DIR.lock (and its folder) beside no archive;
        GitArchive.to_read(settings).close()  # read only: the check under the lock below still counts
    with exclusive(lock_path(settings), None) as mine:
        if not mine:
            yield None
            return
        with GitArchive.local(settings, create=create) as archive:
            take_over(archive)
            yield archive


def warn_if_beside_empty_database(settings: Settings, archive: "GitArchive") -> None:
    """Said at start, not refused: a first run beside an archive that holds no project (the usual
    first run) says nothing; `doctor` says the same while the database is empty."""
    from .rebuild import empty_database_advice, projects_beside_empty_database

    with connection(settings) as conn, transaction(conn, write=False):
        folders = projects_beside_empty_database(conn, archive)
    if folders:
        wrong, fixes = empty_database_advice(settings, folders)
        log.warning("%s: what this database archives will be committed into that archive, a second history beside"
                    " theirs. %s", wrong, fixes)


def prune(settings: Settings) -> int:
    with connection(settings) as conn, transaction(conn, write=True):
        return outbox.prune(conn, settings.archive_keep_done_days)


class LocalWorker:
    """The local server's archive worker: a supervised child process running `archive work`
    (restarted when it dies, ended with the server, even by kill -9; chalicelib/ops/supervisor.py).
    A process, not a thread: writing git objects is CPU work, and inside the server it would
    take the GIL from the requests (send_message p99 went from 25 to over 100 ms under load).
    Its git work runs on idle CPU only (`lowest_priority`, one thread); its database writes do
    not, since a transaction starved of CPU would hold SQLite's write lock from the server."""

    def __init__(self, settings: Settings) -> None:
        environment = settings_environment(settings)
        if settings.turso_sync_url:  # a replica file serves one process: the worker gets its own
            path = settings.database_path
            environment["DATABASE_URL"] = f"sqlite:///{path.with_name(f'{path.stem}.archive-worker{path.suffix}')}"
        self.settings = settings
        self.started_ts = clock.now()
        self.child = Supervised("archive worker", [sys.executable, "-m", "chalicelib", "archive", "work"], environment,
                                on_exit=self.record_exit)

    def start(self) -> None:
        self.child.start()

    @property
    def up(self) -> bool:
        """Running, and not dying soon after every restart (Supervised.up): what /ready reports."""
        return self.child.up

    def record_exit(self, status: int, restarts: int) -> None:
        """For doctor (heartbeats.ARCHIVE_EXITS), which cannot ask this process."""
        with connection(self.settings) as conn, transaction(conn, write=True):
            heartbeats.beat(conn, heartbeats.ARCHIVE_EXITS, os.getpid(), self.started_ts, restarts, f"exited with status {status}")

    def stop(self) -> None:
        self.child.stop()


class IdleCPU:
    """One thread for git's work, on otherwise idle CPU (lowest_priority). A worker that is
    stopping lifts it to the normal policy, so the git work under way ends at once instead of
    when the CPU next goes idle (under a full load, much later: the server killed, its worker
    lingered on)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, initializer=self._start)
        self.thread_id: int | None = None

    def _start(self) -> None:
        self.thread_id = threading.get_native_id()
        lowest_priority()

    def run(self, stopping: threading.Event, function, *args):
        """function(*args) on that thread; its result."""
        future = self.pool.submit(function, *args)
        while True:
            try:
                return future.result(timeout=0.25)
            except TimeoutError:
                if stopping.is_set() or parent_gone():
                    self.lift()

    def lift(self) -> None:
        try:
            os.sched_setscheduler(self.thread_id, os.SCHED_OTHER, os.sched_param(0))
        except (AttributeError, OSError):  # not allowed here (RLIMIT_NICE): it ends when the CPU allows
            pass

    def __enter__(self) -> "IdleCPU":
        return self

    def __exit__(self, *exc_info) -> None:
        self.pool.shutdown()


def lowest_priority() -> None:
    """The calling thread runs only on otherwise idle CPU (SCHED_IDLE; nice 19 where that is
    refused; Linux sets both per thread): under load the archive falls behind and catches up
    afterwards, instead of taking CPU from requests."""
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
