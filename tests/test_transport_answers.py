"""Bounded answers (issue 11 #3, #9): get_thread pages, answers have a size cap, slow readers
are dropped, a 500 does not reset the keep-alive connection, out-of-range timestamps are a 422.
Through the real server (and the Chalice app where the route exists there)."""

import asyncio
import importlib
import socket
import sqlite3
import time

import httpx
import pytest
from chalice.test import Client

from chalicelib import invoke
from chalicelib.errors import MAX_ANSWER_BYTES, AnswerTooLarge
from chalicelib.tools import tools_by_name
from chalicelib.tools.messages import PAGE_BODY_BYTES

from .servers import ROOT, running_server

BIG = "x" * 250_000  # close to the largest body a message may have


@pytest.fixture(scope="module")
def db_path(tmp_path_factory):
    return tmp_path_factory.mktemp("answers") / "db.sqlite"


@pytest.fixture(scope="module")
def url(db_path):
    with running_server(db_path, SEND_TIMEOUT_SECONDS="1", ARCHIVE_ENABLED="false") as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            post = lambda tool, **arguments: client.post(f"/api/{tool}", json=arguments).raise_for_status()  # noqa: E731
            post("ensure_project", human_key="/answers")
            for name in ("BlueLake", "GreenCastle"):
                post("register_agent", project_key="answers", name=name, program="p", model="m")
            post("set_contact_policy", project_key="answers", agent_name="GreenCastle", policy="open")
            for n in range(25):
                post("send_message", project_key="answers", sender_name="BlueLake", to=["GreenCastle"], subject=f"small {n}",
                     body_md=f"body {n}", thread_id="SMALL")
            for n in range(40):
                post("send_message", project_key="answers", sender_name="BlueLake", to=["GreenCastle"], subject=f"big {n}",
                     body_md=BIG, thread_id="BIG")
            # A product of it and a project whose mail to the same agent is newer and as big.
            post("ensure_project", human_key="/answers-later")
            for name in ("BlueLake", "GreenCastle"):
                post("register_agent", project_key="answers-later", name=name, program="p", model="m")
            post("set_contact_policy", project_key="answers-later", agent_name="GreenCastle", policy="open")
            for n in range(20):
                post("send_message", project_key="answers-later", sender_name="BlueLake", to=["GreenCastle"],
                     subject=f"later {n}", body_md=BIG)
            post("ensure_product", product_key="answers", name="Answers")
            for key in ("answers", "answers-later"):
                post("products_link", product_key="answers", project_key=key)
        yield url


def pages(url, thread_id, **options):
    """Every page of get_thread, following next_cursor."""
    found, cursor = [], None
    for _ in range(20):
        answer = httpx.post(f"{url}/api/get_thread", json={"project_key": "answers", "thread_id": thread_id, "cursor": cursor} | options)
        assert answer.status_code == 200, answer.text
        found.append(answer.json()["messages"])
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return found
    raise AssertionError("get_thread never ended")


def test_get_thread_pages(url):
    found = pages(url, "SMALL")
    assert [len(page) for page in found] == [20, 5]  # the default limit is 20
    assert [m["subject"] for page in found for m in page] == [f"small {n}" for n in range(25)]
    assert [len(page) for page in pages(url, "SMALL", limit=10)] == [10, 10, 5]


def test_a_page_of_bodies_stops_before_the_answer_cap(url):
    found = pages(url, "BIG")
    assert sum(len(page) for page in found) == 40 and all(m["body_md"] == BIG for page in found for m in page)
    assert len(found[0]) < 20  # bodies ended the page, not the limit
    assert len(httpx.get(f"{url}/api/get_thread", params={"project_key": "answers", "thread_id": "BIG"}).content) < MAX_ANSWER_BYTES


def newest_first(*groups: tuple[str, int]) -> list[str]:
    return [f"{name} {n}" for name, count in groups for n in reversed(range(count))]


