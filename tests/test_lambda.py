"""Cloud mode as AWS runs it: the Lambda entry points of app.py called with synthetic API
Gateway events (REST API v1 for `app.app`, HTTP API / function URL v2 for `app.mcp_handler`),
several warm invocations per process, errors as in local mode, `chalice local` with the
official MCP client, and imports that stay lazy for REST."""

import asyncio
import base64
import importlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from mcp import Client

from chalicelib import clock, invoke
from chalicelib.config import Settings
from chalicelib.errors import Conflict, InvalidArgument, NotFound, internal_error
from chalicelib.tools import all_tools

from .aws_events import API_HOST, CONTEXT, MCP_HEADERS, URL_HOST, http_api_event, rest_api_event, rpc, tool_call
from .servers import ROOT, running_chalice_local, running_server

INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path}/agent_mail.db",
        mcp_allowed_hosts=["127.0.0.1:*", API_HOST, URL_HOST],  # as .chalice/config.json says for a deployment
    )


@pytest.fixture
def app_module(tmp_path, monkeypatch):
    # Importing app.py builds an app on the environment's settings: give it a database of its own.
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/imported.db")
    return importlib.import_module("app")


@pytest.fixture
def aws(app_module, settings):
    return Lambda(app_module.create_app(settings))


class Lambda:
    """The two entry points of one Chalice app, called as Lambda calls them: (event, context)."""

    def __init__(self, chalice_app) -> None:
        self.api = chalice_app  # handler "app.app": the REST API, /mcp included
        self.mcp_function = chalice_app.handler_map["mcp"]  # handler "app.mcp_handler"

    def rest(self, method: str, path: str, body=None, query=None) -> tuple[int, dict]:
        return parsed(self.api(rest_api_event(method, path, body, {"Content-Type": "application/json"}, query), CONTEXT))

    def mcp(self, via: str, message, headers=None, method: str = "POST") -> tuple[int, dict | str]:
        """`message` to MCP, through the REST API ("v1") or straight to the mcp function ("v2")."""
        headers = MCP_HEADERS | (headers or {})
        if via == "v1":
            return parsed(self.api(rest_api_event(method, "/mcp", message, headers), CONTEXT))
        return parsed(self.mcp_function(http_api_event(method, "/mcp", message, headers), CONTEXT))


def parsed(response: dict) -> tuple[int, dict | str]:
    body = response.get("body") or ""
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body).decode()
    headers = {name.lower(): value for name, value in (response.get("headers") or {}).items()}
    # API Gateway sends application/json when the function names no content type (/health does not).
    is_json = headers.get("content-type", "application/json").startswith("application/json") and body
    return response["statusCode"], json.loads(body) if is_json else body


def tool_result(answer: tuple[int, dict]) -> dict:
    status, body = answer
    assert status == 200 and not body["result"]["isError"], body
    return body["result"]["structuredContent"]


@pytest.mark.parametrize("lean", [True, False], ids=["lean-path", "sdk-transport"])
def test_a_session_over_warm_invocations(app_module, settings, lean):
    """Several rounds of initialize, tools/list and tools/call in one process, through both entry
    points. Through the SDK transport this needs its session manager to outlive an invocation:
    Mangum's per-invocation lifespan would fail from the second one on."""
    aws = Lambda(app_module.create_app(settings.model_copy(update={"mcp_lean_path": lean})))
    names = {tool.name for tool in all_tools()}
    created = []
    for round in range(3):
        for via in ("v1", "v2"):
            status, init = aws.mcp(via, rpc("initialize", INIT))
            assert status == 200 and init["result"]["serverInfo"]["name"] == "agent-mail"
            assert init["result"]["protocolVersion"] == "2025-06-18"
            assert aws.mcp(via, {"jsonrpc": "2.0", "method": "notifications/initialized"}) == (202, "")
            status, listed = aws.mcp(via, rpc("tools/list"), {"mcp-protocol-version": "2025-06-18"})
            assert status == 200 and {tool["name"] for tool in listed["result"]["tools"]} == names
            key = f"/lambda/{round}/{via}"
            created.append(tool_result(aws.mcp(via, tool_call("ensure_project", {"human_key": key})))["slug"])
            projects = tool_result(aws.mcp(via, tool_call("list_projects", {})))["projects"]
            assert [project["slug"] for project in projects] == created


