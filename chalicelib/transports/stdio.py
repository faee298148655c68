"""MCP over stdio: `agent-mail stdio` (or `python -m chalicelib stdio`), for clients that
start their server as a child process (Claude Desktop, Claude Code, Codex, Cursor...).

The same server as /mcp (mcp_app.build_mcp_server: the registry's tools, resources and
instructions), on the same database as the HTTP server; both may run at once (SQLite WAL).
Each starts an archive worker, and only one of them writes (the lock in ops/supervisor.py).

Only protocol reaches stdout: the wire gets private copies of fds 0 and 1, then fd 1 points
at stderr (where the logs go) and fd 0 at /dev/null, so a stray print, a warning or a child
process cannot corrupt it.

A client spawns this process for every session, so start-up counts. The first request,
`initialize`, is answered before anything heavy is imported (the MCP SDK alone takes about
half a second), with what the SDK would answer (tests/test_stdio_*.py compares). The SDK then
serves the session: it is handed that same request first, and its answer, already sent, is
dropped.
"""

import json
import os
import sys

from .. import __version__
from .instructions import INSTRUCTIONS

# Answered without the SDK: the handshake versions of mcp_types.version.HANDSHAKE_PROTOCOL_VERSIONS
# (a test compares). Any other first message waits for the SDK.
QUICK_VERSIONS = frozenset({"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"})
CAPABILITIES = {
    "prompts": {"listChanged": False},
    "resources": {"listChanged": False, "subscribe": False},
    "tools": {"listChanged": False},
}


def main(database_url: str | None = None) -> None:
    wire_in, wire_out = claim_stdio()
    first = wire_in.readline()
    answered = quick_initialize(first)
    if answered is not None:
        wire_out.write(answered[1])
        wire_out.flush()
    serve(first, None if answered is None else answered[0], wire_in, wire_out, database_url)


def claim_stdio():
    """The wire's own copies of stdin and stdout; fd 0 then reads /dev/null, fd 1 writes to stderr."""
    wire_in = os.fdopen(os.dup(0), "rb")
    wire_out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    return wire_in, wire_out


def quick_initialize(line: bytes) -> tuple[int | str, bytes] | None:
    """(request id, the answer line) for a well-formed initialize request; None for anything
    else (the SDK answers it, refusals included)."""
    try:
        request = json.loads(line)
    except ValueError:
        return None
    if not isinstance(request, dict) or request.get("jsonrpc") != "2.0" or request.get("method") != "initialize":
        return None
    request_id, params = request.get("id"), request.get("params")
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str)) or not isinstance(params, dict):
        return None
    client = params.get("clientInfo")
    if (
        params.get("protocolVersion") not in QUICK_VERSIONS
        or not isinstance(params.get("capabilities"), dict)
        or not isinstance(client, dict)
        or not isinstance(client.get("name"), str)
        or not isinstance(client.get("version"), str)
    ):
        return None
    result = {
        "capabilities": CAPABILITIES,
        "instructions": INSTRUCTIONS,
        "protocolVersion": params["protocolVersion"],
        "serverInfo": {"name": "agent-mail", "version": __version__},
    }
    answer = {"jsonrpc": "2.0", "id": request_id, "result": result}
    return request_id, json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def serve(first: bytes, answered_id, wire_in, wire_out, database_url: str | None) -> None:
    """The session after its first line: settings, logs to stderr, migrations, the archive
    worker, then the SDK's server until the client closes stdin (or SIGTERM)."""
    import logging
    import signal

    import anyio

    from ..archive.worker import LocalWorker
    from ..config import Settings, get_settings
    from ..store import db
    from .mcp_app import build_mcp_server

    settings = Settings(database_url=database_url) if database_url else get_settings()
    logging.basicConfig(stream=sys.stderr, level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    db.migrate(settings)
    server = build_mcp_server(settings)
    worker = LocalWorker(settings) if settings.archive_enabled else None

    def terminate(*_) -> None:
        """SIGTERM (a client that is done with us): stop the worker, then go at once; a thread
        blocked reading stdin would keep a normal exit waiting. Every acknowledged write is
        committed; one in progress rolls back and was never answered."""
        if worker:
            worker.stop()
        logging.shutdown()
        os._exit(0)

    if worker:
        worker.start()
    signal.signal(signal.SIGTERM, terminate)
    try:
        anyio.run(session, server, Lines(first, wire_in), Wire(wire_out, answered_id))
    finally:
        if worker:
            worker.stop()


async def session(server, stdin, stdout) -> None:
    from mcp.server.stdio import stdio_server

    async with stdio_server(stdin, stdout) as (read_stream, write_stream):
        lowlevel = server._lowlevel_server
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


class Lines:
    """The wire's lines as text, starting with the first one (already read)."""

    def __init__(self, first: bytes, wire_in) -> None:
        self.first, self.wire_in = first, wire_in

    def __aiter__(self):
        return self

    async def __anext__(self) -> str:
        import anyio

        line, self.first = self.first or await anyio.to_thread.run_sync(self.wire_in.readline, abandon_on_cancel=True), b""
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", errors="replace")


class Wire:
    """Writes the SDK's messages to the wire, but for its answer to an initialize request
    that was answered already."""

    def __init__(self, wire_out, answered_id) -> None:
        self.wire_out, self.answered_id = wire_out, answered_id

    async def write(self, text: str) -> None:
        import anyio

        if self.answered_id is not None:
            message = json.loads(text)
            if message.get("id") == self.answered_id and ("result" in message or "error" in message):
                self.answered_id = None
                return
        await anyio.to_thread.run_sync(self.wire_out.write, text.encode())

    async def flush(self) -> None:
        import anyio

        await anyio.to_thread.run_sync(self.wire_out.flush)
