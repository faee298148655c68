"""An attachment's bytes in the web UI (GET /ui/attachment): what get_attachment answered,
served so that a browser never runs it.

Raster images (PNG, JPEG, GIF, WebP) small enough to come back inline are shown in the page
(`Content-Disposition: inline`, their own type) when their content is one (images.viewable);
everything else, SVG and HTML above all, is `application/octet-stream` with
`Content-Disposition: attachment`. Every answer has `nosniff`
and a sandboxing CSP, so that even opened on its own nothing in it runs or loads.
"""

import base64
from pathlib import Path
from urllib.parse import urlencode

from ..attachments import images
from ..attachments.storage import LocalStorage, content_disposition, storage
from .http import Response

INLINE_TYPES = frozenset(images.VIEWABLE)  # never SVG: it runs scripts
CSP = "sandbox; default-src 'none'; frame-ancestors 'none'"
CACHE = "private, max-age=3600"  # content-addressed, so it never changes; only this browser keeps it


def shows_inline(attachment, settings) -> bool:
    """Whether the page shows it as an image: a raster type, and small enough that get_attachment
    returns it (a larger one is a link: on AWS it comes from S3, which the page's CSP does not load)."""
    return attachment.media_type in INLINE_TYPES and attachment.size <= settings.attachment_inline_max_bytes


def url(root: str, message, attachment, download: bool = False) -> str:
    """The UI's link to one attachment, read as the message's sender (who may always read it); its
    name tells it from another of the message's with the same content."""
    query = {"p": message.project, "m": message.id, "a": message.sender, "s": attachment.sha256, "n": attachment.name}
    return f"{root}/ui/attachment?{urlencode(query | ({'download': '1'} if download else {}))}"


def respond(found, settings, download: bool, head: bool = False) -> Response:
    """get_attachment's answer as the HTTP response to the browser. Inline only an image whose
    content is one: an upload or keep_original is stored as sent (a 312-byte PNG declaring
    20000x20000 pixels reached the overseer's browser); a larger file (no content here) is a download.
    `head`: a HEAD's, from the details alone where GET's headers do not depend on the content."""
    content = None if found.content_base64 is None else base64.b64decode(found.content_base64)
    inline = not download and content is not None and images.viewable(found.media_type, content)
    headers = {
        "Content-Disposition": content_disposition(found.name, "inline" if inline else "attachment"),
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CSP,
        "Cache-Control": CACHE,
    }
    content_type = found.media_type if inline else "application/octet-stream"
    if content is not None:
        return Response(200, content, content_type, headers)
    if head and found.size <= settings.attachment_inline_max_bytes:  # GET's head, its content not read (pages.py attachment)
        return Response(200, b"", content_type, headers, length=found.size)
    where = storage(settings)
    if not isinstance(where, LocalStorage):  # larger than a Lambda answer: the short-lived S3 link
        return Response(302, b"", "text/plain", {"Location": found.url, "Cache-Control": "no-store"})
    return Response(200, b"", content_type, headers, file=Path(where.path(found.sha256)))
