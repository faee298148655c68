"""Attachments through the tools (invoke.call, as every transport runs them), on both backends:
sending (base64, paths inside the project, uploads), limits, listing, reading, access, the
archive round trip."""

import asyncio
import base64
import hashlib
import io
import os
import struct
import threading
import zlib

import pytest
from PIL import Image, ImageDraw

from chalicelib import invoke
from chalicelib.archive.restore import restore as restore_archive
from chalicelib.archive.verify import verify as verify_archive
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.render import parse_document
from chalicelib.archive import render, worker
from chalicelib.archive.worker import drain
from chalicelib.attachments import headers, images, intake
from chalicelib.config import Settings, get_settings
from chalicelib.errors import InvalidArgument, NotFound, ToolError
from chalicelib.registry import to_json
from chalicelib.store import db
from chalicelib.tools import tools_by_name
from tests.sql import write_lock_free
from .test_archive_worker import canonical

pytestmark = pytest.mark.both_backends
TOOLS = tools_by_name()


@pytest.fixture(autouse=True)
def attachment_settings(tmp_path, monkeypatch):
    """Handlers read attachment settings from the environment (get_settings), like on a server."""
    monkeypatch.setenv("ATTACHMENTS_DIR", str(tmp_path / "attachments"))
    monkeypatch.setenv("ARCHIVE_DIR", str(tmp_path / "archive"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def screenshot(width=1600, height=1000) -> bytes:
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for y in range(0, height, 40):
        draw.text((20, y), f"line {y}: Traceback (most recent call last): KeyError 'cart_id'", fill="black")
    draw.rectangle((900, 100, 1500, 600), outline="red", width=5)
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def stored_files(tmp_path) -> list[str]:
    root = tmp_path / "attachments"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_a_text_attachment_is_listed_everywhere_and_read_back(call, project, tmp_path, settings):
    log = b"2026-11-30 ERROR cart: KeyError 'cart_id'\n" * 50
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], bcc=["RedStone"],
                subject="build log", body_md="see attached",
                attachments=[{"name": "build.log", "content_base64": b64(log)}])["message"]
    described = {"name": "build.log", "media_type": "text/plain", "size": len(log), "sha256": hashlib.sha256(log).hexdigest()}
    assert sent["attachments"] == [described]
    [inboxed] = call("fetch_inbox", project_key=project, agent_name="GreenCastle")["messages"]
    assert inboxed["attachments"] == [described]
    assert call("get_message", project_key=project, message_id=sent["id"])["attachments"] == [described]
    assert call("get_thread", project_key=project, thread_id=sent["thread_id"])["messages"][0]["attachments"] == [described]
    assert call("fetch_outbox", project_key=project, agent_name="BlueLake")["messages"][0]["attachments"] == [described]
    for reader in ("GreenCastle", "BlueLake", "RedStone"):  # recipient, sender, bcc recipient
        got = call("get_attachment", project_key=project, agent_name=reader, message_id=sent["id"], sha256=described["sha256"])
        assert base64.b64decode(got["content_base64"]) == log and got["url"].startswith(f"/api/attachments/{described['sha256']}?")
    # The inbox JSON the database renders is still byte for byte the validated output's.
    fetch_inbox = TOOLS["fetch_inbox"]
    for options in ({}, {"include_bodies": True}):
        args = {"project_key": project, "agent_name": "GreenCastle", **options}
        assert invoke.call(fetch_inbox.json_tool, args, settings) == to_json(invoke.call(fetch_inbox, args, settings))
    assert stored_files(tmp_path) == [f"{described['sha256'][:2]}/{described['sha256'][2:]}"]


def test_only_the_sender_and_recipients_read_an_attachment(call, project):
    call("register_agent", project_key=project, program="p", model="m", name="PurpleBear")
    call("set_contact_policy", project_key=project, agent_name="PurpleBear", policy="open")
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                attachments=[{"name": "secret.txt", "content_base64": b64(b"secret")}])["message"]
    sha = sent["attachments"][0]["sha256"]
    with pytest.raises(NotFound, match="viewer.s mail|may read"):  # never told apart from a missing message
        call("get_attachment", project_key=project, agent_name="PurpleBear", message_id=sent["id"], sha256=sha)
    with pytest.raises(NotFound):  # an attachment of another message
        other = call("send_message", project_key=project, sender_name="BlueLake", to=["PurpleBear"], subject="s", body_md="b")
        call("get_attachment", project_key=project, agent_name="PurpleBear", message_id=other["message"]["id"], sha256=sha)


