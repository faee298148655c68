"""The web UI's pages on AWS Lambda, whose response holds 6 MB (its JSON envelope included): a
thread page's bodies are weighed as its HTML writes them (a `&` is `&amp;`, a Cyrillic letter
\\uXXXX once the page is a JSON string), so a long thread's page is shorter there, "Later messages"
going on, not API Gateway's 502; a page past it all the same is the UI's own error page. The
Chalice app's function is called with API Gateway events, as in tests/test_lambda_answers.py, and
its whole response measured as the Python 3.11 runtime writes it. The local server is unchanged."""

import importlib
import json
import re
import shutil

import pytest
from fastapi.testclient import TestClient

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.errors import LAMBDA_RESPONSE_BYTES
from chalicelib.tools import messages, tools_by_name

from .aws_events import API_HOST, CONTEXT, rest_api_event
from .conftest import let_go

TOOLS = tools_by_name()
PROJECT = "/lambda/web-pages"
LOCAL_HOST = "127.0.0.1:8765"
# A Python list's repr in a log, 160 KB: its quotes, `<`, `&` and `>` take 49 bytes of the page's
# JSON a line where the API's answer takes 16 (a page within the API's weight was ~9 MB of HTML).
REPRS = "['<', '&', '>']\n" * 10_000
RUSSIAN = "Привет, мир. " * 8_000  # 104,000 characters, 176 KB of UTF-8: each letter \uXXXX on Lambda
ARTICLE = re.compile(r'<article class="msg" id="m(\d+)"')
LATER = re.compile(r'<a href="/api/ui/thread\?p=([^&"]+)&amp;t=LOGS&amp;after=(\d+)" rel="next">Later messages')
EARLIER = re.compile(r'<a href="/api/ui/thread\?p=[^&"]+&amp;t=LOGS&amp;before=(\d+)" rel="prev">')


@pytest.fixture(scope="module")
def settings(tmp_path_factory, migrated_sqlite) -> Settings:
    path = tmp_path_factory.mktemp("webui-lambda")
    shutil.copy(migrated_sqlite, path / "agent_mail.db")
    settings = Settings(database_url=f"sqlite:///{path}/agent_mail.db", attachments_dir=path / "attachments",
                        mcp_allowed_hosts=[LOCAL_HOST, API_HOST], archive_enabled=False)
    yield settings
    let_go(settings.database_url)


@pytest.fixture(scope="module")
def slug(settings) -> str:
    """Thread LOGS: 24 messages of REPRS, then 24 of RUSSIAN (~8 MB of UTF-8), made through the tools."""
    call = lambda tool, **arguments: invoke.call(TOOLS[tool], arguments, settings)  # noqa: E731
    call("ensure_project", human_key=PROJECT)
    for name in ("BlueLake", "GreenCastle"):
        call("register_agent", project_key=PROJECT, name=name, program="p", model="m", task_description="logs")
        call("set_contact_policy", project_key=PROJECT, agent_name=name, policy="open")
    for body in [REPRS] * 24 + [RUSSIAN] * 24:
        call("send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="log", body_md=body,
             thread_id="LOGS")
    return call("get_project", project_key=PROJECT).slug


@pytest.fixture(scope="module")
def chalice_app(settings, slug):
    return importlib.import_module("app").create_app(settings)


def thread_page(chalice_app, slug: str, after: str | None = None, before: str | None = None) -> tuple[dict, int]:
    """(the Lambda response, its whole payload) of a thread page through the REST API's function."""
    query = {"p": [slug], "t": ["LOGS"]} | ({"after": [after]} if after else {}) | ({"before": [before]} if before else {})
    response = chalice_app(rest_api_event("GET", "/ui/thread", None, {}, query), CONTEXT)
    return response, len(json.dumps(response))


def local_page(settings, slug: str, **arguments):
    """get_thread's first page off Lambda, as the thread page asks for it (pages.py thread_page)."""
    return invoke.call(TOOLS["get_thread"], {"project_key": slug, "thread_id": "LOGS", "limit": 500, **arguments}, settings)


