"""What the person overseeing the agents sees and does in the web UI, through the real server
(authentication off: the loopback caller is the admin): open acks of the whole project, long
threads, reservations, search pages, forms that keep a draft, previews."""

import html
import re
import sqlite3
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from chalicelib.tools.agents import agent_id
from chalicelib.tools.threads import OPEN_ACKS
from chalicelib.web.pages import LIST_SHOWN

from .servers import running_server

P = "srv-shop"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """(url, an API client, the database file)."""
    database = tmp_path_factory.mktemp("webui-overseeing") / "agent_mail.db"
    with running_server(database) as url:
        api = httpx.Client(base_url=url, timeout=60)
        api.post("/api/ensure_project", json={"human_key": "/srv/shop"}).raise_for_status()
        for name in ("BlueLake", "GreenCastle", "RedStone"):
            api.post("/api/register_agent", json={"project_key": P, "program": "p", "model": "m", "name": name}).raise_for_status()
            api.post("/api/set_contact_policy", json={"project_key": P, "agent_name": name, "policy": "open"}).raise_for_status()
        yield url, api, database


def send(api: httpx.Client, **message) -> dict:
    answer = api.post("/api/send_message", json={"project_key": P, "sender_name": "BlueLake", "to": ["GreenCastle"],
                                                 "subject": "note", "body_md": "x", **message})
    assert answer.status_code == 200, answer.text
    return answer.json()["message"]


def ui(url: str) -> httpx.Client:
    """A browser-like client with the CSRF token the pages carry."""
    client = httpx.Client(base_url=url, timeout=60)
    client.csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/ui/compose", params={"p": P}).text).group(1)
    return client


def section(page: str, heading: str) -> str:
    """The text of a page from an <h2> on to the next one."""
    start = page.index(f"<h2>{heading}")
    end = page.find("<h2>", start + 4)
    return page[start:end if end > 0 else None]


def reservation_rows(page: str) -> dict[str, str]:
    """The project page's file reservation rows by pattern (which may wrap after a /: <wbr>)."""
    rows = section(page, "File reservations").replace("<wbr>", "").split("<tr>")[2:]
    return {re.search(r"<code><bdi>([^<]+)</bdi></code>", row).group(1): row for row in rows}


def test_the_project_page_lists_open_acks_of_the_whole_project_however_busy(site):
    """It showed the acks pending among the last 50 messages: a busy project hid them ("None.")."""
    url, api, database = site
    waiting = send(api, subject="Please confirm the schema", ack_required=True, to=["GreenCastle", "RedStone"], thread_id="ACKS")
    old = send(api, subject="Old request", ack_required=True, thread_id="ACKS")
    with sqlite3.connect(database) as db:  # two hours old: overdue (list_ack_overdue's default is an hour)
        db.execute("UPDATE messages SET created_ts = '2020-01-01T00:00:00.000000+00:00' WHERE id = ?", (int(old["id"]),))
    for n in range(55):
        send(api, subject=f"chatter {n}", thread_id="CHATTER")
    api.post("/api/acknowledge_message", json={"project_key": P, "agent_name": "RedStone", "message_id": waiting["id"]}).raise_for_status()
    acks = section(ui(url).get("/ui/project", params={"p": P}).text, "Open acks")
    assert "Please confirm the schema</a>\n— GreenCastle" in acks and "RedStone" not in acks
    assert re.search(r"Old request</a>\n— GreenCastle <span class=\"tag ack\"[^>]*>overdue", acks)
    assert acks.count("overdue</span>") == 1 and "None" not in acks


def articles(page: str) -> list[str]:
    """The ids of the messages a thread page shows."""
    return re.findall(r'<article class="msg" id="m(\d+)"', page)


def link(page: str, text: str) -> str:
    """The target of the page's link with this text."""
    return re.search(rf'href="([^"]+)"[^>]*>{re.escape(text)}', page).group(1).replace("&amp;", "&")


@pytest.fixture(scope="module")
def long_thread(site) -> list[str]:
    """The ids of thread LONG's 520 messages (a page holds 500), oldest first."""
    url, api, database = site
    return [send(api, subject="Long thread" if n == 0 else f"Re: step {n}", body_md=f"step {n}", thread_id="LONG")["id"]
            for n in range(520)]


def test_a_link_to_a_message_of_a_long_thread_opens_the_page_holding_it(site, long_thread):
    """The newest message of a 520-message thread opened page 1 (the oldest 500), without its
    anchor, headed "500 messages"; page 2 led nowhere back, page 1 did not say newer ones exist.
    Going back a page showed messages twice: from the newest page, the first 500 (past where it
    starts); from page 2, the first 500 again with an "Earlier" link to themselves."""
    url, api, database = site
    ids = long_thread
    client = ui(url)
    row = re.search(r'<a class="row" href="([^"]+)"', client.get("/").text).group(1)  # the inbox's newest message
    newest = client.get(row.replace("&amp;", "&"))
    assert newest.status_code == 200 and ids[-1] in articles(newest.text) and "data-live=" in newest.text
    assert '<h1 dir="auto">Long thread</h1>' in newest.text and "520 messages," in newest.text
    opens = ids.index(articles(newest.text)[0])  # a page opening 100 messages before it
    assert articles(newest.text) == ids[opens:] and opens == 420
    earlier = client.get(link(newest.text, "← Earlier messages"))
    assert articles(earlier.text) == ids[:opens] and "Earlier messages" not in earlier.text  # back to the start, no repeats
    assert "520 messages, 420 on this page" in earlier.text and "Newer messages are on later pages" in earlier.text
    assert articles(client.get(link(earlier.text, "Later messages →")).text) == ids[opens:]  # and on again
    first = client.get("/ui/thread", params={"p": P, "t": "LONG"})
    assert articles(first.text) == ids[:500] and "Earlier messages" not in first.text
    assert ids[-1] in articles(client.get(link(first.text, "Newest »")).text)
    later = client.get(link(first.text, "Later messages →"))
    assert articles(later.text) == ids[500:] and "Earlier messages" in later.text and "520 messages, 20 on this page" in later.text
    back = client.get(link(later.text, "← Earlier messages"))  # exactly 500 before it: the first page, said so
    assert articles(back.text) == ids[:500] and "Earlier messages" not in back.text
    assert articles(client.get("/ui/thread", params={"p": P, "t": "LONG", "m": ids[3]}).text) == ids[:500]  # page 1 holds it


def test_a_reply_from_a_long_threads_first_page_answers_its_newest_and_shows_where_it_landed(site, long_thread):
    """The reply form of a long thread's first page answered that page's last message (#500, not
    the newest), and Send led to the first page again, without the reply: nothing seemed to happen."""
    url, api, database = site
    client = ui(url)
    first = client.get("/ui/thread", params={"p": P, "t": "LONG"}).text
    assert long_thread[-1] not in articles(first)  # the first page, the newest past it
    newest = api.get("/api/unified_inbox", params={"project_key": P, "thread_id": "LONG", "limit": 1}).json()["messages"][0]["id"]
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', first.split('class="compose reply"')[1]))
    assert form["reply_to"] == str(newest)
    sent = client.post("/ui/compose", data={**form, "to": "GreenCastle", "body_md": "Answering the newest."})
    assert sent.status_code == 303, sent.text
    location = sent.headers["location"]
    landed = client.get(location)
    reply = re.search(r"&m=(\d+)#m(\d+)$", location)
    assert reply and reply[1] == reply[2] and articles(landed.text)[-1] == reply[1]  # on the page, at the reply
    assert "Answering the newest." in landed.text


def test_a_bodys_headings_rank_below_the_thread_pages_own(site):
    """A body's "# Title" was a second <h1> beside the thread's subject."""
    url, api, database = site
    send(api, subject="Headings", body_md="# Plan\n\n## Steps\n\n### Detail\n\n###### Fine print", thread_id="HEADINGS")
    page = ui(url).get("/ui/thread", params={"p": P, "t": "HEADINGS"}).text
    body = page[page.index('<div class="body" dir="auto">'):page.index("</article>")]
    assert re.findall(r"<(h\d)>", body) == ["h3", "h4", "h5", "h6"] and "<h6>Fine print</h6>" in body
    assert re.findall(r"<h1[^>]*>([^<]*)</h1>", page) == ["Headings"]
    # Nor does one skip a rank (h2 to h4, h3 to h5): "##" alone is the body's top, each at most one below the last.
    send(api, subject="Skips", body_md="## Plan\n\n#### Detail\n\n# Top\n\n### Under", thread_id="SKIPS")
    page = ui(url).get("/ui/thread", params={"p": P, "t": "SKIPS"}).text
    assert re.findall(r"<(h\d)>", page[page.index('<div class="body" dir="auto">'):page.index("</article>")]) == ["h3", "h4", "h3", "h4"]


