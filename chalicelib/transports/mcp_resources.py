"""MCP resources: read-only views an agent can open, each the JSON output of one read-only tool.

One table says which tool answers which URI template and which URI variable fills which
tool argument (variables not renamed keep their name). Reading a resource runs the tool
through `invoke.run_tool`, the same path as a tools/call: same validation, same errors.
A tool error becomes a JSON-RPC error with the tool error's message (invalid params, -32602,
for every HTTP 4xx one; internal error, -32603, for a 5xx) in the one shape of mcp_errors.py:
its `data` is the `{"error": {"code", "message", "hint"}}` body every transport answers with
(the hint may add how the URI spells a tool argument it names; for invalid values it sends the
reader to the URI template, where a tool call's sends it to the tool's input schema).

Query variables (`{?project,limit}`) are RFC 6570 form-style queries, which the SDK
matches in any order; absent ones are left out, so the tool's defaults apply. The SDK ignores
a query parameter the template does not name: `refuse_unknown_query` refuses it instead, as a
tool refuses an unknown field. An error's hint that names a tool argument the URI calls
otherwise (registration_token is `?token=`) says so.
"""

import inspect
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from mcp.server import MCPServer
from mcp.server.mcpserver.resources.templates import ResourceSecurity
from mcp.shared.exceptions import MCPError
from mcp.shared.uri_template import UriTemplate
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS

from ..config import Settings
from ..errors import SCHEMA_HINT, URI_TEMPLATE_HINT, InvalidArgument, NotFound, ToolError, did_you_mean
from ..invoke import run_tool
from ..registry import Tool
from ..tools import tools_by_name
from .mcp_errors import jsonrpc_error


@dataclass(frozen=True)
class View:
    tool: str
    renames: dict[str, str] = field(default_factory=dict)  # URI variable -> tool argument


# `agent` reads as that agent and `token` is its registration_token: with agent tokens on, reading
# an inbox, an outbox, a thread or a message needs both (docs/security.md; an admin credential
# reads threads and messages without).
AS_AGENT = {"agent": "agent_name", "project": "project_key", "token": "registration_token"}

VIEWS = {
    "resource://projects": View("list_projects"),
    "resource://projects{?include_archived,limit,cursor}": View("list_projects"),  # the next pages
    "resource://project/{slug}": View("get_project", {"slug": "project_key"}),
    "resource://agents/{project_key}{?include_retired,limit,cursor}": View("list_agents"),
    "resource://inbox/{agent}{?project,limit,include_bodies,urgent_only,unread_only,ack_pending_only,since_ts,cursor,token}":
        View("fetch_inbox", AS_AGENT),
    # What needs attention (chalicelib/tools/mailbox.py): one agent's, or a whole project's.
    "resource://ack-required/{agent}{?project,limit,token}": View("list_ack_required", AS_AGENT),
    "resource://ack-overdue/{agent}{?project,older_than_minutes,limit,token}": View("list_ack_overdue", AS_AGENT),
    "resource://urgent-unread/{agent}{?project,limit,token}": View("list_urgent_unread", AS_AGENT),
    "resource://project-ack-required/{project_key}{?limit}": View("list_ack_required"),
    "resource://project-ack-overdue/{project_key}{?older_than_minutes,limit}": View("list_ack_overdue"),
    "resource://project-urgent-unread/{project_key}{?limit}": View("list_urgent_unread"),
    "resource://outbox/{agent}{?project,limit,cursor,token}": View("fetch_outbox", AS_AGENT),
    "resource://threads/{project_key}{?agent,limit,cursor,token}": View("list_threads", {"agent": "agent_name", "token": "registration_token"}),
    "resource://thread/{thread_id}{?project,agent,limit,cursor,token}": View("get_thread", AS_AGENT),
    "resource://message/{id}{?project,agent,token}": View("get_message", AS_AGENT | {"id": "message_id"}),
    "resource://file_reservations/{project_key}{?active_only,limit,cursor}": View("list_file_reservations"),
    "resource://product/{key}": View("get_product", {"key": "product_key"}),
}

# Values only ever reach SQL parameters through the tool's input model, never a file
# path, so a human key such as /home/me/repo (sent as %2Fhome%2Fme%2Frepo) is fine.
KEYS_NOT_PATHS = ResourceSecurity(reject_path_traversal=False, reject_absolute_paths=False)



