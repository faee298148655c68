"""Running a tool: validate the input, lend a connection, run the handler in a transaction.

Every transport goes through here. `call` serves synchronous callers (Chalice, the CLI).
`acall` serves the ASGI app: readers run inline (WAL readers never wait, and their
queries take microseconds); writers go to one writer thread per database, which commits
whatever writes are waiting as one transaction, each write inside its own savepoint
(group commit: one fsync for many acknowledged writes, and a failing write rolls back
alone). A write is acknowledged only after its COMMIT returned.
"""

import asyncio
import logging
import os
import queue
import sqlite3
import threading
import time
from typing import Any

import orjson
from pydantic import ValidationError

from .security import agent_tokens, auth
from .config import Settings
from .store import idempotency, wakeup
from .store.db import connection, transaction
from .errors import ToolError, Unavailable, internal_error, validation_error
from .store.per_process import OnePerKey
from .registry import Input, Output, Tool, to_json

log = logging.getLogger(__name__)
MAX_BATCH = 256
# Tests only (tests/test_mailbox_idempotency.py): the process dies right after a write's COMMIT,
# before answering, as a crash would. Never set it anywhere else.
_DIE_AFTER_COMMIT = os.environ.get("AGENT_MAIL_TEST_DIE_AFTER_COMMIT") == "1"


def parse(tool: Tool, arguments: Any) -> Input:
    if isinstance(arguments, tool.input):
        return arguments
    try:
        return tool.input.model_validate(arguments if arguments is not None else {})
    except ValidationError as exc:
        raise validation_error(exc.errors(), tool.input.model_fields) from None


def run(conn: sqlite3.Connection, tool: Tool, args: Input, settings: Settings) -> Output:
    """The handler, after checking the tokens of the agents the call acts as (if required)."""
    if tool.acts_as and auth.agent_tokens_required(settings):
        agent_tokens.check(conn, tool, args)
    if tool.idempotent:
        return idempotency.run_once(conn, tool, args, settings.idempotency_key_ttl_seconds, lambda: tool.handler(conn, args))
    return tool.handler(conn, args)


def call(tool: Tool, arguments: Any, settings: Settings) -> Output:
    args = parse(tool, arguments)
    if tool.wait:
        return _wait_sync(tool, args, settings)
    return _call_once(tool, args, settings)


def _call_once(tool: Tool, args: Input, settings: Settings) -> Output:
    # A tool with a settle step decides on fresh data, so it lends a freshly pulled replica.
    with _busy_is_unavailable(), connection(settings, fresh=tool.settle is not None) as conn:
        try:
            with transaction(conn, write=not tool.read_only):
                result = run(conn, tool, args, settings)
        except BaseException:
            wakeup.rolled_back()
            raise
        if not tool.read_only:
            _committed(settings)
        return tool.settle(conn, args, result) if tool.settle else result


def _committed(settings: Settings) -> None:
    if _DIE_AFTER_COMMIT:
        os._exit(1)
    wakeup.committed(settings.database_url)


async def acall(tool: Tool, arguments: Any, settings: Settings) -> Output:
    args = parse(tool, arguments)  # bad input is refused before it waits for anything
    if tool.wait:
        return await _wait(tool, args, settings)
    if tool.read_only:
        return await _read(tool, args, settings)
    return await _writer(settings).submit(tool, args)


async def _read(tool: Tool, args: Input, settings: Settings) -> Output:
    if settings.turso_sync_url:  # a replica may pull first, or wait for its lock: not on the event loop
        return await asyncio.to_thread(_call_once, tool, args, settings)
    return _call_once(tool, args, settings)


# Waiting tools (registry.Tool.wait): check, and while there is nothing yet, sleep until a commit
# wakes the key the check gave (store/wakeup.py) or, on a replica, until the next pull is due.
# No connection is held while sleeping, and at most MAX_MAIL_WAITERS wait per process.


async def _wait(tool: Tool, args: Input, settings: Settings) -> Output:
    deadline = asyncio.get_running_loop().time() + args.timeout_seconds
    with wakeup.board(settings).join(asynchronous=True) as waiter:
        while True:
            waiter.arm()
            result = await _read(tool, args, settings)
            key = tool.wait(result)
            remaining = deadline - asyncio.get_running_loop().time()
            if key is None or remaining <= 0:
                return result
            if waiter.key != key:  # watched only after this check: check once more
                waiter.watch(key)
                continue
            await waiter.sleep(_nap(remaining, settings))


