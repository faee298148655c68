"""The web UI against what a signed-in person or a hostile agent may try: a reader or writer
credential (what agents are given) gets the API's 403 when it acts for another agent; a thread's
bodies cost bounded time to show; `next` and `back` lead to this site only; a thread page past
its last message is no error. Through the real server, with bearer auth and scoped credentials."""

import base64
import http.client
import json
import re
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from chalicelib.web import markdown

from .servers import running_server

ADMIN = "admin-token-0123456789"
READER = "reader-token-0123456789"
WRITER = "writer-token-0123456789"
NOWHERE = "admin-of-none-0123456789"  # an admin of a project that does not exist
APP_ADMIN = "admin-of-app-0123456789"  # an admin of srv-app only
TOKENS = [ADMIN, {"token": READER, "projects": "*", "role": "reader"},
          {"token": WRITER, "projects": ["srv-app"], "role": "writer"}, {"token": NOWHERE, "projects": ["srv-none"], "role": "admin"},
          {"token": APP_ADMIN, "projects": ["srv-app"], "role": "admin"}]
SECRET = b"the deploy key is in vault\n"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(url, the admin's API client, the message BlueLake sent GreenCastle with an attachment, agent tokens)."""
    database = tmp_path_factory.mktemp("webui-hardening") / "agent_mail.db"
    with running_server(database, AUTH_MODE="bearer", AUTH_BEARER_TOKENS=json.dumps(TOKENS)) as url:
        api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {ADMIN}"})
        api.post("/api/ensure_project", json={"human_key": "/srv/app"}).raise_for_status()
        tokens = {}
        for name in ("BlueLake", "GreenCastle"):
            registered = api.post("/api/register_agent", json={"project_key": "srv-app", "program": "p", "model": "m", "name": name})
            tokens[name] = registered.json()["registration_token"]
            api.post("/api/set_contact_policy", json={"project_key": "srv-app", "agent_name": name, "policy": "open",
                                                      "registration_token": tokens[name]}).raise_for_status()
        sent = api.post("/api/send_message", json={
            "project_key": "srv-app", "sender_name": "BlueLake", "sender_token": tokens["BlueLake"], "to": ["GreenCastle"],
            "subject": "Deploy notes", "body_md": "**Hello**", "thread_id": "T-1",
            "attachments": [{"name": "secret.txt", "content_base64": base64.b64encode(SECRET).decode()}]})
        assert sent.status_code == 200, sent.text
        yield url, api, sent.json()["message"], tokens


def signed_in(url: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=60)
    client.csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/login").text).group(1)
    assert client.post("/ui/login", data={"csrf": client.csrf, "token": token, "next": "/"}).status_code == 303
    client.csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/compose").text).group(1)
    return client


def refused_as_agent(response: httpx.Response) -> bool:
    """The API's 403 for a call without the agent's token, on the UI's error page."""
    return (response.status_code == 403 and response.headers["content-type"].startswith("text/html")
            and "Not allowed to act as agent" in response.text)


def test_only_an_admin_session_acts_for_agents_without_their_tokens(site):
    url, api, sent, tokens = site
    inbox = {"p": "srv-app", "a": "GreenCastle"}
    attachment = {"p": "srv-app", "m": sent["id"], "a": "BlueLake", "s": sent["attachments"][0]["sha256"], "download": "1"}
    for token in (READER, WRITER):  # what operators give agents: the API wants the agent's token, so does the UI
        person = signed_in(url, token)
        assert refused_as_agent(person.get("/ui/agent", params=inbox))
        assert refused_as_agent(person.get("/ui/attachment", params=attachment))
    writer = signed_in(url, WRITER)
    for action, extra in (("ack", {"message_id": sent["id"]}), ("read", {"message_id": sent["id"]}), ("retire", {}),
                          ("accept_contact", {"from_agent": "BlueLake"}), ("deny_contact", {"from_agent": "BlueLake"})):
        acted = writer.post("/ui/act", data={"csrf": writer.csrf, "action": action, "project_key": "srv-app",
                                             "agent_name": "GreenCastle", "back": "/", **extra})
        assert refused_as_agent(acted), action
    assert api.post("/api/whois", json={"project_key": "srv-app", "agent_name": "GreenCastle"}).json()["retired_ts"] is None
    admin = signed_in(url, ADMIN)  # the overseer: every agent's mail, and acts for them
    page = admin.get("/ui/agent", params=inbox)
    assert page.status_code == 200 and "Deploy notes" in page.text
    assert admin.get("/ui/attachment", params=attachment).content == SECRET
    acked = admin.post("/ui/act", data={"csrf": admin.csrf, "action": "ack", "project_key": "srv-app",
                                        "agent_name": "GreenCastle", "message_id": sent["id"], "back": "/"})
    assert acked.status_code == 303


def test_a_method_a_page_does_not_take_gets_405_and_does_nothing(site):
    """QA, session 32: pages were dispatched by path alone: DELETE /ui/projects got the CSRF page
    ("This form has expired"), PUT /ui/static/ui.css the file, and on Chalice a GET of /ui/act
    with a form in its body acted without a CSRF token. Each now gets 405 with Allow, as on Chalice."""
    url, api, sent, tokens = site
    admin = signed_in(url, ADMIN)
    asked = [(method, path) for method in ("DELETE", "PUT", "PATCH", "TRACE", "PROPFIND")
             for path in ("/ui/projects", "/ui/login", "/ui/static/ui.css")]
    retire = {"action": "retire", "project_key": "srv-app", "agent_name": "GreenCastle", "back": "/"}
    for method, path in [*asked, ("POST", "/ui/projects"), ("POST", "/ui/static/ui.css"), ("GET", "/ui/act"), ("HEAD", "/ui/act")]:
        answer = admin.request(method, path, data={**retire, "csrf": admin.csrf})
        allow = "POST" if path == "/ui/act" else "GET, HEAD, POST" if path == "/ui/login" else "GET, HEAD"
        assert (answer.status_code, answer.headers.get("allow")) == (405, allow), (method, path)
        assert method == "HEAD" or answer.json()["error"]["code"] == "method_not_allowed"
    assert api.post("/api/whois", json={"project_key": "srv-app", "agent_name": "GreenCastle"}).json()["retired_ts"] is None


@pytest.fixture(scope="module")
def tokens_off(tmp_path_factory):
    """(url, the admin's API client) of a server whose agents need no tokens: every session reads every agent's page."""
    database = tmp_path_factory.mktemp("webui-tokens-off") / "agent_mail.db"
    with running_server(database, AUTH_MODE="bearer", AUTH_BEARER_TOKENS=json.dumps(TOKENS), REQUIRE_AGENT_TOKENS="false") as url:
        api = httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {ADMIN}"})
        api.post("/api/ensure_project", json={"human_key": "/srv/app"}).raise_for_status()
        for name in ("BlueLake", "GreenCastle"):
            api.post("/api/register_agent", json={"project_key": "srv-app", "program": "p", "model": "m", "name": name}).raise_for_status()
        yield url, api


def test_only_an_admin_session_is_offered_to_answer_an_agents_contact_requests(tokens_off):
    """Accept and Deny answer as the agent asked (respond_contact): the admin's, who acts for
    agents; a reader or writer, even where agent tokens are off and it reads the page, is not offered them."""
    url, api = tokens_off
    asked = api.post("/api/request_contact", json={"project_key": "srv-app", "from_agent": "BlueLake", "to_agent": "GreenCastle"})
    asked.raise_for_status()
    agent = {"p": "srv-app", "a": "GreenCastle"}
    for token in (READER, WRITER):
        page = signed_in(url, token).get("/ui/agent", params=agent)
        assert page.status_code == 200 and "pending" in page.text
        assert "accept_contact" not in page.text and ">Deny<" not in page.text, token
    page = signed_in(url, ADMIN).get("/ui/agent", params=agent).text
    assert 'value="accept_contact"' in page and 'value="deny_contact"' in page


def test_a_reader_that_sees_every_agents_page_is_offered_no_button_its_role_refuses(tokens_off):
    """With agent tokens off a reader reads every agent's page, and was offered Mark read,
    Acknowledge and Retire, each refused once pressed (they need the writer role)."""
    url, api = tokens_off
    api.post("/api/set_contact_policy", json={"project_key": "srv-app", "agent_name": "GreenCastle", "policy": "open"}).raise_for_status()
    sent = api.post("/api/send_message", json={"project_key": "srv-app", "sender_name": "BlueLake", "to": ["GreenCastle"],
                                               "subject": "Sign off", "body_md": "?", "ack_required": True}).json()["message"]
    buttons = ">Mark read<", ">Acknowledge<", ">Retire<"
    reader = signed_in(url, READER)
    for path in (f"/ui/agent?p=srv-app&a=GreenCastle", "/ui/project?p=srv-app"):
        page = reader.get(path)
        assert page.status_code == 200 and ("Sign off" in page.text or "agent" not in path)
        assert not [button for button in buttons if button in page.text], path
    writer = signed_in(url, WRITER)  # the role that takes them: offered, and done
    page = writer.get("/ui/agent", params={"p": "srv-app", "a": "GreenCastle"}).text
    assert all(button in page for button in buttons)
    acked = writer.post("/ui/act", data={"csrf": writer.csrf, "action": "ack", "project_key": "srv-app", "agent_name": "GreenCastle",
                                         "message_id": sent["id"], "back": "/ui/agent?p=srv-app&a=GreenCastle"})
    assert acked.status_code == 303
    assert ">Retire<" in writer.get("/ui/project", params={"p": "srv-app"}).text


def test_a_thread_page_names_bcc_recipients_to_the_admin_only(tokens_off):
    """The inbox, the digest and open acks named a bcc recipient to the admin, the thread page
    never. Any other session, here one that reads every thread, keeps bcc the sender's secret,
    even after the admin's page rendered the same message (the thread page keeps messages' HTML)."""
    url, api = tokens_off
    api.post("/api/register_agent", json={"project_key": "srv-app", "program": "p", "model": "m", "name": "RedStone"}).raise_for_status()
    for name in ("GreenCastle", "RedStone"):
        api.post("/api/set_contact_policy", json={"project_key": "srv-app", "agent_name": name, "policy": "open"}).raise_for_status()
    api.post("/api/send_message", json={"project_key": "srv-app", "sender_name": "BlueLake", "to": ["GreenCastle"], "bcc": ["RedStone"],
                                        "subject": "Quietly", "body_md": "x", "thread_id": "T-BCC"}).raise_for_status()
    thread = {"p": "srv-app", "t": "T-BCC"}
    page = signed_in(url, ADMIN).get("/ui/thread", params=thread).text
    assert '→ GreenCastle <span class="bcc">bcc RedStone</span></span>' in page
    for token in (READER, WRITER):
        page = signed_in(url, token).get("/ui/thread", params=thread)
        assert page.status_code == 200 and "Quietly" in page.text and "RedStone" not in page.text, token


def test_a_session_that_reads_no_agents_mail_gets_the_pages_it_may_read(site):
    """With agent tokens on, a reader or writer reads no agent's mail (unified_inbox, list_threads
    are the admin's): it lands on the projects, sees a project's agents, reservations and build
    slots, and is offered neither the mail nor what it may not do."""
    url, api, sent, tokens = site
    api.post("/api/acquire_build_slot", json={"project_key": "srv-app", "agent_name": "BlueLake", "slot": "deploy",
                                              "registration_token": tokens["BlueLake"]}).raise_for_status()
    for token in (READER, WRITER):
        person = signed_in(url, token)
        home = person.get("/")
        assert home.status_code == 303 and home.headers["location"].endswith("/ui/projects")
        page = person.get("/ui/project", params={"p": "srv-app"})
        assert page.status_code == 200, page.text
        assert ">BlueLake<" in page.text and "<code><bdi>deploy</bdi></code>" in page.text  # agents and slots
        assert "T-1" not in page.text and "only an admin credential reads them" in page.text  # no threads
        for offered in ("/ui/compose", ">Inbox<", ">Retire<", "Force release", "data-live=", "/ui/agent?", "Open acks"):
            assert offered not in page.text, offered  # (an agent's page is its mail: names are no links; nor are its acks)
        assert person.get("/ui/live", params={"p": "srv-app"}).json() == {"latest": ""}
    page = signed_in(url, ADMIN).get("/ui/project", params={"p": "srv-app"}).text
    assert all(offered in page for offered in ("T-1", "/ui/compose", ">Inbox<", ">Retire<", "data-live=", "Open acks"))


def test_a_session_scoped_to_some_projects_starts_from_them_not_from_a_403_inbox(site, tokens_off):
    """QA, session 31: an admin scoped to some projects (or any role's, agent tokens off) signed in
    to a 403 page, the inbox (unified_inbox without a project refuses a scoped credential), whose
    "Back to the inbox" was the same 403, as were the navigation's Inbox and the inbox's live poll."""
    for url, token in ((site[0], APP_ADMIN), (tokens_off[0], WRITER)):
        person = signed_in(url, token)  # (its sign-in led to /)
        for home in ("/", "/?view=urgent"):
            answer = person.get(home)
            assert answer.status_code == 303 and answer.headers["location"] == "/ui/projects", (token, answer.text)
        projects = person.get("/ui/projects")
        assert projects.status_code == 200 and "/ui/project?p=srv-app" in projects.text and ">Inbox<" not in projects.text
        assert person.get("/ui/live", params={"read": "1"}).json() == {"latest": ""}
        assert person.get("/ui/live", params={"p": "srv-app"}).json()["latest"]  # its project's page still refreshes
        page = person.get("/ui/project", params={"p": "srv-app"})
        assert page.status_code == 200 and "data-live=" in page.text
        refused = person.get("/ui/project", params={"p": "srv-elsewhere"})
        assert refused.status_code in (403, 404) and "Back to the inbox" not in refused.text
        assert f'<a href="/ui/projects">Back to the projects</a>' in refused.text
    admin = signed_in(site[0], ADMIN)  # every project's: the inbox, as before
    assert admin.get("/").status_code == 200 and ">Inbox<" in admin.get("/ui/projects").text
    assert "Back to the inbox" in admin.get("/ui/project", params={"p": "srv-elsewhere"}).text


def test_a_session_that_may_not_write_or_search_gets_no_form_but_a_403(site):
    """A reader or writer was shown the compose and search forms, refused only once submitted."""
    url, api, sent, tokens = site
    for token in (READER, WRITER):
        person = signed_in(url, token)
        for path, params in (("/ui/compose", {}), ("/ui/compose", {"p": "srv-app", "to": "BlueLake"}), ("/ui/search", {"q": "Deploy"}),
                             ("/ui/search", {"q": "Deploy", "p": "srv-app"})):
            page = person.get(path, params=params)
            assert page.status_code == 403 and "needs an admin credential" in page.text, (path, params)
            assert 'name="body_md"' not in page.text and 'type="search"' not in page.text and "Deploy notes" not in page.text
        posted = person.post("/ui/compose", data={"csrf": person.csrf, "project_key": "srv-app", "to": "BlueLake",
                                                  "subject": "hi", "body_md": "hi"})
        assert posted.status_code == 403 and "needs an admin credential" in posted.text
        for shown in ("/ui/projects", "/ui/project?p=srv-app"):  # nor is either offered
            assert "/ui/compose" not in person.get(shown).text and "/ui/search" not in person.get(shown).text
    assert signed_in(url, ADMIN).get("/ui/search", params={"q": "Deploy"}).text.count("Deploy notes") == 1


def raw_post(url: str, path: str, form: dict, cookie: str) -> http.client.HTTPResponse:
    """A POST whose answer's headers are read as sent (no client normalises the Location)."""
    connection = http.client.HTTPConnection(urlsplit(url).hostname, urlsplit(url).port, timeout=60)
    connection.request("POST", path, body=urlencode(form), headers={
        "Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie, "Host": urlsplit(url).netloc})
    response = connection.getresponse()
    response.read()
    return response


OFF_SITE = ["/\t/evil.example/phish", "/\n/evil.example", "/\r\n/evil.example", "/ /evil.example", "/\\evil.example",
            "//evil.example", "/\x7f/evil.example", "https://evil.example/", "javascript:alert(1)", "/\u3000/evil.example"]


def test_next_and_back_lead_to_this_site_only(site):
    url, api, sent, tokens = site
    for target in [*OFF_SITE, "/ui/projects?after=x%20y"]:
        login = httpx.get(f"{url}/ui/login", params={"next": target})
        csrf = re.search(r'name="csrf" value="([^"]+)"', login.text).group(1)
        cookie = login.headers["set-cookie"].split(";")[0]
        answer = raw_post(url, "/ui/login", {"csrf": csrf, "token": ADMIN, "next": target}, cookie)
        assert answer.status == 303
        assert answer.getheader("Location") == (target if target.startswith("/ui/") else "/"), repr(target)
    admin = signed_in(url, ADMIN)
    cookie = f"am_session={admin.cookies['am_session']}"
    for target in OFF_SITE:
        answer = raw_post(url, "/ui/act", {"csrf": admin.csrf, "action": "read", "project_key": "srv-app", "agent_name": "GreenCastle",
                                           "message_id": sent["id"], "back": target}, cookie)
        assert answer.status == 303 and answer.getheader("Location") == "/", repr(target)


def test_a_thread_page_after_its_last_message_is_a_404_page_not_an_error(site):
    url, api, sent, tokens = site
    admin = signed_in(url, ADMIN)
    for after in (sent["id"], "9000000000000000000"):
        page = admin.get("/ui/thread", params={"p": "srv-app", "t": "T-1", "after": after})
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert f"No messages after {after}" in page.text
    assert admin.get("/ui/thread", params={"p": "srv-app", "t": "T-1"}).status_code == 200


def test_a_thread_of_hostile_markdown_opens_its_excess_shown_as_plain_text(site):
    url, api, sent, tokens = site
    bodies = [
        "**Normal** Markdown with a [link](https://example.com/docs) and `code`.",
        "![" * 131072,  # 256 KiB, the largest body: ~5 s of markdown-it
        "<b>raw</b> **not bold** " + "![" * 10_000 + " end",  # over BODY_MAX
        "|a" * 1000 + "\n" + "|-" * 1000 + "\n" + "|\n" * 66,  # 4 KB that a table pads to 65,536 cells
        *(f"[[[ {i} " + "[" * (markdown.PAGE_MAX // 3) for i in range(3)),  # each fits; all three do not
        "**Small** enough for what is left of the page's budget",
    ]
    for text in bodies:
        answer = api.post("/api/send_message", json={
            "project_key": "srv-app", "sender_name": "BlueLake", "sender_token": tokens["BlueLake"],
            "to": ["GreenCastle"], "subject": "md", "body_md": text, "thread_id": "MD-DOS"})
        assert answer.status_code == 200, answer.text
    page = signed_in(url, ADMIN).get("/ui/thread", params={"p": "srv-app", "t": "MD-DOS"})
    assert page.status_code == 200
    articles = page.text.split('<article class="msg"')[1:]
    assert len(articles) == len(bodies)
    plain = ['<pre class="plain">' in article for article in articles]
    assert plain == [False, True, True, True, False, False, True, False]
    assert "<strong>Normal</strong>" in articles[0] and 'href="https://example.com/docs"' in articles[0]
    assert "![" * 1000 in articles[1]
    assert "&lt;b&gt;raw&lt;/b&gt; **not bold**" in articles[2] and "<b>raw" not in articles[2]
    assert "<td>" not in articles[3] and "<table>" not in page.text
    assert "<p>[[[ 0 [[[" in articles[4] and "<p>[[[ 1 [[[" in articles[5] and "<strong>Small</strong>" in articles[7]
    assert "Shown as plain text" in articles[1]


def test_a_deeply_nested_body_is_shown_whole(site):
    """markdown-it dropped what followed a 10th nested list level (commonmark's limit of 20 levels)
    without a word: a file tree twelve folders deep now renders whole, and a body nested past
    markdown.NESTING is shown as plain text, its end included."""
    url, api, sent, tokens = site
    tree = "Files I changed:\n\n" + "".join("  " * depth + f"- dir{depth}\n" for depth in range(12))
    bodies = [tree + "\nQuote chain:\n\n" + ">" * 21 + " deep quoted\n\nDone.",
              ">" * (markdown.NESTING + 20) + " too deep\n\nThe <end>."]
    for text in bodies:
        api.post("/api/send_message", json={
            "project_key": "srv-app", "sender_name": "BlueLake", "sender_token": tokens["BlueLake"],
            "to": ["GreenCastle"], "subject": "nested", "body_md": text, "thread_id": "NESTED"}).raise_for_status()
    page = signed_in(url, ADMIN).get("/ui/thread", params={"p": "srv-app", "t": "NESTED"})
    tree_article, deep_article = page.text.split('<article class="msg"')[1:]
    assert "<li>dir11</li>" in tree_article and "deep quoted</p>" in tree_article and "<p>Done.</p>" in tree_article
    assert '<pre class="plain">' not in tree_article
    assert '<pre class="plain">' + "&gt;" * (markdown.NESTING + 20) + " too deep\n\nThe &lt;end&gt;.</pre>" in deep_article
    assert "Shown as plain text" in deep_article and "<blockquote>" not in deep_article


def test_a_page_of_a_thread_holds_one_get_thread_page_of_bodies(site):
    """get_thread stops a page at ~4 MiB of bodies; the UI used to gather 500 messages (125 MiB)."""
    url, api, sent, tokens = site
    for i in range(20):
        answer = api.post("/api/send_message", json={
            "project_key": "srv-app", "sender_name": "BlueLake", "sender_token": tokens["BlueLake"], "to": ["GreenCastle"],
            "subject": "big", "body_md": f"{i:02d} " + "x" * (256 * 1024 - 3), "thread_id": "BIG"})
        assert answer.status_code == 200, answer.text
    admin = signed_in(url, ADMIN)
    first = admin.get("/ui/thread", params={"p": "srv-app", "t": "BIG"})
    later = re.search(r'href="(/ui/thread\?[^"]*after=\d+)">Later messages', first.text)
    assert first.status_code == 200 and later and len(first.content) < 6 * 1024 * 1024
    rest = admin.get(later.group(1).replace("&amp;", "&"))
    shown = re.findall(r'<pre class="plain">(\d\d) x', first.text + rest.text)
    assert shown == [f"{i:02d}" for i in range(20)] and len(re.findall(r"<pre class", first.text)) < 20


def test_an_earlier_page_of_a_long_thread_does_not_refresh_itself(site):
    """The first of two pages showed its last message as the newest, the live poll answered the
    thread's newest, and the page reloaded itself every 1.5 s: only the last page is live."""
    url, api, sent, tokens = site
    for n in range(20):  # a get_thread page holds ~4 MiB of bodies: 16 of these
        api.post("/api/send_message", json={"project_key": "srv-app", "sender_name": "BlueLake", "sender_token": tokens["BlueLake"],
                                            "to": ["GreenCastle"], "subject": f"Long {n}", "body_md": "x" * 250_000,
                                            "thread_id": "T-LONG"}).raise_for_status()
    admin = signed_in(url, ADMIN)
    first = admin.get("/ui/thread", params={"p": "srv-app", "t": "T-LONG"}).text
    [later] = set(re.findall(r'href="([^"]*after=[^"]*)"', first))
    assert "data-live=" not in first
    assert "data-live=" in admin.get(later.replace("&amp;", "&")).text


def test_rendered_messages_kept_are_bounded_by_their_size(tmp_path, monkeypatch):
    """The thread page keeps each message's HTML (live refresh re-renders whole threads). It was
    bounded by count only, 4096 of them: messages of 250 KiB of "<" (1 MiB of HTML each) took a
    server from 100 MB to 776 MB after 320 were shown (/work/tmp/s14/uimem.py), on to ~8 GB."""
    from chalicelib import invoke
    from chalicelib.config import Settings
    from chalicelib.tools import tools_by_name
    from chalicelib.web import pages

    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", archive_enabled=False)
    tools = tools_by_name()
    invoke.call(tools["ensure_project"], {"human_key": "/srv/logs"}, settings)
    for name in ("BlueLake", "RedFox"):
        invoke.call(tools["register_agent"], {"project_key": "srv-logs", "program": "p", "model": "m", "name": name}, settings)
    invoke.call(tools["set_contact_policy"], {"project_key": "srv-logs", "agent_name": "RedFox", "policy": "open"}, settings)
    for n in range(4):
        invoke.call(tools["send_message"], {"project_key": "srv-logs", "sender_name": "BlueLake", "to": ["RedFox"],
                                            "subject": "build log", "body_md": "<" * 250_000 + f" part {n}", "thread_id": "LOG"}, settings)
    thread = invoke.call(tools["get_thread"], {"project_key": "srv-logs", "thread_id": "LOG"}, settings)
    monkeypatch.setattr(pages, "ARTICLES_KEPT_CHARS", 2_500_000, raising=False)  # two of them
    ui = pages.WebUI(settings)
    shown = [ui.article(m, "build log", "", as_markdown=False) for m in thread.messages]
    assert all("&lt;" * 1000 in html and f"part {n}" in html for n, html in enumerate(shown))
    kept = ui._articles.values()
    assert 0 < sum(len(html) for html in kept) <= 2_500_000
    assert ui.article(thread.messages[-1], "build log", "", as_markdown=False) is shown[-1]  # still a cache


def test_a_product_page_shows_a_session_what_its_credential_reaches(site):
    """The product page: a scoped credential sees only its projects of a product; a session that
    reads no agent's mail gets the projects without the mail or a search form."""
    url, api, sent, tokens = site
    api.post("/api/ensure_project", json={"human_key": "/srv/other"}).raise_for_status()
    api.post("/api/ensure_product", json={"product_key": "suite"}).raise_for_status()
    for project in ("srv-app", "srv-other"):
        api.post("/api/products_link", json={"product_key": "suite", "project_key": project}).raise_for_status()
    api.post("/api/send_message", json={"project_key": "srv-app", "sender_name": "BlueLake", "sender_token": tokens["BlueLake"],
                                        "to": ["GreenCastle"], "subject": "Suite kickoff", "body_md": "x"}).raise_for_status()
    admin = signed_in(url, ADMIN).get("/ui/product", params={"k": "suite"}).text
    assert "/ui/project?p=srv-other" in admin and "Suite kickoff" in admin and 'type="search"' in admin
    for token in (READER, WRITER):
        page = signed_in(url, token).get("/ui/product", params={"k": "suite", "q": "kickoff"})
        assert page.status_code == 200 and "/ui/project?p=srv-app" in page.text
        assert "Suite kickoff" not in page.text and 'type="search"' not in page.text and "only an admin credential" in page.text
        assert ("/ui/project?p=srv-other" in page.text) == (token == READER)  # the writer is scoped to srv-app
        as_agent = signed_in(url, token).get("/ui/product", params={"k": "suite", "as": "GreenCastle"})  # no agent's view either
        assert as_agent.status_code == 200 and "Suite kickoff" not in as_agent.text and 'name="as"' not in as_agent.text


def test_compose_with_no_project_to_write_in_says_so(site):
    """It showed an empty, required Project choice and "Next", with no word on why."""
    url, api, sent, tokens = site
    page = signed_in(url, NOWHERE).get("/ui/compose")
    assert page.status_code == 200 and "No project to write in" in page.text and 'name="p"' not in page.text
    assert 'name="p"' in signed_in(url, ADMIN).get("/ui/compose").text  # one that has some chooses
