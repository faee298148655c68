"""Rate limits (chalicelib/security/ratelimit.py) and request size limits, through the real server
and the Lambda entry points."""

import importlib
import json
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

from chalicelib.config import Settings
from chalicelib.security import ratelimit

from .aws_events import CONTEXT, MCP_HEADERS, http_api_event, rest_api_event, tool_call
from .servers import running_server

TOKENS = "token-a,token-b,token-c"


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    env = dict(AUTH_MODE="bearer", AUTH_BEARER_TOKENS=TOKENS, REQUIRE_AGENT_TOKENS="false",
               RATE_LIMIT_WRITES_PER_MINUTE="60", RATE_LIMIT_READS_PER_MINUTE="600", MAX_BODY_BYTES="4096")
    with running_server(tmp_path_factory.mktemp("limits") / "db.sqlite", **env) as url:
        yield url


def client(url, token="token-a"):
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"})


def test_a_burst_beyond_the_write_limit_gets_429_then_recovers(limited):
    with client(limited) as a, client(limited, "token-b") as b:
        answers = []  # the burst the bucket holds, then what it refilled meanwhile (1/s), then a 429
        while len(answers) < 120 and (not answers or answers[-1].status_code == 200):
            answers.append(a.post("/api/ensure_project", json={"human_key": f"/burst/{len(answers)}"}))
        *accepted, refused = answers
        assert len(accepted) >= 60 and {answer.status_code for answer in accepted} == {200}
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        retry_after = int(refused.headers["Retry-After"])
        assert retry_after >= 1
        for attempt in range(3):  # a loaded machine may take the bucket's refill time (1 s) between two requests
            mcp = a.post("/mcp", headers=MCP_HEADERS, json=tool_call("ensure_project", {"human_key": f"/burst/mcp{attempt}"}))
            if mcp.status_code == 429:
                break
            while a.post("/api/ensure_project", json={"human_key": "/burst/again"}).status_code == 200:
                pass  # empty again
        assert mcp.status_code == 429 and mcp.json()["error"]["data"]["error"]["code"] == "rate_limited"  # a JSON-RPC error
        assert a.get("/api/list_projects").status_code == 200  # reads have their own budget
        assert a.post("/mcp", headers=MCP_HEADERS, json=tool_call("list_projects", {})).status_code == 200
        assert b.post("/api/ensure_project", json={"human_key": "/burst/b"}).status_code == 200  # another caller
        time.sleep(retry_after)
        assert a.post("/api/ensure_project", json={"human_key": "/burst/later"}).status_code == 200


def test_a_body_orjson_cannot_parse_counts_as_a_write(limited):
    """The MCP SDK reads NaN, orjson does not: a tools/call carrying one passed as a read, past the write budget."""
    call = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ensure_project","arguments":{"human_key":"/nan/%d"},"_meta":{"x":NaN}}}'
    with client(limited, "token-c") as c:
        answers = []
        while len(answers) < 120 and (not answers or answers[-1].status_code == 200):
            answers.append(c.post("/mcp", headers=MCP_HEADERS, content=call % len(answers)))
        *accepted, refused = answers
        assert not accepted[0].json()["result"]["isError"]  # the SDK did take it: a write
        assert refused.status_code == 429 and refused.json()["error"]["data"]["error"]["code"] == "rate_limited"
        assert c.post("/mcp", headers=MCP_HEADERS, content=b"{not json").status_code == 429  # whatever it is
        assert c.get("/api/list_projects").status_code == 200  # reads keep their own budget


def test_a_rate_limited_request_names_in_its_log_line_the_tool_it_asked_for(tmp_path):
    """The 429 comes before a tool runs to note its name: the line said tool null, so a log could
    not tell which calls a caller was refused."""
    log = tmp_path / "server.log"
    env = dict(AUTH_MODE="bearer", AUTH_BEARER_TOKENS="token-a", REQUIRE_AGENT_TOKENS="false", LOG_LEVEL="INFO",
               RATE_LIMIT_WRITES_PER_MINUTE="1", RATE_LIMIT_READS_PER_MINUTE="600")
    with running_server(tmp_path / "db.sqlite", stderr=log, **env) as url, client(url) as a:
        assert a.post("/api/ensure_project", json={"human_key": "/logged/0"}).status_code == 200
        assert a.post("/api/ensure_project", json={"human_key": "/logged/1"}).status_code == 429
        assert a.post("/api/register_agent", json={"project_key": "logged-0", "program": "p", "model": "m"}).status_code == 429
        mcp = tool_call("register_agent", {"project_key": "logged-0", "program": "p", "model": "m"})
        assert a.post("/mcp", headers=MCP_HEADERS, json=mcp).status_code == 429
        assert a.post("/mcp", headers=MCP_HEADERS, content=b"{not json").status_code == 429  # names nothing
        time.sleep(1.2)  # the log stream flushes every half second
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    refused = [(line["path"], line["tool"]) for line in lines if line.get("msg") == "request" and line["status"] == 429]
    assert refused == [("/api/ensure_project", "ensure_project"), ("/api/register_agent", "register_agent"),
                       ("/mcp", "register_agent"), ("/mcp", None)]


