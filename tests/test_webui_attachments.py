"""Attachments in the web UI (chalicelib/web/downloads.py): listed on the thread page, raster
images shown inline, everything else a download that a browser never runs; read through
get_attachment with the session's credential. Through the real server and the Chalice app."""

import base64
import hashlib
import importlib
import io
import json
import re
from html import unescape
from urllib.parse import unquote

import httpx
import pytest
import requests
from chalice.test import Client
from PIL import Image

from chalicelib import invoke
from chalicelib.attachments.storage import content_disposition
from chalicelib.config import get_settings
from chalicelib.tools import tools_by_name

from .servers import running_server
from .test_attachments_s3 import bucket, chalice  # noqa: F401 (moto's bucket, the Chalice app storing in it)

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script></svg>'
HTML = b"<html><script>alert(1)</script></html>"
TEXT = b"pytest: 3 failed\n"
HOSTILE = ['a"b\'; filename=evil.html.txt', "..evil.txt", "ünïcødé 報告 📎.txt", "%0d%0aSet-Cookie: x=1.txt",
           "<img src=x onerror=alert(1)>.png"]
INLINE_MAX = 100_000  # ATTACHMENT_INLINE_MAX_BYTES here: a larger file takes the streamed path


def png(color="navy") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(out, "PNG")
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def files() -> list[dict]:
    return [
        {"name": "shot.png", "content_base64": b64(png()), "keep_original": True},
        {"name": "pic.png", "content_base64": b64(png("teal"))},  # stored as WebP: inline too
        {"name": "notes.txt", "content_base64": b64(TEXT)},
        {"name": "evil.svg", "content_base64": b64(SVG)},
        {"name": "page.html", "content_base64": b64(HTML)},
        {"name": "fake.png", "media_type": "image/svg+xml", "content_base64": b64(SVG + b" ")},  # a name never makes it an image
        {"name": "big.log", "content_base64": b64(b"x" * (INLINE_MAX + 1))},
        *({"name": name, "content_base64": b64(name.encode()), "media_type": "text/plain"} for name in HOSTILE),
    ]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def links(page: str) -> dict[str, dict]:
    """name -> {"img": src or None, "href": download link, "meta": "type · size"} from a thread page."""
    found = {}
    for item in re.findall(r'<ul class="attachments">(.*?)</ul>', page, re.S):
        for li in re.findall(r"<li>(.*?)</li>", item, re.S):
            img = re.search(r'<img src="([^"]+)"', li)
            file = re.search(r'<a class="file" href="([^"]+)" download><bdi>([^<]*)</bdi></a>', li)
            meta = re.search(r'<span class="meta">([^<]*)</span>', li)
            found[unescape(file.group(2))] = {"img": img and unescape(img.group(1)), "href": unescape(file.group(1)),
                                              "meta": unescape(meta.group(1))}
    return found


def check_download(headers, name: str, inline: bool, media_type: str | None = None) -> None:
    """The headers every attachment answer has, whatever the transport."""
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-security-policy"].startswith("sandbox; default-src 'none'")
    assert headers["cache-control"].startswith("private")
    disposition = headers["content-disposition"]
    assert disposition.startswith("inline;" if inline else "attachment;")
    assert headers["content-type"] == (media_type if inline else "application/octet-stream")
    ascii_name = re.fullmatch(r'\w+; filename="([^"\\\r\n]*)"; filename\*=UTF-8\'\'(\S+)', disposition)
    assert ascii_name, disposition
    assert unquote(ascii_name.group(2)) == name  # RFC 6266's filename* gives the name back exactly


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    directory = tmp_path_factory.mktemp("webui-attachments")
    with running_server(directory / "agent_mail.db", ATTACHMENT_INLINE_MAX_BYTES=str(INLINE_MAX)) as url:
        api = httpx.Client(base_url=url, timeout=60)

        def call(tool, **args):
            answer = api.post(f"/api/{tool}", json=args)
            assert answer.status_code == 200, answer.text
            return answer.json()

        call("ensure_project", human_key="/srv/files")
        for name in ("BlueLake", "GreenCastle", "RedStone"):
            call("register_agent", project_key="srv-files", program="p", model="m", name=name)
            call("set_contact_policy", project_key="srv-files", agent_name=name, policy="open")
        sent = call("send_message", project_key="srv-files", sender_name="BlueLake", to=["GreenCastle"], subject="files",
                    body_md="see attached", thread_id="F-1", attachments=files())["message"]
        yield url, api, sent