def test_force_release_is_offered_only_when_the_tool_would_take_it(site):
    """The button was on every reservation: an active holder's answered 409 on an error page
    that led only to the inbox."""
    url, api, database = site
    for name, path in (("GreenCastle", "src/live/**"), ("RedStone", "src/abandoned/**")):
        api.post("/api/file_reservation_paths", json={"project_key": P, "agent_name": name, "paths": [path]}).raise_for_status()
    with sqlite3.connect(database) as db:  # RedStone went quiet long ago (STALE_AGENT_SECONDS: 30 minutes)
        db.execute("UPDATE agents SET last_active_ts = '2020-01-01T00:00:00.000000+00:00' WHERE name = 'RedStone'")
    client = ui(url)
    rows = reservation_rows(client.get("/ui/project", params={"p": P}).text)
    assert "Force release" in rows["src/abandoned/**"] and "RedStone has been inactive since 2020" in rows["src/abandoned/**"]
    assert "Force release" not in rows["src/live/**"] and "holder active; releasable from" in rows["src/live/**"]
    held = re.search(r'name="file_reservation_id" value="(\d+)"', rows["src/abandoned/**"]).group(1)
    live = {r["path_pattern"]: r for r in api.post("/api/list_file_reservations", json={"project_key": P}).json()["file_reservations"]}
    active = live["src/live/**"]["id"]
    # What the page says comes from the tool (it worked it out again from a stand-in row):
    assert live["src/abandoned/**"]["releasable_because"].startswith("RedStone has been inactive since 2020")
    assert live["src/abandoned/**"]["releasable_from"] is None and live["src/live/**"]["releasable_because"] is None
    assert f'releasable from <time datetime="{live["src/live/**"]["releasable_from"]}"' in rows["src/live/**"]
    back = f"/ui/project?p={P}"
    refused = client.post("/ui/act", data={"csrf": client.csrf, "action": "force_release", "project_key": P,
                                           "file_reservation_id": active, "back": back})  # a page older than the holder's last act
    assert refused.status_code == 409 and f'href="{back}">Back to the page you came from' in refused.text
    released = client.post("/ui/act", data={"csrf": client.csrf, "action": "force_release", "project_key": P,
                                            "file_reservation_id": held, "back": back})
    assert released.status_code == 303
    assert "src/abandoned/**" not in reservation_rows(client.get("/ui/project", params={"p": P}).text)


def test_search_goes_on_past_its_first_hundred_results(site):
    """It stopped at 100 results with no way on (search_messages' next_cursor was dropped)."""
    url, api, database = site
    for n in range(120):
        send(api, subject=f"haystack {n}", body_md=f"a needle here, number {n}", thread_id="HAY")
    client = ui(url)
    first = client.get("/ui/search", params={"q": "needle", "p": P})
    assert first.text.count('<a class="row"') == 100 and '<p class="sub">100 results on this page</p>' in first.text
    rest = client.get(link(first.text, "More results »"))
    assert rest.text.count('<a class="row"') == 20 and "More results" not in rest.text
    assert '<p class="sub">20 results</p>' in rest.text  # the last page: all there is
    shown = re.findall(r"number (\d+)", first.text + rest.text)
    assert sorted(map(int, shown)) == list(range(120))
    everywhere = client.get("/ui/search", params={"q": "needle"}).text  # across projects: where to go on
    assert everywhere.count('<a class="row"') == 100 and "100 results on this page" in everywhere
    assert link(everywhere, P) == f"/ui/search?p={P}&q=needle" and "More results in" in everywhere


def test_a_mistake_in_a_reply_or_a_new_message_shows_the_form_again_with_the_draft(site):
    """A reply to an unknown agent answered a 404 page leading to the inbox: the draft was lost."""
    url, api, database = site
    asked = send(api, subject="Which fixture?", thread_id="DRAFTS")
    client = ui(url)
    draft = "A long answer\\n</textarea><b>kept</b> as written"
    reply = {"csrf": client.csrf, "project_key": P, "reply_to": asked["id"], "thread_id": "DRAFTS", "to": "GreenCastle, NoSuchAgent",
             "body_md": draft, "importance": "high", "ack_required": "on"}
    shown = client.post("/ui/compose", data=reply)
    assert shown.status_code == 404 and "NoSuchAgent" in re.search(r'<p class="error"[^>]*>(.+?)</p>', shown.text).group(1)
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', shown.text))
    assert form["reply_to"] == asked["id"] and form["thread_id"] == "DRAFTS"
    assert '<textarea name="body_md" rows="10" required placeholder="Markdown" aria-describedby="form-limit">A long answer\\n&lt;/textarea&gt;&lt;b&gt;kept' in shown.text
    assert 'value="GreenCastle, NoSuchAgent"' in shown.text and "<option selected>high</option>" in shown.text
    assert 'name="ack_required" checked' in shown.text
    sent = client.post("/ui/compose", data={**reply, "to": "GreenCastle"})  # corrected, sent as a reply
    assert sent.status_code == 303 and "t=DRAFTS" in sent.headers["location"]
    fresh = {"csrf": client.csrf, "project_key": P, "to": "Nobody", "subject": "Standup", "thread_id": "", "body_md": "What is left?"}
    again = client.post("/ui/compose", data=fresh)
    assert again.status_code == 404 and 'value="Standup"' in again.text and ">What is left?</textarea>" in again.text


def test_a_form_too_large_to_read_gets_the_uis_page_saying_the_limit(site):
    """A message the tool takes (256 Ki characters) but whose form passes MAX_BODY_BYTES (Arabic
    takes 6 bytes a character there) got the API's 413 JSON, and the form did not say its limit."""
    url, api, database = site
    client = ui(url)
    assert "The form carries at most 1.0 MB as the browser sends it" in client.get("/ui/compose", params={"p": P}).text
    big = client.post("/ui/compose", data={"csrf": client.csrf, "project_key": P, "to": "GreenCastle", "subject": "Big",
                                           "body_md": "مرحبا بالعالم " * 18_000})  # 252,000 characters, 1.3 MB as a form
    assert big.status_code == 413 and big.headers["content-type"].startswith("text/html"), big.text[:200]
    assert "This form is larger than the server takes: 1.0 MB" in big.text and "data-history-back" in big.text
    assert "Big" not in api.get("/api/fetch_inbox", params={"project_key": P, "agent_name": "GreenCastle", "limit": 5}).text
    # Its link leads to the page the form was on (the Referer, a page of this host), never elsewhere.
    host = url.removeprefix("http://")
    for referer, link in ((f"{url}/ui/thread?p={P}&t=CART-12", f"/ui/thread?p={P}&amp;t=CART-12"),
                          (f"https://evil.example/ui/thread?p={P}", "/ui/compose"), (f"http://{host}/\\evil.example/", "/ui/compose"),
                          (f"http://{host}//evil.example/", "/ui/compose"), ("http://[bad", "/ui/compose")):
        page = client.post("/ui/compose", data={"body_md": "x" * (1 << 20)}, headers={"Referer": referer}).text
        assert f'<a href="{link}" data-history-back>' in page, referer


def test_a_link_or_form_of_more_than_200_fields_is_read_up_to_its_200th(site):
    """QA, session 31: past MAX_FIELDS every field was dropped, not the rest: a link with tracking
    parameters lost p and t (a 422 about an empty project key), and a form lost its CSRF token
    and was refused as a forgery."""
    url, api, database = site
    sent = send(api, subject="Many fields", thread_id="FIELDS")
    extra = [(f"x{n}", "1") for n in range(200)]
    client = ui(url)
    page = client.get("/ui/thread", params=[("p", P), ("t", "FIELDS"), *extra])
    assert page.status_code == 200 and f'id="m{sent["id"]}"' in page.text
    form = {"csrf": client.csrf, "project_key": P, "to": "GreenCastle", "subject": "Many fields, answered", "body_md": "y"}
    as_form = {"content-type": "application/x-www-form-urlencoded"}
    answered = client.post("/ui/compose", content=urlencode([*form.items(), *extra]), headers=as_form)
    assert answered.status_code == 303 and answered.headers["location"].startswith(f"/ui/thread?p={P}"), answered.text[:300]
    assert api.get("/api/fetch_inbox", params={"project_key": P, "agent_name": "GreenCastle"}).text.count("Many fields, answered") == 1
    beyond = client.get("/ui/thread", params=[*extra, ("p", P), ("t", "FIELDS")])  # the rest is ignored: the bound holds
    assert beyond.status_code == 422 and f'id="m{sent["id"]}"' not in beyond.text
    empty = client.get("/ui/thread", params={"p": P, "t": ""})  # (it said the thread id "is only spaces")
    assert empty.status_code == 422 and "thread_id: is empty" in empty.text


def test_an_expired_form_comes_back_with_its_draft_or_a_way_back_not_advice_to_reload(site):
    """A form sent with a stale CSRF token (every open form, once the server restarts without
    authentication) got "Reload the page and submit it again": reloading sent the same stale token."""
    url, api, database = site
    client = ui(url)
    draft = {"project_key": P, "to": "GreenCastle", "subject": "Careful", "thread_id": "", "body_md": "A long careful draft"}
    # Another site's form (QA, session 29: it came back filled in, ready to send in the overseer's name)
    forged = client.post("/ui/compose", data={"csrf": "stale", **draft}, headers={"Sec-Fetch-Site": "same-site"})
    assert forged.status_code == 403 and "Careful" not in forged.text and "careful draft" not in forged.text
    assert f'href="/ui/compose?p={P}"' in forged.text  # a way to the form, empty
    stale = client.post("/ui/compose", data={"csrf": "stale", **draft}, headers={"Sec-Fetch-Site": "same-origin"})
    assert stale.status_code == 403 and "This form had expired" in stale.text and "Reload" not in stale.text
    assert 'value="Careful"' in stale.text and ">A long careful draft</textarea>" in stale.text  # the draft, to send again
    token = re.search(r'name="csrf" value="([^"]+)"', stale.text).group(1)
    assert client.post("/ui/compose", data={"csrf": token, **draft}).status_code == 303  # and it goes
    acted = client.post("/ui/act", data={"csrf": "stale", "action": "retire", "project_key": P, "agent_name": "RedStone",
                                         "back": f"/ui/project?p={P}&agents=x"})
    assert acted.status_code == 403 and "Reload" not in acted.text
    assert f'<a href="/ui/project?p={P}&amp;agents=x">' in acted.text  # a way back to the page of the form


