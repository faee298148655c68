"""Authentication (chalicelib/security/auth.py): every route × every kind of credential, through the
real server and through the Chalice app (test client, REST API events, the `mcp` function),
with a JWKS served by a local HTTP server."""

import asyncio
import base64
import importlib
import json
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import jwt
import pytest
from chalice.test import Client
from pydantic import ValidationError
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
import httpx2
from mcp import Client as MCPClient, MCPError
from mcp.client.streamable_http import streamable_http_client

from chalicelib.security import auth
from chalicelib.config import JWT_SIGNING_ALGORITHMS, Settings, invalid_setting
from chalicelib.store import db
from chalicelib.tools import all_tools

from .aws_events import API_HOST, CONTEXT, MCP_HEADERS, URL_HOST, http_api_event, rest_api_event, rpc
from .servers import ROOT, answering, running_server, serving_in_process
from .test_docs import readme_mcp_set_ups_with_authentication

AUDIENCE = "agent-mail"
ISSUER = "https://issuer.test"
BEARER = "s3cret-bearer-token-one"


class Keys:
    """An RSA and an EC signing key published in the JWKS, and keys the JWKS does not know."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict:
        return {"keys": [
            RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True) | {"kid": "rsa-1", "alg": "RS256", "use": "sig"},
            ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True) | {"kid": "ec-1", "use": "sig"},  # alg inferred
        ]}


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


@contextmanager
def serving_jwks(respond):
    """The URL of a key set served on 127.0.0.1, each GET answered by respond(handler)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            respond(self)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()


def send_json(handler: BaseHTTPRequestHandler, document) -> None:
    body = json.dumps(document).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture(scope="module")
def jwks_url(keys):
    with serving_jwks(lambda handler: send_json(handler, keys.jwks())) as url:
        yield url


def claims(**changes) -> dict:
    now = int(time.time())
    return {"sub": "agent-runner", "aud": AUDIENCE, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + 600} | changes


def unsigned(payload: dict) -> str:
    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': 'rsa-1'})}.{part(payload)}."


def jwt_cases(keys: Keys) -> dict[str, str | None]:
    """Authorization header per case; None: no header."""
    rsa_sign = lambda payload, key=keys.rsa, kid="rsa-1": jwt.encode(payload, key, "RS256", headers={"kid": kid})  # noqa: E731
    now = int(time.time())
    return {
        "no credentials": None,
        "wrong token": "Bearer not-a-jwt",
        "basic scheme": "Basic dXNlcjpwYXNz",
        "expired": "Bearer " + rsa_sign(claims(exp=now - 120, iat=now - 900, nbf=now - 900)),
        "not yet valid": "Bearer " + rsa_sign(claims(nbf=now + 600)),
        "wrong audience": "Bearer " + rsa_sign(claims(aud="someone-else")),
        "wrong issuer": "Bearer " + rsa_sign(claims(iss="https://evil.test")),
        "no expiry": "Bearer " + rsa_sign({k: v for k, v in claims().items() if k != "exp"}),
        # no subject: every such caller was one credential, "" (none): no per-credential share held them
        "no subject": "Bearer " + rsa_sign({k: v for k, v in claims().items() if k != "sub"}),
        "empty subject": "Bearer " + rsa_sign(claims(sub=" ")),
        "bad signature": "Bearer " + rsa_sign(claims(), key=keys.stranger),
        "alg=none": "Bearer " + unsigned(claims()),
        "HS256 with the public key": "Bearer " + jwt.encode(claims(), "x" * 32, "HS256", headers={"kid": "rsa-1"}),
        "unknown kid": "Bearer " + rsa_sign(claims(), key=keys.stranger, kid="rsa-2"),
        "valid": "Bearer " + rsa_sign(claims()),
        "valid EC": "Bearer " + jwt.encode(claims(), keys.ec, "ES256", headers={"kid": "ec-1"}),
    }


BEARER_CASES = {
    "no credentials": None,
    "wrong token": "Bearer s3cret-bearer-token-onE",
    "empty token": "Bearer",
    "valid": f"Bearer {BEARER}",
    "valid second": "Bearer another-token",
}


def routes(docs: bool = True) -> list[tuple[str, str]]:
    """Every route that needs credentials: each registry tool's REST route(s), /mcp, the docs
    (served by the local server only). /docs is a web UI page: it asks for a session or a bearer
    token instead (tests/test_webui_auth.py, test_the_docs_take_the_bearer_token_and_openapi_names_it)."""
    found = [("POST", tool.rest_path) for tool in all_tools()]
    found += [("GET", tool.rest_path) for tool in all_tools() if tool.read_only]
    found.append(("POST", "/mcp"))
    return found + ([("GET", "/openapi.json"), ("GET", "/redoc")] if docs else [])


def refusal_code(path: str, body: str) -> str:
    """The error code of a refusal: /mcp answers a JSON-RPC error (what MCP clients read), whose
    data is the body every other route answers."""
    error = json.loads(body)["error"]
    return error["data"]["error"]["code"] if path == "/mcp" else error["code"]


def check_matrix(request, cases: dict[str, str | None], docs: bool = True) -> None:
    """`request(method, path, authorization) -> (status, headers, body)` for every route × case."""
    failures = []
    for method, path in routes(docs):
        for case, authorization in cases.items():
            status, headers, body = request(method, path, authorization)
            if case.startswith("valid"):
                ok = status not in (401, 403) and status < 500
            else:
                ok = (
                    status == 401
                    and headers.get("www-authenticate", "").startswith('Bearer realm="agent-mail"')
                    and refusal_code(path, body) == "unauthorized"
                )
            if not ok:
                failures.append((method, path, case, status, body[:200]))
    assert not failures, failures[:10]


