"""The web UI on the Chalice app (AWS): the same pages from the same code, with its login, under
API Gateway's stage prefix; and its files go into the Lambda package."""

import importlib
import re

import pytest
from chalice.test import Client

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.tools import tools_by_name

TOKEN = "chalice-ui-token-0123456789"


@pytest.fixture
def client(tmp_path):
    settings = Settings(database_url=f"sqlite:///{tmp_path}/a.db", auth_mode="bearer", auth_bearer_tokens=[TOKEN],
                        archive_enabled=False)
    app = importlib.import_module("app").create_app(settings)
    tools = tools_by_name()
    invoke.call(tools["ensure_project"], {"human_key": "/srv/web"}, settings)
    agent = invoke.call(tools["register_agent"], {"project_key": "srv-web", "program": "p", "model": "m", "name": "BlueLake"}, settings)
    invoke.call(tools["send_message"], {"project_key": "srv-web", "sender_name": "BlueLake", "to": ["BlueLake"],
                                        "sender_token": agent.registration_token,
                                        "subject": "Deployed <b>v2</b>", "body_md": "**done**", "thread_id": "REL-2"}, settings)
    with Client(app) as client:
        yield client


def _cookie(response) -> str:
    return response.headers["Set-Cookie"].split(";")[0]


def test_login_then_the_inbox_thread_and_a_reply_on_chalice(client):
    assert client.http.get("/").status_code == 303
    login = client.http.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.body.decode()).group(1)
    form = {"content-type": "application/x-www-form-urlencoded", "cookie": _cookie(login)}
    signed = client.http.post("/ui/login", headers=form, body=f"csrf={csrf}&token={TOKEN}&next=/")
    assert signed.status_code == 303 and "HttpOnly; SameSite=Strict" in signed.headers["Set-Cookie"]
    session = {"cookie": _cookie(signed)}
    inbox = client.http.get("/", headers=session)
    assert inbox.status_code == 200 and "Deployed &lt;b&gt;v2&lt;/b&gt;" in inbox.body.decode()
    assert "script-src 'self';" in inbox.headers["Content-Security-Policy"]
    thread = client.http.get("/ui/thread?p=srv-web&t=REL-2", headers=session)
    assert "<strong>done</strong>" in thread.body.decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', thread.body.decode()).group(1)
    reply = client.http.post("/ui/compose", headers={**form, **session},
                             body=f"csrf={csrf}&project_key=srv-web&to=BlueLake&body_md=thanks&reply_to=" +
                             re.search(r'name="reply_to" value="(\d+)"', thread.body.decode()).group(1))
    assert reply.status_code == 303 and re.fullmatch(r"/ui/thread\?p=srv-web&t=REL-2&m=(\d+)#m\1", reply.headers["Location"])
    assert client.http.post("/ui/compose", headers={**form, **session}, body="project_key=srv-web&to=BlueLake&body_md=x").status_code == 403
    assert client.http.get("/ui/static/ui.css").status_code == 200
    assert client.http.get("/api/list_projects", headers=session).status_code == 401  # the cookie is no API credential


def test_the_navigation_links_only_pages_the_app_serves(client, tmp_path):
    """QA, session 31: every page's "API" link led to /docs, which only the local server serves:
    on the Chalice app (AWS) it answered API Gateway's JSON 403."""
    from fastapi.testclient import TestClient

    from chalicelib.transports.asgi import create_app

    login = client.http.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.body.decode()).group(1)
    signed = client.http.post("/ui/login", headers={"content-type": "application/x-www-form-urlencoded", "cookie": _cookie(login)},
                              body=f"csrf={csrf}&token={TOKEN}&next=/")
    session = {"cookie": _cookie(signed)}
    nav = re.search(r"<nav>(.*?)</nav>", client.http.get("/ui/projects", headers=session).body.decode(), re.S).group(1)
    links = re.findall(r'href="([^"]+)"', nav)
    assert "/ui/projects" in links and "/docs" not in links
    for link in links:
        assert client.http.get(link, headers=session).status_code == 200, link
    local = TestClient(create_app(Settings(database_url=f"sqlite:///{tmp_path}/a.db", archive_enabled=False)),
                       base_url="http://127.0.0.1:8765")
    nav = re.search(r"<nav>(.*?)</nav>", local.get("/ui/projects").text, re.S).group(1)
    assert 'href="/docs"' in nav and local.get("/docs").status_code == 200  # the local server serves it


