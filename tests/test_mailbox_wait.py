"""wait_for_mail: durable cursors (nothing missed, nothing repeated) and wake-ups."""

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from chalicelib import invoke
from chalicelib.errors import InvalidArgument, Unavailable
from chalicelib.ids import new_id
from chalicelib.tools import mailbox, messages, tools_by_name

from .servers import ROOT, running_server

pytestmark = pytest.mark.both_backends
TOOLS = tools_by_name()


def wait(call, project, agent="GreenCastle", **options):
    return call("wait_for_mail", project_key=project, agent_name=agent, **({"timeout_seconds": 0} | options))


def send(call, project, subject="Hello", **options):
    args = dict(project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md="hi")
    return call("send_message", **(args | options))["message"]


def test_cursor_returns_each_message_once(call, project):
    before = send(call, project, "before")
    started = wait(call, project)
    assert started["messages"] == []  # without a cursor: mail newer than the call
    first, second = send(call, project, "one"), send(call, project, "two")
    got = wait(call, project, cursor=started["cursor"])
    assert [m["id"] for m in got["messages"]] == [first["id"], second["id"]]
    assert got["messages"][0]["body_md"] == "hi" and got["more"] is False
    again = wait(call, project, cursor=got["cursor"])
    assert again["messages"] == []
    third = send(call, project, "three")
    assert [m["id"] for m in wait(call, project, cursor=again["cursor"])["messages"]] == [third["id"]]
    # Waiting changes nothing: the messages stay unread.
    inbox = call("fetch_inbox", project_key=project, agent_name="GreenCastle", unread_only=True)["messages"]
    assert {m["id"] for m in inbox} == {before["id"], first["id"], second["id"], third["id"]}


def test_a_message_committed_after_a_newer_one_is_not_missed(call, project, monkeypatch):
    """Ids are made before the commit: a writer that was slower to commit (another process or
    replica) stores a smaller id than one the reader already saw. A last-id cursor misses it."""
    started = wait(call, project)
    slow_id = new_id()  # the slow writer made its id first...
    fast = send(call, project, "fast")
    got = wait(call, project, cursor=started["cursor"])
    assert [m["id"] for m in got["messages"]] == [fast["id"]]
    monkeypatch.setattr(messages, "new_id", lambda: slow_id)
    slow = send(call, project, "slow")  # ...and committed it after the reader saw the fast one
    assert int(slow["id"]) < int(fast["id"])
    late = wait(call, project, cursor=got["cursor"])
    assert [m["id"] for m in late["messages"]] == [slow["id"]]
    assert wait(call, project, cursor=late["cursor"])["messages"] == []


def test_a_wait_without_a_cursor_after_a_flood_returns_none_of_it(call, project, monkeypatch):
    """QA, session 28: an agent sent more than a cursor holds (MAX_SEEN ids) within the minute
    its floor reaches back: a cursorless wait marked the newest MAX_SEEN seen but kept the floor,
    so its next check returned the older ones, mail from before the call."""
    from chalicelib.tools import mailbox

    monkeypatch.setattr(mailbox, "MAX_SEEN", 3)
    for n in range(5):
        send(call, project, f"flood {n}")
    started = wait(call, project)
    assert started["messages"] == [] and wait(call, project, cursor=started["cursor"])["messages"] == []
    after = send(call, project, "after")
    assert [m["id"] for m in wait(call, project, cursor=started["cursor"])["messages"]] == [after["id"]]


def test_limit_leaves_the_rest_for_the_next_call(call, project):
    started = wait(call, project)
    sent = [send(call, project, f"m{i}")["id"] for i in range(5)]
    page = wait(call, project, cursor=started["cursor"], limit=2)
    assert [m["id"] for m in page["messages"]] == sent[:2] and page["more"] is True
    page = wait(call, project, cursor=page["cursor"], limit=2)
    assert [m["id"] for m in page["messages"]] == sent[2:4]
    page = wait(call, project, cursor=page["cursor"], limit=2)
    assert [m["id"] for m in page["messages"]] == sent[4:] and page["more"] is False


