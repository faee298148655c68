"""DNS rebinding (issue 11 #1): every route but /health refuses a foreign Host (421) and a
foreign Origin (403), the same way on the local server and on the Chalice app (REST and MCP)."""

import importlib
import json
import socket
from urllib.parse import urlsplit

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


@pytest.mark.parametrize("method, path", ROUTES)
def test_a_port_wildcard_takes_digits_only_and_the_value_ends_with_them(url, method, path):
    """Security QA, session 36: `127.0.0.1:*` took `127.0.0.1:8791@evil.com` (its userinfo form) and
    `http://127.0.0.1:*` took `http://127.0.0.1:8791.evil.com`, another host. Browsers send neither
    (so none was exploitable), but a port is digits and the host:port ends the value."""
    port = urlsplit(url).port
    for host in (f"127.0.0.1:{port}@evil.com", f"127.0.0.1:{port}.evil.com", "127.0.0.1:x", "127.0.0.1:"):
        assert request(url, method, path, {"Host": host}).status_code == 421, host
    for origin in (f"http://127.0.0.1:{port}.evil.com", f"http://127.0.0.1:{port}@evil.com", f"http://127.0.0.1:{port}/x"):
        assert request(url, method, path, {"Origin": origin}).status_code == 403, origin
    assert request(url, method, path, {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"}).status_code in (200, 404)


@pytest.mark.parametrize("method, path", ROUTES)
def test_host_names_match_in_any_case(url, method, path):
    """Security QA, session 36: `Host: LOCALHOST` got 421. Host names are case-insensitive (RFC 9110
    §4.2.3), and so are an origin's scheme and host; the port stays digits."""
    port = urlsplit(url).port
    for headers in ({"Host": f"LOCALHOST:{port}"}, {"Host": "LocalHost"}, {"Origin": f"HTTP://LocalHost:{port}"}):
        assert request(url, method, path, headers).status_code in (200, 404), headers
    for host in (f"LOCALHOST.evil.example:{port}", f"LOCALHOST:{port}@evil.example", "127.0.0.1:8O"):
        assert request(url, method, path, {"Host": host}).status_code == 421, host


def test_the_mcp_sdks_check_takes_a_host_without_a_port_as_ours_does(url):
    """Session 36: our check takes `Host: localhost` (port 80, nginx's Host $host) for `localhost:*`,
    but the MCP SDK's check behind it did not: what the SDK answers (resources/list) got its
    plain-text 421 "Invalid Host header", and `Origin: http://localhost` its 403."""
    for headers in ({"Host": "localhost"}, {"Host": "127.0.0.1"}, {"Origin": "http://localhost"}, {"Host": "LOCALHOST"}):
        answer = httpx.post(f"{url}/mcp", headers=MCP_HEADERS | headers, json=rpc("resources/list"))
        assert answer.status_code == 200 and "resources" in answer.json()["result"], headers
    assert httpx.post(f"{url}/mcp", headers=MCP_HEADERS | {"Host": "localhost.evil.example"}, json=rpc("resources/list")).status_code == 421


def test_a_request_without_a_host_header_is_answered_alike_on_every_mcp_path(url):
    """QA, session 40: without a Host header (HTTP/1.0 allows none) the lean path and REST served a
    request, and the SDK's check behind ours answered what the SDK serves (resources/list, and
    every call with MCP_LEAN_PATH=false) with a plain-text 421. Ours is now the only check."""
    import http.client

    parts = urlsplit(url)
    for method in ("tools/call", "resources/list"):
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        conn.putrequest("POST", "/mcp", skip_host=True)
        params = {"name": "list_projects", "arguments": {}} if method == "tools/call" else None
        body = json.dumps(rpc(method, params)).encode()
        for name, value in (MCP_HEADERS | {"Content-Length": str(len(body))}).items():
            conn.putheader(name, value)
        conn.endheaders(body)
        answer = conn.getresponse()
        assert answer.status == 200 and "result" in json.loads(answer.read()), method
        conn.close()


def test_only_ascii_letters_fold():
    """Nothing else loosens: the Kelvin sign lower-cases to k in Python, and fullwidth digits are digits to it."""
    assert rebinding.allowed("API.Example:443", ["api.example:*"]) and rebinding.allowed("api.example", ["API.EXAMPLE"])
    assert not rebinding.allowed("\u212aite.example", ["kite.example"])
    assert not rebinding.allowed("localhost:\uff18\uff10", ["localhost:*"])


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
    # In any case, through the SDK's check too (resources/list is the SDK's to answer)
    upper = mcp(http_api_event("POST", "/mcp", rpc("resources/list"), MCP_HEADERS | {"host": URL_HOST.upper()}), CONTEXT)
    assert upper["statusCode"] == 200 and "result" in json.loads(upper["body"])


def raw_answer(url: str, head: str) -> tuple[int, dict]:
    """The status and JSON body of a request sent as written (clients send each header once)."""
    with socket.create_connection((urlsplit(url).hostname, urlsplit(url).port)) as sock:
        sock.sendall(head.encode() + b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2] or b"null")


REPEATED = {"Host": ["127.0.0.1", "evil.example"], "Authorization": ["Bearer wrong", "Bearer right"],
            "Origin": ["http://127.0.0.1", "http://evil.example"]}


@pytest.mark.parametrize("path", ["/api/list_projects", "/mcp", "/ui/projects"])
def test_a_header_sent_twice_that_may_be_read_either_way_is_refused(url, path):
    """QA, session 32: two Host fields (RFC 9112: 400) or two Authorization fields were served, the
    Host check reading the first and authentication the last, as a proxy in front might not."""
    host = urlsplit(url).netloc
    for name, values in REPEATED.items():
        fields = "".join(f"{name}: {value}\r\n" for value in values) + ("" if name == "Host" else f"Host: {host}\r\n")
        status, body = raw_answer(url, f"GET {path} HTTP/1.1\r\n{fields}")
        assert status == 400, name
        assert f"sends the {name} header more than once" in json.dumps(body), name
    assert raw_answer(url, f"GET /api/list_projects HTTP/1.1\r\nHost: {host}\r\n")[0] == 200


def test_chalice_refuses_a_header_sent_twice(aws):
    for name, values in REPEATED.items():
        event = rest_api_event("GET", "/api/list_projects")
        event["multiValueHeaders"][name] = values
        event["headers"][name] = values[-1]  # API Gateway's headers: the last of each
        answer = aws(event, CONTEXT)
        assert answer["statusCode"] == 400 and "more than once" in json.loads(answer["body"])["error"]["message"], name
        mcp_event = rest_api_event("POST", "/mcp", rpc("ping"), MCP_HEADERS)
        mcp_event["multiValueHeaders"][name] = values
        assert aws.handler_map["mcp"](mcp_event, CONTEXT)["statusCode"] == 400, name
