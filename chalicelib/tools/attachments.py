"""Attachments: read one (the agents that may read its message only), and upload content too
large for a request body before sending it (docs/attachments.md)."""

import base64
import json
import logging
import sqlite3
from typing import Any
from urllib.parse import urlencode

import orjson
from pydantic import Field

from ..attachments import images
from ..attachments.intake import Attachment, FileName, Sha256
from ..attachments.storage import storage, uploader
from ..config import get_settings
from ..errors import Conflict, InternalError, InvalidArgument, NotFound
from ..fields import AgentName, MessageId, ProjectKey
from ..registry import Input, Output, tool
from ..security import auth
from . import attachment_refs
from .agents import find_agent
from .messages import attachments_of, find_message
from .projects import find_project

logger = logging.getLogger(__name__)


class GetAttachmentInput(Input):
    project_key: ProjectKey
    agent_name: AgentName = Field(description="Who is reading: the message's sender or one of its recipients.")
    message_id: MessageId
    sha256: Sha256
    name: FileName | None = Field(None, description="Which of the message's attachments with this sha256 (one content may be"
                                  " attached twice, under two names or types); default: the first.")
    include_content: bool = Field(True, description="False: only the details and a download link.")


class AttachmentContent(Attachment):
    content_base64: str | None = Field(
        description="The content, up to ATTACHMENT_INLINE_MAX_BYTES (else null: see url). Over MCP it is the result's"
        " own content block instead (an image, or an embedded resource), and null here."
    )
    url: str | None = Field(
        description="Where to download it: a short-lived link (S3), or a path on this server (GET /api/attachments/"
        "{sha256}?..., on the server's base URL, with the same credentials)."
    )


def get_attachment(db: sqlite3.Connection, args: GetAttachmentInput) -> AttachmentContent:
    """One attachment of a message you sent or received: its content (an image an agent can
    look at, a log, a diff), or a download link when it is large.

    Take the sha256 from the message's attachments (fetch_inbox, get_message, get_thread)."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    row = find_message(db, project, args.message_id, viewer_id=agent["id"])
    may_read = row["sender_id"] == agent["id"] or db.execute(
        "SELECT 1 FROM message_recipients WHERE message_id = ? AND agent_id = ?", (args.message_id, agent["id"])
    ).fetchone()
    attachment = next((item for item in attachments_of(row) if item.sha256 == args.sha256
                       and args.name in (None, item.name)), None) if may_read else None
    if attachment is None:  # the same answer whether it does not exist or is not yours to read
        named = "" if args.name is None else f" named {args.name!r}"
        raise NotFound(
            f"Message {args.message_id} has no attachment {args.sha256}{named} that {agent['name']} may read.",
            "Only a message's sender and recipients read its attachments; take sha256 (and name) from the message's attachments.",
        )
    settings = get_settings()
    where = storage(settings)
    content = None
    try:
        if args.include_content and attachment.size <= settings.attachment_inline_max_bytes:
            content = base64.b64encode(where.read(attachment.sha256)).decode()
        elif where.size(attachment.sha256) is None:  # the link would serve nothing (S3: a HEAD, as costly as the link's use)
            raise FileNotFoundError(attachment.sha256)
    except FileNotFoundError:  # ContentMissing on S3
        logger.error("attachment %s of message %s is not in the attachment storage (%s)", attachment.sha256, args.message_id,
                     settings.attachments_bucket or settings.attachments_dir.resolve())
        raise InternalError(
            f"The content of attachment {attachment.name!r} (sha256 {attachment.sha256}) is missing from the server's storage.",
            "Tell the server's operator: every server and stdio session on one database must use the same ATTACHMENTS_DIR,"
            " an absolute path (`python -m chalicelib doctor --repair` copies archived attachments back).",
        ) from None
    url = where.download_url(attachment.sha256, attachment.name, attachment.media_type)
    if url is None:
        query = {"project_key": args.project_key, "agent_name": agent["name"], "message_id": args.message_id,
                 "name": attachment.name}  # this one of the message's attachments with its sha256
        url = f"/api/attachments/{attachment.sha256}?{urlencode(query)}"
    return AttachmentContent(**attachment.model_dump(), content_base64=content, url=url)


def mcp_content(payload: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """get_attachment over MCP: the details as text, then the content itself, as an image a
    multimodal agent can look at, or an embedded resource (text, or blob: also a text that
    escaped would take more than base64 of the inline limit); and the structured result without
    the content (content_base64 null), so that it travels once: twice, an attachment of 2.2 MiB
    passed Lambda's 6 MB answer."""
    found = orjson.loads(payload)
    content, media_type = found.pop("content_base64"), found["media_type"]
    details = orjson.dumps(found)
    blocks: list[dict[str, Any]] = [{"type": "text", "text": details.decode()}]
    structured = orjson.dumps({**found, "content_base64": None})
    if content is None:
        return blocks, structured
    raw = base64.b64decode(content)
    if images.viewable(media_type, raw):  # an upload, or keep_original, is stored as sent: maybe no image at all
        blocks.append({"type": "image", "data": content, "mimeType": media_type})
        return blocks, structured
    uri = f"attachment://{found['sha256']}/{found['name']}"
    # An image type that is no viewable image is bytes: no client should try to show it.
    served = "application/octet-stream" if media_type in images.VIEWABLE else media_type
    resource: dict[str, Any] = {"uri": uri, "mimeType": served, "blob": content}
    if media_type.startswith("text/") or media_type in ("application/json", "application/x-ndjson"):
        try:
            if fits_as_text(text := raw.decode(), len(raw)):
                resource = {"uri": uri, "mimeType": media_type, "text": text}
        except UnicodeDecodeError:
            pass
    blocks.append({"type": "resource", "resource": resource})
    return blocks, structured


