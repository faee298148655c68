"""MCP over stdio: the `agent-mail stdio` command spawned by the official MCP client, beside a
real HTTP server on the same database and archive."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS

from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.worker import lock_path
from chalicelib.ops.supervisor import exclusive, holder
from chalicelib.config import Settings
from chalicelib.tools import all_tools
from chalicelib.transports import stdio
from chalicelib.transports.mcp_app import build_mcp_server
from chalicelib.transports.mcp_lean import LeanMCP

from .servers import ROOT, running_server, tool_caller
from .test_archive_worker import canonical

AGENT_MAIL = Path(sys.executable).parent / "agent-mail"  # installed by scripts/bootstrap.sh (pyproject.toml)


def initialize_line(request_id=1, version="2025-11-25") -> bytes:
    params = {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}).encode() + b"\n"


def test_the_quick_initialize_answer_is_the_sdks_for_every_handshake_version(tmp_path):
    assert stdio.QUICK_VERSIONS == set(HANDSHAKE_PROTOCOL_VERSIONS)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite")
    sdk = LeanMCP(build_mcp_server(settings), settings, None)  # the SDK's own per-version serialiser
    for version in HANDSHAKE_PROTOCOL_VERSIONS:
        request_id, line = stdio.quick_initialize(initialize_line("a", version))
        params = json.loads(initialize_line("a", version))["params"]
        assert request_id == "a"
        assert json.loads(line) == {"jsonrpc": "2.0", "id": "a", "result": json.loads(sdk._initialize_result(params))}
    for odd in (b"not json\n", initialize_line(version="2099-01-01"), b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n',
                b'{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25"}}\n'):
        assert stdio.quick_initialize(odd) is None  # the SDK answers (or refuses) those


def test_the_quick_answer_words_the_instructions_for_the_tools_profile_of_the_settings(tmp_path):
    """The instructions name only the tools TOOLS_PROFILE lists, wherever the setting comes from:
    the environment (its name in any case), or the .env of the directory the client starts it in
    (read before initialize is answered; session 36 left that answer to the SDK, loaded)."""
    env = {name: value for name, value in os.environ.items() if name.upper() not in ("TOOLS_PROFILE", "PYTHONPATH")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite", ARCHIVE_ENABLED="false", PYTHONPATH=str(ROOT),
               ATTACHMENTS_DIR=str(tmp_path / "attachments"))
    answer = json.loads(stdio.quick_initialize(initialize_line(), "core")[1])["result"]["instructions"]
    assert "register_agent" not in answer and "respond_contact" in answer
    (tmp_path / ".env").write_text("TOOLS_PROFILE=core\n")
    for extra, profile in (({}, "core"), ({"tools_profile": "minimal"}, "minimal")):
        done = subprocess.run([sys.executable, "-m", "chalicelib", "stdio"], input=initialize_line(), capture_output=True,
                              env={**env, **extra}, cwd=tmp_path, timeout=60)
        assert done.returncode == 0, done.stderr.decode()
        assert json.loads(done.stdout) == json.loads(stdio.quick_initialize(initialize_line(), profile)[1])


def test_the_quick_initialize_answers_only_params_the_sdk_accepts():
    """QA, session 31: it answered success to params the SDK (and /mcp) refuse with -32602, e.g.
    capabilities {"roots": 5}. Every combination of these params: where the quick path answers,
    the SDK's validation (mcp_lean.py's) accepts; and the shapes clients send are answered quick."""
    import itertools

    from mcp_types import InitializeRequestParams
    from pydantic import ValidationError

    values = [{}, {"listChanged": True}, {"listChanged": "yes"}, {"listChanged": {}}, {"context": {}}, {"context": True},
              {"x": {"y": 1}}, {"x": {}}, 5, [], None, "", True]
    client_infos = [{"name": "c", "version": "1"}, {"name": "c", "version": "1", "title": "C", "websiteUrl": "x"},
                    {"name": "c"}, {"name": 5, "version": "1"}, {"name": "c", "version": "1", "icons": "x"},
                    {"name": "c", "version": "1", "icons": []}, {"name": "c", "version": "1", "extra": "x"}, "c"]
    answered = 0
    for name, value, client_info, extra in itertools.product(
            ["roots", "sampling", "elicitation", "experimental", "extensions", "tasks", "other"], values, client_infos,
            [{}, {"_meta": {}}, {"_meta": 5}]):
        params = {"protocolVersion": "2025-11-25", "capabilities": {name: value}, "clientInfo": client_info, **extra}
        line = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}).encode() + b"\n"
        if stdio.quick_initialize(line) is not None:
            answered += 1
            try:
                InitializeRequestParams.model_validate(params, by_name=False)
            except ValidationError as exc:
                raise AssertionError(f"answered quick, refused by the SDK: {params}") from exc
    assert answered >= 20
    for capabilities in ({}, {"roots": {"listChanged": True}, "sampling": {}, "elicitation": {"form": {}, "url": {}}},
                         {"roots": {}}, {"experimental": {"x": {}}, "tasks": {"list": {}, "cancel": {}}}):
        params = {"protocolVersion": "2025-06-18", "capabilities": capabilities, "clientInfo": {"name": "c", "version": "1"}}
        assert stdio.quick_initialize(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}).encode())
    # json reads what the SDK's parser refuses: a lone surrogate, a BOM; and a line nested past json's limit
    lone = initialize_line().replace(b'"test"', b'"\\ud800"')
    assert json.loads(lone) and stdio.quick_initialize(lone) is None
    assert stdio.quick_initialize(b"\xef\xbb\xbf" + initialize_line()) is None
    assert stdio.quick_initialize(b"[" * 5000 + b"\n") is None


def test_stdout_carries_only_protocol_one_answer_per_request(tmp_path):
    """Raw JSON lines to `python -m chalicelib stdio`: initialize is answered once (the SDK's
    own answer to it is dropped), then the SDK answers; logs go to stderr."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive"),
           "LOG_LEVEL": "DEBUG", "LOG_FORMAT": "json"}
    requests = initialize_line(7) + b"".join(
        json.dumps(message).encode() + b"\n"
        for message in (
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": 8, "method": "tools/list"},
            {"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": {"name": "health_check", "arguments": {}}},
        )
    )
    server = subprocess.Popen([sys.executable, "-m", "chalicelib", "stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, cwd=ROOT, env=env)
    server.stdin.write(requests)
    server.stdin.flush()
    lines = [server.stdout.readline() for _ in range(3)]  # a client waits for its answers before it closes stdin
    stdout, stderr = server.communicate(timeout=60)
    assert server.returncode == 0 and stdout == b"", stderr.decode()
    answers = [json.loads(line) for line in lines]
    assert [answer["id"] for answer in answers] == [7, 8, 9]
    assert answers[0]["result"]["serverInfo"]["name"] == "agent-mail"
    assert {tool["name"] for tool in answers[1]["result"]["tools"]} == {tool.name for tool in all_tools()}
    assert answers[2]["result"]["structuredContent"]["status"] == "ok"
    # The logs are there, on stderr, as LOG_FORMAT says (session 29: always text)
    logged = [json.loads(line) for line in stderr.splitlines() if line.startswith(b"{")]
    assert logged and {"DEBUG"} <= {line["level"] for line in logged}, stderr.decode()[-2000:]


def test_an_agent_session_over_stdio_beside_the_http_server_on_one_database(tmp_path):
    """The official client spawns `agent-mail stdio` (as Claude Desktop, Claude Code, Codex and
    Cursor do) and runs the HTTP tests' agent workflow, while the HTTP server serves the same
    database; mail crosses between the two, and one archive worker writes for both."""
    database, archive_dir = tmp_path / "agent_mail.db", tmp_path / "archive"
    env = {"DATABASE_URL": f"sqlite:///{database}", "ARCHIVE_DIR": str(archive_dir), "LOG_LEVEL": "WARNING"}
    with running_server(database, ARCHIVE_DIR=str(archive_dir)) as url:
        lock = lock_path(Settings(archive_dir=archive_dir))
        deadline = time.monotonic() + 30
        while holder(lock) is None:  # the HTTP server's worker took the lock
            assert time.monotonic() < deadline
            time.sleep(0.05)
        http_worker = holder(lock)

        async def session():
            server = StdioServerParameters(command=str(AGENT_MAIL), args=["stdio"], env=env, cwd=str(tmp_path))
            async with Client(server, mode="legacy") as client:
                assert client.server_info.name == "agent-mail"
                assert "ensure_project" in client.instructions
                assert {tool.name for tool in (await client.list_tools()).tools} == {tool.name for tool in all_tools()}
                call = tool_caller(client)
                key = "/e2e/stdio"
                project = (await call("ensure_project", human_key=key))["slug"]
                alice = (await call("register_agent", project_key=key, program="claude-desktop", model="opus"))["name"]
                # Bob works over HTTP, on the same database.
                bob = httpx.post(f"{url}/api/register_agent", json={"project_key": project, "program": "codex",
                                                                    "model": "gpt", "name": "BobBadger"}).json()["name"]
                httpx.post(f"{url}/api/set_contact_policy", json={"project_key": project, "agent_name": bob, "policy": "open"})
                sent = await call("send_message", project_key=project, sender_name=alice, to=[bob], subject="Hello",
                                  body_md="Ready to pair?", ack_required=True)
                inbox = httpx.get(f"{url}/api/fetch_inbox", params={"project_key": project, "agent_name": bob}).json()
                assert [m["id"] for m in inbox["messages"]] == [sent["message"]["id"]]
                httpx.post(f"{url}/api/reply_message", json={"project_key": project, "message_id": sent["message"]["id"],
                                                            "sender_name": bob, "body_md": "Yes"}).raise_for_status()
                [reply] = (await call("fetch_inbox", project_key=project, agent_name=alice, include_bodies=True))["messages"]
                assert (reply["sender"], reply["body_md"]) == (bob, "Yes")
                summary = await call("summarize_thread", project_key=project, thread_id=reply["thread_id"])
                assert summary["message_count"] == 2
                hits = await call("search_messages", project_key=project, query="pair*")
                assert [h["subject"] for h in hits["results"]] == ["Hello"]
                resource = await client.read_resource(f"resource://inbox/{bob}?project={project}")
                assert json.loads(resource.contents[0].text)["messages"][0]["subject"] == "Hello"
                error = await client.call_tool("whois", {"project_key": project, "agent_name": "Nobody"})
                assert error.is_error and json.loads(error.content[0].text)["error"]["code"] == "not_found"
                assert holder(lock) == http_worker  # the stdio server's worker stands by

        asyncio.run(session())
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/api/archive_status").json()["pending"]:
            assert time.monotonic() < deadline, "the archive did not catch up"
            time.sleep(0.1)
    with GitArchive(archive_dir, bare=True) as archive:
        assert len(canonical(archive.files())) == 2  # both messages, archived once


def test_a_standing_by_worker_takes_over_when_the_other_exits(tmp_path):
    lock = lock_path(Settings(archive_dir=tmp_path / "archive"))
    holding = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from chalicelib.ops.supervisor import exclusive\n"
         f"with exclusive(Path({str(lock)!r}), None) as mine:\n assert mine; print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holding.stdout.readline() == "held\n"
        with exclusive(lock, None) as mine:
            assert not mine and holder(lock) == holding.pid
    finally:
        holding.kill()  # however it dies, its lock goes with it
        holding.wait()
    with exclusive(lock, None) as mine:
        assert mine and holder(lock) == os.getpid()


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_stops_the_server_and_its_archive_worker(tmp_path, stop):
    """And SIGINT (QA, session 40: Ctrl-C in the client's terminal left the session alive, answering nothing)."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive")}
    server = subprocess.Popen([str(AGENT_MAIL), "stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=tmp_path)
    try:
        server.stdin.write(initialize_line() + b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'
                           b'{"jsonrpc":"2.0","id":2,"method":"ping"}\n')
        server.stdin.flush()
        assert [json.loads(server.stdout.readline())["id"] for _ in range(2)] == [1, 2]  # the worker runs by now
        lock = lock_path(Settings(archive_dir=tmp_path / "archive"))
        deadline = time.monotonic() + 60
        while holder(lock) is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        worker = holder(lock)
        server.send_signal(stop)  # stdin still open: a reader thread blocks on it
        assert server.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{worker}") and open(f"/proc/{worker}/stat").read().split()[2] != "Z":
            assert time.monotonic() < deadline, "the archive worker outlived its server"
            time.sleep(0.05)
    finally:
        server.kill()
        server.wait()


def imported(stderr: bytes) -> set[str]:
    """The modules a `python -X importtime` process imported (its "import time:" lines on stderr)."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.decode().splitlines() if line.startswith("import time:")}


def test_a_session_imports_only_what_stdio_needs(tmp_path):
    """A client starts a server per session: git (the worker's process writes it), the web
    stack and the command line cost its start-up CPU for nothing (bench/stdio_startup.py)."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ATTACHMENTS_DIR": str(tmp_path / "attachments"),
           "ARCHIVE_ENABLED": "false"}
    requests = initialize_line() + b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n' \
        b'{"jsonrpc":"2.0","id":2,"method":"tools/list"}\n'
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "chalicelib", "stdio"], input=requests,
                          capture_output=True, env=env, cwd=ROOT, timeout=120)
    assert done.returncode == 0 and [json.loads(line)["id"] for line in done.stdout.splitlines()] == [1, 2], done.stderr.decode()[-3000:]
    modules = imported(done.stderr)
    assert "chalicelib.tools.messages" in modules  # the check sees the session's imports
    unneeded = {"dulwich", "chalicelib.transports.cli", "chalicelib.transports.asgi", "chalicelib.web", "fastapi",
                "jinja2", "nh3", "PIL", "boto3", "prometheus_client"}
    assert modules & unneeded == set()


def test_an_archive_worker_waiting_for_the_lock_has_not_imported_the_tools(tmp_path):
    """Every stdio session starts an archive worker (`archive work`), and all but one wait for
    the lock: importing every tool's module (and its command) would be ~150 ms of CPU each."""
    archive = tmp_path / "archive"
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(archive), "LOG_LEVEL": "INFO"}
    with exclusive(lock_path(Settings(archive_dir=archive)), None) as mine:
        assert mine
        worker = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "chalicelib", "archive", "work"],
                                  stderr=subprocess.PIPE, env=env, cwd=ROOT)
        killer = threading.Timer(60, worker.kill)  # bounded, should it never say it waits
        killer.start()
        try:
            lines = []
            while not lines or b"another archive worker holds" not in lines[-1]:
                lines.append(worker.stderr.readline())
                assert lines[-1], b"".join(lines).decode()[-3000:]
            worker.terminate()
            lines.append(worker.communicate(timeout=60)[1])
        finally:
            killer.cancel()
            worker.kill()
            worker.wait()
    modules = imported(b"".join(lines))
    assert "chalicelib.archive.worker" in modules  # the check sees the worker's imports
    assert {module for module in modules if module.startswith(("chalicelib.tools", "dulwich"))} == set()


