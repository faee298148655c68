"""Running a tool: validate the input, lend a connection, run the handler in a transaction.

Every transport goes through here. `call` serves synchronous callers (Chalice, the CLI).
`acall` serves the ASGI app: readers run inline (WAL readers never wait, and their
queries take microseconds); writers go to one writer thread per database, which commits
whatever writes are waiting as one transaction, each write inside its own savepoint
(group commit: one fsync for many acknowledged writes, and a failing write rolls back
alone). A write is acknowledged only after its COMMIT returned.

On a Turso replica, a NotFound (or a contact policy's refusal) may only mean that another
replica's write (a project, an agent, a message, a thread, a contact, an approval) has not
been pulled yet: a call that fails so on data pulled before it started pulls and runs once
more before it answers so. A call whose miss is an answer (releasing or renewing a hold) or
that carries an idempotency key runs on freshly pulled data from the start (read your writes
across replicas; docs/turso.md).
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

from .ops import logs, metrics, refusals
from .security import agent_tokens, auth, scopes
from .config import Settings
from .store import idempotency, wakeup
from .store.db import connection, transaction
from .store.upkeep import savepoint
from .errors import MAX_ANSWER_BYTES, ClientGone, NotActive, NotAdmitted, NotFound, TokenRefused, TooManyRequests, ToolError, Unavailable, answer_too_large, internal_error, validation_error
from .store.disconnect import Dropped, unless_client_gone
from .store.fair_lane import FairLane
from .store.per_process import OnePerKey
from .registry import Input, Output, Tool, to_json
from .tools.messages import PAGE_BODY_BYTES, page_body_bytes
from .tools.agents import refuse_people
from .tools.projects import find_project
from .store.replica import replica
from .lambda_response import LAMBDA_MCP_ONCE, lambda_answers, lambda_copies, past_lambda

log = logging.getLogger(__name__)
MAX_BATCH = 256
# What a replica may answer only because another replica's write has not been pulled yet: the
# call is run once more after a pull (read your writes across replicas; docs/turso.md).
MAYBE_STALE = (NotFound, NotAdmitted, NotActive, TokenRefused)
# Slow reads run one at a time beside the event loop: the loop then shares the GIL with one busy
# thread, not one per request, and one big answer is being built at a time (docs/limits.md);
# credentials take turns, so one that loops heavy searches does not hold up the others' searches.
_slow_reads = FairLane("slow-read", "slow reads (searches, reads with bodies, reservation checks)")
# Writes' slow preparation (Tool.prepare: images to WebP) runs one at a time beside the loop and
# the writer: one image is decoded at a time (up to 50 megapixels, ~150 MB), credentials taking turns.
_preparing = FairLane("prepare", "writes being prepared (images converted, threads summarised)")
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


def admitted(conn: sqlite3.Connection, tool: Tool, args: Input, settings: Settings, principal: auth.Principal) -> Input:
    """The arguments, once the caller's credential may make this call (its role and projects) and
    holds the tokens of the agents the call acts as (if required); narrowed to its scope."""
    # An unrestricted principal (no authentication, a plain token, the CLI) costs one attribute test.
    if not principal.unrestricted:
        scopes.authorize(conn, tool, args, principal, auth.agent_tokens_required(settings))
        args = scopes.narrowed_input(tool, args, principal)
    if tool.acts_as and auth.agent_tokens_required(settings):
        agent_tokens.check(conn, tool, args)
    # No write acts as a person. With agent tokens on too: a person's row has no token, unless one
    # was issued to it before this check (rotate_agent_token took a person's name).
    if tool.acts_as and not tool.read_only:
        key = getattr(args, "project_key", None) or getattr(args, "human_key", None)
        refuse_people(conn, key, [getattr(args, field, None) for field in tool.acts_as])
    return args


def run(conn: sqlite3.Connection, tool: Tool, args: Input, settings: Settings, principal: auth.Principal) -> Output:
    """The handler, once the call is admitted."""
    args = admitted(conn, tool, args, settings, principal)
    with auth.calling(principal):  # on the writer's thread too: a handler may count per credential
        if principal.unrestricted:
            result = _handled(conn, tool, args, settings)
        else:
            with scopes.mentioning(principal.projects):
                result = _handled(conn, tool, args, settings)
            scopes.check_delivered(conn, result, principal.projects)
            result = scopes.visible_output(tool, result, principal)
    if not tool.read_only:  # measured inside its transaction: a write refused so changes nothing
        bounded(to_json(result), write=True)
    return result


def _handled(conn: sqlite3.Connection, tool: Tool, args: Input, settings: Settings) -> Output:
    """The handler's output (once per idempotency key)."""
    if keyed := _idempotency_key(conn, tool, args):
        return idempotency.run_once(conn, tool, args, *keyed, settings.idempotency_key_ttl_seconds,
                                    lambda: tool.handler(conn, args))
    return tool.handler(conn, args)


