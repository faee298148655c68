"""The Chalice app (app.py): routes from the registry, a full flow, errors identical to the FastAPI app's,
and `chalice local` serving over real HTTP."""

import base64
import importlib
import json
from urllib.parse import urlencode

import httpx
import pytest
from chalice.test import Client
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from chalicelib import invoke
from chalicelib.transports import rest
from chalicelib.errors import InvalidArgument, internal_error
from chalicelib.config import get_settings
from chalicelib.tools import all_tools, tools_by_name

from .servers import ROOT, running_chalice_local

TOOLS = tools_by_name()


@pytest.fixture
def settings(tmp_path, monkeypatch):
    """Settings from the environment, as on Lambda, on this test's own database."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/agent_mail.db")
    monkeypatch.setenv("ATTACHMENTS_DIR", str(tmp_path / "attachments"))  # (tools read attachments by get_settings)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def chalice_app(settings):
    # Imported only now: importing app.py builds an app on get_settings() and migrates its database.
    return importlib.import_module("app").create_app(settings)


@pytest.fixture
def chalice(chalice_app):
    with Client(chalice_app, project_dir=str(ROOT)) as client:
        yield Http(client)


@pytest.fixture
def fastapi_app(settings):
    from chalicelib.transports.asgi import create_app

    return create_app(settings).api


@pytest.fixture
def fastapi(fastapi_app):
    return TestClient(fastapi_app)


class Http:
    """The Chalice test client with the calls these tests make: (status, parsed JSON)."""

    def __init__(self, client: Client) -> None:
        self.http = client.http

    def post(self, path: str, arguments=None, *, body: bytes | None = None):
        if body is None:
            body = json.dumps(arguments).encode()
        response = self.http.post(path, headers={"Content-Type": "application/json"}, body=body)
        return response.status_code, json.loads(response.body)

    def get(self, path: str, **params):
        response = self.http.get(f"{path}?{urlencode(params, doseq=True)}" if params else path)
        return response.status_code, json.loads(response.body)


def test_routes_are_exactly_the_registry(chalice_app, fastapi_app):
    expected = {("/health", "GET"), ("/ready", "GET")}
    for tool in all_tools():
        expected.add((f"/api/{tool.name}", "POST"))
        if tool.read_only:
            expected.add((f"/api/{tool.name}", "GET"))
    chalice_routes = {(path, method) for path, methods in chalice_app.routes.items() for method in methods}
    heads = {(path, "HEAD") for path, method in chalice_routes if method == "GET" and path != "/mcp"}  # as locally (Front)
    assert heads <= chalice_routes
    fastapi_routes = {
        (route.path, method) for route in fastapi_app.routes if isinstance(route, APIRoute) for method in route.methods
    }
    # The web UI's pages (chalicelib/web/): Front answers them locally before FastAPI, the same paths.
    from app import WEB_PATHS
    from chalicelib.web.http import ACTS, FORMS
    from chalicelib.web.pages import WebUI

    web = {(path, method) for path in WEB_PATHS for method in (("POST",) if path == ACTS else ("GET", "POST") if path in (*FORMS, "/ui/{name}") else ("GET",))}
    web |= {(path, "HEAD") for path, method in web if method == "GET"}
    assert {path for path, _ in web} - {"/ui/static/{name}", "/ui/{name}"} == set(WebUI.PAGES) - {"/ui/", "/docs"}
    mcp = {("/mcp", method) for method in ("POST", "GET", "DELETE")}  # lambda_mcp
    attachments = {("/api/attachments/{sha256}", "GET"), ("/api/attachments", "PUT")}  # (tests/test_attachments_s3.py)
    unknown_tools = {("/api/{name}", method) for method in ("GET", "POST", "PUT", "PATCH", "DELETE")}  # their 404
    api = expected | mcp | attachments | unknown_tools
    api |= {(path, "HEAD") for path, method in api if method == "GET" and path != "/mcp"}  # (the MCP SDK's: no HEAD)
    preflights = {(path, "OPTIONS") for path, _ in api if path not in ("/health", "/ready")}  # CORS (Front's, locally)
    assert chalice_routes == api | web | preflights
    assert fastapi_routes == expected | {("/metrics", "GET")}  # Prometheus locally; EMF log lines on Lambda


def test_full_flow(chalice):
    status, project = chalice.post("/api/ensure_project", {"human_key": "/work/demo"})
    assert status == 200 and project["slug"] == "work-demo"
    for name in ("BlueLake", "GreenCastle"):
        status, agent = chalice.post(
            "/api/register_agent", {"project_key": "work-demo", "program": "claude-code", "model": "opus", "name": name}
        )
        assert status == 200 and agent["name"] == name
    status, _ = chalice.post(
        "/api/set_contact_policy", {"project_key": "work-demo", "agent_name": "GreenCastle", "policy": "open"}
    )
    assert status == 200

    status, sent = chalice.post(
        "/api/send_message",
        {"project_key": "work-demo", "sender_name": "BlueLake", "to": ["GreenCastle"], "subject": "Plan",
         "body_md": "Step 1", "ack_required": True},
    )
    assert status == 200 and sent["recipients"] == 1
    message_id = sent["message"]["id"]
    assert isinstance(message_id, str)  # 63-bit ids travel as strings

    status, inbox = chalice.get("/api/fetch_inbox", project_key="work-demo", agent_name="GreenCastle", include_bodies="true")
    assert status == 200
    assert [(m["id"], m["subject"], m["body_md"], m["ack_ts"]) for m in inbox["messages"]] == [(message_id, "Plan", "Step 1", None)]

    status, message = chalice.get("/api/get_message", project_key="work-demo", message_id=message_id)
    assert status == 200 and message["body_md"] == "Step 1" and message["to"] == ["GreenCastle"]

    status, receipt = chalice.post(
        "/api/acknowledge_message", {"project_key": "work-demo", "agent_name": "GreenCastle", "message_id": message_id}
    )
    assert status == 200 and receipt["message_id"] == message_id and receipt["ack_ts"]
    _, inbox = chalice.get("/api/fetch_inbox", project_key="work-demo", agent_name="GreenCastle")
    assert inbox["messages"][0]["ack_ts"] == receipt["ack_ts"]


def test_post_without_body_when_every_field_is_optional(chalice):
    assert chalice.http.post("/api/list_projects").status_code == 200


FAILING_REQUESTS = [
    ("POST", "/api/get_project", {"project_key": "nope"}),
    ("GET", "/api/get_project", {"project_key": "nope"}),
    ("GET", "/api/get_project", {}),
    ("GET", "/api/get_project", {"project_key": "nope", "extra": "1"}),
    ("POST", "/api/get_project", {"project_key": "work-demo", "zzz": 1}),
    ("POST", "/api/register_agent", {"project_key": "work-demo", "program": "x", "model": "y", "name": "1bad"}),
    ("GET", "/api/fetch_inbox", {"project_key": "work-demo", "agent_name": "BlueLake", "limit": "many"}),
    ("GET", "/api/get_message", {"project_key": "work-demo", "message_id": "123"}),
    ("POST", "/api/acknowledge_message", {"project_key": "work-demo", "agent_name": "BlueLake", "message_id": 123}),
]


@pytest.mark.parametrize("method, path, arguments", FAILING_REQUESTS)
def test_errors_are_those_of_the_fastapi_app(chalice, fastapi, settings, method, path, arguments):
    invoke.call(TOOLS["ensure_project"], {"human_key": "/work/demo"}, settings)
    invoke.call(TOOLS["register_agent"], {"project_key": "work-demo", "program": "p", "model": "m", "name": "BlueLake"}, settings)
    if method == "GET":
        status, body = chalice.get(path, **arguments)
        expected = fastapi.get(path, params=arguments)
    else:
        status, body = chalice.post(path, arguments)
        expected = fastapi.post(path, json=arguments)
    assert (status, body) == (expected.status_code, expected.json())
    assert status in (404, 422) and set(body["error"]) == {"code", "message", "hint"}


JSON = {"Content-Type": "application/json"}
SAME_ANSWERS = [  # (method, path, body, headers)
    ("POST", "/api/list_projects", b"null", JSON),  # not an object: 422 (Chalice read null as no arguments)
    ("POST", "/api/ensure_project", b"[1]", JSON),
    ("POST", "/api/ensure_project", b"", {}),  # no body: the missing field is named (locally it was "input")
    ("POST", "/api/list_projects", b"", {}),
    ("POST", "/api/list_projects", b'{"limit": 1}', {}),  # JSON without a Content-Type: 415 (Chalice read it)
    ("POST", "/api/list_projects", b'{"limit": 1}', {"Content-Type": "text/plain"}),  # Chalice's own 415 shape
    ("POST", "/api/list_projects", b'{"limit": 1}', {"Content-Type": "Application/JSON; charset=utf-8"}),
    ("POST", "/api/ensure_project", b'{"human_key": "/caf\xe9"}', JSON),  # not UTF-8: 422 (locally 400)
    ("POST", "/api/ensure_project", b'{"human_key": ', JSON),
    ("POST", "/api/ensure_project", b"[" * 5000 + b"]" * 5000, JSON),  # deeper than Python's parser: 422, not a 500
    ("GET", "/api/ensure_project?human_key=/x", b"", {}),  # a method the tool does not take: 405 (Chalice's shape)
    ("DELETE", "/api/list_projects", b"", {}),
    ("POST", "/api/no_such_tool", b"{}", JSON),  # a misspelt tool: 404 (Chalice 403 "Missing Authentication Token")
    ("GET", "/api/no_such_tool", b"", {}),
    # not a sha256: the route's 422 on both (Chalice gave get_attachment's, naming its input's pattern)
    ("GET", "/api/attachments/abc?project_key=work-demo&agent_name=BlueLake&message_id=1", b"", {}),
    ("GET", f"/api/attachments/{'A' * 64}?project_key=work-demo&agent_name=BlueLake&message_id=1", b"", {}),
]


@pytest.mark.parametrize(("method", "path", "body", "headers"), SAME_ANSWERS, ids=lambda value: str(value)[:40])
def test_the_chalice_app_answers_as_the_local_server(chalice, settings, method, path, body, headers):
    """README: errors have one shape everywhere. Both apps read a POST body with rest.body_arguments."""
    from chalicelib.transports.asgi import create_app

    local = TestClient(create_app(settings), base_url="http://127.0.0.1:8765").request(method, path, content=body,
                                                                                       headers=headers)
    answer = chalice.http.request(method, path, headers=headers, body=body)
    allow = {name.lower(): value for name, value in answer.headers.items()}.get("allow")
    assert (answer.status_code, json.loads(answer.body), allow) == (local.status_code, local.json(), local.headers.get("allow"))
    if local.status_code != 200:
        assert set(local.json()["error"]) == {"code", "message", "hint"} and local.status_code < 500


def test_cors_answers_as_the_local_server(tmp_path, monkeypatch):
    """QA, session 29: CORS_ALLOWED_ORIGINS did nothing on AWS: no Access-Control-* headers, and no
    route took a preflight (API Gateway answers OPTIONS itself unless a route declares it)."""
    from chalicelib.transports.asgi import create_app

    from .aws_events import CONTEXT, http_api_event

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/agent_mail.db")
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://dash.example.com")
    get_settings.cache_clear()
    settings = get_settings()
    chalice_app = importlib.import_module("app").create_app(settings)
    local = TestClient(create_app(settings), base_url="http://127.0.0.1:8765")
    allowed, other = "https://dash.example.com", "http://127.0.0.1:3000"

    def cors(headers) -> dict:
        return {name.lower(): value for name, value in headers.items() if name.lower().startswith("access-control")
                or name.lower() in ("vary", "allow")}

    with Client(chalice_app, project_dir=str(ROOT)) as client:
        for method, path, origin in [("OPTIONS", "/api/list_projects", allowed), ("OPTIONS", "/api/list_projects", other),
                                     ("OPTIONS", "/mcp", allowed), ("GET", "/api/list_projects", allowed),
                                     ("GET", "/api/list_projects", other), ("OPTIONS", "/api/no_such_tool", allowed)]:
            headers = {"Host": "127.0.0.1:8765", "Origin": origin, "Access-Control-Request-Method": "POST"}
            answer = client.http.request(method, path, headers=headers, body=b"")
            expected = local.request(method, path, headers=headers)
            expected_cors = cors(expected.headers) | ({"allow": expected.headers["allow"]} if "allow" in expected.headers else {})
            assert (answer.status_code, cors(answer.headers)) == (expected.status_code, expected_cors), (method, path, origin)
    assert cors(answer.headers)["access-control-allow-origin"] == allowed  # (the last: a preflight of any path)
    function = chalice_app.handler_map["mcp"]  # a function URL or an HTTP API
    answer = function(http_api_event("OPTIONS", "/mcp", None, {"Host": "127.0.0.1:8765", "Origin": allowed,
                                                               "Access-Control-Request-Method": "POST"}), CONTEXT)
    assert answer["statusCode"] == 204 and cors(answer["headers"])["access-control-allow-origin"] == allowed
    get_settings.cache_clear()


def test_a_file_too_large_for_a_body_uploads_to_local_storage_as_locally(chalice, settings):
    """QA, session 29: without ATTACHMENTS_BUCKET request_attachment_upload named PUT /api/attachments,
    which the Chalice app did not have (404): files over a request body's size could not be sent."""
    import hashlib

    data = b"a large log line\n" * 80_000  # over MAX_BODY_BYTES (1 MiB)
    sha = hashlib.sha256(data).hexdigest()
    chalice.post("/api/ensure_project", {"human_key": "/work/demo"})
    chalice.post("/api/register_agent", {"project_key": "work-demo", "program": "p", "model": "m", "name": "BlueLake"})
    status, target = chalice.post("/api/request_attachment_upload", {"project_key": "work-demo", "agent_name": "BlueLake",
                                                                       "sha256": sha, "size": len(data)})
    assert status == 200 and (target["method"], target["url"]) == ("PUT", "/api/attachments")
    answer = chalice.http.request("PUT", "/api/attachments", headers={"Content-Type": "application/octet-stream"}, body=data)
    assert (answer.status_code, json.loads(answer.body)) == (200, {"sha256": sha, "size": len(data)})
    status, sent = chalice.post("/api/send_message", {"project_key": "work-demo", "sender_name": "BlueLake", "to": ["BlueLake"],
                                                      "subject": "log", "body_md": "x",
                                                      "attachments": [{"name": "big.log", "sha256": sha}]})
    assert status == 200 and sent["message"]["attachments"][0]["size"] == len(data)
    answer = chalice.http.request("PUT", "/api/attachments", headers={"Content-Type": "application/octet-stream"}, body=b"")
    assert answer.status_code == 422 and "empty" in json.loads(answer.body)["error"]["message"]


