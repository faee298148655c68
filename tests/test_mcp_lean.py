"""The lean MCP path answers exactly as the SDK does.

Two real servers share one database: one with the lean path, one with MCP_LEAN_PATH=false
(every request through the mcp SDK). The same requests go to both; status codes and
parsed JSON bodies must be equal.
"""

import asyncio
import threading

import httpx
import pytest

from chalicelib.transports.mcp_app import OFF_LOOP_BYTES, beside_the_loop_if_large

from .servers import running_server

JSON = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
INIT = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    database = tmp_path_factory.mktemp("lean") / "agent_mail.db"
    with running_server(database) as lean, running_server(database, MCP_LEAN_PATH="false") as sdk:
        with httpx.Client(base_url=lean) as client:
            client.post("/api/ensure_project", json={"human_key": "/lean"})
            for name in ("BlueLake", "GreenCastle"):
                client.post("/api/register_agent", json={"project_key": "lean", "program": "p", "model": "m", "name": name})
            client.post("/api/set_contact_policy", json={"project_key": "lean", "agent_name": "GreenCastle", "policy": "open"})
            sent = client.post("/api/send_message", json={"project_key": "lean", "sender_name": "BlueLake",
                                                           "to": ["GreenCastle"], "subject": "Hi", "body_md": "é ✓ \"q\""})
            client.post("/api/mark_message_read", json={"project_key": "lean", "agent_name": "GreenCastle",
                                                         "message_id": sent.json()["message"]["id"]})
        yield lean, sdk, sent.json()["message"]["id"]


def rpc(method, params=None, id=1):
    body = {"jsonrpc": "2.0", "id": id, "method": method}
    return body if params is None else body | {"params": params}


def tool_call(name, arguments, id=7):
    return rpc("tools/call", {"name": name, "arguments": arguments}, id)


SAME_REQUESTS = [
    # (json body or raw bytes, extra headers)
    (rpc("initialize", INIT), {}),
    (rpc("initialize", INIT | {"protocolVersion": "2024-11-05"}), {}),
    (rpc("initialize", INIT | {"protocolVersion": "1999-01-01"}), {}),
    (rpc("initialize", {"protocolVersion": "2025-06-18"}), {}),
    (rpc("ping", id="str-id"), {}),
    (rpc("tools/list"), {}),
    (rpc("tools/list"), {"mcp-protocol-version": "2025-06-18"}),
    (rpc("tools/list"), {"mcp-protocol-version": "2024-11-05"}),
    (tool_call("list_projects", {}), {}),
    (tool_call("list_agents", {"project_key": "lean"}), {"mcp-protocol-version": "2025-11-25"}),
    (tool_call("fetch_inbox", {"project_key": "lean", "agent_name": "GreenCastle", "include_bodies": True}), {}),
    (tool_call("fetch_inbox", {"project_key": "lean", "agent_name": "Ghost"}), {}),
    (tool_call("fetch_inbox", {"project_key": "lean", "agent_name": "bad name"}), {}),
    (tool_call("fetch_inbox", {"project_key": "lean"}), {}),
    (tool_call("search_messages", {"project_key": "lean", "query": '"open'}), {}),
    (tool_call("ensure_project", {"human_key": "/lean"}), {}),
    (rpc("tools/call", {"name": "list_projects"}), {}),  # no arguments at all
    (rpc("tools/call", {"name": "no_such_tool", "arguments": {}}), {}),
    (rpc("tools/call", {"name": "list_projects", "arguments": "nope"}), {}),
    (rpc("tools/call", {"name": ["list_projects"], "arguments": {}}), {}),  # a name that is not a string
    (rpc("tools/call", {"name": {"a": 1}}), {}),
    (rpc("tools/call", {"name": 5, "arguments": {}}), {}),
    (rpc("tools/call", {"name": None}), {}),
    (rpc("tools/call", {"arguments": {}}), {}),  # no name
    (rpc("no/such/method"), {}),
    ({"jsonrpc": "2.0", "method": "notifications/initialized"}, {}),
    ([rpc("ping", id=1), rpc("ping", id=2)], {}),
    ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, {}),
    (b"{not json", {}),
    (rpc("ping"), {"accept": "application/json"}),
    (rpc("ping"), {"content-type": "text/plain"}),
    (rpc("ping"), {"content-type": "Application/JSON"}),  # media types are case-insensitive
    (rpc("ping"), {"content-type": "APPLICATION/JSON; Charset=UTF-8"}),
    (rpc("ping"), {"host": "evil.example:80"}),
    (rpc("ping"), {"origin": "http://evil.example"}),
    (rpc("ping"), {"mcp-protocol-version": "2031-01-01"}),
]