def _wait_sync(tool: Tool, args: Input, settings: Settings) -> Output:
    """The same for synchronous callers (Chalice, the CLI): the thread sleeps instead."""
    deadline = time.monotonic() + args.timeout_seconds
    with wakeup.board(settings).join(asynchronous=False) as waiter:
        while True:
            waiter.arm()
            result = _call_once(tool, args, settings)
            key = tool.wait(result)
            remaining = deadline - time.monotonic()
            if key is None or remaining <= 0:
                return result
            if waiter.key != key:
                waiter.watch(key)
                continue
            waiter.sleep_sync(_nap(remaining, settings))


def _nap(remaining: float, settings: Settings) -> float:
    # On a replica another host's mail shows only after a pull: check again when one is due.
    return min(remaining, settings.mail_wait_poll_seconds) if settings.turso_sync_url else remaining


async def run_tool(tool: Tool, arguments: Any, settings: Settings) -> tuple[bool, bytes]:
    """(is_error, JSON bytes) of one tool call: the output, or an error body (MCP tools and resources)."""
    try:
        output = await acall(tool.json_tool, arguments, settings)
    except ToolError as exc:
        return True, orjson.dumps(exc.to_dict())
    except Exception:
        log.exception("tool %s failed", tool.name)
        return True, orjson.dumps(internal_error().to_dict())
    return False, to_json(output)


class _busy_is_unavailable:
    """SQLITE_BUSY after the busy timeout → 503 with a retry hint, not a 500."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
            raise Unavailable("The database is busy.", "Retry in a moment.") from exc


class Writer:
    """One thread that runs write tools in batches, committed together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="db-writer", daemon=True).start()

    def submit(self, tool: Tool, args: Input) -> asyncio.Future:
        """Queue a write; the future (of the running event loop) resolves once it committed."""
        future = asyncio.get_running_loop().create_future()
        self.jobs.put((tool, args, future))
        return future

    def _run(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while len(batch) < MAX_BATCH:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            self._commit(batch)

    def _commit(self, batch: list) -> None:
        outcomes = []
        try:
            fresh = any(tool.settle for tool, _, _ in batch)
            with _busy_is_unavailable(), connection(self.settings, fresh=fresh) as conn:
                with transaction(conn, write=True):
                    for tool, args, _ in batch:
                        outcomes.append(_in_savepoint(conn, tool, args, self.settings))
                _committed(self.settings)
                outcomes = [_settled(conn, tool, args, outcome) for (tool, args, _), outcome in zip(batch, outcomes)]
        except Exception as exc:  # the COMMIT (or BEGIN, or push) failed: nothing in the batch was acknowledged
            wakeup.rolled_back()
            log.exception("write batch of %d failed", len(batch))
            outcomes = [(None, exc)] * len(batch)
        # One wake-up per event loop for the whole batch, not one per write.
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for (_, _, future), outcome in zip(batch, outcomes):
            by_loop.setdefault(future.get_loop(), []).append((future, outcome))
        for loop, settled in by_loop.items():
            loop.call_soon_threadsafe(_resolve, settled)


def _resolve(settled: list) -> None:
    for future, (result, error) in settled:
        if future.cancelled():  # the client went away; the write stands
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


def _settled(conn, tool: Tool, args: Input, outcome: tuple) -> tuple[Output | None, Exception | None]:
    result, error = outcome
    if error is not None or tool.settle is None:
        return outcome
    try:
        return tool.settle(conn, args, result), None
    except Exception as exc:
        return None, exc


def _in_savepoint(conn: sqlite3.Connection, tool: Tool, args: Input, settings: Settings) -> tuple[Output | None, Exception | None]:
    conn.execute("SAVEPOINT tool")
    try:
        result = run(conn, tool, args, settings)
    except Exception as exc:
        conn.execute("ROLLBACK TO tool")
        conn.execute("RELEASE tool")
        return None, exc
    conn.execute("RELEASE tool")
    return result, None


_writers = OnePerKey(Writer)


def _writer(settings: Settings) -> Writer:
    return _writers.get(settings.database_url, settings)
