"""MCP over stdio: `agent-mail stdio` (or `python -m chalicelib stdio`), for clients that
start their server as a child process (Claude Desktop, Claude Code, Codex, Cursor...).

The same server as /mcp (mcp_app.build_mcp_server: the registry's tools, resources and
instructions), on the same database as the HTTP server; both may run at once (SQLite WAL).
Each starts an archive worker, and only one of them writes (the lock in ops/supervisor.py).

Only protocol reaches stdout: the wire gets private copies of fds 0 and 1, then fd 1 points
at stderr (where the logs go) and fd 0 at /dev/null, so a stray print, a warning or a child
process cannot corrupt it.

A client spawns this process for every session, so start-up counts. The first request,
`initialize`, is answered once the settings are read and the database opens, before anything
heavy is imported (the MCP SDK alone takes about half a second), with what the SDK would answer
(tests/test_stdio_*.py compares). The SDK then serves the session: it is handed that same
request first, and its answer, already sent, is dropped. A setting it refuses, or a database it
cannot open, is said in one line on stderr and as the JSON-RPC error of every request read
(`refuse_session`), until an initialize is refused or stdin closes: the client's connect fails
with it (answered success, every call after it would have met a closed connection).

When stdin closes (`cat requests.jsonl | agent-mail stdio`), every request already read is
answered before the process exits (the SDK alone would cancel those still running, and answer
"Connection closed" for a write that committed).
"""

import gc
import json
import os
import sys
from pathlib import Path
from typing import NamedTuple, NoReturn

from .. import __version__
from ..errors import JSON_WHITESPACE
from ..ops.allocator import keep_memory_down
from .instructions import instructions

# Answered without the SDK: the handshake versions of mcp_types.version.HANDSHAKE_PROTOCOL_VERSIONS
# (a test compares). Any other first message waits for the SDK.
QUICK_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})
CAPABILITIES = {
    "prompts": {"listChanged": False},
    "resources": {"listChanged": False, "subscribe": False},
    "tools": {"listChanged": False},
}
# clientInfo's fields the quick answer takes (strings all: mcp_types.Implementation's); any other goes to the SDK.
QUICK_CLIENT_INFO = frozenset({"name", "version", "title", "description", "websiteUrl"})
QUICK_LINE_BYTES = 64 * 1024  # a first line up to this long may be a quick initialize (they are a few hundred bytes)
REFUSING_LINE_BYTES = 1024 * 1024  # refuse_session's longest line (MAX_BODY_BYTES' default: it may be a setting refused)
SKIPPED_CHUNK_BYTES = 64 * 1024  # a line past MAX_BODY_BYTES is read on and dropped this much at a time
# Once stdin has closed, how long the requests already read may take to be answered; past it
# the SDK cancels the rest ("Connection closed"). Every tool is bounded well within it.
DRAIN_SECONDS = 60.0
# The status mcp_errors.with_error_data takes for an error inside the protocol (HTTP answers it 200),
# and for a line that is no JSON-RPC message (HTTP refuses such a body 400: its code and hint).
IN_PROTOCOL, REFUSED = 200, 400


def main(database_url: str | None = None) -> None:
    # Start-up makes ~180k objects, nearly all alive as long as the process: the collector's
    # passes over them took ~150 ms of the ~0.8 s before the first tools/list, to free almost
    # nothing. Off until the server is built (serve), then they are frozen out of its passes.
    gc.disable()
    wire_in, wire_out = claim_stdio()
    keep_memory_down()  # before any thread starts (a replica's, opened by ready_settings)
    settings, problem = ready_settings(database_url)
    first = wire_in.readline(QUICK_LINE_BYTES)  # the rest of a longer line is read once MAX_BODY_BYTES is known
    if problem is not None:
        refuse_session(problem, first, wire_in, wire_out)
    quick = first.endswith(b"\n") or len(first) < QUICK_LINE_BYTES
    answered = quick_initialize(first, settings.tools_profile) if quick else None
    if answered is not None:
        wire_out.write(answered[1])
        wire_out.flush()
    serve(first, None if answered is None else answered[0], wire_in, wire_out, settings)


