"""REST details shared by the transports that speak HTTP: reading a tool's arguments
from a request, and the refusals of a request no tool route takes.

The local server (asgi.py) and the Chalice app (app.py) both read a POST body with
`body_arguments`, so the same body gets the same answer from both. Framework-free on
purpose: the Chalice app uses it on Lambda, where importing FastAPI would lengthen every
cold start.
"""

import json
import re
from typing import Any, Iterable, get_origin

from pydantic import BaseModel

from ..errors import HTTP_ERROR_CODES, JSON_WHITESPACE, TOOLS_LISTED, InvalidArgument, ToolError, malformed_json
from ..registry import Tool, field_type
from ..security import agent_tokens


class UnsupportedMediaType(ToolError):
    status = 415
    code = "unsupported_media_type"


def body_arguments(body: bytes, content_type: str | None) -> dict[str, Any]:
    """A tool's arguments from a POST body: one JSON object, sent as JSON. An empty body is no
    arguments (the input model then names each missing field)."""
    if not body.strip(JSON_WHITESPACE):
        return {}
    if not is_json(content_type):
        # Not read whatever its type: a browser sends a form or text/plain to another site unasked.
        raise UnsupportedMediaType(
            f"The request body is {content_type}, not JSON." if content_type else "The request body has no Content-Type.",
            "Send the tool's input as one JSON object, with Content-Type: application/json.",
        )
    try:
        arguments = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise malformed_json("not UTF-8", exc.start) from None
    except json.JSONDecodeError as exc:
        raise malformed_json(exc.msg, exc.pos) from None
    except RecursionError:  # nested deeper than Python's parser goes: no tool's input is
        raise malformed_json("nested too deeply", 0) from None
    if surrogate := _SURROGATE_ESCAPE.search(body):  # (rare: the text is checked only then)
        try:
            json.dumps(arguments, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # Python's parser keeps a lone one, which no database or UTF-8 can store
            raise malformed_json(f"{surrogate[0].decode()} is half a UTF-16 surrogate pair, not a character",
                                 surrogate.start()) from None
    if not isinstance(arguments, dict):
        raise InvalidArgument(
            f"The request body must be a JSON object of the tool's arguments, not {_json_kind(arguments)}.",
            "Send the tool's input as one JSON object: {} when it needs no argument.",
        )
    return arguments


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # \ud800-\udfff: half of a pair, or a lone one


def is_json(content_type: str | None) -> bool:
    """application/json or application/*+json, in any case (media types are case-insensitive)."""
    media_type = (content_type or "").split(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


def _json_kind(value: Any) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def http_error(status: int, message: str, headers: dict[str, str] | None = None) -> ToolError:
    """A refusal of the HTTP layer (an unknown path, a method a route does not take) in the
    one error shape: the local server's (Starlette's) and the Chalice app's alike."""
    error = ToolError(message, "Check the method, path and body (a tool: POST /api/{tool}, or GET when it only reads;"
                               f" the tools: {TOOLS_LISTED}).")
    error.status = status
    error.code = HTTP_ERROR_CODES.get(status, "http_error")
    error.headers = headers or {}
    return error


# The acting agent's token as a header (a token field in the arguments wins over it).
AGENT_TOKEN_HEADER = agent_tokens.HEADER


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
    every value of its repeated parameter. Unknown names are kept, so that the input model
    refuses them instead of ignoring them; any other field given twice is refused (refuse_repeated)."""
    fields = tool.input.model_fields
    arguments: dict[str, Any] = {}
    for name, value in params:
        if name in fields and get_origin(field_type(fields[name].annotation)) is list:
            arguments.setdefault(name, []).append(value)
        elif name in arguments:
            raise _repeated(name)
        else:
            arguments[name] = value
    return arguments


def refuse_repeated(tool: Tool, params: Iterable[tuple[str, str]]) -> None:
    """InvalidArgument if a parameter that is not a list's is given twice (FastAPI's query model
    takes the last one: agent_name=BlueLake&agent_name=RedFox read RedFox's inbox)."""
    query_arguments(tool, params)


def _repeated(name: str) -> InvalidArgument:
    return InvalidArgument(f"The query parameter {name} is given more than once; it takes one value.",
                           f"Pass {name} once (only list parameters, such as importance or paths, repeat).")
