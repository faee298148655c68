"""Background child processes kept alive, and never outliving their parent.

`Supervised` starts a command, restarts it with backoff whenever it dies, and stops it with
the server. The child is bound to its parent: on Linux the kernel kills it when the parent
dies (PR_SET_PDEATHSIG, even after kill -9), and `parent_gone()` lets a child check for
itself elsewhere. `exclusive(path)` is the lock that keeps one worker per directory:
held by the kernel, so it is released the moment its holder dies, and a waiting process
takes over.
"""

import ctypes
import fcntl
import logging
import os
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PARENT_ENV = "AGENT_MAIL_PARENT_PID"
RESTARTS_ENV = "AGENT_MAIL_RESTARTS"


def bind_to_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn: the kernel kills the child when its parent dies (Linux), and it exits at
    once if the parent died before that was set up. SIGKILL, not SIGTERM: a SIGTERM handler
    is Python, which a loaded machine can delay (the archive worker's git thread runs on idle
    CPU only and holds the GIL while it runs; a killed server's worker once outlived it by
    more than 10 s under the test suite's load). An orphan has nobody to report to; what it
    was archiving stays pending for the next worker, as after any kill."""

    def preexec() -> None:
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (AttributeError, OSError):
            pass  # not Linux: the child polls parent_gone()
        if os.getppid() != parent_pid:
            os._exit(0)

    return preexec


def parent_gone() -> bool:
    """In a supervised child: has the process that started it died?"""
    parent = os.environ.get(PARENT_ENV)
    return bool(parent) and os.getppid() != int(parent)


STEADY_SECONDS = 60.0  # a restarted child that ran this long is well again: backoff back to 1 s, and `up`


class Supervised:
    """A child process restarted with backoff (1 s doubling to `max_backoff`; back to 1 s
    after it ran for STEADY_SECONDS) until stop(). `on_exit(status, restarts)` is told of each
    death (restarts: how many so far, this one's included)."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], preexec: Callable[[], None] | None = None,
                 max_backoff: float = 60.0, on_exit: Callable[[int, int], None] | None = None) -> None:
        self.name = name
        self.command = command
        self.env = env
        self.preexec = preexec
        self.max_backoff = max_backoff
        self.on_exit = on_exit
        self.process: subprocess.Popen | None = None
        self.started = 0.0  # time.monotonic() of the last spawn
        self.restarts = 0
        self.unsteady = False  # its last run ended before STEADY_SECONDS: it may be dying at each start
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._spawn()
        self._thread = threading.Thread(target=self._watch, name=f"supervise-{self.name}", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def up(self) -> bool:
        """Alive, and, if its last run ended early, restarted at least STEADY_SECONDS ago: a child
        that keeps dying soon after each start is down, not up for the moments it runs; one that
        ran a while and died once (killed) is up again as soon as it is restarted."""
        return self.alive and (not self.unsteady or time.monotonic() - self.started >= STEADY_SECONDS)

    def _spawn(self) -> None:
        parent = os.getpid()
        env = {**self.env, PARENT_ENV: str(parent), RESTARTS_ENV: str(self.restarts)}
        own = self.preexec

        def preexec() -> None:
            if own:
                own()
            bind_to_parent(parent)()

        self.process = subprocess.Popen(self.command, env=env, preexec_fn=preexec)
        self.started = time.monotonic()

    def _watch(self) -> None:
        # The child's PDEATHSIG follows the thread that forked it: restarts fork from this
        # thread, which lives until stop().
        backoff = 1.0
        while not self._stopping.is_set():
            code = self.process.wait()
            if self._stopping.is_set():
                return
            self.unsteady = time.monotonic() - self.started <= STEADY_SECONDS
            if not self.unsteady:
                backoff = 1.0
            log.warning("%s exited with status %s; restarting in %.0f s", self.name, code, backoff)
            if self.on_exit:
                try:
                    self.on_exit(code, self.restarts + 1)
                except Exception:  # a report that fails must not end the supervision
                    log.warning("could not record the exit of %s", self.name, exc_info=True)
            if self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self.max_backoff)
            self.restarts += 1
            self._spawn()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self.process is None:
            return
        self.process.terminate()  # the worker finishes its batch, then exits
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()  # safe: an interrupted batch is applied again next time
            self.process.wait()


@contextmanager
def exclusive(path: Path, stopping: threading.Event | None, on_wait: Callable[[], None] | None = None, poll: float = 0.5):
    """Hold an exclusive lock on `path` for the block; wait (checking `stopping`) while
    another process holds it. Yields False if stopped before the lock was had (at once
    without a `stopping` to wait on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and on_wait:
                    on_wait()
                waited = True
                if stopping is None or stopping.wait(poll):
                    yield False
                    return
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))  # for holder(); the lock itself is the kernel's
        handle.flush()
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def holder(path: Path) -> int | None:
    """The pid of the process holding exclusive(path), or None if nobody does."""
    try:
        with open(path) as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                text = handle.read().strip()
                return int(text) if text.isdigit() else None
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
    except FileNotFoundError:
        return None