def test_invocations_from_many_threads(aws):
    """`chalice local` runs every request on a new thread without an event loop; all of them
    share the one loop of the MCP app."""

    def create(n: int) -> str:
        return tool_result(aws.mcp("v1" if n % 2 else "v2", tool_call("ensure_project", {"human_key": f"/thread/{n}"})))["slug"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        slugs = list(pool.map(create, range(40)))
    assert sorted(slugs) == sorted(f"thread-{n}" for n in range(40))
    projects = tool_result(aws.mcp("v1", tool_call("list_projects", {})))["projects"]
    assert sorted(project["slug"] for project in projects) == sorted(slugs)


# (HTTP method, body, extra headers): the lean path's requests, and ones the SDK answers.
SAME_AS_LOCAL = [
    ("POST", rpc("initialize", INIT), {}),
    ("POST", rpc("initialize", INIT | {"protocolVersion": "1999-01-01"}), {}),
    ("POST", rpc("tools/list"), {"mcp-protocol-version": "2025-06-18"}),
    ("POST", tool_call("list_projects", {}), {}),
    ("POST", tool_call("get_project", {"project_key": "nope"}), {}),
    ("POST", tool_call("ensure_project", {"human_key": 5}), {}),
    ("POST", tool_call("no_such_tool", {}), {}),
    ("POST", rpc("resources/read", {"uri": "resource://project/nope"}), {}),  # a resource error
    ("POST", [rpc("ping", id=1), rpc("ping", id=2)], {}),
    ("POST", "{not json", {}),
    ("POST", rpc("ping"), {"Content-Type": "text/plain"}),
    ("POST", rpc("ping"), {"Accept": "application/json"}),
    ("POST", rpc("ping"), {"Origin": "http://evil.example"}),
    ("DELETE", None, {}),
    ("GET", None, {"Accept": "text/event-stream"}),
]


def test_mcp_answers_as_in_local_mode(aws, settings):
    """The same requests to a local-mode server (uvicorn) and through both Lambda entry points."""
    with running_server(settings.database_path) as local:
        for method, body, headers in SAME_AS_LOCAL:
            content = body if body is None or isinstance(body, str) else json.dumps(body)
            answer = httpx.request(method, f"{local}/mcp", headers=MCP_HEADERS | headers, content=content)
            is_json = answer.content and answer.headers.get("content-type", "").startswith("application/json")
            expected = (answer.status_code, answer.json() if is_json else answer.text)
            for via in ("v1", "v2"):
                assert aws.mcp(via, body, headers, method) == expected, (via, method, body, headers)


def test_hosts_not_allowed_are_refused(aws):
    for via in ("v1", "v2"):
        status, body = aws.mcp(via, rpc("ping"), {"Host": "evil.example"})
        # The JSON-RPC error an MCP client shows, the REST body as its data.
        assert (status, body["error"]["data"]["error"]["code"]) == (421, "misdirected_request")
        assert body["error"]["message"] == "Host 'evil.example' is not served here."


def test_get_is_405_without_an_sse_stream(aws):
    """An SSE stream would hold the invocation until its timeout (Lambda buffers responses),
    and a stateless server has nothing to send on it."""
    for via, event, handler in (("v1", rest_api_event, aws.api), ("v2", http_api_event, aws.mcp_function)):
        response = handler(event("GET", "/mcp", None, {"Accept": "text/event-stream"}), CONTEXT)
        headers = {name.lower(): value for name, value in response["headers"].items()}
        assert (response["statusCode"], headers["allow"]) == (405, "POST"), via
        assert json.loads(response["body"])["error"]["code"] == -32600


def test_a_base64_body_from_a_function_url(aws):
    event = http_api_event("POST", "/mcp", tool_call("list_projects", {}), MCP_HEADERS)
    event["body"], event["isBase64Encoded"] = base64.b64encode(event["body"].encode()).decode(), True
    assert tool_result(parsed(aws.mcp_function(event, CONTEXT))) == {"projects": [], "next_cursor": None}


def test_the_mcp_function_refuses_other_events(aws):
    with pytest.raises(ValueError, match="not an API Gateway"):
        aws.mcp_function({"Records": [{"eventSource": "aws:sqs", "body": "{}"}]}, CONTEXT)


@pytest.mark.parametrize(
    "error",
    [NotFound("No project 'x'.", "Call ensure_project."), Conflict("Taken.", "Pick another."),
     InvalidArgument("Bad.", "Fix it."), RuntimeError("secret internals")],
    ids=["404", "409", "422", "500"],
)
def test_errors_are_those_of_local_mode(aws, settings, monkeypatch, error):
    """A tool error's status and JSON body on REST, and the same JSON as an MCP tool error, on
    every Lambda entry point as in the local FastAPI app."""

    def fail(*_):
        raise error

    async def afail(*_, **__):
        raise error

    monkeypatch.setattr(invoke, "call", fail)
    monkeypatch.setattr(invoke, "acall", afail)
    from chalicelib.transports.asgi import create_app

    local = TestClient(create_app(settings).api, raise_server_exceptions=False).post("/api/list_projects", json={})
    status, body = aws.rest("POST", "/api/list_projects", {})
    assert (status, body) == (local.status_code, local.json())
    assert status == getattr(error, "status", 500)
    if isinstance(error, RuntimeError):
        assert body == internal_error().to_dict()
    for via in ("v1", "v2"):
        status, answer = aws.mcp(via, tool_call("list_projects", {}))
        assert status == 200 and answer["result"]["isError"] is True
        assert json.loads(answer["result"]["content"][0]["text"]) == body


def test_every_rest_route_answers_as_in_local_mode(aws, settings, monkeypatch):
    """Every route of the registry through the Lambda handler (REST API events) and the FastAPI
    app, with an empty input: the same status and body (mostly the 422 naming the missing fields)."""
    from chalicelib.transports.asgi import create_app

    monkeypatch.setattr(clock, "now", lambda: "2026-01-02T03:04:05.000006+00:00")
    local = TestClient(create_app(settings).api)
    for tool in all_tools():
        requests = [("POST", {})] + ([("GET", None)] if tool.read_only else [])
        for method, body in requests:
            expected = local.request(method, tool.rest_path, json=body)
            answer = aws.rest(method, tool.rest_path, body)
            assert answer == (expected.status_code, expected.json()), (method, tool.rest_path)


def test_rest_query_parameters_from_a_real_event(aws):
    tool_result(aws.mcp("v1", tool_call("ensure_project", {"human_key": "/q"})))
    status, body = aws.rest("GET", "/api/get_project", query={"project_key": ["q"]})
    assert status == 200 and body["slug"] == "q"
    assert aws.rest("GET", "/health") == (200, {"status": "ok"})


IMPORTED = "import sys; print(sorted({m.split('.')[0] for m in sys.modules} & {'mcp', 'mangum', 'starlette', 'fastapi', 'anyio'}))"


def test_rest_invocations_never_import_the_mcp_sdk(tmp_path):
    script = f"""
import app
from tests.aws_events import CONTEXT, MCP_HEADERS, rest_api_event, rpc
assert app.app(rest_api_event("GET", "/api/list_projects"), CONTEXT)["statusCode"] == 200
{IMPORTED}
assert app.app(rest_api_event("POST", "/mcp", rpc("ping"), MCP_HEADERS), CONTEXT)["statusCode"] == 200
{IMPORTED}
"""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/lazy.db", "ALLOWED_HOSTS": json.dumps([API_HOST])}
    output = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert output.stdout.splitlines() == ["[]", "['anyio', 'mangum', 'mcp', 'starlette']"]


@pytest.fixture(scope="module")
def chalice_url(tmp_path_factory):
    with running_chalice_local(tmp_path_factory.mktemp("chalice") / "agent_mail.db") as url:
        yield url


@pytest.mark.parametrize("mode", ["legacy", "auto"])  # initialize handshake, and 2026-07-28 discovery
def test_the_official_client_with_chalice_local(chalice_url, mode):
    async def session():
        async with Client(f"{chalice_url}/mcp", mode=mode) as client:
            assert {tool.name for tool in (await client.list_tools()).tools} == {tool.name for tool in all_tools()}

            async def call(tool_name, /, **arguments):
                result = await client.call_tool(tool_name, arguments)
                assert not result.is_error, result.content[0].text
                return result.structured_content

            project = (await call("ensure_project", human_key=f"/chalice/{mode}"))["slug"]
            for name in ("BlueLake", "GreenCastle"):
                await call("register_agent", project_key=project, program="p", model="m", name=name)
            error = await client.call_tool("whois", {"project_key": project, "agent_name": "Nobody"})
            assert error.is_error and json.loads(error.content[0].text)["error"]["code"] == "not_found"
            return project

    project = asyncio.run(session())
    # REST on the same server sees what MCP wrote.
    agents = httpx.get(f"{chalice_url}/api/list_agents", params={"project_key": project})
    assert agents.status_code == 200 and [a["name"] for a in agents.json()["agents"]] == ["BlueLake", "GreenCastle"]


def test_health_and_reads_do_not_wait_for_an_unreachable_turso_primary_to_publish(tmp_path):
    """QA, session 36: after every request (/health, a read, a refusal) the archive's publish looked
    for rows to send, on a replica a pull: with the primary down /health waited out the pull's
    retries (REPLICA_SYNC_TIMEOUT_MS, 10 s), and a read's 503 came after twice that."""
    import importlib
    import time

    from chalice.test import Client

    from chalicelib.archive import outbox
    from chalicelib.config import Settings

    from .servers import ROOT
    from .turso import turso_server

    with turso_server(tmp_path) as primary:
        settings = Settings(database_url=f"sqlite:///{tmp_path}/replica.db", turso_sync_url=primary.url,
                            archive_queue_url="https://sqs.us-east-1.amazonaws.com/123456789012/archive.fifo",
                            replica_sync_timeout_ms=3000)
        client = Client(importlib.import_module("app").create_app(settings), project_dir=str(ROOT))
        outbox.recorded.clear()  # (other tests' writes in this process)
        primary.kill()
        time.sleep(settings.replica_max_staleness_ms / 1000 + 0.1)  # the replica is stale: a read pulls
        started = time.monotonic()
        assert client.http.get("/health").status_code == 200
        assert time.monotonic() - started < 1
        started = time.monotonic()
        assert client.http.get("/api/list_projects", headers={"Host": "localhost"}).status_code == 503
        assert time.monotonic() - started < 4.5  # its own pull's retries, once