def test_a_png_screenshot_becomes_a_smaller_webp_unless_the_original_is_asked_for(call, project):
    png = screenshot(3000, 1500)  # a wide high-resolution screen
    converted, original = call(
        "send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="screen", body_md="b",
        attachments=[{"name": "screen.png", "content_base64": b64(png)},
                     {"name": "screen.png", "content_base64": b64(png), "keep_original": True}],
    )["message"]["attachments"]
    assert (original["name"], original["media_type"], original["size"]) == ("screen.png", "image/png", len(png))
    assert original["sha256"] == hashlib.sha256(png).hexdigest()
    assert (converted["name"], converted["media_type"]) == ("screen.webp", "image/webp")
    assert converted["size"] < len(png)
    [message] = call("fetch_inbox", project_key=project, agent_name="GreenCastle")["messages"]
    got = call("get_attachment", project_key=project, agent_name="GreenCastle", message_id=message["id"], sha256=converted["sha256"])
    with Image.open(io.BytesIO(base64.b64decode(got["content_base64"]))) as image:
        assert (image.format, image.size) == ("WEBP", (2048, 1024))  # scaled to the 2048-pixel cap


def stored_image(call, project, attachment: dict) -> tuple[dict, bytes]:
    """One attachment sent, as stored: its description and its content."""
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                attachments=[attachment])["message"]
    described = sent["attachments"][0]
    got = call("get_attachment", project_key=project, agent_name="GreenCastle", message_id=sent["id"], sha256=described["sha256"])
    return described, base64.b64decode(got["content_base64"])


def test_a_png_with_a_transparent_colour_keeps_its_transparency_as_webp(call, project):
    """QA, session 40: an RGB PNG whose transparency is a colour key (tRNS) lost it: Pillow's WebP
    saver keeps alpha only of the modes it converts, and half of this image came back opaque."""
    image = Image.new("RGB", (400, 200), (200, 40, 40))
    image.paste((10, 20, 30), (0, 0, 200, 200))  # the left half: the transparent colour
    buffer = io.BytesIO()
    image.save(buffer, "PNG", transparency=(10, 20, 30))
    described, content = stored_image(call, project, {"name": "keyed.png", "content_base64": b64(buffer.getvalue())})
    assert described["media_type"] == "image/webp"
    with Image.open(io.BytesIO(content)) as stored:
        alpha = stored.convert("RGBA").getchannel("A")
        assert alpha.getpixel((50, 100)) == 0 and alpha.getpixel((350, 100)) == 255


def gradient(mode: str, scale: float) -> Image.Image:
    """A 256x64 left-to-right gradient in `mode`, its value at x being x * scale."""
    image = Image.new(mode, (256, 64))
    image.putdata([x * scale for _ in range(64) for x in range(256)])
    return image


@pytest.mark.parametrize("mode, scale, format, name", [("I;16", 257, "PNG", "depth.png"), ("I", 257, "TIFF", "counts.tiff"),
                                                       ("F", 1 / 255, "TIFF", "heights.tiff")])
def test_an_image_of_more_than_8_bits_a_channel_is_kept_as_sent(call, project, mode, scale, format, name):
    """QA, session 30: WebP holds 8 bits a channel, and Pillow clipped the rest: a 16-bit depth map
    was stored white, a float TIFF black, in place of what was sent."""
    out = io.BytesIO()
    gradient(mode, scale).save(out, format)
    described, content = stored_image(call, project, {"name": name, "content_base64": b64(out.getvalue())})
    assert (described["name"], content) == (name, out.getvalue())


