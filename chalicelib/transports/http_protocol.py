"""uvicorn's httptools protocol, with a connection's writes sent once per event-loop turn.

uvicorn writes each response as soon as the app sends it. Under load the responses then
leave one by one, ~0.2 ms apart, and each one wakes the client anew (on loopback the wake-up
runs in the server's system call: a fifth of its CPU). Here a connection's writes are held
until the end of the event loop's turn and sent as one: the responses of the requests
handled in one turn leave together, and the head and body of a response in one packet.
Nothing waits longer than that turn, so a streamed response still streams.

    uvicorn chalicelib.transports.asgi:app --http chalicelib.transports.http_protocol:HttpProtocol

(scripts/serve and the test servers do this; plain uvicorn serves the same app, slower.)
"""

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


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
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control keeps the real transport
        self.transport = TurnBufferedTransport(transport, self.loop)  # type: ignore[assignment]
