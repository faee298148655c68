"""Attachments through the real server (uvicorn on 127.0.0.1): REST and the official MCP client,
the upload route for files larger than API Gateway's payload limit, safe downloads."""

import asyncio
import base64
import hashlib
import io
import os
import re
import socket
import struct
import time
import zlib
from pathlib import Path

import httpx
import pytest
from mcp import Client
from PIL import Image

from .servers import running_server, server_pid

MAX_BYTES = 12 * 1024 * 1024
API_GATEWAY_LIMIT = 10 * 1024 * 1024  # REST APIs' payload limit (a Lambda's own is 6 MB)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    directory = tmp_path_factory.mktemp("server")
    # RETENTION_EVERY_SECONDS=0: the worker leaves retention to the test that runs it.
    with running_server(directory / "agent_mail.db", ATTACHMENTS_DIR=str(directory / "attachments"),
                        ATTACHMENT_MAX_BYTES=str(MAX_BYTES), RETENTION_EVERY_SECONDS="0") as url:
        yield url, directory / "attachments"


@pytest.fixture(scope="module")
def team(server):
    url, _ = server
    project = httpx.post(f"{url}/api/ensure_project", json={"human_key": "/e2e/attachments"}).json()["slug"]
    for name in ("BlueLake", "GreenCastle", "RedStone"):
        httpx.post(f"{url}/api/register_agent", json={"project_key": project, "program": "p", "model": "m", "name": name})
        httpx.post(f"{url}/api/set_contact_policy", json={"project_key": project, "agent_name": name, "policy": "open"})
    return project


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def png(width=400, height=300) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "navy").save(out, "PNG")
    return out.getvalue()