@pytest.mark.parametrize("tool, arguments, expected", [
    ("fetch_inbox", {"project_key": "answers", "agent_name": "GreenCastle"}, newest_first(("big", 40), ("small", 25))),
    ("fetch_outbox", {"project_key": "answers", "agent_name": "BlueLake"}, newest_first(("big", 40), ("small", 25))),
    ("fetch_inbox_product", {"product_key": "answers", "agent_name": "GreenCastle"},
     newest_first(("later", 20), ("big", 40), ("small", 25))),
])
def test_a_listing_with_bodies_ends_its_page_before_the_answer_cap(url, tool, arguments, expected):
    """fetch_outbox read 500 bodies of 256 KiB (390 MB) before it refused the answer as too large;
    fetch_inbox stopped reading at the cap, but refused too: ~30 such bodies were all one could ask."""
    found, cursor = [], None
    for _ in range(30):
        answer = httpx.post(f"{url}/api/{tool}", json=arguments | {"include_bodies": True, "limit": 100, "cursor": cursor})
        assert answer.status_code == 200, answer.text
        assert len(answer.content) < MAX_ANSWER_BYTES
        found.append([message["subject"] for message in answer.json()["messages"]])
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            break
    assert [subject for page in found for subject in page] == expected  # each once, in order
    assert len(found[0]) < 20  # bodies ended the page, not the limit


WIDE = {"emoji": "😀" * 62_000, "cjk": "漢字" * 41_500}  # ~250 KB of UTF-8 each, 4 and 3 bytes a character