def test_cursor_of_another_format_is_refused(call, project):
    with pytest.raises(InvalidArgument, match="cursor"):
        wait(call, project, cursor="12345")
    with pytest.raises(InvalidArgument):
        wait(call, project, timeout_seconds=60)  # beyond the bound
    # The format's 13 base-36 digits pass SQLite's largest integer (QA, session 30: a 500, OverflowError)
    assert wait(call, project, cursor="m1.1y2p0ij32e8e7", timeout_seconds=0)["messages"] == []  # 2**63 - 1
    for cursor in ("m1.1y2p0ij32e8e8", "m1.zzzzzzzzzzzzz", "m1.1y2p0ij32e8e7.1"):
        with pytest.raises(InvalidArgument, match="cursor"):
            wait(call, project, cursor=cursor, timeout_seconds=0)


def test_a_waiting_call_wakes_when_mail_is_delivered(settings, call, project):
    cursor = wait(call, project)["cursor"]
    args = dict(project_key=project, agent_name="GreenCastle", cursor=cursor, timeout_seconds=20)

    async def scenario():
        waiting = asyncio.create_task(invoke.acall(TOOLS["wait_for_mail"], args, settings))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # nothing yet: it waits
        started = time.monotonic()
        sent = await invoke.acall(TOOLS["send_message"], dict(
            project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="wake", body_md="up"), settings)
        got = await asyncio.wait_for(waiting, 19)
        return sent, got, time.monotonic() - started

    sent, got, elapsed = asyncio.run(scenario())
    assert [m.id for m in got.messages] == [sent.message.id]
    assert elapsed < 10  # woken by the commit, long before its 20 s timeout


def test_a_wait_without_a_cursor_returns_mail_delivered_during_it(settings, call, project):
    """Without a cursor the wait starts from the call: what arrives while it waits is its answer
    (each check after the first goes on from the first one's cursor, not from its own now)."""
    args = dict(project_key=project, agent_name="GreenCastle", timeout_seconds=20)

    async def scenario():
        waiting = asyncio.create_task(invoke.acall(TOOLS["wait_for_mail"], args, settings))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        sent = await invoke.acall(TOOLS["send_message"], dict(
            project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="during", body_md="x"), settings)
        return sent, await asyncio.wait_for(waiting, 19)

    sent, got = asyncio.run(scenario())
    assert [m.id for m in got.messages] == [sent.message.id]
    assert wait(call, project, cursor=got.cursor)["messages"] == []  # and once only
    result = {}  # the synchronous callers' loop (Chalice, the CLI)
    waiting = threading.Thread(target=lambda: result.update(call("wait_for_mail", **args)))
    waiting.start()
    time.sleep(0.3)
    sent = send(call, project, subject="during, in a thread")
    waiting.join(25)
    assert [m["id"] for m in result["messages"]] == [sent["id"]]


def test_a_wait_with_bodies_reads_and_encodes_its_answer_off_the_event_loop(settings, call, project, monkeypatch):
    """A wait hands over up to ~4 MiB of bodies (include_bodies, its default), read and encoded on
    the event loop: 4 clients looping one held /health to 25 answers in 4 s (174 beside fetch_inbox's
    same page, which runs in the slow-read lane). Its checks there only find whether mail came; the
    answer is read and encoded in the lane, from the same cursor: each message once all the same."""
    reads = []  # (with bodies, the thread) of each check

    def inbox_page(*args, real=mailbox.inbox_page, **options):
        reads.append((options["bodies"], threading.current_thread()))
        return real(*args, **options)

    monkeypatch.setattr(mailbox, "inbox_page", inbox_page)
    cursor = wait(call, project)["cursor"]
    early = send(call, project, "early", body_md="first body")

    async def scenario(**options):
        args = dict(project_key=project, agent_name="GreenCastle", cursor=cursor, timeout_seconds=20) | options
        found = json.loads(await invoke.ajson(TOOLS["wait_for_mail"], args, settings))  # mail is there
        waiting = asyncio.create_task(invoke.ajson(TOOLS["wait_for_mail"], args | {"cursor": found["cursor"]}, settings))
        await asyncio.sleep(0.2)
        assert not waiting.done()  # nothing yet: it waits
        sent = await invoke.acall(TOOLS["send_message"], dict(
            project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="late", body_md="second body"), settings)
        return found, json.loads(await asyncio.wait_for(waiting, 19)), sent.message.model_dump(mode="json")

    found, woken, late = asyncio.run(scenario())
    assert [(m["id"], m["body_md"]) for m in found["messages"]] == [(early["id"], "first body")]
    assert [(m["id"], m["body_md"]) for m in woken["messages"]] == [(late["id"], "second body")]
    assert wait(call, project, cursor=woken["cursor"])["messages"] == []  # once each
    main = threading.main_thread()
    assert [bodies for bodies, thread in reads if thread is not main] == [True, True] or settings.turso_sync_url
    assert all(thread is not main for bodies, thread in reads if bodies)  # (a replica's checks all run in threads)
    reads.clear()
    found, woken, late = asyncio.run(scenario(include_bodies=False))  # a small answer: read on the loop, once a check
    assert found["messages"][0]["body_md"] is None and woken["messages"][0]["id"] == late["id"]
    assert all(not bodies for bodies, _ in reads) and (settings.turso_sync_url or {t for _, t in reads} == {main})


