"""DNS-rebinding protection: the one Host and Origin check every transport runs.

A web page can rebind its own name to 127.0.0.1 and then call the local server as if it were
same-origin; the browser still sends the page's name as `Host` (and its origin as `Origin`).
So every route but /health (the local server's Front, the Chalice middleware, the MCP lean path
and Lambda's `mcp` function) refuses a `Host` outside ALLOWED_HOSTS (421) and an `Origin`
outside ALLOWED_ORIGINS or CORS_ALLOWED_ORIGINS (403): an exact value, or `name:*` for that name
with any port (digits) or none (stricter than the MCP SDK's check behind it, which takes anything
after `name:`), in any case, or `*` alone: anything, for a deployment whose gateway already pins the Host. A
request without `Host` (HTTP/1.0, Chalice's test client) is let through: browsers always send one.

Before it, a request that sends Host, Authorization or Origin more than once is refused (400,
check_sent_once): a proxy in front may read one copy and this server another (RFC 9112 §3.2).
"""

import re
import string
from typing import Iterable

from ..config import Settings
from ..errors import Forbidden, ToolError

# Liveness stays cheap and open to load balancers that probe by address (any Host).
EXEMPT_PATHS = frozenset({"/health"})


class MisdirectedRequest(ToolError):
    status = 421
    code = "misdirected_request"


SENT_ONCE = {"host": "Host", "authorization": "Authorization", "origin": "Origin"}


class RepeatedField(ToolError):
    status = 400
    code = "bad_request"


def check_sent_once(names: Iterable[str]) -> None:
    """Raise if the request's header field names (one per field sent) repeat one of SENT_ONCE."""
    seen = set()
    for name in names:
        name = name.lower()
        if name in SENT_ONCE:
            if name in seen:
                raise RepeatedField(f"The request sends the {SENT_ONCE[name]} header more than once.",
                                    "Send each of Host, Authorization and Origin once.")
            seen.add(name)


# What `name:*` takes after the name: a port, or none (the scheme's default: port 80 sends no port).
# Digits only, up to the end: `127.0.0.1:80@evil.example` and `http://127.0.0.1:80.evil.example` name other hosts.
_ANY_PORT = re.compile(r"(?::[0-9]+)?")


# Host names, and an origin's scheme and host, are case-insensitive (RFC 9110 §4.2.3): A-Z only,
# as str.lower() would also fold the Kelvin sign to k (a Host that is not this name).
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def folded(text: str) -> str:
    return text.translate(_ASCII_LOWER)


def allowed(value: str, patterns: list[str]) -> bool:
    """An exact value, `*`, or `name:*`: that name with any port or none; in any case."""
    value = folded(value)
    return any(value == pattern or pattern == "*"
               or (pattern.endswith(":*") and value.startswith(pattern[:-2]) and _ANY_PORT.fullmatch(value, len(pattern) - 2))
               for pattern in map(folded, patterns))


def check(host: str | None, origin: str | None, settings: Settings) -> None:
    """Raise unless the request's Host and Origin are allowed."""
    if host and not allowed(host, settings.allowed_hosts):
        raise MisdirectedRequest(
            f"Host {host!r} is not served here.",
            "Add this host to ALLOWED_HOSTS (docs/security.md) if it is really this server's name.",
        )
    if origin and not (allowed(origin, settings.allowed_origins) or origin in settings.cors_allowed_origins):
        raise Forbidden(
            f"Requests from origin {origin!r} are not allowed.",
            "Add the origin to ALLOWED_ORIGINS (or CORS_ALLOWED_ORIGINS for browsers) if you trust it.",
        )
