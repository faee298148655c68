"""The slow lanes (invoke.py, store/fair_lane.py): slow reads (every search) and writes' preparation
(images to WebP) run one job at a time beside the event loop, credentials taking turns, at most
MAX_SLOW_CALLS_PER_CALLER of one credential's queued. Through the ASGI app with bearer tokens (served
by uvicorn on 127.0.0.1 for a client that disconnects), on a real SQLite file; the lane's first job
is held (conftest `held`) while the others queue."""

import asyncio
import base64
import io
import json
import threading
from contextlib import suppress

import httpx
import pytest
from PIL import Image

from chalicelib import invoke
from chalicelib.ops import metrics
from chalicelib.attachments import images
from chalicelib.security import auth
from chalicelib.config import Settings, get_settings
from chalicelib.store import db, disconnect
from chalicelib.tools import search as search_tool, tools_by_name
from chalicelib.transports.asgi import create_app

from .servers import serving_in_process

TOOLS = tools_by_name()
PROJECT = "lanes"


@pytest.fixture
def serve(tmp_path, monkeypatch):
    """serve(**settings): an ASGI app taking the bearer tokens "a" and "b" (two credentials), on a
    project whose BlueLake and GreenCastle mail each other; and its settings."""
    monkeypatch.setenv("ATTACHMENTS_DIR", str(tmp_path / "attachments"))  # handlers read them (get_settings)
    get_settings.cache_clear()

    def serve(**options):
        settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", auth_mode="bearer", auth_bearer_tokens=["a", "b"],
                            require_agent_tokens=False, archive_enabled=False, **options)
        db.migrate(settings)
        invoke.call(TOOLS["ensure_project"], {"human_key": f"/{PROJECT}"}, settings)
        for name in ("BlueLake", "GreenCastle"):
            invoke.call(TOOLS["register_agent"], {"project_key": PROJECT, "name": name, "program": "p", "model": "m"}, settings)
            invoke.call(TOOLS["set_contact_policy"], {"project_key": PROJECT, "agent_name": name, "policy": "open"}, settings)
        invoke.call(TOOLS["send_message"], {"project_key": PROJECT, "sender_name": "BlueLake", "to": ["GreenCastle"],
                                            "subject": "deploy", "body_md": "the deploy plan"}, settings)
        return create_app(settings), settings

    yield serve
    get_settings.cache_clear()


def client(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8765", timeout=30)


def post(http, token: str, tool: str, body: dict) -> asyncio.Task:
    return asyncio.ensure_future(http.post(f"/api/{tool}", json=body, headers={"Authorization": f"Bearer {token}"}))


def search(http, token: str, query: str) -> asyncio.Task:
    return post(http, token, "search_messages", {"project_key": PROJECT, "query": query})


def send_image(http, token: str, subject: str) -> asyncio.Task:
    image = {"name": f"{subject}.png", "content_base64": base64.b64encode(png()).decode()}
    return post(http, token, "send_message", {"project_key": PROJECT, "sender_name": "BlueLake", "to": ["GreenCastle"],
                                              "subject": subject, "body_md": "b", "attachments": [image]})


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), "red").save(out, "PNG")
    return out.getvalue()


def searched(monkeypatch) -> tuple[list[str], list[str]]:
    """The queries of the slow reads, as they run; and each one's credential, as its thread saw it
    (the request's context goes along)."""
    ran, credentials = [], []

    def search(tool, args, *rest, real=invoke.json_call):
        ran.append(args.query)
        credentials.append(auth.current.get().subject)
        return real(tool, args, *rest)

    monkeypatch.setattr(invoke, "json_call", search)
    return ran, credentials


async def queued() -> None:
    """Let the requests just started reach their lane (none waits on anything but the lane)."""
    for _ in range(100):
        await asyncio.sleep(0)


def test_another_credential_s_search_waits_for_one_of_a_flooding_credential_s_not_all(serve, held, monkeypatch):
    """Security review, session 17: every search of every credential waited in one FIFO, so one
    that looped heavy searches (up to SEARCH_TIMEOUT_MS each) held up all the others' for seconds."""
    app, _ = serve()
    ran, credentials = searched(monkeypatch)
    started, go_on, threads = held(invoke, "json_call")

    async def scenario():
        async with client(app) as http:
            first = search(http, "a", "deploy")
            assert await asyncio.to_thread(started.wait, 10)
            flood = [search(http, "a", f"deploy{n}") for n in range(1, 5)]
            await queued()
            other = search(http, "b", "plan")
            await queued()
            go_on.set()
            return await asyncio.gather(first, *flood, other)

    answers = asyncio.run(scenario())
    assert [answer.status_code for answer in answers] == [200] * 6
    assert answers[-1].json()["results"][0]["subject"] == "deploy"
    # a's first was running and its second queued before b asked; then b's turn, then a's others.
    assert ran == ["deploy", "deploy1", "plan", "deploy2", "deploy3", "deploy4"]
    assert credentials[2] != credentials[0] and set(credentials) == {credentials[0], credentials[2]}
    assert set(threads) == {"slow-read"}