def ready_settings(database_url: str | None):
    """(the settings, None) once they are read and the database opens (migrated), else (None, a
    Problem saying what to fix): before initialize is answered, so that a client connects only to
    a server that can serve it."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from ..config import Settings, get_settings, invalid_setting
    from ..store import db

    try:
        settings = Settings(database_url=database_url) if database_url else get_settings()
    except ValidationError as exc:
        variable, problem = invalid_setting(exc)
        return None, Problem(f"invalid {variable}: {problem}", f"Fix {variable} in the environment the client starts this"
                             " server with (its env settings) or in the .env of the directory it starts in, then restart it")
    except SettingsError as exc:  # a list setting that is not valid JSON
        return None, Problem(str(exc), "Fix that setting where the client starts this server (its env settings), then restart it")
    try:
        db.migrate(settings)
    except Exception as exc:
        if (refused := db.cannot_open(exc, settings)) is None:
            raise
        return None, Problem(*refused)
    return settings, None


class Problem(NamedTuple):
    """Why this server cannot serve: its line on stderr, and the hint of its JSON-RPC error."""

    line: str
    hint: str


def refuse_session(problem: Problem, first: bytes, wire_in, wire_out) -> NoReturn:
    """Say `problem` in one line on stderr, answer it as the error of each request read (a client
    in "auto" mode, the official one's default, asks server/discover first and on any error falls back to
    initialize, so the answer to that first request alone would be lost) until an initialize is
    refused or stdin closes; then exit 1. A notification, or a line that is no request, is not
    answered (JSON-RPC answers neither)."""
    from ..errors import Unavailable
    from .mcp_errors import SERVER_ERROR, jsonrpc_error

    print(f"agent-mail stdio: {problem.line} ({problem.hint})", file=sys.stderr, flush=True)
    error = jsonrpc_error(SERVER_ERROR, Unavailable(f"Agent Mail cannot serve: {problem.line}.", problem.hint).to_dict())
    line = read_line(wire_in, REFUSING_LINE_BYTES, first)
    while line != b"":
        try:
            request = json.loads(line) if line is not None else None  # (None: a line too long, skipped)
        except (ValueError, RecursionError):
            request = None
        request_id = request.get("id") if isinstance(request, dict) and isinstance(request.get("method"), str) else None
        if isinstance(request_id, (int, str)) and not isinstance(request_id, bool):
            answer = {"jsonrpc": "2.0", "id": request_id, "error": error}
            wire_out.write(json.dumps(answer, ensure_ascii=False).encode() + b"\n")
            wire_out.flush()
            if request["method"] == "initialize":
                break
        line = read_line(wire_in, REFUSING_LINE_BYTES)
    sys.exit(1)


def claim_stdio():
    """The wire's own copies of stdin and stdout; fd 0 then reads /dev/null, fd 1 writes to stderr."""
    wire_in = os.fdopen(os.dup(0), "rb")
    wire_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return wire_in, wire_out


