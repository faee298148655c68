"""Raw ASGI helpers for the hot paths that skip FastAPI: reading a request, answering it."""


def header(scope, name: bytes, default: bytes | None = None) -> bytes | None:
    """A request header's first value (`name` lower case, as ASGI gives names), else `default`."""
    return next((value for key, value in scope["headers"] if key == name), default)


def header_text(scope, name: bytes) -> str | None:
    """A request header's first value as text (latin-1, as HTTP gives it), else None."""
    value = header(scope, name)
    return None if value is None else value.decode("latin-1")


def content_length(scope) -> int | None:
    """The request's Content-Length, None without one, -1 when it is no number (a size to refuse).
    httptools takes spaces and tabs after the digits, and frames the body by them."""
    value = header(scope, b"content-length")
    if value is None:
        return None
    value = value.strip(b" \t")
    return int(value) if value.isdigit() and len(value) < 20 else -1


def is_json(content_type: bytes) -> bool:
    return content_type.split(b";")[0].strip().lower() == b"application/json"


async def read_body(receive, limit: int) -> tuple[bytes, bool]:
    """The request body, and whether it came whole: False when the client went away or the
    body passed `limit` bytes (then what was read so far, which may exceed `limit`)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        if size > limit:
            return b"".join(chunks), False
        if not message.get("more_body", False):
            return b"".join(chunks), True


def replay(body: bytes, complete: bool, receive):
    """A receive() that first yields the bytes already read, then the rest of the stream."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replayed


def json_headers(body: bytes) -> list[tuple[bytes, bytes]]:
    """A JSON body's type and length (so no chunked encoding)."""
    return [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]


async def send_json(send, body: bytes, status: int = 200, extra: dict[str, str] | None = None) -> None:
    """A JSON response with its length."""
    headers = json_headers(body)
    headers += [(name.lower().encode(), value.encode()) for name, value in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
