"""Cloud mode: the REST API and MCP on AWS Lambda (Chalice), generated from the tool registry.

The same convention as the local server (chalicelib/transports/asgi.py): every tool is
`POST /api/{tool}` with its input as the JSON body and its output as the response;
read-only tools also answer `GET /api/{tool}?field=value`. Errors are
`{"error": {"code", "message", "hint"}}` with the tool error's status.

MCP (streamable HTTP) is served by the same MCP ASGI app as locally, through Mangum
(chalicelib/transports/lambda_mcp.py): at `/mcp` on the REST API, and by the `mcp` function
(`mcp_handler` below) for a function URL or an HTTP API.

Imports stay light (no FastAPI; the MCP SDK only on the first MCP request): every cold
start pays for them.
"""

import base64
import time
from typing import Any, Callable, Iterator
from urllib.parse import urlencode

from chalice import Chalice, Response
from chalice.app import Request

from chalicelib.security import auth, ratelimit, rebinding, scopes
from chalicelib.store import db
from chalicelib.transports import attachment_routes, headers as security, mcp_errors, rest
from chalicelib import invoke
from chalicelib.ops import logs, readiness, secrets
from chalicelib.archive import cloud
from chalicelib.attachments import storage as attachment_storage
from chalicelib.attachments.intake import served_type
from chalicelib.config import Settings, get_settings
from chalicelib.errors import LAMBDA_ANSWER_BYTES, AnswerTooLarge, ToolError, internal_error, unknown_tool
from chalicelib.lambda_response import LAMBDA_REST, lambda_answers, lambda_weight
from chalicelib.transports.lambda_mcp import MCPHandler
from chalicelib.web import http as web_http  # plain data only: the pages load on first use
from chalicelib.registry import Tool, to_json
from chalicelib.tools import all_tools, tools_by_name
from chalicelib.tools.retention import run_retention


