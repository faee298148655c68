"""The list tools answer a page at a time (chalicelib/tools/paging.py): pages add up to the
whole list in order, rows written between two pages shift nothing, and a cursor is checked
like any input. Through the tools on both backends, then over HTTP and in the web UI."""

import re

import httpx
import pytest
from hypothesis import given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families

from chalicelib import invoke
from chalicelib.security.auth import Principal
from chalicelib.tools import tools_by_name
from chalicelib.web.pages import LIST_SHOWN, THREADS_SHOWN

from .servers import running_server

TOOLS = tools_by_name()
NAMES = ["BlueLake", "GreenCastle", "RedStone", "amberfox", "Cobalt7", "dustyowl", "EmberHill", "frostpine"]


def world(call) -> str:
    """Projects /w/p0../w/p4, products k0..k4, in project w-p0 eight agents (names in mixed case),
    a reservation per agent and contact requests between them."""
    for n in range(5):
        call("ensure_project", human_key=f"/w/p{n}")
        call("ensure_product", product_key=f"k{n}")
        call("products_link", product_key=f"k{n}", project_key=f"w-p{n}")
    for name in NAMES:
        call("register_agent", project_key="w-p0", program="p", model="m", name=name)
        call("file_reservation_paths", project_key="w-p0", agent_name=name, paths=[f"src/{name}/**"])
    for name in NAMES[1:]:
        call("request_contact", project_key="w-p0", from_agent=name, to_agent="BlueLake", reason=f"from {name}")
    call("retire_agent", project_key="w-p0", agent_name="dustyowl")  # its reservation is released
    return "w-p0"


LISTS = [  # tool, arguments, the field holding the list
    ("list_projects", {}, "projects"),
    ("list_products", {}, "products"),
    ("list_agents", {"project_key": "w-p0"}, "agents"),
    ("list_agents", {"project_key": "w-p0", "include_retired": True}, "agents"),
    ("list_file_reservations", {"project_key": "w-p0"}, "file_reservations"),
    ("list_file_reservations", {"project_key": "w-p0", "active_only": False}, "file_reservations"),
    ("list_contacts", {"project_key": "w-p0", "agent_name": "BlueLake"}, "contacts"),
]


def pages(call, tool, arguments, field, limit, cursor=None):
    """Every page's items, following next_cursor from the first page (or `cursor`) to the last."""
    found = []
    while True:
        page = call(tool, **arguments, limit=limit, **({"cursor": cursor} if cursor else {}))
        assert len(page[field]) <= limit
        found.append(page[field])
        cursor = page["next_cursor"]
        if cursor is None:
            return found


@pytest.mark.both_backends
def test_pages_add_up_to_the_whole_list_in_order(call):
    world(call)
    for tool, arguments, field in LISTS:
        whole = call(tool, **arguments, limit=500)
        assert whole["next_cursor"] is None and len(whole[field]) >= 5, tool
        for limit in (1, 2, 3):
            found = pages(call, tool, arguments, field, limit)
            assert [item for page in found for item in page] == whole[field], (tool, arguments, limit)
            assert all(len(page) == limit for page in found[:-1]) and found[-1], (tool, limit)  # no empty last page
    for n in range(5):
        call("send_message", project_key="w-p0", sender_name="BlueLake", to=["GreenCastle"], subject=f"S{n}", body_md="x",
             thread_id=f"T-{n % 3}")
    for tool, arguments, field in (("fetch_outbox", {"project_key": "w-p0", "agent_name": "BlueLake"}, "messages"),
                                   ("list_threads", {"project_key": "w-p0"}, "threads")):
        whole = call(tool, **arguments, limit=500)[field]
        found = pages(call, tool, arguments, field, 2)
        assert len(whole) >= 3 and [item for page in found for item in page] == whole and found[-1], tool  # no empty last page
    agents = [a["name"] for a in call("list_agents", project_key="w-p0", include_retired=True)["agents"]]
    assert agents == sorted(NAMES, key=str.lower)  # by name, case aside
    contacts = [c["requested_ts"] for c in call("list_contacts", project_key="w-p0", agent_name="BlueLake")["contacts"]]
    assert contacts == sorted(contacts, reverse=True)  # most recently asked first