@pytest.mark.parametrize(("body", "headers"), SAME_REQUESTS, ids=lambda value: str(value)[:60])
def test_lean_path_answers_like_the_sdk(servers, body, headers):
    lean, sdk, _ = servers
    answers = []
    for base in (lean, sdk):
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        answers.append(parsed(httpx.post(f"{base}/mcp", headers=JSON | headers, **kwargs)))
    assert answers[0] == answers[1]


def parsed(response: httpx.Response):
    is_json = response.headers.get("content-type", "").startswith("application/json")
    return response.status_code, response.json() if is_json and response.content else response.text


def test_idempotent_write_tools_match_too(servers):
    lean, sdk, message_id = servers
    request = tool_call("mark_message_read", {"project_key": "lean", "agent_name": "GreenCastle", "message_id": message_id})
    lean_answer, sdk_answer = (httpx.post(f"{base}/mcp", headers=JSON, json=request).json() for base in (lean, sdk))
    assert lean_answer == sdk_answer and lean_answer["result"]["isError"] is False


def test_a_json_content_type_in_capitals_is_accepted_on_both_paths(servers):
    """Media types are case-insensitive: the SDK compared "application/json" exactly (415)."""
    lean, sdk, _ = servers
    headers = JSON | {"content-type": "Application/JSON"}
    for base in (lean, sdk):
        assert httpx.post(f"{base}/mcp", headers=headers, json=rpc("ping")).json() == {"jsonrpc": "2.0", "id": 1, "result": {}}
        notification = {"jsonrpc": "2.0", "method": "notifications/initialized"}  # the SDK answers it on both
        assert httpx.post(f"{base}/mcp", headers=headers, json=notification).status_code == 202


