"""REST details shared by the transports that speak HTTP: reading a tool's arguments
from a request.

Framework-free on purpose: the Chalice app (app.py) uses it on Lambda, where importing
FastAPI would lengthen every cold start.
"""

import json
from typing import Any, Iterable, get_origin

from pydantic import BaseModel

from ..errors import malformed_json
from ..registry import Tool, field_type


def body_arguments(body: bytes) -> Any:
    """The JSON value of a request body; None for an empty body (a tool whose fields are all optional)."""
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError as exc:
        raise malformed_json(exc.msg, exc.pos) from None
    except UnicodeDecodeError:
        raise malformed_json("not UTF-8", 0) from None


# The acting agent's token as a header: a GET then keeps it out of URLs (and so out of access
# logs, proxies and browser history). A token field in the arguments wins over the header.
AGENT_TOKEN_HEADER = "X-Agent-Token"


def with_header_token(tool: Tool, arguments: Any, token: str | None) -> Any:
    """The arguments, plus the header's token in the tool's token field if they lack one."""
    if not token or not tool.acts_as:
        return arguments
    if isinstance(arguments, BaseModel):
        has_token = getattr(arguments, tool.token_field, None) is not None
        return arguments if has_token else arguments.model_copy(update={tool.token_field: token})
    if arguments is None:
        arguments = {}
    if isinstance(arguments, dict) and arguments.get(tool.token_field) is None:
        arguments = {**arguments, tool.token_field: token}
    return arguments


def query_arguments(tool: Tool, params: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Arguments from query parameters, as FastAPI reads a query model: a list field takes
    every value of its repeated parameter, any other field the last one. Unknown names
    are kept, so that the input model refuses them instead of ignoring them."""
    fields = tool.input.model_fields
    arguments: dict[str, Any] = {}
    for name, value in params:
        if name in fields and get_origin(field_type(fields[name].annotation)) is list:
            arguments.setdefault(name, []).append(value)
        else:
            arguments[name] = value
    return arguments