def test_a_download_from_local_storage_fits_a_lambda_response_or_says_it_cannot(chalice, chalice_app, settings):
    """QA, session 40: without ATTACHMENTS_BUCKET (a trial) a text file was served as text, which the
    runtime writes with each non-ASCII character as \\uXXXX: 2.4 MB of Cyrillic made a 7.2 MB answer,
    past Lambda's 6 MB (API Gateway's 502). Now such text goes as binary (base64), and a file too
    large either way is a 422 saying where downloads of that size come from."""
    import hashlib

    from .aws_events import CONTEXT, rest_api_event

    chalice.post("/api/ensure_project", {"human_key": "/work/files"})
    chalice.post("/api/register_agent", {"project_key": "work-files", "program": "p", "model": "m", "name": "BlueLake"})

    def download(data: bytes, name: str) -> dict:
        sha = hashlib.sha256(data).hexdigest()
        chalice.post("/api/request_attachment_upload", {"project_key": "work-files", "agent_name": "BlueLake", "sha256": sha,
                                                        "size": len(data)})
        chalice.http.request("PUT", "/api/attachments", headers={"Content-Type": "application/octet-stream"}, body=data)
        status, sent = chalice.post("/api/send_message", {"project_key": "work-files", "sender_name": "BlueLake", "to": ["BlueLake"],
                                                          "subject": name, "body_md": "b", "attachments": [{"name": name, "sha256": sha}]})
        assert status == 200, sent
        query = {"project_key": ["work-files"], "agent_name": ["BlueLake"], "message_id": [str(sent["message"]["id"])]}
        event = rest_api_event("GET", f"/api/attachments/{sha}", query=query, headers={"Accept": "*/*", "Host": "localhost"})
        event["resource"] = event["requestContext"]["resourcePath"] = "/api/attachments/{sha256}"
        event["pathParameters"] = {"sha256": sha}
        return chalice_app(event, CONTEXT)

    text = ("Ж" * 1_200_000).encode()
    answer = download(text, "ru.txt")
    assert answer["statusCode"] == 200 and len(json.dumps(answer)) < 6 * 1024 * 1024  # as the runtime writes it
    assert answer["isBase64Encoded"] and base64.b64decode(answer["body"]) == text
    refused = download(bytes(range(256)) * 19_000, "heap.bin")  # 4.9 MB: 6.5 MB as base64
    assert refused["statusCode"] == 422 and "ATTACHMENTS_BUCKET" in json.loads(refused["body"])["error"]["hint"]


