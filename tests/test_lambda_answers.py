"""Answers on AWS Lambda, whose response holds 6 MB (its JSON envelope included): a page of bodies
is weighed as written there, so it is shorter (next_cursor goes on), not refused; an answer past
it all the same (one message alone) is our 422 (an MCP tool error) with the answer_too_large hint,
not a failed invocation (API Gateway's 502). The Lambda entry points of app.py are called with
API Gateway events, as in tests/test_lambda.py, and the whole response they return is measured as
the Python 3.11 runtime writes it (json.dumps). Locally the pages are those of UTF-8, as before."""

import base64
import importlib
import json
import os
import shutil

import pytest
from chalice.test import Client as ChaliceClient
from hypothesis import given, strategies as st
import orjson
from fastapi.testclient import TestClient

from chalicelib import invoke
from chalicelib.config import Settings, get_settings
from chalicelib.errors import LAMBDA_RESPONSE_BYTES, answer_too_large
from chalicelib.lambda_response import LAMBDA_MCP, LAMBDA_REST, lambda_weight
from chalicelib.tools import tools_by_name
from chalicelib.tools.messages import LAMBDA_PAGE_BYTES

from .aws_events import API_HOST, CONTEXT, MCP_HEADERS, URL_HOST, http_api_event, rest_api_event, rpc, tool_call
from .conftest import let_go
from .servers import ROOT
from .test_lambda import INIT

