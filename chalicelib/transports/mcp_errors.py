"""The one shape of an error over MCP, outside a tool result.

A tool's error is a tool result (`isError: true`) whose text is the REST body
`{"error": {"code", "message", "hint"}}`. Everything else that goes wrong on /mcp is a
JSON-RPC error whose `message` is the error's message and whose `data` is that same body: a
resource read that fails (mcp_resources.py) and a refusal before the MCP app (Host, Origin,
credentials, body size, rate limit: asgi.py, app.py). So a client reads `["error"]["code"]`
from whichever JSON it got.

Imports nothing heavy: the Chalice app builds its refusals with it on every cold start.
"""

import orjson

from ..errors import ToolError

SERVER_ERROR = -32000  # JSON-RPC's "implementation-defined server error": refused before any method ran


def jsonrpc_error(code: int, body: dict) -> dict:
    """A JSON-RPC error object for an error body `{"error": {...}}`."""
    return {"code": code, "message": body["error"]["message"], "data": body}


def refusal_body(exc: ToolError) -> bytes:
    """A refusal of an MCP request before the MCP app, as the JSON-RPC error the client's
    transport understands (given the REST body, the official client said only "Server returned
    an error response")."""
    return orjson.dumps({"jsonrpc": "2.0", "id": None, "error": jsonrpc_error(SERVER_ERROR, exc.to_dict())})
