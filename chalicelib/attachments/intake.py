"""An attachment as a caller sends it -> checked, stored, described.

Three ways to give the content: `content_base64` (every transport; counts against the
request body limit), `path` (a file inside the project's directory, local mode only) or
`sha256` (content uploaded before, through request_attachment_upload). Everything is checked
(names, types, limits, paths) before anything is stored.
"""

import binascii
import mimetypes
import os
import stat
from typing import Annotated, Callable

from pydantic import AfterValidator, ConfigDict, Field, PrivateAttr, TypeAdapter, ValidationError, model_validator

from ..errors import InvalidArgument, NotFound, ToolError
from ..fields import given, matching
from ..registry import Input, Output
from . import images
from .storage import SHA256, storage

MediaType = Annotated[str, matching(r"^[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*$",
                                    "a media type: type/subtype in lower case, e.g. text/plain", max_length=127)]


def _not_dots(name: str) -> str:
    if name in (".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    return name


# What a file name may hold; then _not_dots, whose words are clearer than a pattern's. The JSON
# schema says both in one pattern (no lookahead, which pydantic's regular expressions lack).
_NOT_IN_NAME = r"/\\\x00-\x1f\x7f"
_NAME_CHAR, _NOT_A_DOT = rf"[^{_NOT_IN_NAME}]", rf"[^{_NOT_IN_NAME}.]"
NOT_DOTS = rf"^(?:{_NOT_A_DOT}{_NAME_CHAR}*|\.{_NOT_A_DOT}{_NAME_CHAR}*|\.\.{_NAME_CHAR}+)$"
FileName = Annotated[str, matching(rf"^{_NAME_CHAR}+$", "a file name: no folders (/ or \\) and no control characters", min_length=1,
                                   max_length=255, description="A file name, without folders.", json_schema_extra={"pattern": NOT_DOTS}),
                     AfterValidator(_not_dots)]
_FILE_NAME = TypeAdapter(FileName)
# A path by parts between / or \, none of them `..`, and no NUL: what read_project_file takes (its
# check says why in words; the schema tells a client beforehand).
_NOT_IN_PART = r"/\\\x00"
_PART = rf"(?:[^{_NOT_IN_PART}.][^{_NOT_IN_PART}]*|\.(?:[^{_NOT_IN_PART}.][^{_NOT_IN_PART}]*)?|\.\.[^{_NOT_IN_PART}]+)?"
PATH_WITHOUT_DOTDOT = rf"^{_PART}(?:[/\\]{_PART})*$"
Sha256 = Annotated[str, matching(f"^{SHA256.pattern}$", "a SHA-256 as attachments list it: 64 hex digits in lower case (0-9, a-f)",
                                 description="SHA-256 of the content, 64 lowercase hex digits.")]
# Standard base64 with its padding, as decode_base64 reads it (for the JSON schema: a regular expression
# would take ~0.3 s for a 1 MB body in Python's re).
BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"

# Served as themselves; anything else (HTML, SVG, scripts...) as application/octet-stream.
PASSIVE_TYPES = {
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "application/pdf", "application/json",
    "application/zip", "application/gzip", "application/x-tar", "application/octet-stream",
}


# What agents send most, the same on every machine (mimetypes depends on /etc/mime.types).
COMMON_TYPES = {
    ".txt": "text/plain", ".log": "text/plain", ".md": "text/markdown", ".diff": "text/x-diff", ".patch": "text/x-diff",
    ".csv": "text/csv", ".json": "application/json", ".yaml": "application/yaml", ".yml": "application/yaml",
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp",
    ".pdf": "application/pdf", ".zip": "application/zip", ".gz": "application/gzip", ".html": "text/html",
    ".svg": "image/svg+xml",
}


# An attachment as it will be stored: name, media type, content (None: uploaded before), size, and
# the uploaded content's sha256.
Ready = tuple[str, str, bytes | None, int, str | None]


class AttachmentInput(Input):
    # _one_source's rules, in the JSON schema too (null counts as not given).
    model_config = ConfigDict(json_schema_extra={
        "oneOf": [given("content_base64"), given("path"), given("sha256")],
        "anyOf": [given("name"), given("path")],
    })

    name: FileName | None = Field(None, description="Defaults to the path's file name; required otherwise.")
    media_type: MediaType | None = Field(None, description="e.g. image/png; guessed from the name if omitted.")
    content_base64: str | None = Field(None, description="The content, base64-encoded (standard, with padding).",
                                       json_schema_extra={"pattern": BASE64})
    path: str | None = Field(
        None, min_length=1, max_length=4096, json_schema_extra={"pattern": PATH_WITHOUT_DOTDOT},
        description="Local mode: a file inside the project's directory (relative to it, or absolute within it; no `..`).",
    )
    sha256: Sha256 | None = Field(None, description="Content uploaded before (request_attachment_upload).")
    keep_original: bool = Field(False, description="Store an image as sent, not converted to WebP.")
    _ready: Ready | None = PrivateAttr(None)  # set by prepare(): what store() puts, as it will be stored

    @model_validator(mode="after")
    def _one_source(self):
        sources = [field for field in ("content_base64", "path", "sha256") if getattr(self, field) is not None]
        if len(sources) != 1:
            raise ValueError("give exactly one of content_base64, path and sha256")
        if self.name is None and self.path is None:
            raise ValueError("name is required with content_base64 or sha256")
        return self


class Attachment(Output):
    """An attachment as messages list it; get_attachment returns its content."""

    name: str
    media_type: str
    size: int
    sha256: str


class PayloadTooLarge(ToolError):
    status = 413
    code = "payload_too_large"


def too_large(what: str, limit: int, setting: str) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} is larger than {limit} bytes.",
        f"Send less, or raise {setting}." + (" Larger files: request_attachment_upload." if setting == "MAX_BODY_BYTES" else ""),
    )