def declaring(width: int, height: int) -> bytes:
    """A real PNG whose header declares width x height pixels: what a decompression bomb shows
    a reader before its pixels (which this one lacks)."""
    real = png(4, 4)
    header = struct.pack(">II", width, height) + real[24:29]  # IHDR's data: the size, then depth, colour type...
    ihdr = b"IHDR" + header
    return real[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + real[33:]


def send(url, project, attachments, to=("GreenCastle",)):
    return httpx.post(f"{url}/api/send_message", json={
        "project_key": project, "sender_name": "BlueLake", "to": list(to), "subject": "files", "body_md": "attached",
        "attachments": attachments}, timeout=60)


def download(url, project, agent, message_id, sha256):
    return httpx.get(f"{url}/api/attachments/{sha256}",
                     params={"project_key": project, "agent_name": agent, "message_id": message_id}, timeout=60)


def test_a_screenshot_and_a_log_near_the_body_limit_over_rest_and_mcp(server, team):
    url, _ = server
    screenshot = png()
    log = (b"2026-11-30T08:00:00Z DEBUG cart: recomputed totals for 1 item\n" * 12_000)[:700_000]  # base64: ~933 kB
    answer = send(url, team, [{"name": "screen.png", "content_base64": b64(screenshot), "keep_original": True},
                              {"name": "pytest.log", "content_base64": b64(log)}])
    assert answer.status_code == 200, answer.text
    message = answer.json()["message"]
    shot, text = message["attachments"]
    assert (shot["media_type"], shot["sha256"]) == ("image/png", hashlib.sha256(screenshot).hexdigest())
    assert (text["media_type"], text["size"]) == ("text/plain", len(log))

    too_big = send(url, team, [{"name": "big.log", "content_base64": b64(log + b"x" * 100_000)}])  # body over 1 MiB
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"

    async def look():
        async with Client(f"{url}/mcp", mode="legacy") as client:
            image = await client.call_tool("get_attachment", {"project_key": team, "agent_name": "GreenCastle",
                                                              "message_id": message["id"], "sha256": shot["sha256"]})
            assert not image.is_error
            details, picture = image.content
            assert (picture.type, picture.mime_type, base64.b64decode(picture.data)) == ("image", "image/png", screenshot)
            assert '"name":"screen.png"' in details.text and image.structured_content["size"] == len(screenshot)
            assert image.structured_content["content_base64"] is None  # the content travels once: in its block
            logged = await client.call_tool("get_attachment", {"project_key": team, "agent_name": "BlueLake",
                                                               "message_id": message["id"], "sha256": text["sha256"]})
            assert logged.content[1].type == "resource" and logged.content[1].resource.text == log.decode()
            refused = await client.call_tool("get_attachment", {"project_key": team, "agent_name": "RedStone",
                                                                "message_id": message["id"], "sha256": shot["sha256"]})
            assert refused.is_error and '"not_found"' in refused.content[0].text

    asyncio.run(look())

    got = download(url, team, "GreenCastle", message["id"], text["sha256"])
    assert got.status_code == 200 and got.content == log
    assert got.headers["content-type"] == "text/plain; charset=utf-8"
    assert got.headers["content-disposition"] == "attachment; filename=\"pytest.log\"; filename*=UTF-8''pytest.log"
    assert got.headers["x-content-type-options"] == "nosniff"
    assert download(url, team, "RedStone", message["id"], text["sha256"]).status_code == 404  # not a recipient
    # QA, session 32: a parameter given twice took its last value here (the tools' routes refuse it).
    twice = httpx.get(f"{url}/api/attachments/{text['sha256']}", params=[
        ("project_key", team), ("agent_name", "RedStone"), ("agent_name", "GreenCastle"), ("message_id", message["id"])])
    assert twice.status_code == 422 and "agent_name is given more than once" in twice.json()["error"]["message"]
    head = httpx.head(f"{url}/api/attachments/{text['sha256']}",
                      params={"project_key": team, "agent_name": "GreenCastle", "message_id": message["id"]})
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", str(len(log)))  # HEAD: GET's head


def test_a_head_of_a_download_answers_gets_head_and_reads_none_of_the_file(server, team):
    """HEAD /api/attachments/{sha256} read the whole file, as GET did, for uvicorn to drop it. What the
    server's process read (/proc/<pid>/io rchar: the bytes of its every read(), files and sockets alike) shows
    it without a spy: the server runs in a process of its own. The archive worker (which copies attachments
    into git) is another process, and done before the count starts."""
    url, _ = server
    data = os.urandom(8 * 1024 * 1024)
    stored = httpx.put(f"{url}/api/attachments", content=data, timeout=60).json()
    message = send(url, team, [{"name": "heap.bin", "sha256": stored["sha256"]}]).json()["message"]
    deadline = time.monotonic() + 30
    while httpx.post(f"{url}/api/archive_status", json={}).json()["pending"] and time.monotonic() < deadline:
        time.sleep(0.1)

    def read() -> int:
        return int(re.search(r"^rchar: (\d+)$", Path(f"/proc/{server_pid(url)}/io").read_text(), re.M)[1])

    where = (f"{url}/api/attachments/{stored['sha256']}",
             {"project_key": team, "agent_name": "GreenCastle", "message_id": message["id"]})
    with httpx.Client(timeout=60) as client:  # one connection: uvicorn answers its next request once this one ended

        def reading(method: str) -> tuple[httpx.Response, int]:
            """The answer, and what the server read for it (a HEAD's client has its answer before the server is done)."""
            before = read()
            answer = client.request(method, where[0], params=where[1])
            client.get(f"{url}/health")
            return answer, read() - before

        (head, read_for_head), (got, read_for_get) = reading("HEAD"), reading("GET")
    assert (head.status_code, head.content, got.status_code, got.content) == (200, b"", 200, data)
    assert {**head.headers, "date": ""} == {**got.headers, "date": ""}  # Content-Length, Content-Type and all
    assert head.headers["content-length"] == str(len(data))
    assert read_for_head < 1024 * 1024 <= len(data) <= read_for_get, (read_for_head, read_for_get)


def test_an_image_block_over_mcp_is_always_a_viewable_image(server, team):
    """QA, session 30: content stored as sent (an upload sent by sha256, keep_original, or bytes
    that are no image under an image's name) went out over MCP as an `image` block: a PNG
    declaring 20000x20000 pixels, and b"not a png at all" as image/png. Session 32: a GIF whose size
    Pillow reached after minutes (a comment of 1-byte pieces), a JPEG past the scan budget."""
    from .test_attachments_headers import commented_gif, repeating_a_scan
    from chalicelib.attachments import headers

    url, _ = server
    bomb, gif, scans = declaring(20_000, 20_000), commented_gif(headers.HEADER_BYTES), repeating_a_scan(headers.MAX_JPEG_SCANS)
    uploaded = httpx.put(f"{url}/api/attachments", content=bomb).json()
    message = send(url, team, [{"name": "bomb.png", "sha256": uploaded["sha256"]},
                               {"name": "huge.png", "content_base64": b64(bomb), "keep_original": True},
                               {"name": "fake.png", "content_base64": b64(b"not a png at all")},
                               {"name": "fine.png", "content_base64": b64(png()), "keep_original": True},
                               {"name": "comment.gif", "content_base64": b64(gif)},
                               {"name": "scans.jpg", "content_base64": b64(scans)}]).json()["message"]
    assert [a["media_type"] for a in message["attachments"]] == ["image/png"] * 4 + ["image/gif", "image/jpeg"]

    async def look():
        async with Client(f"{url}/mcp", mode="legacy") as client:
            blocks = {}
            for attachment in message["attachments"]:
                got = await client.call_tool("get_attachment", {"project_key": team, "agent_name": "GreenCastle",
                                                                "message_id": message["id"], "sha256": attachment["sha256"],
                                                                "name": attachment["name"]})
                blocks[attachment["name"]] = got.content[1]
            return blocks

    blocks = asyncio.run(look())
    assert (blocks["fine.png"].type, blocks["fine.png"].mime_type) == ("image", "image/png")
    for name, content in (("bomb.png", bomb), ("huge.png", bomb), ("fake.png", b"not a png at all"), ("comment.gif", gif),
                          ("scans.jpg", scans)):
        assert blocks[name].type == "resource", name
        assert blocks[name].resource.mime_type == "application/octet-stream"
        assert base64.b64decode(blocks[name].resource.blob) == content


def test_active_content_is_never_served_as_itself(server, team):
    url, _ = server
    html = b"<script>fetch('/api/list_projects').then(r => r.text()).then(alert)</script>"
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
    message = send(url, team, [{"name": "page.html", "content_base64": b64(html)},
                               {"name": "x.svg", "content_base64": b64(svg)}]).json()["message"]
    assert [a["media_type"] for a in message["attachments"]] == ["text/html", "image/svg+xml"]
    for attachment in message["attachments"]:
        got = download(url, team, "GreenCastle", message["id"], attachment["sha256"])
        assert got.headers["content-type"] == "application/octet-stream"
        assert got.headers["content-disposition"].startswith("attachment;")


@pytest.mark.parametrize("method, path, allowed", [
    ("POST", "/api/attachments/" + "a" * 64, "GET, HEAD"), ("DELETE", "/api/attachments/" + "a" * 64, "GET, HEAD"),
    ("POST", "/api/attachments", "PUT"), ("GET", "/api/attachments", "PUT"),
])
def test_a_method_the_attachment_routes_do_not_take_is_a_405_naming_theirs(server, method, path, allowed):
    """They fell through to the tools' routes: 404 "No tool named 'attachments/...'" (Chalice: 405)."""
    url, _ = server
    answer = httpx.request(method, f"{url}{path}")
    assert answer.status_code == 405 and answer.headers["allow"] == allowed
    assert answer.json()["error"]["code"] == "method_not_allowed"


def test_an_upload_whose_length_has_a_space_after_it_is_stored(server):
    """QA, session 31: HTTP allows spaces after a Content-Length's digits, and the parser framed the
    body by it, but the route read b"5 " as no number: 413, larger than ATTACHMENT_MAX_BYTES."""
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(f"PUT /api/attachments HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 5 \r\n\r\nhello".encode())
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"size":5' in answer, answer


def test_a_file_larger_than_api_gateways_limit_goes_through_the_upload_route(server, team):
    url, store = server
    data = os.urandom(API_GATEWAY_LIMIT + 1024 * 1024)  # 11 MiB
    sha256 = hashlib.sha256(data).hexdigest()
    target = httpx.post(f"{url}/api/request_attachment_upload",
                        json={"project_key": team, "agent_name": "BlueLake", "sha256": sha256, "size": len(data)}).json()
    assert (target["already_stored"], target["method"], target["url"]) == (False, "PUT", "/api/attachments")
    uploaded = httpx.put(f"{url}{target['url']}", content=data, headers=target["headers"], timeout=60)
    assert uploaded.json() == {"sha256": sha256, "size": len(data)}
    again = httpx.post(f"{url}/api/request_attachment_upload",
                       json={"project_key": team, "agent_name": "BlueLake", "sha256": sha256, "size": len(data)}).json()
    assert again["already_stored"] is True
    other_size = httpx.post(f"{url}/api/request_attachment_upload",
                            json={"project_key": team, "agent_name": "BlueLake", "sha256": sha256, "size": len(data) - 1})
    assert other_size.status_code == 409 and f"stored with {len(data)} bytes" in other_size.json()["error"]["message"]

    message = send(url, team, [{"name": "core.dump", "sha256": sha256}]).json()["message"]
    assert message["attachments"] == [{"name": "core.dump", "media_type": "application/octet-stream",
                                       "size": len(data), "sha256": sha256}]
    found = httpx.post(f"{url}/api/get_attachment", json={"project_key": team, "agent_name": "GreenCastle",
                                                          "message_id": message["id"], "sha256": sha256}).json()
    assert found["content_base64"] is None  # over ATTACHMENT_INLINE_MAX_BYTES: a link instead
    got = httpx.get(f"{url}{found['url']}", timeout=60)
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == sha256


def test_an_oversize_upload_is_refused_while_streaming_and_leaves_nothing(server):
    url, store = server
    before = sorted(p.name for p in store.rglob("*"))

    def chunks():  # no Content-Length: the limit must hold while the body streams in
        for _ in range(MAX_BYTES // (1024 * 1024) + 1):
            yield b"x" * (1024 * 1024)

    refused = httpx.put(f"{url}/api/attachments", content=chunks(), timeout=60)
    assert refused.status_code == 413 and "ATTACHMENT_MAX_BYTES" in refused.json()["error"]["hint"]
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # refused on its Content-Length, before any body
        sock.sendall(f"PUT /api/attachments HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {MAX_BYTES + 1}\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 413 ")
    assert sorted(p.name for p in store.rglob("*")) == before


def test_an_upload_never_sent_is_deleted_and_a_send_naming_it_meanwhile_is_refused(server, team, monkeypatch):
    """The retention run (in process, on the server's database and directory) condemns an upload
    never sent; the server refuses a send naming it in the second half of the delay (422), the
    next run deletes it, and it can be sent again (chalicelib/tools/attachment_refs.py)."""
    from datetime import datetime, timedelta, timezone

    from chalicelib import clock
    from chalicelib.config import Settings
    from chalicelib.tools.retention import run_retention

    url, attachments = server
    assert send(url, team, [{"name": "named.txt", "content_base64": b64(b"a file a message names")}]).status_code == 200
    data = b"uploaded, never sent " + os.urandom(16)
    sha = httpx.put(f"{url}/api/attachments", content=data).json()["sha256"]
    path = attachments / sha[:2] / sha[2:]
    week_ago = (datetime.now(timezone.utc) - timedelta(days=8)).timestamp()
    os.utime(path, (week_ago, week_ago))  # uploaded 8 days ago
    settings = Settings(database_url=f"sqlite:///{attachments.parent / 'agent_mail.db'}", attachments_dir=attachments)

    def retention_at(minutes: float) -> dict:
        at = datetime.now(timezone.utc) + timedelta(minutes=minutes)
        monkeypatch.setattr(clock, "now", lambda: at.isoformat(timespec="microseconds"))
        return run_retention(settings)

    assert retention_at(-40)["attachments_condemned"] == 1  # condemned 40 minutes ago: past half the hour's delay
    refused = send(url, team, [{"name": "late.bin", "sha256": sha}])
    assert refused.status_code == 422 and "is being deleted" in refused.json()["error"]["message"], refused.text
    assert path.exists()
    assert retention_at(21)["attachments_deleted"] == 1
    assert not path.exists()
    again = send(url, team, [{"name": "late.bin", "content_base64": b64(data)}])
    assert again.status_code == 200 and again.json()["message"]["attachments"][0]["sha256"] == sha and path.exists()


def test_content_missing_from_storage_is_a_clear_error_everywhere(server, team):
    """Content a message names but the storage lacks (a stdio session that wrote it under another
    ATTACHMENTS_DIR, a restore without the files): REST, the download route and the web UI
    answered a bare 500 (the route plain text 'Internal Server Error')."""
    url, attachments = server
    data = b"lost log line\n" * 100
    sent = send(url, team, [{"name": "lost.log", "media_type": "text/plain", "content_base64": b64(data)}]).json()["message"]
    sha256 = hashlib.sha256(data).hexdigest()
    (attachments / sha256[:2] / sha256[2:]).unlink()
    reader = {"project_key": team, "agent_name": "GreenCastle", "message_id": sent["id"], "sha256": sha256}
    for answer in (httpx.post(f"{url}/api/get_attachment", json=reader),
                   httpx.post(f"{url}/api/get_attachment", json={**reader, "include_content": False}),
                   download(url, team, "GreenCastle", sent["id"], sha256)):
        assert answer.status_code == 500, answer.text
        error = answer.json()["error"]
        assert "lost.log" in error["message"] and "missing from the server's storage" in error["message"]
        assert "ATTACHMENTS_DIR" in error["hint"]
    page = httpx.get(f"{url}/ui/attachment", params={"p": team, "m": sent["id"], "a": "BlueLake", "s": sha256})
    assert page.status_code == 500 and "missing from the server&#39;s storage" in page.text
