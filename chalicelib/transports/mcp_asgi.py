"""MCP over streamable HTTP as one ASGI app, without FastAPI: the lean path in front of the
SDK's transport.

The server is stateless (no sessions), so it never has anything to send outside the answer to
a POST: GET /mcp is answered 405 rather than opening an SSE stream that would stay empty and
hold its connection until the client leaves. The MCP specification allows that, and clients
then use plain POSTs.

The local server (chalicelib/transports/asgi.py) hands it every /mcp request; on AWS Lambda,
chalicelib/transports/lambda_mcp.py serves it through Mangum. Both run this same code, so what the
lean-path tests prove locally holds on Lambda too.
"""

from contextlib import asynccontextmanager
from typing import AsyncIterator

from ..config import Settings
from .mcp_app import build_mcp_server, transport_security
from .mcp_lean import LeanMCP
from .raw_asgi import is_json, send_json

PATH = "/mcp"
UNSUPPORTED_MEDIA_TYPE = (
    b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,'
    b'"message":"Unsupported Media Type: Content-Type must be application/json"}}'
)
# In the form the SDK gives its own 405s.
NO_SSE_STREAM = (
    b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,'
    b'"message":"Method Not Allowed: no SSE stream (a stateless server); POST requests"}}'
)
ALLOW = b"POST"


def _lower_content_type(scope):
    """The scope with its Content-Type lower-cased: media types are case-insensitive, and the
    SDK compares `application/json` exactly (it answered `Application/JSON` with 415). (JSON's
    media type has no case-sensitive parameter.)"""
    headers = scope["headers"]
    return {**scope, "headers": [(name, value.lower() if name == b"content-type" else value) for name, value in headers]}


def _with_allow(send):
    """send() that gives a 405 its Allow header (the SDK's 405s name none, or name DELETE,
    which a stateless server refuses)."""

    async def send_with_allow(message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 405:
            headers = [(name, value) for name, value in message.get("headers", ()) if name.lower() != b"allow"]
            message = {**message, "headers": [*headers, (b"allow", ALLOW)]}
        await send(message)

    return send_with_allow


class MCPApp:
    """POST /mcp goes to the lean path (which hands anything unusual to the SDK); GET /mcp is
    refused here; every other request (DELETE, other paths, the lifespan) goes to the SDK's
    Starlette app."""

    def __init__(self, settings: Settings) -> None:
        self.server = build_mcp_server(settings)
        self.sdk = self.server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            json_response=True,
            transport_security=transport_security(settings),
        )
        self.lean = LeanMCP(self.server, settings, fallback=self.sdk) if settings.mcp_lean_path else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            content_type = next((value for name, value in scope["headers"] if name == b"content-type"), b"")
            if not is_json(content_type):
                # The SDK answers 400; 415 is what HTTP says (and what clients retry differently).
                await send_json(send, UNSUPPORTED_MEDIA_TYPE, 415)
                return
            if not content_type.islower():
                scope = _lower_content_type(scope)
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == PATH:
            await send_json(send, NO_SSE_STREAM, 405, {"allow": ALLOW.decode()})
            return
        if self.lean is not None and scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PATH:
            await self.lean(scope, receive, send)
        elif scope["type"] == "http":
            await self.sdk(scope, receive, _with_allow(send))
        else:
            await self.sdk(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Runs the SDK's session manager, whose task group serves every request that reaches
        the SDK. It can run only once per MCPApp: enter this once per process, around all
        requests (a server's lifespan), never per request."""
        async with self.server.session_manager.run():
            yield