def test_the_thread_page_lists_attachments_and_shows_only_raster_images_inline(site):
    url, api, sent = site
    page = api.get("/ui/thread", params={"p": "srv-files", "t": "F-1"}).text
    shown = links(page)
    assert set(shown) == {a["name"] for a in sent["attachments"]}
    inline = {name for name, item in shown.items() if item["img"]}
    assert inline == {"shot.png", "pic.webp"}  # never the SVG, HTML, nor a large file
    assert shown["shot.png"]["meta"].startswith("image/png · ") and shown["notes.txt"]["meta"] == "text/plain · 17 bytes"
    assert shown["big.log"]["meta"] == "text/plain · 97.7 KB"
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.png" in page  # names are text
    inbox = api.get("/").text
    assert re.search(r'class="tag clip"[^>]*>12 files<', inbox)  # the inbox row says how many


def test_an_agents_page_and_a_products_view_as_agent_say_how_many_files_a_message_has(site):
    """The inbox said "12 files"; an agent's received mail and outbox, and a product's "View as
    agent", said nothing."""
    url, api, sent = site
    api.post("/api/ensure_product", json={"product_key": "files"}).raise_for_status()
    api.post("/api/products_link", json={"product_key": "files", "project_key": "srv-files"}).raise_for_status()
    pages = {"received": ("/ui/agent", {"p": "srv-files", "a": "GreenCastle"}), "sent": ("/ui/agent", {"p": "srv-files", "a": "BlueLake"}),
             "as agent": ("/ui/product", {"k": "files", "as": "GreenCastle"})}
    for what, (path, params) in pages.items():
        page = api.get(path, params=params).text
        if what == "sent":
            page = page[page.index("<h2>Outbox</h2>"):]
        assert re.search(r'class="tag clip"[^>]*>12 files<', page), what


def test_every_answer_is_safe_and_images_alone_are_inline(site):
    url, api, sent = site
    shown = links(api.get("/ui/thread", params={"p": "srv-files", "t": "F-1"}).text)
    by_name = {a["name"]: a for a in sent["attachments"]}
    image = api.get(shown["shot.png"]["img"])
    assert image.status_code == 200 and image.content == png()
    check_download(image.headers, "shot.png", inline=True, media_type="image/png")
    assert "<script" not in image.text and "Referrer-Policy" in image.headers
    webp = api.get(shown["pic.webp"]["img"])
    check_download(webp.headers, "pic.webp", inline=True, media_type="image/webp")
    for name, content in (("notes.txt", TEXT), ("evil.svg", SVG), ("page.html", HTML), ("fake.png", SVG + b" "), ("shot.png", png())):
        answer = api.get(shown[name]["href"])  # the download link: always an attachment
        assert answer.status_code == 200 and answer.content == content, name
        check_download(answer.headers, name, inline=False)
    # Asking for the SVG or HTML as an image (no download=1) changes nothing.
    for name in ("evil.svg", "page.html", "fake.png"):
        answer = api.get(shown[name]["href"].replace("&download=1", ""))
        check_download(answer.headers, name, inline=False)
    big = api.get(shown["big.log"]["href"])  # over the inline size: streamed from storage
    assert big.content == b"x" * (INLINE_MAX + 1) and big.headers["content-length"] == str(INLINE_MAX + 1)
    check_download(big.headers, "big.log", inline=False)
    assert by_name["big.log"]["sha256"] == sha(big.content)
    head = api.head(shown["big.log"]["href"])  # GET's head, and no body (nor the file read: send_file)
    assert (head.status_code, head.content, {**head.headers, "date": ""}) == (200, b"", {**big.headers, "date": ""})