@pytest.fixture(scope="module")
def wide(url):
    """Project answers-wide: 30 bodies of emoji and 30 of CJK to GreenCastle, alternating, on one
    thread, in a product of their own; "x" bodies between them (ASCII: counted as they are)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        post = lambda tool, **arguments: client.post(f"/api/{tool}", json=arguments).raise_for_status()  # noqa: E731
        post("ensure_project", human_key="/answers-wide")
        for name in ("BlueLake", "GreenCastle"):
            post("register_agent", project_key="answers-wide", name=name, program="p", model="m")
        post("set_contact_policy", project_key="answers-wide", agent_name="GreenCastle", policy="open")
        subjects = []
        for n in range(60):
            kind = "ascii" if n % 6 == 5 else ("emoji", "cjk")[n % 2]
            subjects.append(f"{kind} {n}")
            post("send_message", project_key="answers-wide", sender_name="BlueLake", to=["GreenCastle"], subject=subjects[-1],
                 body_md=WIDE.get(kind, BIG), thread_id="WIDE")
        post("ensure_product", product_key="answers-wide", name="Wide")
        post("products_link", product_key="answers-wide", project_key="answers-wide")
    return subjects


@pytest.mark.parametrize("tool, arguments, cursor_key", [
    ("fetch_inbox", {"project_key": "answers-wide", "agent_name": "GreenCastle"}, "next_cursor"),
    ("fetch_outbox", {"project_key": "answers-wide", "agent_name": "BlueLake"}, "next_cursor"),
    ("fetch_inbox_product", {"product_key": "answers-wide", "agent_name": "GreenCastle"}, "next_cursor"),
    ("get_thread", {"project_key": "answers-wide", "thread_id": "WIDE"}, "next_cursor"),
])
def test_a_page_of_bodies_counts_their_utf8_bytes(url, wide, tool, arguments, cursor_key):
    """PAGE_BODY_BYTES counted characters: a page of emoji held four times its budget (~16 MB),
    and the answer was refused as too large. Each page now holds ~4 MiB of UTF-8, and the cursor
    goes on with every message once."""
    found, cursor = [], None
    for _ in range(30):
        answer = httpx.post(f"{url}/api/{tool}", json=arguments | {"include_bodies": True, "limit": 100, "cursor": cursor})
        assert answer.status_code == 200, answer.text[:300]
        assert len(answer.content) <= PAGE_BODY_BYTES + 100_000  # the bodies, and the rest of each message
        messages = answer.json()["messages"]
        assert all(m["body_md"] == WIDE.get(m["subject"].split()[0], BIG) for m in messages)
        found.append([m["subject"] for m in messages])
        cursor = answer.json()[cursor_key]
        if cursor is None:
            break
    expected = wide if tool == "get_thread" else wide[::-1]  # a thread oldest first, mailboxes newest first
    assert [subject for page in found for subject in page] == expected  # each once, in order
    assert len(found) > 3  # ~16 MB of bodies: four pages at least


def test_wait_for_mail_hands_over_bodies_an_answer_at_a_time(url):
    with httpx.Client(base_url=url, timeout=30) as client:
        post = lambda tool, **arguments: client.post(f"/api/{tool}", json=arguments)  # noqa: E731
        wait = {"project_key": "answers-later", "agent_name": "GreenCastle", "timeout_seconds": 0, "limit": 200}
        cursor = post("wait_for_mail", **wait).json()["cursor"]
        for n in range(35):  # 8.75 MB
            post("send_message", project_key="answers-later", sender_name="BlueLake", to=["GreenCastle"], subject=f"w {n}",
                 body_md=BIG).raise_for_status()
        found = []
        for _ in range(10):
            answer = post("wait_for_mail", **wait, cursor=cursor)
            assert answer.status_code == 200, answer.text
            assert len(answer.content) < MAX_ANSWER_BYTES
            found.append([message["subject"] for message in answer.json()["messages"]])
            cursor = answer.json()["cursor"]
            if not answer.json()["more"]:
                break
    assert [subject for page in found for subject in page] == [f"w {n}" for n in range(35)]
    assert len(found) > 1


@pytest.mark.parametrize("through", ["the writer thread", "a synchronous call"])
def test_a_write_whose_answer_is_over_the_cap_is_refused_and_changes_nothing(settings, monkeypatch, through):
    """The answer is measured before the write commits: a 4xx for a stored write would be retried
    (a duplicate) or taken for nothing done (security review, session 16)."""
    tools = tools_by_name()
    invoke.call(tools["ensure_project"], {"human_key": "/answers"}, settings)
    for name in ("BlueLake", "GreenCastle"):
        invoke.call(tools["register_agent"], {"project_key": "answers", "name": name, "program": "p", "model": "m"}, settings)
    invoke.call(tools["set_contact_policy"], {"project_key": "answers", "agent_name": "GreenCastle", "policy": "open"}, settings)
    monkeypatch.setattr(invoke, "MAX_ANSWER_BYTES", 4000)  # a message of 5,000 characters then answers too much
    send = {"project_key": "answers", "sender_name": "BlueLake", "to": ["GreenCastle"], "subject": "s", "body_md": "x" * 5000}
    with pytest.raises(AnswerTooLarge, match="nothing was changed"):
        if through == "the writer thread":
            asyncio.run(invoke.ajson(tools["send_message"], send, settings))
        else:
            invoke.json_call(tools["send_message"], send, settings)
    inbox = invoke.call(tools["fetch_inbox"], {"project_key": "answers", "agent_name": "GreenCastle"}, settings)
    assert inbox.messages == []


def test_a_client_that_does_not_read_its_answer_is_dropped(url):
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        sock.connect((host, int(port)))
        query = "project_key=answers&agent_name=GreenCastle&include_bodies=true&limit=20"
        sock.sendall(f"GET /api/fetch_inbox?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        time.sleep(3)  # the server gives up after SEND_TIMEOUT_SECONDS=1 without progress
        sock.settimeout(5)
        received = 0
        try:
            while chunk := sock.recv(1 << 20):
                received += len(chunk)
        except ConnectionResetError:
            pass
        assert received < 20 * len(BIG)  # aborted, not served in full
    assert httpx.get(f"{url}/health").status_code == 200


def test_a_500_leaves_the_keep_alive_connection_usable(url, db_path):
    with sqlite3.connect(db_path) as db:  # a real failure: a table the server expects is gone
        db.execute("DROP TABLE IF EXISTS product_projects")
        db.execute("DROP TABLE IF EXISTS products")
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/api/list_products").status_code == 500
        assert client.get("/api/list_projects").status_code == 200  # same connection, not reset
        assert client.get("/api/list_products").status_code == 500
        assert client.get("/health").status_code == 200


def test_a_timestamp_past_the_range_once_in_utc_is_the_ranges_end(url):
    """A date-time the schema takes (it was a 422): as a filter's bound, the range's end selects the same mail."""
    inbox = {"project_key": "answers", "agent_name": "GreenCastle"}
    everything = httpx.post(f"{url}/api/fetch_inbox", json=inbox).json()["messages"]
    answer = httpx.post(f"{url}/api/fetch_inbox", json={**inbox, "since_ts": "0001-01-01T00:00:00+14:00"})
    assert answer.status_code == 200 and answer.json()["messages"] == everything and everything
    answer = httpx.post(f"{url}/api/fetch_inbox", json={**inbox, "since_ts": "9999-12-31T23:59:59-14:00"})
    assert answer.status_code == 200 and answer.json()["messages"] == []


@pytest.fixture
def chalice(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/imported.db")
    from chalicelib.config import Settings

    app = importlib.import_module("app").create_app(Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", archive_enabled=False))
    with Client(app, project_dir=str(ROOT)) as client:
        yield client


def test_chalice_pages_threads_and_reads_a_timestamp_past_the_range_as_its_end(chalice):
    import json

    def post(tool, **arguments):
        response = chalice.http.post(f"/api/{tool}", body=json.dumps(arguments), headers={"Content-Type": "application/json"})
        return response.status_code, json.loads(response.body)

    post("ensure_project", human_key="/answers")
    for name in ("BlueLake", "GreenCastle"):
        post("register_agent", project_key="answers", name=name, program="p", model="m")
    post("set_contact_policy", project_key="answers", agent_name="GreenCastle", policy="open")
    for n in range(3):
        post("send_message", project_key="answers", sender_name="BlueLake", to=["GreenCastle"], subject=f"s{n}", body_md="b", thread_id="T")
    status, first = post("get_thread", project_key="answers", thread_id="T", limit=2)
    assert status == 200 and len(first["messages"]) == 2 and first["next_cursor"]
    status, second = post("get_thread", project_key="answers", thread_id="T", limit=2, cursor=first["next_cursor"])
    assert [m["subject"] for m in second["messages"]] == ["s2"] and second["next_cursor"] is None
    status, inbox = post("fetch_inbox", project_key="answers", agent_name="GreenCastle", since_ts="0001-01-01T00:00:00+14:00")
    assert status == 200 and [m["subject"] for m in inbox["messages"]] == ["s2", "s1", "s0"]


@pytest.mark.parametrize(("method", "path", "allow"), [
    ("DELETE", "/api/list_projects", "GET, HEAD, POST"), ("GET", "/api/send_message", "POST"), ("POST", "/health", "GET, HEAD"),
    ("DELETE", "/ready", "GET, HEAD"), ("DELETE", "/mcp", "POST"), ("PUT", "/mcp", "POST"), ("GET", "/mcp", "POST"),
])
def test_a_405_names_what_is_allowed(url, method, path, allow):
    """GET /mcp among them: a stateless server would hold an SSE stream open with nothing to send."""
    answer = httpx.request(method, f"{url}{path}", headers={"Accept": "application/json, text/event-stream"}, timeout=5)
    assert (answer.status_code, answer.headers.get("allow")) == (405, allow)


def test_head_is_answered_wherever_get_is(url):
    """QA, session 31: HEAD got 405 on /health, /ready and the tools' GET routes (a balancer probing
    with HEAD took the server for down), and HEAD /health was Host-checked, which GET /health is not."""
    for path in ("/health", "/ready", "/api/health_check", "/metrics"):
        get, head = httpx.get(f"{url}{path}", timeout=5), httpx.head(f"{url}{path}", timeout=5)
        assert (head.status_code, head.content) == (get.status_code, b"") == (200, b""), path
        assert head.headers["content-type"] == get.headers["content-type"] and "content-length" in head.headers, path
    foreign = {"Host": "10.0.0.5:8765"}  # a balancer probing by address
    assert httpx.head(f"{url}/health", headers=foreign, timeout=5).status_code == 200
    assert httpx.head(f"{url}/ready", headers=foreign, timeout=5).status_code == 421  # as its GET
    assert httpx.head(f"{url}/api/send_message", timeout=5).headers["allow"] == "POST"  # no GET: no HEAD


def test_chalice_405_names_what_is_allowed(chalice):
    """As the local server's (HEAD wherever GET is, since session 37)."""
    assert chalice.http.request("DELETE", "/api/list_projects").headers["Allow"] == "GET, HEAD, POST"
    mcp_delete = chalice.http.request("DELETE", "/mcp", headers={"Accept": "application/json, text/event-stream", "Host": "127.0.0.1:8000"})
    assert (mcp_delete.status_code, mcp_delete.headers.get("allow")) == (405, "POST")
