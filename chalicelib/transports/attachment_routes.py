"""Attachment bytes over HTTP, local mode (the Chalice app has its own routes, with upload_whole and download_arguments):

    PUT /api/attachments            the raw bytes of a file too large for a request body,
                                    streamed to storage (up to ATTACHMENT_MAX_BYTES)
                                    -> {"sha256", "size"}, then send_message(attachments=
                                    [{"name", "sha256"}])
    GET /api/attachments/{sha256}?project_key=&agent_name=&message_id=[&name=]
                                    the content (name: which of the message's attachments
                                    with this sha256), for the message's sender and recipients
                                    (get_attachment checks, agent tokens included: the
                                    X-Agent-Token header, or registration_token)

Downloads are always `Content-Disposition: attachment`, never served as a type a browser
would run (HTML, SVG, scripts: application/octet-stream), with `nosniff` (Front adds it).
"""

import asyncio
import logging
import os
from collections.abc import Iterable
from urllib.parse import parse_qsl

import orjson

from .. import invoke
from ..attachments.intake import served_type, too_large
from ..attachments.storage import CACHE_CONTROL, SHA256, LocalStorage, TooLarge, content_disposition, storage, uploader
from ..config import Settings
from ..errors import InvalidArgument, ToolError, internal_error
from ..security import auth
from ..tools import tools_by_name
from .raw_asgi import content_length, header_text, send_json
from .rest import query_arguments, with_header_token

UPLOAD_PATH = "/api/attachments"
DOWNLOAD_PREFIX = "/api/attachments/"
log = logging.getLogger(__name__)


async def upload(scope, receive, send, settings: Settings) -> None:
    try:
        where = _local_storage(settings, content_length(scope))
        with where.writer(settings.attachment_max_bytes) as writer:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return  # the client went away: nothing stored
                chunk = message.get("body", b"")
                if chunk:
                    await asyncio.to_thread(writer.write, chunk)  # disk writes off the event loop
                if not message.get("more_body", False):
                    break
            answer = await asyncio.to_thread(_stored, where, writer)
    except TooLarge:
        error = too_large("The upload", settings.attachment_max_bytes, "ATTACHMENT_MAX_BYTES")
        await send_json(send, orjson.dumps(error.to_dict()), error.status)
        return
    except ToolError as exc:
        await send_json(send, orjson.dumps(exc.to_dict()), exc.status, exc.headers)
        return
    except Exception:  # a full disk: the error shape, not uvicorn's empty 500
        await _failed(send, "PUT", UPLOAD_PATH)
        return
    await send_json(send, orjson.dumps(answer))


async def _failed(send, method: str, path: str) -> None:
    """The answer to an unexpected exception: the traceback goes to the log, never to the client."""
    log.exception("%s %s failed", method, path)
    await send_json(send, orjson.dumps(internal_error().to_dict()), 500)


def upload_whole(body: bytes, settings: Settings) -> dict:
    """The upload of a body read whole (the Chalice app's route: API Gateway buffers it)."""
    where = _local_storage(settings, len(body))
    try:
        with where.writer(settings.attachment_max_bytes) as writer:
            writer.write(body)
            return _stored(where, writer)
    except TooLarge:
        raise too_large("The upload", settings.attachment_max_bytes, "ATTACHMENT_MAX_BYTES") from None


def _local_storage(settings: Settings, length: int | None) -> LocalStorage:
    """The storage an upload goes to, refused when it is S3 (uploads go to its presigned URL) or
    the declared length is over ATTACHMENT_MAX_BYTES."""
    where = storage(settings)
    if not isinstance(where, LocalStorage):
        raise InvalidArgument("This server stores attachments in S3.", "Upload through request_attachment_upload's URL.")
    if length is not None and not 0 <= length <= settings.attachment_max_bytes:
        raise too_large("The upload", settings.attachment_max_bytes, "ATTACHMENT_MAX_BYTES")
    return where


def _stored(where: LocalStorage, writer) -> dict:
    """The written upload stored (its answer), and its uploader's receipt given."""
    if writer.size == 0:
        raise InvalidArgument("The upload is empty.", "PUT the file's bytes as the request body.")
    sha256 = writer.commit()
    if (by := uploader(auth.current_credential())) is not None:  # its credential may now send it by sha256
        where.give_receipt(by, sha256)
    return {"sha256": sha256, "size": writer.size}


async def download(scope, receive, send, settings: Settings) -> None:
    sha256 = scope["path"].removeprefix(DOWNLOAD_PREFIX)
    query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
    token = header_text(scope, b"x-agent-token")
    try:
        found = await invoke.acall(tools_by_name()["get_attachment"], download_arguments(sha256, query, token), settings)
    except ToolError as exc:
        await send_json(send, orjson.dumps(exc.to_dict()), exc.status, exc.headers)
        return
    except Exception:
        await _failed(send, "GET", scope["path"])
        return
    where = storage(settings)
    if not isinstance(where, LocalStorage):  # S3: a short-lived link, straight from the bucket
        await send({"type": "http.response.start", "status": 302, "headers": [(b"location", found.url.encode())]})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [
        (b"content-type", served_type(found.media_type).encode()),
        (b"content-disposition", content_disposition(found.name).encode()),
        (b"cache-control", CACHE_CONTROL.encode()),
    ]
    await send_file(send, 200, headers, where.path(sha256), body=scope["method"] != "HEAD")


def download_arguments(sha256: str, query: Iterable[tuple[str, str]], token: str | None) -> dict:
    """get_attachment's arguments for GET /api/attachments/{sha256} (this server's route and the
    Chalice app's): the details and link, not the content. A path that is no sha256 is refused in
    the route's words (the tool's own 422 lists its input's fields); a parameter given twice as on
    the tools' routes (the last one was taken)."""
    if not SHA256.fullmatch(sha256):
        raise InvalidArgument(f"{sha256!r} is not a sha256.", "GET /api/attachments/{sha256}?project_key=&agent_name=&message_id=")
    tool = tools_by_name()["get_attachment"]
    return with_header_token(tool, {**query_arguments(tool, query), "sha256": sha256, "include_content": False}, token)


async def send_file(send, status: int, headers: list[tuple[bytes, bytes]], path, body: bool = True) -> None:
    """A response whose body is a file (with its Content-Length), read off the event loop a
    MiB at a time. Also the web UI's large attachments (asgi.py). Without `body` (a HEAD), the
    same head and no body: the file is opened, not read (uvicorn dropped what a HEAD read)."""
    with open(path, "rb") as file:
        length = (b"content-length", str(os.fstat(file.fileno()).st_size).encode())
        await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
        while body and (chunk := await asyncio.to_thread(file.read, 1024 * 1024)):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
