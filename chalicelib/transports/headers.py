"""Security headers on every response, and CORS (closed unless CORS_ALLOWED_ORIGINS names origins).

Framework-free: Front (asgi.py) adds them as raw ASGI headers, the Chalice app in its middleware.
"""

from ..config import Settings
from ..web.http import CSP

COMMON = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# Anything but HTML: nothing may load, nothing may frame it.
CSP_DATA = "default-src 'none'; frame-ancestors 'none'"
# HTML (the web UI and /docs, whose assets this server serves itself): chalicelib/web/http.py.
CSP_HTML = CSP
HSTS = "max-age=31536000; includeSubDomains"
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Accept, X-Agent-Token, Mcp-Session-Id, Mcp-Protocol-Version, Last-Event-ID"


def security_headers(content_type: str, tls: bool) -> dict[str, str]:
    headers = dict(COMMON)
    headers["Content-Security-Policy"] = CSP_HTML if content_type.startswith("text/html") else CSP_DATA
    if tls:
        headers["Strict-Transport-Security"] = HSTS
    return headers


def add_security_headers(headers: dict[str, str], tls: bool) -> None:
    """Add to a response's headers (a dict, as Chalice and Lambda have them) the security
    headers it lacks."""
    content_type = next((value for name, value in headers.items() if name.lower() == "content-type"), "")
    for name, value in security_headers(content_type, tls).items():
        headers.setdefault(name, value)


def cors_headers(origin: str | None, settings: Settings) -> dict[str, str]:
    """Access-Control-* for an allowed Origin; nothing otherwise (the browser then refuses)."""
    if not origin or origin not in settings.cors_allowed_origins:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "Mcp-Session-Id, Retry-After, WWW-Authenticate",
        "Vary": "Origin",
    }


def preflight_headers(origin: str | None, settings: Settings) -> dict[str, str] | None:
    """The answer's headers to a CORS preflight from an allowed origin; None: not allowed."""
    allowed = cors_headers(origin, settings)
    if not allowed:
        return None
    return allowed | {"Access-Control-Allow-Methods": CORS_METHODS, "Access-Control-Allow-Headers": CORS_HEADERS,
                      "Access-Control-Max-Age": "600"}
