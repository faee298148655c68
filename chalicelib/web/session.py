"""Signed session cookies and CSRF tokens for the web UI.

A session is a cookie holding {sid, sub, kind, exp}, signed with HMAC-SHA256: nothing is stored
on the server, so sessions survive restarts and work across Lambda containers. The key is
UI_SESSION_SECRET, or else derived from AUTH_BEARER_TOKENS (rotating the tokens ends every
session); with neither (AUTH_MODE=none, or jwt without UI_SESSION_SECRET) it is random per
process. A bearer session also ends once its token's configured role or projects differ from
those it signed in with, or the token is gone: the cookie is checked against the configuration
on every request, so a demoted token's old session is no older credential. Every form carries a CSRF token, the HMAC of the session's id: a cross-site page can
neither read it nor (SameSite=Strict) send the cookie with its forged request.
"""

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass

from ..config import Settings
from ..errors import Unauthorized
from ..security import auth

COOKIE = "am_session"
# Browsers keep a cookie of up to 4096 bytes (RFC 6265 §6.1; some count the attributes too): the
# value gets what the name and the attributes leave. A scope listing very many projects is longer.
MAX_COOKIE_VALUE = 4000
# A credential the API could take: its request head (MAX_HEAD_BYTES, 64 KiB) holds the header
# "Authorization: Bearer <credential>". Large JWTs (groups, roles) are common.
MAX_CREDENTIAL = 64 * 1024


@dataclass(frozen=True)
class Session:
    sid: str
    sub: str | None  # the principal's subject once logged in (auth.Principal), None before
    kind: str | None
    exp: int
    # What the credential signed in with may do (security/scopes.py): the UI calls tools with it.
    role: str = "admin"
    projects: tuple[str, ...] | None = None

    def principal(self) -> auth.Principal | None:
        if self.sub is None:
            return None
        projects = frozenset(self.projects) if self.projects is not None else None
        return auth.Principal(self.kind, self.sub, role=self.role, projects=projects)


def signing_key(settings: Settings) -> bytes:
    if settings.ui_session_secret:
        return hashlib.sha256(b"agent-mail-ui-session\0" + settings.ui_session_secret.encode()).digest()
    # Entries are plain tokens or scoped ones ({token, projects, role}): the secrets either way.
    tokens = sorted(getattr(entry, "token", entry) for entry in settings.auth_bearer_tokens if entry)
    if auth.mode(settings) == "bearer" and tokens:
        return hmac.new(b"agent-mail-ui-session", "\0".join(tokens).encode(), hashlib.sha256).digest()
    return secrets.token_bytes(32)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Sessions:
    def __init__(self, settings: Settings, authenticator: auth.Authenticator | None = None) -> None:
        # The transport's, which the API uses: one cache of verified tokens and one of keys, whose
        # fetches follow its rules (on the local server, the event loop's: auth.JWKS.key).
        self.authenticator = authenticator or auth.Authenticator(settings)
        self.open = self.authenticator.mode == "none"
        self.key = signing_key(settings)
        self.lifetime = int(settings.ui_session_hours * 3600)
        self.leeway = settings.jwt_leeway_seconds  # the API takes a JWT this long past its exp
        # Each configured token's principal now, by subject: what a bearer session must still match.
        self.configured = {principal.subject: principal for _, principal in self.authenticator.bearer}

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self.key, payload.encode(), hashlib.sha256).digest())

    def read(self, cookies: dict[str, list[str]]) -> Session | None:
        """The session of the first of the cookie's values (web/http.py cookies(): a name may come twice,
        one set by another site of the domain) whose signature holds and that has not expired."""
        for value in cookies.get(COOKIE, ()):
            session = self._read(value)
            if session is not None:
                return session
        return None

    def _read(self, value: str) -> Session | None:
        payload, _, signature = value.rpartition(".")
        if not payload or len(value) > MAX_COOKIE_VALUE or not hmac.compare_digest(self._sign(payload), signature):
            return None
        try:
            data = json.loads(_unb64(payload))
            projects = data.get("projects")
            session = Session(str(data["sid"]), data.get("sub"), data.get("kind"), int(data["exp"]), str(data.get("role", "admin")),
                              tuple(map(str, projects)) if projects is not None else None)
        except (ValueError, KeyError, TypeError):
            return None
        return session if session.exp > time.time() and self._scope_unchanged(session) else None

    def _scope_unchanged(self, session: Session) -> bool:
        """Whether a bearer session's token still has the role and projects it signed in with.
        (A JWT's scope is its claims, which cannot change: its session ends with its exp.)"""
        return session.kind != "bearer" or self.configured.get(session.sub) == session.principal()

    def new(self, principal: auth.Principal | None = None) -> Session:
        expires = int(time.time()) + self.lifetime
        if principal is not None and principal.expires is not None:  # a JWT: the session ends when the API refuses it
            expires = min(expires, int(principal.expires) + self.leeway)
        if principal is None:
            return Session(secrets.token_urlsafe(16), None, None, expires)
        projects = tuple(sorted(principal.projects)) if principal.projects is not None else None
        return Session(secrets.token_urlsafe(16), principal.subject, principal.kind, expires, principal.role, projects)

    def cookie(self, session: Session | None, tls: bool) -> str:
        """The Set-Cookie value that stores `session` (None: ends the current one)."""
        if session is None:
            value, age = "", 0
        else:
            value, age = self._value(session), max(0, session.exp - int(time.time()))
        return f"{COOKIE}={value}; Path=/; Max-Age={age}; HttpOnly; SameSite=Strict" + ("; Secure" if tls else "")

    def _value(self, session: Session) -> str:
        payload = _b64(json.dumps({"sid": session.sid, "sub": session.sub, "kind": session.kind, "exp": session.exp,
                                   "role": session.role, "projects": session.projects}).encode())
        return f"{payload}.{self._sign(payload)}"

    def signed_in(self, session: Session | None) -> bool:
        return session is not None and (self.open or session.sub is not None)

    def login(self, credential: str) -> Session:
        """A new signed-in session for a credential the API accepts (bearer token or JWT); Unauthorized if not."""
        credential = credential.strip()
        if not credential:
            raise Unauthorized("Enter a token.", "The bearer token or JWT you use for the API.")
        if len(credential) > MAX_CREDENTIAL:
            raise Unauthorized(f"This credential is longer than the server takes ({len(credential):,} characters; at most"
                               f" {MAX_CREDENTIAL:,}).", "The API refuses it too: its headers may not exceed 64 KiB.")
        session = self.new(self.authenticator.authenticate({"authorization": f"Bearer {credential}"}))
        if len(self._value(session)) > MAX_COOKIE_VALUE:  # the browser would drop it: signed in, then out at once
            raise Unauthorized(
                f"This credential lists too many projects ({len(session.projects or ())}) for a browser session:"
                " sign in with one scoped to fewer projects, or to all (\"*\").",
                "The session cookie holds the scope, and browsers keep 4 KB per cookie; the API takes this credential as it is.",
            )
        return session

    def csrf(self, session: Session) -> str:
        return self._sign("csrf:" + session.sid)

    def csrf_ok(self, session: Session | None, token: str | None) -> bool:
        return session is not None and bool(token) and hmac.compare_digest(self.csrf(session), token)