def _idempotency_key(conn: sqlite3.Connection, tool: Tool, args: Input) -> tuple[str, int | str] | None:
    """(the call's idempotency key, the id of the project it names) if it carries one."""
    key = getattr(args, "idempotency_key", None) if tool.idempotent else None
    if key is None:
        return None
    return key, find_project(conn, args.project_key)["id"] if getattr(args, "project_key", None) else ""


def _replayed(conn: sqlite3.Connection, tool: Tool, args: Input, settings: Settings) -> bool:
    """Whether the call is the retry of one that took effect (its write will answer as the first
    time); KeyReused if its key was used for another call."""
    keyed = _idempotency_key(conn, tool, args)
    return keyed is not None and idempotency.stored(conn, tool, args, *keyed, settings.idempotency_key_ttl_seconds)


def caller(principal: auth.Principal | None) -> auth.Principal:
    """The given principal, else the request's (set by its transport), else the operator (in process)."""
    return principal or auth.current.get() or auth.OPERATOR


def call(tool: Tool, arguments: Any, settings: Settings, principal: auth.Principal | None = None) -> Output:
    with _measured(tool.name):
        return _call(tool, arguments, settings, caller(principal))


def own_call(tool: Tool, arguments: Any, settings: Settings) -> Output:
    """A call the server makes for itself (a /metrics scrape, a scheduled sweep): blocking, and not
    counted among the clients' tool calls (each scrape counted an archive_status call). As the
    operator: the caller's credential was checked for the route that makes it."""
    return _call(tool, arguments, settings, auth.OPERATOR)


async def acall(tool: Tool, arguments: Any, settings: Settings, principal: auth.Principal | None = None,
                json: bool = False) -> Output | bytes:
    """The output (a json_tool's: JSON bytes). `json`: a wait's answer may come as JSON (_wait)."""
    with _measured(tool.name):
        principal = caller(principal)
        args = parse(tool, arguments)  # bad input is refused before it waits for anything
        if tool.wait:  # a client that gave up waiting leaves its place to its next wait at once
            return await unless_client_gone(_wait(tool, args, settings, principal, json))
        if tool.writes_files:
            return await asyncio.to_thread(_attempt, tool, args, settings, principal)
        if tool.read_only:
            return await _read(tool, args, settings, principal)
        if work := tool.prepare and tool.prepare(args):
            await _preparing.run(auth.credential(principal), settings.max_slow_calls_per_caller,
                                 _prepare, work, tool, args, settings, principal)
        return await _writer(settings).submit(tool, args, principal)


def _prepare(work, tool: Tool, args: Input, settings: Settings, principal: auth.Principal) -> None:
    """A write's preparation (Tool.prepare) once the call is admitted, in a read transaction (the
    write checks all again); on a replica, on data as fresh as the write's."""
    def once(fresh: bool) -> None:
        with _busy_or_full_is_unavailable(), connection(settings, fresh=fresh) as conn, transaction(conn, write=False):
            admitted(conn, tool, args, settings, principal)  # a call it may not make does no work
            with auth.calling(principal), scopes.mentioning(principal.projects):  # as run() runs the handler: its
                # hints name no project out of scope. A retry of a send that was made is not refused now
                # (a recipient since blocked, a file since moved) nor prepared again: its write replays it.
                if not _replayed(conn, tool, args, settings):
                    work(conn)

    _on_fresh_enough_data(once, tool, args, settings)


class _measured:
    """Counts the call by outcome (ok, or the error code the client got), times it, and names
    the tool in the request's log line."""

    __slots__ = ("tool", "started")

    def __init__(self, tool: str) -> None:
        self.tool = tool
        self.started = time.perf_counter()
        logs.note(tool=tool)

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind, exc, tb) -> None:
        outcome = "ok" if exc is None else exc.code if isinstance(exc, ToolError) else "internal_error"
        metrics.tool_done(self.tool, outcome, time.perf_counter() - self.started)
        if outcome == ClientGone.code:  # the log line's status, whatever the transport answered (MCP: 200)
            logs.note(status=ClientGone.status)


