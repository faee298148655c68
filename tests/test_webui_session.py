"""Session cookies, CSRF tokens and Markdown rendering of the web UI, without a server."""

import json
import re
import time

import jwt
import pytest

from chalicelib.config import Settings
from chalicelib.errors import Unauthorized
from chalicelib.security.auth import Principal
from chalicelib.web import markdown
from chalicelib.web.http import cookies
from chalicelib.web.session import COOKIE, Sessions

from .test_auth import AUDIENCE, ISSUER, claims, jwks_url, keys  # noqa: F401 (fixtures)

BEARER = Settings(auth_mode="bearer", auth_bearer_tokens=["tok-aaaaaaaaaaaaaaaa"])


def _value(sessions: Sessions, session) -> dict[str, list[str]]:
    """The cookies a browser storing `session` sends back, read as a request's are."""
    return cookies(sessions.cookie(session, tls=False).split(";")[0])


def test_a_signed_session_reads_back_and_a_tampered_or_expired_one_does_not():
    sessions = Sessions(BEARER)
    session = sessions.login("tok-aaaaaaaaaaaaaaaa")
    assert session.principal() == Principal("bearer", session.sub) and session.sub.startswith("bearer:")
    cookie = _value(sessions, session)
    assert sessions.read(cookie) == session and sessions.signed_in(session)
    payload, signature = cookie[COOKIE][0].rsplit(".", 1)
    assert sessions.read({COOKIE: [payload + "." + signature[:-2] + "AA"]}) is None
    assert sessions.read({COOKIE: ["x" + payload[1:] + "." + signature]}) is None
    expired = type(session)(session.sid, session.sub, session.kind, int(time.time()) - 1)
    assert sessions.read(_value(sessions, expired)) is None
    assert sessions.read({COOKIE: ["garbage"]}) is None and sessions.read({}) is None


def test_a_cookie_the_ui_cannot_parse_costs_only_itself_and_a_second_session_cookie_is_tried():
    """QA, session 31: SimpleCookie dropped every cookie of a header holding one it could not
    parse (a space, JSON, a bare name: what other apps on this host set), the session's too,
    and kept one value of a name sent twice (a parent domain's am_session tossed in first)."""
    sessions = Sessions(BEARER)
    session = sessions.login("tok-aaaaaaaaaaaaaaaa")
    value = _value(sessions, session)[COOKIE][0]
    for header in (f'theme=dark mode; {COOKIE}={value}; x={{"a":1}}', f'x={{"a":1}}; flag; {COOKIE}="{value}"; café=ü; b=c\\d',
                   f"{COOKIE}=forged.c2lnbmF0dXJl; {COOKIE}={value}", f"{COOKIE}={value}; {COOKIE}=forged.c2lnbmF0dXJl"):
        assert sessions.read(cookies(header)) == session, header
    assert cookies('theme=dark mode; x={"a":1}; flag; =v') == {"theme": ["dark mode"], "x": ['{"a":1}']}
    assert sessions.read(cookies(f"{COOKIE}=forged.c2lnbmF0dXJl; theme=dark mode")) is None


def test_a_session_ends_when_the_jwt_it_was_signed_in_with_expires(keys, jwks_url):  # noqa: F811
    """It lasted UI_SESSION_HOURS whatever the JWT's exp: the UI went on after the API refused the token.
    It ends when the API refuses the token: JWT_LEEWAY_SECONDS (30) past its exp. (It ended at exp:
    a token expired within the leeway, which the API takes, signed in to a session already over.)"""
    settings = Settings(auth_mode="jwt", jwt_jwks_url=jwks_url, jwt_audience=AUDIENCE, jwt_issuer=ISSUER,
                        ui_session_secret="s3cret")
    sessions = Sessions(settings)
    exp = int(time.time()) + 600
    session = sessions.login(jwt.encode(claims(exp=exp), keys.rsa, "RS256", headers={"kid": "rsa-1"}))
    assert session.exp == exp + 30 and sessions.read(_value(sessions, session)) == session
    assert int(re.search(r"Max-Age=(\d+)", sessions.cookie(session, tls=False)).group(1)) <= 630
    in_leeway = sessions.login(jwt.encode(claims(exp=int(time.time()) - 10), keys.rsa, "RS256", headers={"kid": "rsa-1"}))
    assert sessions.read(_value(sessions, in_leeway)) == in_leeway and "Max-Age=0" not in sessions.cookie(in_leeway, tls=False)
    long_lived = sessions.login(jwt.encode(claims(exp=exp + 86400), keys.rsa, "RS256", headers={"kid": "rsa-1"}))
    assert long_lived.exp <= int(time.time()) + 12 * 3600  # UI_SESSION_HOURS still bounds it
    bearer = Sessions(BEARER).login("tok-aaaaaaaaaaaaaaaa")  # a bearer token has no expiry of its own
    assert bearer.exp >= int(time.time()) + 12 * 3600 - 5


