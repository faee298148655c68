"""MCP over streamable HTTP as one ASGI app, without FastAPI: the lean path in front of the
SDK's transport.

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


def _json_content(scope) -> bool:
    return is_json(next((value for name, value in scope["headers"] if name == b"content-type"), b""))


def _with_allow(send, allow: bytes):
    """send() that gives a 405 its Allow header (the SDK's 405s name none, or name DELETE,
    which a stateless server refuses)."""

    async def send_with_allow(message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 405:
            headers = [(name, value) for name, value in message.get("headers", ()) if name.lower() != b"allow"]
            message = {**message, "headers": [*headers, (b"allow", allow)]}
        await send(message)

    return send_with_allow


class MCPApp:
    """POST /mcp goes to the lean path (which hands anything unusual to the SDK); every other
    request (GET, DELETE, other paths, the lifespan) goes to the SDK's Starlette app."""

    def __init__(self, settings: Settings, allow: bytes = b"GET, POST") -> None:
        self.allow = allow  # the methods that get an answer other than 405
        self.server = build_mcp_server(settings)
        self.sdk = self.server.streamable_http_app(
            streamable_http_path=PATH,
            stateless_http=True,
            json_response=True,
            transport_security=transport_security(settings),
        )
        self.lean = LeanMCP(self.server, settings, fallback=self.sdk) if settings.mcp_lean_path else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not _json_content(scope):
            # The SDK answers 400; 415 is what HTTP says (and what clients retry differently).
            await send_json(send, UNSUPPORTED_MEDIA_TYPE, 415)
            return
        if self.lean is not None and scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PATH:
            await self.lean(scope, receive, send)
        elif scope["type"] == "http":
            await self.sdk(scope, receive, _with_allow(send, self.allow))
        else:
            await self.sdk(scope, receive, send)

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Runs the SDK's session manager, whose task group serves every request that reaches
        the SDK. It can run only once per MCPApp: enter this once per process, around all
        requests (a server's lifespan), never per request."""
        async with self.server.session_manager.run():
            yield