def test_a_head_answers_gets_head_and_no_body(site):
    """Each kind of answer: a small file (its download link, and without download=1), an image
    inline and as a download, one stored as sent that is no image, a large file streamed."""
    url, api, sent = site
    shown = links(api.get("/ui/thread", params={"p": "srv-files", "t": "F-1"}).text)
    asked = [shown["notes.txt"]["href"], shown["notes.txt"]["href"].replace("&download=1", ""), shown["shot.png"]["img"],
             shown["shot.png"]["href"], shown["evil.svg"]["href"].replace("&download=1", ""), shown["big.log"]["href"]]
    for address in asked:
        got, head = api.get(address), api.head(address)
        assert (head.status_code, head.content) == (200, b""), address
        assert {**head.headers, "date": ""} == {**got.headers, "date": ""}, address
        assert int(head.headers["content-length"]) == len(got.content) > 0, address


def test_a_head_of_a_small_file_reads_its_details_not_its_content(tmp_path, monkeypatch):
    """QA, session 37: a HEAD read the whole content of an attachment small enough to come back
    from get_attachment, only for its size and type. An image's still is: whether it is shown
    inline (its Content-Type and Content-Disposition) depends on its content."""
    from chalicelib.attachments.storage import LocalStorage
    from chalicelib.config import Settings
    from chalicelib.web import http, pages

    monkeypatch.setenv("ATTACHMENTS_DIR", str(tmp_path / "attachments"))  # (get_attachment reads get_settings())
    get_settings.cache_clear()
    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", archive_enabled=False)
    tools = tools_by_name()

    def call(tool: str, **arguments):
        return invoke.call(tools[tool], arguments, settings)

    call("ensure_project", human_key="/srv/head")
    for name in ("BlueLake", "GreenCastle"):
        call("register_agent", project_key="srv-head", program="p", model="m", name=name)
        call("set_contact_policy", project_key="srv-head", agent_name=name, policy="open")
    message = call("send_message", project_key="srv-head", sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                   attachments=[{"name": "notes.txt", "content_base64": b64(TEXT)},
                                {"name": "shot.png", "content_base64": b64(png()), "keep_original": True}]).message
    read = []
    real = LocalStorage.read
    monkeypatch.setattr(LocalStorage, "read", lambda self, sha256: (read.append(sha256), real(self, sha256))[1])
    ui = pages.WebUI(settings)

    def answer(method: str, name: str, download: bool = True):
        query = {"p": "srv-head", "m": str(message.id), "a": "BlueLake", "s": sha(TEXT if name == "notes.txt" else png()), "n": name}
        response = ui.handle(http.Request(method, "/ui/attachment", query=query | ({"download": "1"} if download else {})))
        assert response.status == 200 and response.file is None, response.body[:300]
        return response

    for download in (True, False):
        head = answer("HEAD", "notes.txt", download)
        assert read == [] and head.body == b""
        got = answer("GET", "notes.txt", download)
        assert (head.length, head.content_type) == (len(TEXT), got.content_type)
        assert {**head.headers, "Set-Cookie": ""} == {**got.headers, "Set-Cookie": ""}  # (each a new session's cookie)
        assert got.body == TEXT and read == [sha(TEXT)]  # GET's read only
        read.clear()
    assert answer("HEAD", "shot.png").length == len(png()) and read == []  # its download: the content does not matter
    head = answer("HEAD", "shot.png", download=False)
    assert (head.body, head.length, head.content_type, head.headers["Content-Disposition"].split(";")[0]) == (
        png(), None, "image/png", "inline")  # (the server sends no body: uvicorn leaves a HEAD's out)
    get_settings.cache_clear()