def test_image_sends_take_turns_and_one_past_the_credential_s_share_is_refused_with_nothing_stored(serve, held, monkeypatch):
    """The same for sends whose images are converted before their write (one at a time); a
    credential's sends past MAX_SLOW_CALLS_PER_CALLER get 429 at once, and nothing of them is sent."""
    app, settings = serve(max_slow_calls_per_caller=3)
    converted = []
    monkeypatch.setattr(images, "to_webp", lambda name, *rest, real=images.to_webp: converted.append(name) or real(name, *rest))
    started, go_on, _ = held(images, "to_webp")

    async def scenario():
        async with client(app) as http:
            first = send_image(http, "a", "a1")
            assert await asyncio.to_thread(started.wait, 10)
            more = [send_image(http, "a", "a2"), send_image(http, "a", "a3")]
            await queued()
            refused = await send_image(http, "a", "a4")  # a1 being converted, a2 and a3 queued: a's share
            other = send_image(http, "b", "b1")
            await queued()
            go_on.set()
            return refused, await asyncio.gather(first, *more, other)

    refused, sent = asyncio.run(scenario())
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "5"
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and "MAX_SLOW_CALLS_PER_CALLER" in error["message"]
    assert "Nothing of this call was done" in error["hint"]
    assert [answer.status_code for answer in sent] == [200] * 4
    assert converted == ["a1.png", "a2.png", "b1.png", "a3.png"]
    inbox = invoke.call(TOOLS["fetch_inbox"], {"project_key": PROJECT, "agent_name": "GreenCastle"}, settings).messages
    assert sorted(m.subject for m in inbox) == ["a1", "a2", "a3", "b1", "deploy"]  # nothing of a4


def test_a_cancelled_search_gives_its_place_back_and_never_runs(serve, held, monkeypatch):
    """A request cancelled while its job waits (an MCP client's notifications/cancelled, over
    stdio) does not run; its place in the credential's share is free at once."""
    app, _ = serve(max_slow_calls_per_caller=2)
    ran, _ = searched(monkeypatch)
    started, go_on, _ = held(invoke, "json_call")

    async def scenario():
        async with client(app) as http:
            first = search(http, "a", "deploy")
            assert await asyncio.to_thread(started.wait, 10)
            cancelled = search(http, "a", "cancelled")
            await queued()
            cancelled.cancel()
            with suppress(asyncio.CancelledError):
                await cancelled
            later = search(http, "a", "later")  # in the cancelled one's place
            await queued()
            refused = await search(http, "a", "refused")
            go_on.set()
            return refused, await asyncio.gather(first, later)

    refusals = searches("rate_limited")
    refused, answers = asyncio.run(scenario())
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert searches("rate_limited") == refusals + 1  # counted as the tool's call, though it never ran
    assert [answer.status_code for answer in answers] == [200, 200]
    assert ran == ["deploy", "later"]


def test_a_search_whose_client_disconnects_while_it_waits_never_runs_and_gives_its_place_back(serve, held, monkeypatch, transport):
    """Session 18 review: uvicorn runs a request's handler on after its client disconnected, so a
    search queued behind the lane's job still ran later, for no one, holding one of its
    credential's places until then. Through uvicorn on 127.0.0.1, over REST and over MCP."""
    app, _ = serve(max_slow_calls_per_caller=2)
    ran, _ = searched(monkeypatch)
    started, go_on, _ = held(invoke, "json_call")
    disconnected = searches("client_closed_request")

    async def scenario(url):
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            try:
                first = search(http, "a", "deploy")
                assert await asyncio.to_thread(started.wait, 10)
                _, connection = await asyncio.open_connection("127.0.0.1", httpx.URL(url).port)
                connection.write(raw_search(transport, url, "gone"))
                await until(lambda: slow_reads() == 2)  # deploy running, gone queued
                connection.close()  # the client goes away
                await until(lambda: slow_reads() == 1)
                later = search(http, "a", "later")  # in the gone one's place
                await until(lambda: slow_reads() == 2)
                refused = await search(http, "a", "refused")
            finally:
                go_on.set()
            return refused, await asyncio.gather(first, later)

    with serving_in_process(app) as url:
        refused, answers = asyncio.run(scenario(url))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert [answer.status_code for answer in answers] == [200, 200]
    assert ran == ["deploy", "later"]
    assert searches("client_closed_request") == disconnected + 1  # counted as the tool's call, though it never ran