def quick_initialize(line: bytes, profile: str = "full") -> tuple[int | str, bytes] | None:
    """(request id, the answer line) for a well-formed initialize request whose params the SDK
    certainly accepts (`vouched`); None for anything else (the SDK answers it, refusals included).
    A line with a \\u escape goes to the SDK too: json reads a lone surrogate (or a BOM, as bytes)
    that the SDK's parser refuses."""
    if b"\\u" in line:
        return None
    try:
        request = json.loads(line.decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: nested past the interpreter's limit
        return None
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or request.get("method") != "initialize":
        return None
    request_id, params = request.get("id"), request.get("params")
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str)) or not vouched(params):
        return None
    result = {
        "capabilities": CAPABILITIES,
        "instructions": instructions(profile),
        "protocolVersion": params["protocolVersion"],
        "serverInfo": {"name": "agent-mail", "version": __version__},
    }
    answer = {"jsonrpc": "2.0", "id": request_id, "result": result}
    return request_id, json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def vouched(params) -> bool:
    """Initialize params of the plain shape clients send, which the SDK's validation (that of /mcp,
    mcp_types.InitializeRequestParams) certainly accepts: a handshake version, clientInfo's text
    fields, each capability an object of empty objects (roots' listChanged a boolean). Not that
    validation itself: importing it would delay the quick answer ~0.2 s. Anything else goes to
    the SDK, which answers as /mcp does (a test compares the two on many params)."""
    if not isinstance(params, dict) or params.keys() != {"protocolVersion", "capabilities", "clientInfo"}:
        return False
    client, capabilities = params["clientInfo"], params["capabilities"]
    return (
        params["protocolVersion"] in QUICK_VERSIONS
        and isinstance(client, dict) and {"name", "version"} <= client.keys() <= QUICK_CLIENT_INFO
        and all(isinstance(value, str) for value in client.values())
        and isinstance(capabilities, dict)
        and all(isinstance(capability, dict) and all(
            isinstance(value, bool) if (name, key) == ("roots", "listChanged") else value == {}
            for key, value in capability.items()) for name, capability in capabilities.items())
    )


def serve(first: bytes, answered_id, wire_in, wire_out, settings) -> None:
    """The session after its first line: logs to stderr, the archive worker, then the SDK's
    server until the client closes stdin (or SIGTERM, SIGINT)."""
    import logging
    import signal

    import anyio

    from ..archive.worker import LocalWorker
    from ..ops import logs
    from ..tools import guard
    from .mcp_app import build_mcp_server, served_methods

    logs.configure(settings)  # on stderr, as LOG_FORMAT says (stdout is the protocol's)
    for name, path in relative_paths(settings):
        logging.warning("%s is relative (%s): it resolves to %s, in the directory the client started this in;"
                        " give it an absolute path, the HTTP server's (README: Over stdio)", name, path, path.resolve())
    server = build_mcp_server(settings)
    worker = LocalWorker(settings) if settings.archive_enabled else None

    def terminate(*_) -> None:
        """SIGTERM (a client that is done with us), or SIGINT (Ctrl-C in the client's terminal reaches
        its child too: Python's KeyboardInterrupt left the session alive, answering nothing): stop
        the worker, then go at once; a thread
        blocked reading stdin would keep a normal exit waiting. Every acknowledged write is
        committed; one in progress rolls back and was never answered."""
        if worker:
            worker.stop()
        logging.shutdown()
        logs.flush()  # (its buffer: os._exit runs no atexit)
        os._exit(0)

    if worker:
        worker.start()
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    gc.freeze()  # no gc.collect() first: it costs ~90 ms for the ~2 MB of start-up garbage it would free
    gc.enable()
    try:
        wire = Wire(wire_out, answered_id, served_methods(server))
        with guard.without_http():  # a pre-commit guard installed here reads the database: no HTTP to ask
            anyio.run(session, server, Lines(first, wire_in, wire, settings.max_body_bytes), wire)
    finally:
        if worker:
            worker.stop()


def relative_paths(settings) -> list[tuple[str, Path]]:
    """The settings naming a relative path: a client starts this in a directory of its choosing,
    so the mail, the archive or attachments would go there, apart from the HTTP server's."""
    places = [("DATABASE_URL", settings.database_path)]
    if settings.archive_enabled:
        places.append(("ARCHIVE_DIR", settings.archive_dir))
    if not settings.attachments_bucket:
        places.append(("ATTACHMENTS_DIR", settings.attachments_dir))
    return [(name, path) for name, path in places if not path.is_absolute()]