@dataclass(frozen=True)
class Registered:
    template: UriTemplate
    arguments: dict[str, str]  # URI variable -> tool argument


def add_resources(server: MCPServer, settings: Settings) -> list[Registered]:
    """Register every view whose tool this server has (a tool group may not exist yet); the
    registered templates, in the order the SDK matches them."""
    tools = tools_by_name()
    return [_register(server, uri, view, tools[view.tool], settings) for uri, view in VIEWS.items() if view.tool in tools]


def refuse_unknown_query(uri: str, registered: list[Registered]) -> None:
    """Invalid params when `uri`'s query names a parameter its template does not take (the
    SDK would drop it: a misspelt token or limit would be read as absent), or one more than once
    (the SDK would read the first: projects?limit=1&limit=3 gave 1, as REST refuses it with 422)."""
    path, _, query = uri.partition("#")[0].partition("?")
    if not query:
        return
    # As the SDK matches: the templates that take a query first (a query never matches the others).
    for resource in sorted(registered, key=lambda resource: not resource.template.query_variable_names):
        takes = resource.template.query_variable_names
        if resource.template.match(uri if takes else path) is not None:
            given = [pair.partition("=")[0] for pair in query.split("&")]
            names = dict.fromkeys(given)
            if unknown := [name for name in names if name and name not in takes]:
                raise _mcp_error(_unknown_query(path, resource, unknown).to_dict())
            if repeated := [name for name in names if name and given.count(name) > 1]:
                raise _mcp_error(InvalidArgument(
                    f"The query parameter {repeated[0]} is given more than once in {path}; it takes one value.",
                    f"Pass {repeated[0]} once (no resource query parameter repeats).").to_dict())
            return


def _register(server: MCPServer, uri: str, view: View, tool: Tool, settings: Settings) -> Registered:
    template = UriTemplate.parse(uri)
    arguments = {name: view.renames.get(name, name) for name in template.variable_names}
    if not tool.read_only:
        raise ValueError(f"resource {uri}: {tool.name} is not read-only")
    if unknown := set(arguments.values()) - set(tool.input.model_fields):
        raise ValueError(f"resource {uri}: {tool.name} has no argument {sorted(unknown)}")
    mapping = ", ".join(f"{name} → {argument}" for name, argument in arguments.items())
    server.resource(
        uri,
        name=uri.removeprefix("resource://").split("/")[0],
        description=f"The JSON output of the {tool.name} tool ({mapping or 'no arguments'}). {tool.description}",
        mime_type="application/json",
        security=KEYS_NOT_PATHS,
    )(_reader(template, tool, arguments, settings))
    return Registered(template, arguments)


def _reader(template: UriTemplate, tool: Tool, arguments: dict[str, str], settings: Settings):
    """An async function of the URI variables (query ones optional) that returns the tool's JSON."""
    optional = template.query_variable_names
    required_query = [name for name in optional if tool.input.model_fields[arguments[name]].is_required()]

    async def read(**values: str | None) -> str:
        given = {name: value for name, value in values.items() if value is not None}
        if missing := [name for name in required_query if name not in given]:
            # The URI without its query: its values may hold a token, which an error must not repeat.
            path = template.expand({name: value for name, value in given.items() if name not in template.query_variable_names})
            raise _mcp_error(_missing_query(path, missing).to_dict())
        is_error, payload = await run_tool(tool, {arguments[name]: value for name, value in given.items()}, settings)
        if is_error:
            raise _mcp_error(_in_uri_terms(orjson.loads(payload), template, arguments))
        return payload.decode()

    # The SDK reads the URI variables off the signature (and pydantic off the annotations).
    read.__annotations__ = {name: str | None if name in optional else str for name in arguments} | {"return": str}
    read.__signature__ = inspect.Signature(
        [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                              default=None if name in optional else inspect.Parameter.empty)
            for name, annotation in read.__annotations__.items() if name != "return"
        ],
        return_annotation=str,
    )
    return read


def _in_uri(name: str, template: UriTemplate) -> str:
    """How a URI variable appears in the URI: ?token= for a query one, {agent} for a path one."""
    return f"?{name}=" if name in template.query_variable_names else f"{{{name}}}"


