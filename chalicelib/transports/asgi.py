"""The local-mode server: REST routes generated from the registry, /mcp, /health, /ready, the web UI.

Run it with `uvicorn chalicelib.transports.asgi:app --http chalicelib.transports.http_protocol:HttpProtocol` (what
scripts/serve does; chalicelib/transports/http_protocol.py says why). A small ASGI router in front
answers /health and hands /mcp to the MCP app (chalicelib/transports/mcp_asgi.py: the lean path, then
the MCP SDK for sessions, SSE and anything unusual) without going through FastAPI;
the web UI (chalicelib/web/: /, /ui/*, /docs) is answered there too; everything else is FastAPI
(REST, OpenAPI).
"""

import asyncio
import gc
import time
import inspect
import logging
import signal
import sys
import threading
import traceback
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .. import __version__, invoke
from ..security import auth, ratelimit, rebinding, scopes
from ..store import db, disconnect, wakeup
from . import attachment_routes, mcp_errors, rest
from . import headers as security
from ..archive.worker import LocalWorker
from ..ops import allocator, logs, metrics, readiness
from ..config import Settings, get_settings
from ..errors import (
    ClientGone,
    Forbidden,
    ToolError,
    Unavailable,
    internal_error,
    unknown_tool,
    validation_error,
)
from .mcp_asgi import PATH as MCP_PATH
from .mcp_asgi import MCPApp
from .http_protocol import admit
from .raw_asgi import content_length, header, header_text, json_headers, read_body, replay, send_json
from ..registry import Tool
from ..tools import all_tools, tools_by_name
from ..web import http as web_http
from ..web.pages import SWAGGER, WebUI

HEALTH_BODY = b'{"status":"ok"}'
DOCS_PATH = "/docs"  # Swagger UI, a web UI page (chalicelib/web/)
log = logging.getLogger(__name__)


class ErrorDetail(BaseModel):
    code: str
    message: str
    hint: str


class ErrorBody(BaseModel):
    error: ErrorDetail


API_DESCRIPTION = """Mail for coding agents: identities, inboxes and threads, search, file reservations,
build slots and contacts. Every tool is `POST /api/{tool}` with its input as the JSON body (read-only
tools also answer `GET /api/{tool}?field=value`); the same tools are served over MCP at `/mcp`.
Errors have one shape: `{"error": {"code", "message", "hint"}}`. With authentication on, send
`Authorization: Bearer <token>`."""

# Every route's error answers name one shared schema, added to the document once
# (with_shared_schemas): given as a model, FastAPI built 8 model fields per route (~0.5 s a start).
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
    for status, description in (
        (400, "Malformed request"), (401, "Authentication required"), (403, "Not allowed to act as that agent"),
        (404, "Not found"), (409, "Conflict"), (413, "Request body too large"),
        (415, "Request body not sent as JSON"), (422, "Invalid arguments"),
        (429, "Rate limited (see Retry-After)"),
    )
}


def _without_source(errors: list[dict]) -> list[dict]:
    """FastAPI's error locations start with where the input came from ("body", "query")."""
    return [{**error, "loc": error["loc"][1:]} for error in errors]


