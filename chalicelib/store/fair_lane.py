"""A lane beside the event loop: one thread that runs slow jobs one at a time, callers taking turns.

One thread, not a pool: the event loop then shares the GIL with one busy thread, and one big
answer (or one decoded image) is in memory at a time. Turns, not one queue: with a single FIFO,
one credential looping heavy searches queued dozens of them, and every other credential's
search waited behind them all (security review, session 17). Here each caller's jobs wait in a
queue of their own, and the thread takes the next job of each caller with work queued in turn,
so a caller's job waits for the running one and at most one job of each other caller.

A job whose client disconnects while it waits is dropped too (store/disconnect.py): it would
still run for no one, and hold one of its caller's places until then. One that runs already is
told (disconnect.client_left): a search stops at its next statement or step.
"""

import asyncio
import contextvars
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Hashable
from concurrent.futures import Future
from typing import Any

from ..errors import TooManyRequests
from . import disconnect


class _Job:
    __slots__ = ("caller", "context", "fn", "args", "future", "left")

    def __init__(self, caller: Hashable, fn: Callable, args: tuple) -> None:
        self.caller, self.fn, self.args = caller, fn, args
        self.context = contextvars.copy_context()  # the request's: its principal, its log line's fields
        self.left = self.context.run(disconnect.watch)  # its client disconnected
        self.future: Future = Future()

    def stop(self) -> bool:
        """Its client is gone: True if it never runs now; else it runs on, told (client_left)."""
        self.left.set()
        return self.future.cancel()

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():  # its request was cancelled meanwhile
            return
        try:
            result = self.context.run(self.fn, *self.args)
        except BaseException as exc:
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class FairLane:
    """`await lane.run(caller, limit, fn, *args)`: fn(*args) on the lane's thread, in the
    awaiting request's context, as run_in_executor would (its result, or its exception).

    At most `limit` jobs of one caller are queued or running: one more is refused at once
    (TooManyRequests, 429), before anything ran. The caller None (the operator in process, and
    everyone on a server without authentication: one caller) has one queue and no limit, as
    wakeup.Board counts waits. A job whose request is cancelled, or whose client disconnects
    (ClientGone), before it started never runs, and gives its caller's place back at once."""

    def __init__(self, name: str, what: str) -> None:
        self.name = name  # its thread's
        self.what = what  # its jobs, as a refusal names them
        self.lock = threading.Lock()
        self.queued = threading.Condition(self.lock)
        self.turns: dict[Hashable, deque[_Job]] = {}  # callers with jobs queued, in turn order
        self.counts: dict[Hashable, int] = {}  # jobs queued or running, by caller
        self.thread: threading.Thread | None = None

    def run(self, caller: Hashable, limit: int, fn: Callable, *args) -> Coroutine[Any, Any, Any]:
        job = _Job(caller, fn, args)
        with self.lock:
            count = self.counts.get(caller, 0)
            if caller is not None and count >= limit:
                raise TooManyRequests(
                    f"This credential has {limit} {self.what} queued or running already (MAX_SLOW_CALLS_PER_CALLER).",
                    "Nothing of this call was done. They run one at a time: send the next once one has "
                    "answered; give each client a credential of its own.", retry_after=5,
                )
            self.counts[caller] = count + 1
            self.turns.setdefault(caller, deque()).append(job)
            if self.thread is None:
                self.thread = threading.Thread(target=self._work, name=self.name, daemon=True)
                self.thread.start()
            self.queued.notify()
        job.future.add_done_callback(lambda _: self._done(job))
        # Cancelling the job drops it unless it runs already (a thread cannot be stopped: it is told).
        return disconnect.unless_client_gone(asyncio.wrap_future(job.future), job.stop)

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.turns:
                    self.queued.wait()
                job = self._next()
            job.run()

    def _next(self) -> _Job:
        """The first job of the caller whose turn it is; that caller goes last (if it has more)."""
        caller = next(iter(self.turns))
        jobs = self.turns.pop(caller)
        job = jobs.popleft()
        if jobs:
            self.turns[caller] = jobs
        return job

    def _done(self, job: _Job) -> None:
        """Ran, failed or cancelled: its place is free (and a cancelled job leaves its queue)."""
        with self.lock:
            jobs = self.turns.get(job.caller)
            if job.future.cancelled() and jobs is not None and job in jobs:
                jobs.remove(job)
                if not jobs:
                    del self.turns[job.caller]
            left = self.counts.pop(job.caller) - 1
            if left:
                self.counts[job.caller] = left
