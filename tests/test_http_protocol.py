"""chalicelib/transports/http_protocol.py: a connection's writes leave once per event-loop turn."""

import asyncio
import re
import socket
from urllib.parse import urlparse

from chalicelib.transports.http_protocol import TurnBufferedTransport


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False
        self.closing = False

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closing or self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str):
        return f"info:{name}"


def test_writes_of_one_turn_leave_together_and_nothing_waits_longer():
    async def scenario():
        real = FakeTransport()
        transport = TurnBufferedTransport(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"{}")
        assert real.sent == []
        await asyncio.sleep(0)  # the next turn
        assert real.sent == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
        transport.write(b"event")  # a streamed chunk goes out on the next turn too
        await asyncio.sleep(0)
        assert real.sent[-1] == b"event"
        transport.write(b"last words")
        transport.close()  # written before closing: sent before closing
        assert real.sent[-1] == b"last words" and real.closed
        assert transport.get_extra_info("peername") == "info:peername"  # the rest is the real transport's

    asyncio.run(scenario())


def test_nothing_is_written_to_a_transport_the_client_closed():
    async def scenario():
        real = FakeTransport()
        transport = TurnBufferedTransport(real, asyncio.get_running_loop())
        transport.write(b"too late")
        real.closing = True
        await asyncio.sleep(0)
        assert real.sent == []

    asyncio.run(scenario())


def test_pipelined_requests_get_their_responses_in_order(server):
    """Several requests in one packet: one buffered write per turn keeps the responses in order."""
    url = urlparse(server)
    requests = b"".join(
        f"GET {path} HTTP/1.1\r\nHost: {url.netloc}\r\n\r\n".encode() for path in ("/health", "/nowhere", "/health")
    )
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(requests)
        received = b""
        while received.count(b"HTTP/1.1 ") < 3 or not received.endswith(b"}"):
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)  # a body ends without a line break
    assert statuses == [b"200", b"404", b"200"]
    assert received.count(b"x-content-type-options: nosniff") == 3  # security headers on each