def test_links_and_redirects_keep_api_gateways_stage_prefix(tmp_path):
    """Deployed, API Gateway serves the app under its stage (/api): app.py passes it as the root."""
    from chalicelib.store import db
    from chalicelib.web import http
    from chalicelib.web.pages import WebUI

    settings = Settings(database_url=f"sqlite:///{tmp_path}/b.db", archive_enabled=False)
    db.migrate(settings)
    ui = WebUI(settings)
    page = ui.handle(http.request("GET", "/", "", b"", {}, root="/api")).body.decode()
    assert 'href="/api/ui/projects"' in page and 'src="/api/ui/static/ui.js?v=' in page
    assert 'data-live="/api/ui/live?read=1"' in page
    cookie = {"cookie": ui.handle(http.request("GET", "/", "", b"", {})).headers["Set-Cookie"].split(";")[0]}
    assert ui.handle(http.request("GET", "/ui/login", "", b"", cookie, root="/api")).headers["Location"] == "/api/"


def test_every_page_of_the_web_ui_is_routed_on_chalice(client):
    """Chalice routes the UI's paths from a list of its own: a page missing from it is served locally only."""
    from chalicelib.web.pages import WebUI

    from chalicelib.web.http import ACTS

    for path in set(WebUI.PAGES) - {"/docs", "/ui/", ACTS}:  # the API docs are the local server's; /ui/ is /ui; /ui/act takes a POST
        answer = client.http.get(path)
        assert answer.status_code in (200, 303, 401), path
        assert answer.status_code != 401 or b"Sign in first" in answer.body, path  # the UI's answer, not API Gateway's


def test_a_get_of_ui_act_with_a_form_in_its_body_does_nothing(client, tmp_path):
    """QA, session 32: the view handed a GET's body to the page as its form, and /ui/act acted on
    it without a CSRF token (the check is a POST's): a GET retired an agent. Now 405, nothing done."""
    login = client.http.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.body.decode()).group(1)
    form = {"content-type": "application/x-www-form-urlencoded"}
    signed = client.http.post("/ui/login", headers={**form, "cookie": _cookie(login)}, body=f"csrf={csrf}&token={TOKEN}&next=/")
    session = {**form, "cookie": _cookie(signed)}
    retire = "action=retire&project_key=srv-web&agent_name=BlueLake&back=/ui/projects"
    answer = client.http.get("/ui/act", headers=session, body=retire)
    assert (answer.status_code, answer.headers.get("Allow")) == (405, "POST")
    settings = Settings(database_url=f"sqlite:///{tmp_path}/a.db", auth_mode="bearer", auth_bearer_tokens=[TOKEN],
                        archive_enabled=False)  # the fixture's
    assert invoke.call(tools_by_name()["whois"], {"project_key": "srv-web", "agent_name": "BlueLake"}, settings).retired_ts is None
    assert client.http.request("DELETE", "/ui/projects", headers=session).status_code == 405  # as locally


def test_a_form_of_another_content_type_gets_the_ui_s_answer_as_locally(client, tmp_path):
    """QA, session 29: Chalice refused a POST to a page with another Content-Type (text/plain, a
    multipart form) with its own 415 body, without a Content-Type; the web UI refuses it (403 page)."""
    from fastapi.testclient import TestClient

    from chalicelib.transports.asgi import create_app

    settings = Settings(database_url=f"sqlite:///{tmp_path}/b.db", auth_mode="bearer", auth_bearer_tokens=[TOKEN],
                        archive_enabled=False)
    local = TestClient(create_app(settings), base_url="http://127.0.0.1:8765")
    for content_type in ("text/plain", "multipart/form-data; boundary=x"):
        headers = {"Host": "127.0.0.1:8765", "Content-Type": content_type}
        answer = client.http.post("/ui/login", headers=headers, body=b"token=wrong")
        expected = local.post("/ui/login", headers=headers, content=b"token=wrong")
        assert (answer.status_code, answer.headers.get("Content-Type")) == (expected.status_code, expected.headers["content-type"])