def test_requests_piped_in_are_all_answered_though_stdin_closes_at_once(tmp_path):
    """`cat requests.jsonl | agent-mail stdio`: stdin ends while the writes run; each still gets
    its own answer (the SDK alone answered "Connection closed" for a write that committed)."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive")}
    calls = [{"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
              "params": {"name": "ensure_project", "arguments": {"human_key": f"/piped/{request_id}"}}} for request_id in (2, 3)]
    requests = initialize_line() + b"".join(json.dumps(message).encode() + b"\n" for message in (
        {"jsonrpc": "2.0", "method": "notifications/initialized"}, *calls, {"jsonrpc": "2.0", "id": 4, "method": "ping"}))
    done = subprocess.run([sys.executable, "-m", "chalicelib", "stdio"], input=requests, capture_output=True, env=env, cwd=ROOT,
                          timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    answers = {answer["id"]: answer for answer in map(json.loads, done.stdout.splitlines())}
    assert sorted(answers) == [1, 2, 3, 4]
    for request_id in (2, 3):
        assert "error" not in answers[request_id], answers[request_id]
        assert answers[request_id]["result"]["structuredContent"]["human_key"] == f"/piped/{request_id}"
    assert answers[4]["result"] == {}


def test_a_guard_installed_over_stdio_reads_the_database_since_no_http_server_listens(settings, call, tmp_path):
    """QA session 33: the hook asked HOST:PORT (settings), where a stdio session serves nothing, and let
    every reserved file through. Its hook reads the session's database itself (tests/test_guard.py commits)."""
    repo = tmp_path / "shop"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    call("ensure_project", human_key=str(repo))
    env = {**os.environ, "DATABASE_URL": settings.database_url, "ARCHIVE_ENABLED": "false"}
    install = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "install_precommit_guard", "arguments": {"project_key": str(repo), "code_repo_path": str(repo)}}}
    done = subprocess.run([sys.executable, "-m", "chalicelib", "stdio"], input=initialize_line() + json.dumps(install).encode() + b"\n",
                          capture_output=True, env=env, cwd=ROOT, timeout=120)
    installed = json.loads(done.stdout.splitlines()[1])["result"]["structuredContent"]
    assert installed["server_url"] is None and installed["reads_database"] == str(settings.database_path)
    assert settings.database_url in (repo / ".git" / "hooks" / "pre-commit").read_text()


