"""The MCP server, generated from the tool registry (the `mcp` SDK's MCPServer).

Each registry tool becomes an MCP tool whose input schema is the tool's input model and
whose output schema is its output model. Results carry the output as structured content
and, for older clients, as compact JSON text. Tool errors are MCP tool errors whose
text is the same `{"error": {...}}` JSON the REST API answers with.
"""

import asyncio
from collections.abc import Callable
from typing import Any

import orjson
from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.server.mcpserver.tools.base import Tool as SDKTool
from mcp.server.mcpserver.utilities.func_metadata import ArgModelBase, FuncMetadata
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import CallToolResult, ToolAnnotations
from mcp_types.methods import SPEC_CLIENT_METHODS
from pydantic import ConfigDict

from .. import __version__
from ..invoke import run_tool
from ..config import Settings
from .instructions import instructions
from .mcp_resources import add_resources, refuse_unknown_query, unknown_prompt, unknown_resource
from ..registry import Tool
from ..errors import unknown_tool
from ..tools import all_tools, profile_tools, tools_by_name




# An answer larger than this is turned into MCP content beside the event loop: an attachment's
# (up to ATTACHMENT_INLINE_MAX_BYTES) is decoded and measured for tens of milliseconds.
OFF_LOOP_BYTES = 256 * 1024


async def beside_the_loop_if_large(payload: bytes, make: Callable[[], Any]) -> Any:
    """make(), in a thread when `payload` is large (OFF_LOOP_BYTES)."""
    return await asyncio.to_thread(make) if len(payload) > OFF_LOOP_BYTES else make()


def result_dict(is_error: bool, payload: bytes, content=None) -> dict:
    """The CallToolResult wire form (camelCase keys); `content`: the tool's mcp_content."""
    if content and not is_error:
        blocks, payload = content(payload)
    else:
        blocks = [{"type": "text", "text": payload.decode()}]
    result: dict[str, Any] = {"content": blocks}
    if not is_error:
        result["structuredContent"] = orjson.loads(payload)
    result["isError"] = is_error
    return result


class _RawArguments(ArgModelBase):
    """Hands the client's arguments through untouched: our own input model validates
    them, so a bad call gets the same error on every transport."""

    model_config = ConfigDict(extra="allow")

    def model_dump_one_level(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def annotations(tool: Tool) -> ToolAnnotations:
    """MCP's hints, from the registry: a host may ask a person before a destructive tool runs
    (the spec's default when left out is destructive, so each is said)."""
    return ToolAnnotations(read_only_hint=tool.read_only, destructive_hint=tool.destructive,
                           idempotent_hint=tool.repeat_safe, open_world_hint=False)


def input_schema(tool: Tool) -> dict:
    return tool.input.model_json_schema()


def output_schema(tool: Tool) -> dict:
    return tool.output.model_json_schema(mode="serialization")


def sdk_tool(tool: Tool, settings: Settings) -> SDKTool:
    async def fn(**arguments: Any) -> CallToolResult:
        is_error, payload = await run_tool(tool, arguments, settings, twice=True)
        return await beside_the_loop_if_large(
            payload, lambda: CallToolResult.model_validate(result_dict(is_error, payload, tool.mcp_content)))

    return SDKTool(
        fn=fn,
        name=tool.name,
        description=tool.description,
        parameters=input_schema(tool),
        fn_metadata=FuncMetadata(arg_model=_RawArguments, output_schema=output_schema(tool)),
        is_async=True,
        annotations=annotations(tool),
    )


def transport_security() -> TransportSecuritySettings:
    """The SDK's own Host and Origin check, off: ours (security/rebinding.py) runs on every route,
    the SDK's included, before the SDK sees a request. The SDK's, behind it, disagreed with ours
    now and then, in plain text where ours answers JSON: `Host: localhost` (port 80) until session
    36, a request without a Host header (which ours lets through, as REST and the lean path serve
    it) until session 40."""
    return TransportSecuritySettings(enable_dns_rebinding_protection=False)


class AgentMailServer(MCPServer):
    """The SDK's server, listing only the tools of TOOLS_PROFILE (all stay callable), and
    answering a call to an unknown tool with the error shape every tool error has, and a
    resource URI with an unknown query parameter, or an unknown prompt, with invalid params
    (mcp_resources.py)."""

    def __init__(self, *, listed: set[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.listed = listed
        self.registered_resources = []  # add_resources' answer: what refuse_unknown_query checks a URI against

    async def list_tools(self):
        return [tool for tool in await super().list_tools() if tool.name in self.listed]

    async def call_tool(self, name: str, arguments: dict[str, Any], context=None):
        if self._tool_manager.get_tool(name) is None:
            return CallToolResult.model_validate(result_dict(True, unknown_tool_body(name)))
        return await super().call_tool(name, arguments, context)

    async def get_prompt(self, name: str, arguments: dict[str, Any] | None = None, context=None):
        if self._prompt_manager.get_prompt(name) is None:
            raise unknown_prompt(str(name))
        return await super().get_prompt(name, arguments, context)

    async def read_resource(self, uri, context=None):
        refuse_unknown_query(str(uri), self.registered_resources)
        try:
            return await super().read_resource(uri, context)
        except ResourceNotFoundError:  # raised only by the SDK's matching: our readers raise MCPError
            raise unknown_resource(str(uri)) from None


def unknown_tool_body(name: Any) -> bytes:
    return orjson.dumps(unknown_tool(str(name), tools_by_name()).to_dict())


def served_methods(server: MCPServer) -> tuple[str, ...]:
    """The MCP methods `server` answers (for the hint of an unknown method's error): initialize
    (the SDK's runner answers it) and each method with a handler."""
    lowlevel = server._lowlevel_server
    served = {"initialize"} | {method for method in SPEC_CLIENT_METHODS if lowlevel.get_request_handler(method)}
    return tuple(sorted(served))


def build_mcp_server(settings: Settings) -> MCPServer:
    server = AgentMailServer(
        name="agent-mail",
        instructions=instructions(settings.tools_profile),
        version=__version__,
        tools=[sdk_tool(tool, settings) for tool in all_tools()],
        log_level=settings.log_level,
        listed={tool.name for tool in profile_tools(settings.tools_profile)},
    )
    server.registered_resources = add_resources(server, settings)
    return server