def test_a_long_thread_pages_on_lambda_within_its_response_and_later_messages_reach_every_message(settings, slug, chalice_app):
    local = local_page(settings, slug)
    everyone = [str(m.id) for m in local_page(settings, slug, include_bodies=False).messages]
    assert len(everyone) == 48 and local.next_cursor is not None  # locally too the thread spans pages (~4 MiB of UTF-8)
    seen, sizes, after = [], [], None
    while True:
        response, payload = thread_page(chalice_app, slug, after)
        assert response["statusCode"] == 200 and response["headers"]["Content-Type"].startswith("text/html"), response["body"][-600:]
        assert payload < LAMBDA_RESPONSE_BYTES, payload
        ids = ARTICLE.findall(response["body"])
        assert ids and len(ids) < len(local.messages)  # shorter than locally: 6 where the local page holds 26
        seen += ids
        sizes.append(len(ids))
        later = LATER.search(response["body"])
        if later is None:
            break
        assert later.group(1) == slug and later.group(2) == ids[-1]  # "Later messages" goes on from the page's last
        after = later.group(2)
    assert seen == everyone, sizes  # each once, in order
    assert max(sizes) >= 4 and len(sizes) <= 12, sizes  # as full as the budget allows: not a message a page
    # And back: "Earlier messages" shows the page just before (it showed the first that fit of the 500
    # before, near the thread's start), each page within the response, every message once.
    back, before = [], EARLIER.search(response["body"]).group(1)
    while before:
        response, payload = thread_page(chalice_app, slug, before=before)
        assert response["statusCode"] == 200 and payload < LAMBDA_RESPONSE_BYTES, payload
        ids = ARTICLE.findall(response["body"])
        assert ids and ids[-1] == everyone[everyone.index(before) - 1], (before, ids)  # ends just before it
        back = ids + back
        earlier = EARLIER.search(response["body"])
        before = earlier and earlier.group(1)
    assert back + seen[-sizes[-1]:] == everyone


def test_a_page_past_the_lambda_response_is_the_ui_s_error_page_not_a_502(settings, slug, chalice_app, monkeypatch):
    """Forced: with the page budget out of the way, the first page holds all 48 bodies (~24 MB as the
    response writes them); the last check finds it past the 6 MB and answers the UI's error page."""
    monkeypatch.setattr(messages, "LAMBDA_PAGE_BYTES", 1 << 40)
    response, payload = thread_page(chalice_app, slug)
    body = response["body"]
    assert response["statusCode"] == 500 and response["headers"]["Content-Type"].startswith("text/html"), payload
    assert "larger than an AWS Lambda response can carry" in body and "Later messages" in body
    assert 'class="error-page"' in body and not ARTICLE.search(body) and payload < 64 * 1024
    assert "script-src 'self'" in response["headers"]["Content-Security-Policy"]  # the UI's page, its headers
    monkeypatch.undo()
    assert thread_page(chalice_app, slug)[0]["statusCode"] == 200  # the budget back: the page again


def test_the_local_server_renders_the_thread_as_before(settings, slug, chalice_app):
    """Locally (uvicorn's ASGI app) nothing is weighed as on Lambda: the first page is get_thread's
    page of ~4 MiB of UTF-8, as before, more than the Lambda page holds."""
    from chalicelib.transports.asgi import create_app

    local = TestClient(create_app(settings), base_url=f"http://{LOCAL_HOST}")
    page = local.get("/ui/thread", params={"p": slug, "t": "LOGS"})
    assert page.status_code == 200
    ids = ARTICLE.findall(page.text)
    assert ids == [str(m.id) for m in local_page(settings, slug).messages] and len(ids) == 26
    on_lambda = ARTICLE.findall(thread_page(chalice_app, slug)[0]["body"])
    assert len(ids) > len(on_lambda) and ids[:len(on_lambda)] == on_lambda
    assert len(page.content) > 6 * 1024 * 1024  # HTML that, as a Lambda response, was API Gateway's 502