def fits_as_text(text: str, size: int) -> bool:
    """Whether `text` (of `size` bytes in UTF-8) takes no more in a Lambda answer than base64 of
    ATTACHMENT_INLINE_MAX_BYTES: JSON-escaped in the MCP answer (orjson, as written), then again in
    Lambda's response (json.dumps, which on Python 3.11 writes every non-ASCII character as
    \\uXXXX). A `"` takes 4 bytes there, a Cyrillic letter 3 a byte: text attachments within the
    inline limit passed Lambda's 6 MB. A byte takes at most 7 (a control character): a small text
    is not measured."""
    budget = get_settings().attachment_inline_max_bytes * 4 // 3
    return size * 7 <= budget or len(json.dumps(orjson.dumps(text).decode())) <= budget


class UploadInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    sha256: Sha256
    size: int = Field(gt=0, description="The content's length in bytes (at most ATTACHMENT_MAX_BYTES).",
                      json_schema_extra=lambda schema: schema.update(maximum=get_settings().attachment_max_bytes))
    # (The schema says this server's limit, read when the schema is made: a larger size is a 422.)


class UploadTarget(Output):
    already_stored: bool = Field(description="True: nothing to upload, send the sha256 right away.")
    method: str
    url: str = Field(description="A presigned S3 URL, or this server's path (PUT the raw bytes there).")
    headers: dict[str, str] = Field(description="Send these headers with the upload.")
    max_bytes: int


def request_attachment_upload(db: sqlite3.Connection, args: UploadInput) -> UploadTarget:
    """Where to upload a file too large for a request body (over MAX_BODY_BYTES as base64),
    before attaching it to send_message / reply_message as {"name", "sha256"}.

    Locally: PUT the raw bytes to /api/attachments (the answer gives the sha256); on AWS:
    PUT them to the presigned S3 URL with the headers given (S3 checks length and sha256)."""
    agent = find_agent(db, find_project(db, args.project_key), args.agent_name)
    settings = get_settings()
    if args.size > settings.attachment_max_bytes:  # past the schema's maximum: an argument, as any other (the request is small)
        raise InvalidArgument(f"A {args.size}-byte attachment is larger than {settings.attachment_max_bytes} bytes.",
                              "Send less, or raise ATTACHMENT_MAX_BYTES.")
    where, by = storage(settings), uploader(auth.current_credential())
    # Stored for this caller: its upload, or what its mail carries (attachment_refs.sizes). Content
    # someone else stored is uploaded again: already_stored said it was stored, of any file.
    stored = attachment_refs.sizes(db, where, agent["id"], by)(args.sha256)
    if stored is not None and stored != args.size:
        raise Conflict(f"Content {args.sha256} is stored with {stored} bytes, not {args.size}.", "Check the size.")
    return UploadTarget(already_stored=stored is not None, max_bytes=settings.attachment_max_bytes,
                        **where.upload_target(args.sha256, args.size, by))


TOOLS = [
    tool(get_attachment, read_only=True, acts_as="agent_name", mcp_content=mcp_content),
    tool(request_attachment_upload, read_only=True, acts_as="agent_name"),
]