# The size of stored content the sender may name by its sha256, None if it is not stored or not
# the sender's to name (tools/attachment_refs.py sizes: what the uploader put, or a message it may read carries).
SizeOf = Callable[[str], int | None]


def prepare(items: list[AttachmentInput], project_dir: str, settings, size_of: SizeOf) -> None:
    """Check, load and convert (images to WebP) the attachments before the write that stores them
    (Tool.prepare): decoding a 50-megapixel PNG takes a second, which no write should wait for."""
    for item, ready in zip(items, _ready(items, project_dir, settings, size_of)):
        item._ready = ready


def store(items: list[AttachmentInput], project_dir: str, settings, size_of: SizeOf) -> list[Attachment]:
    """Store each content once (as prepared, or checked and converted now); their descriptions."""
    ready = [item._ready for item in items]
    if None in ready:
        ready = _ready(items, project_dir, settings, size_of)
    where, stored = storage(settings), []
    for name, media_type, content, size, sha256 in ready:
        if content is not None:
            sha256, size = where.put(content), len(content)
        stored.append(Attachment(name=name, media_type=media_type, size=size, sha256=sha256))
    return stored


def _ready(items: list[AttachmentInput], project_dir: str, settings, size_of: SizeOf) -> list[Ready]:
    """Every attachment checked (count, sizes, sources, pixels) before any is converted."""
    if len(items) > settings.attachments_max_per_message:
        raise InvalidArgument(f"{len(items)} attachments; at most {settings.attachments_max_per_message} per message.",
                              "Send the rest in another message, or as one archive.")
    loaded = [_load(item, project_dir, settings, size_of) for item in items]
    total = sum(len(content) if content is not None else size for _, content, size, _ in loaded)
    if total > settings.attachments_max_bytes_per_message:
        raise too_large("The message's attachments together", settings.attachments_max_bytes_per_message,
                        "ATTACHMENTS_MAX_BYTES_PER_MESSAGE")
    converted = [_converted(item, content, name, settings) for item, content, _, name in loaded]  # may refuse: before any put
    return [(name, media_type, content, size, item.sha256)
            for (item, _, size, _), (name, media_type, content) in zip(loaded, converted)]