def test_an_image_stored_as_sent_is_shown_only_if_it_is_one(site):
    """QA, session 30: an upload sent by sha256 is stored as sent, never checked: a PNG declaring
    20000x20000 pixels was served inline for the thread page's <img>, into the overseer's browser;
    so were bytes that are no image under an image's name."""
    from .test_attachments_http import declaring

    url, api, _ = site
    bomb = declaring(20_000, 20_000)
    uploaded = api.put("/api/attachments", content=bomb).json()
    sent = api.post("/api/send_message", json={
        "project_key": "srv-files", "sender_name": "BlueLake", "to": ["GreenCastle"], "subject": "stored as sent",
        "body_md": "b", "thread_id": "F-2", "attachments": [
            {"name": "bomb.png", "sha256": uploaded["sha256"]},
            {"name": "fake.png", "content_base64": b64(b"not a png at all")},
            {"name": "fine.png", "content_base64": b64(png()), "keep_original": True}]}).json()["message"]
    assert [a["media_type"] for a in sent["attachments"]] == ["image/png"] * 3
    shown = links(api.get("/ui/thread", params={"p": "srv-files", "t": "F-2"}).text)
    check_download(api.get(shown["fine.png"]["img"]).headers, "fine.png", inline=True, media_type="image/png")
    for name, content in (("bomb.png", bomb), ("fake.png", b"not a png at all")):
        answer = api.get(shown[name]["img"] or shown[name]["href"].replace("&download=1", ""))
        assert answer.status_code == 200 and answer.content == content
        check_download(answer.headers, name, inline=False)  # a download: no browser decodes it as an image


def test_each_of_two_attachments_with_the_same_bytes_is_served_as_itself(site):
    """Same bytes under two names (or two types) had the same link: both downloaded as the first's
    name, and a PNG listed after the same bytes declared SVG was served as the SVG (not shown)."""
    url, api, sent = site
    twice = [{"name": "report-monday.txt", "content_base64": b64(TEXT)}, {"name": "report-tuesday.csv", "content_base64": b64(TEXT)},
             {"name": "drawing.svg", "media_type": "image/svg+xml", "content_base64": b64(png()), "keep_original": True},
             {"name": "drawing.png", "content_base64": b64(png()), "keep_original": True}]
    message = api.post("/api/send_message", json={"project_key": "srv-files", "sender_name": "BlueLake", "to": ["GreenCastle"],
                                                  "subject": "twice", "body_md": "b", "thread_id": "F-2", "attachments": twice})
    assert message.status_code == 200, message.text
    shown = links(api.get("/ui/thread", params={"p": "srv-files", "t": "F-2"}).text)
    for name in ("report-monday.txt", "report-tuesday.csv", "drawing.svg", "drawing.png"):
        answer = api.get(shown[name]["href"])
        assert answer.status_code == 200 and answer.content == (TEXT if name.startswith("report") else png())
        check_download(answer.headers, name, inline=False)
    assert shown["drawing.svg"]["img"] is None
    check_download(api.get(shown["drawing.png"]["img"]).headers, "drawing.png", inline=True, media_type="image/png")
    # The API's download route picks the same way (name=), as get_attachment's url says.
    rest = api.get(f"/api/attachments/{sha(TEXT)}", params={"project_key": "srv-files", "agent_name": "GreenCastle",
                                                           "message_id": message.json()["message"]["id"], "name": "report-tuesday.csv"})
    assert rest.status_code == 200 and rest.content == TEXT
    assert rest.headers["content-disposition"].endswith("UTF-8''report-tuesday.csv")


def test_hostile_file_names_are_encoded_and_control_characters_refused(site):
    url, api, sent = site
    shown = links(api.get("/ui/thread", params={"p": "srv-files", "t": "F-1"}).text)
    for name in HOSTILE:
        answer = api.get(shown[name]["href"])
        assert answer.content == name.encode()
        check_download(answer.headers, name, inline=False)
        raw = answer.headers.raw
        [(_, disposition)] = [(n, v) for n, v in raw if n.lower() == b"content-disposition"]
        assert disposition.isascii() and b"\r" not in disposition and b"\n" not in disposition
        assert disposition.count(b'"') == 2 and b"/" not in disposition
    for name in ("a\r\nSet-Cookie: x=1", "../etc/passwd", "a/b.txt", "..", "c\\d"):  # refused before anything is stored
        refused = api.post("/api/send_message", json={"project_key": "srv-files", "sender_name": "BlueLake", "to": ["GreenCastle"],
                                                      "subject": "x", "body_md": "x",
                                                      "attachments": [{"name": name, "content_base64": b64(b"x")}]})
        assert refused.status_code == 422, name
    # The header itself, whatever name reaches it.
    for name in ('x"\r\nSet-Cookie: a=b', "../../etc/passwd", "é\u202egnp.exe"):
        header = content_disposition(name, "inline")
        assert header.isascii() and "\r" not in header and "\n" not in header and header.count('"') == 2
        assert unquote(header.split("UTF-8''")[1]) == name and "/" not in header.split(";")[1]


