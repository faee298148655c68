"""The web UI with authentication on: sign in once with a credential the API accepts, a signed
HttpOnly SameSite=Strict session cookie, sign out, CSRF tokens on every form; /docs offline."""

import json
import re

import httpx
import pytest

from .browser import chromium
from .servers import running_server

TOKEN = "ui-test-token-0123456789"


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("webui-auth") / "agent_mail.db", AUTH_MODE="bearer",
                        AUTH_BEARER_TOKENS=f"{TOKEN},other-token-abcdefgh") as url:
        api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"})
        api.post("/api/ensure_project", json={"human_key": "/srv/app"}).raise_for_status()
        api.post("/api/register_agent", json={"project_key": "srv-app", "program": "p", "model": "m", "name": "BlueLake"}).raise_for_status()
        yield url


def _signed_in(url: str, token: str = TOKEN) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    login = client.get("/ui/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
    answer = client.post("/ui/login", data={"csrf": csrf, "token": token, "next": "/"})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    return client


def _csrf(client: httpx.Client, path: str = "/ui/compose?p=srv-app") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)


def test_pages_ask_for_a_session_and_the_api_still_for_a_bearer_token(url):
    anonymous = httpx.Client(base_url=url, timeout=60)
    page = anonymous.get("/ui/projects")
    assert page.status_code == 303 and page.headers["location"] == "/ui/login?next=%2Fui%2Fprojects"
    assert anonymous.get("/ui/live").status_code == 401
    assert anonymous.post("/ui/act", data={"action": "retire"}).status_code == 403  # no session, no CSRF token
    client = _signed_in(url)
    cookie = client.cookies.jar
    [session] = [c for c in cookie if c.name == "am_session"]
    assert session.has_nonstandard_attr("HttpOnly") and session._rest.get("SameSite") == "Strict" and session.expires
    assert client.get("/ui/projects").status_code == 200
    assert client.get("/api/list_projects").status_code == 401  # the cookie is no API credential
    assert client.get("/openapi.json").status_code == 200  # but /docs may read the description
    assert anonymous.get("/openapi.json").status_code == 401


def test_a_wrong_token_or_a_forged_cookie_signs_nobody_in(url):
    client = httpx.Client(base_url=url, timeout=60)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/login").text).group(1)
    refused = client.post("/ui/login", data={"csrf": csrf, "token": "nope", "next": "/"})
    assert refused.status_code == 401 and "refused" in refused.text
    signed = _signed_in(url).cookies["am_session"]
    payload, signature = signed.rsplit(".", 1)
    forged = httpx.Client(base_url=url, timeout=60, cookies={"am_session": payload + "." + signature[::-1]})
    assert forged.get("/ui/projects").status_code == 303


def test_every_state_changing_form_needs_the_sessions_csrf_token(url):
    client = _signed_in(url)
    other = _signed_in(url)
    form = {"project_key": "srv-app", "to": "BlueLake", "subject": "Hi", "body_md": "x"}
    assert client.post("/ui/compose", data=form).status_code == 403
    assert client.post("/ui/compose", data={**form, "csrf": _csrf(other)}).status_code == 403  # another session's
    retire = {"action": "retire", "project_key": "srv-app", "agent_name": "BlueLake", "back": "/"}
    assert client.post("/ui/act", data=retire).status_code == 403
    assert client.post("/ui/logout").status_code == 403
    api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.get("/api/whois", params={"project_key": "srv-app", "agent_name": "BlueLake"}).json()["retired_ts"] is None
    sent = client.post("/ui/compose", data={**form, "csrf": _csrf(client)})
    assert sent.status_code == 303 and sent.headers["location"].startswith("/ui/thread?p=srv-app")


# What other apps on this host may have set (cookies are shared by every port): SimpleCookie
# read none of a header holding one of these, the session's cookie included.
NEIGHBOURS = ("theme=dark mode", 'x={"a":1}')


def _with_neighbours(client: httpx.Client) -> dict[str, str]:
    """A Cookie header holding the client's session between the neighbours, as a browser sends it."""
    return {"Cookie": "; ".join((NEIGHBOURS[0], f"am_session={client.cookies['am_session']}", NEIGHBOURS[1]))}


def _posted_with_neighbours(client: httpx.Client, path: str, form: dict) -> httpx.Response:
    """`form` posted with the neighbours' cookies around the session's (the page's CSRF token read the same way)."""
    page = client.get(path, headers=_with_neighbours(client))
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    return client.post(path.partition("?")[0], data={"csrf": csrf, **form}, headers=_with_neighbours(client))


def test_another_apps_cookie_on_the_host_breaks_neither_the_sign_in_nor_a_form(url, tmp_path):
    """QA, session 31: with auth on, signing in led back to the sign-in page; with auth off,
    every form was refused as a forgery (a fresh session at every request)."""
    message = {"project_key": "srv-app", "to": "BlueLake", "subject": "neighbours", "body_md": "x"}
    client = httpx.Client(base_url=url, timeout=60)
    client.get("/ui/login")  # a pre-login session, whose cookie the browser then sends with the others
    signed = _posted_with_neighbours(client, "/ui/login", {"token": TOKEN, "next": "/ui/projects"})
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/projects", signed.text
    assert client.get("/ui/projects", headers=_with_neighbours(client)).status_code == 200  # signed in, not sent back
    sent = _posted_with_neighbours(client, "/ui/compose?p=srv-app", message)
    assert sent.status_code == 303 and sent.headers["location"].startswith("/ui/thread?p=srv-app")
    with running_server(tmp_path / "agent_mail.db") as open_url:  # authentication off: a session ties the CSRF token
        api = httpx.Client(base_url=open_url, timeout=60)
        api.post("/api/ensure_project", json={"human_key": "/srv/app"}).raise_for_status()
        api.post("/api/register_agent", json={"project_key": "srv-app", "program": "p", "model": "m", "name": "BlueLake"}).raise_for_status()
        client = httpx.Client(base_url=open_url, timeout=60)
        client.get("/ui/projects")
        sent = _posted_with_neighbours(client, "/ui/compose?p=srv-app", message)
        assert sent.status_code == 303 and sent.headers["location"].startswith("/ui/thread?p=srv-app"), sent.text