def _call(tool: Tool, arguments: Any, settings: Settings, principal: auth.Principal) -> Output:
    args = parse(tool, arguments)
    if tool.wait:
        return _wait_sync(tool, args, settings, principal)
    if work := tool.prepare and tool.prepare(args):  # not inside the write transaction: it holds the write lock
        _prepare(work, tool, args, settings, principal)
    return _attempt(tool, args, settings, principal)


def _attempt(tool: Tool, args: Input, settings: Settings, principal: auth.Principal) -> Output:
    return _on_fresh_enough_data(lambda fresh: _run_once(tool, args, settings, principal, fresh), tool, args, settings)


def _on_fresh_enough_data(once, tool: Tool, args: Input, settings: Settings):
    """once(fresh): on a replica pulled first if the call needs it (decides_on_fresh_data), and
    again on freshly pulled data when it failed with what a replica not pulled yet may cause."""
    started = time.monotonic()
    try:
        return once(decides_on_fresh_data(tool, args))
    except MAYBE_STALE:
        if not pulled_before(settings, started):
            raise
        return once(True)


def decides_on_fresh_data(tool: Tool, args: Input) -> bool:
    """Whether the call lends a freshly pulled replica: a tool with a settle step or marked
    fresh; one that may create its agent (on stale data an agent registered through another
    replica looks new, and new agents need no token: anyone could take it over); and a call
    with an idempotency key (its first run, answered through another replica, must be seen:
    else the retry would run again)."""
    return (tool.settle is not None or tool.fresh or tool.may_create
            or (tool.idempotent and args.idempotency_key is not None))


def _run_once(tool: Tool, args: Input, settings: Settings, principal: auth.Principal, fresh: bool) -> Output:
    with _busy_or_full_is_unavailable(), connection(settings, fresh=fresh) as conn:
        try:
            with transaction(conn, write=not (tool.read_only or tool.writes_files)):
                result = run(conn, tool, args, settings, principal)
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


def pulled_before(settings: Settings, moment: float) -> bool:
    """On a replica: its data was last pulled before `moment`, so a pull may show what is missing."""
    return bool(settings.turso_sync_url) and replica(settings).pulled_at < moment


async def _read(tool: Tool, args: Input, settings: Settings, principal: auth.Principal) -> Output:
    if settings.turso_sync_url:  # a replica may pull first, or wait for its lock: not on the event loop
        return await asyncio.to_thread(_attempt, tool, args, settings, principal)
    return _attempt(tool, args, settings, principal)


# Waiting tools (registry.Tool.wait): check, and while there is nothing yet, sleep until a commit
# wakes the key the check gave (store/wakeup.py) or, on a replica, until the next pull is due.
# No connection is held while sleeping, and at most MAX_MAIL_WAITERS wait per process,
# MAX_MAIL_WAITERS_PER_CALLER of them for one credential.


async def _wait(tool: Tool, args: Input, settings: Settings, principal: auth.Principal, json: bool) -> Output | bytes:
    """The answer. When it may be big (off_loop), the checks on the loop only find whether
    something is there (wait_probe: the empty checks, most of them, cost what they did), and the
    answer is then read in the slow-read lane, with its encoding if `json` (then JSON bytes)."""
    probe = tool.wait_probe if tool.off_loop(args) else None
    with wakeup.board(settings).join(asynchronous=True, caller=auth.credential(principal)) as waiter:
        wait = _Waiting(tool, args, settings, waiter, asyncio.get_running_loop().time)
        while True:
            waiter.arm()
            result = await _read(tool, probe(wait.args) if probe else wait.args, settings, principal)
            nap = wait.after(result)
            if nap is None and probe and wait.found:  # read again from the same cursor: the same and maybe more
                try:
                    return await _slow_reads.run(auth.credential(principal), settings.max_slow_calls_per_caller,
                                                 _read_json if json else _attempt, tool, wait.args, settings, principal)
                except TooManyRequests:  # its credential's other waits woke too (one message to its agents):
                    return await _read(tool, wait.args, settings, principal)  # mail found is answered, as before
            if nap is None:
                return result
            if nap:
                await waiter.sleep(nap)


def _read_json(tool: Tool, args: Input, settings: Settings, principal: auth.Principal) -> bytes:
    return bounded(to_json(_attempt(tool, args, settings, principal)))