async def session(server, stdin, stdout) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server(stdin, stdout) as (read_stream, write_stream):
        unanswered = Unanswered()
        lowlevel = server._lowlevel_server
        await lowlevel.run(
            DrainingReader(read_stream, unanswered, stdout, stdin),
            AnswerCounter(write_stream, unanswered),
            lowlevel.create_initialization_options(),
        )


class Unanswered:
    """The client's requests read and not answered yet, by id (as the SDK correlates them)."""

    def __init__(self) -> None:
        self.counts: dict = {}
        self.changed = None  # an anyio.Event while the end of stdin waits

    def read(self, item) -> None:
        from mcp.shared.dispatcher import coerce_request_id
        from mcp_types import JSONRPCNotification, JSONRPCRequest

        message = getattr(item, "message", None)  # an Exception for a line the SDK could not parse
        if isinstance(message, JSONRPCRequest):
            key = coerce_request_id(message.id)
            self.counts[key] = self.counts.get(key, 0) + 1
        elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
            request_id = (message.params or {}).get("requestId")
            if isinstance(request_id, (int, str)):
                self.counts.pop(coerce_request_id(request_id), None)  # the SDK never answers it
                self._notify()

    def answered(self, item) -> None:
        from mcp.shared.dispatcher import coerce_request_id
        from mcp_types import JSONRPCError, JSONRPCResponse

        message = item.message
        if isinstance(message, (JSONRPCResponse, JSONRPCError)) and message.id is not None:
            key = coerce_request_id(message.id)
            if self.counts.get(key, 0) > 1:
                self.counts[key] -= 1
            else:
                self.counts.pop(key, None)
            self._notify()

    async def drained(self) -> None:
        """Returns once every request read has its answer (or after DRAIN_SECONDS)."""
        import anyio

        with anyio.move_on_after(DRAIN_SECONDS):
            while self.counts:
                self.changed = anyio.Event()
                await self.changed.wait()

    def _notify(self) -> None:
        if self.changed is not None:
            self.changed.set()


class _Wrapped:
    """One of the SDK's streams, wrapped: closing and `async with` go to it."""

    def __init__(self, inner, unanswered: Unanswered) -> None:
        self.inner, self.unanswered = inner, unanswered

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()


class DrainingReader(_Wrapped):
    """The SDK's read stream, whose end waits until the requests read are answered: the SDK
    cancels the requests in flight when its read stream ends. A line the SDK could not read as
    a JSON-RPC message is answered here, on the wire: the SDK only logs it, so the client would
    wait for ever."""

    last_context = None  # the SDK's per-message context, passed on

    def __init__(self, inner, unanswered: Unanswered, wire: "Wire", lines: "Lines | None" = None) -> None:
        super().__init__(inner, unanswered)
        self.wire, self.lines = wire, lines

    async def receive(self):
        import anyio

        while True:
            try:
                item = await self.inner.receive()
            except anyio.EndOfStream:
                await self.unanswered.drained()
                raise
            line = self.lines.taken() if self.lines is not None else None
            if isinstance(item, Exception):
                refused = not_a_message(item)
            elif (kind := odd_id_of(item, line)) is not None:
                refused = refusal_of_odd_id(kind)
            elif (refused := long_method_answer(item, self.wire.methods)) is not None:
                pass
            else:
                break
            await self.wire.write(refused)
            await self.wire.flush()
        self.last_context = getattr(self.inner, "last_context", None)
        self.unanswered.read(item)
        if not self.wire.initialized and getattr(item.message, "method", None) == "initialize":
            self.wire.initialize_ids.add(_id_key(getattr(item.message, "id", None)))
        return item

    def __aiter__(self):
        return self

    async def __anext__(self):
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class AnswerCounter(_Wrapped):
    """The SDK's write stream, telling `Unanswered` of each answer it sends."""

    async def send(self, item) -> None:
        await self.inner.send(item)
        self.unanswered.answered(item)


