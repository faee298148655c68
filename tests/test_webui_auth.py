"""The web UI with authentication on: sign in once with a credential the API accepts, a signed
HttpOnly SameSite=Strict session cookie, sign out, CSRF tokens on every form; /docs offline."""

import html
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


@pytest.fixture(scope="module")
def browser():
    with chromium() as browser:
        yield browser


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


def test_login_and_logout_in_the_browser_and_docs_work_offline(url, browser):
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


SAME_ORIGIN = {"Sec-Fetch-Site": "same-origin"}


def _carried(page: str) -> dict[str, str]:
    """The fields a sign-in page carries (hidden inputs and the draft's textarea), as the browser sends them."""
    fields = {name: html.unescape(value) for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page)}
    body = re.search(r'<textarea name="body_md"[^>]*>(.*?)</textarea>', page, re.S)
    return {**fields, "body_md": html.unescape(body.group(1))} if body else fields


def test_a_message_sent_once_the_sign_in_ended_survives_it_and_is_sent_only_when_sent_again(url):
    """QA, session 33: the page blamed a forged or expired form, linked to /ui/compose, not the
    thread, and the draft was gone for good."""
    api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"})
    first = api.post("/api/send_overseer_message", json={"project_key": "srv-app", "to": ["BlueLake"], "subject": "Plan",
                                                         "body_md": "plan", "thread_id": "ENDED-1"}).json()["message"]
    thread = f"/ui/thread?p=srv-app&t=ENDED-1&m={first['id']}"
    client = _signed_in(url)
    csrf = _csrf(client, thread)
    body = 'Step 1: stop\r\nStep 2: </textarea><b>roll back</b> & "wait"'
    draft = {"csrf": csrf, "project_key": "srv-app", "to": "BlueLake", "subject": "Re: Plan", "thread_id": "ENDED-1",
             "reply_to": str(first["id"]), "body_md": body, "importance": "high", "ack_required": "on"}
    assert client.post("/ui/logout", data={"csrf": csrf}).status_code == 303  # signed out in another tab

    def sent() -> int:
        return api.get("/api/unified_inbox", params={"project_key": "srv-app", "thread_id": "ENDED-1"}).text.count("roll back")

    # Another site's (another port of this host is one), or a browser that does not say: the error page, nothing echoed.
    for site in ({"Sec-Fetch-Site": "same-site"}, {"Sec-Fetch-Site": "cross-site"}, {}):
        forged = client.post("/ui/compose", data=draft, headers={**site, "Referer": url + thread})
        assert forged.status_code == 403 and "roll back" not in forged.text and 'name="reply_to"' not in forged.text, site
        assert f'href="{html.escape(thread)}"' in forged.text  # a way back to the page of the form, empty
    ended = client.post("/ui/compose", data=draft, headers={**SAME_ORIGIN, "Referer": url + thread})
    assert ended.status_code == 401 and "Your sign-in has ended" in ended.text and "nothing was sent" in ended.text
    assert "expired or did not come from this site" not in ended.text and sent() == 0
    carried = _carried(ended.text)
    assert {name: carried[name] for name in draft if name != "csrf"} == {name: value for name, value in draft.items() if name != "csrf"}
    assert "<b>roll back</b>" not in ended.text  # escaped, in a readonly textarea to copy
    assert f'<a href="{html.escape(thread)}">The page you wrote it on</a>' in ended.text and carried["next"] == thread
    assert carried["csrf"] != csrf  # a pre-login session's, not the ended one's
    retire = {"csrf": csrf, "action": "retire", "project_key": "srv-app", "agent_name": "BlueLake", "back": "/ui/projects"}
    acted = client.post("/ui/act", data=retire, headers=SAME_ORIGIN)  # any other form: said the same way, nothing done
    assert acted.status_code == 403 and "Your sign-in has ended" in acted.text and 'href="/ui/projects"' in acted.text

    # Signing in with another site's fields (a forger's page, even holding a valid sign-in form): signed in, nothing shown back.
    stranger = httpx.Client(base_url=url, timeout=60)
    login = stranger.get("/ui/login").text
    planted = {**_carried(login), **{k: v for k, v in draft.items() if k != "csrf"}, "token": TOKEN}
    signed = stranger.post("/ui/login", data=planted, headers={"Sec-Fetch-Site": "same-site"})
    assert signed.status_code == 303 and signed.headers["location"] == "/" and "roll back" not in signed.text

    wrong = client.post("/ui/login", data={**carried, "token": "nope"}, headers=SAME_ORIGIN)
    assert wrong.status_code == 401 and "refused" in wrong.text and _carried(wrong.text)["body_md"] == carried["body_md"]
    again = client.post("/ui/login", data={**_carried(wrong.text), "token": TOKEN}, headers=SAME_ORIGIN)
    assert again.status_code == 200 and "Signed in again. Nothing has been sent yet" in again.text and sent() == 0
    form = {name: html.unescape(value) for name, value in re.findall(r'name="(\w+)"[^>]*? value="([^"]*)"', again.text)}
    assert form["reply_to"] == str(first["id"]) and form["to"] == "BlueLake" and form["csrf"] != carried["csrf"]
    assert "&lt;/textarea&gt;&lt;b&gt;roll back" in again.text and "<option selected>high" in again.text
    assert client.get("/ui/projects").status_code == 200  # signed in
    # The sign-in sent again (reloaded: its token is the pre-login session's): the form again; another site's: nothing back.
    forged = client.post("/ui/login", data={**carried, "token": TOKEN}, headers={"Sec-Fetch-Site": "same-site"})
    assert forged.status_code == 403 and "roll back" not in forged.text and 'name="reply_to"' not in forged.text
    reloaded = client.post("/ui/login", data={**carried, "token": TOKEN}, headers=SAME_ORIGIN)
    assert reloaded.status_code == 403 and "&lt;/textarea&gt;&lt;b&gt;roll back" in reloaded.text and sent() == 0
    assert client.post("/ui/compose", data={**draft, "csrf": form["csrf"]}).status_code == 303 and sent() == 1