def _in_uri_terms(body: dict[str, Any], template: UriTemplate, arguments: dict[str, str]) -> dict[str, Any]:
    """The tool's error, its hint saying how the URI spells each tool argument it (or its hint)
    names that the URI calls otherwise ("Pass registration_token" is ?token= in a resource URI)."""
    error = body["error"]
    said = f"{error['message']} {error['hint']}"  # (a validation error names the argument in its message)
    named = [f"{argument} is {_in_uri(name, template)}" for name, argument in arguments.items()
             if name != argument and re.search(rf"\b{argument}\b", said)]
    # A resource read has no input schema to check: its values come from the URI.
    hint = URI_TEMPLATE_HINT if error["hint"] == SCHEMA_HINT else error["hint"]
    if named:
        hint = f"{hint} In this resource's URI, {', '.join(named)}."
    return body if hint == error["hint"] else {"error": {**error, "hint": hint}}


def unknown_resource(uri: str) -> MCPError:
    """Invalid params for a URI no template matches, in the one error shape (the SDK's own said
    only {"uri": ...} in data), naming the closest kind of resource. No part of the URI is repeated:
    any may hold an agent's token (`?token=`, `&token=` for a mistyped `?`, a path segment), and
    error text ends up in logs and transcripts; the kinds suggested are this server's own."""
    kind = uri.partition("://")[2].split("/")[0].split("?")[0]
    kinds = {template.partition("://")[2].split("/")[0].split("{")[0] for template in VIEWS}
    # A known kind that matched no template: most likely a value with a reserved character (a
    # thread id with ',' or '&'), not a mistyped kind (did_you_mean offered the kind it had).
    said = (f" A {kind} URI matched no template: percent-encode ',' '&' '/' '?' '#' in values (',' as %2C)."
            if kind in kinds else did_you_mean(kind, kinds))
    return _mcp_error(NotFound(
        f"No resource matches this URI.{said}",
        "List the URI templates with resources/templates/list (resource://projects, resource://inbox/{agent}?project=...).",
    ).to_dict())


def _unknown_query(path: str, resource: Registered, unknown: list[str]) -> InvalidArgument:
    """Names the unknown parameters (not their values: a token may be one), and how the URI
    spells a tool argument sent under its tool name."""
    template = resource.template
    uri_name = {argument: name for name, argument in resource.arguments.items() if name != argument}
    takes = [name for name in template.variable_names if name in template.query_variable_names]
    problems = [f"{name} (here {_in_uri(uri_name[name], template)})" if name in uri_name else name for name in unknown]
    guesses = "".join(did_you_mean(name, takes) for name in unknown if name not in uri_name)
    return InvalidArgument(
        f"{path} has no query parameter {', '.join(problems)}.{guesses}",
        f"{template} takes the query parameters {', '.join(takes)}." if takes else f"{template} takes no query parameters.",
    )


def _missing_query(uri: str, missing: list[str]) -> InvalidArgument:
    return InvalidArgument(
        f"{uri} needs the query parameter {', '.join(missing)}.",
        f"Add ?{'&'.join(f'{name}=...' for name in missing)} to the URI; project takes a slug or a"
        " percent-encoded human_key.",
    )


def unknown_prompt(name: str) -> MCPError:
    """Invalid params for prompts/get of a prompt this server has not (it has none): the SDK's
    ValueError was an internal error (logged with its traceback) or a JSON-RPC code 0."""
    return _mcp_error(NotFound(f"No prompt named {name[:100]!r}: this server has no prompts.",
                               "Its tools (tools/list) and resources (resources/list) are what it offers.").to_dict())


def _mcp_error(body: dict[str, Any]) -> MCPError:
    """The JSON-RPC error for a tool error: invalid params when it is the caller's to fix (an
    HTTP 4xx: not found, refused, a conflict...), internal error only for the server's (5xx),
    which a client may retry as is."""
    code = INTERNAL_ERROR if _http_status(body["error"]["code"]) >= 500 else INVALID_PARAMS
    return MCPError(**jsonrpc_error(code, body))


def _http_status(code: str) -> int:
    """The HTTP status of a tool error code, as its ToolError class gives it (500 if none does)."""
    classes = [ToolError]
    while classes:
        error_class = classes.pop()
        if error_class.code == code:
            return error_class.status
        classes += error_class.__subclasses__()
    return 500