def test_the_chalice_apps_hints_send_no_one_to_the_openapi_json_it_does_not_serve(chalice):
    """QA, session 33: an unknown tool's hint (a wrong method's, invalid arguments') said to list the
    tools at /openapi.json, which only the local server serves (here API Gateway's 403, on AWS its 404)."""
    wrong_method = chalice.http.request("DELETE", "/api/list_projects")
    answers = [chalice.post("/api/no_such_tool", {}), chalice.post("/api/ensure_project", {"human_key": 5}),
               (wrong_method.status_code, json.loads(wrong_method.body))]
    assert [status for status, _ in answers] == [404, 422, 405]
    for _, body in answers:
        hint = body["error"]["hint"]
        assert "tools/list (MCP)" in hint and hint.count("/openapi.json") == hint.count("on the local server, /openapi.json") == 1
    assert chalice.http.get("/openapi.json").status_code == 403


def test_unknown_project_is_404(chalice):
    status, body = chalice.post("/api/get_project", {"project_key": "nope"})
    assert status == 404 and body["error"]["code"] == "not_found"


def test_invalid_arguments_are_422(chalice):
    status, body = chalice.post("/api/ensure_project", {"human_key": 5})
    assert status == 422 and body["error"]["code"] == "invalid_argument"
    assert "human_key" in body["error"]["message"]
    # Not an object: pydantic's wording here differs from FastAPI's, so only the status and code are compared.
    status, body = chalice.post("/api/send_message", [1, 2])
    assert status == 422 and body["error"]["code"] == "invalid_argument"


