"""Agent tokens in a header (issue 11 #9): a read over GET need not put the token in its URL."""

import base64
import importlib
import json

import httpx
import pytest
from chalice.test import Client

from chalicelib.config import Settings, get_settings

from .servers import ROOT, running_server

INBOX = {"project_key": "tokens", "agent_name": "BlueLake"}


def register(post) -> str:
    post("ensure_project", {"human_key": "/tokens"})
    return post("register_agent", {"project_key": "tokens", "name": "BlueLake", "program": "p", "model": "m"})["registration_token"]


def names_the_header(refusal: dict) -> bool:
    """QA, session 33: a GET refused for want of the agent's token was told only to pass
    registration_token, i.e. in its URL, which the header exists to avoid."""
    return "the X-Agent-Token header" in refusal["error"]["hint"]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("tokens") / "db.sqlite", REQUIRE_AGENT_TOKENS="true", ARCHIVE_ENABLED="false") as url:
        yield url


def test_rest_takes_the_agent_token_from_a_header(url):
    token = register(lambda tool, body: httpx.post(f"{url}/api/{tool}", json=body).raise_for_status().json())
    without = httpx.get(f"{url}/api/fetch_inbox", params=INBOX)
    assert without.status_code == 403 and names_the_header(without.json())
    assert httpx.get(f"{url}/api/fetch_inbox", params=INBOX, headers={"X-Agent-Token": "amt_wrong"}).status_code == 403
    assert httpx.get(f"{url}/api/fetch_inbox", params=INBOX, headers={"X-Agent-Token": token}).status_code == 200
    assert httpx.post(f"{url}/api/fetch_inbox", json=INBOX, headers={"X-Agent-Token": token}).status_code == 200
    sent = httpx.post(f"{url}/api/send_message", headers={"X-Agent-Token": token},
                      json={"project_key": "tokens", "sender_name": "BlueLake", "to": ["BlueLake"], "subject": "s", "body_md": "b"})
    assert sent.status_code == 200, sent.text  # send_message's sender_token too
    operation = httpx.get(f"{url}/openapi.json").json()["paths"]["/api/fetch_inbox"]["get"]
    assert any(p["in"] == "header" and p["name"] == "X-Agent-Token" for p in operation["parameters"])


def test_chalice_takes_the_agent_token_from_a_header(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/imported.db")
    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", require_agent_tokens=True, archive_enabled=False)
    with Client(importlib.import_module("app").create_app(settings), project_dir=str(ROOT)) as client:
        def post(tool, body):
            return json.loads(client.http.post(f"/api/{tool}", body=json.dumps(body), headers={"Content-Type": "application/json"}).body)

        token = register(post)
        query = "project_key=tokens&agent_name=BlueLake"
        without = client.http.get(f"/api/fetch_inbox?{query}")
        assert without.status_code == 403 and names_the_header(json.loads(without.body))
        assert client.http.get(f"/api/fetch_inbox?{query}", headers={"X-Agent-Token": token}).status_code == 200


def attach(post, project: str) -> tuple[str, str, str]:
    """(BlueLake's token, message id, sha256) of a file BlueLake, new in `project`, sent itself."""
    post("ensure_project", {"human_key": f"/{project}"})
    token = post("register_agent", {"project_key": project, "name": "BlueLake", "program": "p", "model": "m"})["registration_token"]
    sent = post("send_message", {"project_key": project, "sender_name": "BlueLake", "sender_token": token, "to": ["BlueLake"],
                                 "subject": "file", "body_md": "b",
                                 "attachments": [{"name": "a.txt", "content_base64": base64.b64encode(b"SECRET").decode()}]})
    return token, sent["message"]["id"], sent["message"]["attachments"][0]["sha256"]


def test_the_attachment_download_takes_the_agent_token_from_a_header(url):
    """GET /api/attachments/{sha256} refused the header (403) and took the token only in its URL."""
    token, message_id, sha256 = attach(lambda tool, body: httpx.post(f"{url}/api/{tool}", json=body).raise_for_status().json(),
                                       "tokens-files")
    download, params = f"{url}/api/attachments/{sha256}", {"project_key": "tokens-files", "agent_name": "BlueLake", "message_id": message_id}
    assert httpx.get(download, params=params).status_code == 403
    assert httpx.get(download, params=params, headers={"X-Agent-Token": "amt_wrong"}).status_code == 403
    answer = httpx.get(download, params=params, headers={"X-Agent-Token": token})
    assert answer.status_code == 200 and answer.content == b"SECRET"
    assert httpx.get(download, params={**params, "registration_token": token}).status_code == 200  # as before


@pytest.fixture
def attachments_dir(tmp_path, monkeypatch):
    """Where the tools store attachments (they read the environment's settings, as on a server)."""
    monkeypatch.setenv("ATTACHMENTS_DIR", str(tmp_path / "attachments"))
    get_settings.cache_clear()
    yield tmp_path / "attachments"
    get_settings.cache_clear()


def test_chalices_attachment_download_takes_the_agent_token_from_a_header(tmp_path, monkeypatch, attachments_dir):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/imported.db")
    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", require_agent_tokens=True, archive_enabled=False,
                        attachments_dir=attachments_dir)
    with Client(importlib.import_module("app").create_app(settings), project_dir=str(ROOT)) as client:
        def post(tool, body):
            return json.loads(client.http.post(f"/api/{tool}", body=json.dumps(body), headers={"Content-Type": "application/json"}).body)

        token, message_id, sha256 = attach(post, "tokens")
        download = f"/api/attachments/{sha256}?project_key=tokens&agent_name=BlueLake&message_id={message_id}"
        assert client.http.get(download).status_code == 403
        answer = client.http.get(download, headers={"X-Agent-Token": token, "Accept": "application/octet-stream"})  # binary: asked for
        assert answer.status_code == 200 and answer.body == b"SECRET"