def test_a_draft_carried_through_the_sign_in_onto_an_archived_project_is_kept_but_not_offered_to_send(url):
    """Signing in showed the message as its form again, "check your message, then send it", and Send was refused (409)."""
    api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"})
    api.post("/api/ensure_project", json={"human_key": "/srv/shelved"}).raise_for_status()
    api.post("/api/register_agent", json={"project_key": "srv-shelved", "program": "p", "model": "m", "name": "BlueLake"}).raise_for_status()
    api.post("/api/archive_project", json={"project_key": "srv-shelved"}).raise_for_status()
    client = httpx.Client(base_url=url, timeout=60)
    draft = {"project_key": "srv-shelved", "to": "BlueLake", "subject": "Wrap up", "body_md": "One last note"}
    signed = client.post("/ui/login", data={**_carried(client.get("/ui/login").text), **draft, "token": TOKEN}, headers=SAME_ORIGIN)
    assert signed.status_code == 200 and "srv-shelved is archived (read-only)" in signed.text
    assert 'name="body_md"' not in signed.text and "then send it" not in signed.text
    assert ">One last note</textarea>" in signed.text  # kept, to copy
    assert client.get("/ui/projects").status_code == 200  # signed in


def _browser_signed_in(browser, url: str):
    context = browser.new_context()
    page = context.new_page()
    page.goto(url + "/ui/login")
    page.fill("input[name=token]", TOKEN)
    with page.expect_navigation():
        page.click("button[type=submit]")
    return context, page