def test_malformed_json_is_422(chalice, settings):
    status, body = chalice.post("/api/ensure_project", body=b'{"human_key": ')
    assert status == 422
    assert body["error"]["code"] == "invalid_argument"
    assert body["error"]["message"].startswith("The request body is not valid JSON:")
    # A lone surrogate escape, where no validator trips on it (a subject): 422, not a 500 from the database (session 29)
    invoke.call(TOOLS["ensure_project"], {"human_key": "/work/demo"}, settings)
    invoke.call(TOOLS["register_agent"], {"project_key": "work-demo", "program": "p", "model": "m", "name": "BlueLake"}, settings)
    status, body = chalice.post("/api/send_message", body=b'{"project_key": "work-demo", "sender_name": "BlueLake",'
                                b' "to": ["BlueLake"], "subject": "\\udc00", "body_md": "b"}')
    assert status == 422 and "\\udc00 is half a UTF-16 surrogate pair" in body["error"]["message"]
    status, body = chalice.post("/api/ensure_project", body=b'{"human_key": "/x\\ud83d\\ude00y"}')  # a whole pair: a character
    assert status == 200 and body["human_key"] == "/x\U0001f600y"


def test_unexpected_exception_is_500_without_details(chalice, monkeypatch):
    def fail(*_):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(invoke, "call", fail)
    status, body = chalice.get("/api/list_projects")
    assert status == 500
    assert body == internal_error().to_dict() and "secret" not in json.dumps(body)