def _endpoint(tool: Tool, settings: Settings, source: str):
    """An endpoint for one tool: a GET's single parameter is the tool's input model, read from
    the query; a POST reads its body with rest.body_arguments, as the Chalice app does (the
    input model then validates it in invoke)."""

    async def endpoint(args, agent_token=None, request=None):
        if source == "body":
            try:
                body = await args.body()
            except ClientDisconnect:  # gone mid-body: a 499, not a 500 logged with its traceback
                raise disconnect.client_gone() from None
            args = rest.body_arguments(body, args.headers.get("content-type"))
        else:  # the query model took the last of a repeated parameter
            rest.refuse_repeated(tool, request.query_params.multi_items())
        args = rest.with_header_token(tool, args, agent_token)
        return Response(await invoke.ajson(tool, args, settings), media_type="application/json")

    annotation = Annotated[tool.input, Query()] if source == "query" else Request
    parameters = [inspect.Parameter("args", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation)]
    if source == "query":
        parameters.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request))
    if tool.acts_as:
        header = Header(alias=rest.AGENT_TOKEN_HEADER, max_length=256,
                        description=f"The acting agent's token, instead of {tool.token_field} (keeps it out of URLs).")
        parameters.append(inspect.Parameter("agent_token", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                            annotation=Annotated[str | None, header], default=None))
    endpoint.__signature__ = inspect.Signature(parameters)
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
        api.add_api_route(tool.rest_path, _endpoint(tool, settings, "body"), methods=["POST"], operation_id=tool.name,
                          openapi_extra={"requestBody": request_body(tool)}, **common)
        if tool.read_only:
            api.add_api_route(
                tool.rest_path, _endpoint(tool, settings, "query"), methods=["GET"], operation_id=f"{tool.name}_get", **common
            )


def _end_waits_on_stop() -> None:
    """On SIGTERM or SIGINT, end every wait_for_mail at once (store/wakeup.py close_all), then
    let the server stop as it would: it waits for its connections to close, and each wait held
    it up to its timeout (25 s), the port closed meanwhile. The server's own handlers are chained
    (uvicorn installs them before the lifespan starts, and puts the originals back after)."""
    if threading.current_thread() is not threading.main_thread():  # (only the main thread has signals)
        return
    for number in (signal.SIGTERM, signal.SIGINT):
        server_handler = signal.getsignal(number)

        def handler(received, frame, server_handler=server_handler):
            wakeup.close_all()
            if callable(server_handler):
                server_handler(received, frame)
            else:  # the default (or ignore): as if this handler had never been
                signal.signal(received, server_handler)
                signal.raise_signal(received)

        signal.signal(number, handler)