def create_app(settings: Settings) -> Chalice:
    app = Chalice(app_name="agent-mail")
    logs.configure(settings)
    auth.check_configuration(settings, None if auth.on_lambda() else settings.host)
    db.migrate(settings)  # once per cold start, not per request
    authenticator = auth.Authenticator(settings)
    limiter = ratelimit.RateLimiter(settings)
    tools = tools_by_name()

    def guard(headers, path: str, method: str, body: bytes, source_ip: str | None, authenticate: bool = True) -> auth.Principal:
        """Authentication, body size and rate limit: once per request, for every route but
        /health and /ready (chalicelib/security/auth.py, chalicelib/security/ratelimit.py).
        The caller's principal, for the tool calls of this request. The web UI's pages
        authenticate with their own session cookie (chalicelib/web/)."""
        principal = auth.ANONYMOUS
        if authenticate:
            with limiter.guessing_bounded(source_ip, presented="authorization" in headers):
                principal = authenticator.authenticate(headers)
        logs.note(caller=ratelimit.caller(principal, source_ip))
        # An upload has a limit of its own; a web UI form past it gets the UI's page (add_web_routes).
        if len(body) > settings.max_body_bytes and (path, method) != (attachment_routes.UPLOAD_PATH, "PUT") and not web_path(path):
            raise ratelimit.too_large(settings.max_body_bytes)
        if limiter.enabled and not web_path(path):  # a web UI page counts in WebUI.handle, by who signed in
            limiter.check_request(ratelimit.caller(principal, source_ip), path, method, body, tools)
        return principal

    @app.middleware("http")
    def protect(request: Request, get_response):
        started = time.perf_counter()
        logs.current.set({})  # invoke notes the tool in it, guard the caller
        response = in_the_error_shape(_protected(request, get_response))
        if request.method == "HEAD":  # GET's status and headers, no body (API Gateway sends what the function gives)
            response.body = ""
        tls = (request.headers.get("x-forwarded-proto") or "").lower() == "https"  # set by API Gateway itself
        security.add_security_headers(response.headers, tls)
        response.headers.update(security.cors_headers(request.headers.get("origin"), settings))
        logs.request(request.method, request.path, response.status_code, time.perf_counter() - started,
                     request_id=getattr(app.lambda_context, "aws_request_id", None))
        return response

    def _refused(request: Request, exc: ToolError) -> Response:
        status, headers, body = mcp_errors.refusal(request.path, exc)
        return Response(body.decode(), status_code=status, headers=headers)

    def _protected(request: Request, get_response):
        if request.path not in rebinding.EXEMPT_PATHS:
            try:
                rebinding.check_sent_once(sent_names(request.to_original_event()))
                rebinding.check(request.headers.get("host"), request.headers.get("origin"), settings)
            except ToolError as exc:
                return _refused(request, exc)
        if request.method == "OPTIONS":  # a CORS preflight carries no credentials: answered before authentication
            allowed = sorted(set(app.routes[request.context["resourcePath"]]) - {"OPTIONS"})
            return preflight(request.headers.get("origin"), allowed)
        principal = auth.ANONYMOUS
        if request.path not in auth.OPEN_PATHS:
            try:
                principal = guard(request.headers, request.path, request.method, request.raw_body or b"", source_ip(request),
                                  authenticate=not web_path(request.path))
            except ToolError as exc:
                return _refused(request, exc)
        # The view (and the MCP event loop it submits to) calls tools as this principal.
        reset = auth.current.set(principal)
        try:
            return get_response(request)
        finally:
            auth.current.reset(reset)

    def preflight(origin: str | None, allowed: list[str]) -> Response:
        """204 to a CORS preflight from a CORS_ALLOWED_ORIGINS origin; else the 405 of a method the route
        does not take (API Gateway passes OPTIONS to the function only for routes that declare it: CORS)."""
        answer = security.preflight_headers(origin, settings)
        if answer is None:
            error = rest.http_error(405, "Method Not Allowed", {"Allow": ", ".join(allowed)})
            return json_response(error.status, error.to_dict(), error.headers)
        return Response(body="", status_code=204, headers=answer)

    # Any content type: rest.body_arguments, not Chalice, refuses what is not JSON (in the one error shape).
    for tool in all_tools():
        app.route(tool.rest_path, methods=[*with_head(tool.rest_methods), "OPTIONS"], name=tool.name,
                  content_types=["*/*"])(tool_view(app, tool, settings))

    # The more specific routes above win; API Gateway would answer an unknown path itself (403
    # "Missing Authentication Token"), so a misspelt tool gets the local server's 404 here.
    @app.route("/api/{name}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], content_types=["*/*"])
    def unknown_tool_route(name: str) -> Response:
        error = unknown_tool(name, tools)
        return json_response(error.status, error.to_dict())

    @app.route("/health", methods=["GET", "HEAD"])
    def health() -> Response:
        return json_response(200, {"status": "ok"})  # (its Content-Type in a HEAD's answer too)

    archive_status = tools_by_name()["archive_status"]

    @app.route("/ready", methods=["GET", "HEAD"])
    def ready() -> Response:
        """200, or 503 with the problems (chalicelib/ops/readiness.py); SQS drives the archive here."""
        try:
            return json_response(*readiness.report(settings, worker_up=None))
        except Exception:
            return unexpected(app)

    add_web_routes(app, settings, limiter, authenticator)

    app.api.binary_types.extend(["image/webp", "application/pdf", "application/gzip"])
    get_attachment = tools["get_attachment"]

    @app.route("/api/attachments", methods=["PUT", "OPTIONS"], content_types=["*/*"])
    def attachment_upload() -> Response:
        """A file too large for a request body, into local storage (without ATTACHMENTS_BUCKET: a
        trial's /tmp, `chalice local`); with a bucket, uploads go to request_attachment_upload's URL."""
        def upload() -> Response:
            scopes.require_role(auth.current.get(), "writer", "PUT /api/attachments")  # it stores bytes
            return json_response(200, attachment_routes.upload_whole(app.current_request.raw_body or b"", settings))

        return answered(app, upload)

    @app.route("/api/attachments/{sha256}", methods=["GET", "HEAD", "OPTIONS"])
    def attachment_download(sha256: str) -> Response:
        """An attachment's bytes, for its message's sender and recipients: a redirect to a
        short-lived S3 link (no size limit), or from local storage (a trial's /tmp)."""
        return answered(app, lambda: download(sha256))

    def download(sha256: str) -> Response:
        request = app.current_request
        arguments = attachment_routes.download_arguments(sha256, query_pairs(request), request.headers.get(rest.AGENT_TOKEN_HEADER))
        found = invoke.call(get_attachment, arguments, settings)
        where = attachment_storage.storage(settings)
        if not isinstance(where, attachment_storage.LocalStorage):
            return Response(body="", status_code=302, headers={"Location": found.url})
        served, body = served_type(found.media_type), where.read(found.sha256)
        if served.startswith("text/plain"):  # as the local server serves it; Chalice sends a text type's body as text
            try:
                text = body.decode()
            except UnicodeDecodeError:
                served = "application/octet-stream"
            else:  # as binary (base64: 4/3) when the text, escaped as written there, is past the response (Cyrillic: 6x)
                fits = lambda_weight(body, LAMBDA_REST) <= LAMBDA_ANSWER_BYTES
                served, body = (served, text) if fits else ("application/octet-stream", body)
        elif served not in app.api.binary_types:
            served = "application/octet-stream"
        if isinstance(body, bytes) and 4 * ((len(body) + 2) // 3) > LAMBDA_ANSWER_BYTES:
            raise AnswerTooLarge(
                f"Attachment {found.name!r} ({len(body):,} bytes) is past what an AWS Lambda response holds (6 MB, as"
                " base64).", "Store attachments in S3 (the stack's ATTACHMENTS_BUCKET): downloads then come from there.")
        return Response(body=body, status_code=200, headers={
            "Content-Type": served, "Content-Disposition": attachment_storage.content_disposition(found.name),
            "Cache-Control": attachment_storage.CACHE_CONTROL})

    mcp = MCPHandler(settings)

    # Every method the streamable-HTTP transport uses, and any content type: the MCP SDK,
    # not Chalice, decides what to refuse and how.
    @app.route("/mcp", methods=["POST", "GET", "DELETE", "OPTIONS"], content_types=["*/*"])
    def mcp_route() -> Response:
        try:
            return chalice_response(mcp(rest_event(app.current_request), app.lambda_context))
        except Exception:
            return unexpected(app)

    @app.lambda_function(name="mcp")
    def mcp_handler(event: dict, context: Any) -> dict:
        """MCP for events straight from AWS: HTTP API or function URL (v2), or REST API (v1)."""
        started = time.perf_counter()
        logs.current.set({})
        response = _mcp_answer(event, context)
        security.add_security_headers(response.setdefault("headers", {}), tls=True)  # AWS endpoints are HTTPS
        response["headers"].update(security.cors_headers(auth.lower_headers(event.get("headers")).get("origin"), settings))
        logs.request("POST", "/mcp", response["statusCode"], time.perf_counter() - started,
                     request_id=getattr(context, "aws_request_id", None))
        return response

    def _mcp_answer(event: dict, context: Any) -> dict:
        body = event.get("body") or ""
        body = base64.b64decode(body) if event.get("isBase64Encoded") else body.encode()
        method = event.get("httpMethod") or event.get("requestContext", {}).get("http", {}).get("method", "")
        headers = auth.lower_headers(event.get("headers"))
        try:
            rebinding.check_sent_once(sent_names(event))
            rebinding.check(headers.get("host"), headers.get("origin"), settings)
            if method == "OPTIONS":  # a CORS preflight (a function URL or an HTTP API without CORS of their own)
                answer = preflight(headers.get("origin"), ["POST"])
                return {"statusCode": answer.status_code, "body": answer.body, "headers": answer.headers,
                        "isBase64Encoded": False}
            principal = guard(headers, "/mcp", method, body, ratelimit.event_source_ip(event))
        except ToolError as exc:  # the JSON-RPC error an MCP client shows (a wrong Host, a bad token...)
            status, headers, refusal = mcp_errors.refusal("/mcp", exc)
            return {"statusCode": status, "body": refusal.decode(), "headers": headers, "isBase64Encoded": False}
        reset = auth.current.set(principal)  # the MCP event loop runs the call in a copy of this context
        try:
            return mcp(event, context)
        finally:
            auth.current.reset(reset)
            cloud.publish_after_write(settings)

    @app.middleware("http")
    def archive_publish(request: Request, get_response):
        """After each request, send what it queued for the git archive (a no-op after reads)."""
        response = get_response(request)
        cloud.publish_after_write(settings)
        return response

    @app.on_sqs_message(queue=cloud.queue_name(settings), batch_size=10, name="archive_worker")
    def archive_worker(event) -> dict:
        """The git archive worker (chalicelib/archive/cloud.py): SQS FIFO batch -> commits -> push."""
        return cloud.handle_sqs_event(event.to_dict(), settings, event.context)

    @app.schedule("rate(1 minute)", name="archive_sweep")
    def archive_sweep(event) -> None:
        """Publishes what the after-write drain missed (a failed publish, or a burst), then reports
        the archive's backlog and lag as CloudWatch metrics (infra/template.yaml alarms on the lag)."""
        cloud.publish_all(settings)
        status = invoke.own_call(archive_status, {}, settings)
        logs.metrics_line({"ArchiveBacklog": (status.pending, "Count"), "ArchiveFailed": (status.failed, "Count"),
                           "ArchiveLagSeconds": (status.lag_seconds, "Seconds")})

    @app.schedule("rate(1 hour)", name="retention")
    def retention(event) -> dict:
        """Retention (docs/retention.md): one bounded run of the projects' policies."""
        return run_retention(settings)

    return app


WEB_PATHS = ("/", "/ui", "/ui/projects", "/ui/project", "/ui/agent", "/ui/thread", "/ui/search", "/ui/compose",
             "/ui/act", "/ui/digest", "/ui/login", "/ui/logout", "/ui/live", "/ui/attachment", "/ui/products", "/ui/product",
             "/ui/static/{name}", "/ui/{name}")  # the last: any other address under /ui/, the UI's 404 page


def sent_names(event: dict) -> list[str]:
    """The name of each header field a REST API (v1) event's request sent, one per field sent
    (its multiValueHeaders; an HTTP API's v2 event joins repeats with commas, so sends each once)."""
    return [name for name, values in (event.get("multiValueHeaders") or {}).items() for _ in values or ()]


def source_ip(request: Request) -> str | None:
    """The client address API Gateway saw (never X-Forwarded-For, which the client writes)."""
    return ratelimit.event_source_ip({"requestContext": request.context})


def web_path(path: str) -> bool:
    return path in WEB_PATHS or path.startswith("/ui/static/")


def add_web_routes(app: Chalice, settings: Settings, limiter: ratelimit.RateLimiter, authenticator: auth.Authenticator) -> None:
    """The web UI (chalicelib/web/), the same pages as the local server's; loaded on first use."""
    ui = []

    def view(**names: str) -> Response:
        from chalicelib.web.pages import WebUI, as_written

        if not ui:
            ui.append(WebUI(settings, limiter, authenticator))  # the API's: one key cache
        request = app.current_request
        path = request.path.format(**names)  # Chalice's path is the route's pattern
        query = urlencode(list(query_pairs(request)))
        # The URL's prefix (API Gateway's stage, e.g. /api): links and redirects keep it.
        full = ((request.context or {}).get("path") or path).rstrip("/")
        root = full[: len(full) - len(path.rstrip("/"))] if full.endswith(path.rstrip("/")) else ""
        body = request.raw_body or b""
        too_large = len(body) > settings.max_body_bytes  # refused unread, in the UI's own page
        # Measured as Lambda writes the page: a thread's bodies as its HTML (a shorter page, with
        # "Later messages"), and a page past the 6 MB of its response is the UI's error page, not a 502.
        with lambda_answers(LAMBDA_REST, body=as_written):
            answer = ui[0].handle(web_http.request(
                request.method, path, query, b"" if too_large else body, auth.lower_headers(request.headers),
                root=root, tls=(request.headers.get("x-forwarded-proto") or "").lower() == "https", too_large=too_large,
                client=source_ip(request),
            ))
        body = answer.body  # a file: a trial's local storage (not read for a HEAD)
        if answer.file is not None:
            body = b"" if request.method == "HEAD" else answer.file.read_bytes()
        # Lambda's answer is JSON: Chalice base64-encodes the bytes of a binary type; any other body
        # must be text (the bytes of image/svg+xml, the favicon, made every page's icon a 502).
        if answer.content_type.split(";")[0].strip().lower() not in app.api.binary_types:
            body = body.decode()
        return Response(body, status_code=answer.status, headers={"Content-Type": answer.content_type, **answer.headers})

    for path in WEB_PATHS:
        # An address that is no page: its 404 page, a form sent to it too.
        methods = ["GET", "HEAD", "POST"] if path == "/ui/{name}" else list(web_http.methods(path))
        route = "web_" + (path.strip("/").replace("/", "_").replace("{", "").replace("}", "") or "inbox")
        # Any content type: the web UI refuses what is not its form (in its own page), as locally.
        app.route(path, methods=methods, name=route, content_types=["*/*"])(view)


def with_head(methods) -> list[str]:
    """HEAD wherever GET is taken, as the local server answers it (API Gateway refuses a method no
    route declares: a balancer or a client probing with HEAD got a 403)."""
    return [*methods, "HEAD"] if "GET" in methods and "HEAD" not in methods else list(methods)


def tool_view(app: Chalice, tool: Tool, settings: Settings) -> Callable[[], Response]:
    def view() -> Response:
        with lambda_answers(LAMBDA_REST):  # an answer past Lambda's 6 MB: our 422, not API Gateway's 502
            return respond(app, lambda: invoke.json_call(tool, arguments(tool, app.current_request), settings))

    return view


def arguments(tool: Tool, request: Request) -> Any:
    """The tool's input: the query parameters of a GET, the JSON body of a POST."""
    if request.method in ("GET", "HEAD"):
        given = rest.query_arguments(tool, query_pairs(request))
    else:
        given = rest.body_arguments(request.raw_body or b"", request.headers.get("content-type"))
    return rest.with_header_token(tool, given, request.headers.get(rest.AGENT_TOKEN_HEADER))


def query_pairs(request: Request) -> Iterator[tuple[str, str]]:
    """The query's (name, value) pairs, a repeated name's every value (Chalice's dict keeps its last)."""
    params = request.query_params or {}
    return ((name, value) for name in params for value in params.getlist(name))


def respond(app: Chalice, run: Callable[[], Any]) -> Response:
    """The output of `run()` as JSON, or its error in the shape every transport uses."""
    return answered(app, lambda: json_response(200, run()))


def answered(app: Chalice, run: Callable[[], Response]) -> Response:
    """`run()`'s response, or its error in the shape every transport uses (an unexpected one too:
    Chalice's own 500 is {"Code", "Message"})."""
    try:
        return run()
    except ToolError as exc:
        return json_response(exc.status, exc.to_dict(), exc.headers)
    except Exception:
        return unexpected(app)


def in_the_error_shape(response: Response) -> Response:
    """Chalice's own 405 (a method the route does not take), in the error shape every answer has.
    Seen by `chalice local` and the test client: API Gateway refuses such a method itself (403)."""
    if response.status_code == 405 and isinstance(response.body, dict) and response.body.get("Code") == "MethodNotAllowedError":
        allowed = sorted(set(response.headers["Allow"].split(", ")) - {"OPTIONS"})  # (declared for CORS preflights)
        error = rest.http_error(405, "Method Not Allowed", {"Allow": ", ".join(allowed)})
        return json_response(error.status, error.to_dict(), error.headers)
    return response


def unexpected(app: Chalice) -> Response:
    """The answer to an unexpected exception: the traceback goes to the log, never to the client."""
    app.log.exception("%s %s failed", app.current_request.method, app.current_request.path)
    error = internal_error()
    return json_response(error.status, error.to_dict())


def json_response(status: int, content: Any, headers: dict[str, str] | None = None) -> Response:
    # pydantic_core renders outputs exactly as the FastAPI app does (ids as strings);
    # the body is a str because Lambda's proxy integration wants text.
    body = to_json(content).decode()
    return Response(body=body, status_code=status, headers={"Content-Type": "application/json", **(headers or {})})


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
    # Chalice sets Content-Type and Content-Length itself, so Mangum's lower-case ones came twice (chalice local)
    types = [value for name, value in headers.items() if name.lower() == "content-type"]
    headers = {name: value for name, value in headers.items() if name.lower() not in ("content-length", "content-type")}
    return Response(body=body, status_code=response["statusCode"], headers=headers | ({"Content-Type": types[0]} if types else {}))


secrets.load_into_environment()  # APP_SECRET_ARN (infra/template.yaml): the secret settings, before they are read
app = create_app(get_settings())
mcp_handler = app.handler_map["mcp"]  # the `mcp` function's entry point: Chalice deploys it as "app.mcp_handler"