def test_a_mistyped_ui_address_gets_the_uis_404_page(site):
    """/ui/thread/, /ui/agents or /ui/Project answered the API's JSON 404 ("Check the method, path
    and body against /openapi.json.")."""
    url, api, database = site
    client = ui(url)
    for path in ("/ui/thread/", "/ui/agents", f"/ui/Project?p={P}", "/ui/compose/x"):
        page = client.get(path)
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html"), path
        assert "No such page" in page.text and 'href="/ui/projects"' in page.text, path  # with the site's navigation
    assert client.post("/ui/act/", data={"csrf": client.csrf}).status_code == 404
    assert client.get("/api/nope").headers["content-type"].startswith("application/json")  # the API's stay its own


def squat(api: httpx.Client, database, project: str, agents: list[str]) -> None:
    """Project /srv/<project> with these agents and one named Overseer, as it was registered
    before the name was reserved."""
    api.post("/api/ensure_project", json={"human_key": f"/srv/{project}"}).raise_for_status()
    for name in agents:
        api.post("/api/register_agent", json={"project_key": f"srv-{project}", "program": "p", "model": "m", "name": name}).raise_for_status()
    with sqlite3.connect(database) as db:
        [home] = db.execute("SELECT id FROM projects WHERE slug = ?", (f"srv-{project}",)).fetchone()
        db.execute("INSERT INTO agents (id, project_id, name, program, model, task_description, inception_ts, last_active_ts)"
                   " VALUES (?, ?, 'Overseer', 'p', 'm', '', 'then', 'then')", (agent_id(home, "Overseer"), home))


def test_compose_where_an_agent_took_the_overseers_name_writes_as_another_and_says_so(site):
    """An agent registered 'Overseer' before the name was reserved: compose answered 409 there for good."""
    url, api, database = site
    squat(api, database, "squat", ["Victim"])
    client = ui(url)
    page = client.get("/ui/compose", params={"p": "srv-squat"}).text
    assert "as a human overseer (HumanOverseer)" in page and "registered as Overseer before that name was reserved" in page
    sent = client.post("/ui/compose", data={"csrf": client.csrf, "project_key": "srv-squat", "to": "Victim", "subject": "Hi", "body_md": "x"})
    assert sent.status_code == 303, sent.text
    thread = client.get(sent.headers["location"]).text
    assert "HumanOverseer" in thread


@pytest.fixture(scope="module")
def big_squat(site) -> str:
    """A project of more agents than a page lists, Overseer an agent past the first page."""
    url, api, database = site
    squat(api, database, "big-squat", [f"Agent{n:03d}" for n in range(LIST_SHOWN)])  # all listed before Overseer
    return "srv-big-squat"


def test_compose_finds_the_agent_named_overseer_past_the_first_page_of_agents(site, big_squat):
    """The form looked for it among the first LIST_SHOWN agents of list_agents only: in a bigger
    project it said the person wrote as Overseer, and the message went out as HumanOverseer."""
    url, api, database = site
    page = ui(url).get("/ui/compose", params={"p": "srv-big-squat"}).text
    assert "Overseer" not in re.findall(r'<option value="([^"]+)"', page)  # not on the page the form lists
    assert "as a human overseer (HumanOverseer)" in page and "registered as Overseer before that name was reserved" in page


def test_previews_show_plain_words_underscores_kept_and_no_markdown(site):
    """Inbox excerpts dropped underscores ("respond contact(project key="), search snippets showed
    raw ``` fences and misplaced their marks after a glob's **, digest key points raw **, `."""
    url, api, database = site
    send(api, subject="Preview", thread_id="PREVIEW", body_md=(
        "Call `respond_contact(project_key=...)` now. I hold src/cart/** for the **checkout** flow, see CHECKOUT-12\n"
        "```python\nprint('checkout')\n```\n- decided: keep **v1** routes in `api_v1.py`"))
    client = ui(url)
    inbox = client.get("/").text
    assert "— <bdi>Call respond_contact(project_key=...) now. I hold src/cart/ for the checkout flow" in inbox
    found = client.get("/ui/search", params={"q": "checkout", "p": P}).text
    snippet = re.search(r'<span class="snippet" dir="auto">(.*?)</span>', found, re.S).group(1)
    assert "`" not in snippet and "**" not in snippet and "src/cart/ for the <mark>checkout</mark> flow" in snippet
    assert {hit.lower() for hit in re.findall(r"<mark>(.*?)</mark>", snippet)} == {"checkout"}  # (CHECKOUT-12 too)
    digest = client.get("/ui/digest", params={"p": P, "t": "PREVIEW"}).text
    assert '<li dir="auto">BlueLake: decided: keep v1 routes in api_v1.py</li>' in digest


def test_previews_and_snippets_read_as_written_where_marks_and_ticks_were(site):
    """Each Markdown mark and search mark became a space: '&#34; <mark>shopping basket</mark> &#34;',
    '<mark>SNIP-12</mark> : new cart API', 'src/cart .'."""
    url, api, database = site
    send(api, subject="SNIP-12: new cart API", thread_id="SNIP-12",
         body_md='The "shopping basket" moves to `src/cart`. See **SNIP-12**: it is | a | table |')
    client = ui(url)

    def snippet(query: str) -> str:
        found = client.get("/ui/search", params={"q": query, "p": P}).text
        return re.search(r'<span class="snippet" dir="auto">(.*?)</span>', found, re.S).group(1)

    assert "The &#34;<mark>shopping basket</mark>&#34; moves to src/cart. See" in snippet('"shopping basket"')
    assert snippet("SNIP-12").startswith("<mark>SNIP-12</mark>: new cart API")
    assert "moves to src/cart. See SNIP-12: it is a table" in html.unescape(re.sub("</?mark>", "", snippet("basket")))
    inbox = client.get("/").text
    assert "— <bdi>The &#34;shopping basket&#34; moves to src/cart. See SNIP-12: it is a table</bdi></span>" in inbox


def test_a_reply_from_a_thread_page_takes_the_threads_subject(site):
    """It took the subject of the thread's last message."""
    url, api, database = site
    send(api, subject="Cart totals are off", thread_id="SUBJECT")
    send(api, subject="Unrelated aside", thread_id="SUBJECT")
    client = ui(url)
    page = client.get("/ui/thread", params={"p": P, "t": "SUBJECT"}).text
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page[page.index('class="compose reply"'):]))
    sent = client.post("/ui/compose", data={**form, "to": "GreenCastle", "body_md": "On it."})
    assert sent.status_code == 303
    thread = api.get("/api/get_thread", params={"project_key": P, "thread_id": "SUBJECT"}).json()["messages"]
    assert [m["subject"] for m in thread] == ["Cart totals are off", "Unrelated aside", "Re: Cart totals are off"]


def test_what_a_person_writes_arrives_with_the_line_breaks_agents_use(site):
    """A browser sends a textarea's line breaks as CRLF: the overseer's mail read "Line1\\r\\n\\r\\n…"."""
    url, api, database = site
    client = ui(url)
    written = "Line1\r\n\r\n- a\r\n- b\rend\r\n"
    new = client.post("/ui/compose", data={"csrf": client.csrf, "project_key": P, "to": "GreenCastle", "subject": "Lines",
                                           "body_md": written})
    assert new.status_code == 303
    thread_id = parse_qs(urlsplit(new.headers["location"]).query)["t"][0]
    page = client.get("/ui/thread", params={"p": P, "t": thread_id}).text
    form = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page[page.index('class="compose reply"'):]))
    assert client.post("/ui/compose", data={**form, "to": "GreenCastle", "body_md": written}).status_code == 303  # a reply
    thread = api.get("/api/get_thread", params={"project_key": P, "thread_id": thread_id}).json()["messages"]
    assert [m["body_md"] for m in thread] == ["Line1\n\n- a\n- b\nend\n"] * 2


def test_a_form_sent_twice_sends_one_message(site):
    """QA, session 40: a double click on Send (or Enter twice) posted the form twice and the agent
    got the message twice. Each form carries a key of its own (idempotency_key): its second post
    is the first one's answer; a form shown again carries a new one."""
    url, api, database = site
    client = ui(url)

    def form(page: str, start: str) -> dict:
        return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page[page.index(start):]))

    def inbox() -> int:
        return len(api.post("/api/fetch_inbox", json={"project_key": P, "agent_name": "RedStone", "limit": 500}).json()["messages"])

    before = inbox()
    composed = form(client.get("/ui/compose", params={"p": P}).text, 'action="/ui/compose" class="compose" data-max')
    letter = {**composed, "to": "RedStone", "subject": "Once", "body_md": "only once"}
    first, second = (client.post("/ui/compose", data=letter) for _ in range(2))
    assert first.status_code == second.status_code == 303 and first.headers["location"] == second.headers["location"]
    assert inbox() == before + 1
    thread_id = parse_qs(urlsplit(first.headers["location"]).query)["t"][0]
    page = client.get("/ui/thread", params={"p": P, "t": thread_id}).text
    reply = {**form(page, 'class="compose reply"'), "to": "RedStone", "body_md": "a reply, once"}
    assert reply["idempotency_key"] != composed["idempotency_key"]
    assert [client.post("/ui/compose", data=reply).status_code for _ in range(2)] == [303, 303]
    assert inbox() == before + 2