def test_a_cancelled_request_is_not_waited_for_at_the_end_of_stdin():
    """The SDK never answers a request the client cancelled: the end of stdin must not wait for it."""
    from mcp.shared.message import SessionMessage
    from mcp_types import JSONRPCNotification, JSONRPCRequest, JSONRPCResponse

    unanswered = stdio.Unanswered()
    for request_id in (1, "2", 3):
        unanswered.read(SessionMessage(JSONRPCRequest(jsonrpc="2.0", id=request_id, method="ping")))
    unanswered.read(ValueError("a line the SDK could not parse"))
    unanswered.read(SessionMessage(JSONRPCNotification(jsonrpc="2.0", method="notifications/cancelled",
                                                       params={"requestId": 2})))
    unanswered.answered(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id=1, result={})))
    assert unanswered.counts == {3: 1}
    unanswered.answered(SessionMessage(JSONRPCResponse(jsonrpc="2.0", id="3", result={})))
    assert unanswered.counts == {}


def test_a_line_that_is_not_utf8_gets_a_parse_error_and_the_session_goes_on(tmp_path):
    """Decoded with replacement characters, "/caf\\xe9" was stored as "/caf\\ufffd"; HTTP refuses
    such a body, and so does stdio now (-32700, id null), then it serves the next line."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive")}
    server = subprocess.Popen([sys.executable, "-m", "chalicelib", "stdio"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, cwd=ROOT, env=env)
    try:  # all of it at once, then the end of the input: an answer never sent fails the test, not hangs it
        out, _ = server.communicate(
            initialize_line() + b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'
            b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"ensure_project",'
            b'"arguments":{"human_key":"/caf\xe9"}}}\n'
            b' \t\r\n'  # JSON's whitespace: skipped
            b'\x0b\n'  # a vertical tab is none (it was skipped as blank): -32700
            b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"list_projects","arguments":{}}}\n', timeout=60)
        assert server.returncode == 0
    finally:
        server.kill()
        server.wait()
    answers = {answer["id"]: answer for answer in map(json.loads, out.splitlines()) if answer["id"] is not None}
    errors = [answer["error"] for answer in map(json.loads, out.splitlines()) if answer["id"] is None]
    assert sorted(answers) == [1, 3] and [error["code"] for error in errors] == [-32700, -32700], out
    [not_utf8] = [error for error in errors if "not UTF-8" in error["message"]]
    assert "valid JSON" in not_utf8["data"]["error"]["hint"]  # this server's error body, as over HTTP
    assert answers[3]["result"]["structuredContent"]["projects"] == []  # nothing was stored


def test_a_bad_setting_ends_the_session_with_a_line_naming_it(tmp_path):
    """A client shows the server's stderr in its log: one line naming the variable, not a traceback;
    and the initialize it sent is answered with it, never with success."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "PORT": "abc"}
    done = subprocess.run([sys.executable, "-m", "chalicelib", "stdio"], input=initialize_line(), capture_output=True,
                          env=env, cwd=ROOT, timeout=60)
    said = done.stderr.decode()
    assert done.returncode == 1 and said.startswith("agent-mail stdio: invalid PORT") and said.count("\n") == 1, said
    [answer] = map(json.loads, done.stdout.splitlines())
    assert answer["id"] == 1 and "invalid PORT" in answer["error"]["message"] and "result" not in answer


