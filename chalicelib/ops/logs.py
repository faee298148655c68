"""Structured logs: JSON lines when stderr is not a terminal (and on Lambda), text on one.

Every record goes to one buffered stream on stderr, flushed every half second (and at exit),
so a line per request costs a few µs rather than the ~30 µs of a logging.Handler write:
`request(...)` writes its line straight there. A request line says what was called and how
it went — method, path, tool, status, duration, caller — never a body, a token or a secret.
"""

import atexit
import logging
import os
import sys
import threading
import time
from contextvars import ContextVar

import orjson

from ..config import Settings
from . import emf

FLUSH_SECONDS = 0.5
# Filled in while a request runs (the tool it called), read when its line is written.
current: ContextVar[dict | None] = ContextVar("agent_mail_request", default=None)


class _Stream:
    """stderr, buffered. A buffered file writes each call whole under its own lock, so lines
    from several threads never mix; the unbuffered one (Lambda) writes each in one syscall."""

    def __init__(self) -> None:
        try:  # On Lambda the process is frozen after each answer: no buffer there.
            self.file = os.fdopen(os.dup(sys.stderr.fileno()), "wb", buffering=0 if _on_lambda() else 1 << 16)
        except (AttributeError, OSError, ValueError):  # a stderr without a file (a test runner's)
            self.file = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else _TextAsBinary(sys.stderr)
        self.write = self.file.write
        threading.Thread(target=self._flush_often, name="log-flush", daemon=True).start()
        atexit.register(self.flush)

    def flush(self) -> None:
        try:
            self.file.flush()
        except (OSError, ValueError):
            pass  # stderr is gone: nothing to tell

    def _flush_often(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()


class _TextAsBinary:
    def __init__(self, text) -> None:
        self.text = text

    def write(self, data: bytes) -> None:
        self.text.write(data.decode())

    def flush(self) -> None:
        self.text.flush()


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": _iso(record.created), "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line).decode()


class _StreamHandler(logging.Handler):
    def __init__(self, stream: _Stream) -> None:
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record).encode() + b"\n")
        except Exception:
            self.handleError(record)


_stream: _Stream | None = None
_json = True
_emf = False
_enabled = True


def configure(settings: Settings) -> None:
    """Route the root logger (and uvicorn's) to the stream, in the chosen format. Idempotent."""
    global _stream, _json, _emf, _enabled
    _emf = _on_lambda()
    _json = settings.log_format == "json" or (settings.log_format == "auto" and (not sys.stderr.isatty() or _emf))
    _enabled = settings.log_requests and logging.getLevelName(settings.log_level) <= logging.INFO
    if _stream is None:
        _stream = _Stream()
    handler = _StreamHandler(_stream)
    handler.setFormatter(_JsonFormatter() if _json else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(settings.log_level)
    for chatty in ("botocore", "boto3", "urllib3", "s3transfer"):  # at DEBUG they log requests' parameters: bodies, signatures
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    # request() writes the request lines. uvicorn's access logger gets no handler at all: uvicorn
    # builds each access line's arguments (quoting the path) whenever that logger has a handler,
    # even one its level then silences (~5 µs of /health's ~40).
    access = logging.getLogger("uvicorn.access")
    access.handlers, access.propagate = [], False


def enabled() -> bool:
    """Whether request lines are written: if not, the transports skip noting what goes in them."""
    return _enabled and _stream is not None


def request(method: str, path: str, status: int, seconds: float, **extra) -> None:
    """One line for one request, with what was noted while it ran (the tool, the caller). On
    Lambda the line is also CloudWatch metrics (EMF): latency and errors, per tool and in all;
    with request lines off (LOG_LEVEL above INFO) a line of the metrics alone, so they still count."""
    if _stream is None or not (_enabled or _emf):
        return
    noted = current.get() or {}
    tool, caller, ms = noted.get("tool"), noted.get("caller", "anonymous"), int(seconds * 1_000_000) / 1000
    if not _enabled:
        _stream.write(emf.line(_measured(ms, status), [[], ["Tool"]] if tool else [[]], Tool=tool))
        return
    if not _json:
        _stream.write(f"{method} {path} {tool or '-'} {status} {ms:.1f}ms {caller}\n".encode())
        return
    line = {"ts": _iso(time.time()), "level": "INFO", "logger": "agent_mail.request", "msg": "request",
            "method": method, "path": path, "tool": tool, "status": status, "ms": ms, "caller": caller}
    if extra:
        line.update(extra)
    if _emf:
        _stream.write(emf.line(_measured(ms, status), [[], ["Tool"]] if tool else [[]], Tool=tool, **line))
    else:
        _stream.write(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))


def _measured(ms: float, status: int) -> dict[str, tuple[float, str]]:
    return {"Latency": (ms, "Milliseconds"), "ServerErrors": (int(status >= 500), "Count"),
            "ClientErrors": (int(400 <= status < 500), "Count")}


def flush() -> None:
    """Write the buffered lines now: a server's shutdown does (uvicorn ends by raising the SIGTERM it
    caught again, whose default action skips atexit: the last half second of lines was lost)."""
    if _stream is not None:
        _stream.flush()


def metrics_line(measured: dict[str, tuple[float, str]], **properties) -> None:
    """CloudWatch metrics without a request (the archive sweep's gauges); Lambda only."""
    if _emf and _stream is not None:
        _stream.write(emf.line(measured, [[]], **properties))


def note(**fields) -> None:
    """Add to the running request's log line (invoke: the tool; the transports: the caller)."""
    noted = current.get()
    if noted is not None:
        noted.update(fields)


# A line's time is the second, formatted once a second, and its milliseconds, formatted once.
_second: tuple[int, str] = (-1, "")
_MILLISECONDS = [f".{n:03d}Z" for n in range(1000)]


def _iso(timestamp: float) -> str:
    global _second
    second, formatted = _second
    if int(timestamp) != second:
        second = int(timestamp)
        formatted = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second = (second, formatted)  # one tuple: every thread sees a matching pair
    return formatted + _MILLISECONDS[int(timestamp % 1 * 1000)]


def _on_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))
