"""The one shape of an error over MCP, outside a tool result.

A tool's error is a tool result (`isError: true`) whose text is the REST body
`{"error": {"code", "message", "hint"}}`. A JSON-RPC error this server makes has the error's
message as `message` and that same body as `data`: a resource read that fails
(mcp_resources.py), a refusal before the MCP app (Host, Origin, credentials, body size, rate
limit: `refusal`, for asgi.py and app.py), and the SDK's refusals of a malformed HTTP request
(not JSON, not a JSON-RPC message, a method or Accept it does not take) and its errors inside
the protocol, answered 200 (an unknown method, params that do not fit it): `with_error_data`,
for mcp_asgi.py and, on each line the SDK writes and on a line it could not read, stdio.py. So a client reads
`["error"]["code"]` from whichever JSON it got, over either transport.

Imports nothing heavy: the Chalice app builds its refusals with it on every cold start.
"""

import json

import orjson

from ..errors import HTTP_ERROR_CODES, ToolError, did_you_mean, internal_error

PATHS = ("/mcp", "/mcp/")  # the SDK redirects /mcp/ to /mcp
SERVER_ERROR = -32000  # JSON-RPC's "implementation-defined server error": refused before any method ran
PARSE_ERROR, INVALID_REQUEST = -32700, -32600
METHOD_NOT_FOUND, INVALID_PARAMS, INTERNAL_ERROR = -32601, -32602, -32603
# The code of an error the SDK answers 200 (no HTTP status to go by), by its JSON-RPC code.
RPC_ERROR_CODES = {METHOD_NOT_FOUND: "not_found", INVALID_PARAMS: "invalid_argument", INTERNAL_ERROR: "internal_error"}
# An answer of the SDK's that may be one of its errors: small (they are a few hundred bytes; a
# larger answer passes as it is, never held nor parsed) and holding "error" (a result rarely does).
MAX_ERROR_BYTES = 64 * 1024
ERROR_KEY = b'"error"'
MAX_METHOD_SHOWN = 100  # characters of an unknown method's name in a hint (it may be most of a 1 MiB body)
# Served methods the SDK answers under some protocol versions only (mcp_types.methods.CLIENT_REQUESTS; a
# test compares): the handshake's up to 2025-11-25, and 2026-07-28's own.
EARLIER_ONLY, LATER_ONLY = ("initialize", "ping"), ("server/discover", "subscriptions/listen")
LAST_HANDSHAKE_VERSION, MODERN_VERSION = "2025-11-25", "2026-07-28"
SEND = "POST /mcp with Content-Type: application/json and Accept: application/json, text/event-stream"
EXAMPLE = '{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'


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


NOT_A_MESSAGE = ("Invalid request: the body is JSON but not a JSON-RPC 2.0 message (nor a batch of them, which this"
                 " server does not take); nothing was done")
NOT_INITIALIZED = "Invalid request: the session is not initialized; nothing was done"
NOT_INITIALIZED_HINT = ("Send initialize first (then notifications/initialized), and this request after its answer; an MCP"
                        " client library does this.")


def with_error_data(body: bytes, status: int, methods: tuple[str, ...] = (), uninitialized: bool = False) -> bytes:
    """A JSON-RPC error of the SDK's (a refusal with an HTTP error `status`: a parse error, a body
    that is no JSON-RPC message, a 405 or 406; or, answered 200, an unknown method, params that do
    not fit), with `data` the error body and a hint on how to fix the request; `methods`: those
    the server answers, for the hint. The SDK's own `data` (an unknown method's name, or "") is
    replaced. Anything else (not JSON, no error, `data` an object already): unchanged. `uninitialized`: a
    stdio session before its initialize was answered, where the SDK refuses every request with invalid params."""
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    error = answer.get("error") if isinstance(answer, dict) else None
    if not isinstance(error, dict) or isinstance(error.get("data"), dict) or not isinstance(error.get("message"), str):
        return body
    rpc_code = error.get("code")
    if status == 400 and rpc_code == INVALID_PARAMS and answer.get("id") is None:
        # JSON the SDK could not read as a JSON-RPC message: JSON-RPC's "Invalid Request", as stdio answers it,
        # in one line (the SDK's message was pydantic's dump of the union's errors, a dozen lines)
        rpc_code = INVALID_REQUEST
        error = {**error, "message": NOT_A_MESSAGE}
    if rpc_code == INVALID_PARAMS and answer.get("id") is not None:  # a request read, whose params do not fit (400 or not)
        code = RPC_ERROR_CODES[INVALID_PARAMS]
    else:
        code = HTTP_ERROR_CODES.get(status) or RPC_ERROR_CODES.get(rpc_code, "bad_request")
    hint = request_hint(status, rpc_code, answer.get("id")) or protocol_hint(status, rpc_code, error.get("data"), methods,
                                                                             error["message"])
    if uninitialized and rpc_code == INVALID_PARAMS and answer.get("id") is not None:
        error, hint = {**error, "message": NOT_INITIALIZED}, NOT_INITIALIZED_HINT
    data = {"error": {"code": code, "message": error["message"], "hint": hint}}
    return orjson.dumps({**answer, "error": {**error, "code": rpc_code, "data": data}})


