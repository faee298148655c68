"""Who is calling: bearer tokens or JWTs (JWKS), checked once per request at each transport's
entry (chalicelib/transports/asgi.py's Front, app.py's Chalice middleware and its `mcp` function).

Framework-free on purpose, like rest.py: the Lambda package imports it on every cold start.

    AUTH_MODE=none    nobody is asked (allowed on a loopback HOST only, or with ALLOW_INSECURE=true)
    AUTH_MODE=bearer  `Authorization: Bearer <one of AUTH_BEARER_TOKENS>`
    AUTH_MODE=jwt     `Authorization: Bearer <JWT>` signed by a key of JWT_JWKS_URL, for
                      JWT_AUDIENCE, from JWT_ISSUER, with an algorithm of JWT_ALGORITHMS

Cost on the hot path: a bearer check is a few constant-time comparisons (~1 µs); a JWT is
verified once (an RSA or EC signature check, ~50–200 µs) and then looked up in a bounded
cache of verified tokens until it expires (~1 µs).
"""

import asyncio
import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import os
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

from ..config import ScopedToken, Settings
from ..errors import Unauthorized, Unavailable
from ..human_keys import is_path, normalize_human_key

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/health", "/ready"})  # liveness and readiness never ask for credentials
CACHE_SIZE = 4096  # verified JWTs kept; when full, the cache starts over
JWKS_MAX_BYTES = 1024 * 1024
JWKS_MIN_REFRESH_SECONDS = 10  # an unknown kid refetches the key set at most this often


class InsecureConfiguration(RuntimeError):
    """The server would be reachable from other hosts without authentication."""


ROLES = ("reader", "writer", "admin")  # each may do what the one before it may


@dataclass(frozen=True)
class Principal:
    kind: str  # "anonymous", "operator", "bearer" or "jwt"
    subject: str  # who, for logs and rate limits: "anonymous", "bearer:<hash prefix>", the JWT's sub
    role: str = "admin"  # reader, writer or admin (chalicelib/security/scopes.py says who may do what)
    projects: frozenset[str] | None = None  # slugs or human keys it reaches; None: every project
    expires: float | None = None  # a JWT's exp (epoch seconds), which a UI session must not outlive; None: never
    unrestricted: bool = field(init=False)  # admin of every project: nothing to check (hot path)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unrestricted", self.role == "admin" and self.projects is None)


ANONYMOUS = Principal("anonymous", "anonymous")  # AUTH_MODE=none: whoever reaches the loopback port
OPERATOR = Principal("operator", "operator")  # in-process callers: the CLI, scripts, tests

# The caller of the request being served, set by each transport after authentication
# (asgi.Front, app.py); invoke.py reads it. Unset (an in-process call): the operator.
current: ContextVar[Principal | None] = ContextVar("principal", default=None)


def credential(principal: Principal) -> str | None:
    """Whose share a call takes of what is shared out per credential (waits, slow lanes, a project's
    file reservations): an authenticated credential's; None for the operator and, without
    authentication, everyone (one caller: whoever reaches the loopback port)."""
    return principal.subject if principal.kind in ("bearer", "jwt") else None


@contextmanager
def calling(principal: Principal):
    """Within it, `current` is this principal: invoke.run runs a handler so, on whichever thread."""
    token = current.set(principal)
    try:
        yield
    finally:
        current.reset(token)


def current_credential() -> str | None:
    """credential() of the call being run."""
    return credential(current.get() or OPERATOR)


def scoped(kind: str, subject: str, projects, role, expires: float | None = None) -> Principal:
    """A principal from a configured or claimed scope (projects: a list or a space- or comma-separated
    string; None, or "*" among them, for all)."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if isinstance(projects, str):  # split first: "a *" is ["a", "*"], which reaches all (it reached a only)
        projects = projects.replace(",", " ").split()
    if projects is None or "*" in projects:
        return Principal(kind, subject, role, None, expires)
    # A path as the projects' keys spell it (C:/x and c:\x name C:\x), so that scopes.in_scope matches it.
    keys = (normalize_human_key(key) if is_path(key) else key for key in map(str, projects))
    return Principal(kind, subject, role, frozenset(keys), expires)


def mode(settings: Settings) -> str:
    """AUTH_MODE; unset: bearer if AUTH_BEARER_TOKENS (or AUTH_KEYS, infra's secret) names tokens, else none."""
    return settings.auth_mode or ("bearer" if any(settings.auth_bearer_tokens) else "none")


def agent_tokens_required(settings: Settings) -> bool:
    if settings.require_agent_tokens is not None:
        return settings.require_agent_tokens
    return mode(settings) != "none"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=256)
