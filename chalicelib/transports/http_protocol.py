"""uvicorn's httptools protocol, with a connection's writes sent once per event-loop turn.

uvicorn writes each response as soon as the app sends it. Under load the responses then
leave one by one, ~0.2 ms apart, and each one wakes the client anew (on loopback the wake-up
runs in the server's system call: a fifth of its CPU). Here a connection's writes are held
until the end of the event loop's turn and sent as one: the responses of the requests
handled in one turn leave together, and the head and body of a response in one packet.
Nothing waits longer than that turn, so a streamed response still streams.

    uvicorn chalicelib.transports.asgi:app --http chalicelib.transports.http_protocol:HttpProtocol

(scripts/serve and the test servers do this; plain uvicorn serves the same app, slower.)

It also drops slow readers: a client that stops reading its answer would keep that answer
(up to MAX_ANSWER_BYTES) in memory for as long as it likes; once the transport's buffer has
stayed above its high-water mark for SEND_TIMEOUT_SECONDS, the connection is aborted.
"""

import asyncio

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..config import get_settings
from ..errors import ToolError


class TurnBufferedTransport:
    """A transport whose writes are joined and sent when the event loop next runs callbacks;
    everything else is the real transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self.pending:
            self.loop.call_soon(self.flush)
        self.pending.append(data)

    def flush(self) -> None:
        if not self.pending:
            return
        data = b"".join(self.pending)
        self.pending.clear()
        if not self.transport.is_closing():  # the client went away: nothing to send it
            self.transport.write(data)

    def close(self) -> None:
        self.flush()  # what was written before close() still goes out first
        self.transport.close()

    def __getattr__(self, name: str):
        return getattr(self.transport, name)


class HttpProtocol(HttpToolsProtocol):
    stalled: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control keeps the real transport
        self.transport = TurnBufferedTransport(transport, self.loop)  # type: ignore[assignment]

    def send_400_response(self, msg: str) -> None:
        """A request HTTP itself cannot parse (an over-long line, a bad header) gets the API's error
        shape, as /openapi.json documents every 400, instead of uvicorn's plain text."""
        body = orjson.dumps(ToolError(msg, "Check the request line and headers; send a long input as a POST body, not in the URL.").to_dict())
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def pause_writing(self) -> None:
        super().pause_writing()
        self.stalled = self.loop.call_later(get_settings().send_timeout_seconds, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_stall()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_stall()
        super().connection_lost(exc)

    def _cancel_stall(self) -> None:
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
