"""One error shape over MCP (chalicelib/transports/mcp_errors.py): a tool error's text, and the
`data` of every JSON-RPC error we answer (a failed resource read, a refusal before the MCP
app), are the same `{"error": {"code", "message", "hint"}}` body REST answers with. Seen here
through the official MCP client: over HTTP (uvicorn) and over stdio; tests/test_lambda.py holds
the Lambda entry points to the local server's answers."""

import asyncio
import json
import os
import subprocess
import sys
import threading

import httpx
import pytest
from mcp import Client, MCPError
from mcp.client.stdio import StdioServerParameters

from .aws_events import MCP_HEADERS, tool_call
from .servers import ROOT, running_server
from .test_stdio_transport import initialize_line
from .test_transport_security import PROTOCOL_ERRORS, assert_protocol_error

MISSING_PROJECT = "resource://project/no-such-project"


def error_body(value) -> dict:
    """The error object of an error body, checked to be in the one shape."""
    assert isinstance(value, dict) and set(value) == {"error"}, value
    assert {"code", "message", "hint"} <= set(value["error"]), value
    return value["error"]


async def errors_of_each_kind(client: Client) -> dict[str, tuple[int | None, dict]]:
    """(JSON-RPC code, error object) of a tool error, a resource error, a URI no resource
    matches (the SDK's own error had only {"uri": ...} as data) and a refusal (a body over
    MAX_BODY_BYTES); a tool error has no JSON-RPC code."""
    tool = await client.call_tool("get_project", {"project_key": "no-such-project"})
    assert tool.is_error
    with pytest.raises(MCPError) as resource:
        await client.read_resource(MISSING_PROJECT)
    found = {"tool": (None, error_body(json.loads(tool.content[0].text))),
             "resource": (resource.value.code, error_body(resource.value.data))}
    with pytest.raises(MCPError) as unknown:
        await client.read_resource("resource://inbx/BlueLake?project=shop&token=amt_not-to-be-repeated")
    found["unknown resource"] = (unknown.value.code, error_body(unknown.value.data))
    for anywhere in ("resource://inbx/BlueLake&token=amt_not-to-be-repeated", "resource://amt_not-to-be-repeated/inbox"):
        with pytest.raises(MCPError) as unknown:  # a mistyped ? and a token in the path: never repeated either
            await client.read_resource(anywhere)
        assert "amt_not-to-be-repeated" not in json.dumps(error_body(unknown.value.data)) + unknown.value.message
    with pytest.raises(MCPError) as refused:
        await client.call_tool("get_project", {"project_key": "x" * 4000})
    found["refusal"] = (refused.value.code, error_body(refused.value.data))
    return found


async def read_missing(client: Client) -> MCPError:
    async with client:
        with pytest.raises(MCPError) as refused:
            await client.read_resource(MISSING_PROJECT)
        return refused.value


def test_tool_resource_and_refusal_errors_carry_one_body_over_http_and_stdio(tmp_path):
    with running_server(tmp_path / "db.sqlite", MAX_BODY_BYTES="2000") as url:
        async def session():
            async with Client(f"{url}/mcp", mode="legacy") as client:
                return await errors_of_each_kind(client)

        errors = asyncio.run(session())
    assert errors["tool"][1]["code"] == errors["resource"][1]["code"] == "not_found"
    assert errors["tool"][1]["message"] == errors["resource"][1]["message"]
    assert errors["resource"][0] == -32602  # invalid params: the caller's to fix
    assert errors["unknown resource"][0] == -32602 and errors["unknown resource"][1]["code"] == "not_found"
    assert "Did you mean 'inbox'?" in errors["unknown resource"][1]["message"]
    assert "amt_not-to-be-repeated" not in json.dumps(errors["unknown resource"])  # a token is never echoed
    assert "resources/templates/list" in errors["unknown resource"][1]["hint"]
    assert errors["refusal"][0] == -32000 and errors["refusal"][1]["code"] == "payload_too_large"
    # stdio serves the same MCP server (no refusals before it: no credentials, no HTTP limits)
    env = {"DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive"), "LOG_LEVEL": "WARNING"}
    # Started in this checkout (the agent-mail script would import the installed one).
    server = StdioServerParameters(command=sys.executable, args=["-m", "chalicelib", "stdio"], env=env, cwd=str(ROOT))
    stdio = asyncio.run(read_missing(Client(server, mode="legacy")))
    assert (stdio.code, error_body(stdio.data)) == errors["resource"]