def request_body(tool: Tool) -> dict[str, Any]:
    """A POST's requestBody in the OpenAPI document: the endpoint reads the body itself."""
    body: dict[str, Any] = {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{tool.input.__name__}"}}}}
    if any(field.is_required() for field in tool.input.model_fields.values()):
        body["required"] = True
    return body


def with_shared_schemas(api: FastAPI, settings: Settings) -> None:
    """api.openapi(), with ErrorBody and the tools' input models (and what they use) among the
    components, and with authentication on, the bearer scheme every closed route requires."""
    build = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            models = [(ErrorBody, "serialization"), *((tool.input, "validation") for tool in all_tools())]
            _, schemas = models_json_schema(models, ref_template="#/components/schemas/{model}")
            build().setdefault("components", {}).setdefault("schemas", {}).update(schemas["$defs"])
            if auth.mode(settings) != "none":
                require_bearer(api.openapi_schema, auth.mode(settings))
        return api.openapi_schema

    api.openapi = openapi


def require_bearer(document: dict[str, Any], mode: str) -> None:
    """Name the bearer scheme on every operation but the open ones (/health, /ready): Swagger UI
    (/docs) then offers Authorize and sends the token with Try it out, and clients generated
    from the document send it."""
    scheme = {"type": "http", "scheme": "bearer"} | ({"bearerFormat": "JWT"} if mode == "jwt" else {})
    document["components"]["securitySchemes"] = {"bearer": scheme}
    for path, operations in document["paths"].items():
        if path not in auth.OPEN_PATHS:
            for operation in operations.values():
                operation["security"] = [{"bearer": []}]


def create_app(settings: Settings | None = None):
    settings = settings or get_settings()
    # Our handler, in place before the MCP SDK would install its rich one: rendering a traceback
    # with that holds the event loop for hundreds of milliseconds (seconds under load).
    logs.configure(settings)
    auth.check_configuration(settings, settings.host)  # refuse to serve an open API beyond loopback
    allocator.keep_memory_down()  # before the threads start (ops/allocator.py)
    mcp = MCPApp(settings)
    worker = LocalWorker(settings) if settings.archive_enabled else None

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # (after Front's: the database is migrated)
        if worker:
            worker.start()
        async with mcp.lifespan():
            # The ~100k objects made at start-up live forever: take them out of the garbage
            # collector's full passes, which otherwise stall every request for ~60 ms.
            gc.collect()
            gc.freeze()
            # Requests allocate many short-lived objects: collect the young generation less often
            # (bench/run.py: send_message +10% req/s, lower p99) and full passes rarely.
            gc.set_threshold(5000, 20, 1000)
            _end_waits_on_stop()
            yield
        if worker:
            worker.stop()  # after the last request; what is still pending stays in the outbox
        logs.flush()  # the last requests' lines: the process may end by its signal, skipping atexit

    # /docs is the web UI's (Swagger UI from assets served here, no CDN); no /redoc.
    api = FastAPI(title="Agent Mail", version=__version__, lifespan=lifespan, description=API_DESCRIPTION,
                  docs_url=None, redoc_url=None)
    add_rest_routes(api, settings)
    with_shared_schemas(api, settings)

    @api.exception_handler(ToolError)
    async def tool_error(_: Request, exc: ToolError):
        return JSONResponse(exc.to_dict(), status_code=exc.status, headers=exc.headers or None)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        """A GET's query (a POST's body is read by rest.body_arguments, then validated in invoke)."""
        tool = tools_by_name().get(request.url.path.removeprefix("/api/"))
        error = validation_error(_without_source(exc.errors()), tool.input.model_fields if tool else ())
        return JSONResponse(error.to_dict(), status_code=error.status)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        """Starlette's own refusals (an unparsable body, an unknown path) in the one error shape."""
        path = request.url.path
        if exc.status_code == 404 and path.startswith("/api/"):  # a misspelt tool: say which was meant
            missing = unknown_tool(path.removeprefix("/api/"), tools_by_name())
            return JSONResponse(missing.to_dict(), status_code=404)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the first route's methods; a tool has a GET and a POST route
            routes = [route for route in request.app.routes if getattr(route, "path", None) == request.url.path]
            methods = {method for route in routes for method in getattr(route, "methods", ())}
            headers["Allow"] = ", ".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))  # Front serves HEAD as GET
        error = rest.http_error(exc.status_code, str(exc.detail), headers)
        return JSONResponse(error.to_dict(), status_code=error.status, headers=error.headers)

    @api.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception):
        error = internal_error()
        return JSONResponse(error.to_dict(), status_code=error.status)

    @api.get("/health", tags=["service"])
    async def health() -> dict:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @api.get("/ready", tags=["service"])
    async def ready() -> Response:
        """Readiness: 200 when the database takes writes, every migration is applied and the git
        archive keeps up; else 503 with the problems (chalicelib/ops/readiness.py)."""
        status, body = await asyncio.to_thread(readiness.report, settings, worker.up if worker else None)
        return Response(orjson.dumps(body), status_code=status, media_type="application/json")

    archive_status = tools_by_name()["archive_status"]

    @api.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    async def metrics_text() -> PlainTextResponse:
        """Prometheus metrics: tool calls, errors, latency, write batches, archive backlog and lag,
        replica syncs, rate-limit refusals (docs/operations.md). Every project's: not for a credential
        scoped to some (it was refused as an archive_status call it never made)."""
        scoped = auth.current.get()
        if scoped is not None and scoped.projects is not None:
            raise Forbidden("GET /metrics counts the calls and the archive of every project; this credential is scoped to"
                            " some.", "Scrape with a credential that has no project scope (docs/operations.md).")
        status = await asyncio.to_thread(invoke.own_call, archive_status, {}, settings)
        metrics.set_archive_gauges(status.model_dump(), settings)
        return PlainTextResponse(metrics.prometheus_text(), media_type=metrics.CONTENT_TYPE)

    return Front(api, mcp, settings)


def _first(message: dict, receive):
    """A receive() that yields `message` (read already), then what `receive` does."""
    given = [message]

    async def received() -> dict:
        return given.pop() if given else await receive()

    return received