def _wait_sync(tool: Tool, args: Input, settings: Settings, principal: auth.Principal) -> Output:
    """The same for synchronous callers (Chalice, the CLI): the thread sleeps instead."""
    with wakeup.board(settings).join(asynchronous=False, caller=auth.credential(principal)) as waiter:
        wait = _Waiting(tool, args, settings, waiter, time.monotonic)
        while True:
            waiter.arm()
            result = _attempt(tool, wait.args, settings, principal)
            nap = wait.after(result)
            if nap is None:
                return result
            if nap:
                waiter.sleep_sync(nap)


class _Waiting:
    """What a wait decides after each check, for both loops above: answer, check again at once,
    or sleep; and the arguments of the next check (the tool may move them on)."""

    def __init__(self, tool: Tool, args: Input, settings: Settings, waiter: wakeup.Waiter, clock) -> None:
        self.tool, self.args, self.settings, self.waiter, self.clock = tool, args, settings, waiter, clock
        self.deadline = clock() + args.timeout_seconds
        self.found = False  # the last check found what the wait is for

    def after(self, result: Output) -> float | None:
        """None: `result` is the answer. Else the seconds to sleep before the next check (0: none)."""
        waiting = self.tool.wait(self.args, result)
        self.found = waiting is None
        remaining = self.deadline - self.clock()
        if waiting is None or remaining <= 0 or wakeup.closing.is_set():
            return None
        key, self.args = waiting
        if self.waiter.key != key:  # watched only after this check: check once more
            self.waiter.watch(key)
            return 0.0
        # On a replica another host's mail shows only after a pull: check again when one is due.
        return min(remaining, self.settings.mail_wait_poll_seconds) if self.settings.turso_sync_url else remaining


def json_call(tool: Tool, arguments: Any, settings: Settings, principal: auth.Principal | None = None) -> bytes:
    """The output as JSON (what REST and MCP send), no larger than MAX_ANSWER_BYTES."""
    return bounded(to_json(call(tool.json_tool, arguments, settings, principal)))


async def ajson(tool: Tool, arguments: Any, settings: Settings, principal: auth.Principal | None = None) -> bytes:
    """json_call for the ASGI app: a read whose tool says it may be slow runs, encoding
    included, in a thread, so the event loop keeps serving (/health, every other client)."""
    tool = tool.json_tool
    args = parse(tool, arguments)
    if tool.read_only and tool.off_loop(args) and not tool.wait:  # (a wait's own: _wait)
        try:
            queued = _slow_reads.run(auth.credential(caller(principal)), settings.max_slow_calls_per_caller,
                                     json_call, tool, args, settings, principal)
        except ToolError:  # refused before json_call: counted and logged as the tool's call all the same
            with _measured(tool.name):
                raise
        try:
            return await queued
        except Dropped:  # nor did this one run (its client went away while it waited): likewise
            with _measured(tool.name):
                raise
    return bounded(to_json(await acall(tool, args, settings, principal, json=True)))


def bounded(answer: bytes, write: bool = False) -> bytes:
    """The answer, unless it is over MAX_ANSWER_BYTES or, on Lambda, over LAMBDA_ANSWER_BYTES as
    written in the function's response (lambda_copies): AnswerTooLarge."""
    if len(answer) > MAX_ANSWER_BYTES:
        raise answer_too_large(write)
    if past_lambda(answer):
        raise answer_too_large(write, on_lambda=True)
    return answer