def test_a_file_names_bidi_controls_show_and_what_agents_wrote_is_isolated(site):
    """QA, session 31: a file named "invoice\u202efdp.exe" (RIGHT-TO-LEFT OVERRIDE) read
    "invoiceexe.pdf" on the thread page, its type and size after it reversed too; a program
    "claude-code\u202e" turned its model "opus-4" into "4-supo", and so on for a reservation's
    pattern or a build slot: none was isolated, and a name's control could not be seen."""
    url, api, _ = site
    rlo, rli = "\u202e", "\u2067"
    for call, body in (("register_agent", {"program": f"claude-code{rlo}", "model": "opus-4", "name": "AmberFinch"}),
                       ("set_contact_policy", {"agent_name": "AmberFinch", "policy": "open"}),
                       ("file_reservation_paths", {"agent_name": "AmberFinch", "paths": [f"src/{rlo}sj.nim/*"], "reason": "x"}),
                       ("acquire_build_slot", {"agent_name": "AmberFinch", "slot": f"ci{rlo}"})):
        api.post(f"/api/{call}", json={"project_key": "srv-files", **body}).raise_for_status()
    names = [f"invoice{rlo}fdp.exe", f"shot{rli}.png"]
    sent = api.post("/api/send_message", json={
        "project_key": "srv-files", "sender_name": "AmberFinch", "to": ["GreenCastle"], "subject": "Invoice", "body_md": "Attached.",
        "thread_id": "RLO", "attachments": [{"name": names[0], "content_base64": b64(b"MZ")},
                                            {"name": names[1], "content_base64": b64(png()), "keep_original": True}]})
    sent.raise_for_status()
    page = api.get("/ui/thread", params={"p": "srv-files", "t": "RLO"}).text
    assert rlo not in page and rli not in page  # (the subject and body hold none)
    shown = links(page)
    assert set(shown) == {"invoice⟨U+202E⟩fdp.exe", "shot⟨U+2067⟩.png"}  # each in a <bdi> (links())
    assert 'alt="shot⟨U+2067⟩.png"' in page
    for name, attachment in zip(names, sent.json()["message"]["attachments"]):  # the download keeps the exact name
        answer = api.get(shown[name.replace(rlo, "⟨U+202E⟩").replace(rli, "⟨U+2067⟩")]["href"])
        assert answer.status_code == 200 and unquote(answer.headers["content-disposition"].split("UTF-8''")[1]) == name
    agent = api.get("/ui/agent", params={"p": "srv-files", "a": "AmberFinch"}).text
    assert f"<dd><bdi>claude-code{rlo}</bdi> · <bdi>opus-4</bdi></dd>" in agent
    project = api.get("/ui/project", params={"p": "srv-files"}).text
    assert f"<td class=\"long-text\"><bdi>claude-code{rlo}</bdi> · <bdi>opus-4</bdi></td>" in project
    assert f"<code><bdi>src/<wbr>{rlo}sj.nim/<wbr>*</bdi></code>" in project and f"<code><bdi>ci{rlo}</bdi></code>" in project



