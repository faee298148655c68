"""MCP on AWS Lambda: API Gateway events, through Mangum, to the MCP ASGI app (mcp_asgi.py).

Mangum translates an event into an ASGI request and the response back (REST API v1
events, HTTP API and function URL v2 events). Its `Mangum` adapter is not used as a whole,
because it would break this app twice:

- it runs the ASGI lifespan around every invocation, and the SDK's session manager runs
  only once per instance, so the second invocation would fail. Here the lifespan is entered
  once per process, in a task that lives as long as the process.
- it runs each invocation with `run_until_complete` on the calling thread's event loop.
  `chalice local` calls from a new thread per request (with no loop), and what anyio and
  the SDK set up on one loop must not be used from another. Here one event loop runs
  forever on a background thread; every invocation, from whatever thread, is submitted to it.

This module imports nothing heavy: `MCPHandler` imports Mangum, Starlette and the MCP SDK on
its first call, so a Lambda container that only ever serves REST never pays for them.
"""

import asyncio
import logging
import threading
from concurrent.futures import Future
from typing import Any

from ..config import Settings
from ..lambda_response import LAMBDA_MCP, lambda_answers


class MCPHandler:
    """`handler(event, context) -> response` for MCP events; the MCP app is built, and its
    lifespan started, on the first call (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._runtime: _Runtime | None = None
        self._lock = threading.Lock()

    def __call__(self, event: dict, context: Any) -> dict:
        runtime = self._runtime or self._start()
        # The event loop runs the request in a copy of this context: its tools' answers are measured
        # as Lambda writes them (an answer past its 6 MB is a tool error, not a failed invocation).
        with lambda_answers(LAMBDA_MCP):
            return runtime(event, context)

    def _start(self) -> "_Runtime":
        with self._lock:
            if self._runtime is None:
                self._runtime = _Runtime(self.settings)
            return self._runtime


class _Runtime:
    """The MCP app and the one event loop (on its own thread) that runs it."""

    def __init__(self, settings: Settings) -> None:
        # Imported here, on the first MCP request, not when app.py is imported (see above).
        from mangum.adapter import DEFAULT_TEXT_MIME_TYPES
        from mangum.handlers import APIGateway, HTTPGateway
        from mangum.protocols import HTTPCycle

        from .mcp_asgi import MCPApp

        self.app = MCPApp(settings)
        self.event_kinds = (HTTPGateway, APIGateway)  # v2 (and v1 with a "version"), then v1
        self.config = {"api_gateway_base_path": "/", "text_mime_types": DEFAULT_TEXT_MIME_TYPES, "exclude_headers": []}
        self.http_cycle = HTTPCycle
        # Mangum logs a line per request; API Gateway's access log is the place for that.
        logging.getLogger("mangum.http").setLevel(logging.WARNING)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="mcp-event-loop", daemon=True).start()
        started: Future = Future()
        asyncio.run_coroutine_threadsafe(self._lifespan(started), self.loop)
        started.result()  # raises if the app failed to start

    def __call__(self, event: dict, context: Any) -> dict:
        kind = next((kind for kind in self.event_kinds if kind.infer(event, context, self.config)), None)
        if kind is None:
            raise ValueError("not an API Gateway (REST or HTTP API) or function URL event")
        request = kind(event, context, self.config)
        response = asyncio.run_coroutine_threadsafe(self._respond(request.scope, request.body), self.loop).result()
        return request(response)

    async def _respond(self, scope: dict, body: bytes) -> dict:
        cycle = self.http_cycle(scope, body)
        await cycle.run(self.app)  # an exception becomes a 500, as under uvicorn
        headers = cycle.headers
        if cycle.body and not any(name.lower() == b"content-type" for name, _ in headers):
            # The SDK's plain-text refusals have no content type; Mangum (v2) and API Gateway (v1)
            # would call them application/json.
            headers = [*headers, (b"content-type", b"text/plain; charset=utf-8")]
        return {"status": cycle.status, "headers": headers, "body": cycle.body}

    async def _lifespan(self, started: Future) -> None:
        try:
            async with self.app.lifespan():
                started.set_result(None)
                await asyncio.Event().wait()  # as long as the process lives
        except BaseException as exc:
            if not started.done():
                started.set_exception(exc)
            raise