async def run_tool(tool: Tool, arguments: Any, settings: Settings, principal: auth.Principal | None = None,
                   twice: bool = False) -> tuple[bool, bytes]:
    """(is_error, JSON bytes) of one tool call: the output, or an error body (MCP tools and resources).
    `twice`: the answer carries the JSON twice (a tools/call result): a page of bodies gets half (on
    Lambda its copies are weighed instead: messages.page_size). On Lambda (lambda_copies: LAMBDA_MCP),
    an answer sent once is measured so."""
    halved = page_body_bytes.set(PAGE_BODY_BYTES // 2) if twice else None
    once = (lambda_copies.set(LAMBDA_MCP_ONCE)
            if lambda_copies.get() and not (twice and tool.mcp_content is None) else None)
    try:
        return False, await ajson(tool, arguments, settings, principal)
    except ToolError as exc:
        return True, orjson.dumps(exc.to_dict())
    except Exception:
        log.exception("tool %s failed", tool.name)
        return True, orjson.dumps(internal_error().to_dict())
    finally:
        if halved is not None:
            page_body_bytes.reset(halved)
        if once is not None:
            lambda_copies.reset(once)


# What the server's disk or database file refuses, by SQLite's primary result code: why, for the answer.
_CANNOT_STORE = {sqlite3.SQLITE_FULL: "its disk is full", sqlite3.SQLITE_READONLY: "its database is read-only",
                 sqlite3.SQLITE_IOERR: "its disk failed to read or write"}


def _refused(exc: BaseException | None) -> Unavailable | None:
    """SQLITE_BUSY after the busy timeout, a full disk, a read-only database file or a disk error,
    as a 503 with a hint, not a 500: none is the request's doing, and the call stored nothing (its
    statement or transaction rolled back). None for any other exception."""
    if type(exc).__name__ != "OperationalError":  # sqlite3's, or pyturso's on a replica (no subclass of it)
        return None
    if "locked" in str(exc) or "busy" in str(exc):
        return Unavailable("The database is busy.", "Retry in a moment.")
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if "disk is full" in str(exc):  # (Turso's engine gives no code)
        code = sqlite3.SQLITE_FULL
    if code in _CANNOT_STORE:
        refusals.note(exc, _CANNOT_STORE[code])
        return Unavailable(f"The server cannot store this call: {_CANNOT_STORE[code]}. Nothing of it was stored.",
                           "Retry later, and tell the operator (python -m chalicelib doctor says what to mend)."
                           " Reads work meanwhile.")
    return None


class _busy_or_full_is_unavailable:
    """_refused's 503 for what the block raises."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if (refusal := _refused(exc)) is not None:
            raise refusal from exc


class Writer:
    """One thread that runs write tools in batches, committed together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="db-writer", daemon=True).start()

    def submit(self, tool: Tool, args: Input, principal: auth.Principal) -> asyncio.Future:
        """Queue a write; the future (of the running event loop) resolves once it committed. Its
        answer is measured in its transaction as its request's transport sends it (lambda_copies)."""
        future = asyncio.get_running_loop().create_future()
        self.jobs.put((tool, args, principal, lambda_copies.get(), future))
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

    def _commit(self, batch: list, fresh: bool = False) -> None:
        metrics.write_batch.observe(len(batch))
        outcomes = []
        started = time.monotonic()
        try:
            fresh = fresh or any(decides_on_fresh_data(tool, args) for tool, args, *_ in batch)
            with _busy_or_full_is_unavailable(), connection(self.settings, fresh=fresh) as conn:
                with transaction(conn, write=True):
                    for tool, args, principal, copies, _ in batch:
                        with lambda_answers(copies):
                            outcomes.append(_in_savepoint(conn, tool, args, self.settings, principal))
                        if not conn.in_transaction:  # SQLite ended the batch's transaction (a full disk may): all of it is gone
                            raise outcomes[-1][1] or sqlite3.OperationalError("the transaction ended before its COMMIT")
                _committed(self.settings)
                outcomes = [_settled(conn, tool, args, outcome) for (tool, args, *_), outcome in zip(batch, outcomes)]
        except Exception as exc:  # the COMMIT (or BEGIN, or push) failed: nothing in the batch was acknowledged
            wakeup.rolled_back()
            log.exception("write batch of %d failed", len(batch))
            outcomes = [(None, exc)] * len(batch)
        if not fresh and pulled_before(self.settings, started):  # not found on old data: pull, run those again
            missed = [isinstance(error, MAYBE_STALE) for _, error in outcomes]
            if any(missed):
                self._commit([job for job, miss in zip(batch, missed) if miss], fresh=True)
                batch = [job for job, miss in zip(batch, missed) if not miss]
                outcomes = [outcome for outcome, miss in zip(outcomes, missed) if not miss]
        # One wake-up per event loop for the whole batch, not one per write.
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for (*_, future), outcome in zip(batch, outcomes):
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


def _in_savepoint(
    conn: sqlite3.Connection, tool: Tool, args: Input, settings: Settings, principal: auth.Principal
) -> tuple[Output | None, Exception | None]:
    try:
        with savepoint(conn, "tool"):
            return run(conn, tool, args, settings, principal), None
    except Exception as exc:
        return None, _refused(exc) or exc


_writers = OnePerKey(Writer)


def _writer(settings: Settings) -> Writer:
    return _writers.get(settings.database_url, settings)