FRACTION = "a number with a fraction or exponent"
_ID_KINDS = ((type(None), "null"), (bool, "a boolean"), (float, FRACTION), (dict, "an object"), (list, "an array"))


def may_name_id(raw: bytes | str) -> bool:
    """Might this raw JSON message have an "id" key? The test before parsing it again: the key as
    written, or any \\u escape (the key may be spelt "\\u0069d")."""
    if isinstance(raw, str):
        return '"id"' in raw or "\\u" in raw
    return b'"id"' in raw or b"\\u" in raw


def odd_id(message, raw: bytes | str | None = None) -> str | None:
    """What a request's id is when it is neither a string nor an integer (null, 1.5, true, {}, []):
    the SDK reads such a message as a notification, never answered, its method never run; MCP
    allows neither, and JSON-RPC answers a message with an id. None for any other message.
    `raw`: the JSON `message` was parsed from by orjson, which reads an integer past 64 bits as a
    float: such an id is an integer (the SDK answers it, over stdio as over HTTP)."""
    if not isinstance(message, dict) or "id" not in message or "method" not in message:
        return None
    kind = next((kind for cls, kind in _ID_KINDS if isinstance(message["id"], cls)), None)
    if kind == FRACTION and raw is not None and _integer_id(raw):
        return None
    return kind


def _integer_id(raw: bytes | str) -> bool:
    """Is the id of this JSON message an integer, read exactly (json, not orjson)? Only a float id
    asks: rare."""
    try:
        message = json.loads(raw)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and type(message.get("id")) is int


def odd_id_refusal(kind: str) -> bytes:
    """The JSON-RPC Invalid Request (id null) for a request whose id is `kind` (odd_id), with the
    `data` of a body that is no JSON-RPC message; HTTP answers it 400."""
    message = f"Invalid request: a request's id must be a string or an integer, not {kind}; nothing was done"
    error = {"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": message}}
    return with_error_data(orjson.dumps(error), 400)


def long_method(message, methods: tuple[str, ...]) -> bytes | None:
    """The unknown-method error for a request whose method is longer than MAX_METHOD_SHOWN (no
    method is), answered here: the SDK echoes the name whole as `data`, an answer as large as the
    request (past MAX_ERROR_BYTES with_error_data leaves it so, `data` a string). None otherwise."""
    if not isinstance(message, dict) or not isinstance(method := message.get("method"), str) or len(method) <= MAX_METHOD_SHOWN:
        return None
    request_id = message.get("id")
    if isinstance(request_id, bool) or not isinstance(request_id, (int, str)):
        return None  # a notification (never answered) or odd_id's
    error = {"jsonrpc": "2.0", "id": request_id, "error": {"code": METHOD_NOT_FOUND, "message": "Method not found", "data": method}}
    return with_error_data(orjson.dumps(error), 200, methods)


def served_list(methods: tuple[str, ...]) -> str:
    """The methods served, those of some protocol versions only said so."""
    earlier = [method for method in methods if method in EARLIER_ONLY]
    later = [method for method in methods if method in LATER_ONLY]
    listed = ", ".join(method for method in methods if method not in EARLIER_ONLY and method not in LATER_ONLY)
    if earlier:
        listed += f"; {', '.join(earlier)} under protocols up to {LAST_HANDSHAKE_VERSION}"
    if later:
        listed += f"; {', '.join(later)} under {MODERN_VERSION} only"
    return listed


