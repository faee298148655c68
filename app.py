"""Cloud mode: the REST API and MCP on AWS Lambda (Chalice), generated from the tool registry.

The same convention as the local server (chalicelib/asgi.py): every tool is
`POST /api/{tool}` with its input as the JSON body and its output as the response;
read-only tools also answer `GET /api/{tool}?field=value`. Errors are
`{"error": {"code", "message", "hint"}}` with the tool error's status.

MCP (streamable HTTP) is served by the same MCP ASGI app as locally, through Mangum
(chalicelib/lambda_mcp.py): at `/mcp` on the REST API, and by the `mcp` function
(`mcp_handler` below) for a function URL or an HTTP API.

Imports stay light (no FastAPI; the MCP SDK only on the first MCP request): every cold
start pays for them.
"""

import base64
from typing import Any, Callable

import pydantic_core
from chalice import Chalice, Response
from chalice.app import Request

from chalicelib import db, invoke, rest
from chalicelib.config import Settings, get_settings
from chalicelib.errors import ToolError, internal_error
from chalicelib.lambda_mcp import MCPHandler
from chalicelib.registry import Tool, all_tools, tools_by_name


def create_app(settings: Settings) -> Chalice:
    app = Chalice(app_name="agent-mail")
    db.migrate(settings)  # once per cold start, not per request

    for tool in all_tools():
        app.route(tool.rest_path, methods=list(tool.rest_methods), name=tool.name)(tool_view(app, tool, settings))

    @app.route("/health")
    def health() -> dict:
        return {"status": "ok"}

    health_check = tools_by_name()["health_check"]

    @app.route("/ready")
    def ready() -> Response:
        return respond(app, lambda: invoke.call(health_check, {}, settings))

    mcp = MCPHandler(settings)

    # Every method the streamable-HTTP transport uses, and any content type: the MCP SDK,
    # not Chalice, decides what to refuse and how.
    @app.route("/mcp", methods=["POST", "GET", "DELETE"], content_types=["*/*"])
    def mcp_route() -> Response:
        try:
            return chalice_response(mcp(rest_event(app.current_request), app.lambda_context))
        except Exception:
            return unexpected(app)

    @app.lambda_function(name="mcp")
    def mcp_handler(event: dict, context: Any) -> dict:
        """MCP for events straight from AWS: HTTP API or function URL (v2), or REST API (v1)."""
        return mcp(event, context)

    return app


def tool_view(app: Chalice, tool: Tool, settings: Settings) -> Callable[[], Response]:
    def view() -> Response:
        return respond(app, lambda: invoke.call(tool, arguments(tool, app.current_request), settings))

    return view


def arguments(tool: Tool, request: Request) -> Any:
    """The tool's input: the query parameters of a GET, the JSON body of a POST."""
    if request.method == "GET":
        params = request.query_params or {}
        return rest.query_arguments(tool, ((name, value) for name in params for value in params.getlist(name)))
    return rest.body_arguments(request.raw_body)


def respond(app: Chalice, run: Callable[[], Any]) -> Response:
    """The output of `run()` as JSON, or its error in the shape every transport uses."""
    try:
        return json_response(200, run())
    except ToolError as exc:
        return json_response(exc.status, exc.to_dict())
    except Exception:
        return unexpected(app)


def unexpected(app: Chalice) -> Response:
    """The answer to an unexpected exception: the traceback goes to the log, never to the client."""
    app.log.exception("%s %s failed", app.current_request.method, app.current_request.path)
    error = internal_error()
    return json_response(error.status, error.to_dict())


def json_response(status: int, content: Any) -> Response:
    # pydantic_core renders outputs exactly as the FastAPI app does (ids as strings);
    # the body is a str because Lambda's proxy integration wants text.
    body = pydantic_core.to_json(content).decode()
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json"})


def rest_event(request: Request) -> dict:
    """The request as a REST API (v1) proxy event. The event behind it is one from API Gateway,
    or a partial one from `chalice local` or Chalice's test client: fill in what those leave out."""
    event = request.to_original_event()
    context = event["requestContext"]
    return {"resource": context["resourcePath"], "path": context["resourcePath"], "httpMethod": request.method, **event}


def chalice_response(response: dict) -> Response:
    """A proxy response (Mangum's) as a Chalice Response. MCP answers are text, but Mangum
    base64-encodes a body without a text content type (the SDK's plain refusals have none);
    Chalice wants it back as text."""
    body = base64.b64decode(response["body"]).decode() if response.get("isBase64Encoded") else response["body"]
    headers = {**response.get("headers", {}), **response.get("multiValueHeaders", {})}
    return Response(body=body, status_code=response["statusCode"], headers=headers)


app = create_app(get_settings())
mcp_handler = app.handler_map["mcp"]  # the `mcp` function's entry point: Chalice deploys it as "app.mcp_handler"