def _client_address(scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


async def _refuse(send, path: str, exc: ToolError) -> None:
    """A refusal before the route, in the form mcp_errors.refusal gives it for this path."""
    status, headers, body = mcp_errors.refusal(path, exc)
    await send({"type": "http.response.start", "status": status,
                "headers": [*_raw(headers), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


class Front:
    """The hot paths, answered before FastAPI: /health, and /mcp (the MCP app). Every other
    request has its Host and Origin checked (chalicelib/security/rebinding.py) and is
    authenticated here first (chalicelib/security/auth.py), whichever app answers it."""

    def __init__(self, api: FastAPI, mcp: MCPApp, settings: Settings) -> None:
        self.api = api
        self.mcp = mcp
        self.auth = auth.Authenticator(settings)
        self.limiter = ratelimit.RateLimiter(settings)
        self.tools = tools_by_name()
        self.settings = settings
        self.web = WebUI(settings, self.limiter, self.auth, serves_docs=SWAGGER is not None)  # /docs is answered here
        self.allowed_hosts_and_origins: set[tuple[bytes | None, bytes | None]] = set()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await (self._lifespan if scope["type"] == "lifespan" else self.api)(scope, receive, send)
            return
        if scope["path"] == "/health" and scope["method"] in ("GET", "HEAD"):  # cheap, and unlogged: balancers poll it
            if self.settings.cors_allowed_origins:  # an allowed origin also gets CORS headers
                await send_json(self._with_headers(scope, send), HEALTH_BODY)
            else:
                await send({"type": "http.response.start", "status": 200, "headers": _health_headers(scope.get("scheme") == "https")})
                await send({"type": "http.response.body", "body": HEALTH_BODY})
            return
        send = self._with_headers(scope, send)  # it also keeps the status, for the metrics and the log line
        logged = logs.enabled()
        if logged:
            started = time.perf_counter()
            logs.current.set({})  # invoke notes the tool in it, _serve the caller
        try:
            await self._serve(scope, receive, send)
        finally:
            metrics.http_responses.inc(str(send.status))
            if logged:  # a call whose client left says 499 (invoke), though MCP answered it in a 200
                status = logs.current.get().pop("status", send.status)
                logs.request(scope["method"], scope["path"], status, time.perf_counter() - started)

    async def _lifespan(self, scope, receive, send) -> None:
        """The app's lifespan, once the database opens and is migrated. One it cannot open (a folder, a
        file it may not read, one that is no database, one a newer build wrote) fails the start-up
        with one line saying so and what to fix (uvicorn logs it and exits 3; Starlette's failure
        message is the traceback), as `agent-mail serve` and stdio say it."""
        startup = await receive()
        try:
            db.migrate(self.settings)
        except Exception as exc:
            refused = db.cannot_open(exc, self.settings)
            message = "agent-mail: %s (%s)" % refused if refused else traceback.format_exc()  # (as Starlette says the others)
            await send({"type": "lifespan.startup.failed", "message": message})
            if refused is None:
                raise
            return
        await self.api(scope, _first(startup, receive), send)

    async def _serve(self, scope, receive, send) -> None:
        path = scope["path"]
        try:
            rebinding.check_sent_once(name.decode("latin-1") for name, _ in scope["headers"])
            self._check_host_and_origin(scope)
        except ToolError as exc:
            await _refuse(send, path, exc)
            return
        if scope["method"] == "OPTIONS" and self.settings.cors_allowed_origins:
            origin = header_text(scope, b"origin")
            allowed = security.preflight_headers(origin, self.settings)
            if allowed is not None:  # a preflight carries no credentials: answered before authentication
                cors = security.cors_headers(origin, self.settings)  # added by send_with_headers
                allowed = {name: value for name, value in allowed.items() if name not in cors}
                await send({"type": "http.response.start", "status": 204, "headers": _raw(allowed)})
                await send({"type": "http.response.body", "body": b""})
                return
        if self.web.serves(path):
            await self._web(scope, receive, send)
            return
        address = _client_address(scope)
        logged = logs.enabled()
        if logged:
            logs.note(caller=ratelimit.caller(auth.ANONYMOUS, address))  # until someone authenticates
        try:
            principal = await self._guard(scope)
            if principal is not auth.ANONYMOUS or self.auth.mode == "none":  # a credential checked (or none asked)
                admit(receive)  # its body may be a large upload over a slow link (http_protocol.py)
            if logged and principal.kind != "anonymous":
                logs.note(caller=ratelimit.caller(principal, address))
            if path == attachment_routes.UPLOAD_PATH and scope["method"] == "PUT":  # its own size limit
                scopes.require_role(principal, "writer", "PUT /api/attachments")  # it stores bytes
                if self.limiter.enabled:
                    self.limiter.check(ratelimit.caller(principal, address), True)
                auth.current.set(principal)
                await attachment_routes.upload(scope, receive, send, self.settings)
                return
            receive = await self._limit(scope, receive, principal)
            # This request's task (and the tasks it starts) calls tools as this principal.
            auth.current.set(principal)
            # A slow call queued in a lane, or a wait for mail, watches it for http.disconnect
            # (store/disconnect.py): its handler has read the body by then (its arguments are in
            # it), so the watch takes nothing it needs.
            disconnect.request_receive.set(receive)
        except ToolError as exc:
            await _refuse(send, path, exc)
            return
        if path in mcp_errors.PATHS:
            await self.mcp(scope, receive, send)
            return
        if path.startswith(attachment_routes.DOWNLOAD_PREFIX) and scope["method"] in ("GET", "HEAD"):
            await attachment_routes.download(scope, receive, send, self.settings)
            return
        if path == attachment_routes.UPLOAD_PATH or path.startswith(attachment_routes.DOWNLOAD_PREFIX):  # another method
            # (it fell through to the tools' routes: 404 "No tool named 'attachments/...'"; Chalice answers 405)
            allowed = "PUT" if path == attachment_routes.UPLOAD_PATH else "GET, HEAD"
            await _refuse(send, path, rest.http_error(405, "Method Not Allowed", {"Allow": allowed}))
            return
        if scope["method"] == "HEAD":  # FastAPI's routes take GET only: HEAD is their GET, whose body the server leaves
            scope = {**scope, "method": "GET"}  # out (uvicorn reads the method from its own scope, still HEAD)
        try:
            await self.api(scope, receive, send)
        except Exception:
            # Starlette re-raises an exception after its 500 answer went out, and uvicorn then
            # closes the connection: a keep-alive client's next request would be reset.
            if not send.finished:
                raise
            log.exception("%s %s failed", scope["method"], path)

    def _check_host_and_origin(self, scope) -> None:
        """rebinding.check, remembering (a bounded number of) the pairs it allowed: they stay
        allowed for this process's settings, and clients send the same few on every request."""
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host" and host is None:
                host = value
            elif name == b"origin" and origin is None:
                origin = value
        if (host, origin) in self.allowed_hosts_and_origins:
            return
        rebinding.check(_text(host), _text(origin), self.settings)
        if len(self.allowed_hosts_and_origins) < 256:
            self.allowed_hosts_and_origins.add((host, origin))

    async def _web(self, scope, receive, send) -> None:
        """A web UI page (chalicelib/web/): it signs people in with its own session cookie."""
        bearer_docs = self._is_bearer_docs(scope)
        try:
            # Without authentication, still only loopback traffic; with it, the page asks for a
            # session, and /docs takes the API's bearer token too (a wrong one: 401).
            principal = await self._guard(scope) if self.auth.mode == "none" or bearer_docs else auth.ANONYMOUS
        except ToolError as exc:
            await _refuse(send, scope["path"], exc)
            return
        # A form's body is read before WebUI.handle checks its session: one sent without a signed-in
        # session's cookie (the sign-in's) must come whole in time (http_protocol.py); the API's ways
        # in are admitted as the API's requests are. (WebUI.handle checks the cookie again, ~30 µs:
        # its session's expiry counts when the form is acted on, after a body that may take seconds;
        # and the Chalice app calls it without this check.)
        if self.auth.mode == "none" or bearer_docs or (scope["method"] == "POST" and self.web.principal(header_text(scope, b"cookie"))):
            admit(receive)
        if logs.enabled():  # (a signed-in session's page names its credential: WebUI.handle)
            logs.note(caller=ratelimit.caller(principal, _client_address(scope)))
        body, too_large = b"", False
        try:
            receive = await self._limit(scope, receive, principal, rate=bearer_docs)  # a page counts in WebUI.handle
        except ratelimit.PayloadTooLarge:  # a form too large to read: the UI's page says so, not the API's JSON
            too_large = True
        except ToolError as exc:
            await _refuse(send, scope["path"], exc)
            return
        if scope["method"] == "POST" and not too_large:
            body, complete = await read_body(receive, self.settings.max_body_bytes)
            if not complete:  # the client went away, or was sent away (a body too slow: 408), mid-form: a cut form
                logs.note(status=ClientGone.status)  # is never acted on (a compose form would send part of a message)
                return
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        request = web_http.request(scope["method"], scope["path"], scope.get("query_string", b"").decode("latin-1"), body,
                              headers, root=scope.get("root_path", ""), tls=scope.get("scheme") == "https", too_large=too_large,
                              client=_client_address(scope))
        if request.path == "/ui/login" and request.method == "POST":  # a JWT's key-set fetch, as the API's: off the page's thread
            await self.auth.fetch_keys(request.form.get("token", "").strip())
        if bearer_docs:  # the page holds no data: Swagger UI reads /openapi.json, which asks for the token again
            response = self.web.page(request, None, "docs.html")
            response.headers["Cache-Control"] = "no-store"
        else:
            response = await self._page(receive, request)
        if response.file is not None:  # a large attachment: streamed from disk
            head = [(b"content-type", response.content_type.encode()), *_raw(response.headers)]
            await attachment_routes.send_file(send, response.status, head, response.file, body=request.method != "HEAD")
            return
        length = len(response.body) if response.length is None else response.length
        raw = [(b"content-type", response.content_type.encode()), (b"content-length", str(length).encode())]
        await send({"type": "http.response.start", "status": response.status, "headers": raw + _raw(response.headers)})
        await send({"type": "http.response.body", "body": response.body})

    async def _page(self, receive, request) -> "web_http.Response":
        """The page, made in a thread (pages call tools synchronously). A client that disconnects
        meanwhile is watched for, as an API call's is: the page's searches stop (disconnect.client_left)."""
        left = disconnect.watch()  # in the thread too: to_thread runs it in a copy of this context
        disconnect.request_receive.set(receive)

        def tell() -> bool:
            left.set()
            return False  # the page runs on (a thread cannot be stopped), told

        return await disconnect.unless_client_gone(asyncio.to_thread(self.web.handle, request), tell)

    def _is_bearer_docs(self, scope) -> bool:
        """A GET of /docs with an Authorization header, authentication on: a client, or a proxy
        adding the header, that sends the API's token rather than signing in."""
        return (scope["path"] == DOCS_PATH and scope["method"] in ("GET", "HEAD") and self.auth.mode != "none"
                and header(scope, b"authorization") is not None)

    def _with_headers(self, scope, send) -> "WithHeaders":
        """send() adding the security headers (and CORS for an allowed origin) to the response."""
        cors = ()
        if self.settings.cors_allowed_origins:
            origin = header_text(scope, b"origin")
            cors = tuple(_raw(security.cors_headers(origin, self.settings))) if origin else ()
        return WithHeaders(send, scope.get("scheme") == "https", cors)

    async def _guard(self, scope) -> auth.Principal:
        if self.auth.mode == "none":
            # Also when uvicorn was started by hand on another interface than HOST says.
            server = scope.get("server")
            if server and not self.settings.allow_insecure and auth.is_remote_address(server[0]):
                raise Unavailable("This server has no authentication and refuses non-loopback traffic.",
                                  "Set AUTH_MODE (docs/security.md) and restart.")
            return auth.ANONYMOUS
        if scope["path"] in auth.OPEN_PATHS:
            return auth.ANONYMOUS
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"] if name in (b"authorization", b"cookie")}
        if scope["path"] == "/openapi.json" and "authorization" not in headers:  # for /docs, after signing in
            principal = self.web.principal(headers.get("cookie"))
            if principal is not None:
                return principal
        with self.limiter.guessing_bounded(_client_address(scope), presented="authorization" in headers):
            return await self.auth.authenticate_async(headers)  # a JWT key-set fetch waits off the loop

    async def _limit(self, scope, receive, principal, rate: bool = True):
        """Refuse bodies over MAX_BODY_BYTES (413) and callers over their rate (429, unless not `rate`);
        the receive() to go on with (the body read here is replayed)."""
        limit = self.settings.max_body_bytes
        length = content_length(scope)
        if length is not None and not 0 <= length <= limit:
            raise ratelimit.too_large(limit)
        body = b""
        is_mcp_post = rate and self.limiter.enabled and scope["path"] == MCP_PATH and scope["method"] == "POST"
        if (length is None and scope["method"] in ("POST", "PUT", "PATCH")) or is_mcp_post:
            body, complete = await read_body(receive, limit)
            if len(body) > limit:
                raise ratelimit.too_large(limit)
            receive = replay(body, complete, receive)
        if rate and self.limiter.enabled and scope["path"] not in auth.OPEN_PATHS:
            self.limiter.check_request(ratelimit.caller(principal, _client_address(scope)),
                                       scope["path"], scope["method"], body, self.tools)
        return receive


class WithHeaders:
    """send() adding the security headers (and CORS headers) to a response's start; `status`
    once that start went out (500 until then), `finished` once its last body part did. A class,
    not a closure with an attribute: this runs for every request, and setting an attribute on a
    fresh function object cost ~4 µs of /health's 14."""

    __slots__ = ("send", "tls", "cors", "status", "finished")

    def __init__(self, send, tls: bool, cors: tuple) -> None:
        self.send, self.tls, self.cors, self.status, self.finished = send, tls, cors, 500, False

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = message.get("headers", ())
            html = False
            present = set()  # a response's own policy (the web UI's) stands
            for name, value in headers:
                name = name.lower()
                present.add(name)
                html = html or (name == b"content-type" and value.startswith(b"text/html"))
            extra, names = _security_headers(html, self.tls)
            if not present.isdisjoint(names):
                extra = tuple(header for header in extra if header[0] not in present)
            message = {**message, "headers": [*headers, *extra, *self.cors]}
        elif not message.get("more_body"):
            self.finished = True
        await self.send(message)


@lru_cache(maxsize=4)
def _security_headers(html: bool, tls: bool) -> tuple[tuple[tuple[bytes, bytes], ...], frozenset[bytes]]:
    """Computed once: they are the same for every response of a kind. With their names."""
    headers = tuple(_raw(security.security_headers("text/html" if html else "", tls)))
    return headers, frozenset(name for name, _ in headers)


@lru_cache(maxsize=2)
def _health_headers(tls: bool) -> tuple[tuple[bytes, bytes], ...]:
    """/health's whole header list, security headers included: the same for every answer."""
    return (*json_headers(HEALTH_BODY), *_security_headers(False, tls)[0])


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode(), value.encode()) for name, value in headers.items()]


def _app_or_exit():
    """create_app() for `uvicorn chalicelib.transports.asgi:app`: a setting it refuses ends the
    process with one line naming it (exit 1), where the import failed with a traceback."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from ..config import invalid_setting

    try:
        return create_app()
    except ValidationError as exc:
        sys.exit("agent-mail: invalid %s: %s" % invalid_setting(exc))
    except (SettingsError, auth.InsecureConfiguration) as exc:
        sys.exit(f"agent-mail: {exc}")


app = _app_or_exit()