TOOLS = tools_by_name()
HINT = answer_too_large().hint
# JSON in a Markdown body, ~200 KB: 7 of its 11 characters are escaped once it is JSON, and again on Lambda.
QUOTED = '["","",""]\n' * 18_181
RUSSIAN = "Привет, мир. " * 15_400  # ~200,000 characters, ~340 KB of UTF-8: each letter \uXXXX on Lambda
EMOJI = "\U0001F600" * 262_144  # a body's most characters, each \uXXXX\uXXXX (12 bytes) on Lambda
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
    BIG), 12 of RUSSIAN (thread RU); RedStone's: one of EMOJI. Made through the tools, not HTTP
    (the 1 MiB request would hold ~262,100 emoji: past Lambda's response as well, below)."""
    call = lambda tool, **arguments: invoke.call(TOOLS[tool], arguments, settings)  # noqa: E731
    call("ensure_project", human_key=PROJECT)
    for name in ("BlueLake", "GreenCastle", "RedStone"):
        call("register_agent", project_key=PROJECT, name=name, program="p", model="m", task_description="before")
        call("set_contact_policy", project_key=PROJECT, agent_name=name, policy="open")
    send = dict(project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"])
    for n in range(12):
        call("send_message", **send, subject=f"ru {n}", body_md=RUSSIAN, thread_id="RU")
    for n in range(22):
        call("send_message", **send, subject=f"big {n}", body_md=QUOTED, thread_id="BIG")
    call("send_message", **send, subject="small", body_md="hello", thread_id="SMALL")
    call("send_message", **send | {"to": ["RedStone"]}, subject="emoji", body_md=EMOJI, thread_id="EMOJI")


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


ARGUMENTS = {
    "fetch_inbox": {"project_key": PROJECT, "agent_name": "GreenCastle", "include_bodies": True},
    "get_thread": {"project_key": PROJECT, "thread_id": "RU"},
}
# The page each gets locally with limit 20 (~4 MiB of bodies' UTF-8: 2 MiB over MCP tools/call), as before
# pages were weighed on Lambda: fetch_inbox the small message and 12 of QUOTED, get_thread all 12 of RUSSIAN.
LOCAL_PAGE = {"fetch_inbox": 13, "get_thread": 12}
LOCAL_MCP_PAGE = {"fetch_inbox": 7, "get_thread": 6}


def every_id(settings, tool: str) -> list[str]:
    """The ids a walk of all the pages must give: the inbox newest first, the thread oldest first."""
    if tool == "fetch_inbox":
        answer = invoke.call(TOOLS[tool], ARGUMENTS[tool] | {"include_bodies": False, "limit": 100}, settings)
    else:
        answer = invoke.call(TOOLS[tool], ARGUMENTS[tool] | {"include_bodies": False}, settings)
    assert answer.next_cursor is None
    return [str(message.id) for message in answer.messages]


def walk(page, arguments: dict) -> list[list[str]]:
    """The ids of each page, the first and then each next_cursor's, to the last. `page(arguments)`:
    (its body, its whole Lambda payload), which must fit Lambda's response."""
    pages, cursor = [], None
    while True:
        body, size = page(arguments | ({} if cursor is None else {"cursor": cursor}))
        assert size < LAMBDA_RESPONSE_BYTES and body["messages"], (size, len(pages))
        pages.append([str(message["id"]) for message in body["messages"]])
        if (cursor := body["next_cursor"]) is None:
            return pages


def as_full_as_allowed(body: dict, copies: tuple[int, ...]) -> None:
    """The page's bodies weigh no more than LAMBDA_PAGE_BYTES as Lambda writes them (`copies`), and
    one more of them would have passed it (the page's messages and the next are of one size but
    the small one; a page of the inbox counts each message's other fields, ~300 bytes, too)."""
    weights = [lambda_weight(orjson.dumps(message["body_md"]), copies) for message in body["messages"]]
    assert sum(weights) <= LAMBDA_PAGE_BYTES < sum(weights) + max(weights), weights


def local_rest(settings, tool: str) -> dict:
    local = TestClient(importlib.import_module("chalicelib.transports.asgi").create_app(settings).api)
    answered = local.post(f"/api/{tool}", json=ARGUMENTS[tool] | {"limit": 20})
    assert answered.status_code == 200, answered.text[:300]
    assert len(json.dumps(answered.text)) > LAMBDA_RESPONSE_BYTES  # (what it would weigh as Lambda's body)
    return answered.json()


@pytest.mark.parametrize("tool", ["fetch_inbox", "get_thread"])
def test_rest_pages_fit_lambda(chalice_app, settings, tool):
    """A full page of bodies (~4 MiB of their messages' JSON) is answered locally, as before; escaped
    once more in Lambda's response (QUOTED: ~1.7 times; RUSSIAN: ~2.6) it would be past 6 MB: there
    the page is shorter, weighed as Lambda writes it, and its cursor goes on to every message once."""
    answered = local_rest(settings, tool)
    assert [str(message["id"]) for message in answered["messages"]] == every_id(settings, tool)[:LOCAL_PAGE[tool]]

    arguments = ARGUMENTS[tool] | {"limit": 20}
    status, body, size = rest(chalice_app, tool, arguments)
    assert status == 200 and body["next_cursor"] is not None and 1 < len(body["messages"]) < LOCAL_PAGE[tool]
    assert size < LAMBDA_RESPONSE_BYTES
    as_full_as_allowed(body, LAMBDA_REST)
    with ChaliceClient(chalice_app, project_dir=str(ROOT)) as client:  # (Chalice's test client: the same route)
        answer = client.http.post(f"/api/{tool}", headers={"Content-Type": "application/json"}, body=json.dumps(arguments))
    assert answer.status_code == 200 and json.loads(answer.body) == body

    def page(arguments: dict) -> tuple[dict, int]:
        status, body, size = rest(chalice_app, tool, arguments)
        assert status == 200, body
        return body, size

    pages = walk(page, arguments)
    assert sum(pages, []) == every_id(settings, tool) and len(pages) > 2


@pytest.fixture(scope="module", params=[True, False], ids=["lean-path", "sdk-transport"])
def mcp_app(request, settings, data):
    return importlib.import_module("app").create_app(settings.model_copy(update={"mcp_lean_path": request.param}))


def call_result(chalice_app, via: str, tool: str, arguments: dict) -> tuple[dict, int]:
    answer, size = mcp(chalice_app, via, tool_call(tool, arguments))
    return answer["result"], size


def local_mcp(settings, tool: str, arguments: dict) -> dict:
    with TestClient(importlib.import_module("chalicelib.transports.asgi").create_app(settings),
                    base_url=f"http://{LOCAL_HOST}") as local:
        local.post("/mcp", json=rpc("initialize", INIT), headers=MCP_HEADERS).raise_for_status()
        answered = local.post("/mcp", json=tool_call(tool, arguments), headers=MCP_HEADERS)
    assert len(json.dumps(answered.text)) > LAMBDA_RESPONSE_BYTES  # (what it would weigh as Lambda's body)
    return answered.json()["result"]


@pytest.mark.parametrize("tool", ["fetch_inbox", "get_thread"])
@pytest.mark.parametrize("via", ["v1", "v2"])
def test_mcp_pages_fit_lambda(mcp_app, settings, via, tool):
    """A tools/call result holds the tool's JSON twice (its text escaped twice in Lambda's response):
    the page of ~2 MiB of bodies it gets locally would weigh ~9 MB there. On Lambda both copies
    are weighed: a shorter page, and its cursor goes on to every message once."""
    arguments = ARGUMENTS[tool] | {"limit": 20}
    result = local_mcp(settings, tool, arguments)
    assert not result["isError"] and len(result["structuredContent"]["messages"]) == LOCAL_MCP_PAGE[tool]

    mcp(mcp_app, via, rpc("initialize", INIT))

    def page(arguments: dict) -> tuple[dict, int]:
        result, size = call_result(mcp_app, via, tool, arguments)
        assert result["isError"] is False and json.loads(result["content"][0]["text"]) == result["structuredContent"]
        return result["structuredContent"], size

    first, size = page(arguments)
    assert first["next_cursor"] is not None and len(first["messages"]) < LOCAL_MCP_PAGE[tool]
    as_full_as_allowed(first, LAMBDA_MCP)
    pages = walk(page, arguments)
    assert sum(pages, []) == every_id(settings, tool)


def test_a_resource_sent_once_is_weighed_once(mcp_app):
    """A resource's text holds the tool's JSON once (escaped twice in Lambda's response): its page
    holds more messages than a tools/call result's, whose two copies are weighed."""
    called, _ = call_result(mcp_app, "v2", "fetch_inbox", ARGUMENTS["fetch_inbox"] | {"limit": 20})
    uri = "resource://inbox/GreenCastle?project=%2Flambda%2Fanswers&include_bodies=true&limit=20"
    answer, size = mcp(mcp_app, "v2", rpc("resources/read", {"uri": uri}))
    read = json.loads(answer["result"]["contents"][0]["text"])
    assert len(called["structuredContent"]["messages"]) < len(read["messages"]) < LOCAL_PAGE["fetch_inbox"]
    assert read["next_cursor"] is not None and size < LAMBDA_RESPONSE_BYTES


def test_a_message_alone_past_lambda_is_refused(mcp_app):
    """A page holds one message at least: one of EMOJI (262,144 characters above U+FFFF, each 12
    bytes in each copy) fits a REST answer on Lambda, not a tools/call result (its two copies: ~6.3 MB)."""
    arguments = {"project_key": PROJECT, "agent_name": "RedStone", "include_bodies": True}
    status, body, size = rest(mcp_app, "fetch_inbox", arguments)
    assert status == 200 and len(body["messages"]) == 1 and body["messages"][0]["body_md"] == EMOJI
    assert 12 * len(EMOJI) < size < LAMBDA_RESPONSE_BYTES
    for via in ("v1", "v2"):
        result, size = call_result(mcp_app, via, "fetch_inbox", arguments)
        assert result["isError"] is True and "structuredContent" not in result and size < 10_000
        refused(json.loads(result["content"][0]["text"]))


def whois(settings, name: str = "GreenCastle") -> str:
    return invoke.call(TOOLS["whois"], {"project_key": PROJECT, "agent_name": name}, settings).task_description


def prepare(mcp_app, through: str, arguments: dict) -> tuple[bool, dict, int]:
    """(refused?, body, whole payload) of macro_prepare_thread through REST or MCP ("v1", "v2") on Lambda."""
    if through == "rest":
        status, body, size = rest(mcp_app, "macro_prepare_thread", arguments)
        assert status in (200, 422), body
        return status == 422, body, size
    result, size = call_result(mcp_app, through, "macro_prepare_thread", arguments)
    return result["isError"], json.loads(result["content"][0]["text"]), size


@pytest.mark.parametrize("through", ["rest", "v1", "v2"])
def test_a_write_answers_a_shorter_inbox_on_lambda(mcp_app, settings, through):
    """macro_prepare_thread registers the agent (its task) and answers its inbox with bodies: on
    Lambda that inbox is a page weighed as written there, its note naming the cursor to go on from."""
    arguments = {"project_key": PROJECT, "thread_id": "SMALL", "program": "p", "model": "m", "agent_name": "GreenCastle",
                 "task_description": f"after {through}", "inbox_limit": 20, "include_inbox_bodies": True}
    refusal, body, size = prepare(mcp_app, through, arguments)
    assert not refusal and size < LAMBDA_RESPONSE_BYTES
    assert 1 < len(body["inbox"]) < LOCAL_PAGE["fetch_inbox"]
    assert f"fetch_inbox with cursor='{body['inbox'][-1]['id']}'" in body["note"]
    assert whois(settings) == f"after {through}"


@pytest.mark.parametrize("through", ["v1", "v2"])
def test_a_write_whose_answer_is_past_lambda_changes_nothing(mcp_app, settings, through):
    """Over MCP, RedStone's inbox of one message of EMOJI is past Lambda's response: refused inside
    its transaction (on the writer thread), so the error saying nothing was changed is true.
    Without the bodies the same write is made."""
    arguments = {"project_key": PROJECT, "thread_id": "SMALL", "program": "p", "model": "m", "agent_name": "RedStone",
                 "task_description": f"after {through}", "inbox_limit": 20, "include_inbox_bodies": True}
    before = whois(settings, "RedStone")
    refusal, body, _ = prepare(mcp_app, through, arguments)
    assert refusal
    refused(body, write=True)
    assert whois(settings, "RedStone") == before

    assert prepare(mcp_app, through, arguments | {"include_inbox_bodies": False})[0] is False
    assert whois(settings, "RedStone") == f"after {through}"


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


@given(st.text(st.characters(max_codepoint=0x7F)) | st.text())
def test_a_texts_weight_is_what_the_runtimes_json_writes(text):
    """Any text, a web page's HTML with its raw newlines and control characters too (a body of
    newlines was counted at half its weight: a page within the budget could pass 6 MB)."""
    assert lambda_weight(text.encode(), LAMBDA_REST) == len(json.dumps(text)) - 2
