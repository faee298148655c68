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

import orjson
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, KNOWN_PROTOCOL_VERSIONS

from ..config import Settings
from .mcp_app import build_mcp_server, served_methods, transport_security
from .mcp_errors import (ERROR_KEY, MAX_ERROR_BYTES, long_method, may_name_id, odd_id, odd_id_refusal, unsupported_version,
                         with_error_data)
from .mcp_lean import MAX_BODY, LeanMCP
from .raw_asgi import header, is_json, json_headers, read_body, replay, send_json

PATH = "/mcp"
# In the form the SDK gives its own refusals, with the `data` with_error_data gives them.
UNSUPPORTED_MEDIA_TYPE = with_error_data(
    b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,'
    b'"message":"Unsupported Media Type: Content-Type must be application/json"}}', 415
)
NO_SSE_STREAM = with_error_data(
    b'{"jsonrpc":"2.0","id":null,"error":{"code":-32600,'
    b'"message":"Method Not Allowed: no SSE stream (a stateless server); POST requests"}}', 405
)
ALLOW = b"POST"
RESIZED = (b"content-type", b"content-length")  # the headers of a rewritten body: json_headers gives them again


def _lower_content_type(scope):
    """The scope with its Content-Type lower-cased: media types are case-insensitive, and the
    SDK compares `application/json` exactly (it answered `Application/JSON` with 415). (JSON's
    media type has no case-sensitive parameter.)"""
    return _lowered(scope, b"content-type")


def _lowered(scope, *names: bytes):
    """The scope with these headers' values lower-cased (bytes: A-Z only)."""
    return {**scope, "headers": [(name, value.lower() if name in names else value) for name, value in scope["headers"]]}


def _with_allow(send):
    """send() that gives a 405 its Allow header (the SDK's 405s name none, or name DELETE,
    which a stateless server refuses)."""

    async def send_with_allow(message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 405:
            headers = [(name, value) for name, value in message.get("headers", ()) if name.lower() != b"allow"]
            message = {**message, "headers": [*headers, (b"allow", ALLOW)]}
        await send(message)

    return send_with_allow


def _small_json(start) -> bool:
    """Is this response JSON short enough to hold whole (its length said, not a stream)? A
    JSON-RPC error may be: a refusal (status >= 400) or an error inside the protocol (200)."""
    headers = {name.lower(): value for name, value in start.get("headers", ())}
    length = headers.get(b"content-length", b"")
    return is_json(headers.get(b"content-type", b"")) and length.isdigit() and int(length) <= MAX_ERROR_BYTES


def _with_error_data(send, methods: tuple[str, ...]):
    """send() that gives the SDK's JSON-RPC errors (refusals, status >= 400, and errors answered
    200: an unknown method, invalid params) the `data` of this server's errors
    (mcp_errors.with_error_data; `methods`, those the server answers, for its hint). Only a small
    JSON body is held until whole, and parsed only if it is a refusal or holds "error" (a
    result rarely does); any other response (a large result, an SSE stream) passes as it comes.
    (The lean path's answers never come here: mcp_lean.py.)"""
    held, chunks, size = None, [], 0

    async def send_with_data(message) -> None:
        nonlocal held, size
        if message["type"] == "http.response.start" and _small_json(message):
            held = message
            return
        if held is None or message["type"] != "http.response.body":
            await send(message)
            return
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if message.get("more_body", False) and size <= MAX_ERROR_BYTES:
            return
        start, body, complete = held, b"".join(chunks), not message.get("more_body", False)
        held = None
        if complete and (start["status"] >= 400 or ERROR_KEY in body):  # else sent as it is
            body = with_error_data(body, start["status"], methods)
            kept = [(name, value) for name, value in start.get("headers", ()) if name.lower() not in RESIZED]
            start = {**start, "headers": [*json_headers(body), *kept]}
        await send(start)
        await send({"type": "http.response.body", "body": body, "more_body": not complete})

    return send_with_data


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
            transport_security=transport_security(),
        )
        self.methods = served_methods(self.server)
        self.lean = LeanMCP(self.server, settings, fallback=self.sdk_http) if settings.mcp_lean_path else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            content_type = header(scope, b"content-type", b"")
            if not is_json(content_type):
                # The SDK answers 400; 415 is what HTTP says (and what clients retry differently).
                await send_json(send, UNSUPPORTED_MEDIA_TYPE, 415)
                return
            if not content_type.islower():
                scope = _lower_content_type(scope)
            version = header(scope, b"mcp-protocol-version")
            if version is not None and version.decode("latin-1") not in KNOWN_PROTOCOL_VERSIONS:
                await send_json(send, unsupported_version(version.decode("latin-1"), KNOWN_PROTOCOL_VERSIONS), 400)
                return
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == PATH:
            await send_json(send, NO_SSE_STREAM, 405, {"allow": ALLOW.decode()})
            return
        if self.lean is not None and scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == PATH:
            await self.lean(scope, receive, send)
        elif scope["type"] == "http":
            await self.sdk_http(scope, receive, send)
        else:
            await self.sdk(scope, receive, send)

    async def sdk_http(self, scope, receive, send) -> None:
        """The SDK's answer to an HTTP request, its refusals in this server's error shape (the
        SDK's own internals untouched: only what it sends is rewritten). Refused here: a request
        whose id is neither a string nor an integer (the SDK took it for a notification: 202, no
        answer), and one whose method is too long to be one (the SDK echoed it whole; but under
        2026-07-28, whose Mcp-Method header the SDK checks first)."""
        if scope["method"] == "POST" and scope["path"] == PATH:
            body, complete = await read_body(receive, MAX_BODY)
            if complete and may_name_id(body):
                try:
                    message = orjson.loads(body)
                except orjson.JSONDecodeError:
                    message = None  # the SDK's parse error
                if (kind := odd_id(message, body)) is not None:
                    await send_json(send, odd_id_refusal(kind), 400)
                    return
                version = header(scope, b"mcp-protocol-version")
                if (version is None or version.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS) and (
                        answer := long_method(message, self.methods)) is not None:
                    await send_json(send, answer)
                    return
            receive = replay(body, complete, receive)
        # rebinding.check passed Host and Origin in any case (host names are case-insensitive); the
        # SDK's check behind it compares them exactly (it answered `Host: LOCALHOST:8791` 421).
        if any(name in (b"host", b"origin") and value != value.lower() for name, value in scope["headers"]):
            scope = _lowered(scope, b"host", b"origin")
        await self.sdk(scope, receive, _with_allow(_with_error_data(send, self.methods)))

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[None]:
        """Runs the SDK's session manager, whose task group serves every request that reaches
        the SDK. It can run only once per MCPApp: enter this once per process, around all
        requests (a server's lifespan), never per request."""
        async with self.server.session_manager.run():
            yield