@pytest.mark.both_backends
def test_build_slots_come_a_page_of_slots_at_a_time(call):
    """A page holds every current holder of at most `limit` slots, by slot name: shared slots
    are never split between pages, released and expired holds are on none."""
    world(call)
    # (not NAMES[5]: world retired dustyowl, and a retired agent takes no slot)
    holds = [("alpha", NAMES[:3], False), ("Beta", NAMES[3:4], True), ("delta", [NAMES[4], NAMES[7]], False),
             ("gamma", NAMES[6:7], True)]
    for slot, agents, exclusive in holds:
        for agent in agents:
            call("acquire_build_slot", project_key="w-p0", agent_name=agent, slot=slot, exclusive=exclusive)
    call("acquire_build_slot", project_key="w-p0", agent_name="BlueLake", slot="cleared")
    call("release_build_slot", project_key="w-p0", agent_name="BlueLake", slot="cleared")
    whole = call("list_build_slots", project_key="w-p0", limit=500)
    expected = [(slot, agent) for slot, agents, _ in sorted(holds) for agent in agents]  # byte order: "Beta" first
    assert [(s["slot"], s["agent"]) for s in whole["slots"]] == expected and whole["next_cursor"] is None
    for limit in (1, 2, 3):
        found = []
        cursor = None
        while True:
            page = call("list_build_slots", project_key="w-p0", limit=limit, **({"cursor": cursor} if cursor else {}))
            found.append([(s["slot"], s["agent"]) for s in page["slots"]])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert [hold for page in found for hold in page] == expected, limit
        slots = [list(dict.fromkeys(slot for slot, _ in page)) for page in found]
        assert all(len(names) == limit for names in slots[:-1]) and 0 < len(slots[-1]) <= limit, (limit, slots)
    only = call("list_build_slots", project_key="w-p0", slot="alpha", limit=1)
    assert ([s["agent"] for s in only["slots"]], only["next_cursor"]) == (NAMES[:3], None)


@pytest.mark.both_backends
def test_a_credential_that_reaches_no_project_lists_none(call, settings):
    world(call)
    nobody = Principal("bearer", "nobody", role="reader", projects=frozenset())
    for tool, field in (("list_projects", "projects"), ("list_products", "products")):
        answer = invoke.call(TOOLS[tool], {"limit": 1}, settings, nobody)
        assert (getattr(answer, field), answer.next_cursor) == ([], None), tool
    only = Principal("bearer", "p3", role="reader", projects=frozenset({"/w/p3"}))
    assert [p.slug for p in invoke.call(TOOLS["list_projects"], {}, settings, only).projects] == ["w-p3"]


def test_rows_written_between_two_pages_shift_nothing(call):
    world(call)
    first = call("list_agents", project_key="w-p0", limit=3)
    assert [a["name"] for a in first["agents"]] == ["amberfox", "BlueLake", "Cobalt7"]
    call("register_agent", project_key="w-p0", program="p", model="m", name="Aardvark")  # before the cursor
    call("register_agent", project_key="w-p0", program="p", model="m", name="Zebra")  # after it
    call("retire_agent", project_key="w-p0", agent_name="EmberHill")  # on a later page
    later = pages(call, "list_agents", {"project_key": "w-p0"}, "agents", 2, cursor=first["next_cursor"])
    rest = [a["name"] for page in later for a in page]
    assert rest == ["frostpine", "GreenCastle", "RedStone", "Zebra"]


def test_a_cursor_is_a_place_in_the_order_whatever_the_filter(call):
    """A cursor holds a place in the list's order, so it also continues a list filtered differently."""
    world(call)
    page = call("list_file_reservations", project_key="w-p0", active_only=False, limit=2)
    active = call("list_file_reservations", project_key="w-p0", cursor=page["next_cursor"])["file_reservations"]
    assert [r["agent"] for r in active] == [n for n in NAMES[2:] if n != "dustyowl"]


BAD_CURSORS = [
    "not a cursor!",  # outside the alphabet: the schema's pattern
    "s" + "a" * 3000,  # longer than any cursor
    "AAAA",  # no value's mark (s: text, i: integer)
    "sx",  # one value of two
    "sx,i1,i2",  # three
    "sx,i1.5",
    "sx,%41",  # an escape outside a text
    "sx,i",  # an integer without digits
]