def test_a_colour_png_of_16_bits_a_channel_is_kept_as_sent(call, project):
    """QA, session 30: Pillow opens it as mode RGB, already cut to 8 bits, so the mode check let it be
    converted (393,570 bytes of 16-bit colour stored as a 1 kB WebP)."""
    width, height = 256, 64
    rows = b"".join(b"\x00" + b"".join(struct.pack(">HHH", x * 257, 0, 65535 - x * 257) for x in range(width)) for _ in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    described, content = stored_image(call, project, {"name": "colours.png", "content_base64": b64(png)})
    assert (described["name"], content) == ("colours.png", png)


def test_a_converted_photo_keeps_its_orientation_and_colour_profile_and_loses_its_other_exif(call, project):
    """QA, session 30: a phone photo tagged "rotate 90" came out sideways, and every image lost its
    ICC profile (a Display P3 screenshot's colours then read as sRGB)."""
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = Image.new("RGB", (400, 200), "white")
    ImageDraw.Draw(photo).rectangle((0, 0, 99, 199), fill="red")  # the left quarter, as the camera saw it
    exif = photo.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the red quarter at the top
    exif.get_ifd(0x8825)[2] = (48.0, 51.0, 30.0)  # a GPS latitude: never stored
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=95, exif=exif, icc_profile=profile)
    described, content = stored_image(call, project, {"name": "phone.jpg", "content_base64": b64(out.getvalue())})
    assert described["name"] == "phone.webp"
    with Image.open(io.BytesIO(content)) as stored:
        assert stored.size == (200, 400) and stored.info.get("icc_profile") == profile
        assert not stored.getexif()
        rgb = stored.convert("RGB")
        assert rgb.getpixel((100, 20))[1] < 60 and rgb.getpixel((100, 380)) > (200, 200, 200)  # red on top, white below


@pytest.mark.sqlite_only  # a replica runs one call at a time (docs/turso.md): the other write waits there
def test_an_image_is_converted_before_its_write_while_other_writes_commit(call, project, settings, held):
    """Security review, session 16: four 7060x7060 PNGs were converted on the writer thread, and
    every other client's write waited 5 s."""
    started, go_on, threads = held(images, "to_webp")
    send = dict(project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="screen", body_md="b")
    png = {"name": "screen.png", "content_base64": b64(screenshot(800, 500))}

    async def meanwhile():
        with_image = asyncio.ensure_future(invoke.acall(TOOLS["send_message"], send | {"attachments": [png]}, settings))
        assert await asyncio.to_thread(started.wait, 10)
        await invoke.acall(TOOLS["send_message"], send | {"subject": "meanwhile"}, settings)
        converting = not with_image.done()
        go_on.set()
        return converting, await with_image

    converting, sent = asyncio.run(meanwhile())
    assert converting  # the other write committed while the image was being converted
    assert "db-writer" not in threads and sent.message.attachments[0].media_type == "image/webp"
    inbox = call("fetch_inbox", project_key=project, agent_name="GreenCastle")["messages"]
    assert sorted(m["subject"] for m in inbox) == ["meanwhile", "screen"]


@pytest.mark.sqlite_only
def test_a_synchronous_send_converts_its_image_before_taking_the_write_lock(call, project, settings, monkeypatch):
    """Chalice and the CLI write in BEGIN IMMEDIATE: a conversion inside it locked the database
    for every other process (the archive worker logged "database is locked")."""
    lock_free = []

    def probe(*args, real=images.to_webp):
        lock_free.append(write_lock_free(settings))
        return real(*args)

    monkeypatch.setattr(images, "to_webp", probe)
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                attachments=[{"name": "screen.png", "content_base64": b64(screenshot(800, 500))}])
    assert lock_free == [True] and sent["message"]["attachments"][0]["media_type"] == "image/webp"


