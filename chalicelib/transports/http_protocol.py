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

And it bounds a request's line and headers, which come before authentication: httptools keeps
them until they are complete (joining the pieces over and over: a 100 MiB header held the event
loop for seconds). The bytes received while a head is incomplete are counted per read; past
MAX_HEAD_BYTES the client gets 431 and the connection is closed (docs/limits.md). A chunked body's
trailer fields are header fields again, parsed the same way: the reads of a body that bring none of
it are counted as a head's are, and the fields are dropped (they are not the request's headers).

And it bounds a request's arrival: its head must be whole RECEIVE_TIMEOUT_SECONDS after it began
(else 408 and the connection is closed), and its body must not pause longer than that (else the
connection is dropped: the app sees the client gone). A client that sent part of a request and
then nothing held its connection and buffer for good, before authentication too. So did one that
sent nothing at all: a new connection now gets RECEIVE_TIMEOUT_SECONDS for its first byte, then is
closed (nothing was asked: nothing is answered). A body must also end: one the app reads before it
has checked a credential (the web UI's forms, the sign-in's) must be whole RECEIVE_TIMEOUT_SECONDS
after its head (else 408 and the connection is closed); a body dripping a byte at a time kept the
connection for good. The app tells which requests carry a checked credential (admit): their bodies
may be large uploads over slow links, so theirs must only keep an average of MIN_BODY_BYTES_PER_SECOND
once RECEIVE_TIMEOUT_SECONDS are over (else 408 too).