def test_auth_matrix_real_server_jwt(tmp_path, keys, jwks_url):
    env = dict(AUTH_MODE="jwt", JWT_JWKS_URL=jwks_url, JWT_AUDIENCE=AUDIENCE, JWT_ISSUER=ISSUER,
               AUTH_FAILURES_PER_MINUTE="0")  # every refusal from one address: test_guessing_* counts them
    with running_server(tmp_path / "db.sqlite", **env) as url, httpx.Client(base_url=url) as client:

        def request(method, path, authorization):
            headers = MCP_HEADERS | ({"Authorization": authorization} if authorization else {})
            body = json.dumps(rpc("tools/list")) if path == "/mcp" else "{}"
            response = client.request(method, path, headers=headers, content=body if method == "POST" else None)
            return response.status_code, response.headers, response.text

        check_matrix(request, jwt_cases(keys))
        for path in ("/health", "/ready"):
            assert client.get(path).status_code == 200
        # MCP, lean path and SDK path (a notification goes to the SDK), with a valid token
        valid = {"Authorization": jwt_cases(keys)["valid"]} | MCP_HEADERS
        listed = client.post("/mcp", headers=valid, json=rpc("tools/list")).json()
        assert len(listed["result"]["tools"]) == len(all_tools())
        assert client.post("/mcp", headers=valid, json={"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
        assert client.post("/mcp", headers=MCP_HEADERS, json={"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 401
        assert client.get("/mcp", headers={"Accept": "text/event-stream"}).status_code == 401
        assert client.post("/api/ensure_project", headers=valid, json={"human_key": "/auth"}).json()["slug"] == "auth"
        assert client.get("/openapi.json", headers=valid).json()["components"]["securitySchemes"] == {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}


def test_auth_matrix_real_server_bearer(tmp_path):
    with running_server(tmp_path / "db.sqlite", AUTH_MODE="bearer", AUTH_BEARER_TOKENS=f"{BEARER},another-token",
                        AUTH_FAILURES_PER_MINUTE="0") as url:  # (as the JWT matrix)
        with httpx.Client(base_url=url) as client:

            def request(method, path, authorization):
                headers = MCP_HEADERS | ({"Authorization": authorization} if authorization else {})
                response = client.request(method, path, headers=headers, content="{}" if method == "POST" else None)
                return response.status_code, response.headers, response.text

            check_matrix(request, BEARER_CASES)
            assert client.get("/health").status_code == 200


def test_guessing_tokens_is_bounded_per_address(tmp_path):
    """Past AUTH_FAILURES_PER_MINUTE refused credentials from one address, its requests are refused
    (429) before any credential is checked, the right one too (else a guesser would learn its hit
    from the one answer that is not a 429), on REST, MCP and the web UI's sign-in alike; requests
    without a credential guess nothing and do not count. (6 a minute: the next one is 10 s away.)"""
    log = tmp_path / "server.log"
    with running_server(tmp_path / "db.sqlite", stderr=log, AUTH_MODE="bearer", AUTH_BEARER_TOKENS=BEARER,
                        AUTH_FAILURES_PER_MINUTE="6") as url, httpx.Client(base_url=url) as client:
        def call(token, path="/api/health_check"):
            headers = MCP_HEADERS | ({"Authorization": f"Bearer {token}"} if token else {})
            return client.post(path, headers=headers, content=json.dumps(rpc("tools/list")) if path == "/mcp" else "{}")

        assert {call(None).status_code for _ in range(20)} == {401}  # no credential: not a guess
        assert [call(f"guess-{n}").status_code for n in range(3)] == [401] * 3
        assert _signed_in(url, "guess-web").status_code == 401  # the sign-in form's count with the API's
        assert [call(f"guess-{n}", "/mcp").status_code for n in range(2)] == [401] * 2
        refused = call(BEARER)
        assert refused.status_code == 429 and refusal_code("/api", refused.text) == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 10 and "AUTH_FAILURES_PER_MINUTE" in refused.json()["error"]["message"]
        mcp = call(BEARER, "/mcp")
        assert mcp.status_code == 429 and refusal_code("/mcp", mcp.text) == "rate_limited"
        page = _signed_in(url, BEARER)
        assert page.status_code == 429 and "AUTH_FAILURES_PER_MINUTE" in page.text and 'name="token"' in page.text
        assert page.headers["retry-after"]
        assert client.get("/health").status_code == 200  # open paths check no credential
    assert log.read_text().count("past AUTH_FAILURES_PER_MINUTE (6)") == 1


def test_forwarded_headers_are_the_clients_to_write_and_change_no_address(tmp_path):
    """uvicorn believes X-Forwarded-For (and -Proto) from 127.0.0.1 by default, and every client of
    a loopback server comes from there: a new X-Forwarded-For per guess was a new address with a
    fresh AUTH_FAILURES_PER_MINUTE budget, without end. The socket's peer is the address, as
    docs/security.md says; a claimed https scheme changes nothing either (no HSTS over plain HTTP)."""
    log = tmp_path / "server.log"
    with running_server(tmp_path / "db.sqlite", stderr=log, AUTH_MODE="bearer", AUTH_BEARER_TOKENS=BEARER,
                        AUTH_FAILURES_PER_MINUTE="3", LOG_LEVEL="INFO") as url, httpx.Client(base_url=url) as client:
        def call(token, n):
            forwarded = {"X-Forwarded-For": f"198.51.100.{n}", "X-Forwarded-Proto": "https", "Forwarded": f"for=198.51.100.{n}"}
            return client.post("/api/health_check", headers={"Authorization": f"Bearer {token}", **forwarded}, json={})

        assert [call(f"guess-{n}", n).status_code for n in range(3)] == [401] * 3
        refused = call(BEARER, 99)
        assert refused.status_code == 429 and "strict-transport-security" not in refused.headers
    assert "198.51.100." not in log.read_text()  # nor is the claimed address logged as the caller's

def test_the_docs_take_the_bearer_token_and_openapi_names_it(tmp_path):
    """With authentication on, /openapi.json names an HTTP bearer scheme on every closed
    operation (Swagger UI then offers Authorize, and Try it out sends the token), and /docs
    answers the API's bearer token as it answers a signed-in session; without either, the login."""
    with running_server(tmp_path / "db.sqlite", AUTH_MODE="bearer", AUTH_BEARER_TOKENS=BEARER) as url:
        bearer = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {BEARER}"})
        spec = bearer.get("/openapi.json").json()
        assert spec["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
        for path, operations in spec["paths"].items():
            for operation in operations.values():
                assert operation.get("security") == (None if path in ("/health", "/ready") else [{"bearer": []}]), path
        docs = bearer.get("/docs")
        assert docs.status_code == 200 and 'id="swagger-ui"' in docs.text and docs.headers["cache-control"] == "no-store"
        wrong = httpx.get(f"{url}/docs", headers={"Authorization": "Bearer wrong-token"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        anonymous = httpx.get(f"{url}/docs")
        assert anonymous.status_code == 303 and anonymous.headers["location"] == "/ui/login?next=%2Fdocs"


def test_swagger_ui_authorize_then_try_it_out_with_the_token(tmp_path):
    """The QA steps: sign in, open /docs, Authorize with the token, Execute GET /api/list_projects: 200."""
    from .browser import chromium

    with running_server(tmp_path / "db.sqlite", AUTH_MODE="bearer", AUTH_BEARER_TOKENS=BEARER) as url, chromium() as browser:
        page = browser.new_page()
        page.goto(url + "/ui/login?next=/docs")
        page.fill("input[name=token]", BEARER)
        page.click("button[type=submit]")
        page.wait_for_url("**/docs")
        page.locator(".swagger-ui button.authorize").click(timeout=90000)  # 1.5 MB of JS
        page.fill(".auth-container input", BEARER)
        page.locator(".auth-container button.authorize").click()
        page.locator(".auth-btn-wrapper button.btn-done").click()
        operation = page.locator("#operations-projects-list_projects_get")
        operation.locator(".opblock-summary").click()
        operation.locator("button.try-out__btn").click()
        operation.locator("button.execute").click()
        status = operation.locator(".live-responses-table .response .response-col_status").first
        status.wait_for(timeout=60000)
        assert status.inner_text().strip() == "200"


def mcp_refusal(url: str, authorization: str | None) -> MCPError:
    """What the official MCP client raises when /mcp refuses its credentials."""
    try:
        tools = mcp_tools(url, {"Authorization": authorization} if authorization else {})
    except BaseException as exc:  # the client's task groups wrap it
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return exc
    raise AssertionError(f"the client was let in ({len(tools)} tools)")


def mcp_tools(url: str, headers: dict[str, str]) -> set[str]:
    """The tools the official MCP client lists, sending these headers."""
    async def listing():
        transport = streamable_http_client(f"{url}/mcp", http_client=httpx2.AsyncClient(headers=headers))
        async with MCPClient(transport, mode="legacy") as client:
            return {tool.name for tool in (await client.list_tools()).tools}

    return asyncio.run(listing())


def test_the_official_mcp_client_shows_why_its_credentials_were_refused(tmp_path):
    """A 401 from /mcp is a JSON-RPC error (keeping its status and WWW-Authenticate): with the
    REST body the client showed only "Server returned an error response". Set up as README says
    each client sends the token, it is let in."""
    with running_server(tmp_path / "db.sqlite", AUTH_MODE="bearer", AUTH_BEARER_TOKENS=BEARER) as url:
        # Every client's set-up sends the same header: one connection tries them all.
        documented = {tuple(headers.items()) for _, headers in readme_mcp_set_ups_with_authentication(BEARER).values()}
        assert [("send_message" in mcp_tools(url, dict(headers))) for headers in documented] == [True]
        for authorization in ("Bearer wrong-token", None):
            error = mcp_refusal(url, authorization)
            rest = httpx.post(f"{url}/api/list_projects", headers={"Authorization": authorization} if authorization else {})
            mcp = httpx.post(f"{url}/mcp", headers=MCP_HEADERS | ({"Authorization": authorization} if authorization else {}),
                             json=rpc("tools/list"))
            assert rest.status_code == mcp.status_code == 401
            assert mcp.headers["www-authenticate"] == rest.headers["www-authenticate"]
            assert isinstance(error, MCPError), repr(error)
            assert str(error) == rest.json()["error"]["message"]
            assert error.data == rest.json() and error.data["error"]["hint"]


def chalice_settings(tmp_path, **changes) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", mcp_allowed_hosts=["127.0.0.1:*", "localhost:*", API_HOST, URL_HOST], **changes)


@pytest.fixture
def app_module(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/imported.db")
    return importlib.import_module("app")


def test_guessing_tokens_is_bounded_on_the_chalice_app(tmp_path, app_module):
    """The Chalice app counts refused credentials by API Gateway's source address, as the server
    does; once Retry-After has passed, the right token is taken again."""
    for per_minute in (3, 120):
        settings = chalice_settings(tmp_path, auth_mode="bearer", auth_bearer_tokens=[BEARER], auth_failures_per_minute=per_minute)
        with Client(app_module.create_app(settings), project_dir=str(ROOT)) as client:
            def call(token):
                headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
                return client.http.post("/api/health_check", headers=headers, body=b"{}")

            assert call(BEARER).status_code == 200
            statuses = [call(f"guess-{n}").status_code for n in range(per_minute)]
            while statuses[-1] != 429 and len(statuses) < 3 * per_minute:  # (the budget refills as they go)
                statuses.append(call("guess").status_code)
            assert statuses[:per_minute] == [401] * per_minute and statuses[-1] == 429
            refused = call(BEARER)
            assert refused.status_code == 429 and json.loads(refused.body)["error"]["code"] == "rate_limited"
            if per_minute == 120:  # a token every half second
                time.sleep(int(refused.headers["Retry-After"]))
                assert call(BEARER).status_code == 200



def test_guessing_from_many_addresses_of_one_ipv6_network_is_one_budget(tmp_path, app_module):
    """An IPv6 client holds a whole /64 (it picks its interface id: privacy addresses, or any it
    likes), so counting refusals per address gave each of its 2^64 addresses a budget of its own:
    a new address per guess went on at full speed. Its /64 is one address now, as is an IPv4
    client written IPv4-mapped; another /64 keeps its own budget. (The `mcp` function, which a
    function URL reaches over IPv6 as well.)"""
    settings = chalice_settings(tmp_path, auth_mode="bearer", auth_bearer_tokens=[BEARER], auth_failures_per_minute=3)
    mcp = app_module.create_app(settings).handler_map["mcp"]

    def call(token, source):
        event = http_api_event("POST", "/mcp", rpc("tools/list"), MCP_HEADERS | {"Authorization": f"Bearer {token}"})
        event["requestContext"]["http"]["sourceIp"] = source
        return mcp(event, CONTEXT)["statusCode"]

    assert [call(f"guess-{n}", f"2001:db8:1:2::{n + 1:x}") for n in range(3)] == [401] * 3
    assert [call(BEARER, source) for source in ("2001:db8:1:2::99", "2001:db8:1:2:ffff:1:2:3")] == [429, 429]
    assert call(BEARER, "2001:db8:1:3::1") == 200  # another network
    assert [call(f"guess-{n}", "::ffff:198.51.100.7") for n in range(3)] == [401] * 3
    assert call(BEARER, "198.51.100.7") == 429  # the same IPv4 client

def test_auth_matrix_chalice(tmp_path, keys, jwks_url, app_module):
    settings = chalice_settings(tmp_path, auth_mode="jwt", jwt_jwks_url=jwks_url, jwt_audience=AUDIENCE, jwt_issuer=ISSUER,
                                auth_failures_per_minute=0)  # (as the JWT matrix)
    chalice_app = app_module.create_app(settings)
    cases = jwt_cases(keys)
    with Client(chalice_app, project_dir=str(ROOT)) as client:

        def request(method, path, authorization):
            headers = MCP_HEADERS | ({"Authorization": authorization} if authorization else {})
            body = json.dumps(rpc("tools/list")).encode() if path == "/mcp" else b"{}"
            response = client.http.request(method, path, headers=headers, body=body if method == "POST" else b"")
            return response.status_code, {k.lower(): v for k, v in response.headers.items()}, response.body.decode()

        check_matrix(request, cases, docs=False)
        assert client.http.get("/health").status_code == 200
        assert client.http.get("/ready").status_code == 200

    # The Lambda entry points, as AWS calls them: the REST API (v1) and the `mcp` function (v2).
    mcp_function = chalice_app.handler_map["mcp"]
    for case, authorization in cases.items():
        headers = MCP_HEADERS | ({"Authorization": authorization} if authorization else {})
        v1 = chalice_app(rest_api_event("POST", "/api/list_projects", {}, headers), CONTEXT)
        v2 = mcp_function(http_api_event("POST", "/mcp", rpc("tools/list"), headers), CONTEXT)
        expected = 200 if case.startswith("valid") else 401
        assert (case, v1["statusCode"], v2["statusCode"]) == (case, expected, expected)
        if expected == 401:
            assert refusal_code("/mcp", v2["body"]) == "unauthorized"
            assert v2["headers"]["WWW-Authenticate"].startswith("Bearer")
    assert chalice_app(rest_api_event("GET", "/health"), CONTEXT)["statusCode"] == 200


def test_bearer_tokens_are_compared_whole(tmp_path):
    authenticator = auth.Authenticator(Settings(auth_mode="bearer", auth_bearer_tokens=["abc", "defgh"]))
    assert authenticator.authenticate({"authorization": "Bearer abc"}).kind == "bearer"
    assert authenticator.authenticate({"Authorization": "bearer defgh"}).subject.startswith("bearer:")
    for wrong in ("Bearer ab", "Bearer abcd", "Bearer ABC", "Token abc", "abc"):
        with pytest.raises(auth.Unauthorized):
            authenticator.authenticate({"authorization": wrong})


@pytest.mark.parametrize(
    "changes, host",
    [
        ({}, "0.0.0.0"),
        ({}, "192.0.2.10"),
        ({}, None),  # AWS Lambda
        ({"auth_mode": "none"}, "::"),
        ({"auth_mode": "bearer"}, "127.0.0.1"),  # no tokens
        ({"auth_mode": "jwt", "jwt_jwks_url": "http://127.0.0.1:1/jwks"}, "127.0.0.1"),  # no audience, issuer
        ({"auth_mode": "jwt", "jwt_jwks_url": "u", "jwt_audience": "a", "jwt_issuer": "i", "jwt_algorithms": []}, "::1"),
    ],
)
def test_refuses_to_start_open_or_unverifiable(changes, host):
    with pytest.raises(auth.InsecureConfiguration):
        auth.check_configuration(Settings(**changes), host)


@pytest.mark.parametrize("changes, host", [({}, "127.0.0.1"), ({}, "localhost"), ({}, "::1"), ({"allow_insecure": True}, "0.0.0.0"),
                                           ({"auth_mode": "bearer", "auth_bearer_tokens": ["t"]}, "0.0.0.0")])
def test_starts_when_safe(changes, host):
    auth.check_configuration(Settings(**changes), host)


def test_the_server_refuses_to_start_open_on_all_interfaces(tmp_path):
    with pytest.raises(RuntimeError, match="did not start"):
        with running_server(tmp_path / "db.sqlite", HOST="0.0.0.0"):
            pass


def test_unknown_kid_refetches_the_key_set_once(keys, jwks_url):
    """Key rotation: a token signed with a key published after the first fetch is accepted
    after one refetch; a storm of unknown kids does not refetch every time."""
    settings = Settings(auth_mode="jwt", jwt_jwks_url=jwks_url, jwt_audience=AUDIENCE, jwt_issuer=ISSUER)
    authenticator = auth.Authenticator(settings)
    fetches = []
    original = authenticator.jwks._refresh
    authenticator.jwks._refresh = lambda: (fetches.append(1), original())[1]
    token = jwt.encode(claims(), keys.rsa, "RS256", headers={"kid": "rsa-1"})
    assert authenticator.authenticate({"authorization": f"Bearer {token}"}).subject == "agent-runner"
    assert authenticator.authenticate({"authorization": f"Bearer {token}"}).subject == "agent-runner"  # cached
    assert len(fetches) == 1
    for n in range(5):
        stranger = jwt.encode(claims(n=n), keys.stranger, "RS256", headers={"kid": f"new-{n}"})
        with pytest.raises(auth.Unauthorized):
            authenticator.authenticate({"authorization": f"Bearer {stranger}"})
    assert len(fetches) == 1  # within JWKS_MIN_REFRESH_SECONDS of the first fetch: no refetch


def test_an_open_server_refuses_traffic_that_did_not_come_over_loopback(tmp_path):
    """uvicorn started by hand with --host 0.0.0.0 while HOST says 127.0.0.1: Front answers 503
    to any request whose local address is not loopback (health stays up)."""
    import asyncio

    from chalicelib.transports.asgi import create_app

    app = create_app(Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", allowed_hosts=["192.0.2.10:*"]))

    async def get(base_url, path):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url) as client:
            return await client.get(path)

    remote = asyncio.run(get("http://192.0.2.10:8765", "/api/list_projects"))
    assert remote.status_code == 503 and remote.json()["error"]["code"] == "unavailable"
    assert asyncio.run(get("http://192.0.2.10:8765", "/health")).status_code == 200


def test_a_jwks_fetch_waits_off_the_event_loop_once_and_backs_off_after_failing(tmp_path):
    """AUTH_MODE=jwt: a forged JWT naming an unknown kid makes the server fetch the key set. While
    that fetch hangs, the server answers others (it ran on the event loop: everything waited); a
    second forged JWT waits for the same fetch; after it failed, more forged JWTs refetch nothing
    for JWKS_MIN_REFRESH_SECONDS (they refetched at every request once the cache was stale)."""
    fetches, release = [], threading.Event()

    class Hanging(BaseHTTPRequestHandler):
        def do_GET(self):
            fetches.append(self.path)
            release.wait(60)
            self.send_error(500)

        def log_message(self, *args):
            pass

    jwks = ThreadingHTTPServer(("127.0.0.1", 0), Hanging)
    threading.Thread(target=jwks.serve_forever, daemon=True).start()
    env = dict(AUTH_MODE="jwt", JWT_JWKS_URL=f"http://127.0.0.1:{jwks.server_address[1]}/jwks", JWT_AUDIENCE=AUDIENCE,
               JWT_ISSUER=ISSUER, JWT_JWKS_TIMEOUT_SECONDS="60", JWT_JWKS_CACHE_SECONDS="1")
    part = lambda value: base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()  # noqa: E731
    forged = lambda n: f"Bearer {part({'alg': 'RS256', 'kid': f'made-up-{n}'})}.{part(claims())}.c2ln"  # noqa: E731
    try:
        with running_server(tmp_path / "db.sqlite", **env) as url, ThreadPoolExecutor(2) as pool:
            post = lambda n: httpx.post(f"{url}/api/health_check", headers={"Authorization": forged(n)}, timeout=90)  # noqa: E731
            first = pool.submit(post, 1)
            while not fetches:
                time.sleep(0.01)
            second = pool.submit(post, 2)
            assert httpx.get(f"{url}/health", timeout=30).status_code == 200
            assert httpx.get(f"{url}/ready", timeout=30).status_code == 200
            assert not first.done() and not second.done() and len(fetches) == 1  # the fetch still hangs, alone
            release.set()
            assert first.result().status_code == second.result().status_code == 503  # no keys could be fetched
            for n in range(3, 8):
                assert post(n).status_code == 503
            assert len(fetches) == 1
    finally:
        release.set()
        jwks.shutdown()


def jwt_settings(url: str, **changes) -> Settings:
    return Settings(auth_mode="jwt", jwt_jwks_url=url, jwt_audience=AUDIENCE, jwt_issuer=ISSUER, **changes)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_a_key_set_sent_a_byte_at_a_time_is_given_up_at_the_timeout(keys):
    """JWT_JWKS_TIMEOUT_SECONDS bounded each read, not the fetch: a key set sent a byte every
    0.2 s held every JWT request for minutes. Now the fetch has one deadline: no keys, 503."""
    stop = threading.Event()

    def trickle(handler):
        body = json.dumps(keys.jwks()).encode()
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        for byte in body:
            if stop.wait(0.2):
                return
            handler.wfile.write(bytes([byte]))
            handler.wfile.flush()

    authenticator = auth.Authenticator(jwt_settings("", jwt_jwks_timeout_seconds=1))
    token = jwt.encode(claims(), keys.rsa, "RS256", headers={"kid": "rsa-1"})
    with serving_jwks(trickle) as url, ThreadPoolExecutor(1) as pool:
        authenticator.jwks.url = url
        answer = pool.submit(authenticator.authenticate, bearer(token))
        try:
            with pytest.raises(auth.Unavailable):
                answer.result(timeout=10)  # 10 times the timeout (the whole set takes minutes)
        finally:
            stop.set()


def test_a_key_set_whose_headers_come_a_byte_at_a_time_is_given_up_at_the_timeout(keys, monkeypatch):
    """The deadline was checked between reads of the body only: a server sending its response
    headers a byte every 0.5 s (each read under the 1 s timeout) held the fetch, and every JWT
    request waiting on it, for as long as it went on. Now the whole fetch ends by the deadline
    (no keys: 503), the download given up runs alone (a refresh meanwhile starts no other), and
    once it has ended the next refresh fetches the keys."""
    stop, connections = threading.Event(), []
    listener = socket.create_server(("127.0.0.1", 0))

    def answer(conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                if not stop.is_set():  # the first request: its headers a byte at a time, until stop
                    conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                    while not stop.wait(0.5):
                        conn.sendall(b"a")
                    return
                body = json.dumps(keys.jwks()).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            connections.append(conn)
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setattr(auth, "JWKS_MIN_REFRESH_SECONDS", 0)  # every request may refetch
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/jwks.json"
    authenticator = auth.Authenticator(jwt_settings(url, jwt_jwks_timeout_seconds=1))
    token = bearer(jwt.encode(claims(), keys.rsa, "RS256", headers={"kid": "rsa-1"}))
    try:
        with ThreadPoolExecutor(1) as pool:
            try:
                with pytest.raises(auth.Unavailable):
                    pool.submit(authenticator.authenticate, token).result(timeout=5)  # 5 times the timeout (the old: until stop)
                assert authenticator.jwks.failed and len(connections) == 1
                with pytest.raises(auth.Unavailable):  # the download given up still runs: no second one
                    pool.submit(authenticator.authenticate, token).result(timeout=5)
                assert len(connections) == 1 and not authenticator.jwks.download.done()
            finally:
                stop.set()
        authenticator.jwks.download.exception(timeout=5)  # it ends once the server stops sending
        assert authenticator.authenticate(token).subject == "agent-runner" and len(connections) == 2
    finally:
        stop.set()
        listener.close()


def test_a_key_set_server_that_does_not_speak_http_is_unavailable(keys):
    """http.client's BadStatusLine is no OSError: it escaped the fetch (a 500), not a 503."""
    with answering(b"garbage\r\n\r\n") as url:
        authenticator = auth.Authenticator(jwt_settings(f"{url}/jwks.json"))
        with pytest.raises(auth.Unavailable):
            authenticator.authenticate(bearer(jwt.encode(claims(), keys.rsa, "RS256", headers={"kid": "rsa-1"})))


def test_key_set_entries_it_cannot_use_are_skipped_and_the_others_kept(keys, caplog, monkeypatch):
    """RFC 7517 §5: a JWK not understood is ignored. A kid or alg that is a list raised TypeError
    (a 500, then every token 401), an entry that is no object made the whole set unreadable (503)."""
    good = keys.jwks()["keys"]
    document = {"keys": ["x", 7, good[0] | {"kid": ["x"]}, good[0] | {"kid": "alg-list", "alg": ["RS256"]},
                        good[0] | {"kid": "broken", "n": "!"}, *good]}
    monkeypatch.setattr(auth, "JWKS_MIN_REFRESH_SECONDS", 0)  # every unknown kid refetches: the log says it once
    with serving_jwks(lambda handler: send_json(handler, document)) as url:
        authenticator = auth.Authenticator(jwt_settings(url))
        for kid, key, alg in (("rsa-1", keys.rsa, "RS256"), ("ec-1", keys.ec, "ES256")):
            assert authenticator.authenticate(bearer(jwt.encode(claims(), key, alg, headers={"kid": kid}))).subject == "agent-runner"
        for kid in ("alg-list", "broken", "made-up"):
            with pytest.raises(auth.Unauthorized, match="unknown signing key"):
                authenticator.authenticate(bearer(jwt.encode(claims(), keys.rsa, "RS256", headers={"kid": kid})))
    skipped = [record.getMessage() for record in caplog.records if "skipped" in record.getMessage()]
    assert len(skipped) == 1 and all(f"entry {n}" in skipped[0] for n in range(5)), skipped


def test_an_rsa_key_without_alg_serves_each_rsa_algorithm_allowed(keys):
    """"alg" is optional in a JWK (RFC 7517 §4.4): PyJWT takes such an RSA key for RS256, and
    PS256 or RS512 tokens it signed were refused ("not for this algorithm")."""
    rsa_key = RSAAlgorithm.to_jwk(keys.rsa.public_key(), as_dict=True) | {"kid": "rsa-1"}
    document = {"keys": [rsa_key, keys.jwks()["keys"][1]]}
    with serving_jwks(lambda handler: send_json(handler, document)) as url:
        authenticator = auth.Authenticator(jwt_settings(url, jwt_algorithms=["PS256", "RS512", "ES256"]))
        for alg in ("PS256", "RS512"):
            token = jwt.encode(claims(alg=alg), keys.rsa, alg, headers={"kid": "rsa-1"})
            assert authenticator.authenticate(bearer(token)).subject == "agent-runner"
        with pytest.raises(auth.Unauthorized, match="not accepted"):  # an RSA algorithm not allowed
            authenticator.authenticate(bearer(jwt.encode(claims(), keys.rsa, "RS256", headers={"kid": "rsa-1"})))
        with pytest.raises(auth.Unauthorized, match="not for this algorithm"):  # an RSA key, not an EC one
            authenticator.authenticate(bearer(jwt.encode(claims(), keys.ec, "ES256", headers={"kid": "rsa-1"})))
        with pytest.raises(auth.Unauthorized, match="not for this algorithm"):
            authenticator.authenticate(bearer(jwt.encode(claims(), keys.rsa, "PS256", headers={"kid": "ec-1"})))


@pytest.mark.parametrize("algorithms, said", [
    ("RS265", "'RS265' is not a JWT signing algorithm"),
    ("HS256", "'HS256' is an HMAC algorithm"),
    ("RS256,hs512", "'hs512' is an HMAC algorithm"),  # (the HS check was case-sensitive)
    ("none", "'none' signs nothing"),
])
def test_jwt_algorithms_no_token_can_be_verified_with_stop_start_up(algorithms, said):
    """The start-up check refused only none and HS* (case-sensitively): a typo, or hs256, started the
    server, and then every JWT was refused. Each such name now stops it, with the names it takes."""
    with pytest.raises(ValidationError) as refused:
        jwt_settings("u", jwt_algorithms=algorithms)
    variable, problem = invalid_setting(refused.value)
    assert variable == "JWT_ALGORITHMS" and problem.startswith(said) and ", ".join(JWT_SIGNING_ALGORITHMS) in problem


def test_every_algorithm_jwt_algorithms_takes_verifies_its_tokens_in_any_case_and_separator():
    """JWT_ALGORITHMS=rs256 (or "RS256 ES256", space-separated as the projects claim may be) started
    the server, and then every token was refused ("algorithm 'RS256' is not accepted"): each name is
    now read whatever its case, spaces separate too, and each one the setting takes is one PyJWT verifies."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = {"RS": rsa_key, "PS": rsa_key, "ES256": ec.generate_private_key(ec.SECP256R1()),
               "ES256K": ec.generate_private_key(ec.SECP256K1()), "ES384": ec.generate_private_key(ec.SECP384R1()),
               "ES512": ec.generate_private_key(ec.SECP521R1()), "EdDSA": ed25519.Ed25519PrivateKey.generate()}
    key_of = lambda alg: private.get(alg) or private[alg[:2]]  # noqa: E731
    jwk_of = {"RS": RSAAlgorithm, "PS": RSAAlgorithm, "ES": ECAlgorithm, "Ed": OKPAlgorithm}
    document = {"keys": [jwk_of[alg[:2]].to_jwk(key_of(alg).public_key(), as_dict=True) | {"kid": alg, "alg": alg}
                         for alg in JWT_SIGNING_ALGORITHMS]}
    given = " ".join(alg.lower() for alg in JWT_SIGNING_ALGORITHMS[:6]) + ", " + ",".join(JWT_SIGNING_ALGORITHMS[6:]).upper()
    with serving_jwks(lambda handler: send_json(handler, document)) as url:
        authenticator = auth.Authenticator(jwt_settings(url, jwt_algorithms=given))
        assert authenticator.settings.jwt_algorithms == list(JWT_SIGNING_ALGORITHMS)
        for alg in JWT_SIGNING_ALGORITHMS:
            token = jwt.encode(claims(), key_of(alg), alg, headers={"kid": alg})
            assert authenticator.authenticate(bearer(token)).subject == "agent-runner", alg


def test_a_jwk_member_given_as_null_is_taken_as_absent(keys):
    """A JWK's "use": null dropped the key (unlogged) and "alg": null made an RSA key serve RS256
    only, where the key without them serves every RSA algorithm allowed, and a PS256 token was refused."""
    rsa_key = RSAAlgorithm.to_jwk(keys.rsa.public_key(), as_dict=True)
    ec_key = ECAlgorithm.to_jwk(keys.ec.public_key(), as_dict=True)
    document = {"keys": [rsa_key | {"kid": "alg-null", "alg": None}, rsa_key | {"kid": "use-null", "use": None},
                         ec_key | {"kid": "both-null", "alg": None, "use": None}]}
    with serving_jwks(lambda handler: send_json(handler, document)) as url:
        authenticator = auth.Authenticator(jwt_settings(url, jwt_algorithms=["PS256", "RS256", "ES256"]))
        for kid, key, alg in (("alg-null", keys.rsa, "PS256"), ("use-null", keys.rsa, "PS256"), ("use-null", keys.rsa, "RS256"),
                              ("both-null", keys.ec, "ES256")):
            token = jwt.encode(claims(), key, alg, headers={"kid": kid})
            assert authenticator.authenticate(bearer(token)).subject == "agent-runner", (kid, alg)
        assert authenticator.jwks.skipped == []


def _signed_in(base_url: str, token: str, before_post=lambda: None) -> httpx.Response:
    """The web UI's sign-in form sent with `token`: 303 signed in, 401 refused."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/login").text).group(1)
        before_post()
        return client.post("/ui/login", data={"csrf": csrf, "token": token, "next": "/"})


def test_the_web_ui_sign_in_uses_the_apis_keys_and_fetches_off_its_thread(tmp_path, keys, monkeypatch):
    """The sign-in had an Authenticator (and key set) of its own, fetched on the page's thread:
    with a refresh hanging, a sign-in with a known key waited it out (the API's answered at once),
    and sign-ins naming made-up kids took every thread of the pool (/ready and the pages waited)."""
    hang, refreshing, release, fetches = threading.Event(), threading.Event(), threading.Event(), []

    def respond(handler):
        fetches.append(handler.path)
        if hang.is_set():
            refreshing.set()
            release.wait(60)
            handler.send_error(500)
        else:
            send_json(handler, keys.jwks())

    monkeypatch.setattr(auth, "JWKS_MIN_REFRESH_SECONDS", 1)  # the refresh below comes a second after the first fetch
    sign = lambda n, kid="rsa-1", key=keys.rsa: jwt.encode(claims(n=n), key, "RS256", headers={"kid": kid})  # noqa: E731
    with serving_jwks(respond) as jwks:
        settings = jwt_settings(jwks, database_url=f"sqlite:///{tmp_path}/db.sqlite", archive_dir=tmp_path / "archive",
                                attachments_dir=tmp_path / "attachments", archive_enabled=False, jwt_jwks_timeout_seconds=60,
                                jwt_jwks_cache_seconds=1, auth_failures_per_minute=0)  # 36 refused sign-ins below
        db.migrate(settings)
        from chalicelib.transports.asgi import create_app

        storm, sent = [], threading.Semaphore(0)
        with serving_in_process(create_app(settings)) as url, ThreadPoolExecutor(40) as pool:
            api = lambda token: httpx.post(f"{url}/api/health_check", headers=bearer(token), json={}, timeout=30)  # noqa: E731
            try:
                assert api(sign(0)).status_code == 200 and len(fetches) == 1
                hang.set()
                time.sleep(1.1)  # the keys are stale: the next token not seen yet starts a refresh, which hangs
                assert api(sign(1)).status_code == 200  # the known key meanwhile
                assert refreshing.wait(30) and len(fetches) == 2
                assert _signed_in(url, sign(2)).status_code == 303  # so here, and no fetch of its own
                # Sign-ins naming made-up kids (no credential needed) wait for the refresh, off the pool's threads.
                storm = [pool.submit(_signed_in, url, sign(n, f"made-up-{n}", keys.stranger), sent.release) for n in range(36)]
                for _ in storm:
                    sent.acquire(timeout=30)
                time.sleep(0.5)  # (their forms on their way)
                assert httpx.get(f"{url}/ready", timeout=30).status_code == 200
                assert httpx.get(f"{url}/ui/login", timeout=30).status_code == 200
                assert len(fetches) == 2 and not any(answer.done() for answer in storm)  # still waiting for the refresh
            finally:
                release.set()
            assert {answer.result().status_code for answer in storm} == {401}  # after it failed: no such key
            assert len(fetches) == 2


def test_the_web_ui_on_chalice_signs_in_with_the_apis_keys(tmp_path, keys, app_module):
    """On Chalice too the sign-in had a key set of its own: its first sign-in fetched again, and so
    did made-up kids, on a refetch budget of their own."""
    fetches = []

    def respond(handler):
        fetches.append(handler.path)
        send_json(handler, keys.jwks())

    with serving_jwks(respond) as url:
        settings = chalice_settings(tmp_path, auth_mode="jwt", jwt_jwks_url=url, jwt_audience=AUDIENCE, jwt_issuer=ISSUER)
        with Client(app_module.create_app(settings), project_dir=str(ROOT)) as client:
            token = jwt.encode(claims(), keys.rsa, "RS256", headers={"kid": "rsa-1"})
            assert client.http.post("/api/health_check", headers=MCP_HEADERS | bearer(token), body=b"{}").status_code == 200
            login = client.http.get("/ui/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', login.body.decode()).group(1)
            form = {"content-type": "application/x-www-form-urlencoded", "cookie": login.headers["Set-Cookie"].split(";")[0]}
            made_up = jwt.encode(claims(), keys.stranger, "RS256", headers={"kid": "made-up"})
            for credential, status in ((made_up, 401), (jwt.encode(claims(n=1), keys.rsa, "RS256", headers={"kid": "rsa-1"}), 303)):
                answer = client.http.post("/ui/login", headers=form, body=f"csrf={csrf}&token={credential}&next=/")
                assert answer.status_code == status
    assert len(fetches) == 1  # the API's: the keys it has, and its refetch budget (spent within 10 s)