def test_a_send_refused_anyway_converts_no_image(call, project, monkeypatch):
    """A send's images are converted before its write: one to an unknown agent, or a reply to an
    agent whose policy refuses the sender, converted 4 images of 50 megapixels (3 s of CPU) before
    its 404 or 409. Its refusals come first now."""
    converted = []
    monkeypatch.setattr(images, "to_webp", lambda *args, real=images.to_webp: converted.append(1) or real(*args))
    image = [{"name": "screen.png", "content_base64": b64(screenshot(80, 50))}]
    with pytest.raises(NotFound, match="Nobody"):
        call("send_message", project_key=project, sender_name="BlueLake", to=["Nobody"], subject="s", body_md="b",
             attachments=image)
    first = call("send_message", project_key=project, sender_name="GreenCastle", to=["BlueLake"], subject="s", body_md="b")
    call("set_contact_policy", project_key=project, agent_name="GreenCastle", policy="block_all")
    with pytest.raises(ToolError, match="does not admit"):
        call("reply_message", project_key=project, message_id=first["message"]["id"], sender_name="BlueLake", body_md="r",
             attachments=image)
    assert converted == []
    sent = call("reply_message", project_key=project, message_id=first["message"]["id"], sender_name="BlueLake",
                body_md="r", to=["RedStone"], attachments=image)
    assert converted == [1] and sent["message"]["attachments"][0]["media_type"] == "image/webp"


def png_header_of(width: int, height: int) -> bytes:
    """A real, tiny PNG (1-bit grey, all black) of width x height pixels: a few kB of zeros
    that would decode to width x height pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the header check refuses it all the same
@pytest.mark.parametrize("width, height", [(10_000, 5_001), (12_000, 9_000)])  # Pillow: warns (1x-2x its limit), refuses (2x)
def test_an_image_over_50_megapixels_is_refused_before_it_is_decoded(call, project, tmp_path, width, height):
    bomb = png_header_of(width, height)
    assert len(bomb) < 100_000
    with pytest.raises(InvalidArgument, match="more than 50 megapixels") as refused:
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
             attachments=[{"name": "fine.txt", "content_base64": b64(b"stored only with its message")},
                          {"name": "huge.png", "content_base64": b64(bomb)}])
    assert refused.value.status == 422 and "keep_original" in refused.value.hint
    assert stored_files(tmp_path) == [] and call("fetch_inbox", project_key=project, agent_name="GreenCastle")["messages"] == []
    kept = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                attachments=[{"name": "huge.png", "content_base64": b64(bomb), "keep_original": True}])["message"]
    assert kept["attachments"][0]["size"] == len(bomb)  # stored as sent, never decoded


def test_a_jpeg_past_the_scan_budget_is_kept_as_sent_never_decoded(call, project):
    """QA, session 32: a 700 kB progressive JPEG of 49 megapixels repeating one scan 6,000 times
    took 30 s to convert (each scan a pass over every block), and every other sender's images
    waited behind it. Its scans are now counted first: past the budget it is not decoded."""
    from .test_attachments_headers import repeating_a_scan

    within, past = repeating_a_scan(headers.MAX_JPEG_SCANS - 20), repeating_a_scan(headers.MAX_JPEG_SCANS)
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                attachments=[{"name": "within.jpg", "content_base64": b64(within)},
                             {"name": "past.jpg", "content_base64": b64(past)}])["message"]
    assert [(a["name"], a["media_type"]) for a in sent["attachments"]] == [("within.webp", "image/webp"), ("past.jpg", "image/jpeg")]
    got = call("get_attachment", project_key=project, agent_name="GreenCastle", message_id=sent["id"],
               sha256=sent["attachments"][1]["sha256"])
    assert base64.b64decode(got["content_base64"]) == past and not images.viewable("image/jpeg", past)


def test_a_repeated_file_is_stored_once(call, project, tmp_path):
    data = b"same diff\n" * 100
    for _ in range(3):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
             attachments=[{"name": "a.diff", "content_base64": b64(data)}, {"name": "b.diff", "content_base64": b64(data)}])
    call("reply_message", project_key=project, message_id=call("fetch_inbox", project_key=project, agent_name="GreenCastle")
         ["messages"][0]["id"], sender_name="GreenCastle", body_md="ok", attachments=[{"name": "c.diff", "content_base64": b64(data)}])
    assert len(stored_files(tmp_path)) == 1


def test_one_content_attached_twice_is_read_by_its_name(call, project):
    """Two attachments of one message with the same bytes: get_attachment took the first whatever
    was meant, so the second came back under the first's name and type."""
    data = b"day,total\n1,42\n"
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                attachments=[{"name": "report-monday.txt", "content_base64": b64(data)},
                             {"name": "report-tuesday.csv", "content_base64": b64(data)}])["message"]
    sha = hashlib.sha256(data).hexdigest()
    read = {"project_key": project, "agent_name": "GreenCastle", "message_id": sent["id"], "sha256": sha}
    first, second = call("get_attachment", **read), call("get_attachment", **read, name="report-tuesday.csv")
    assert (first["name"], first["media_type"]) == ("report-monday.txt", "text/plain")  # no name: the first, as before
    assert (second["name"], second["media_type"]) == ("report-tuesday.csv", "text/csv")
    assert base64.b64decode(second["content_base64"]) == data and "name=report-tuesday.csv" in second["url"]
    with pytest.raises(NotFound, match="named 'report-wednesday.txt'"):
        call("get_attachment", **read, name="report-wednesday.txt")
    with pytest.raises(NotFound):  # a name opens nothing to who may not read the message
        call("get_attachment", **read | {"agent_name": "RedStone"}, name="report-tuesday.csv")


