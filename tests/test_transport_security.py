"""Security headers, CORS, and the MCP transport's own refusals (Host/Origin, methods, media
types, malformed JSON-RPC), on both MCP paths of the real server."""

import importlib
from urllib.parse import urlsplit

import httpx
import pytest

from chalicelib.config import Settings

from .aws_events import CONTEXT, MCP_HEADERS, http_api_event, rest_api_event, rpc
from .servers import running_server

ALLOWED = "https://app.example"


@pytest.fixture(scope="module", params=["lean", "sdk"])
def url(request, tmp_path_factory):
    env = {"CORS_ALLOWED_ORIGINS": ALLOWED, "MCP_LEAN_PATH": "true" if request.param == "lean" else "false"}
    with running_server(tmp_path_factory.mktemp("transport") / "db.sqlite", **env) as url:
        yield url


def test_security_headers_on_every_response(url):
    for response in (httpx.get(f"{url}/health"), httpx.get(f"{url}/api/list_projects"), httpx.get(f"{url}/docs"),
                     httpx.post(f"{url}/mcp", headers=MCP_HEADERS, json=rpc("ping")), httpx.get(f"{url}/nowhere")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        # The web UI's pages (/docs is one) send same-origin: their forms need a real Origin.
        assert response.headers["referrer-policy"] == ("same-origin" if response.url.path == "/docs" else "no-referrer")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert "strict-transport-security" not in response.headers  # plain HTTP
        assert "access-control-allow-origin" not in response.headers


def test_cors_closed_except_for_configured_origins(url):
    preflight = {"Origin": ALLOWED, "Access-Control-Request-Method": "POST"}
    allowed = httpx.options(f"{url}/api/list_projects", headers=preflight)
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == ALLOWED
    assert "Authorization" in allowed.headers["access-control-allow-headers"]
    other = httpx.options(f"{url}/api/list_projects", headers=preflight | {"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    simple = httpx.get(f"{url}/api/list_projects", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers
    assert httpx.get(f"{url}/api/list_projects", headers={"Origin": ALLOWED}).headers["access-control-allow-origin"] == ALLOWED


@pytest.mark.parametrize("headers, status", [
    ({"Host": "evil.example"}, 421),  # DNS rebinding
    ({"Origin": "http://evil.example"}, 403),
    ({"Content-Type": "text/plain"}, 415),
    ({"Accept": "text/html"}, 406),
])
def test_mcp_refuses_foreign_hosts_origins_and_wrong_media_types(url, headers, status):
    response = httpx.post(f"{url}/mcp", headers=MCP_HEADERS | headers, json=rpc("tools/list"))
    assert response.status_code == status
    assert "result" not in response.text


@pytest.mark.parametrize("method", ["ping", "tools/list", "resources/list"])  # resources/list: the SDK's path on both
def test_mcp_takes_a_host_and_origin_in_any_case(url, method):
    """Security QA, session 36: `Host: LOCALHOST:port` got 421 from rebinding.py, and the SDK's own
    check behind it compares exactly (RFC 9110: host names are case-insensitive)."""
    port = urlsplit(url).port
    for headers in ({"Host": f"LOCALHOST:{port}"}, {"Host": f"LocalHost:{port}", "Origin": f"HTTP://LocalHost:{port}"}):
        response = httpx.post(f"{url}/mcp", headers=MCP_HEADERS | headers, json=rpc(method))
        assert response.status_code == 200 and "result" in response.json(), headers
    assert httpx.post(f"{url}/mcp", headers=MCP_HEADERS | {"Host": f"LOCALHOST.evil.example:{port}"},
                      json=rpc(method)).status_code == 421


@pytest.mark.parametrize("body", [b"{", b"[]", b"null", b'{"jsonrpc":"1.0","id":1,"method":"ping"}', b'"x"',
                                  b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":[]}'])
def test_malformed_json_rpc_gets_a_json_rpc_error(url, body):
    response = httpx.post(f"{url}/mcp", headers=MCP_HEADERS, content=body)
    assert 400 <= response.status_code < 500 or (response.status_code == 200 and "error" in response.json())
    assert response.json()["jsonrpc"] == "2.0" and "error" in response.json()


@pytest.mark.parametrize("method, headers, body, status, code, hint", [
    ("POST", {}, b"{", 400, "bad_request", "valid JSON"),  # the SDK's parse error
    ("POST", {}, b"[]", 400, "bad_request", "one JSON object"),  # the SDK's: not a JSON-RPC message
    ("POST", {}, b'{"jsonrpc":"1.0","id":1,"method":"ping"}', 400, "bad_request", '"jsonrpc": "2.0"'),
    ("POST", {"Accept": "text/html"}, b'{"jsonrpc":"2.0","id":1,"method":"ping"}', 406, "not_acceptable", "Accept: application/json"),
    ("POST", {"Content-Type": "text/plain"}, b"{}", 415, "unsupported_media_type", "Content-Type: application/json"),
    ("GET", {}, b"", 405, "method_not_allowed", "POST /mcp"),
    ("DELETE", {}, b"", 405, "method_not_allowed", "POST /mcp"),  # the SDK's: no session to end
    ("PUT", {}, b"", 405, "method_not_allowed", "POST /mcp"),
    # A 2026-07-28 request without its _meta envelope: params that do not fit (it said bad_request, and
    # its hint spoke of tools/call's params)
    ("POST", {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list"},
     b'{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}', 400, "invalid_argument", "io.modelcontextprotocol/protocolVersion"),
])
def test_a_malformed_mcp_request_gets_the_error_shape_with_a_hint(url, method, headers, body, status, code, hint):
    """The SDK's own refusals carry `data` as this server's errors do (mcp_errors.py), so a client
    reads ["error"]["data"]["error"]["code"] and learns how to fix the request."""
    response = httpx.request(method, f"{url}/mcp", headers=MCP_HEADERS | headers, content=body)
    assert response.status_code == status
    assert int(response.headers["content-length"]) == len(response.content)
    error = response.json()["error"]
    assert error["data"]["error"]["code"] == code and error["data"]["error"]["message"] == error["message"]
    assert hint in error["data"]["error"]["hint"]


# Errors the SDK answers itself inside the protocol (200 over HTTP): (request, JSON-RPC code,
# our code, what its hint says). tests/test_mcp_errors.py sends them over stdio too.
PROTOCOL_ERRORS = [
    (rpc("tools/frobnicate"), -32601, "not_found", ["'tools/frobnicate'", "Did you mean", "tools/call", "resources/read"]),
    (rpc("tools/call", {"name": 5}), -32602, "invalid_argument", ['tools/call takes {"name"']),  # the SDK's, on both paths
    (rpc("resources/read", {}), -32602, "invalid_argument", ['resources/read {"uri"']),
]


def assert_protocol_error(error: dict, rpc_code: int, code: str, hints: list[str]) -> None:
    """The JSON-RPC `error` has this server's body as `data`, its code and a hint saying `hints`."""
    assert error["code"] == rpc_code
    data = error["data"]["error"]
    assert data["code"] == code and data["message"] == error["message"]
    for hint in hints:
        assert hint in data["hint"]


@pytest.mark.parametrize("request_, rpc_code, code, hints", PROTOCOL_ERRORS)
def test_a_json_rpc_error_answered_200_gets_the_error_shape_with_a_hint(url, request_, rpc_code, code, hints):
    """Errors the SDK answers 200 (inside the protocol: an unknown method, params that do not
    fit) carry the same `data` as its refusals: the SDK gave a bare method name or ""."""
    response = httpx.post(f"{url}/mcp", headers=MCP_HEADERS, json=request_)
    assert response.status_code == 200 and int(response.headers["content-length"]) == len(response.content)
    answer = response.json()
    assert answer["id"] == 1
    assert_protocol_error(answer["error"], rpc_code, code, hints)


def test_wrong_methods(url):
    assert httpx.put(f"{url}/mcp", headers=MCP_HEADERS).status_code == 405
    assert httpx.delete(f"{url}/api/list_projects").status_code == 405


def test_chalice_adds_security_headers_and_hsts_over_https(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/imported.db")
    chalice_app = importlib.import_module("app").create_app(Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite"))
    for path in ("/health", "/api/list_projects"):
        headers = chalice_app(rest_api_event("GET", path), CONTEXT)["headers"]
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
        assert headers["Strict-Transport-Security"].startswith("max-age=")  # API Gateway: X-Forwarded-Proto https
    answer = chalice_app.handler_map["mcp"](http_api_event("POST", "/mcp", rpc("ping"), MCP_HEADERS), CONTEXT)
    assert answer["headers"]["X-Content-Type-Options"] == "nosniff" and "Strict-Transport-Security" in answer["headers"]


def test_health_without_cors_sends_the_same_security_headers(server):
    """/health's answer is prebuilt when no CORS origin is configured: the same security headers
    as any other answer, on every request of a keep-alive connection."""
    with httpx.Client(base_url=server) as client:
        api = client.get("/api/list_projects").headers
        for _ in range(2):
            health = client.get("/health")
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            assert health.headers["content-type"] == "application/json"
            assert health.headers["content-length"] == str(len(health.content))
            for name in ("x-content-type-options", "x-frame-options", "referrer-policy", "content-security-policy"):
                assert health.headers[name] == api[name]
            assert "access-control-allow-origin" not in health.headers