def test_the_lean_path_really_is_taken(tmp_path):
    """Guard against comparing the SDK with itself: plain requests never reach the SDK,
    unusual ones always do."""
    from chalicelib.transports import asgi
    from chalicelib.config import Settings

    app = asgi.create_app(Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite"))
    handed_over = []

    async def sdk_stand_in(scope, receive, send):
        handed_over.append(scope["path"])
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    app.mcp.lean.fallback = sdk_stand_in

    async def post(body):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as client:
            return (await client.post("/mcp", headers=JSON, json=body)).status_code

    for request in (rpc("ping"), rpc("tools/list"), tool_call("list_projects", {}), rpc("initialize", INIT)):
        assert asyncio.run(post(request)) == 200
    assert handed_over == []
    assert asyncio.run(post([rpc("ping")])) == 418
    assert handed_over == ["/mcp"]


ODD_IDS = [None, 1.5, 1.0, True, {"a": 1}, [1]]


def test_a_request_whose_id_is_no_string_nor_integer_is_refused_on_both_paths(servers):
    """The SDK read {"id": null|1.5|true|{}|[], "method": ...} as a notification: 202, no answer,
    the method never ran. A message with an id is a request: JSON-RPC's Invalid Request (id null)."""
    lean, sdk, _ = servers
    for base in (lean, sdk):
        for odd in ODD_IDS:
            response = httpx.post(f"{base}/mcp", headers=JSON, json={"jsonrpc": "2.0", "id": odd, "method": "tools/list"})
            assert response.status_code == 400, (base, odd, response.text)
            answer = response.json()
            assert answer["id"] is None and answer["error"]["code"] == -32600
            data = answer["error"]["data"]["error"]
            assert data["code"] == "bad_request" and data["message"] == answer["error"]["message"]
            assert "id must be a string or an integer" in data["message"] and "a string or an integer" in data["hint"]
        # The same JSON with its key spelt "\u0069d": the SDK took it for a notification (202, no answer)
        escaped = httpx.post(f"{base}/mcp", headers=JSON, content=b'{"jsonrpc":"2.0","\\u0069d":null,"method":"ping"}')
        assert escaped.status_code == 400 and "not null" in escaped.json()["error"]["message"], (base, escaped.text)
        notification = httpx.post(f"{base}/mcp", headers=JSON, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert notification.status_code == 202  # no id: a notification, as before


def test_an_integer_id_past_64_bits_is_answered_on_both_paths(servers):
    """orjson reads such an integer as a float: it was refused as "a number with a fraction or
    exponent", which it has not; JSON-RPC allows it, and stdio answered it (tests/test_mcp_errors.py)."""
    lean, sdk, _ = servers
    for base in (lean, sdk):
        for big in (b"18446744073709551616", b"-9223372036854775809", b"1" + b"0" * 40):
            response = httpx.post(f"{base}/mcp", headers=JSON, content=b'{"jsonrpc":"2.0","id":%s,"method":"ping"}' % big)
            assert response.status_code == 200 and response.json() == {"jsonrpc": "2.0", "id": int(big), "result": {}}, (
                base, big, response.text)
        for fraction in (b"1e20", b"18446744073709551616.0"):  # a real fraction or exponent still is one
            response = httpx.post(f"{base}/mcp", headers=JSON, content=b'{"jsonrpc":"2.0","id":%s,"method":"ping"}' % fraction)
            assert response.status_code == 400 and "fraction or exponent" in response.json()["error"]["message"]


def test_an_unknown_method_with_a_huge_name_keeps_the_error_shape_on_both_paths(servers):
    """Past 64 KiB the SDK's answer (its data the whole name echoed) was left as it was: data a
    string, the answer as large as the request. Its data is the error body, the name cut."""
    lean, sdk, _ = servers
    for base in (lean, sdk):
        response = httpx.post(f"{base}/mcp", headers=JSON, json=rpc("m" * 70_000, id="big"))
        assert response.status_code == 200 and len(response.content) < 2000, (base, len(response.content))
        answer = response.json()
        assert answer["id"] == "big" and answer["error"]["code"] == -32601
        data = answer["error"]["data"]["error"]
        assert data["code"] == "not_found" and f"'{'m' * 100}…'" in data["hint"]


def test_a_method_of_2026_07_28_only_sent_under_a_2025_version_says_so(servers):
    """server/discover under 2025-11-25: its hint said it was answered "under earlier MCP protocol
    versions" (it is answered under the later one only), and the list of methods served gave it as
    answered under any version."""
    from mcp_types.methods import CLIENT_REQUESTS

    from chalicelib.transports.mcp_errors import EARLIER_ONLY, LATER_ONLY

    versions = {method: {version for name, version in CLIENT_REQUESTS if name == method} for method, _ in CLIENT_REQUESTS}
    assert all(versions[method] == {"2026-07-28"} for method in LATER_ONLY)
    assert all("2026-07-28" not in versions[method] for method in EARLIER_ONLY)
    lean, sdk, _ = servers
    for base in (lean, sdk):
        headers = JSON | {"mcp-protocol-version": "2025-11-25"}
        for method in LATER_ONLY:
            hint = httpx.post(f"{base}/mcp", headers=headers, json=rpc(method, {})).json()["error"]["data"]["error"]["hint"]
            assert "only under MCP protocol 2026-07-28" in hint and "earlier" not in hint, hint
        hint = httpx.post(f"{base}/mcp", headers=headers, json=rpc("no/such")).json()["error"]["data"]["error"]["hint"]
        assert "initialize, ping under protocols up to 2025-11-25; server/discover, subscriptions/listen under 2026-07-28 only" in hint


def test_an_unknown_protocol_version_header_is_refused_as_such_on_both_paths(servers):
    """MCP-Protocol-Version 2099-01-01 (or empty) was refused 400 with "params._meta must be an
    object..." and a hint about protocol 2026-07-28, which the request never named."""
    lean, sdk, _ = servers
    for base in (lean, sdk):
        for value in ("2099-01-01", ""):
            response = httpx.post(f"{base}/mcp", headers=JSON | {"mcp-protocol-version": value}, json=rpc("ping"))
            assert response.status_code == 400
            error = response.json()["error"]
            assert error["code"] == -32600 and f"unsupported MCP-Protocol-Version {value!r}" in error["message"]
            data = error["data"]["error"]
            assert data["code"] == "bad_request" and data["message"] == error["message"]
            assert "_meta" not in data["hint"] and "version initialize negotiated" in data["hint"]


def test_a_batch_is_refused_in_one_line_on_both_paths(servers):
    """The SDK's refusal of a batch (a JSON array) had pydantic's dump as its message: "Validation
    error: 4 validation errors for union[...]", a dozen lines and a URL. One line, as stdio's."""
    lean, sdk, _ = servers
    for base in (lean, sdk):
        response = httpx.post(f"{base}/mcp", headers=JSON | {"mcp-protocol-version": "2025-03-26"},
                              json=[rpc("ping", id=1), rpc("tools/list", id=2)])
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == -32600 and "\n" not in error["message"] and "pydantic" not in error["message"]
        assert "not a JSON-RPC 2.0 message" in error["message"] and error["data"]["error"]["message"] == error["message"]
        assert "not an array" in error["data"]["error"]["hint"]


def test_a_large_answer_becomes_mcp_content_beside_the_event_loop():
    """get_attachment's content (up to 4 MiB) is decoded and measured for tens of milliseconds:
    not on the loop every other request waits on."""
    where = []

    def make():
        where.append(threading.current_thread())

    asyncio.run(beside_the_loop_if_large(b"x" * (OFF_LOOP_BYTES + 1), make))
    asyncio.run(beside_the_loop_if_large(b"x" * 100, make))
    assert where == [where[0], threading.main_thread()] and where[0] is not threading.main_thread()