def test_oversize_attachments_are_refused_and_nothing_is_sent(call, project, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTACHMENT_MAX_BYTES", "1000")
    monkeypatch.setenv("ATTACHMENTS_MAX_BYTES_PER_MESSAGE", "1500")
    monkeypatch.setenv("ATTACHMENTS_MAX_PER_MESSAGE", "3")
    get_settings.cache_clear()

    def attempt(*sizes):
        attachments = [{"name": f"f{i}.bin", "content_base64": b64(os.urandom(size))} for i, size in enumerate(sizes)]
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
             attachments=attachments)

    with pytest.raises(ToolError, match="larger than 1000 bytes") as refused:
        attempt(1001)
    assert (refused.value.status, refused.value.code) == (413, "payload_too_large")
    with pytest.raises(ToolError, match="together is larger than 1500") as refused:
        attempt(800, 800)
    assert refused.value.status == 413
    with pytest.raises(InvalidArgument, match="at most 3"):
        attempt(1, 1, 1, 1)
    attempt(1000)
    assert len(call("fetch_inbox", project_key=project, agent_name="GreenCastle")["messages"]) == 1
    assert len(stored_files(tmp_path)) == 1  # nothing of the refused ones


def test_bad_attachment_input_is_refused_clearly(call, project):
    def attempt(attachment):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
             attachments=[attachment])

    with pytest.raises(InvalidArgument, match="not valid base64"):
        attempt({"name": "x", "content_base64": "***"})
    with pytest.raises(InvalidArgument, match="exactly one of"):
        attempt({"name": "x", "content_base64": "eA==", "sha256": "0" * 64})
    with pytest.raises(InvalidArgument, match="name is required"):
        attempt({"content_base64": "eA=="})
    for name in ("../x", "a/b", "..", "a\nb"):
        with pytest.raises(InvalidArgument, match="name"):
            attempt({"name": name, "content_base64": "eA=="})
    with pytest.raises(NotFound, match="No uploaded content"):
        attempt({"name": "x", "sha256": "a" * 64})


@pytest.fixture
def repo(call, tmp_path):
    """A project whose human_key is a real directory, with a file inside and a secret outside."""
    root = tmp_path / "repo"
    (root / "logs").mkdir(parents=True)
    (root / "logs" / "test.log").write_bytes(b"FAILED tests/test_cart.py::test_total\n")
    (tmp_path / "secret.txt").write_text("password=hunter2")
    os.symlink(tmp_path / "secret.txt", root / "innocent.txt")
    os.symlink(root / "logs" / "test.log", root / "latest.log")  # a symlink that stays inside is fine
    project = call("ensure_project", human_key=str(root))["slug"]
    for name in ("BlueLake", "GreenCastle"):
        call("register_agent", project_key=project, program="p", model="m", name=name)
        call("set_contact_policy", project_key=project, agent_name=name, policy="open")
    return project, root