def test_an_unexpected_failure_of_the_attachment_routes_is_a_500_in_the_error_shape(chalice, settings, monkeypatch):
    """QA, session 31: the Chalice attachment routes caught ToolError only: a disk or S3 failure got
    Chalice's own 500 ({"Code", "Message"}); locally a full disk during PUT /api/attachments
    closed the response with no body."""
    from chalicelib.attachments import storage
    from chalicelib.transports.asgi import create_app

    sent, query = _sent_log(settings, b"ok")

    def broken(errno: int, text: str):
        def fail(*_):
            raise OSError(errno, text)
        return fail

    monkeypatch.setattr(storage.LocalStorage, "read", broken(5, "Input/output error"))
    monkeypatch.setattr(storage.LocalWriter, "write", broken(28, "No space left on device"))
    local = TestClient(create_app(settings), base_url="http://127.0.0.1:8765")
    answers = [chalice.get(f"/api/attachments/{sent.attachments[0].sha256}?{query}")]
    for put in (lambda: chalice.http.request("PUT", "/api/attachments", body=b"data",
                                             headers={"Content-Type": "application/octet-stream"}),
                lambda: local.put("/api/attachments", content=b"data")):
        answer = put()
        answers.append((answer.status_code, json.loads(answer.body if hasattr(answer, "body") else answer.content)))
    assert answers == [(500, internal_error().to_dict())] * 3
    assert not [path for path in settings.attachments_dir.iterdir() if path.name.startswith(".upload-")]  # nothing left


