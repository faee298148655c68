"""Answering over raw ASGI, for the hot paths that skip FastAPI."""


async def send_json(send, body: bytes, status: int = 200, extra: dict[str, str] | None = None) -> None:
    """A JSON response with its length (so no chunked encoding)."""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in (extra or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