def test_the_sdks_protocol_errors_carry_one_body_over_http_and_stdio(tmp_path):
    """An unknown method, params that do not fit: the SDK answers them itself, with its own data
    (the method's name, or ""). Over stdio as over HTTP they carry this server's body and hint,
    the same answer for the same request; a tool error (a result) passes as it was."""
    requests = [{**request, "id": n} for n, (request, *_) in enumerate(PROTOCOL_ERRORS, start=2)]
    requests.append(tool_call("get_project", {"project_key": "no-such-project"}, id=len(requests) + 2))
    with running_server(tmp_path / "db.sqlite") as url:
        over_http = [httpx.post(f"{url}/mcp", headers=MCP_HEADERS, json=request).json() for request in requests]
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive"),
           "ATTACHMENTS_DIR": str(tmp_path / "attachments"), "LOG_LEVEL": "WARNING"}
    lines = initialize_line() + b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n' + b"".join(
        json.dumps(request).encode() + b"\n" for request in requests)
    done = subprocess.run([sys.executable, "-m", "chalicelib", "stdio"], input=lines, capture_output=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    over_stdio = {answer["id"]: answer for answer in map(json.loads, done.stdout.splitlines())}
    for answer, (_, rpc_code, code, hints) in zip(over_http, PROTOCOL_ERRORS):
        assert over_stdio[answer["id"]] == answer
        assert_protocol_error(over_stdio[answer["id"]]["error"], rpc_code, code, hints)
    tool_error = over_http[-1]
    assert tool_error["result"]["isError"] and over_stdio[tool_error["id"]] == tool_error


def lines_within(stream, count: int, seconds: float) -> list[bytes]:
    """Up to `count` lines of `stream`, those that came within `seconds`: a missing answer fails
    the test instead of hanging it (the reading thread ends when the process does)."""
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(stream.readline() for _ in range(count)), daemon=True)
    reader.start()
    reader.join(seconds)
    return list(lines)


def test_a_line_that_is_no_json_rpc_message_gets_the_error_http_gives_and_the_session_goes_on(tmp_path):
    """`{` (not JSON), `[]` and a message without a method (no JSON-RPC message): the SDK's stdio
    reader only logged them, never answered, so the client waited for ever. Each now gets an error
    (id null) with the code and hint HTTP refuses the same body with; a blank line is skipped."""
    bodies = [b"{", b"[]", b'{"jsonrpc": "2.0", "id": 3}']
    with running_server(tmp_path / "db.sqlite") as url:
        over_http = [httpx.post(f"{url}/mcp", headers=MCP_HEADERS, content=body).json()["error"] for body in bodies]
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive"),
           "ATTACHMENTS_DIR": str(tmp_path / "attachments"), "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "chalicelib", "stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    try:
        server.stdin.write(initialize_line() + b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n\n'
                           + b"".join(body + b"\n" for body in bodies) + b'{"jsonrpc":"2.0","id":4,"method":"tools/list"}\n')
        server.stdin.flush()  # stdin stays open, as a client's does while it waits for answers
        answers = [json.loads(line) for line in lines_within(server.stdout, 5, 60)]
    finally:
        server.kill()
        server.wait()
    assert [answer["id"] for answer in answers] == [1, None, None, None, 4], answers
    assert [answer["error"]["code"] for answer in answers[1:4]] == [-32700, -32600, -32600]
    assert [error["code"] for error in over_http] == [-32700, -32600, -32600]  # HTTP's codes as well
    for answer, http_error in zip(answers[1:4], over_http):
        data = error_body(answer["error"]["data"])
        assert data["message"] == answer["error"]["message"]
        assert (data["code"], data["hint"]) == (http_error["data"]["error"]["code"], http_error["data"]["error"]["hint"])
    assert "valid JSON" in answers[1]["error"]["data"]["error"]["hint"]
    assert "one JSON object" in answers[2]["error"]["data"]["error"]["hint"]
    assert answers[4]["result"]["tools"]