def test_mark_read_and_acknowledge_come_back_to_the_message_and_say_so(site):
    """The agent page came back at its top, saying nothing."""
    url, api, database = site
    asked = send(api, subject="Sign this off", ack_required=True, to=["RedStone"], thread_id="SIGN")
    client = ui(url)
    page = client.get("/ui/agent", params={"p": P, "a": "RedStone"}).text
    row = page[page.index(f'<li id="received-{asked["id"]}"'):]
    row = row[:row.index("</li>")]
    [ack] = [form for form in row.split("<form")[1:] if 'value="ack"' in form]
    form = {name: html.unescape(value) for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', ack)}
    assert form["action"] == "ack" and form["back"].endswith(f"#received-{asked['id']}")
    acked = client.post("/ui/act", data=form)
    assert acked.status_code == 303
    target = acked.headers["location"]
    assert target == f"/ui/agent?p={P}&a=RedStone&m={asked['id']}&done=ack#received-{asked['id']}"
    back = client.get(target).text
    row = back[back.index(f'<li id="received-{asked["id"]}"'):]
    assert row[:row.index("</li>")].count('<span class="tag done" role="status">Acknowledged</span>') == 1
    assert back.count('role="status"') == 1  # by the message, not atop the page
    retired = client.post("/ui/act", data={"csrf": client.csrf, "action": "retire", "project_key": P, "agent_name": "RedStone",
                                           "back": f"/ui/project?p={P}"})
    assert retired.headers["location"] == f"/ui/project?p={P}&done=retire"
    assert '<p class="notice" role="status">Done: retired.</p>' in client.get(retired.headers["location"]).text
    # A retired agent gets no mail (send_overseer_message answers 409): its page offers Unretire, not a letter.
    assert "Write to RedStone" in page and 'value="retire"' in page
    page = client.get("/ui/agent", params={"p": P, "a": "RedStone"}).text
    assert "Write to RedStone" not in page and 'value="unretire"' in page
    # Back at work for the module's other tests: a retired agent's reservations conflict with nobody.
    api.post("/api/unretire_agent", json={"project_key": P, "agent_name": "RedStone"}).raise_for_status()


def action_forms(page: str, action: str) -> list[dict]:
    """The hidden fields of each form of the page taking this action (act)."""
    forms = [form for form in page.split("<form")[1:] if f'name="action" value="{action}"' in form]
    return [{name: html.unescape(value) for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', form)}
            for form in forms]


def test_an_action_on_a_later_page_comes_back_to_that_page(site, long_thread, big_squat):
    """Mark read on an agent's "Older received" page (or a product's View as agent), and Retire on
    a project's "More agents", came back to the first page: the row was not there, the place lost."""
    url, api, database = site
    api.post("/api/ensure_product", json={"product_key": "places"}).raise_for_status()
    api.post("/api/products_link", json={"product_key": "places", "project_key": P}).raise_for_status()
    client = ui(url)
    for first, cursor, action, done in ((f"/ui/agent?p={P}&a=GreenCastle", "inbox", "read", "Marked read"),
                                        ("/ui/product?k=places&as=GreenCastle", "inbox", "read", "Marked read"),
                                        (f"/ui/project?p={big_squat}", "agents", "retire", "Retired")):
        later = link(client.get(first).text, "Older received »" if cursor == "inbox" else "More agents »")
        assert f"&{cursor}=" in later
        form = action_forms(client.get(later).text, action)[0]
        acted = client.post("/ui/act", data=form)
        assert acted.status_code == 303, acted.text
        where = acted.headers["location"]
        assert later.partition("?")[2] in where, (later, where)  # the same page, its cursor kept
        back = client.get(where).text
        if action == "read":
            row = re.search(rf'<li id="received-{form["message_id"]}".*?</li>', back, re.S).group()
            assert f'<span class="tag done" role="status">{done}</span>' in row and "Mark read" not in row
        else:  # the agent's row on the page, retired; then back at work
            assert re.search(rf'{form["agent_name"]}</a>.*?<span class="tag">retired</span>', back)
            assert client.post("/ui/act", data=action_forms(back, "unretire")[0]).status_code == 303


def live_region(page: str) -> str:
    start = page.index("<div data-live-region>")
    return page[start:page.index("</div>", start)]


def test_the_inbox_has_views_of_what_needs_attention(site):
    """The inbox was one list, newest first: an urgent message sat pages down behind chatter, acks
    waited unseen, and the agents' answers to the overseer were mixed in."""
    url, api, database = site
    client = ui(url)
    fire = send(api, subject="Payments down", importance="urgent", to=["BlueLake"], sender_name="GreenCastle", thread_id="FIRE")
    sign = send(api, subject="Sign the release", ack_required=True, to=["BlueLake", "GreenCastle"], thread_id="SIGNOFF")
    asked = client.post("/ui/compose", data={"csrf": client.csrf, "project_key": P, "to": "BlueLake", "subject": "Status of the fire?",
                                             "body_md": "?"})
    assert asked.status_code == 303
    asked = api.post("/api/unified_inbox", json={"project_key": P, "limit": 1}).json()["messages"][0]
    answer = api.post("/api/reply_message", json={"project_key": P, "message_id": asked["id"], "sender_name": "BlueLake",
                                                  "body_md": "Rolling back"}).json()["message"]
    for n in range(55):
        send(api, subject=f"noise {n}", thread_id="NOISE")
    assert "Payments down" not in client.get("/").text  # page 1 is the noise
    tabs = client.get("/").text
    assert '<a href="/" aria-current="page">All</a>' in tabs
    for view, label in (("urgent", "Urgent"), ("ack_pending", "Waiting for acks"), ("to_overseer", "To the Overseer")):
        assert f'<a href="/?view={view}">{label}</a>' in tabs

    urgent = client.get("/", params={"view": "urgent"}).text
    assert '<a href="/?view=urgent" aria-current="page">Urgent</a>' in urgent
    shown = live_region(urgent)
    assert "Payments down" in shown and "noise" not in shown and "Sign the release" not in shown
    assert f'data-latest="{fire["id"]}.' in urgent and 'data-live="/ui/live?view=urgent&amp;read=1"' in urgent  # live, within its view
    assert client.get("/ui/live", params={"view": "urgent", "read": "1"}).json()["latest"].startswith(f'{fire["id"]}.')

    waiting = live_region(client.get("/", params={"view": "ack_pending"}).text)
    assert "Sign the release" in waiting and "noise" not in waiting and "Payments down" not in waiting
    for name in ("BlueLake", "GreenCastle"):
        api.post("/api/acknowledge_message", json={"project_key": P, "agent_name": name, "message_id": sign["id"]}).raise_for_status()
    assert "Sign the release" not in client.get("/", params={"view": "ack_pending"}).text

    to_me = live_region(client.get("/", params={"view": "to_overseer"}).text)
    assert to_me.count('<li class=') == 1 and html.escape(answer["subject"]) in to_me and "BlueLake</b> → Overseer" in to_me

    for n in range(PAGE := 50):  # a view pages on, and its pages keep it
        send(api, subject=f"alarm {n}", importance="high", thread_id="ALARMS")
    first = client.get("/", params={"view": "urgent"}).text
    older = re.search(r'href="(/\?before=\d+&amp;view=urgent)" rel="next"', first)
    assert older and "Payments down" not in first and "noise" not in first
    second = client.get(html.unescape(older.group(1))).text
    assert "Payments down" in live_region(second) and "alarm" not in live_region(second) and "noise" not in live_region(second)
    assert '<a href="/?view=urgent">« Newest</a>' in second
    assert "An older page: it does not refresh by itself" in second and "data-live=" not in second
    assert "An older page" not in first
    wrong = client.get("/", params={"view": "everything"})
    assert wrong.status_code == 422 and "to_overseer" in wrong.text  # the tool's error: what the views are


def test_an_agents_inbox_filters_to_unread_urgent_or_ack_pending(site):
    url, api, database = site
    client = ui(url)
    send(api, subject="Hot fix now", importance="urgent", to=["BlueLake"], sender_name="GreenCastle", thread_id="HOT")
    acking = send(api, subject="Ack the plan", ack_required=True, to=["BlueLake"], sender_name="GreenCastle", thread_id="PLAN")
    seen = send(api, subject="Already seen", to=["BlueLake"], sender_name="GreenCastle", thread_id="SEEN")
    api.post("/api/mark_message_read", json={"project_key": P, "agent_name": "BlueLake", "message_id": seen["id"]}).raise_for_status()
    agent = {"p": P, "a": "BlueLake"}

    def received(only: str) -> str:
        return section(client.get("/ui/agent", params={**agent, "only": only}).text, "Inbox")

    assert all(subject in received("") for subject in ("Hot fix now", "Ack the plan", "Already seen"))
    unread = received("unread")
    assert "Hot fix now" in unread and "Ack the plan" in unread and "Already seen" not in unread
    assert "Hot fix now" in received("urgent") and "Ack the plan" not in received("urgent")
    assert "Ack the plan" in received("acks") and "Hot fix now" not in received("acks")
    page = client.get("/ui/agent", params={**agent, "only": "acks"}).text
    assert f'<a href="/ui/agent?p={P}&amp;a=BlueLake&amp;only=acks" aria-current="page">Ack pending</a>' in page
    back = re.search(rf'name="back" value="([^"]+#received-{acking["id"]})"', page).group(1)
    assert html.unescape(back) == f"/ui/agent?p={P}&a=BlueLake&only=acks&m={acking['id']}#received-{acking['id']}"
    assert 'value="/ui/agent?p=srv-shop&amp;a=BlueLake&amp;only=acks"' in page  # retire comes back to it too
    assert client.get("/ui/agent", params={**agent, "only": "mine"}).status_code == 404


def test_an_action_that_takes_the_message_out_of_the_view_still_says_what_was_done(site):
    """Acknowledge in "Ack pending" (or Mark read in "Unread") came back to a list without the
    message, saying nothing: only its row said what was done."""
    url, api, database = site
    client = ui(url)
    asked = send(api, subject="Ack me from the filter", ack_required=True, to=["BlueLake"], sender_name="GreenCastle")
    for only, action in (("acks", "ack"), ("unread", "read")):
        back = f"/ui/agent?p={P}&a=BlueLake&only={only}&m={asked['id']}#received-{asked['id']}"
        done = client.post("/ui/act", data={"csrf": client.csrf, "action": action, "project_key": P, "agent_name": "BlueLake",
                                            "message_id": asked["id"], "back": back})
        assert done.status_code == 303
        page = client.get(done.headers["location"]).text
        assert f'id="received-{asked["id"]}"' not in page  # out of the view
        said = "Done: acknowledged." if action == "ack" else "Done: marked read."
        assert f'<p class="notice" role="status">{said}</p>' in page and page.count('role="status"') == 1


def contacts_of(page: str) -> str:
    return page[page.index('<h2 id="contacts">'):]


def test_a_pending_contact_request_is_accepted_or_denied_on_the_agents_page(site):
    """The agent page listed the requests to the agent with nothing to answer them with."""
    url, api, database = site
    client = ui(url)
    for name in ("PurpleBear", "OrangeFox", "SilverPine"):  # contact policy auto: a stranger asks first
        api.post("/api/register_agent", json={"project_key": P, "program": "p", "model": "m", "name": name}).raise_for_status()
    for asker in ("PurpleBear", "SilverPine"):
        api.post("/api/request_contact", json={"project_key": P, "from_agent": asker, "to_agent": "OrangeFox",
                                               "reason": "schema"}).raise_for_status()
    page = contacts_of(client.get("/ui/agent", params={"p": P, "a": "OrangeFox"}).text)
    assert page.count(">Accept</button>") == 2 and page.count(">Deny</button>") == 2
    asker_page = contacts_of(client.get("/ui/agent", params={"p": P, "a": "PurpleBear"}).text)
    assert "pending" in asker_page and "Accept" not in asker_page  # its own request: the other agent answers it
    [accept] = [form for form in page.split("<form")[1:] if 'value="accept_contact"' in form and 'value="PurpleBear"' in form]
    form = {name: html.unescape(value) for name, value in re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', accept)}
    accepted = client.post("/ui/act", data=form)
    assert accepted.headers["location"] == f"/ui/agent?p={P}&a=OrangeFox&done=accept_contact#contacts"
    denied = client.post("/ui/act", data={**form, "action": "deny_contact", "from_agent": "SilverPine"})
    assert denied.headers["location"] == f"/ui/agent?p={P}&a=OrangeFox&done=deny_contact#contacts"
    back = client.get(denied.headers["location"]).text
    assert '<p class="notice" role="status">Done: contact request denied.</p>' in back
    assert "Done: contact request accepted." in client.get(accepted.headers["location"]).text
    contacts = api.post("/api/list_contacts", json={"project_key": P, "agent_name": "OrangeFox"}).json()["contacts"]
    assert {c["from_agent"]: c["status"] for c in contacts} == {"PurpleBear": "approved", "SilverPine": "denied"}
    assert ">Accept</button>" not in contacts_of(back)  # answered


def test_a_product_has_a_page_with_its_projects_its_newest_mail_and_a_search(site):
    """Products (groups of projects) had no page: the overseer saw each project alone."""
    url, api, database = site
    api.post("/api/ensure_project", json={"human_key": "/srv/shop-web"}).raise_for_status()
    api.post("/api/register_agent", json={"project_key": "srv-shop-web", "program": "p", "model": "m", "name": "BlueLake"}).raise_for_status()
    api.post("/api/ensure_product", json={"product_key": "shop", "name": "The shop"}).raise_for_status()
    for project in (P, "srv-shop-web"):
        api.post("/api/products_link", json={"product_key": "shop", "project_key": project}).raise_for_status()
    send(api, subject="Backend: price rounding", body_md="the rounding of prices is off", thread_id="PRICE")
    send(api, project_key="srv-shop-web", to=["BlueLake"], subject="Frontend: price display", body_md="prices rounding shown",
         thread_id="PRICE-UI")
    client = ui(url)
    assert '<a href="/ui/products">Products</a>' in client.get("/ui/projects").text  # in the navigation
    products = client.get("/ui/products").text
    assert '<a href="/ui/product?k=shop">shop</a>' in products and '<a href="/ui/project?p=srv-shop-web">srv-shop-web</a>' in products
    page = client.get("/ui/product", params={"k": "shop"}).text
    assert "<h1><bdi>The shop</bdi>" in page and f'<a href="/ui/project?p={P}">{P}</a>' in page and 'href="/ui/project?p=srv-shop-web"' in page
    newest = page[page.index("Newest mail"):]
    assert newest.index("Frontend: price display") < newest.index("Backend: price rounding")  # both projects, newest first
    found = client.get("/ui/product", params={"k": "shop", "q": "rounding"}).text
    hits = re.findall(r'<span class="proj">([^<]+)</span> · <bdi>(PRICE[-\w]*)</bdi>', found)
    assert sorted(hits) == [(P, "PRICE"), ("srv-shop-web", "PRICE-UI")] and "<mark>rounding</mark>" in found
    wrong = client.get("/ui/product", params={"k": "shop", "q": "rounding", "cursor": "?"})  # the tool's refusal, on the page
    assert wrong.status_code == 200 and "is not one this tool gave" in wrong.text and 'type="search"' in wrong.text
    missing = client.get("/ui/product", params={"k": "nope"})
    assert missing.status_code == 404 and "ensure_product" in missing.text


def test_overlapping_reservations_of_two_agents_are_flagged_on_the_project_page(site):
    """A reservation granted over another agent's (a conflict reported, then ignored) looked like any other."""
    url, api, database = site
    for name, path, exclusive in (("GreenCastle", "src/api/*", True), ("RedStone", "src/api/handlers.py", True),
                                  ("BlueLake", "docs/**", False), ("RedStone", "docs/guide.md", False)):  # shared ones never conflict
        api.post("/api/file_reservation_paths", json={"project_key": P, "agent_name": name, "paths": [path],
                                                      "exclusive": exclusive}).raise_for_status()
    listed = {r["path_pattern"]: r for r in api.post("/api/list_file_reservations", json={"project_key": P}).json()["file_reservations"]}
    assert [(o["agent"], o["path_pattern"], o["id"]) for o in listed["src/api/*"]["conflicts_with"]] == [
        ("RedStone", "src/api/handlers.py", listed["src/api/handlers.py"]["id"])]
    assert [o["agent"] for o in listed["src/api/handlers.py"]["conflicts_with"]] == ["GreenCastle"]
    assert listed["docs/**"]["conflicts_with"] == listed["docs/guide.md"]["conflicts_with"] == []
    rows = reservation_rows(ui(url).get("/ui/project", params={"p": P}).text)
    assert "overlaps RedStone's <code><bdi>src/api/handlers.py</bdi></code>" in rows["src/api/*"]
    assert "overlaps GreenCastle's <code><bdi>src/api/*</bdi></code>" in rows["src/api/handlers.py"]
    assert "overlaps" not in rows["docs/**"] + rows["docs/guide.md"]


def test_a_digests_ack_links_open_the_page_of_the_thread_that_holds_the_message(site):
    """They were #m<id> anchors: on the first page of a long thread, an ack asked for on a later
    page led nowhere."""
    url, api, database = site
    for n in range(20):  # a get_thread page holds ~4 MiB of bodies: 16 of these
        sent = send(api, subject=f"Big {n}", body_md="x" * 250_000, thread_id="ACK-LONG", ack_required=n == 19)
    client = ui(url)
    assert sent["id"] not in articles(client.get("/ui/thread", params={"p": P, "t": "ACK-LONG"}).text)  # not on the first page
    digest = client.get("/ui/digest", params={"p": P, "t": "ACK-LONG"}).text
    target = link(digest, "Big 19")
    assert f"m={sent['id']}" in target and f'data-m="{sent["id"]}"' in digest
    assert sent["id"] in articles(client.get(target).text)


def test_a_digest_says_which_message_each_acknowledgement_waits_on(site):
    """It listed one bare name per message and recipient ("AmberFox, AmberFox, TealOwl"): not
    which message, nor that AmberFox was one agent waited on twice."""
    url, api, database = site
    for name in ("AmberFox", "TealOwl"):
        api.post("/api/register_agent", json={"project_key": P, "program": "p", "model": "m", "name": name}).raise_for_status()
        api.post("/api/set_contact_policy", json={"project_key": P, "agent_name": name, "policy": "open"}).raise_for_status()
    first = send(api, subject="Schema v2", to=["AmberFox"], ack_required=True, thread_id="WAITING")
    send(api, subject="Re: Schema v2", to=["AmberFox"], thread_id="WAITING")  # asks for nothing
    second = send(api, subject="Re: Schema v2", to=["AmberFox", "TealOwl"], cc=["GreenCastle"], ack_required=True, thread_id="WAITING")
    api.post("/api/acknowledge_message", json={"project_key": P, "agent_name": "GreenCastle", "message_id": second["id"]}).raise_for_status()
    client = ui(url)
    digest = client.get("/ui/digest", params={"p": P, "t": "WAITING"}).text
    waiting = digest[digest.index("<h3>Waiting for acknowledgement</h3>"):]
    entries = re.findall(r'<li data-m="(\d+)"><a href="([^"]+)" dir="auto">([^<]+)</a> <small>\((\w+), <time datetime="([^"]+)"'
                         r'.*?<span class="who">([^<]*)</span></li>', waiting)
    assert [(m, subject, sender, ts, who) for m, _, subject, sender, ts, who in entries] == [
        (first["id"], "Schema v2", "BlueLake", first["created_ts"], "AmberFox"),
        (second["id"], "Re: Schema v2", "BlueLake", second["created_ts"], "AmberFox, TealOwl")]
    for message_id, target, *_ in entries:
        assert message_id in articles(client.get(html.unescape(target)).text)


def test_a_digest_lists_the_newest_open_acks_and_says_how_many_more(site):
    """It listed them all: 460 messages to 99 agents made a 630 KB digest."""
    url, api, database = site
    slug = api.post("/api/ensure_project", json={"human_key": "/srv/many-acks"}).json()["slug"]  # (P's open acks stay few)
    for name in ("BlueLake", "GreenCastle", "RedStone"):
        api.post("/api/register_agent", json={"project_key": slug, "program": "p", "model": "m", "name": name}).raise_for_status()
        api.post("/api/set_contact_policy", json={"project_key": slug, "agent_name": name, "policy": "open"}).raise_for_status()
    for n in range(OPEN_ACKS // 2 + 2):
        send(api, project_key=slug, subject=f"Ask {n}", to=["GreenCastle", "RedStone"], ack_required=True, thread_id="MANY-ACKS")
    digest = ui(url).get("/ui/digest", params={"p": slug, "t": "MANY-ACKS"}).text
    assert "<li data-m=" in digest and "Ask 1<" not in digest and "Ask 2<" in digest  # 2 a message: the newest 50
    assert "and 4 more (older) waiting" in digest


def test_a_thread_of_many_participants_lists_the_first_and_says_how_many_more(site, big_squat):
    """Session 40: a thread's participants are its first 100 (thread_summaries.PARTICIPANTS_SHOWN),
    on the project page and in the digest, the others counted."""
    url, api, database = site
    crowd = [f"Agent{n:03d}" for n in range(129)]
    api.post("/api/send_overseer_message", json={"project_key": big_squat, "to": crowd[:100], "cc": crowd[100:],
                                                 "subject": "All hands", "body_md": "x", "thread_id": "ALL-HANDS"}).raise_for_status()
    client = ui(url)
    project = client.get("/ui/project", params={"p": big_squat}).text
    [row] = [row for row in project.split("<tr") if "All hands" in row]  # (the agents' table names them all)
    digest = client.get("/ui/digest", params={"p": big_squat, "t": "ALL-HANDS"}).text
    for shown in (row, digest):
        assert "Agent098 and 30 more" in shown and "Agent099" not in shown


def test_waiting_for_acks_refreshes_live_when_a_message_is_acknowledged(site):
    """The view's live poll answered its newest message only: an older one acknowledged stayed listed."""
    url, api, database = site
    older = send(api, subject="Approve the plan", ack_required=True, thread_id="LIVE-ACKS")
    send(api, subject="Approve the budget", ack_required=True, thread_id="LIVE-ACKS")
    client = ui(url)

    def shown() -> str:
        page = client.get("/", params={"view": "ack_pending"}).text
        assert f'data-latest="{client.get("/ui/live", params={"view": "ack_pending", "read": "1"}).json()["latest"]}"' in page  # no reload loop
        return page

    before = shown()
    assert "Approve the plan" in live_region(before)
    api.post("/api/acknowledge_message", json={"project_key": P, "agent_name": "GreenCastle", "message_id": older["id"]}).raise_for_status()
    after = shown()
    assert "Approve the plan" not in live_region(after) and "Approve the budget" in live_region(after)
    token = re.compile(r'data-latest="([^"]*)"')
    assert token.search(before).group(1) != token.search(after).group(1)  # what ui.js compares: the page refreshes


def test_a_product_pages_newest_mail_refreshes_live(site):
    """The product page did not refresh itself like the inbox and project pages: new mail in
    any of its projects showed only on a reload."""
    url, api, database = site
    api.post("/api/ensure_project", json={"human_key": "/srv/shop-app"}).raise_for_status()
    api.post("/api/register_agent", json={"project_key": "srv-shop-app", "program": "p", "model": "m", "name": "BlueLake"}).raise_for_status()
    api.post("/api/ensure_product", json={"product_key": "live-shop"}).raise_for_status()
    for project in (P, "srv-shop-app"):
        api.post("/api/products_link", json={"product_key": "live-shop", "project_key": project}).raise_for_status()
    client = ui(url)
    token = re.compile(r'<body data-live="([^"]+)" data-latest="([^"]*)"')

    def shown() -> tuple[str, str]:
        page = client.get("/ui/product", params={"k": "live-shop"}).text
        poll, latest = token.search(page).groups()
        assert poll == "/ui/live?k=live-shop&amp;read=1" and client.get(html.unescape(poll)).json()["latest"] == latest  # no reload loop
        return live_region(page), latest

    before, latest = shown()
    sent = send(api, project_key="srv-shop-app", to=["BlueLake"], subject="Checkout redesign")
    polled = client.get("/ui/live", params={"k": "live-shop", "read": "1"}).json()["latest"]
    assert polled.startswith(f'{sent["id"]}.') and polled != latest  # what ui.js compares
    after, _ = shown()
    assert "Checkout redesign" not in before and "Checkout redesign" in after


def test_ack_marks_of_the_inbox_a_project_and_an_agent_refresh_live_when_acknowledged(site):
    """The All inbox's "ack ×N", a project's open acks and an agent's inbox refreshed only on new
    mail: an acknowledgement given left them stale."""
    url, api, database = site
    asked = send(api, subject="Sign off the release notes", ack_required=True, thread_id="LIVE-MARKS")
    client = ui(url)
    token = re.compile(r'<body data-live="([^"]+)" data-latest="([^"]*)"')
    pages = {"/": {}, "/ui/project": {"p": P}, "/ui/agent": {"p": P, "a": "GreenCastle"}}

    def shown() -> dict:
        seen = {}
        for path, params in pages.items():
            page = client.get(path, params=params).text
            poll, latest = token.search(page).groups()
            assert client.get(html.unescape(poll)).json()["latest"] == latest, path  # no reload loop
            seen[path] = (latest, page)
        return seen

    before = shown()
    assert re.search(r'ack ×1</span><bdi>Sign off the release notes', live_region(before["/"][1]))
    assert "Sign off the release notes" in section(before["/ui/project"][1], "Open acks")
    received = re.compile(rf'<li id="received-{asked["id"]}".*?</li>', re.S)  # the agent's inbox row
    assert ">Acknowledge</button>" in received.search(before["/ui/agent"][1]).group()
    api.post("/api/acknowledge_message", json={"project_key": P, "agent_name": "GreenCastle", "message_id": asked["id"]}).raise_for_status()
    after = shown()
    for path in pages:  # what ui.js compares: each page refreshes
        assert after[path][0] != before[path][0], path
    assert re.search(r'acked</span><bdi>Sign off the release notes', live_region(after["/"][1]))
    assert "Sign off the release notes" not in section(after["/ui/project"][1], "Open acks")
    assert ">Acknowledge</button>" not in received.search(after["/ui/agent"][1]).group()


def test_unread_marks_of_the_inbox_an_agent_and_a_product_refresh_live_when_read(site):
    """An agent reading its mail left the All inbox, its agent page and a product's pages showing
    the message unread until some new message arrived."""
    url, api, database = site
    api.post("/api/ensure_product", json={"product_key": "read-shop"}).raise_for_status()
    api.post("/api/products_link", json={"product_key": "read-shop", "project_key": P}).raise_for_status()
    note = send(api, subject="Schema is merged", thread_id="LIVE-READS")
    client = ui(url)
    token = re.compile(r'<body data-live="([^"]+)" data-latest="([^"]*)"')
    pages = {"/": {}, "/ui/agent": {"p": P, "a": "GreenCastle"}, "/ui/product": {"k": "read-shop"},
             "/ui/product?as": {"k": "read-shop", "as": "GreenCastle"}, "/ui/project": {"p": P}}

    def shown() -> dict:
        seen = {}
        for path, params in pages.items():
            page = client.get(path.partition("?")[0], params=params).text
            poll, latest = token.search(page).groups()
            assert client.get(html.unescape(poll)).json()["latest"] == latest, path  # no reload loop
            seen[path] = (latest, page)
        return seen

    row = re.compile(r'<li class="unread">\s*<a class="row" href="[^"]*#m%s"' % note["id"])  # the inbox's and the product's
    received = re.compile(rf'<li id="received-{note["id"]}" class="([^"]*)"')  # an agent's inbox row
    before = shown()
    assert row.search(before["/"][1]) and row.search(before["/ui/product"][1])
    assert received.search(before["/ui/agent"][1]).group(1) == received.search(before["/ui/product?as"][1]).group(1) == "unread"
    api.post("/api/mark_message_read", json={"project_key": P, "agent_name": "GreenCastle", "message_id": note["id"]}).raise_for_status()
    after = shown()
    for path in ("/", "/ui/agent", "/ui/product", "/ui/product?as"):  # what ui.js compares: each page refreshes
        assert after[path][0] != before[path][0], path
    assert not row.search(after["/"][1]) and not row.search(after["/ui/product"][1])
    assert received.search(after["/ui/agent"][1]).group(1) == received.search(after["/ui/product?as"][1]).group(1) == ""
    # A project's page shows no unread marks: a read does not reload it.
    assert after["/ui/project"][0] == before["/ui/project"][0]


def test_a_product_page_shows_one_agents_inbox_across_its_projects(site):
    """An overseer saw a product's mail as a whole, or an agent's inbox one project at a time."""
    url, api, database = site
    api.post("/api/ensure_project", json={"human_key": "/srv/shop-mobile"}).raise_for_status()
    for name in ("BlueLake", "GreenCastle"):
        api.post("/api/register_agent", json={"project_key": "srv-shop-mobile", "program": "p", "model": "m", "name": name}).raise_for_status()
    api.post("/api/set_contact_policy", json={"project_key": "srv-shop-mobile", "agent_name": "BlueLake", "policy": "open"}).raise_for_status()
    api.post("/api/ensure_product", json={"product_key": "as-shop"}).raise_for_status()
    for project in (P, "srv-shop-mobile"):
        api.post("/api/products_link", json={"product_key": "as-shop", "project_key": project}).raise_for_status()
    here = send(api, sender_name="GreenCastle", to=["BlueLake"], subject="Backend for BlueLake", ack_required=True)
    there = send(api, project_key="srv-shop-mobile", sender_name="GreenCastle", to=["BlueLake"], subject="Mobile for BlueLake")
    send(api, subject="Not for BlueLake")  # BlueLake to GreenCastle
    client = ui(url)
    page = client.get("/ui/product", params={"k": "as-shop", "as": "BlueLake"}).text
    shown = live_region(page)
    assert "Inbox of BlueLake" in page and 'data-live="/ui/live?k=as-shop&amp;read=1"' in page
    assert shown.index("Mobile for BlueLake") < shown.index("Backend for BlueLake") and "Not for BlueLake" not in shown
    assert f'<span class="proj">srv-shop-mobile</span> · <bdi>{there["thread_id"]}</bdi>' in shown
    acked = client.post("/ui/act", data={"csrf": client.csrf, "action": "ack", "project_key": P, "agent_name": "BlueLake",
                                         "message_id": here["id"], "back": f"/ui/product?k=as-shop&as=BlueLake#received-{here['id']}"})
    back = client.get(acked.headers["location"]).text  # acknowledged as BlueLake, back on its row
    assert acked.status_code == 303 and ">Acknowledge</button>" not in re.search(rf'<li id="received-{here["id"]}".*?</li>', back, re.S).group()
    unknown = client.get("/ui/product", params={"k": "as-shop", "as": "NoSuchAgent"})
    assert unknown.status_code == 200 and "No agent named NoSuchAgent" in unknown.text and 'name="as"' in unknown.text
    assert "Inbox of NoSuchAgent" not in unknown.text  # the error says why; no empty inbox under its name


def archived_project(api: httpx.Client, path: str, **message) -> str:
    """A project of BlueLake and GreenCastle with one message, archived: its slug."""
    slug = api.post("/api/ensure_project", json={"human_key": path}).json()["slug"]
    for name in ("BlueLake", "GreenCastle"):
        api.post("/api/register_agent", json={"project_key": slug, "program": "p", "model": "m", "name": name}).raise_for_status()
    api.post("/api/set_contact_policy", json={"project_key": slug, "agent_name": "GreenCastle", "policy": "open"}).raise_for_status()
    send(api, project_key=slug, **message)
    api.post("/api/archive_project", json={"project_key": slug}).raise_for_status()
    return slug


def test_search_of_all_projects_reads_archived_ones_too_and_offers_them(site):
    """An archived project's mail (a finished repository's postmortem) was never searched from
    "All projects" ("0 results"), nor offered in the project list, though its mail reads as before."""
    url, api, database = site
    slug = archived_project(api, "/srv/old-infra", subject="Postmortem: kafka outage", body_md="the kafka broker ran out of disk")
    page = ui(url).get("/ui/search", params={"q": "kafka"}).text
    assert '<p class="sub">1 result</p>' in page and "Postmortem: kafka outage" in page
    assert f'<option value="{slug}">{slug} (archived)</option>' in page and f'<option value="{P}">{P}</option>' in page


def test_search_since_a_day_reads_it_from_the_midnight_of_the_browsers_zone(site):
    """The day was read from midnight UTC while the page shows local times: east of UTC a
    message the page dated D was left out of "since D"."""
    url, api, database = site
    sent = send(api, subject="Nightly zonecheck", body_md="zonecheck", thread_id="ZONES")
    with sqlite3.connect(database) as db:  # 20:00 UTC on March 1st: March 2nd from UTC+4 on
        db.execute("UPDATE messages SET created_ts = '2026-03-01T20:00:00.000000+00:00' WHERE id = ?", (int(sent["id"]),))
    client = ui(url)

    def found(**since) -> bool:
        page = client.get("/ui/search", params={"q": "zonecheck", "p": P, **since}).text
        assert '<p class="error">' not in page
        return "Nightly zonecheck" in page

    assert found(since="2026-03-02", tz="+05:00") and found(since="2026-03-01", tz="-05:00")
    assert not found(since="2026-03-02", tz="+03:00") and not found(since="2026-03-02", tz="-05:00")
    assert not found(since="2026-03-02") and found(since="2026-03-01")  # without scripts: UTC, as the form says
    assert not found(since="2026-03-02", tz="+4:00") and not found(since="2026-03-02", tz="+15:00")  # no offset: UTC
    page = client.get("/ui/search").text
    assert '<label class="since">Since <small class="tz" data-zone-of="since">UTC</small><input type="date" name="since"' in page


def test_previews_read_a_links_words_without_its_address_or_a_lists_marker(site):
    """An inbox excerpt read "- decided: follow [the runbook](https://…) for every deploy", and so
    did the digest's key point."""
    url, api, database = site
    send(api, subject="Deploys", thread_id="LINKS", body_md=(
        "- decided: follow [the runbook](https://example.com/runbook/deploy) for **every** deploy\n"
        "2. see ![the graph](https://example.com/g.png)\n* [ ] and [x](https://example.com/a-very-long-address-that-the-excerpt-cuts"))
    client = ui(url)
    excerpt = re.search(r'class="excerpt">— <bdi>([^<]*)', client.get("/").text).group(1)
    assert excerpt == "decided: follow the runbook for every deploy see the graph and x"
    digest = client.get("/ui/digest", params={"p": P, "t": "LINKS"}).text
    assert '<li dir="auto">BlueLake: decided: follow the runbook for every deploy</li>' in digest


def test_an_archived_project_says_so_offers_no_writing_and_the_admin_unarchives_it(site):
    """Its pages offered Write and a reply that were refused once written (409), and nothing
    said it was archived but the projects list; nor could the overseer unarchive it here."""
    url, api, database = site
    slug = archived_project(api, "/srv/done", subject="Wrapped up", thread_id="DONE")
    client = ui(url)
    project = client.get("/ui/project", params={"p": slug}).text
    assert re.search(r'<h1>.*<span class="tag">archived</span></h1>', project)
    assert "Archived since <time" in project and "Write to agents" not in project
    agent = client.get("/ui/agent", params={"p": slug, "a": "GreenCastle"}).text
    assert "Write to GreenCastle" not in agent and f"{slug} is archived (read-only)" in agent and ">Retire</button>" in agent
    thread = client.get("/ui/thread", params={"p": slug, "t": "DONE"}).text
    assert "Send reply" not in thread and f"No reply: {slug} is archived" in thread
    [unarchive] = action_forms(project, "unarchive")
    done = client.post("/ui/act", data=unarchive)
    assert done.status_code == 303 and done.headers["location"] == f"/ui/project?p={slug}&done=unarchive"
    again = client.get(done.headers["location"]).text
    assert "Done: unarchived." in again and "Write to agents" in again and '<span class="tag">archived</span>' not in again
    assert "Send reply" in client.get("/ui/thread", params={"p": slug, "t": "DONE"}).text
    assert api.post("/api/get_project", json={"project_key": slug}).json()["archived_ts"] is None


def test_the_compose_page_of_an_archived_project_says_so_instead_of_a_form_that_cannot_be_sent(site):
    """Opened directly (/ui/compose?p=..., a bookmark), it showed the form; only Send was refused
    (409 "archived"). A message refused so (archived since the form was opened) came back as that form again."""
    url, api, database = site
    slug = archived_project(api, "/srv/shelved", subject="Shelved", thread_id="SHELVED")
    client = ui(url)
    page = client.get("/ui/compose", params={"p": slug, "to": "GreenCastle"})
    assert page.status_code == 200 and 'name="body_md"' not in page.text and ">Send</button>" not in page.text
    assert f"{slug} is archived (read-only)" in page.text
    assert f'Unarchive is on <a href="/ui/project?p={slug}">its page</a>' in page.text  # where the admin's button is
    refused = client.post("/ui/compose", data={"csrf": client.csrf, "project_key": slug, "to": "GreenCastle",
                                               "subject": "Late", "body_md": "A late <b>note</b>"})
    assert refused.status_code == 409 and 'name="body_md"' not in refused.text and ">Send</button>" not in refused.text
    assert f"{slug} is archived (read-only)" in refused.text
    assert ">A late &lt;b&gt;note&lt;/b&gt;</textarea>" in refused.text  # what was written, to copy
    api.post("/api/unarchive_project", json={"project_key": slug}).raise_for_status()
    assert 'name="body_md"' in client.get("/ui/compose", params={"p": slug}).text  # the form again


def test_the_overseers_lines_stay_lines_and_an_agents_markdown_joins_them(site):
    """The lines a person typed into the form (steps, a signature) were joined into one: Markdown's
    soft line break."""
    url, api, database = site
    client = ui(url)
    typed = "Step 1: stop the deploy\r\nStep 2: roll back\r\n— Your overseer"
    sent = client.post("/ui/compose", data={"csrf": client.csrf, "project_key": P, "to": "GreenCastle", "subject": "Stop",
                                            "body_md": typed, "thread_id": "LINES"})
    assert sent.status_code == 303
    send(api, subject="Re: Stop", thread_id="LINES", body_md="Stopping\nnow")
    bodies = re.findall(r'<div class="body" dir="auto">(.*?)</div>', client.get("/ui/thread", params={"p": P, "t": "LINES"}).text, re.S)
    assert [body.strip() for body in bodies] == [
        "<p>Step 1: stop the deploy<br>\nStep 2: roll back<br>\n— Your overseer</p>", "<p>Stopping\nnow</p>"]


def test_a_thread_page_tells_people_from_agents_by_get_threads_sender_kind_not_whois(tmp_path, monkeypatch):
    """The page asked whois about each of its senders (a tool call apiece) to tell a person's typed
    lines from an agent's Markdown, on top of the whois its reply form asks of each address."""
    from chalicelib import invoke
    from chalicelib.config import Settings
    from chalicelib.tools import tools_by_name
    from chalicelib.web import http, pages

    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", archive_enabled=False)
    tools = tools_by_name()

    def call(tool: str, **arguments):
        return invoke.call(tools[tool], arguments, settings)

    call("ensure_project", human_key="/srv/kinds")
    for name in ("BlueLake", "GreenCastle"):
        call("register_agent", project_key="srv-kinds", program="p", model="m", name=name)
        call("set_contact_policy", project_key="srv-kinds", agent_name=name, policy="open")
    call("send_overseer_message", project_key="srv-kinds", to=["BlueLake"], subject="Stop", body_md="Step 1\nStep 2", thread_id="K")
    call("send_message", project_key="srv-kinds", sender_name="BlueLake", to=["GreenCastle"], subject="Re: Stop",
         body_md="Stopping\nnow", thread_id="K")
    asked = []
    real = pages.invoke.call
    monkeypatch.setattr(pages.invoke, "call", lambda tool, arguments, settings: (
        asked.append((tool.name, arguments.get("agent_name") or arguments.get("names"))), real(tool, arguments, settings))[1])
    page = pages.WebUI(settings).handle(http.Request("GET", "/ui/thread", query={"p": "srv-kinds", "t": "K"}))
    assert page.status == 200, page.body[:500]
    bodies = re.findall(r'<div class="body" dir="auto">(.*?)</div>', page.body.decode(), re.S)
    assert [body.strip() for body in bodies] == ["<p>Step 1<br>\nStep 2</p>", "<p>Stopping\nnow</p>"]  # the person's lines kept
    assert not [name for tool, name in asked if tool == "whois"]
    # The reply form's recipients: one look-up of their names (it was a whois each: QA, session 37)
    assert [names for tool, names in asked if tool == "list_agents"] == [["overseer", "bluelake", "greencastle"]]


def test_the_overseer_counts_a_bcc_recipients_pending_ack(site):
    """BlueLake acknowledged, RedStone (bcc) had not: the inbox tagged the message "acked" titled
    "every recipient acknowledged", and Waiting for acks, the digest and open acks left it out."""
    url, api, database = site
    sent = send(api, subject="Freeze main", to=["GreenCastle"], bcc=["RedStone"], ack_required=True, thread_id="BCC-ACK")
    api.post("/api/acknowledge_message", json={"project_key": P, "agent_name": "GreenCastle", "message_id": sent["id"]}).raise_for_status()
    client = ui(url)
    row = re.search(r'<li class="[^"]*">\s*<a class="row" href="[^"]*m=%s#.*?</li>' % sent["id"], client.get("/").text, re.S).group()
    assert "→ GreenCastle, bcc RedStone</span>" in row and 'title="1 recipient(s) have not acknowledged">ack ×1' in row
    assert "Freeze main" in live_region(client.get("/", params={"view": "ack_pending"}).text)
    digest = client.get("/ui/digest", params={"p": P, "t": "BCC-ACK"}).text
    assert re.search(rf'<li data-m="{sent["id"]}">.*<span class="who">RedStone</span></li>', digest)
    acks = section(client.get("/ui/project", params={"p": P}).text, "Open acks")
    assert "Freeze main</a>\n— RedStone <span class=\"tag\">bcc</span>" in acks
    api.post("/api/acknowledge_message", json={"project_key": P, "agent_name": "RedStone", "message_id": sent["id"]}).raise_for_status()
    row = re.search(r'<a class="row" href="[^"]*m=%s#.*?</li>' % sent["id"], client.get("/").text, re.S).group()
    assert 'title="every recipient acknowledged">acked' in row


def test_an_agents_received_and_sent_lists_tag_a_persons_mail_and_its_importance_as_other_lists_do(site):
    """QA, session 36: an agent's received list showed no "human" tag on the overseer's mail (the
    inbox did), and its outbox no urgent or high tag (every other list did); nor did a product's
    "View as agent"."""
    url, api, database = site
    api.post("/api/send_overseer_message", json={"project_key": P, "to": ["RedStone"], "subject": "From a person",
                                                  "body_md": "hello", "importance": "urgent"}).raise_for_status()
    send(api, sender_name="RedStone", subject="Sent urgently", importance="urgent")
    send(api, sender_name="RedStone", subject="Sent highly", importance="high")
    send(api, sender_name="GreenCastle", to=["RedStone"], subject="From an agent")
    client = ui(url)

    def row(page: str, subject: str) -> str:
        return next(item for item in re.findall(r"<li[ >].*?</li>", page, re.S) if subject in item)

    page = client.get("/ui/agent", params={"p": P, "a": "RedStone"}).text
    received, sent = section(page, "Inbox"), section(page, "Outbox")
    person = row(received, "From a person")
    assert '<b>Overseer</b> <span class="tag human">human</span>' in person and '<span class="tag urgent">urgent</span>' in person
    assert "tag human" not in row(received, "From an agent")
    assert '<span class="tag urgent">urgent</span>' in row(sent, "Sent urgently")
    assert '<span class="tag high">high</span>' in row(sent, "Sent highly")
    api.post("/api/ensure_product", json={"product_key": "tags"}).raise_for_status()
    api.post("/api/products_link", json={"product_key": "tags", "project_key": P}).raise_for_status()
    page = client.get("/ui/product", params={"k": "tags", "as": "RedStone"}).text
    assert '<b>Overseer</b> <span class="tag human">human</span>' in row(page, "From a person")


def test_a_since_that_is_no_day_is_said_in_the_uis_words(site):
    """QA, session 36: a hand-edited since= got search_messages' hint for API callers, "Check the
    tool's input schema (tools/list (MCP) …)", which means nothing to a person."""
    url, api, database = site
    client = ui(url)
    for since in ("yesterday", "2026-02-30", "2026-03-01T10:00"):
        page = client.get("/ui/search", params={"q": "zonecheck", "p": P, "since": since}).text
        error = re.search(r'<p class="error">(.*?)</p>', page, re.S).group(1)
        assert "is not a day" in error and html.escape(since, quote=True) in error, error
        assert "schema" not in error and "tools/list" not in error and "since_ts" not in error, error


def test_counts_read_with_thousands_separators(tmp_path):
    """A project's mail reaches millions: 1,234,567, not 1234567."""
    database = tmp_path / "agent_mail.db"
    with running_server(database) as url, httpx.Client(base_url=url, timeout=60) as api:
        api.post("/api/ensure_project", json={"human_key": "/srv/big"}).raise_for_status()
        with sqlite3.connect(database) as conn:  # as the write path keeps them: a row per writer, summed
            conn.execute("INSERT INTO project_counts (id, project_id, writer, messages, agents)"
                         " SELECT 4242, id, 99, 1234567, 1000 FROM projects WHERE slug = 'srv-big'")
        row = re.search(r'href="/ui/project\?p=srv-big".*?</tr>', api.get("/ui/projects").text, re.S).group(0)
        assert '<td class="num">1,000</td><td class="num">1,234,567</td>' in row