def test_a_title_and_an_option_are_isolated(site):
    """What <bdi> cannot wrap (session 31 left them): a subject's RIGHT-TO-LEFT OVERRIDE reversed
    " · Agent Mail" in the page's <title>, and a project's key the compose list's labels after it.
    (An error page shows what was typed as Python writes it out: 'no\\u202esuch'.)"""
    url, api, _ = site
    rlo = "\u202e"
    api.post("/api/ensure_project", json={"human_key": f"/srv/{rlo}evil"}).raise_for_status()
    api.post("/api/send_message", json={"project_key": "srv-files", "sender_name": "BlueLake", "to": ["GreenCastle"],
                                        "subject": f"Plan {rlo}B", "body_md": "x", "thread_id": "TITLED"}).raise_for_status()
    thread = api.get("/ui/thread", params={"p": "srv-files", "t": "TITLED"}).text
    assert f"<title>\u2068Plan {rlo}B\u2069 · Agent Mail</title>" in thread
    compose = api.get("/ui/compose").text
    assert f">\u2068/srv/{rlo}evil\u2069</option>" in compose
    missing = api.get("/ui/project", params={"p": f"no{rlo}such"})
    assert missing.status_code == 404 and rlo not in missing.text and "no\\u202esuch" in missing.text


def test_only_who_may_read_the_message_reads_its_attachments(site):
    url, api, sent = site
    attachment = sent["attachments"][2]
    base = {"p": "srv-files", "m": sent["id"], "s": attachment["sha256"]}
    assert api.get("/ui/attachment", params={**base, "a": "GreenCastle"}).status_code == 200  # a recipient
    assert api.get("/ui/attachment", params={**base, "a": "RedStone"}).status_code == 404  # neither sender nor recipient
    assert api.get("/ui/attachment", params={**base, "a": "BlueLake", "s": "0" * 64}).status_code == 404
    assert api.get("/ui/attachment", params={**base, "a": "BlueLake", "m": "999999"}).status_code == 404
    bad = api.get("/ui/attachment", params={**base, "a": "BlueLake", "s": "../../etc/passwd"})
    assert bad.status_code == 422 and bad.headers["content-type"].startswith("text/html")  # the UI's error page


TOKENS = ["admin-token-0123456789",
          {"token": "alpha-overseer-0123456789", "projects": ["alpha"], "role": "admin"}]  # oversees alpha only


def _signed_in(url: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/login").text).group(1)
    assert client.post("/ui/login", data={"csrf": csrf, "token": token, "next": "/"}).status_code == 303
    return client


def test_with_authentication_a_session_reads_only_attachments_of_its_projects(tmp_path):
    with running_server(tmp_path / "agent_mail.db", AUTH_MODE="bearer", AUTH_BEARER_TOKENS=json.dumps(TOKENS)) as url:
        admin = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKENS[0]}"})
        links_of = {}
        for project in ("alpha", "beta"):
            admin.post("/api/ensure_project", json={"human_key": f"/{project}"}).raise_for_status()
            token = admin.post("/api/register_agent", json={"project_key": project, "program": "p", "model": "m",
                                                            "name": "BlueLake"}).json()["registration_token"]
            sent = admin.post("/api/send_message", json={
                "project_key": project, "sender_name": "BlueLake", "to": ["BlueLake"], "subject": "s", "body_md": "b",
                "thread_id": "T", "sender_token": token, "attachments": [{"name": "notes.txt", "content_base64": b64(TEXT)}]})
            assert sent.status_code == 200, sent.text
            sent = sent.json()["message"]
            links_of[project] = f"/ui/attachment?p={project}&m={sent['id']}&a=BlueLake&s={sha(TEXT)}&n=notes.txt&download=1"
        anonymous = httpx.Client(base_url=url, timeout=60)
        refused = anonymous.get(links_of["alpha"])
        assert refused.status_code == 303 and refused.headers["location"].startswith("/ui/login?next=")
        overseer = _signed_in(url, TOKENS[1]["token"])
        page = overseer.get("/ui/thread?p=alpha&t=T").text
        assert links(page)["notes.txt"]["href"] == links_of["alpha"]
        assert overseer.get(links_of["alpha"]).content == TEXT
        assert overseer.get(links_of["beta"]).status_code == 403  # out of the credential's projects
        assert overseer.get("/ui/thread?p=beta&t=T").status_code == 403  # like the thread itself
        assert _signed_in(url, TOKENS[0]).get(links_of["beta"]).content == TEXT