def test_mail_for_someone_else_does_not_end_the_wait(settings, call, project):
    cursor = wait(call, project)["cursor"]
    send(call, project, to=["RedStone"])
    got = wait(call, project, cursor=cursor, timeout_seconds=0.3)
    assert got["messages"] == []


@pytest.mark.sqlite_only
def test_mail_sent_by_another_process_wakes_the_waiter(settings, call, project):
    cursor = wait(call, project)["cursor"]
    result = {}

    def waiting():
        result["got"] = invoke.call(TOOLS["wait_for_mail"], dict(
            project_key=project, agent_name="GreenCastle", cursor=cursor, timeout_seconds=20), settings)
        result["at"] = time.monotonic()

    thread = threading.Thread(target=waiting)
    thread.start()
    sent_at = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "chalicelib", "--database-url", settings.database_url, "send-message", "--project-key",
         project, "--sender-name", "BlueLake", "--to", "GreenCastle", "--subject", "other process", "--body-md", "hi"],
        cwd=ROOT, check=True, capture_output=True, env={"ARCHIVE_ENABLED": "false", "PATH": ""},
    )
    thread.join(20)
    assert [m.subject for m in result["got"].messages] == ["other process"]
    assert result["at"] - sent_at < 10  # the watcher saw the other process's commit


@pytest.mark.sqlite_only
def test_waiters_are_bounded(settings, call, project):
    bounded = settings.model_copy(update={"max_mail_waiters": 1, "database_url": settings.database_url})
    args = dict(project_key=project, agent_name="GreenCastle", timeout_seconds=1)

    async def scenario():
        first = asyncio.create_task(invoke.acall(TOOLS["wait_for_mail"], args, bounded))
        await asyncio.sleep(0.1)
        with pytest.raises(Unavailable, match="Too many"):
            await invoke.acall(TOOLS["wait_for_mail"], args, bounded)
        await first

    asyncio.run(scenario())


def test_one_credential_waits_at_most_its_share(tmp_path):
    """Through the real server: one reader token's 1,000 waits took every place of the process,
    and another credential's wait got 503. Now a credential past its share gets 429, others wait."""
    tokens = '["admin", {"token": "greedy", "role": "reader"}]'
    with running_server(tmp_path / "db.sqlite", AUTH_BEARER_TOKENS=tokens, REQUIRE_AGENT_TOKENS="false",
                        MAX_MAIL_WAITERS_PER_CALLER="2", ARCHIVE_ENABLED="false") as url:
        headers = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
        with httpx.Client(base_url=url, timeout=30, headers=headers("admin")) as admin:
            admin.post("/api/ensure_project", json={"human_key": "/waits"}).raise_for_status()
            admin.post("/api/register_agent", json={"project_key": "waits", "name": "GreenCastle", "program": "p", "model": "m"})
        wait = {"project_key": "waits", "agent_name": "GreenCastle", "timeout_seconds": 3}

        async def scenario():
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:
                post = lambda token: client.post("/api/wait_for_mail", json=wait, headers=headers(token))  # noqa: E731
                waiting = [asyncio.create_task(post("greedy")) for _ in range(2)]
                await asyncio.sleep(1)  # both are waiting
                refused, other = await asyncio.gather(post("greedy"), post("admin"))
                return refused, other, await asyncio.gather(*waiting)

        refused, other, waited = asyncio.run(scenario())
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert "MAX_MAIL_WAITERS_PER_CALLER" in refused.json()["error"]["message"] and "cursor" in refused.json()["error"]["hint"]
    assert refused.headers["Retry-After"] == "5"
    assert other.status_code == 200 and [answer.status_code for answer in waited] == [200, 200]



