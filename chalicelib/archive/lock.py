"""At most one archive worker per archive directory: an exclusive lock file beside it.

The HTTP server and a stdio server (or two of either) may run on the same database and
archive at once. Each may start a worker; the one that holds the lock writes, the others
stand by and take over when it exits (the outbox is shared, so nothing waits for long and
nothing is lost). flock locks belong to the open file: a process that dies, however it
dies, releases its lock.

The file lives beside the archive (`data/archive.worker.lock` for `data/archive`), not in
it: a checked-out archive (ARCHIVE_WORKTREE) would show it as an untracked file.
"""

import fcntl
import os
import threading
from pathlib import Path


def lock_path(archive_dir: Path) -> Path:
    directory = Path(archive_dir).resolve()
    return directory.with_name(f"{directory.name}.worker.lock")


class WorkerLock:
    """`try_acquire()` without waiting, or `wait(stopping)` until acquired or stopped."""

    def __init__(self, archive_dir: Path) -> None:
        self.path = lock_path(archive_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # for people: who holds it
        self._fd = fd
        return True

    def wait(self, stopping: threading.Event, poll_seconds: float = 1.0) -> bool:
        """Acquire, retrying every poll_seconds; False if `stopping` was set first."""
        while not self.try_acquire():
            if stopping.wait(poll_seconds):
                return False
        return True

    def holder(self) -> int | None:
        """The pid written by the process that holds (or last held) the lock."""
        try:
            return int(self.path.read_text().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the lock
            self._fd = None

    def __enter__(self) -> "WorkerLock":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