def test_health_and_ready(chalice):
    assert chalice.get("/health") == (200, {"status": "ok"})
    status, ready = chalice.get("/ready")
    assert status == 200 and ready["status"] == "ok" and "projects" not in ready  # open to anyone: no count


def test_head_answers_get_s_status_and_headers_without_a_body_as_the_local_server(chalice, settings):
    """QA, session 37: no route of the Chalice app declared HEAD, so on AWS a HEAD of /health, /ready,
    a tool's GET route, an attachment download or a web UI page got API Gateway's refusal, where the
    local server answers GET's status and headers without the body (a balancer probing with HEAD
    took the service for down)."""
    from chalicelib.transports.asgi import create_app

    sent, query = _sent_log(settings, b"passed\n")
    local = TestClient(create_app(settings), base_url="http://127.0.0.1:8765")
    shown = ("content-type", "content-disposition", "cache-control", "allow")

    def head(answer) -> dict:
        return {name.lower(): value for name, value in answer.headers.items() if name.lower() in shown}

    for path in ("/health", "/ready", "/api/list_projects", "/api/whois?project_key=work-demo&agent_name=Nobody",
                 f"/api/attachments/{sent.attachments[0].sha256}?{query}", "/ui/projects", "/ui/static/ui.css", "/api/no_such_tool"):
        answer = chalice.http.request("HEAD", path, headers={"Host": "127.0.0.1:8765"})
        got = chalice.http.request("GET", path, headers={"Host": "127.0.0.1:8765"})
        assert (answer.status_code, head(answer), answer.body) == (got.status_code, head(got), b""), path
        assert got.body, path
        if path != "/ready":  # (the local server's also says whether its archive worker runs: none here)
            expected = local.head(path)
            assert (answer.status_code, head(answer), answer.body) == (expected.status_code, head(expected), expected.content), path


def test_query_lists_take_every_value_and_other_fields_one():
    params = [("to", "A"), ("to", "B"), ("subject", "x")]
    assert rest.query_arguments(TOOLS["send_message"], params) == {"to": ["A", "B"], "subject": "x"}
    assert rest.query_arguments(TOOLS["reply_message"], [("to", "A")]) == {"to": ["A"]}  # Optional[list]
    with pytest.raises(InvalidArgument, match="subject is given more than once"):  # the last one was taken
        rest.query_arguments(TOOLS["send_message"], [*params, ("subject", "y")])