def test_one_credentials_waits_woken_by_one_message_are_all_answered(tmp_path):
    """Review, session 32: a wait that found mail read its answer in the slow-read lane, which
    takes MAX_SLOW_CALLS_PER_CALLER jobs of a credential: one message to several of its agents
    answered the waits past that 429 ("nothing was done"), after they had waited. Each is answered."""
    tokens = '["admin", {"token": "team", "role": "writer"}]'
    agents = ["Agent1", "Agent2", "Agent3"]
    with running_server(tmp_path / "db.sqlite", AUTH_BEARER_TOKENS=tokens, REQUIRE_AGENT_TOKENS="false",
                        MAX_SLOW_CALLS_PER_CALLER="1", ARCHIVE_ENABLED="false") as url:
        headers = lambda token: {"Authorization": f"Bearer {token}"}  # noqa: E731
        with httpx.Client(base_url=url, timeout=30, headers=headers("admin")) as admin:
            admin.post("/api/ensure_project", json={"human_key": "/team"}).raise_for_status()
            for name in ["Boss", *agents]:
                admin.post("/api/register_agent", json={"project_key": "team", "name": name, "program": "p", "model": "m"}
                           ).raise_for_status()
                admin.post("/api/set_contact_policy", json={"project_key": "team", "agent_name": name, "policy": "open"})

        async def scenario():
            async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers("team")) as client:
                waits = [asyncio.create_task(client.post("/api/wait_for_mail", json={
                    "project_key": "team", "agent_name": name, "timeout_seconds": 20})) for name in agents]
                await asyncio.sleep(1)  # all three are waiting
                sent = await client.post("/api/send_message", json={"project_key": "team", "sender_name": "Boss", "to": agents,
                                                                    "subject": "standup", "body_md": "x" * 100_000})
                sent.raise_for_status()
                return await asyncio.gather(*waits)

        answers = asyncio.run(scenario())
    assert [answer.status_code for answer in answers] == [200] * 3, [answer.text[:200] for answer in answers]
    assert all([m["subject"] for m in answer.json()["messages"]] == ["standup"] for answer in answers)