def test_a_form_too_large_to_read_gets_the_uis_page_on_chalice_too(client):
    """As locally (test_webui_overseeing): the API's 413 JSON, on Chalice, for a form past MAX_BODY_BYTES."""
    login = client.http.get("/ui/login")
    form = {"content-type": "application/x-www-form-urlencoded", "cookie": _cookie(login)}
    big = client.http.post("/ui/compose", headers=form, body=b"body_md=" + b"x" * (1 << 20))
    assert big.status_code == 413 and big.headers["Content-Type"].startswith("text/html")
    assert "This form is larger than the server takes" in big.body.decode()


def test_a_mistyped_ui_address_gets_the_uis_404_page_on_chalice_too(client):
    """As locally (test_webui_overseeing): API Gateway answered it itself (403, "Missing Authentication Token")."""
    missing = client.http.get("/ui/agents")
    assert missing.status_code == 404 and missing.headers["Content-Type"].startswith("text/html")
    assert "No such page: /ui/agents." in missing.body.decode()
    assert client.http.get("/ui/static/ui.css").status_code == 200  # the more specific routes still win


def test_a_form_counts_against_the_signed_in_credentials_writes_on_chalice_too(tmp_path):
    """As locally (test_webui_auth): the pages went past the rate limit as reads of the address."""
    settings = Settings(database_url=f"sqlite:///{tmp_path}/a.db", auth_mode="bearer", auth_bearer_tokens=[TOKEN],
                        archive_enabled=False, rate_limit_writes_per_minute=2)
    with Client(importlib.import_module("app").create_app(settings)) as client:
        api = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
        answers = [client.http.post("/api/ensure_project", headers=api, body=f'{{"human_key": "/srv/{n}"}}').status_code
                   for n in range(3)]
        assert answers == [200, 200, 429]
        login = client.http.get("/ui/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.body.decode()).group(1)
        form = {"content-type": "application/x-www-form-urlencoded", "cookie": _cookie(login)}
        signed = client.http.post("/ui/login", headers=form, body=f"csrf={csrf}&token={TOKEN}&next=/")  # the address's write
        assert signed.status_code == 303
        session = {**form, "cookie": _cookie(signed)}
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.http.get("/ui/compose?p=srv-0", headers=session).body.decode()).group(1)
        sent = client.http.post("/ui/compose", headers=session, body=f"csrf={csrf}&project_key=srv-0&to=x&body_md=x")
        assert sent.status_code == 429 and sent.headers["Content-Type"].startswith("text/html") and "Retry-After" in sent.headers


def test_every_static_file_is_an_answer_lambda_can_return(tmp_path):
    """QA, session 31: the view turned only text/* and JSON bodies into text; favicon.svg
    (image/svg+xml, no binary type) came back as bytes, which the Lambda runtime cannot serialize
    (Runtime.MarshalError, a 502 for every page's icon). Chalice's test client never serializes."""
    import base64
    import json

    from chalicelib.web.pages import STATIC

    from .aws_events import API_HOST, CONTEXT, rest_api_event

    settings = Settings(database_url=f"sqlite:///{tmp_path}/s.db", archive_enabled=False, allowed_hosts=[API_HOST])
    app = importlib.import_module("app").create_app(settings)
    files = sorted(path for path in STATIC.iterdir() if path.is_file())
    assert "favicon.svg" in [path.name for path in files]
    for path in files:
        event = rest_api_event("GET", "/ui/static/{name}")
        event.update(path=f"/ui/static/{path.name}", pathParameters={"name": path.name})
        event["requestContext"]["path"] = f"/api/ui/static/{path.name}"
        answer = json.loads(json.dumps(app(event, CONTEXT)))  # what the Lambda runtime does with it
        body = base64.b64decode(answer["body"]) if answer.get("isBase64Encoded") else answer["body"].encode()
        assert (answer["statusCode"], body) == (200, path.read_bytes()), path.name