def test_a_bad_setting_is_the_sessions_error_with_database_url_given_too(tmp_path):
    """QA, session 40: `--database-url URL stdio` went through the command line, whose refusal of a
    setting was click's (exit 2, nothing on stdout): the client saw its connection close."""
    env = {**os.environ, "MAX_BODY_BYTES": "abc"}
    for given in (["--database-url", f"sqlite:///{tmp_path}/db.sqlite"], [f"--database-url=sqlite:///{tmp_path}/db.sqlite"]):
        done = subprocess.run([sys.executable, "-m", "chalicelib", *given, "stdio"], input=initialize_line(), capture_output=True,
                              env=env, cwd=ROOT, timeout=60)
        said = done.stderr.decode()
        assert done.returncode == 1 and said.startswith("agent-mail stdio: invalid MAX_BODY_BYTES"), said
        [answer] = map(json.loads, done.stdout.splitlines())
        assert answer["id"] == 1 and "invalid MAX_BODY_BYTES" in answer["error"]["message"]


def test_a_database_it_cannot_open_ends_the_session_with_a_line_naming_it(tmp_path):
    """A folder as DATABASE_URL ended the session with a traceback (no path), and sqlite:///:memory:
    served a database every call found empty ("no such table: projects")."""
    env = {**os.environ, "ARCHIVE_DIR": str(tmp_path / "archive"), "ATTACHMENTS_DIR": str(tmp_path / "attachments")}
    for url, said in ((f"sqlite:///{tmp_path}", f"agent-mail stdio: database error ({tmp_path}): unable to open database file"),
                      ("sqlite:///:memory:", "agent-mail stdio: invalid DATABASE_URL: DATABASE_URL must name a file")):
        done = subprocess.run([sys.executable, "-m", "chalicelib", "stdio"], input=initialize_line(), capture_output=True,
                              env={**env, "DATABASE_URL": url}, cwd=ROOT, timeout=60)
        assert done.returncode == 1 and said in done.stderr.decode() and "Traceback" not in done.stderr.decode(), done.stderr