def is_remote_address(host: str) -> bool:
    """An IP address that is not loopback (names, such as a test client's, are not addresses).
    Cached: the local server asks on every request, about the few addresses it listens on."""
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def on_lambda() -> bool:
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def check_configuration(settings: Settings, host: str | None = None) -> None:
    """Refuse to start with a configuration that would leave the server open, or that cannot
    verify anything. `host` is where the server listens (None on AWS Lambda: reachable by anyone)."""
    current = mode(settings)
    if current == "none":
        if not settings.allow_insecure and not is_loopback(host):
            where = "on AWS Lambda" if host is None else f"on host {host!r}"
            raise InsecureConfiguration(
                f"Refusing to serve without authentication {where}: set AUTH_MODE=bearer or AUTH_MODE=jwt"
                " (docs/security.md), or ALLOW_INSECURE=true if something in front of it authenticates."
            )
    elif current == "bearer":
        if not [token for token in settings.auth_bearer_tokens if token]:
            raise InsecureConfiguration("AUTH_MODE=bearer needs AUTH_BEARER_TOKENS (comma-separated).")
    elif current == "jwt":
        missing = [name for name in ("jwt_jwks_url", "jwt_audience", "jwt_issuer") if not getattr(settings, name)]
        if missing:
            raise InsecureConfiguration(f"AUTH_MODE=jwt needs {', '.join(name.upper() for name in missing)}.")
        if not settings.jwt_algorithms:  # (Settings refuses none, HS* and unknown names)
            raise InsecureConfiguration("AUTH_MODE=jwt needs JWT_ALGORITHMS: asymmetric algorithms (e.g. RS256, ES256).")


