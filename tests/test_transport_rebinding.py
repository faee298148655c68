"""DNS rebinding (issue 11 #1): every route but /health refuses a foreign Host (421) and a
foreign Origin (403), the same way on the local server and on the Chalice app (REST and MCP)."""

import importlib
import json

import httpx
import pytest
from chalice.test import Client

from chalicelib.config import Settings
from chalicelib.security import rebinding

from .aws_events import API_HOST, CONTEXT, MCP_HEADERS, URL_HOST, http_api_event, rest_api_event, rpc
from .servers import ROOT, running_server

ROUTES = [("GET", "/api/list_projects"), ("POST", "/api/list_projects"), ("GET", "/docs"), ("GET", "/openapi.json"),
          ("GET", "/ready"), ("POST", "/mcp"), ("GET", "/nowhere")]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("rebinding") / "db.sqlite", CORS_ALLOWED_ORIGINS="https://app.example") as url:
        yield url


def error_code(body: dict) -> str:
    """The error's code: REST's, or in an MCP (JSON-RPC) error's data: what /mcp answers, so an MCP client shows it."""
    return body["error"]["data"]["error"]["code"] if "jsonrpc" in body else body["error"]["code"]


def request(url, method, path, headers):
    body = rpc("ping") if path == "/mcp" else ({} if method == "POST" else None)
    return httpx.request(method, f"{url}{path}", headers=MCP_HEADERS | headers, json=body)


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_route_refuses_a_foreign_host_and_origin(url, method, path):
    assert request(url, method, path, {"Host": "attacker.example"}).status_code == 421
    refused = request(url, method, path, {"Origin": "http://evil.example"})
    assert refused.status_code == 403 and error_code(refused.json()) == "forbidden"
    assert ("jsonrpc" in refused.json()) == (path == "/mcp")  # an MCP client shows only a JSON-RPC error
    assert request(url, method, path, {}).status_code in (200, 404)
    # the browser's own origins: loopback, and what CORS_ALLOWED_ORIGINS names
    assert request(url, method, path, {"Origin": url}).status_code in (200, 404)
    assert request(url, method, path, {"Origin": "https://app.example"}).status_code in (200, 404)


def test_health_stays_open_to_probes_by_address(url):
    assert httpx.get(f"{url}/health", headers={"Host": "10.0.0.7:8765"}).status_code == 200


def test_the_old_setting_names_still_work():
    settings = Settings(mcp_allowed_hosts=["api.example"], mcp_allowed_origins=["https://ui.example"])
    assert settings.allowed_hosts == ["api.example"] and settings.allowed_origins == ["https://ui.example"]
    rebinding.check("api.example", "https://ui.example", settings)
    with pytest.raises(rebinding.MisdirectedRequest):
        rebinding.check("127.0.0.1:8765", None, settings)


def test_port_wildcards_match_any_port_or_none_and_no_longer_name():
    assert rebinding.allowed("localhost:80", ["localhost:*"])
    assert not rebinding.allowed("localhost.evil.example:80", ["localhost:*"])
    assert not rebinding.allowed("localhost.evil.example", ["localhost:*"])
    # The default port is none (session 29: a browser on port 80 and nginx's Host $host were refused 421)
    assert rebinding.allowed("localhost", ["localhost:*"]) and rebinding.allowed("[::1]", ["[::1]:*"])
    assert rebinding.allowed("http://localhost", ["http://localhost:*"])


@pytest.fixture
def aws(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/imported.db")
    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", allowed_hosts=[API_HOST, URL_HOST])
    return importlib.import_module("app").create_app(settings)


@pytest.mark.parametrize("method, path", [("GET", "/api/list_projects"), ("POST", "/api/list_projects"), ("GET", "/ready"),
                                          ("POST", "/mcp")])
def test_chalice_refuses_a_foreign_host_and_origin(aws, method, path):
    body = rpc("ping") if path == "/mcp" else {}

    def status(headers):
        return aws(rest_api_event(method, path, body, MCP_HEADERS | headers), CONTEXT)["statusCode"]

    assert status({}) == 200
    assert status({"Host": "attacker.example"}) == 421
    assert status({"Origin": "http://evil.example"}) == 403
    assert aws(rest_api_event("GET", "/health", None, {"Host": "attacker.example"}), CONTEXT)["statusCode"] == 200


def test_chalice_test_client_checks_too(aws):
    with Client(aws, project_dir=str(ROOT)) as client:
        assert client.http.get("/api/list_projects").status_code == 200  # no Host header: not a browser
        assert client.http.get("/api/list_projects", headers={"Host": "attacker.example"}).status_code == 421


def test_the_mcp_function_refuses_a_foreign_host_and_origin(aws):
    mcp = aws.handler_map["mcp"]
    assert mcp(http_api_event("POST", "/mcp", rpc("ping"), MCP_HEADERS), CONTEXT)["statusCode"] == 200
    refused = mcp(http_api_event("POST", "/mcp", rpc("ping"), MCP_HEADERS | {"host": "attacker.example"}), CONTEXT)
    assert refused["statusCode"] == 421 and error_code(json.loads(refused["body"])) == "misdirected_request"
    assert mcp(http_api_event("POST", "/mcp", rpc("ping"), MCP_HEADERS | {"origin": "http://evil.example"}), CONTEXT)["statusCode"] == 403
