"""A call that stops when its HTTP client disconnects (the local server only).

uvicorn keeps running a request's handler after its client left: only an http.disconnect on the
request's receive() says so. A call that would otherwise go on for no one watches for it: a slow
job queued in a lane (store/fair_lane.py), a wait for mail (invoke.py) holding its caller's place,
and a search already running in a lane or a web UI page, which looks at `client_left()` between
its steps.
"""

import asyncio
import contextvars
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ClientGone

# The request's ASGI receive(), its body already read: the local server sets it for each request
# (transports/asgi.py Front). Chalice and Lambda have no disconnect to watch, nor do in-process
# callers (the CLI, stdio): they set none.
request_receive: contextvars.ContextVar = contextvars.ContextVar("request_receive", default=None)
# Set when the client of a slow lane's job (store/fair_lane.py) or a web UI page disconnects, in its thread's context.
left: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("client_left", default=None)


def watch() -> threading.Event:
    """The event that tells this context's job its client disconnected (set it then)."""
    event = threading.Event()
    left.set(event)
    return event


def client_left() -> bool:
    """Whether the client of the job running in this thread has disconnected: a long job (a
    search, between statements and steps) stops then, raising client_gone()."""
    event = left.get()
    return event is not None and event.is_set()


GONE = ("The client disconnected before this call answered.", "Nothing of it was done.")


def client_gone() -> ClientGone:
    return ClientGone(*GONE)


class Dropped(ClientGone):
    """ClientGone of a call unless_client_gone stopped: a lane's job that never ran (so measured
    nothing itself: its caller counts it), a wait."""


async def unless_client_gone(work: Awaitable[Any], stop: Callable[[], bool] | None = None) -> Any:
    """`work`'s result; ClientGone if the request's client disconnects and `stop()` (by default,
    cancelling `work`) stops it: stop() returns False when too late (`work` then goes on)."""
    receive = request_receive.get()
    if receive is None:
        return await work
    work = asyncio.ensure_future(work)
    stop = stop or work.cancel
    gone = False

    async def stop_on_disconnect() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass  # a body the handler did not read (a GET's empty one): it needs none
        gone = stop()

    watcher = asyncio.ensure_future(stop_on_disconnect())
    try:
        return await work
    except asyncio.CancelledError:
        if gone:
            raise Dropped(*GONE) from None
        raise
    finally:
        watcher.cancel()
