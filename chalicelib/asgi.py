"""The local-mode server: REST routes generated from the registry, /mcp, /health, /ready.

Run it with `uvicorn chalicelib.asgi:app`. A small ASGI router in front answers /health and
hands /mcp to the MCP app (chalicelib/mcp_asgi.py: the lean path, then the MCP SDK for
sessions, SSE and anything unusual) without going through FastAPI; everything else is
FastAPI (REST, OpenAPI, docs).
"""

import gc
import inspect
from contextlib import asynccontextmanager
from typing import Annotated, Any

import pydantic_core
from fastapi import Body, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from . import __version__, db, invoke
from .config import Settings, get_settings
from .errors import ToolError, internal_error, malformed_json, validation_error
from .mcp_asgi import PATH as MCP_PATH, MCPApp
from .raw_asgi import send_json
from .registry import Tool, all_tools

HEALTH_BODY = b'{"status":"ok"}'


class ErrorDetail(BaseModel):
    code: str
    message: str
    hint: str


class ErrorBody(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in ((404, "Not found"), (409, "Conflict"), (422, "Invalid arguments"))
}


def _without_source(errors: list[dict]) -> list[dict]:
    """FastAPI's error locations start with where the input came from ("body", "query")."""
    return [{**error, "loc": error["loc"][1:]} for error in errors]


def _json(output: BaseModel) -> Response:
    return Response(pydantic_core.to_json(output), media_type="application/json")


def _endpoint(tool: Tool, settings: Settings, source: str):
    """An endpoint whose single parameter is the tool's input model, read from the body or the query."""

    async def endpoint(args):
        return _json(await invoke.acall(tool, args, settings))

    optional = all(not field.is_required() for field in tool.input.model_fields.values())
    where = Query() if source == "query" else Body()
    default = inspect.Parameter.empty if source == "query" or not optional else None
    endpoint.__signature__ = inspect.Signature(
        [inspect.Parameter("args", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[tool.input, where], default=default)]
    )
    return endpoint


def add_rest_routes(api: FastAPI, settings: Settings) -> None:
    for tool in all_tools():
        common = dict(
            response_model=tool.output,
            responses=ERROR_RESPONSES,
            summary=tool.summary,
            description=tool.description,
            tags=[tool.group],
        )
        api.add_api_route(tool.rest_path, _endpoint(tool, settings, "body"), methods=["POST"], operation_id=tool.name, **common)
        if tool.read_only:
            api.add_api_route(
                tool.rest_path, _endpoint(tool, settings, "query"), methods=["GET"], operation_id=f"{tool.name}_get", **common
            )


def create_app(settings: Settings | None = None):
    settings = settings or get_settings()
    mcp = MCPApp(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        db.migrate(settings)
        async with mcp.lifespan():
            # The ~100k objects made at start-up live forever: take them out of the garbage
            # collector's full passes, which otherwise stall every request for ~60 ms.
            gc.collect()
            gc.freeze()
            yield

    api = FastAPI(title="Agent Mail", version=__version__, lifespan=lifespan, description=__doc__)
    add_rest_routes(api, settings)

    @api.exception_handler(ToolError)
    async def tool_error(_: Request, exc: ToolError):
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError):
        bad_json = next((e for e in exc.errors() if e["type"] == "json_invalid"), None)
        error = malformed_json(bad_json["ctx"]["error"], bad_json["loc"][1]) if bad_json else validation_error(_without_source(exc.errors()))
        return JSONResponse(error.to_dict(), status_code=error.status)

    @api.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):
        error = internal_error()
        return JSONResponse(error.to_dict(), status_code=error.status)

    @api.get("/health", tags=["service"])
    async def health() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @api.get("/ready", tags=["service"])
    async def ready() -> dict:
        """Readiness: the database answers."""
        return (await invoke.acall(next(t for t in all_tools() if t.name == "health_check"), {}, settings)).model_dump()

    return Front(api, mcp)


class Front:
    """The hot paths, answered before FastAPI: /health, and /mcp (the MCP app)."""

    def __init__(self, api: FastAPI, mcp: MCPApp) -> None:
        self.api = api
        self.mcp = mcp

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            path = scope["path"]
            if path == "/health" and scope["method"] == "GET":
                await send_json(send, HEALTH_BODY)
                return
            if path in (MCP_PATH, MCP_PATH + "/"):  # the SDK redirects /mcp/ to /mcp
                await self.mcp(scope, receive, send)
                return
        await self.api(scope, receive, send)


app = create_app()