def unsupported_version(value: str, versions: tuple[str, ...]) -> bytes:
    """The 400 for an MCP-Protocol-Version header naming no version this server speaks (the SDK
    took it for 2026-07-28 and asked for that protocol's _meta envelope)."""
    shown = _cut(value)
    message = f"Bad Request: unsupported MCP-Protocol-Version {shown!r}; this server speaks {', '.join(versions)}"
    hint = ("Send MCP-Protocol-Version with the version initialize negotiated (an MCP client library does), or leave it"
            f" out ({LAST_HANDSHAKE_VERSION}'s answers).")
    body = {"error": {"code": HTTP_ERROR_CODES.get(400, "bad_request"), "message": message, "hint": hint}}
    return orjson.dumps({"jsonrpc": "2.0", "id": None, "error": jsonrpc_error(INVALID_REQUEST, body)})


def _cut(text: str) -> str:
    """A name from the request, as an answer shows it: its first MAX_METHOD_SHOWN characters."""
    return text if len(text) <= MAX_METHOD_SHOWN else text[:MAX_METHOD_SHOWN] + "…"


def request_hint(status: int, rpc_code, rpc_id) -> str:
    """How to fix an HTTP request the MCP transport refused; "" when the SDK read a JSON-RPC
    request and its error is about the request's method or params (protocol_hint)."""
    if status == 405:
        return f"Send each JSON-RPC message as {SEND}: the server is stateless, with no SSE stream to GET nor session to DELETE."
    if status == 406:
        return "Send Accept: application/json, text/event-stream (as MCP clients do): the answer is JSON."
    if status == 415:
        return "Send the JSON-RPC message as its body with Content-Type: application/json."
    if rpc_code == PARSE_ERROR:
        return f"The body (over stdio, each line) must be valid JSON: one JSON-RPC 2.0 message, e.g. {EXAMPLE}."
    if status == 400 and rpc_id is None:  # no message the SDK could answer by its id
        return ('Send one JSON object (not an array) that is a JSON-RPC 2.0 message: "jsonrpc": "2.0", a "method",'
                f' an "id" for a request (a string or an integer), "params" an object if any; e.g. {EXAMPLE}.')
    return ""


def protocol_hint(status: int, rpc_code, sdk_data, methods: tuple[str, ...], message: str = "") -> str:
    """How to fix a JSON-RPC request the SDK read but could not answer (`sdk_data`: its `data`,
    the method's name for an unknown method; `message`: its error's)."""
    if rpc_code == METHOD_NOT_FOUND:
        method = str(sdk_data)
        shown = _cut(method)
        if method in methods and method in LATER_ONLY:  # server/discover under a handshake version
            return (f"{shown!r} is answered only under MCP protocol {MODERN_VERSION} (MCP-Protocol-Version: {MODERN_VERSION},"
                    " each request's params carrying its _meta envelope), not under the one this request gave; a tool is"
                    " called with tools/call.")
        if method in methods:  # one the SDK answers under earlier protocol versions only (ping under 2026-07-28)
            return (f"{shown!r} is answered under earlier MCP protocol versions, not under the one this request gave"
                    " (MCP-Protocol-Version); a tool is called with tools/call.")
        guess = did_you_mean(method, methods) if len(method) <= MAX_METHOD_SHOWN else ""
        return (f"No method {shown!r} here.{guess} This server answers: {served_list(methods)}; a tool is called with"
                ' tools/call, params {"name": a tool\'s name from tools/list, "arguments": an object}.')
    if rpc_code == INVALID_PARAMS and "_meta" in message:  # the 2026-07-28 protocol's envelope
        return ("Under protocol 2026-07-28 every request's params carry _meta with io.modelcontextprotocol/protocolVersion"
                " and io.modelcontextprotocol/clientCapabilities (an MCP client library adds them); or send an earlier"
                " MCP-Protocol-Version.")
    if rpc_code == INVALID_PARAMS:
        return ('The params do not fit the method: tools/call takes {"name": a string from tools/list, "arguments":'
                ' an object}, resources/read {"uri": a string}, the lists an optional string "cursor";'
                ' initialize {"protocolVersion", "capabilities", "clientInfo"}. An MCP client library sends them right.')
    if rpc_code == INTERNAL_ERROR:
        return internal_error().hint
    if status >= 400:
        return f"Send JSON-RPC 2.0 messages as {SEND}; an MCP client library does this for you."
    return "See what this server offers with tools/list, resources/list, resources/templates/list and prompts/list."
