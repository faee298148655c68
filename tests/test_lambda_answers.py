"""Answers past what an AWS Lambda response holds (6 MB, its JSON envelope included): our 422 (an
MCP tool error) with the answer_too_large hint, not a failed invocation (API Gateway's 502). The
Lambda entry points of app.py are called with API Gateway events, as in tests/test_lambda.py, and
the whole response they return is measured as the Python 3.11 runtime writes it (json.dumps).
The local server keeps its 8 MiB cap: the same calls answer there."""

import base64
import importlib
import json
import os
import shutil

import pytest
from chalice.test import Client as ChaliceClient
from fastapi.testclient import TestClient

from chalicelib import invoke
from chalicelib.config import Settings, get_settings
from chalicelib.errors import LAMBDA_RESPONSE_BYTES, answer_too_large
from chalicelib.tools import tools_by_name

from .aws_events import API_HOST, CONTEXT, MCP_HEADERS, URL_HOST, http_api_event, rest_api_event, rpc, tool_call
from .conftest import let_go
from .servers import ROOT
from .test_lambda import INIT

TOOLS = tools_by_name()
HINT = answer_too_large().hint
# JSON in a Markdown body, ~200 KB: 7 of its 11 characters are escaped once it is JSON, and again on Lambda.
QUOTED = '["","",""]\n' * 18_181
RUSSIAN = "Привет, мир. " * 15_400  # ~200,000 characters, ~340 KB of UTF-8: each letter \uXXXX on Lambda
PROJECT = "/lambda/answers"
LOCAL_HOST = "127.0.0.1:8765"


@pytest.fixture(scope="module")
def settings(tmp_path_factory, migrated_sqlite) -> Settings:
    path = tmp_path_factory.mktemp("lambda-answers")
    shutil.copy(migrated_sqlite, path / "agent_mail.db")
    settings = Settings(database_url=f"sqlite:///{path}/agent_mail.db", attachments_dir=path / "attachments",
                        mcp_allowed_hosts=[LOCAL_HOST, API_HOST, URL_HOST], archive_enabled=False)
    yield settings
    let_go(settings.database_url)