def test_a_bad_cursor_or_limit_is_a_clear_422(server):
    with httpx.Client(base_url=server) as api:
        assert api.post("/api/ensure_project", json={"human_key": "/c/p"}).status_code == 200
        for cursor in BAD_CURSORS:
            response = api.post("/api/list_agents", json={"project_key": "c-p", "cursor": cursor})
            error = response.json()["error"]
            assert (response.status_code, error["code"]) == (422, "invalid_argument"), cursor
            assert "cursor" in (error["message"] + error.get("hint", "")).lower(), cursor
        for arguments in ({"limit": 0}, {"limit": 501}, {"limit": "many"}, {"_scope": []}):  # the scope is no argument
            response = api.post("/api/list_projects", json=arguments)
            assert (response.status_code, response.json()["error"]["code"]) == (422, "invalid_argument"), arguments
        # REST's GET takes them as query parameters too
        assert api.post("/api/ensure_project", json={"human_key": "/c/q"}).status_code == 200
        first = api.get("/api/list_projects", params={"limit": 1}).json()
        second = api.get("/api/list_projects", params={"limit": 1, "cursor": first["next_cursor"]}).json()
        assert [p["slug"] for p in first["projects"] + second["projects"]] == ["c-p", "c-q"]


def test_the_web_ui_links_to_the_next_page(tmp_path):
    """More agents or projects than a page shows: a link to the next page, which shows the rest."""
    with running_server(tmp_path / "agent_mail.db") as url, httpx.Client(base_url=url, timeout=30) as web:
        def post(tool, **arguments):
            response = web.post(f"/api/{tool}", json=arguments)
            assert response.status_code == 200, response.text
            return response.json()

        post("ensure_project", human_key="/ui/big")
        names = [f"Agent{n:04d}" for n in range(LIST_SHOWN + 3)]
        for name in names:
            post("register_agent", project_key="ui-big", program="p", model="m", name=name)
            post("acquire_build_slot", project_key="ui-big", agent_name=name, slot=f"build-{name}")
        for n in range(LIST_SHOWN):
            post("ensure_project", human_key=f"/ui/p{n:04d}")
        post("set_contact_policy", project_key="ui-big", agent_name="Agent0001", policy="open")
        for n in range(THREADS_SHOWN + 2):
            post("send_message", project_key="ui-big", sender_name="Agent0000", to=["Agent0001"], subject=f"Thread {n}",
                 body_md="x", thread_id=f"T-{n:03d}")

        page = web.get("/ui/project", params={"p": "ui-big"}).text
        shown = re.findall(r">(Agent\d{4})<", page.split("<h2>Build slots</h2>")[0])  # the holders link them too
        assert shown == names[:LIST_SHOWN] and f"<small>{len(names)}</small>" in page
        [more] = re.findall(r'href="([^"]*&amp;agents=[^"]*)"[^>]*>More agents', page)
        rest = web.get(more.replace("&amp;", "&")).text
        assert re.findall(r">(Agent\d{4})<", rest.split("<h2>Build slots</h2>")[0]) == names[LIST_SHOWN:]
        assert "More agents" not in rest
        assert re.findall(r"<code><bdi>build-(Agent\d{4})</bdi></code>", page) == names[:LIST_SHOWN]
        [more] = re.findall(r'href="([^"]*&amp;slots=[^"]*)"[^>]*>More build slots', page)
        rest = web.get(more.replace("&amp;", "&")).text
        assert re.findall(r"<code><bdi>build-(Agent\d{4})</bdi></code>", rest) == names[LIST_SHOWN:] and "More build slots" not in rest

        [older] = re.findall(r'href="([^"]*&amp;threads=[^"]*)"[^>]*>Older threads', page)
        assert re.findall(r">(T-\d{3})</a>", page) == [f"T-{n:03d}" for n in range(THREADS_SHOWN + 1, 1, -1)]
        assert re.findall(r">(T-\d{3})</a>", web.get(older.replace("&amp;", "&")).text) == ["T-001", "T-000"]

        def subjects(html):
            return [int(n) for n in re.findall(r">Thread (\d+)</bdi>", html)]

        received = web.get("/ui/agent", params={"p": "ui-big", "a": "Agent0001"}).text
        [older] = re.findall(r'href="([^"]*&amp;inbox=[^"]*)"[^>]*>Older received', received)
        assert subjects(received) + subjects(web.get(older.replace("&amp;", "&")).text) == list(range(THREADS_SHOWN + 1, -1, -1))
        sent = web.get("/ui/agent", params={"p": "ui-big", "a": "Agent0000"}).text
        [older] = re.findall(r'href="([^"]*&amp;outbox=[^"]*)"[^>]*>Older sent', sent)
        assert subjects(sent) == list(range(THREADS_SHOWN + 1, THREADS_SHOWN - 19, -1))
        assert subjects(web.get(older.replace("&amp;", "&")).text) == list(range(THREADS_SHOWN - 19, THREADS_SHOWN - 39, -1))

        projects = web.get("/ui/projects").text
        [more] = re.findall(r'href="([^"]*\?after=[^"]*)"[^>]*>More projects', projects)
        rest = web.get(more).text
        assert len(re.findall(r'href="/ui/project\?p=', projects)) == LIST_SHOWN
        assert re.findall(r'href="/ui/project\?p=([^"]+)"', rest) == ["ui-p0199"] and "More projects" not in rest

        # Compose offered a <select> of the oldest 200 projects only, saying nothing of the newer.
        compose = web.get("/ui/compose").text
        offered = re.findall(r'<option value="([^"]+)">', compose)
        assert len(offered) == LIST_SHOWN and "ui-p0199" not in offered and 'list="projects"' in compose
        [more] = re.findall(r'href="([^"]*\?after=[^"]*)"[^>]*>More projects', compose)
        assert re.findall(r'<option value="([^"]+)">', web.get(more).text) == ["ui-p0199"]
        typed = web.get("/ui/compose", params={"p": "/ui/p0199"})  # or typed, as its key or path
        assert typed.status_code == 200 and 'name="body_md"' in typed.text