@pytest.fixture
def small_inline(monkeypatch):
    """ATTACHMENT_INLINE_MAX_BYTES=INLINE_MAX for the Chalice app (asked for before `chalice`, which reads the settings)."""
    monkeypatch.setenv("ATTACHMENT_INLINE_MAX_BYTES", str(INLINE_MAX))


def _headers(response) -> dict[str, str]:
    return {name.lower(): value for name, value in response.headers.items()}


def test_the_same_on_chalice_with_s3(small_inline, chalice, bucket):
    post, http = chalice
    big = b"y" * (INLINE_MAX + 1)
    status, _ = post("send_message", project_key="aws-demo", sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                     thread_id="F", attachments=[*files()[:5], files()[7], {"name": "big.log", "content_base64": b64(big)}])
    assert status == 200
    page = http.get("/ui/thread?p=aws-demo&t=F")
    assert page.status_code == 200
    shown = links(page.body.decode())
    assert {name for name, item in shown.items() if item["img"]} == {"shot.png", "pic.webp"}
    accept = {"Accept": "image/avif,image/webp,*/*;q=0.8"}  # what a browser sends for an image
    image = http.get(shown["shot.png"]["img"], headers=accept)
    assert image.status_code == 200 and image.body == png()
    check_download(_headers(image), "shot.png", inline=True, media_type="image/png")
    for name, content in (("notes.txt", TEXT), ("evil.svg", SVG), ("page.html", HTML), (HOSTILE[0], HOSTILE[0].encode())):
        answer = http.get(shown[name]["href"], headers={"Accept": "*/*"})
        assert answer.status_code == 200 and answer.body == content, name
        check_download(_headers(answer), name, inline=False)
    assert http.get(shown["notes.txt"]["href"].replace("a=BlueLake", "a=Nobody"), headers={"Accept": "*/*"}).status_code == 404
    # Too large for a Lambda's answer: the short-lived S3 link, itself an attachment.
    redirect = http.get(shown["big.log"]["href"], headers={"Accept": "*/*"})
    assert redirect.status_code == 302 and redirect.headers["Location"].startswith(f"https://{bucket}.s3")
    fetched = requests.get(redirect.headers["Location"])
    assert fetched.content == big and fetched.headers["Content-Disposition"].startswith("attachment;")


def test_chalice_with_local_storage_serves_a_large_file_whole(tmp_path, monkeypatch):
    """A trial deployment keeps attachments in the Lambda's /tmp: no S3 link, the file itself."""
    for name, value in (("DATABASE_URL", f"sqlite:///{tmp_path}/a.db"), ("ATTACHMENTS_DIR", str(tmp_path / "files")),
                        ("ARCHIVE_ENABLED", "false"), ("ATTACHMENT_INLINE_MAX_BYTES", "1000")):
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        settings, tools, log = get_settings(), tools_by_name(), b"z" * 5000
        app = importlib.import_module("app").create_app(settings)
        invoke.call(tools["ensure_project"], {"human_key": "/trial"}, settings)
        invoke.call(tools["register_agent"], {"project_key": "trial", "program": "p", "model": "m", "name": "BlueLake"}, settings)
        sent = invoke.call(tools["send_message"], {"project_key": "trial", "sender_name": "BlueLake", "to": ["BlueLake"],
                                                   "subject": "s", "body_md": "b", "attachments": [
                                                       {"name": "big.log", "content_base64": b64(log)}]}, settings).message
        with Client(app) as client:
            answer = client.http.get(f"/ui/attachment?p=trial&m={sent.id}&a=BlueLake&s={sha(log)}", headers={"Accept": "*/*"})
        assert answer.status_code == 200 and answer.body == log
        check_download(_headers(answer), "big.log", inline=False)
    finally:
        get_settings.cache_clear()
