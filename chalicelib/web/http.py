"""The web UI's own request and response: plain data, so that the local server (asgi.py) and
the Chalice app (app.py) serve the same pages, each adapting its framework's request."""

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

# Every HTML page: our own scripts and styles only, nothing inline, no remote images, forms only
# to ourselves, never framed.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self';"
    " form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
FORMS = ("/ui/compose", "/ui/act", "/ui/login", "/ui/logout")  # the pages that take a POST
ACTS = "/ui/act"  # a form's target that acts, and has no page to show: POST only
MAX_FIELDS = 200  # form or query fields read; the rest is ignored


@dataclass
class Request:
    method: str
    path: str  # as routed, without the root
    query: dict[str, str] = field(default_factory=dict)
    form: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, list[str]] = field(default_factory=dict)  # every value of each name, in the header's order
    root: str = ""  # the URL prefix the app is served under (API Gateway's stage), no trailing slash
    tls: bool = False
    too_large: bool = False  # a body past MAX_BODY_BYTES: the transport read none of it (form is empty)
    same_origin: bool = False  # the browser says this page's own site sent it (Sec-Fetch-Site), whatever its token
    client: str | None = None  # the client's address, as the API's rate limit keys on it (security/ratelimit.py caller)
    referer: str = ""  # the page of this host that sent it (Referer), as a path under root with its query; else ""


@dataclass
class Response:
    status: int
    body: bytes
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # the body is this file's content instead (a large attachment: streamed)
    length: int | None = None  # a HEAD's Content-Length: that of the body its GET sends (None: this body's)


def methods(path: str) -> tuple[str, ...]:
    """The methods a page or static file of the web UI takes (any other: 405, with them in Allow):
    GET and HEAD, and POST for a form's page; /ui/act (it acts) POST alone."""
    if path == ACTS:
        return ("POST",)
    return ("GET", "HEAD", "POST") if path in FORMS else ("GET", "HEAD")


def pairs(text: str) -> dict[str, str]:
    """A query string or urlencoded form as {name: first value}, bounded: its first MAX_FIELDS
    fields are read, the rest ignored (parse_qsl's own bound refuses the whole string)."""
    found: dict[str, str] = {}
    for name, value in parse_qsl("&".join(text.split("&", MAX_FIELDS)[:MAX_FIELDS]), keep_blank_values=True):
        found.setdefault(name, value)
    return found


def form_fields(body: bytes, content_type: str | None) -> dict[str, str]:
    if not body or not (content_type or "").startswith("application/x-www-form-urlencoded"):
        return {}
    try:
        return pairs(body.decode("utf-8"))
    except UnicodeDecodeError:
        return {}


def cookies(header: str | None) -> dict[str, list[str]]:
    """A Cookie header as {name: its values}, read piece by piece: a cookie another app on this
    host set (shared by every port), which SimpleCookie would refuse (a space, JSON, no "="),
    costs only itself, never the session's. A name sent twice keeps each value (session.read
    takes the one whose signature holds)."""
    found: dict[str, list[str]] = {}
    for piece in (header or "").split(";"):
        name, equals, value = piece.partition("=")
        name, value = name.strip(), value.strip()
        if not equals or not name:
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        found.setdefault(name, []).append(value)
    return found


def request(method: str, path: str, query_string: str, body: bytes, headers: dict[str, str], root: str = "", tls: bool = False,
            too_large: bool = False, client: str | None = None) -> Request:
    """A Request from raw parts; `headers` with lower-case names. Only a POST has a form: a body
    sent with another method is never read as one (the CSRF check is a POST's)."""
    method = method.upper()
    return Request(
        method=method, path=path, query=pairs(query_string),
        form=form_fields(body, headers.get("content-type")) if method == "POST" else {},
        cookies=cookies(headers.get("cookie")), root=root, tls=tls, too_large=too_large,
        same_origin=headers.get("sec-fetch-site") == "same-origin", client=client,
        referer=referer_path(headers.get("referer"), headers.get("host"), root),
    )


def referer_path(referer: str | None, host: str | None, root: str) -> str:
    """The Referer as a path under root ("/ui/thread?p=…") when it names a page of this host, else
    "" (a caller checks the path before it links to it: pages.py _SAME_SITE)."""
    try:
        parts = urlsplit(referer or "")
    except ValueError:  # a malformed one ("http://[x"): none
        return ""
    if not host or parts.netloc != host or parts.scheme not in ("http", "https") or not parts.path.startswith(root + "/"):
        return ""
    return parts.path.removeprefix(root) + (f"?{parts.query}" if parts.query else "")