def test_local_mode_attaches_files_inside_the_project_only(call, repo, tmp_path):
    project, root = repo

    def attach(path):
        return call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s",
                    body_md="b", attachments=[{"path": path}])["message"]["attachments"][0]

    for path in ("logs/test.log", str(root / "logs" / "test.log"), "latest.log", "./logs/test.log"):
        attached = attach(path)
        assert attached["size"] == len(b"FAILED tests/test_cart.py::test_total\n")
    assert attach("logs/test.log")["name"] == "test.log"
    for path, reason in (("../secret.txt", "must not contain '..'"), ("logs/../../secret.txt", "must not contain '..'"),
                         (str(tmp_path / "secret.txt"), "outside the project"), ("/etc/passwd", "outside the project"),
                         ("innocent.txt", "outside the project"), ("logs", "not a regular file")):
        with pytest.raises(InvalidArgument, match=reason):
            attach(path)
    # QA, session 32: a FIFO's open waited for a writer, forever, and every later send with an
    # attachment waited behind it. On that code the writer below came 10 s later, to end the wait.
    os.mkfifo(root / "pipe.log")
    refused, released = threading.Event(), threading.Event()

    def release():
        if not refused.wait(10):
            released.set()
            os.close(os.open(root / "pipe.log", os.O_WRONLY | os.O_NONBLOCK))

    threading.Thread(target=release, daemon=True).start()
    try:
        with pytest.raises(InvalidArgument, match="'pipe.log' is not a regular file"):
            attach("pipe.log")
    finally:
        refused.set()
    assert not released.is_set(), "the send waited for a writer to open the FIFO"
    with pytest.raises(NotFound, match="Cannot read attachment path 'missing.txt': No such file"):  # as an unknown message
        attach("missing.txt")
    assert "hunter2" not in "".join(
        str(m) for m in call("fetch_inbox", project_key=project, agent_name="GreenCastle", include_bodies=True)["messages"])


def test_a_folder_swapped_for_a_symlink_after_the_path_was_checked_is_not_followed(call, repo, tmp_path, monkeypatch):
    """QA, session 40: the path was resolved and checked, then opened again by name, O_NOFOLLOW
    covering its last part only: a process in the project swapping a folder for a symlink to /etc
    between the two had /etc/hostname attached. Now each folder is opened in turn, none followed."""
    from chalicelib.attachments import intake

    project, root = repo
    (root / "swap").mkdir()
    (root / "swap" / "notes.txt").write_text("inside")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "notes.txt").write_text("password=hunter2")
    checked = intake._refuse_unless_regular

    def swapped_after_the_check(info, path):  # the race, at its worst moment: after the check, before the open
        checked(info, path)
        if (root / "swap").is_dir() and not (root / "swap").is_symlink():
            os.rename(root / "swap", root / "swap-was")
            os.symlink(tmp_path / "elsewhere", root / "swap")

    monkeypatch.setattr(intake, "_refuse_unless_regular", swapped_after_the_check)
    with pytest.raises(InvalidArgument, match="Cannot read attachment path 'swap/notes.txt'"):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
             attachments=[{"path": "swap/notes.txt"}])
    assert call("fetch_inbox", project_key=project, agent_name="GreenCastle")["messages"] == []


def test_a_file_name_no_message_may_carry_is_refused_and_a_name_given_instead(call, repo):
    """QA, session 30: a file attached by path kept its name unchecked (ESC, a newline, a
    backslash), and get_attachment with that name, its own url and the web UI's links, answered 422."""
    project, root = repo
    for name in ("log\x1b[31mred\nline.txt", "back\\slash.txt"):
        (root / name).write_bytes(b"log line\n")
        with pytest.raises(InvalidArgument, match="is not one a message may carry") as refused:
            call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                 attachments=[{"path": name}])
        assert refused.value.status == 422 and "Give `name`" in refused.value.hint
        sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                    attachments=[{"path": name, "name": "line.txt"}])["message"]
        assert sent["attachments"][0]["name"] == "line.txt"


def test_a_long_image_name_stays_a_name_get_attachment_takes(call, project):
    """QA, session 30: a 252-255 character PNG name became `<stem>.webp`, 256 characters, and
    get_attachment (its url, the web UI's links) refused it."""
    name = "s" * 251 + ".png"
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                attachments=[{"name": name, "content_base64": b64(screenshot(400, 300))}])["message"]
    [stored] = sent["attachments"]
    assert stored["name"] == "s" * 250 + ".webp"
    got = call("get_attachment", project_key=project, agent_name="GreenCastle", message_id=sent["id"], sha256=stored["sha256"],
               name=stored["name"])
    assert got["media_type"] == "image/webp"


