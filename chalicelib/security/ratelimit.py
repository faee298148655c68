"""Rate limits: a token bucket per caller, one budget for reads and one for writes; and one per
client address for the credentials it had refused (guessing_bounded).

The caller is the authenticated principal (a JWT's subject, a bearer token's hash) or,
without authentication, the client address: on Lambda the source IP API Gateway saw
(requestContext), never a client-supplied X-Forwarded-For; an IPv6 address by its /64
(address_key).

Buckets live in the process's memory: a limit holds per uvicorn worker and per Lambda
container. Across Lambda containers (and uvicorn workers), the limit that holds is
API Gateway's throttling (infra/template.yaml); see docs/security.md.
"""

import ipaddress
import logging
import math
import threading
import time
from contextlib import contextmanager
from typing import Any

import orjson

from ..config import Settings
from ..ops import logs, metrics
from ..errors import ToolError, Unauthorized

log = logging.getLogger(__name__)

MAX_KEYS = 10_000  # addresses, and apart from them credentials, with a bucket of their own
ADDRESS = "ip:"  # the start of an unauthenticated caller's key (caller())
SHARED = None  # the key of the bucket newcomers share while the table is full (no caller's key is None)


class RateLimited(ToolError):
    status = 429
    code = "rate_limited"

    def __init__(self, retry_after: float, write: bool) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            f"Too many {'writes' if write else 'reads'}: the limit is "
            f"RATE_LIMIT_{'WRITES' if write else 'READS'}_PER_MINUTE.",
            f"Retry after {seconds} s.",
        )
        self.headers = {"Retry-After": str(seconds)}


def limits(settings: Settings) -> tuple[int, int]:
    """(reads, writes) per minute; 0 is unlimited. Unset: 1200 and 300 with authentication, none without."""
    from .auth import mode

    authenticated = mode(settings) != "none"
    reads = settings.rate_limit_reads_per_minute
    writes = settings.rate_limit_writes_per_minute
    return (
        reads if reads is not None else (1200 if authenticated else 0),
        writes if writes is not None else (300 if authenticated else 0),
    )


class Bucket:
    """`per_minute` tokens a minute, refilled continuously; bursts of up to `per_minute`.

    A bucket that still holds state is never forgotten (forgetting it would hand a drained caller
    a full minute's budget): when MAX_KEYS callers of a kind are tracked, those refilled by now are
    dropped (a full bucket is the same as none), and if none is, a new caller shares one bucket
    with the other newcomers. Addresses and credentials have tables of their own: anyone can come
    from many addresses, and must not crowd out a credential's bucket."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        # key -> (tokens, monotonic time), least recently taken from first
        self.addresses: dict[str | None, tuple[float, float]] = {}
        self.credentials: dict[str | None, tuple[float, float]] = {}
        self.lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if a token was taken, else the seconds until one is available."""
        now = time.monotonic()
        with self.lock:
            state = self.addresses if key.startswith(ADDRESS) else self.credentials
            if key not in state and len(state) >= MAX_KEYS:
                self._forget_refilled(state, now)
                if len(state) >= MAX_KEYS:
                    key = SHARED
            tokens = self._tokens(state.pop(key, (self.capacity, now)), now)  # re-inserted last: the table stays in taking order
            if tokens >= 1:
                state[key] = (tokens - 1, now)
                return 0.0
            state[key] = (tokens, now)
            return self._until_one(tokens)

    def wait(self, key: str) -> float:
        """The seconds until a token is available (0: one is), taking none."""
        state = self.addresses if key.startswith(ADDRESS) else self.credentials
        entry = state.get(key)  # no lock: one read (racing a take(), at worst one more request gets checked)
        if entry is None:
            if len(state) < MAX_KEYS:
                return 0.0
            entry = state.get(SHARED)
            if entry is None:
                return 0.0
        return self._until_one(self._tokens(entry, time.monotonic()))

    def _tokens(self, entry: tuple[float, float], now: float) -> float:
        """What a bucket holds by `now`: its (tokens, time) at its last take, refilled since, up to capacity."""
        tokens, then = entry
        return min(self.capacity, tokens + (now - then) * self.rate)

    def _until_one(self, tokens: float) -> float:
        return 0.0 if tokens >= 1 else (1 - tokens) / self.rate

    def _forget_refilled(self, state: dict, now: float) -> None:
        """Drop the buckets full again by now, from the least recently taken on."""
        refilled = []
        for key, entry in state.items():
            if self._tokens(entry, now) < self.capacity:
                break
            refilled.append(key)
        for key in refilled:
            del state[key]


