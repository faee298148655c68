"""A lean path for the hot MCP requests, in front of the SDK's streamable-HTTP transport.

The SDK spends ~0.8 ms of CPU per request (task groups, memory streams, a transport per
stateless request). Most traffic is stateless JSON `tools/call`, `tools/list`,
`initialize` and `ping`; those are answered here directly, with the same JSON-RPC
results the SDK gives (tests compare the two). Anything else — sessions, SSE, batches,
notifications, unknown methods, a tool name or arguments of the wrong type, odd headers,
malformed JSON — is handed to the SDK unchanged, so its behaviour (and its errors) stay the
reference.
"""

from functools import lru_cache, partial
from typing import Any

import orjson
from mcp.server import MCPServer
from mcp_types import (
    DEFAULT_NEGOTIATED_VERSION,
    Implementation,
    InitializeRequestParams,
    InitializeResult,
    ListToolsResult,
    methods,
)
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, ValidationError

from ..config import Settings
from ..errors import ClientGone
from ..invoke import run_tool
from ..ops import logs
from .mcp_app import beside_the_loop_if_large, unknown_tool_body
from .raw_asgi import is_json, read_body, replay, send_json
from ..tools import tools_by_name

MAX_BODY = 4 * 1024 * 1024  # the SDK's default limit; larger bodies go to the SDK to be refused


@lru_cache(maxsize=64)  # clients send the same few Accept headers
def _accepts_json_and_sse(accept: str) -> bool:
    types = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    json_ok = bool(types & {"application/json", "application/*", "*/*"})
    sse_ok = bool(types & {"text/event-stream", "text/*", "*/*"})
    return json_ok and sse_ok


class LeanMCP:
    def __init__(self, server: MCPServer, settings: Settings, fallback) -> None:
        self.server = server
        self.settings = settings
        self.fallback = fallback
        self.tools = tools_by_name()
        self._tools_list: dict[str, bytes] = {}
        self._initialize: dict[str, bytes] = {}

    async def __call__(self, scope, receive, send) -> None:
        headers = dict(scope["headers"])
        if not self._plain_json_request(headers):
            return await self.fallback(scope, receive, send)
        body, complete = await read_body(receive, MAX_BODY)
        if not complete and len(body) <= MAX_BODY:  # the client went away mid-body: no one to answer (the SDK logged a 500)
            logs.note(status=ClientGone.status)
            return
        version = _text(headers.get(b"mcp-protocol-version")) or DEFAULT_NEGOTIATED_VERSION
        response = await self._answer(body, version) if complete else None
        if response is None:
            return await self.fallback(scope, replay(body, complete, receive), send)
        await send_json(send, response)

    def _plain_json_request(self, headers: dict[bytes, bytes]) -> bool:
        """A stateless JSON POST the SDK would accept (Host and Origin were checked before:
        chalicelib/security/rebinding.py)."""
        version = headers.get(b"mcp-protocol-version")
        return (
            is_json(headers.get(b"content-type", b""))
            and _accepts_json_and_sse(headers.get(b"accept", b"").decode("latin-1"))
            and b"mcp-session-id" not in headers
            and (version is None or version.decode("latin-1") in HANDSHAKE_PROTOCOL_VERSIONS)
        )

    async def _answer(self, body: bytes, version: str) -> bytes | None:
        """The response body, or None to let the SDK answer."""
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        if not isinstance(request, dict) or request.get("jsonrpc") != "2.0":
            return None
        request_id = request.get("id")
        if isinstance(request_id, bool) or not isinstance(request_id, (int, str)):
            return None  # notifications and odd ids
        params = request.get("params")
        if params is not None and not isinstance(params, dict):
            return None
        result = await self._result(request.get("method"), params or {}, version)
        if result is None:
            return None
        # One encoding pass: a tool's JSON result is copied once, not once per enclosing layer.
        return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})

    async def _result(self, method: Any, params: dict, version: str) -> dict | orjson.Fragment | None:
        if method == "tools/call":
            return await self._call_tool(params)
        if method == "tools/list" and "cursor" not in params:
            return orjson.Fragment(await self._list_tools(version))
        if method == "initialize":
            result = self._initialize_result(params)
            return None if result is None else orjson.Fragment(result)
        if method == "ping":
            return {}
        return None

    async def _call_tool(self, params: dict) -> dict | None:
        name, arguments = params.get("name"), params.get("arguments")
        if not isinstance(name, str) or not (arguments is None or isinstance(arguments, dict)):
            return None  # the SDK refuses it (-32602)
        tool = self.tools.get(name)
        if tool is None:
            is_error, payload = True, unknown_tool_body(name)
        else:
            is_error, payload = await run_tool(tool, arguments or {}, self.settings, twice=True)
        if tool is not None and tool.mcp_content and not is_error:
            blocks, payload = await beside_the_loop_if_large(payload, partial(tool.mcp_content, payload))
            result: dict[str, Any] = {"content": blocks}
        else:
            result = {"content": [{"type": "text", "text": payload.decode()}]}
        if not is_error:
            result["structuredContent"] = orjson.Fragment(payload)
        result["isError"] = is_error
        return result

    async def _list_tools(self, version: str) -> bytes:
        if version not in self._tools_list:
            tools = ListToolsResult(tools=await self.server.list_tools())
            self._tools_list[version] = _wire("tools/list", version, tools)
        return self._tools_list[version]

    def _initialize_result(self, params: dict) -> bytes | None:
        try:
            requested = InitializeRequestParams.model_validate(params, by_name=False).protocol_version
        except ValidationError:
            return None  # the SDK words the refusal
        if requested not in HANDSHAKE_PROTOCOL_VERSIONS:
            return None  # the SDK negotiates
        if requested not in self._initialize:
            options = self.server._lowlevel_server.create_initialization_options()
            result = InitializeResult(
                protocol_version=requested,
                capabilities=options.capabilities,
                server_info=Implementation(
                    name=options.server_name,
                    title=options.title,
                    description=options.description,
                    version=options.server_version,
                    website_url=options.website_url,
                    icons=options.icons,
                ),
                instructions=options.instructions,
            )
            self._initialize[requested] = _wire("initialize", requested, result)
        return self._initialize[requested]


def _wire(method: str, version: str, result: BaseModel) -> bytes:
    """A result in the exact wire form the SDK sends for this protocol version."""
    dumped = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return orjson.dumps(methods.serialize_server_result(method, version, dumped))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