def test_login_and_logout_in_the_browser_and_docs_work_offline(url):
    with chromium() as browser:
        context = browser.new_context()
        # Offline: anything not from this server fails (as without internet).
        context.route(re.compile(r"^(?!http://127\.0\.0\.1).*"), lambda route: route.abort())
        page = context.new_page()
        page.goto(url + "/ui/project?p=srv-app")
        assert "/ui/login" in page.url
        page.fill("input[name=token]", "wrong")
        page.click("button[type=submit]")
        assert "refused" in page.locator("p.error").inner_text()
        page.fill("input[name=token]", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui/project?p=srv-app")
        assert page.locator("h1").inner_text().startswith("srv-app")
        assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts never see the session
        page.goto(url + "/docs")
        page.locator(".swagger-ui .title", has_text="Agent Mail").wait_for(timeout=90000)  # 1.5 MB of JS
        assert page.locator(".opblock-summary-path", has_text="/api/send_message").count() >= 1
        page.goto(url + "/")
        page.click("form.logout button")
        page.wait_for_url("**/ui/login")
        page.goto(url + "/")
        assert "/ui/login" in page.url
        context.close()


def test_a_session_does_not_outlive_its_tokens_scope_across_a_restart(tmp_path):
    """The operator demoted a token to a reader of another project (same string) and restarted:
    the API refused it, but the old cookie still opened compose and sent as the overseer."""
    database, demoted = tmp_path / "agent_mail.db", "demoted-token-0123456789"

    def serving(scope: dict):
        return running_server(database, AUTH_MODE="bearer", AUTH_BEARER_TOKENS=json.dumps([TOKEN, {"token": demoted, **scope}]))

    with serving({"role": "admin"}) as url:
        api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"})
        api.post("/api/ensure_project", json={"human_key": "/srv/app"}).raise_for_status()
        api.post("/api/register_agent", json={"project_key": "srv-app", "program": "p", "model": "m", "name": "BlueLake"}).raise_for_status()
        client = _signed_in(url, demoted)
        assert client.get("/ui/compose?p=srv-app").status_code == 200
        csrf = _csrf(client)
    with serving({"role": "reader", "projects": ["/srv/other"]}) as url:
        client.base_url = url
        assert client.get("/ui/compose?p=srv-app").status_code == 303  # back to the sign-in
        form = {"csrf": csrf, "project_key": "srv-app", "to": "BlueLake", "subject": "after the demotion", "body_md": "x"}
        assert client.post("/ui/compose", data=form).status_code == 403
        api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"})
        assert api.get("/api/unified_inbox", params={"project_key": "srv-app"}).json()["messages"] == []
        again = _signed_in(url, demoted)  # signing in again gives the new scope: a reader of another project
        assert again.get("/ui/compose?p=srv-app").status_code == 403


def test_pages_count_against_the_signed_in_credentials_budget_and_a_form_against_its_writes(tmp_path):
    """QA, session 30: every page counted as a read of the client's address. A credential the API
    refused (429) went on writing through the UI, and people signed in from one address (behind one
    proxy) shared one budget, whose end showed the API's JSON."""
    other = "other-token-abcdefgh"
    with running_server(tmp_path / "agent_mail.db", AUTH_MODE="bearer", AUTH_BEARER_TOKENS=f"{TOKEN},{other}",
                        RATE_LIMIT_WRITES_PER_MINUTE="4", RATE_LIMIT_READS_PER_MINUTE="8") as url:
        api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"})
        api.post("/api/ensure_project", json={"human_key": "/srv/app"}).raise_for_status()
        for name in ("BlueLake", "GreenCastle", "RedStone"):
            api.post("/api/register_agent", json={"project_key": "srv-app", "program": "p", "model": "m", "name": name})
        assert api.post("/api/ensure_project", json={"human_key": "/srv/more"}).status_code == 429  # 4 writes spent
        client, neighbour = _signed_in(url), _signed_in(url, other)
        retire = {"action": "retire", "project_key": "srv-app", "agent_name": "BlueLake", "back": "/", "csrf": _csrf(client)}
        refused = client.post("/ui/act", data=retire)
        assert refused.status_code == 429 and refused.headers["content-type"].startswith("text/html"), refused.text
        assert "RATE_LIMIT_WRITES_PER_MINUTE" in refused.text and int(refused.headers["retry-after"]) >= 1
        assert api.get("/api/whois", params={"project_key": "srv-app", "agent_name": "BlueLake"}).json()["retired_ts"] is None
        pages = [client.get("/ui/projects").status_code for _ in range(8)]  # its reads: 2 taken above, 6 left
        assert pages.count(200) <= 6 and pages[-1] == 429, pages
        assert neighbour.get("/ui/projects").status_code == 200  # the same address, another credential's budget