def test_the_official_client_cannot_connect_to_a_server_it_could_not_use(tmp_path):
    """QA, session 37: initialize was answered before the settings were read and the database opened,
    so the client connected, and its first call met a closed connection ("Connection closed", the
    reason only on the server's stderr). Now its connect fails with the reason and a hint, in both of
    the official client's modes ("auto" asks server/discover first and falls back to initialize)."""
    from mcp.shared.exceptions import MCPError

    (tmp_path / "folder").mkdir()
    (tmp_path / "corrupt.db").write_bytes(b"not a database, " * 64)
    fine = {"DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_ENABLED": "false",
            "ATTACHMENTS_DIR": str(tmp_path / "attachments")}
    cases = [
        ({"PORT": "abc"}, "invalid PORT: Input should be a valid integer", "Fix PORT in the environment"),
        ({"ALLOWED_HOSTS": "[localhost"}, "invalid ALLOWED_HOSTS: not a JSON list", "Fix ALLOWED_HOSTS"),
        ({"DATABASE_URL": f"sqlite:///{tmp_path}/folder"}, f"database error ({tmp_path}/folder): unable to open database file",
         "DATABASE_URL must name a SQLite database file"),
        ({"DATABASE_URL": f"sqlite:///{tmp_path}/corrupt.db"}, f"database error ({tmp_path}/corrupt.db): file is not a database",
         "DATABASE_URL must name a SQLite database file"),
    ]

    async def connect(env: dict, mode: str) -> None:
        server = StdioServerParameters(command=sys.executable, args=["-m", "chalicelib", "stdio"], env=env, cwd=str(ROOT))
        async with Client(server, mode=mode) as client:
            await client.list_tools()

    def raised(exc: BaseException) -> list[BaseException]:
        """The exceptions inside anyio's task groups' ExceptionGroups."""
        return [inner for group in exc.exceptions for inner in raised(group)] if isinstance(exc, BaseExceptionGroup) else [exc]

    for setting, reason, hint in cases:
        for mode in ("legacy", "auto"):
            try:
                asyncio.run(connect({**os.environ, **fine, **setting}, mode))
            except BaseException as exc:
                errors = raised(exc)
            else:
                errors = []
            [error] = errors
            assert isinstance(error, MCPError), repr(error)
            assert reason in error.error.message and hint in error.error.data["error"]["hint"], (mode, error.error)
            assert error.error.data["error"]["code"] == "unavailable"


def test_a_relative_path_setting_is_named_on_stderr_with_where_it_lands(tmp_path):
    """A client starts the server in a directory of its choosing: a relative ATTACHMENTS_DIR (the
    default, ./data/attachments) put a stdio session's attachments there, where the HTTP server on
    the same database could not find them (500s, an archive entry failing for ever)."""
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive")}
    env.pop("ATTACHMENTS_DIR", None)
    done = subprocess.run([str(AGENT_MAIL), "stdio"], input=initialize_line(), capture_output=True, env=env, cwd=client_dir, timeout=60)
    said = done.stderr.decode()
    assert done.returncode == 0, said
    assert f"ATTACHMENTS_DIR is relative (data/attachments): it resolves to {client_dir}/data/attachments" in said
    assert "DATABASE_URL is relative" not in said and "ARCHIVE_DIR is relative" not in said
    done = subprocess.run([str(AGENT_MAIL), "stdio"], input=initialize_line(), capture_output=True, cwd=client_dir, timeout=60,
                          env={**env, "ATTACHMENTS_DIR": str(tmp_path / "attachments")})
    assert done.returncode == 0 and "is relative" not in done.stderr.decode()