class Lines:
    """The wire's lines as text, starting with the first one (already read, or its start). A line
    that is not UTF-8 is refused here with a parse error, as HTTP refuses such a body: decoded with
    replacement characters, its text would have been stored altered. A line longer than
    MAX_BODY_BYTES is refused as /mcp refuses such a body (-32000 payload_too_large), read on
    without being kept. A blank line is skipped (space between messages, not a message to refuse)."""

    def __init__(self, first: bytes, wire_in, wire: "Wire", limit: int) -> None:
        from collections import deque

        self.first, self.wire_in, self.wire, self.limit = first, wire_in, wire, limit
        self.given = deque()  # the lines handed to the SDK whose message DrainingReader has not taken yet

    def taken(self) -> str | None:
        """The line of the message (or refusal) the SDK just passed on: it reads each line given
        into one, in order."""
        return self.given.popleft() if self.given else None

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        import anyio

        while True:
            line = await anyio.to_thread.run_sync(read_line, self.wire_in, self.limit, self.first, abandon_on_cancel=True)
            self.first = b""
            if line is None:
                await self.wire.write(too_long(self.limit))
                await self.wire.flush()
                continue
            if not line:
                raise StopAsyncIteration
            if not line.strip(JSON_WHITESPACE):  # JSON's whitespace only: a line of control characters is answered -32700
                continue
            try:
                text = line.decode("utf-8")
                self.given.append(text)
                return text
            except UnicodeDecodeError as error:
                await self.wire.write(not_utf8(error))
                await self.wire.flush()


def read_line(wire_in, limit: int, start: bytes = b"") -> bytes | None:
    """The next line (b"" at the end of the input), going on from `start` (its first bytes, read
    already); None for one longer than `limit` bytes, whose rest is read and dropped a chunk at a
    time: memory stays bounded, and the next line read is the next message."""
    line = start
    if not line.endswith(b"\n") and len(line) <= limit:
        line += wire_in.readline(limit + 1 - len(line))
    if len(line) - line.endswith(b"\n") <= limit:
        return line
    while line and not line.endswith(b"\n"):
        line = wire_in.readline(SKIPPED_CHUNK_BYTES)
    return None


def too_long(limit: int) -> str:
    """The refusal of a line longer than `limit` (MAX_BODY_BYTES): what /mcp answers a body past it (413)."""
    from ..security.ratelimit import too_large
    from .mcp_errors import PATHS, refusal

    return refusal(PATHS[0], too_large(limit))[2].decode() + "\n"


def not_utf8(error: UnicodeDecodeError) -> str:
    """The JSON-RPC parse error for a line that is not UTF-8 (its id is unknown: null)."""
    from .mcp_errors import PARSE_ERROR

    return refusal(PARSE_ERROR, f"Parse error: the line is not UTF-8 ({error.reason} at byte {error.start}); nothing was"
                   " done. Send JSON in UTF-8")


def not_a_message(exc: Exception) -> str:
    """The JSON-RPC error for a line the SDK could not read as a message (`exc`, its pydantic
    ValidationError; id unknown: null): -32700 for a line that is not JSON, -32600 for JSON that
    is no JSON-RPC message."""
    from pydantic_core import ValidationError

    from .mcp_errors import INVALID_REQUEST, PARSE_ERROR

    problems = exc.errors() if isinstance(exc, ValidationError) else []
    not_json = [problem["msg"] for problem in problems if problem["type"] == "json_invalid"]
    if not_json:
        return refusal(PARSE_ERROR, f"Parse error: {not_json[0]}; nothing was done")
    return refusal(INVALID_REQUEST, "Invalid request: the line is JSON but not a JSON-RPC 2.0 message; nothing was done")


def odd_id_of(item, line: str | None) -> str | None:
    """What the id of a request the SDK read as a notification is (null, 1.5, true, {}, []): mcp_errors.odd_id.
    Only a notification's line that may name an id is parsed again (they are few and small)."""
    from mcp_types import JSONRPCNotification

    from .mcp_errors import may_name_id, odd_id

    if line is None or not isinstance(item.message, JSONRPCNotification) or not may_name_id(line):
        return None
    try:
        return odd_id(json.loads(line))
    except (ValueError, RecursionError):
        return None