@pytest.mark.parametrize("paths, why", [(None, "authentication is on and ATTACHMENT_PATHS is unset"),
                                         ("false", "ATTACHMENT_PATHS=false"), ("true", None)])
def test_paths_on_a_server_with_authentication_follow_attachment_paths(call, repo, monkeypatch, paths, why):
    """QA, session 33: a local server with authentication refused a path saying it "works only in
    local mode", which it was; the refusal names the setting that decides, and the hint the way to allow it."""
    project, _ = repo
    monkeypatch.setenv("AUTH_BEARER_TOKENS", "t" * 32)
    monkeypatch.setenv("REQUIRE_AGENT_TOKENS", "false")
    if paths is not None:
        monkeypatch.setenv("ATTACHMENT_PATHS", paths)
    get_settings.cache_clear()
    send = dict(project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                attachments=[{"path": "logs/test.log"}])
    if why is None:
        assert call("send_message", **send)["message"]["attachments"][0]["name"] == "test.log"
        return
    with pytest.raises(InvalidArgument) as refused:
        call("send_message", **send)
    assert str(refused.value) == f"This server attaches no file by path: {why}."
    assert "content_base64" in refused.value.hint and "ATTACHMENT_PATHS=true" in refused.value.hint


def test_paths_on_a_server_storing_in_s3_are_refused_without_naming_attachment_paths(monkeypatch, tmp_path):
    """No setting of ATTACHMENT_PATHS allows paths there: the hint does not offer it."""
    monkeypatch.setenv("ATTACHMENT_PATHS", "true")
    with pytest.raises(InvalidArgument) as refused:
        intake.read_project_file("a.log", str(tmp_path), Settings(attachments_bucket="bucket"))
    assert "S3 (ATTACHMENTS_BUCKET)" in str(refused.value) and "ATTACHMENT_PATHS" not in refused.value.hint


def test_the_archive_keeps_attachments_beside_their_messages_and_restore_brings_them_back(call, project, settings, tmp_path):
    data, png = b"log line\n" * 10, screenshot(200, 100)
    sent = [call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"s{i}", body_md="b",
                 attachments=[{"name": "run.log", "content_base64": b64(data)},
                              {"name": "shot.png", "content_base64": b64(png), "keep_original": True}])["message"]
            for i in range(2)]
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="plain", body_md="b")
    sha_log, sha_png = (a["sha256"] for a in sent[0]["attachments"])
    with GitArchive.local(get_settings()) as archive:
        drain(settings, archive)
        files = archive.files()
    blobs = {path: content for path, content in files.items() if "/attachments/" in path}
    assert blobs == {f"projects/{project}/attachments/{sha_log[:2]}/{sha_log}": data,
                     f"projects/{project}/attachments/{sha_png[:2]}/{sha_png}": png}  # one copy each
    fronts = [parse_document(content) for path, content in files.items() if "/messages/" in path]
    assert sorted(len(front.get("attachments", [])) for front in fronts) == [0, 2, 2]
    assert all("attachments" not in front for front in fronts if front["subject"] == "plain")  # as before attachments
    with db.connection(settings) as conn, db.transaction(conn, write=False), GitArchive.local(get_settings()) as archive:
        assert not any(verify_archive(conn, archive).values())

    # Disaster: a new database and an empty attachment store, restored from the archive.
    for path in (tmp_path / "attachments").rglob("*"):
        if path.is_file():
            path.unlink()
    restored = Settings(database_url=f"sqlite:///{tmp_path}/restored.db")
    db.migrate(restored)
    with db.connection(restored) as conn, db.transaction(conn, write=True), GitArchive.local(get_settings()) as archive:
        restore_archive(conn, archive)
    got = invoke.call(TOOLS["get_attachment"], {"project_key": project, "agent_name": "GreenCastle",
                                                "message_id": sent[1]["id"], "sha256": sha_png}, restored)
    assert base64.b64decode(got.content_base64) == png
    message = invoke.call(TOOLS["get_message"], {"project_key": project, "message_id": sent[0]["id"]}, restored)
    assert [a.model_dump() for a in message.attachments] == sent[0]["attachments"]