def _converted(item: AttachmentInput, content: bytes | None, name: str, settings) -> tuple[str, str, bytes | None]:
    """(name, media type, content) as stored: images as WebP unless keep_original (an upload, content None, as sent)."""
    media_type = item.media_type or guess_type(name, content)
    if content is None or item.keep_original:
        return name, media_type, content
    return images.to_webp(name, media_type, content, settings.attachment_image_max_side)


def _load(item: AttachmentInput, project_dir: str, settings, size_of: SizeOf) -> tuple[AttachmentInput, bytes | None, int, str]:
    """(item, content or None for an upload, size, name)."""
    limit = settings.attachment_max_bytes
    if item.content_base64 is not None:
        if len(item.content_base64) > (limit + 2) // 3 * 4 + 4:
            raise too_large(f"Attachment {item.name!r}", limit, "ATTACHMENT_MAX_BYTES")
        content = decode_base64(item.content_base64)
        if content is None:
            raise InvalidArgument(f"Attachment {item.name!r}: content_base64 is not valid base64.",
                                  "Encode the file with standard base64 (RFC 4648, with padding).")
    elif item.path is not None:
        content = read_project_file(item.path, project_dir, settings)
    else:
        size = size_of(item.sha256)
        if size is None:  # (the same answer whether it is not stored or not the sender's to name)
            raise NotFound(f"No uploaded content with sha256 {item.sha256}.",
                           "Upload it first (request_attachment_upload; PUT it again, if someone else did), then send"
                           " its sha256 within a day; or forward it from a message you sent or received.")
        if size > limit:
            raise too_large(f"Attachment {item.name!r}", limit, "ATTACHMENT_MAX_BYTES")
        return item, None, size, item.name
    if len(content) > limit:
        raise too_large(f"Attachment {item.name or item.path!r}", limit, "ATTACHMENT_MAX_BYTES")
    return item, content, len(content), item.name or _path_name(item.path)


def _path_name(path: str) -> str:
    """A path's file name, held to `name`'s rules: get_attachment, its url and the web UI's links
    refused a stored name with ESC, a newline or a backslash (422)."""
    name = os.path.basename(path)
    try:
        return _FILE_NAME.validate_python(name)
    except ValidationError:
        raise InvalidArgument(f"Attachment path {path!r}: its file name {name!r} is not one a message may carry.",
                              "Give `name` too: at most 255 characters, no `/`, `\\` or control characters.") from None


def path_refusal(settings) -> InvalidArgument | None:
    """The error refusing a file by path on this server, naming why (a local server with
    authentication is still local mode), or None when paths are allowed."""
    from ..security import auth

    instead = "Send the content as content_base64, or upload it (request_attachment_upload)."
    if auth.on_lambda() or settings.attachments_bucket:
        where = "runs on AWS Lambda" if auth.on_lambda() else "stores attachments in S3 (ATTACHMENTS_BUCKET)"
        return InvalidArgument(f"This server attaches no file by path: it {where}, away from the project's files.", instead)
    if settings.attachment_paths or (settings.attachment_paths is None and auth.mode(settings) == "none"):
        return None
    why = "ATTACHMENT_PATHS=false" if settings.attachment_paths is False else "authentication is on and ATTACHMENT_PATHS is unset"
    return InvalidArgument(f"This server attaches no file by path: {why}.",
                           f"{instead} Its operator can allow paths with ATTACHMENT_PATHS=true on a trusted server whose"
                           " callers may read the project's files.")


def decode_base64(text: str) -> bytes | None:
    """The bytes of standard padded base64 (exactly what BASE64 matches), else None. (binascii's
    strict mode alone takes a quantum of padding, AAAA====, or one too many, AAAA=.)"""
    if len(text) % 4 or text.endswith("==="):
        return None
    try:
        return binascii.a2b_base64(text, strict_mode=True)
    except (binascii.Error, ValueError):  # ValueError: not ASCII
        return None