class CredentialsRefused(ToolError):
    status = 429
    code = "rate_limited"

    def __init__(self, retry_after: float) -> None:
        seconds = max(1, math.ceil(retry_after))
        super().__init__(
            "Too many refused credentials from this address: the limit is AUTH_FAILURES_PER_MINUTE.",
            f"Retry after {seconds} s with a valid token; until then no credential from this address is checked.",
        )
        self.headers = {"Retry-After": str(seconds)}


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        reads, writes = limits(settings)
        self.reads = Bucket(reads) if reads else None
        self.writes = Bucket(writes) if writes else None
        self.enabled = bool(self.reads or self.writes)
        self.refusals = Bucket(settings.auth_failures_per_minute) if settings.auth_failures_per_minute else None

    @contextmanager
    def guessing_bounded(self, address: str | None, presented: bool = True):
        """Around a credential's check: each refused (401) counts against the client address, and
        past AUTH_FAILURES_PER_MINUTE its requests are refused (429) before any credential is
        checked, a valid one too (else guessing would go on at full speed, learning its hit from
        the one answer that is not a 429). A request without a credential (`presented` False)
        guesses nothing and does not count."""
        if self.refusals is None:
            yield
            return
        key = address_key(address)
        if wait := self.refusals.wait(key):
            metrics.rate_limited.inc("credentials")
            raise CredentialsRefused(wait)
        try:
            yield
        except Unauthorized:
            if presented:
                self.refusals.take(key)
                if self.refusals.wait(key):  # this one used up the address's budget: worth an operator's look
                    log.warning("credentials refused from %s past AUTH_FAILURES_PER_MINUTE (%d): its requests are refused"
                                " until its budget refills", address or "an unknown address", int(self.refusals.capacity))
            raise

    def check(self, key: str, write: bool) -> None:
        bucket = self.writes if write else self.reads
        if bucket is not None:
            wait = bucket.take(key)
            if wait:
                metrics.rate_limited.inc("writes" if write else "reads")
                raise RateLimited(wait, write)

    def check_request(self, key: str, path: str, method: str, body: bytes, tools: dict[str, Any]) -> None:
        """check() of one request, from the write budget if it writes (is_write). A refused
        request's log line names the tool it asked for: no tool runs to note it."""
        asked = tools_asked(path, method, body)
        try:
            self.check(key, is_write(path, method, asked, tools))
        except RateLimited:
            logs.note(tool=next((name for name in reversed(asked or []) if name in tools), None))  # a batch: its last, as served
            raise


def tools_asked(path: str, method: str, body: bytes) -> list[str | None] | None:
    """The tool names a request asks for: a REST call's from its path; an MCP POST's from its
    tools/call requests' params.name, in order (None where there is no string), read from the body
    the caller already read within MAX_BODY_BYTES; None for an MCP body orjson cannot parse."""
    if path.startswith("/api/"):
        return [path[5:]]
    if not (path.startswith("/mcp") and method == "POST"):
        return []
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    asked = []
    for request in message if isinstance(message, list) else [message]:
        if isinstance(request, dict) and request.get("method") == "tools/call":
            params = request.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            asked.append(name if isinstance(name, str) else None)
    return asked


def is_write(path: str, method: str, asked: list[str | None] | None, tools: dict[str, Any]) -> bool:
    """Whether a request asking for these tools (tools_asked) writes: a REST call of a write tool,
    or an MCP tools/call of one (a batch writes if any of its calls does), or an MCP body orjson
    cannot parse (the SDK reads more than strict JSON: NaN, Infinity). Everything else reads."""
    if path.startswith("/api/"):
        tool = tools.get(asked[0])
        return method == "PUT" or (tool is not None and not tool.read_only and method != "GET")  # PUT: an upload's bytes
    if asked is None:
        return True
    return any(name not in tools or not tools[name].read_only for name in asked)


class PayloadTooLarge(ToolError):
    status = 413
    code = "payload_too_large"


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {limit} bytes.", "Send less (MAX_BODY_BYTES).")


def caller(principal, address: str | None) -> str:
    """The rate-limit key: who authenticated, else where the request came from."""
    return principal.subject if principal.kind != "anonymous" else address_key(address)


def address_key(address: str | None) -> str:
    """The key of a client address. An IPv6 client chooses its address within its /64 (privacy
    addresses; any interface id it likes), so a key per address gave one client 2^64 budgets: its
    /64 is one key. An IPv4-mapped address is its IPv4 one. IPv4, as the socket or API Gateway
    writes it, is taken as it comes (no parsing on the hot path)."""
    if not address:
        return f"{ADDRESS}unknown"
    if ":" not in address:
        return f"{ADDRESS}{address}"
    try:
        ip = ipaddress.IPv6Address(address.strip("[]").partition("%")[0])  # (a zone id names no other host)
    except ValueError:
        return f"{ADDRESS}{address}"
    if ip.ipv4_mapped is not None:
        return f"{ADDRESS}{ip.ipv4_mapped}"
    return f"{ADDRESS}{ipaddress.IPv6Network((ip, 64), strict=False)}"


def event_source_ip(event: dict) -> str | None:
    """The client address API Gateway saw (v2: requestContext.http, v1: requestContext.identity).
    X-Forwarded-For is the client's to write, so it is never used."""
    context = event.get("requestContext") or {}
    return (context.get("http") or {}).get("sourceIp") or (context.get("identity") or {}).get("sourceIp")