@pytest.fixture(scope="module")
def data(settings):
    """GreenCastle's inbox, newest first: one small message (thread SMALL), 22 of QUOTED (thread
    BIG), 12 of RUSSIAN (thread RU). Made through the tools, not HTTP."""
    call = lambda tool, **arguments: invoke.call(TOOLS[tool], arguments, settings)  # noqa: E731
    call("ensure_project", human_key=PROJECT)
    for name in ("BlueLake", "GreenCastle"):
        call("register_agent", project_key=PROJECT, name=name, program="p", model="m", task_description="before")
    call("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="open")
    send = dict(project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"])
    for n in range(12):
        call("send_message", **send, subject=f"ru {n}", body_md=RUSSIAN, thread_id="RU")
    for n in range(22):
        call("send_message", **send, subject=f"big {n}", body_md=QUOTED, thread_id="BIG")
    call("send_message", **send, subject="small", body_md="hello", thread_id="SMALL")


@pytest.fixture(scope="module")
def chalice_app(settings, data):
    return importlib.import_module("app").create_app(settings)


def payload(response: dict) -> int:
    """The bytes of a Lambda response as the runtime sends it (Python 3.11's: json.dumps, ASCII)."""
    return len(json.dumps(response))


def rest(chalice_app, tool: str, arguments: dict) -> tuple[int, dict, int]:
    """(status, body, whole payload) of a POST through the REST API's function (app.app)."""
    response = chalice_app(rest_api_event("POST", f"/api/{tool}", arguments, {"Content-Type": "application/json"}), CONTEXT)
    return response["statusCode"], json.loads(response["body"]), payload(response)


def mcp(chalice_app, via: str, message: dict) -> tuple[dict, int]:
    """(JSON-RPC answer, whole payload) through /mcp of the REST API ("v1") or the mcp function ("v2")."""
    if via == "v1":
        response = chalice_app(rest_api_event("POST", "/mcp", message, MCP_HEADERS), CONTEXT)
    else:
        response = chalice_app.handler_map["mcp"](http_api_event("POST", "/mcp", message, MCP_HEADERS), CONTEXT)
    assert response["statusCode"] == 200 and not response.get("isBase64Encoded"), response["statusCode"]
    return json.loads(response["body"]), payload(response)


def refused(body: dict, write: bool = False) -> None:
    error = body["error"]
    assert error["code"] == "answer_too_large" and error["hint"] == HINT, error
    assert "6 MB of an AWS Lambda response" in error["message"]
    assert error["message"].endswith(": nothing was changed.") == write


def largest_allowed(answer, limits) -> tuple[int, int, int]:
    """(limit, payload, payload of one message fewer) of the largest of `limits` answered, and
    checks that the next larger one was refused. `answer(limit)`: (refused?, payload)."""
    above = None
    for limit in sorted(limits, reverse=True):
        refusal, size = answer(limit)
        if not refusal:
            assert above is not None, "the largest limit was answered: no refusal to bound"
            return limit, size, answer(limit - 1)[1]
        above = limit
    raise AssertionError("every limit was refused")


ARGUMENTS = {
    "fetch_inbox": {"project_key": PROJECT, "agent_name": "GreenCastle", "include_bodies": True},
    "get_thread": {"project_key": PROJECT, "thread_id": "RU"},
}


@pytest.mark.parametrize("tool", ["fetch_inbox", "get_thread"])
def test_rest_refuses_past_lambda_and_answers_up_to_it(chalice_app, settings, tool):
    """A full page of bodies (~4 MiB of their messages' JSON) passes the 8 MiB cap, and locally it
    is answered; escaped once more in Lambda's response (QUOTED: ~1.7 times; RUSSIAN: ~2.6) it is past 6 MB."""
    arguments = ARGUMENTS[tool] | {"limit": 20}
    local = TestClient(importlib.import_module("chalicelib.transports.asgi").create_app(settings).api)
    answered = local.post(f"/api/{tool}", json=arguments)
    assert answered.status_code == 200 and len(answered.json()["messages"]) >= 10, answered.text[:300]
    page = len(answered.json()["messages"])
    assert len(json.dumps(answered.text)) > LAMBDA_RESPONSE_BYTES  # (what it would weigh as Lambda's body)

    status, body, size = rest(chalice_app, tool, arguments)
    assert status == 422 and size < 10_000
    refused(body)
    with ChaliceClient(chalice_app, project_dir=str(ROOT)) as client:  # (Chalice's test client: the same route)
        answer = client.http.post(f"/api/{tool}", headers={"Content-Type": "application/json"}, body=json.dumps(arguments))
    assert answer.status_code == 422 and json.loads(answer.body) == body

    def call(limit: int) -> tuple[bool, int]:
        status, body, size = rest(chalice_app, tool, ARGUMENTS[tool] | {"limit": limit})
        assert status in (200, 422), body
        if status == 200:
            assert len(body["messages"]) == limit
        return status == 422, size

    limit, size, smaller = largest_allowed(call, range(1, page + 1))
    # The largest answer fits the 6 MB whole; one message more would not have, with the 64 KiB kept for headers.
    assert size < LAMBDA_RESPONSE_BYTES
    assert size + (size - smaller) > LAMBDA_RESPONSE_BYTES - 64 * 1024 - 10_000


@pytest.fixture(scope="module", params=[True, False], ids=["lean-path", "sdk-transport"])
def mcp_app(request, settings, data):
    return importlib.import_module("app").create_app(settings.model_copy(update={"mcp_lean_path": request.param}))


def call_result(chalice_app, via: str, tool: str, arguments: dict) -> tuple[dict, int]:
    answer, size = mcp(chalice_app, via, tool_call(tool, arguments))
    return answer["result"], size


@pytest.mark.parametrize("via", ["v1", "v2"])
def test_mcp_refuses_past_lambda_with_a_tool_error(mcp_app, settings, via):
    """A tools/call result holds the tool's JSON twice (its text escaped twice in Lambda's response):
    the page of ~2 MiB of bodies it gets would weigh ~9 MB there. Locally it is answered."""
    arguments = ARGUMENTS["fetch_inbox"] | {"limit": 20}
    with TestClient(importlib.import_module("chalicelib.transports.asgi").create_app(settings),
                    base_url=f"http://{LOCAL_HOST}") as local:
        local.post("/mcp", json=rpc("initialize", INIT), headers=MCP_HEADERS).raise_for_status()
        answered = local.post("/mcp", json=tool_call("fetch_inbox", arguments), headers=MCP_HEADERS)
    result = answered.json()["result"]
    assert not result["isError"] and len(result["structuredContent"]["messages"]) == 7  # small, and 6 of QUOTED
    assert len(json.dumps(answered.text)) > LAMBDA_RESPONSE_BYTES  # (what it would weigh as Lambda's body)

    mcp(mcp_app, via, rpc("initialize", INIT))
    result, size = call_result(mcp_app, via, "fetch_inbox", arguments)
    assert result["isError"] is True and "structuredContent" not in result and size < 10_000
    refused(json.loads(result["content"][0]["text"]))

    def call(limit: int) -> tuple[bool, int]:
        result, size = call_result(mcp_app, via, "fetch_inbox", ARGUMENTS["fetch_inbox"] | {"limit": limit})
        if not result["isError"]:
            assert len(result["structuredContent"]["messages"]) == limit
        return result["isError"], size

    limit, size, smaller = largest_allowed(call, range(1, 8))
    assert size < LAMBDA_RESPONSE_BYTES
    assert size + (size - smaller) > LAMBDA_RESPONSE_BYTES - 64 * 1024 - 10_000


def test_a_resource_sent_once_is_measured_once(mcp_app):
    """A resource's text holds the tool's JSON once (escaped twice in Lambda's response): 5 messages
    (~5.2 MB there; ~8 MB as a tools/call result, refused) are served; a whole page of ~4 MiB of
    their JSON is refused, as a JSON-RPC error (a resource's tool errors are)."""
    arguments = ARGUMENTS["fetch_inbox"] | {"limit": 5}
    assert call_result(mcp_app, "v2", "fetch_inbox", arguments)[0]["isError"] is True
    uri = "resource://inbox/GreenCastle?project=%2Flambda%2Fanswers&include_bodies=true&limit=5"
    answer, size = mcp(mcp_app, "v2", rpc("resources/read", {"uri": uri}))
    assert len(json.loads(answer["result"]["contents"][0]["text"])["messages"]) == 5
    assert size < LAMBDA_RESPONSE_BYTES
    answer, size = mcp(mcp_app, "v2", rpc("resources/read", {"uri": uri.replace("limit=5", "limit=20")}))
    assert size < 10_000
    refused(answer["error"]["data"])


def whois(settings) -> str:
    return invoke.call(TOOLS["whois"], {"project_key": PROJECT, "agent_name": "GreenCastle"}, settings).task_description


@pytest.mark.parametrize("through", ["rest", "v1", "v2"])
def test_a_write_whose_answer_is_past_lambda_changes_nothing(mcp_app, settings, through):
    """macro_prepare_thread registers the agent (its task) and answers its inbox with bodies: past
    Lambda's response it is refused inside its transaction (over MCP on the writer thread), so the
    error saying nothing was changed is true. Without the bodies the same write is made."""
    arguments = {"project_key": PROJECT, "thread_id": "SMALL", "program": "p", "model": "m", "agent_name": "GreenCastle",
                 "task_description": f"after {through}", "inbox_limit": 20, "include_inbox_bodies": True}
    before = whois(settings)
    if through == "rest":
        status, body, _ = rest(mcp_app, "macro_prepare_thread", arguments)
        assert status == 422
    else:
        result, _ = call_result(mcp_app, through, "macro_prepare_thread", arguments)
        assert result["isError"] is True
        body = json.loads(result["content"][0]["text"])
    refused(body, write=True)
    assert whois(settings) == before

    arguments["include_inbox_bodies"] = False
    if through == "rest":
        assert rest(mcp_app, "macro_prepare_thread", arguments)[0] == 200
    else:
        assert call_result(mcp_app, through, "macro_prepare_thread", arguments)[0]["isError"] is False
    assert whois(settings) == f"after {through}"


def test_an_attachment_inline_up_to_its_limit_travels_once(tmp_path, monkeypatch, migrated_sqlite):
    """get_attachment's MCP content holds the file once (mcp_content, not the JSON twice): a file of
    nearly ATTACHMENT_INLINE_MAX_BYTES (4 MiB, 5.6 MB as base64) is answered whole on Lambda."""
    monkeypatch.setenv("ATTACHMENTS_DIR", str(tmp_path / "attachments"))  # (handlers read it through get_settings)
    get_settings.cache_clear()
    shutil.copy(migrated_sqlite, tmp_path / "agent_mail.db")
    settings = Settings(database_url=f"sqlite:///{tmp_path}/agent_mail.db", attachments_dir=tmp_path / "attachments",
                        mcp_allowed_hosts=[URL_HOST], archive_enabled=False)
    try:
        call = lambda tool, **arguments: invoke.call(TOOLS[tool], arguments, settings)  # noqa: E731
        call("ensure_project", human_key=PROJECT)
        for name in ("BlueLake", "GreenCastle"):
            call("register_agent", project_key=PROJECT, name=name, program="p", model="m")
        call("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="open")
        data = os.urandom(4 * 1024 * 1024 - 1024)
        sent = call("send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="file",
                    body_md="attached", attachments=[{"name": "data.bin", "content_base64": base64.b64encode(data).decode()}])
        app = importlib.import_module("app").create_app(settings)
        result, size = call_result(app, "v2", "get_attachment", {"project_key": PROJECT, "agent_name": "GreenCastle",
                                                                  "message_id": sent.message.id,
                                                                  "sha256": sent.message.attachments[0].sha256})
        assert result["isError"] is False, result["content"][0]["text"][:300]
        assert base64.b64decode(result["content"][1]["resource"]["blob"]) == data
        assert 5_500_000 < size < LAMBDA_RESPONSE_BYTES
    finally:
        get_settings.cache_clear()
        let_go(settings.database_url)