def long_method_answer(item, methods: tuple[str, ...]) -> str | None:
    """The unknown-method error for a request whose method is too long to be one (mcp_errors.long_method):
    the SDK's echoed the name whole, past what line_with_error_data rewrites."""
    from .mcp_errors import MAX_METHOD_SHOWN, long_method

    message = item.message
    if not isinstance(getattr(message, "method", None), str) or len(message.method) <= MAX_METHOD_SHOWN:
        return None  # (a response has no method)
    answer = long_method({"id": getattr(message, "id", None), "method": message.method}, methods)
    return None if answer is None else answer.decode() + "\n"


def refusal_of_odd_id(kind: str) -> str:
    from .mcp_errors import odd_id_refusal

    return odd_id_refusal(kind).decode() + "\n"


def refusal(code: int, message: str) -> str:
    """The error line for a line read that is no JSON-RPC message (its id unknown: null), with the
    `data` HTTP refuses such a body with."""
    from .mcp_errors import with_error_data

    line = json.dumps({"jsonrpc": "2.0", "id": None, "error": {"code": code, "message": message}}).encode()
    return with_error_data(line, REFUSED).decode() + "\n"


class Wire:
    """Writes the SDK's messages to the wire (its errors with this server's `data`), but for
    its answer to an initialize request that was answered already. Lines writes its refusals
    here too: one BufferedWriter.write holds the buffer's lock, so two lines never interleave."""

    def __init__(self, wire_out, answered_id, methods: tuple[str, ...] = ()) -> None:
        self.wire_out, self.methods = wire_out, methods
        # The key of the initialize answered before the SDK loaded (None: none was), whose answer
        # from the SDK is dropped: a key, so a refusal's null id never matches it.
        self.dropped = None if answered_id is None else _id_key(answered_id)
        # Until an initialize request is answered with a result, the SDK refuses every other request
        # with invalid params: its error then says to initialize first.
        self.initialized, self.initialize_ids = False, set()

    async def write(self, text: str) -> None:
        import anyio

        uninitialized = False
        if self.dropped is not None or not self.initialized:
            message = json.loads(text)
            key = _id_key(message.get("id"))
            if key in self.initialize_ids and "result" in message:
                self.initialized = True
            uninitialized = not self.initialized and key not in self.initialize_ids
            if key == self.dropped and ("result" in message or "error" in message):
                self.dropped = None
                if "error" in message:  # quick_initialize vouched for params the SDK refuses: a bug to see
                    import logging

                    logging.error("the SDK refused the initialize answered before it loaded: %s", text.strip())
                return
        await anyio.to_thread.run_sync(self.wire_out.write, line_with_error_data(text.encode(), self.methods, uninitialized))

    async def flush(self) -> None:
        import anyio

        await anyio.to_thread.run_sync(self.wire_out.flush)


def _id_key(request_id) -> tuple:
    """A request id as a key: 1 and "1" are two ids."""
    return (type(request_id).__name__, request_id)


def line_with_error_data(line: bytes, methods: tuple[str, ...], uninitialized: bool = False) -> bytes:
    """The line, a JSON-RPC error of the SDK's (an unknown method, params that do not fit) given
    this server's `data` and hint as over HTTP: the same function mcp_asgi.py applies to the
    SDK's HTTP answers, on the same answers (`methods`, those served, for the hint)."""
    from .mcp_errors import ERROR_KEY, MAX_ERROR_BYTES, with_error_data

    if len(line) > MAX_ERROR_BYTES or ERROR_KEY not in line:
        return line
    return with_error_data(line.rstrip(b"\n"), IN_PROTOCOL, methods, uninitialized) + b"\n"