@pytest.mark.parametrize("steps", [1, 10**9], ids=["in-a-statement", "between-steps"])
def test_a_search_whose_client_disconnects_while_it_runs_stops_at_its_next_step(serve, monkeypatch, transport, steps):
    """A search already running when its client disconnected went on to its end for no one (up to
    SEARCH_TIMEOUT_MS), holding the lane's one thread: it is told now, and stops at its next
    statement (SQLite's progress handler, every `steps` steps) or step in Python. Held inside
    (its budget set) until the server has seen the disconnect."""
    app, _ = serve()
    monkeypatch.setattr(search_tool, "STEPS_BETWEEN_CHECKS", steps)
    started, go_on, told = held_inside_search(monkeypatch)
    disconnected, answered = searches("client_closed_request"), searches("ok")

    async def scenario(url):
        try:
            _, connection = await asyncio.open_connection("127.0.0.1", httpx.URL(url).port)
            connection.write(raw_search(transport, url, "deploy"))
            assert await asyncio.to_thread(started.wait, 10)
            connection.close()
            await until(lambda: told[0].is_set())
        finally:
            go_on.set()
        await until(lambda: slow_reads() == 0)

    with serving_in_process(app) as url:
        asyncio.run(scenario(url))
    assert searches("client_closed_request") == disconnected + 1
    assert searches("ok") == answered  # it did not run on to an answer


def test_a_web_ui_search_whose_client_disconnects_stops_at_its_next_step(serve, monkeypatch):
    """The web UI's pages run in threads of their own, not in a lane: a search page whose visitor
    left went on searching every project (up to SEARCH_TIMEOUT_MS) for no one. It is told too."""
    _, settings = serve()
    app = create_app(Settings(database_url=settings.database_url, archive_enabled=False))  # no sign-in: loopback only
    started, go_on, told = held_inside_search(monkeypatch)
    disconnected, answered = searches("client_closed_request"), searches("ok")

    async def scenario(url):
        try:
            _, connection = await asyncio.open_connection("127.0.0.1", httpx.URL(url).port)
            connection.write(f"GET /ui/search?q=deploy HTTP/1.1\r\nHost: {httpx.URL(url).netloc.decode()}\r\n\r\n".encode())
            assert await asyncio.to_thread(started.wait, 10)
            connection.close()
            await until(lambda: told[0].is_set())
        finally:
            go_on.set()
        await until(lambda: searches("client_closed_request") == disconnected + 1)

    with serving_in_process(app) as url:
        asyncio.run(scenario(url))
    assert searches("ok") == answered  # it did not run on to an answer


def held_inside_search(monkeypatch) -> tuple[threading.Event, threading.Event, list]:
    """(started, go_on, told): a search held inside, its budget set, until the test sets go_on;
    told: the "client left" event it runs with (disconnect.left)."""
    started, go_on, told, ranked_page = threading.Event(), threading.Event(), [], search_tool._ranked_page

    def holding(*args, **kwargs):
        told.append(disconnect.left.get())
        started.set()
        go_on.wait(timeout=10)
        return ranked_page(*args, **kwargs)

    monkeypatch.setattr(search_tool, "_ranked_page", holding)
    return started, go_on, told


@pytest.fixture(params=["rest", "mcp"])
def transport(request) -> str:
    return request.param


def raw_search(transport: str, url: str, query: str) -> bytes:
    """A search by credential "a" as bytes on the wire: POST /api/search_messages, or an MCP tools/call."""
    arguments = {"project_key": PROJECT, "query": query}
    if transport == "rest":
        path, body, accept = "/api/search_messages", arguments, "application/json"
    else:
        path, accept = "/mcp", "application/json, text/event-stream"
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search_messages", "arguments": arguments}}
    encoded = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {httpx.URL(url).netloc.decode()}\r\nAuthorization: Bearer a\r\n"
            f"Content-Type: application/json\r\nAccept: {accept}\r\nContent-Length: {len(encoded)}\r\n\r\n")
    return head.encode() + encoded


def slow_reads() -> int:
    """Slow reads queued or running, of every credential."""
    with invoke._slow_reads.lock:
        return sum(invoke._slow_reads.counts.values())


async def until(condition) -> None:
    """Wait (10 s at most) until `condition()` holds: the server works on another thread."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("still not so after 10 s")


def searches(outcome: str) -> float:
    """agent_mail_tool_calls_total of search_messages with that outcome, in this process."""
    line = f'agent_mail_tool_calls_total{{tool="search_messages",outcome="{outcome}"}} '
    found = [row for row in metrics.prometheus_text().splitlines() if row.startswith(line)]
    return float(found[0].removeprefix(line)) if found else 0.0