def bearer_token(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization") or headers.get("Authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else ""


def _missing() -> Unauthorized:
    return Unauthorized(
        "Authentication required.",
        "Send an Authorization: Bearer <token> header (docs/security.md).",
    )


def _invalid(reason: str) -> Unauthorized:
    return Unauthorized(
        f"The bearer token was refused: {reason}.",
        "Get a valid token; for a JWT check its audience, issuer, expiry and signing key.",
        challenge='Bearer realm="agent-mail", error="invalid_token"',
    )


class Authenticator:
    """`authenticate(headers) -> Principal`, or raise Unauthorized (401). Headers: a mapping
    whose keys are lower-case (ASGI, API Gateway v2) or as sent (API Gateway v1, Chalice's
    case-insensitive dict)."""

    def __init__(self, settings: Settings) -> None:
        self.mode = mode(settings)
        self.settings = settings
        self.bearer = [_bearer_entry(entry) for entry in settings.auth_bearer_tokens if entry]
        self.jwks = JWKS(settings) if self.mode == "jwt" else None
        self.verified: dict[str, tuple[Principal, float]] = {}

    def authenticate(self, headers: Mapping[str, str]) -> Principal:
        if self.mode == "none":
            return ANONYMOUS
        token = bearer_token(headers)
        if token is None:
            raise _missing()
        if not token:
            raise _invalid("not a Bearer token")
        if self.mode == "bearer":
            return self._bearer(token)
        return self._jwt(token)

    async def authenticate_async(self, headers: Mapping[str, str]) -> Principal:
        """authenticate, on an event loop: a JWT whose key set must be fetched first waits for the
        fetch in a thread (JWKS.fetch_if_due) instead of holding the loop."""
        await self.fetch_keys(bearer_token(headers))
        return self.authenticate(headers)

    async def fetch_keys(self, token: str | None) -> None:
        """The key-set fetch a JWT needs, if one is due, awaited on the event loop (JWKS.fetch_if_due):
        authenticate then finds the keys. The web UI's sign-in calls it before its page's thread."""
        if self.jwks is not None and token:
            cached = self.verified.get(token)
            if cached is None or cached[1] <= time.time():
                await self.jwks.fetch_if_due(_kid(token))

    def _bearer(self, token: str) -> Principal:
        presented = token.encode()
        found = None
        for expected, principal in self.bearer:  # every comparison runs: no early exit, constant time
            if hmac.compare_digest(presented, expected):
                found = principal
        if found is None:
            raise _invalid("unknown token")
        return found

    def _jwt(self, token: str) -> Principal:
        cached = self.verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        principal, expires = self._verify(token)
        if len(self.verified) >= CACHE_SIZE:
            self.verified.clear()
        self.verified[token] = (principal, expires)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        import jwt  # PyJWT, imported on the first JWT: REST-only cold starts without JWT never pay for it

        settings = self.settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _invalid("not a JWT") from None
        alg = header.get("alg")
        # The allow-list decides, never the token: alg=none and HMAC (signed with the public key) are refused.
        if alg not in settings.jwt_algorithms:
            raise _invalid(f"algorithm {alg!r} is not accepted")
        keys = self.jwks.key(header.get("kid"))
        if keys is None:
            raise _invalid("unknown signing key")
        key = keys.get(alg)
        if key is None:
            raise _invalid("the signing key is not for this algorithm")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=settings.jwt_audience,
                issuer=settings.jwt_issuer,
                leeway=settings.jwt_leeway_seconds,
                # sub: whose share a call takes (credential()); without it every such caller was one, "",
                # which is no credential: no per-credential limit held them
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise _invalid("expired") from None
        except jwt.ImmatureSignatureError:
            raise _invalid("not valid yet") from None
        except jwt.InvalidAudienceError:
            raise _invalid("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise _invalid("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise _invalid("bad signature") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise _invalid("invalid") from None
        subject, expires = str(claims["sub"]), float(claims["exp"])
        if not subject.strip():
            raise _invalid("empty sub")
        try:
            principal = scoped("jwt", subject, claims.get(settings.jwt_projects_claim), claims.get(settings.jwt_role_claim, "admin"),
                               expires)
        except (ValueError, TypeError):
            raise _invalid(f"bad {settings.jwt_projects_claim} or {settings.jwt_role_claim} claim") from None
        return principal, expires


def _kid(token: str) -> str | None:
    """The key id a JWT names, unverified (a token that is no JWT: None, and _verify refuses it)."""
    import jwt

    try:
        return jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError:
        return None


def _bearer_entry(entry: str | ScopedToken) -> tuple[bytes, Principal]:
    scope = entry if isinstance(entry, ScopedToken) else ScopedToken(token=entry)
    subject = "bearer:" + hashlib.sha256(scope.token.encode()).hexdigest()[:12]
    return scope.token.encode(), scoped("bearer", subject, scope.projects, scope.role)


class JWKS:
    """The issuer's public keys, fetched from JWT_JWKS_URL with a bounded time and size,
    kept for JWT_JWKS_CACHE_SECONDS, refetched early for an unknown kid (key rotation). After a
    fetch, failed or not, the next one waits JWKS_MIN_REFRESH_SECONDS: made-up kids, or an issuer
    that is down, cost one fetch per interval. If a refetch fails, the keys already known stay in
    use. On the event loop the fetch runs in a thread (fetch_if_due), one at a time."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.jwt_jwks_url
        self.timeout = settings.jwt_jwks_timeout_seconds
        self.ttl = settings.jwt_jwks_cache_seconds
        self.keys: dict[str | None, dict[str, object]] = {}  # kid -> {algorithm: key}
        self.fetched = self.attempted = float("-inf")  # monotonic: the last good fetch, the end of the last one
        self.algorithms = settings.jwt_algorithms
        self.failed = False
        self.skipped: list[str] = []  # the entries the last fetch could not use (logged when they change)
        self.lock = threading.Lock()
        self.pending: asyncio.Future | None = None  # the event loop's fetch in flight
        self.fetcher: ThreadPoolExecutor | None = None
        self.download: Future | None = None  # the last download (_fetch), perhaps given up and still running

    def due(self, kid: str | None) -> bool:
        """Whether the key set should be fetched (again) before looking `kid` up."""
        now = time.monotonic()
        if now - self.attempted < JWKS_MIN_REFRESH_SECONDS or (self.pending is not None and not self.pending.done()):
            return False
        return now - self.fetched > self.ttl or self._find(kid) is None

    def key(self, kid: str | None) -> dict[str, object] | None:
        """The key named `kid`, as {algorithm: key} (None: unknown), after a fetch if one is due,
        which blocks. Once an event loop fetches (fetch_if_due), nothing else does: a thread that
        needs a key (the web UI's sign-in) gets those known, and neither waits for a fetch nor starts one."""
        if self.fetcher is None and self.due(kid):
            self._refresh()
        if not self.keys and self.failed:
            raise Unavailable("The signing keys (JWT_JWKS_URL) could not be fetched.", "Retry in a moment.")
        return self._find(kid)

    async def fetch_if_due(self, kid: str | None) -> None:
        """The fetch key(kid) would make, in a thread of its own; every request that needs it
        waits for the one in flight. A known key is used meanwhile (an early refresh)."""
        loop = asyncio.get_running_loop()
        if self.pending is not None and self.pending.get_loop() is not loop:
            self.pending = None  # another loop's (tests start several)
        if self.due(kid):
            self.fetcher = self.fetcher or ThreadPoolExecutor(1, thread_name_prefix="jwks")
            self.pending = loop.run_in_executor(self.fetcher, self._refresh)
        if self.pending is not None and not self.pending.done() and self._find(kid) is None:
            await asyncio.shield(self.pending)  # a request that goes away leaves the fetch to the others

    def _find(self, kid: str | None):
        if kid is not None and not isinstance(kid, str):
            return None
        if kid is None and len(self.keys) == 1:
            return next(iter(self.keys.values()))
        return self.keys.get(kid) if kid is not None else None

    def _refresh(self) -> None:
        started = time.monotonic()
        with self.lock:
            if self.attempted >= started:  # another thread fetched while this one waited
                return
            try:
                keys = self._signing_keys(json.loads(self._fetch()))
            except (OSError, ValueError, http.client.HTTPException):  # (no HTTP at all: BadStatusLine)
                self.failed = True
                return
            finally:
                self.attempted = time.monotonic()
            self.keys, self.fetched, self.failed = keys, self.attempted, False

    def _signing_keys(self, document) -> dict[str | None, dict[str, object]]:
        """kid -> {algorithm: key} of the key set's signing keys. An entry this server cannot use
        is skipped (RFC 7517 §5), said once in the log: a kid that is a list, or an entry that is
        not an object, broke the whole set (a 500, then every token refused)."""
        import jwt

        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise ValueError("not a JWK set")
        keys, skipped = {}, []
        for n, entry in enumerate(entries):
            if isinstance(entry, dict):  # a member given as null is absent ("use": null dropped the key)
                entry = {name: value for name, value in entry.items() if value is not None}
            if not isinstance(entry, dict) or not all(isinstance(entry.get(name), str | None) for name in ("kid", "alg", "use")):
                skipped.append(f"entry {n}: not a JWK (an object whose kid, alg and use are strings)")
            elif entry.get("use", "sig") == "sig":
                try:
                    keys[entry.get("kid")] = self._for_algorithms(jwt.PyJWK(entry), entry)
                except (jwt.PyJWTError, ValueError, TypeError) as exc:  # a key type this server does not use, or broken
                    skipped.append(f"entry {n} (kid {entry.get('kid')!r}): {exc}")
        if skipped and skipped != self.skipped:
            log.warning("JWT_JWKS_URL: skipped %s", "; ".join(skipped))
        self.skipped = skipped
        return keys

    def _for_algorithms(self, key, entry: dict) -> dict[str, object]:
        """The key for each algorithm it verifies. A JWK without "alg" (optional, RFC 7517 §4.4)
        PyJWT takes for RS256 if it is an RSA key: it serves every RSA algorithm allowed
        (RS*, PS*). An EC key's curve names its one algorithm."""
        import jwt

        if "alg" in entry or entry.get("kty") != "RSA":
            return {key.algorithm_name: key}
        return {alg: jwt.PyJWK(entry, algorithm=alg) for alg in self.algorithms if alg.startswith(("RS", "PS"))}

    def _fetch(self) -> bytes:
        """The key set, whole within JWT_JWKS_TIMEOUT_SECONDS of the start (connect, headers, body),
        else TimeoutError. The socket's timeout bounds each read only: a server sending its headers
        a byte at a time held the fetch, and every request waiting on it, as long as it went on. So
        the download runs in a thread of its own, waited for until the deadline. One given up ends
        at its next read of the body or its socket's timeout; until then no other starts (the fetch
        fails at once), so they never pile up. Called under the lock."""
        if self.download is not None and not self.download.done():
            raise TimeoutError("the key set's last download, given up, is still running")
        deadline = time.monotonic() + self.timeout
        self.download = download = Future()

        def run() -> None:
            try:
                download.set_result(self._download(deadline))
            except BaseException as exc:
                download.set_exception(exc)

        threading.Thread(target=run, name="jwks-download", daemon=True).start()
        return download.result(timeout=max(0.0, deadline - time.monotonic()))  # TimeoutError past it

    def _download(self, deadline: float) -> bytes:
        """The key set as sent, in _fetch's thread. read1 returns what one read got, so a download
        given up (past the deadline) stops as its body arrives, however slowly."""
        body = bytearray()
        with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
            while chunk := response.read1(65536):
                body += chunk
                if len(body) > JWKS_MAX_BYTES:
                    raise ValueError(f"the key set is larger than {JWKS_MAX_BYTES} bytes")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the key set took longer than {self.timeout} s")
        return bytes(body)


_authenticators: dict[int, tuple[Settings, Authenticator]] = {}


def authenticate(headers: Mapping[str, str], settings: Settings) -> Principal:
    """The caller's principal, or Unauthorized (401). One Authenticator (and its caches) per Settings."""
    entry = _authenticators.get(id(settings))
    if entry is None or entry[0] is not settings:
        entry = _authenticators[id(settings)] = (settings, Authenticator(settings))
    return entry[1].authenticate(headers)


def lower_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    return {name.lower(): value for name, value in (headers or {}).items()}