def test_chalice_local_serves_the_api(tmp_path):
    database = tmp_path / "local.db"
    with running_chalice_local(database) as url:
        http = httpx.Client(timeout=60)  # the first call also makes the app (5 s was too short on a busy machine)
        created = http.post(f"{url}/api/ensure_project", json={"human_key": "/work/demo"})
        assert created.status_code == 200 and created.json()["slug"] == "work-demo"
        listed = http.get(f"{url}/api/list_projects")
        assert listed.status_code == 200 and [p["slug"] for p in listed.json()["projects"]] == ["work-demo"]
        # /mcp through Mangum: its lower-case content-type and content-length came beside Chalice's own
        tools = http.post(f"{url}/mcp", headers={"Accept": "application/json, text/event-stream", "Content-Type": "application/json"},
                          json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
        assert tools.status_code == 200 and tools.json()["result"]["tools"]
        assert tools.headers.get_list("content-type") == ["application/json"] and len(tools.headers.get_list("content-length")) == 1
        # docs/deploy.md: a path no route takes gets API Gateway's own answer here (infra/template.yaml's is AWS's)
        for path in ("/docs", "/openapi.json", "/metrics", "/no/such/path"):
            unmatched = http.get(f"{url}{path}")
            assert (unmatched.status_code, unmatched.json()) == (403, {"message": "Missing Authentication Token"}), path
    assert database.exists()

def test_a_download_from_local_storage_is_served_as_the_local_server_serves_it(tmp_path, monkeypatch):
    """QA, session 28: Chalice (local storage: a trial's /tmp) served a text attachment as
    application/octet-stream, without the Cache-Control the local server sends."""
    import base64

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/agent_mail.db")
    monkeypatch.setenv("ATTACHMENTS_DIR", str(tmp_path / "attachments"))
    get_settings.cache_clear()
    try:
        app = importlib.import_module("app").create_app(get_settings())
        with Client(app, project_dir=str(ROOT)) as client:
            http = Http(client)
            http.post("/api/ensure_project", {"human_key": "/work/files"})
            for name in ("BlueLake", "GreenCastle"):
                http.post("/api/register_agent", {"project_key": "work-files", "program": "p", "model": "m", "name": name})
            http.post("/api/set_contact_policy", {"project_key": "work-files", "agent_name": "GreenCastle", "policy": "open"})
            files = [{"name": "run.log", "content_base64": base64.b64encode("passed ✓\n".encode()).decode()},
                     {"name": "latin.log", "media_type": "text/plain", "content_base64": base64.b64encode(b"caf\xe9").decode()}]
            status, sent = http.post("/api/send_message", {"project_key": "work-files", "sender_name": "BlueLake",
                                                           "to": ["GreenCastle"], "subject": "logs", "body_md": "b",
                                                           "attachments": files})
            served = []
            for attachment in sent["message"]["attachments"]:
                query = urlencode({"project_key": "work-files", "agent_name": "GreenCastle", "message_id": sent["message"]["id"]})
                response = client.http.get(f"/api/attachments/{attachment['sha256']}?{query}",  # (Chalice: binary if accepted)
                                           headers={"Accept": "application/octet-stream"})
                headers = {name.lower(): value for name, value in response.headers.items()}
                served.append((response.status_code, headers.get("content-type"), headers.get("cache-control"),
                               response.body))
    finally:
        get_settings.cache_clear()
    assert served[0] == (200, "text/plain; charset=utf-8", "private, max-age=3600, immutable", "passed ✓\n".encode())
    assert served[1][:3] == (200, "application/octet-stream", "private, max-age=3600, immutable")  # not UTF-8: as bytes
    assert served[1][3] == b"caf\xe9"


LAMBDA_ANSWER_MAX = 6 * 1024 * 1024  # a synchronous invocation's response, as the runtime serializes it


def test_a_text_attachment_over_mcp_fits_a_lambda_answer(chalice_app, chalice, settings):
    """QA, session 31: a text attachment within ATTACHMENT_INLINE_MAX_BYTES came back over MCP as
    text, JSON-escaped in the answer and again in Lambda's response (the Python 3.11 runtime's
    json.dumps writes non-ASCII as \\uXXXX): a JSON-lines log of 3.9 MiB made 6.4 MB, Russian notes
    of 3.5 MiB 9.3 MB, past Lambda's 6 MB (a 502). Such a text now comes as a blob, as binary content."""
    import base64
    import hashlib

    from .aws_events import CONTEXT, MCP_HEADERS, http_api_event, rest_api_event, tool_call

    limit = settings.attachment_inline_max_bytes
    line = '{"ts":"2026-01-02T03:04:05Z","level":"INFO","msg":"request","path":"/api/send_message","status":200}\n'
    files = {"build.log": (line * (limit // len(line))).encode(),  # quotes: 4 bytes each, escaped twice
             "notes.md": ("Привет, мир. " * (limit // len("Привет, мир. ".encode())))[:-1].encode(),  # 6 a letter
             "small.log": (line * 1000).encode()}  # escaped twice, still within base64 of the limit: text
    assert all(limit - 200 < len(data) <= limit for name, data in files.items() if name != "small.log")
    chalice.post("/api/ensure_project", {"human_key": "/work/big"})
    for name in ("BlueLake", "GreenCastle"):
        chalice.post("/api/register_agent", {"project_key": "work-big", "program": "p", "model": "m", "name": name})
    chalice.post("/api/set_contact_policy", {"project_key": "work-big", "agent_name": "GreenCastle", "policy": "open"})
    for name, data in files.items():
        upload = chalice.http.request("PUT", "/api/attachments", headers={"Content-Type": "application/octet-stream"}, body=data)
        assert json.loads(upload.body)["sha256"] == hashlib.sha256(data).hexdigest()
    status, sent = chalice.post("/api/send_message", {"project_key": "work-big", "sender_name": "BlueLake", "to": ["GreenCastle"],
                                                      "subject": "logs", "body_md": "attached", "attachments": [
                                                          {"name": name, "sha256": hashlib.sha256(data).hexdigest()}
                                                          for name, data in files.items()]})
    assert status == 200, sent
    headers = {**MCP_HEADERS, "Host": "127.0.0.1:8765"}
    for attachment, data in zip(sent["message"]["attachments"], files.values()):
        call = tool_call("get_attachment", {"project_key": "work-big", "agent_name": "GreenCastle",
                                            "message_id": sent["message"]["id"], "sha256": attachment["sha256"]})
        for entry, event in ((chalice_app, rest_api_event("POST", "/mcp", call, headers)),  # the REST API's /mcp
                             (chalice_app.handler_map["mcp"], http_api_event("POST", "/mcp", call, headers))):  # function URL
            answer = entry(event, CONTEXT)
            assert len(json.dumps(answer).encode()) <= LAMBDA_ANSWER_MAX, attachment["name"]
            resource = json.loads(answer["body"])["result"]["content"][1]["resource"]
            if attachment["name"] == "small.log":
                assert resource["text"].encode() == data
            else:
                assert base64.b64decode(resource["blob"]) == data and resource["mimeType"] == attachment["media_type"]


def _sent_log(settings, content: bytes):
    """BlueLake's message to itself in work-demo with run.log attached, and the query that downloads it as BlueLake."""
    import base64

    invoke.call(TOOLS["ensure_project"], {"human_key": "/work/demo"}, settings)
    invoke.call(TOOLS["register_agent"], {"project_key": "work-demo", "program": "p", "model": "m", "name": "BlueLake"}, settings)
    sent = invoke.call(TOOLS["send_message"], {"project_key": "work-demo", "sender_name": "BlueLake", "to": ["BlueLake"],
                                               "subject": "log", "body_md": "x", "attachments": [
                                                   {"name": "run.log", "content_base64": base64.b64encode(content).decode()}]},
                       settings).message
    return sent, urlencode({"project_key": "work-demo", "agent_name": "BlueLake", "message_id": sent.id})