def test_an_archive_batch_stops_at_its_byte_bound_and_an_archived_attachment_is_not_read_again(call, project, settings,
                                                                                               tmp_path, monkeypatch):
    """The worker's memory follows a batch's content, not its row count (render.BATCH_MAX_BYTES)."""
    with GitArchive.local(get_settings()) as archive:
        drain(settings, archive)  # the profiles
        monkeypatch.setattr(render, "BATCH_MAX_BYTES", 1_000_000)
        dumps = [os.urandom(400_000) for _ in range(3)]
        sent = [call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"dump {i}",
                     body_md="b", attachments=[{"name": "core.bin", "content_base64": b64(dump)}])["message"]
                for i, dump in enumerate(dumps)]
        assert [worker.drain_once(settings, archive) for _ in range(3)] == [2, 1, 0]  # 2 x 400 kB fit in 1 MB, 3 do not
        again = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="again",
                     body_md="b", attachments=[{"name": "core.bin", "sha256": sent[0]["attachments"][0]["sha256"]}])["message"]
        for path in (tmp_path / "attachments").rglob("*"):  # the archive holds it: the storage is not read again
            if path.is_file():
                path.unlink()
        assert worker.drain_once(settings, archive) == 1
        assert any(path.endswith(f"__{again['id']}.md") for path in canonical(archive.files()))


def test_with_agent_tokens_only_the_readers_own_token_opens_an_attachment(call, settings):
    call("ensure_project", human_key="/work/tokens")
    tokens = {name: call("register_agent", project_key="work-tokens", program="p", model="m", name=name)["registration_token"]
              for name in ("BlueLake", "GreenCastle")}
    call("set_contact_policy", project_key="work-tokens", agent_name="GreenCastle", policy="open")
    sent = call("send_message", project_key="work-tokens", sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                attachments=[{"name": "a.txt", "content_base64": b64(b"for GreenCastle")}])["message"]
    strict = settings.model_copy(update={"require_agent_tokens": True})
    args = {"project_key": "work-tokens", "agent_name": "GreenCastle", "message_id": sent["id"],
            "sha256": sent["attachments"][0]["sha256"]}
    for token in (None, tokens["BlueLake"]):  # none, or another agent's
        with pytest.raises(ToolError) as refused:
            invoke.call(TOOLS["get_attachment"], {**args, "registration_token": token}, strict)
        assert refused.value.status in (401, 403)
    got = invoke.call(TOOLS["get_attachment"], {**args, "registration_token": tokens["GreenCastle"]}, strict)
    assert base64.b64decode(got.content_base64) == b"for GreenCastle"


def test_the_longest_inbox_row_fits_the_page_that_is_not_measured(call, project, monkeypatch):
    """fetch_inbox reads a page of up to _SURELY_UNDER_CAP rows without bodies at once, unmeasured:
    even rows at every limit (subject, thread id, 100 attachments, each character escaped) keep
    such a page under the answer's cap."""
    from chalicelib.errors import MAX_ANSWER_BYTES
    from chalicelib.tools.messages import _SURELY_UNDER_CAP

    monkeypatch.setenv("ATTACHMENTS_MAX_PER_MESSAGE", "100")  # the most the schema allows
    get_settings.cache_clear()
    attachments = [{"name": '"' * 255, "media_type": "application/" + "x" * 115, "content_base64": b64(b"%d" % n)} for n in range(100)]
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject='"' * 512,
         thread_id="\x01" * 128, body_md="", attachments=attachments)
    inbox = call("fetch_inbox", project_key=project, agent_name="GreenCastle", limit=1)
    row = to_json(inbox["messages"][0])
    assert len(inbox["messages"][0]["attachments"]) == 100 and len(row) > 50_000
    assert len(row) * _SURELY_UNDER_CAP <= MAX_ANSWER_BYTES