def test_a_reply_written_when_the_sign_in_ends_comes_back_after_signing_in_even_through_back(url, browser):
    """QA, session 33: pressing Send once the session cookie had run out lost the reply for good
    (the page blamed the form; its link and the browser's Back led to an empty form)."""
    api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"})
    api.post("/api/send_overseer_message", json={"project_key": "srv-app", "to": ["BlueLake"], "subject": "Deploy",
                                                 "body_md": "deploy?", "thread_id": "ENDED-2"}).raise_for_status()
    draft = "Step 1: stop the deploy\nStep 2: roll back"
    context, page = _browser_signed_in(browser, url)
    page.goto(url + "/ui/thread?p=srv-app&t=ENDED-2")
    page.fill("form.reply textarea", draft)
    context.clear_cookies()  # what the browser does once the cookie's Max-Age has run out
    with page.expect_navigation():
        page.click("form.reply button[type=submit]")
    assert "Your sign-in has ended" in page.locator("p.error").inner_text()
    assert page.locator("fieldset.draft textarea").input_value() == draft
    assert page.locator("fieldset.draft a").get_attribute("href") == "/ui/thread?p=srv-app&t=ENDED-2"
    page.go_back()  # the thread again: no-store, so the sign-in, which gets the draft back from the tab
    page.wait_for_url("**/ui/login?next=*")
    assert page.locator("fieldset.draft").is_visible() and page.locator("fieldset.draft textarea").input_value() == draft
    page.fill("input[name=token]", TOKEN)
    with page.expect_navigation():
        page.click("form.login button[type=submit]")
    assert "Nothing has been sent yet" in page.locator("p.notice").inner_text()
    assert page.locator("textarea[name=body_md]").input_value() == draft and page.locator("input[name=to]").input_value() == "BlueLake"

    def replies() -> int:
        return api.get("/api/unified_inbox", params={"project_key": "srv-app", "thread_id": "ENDED-2"}).text.count("roll back")

    assert replies() == 0
    with page.expect_navigation():
        page.click("form.compose button[type=submit]")
    assert "/ui/thread?p=srv-app&t=ENDED-2" in page.url and replies() == 1
    page.goto(url + "/ui/login")  # the draft went with its sending: no later sign-in page carries it
    assert page.locator("fieldset.draft").is_hidden()
    context.close()


def _live_page(browser, url: str):
    """A live page (the project's) signed in, its clock the test's: each poll a run_for away."""
    context = browser.new_context()
    polls = []
    context.on("request", lambda request: "/ui/live" in request.url and polls.append(request.url))
    page = context.new_page()
    page.clock.install()
    page.goto(url + "/ui/login?next=%2Fui%2Fproject%3Fp%3Dsrv-app")
    page.fill("input[name=token]", TOKEN)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.locator(".live-dot").is_visible()
    return context, page, polls


def _polled_until(page, done, polls: int = 20) -> None:
    for _ in range(polls):
        page.clock.run_for(1500)
        page.wait_for_timeout(30)  # the poll's answer, on real time
        if done():
            return
    raise AssertionError("never happened")


def test_a_live_page_says_it_stopped_updating_once_the_sign_in_ends(url, browser):
    """QA, session 33: /ui/live answered 401 and the page kept its green "live" mark, never updating again."""
    context, page, polls = _live_page(browser, url)
    context.clear_cookies()
    _polled_until(page, lambda: page.locator(".live-off").count())
    assert not page.locator(".live-dot").is_visible()
    note = page.locator("main .live-off")
    assert "no longer updating: your sign-in has ended" in note.inner_text()
    assert note.locator("a").get_attribute("href") == page.url  # the page again: the sign-in, then back to it
    asked = len(polls)
    page.clock.run_for(15000)
    page.wait_for_timeout(100)
    assert len(polls) == asked  # it stopped polling
    with page.expect_navigation():
        note.locator("a").click()
    assert "/ui/login?next=%2Fui%2Fproject%3Fp%3Dsrv-app" in page.url
    context.close()


def test_a_live_page_says_when_the_server_does_not_answer_and_recovers_when_it_does(url, browser):
    context, page, polls = _live_page(browser, url)
    page.route("**/ui/live*", lambda route: route.fulfill(status=503, body="down"))
    _polled_until(page, lambda: page.locator(".live-off").count())
    assert len(polls) >= 3 and not page.locator(".live-dot").is_visible()  # not at the first failure
    assert "not updating: the server does not answer" in page.locator(".live-off").inner_text()
    page.unroute("**/ui/live*")
    page.route("**/ui/live*", lambda route: route.abort())  # unreachable: the same
    _polled_until(page, lambda: len(polls) > 8)
    assert page.locator(".live-off").count() == 1
    page.unroute("**/ui/live*")
    api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {TOKEN}"})
    api.post("/api/send_overseer_message", json={"project_key": "srv-app", "to": ["BlueLake"], "subject": "While it was down",
                                                 "body_md": "x", "thread_id": "DOWN-1"}).raise_for_status()
    _polled_until(page, lambda: "While it was down" in page.locator("main").inner_text())
    assert page.locator(".live-off").count() == 0 and page.locator(".live-dot").is_visible()
    context.close()