def climbs_or_has_nul(path: str) -> bool:
    """Whether a path has a `..` part (between / or \\) or a NUL (PATH_WITHOUT_DOTDOT says the opposite)."""
    return "\x00" in path or ".." in path.replace("\\", "/").split("/")


def read_project_file(path: str, project_dir: str, settings) -> bytes:
    """The content of a regular file inside the project's directory. `..`, absolute paths
    elsewhere and symlinks that lead out are refused: the path is resolved (symlinks
    followed) and must still lie inside the resolved project directory."""
    if refusal := path_refusal(settings):
        raise refusal
    if climbs_or_has_nul(path):
        raise InvalidArgument(f"Attachment path {path!r} must not contain '..' or a NUL character.",
                              "Give a path inside the project's directory.")
    root = "" if "\x00" in project_dir else os.path.realpath(project_dir)  # a key stored before NULs were refused
    if not os.path.isabs(project_dir) or root == os.path.sep or not os.path.isdir(root):
        raise NotFound(f"The project's directory {project_dir!r} is not a directory on this machine.",
                       "Attach the content as content_base64 instead.")
    try:
        real = os.path.realpath(os.path.join(root, path))
    except OSError as exc:  # a folder of it removed while it was being resolved
        raise NotFound(f"Cannot read attachment path {path!r}: {exc.strerror}.", "Check the path.") from None
    if os.path.commonpath([real, root]) != root:
        raise InvalidArgument(f"Attachment path {path!r} leads outside the project's directory {project_dir!r}.",
                              "Only files inside the project's directory can be attached by path (symlinks are followed).")
    # A FIFO's open waited for a writer (forever, and every later send behind it on the prepare
    # lane), and a device's may act: neither is opened. O_NONBLOCK as well, should one replace the
    # file between the stat and the open (it changes nothing for a regular file's reads).
    try:
        _refuse_unless_regular(os.stat(real, follow_symlinks=False), path)
        fd = _open_beneath(root, real)
    except OSError as exc:
        missing = NotFound if isinstance(exc, FileNotFoundError) else InvalidArgument
        raise missing(f"Cannot read attachment path {path!r}: {exc.strerror}.", "Check the path.") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        _refuse_unless_regular(info, path)
        limit = settings.attachment_max_bytes
        if info.st_size > limit:
            raise too_large(f"Attachment {path!r}", limit, "ATTACHMENT_MAX_BYTES")
        content = file.read(limit + 1)
    if len(content) > limit:
        raise too_large(f"Attachment {path!r}", limit, "ATTACHMENT_MAX_BYTES")
    return content


def _open_beneath(root: str, real: str) -> int:
    """A descriptor of `real` (resolved, inside `root`), opened a folder at a time from `root`, none
    followed if it is a symlink (ELOOP, refused): a folder of the path replaced by a symlink after
    it was resolved (to /etc, say) led the open outside the project (O_NOFOLLOW covers the last part only)."""
    *folders, name = os.path.relpath(real, root).split(os.sep)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for folder in folders:
            inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)


def _refuse_unless_regular(info: os.stat_result, path: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise InvalidArgument(f"Attachment path {path!r} is not a regular file.", "Attach a file.")


def guess_type(name: str, content: bytes | None) -> str:
    for magic, media_type in ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif")):
        if content is not None and content.startswith(magic):
            return media_type
    extension = os.path.splitext(name)[1].lower()
    guessed = COMMON_TYPES.get(extension) or mimetypes.guess_type(name, strict=False)[0]
    return guessed or "application/octet-stream"


def served_type(media_type: str) -> str:
    """The Content-Type a download is served with: never one a browser would run."""
    if media_type in PASSIVE_TYPES:
        return media_type
    if media_type.startswith("text/") and media_type not in ("text/html", "text/xml", "text/javascript"):
        return "text/plain; charset=utf-8"
    return "application/octet-stream"