def test_a_credential_scoped_to_many_projects_signs_in_or_is_told_why_not():
    """The project list is in the cookie, and cookies over 2048 characters were dropped: the
    sign-in 'worked' and every page sent the person back to it."""
    def scoped_to(count):
        projects = [f"team-{n:03d}-service-repository" for n in range(count)]
        settings = Settings(auth_mode="bearer", auth_bearer_tokens=json.dumps([{"token": "tok-many-projects", "projects": projects,
                                                                                 "role": "reader"}]))
        return Sessions(settings)

    sessions = scoped_to(60)  # a cookie of ~2,700 characters: what browsers keep
    session = sessions.login("tok-many-projects")
    assert len(session.projects) == 60 and sessions.read(_value(sessions, session)) == session
    with pytest.raises(Unauthorized, match="too many projects \\(200\\)"):
        scoped_to(200).login("tok-many-projects")


def test_a_jwt_the_api_takes_signs_in_however_long(keys, jwks_url):  # noqa: F811
    """Over 8,192 characters (large groups or roles claims) the sign-in said "Enter a token.",
    though the API took it. Past what the API takes (its 64 KiB head), it says that."""
    sessions = Sessions(Settings(auth_mode="jwt", jwt_jwks_url=jwks_url, jwt_audience=AUDIENCE, jwt_issuer=ISSUER))
    large = jwt.encode(claims(groups=[f"group-{n:05d}" for n in range(800)]), keys.rsa, "RS256", headers={"kid": "rsa-1"})
    assert len(large) > 10_000 and sessions.login(large).sub == "agent-runner"
    with pytest.raises(Unauthorized, match="longer than the server takes"):
        sessions.login("x" * 70_000)


def test_the_key_follows_the_configured_secrets():
    one, same = Sessions(BEARER), Sessions(BEARER)
    assert one.read(_value(same, same.login("tok-aaaaaaaaaaaaaaaa"))) is not None  # another process, same tokens
    rotated = Sessions(Settings(auth_mode="bearer", auth_bearer_tokens=["tok-bbbbbbbbbbbbbbbb"]))
    assert rotated.read(_value(one, one.login("tok-aaaaaaaaaaaaaaaa"))) is None  # rotating the tokens ends sessions
    secret = Settings(auth_mode="bearer", auth_bearer_tokens=["tok-bbbbbbbbbbbbbbbb"], ui_session_secret="s3cret")
    assert Sessions(secret).key == Sessions(secret).key != rotated.key


def test_a_session_ends_when_its_tokens_role_or_projects_change_or_it_is_removed():
    """The operator demoted a token, same string: the API refused it, the old cookie still wrote
    as the overseer (the key, from the token strings alone, had not changed; with
    UI_SESSION_SECRET even removing the token left its sessions open)."""
    def configured(*entries, secret=""):
        return Sessions(Settings(auth_mode="bearer", auth_bearer_tokens=json.dumps(entries), ui_session_secret=secret))

    admin = {"token": "tok-demoted-aaaaaaaa", "role": "admin"}
    for secret in ("", "s3cret"):
        before = configured(admin, "tok-other-bbbbbbbbb", secret=secret)
        cookie = _value(before, before.login("tok-demoted-aaaaaaaa"))
        assert configured(admin, "tok-other-bbbbbbbbb", secret=secret).read(cookie) is not None  # a restart changes nothing
        demoted = configured({**admin, "role": "reader", "projects": ["/srv/other"]}, "tok-other-bbbbbbbbb", secret=secret)
        assert demoted.read(cookie) is None
        assert configured({**admin, "projects": ["/srv/other"]}, "tok-other-bbbbbbbbb", secret=secret).read(cookie) is None
        if secret:  # without it, removing a token changes the key anyway
            assert configured("tok-other-bbbbbbbbb", secret=secret).read(cookie) is None
        again = demoted.read(_value(demoted, demoted.login("tok-demoted-aaaaaaaa")))  # signing in again: the new scope
        assert again.role == "reader" and again.projects == ("/srv/other",)


def test_cookie_attributes_and_csrf_tokens_per_session():
    sessions = Sessions(BEARER)
    a, b = sessions.new(), sessions.new()
    header = sessions.cookie(a, tls=True)
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Secure" in header and "Max-Age=43200" in header
    assert "Secure" not in sessions.cookie(a, tls=False)
    assert sessions.csrf_ok(a, sessions.csrf(a)) and not sessions.csrf_ok(a, sessions.csrf(b))
    assert not sessions.csrf_ok(a, "") and not sessions.csrf_ok(None, sessions.csrf(a))
    assert not sessions.signed_in(a)  # a pre-login session is no login
    assert sessions.cookie(None, tls=False).startswith(f"{COOKIE}=; Path=/; Max-Age=0")


def test_markdown_is_rendered_and_sanitised():
    html = markdown.render("# T\n\n| a |\n|---|\n| `x` |\n\n[ok](https://e.x) [bad](javascript:alert(1)) ![i](https://e.x/i.png)"
                           "\n\n<script>alert(1)</script> <b onclick=alert(1)>b</b>")
    assert "<h3>T</h3>" in html and "<td><code>x</code></td>" in html  # under the page's own h1 and h2
    assert '<a href="https://e.x" rel="noopener noreferrer">ok</a>' in html
    assert "javascript:" not in html.replace("[bad](javascript:alert(1))", "")  # left as text, never a link
    assert "<img" not in html and '<a href="https://e.x/i.png" rel="noopener noreferrer">[image: i]</a>' in html
    assert "&lt;script&gt;" in html and "<b" not in html