def tool_calls(web: httpx.Client) -> dict[str, float]:
    """How many calls of each tool the server has counted (GET /metrics), whatever their outcome."""
    counted: dict[str, float] = {}
    for family in text_string_to_metric_families(web.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "agent_mail_tool_calls_total":
                counted[sample.labels["tool"]] = counted.get(sample.labels["tool"], 0) + sample.value
    return counted


def test_a_reply_in_the_web_ui_goes_to_the_threads_active_agents(tmp_path):
    """The thread page's reply form names the thread's agents without reading the project's whole
    list of agents: not the person, not a retired agent; another project's as Name@slug. QA,
    session 37: it asked whois about each participant, a tool call apiece (on every live refresh
    too); now one list_agents of their names per project they are in."""
    with running_server(tmp_path / "agent_mail.db") as url, httpx.Client(base_url=url, timeout=30) as web:
        def post(tool, **arguments):
            response = web.post(f"/api/{tool}", json=arguments)
            assert response.status_code == 200, response.text
            return response.json()

        for key in ("/r/a", "/r/b"):
            post("ensure_project", human_key=key)
        crew = [f"Crew{n:02d}" for n in range(12)]
        for project, name in (("r-a", "BlueLake"), ("r-a", "GreenCastle"), ("r-a", "RedStone"), ("r-b", "PinkDog"),
                              *(("r-a", name) for name in crew)):
            post("register_agent", project_key=project, program="p", model="m", name=name)
            post("set_contact_policy", project_key=project, agent_name=name, policy="open")
        post("send_message", project_key="r-a", sender_name="BlueLake", to=["GreenCastle", "PinkDog@r-b"], cc=["RedStone"],
             subject="Plan", body_md="x", thread_id="T-1")
        post("send_overseer_message", project_key="r-a", to=["BlueLake"], subject="Re: Plan", body_md="ok", thread_id="T-1")
        post("send_message", project_key="r-a", sender_name="GreenCastle", to=["BlueLake"], cc=crew, subject="Re: Plan",
             body_md="all hands", thread_id="T-1")
        post("retire_agent", project_key="r-a", agent_name="RedStone")
        before = tool_calls(web)
        page = web.get("/ui/thread", params={"p": "r-a", "t": "T-1"}).text
        calls = tool_calls(web)
        [to] = re.findall(r'<input name="to" required value="([^"]*)"', page)
        assert to == ", ".join(["BlueLake", "GreenCastle", "PinkDog@r-b", *crew])
        # 17 participants in two projects: no whois, a list_agents for each project
        assert calls.get("whois", 0) == before.get("whois", 0)
        assert calls.get("list_agents", 0) - before.get("list_agents", 0) == 2


def test_the_web_ui_search_filters_in_the_tool_across_every_project_it_lists(tmp_path):
    """Sender, importance and date go to search_messages (not a filter of its first 100 hits),
    a sender missing from a project skips that project, and past the projects searched the page
    says so."""
    with running_server(tmp_path / "agent_mail.db") as url, httpx.Client(base_url=url, timeout=30) as web:
        def post(tool, **arguments):
            response = web.post(f"/api/{tool}", json=arguments)
            assert response.status_code == 200, response.text
            return response.json()

        for key, names in (("/s/a", ["BlueLake", "GreenCastle"]), ("/s/b", ["BlueLake"])):
            post("ensure_project", human_key=key)
            for name in names:
                post("register_agent", project_key=key, program="p", model="m", name=name)
                post("set_contact_policy", project_key=key, agent_name=name, policy="open")
        post("send_message", project_key="s-a", sender_name="GreenCastle", to=["BlueLake"], subject="Old deploy note",
             body_md="deploy", importance="high")
        for n in range(120):  # newer and better matches: GreenCastle's is not among the first 100 hits
            post("send_message", project_key="s-a", sender_name="BlueLake", to=["GreenCastle"], subject=f"deploy {n}",
                 body_md="deploy deploy")
        post("send_message", project_key="s-b", sender_name="BlueLake", to=["BlueLake"], subject="deploy b", body_md="deploy")

        def found(**params):
            page = web.get("/ui/search", params={"q": "deploy", **params}).text
            assert 'class="error"' not in page, page[-2000:]
            return re.findall(r'<span class="subj">(?:<span class="tag \w+">\w+</span>)?<bdi>([^<]*)</bdi>', page), page

        assert found(sender="GreenCastle")[0] == ["Old deploy note"]  # in s-a; s-b has no GreenCastle
        assert found(importance="high")[0] == ["Old deploy note"]
        assert found(p="s-b")[0] == ["deploy b"]
        assert found(since="2999-01-01")[0] == []
        assert "oldest projects" not in found()[1]
        for project, n in (("s-a", 0), ("s-a", 1), ("s-b", 2), ("s-b", 3)):  # equal scores: newest first, as the tool lists ties
            post("send_message", project_key=project, sender_name="BlueLake", to=["BlueLake"], subject=f"zebra {n}", body_md="zebra")
        assert found(q="zebra")[0] == ["zebra 3", "zebra 2", "zebra 1", "zebra 0"]  # were listed project by project
        for n in range(LIST_SHOWN):
            post("ensure_project", human_key=f"/s/p{n:04d}")
        assert f"in the {LIST_SHOWN} oldest projects" in found()[1]


@given(key=st.lists(st.one_of(st.text(max_size=40), st.integers(-(2**63), 2**63 - 1)), min_size=1, max_size=2))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_a_cursor_reads_back_as_the_key_it_was_made_of(key):
    """Any text (punctuation, commas, %, non-ASCII, lone surrogates aside: SQLite stores none) and
    any integer SQLite holds: the cursor a page gives matches the schema's pattern and reads back."""
    from chalicelib.tools import paging

    columns = tuple((f"c{number}", f"c{number}") for number in range(len(key)))
    keyset = paging.Keyset(columns)
    rows = [dict(zip((name for name, _ in columns), key)), {}]
    _, cursor = keyset.page(rows, 1)
    assert re.fullmatch(paging._cursor_pattern(len(key)), cursor)
    assert paging._decode(cursor, len(key)) == key