def test_a_request_whose_id_is_no_string_nor_integer_gets_invalid_request_over_stdio(tmp_path):
    """The SDK read such a line as a notification: no answer, and a client waiting for it waited
    for ever. It gets the Invalid Request (id null) HTTP refuses it with; the session goes on."""
    odd_ids = [None, 1.5, True, {"a": 1}, [1]]
    with running_server(tmp_path / "db.sqlite") as url:
        over_http = httpx.post(f"{url}/mcp", headers=MCP_HEADERS, json={"jsonrpc": "2.0", "id": None, "method": "ping"})
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive"),
           "ATTACHMENTS_DIR": str(tmp_path / "attachments"), "LOG_LEVEL": "WARNING"}
    lines = initialize_line() + b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n' + b"".join(
        json.dumps({"jsonrpc": "2.0", "id": odd, "method": "tools/list"}).encode() + b"\n" for odd in odd_ids
    ) + b'{"jsonrpc":"2.0","\\u0069d":null,"method":"ping"}\n'  # the same JSON as id null: it went unanswered
    lines += b'{"jsonrpc":"2.0","id":9,"method":"ping"}\n' + b'{"jsonrpc":"2.0","id":18446744073709551616,"method":"ping"}\n'
    done = subprocess.run([sys.executable, "-m", "chalicelib", "stdio"], input=lines, capture_output=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [answer["id"] for answer in answers[:-2]] == [1, *[None] * (len(odd_ids) + 1)], answers
    assert sorted(answer["id"] for answer in answers[-2:]) == [9, 2**64], answers
    for answer in answers[1:-2]:
        assert answer["error"]["code"] == -32600 and "id must be a string or an integer" in answer["error"]["message"]
        assert error_body(answer["error"]["data"])["code"] == "bad_request"
    assert answers[1]["error"]["data"]["error"]["hint"] == over_http.json()["error"]["data"]["error"]["hint"]
    assert answers[-2]["result"] == answers[-1]["result"] == {}  # an integer past 64 bits is one (as over HTTP: test_mcp_lean.py)


def test_an_unknown_method_with_a_huge_name_keeps_the_error_shape_over_stdio(tmp_path):
    """The SDK echoes an unknown method's name as data: past 64 KiB that answer was written as it
    was (data a string, a line as large as the request). Now as over HTTP: the body, the name cut."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive"),
           "ATTACHMENTS_DIR": str(tmp_path / "attachments"), "LOG_LEVEL": "WARNING"}
    lines = initialize_line() + b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n' + json.dumps(
        {"jsonrpc": "2.0", "id": 2, "method": "m" * 70_000}).encode() + b"\n"
    done = subprocess.run([sys.executable, "-m", "chalicelib", "stdio"], input=lines, capture_output=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["id"] == 2 and answer["error"]["code"] == -32601 and len(done.stdout) < 10_000
    data = error_body(answer["error"]["data"])
    assert data["code"] == "not_found" and f"'{'m' * 100}…'" in data["hint"]


def test_a_request_before_initialize_over_stdio_says_to_initialize_first(tmp_path):
    """The SDK refuses a request before initialize with -32602 "Invalid request parameters": its
    hint said the params did not fit the method. After initialize the session works."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive"),
           "ATTACHMENTS_DIR": str(tmp_path / "attachments"), "LOG_LEVEL": "WARNING"}
    server = subprocess.Popen([sys.executable, "-m", "chalicelib", "stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    try:
        server.stdin.write(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}\n')
        server.stdin.flush()
        [early] = [json.loads(line) for line in lines_within(server.stdout, 1, 60)]
        server.stdin.write(initialize_line(2) + b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n{"jsonrpc":"2.0","id":3,"method":"tools/list"}\n')
        server.stdin.flush()
        later = [json.loads(line) for line in lines_within(server.stdout, 2, 60)]
    finally:
        server.kill()
        server.wait()
    assert early["id"] == 1 and early["error"]["code"] == -32602
    data = error_body(early["error"]["data"])
    assert "not initialized" in early["error"]["message"] and data["message"] == early["error"]["message"]
    assert "Send initialize first" in data["hint"]
    assert [answer["id"] for answer in later] == [2, 3] and later[1]["result"]["tools"]


def stdio_process(tmp_path, **env: str) -> subprocess.Popen:
    """`python -m chalicelib stdio` on tmp_path's database, its stdin and stdout pipes (stderr in tmp_path/stderr.log)."""
    environ = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive"),
               "ATTACHMENTS_DIR": str(tmp_path / "attachments"), "LOG_LEVEL": "WARNING", **env}
    with open(tmp_path / "stderr.log", "wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "chalicelib", "stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr, cwd=ROOT, env=environ)


def exchange(server: subprocess.Popen, lines: bytes, answers: int) -> list[dict]:
    """Writes the lines (stdin stays open, as a client's does) and reads the answers that come within 60 s."""
    server.stdin.write(lines)
    server.stdin.flush()
    return [json.loads(line) for line in lines_within(server.stdout, answers, 60)]


def ended(server: subprocess.Popen, tmp_path) -> str:
    """Closes stdin, waits for the process to exit 0; its stderr."""
    server.stdin.close()
    assert server.wait(60) == 0
    return (tmp_path / "stderr.log").read_text()


INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'


@pytest.mark.parametrize("first, code", [
    (b"not json", -32700),
    (b"[" * 5000, -32700),  # json's RecursionError ended the process (quick_initialize)
    (b'{"jsonrpc":"2.0","id":null,"method":"ping"}', -32600),
    (b'{"jsonrpc":"2.0","\\u0069d":null,"method":"ping"}', -32600),  # the same JSON: never answered
], ids=["not-json", "nested", "null-id", "escaped-null-id"])
def test_a_malformed_line_before_initialize_is_answered_and_the_session_goes_on(tmp_path, first, code):
    """QA, session 31: until initialize had a result, a refusal (its id null) was taken for the SDK's
    answer to an initialize answered already, and dropped: the client waited for ever."""
    server = stdio_process(tmp_path)
    try:
        [refused] = exchange(server, first + b"\n", 1)
        assert (refused["id"], refused["error"]["code"]) == (None, code)
        assert error_body(refused["error"]["data"])["code"] == "bad_request"
        early = exchange(server, b'{"jsonrpc":"2.0","id":7,"method":"ping"}\n[1]\n', 2)
        assert sorted((answer["id"] is None, answer.get("error", {}).get("code")) for answer in early) == [
            (False, None), (True, -32600)]
        answers = exchange(server, initialize_line(1) + INITIALIZED + b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}\n', 2)
        assert [answer["id"] for answer in answers] == [1, 2] and answers[1]["result"]["tools"]
        assert "Traceback" not in ended(server, tmp_path)
    finally:
        server.kill()
        server.wait()


REFUSED_INITIALIZE_PARAMS = [
    {"capabilities": {"roots": 5}},
    {"capabilities": {"sampling": []}},
    {"capabilities": {"experimental": {"listChanged": True}}},
    {"clientInfo": {"name": "t", "version": "1", "icons": "x"}},
    {"_meta": 5},
]


def test_an_initialize_the_sdk_refuses_gets_the_answer_http_gives_and_the_session_goes_on(tmp_path):
    """QA, session 31: the quick answer (before the SDK loads) said success to params the SDK and /mcp
    refuse with -32602; the SDK's refusal was dropped, and the session stayed "not initialized"
    (every malformed line unanswered, every params error said to initialize first)."""
    base = json.loads(initialize_line())["params"]
    requests = [{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {**base, **odd}} for odd in REFUSED_INITIALIZE_PARAMS]
    with running_server(tmp_path / "db.sqlite") as url:
        over_http = [httpx.post(f"{url}/mcp", headers=MCP_HEADERS, json=request).json() for request in requests]
    for request, http_answer in zip(requests, over_http):
        assert http_answer["error"]["code"] == -32602, http_answer
        server = stdio_process(tmp_path)
        try:
            [answer] = exchange(server, json.dumps(request).encode() + b"\n", 1)
            assert answer == http_answer
            if request is requests[0]:  # the session goes on, not initialized, and says so truly
                answers = exchange(server, b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}\nnot json\n', 2)
                assert sorted((answer["id"] or 0, answer["error"]["code"]) for answer in answers) == [(0, -32700), (2, -32602)]
                assert "not initialized" in next(answer for answer in answers if answer["id"] == 2)["error"]["message"]
                answers = exchange(server, initialize_line(3) + INITIALIZED + b'{"jsonrpc":"2.0","id":4,"method":"tools/call",'
                                   b'"params":{"name":"health_check","arguments":[]}}\n', 2)
                assert answers[0]["id"] == 3 and answers[0]["result"]["serverInfo"]["name"] == "agent-mail"
                assert answers[1]["id"] == 4 and "not initialized" not in answers[1]["error"]["message"]
            assert "Traceback" not in ended(server, tmp_path)
        finally:
            server.kill()
            server.wait()


def test_a_line_past_max_body_bytes_is_refused_as_over_http_and_the_session_goes_on(tmp_path):
    """docs/security.md said the body limit held on every transport; a stdio line had none (50 MB
    was read whole, ~290 MB of memory). A longer line gets /mcp's refusal of such a body, read on
    without being kept; the next line is served."""
    with running_server(tmp_path / "db.sqlite", MAX_BODY_BYTES="2048") as url:
        over_http = httpx.post(f"{url}/mcp", headers=MCP_HEADERS, content=b'{"jsonrpc":"2.0","id":1,"method":"ping",'
                               b'"params":{"x":"' + b"a" * 5000 + b'"}}')
    assert over_http.status_code == 413
    server = stdio_process(tmp_path, MAX_BODY_BYTES="2048")
    ping = b'{"jsonrpc":"2.0","id":%d,"method":"ping","params":{"x":"%s"}}\n'
    try:
        assert exchange(server, ping % (1, b"a" * 100_000), 1) == [over_http.json()]  # a first line, too
        answers = exchange(server, initialize_line(2) + INITIALIZED + ping % (3, b"a" * 2049) + ping % (4, b"a" * 1900), 3)
        answers.sort(key=lambda answer: answer["id"] or 0)  # a refusal is written at once, maybe before an answer
        assert [(answer["id"], "result" in answer) for answer in answers] == [(None, False), (2, True), (4, True)]
        assert answers[0] == over_http.json()
        peak = memory_peak(server.pid)
        answers = exchange(server, ping % (5, b"a" * 32_000_000) + ping % (6, b""), 2)
        assert sorted(answers, key=lambda answer: answer["id"] or 0) == [over_http.json(), {"jsonrpc": "2.0", "id": 6, "result": {}}]
        assert memory_peak(server.pid) - peak < 16_000_000  # the line was not kept
        assert "Traceback" not in ended(server, tmp_path)
    finally:
        server.kill()
        server.wait()


def memory_peak(pid: int) -> int:
    """The most memory the process has held (Linux: VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