def test_bodies_over_the_limit_are_refused(limited):
    with client(limited, "token-b") as b:
        big = {"human_key": "/x" + "a" * 5000}
        response = b.post("/api/ensure_project", json=big)
        assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
        chunked = b.post("/api/ensure_project", content=iter([json.dumps(big).encode()]), headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413
        assert b.post("/mcp", headers=MCP_HEADERS, json=tool_call("ensure_project", big)).status_code == 413
        assert b.post("/api/ensure_project", json={"human_key": "/small"}).status_code == 200


def test_lambda_limits_key_on_the_gateway_source_ip(tmp_path, monkeypatch):
    """Without authentication the key is API Gateway's source IP; X-Forwarded-For changes nothing."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/imported.db")
    app_module = importlib.import_module("app")
    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", rate_limit_writes_per_minute=2,
                        mcp_allowed_hosts=["*"])
    chalice_app = app_module.create_app(settings)
    statuses = []
    for n in range(4):
        event = rest_api_event("POST", "/api/ensure_project", {"human_key": f"/l/{n}"},
                               {"Content-Type": "application/json", "X-Forwarded-For": f"198.51.100.{n}"})
        statuses.append(chalice_app(event, CONTEXT)["statusCode"])
    assert statuses == [200, 200, 429, 429]
    other_ip = rest_api_event("POST", "/api/ensure_project", {"human_key": "/l/other"}, {"Content-Type": "application/json"})
    other_ip["requestContext"]["identity"]["sourceIp"] = "203.0.113.99"
    assert chalice_app(other_ip, CONTEXT)["statusCode"] == 200
    mcp = chalice_app.handler_map["mcp"]
    event = http_api_event("POST", "/mcp", tool_call("ensure_project", {"human_key": "/l/mcp"}), MCP_HEADERS)
    answer = mcp(event, CONTEXT)  # same source IP as the REST events: over budget
    assert answer["statusCode"] == 429 and "Retry-After" in answer["headers"]


def status_from(address: str, url: str, path: str) -> int:
    """The status of GET `path`, sent from `address` (any of 127.0.0.0/8 reaches 127.0.0.1)."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    with socket.socket() as sock:
        sock.bind((address, 0))
        sock.connect((host, port))
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return int(answer.split(b" ", 2)[1])


def test_callers_from_many_addresses_do_not_reset_a_credentials_budget(tmp_path):
    """When MAX_KEYS callers were tracked, a new one cleared every bucket: pages asked from 10,000
    addresses gave a credential over its limit a full budget again. Now the newcomers share one
    bucket, and credentials keep a table of their own."""
    env = dict(AUTH_MODE="bearer", AUTH_BEARER_TOKENS="token-a,token-b", REQUIRE_AGENT_TOKENS="false",
               RATE_LIMIT_READS_PER_MINUTE="1", RATE_LIMIT_WRITES_PER_MINUTE="1")
    with running_server(tmp_path / "db.sqlite", **env) as url, client(url) as a:
        assert a.get("/api/health_check").status_code == 200
        assert a.get("/api/health_check").status_code == 429  # one read a minute
        started = time.monotonic()
        addresses = [f"127.1.{n // 250}.{1 + n % 250}" for n in range(ratelimit.MAX_KEYS + 2)]
        statuses = [status_from(address, url, "/ui/live") for address in addresses]
        assert time.monotonic() - started < 50, "too slow to tell: the buckets refill in a minute"
        assert a.get("/api/health_check").status_code == 429  # still drained
        assert 429 not in statuses[:ratelimit.MAX_KEYS]  # each address its own bucket
        assert statuses[-2] != 429 and statuses[-1] == 429  # then the newcomers share one
        with client(url, "token-b") as b:
            assert b.get("/api/health_check").status_code == 200  # a credential's own bucket, whatever the addresses


def test_a_full_table_forgets_only_the_buckets_refilled_by_now(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(ratelimit.time, "monotonic", lambda: now[0])
    bucket = ratelimit.Bucket(1)
    for n in range(ratelimit.MAX_KEYS):
        assert bucket.take(f"ip:{n}") == 0
    assert bucket.take("ip:new") == 0 and bucket.take("ip:newer") > 0  # drained ones kept: newcomers share
    assert bucket.take("ip:0") > 0
    now[0] += 60  # a minute on, every one of them full again: forgotten for the next newcomer
    assert bucket.take("ip:later") == 0 and bucket.take("ip:later-still") == 0
    assert len(bucket.addresses) < 10