A refusal (400, 431, 408) ends the connection, but only once the answers of the requests before the
refused one have gone out: they ran, and a client reading the refusal as the answer to a write would
retry it. Meanwhile nothing more is read.
"""

import asyncio
from http import HTTPStatus

import orjson
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ..config import get_settings
from ..errors import ToolError

MAX_HEAD_BYTES = 64 * 1024  # a request's line and headers (browsers send a few KiB at most)
# The least average rate of a body sent with a checked credential, once RECEIVE_TIMEOUT_SECONDS are
# over: 32 kbit/s, below a dial-up link; a 25 MiB upload may take 1 h 47 min, a 1 MiB call under 5 min.
MIN_BODY_BYTES_PER_SECOND = 4096


class HeadTooLarge(ToolError):
    status = 431
    code = "request_header_fields_too_large"


class RequestTimeout(ToolError):
    status = 408
    code = "request_timeout"


LINE_HINT = "Check the request line and headers; send a long input as a POST body, not in the URL."


def admit(receive) -> None:
    """Say that the request of `receive` carries a credential the app has checked: its body is not
    held to the deadline of a body sent without one (HttpProtocol._body_deadline). Called before
    the body is read; does nothing for another server's request."""
    cycle = getattr(receive, "__self__", None)
    if isinstance(cycle, RequestResponseCycle):
        cycle.admitted = True  # type: ignore[attr-defined]


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
    awaited: asyncio.TimerHandle | None = None  # the rest of a request that has begun (head whole, or body going on)
    # Bytes received while the current request's head was incomplete; None while its body is read.
    head_bytes: int | None = 0
    # Bytes of the reads of a body that brought none of it (body_came): its trailer fields, which
    # httptools keeps until they end as it keeps a head's, and chunk lines.
    trailer_bytes = 0
    body_came = False
    url = b""  # uvicorn's, until a request begins
    refusal: ToolError | None = None  # why on_headers_complete stopped the parser
    # A body still coming after the read that brought its head: when that read came, and the last one.
    body_began: float | None = None
    body_read_at = 0.0
    body_bytes = 0  # the bytes of those reads (the headers' read's included)
    ending: ToolError | None = None  # the refusal the connection ends with (refuse), once the answers before it are out

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn believes X-Forwarded-For/-Proto from 127.0.0.1 unless told not to, and every client
        # of a loopback server comes from there: the client would choose the address its rate
        # limits and refused credentials count against. The socket's peer is the address.
        if isinstance(self.app, ProxyHeadersMiddleware):
            self.app = self.app.app

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # flow control keeps the real transport
        self.transport = TurnBufferedTransport(transport, self.loop)  # type: ignore[assignment]
        self.receive_timeout = get_settings().receive_timeout_seconds
        # Nothing asked yet: closed as a kept-alive connection is when no request follows. uvicorn
        # cancels this timer at the first byte; the head's own timer takes over.
        self.timeout_keep_alive_task = self.loop.call_later(self.receive_timeout, self.timeout_keep_alive_handler)

    def data_received(self, data: bytes) -> None:
        if self.ending is not None:  # refused: nothing more is read (a running request's receive() may resume reading)
            return
        in_head = self.head_bytes is not None
        if in_head:
            self.head_bytes += len(data)
        else:
            self.body_came = False
        super().data_received(data)
        if self.ending is not None:
            return
        # A request this read left unfinished (most come whole in one: no timer): its head is whole
        # in time however it drips in, its body pauses no longer than that.
        if self.head_bytes is None:
            if in_head or self.body_came:
                self.trailer_bytes = 0
            else:
                self.trailer_bytes += len(data)
                if self.trailer_bytes > MAX_HEAD_BYTES:  # refused before httptools holds more of them
                    self.refuse(HeadTooLarge(f"A chunked body's trailer fields (or chunk lines) are larger than {MAX_HEAD_BYTES}"
                                             " bytes.", "Send the body without trailer fields: the server ignores them."))
                    return
            self._await_body(len(data))
        elif self.head_bytes > MAX_HEAD_BYTES:  # still no end of the head: refused before httptools holds more of it
            self.refuse(self.head_refusal(self.head_bytes))
        elif self.head_bytes and self.awaited is None:
            self._await(self._head_too_slow)

    def on_headers_complete(self) -> None:
        # A read can hold a whole head and then a body: measure the head itself (rare: big reads only).
        if self.head_bytes > MAX_HEAD_BYTES:
            size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
            if size > MAX_HEAD_BYTES:
                self.refusal = self.head_refusal(size)
                raise self.refusal  # stops the parser; uvicorn then calls send_400_response
        self.head_bytes = None
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        # A chunked body (never an upgrade's, whose headers uvicorn reads later): its trailer fields,
        # parsed as headers, go to this list; the request's headers stay in its scope.
        self.headers = []

    def on_body(self, body: bytes) -> None:
        self.body_came = True
        HttpToolsProtocol.on_body(self, body)  # (every request's: super() would cost ~75 ns more)

    def on_message_complete(self) -> None:
        self.head_bytes = 0  # the next request's head (a pipelined one's counts from the next read)
        if self.awaited is not None:
            self._await(None)
            self.body_began, self.body_bytes = None, 0
        super().on_message_complete()

    def _await(self, then) -> None:
        """Call `then` unless the request goes on within the receive timeout (None: stop waiting)."""
        if self.awaited is not None:
            self.awaited.cancel()
        self.awaited = None if then is None else self.loop.call_later(self.receive_timeout, then)

    def _await_body(self, received: int) -> None:
        """A body goes on: it must not pause longer than the receive timeout, nor end after its deadline."""
        self.body_read_at = now = self.loop.time()
        if self.body_began is None:
            self.body_began = now
        self.body_bytes += received
        self._arm_body()

    def _arm_body(self) -> None:
        paused = self.body_read_at + self.receive_timeout
        deadline = self._body_deadline()
        if self.awaited is not None:
            self.awaited.cancel()
        if deadline < paused:
            self.awaited = self.loop.call_at(deadline, self._body_too_slow)
        else:  # a pause: the client is gone, or as good as; nothing is answered
            self.awaited = self.loop.call_at(paused, self.transport.abort)

    def _body_deadline(self) -> float:
        """When the current request's body must be whole: RECEIVE_TIMEOUT_SECONDS after its head; with
        a credential the app has checked (admit), later by a second for each MIN_BODY_BYTES_PER_SECOND
        received, so it must only keep that average (and it moves on as the body comes)."""
        if getattr(self.cycle, "admitted", False):
            return self.body_began + self.receive_timeout + self.body_bytes / MIN_BODY_BYTES_PER_SECOND
        return self.body_began + self.receive_timeout

    def _body_too_slow(self) -> None:
        if self.transport.is_closing():
            return
        if self.loop.time() < self._body_deadline():  # admitted since: its credential was checked meanwhile
            self._arm_body()
            return
        if getattr(self.cycle, "admitted", False):
            self.refuse(RequestTimeout(f"The request body came slower than {MIN_BODY_BYTES_PER_SECOND} bytes a second on"
                                       f" average once its first {self.receive_timeout:g} s were over.",
                                       "Send the body at a steady rate (a slow link is fine; a trickle is not)."))
        else:
            self.refuse(RequestTimeout(f"The request body did not all come within {self.receive_timeout:g} s of its headers.",
                                       "Send the whole body at once: a body sent without a credential (a web UI form)"
                                       " must be whole within RECEIVE_TIMEOUT_SECONDS."))

    def _head_too_slow(self) -> None:
        if not self.transport.is_closing():
            self.refuse(RequestTimeout(f"The request line and headers did not all come within {self.receive_timeout:g} s.",
                                       "Send the whole request at once (RECEIVE_TIMEOUT_SECONDS)."))

    def head_refusal(self, size: int) -> ToolError:
        """431, or, when the URL is most of the head, the 400 of a request line HTTP cannot take."""
        if 2 * len(self.url) > size:
            return ToolError(f"The request line is longer than {MAX_HEAD_BYTES} bytes.", LINE_HINT)
        return HeadTooLarge(f"The request line and headers are larger than {MAX_HEAD_BYTES} bytes.",
                            "Send less in headers; long inputs go in a POST body.")

    def send_400_response(self, msg: str) -> None:
        """A request HTTP itself cannot parse (an over-long line, a bad header) gets the API's error
        shape, as /openapi.json documents every 400, instead of uvicorn's plain text."""
        self.refuse(self.refusal or ToolError(msg, LINE_HINT))

    def refuse(self, error: ToolError) -> None:
        """Answer `error` and close the connection, once the requests before the refused one are
        answered (on_response_complete); nothing more is read meanwhile."""
        if self.ending is not None:
            return
        self.ending = error
        self._await(None)
        self.flow.pause_reading()
        if self.head_bytes is None and self.pipeline and self.pipeline[0][0] is self.cycle:
            self.pipeline.popleft()  # refused in its body, queued behind others: it never runs
        elif self.head_bytes is None or self.cycle is None or self.cycle.response_complete:
            self._end()  # nothing before it unanswered (refused in its body while it runs: its own answer is dropped)
        # else an answer before it is still due: on_response_complete ends the connection after the last one

    def on_response_complete(self) -> None:
        if self.ending is None:
            HttpToolsProtocol.on_response_complete(self)  # (as on_body)
            return
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        if self.pipeline:  # the next answer due before the refusal (reading stays paused)
            self._start_asgi_task(*self.pipeline.pop())
        else:
            self._end()

    def _end(self) -> None:
        """Send the refusal (unless an answer is half sent: its request is the one refused) and close."""
        error, cycle = self.ending, self.cycle
        if cycle is None or not cycle.response_started or cycle.response_complete:
            body = orjson.dumps(error.to_dict())
            head = [b"HTTP/1.1 %d %s\r\n" % (error.status, HTTPStatus(error.status).phrase.encode())]
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
        self._await(None)
        self._unset_keepalive_if_required()  # (uvicorn leaves it when the connection broke)
        super().connection_lost(exc)

    def _cancel_stall(self) -> None:
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
