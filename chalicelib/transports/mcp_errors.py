"""The one shape of an error over MCP, outside a tool result.

A tool's error is a tool result (`isError: true`) whose text is the REST body
`{"error": {"code", "message", "hint"}}`. A JSON-RPC error this server makes (the protocol's
own, such as an unknown method, are the SDK's) has the error's message as `message` and that
same body as `data`: a resource read that fails (mcp_resources.py) and a refusal before the
MCP app (Host, Origin, credentials, body size, rate limit: `refusal`, for asgi.py and app.py).
So a client reads `["error"]["code"]` from whichever JSON it got.

Imports nothing heavy: the Chalice app builds its refusals with it on every cold start.
"""

import orjson

from ..errors import ToolError

PATHS = ("/mcp", "/mcp/")  # the SDK redirects /mcp/ to /mcp
SERVER_ERROR = -32000  # JSON-RPC's "implementation-defined server error": refused before any method ran


def jsonrpc_error(code: int, body: dict) -> dict:
    """A JSON-RPC error object for an error body `{"error": {...}}`."""
    return {"code": code, "message": body["error"]["message"], "data": body}


def refusal(path: str, exc: ToolError) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) refusing a request before its route (Host, Origin, credentials,
    body size, rate limit): on /mcp the JSON-RPC error an MCP client shows (given the REST body,
    the official client said only "Server returned an error response"), else the REST body.
    The status and headers (WWW-Authenticate, Retry-After) are the same either way."""
    body = exc.to_dict()
    if path in PATHS:
        body = {"jsonrpc": "2.0", "id": None, "error": jsonrpc_error(SERVER_ERROR, body)}
    return exc.status, {"Content-Type": "application/json", **exc.headers}, orjson.dumps(body)