@pytest.mark.sqlite_only
def test_a_wait_whose_client_disconnects_gives_its_place_back(tmp_path):
    """Session 18 review: a client that closed its connection while its wait_for_mail waited kept
    the wait's place until its timeout (uvicorn runs the handler on), so the credential, waiting
    again, met its cap with places held by no one. Over REST and /mcp, each wait 25 s long: once
    both clients are gone a new wait is admitted, and each gone wait is counted as client_closed_request."""
    log = tmp_path / "server.log"
    tokens = '["admin", {"token": "waiter", "role": "reader"}]'
    with running_server(tmp_path / "db.sqlite", stderr=log, AUTH_BEARER_TOKENS=tokens, REQUIRE_AGENT_TOKENS="false",
                        MAX_MAIL_WAITERS_PER_CALLER="2", ARCHIVE_ENABLED="false", LOG_LEVEL="INFO") as url:
        with httpx.Client(base_url=url, timeout=30, headers={"Authorization": "Bearer admin"}) as admin:
            admin.post("/api/ensure_project", json={"human_key": "/gone"}).raise_for_status()
            admin.post("/api/register_agent", json={"project_key": "gone", "name": "GreenCastle", "program": "p", "model": "m"})
            wait = {"project_key": "gone", "agent_name": "GreenCastle", "timeout_seconds": 25}
            probe = lambda: admin.post("/api/wait_for_mail", json=wait | {"timeout_seconds": 0},  # noqa: E731
                                       headers={"Authorization": "Bearer waiter"}).status_code
            clients = [raw_wait(url, "/api/wait_for_mail", wait),
                       raw_wait(url, "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                              "params": {"name": "wait_for_mail", "arguments": wait}})]
            until(lambda: probe() == 429)  # both wait: the credential's places are taken
            for connection in clients:
                connection.close()  # the clients go away
            until(lambda: gone_waits(admin.get("/metrics").text) == 2)  # long before their 25 s
            assert probe() == 200
            # Logged as 499, over /mcp too, where it is a tool error in a 200 answer.
            until(lambda: sorted(gone_logged(log)) == ["/api/wait_for_mail", "/mcp"])  # the log is flushed twice a second


@pytest.mark.sqlite_only
def test_a_client_gone_mid_body_is_a_499_not_a_500_with_a_traceback(tmp_path):
    """QA, session 28: a request whose client closed before its body was whole was logged as an
    ERROR with a traceback (starlette's ClientDisconnect), status 500, over REST and /mcp."""
    log = tmp_path / "server.log"
    with running_server(tmp_path / "db.sqlite", stderr=log, ARCHIVE_ENABLED="false", LOG_LEVEL="INFO") as url:
        host = httpx.URL(url)
        for path in ("/api/send_message", "/mcp"):
            connection = socket.create_connection((host.host, host.port), timeout=30)
            connection.sendall(f"POST {path} HTTP/1.1\r\nHost: {host.netloc.decode()}\r\nContent-Type: application/json\r\n"
                               "Accept: application/json, text/event-stream\r\nContent-Length: 100\r\n\r\n{\"a\":".encode())
            time.sleep(0.2)
            connection.close()

        def logged() -> dict:
            lines = [json.loads(line) for line in log.read_text().splitlines(keepends=True)
                     if line.startswith('{"ts"') and line.endswith("\n")]
            return {line["path"]: line["status"] for line in lines if "status" in line and line.get("path") in ("/api/send_message", "/mcp")}

        until(lambda: len(logged()) == 2)
        assert logged() == {"/api/send_message": 499, "/mcp": 499}
        assert '"level":"ERROR"' not in log.read_text()


@pytest.mark.sqlite_only
def test_a_stopping_server_ends_its_waits_at_once(tmp_path):
    """QA, session 28: on SIGTERM the server waited for each wait_for_mail to reach its timeout
    (up to 25 s), its port closed meanwhile. Each now answers at once, empty, with its cursor."""
    import os
    import signal

    from .servers import server_pid

    with running_server(tmp_path / "db.sqlite", ARCHIVE_ENABLED="false") as url:
        httpx.post(f"{url}/api/ensure_project", json={"human_key": "/stop"}).raise_for_status()
        httpx.post(f"{url}/api/register_agent", json={"project_key": "stop", "name": "GreenCastle", "program": "p",
                                                     "model": "m"}).raise_for_status()
        answers = []

        def waiting():
            started = time.monotonic()
            answer = httpx.post(f"{url}/api/wait_for_mail", timeout=30,
                                json={"project_key": "stop", "agent_name": "GreenCastle", "timeout_seconds": 20})
            answers.append((answer.status_code, answer.json(), time.monotonic() - started))

        threads = [threading.Thread(target=waiting) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(1)  # they wait
        os.kill(server_pid(url), signal.SIGTERM)
        for thread in threads:
            thread.join(timeout=25)
    assert len(answers) == 3
    for status, body, took in answers:
        assert status == 200 and body["messages"] == [] and body["cursor"] and took < 10  # not its 20 s


def raw_wait(url: str, path: str, body: dict) -> socket.socket:
    """A connection on which credential "waiter" POSTs `body` to `path` (REST or /mcp), unread."""
    encoded = json.dumps(body).encode()
    host = httpx.URL(url)
    connection = socket.create_connection((host.host, host.port), timeout=30)
    connection.sendall(f"POST {path} HTTP/1.1\r\nHost: {host.netloc.decode()}\r\nAuthorization: Bearer waiter\r\n"
                       f"Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
                       f"Content-Length: {len(encoded)}\r\n\r\n".encode() + encoded)
    return connection


def gone_waits(metrics: str) -> float:
    """agent_mail_tool_calls_total of wait_for_mail with outcome client_closed_request."""
    line = 'agent_mail_tool_calls_total{tool="wait_for_mail",outcome="client_closed_request"} '
    found = [row for row in metrics.splitlines() if row.startswith(line)]
    return float(found[0].removeprefix(line)) if found else 0.0


def gone_logged(log: Path) -> list[str]:
    """The paths of the wait_for_mail requests logged with status 499, in the log's whole lines."""
    lines = [json.loads(line) for line in log.read_text().splitlines(keepends=True)
             if line.startswith('{"ts"') and line.endswith("\n")]
    return [line["path"] for line in lines if line.get("tool") == "wait_for_mail" and line["status"] == 499]


def until(condition) -> None:
    """Wait (10 s at most) until `condition()` holds: the server works in another process."""
    for _ in range(200):
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("still not so after 10 s")


def test_fetch_inbox_filters_and_pages(call, project):
    plain = send(call, project, "plain")
    urgent = send(call, project, "urgent", importance="urgent")
    acked = send(call, project, "acked", ack_required=True)
    pending = send(call, project, "pending", ack_required=True)
    read = send(call, project, "read")
    call("acknowledge_message", project_key=project, agent_name="GreenCastle", message_id=acked["id"])
    call("mark_message_read", project_key=project, agent_name="GreenCastle", message_id=read["id"])

    def ids(**options):
        return [m["id"] for m in call("fetch_inbox", project_key=project, agent_name="GreenCastle", **options)["messages"]]

    assert ids(unread_only=True) == [pending["id"], urgent["id"], plain["id"]]
    assert ids(ack_pending_only=True) == [pending["id"]]
    assert ids(unread_only=True, urgent_only=True) == [urgent["id"]]
    page = call("fetch_inbox", project_key=project, agent_name="GreenCastle", limit=2)
    assert [m["id"] for m in page["messages"]] == [read["id"], pending["id"]]
    page = call("fetch_inbox", project_key=project, agent_name="GreenCastle", limit=2, cursor=page["next_cursor"])
    assert [m["id"] for m in page["messages"]] == [acked["id"], urgent["id"]]
    page = call("fetch_inbox", project_key=project, agent_name="GreenCastle", limit=2, cursor=page["next_cursor"])
    assert [m["id"] for m in page["messages"]] == [plain["id"]] and page["next_cursor"] is None
    # Reading with filters marked nothing read.
    assert ids(unread_only=True) == [pending["id"], urgent["id"], plain["id"]]


def test_wait_over_rest_wakes_on_a_send(any_server):
    def post(tool, **arguments):
        response = httpx.post(f"{any_server}/api/{tool}", json=arguments, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    post("ensure_project", human_key="/wait/rest")
    for name in ("BlueLake", "GreenCastle"):
        post("register_agent", project_key="wait-rest", program="x", model="y", name=name)
        post("set_contact_policy", project_key="wait-rest", agent_name=name, policy="open")
    cursor = post("wait_for_mail", project_key="wait-rest", agent_name="GreenCastle", timeout_seconds=0)["cursor"]
    result = {}
    waiting = threading.Thread(target=lambda: result.update(post(
        "wait_for_mail", project_key="wait-rest", agent_name="GreenCastle", cursor=cursor, timeout_seconds=20)))
    waiting.start()
    time.sleep(0.3)
    sent = post("send_message", project_key="wait-rest", sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b")
    waiting.join(25)
    assert [m["id"] for m in result["messages"]] == [sent["message"]["id"]]


@pytest.mark.sqlite_only
def test_the_cli_waits_and_retries_with_a_key(settings, project):
    from click.testing import CliRunner

    from chalicelib.transports.cli import cli

    def run(*args):
        result = CliRunner().invoke(cli, ["--database-url", settings.database_url, *args])
        assert result.exit_code == 0, (result.stdout, result.stderr)
        return json.loads(result.stdout)

    cursor = run("wait-for-mail", "--project-key", project, "--agent-name", "GreenCastle", "--timeout-seconds", "0")["cursor"]
    send = ("send-message", "--project-key", project, "--sender-name", "BlueLake", "--to", "GreenCastle",
            "--subject", "cli", "--body-md", "b", "--idempotency-key", "cli-1")
    first, retry = run(*send), run(*send)
    assert first == retry
    got = run("wait-for-mail", "--project-key", project, "--agent-name", "GreenCastle", "--cursor", cursor,
              "--timeout-seconds", "5")
    assert [m["id"] for m in got["messages"]] == [first["message"]["id"]]
