"""Products: groups of projects, with an inbox, search and thread summaries across them."""

import asyncio
import json
import tracemalloc

import httpx
import pytest
from mcp import Client

from chalicelib.errors import Conflict, InvalidArgument, NotFound, TokenRefused

from .servers import tool_caller

pytestmark = pytest.mark.both_backends


@pytest.fixture
def shop(call):
    """Product `shop` = projects backend + frontend; `other` stays outside.
    BlueLake works in both linked projects; GreenCastle in backend, RedStone in frontend."""
    for path, agents in (("/work/backend", ["BlueLake", "GreenCastle"]), ("/work/frontend", ["BlueLake", "RedStone"]),
                         ("/work/other", ["BlueLake"])):
        slug = call("ensure_project", human_key=path)["slug"]
        for name in agents:
            call("register_agent", project_key=slug, program="claude-code", model="opus", name=name)
            call("set_contact_policy", project_key=slug, agent_name=name, policy="open")  # mail from anyone
    call("ensure_product", product_key="shop", name="The Shop")
    call("products_link", product_key="shop", project_key="work-backend")
    call("products_link", product_key="shop", project_key="/work/frontend")
    return "shop"


def send(call, project, sender, to, subject, body="", **options):
    return call("send_message", project_key=project, sender_name=sender, to=to, subject=subject, body_md=body,
                **options)["message"]


def test_ensure_product_is_idempotent_and_keys_are_case_insensitive(call):
    first = call("ensure_product", product_key="Acme-Shop")
    assert (first["product_key"], first["name"], first["projects"]) == ("acme-shop", "acme-shop", [])
    assert call("ensure_product", product_key="acme-shop") == first
    renamed = call("ensure_product", product_key="ACME-SHOP", name="Acme Shop")
    assert renamed == first | {"name": "Acme Shop"}
    assert call("ensure_product", product_key="acme-shop")["name"] == "Acme Shop"  # no name: kept
    assert [p["product_key"] for p in call("list_products")["products"]] == ["acme-shop"]
    for name in ("a\x00b", "   "):  # stored, and the web UI served the NUL
        with pytest.raises(InvalidArgument):
            call("ensure_product", product_key="acme-shop", name=name)


@pytest.mark.parametrize("key", ["", "has space", "-leading", "a/b", "x" * 65])
def test_product_keys_are_short_slugs(call, key):
    with pytest.raises(InvalidArgument, match="product_key") as info:
        call("ensure_product", product_key=key)
    assert "e.g. acme-shop" in info.value.message


def test_linking_is_idempotent_and_lists_the_projects(call, shop):
    again = call("products_link", product_key="SHOP", project_key="work-frontend")
    assert [p["slug"] for p in again["projects"]] == ["work-backend", "work-frontend"]
    assert again["projects"][0]["human_key"] == "/work/backend"
    call("ensure_product", product_key="tools")
    call("products_link", product_key="tools", project_key="work-backend")  # a project in two products
    listed = {p["product_key"]: [project["slug"] for project in p["projects"]] for p in call("list_products")["products"]}
    assert listed == {"shop": ["work-backend", "work-frontend"], "tools": ["work-backend"]}
    assert call("get_product", product_key="shop") == again


def test_a_product_links_at_most_max_linked_projects(call, shop, monkeypatch):
    """Every link was taken: get_product lists them all, and the product's inbox and summaries
    read each (1,000 projects: a 5 ms answer, its inbox 22 ms)."""
    from chalicelib.tools import products

    monkeypatch.setattr(products, "MAX_LINKED", 3)
    for n in range(2):
        call("ensure_project", human_key=f"/work/more-{n}")
    call("products_link", product_key="shop", project_key="work-more-0")
    with pytest.raises(Conflict, match="links 3 projects, the most") as refused:
        call("products_link", product_key="shop", project_key="work-more-1")
    assert "products_unlink" in refused.value.hint
    assert len(call("products_link", product_key="shop", project_key="work-backend")["projects"]) == 3  # linked already
    call("products_unlink", product_key="shop", project_key="work-other")  # not linked: no room made
    with pytest.raises(Conflict):
        call("products_link", product_key="shop", project_key="work-more-1")
    call("products_unlink", product_key="shop", project_key="work-frontend")
    assert [p["slug"] for p in call("products_link", product_key="shop", project_key="work-more-1")["projects"]] == [
        "work-backend", "work-more-0", "work-more-1"]


def test_unlinking_takes_a_project_out_of_the_product_tools(call, shop):
    send(call, "work-frontend", "RedStone", ["BlueLake"], "From the frontend")
    assert [m["subject"] for m in call("fetch_inbox_product", product_key="shop", agent_name="BlueLake")["messages"]] == [
        "From the frontend"]
    unlinked = call("products_unlink", product_key="shop", project_key="/work/frontend")
    assert [p["slug"] for p in unlinked["projects"]] == ["work-backend"]
    assert call("products_unlink", product_key="shop", project_key="work-frontend") == unlinked  # idempotent
    assert call("fetch_inbox_product", product_key="shop", agent_name="BlueLake")["messages"] == []
    assert call("fetch_inbox", project_key="work-frontend", agent_name="BlueLake")["messages"][0]["subject"] == "From the frontend"
    with pytest.raises(NotFound, match="Product 'nope' not found"):
        call("products_unlink", product_key="nope", project_key="work-backend")


def test_linking_needs_an_existing_product_and_project(call, shop):
    with pytest.raises(NotFound, match="Product 'nope' not found") as info:
        call("products_link", product_key="nope", project_key="work-backend")
    assert "ensure_product" in info.value.hint
    with pytest.raises(NotFound, match="Project 'nope' not found"):
        call("products_link", product_key="shop", project_key="nope")
    with pytest.raises(NotFound):
        call("get_product", product_key="nope")


def test_product_inbox_spans_the_linked_projects_newest_first(call, shop):
    a = send(call, "work-backend", "GreenCastle", ["BlueLake"], "API ready", "body a")
    b = send(call, "work-frontend", "RedStone", ["BlueLake"], "UI broken", "body b", importance="urgent")
    send(call, "work-other", "BlueLake", ["BlueLake"], "not in the product")
    send(call, "work-backend", "BlueLake", ["GreenCastle"], "sent, not received")
    c = send(call, "work-backend", "GreenCastle", ["BlueLake"], "Schema", "body c")

    inbox = call("fetch_inbox_product", product_key="shop", agent_name="bluelake")["messages"]
    assert [(m["id"], m["project"]) for m in inbox] == [(c["id"], "work-backend"), (b["id"], "work-frontend"),
                                                        (a["id"], "work-backend")]
    assert inbox[0]["body_md"] is None and inbox[0]["sender"] == "GreenCastle"
    # Each message is the project inbox's own row, plus its project.
    [own] = call("fetch_inbox", project_key="work-frontend", agent_name="BlueLake")["messages"]
    assert inbox[1] == own | {"project": "work-frontend"}

    def ids(**options):
        return [m["id"] for m in call("fetch_inbox_product", product_key="shop", agent_name="BlueLake", **options)["messages"]]

    assert ids(limit=2) == [c["id"], b["id"]]
    first = call("fetch_inbox_product", product_key="shop", agent_name="BlueLake", limit=2)
    assert first["next_cursor"] == b["id"]  # pages on across projects: the reviewer's agent could not reach older mail
    assert ids(limit=2, cursor=first["next_cursor"]) == [a["id"]]
    assert call("fetch_inbox_product", product_key="shop", agent_name="BlueLake", cursor=a["id"])["next_cursor"] is None
    call("mark_message_read", project_key="work-frontend", agent_name="BlueLake", message_id=b["id"])
    assert ids(unread_only=True) == [c["id"], a["id"]]
    assert ids(urgent_only=True) == [b["id"]]
    assert ids(since_ts=b["created_ts"]) == [c["id"]]
    bodies = call("fetch_inbox_product", product_key="shop", agent_name="BlueLake", include_bodies=True)["messages"]
    assert [m["body_md"] for m in bodies] == ["body c", "body b", "body a"]


def test_product_inbox_of_an_agent_in_one_project_only(call, shop):
    send(call, "work-frontend", "BlueLake", ["RedStone"], "hello")
    [message] = call("fetch_inbox_product", product_key="shop", agent_name="RedStone")["messages"]
    assert message["project"] == "work-frontend"


def test_product_inbox_of_an_unknown_agent(call, shop):
    with pytest.raises(NotFound, match=r"No agent named Ghost in the projects of product 'shop' \(linked: "
                                       r"'work-backend', 'work-frontend'\)") as info:
        call("fetch_inbox_product", product_key="shop", agent_name="Ghost")
    assert "products_link" in info.value.hint
    call("ensure_product", product_key="empty")
    with pytest.raises(NotFound, match=r"\(linked: none\)"):
        call("fetch_inbox_product", product_key="empty", agent_name="BlueLake")


def test_a_product_tool_refuses_a_token_that_is_none_of_the_agents_own(call, shop):
    """Tokens not required (AUTH_MODE=none): a stale token read nothing (an empty inbox, no hits,
    "thread not found"), saying nothing, while the project tools ignore it (QA, session 32)."""
    send(call, "work-backend", "GreenCastle", ["BlueLake"], "deploy plan", thread_id="T")
    stale = dict(product_key="shop", agent_name="BlueLake", registration_token="amt_rotated-long-ago")
    for tool, options in (("fetch_inbox_product", {}), ("search_messages_product", {"query": "deploy"}),
                          ("summarize_thread_product", {"thread_id": "T"})):
        with pytest.raises(TokenRefused, match="registration_token is missing or wrong") as refused:
            call(tool, **stale, **options)
        assert refused.value.status == 403 and "rotate_agent_token" in refused.value.hint
    # The token of one of its identities reads that identity's mail.
    token = call("rotate_agent_token", project_key="work-backend", agent_name="BlueLake")["registration_token"]
    inbox = call("fetch_inbox_product", **stale | {"registration_token": token})["messages"]
    assert [(m["subject"], m["project"]) for m in inbox] == [("deploy plan", "work-backend")]


def test_product_search_spans_the_linked_projects(call, shop):
    send(call, "work-backend", "GreenCastle", ["BlueLake"], "Database migration", "WAL mode for the database")
    send(call, "work-frontend", "RedStone", ["BlueLake"], "Lunch", "the database team buys pizza")
    send(call, "work-other", "BlueLake", ["BlueLake"], "database database", "database")

    hits = call("search_messages_product", product_key="shop", query="database")["results"]
    assert [(h["subject"], h["project"]) for h in hits] == [("Database migration", "work-backend"),
                                                            ("Lunch", "work-frontend")]
    assert hits[0]["score"] <= hits[1]["score"] and "**database**" in hits[1]["snippet"]
    [own] = call("search_messages", project_key="work-frontend", query="database")["results"]
    assert hits[1] == own | {"project": "work-frontend"}
    assert [h["subject"] for h in call("search_messages_product", product_key="shop", query="database",
                                       limit=1)["results"]] == ["Database migration"]
    assert call("search_messages_product", product_key="shop", query="pizza NOT lunch")["results"] == []


def test_a_product_search_as_an_agent_finds_what_an_unlinked_project_sent_it(call, shop):
    """QA, session 28: search_messages with agent_name finds the agent's mail from any project,
    fetch_inbox_product lists it, but the product search kept to the linked projects' mail."""
    sent = send(call, "work-other", "BlueLake", ["RedStone@work-frontend"], "ocarina", "from outside the product")
    [hit] = call("search_messages_product", product_key="shop", query="ocarina", agent_name="RedStone")["results"]
    assert (hit["id"], hit["project"]) == (sent["id"], "work-other")
    assert [m["id"] for m in call("fetch_inbox_product", product_key="shop", agent_name="RedStone")["messages"]] == [sent["id"]]
    assert call("search_messages_product", product_key="shop", query="ocarina")["results"] == []  # the product's mail: none
    call("ensure_product", product_key="empty")  # no project: nothing found, and the query not even read
    assert call("search_messages_product", product_key="empty", query="de*")["results"] == []


@pytest.mark.parametrize("limit, reader", [(3, None), (4, "BlueLake"), (20, None)])
def test_product_search_pages_reach_every_hit_once(call, shop, limit, reader):
    """next_cursor goes on in every linked project at once: the reviewer's agent could not get
    past the first page. Pages of 3 and 4 stop inside a window, then go on after it."""
    sent = []
    for n in range(7):
        sent.append(send(call, "work-backend", "GreenCastle", ["BlueLake"], f"deploy {n}", "deploy " * (n + 1))["id"])
        sent.append(send(call, "work-frontend", "RedStone", ["BlueLake"], f"deploy front {n}", "deploy")["id"])
    send(call, "work-other", "BlueLake", ["BlueLake"], "deploy elsewhere", "deploy")  # not in the product
    seen, cursor, pages = [], None, 0
    while True:
        page = call("search_messages_product", product_key="shop", query="deploy", limit=limit, cursor=cursor,
                    **({"agent_name": reader} if reader else {}))
        assert len(page["results"]) <= limit
        seen += [hit["id"] for hit in page["results"]]
        pages, cursor = pages + 1, page["next_cursor"]
        if cursor is None:
            break
        assert pages < 20
    assert sorted(seen) == sorted(sent) and len(seen) == len(set(seen))  # each once, nothing from other
    with pytest.raises(InvalidArgument, match="is not one this tool gave"):
        call("search_messages_product", product_key="shop", query="deploy", cursor="work-backend=x")
    with pytest.raises(InvalidArgument, match="is not one this tool gave"):  # fullwidth digits: \d took them
        call("search_messages_product", product_key="shop", query="deploy", cursor="\uff11.\uff10")


def test_product_search_pages_through_many_projects_with_long_names(call):
    """Its cursor held a place in each linked project ("slug=id.n;..."), at most 8,000 characters:
    past ~43 projects of these names (~300 of short ones) the next page was refused. One search of
    them all has one place. (On Turso, the 32nd project's counts met an engine bug: counts.py.)"""
    call("ensure_product", product_key="many")
    sent = []
    for n in range(60):
        slug = call("ensure_project", human_key=f"/work/{'a-rather-long-repository-name-' * 6}{n}")["slug"]
        call("register_agent", project_key=slug, program="p", model="m", name="BlueLake")
        call("products_link", product_key="many", project_key=slug)
        sent.append(send(call, slug, "BlueLake", ["BlueLake"], f"deploy {n}", "deploy")["id"])
    seen, cursor = [], None
    for _ in range(20):
        page = call("search_messages_product", product_key="many", query="deploy", limit=7, cursor=cursor)
        seen += [hit["id"] for hit in page["results"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert sorted(seen) == sorted(sent) and len(seen) == len(set(seen))


@pytest.mark.parametrize("query", ["CART-12", '"unclosed CART', "CART AND", "(CART OR", "subject:cart-12", "CART NOT pizza"])
def test_product_search_reads_queries_like_search_messages(call, shop, query):
    send(call, "work-backend", "GreenCastle", ["BlueLake"], "CART-12 checkout", "unclosed carts and totals or more")
    product = call("search_messages_product", product_key="shop", query=query)["results"]
    project = call("search_messages", project_key="work-backend", query=query)["results"]
    assert [hit["subject"] for hit in product] == [hit["subject"] for hit in project] == ["CART-12 checkout"]


def test_product_thread_summary_merges_the_thread_from_every_linked_project(call, shop):
    send(call, "work-backend", "GreenCastle", ["BlueLake"], "Checkout", "- API: POST /orders\nTODO: rate limits",
         thread_id="FEAT-1", ack_required=True)
    send(call, "work-frontend", "RedStone", ["BlueLake"], "Checkout UI", "We decided on one page.\n- [ ] wire the API",
         thread_id="FEAT-1")
    send(call, "work-other", "BlueLake", ["BlueLake"], "unrelated", "- not in the product", thread_id="FEAT-1")

    summary = call("summarize_thread_product", product_key="shop", thread_id="FEAT-1")
    assert summary["projects"] == ["work-backend", "work-frontend"]
    assert (summary["subject"], summary["message_count"]) == ("Checkout", 2)
    assert summary["participants"] == ["GreenCastle", "BlueLake", "RedStone"]
    assert summary["key_points"] == ["GreenCastle: API: POST /orders", "RedStone: We decided on one page."]
    assert summary["action_items"] == ["GreenCastle: rate limits", "RedStone: wire the API"]
    assert [ack["agent"] for ack in summary["open_acks"]] == ["BlueLake"]

    # Within one project it is exactly summarize_thread.
    send(call, "work-backend", "GreenCastle", ["BlueLake"], "Solo", "- one point", thread_id="SOLO")
    solo = call("summarize_thread_product", product_key="shop", thread_id="SOLO")
    assert solo == call("summarize_thread", project_key="work-backend", thread_id="SOLO") | {"projects": ["work-backend"]}


def test_a_product_summary_digests_the_newest_messages_of_all_its_projects(call, shop, monkeypatch):
    from chalicelib.tools import products, threads

    monkeypatch.setattr(threads, "DIGESTED", 2)
    monkeypatch.setattr(products, "DIGESTED", 2)
    send(call, "work-backend", "GreenCastle", ["BlueLake"], "Plan", "- first", thread_id="P", ack_required=True)
    send(call, "work-frontend", "RedStone", ["BlueLake"], "Plan", "- second", thread_id="P")
    send(call, "work-backend", "GreenCastle", ["BlueLake"], "Plan", "- third", thread_id="P")
    fourth = send(call, "work-frontend", "RedStone", ["BlueLake"], "Plan", "- fourth", thread_id="P", ack_required=True)
    summary = call("summarize_thread_product", product_key="shop", thread_id="P")
    assert (summary["message_count"], summary["participants"]) == (4, ["GreenCastle", "BlueLake", "RedStone"])
    assert summary["key_points"] == ["GreenCastle: third", "RedStone: fourth"]
    assert summary["open_acks"] == [{"message_id": fourth["id"], "agent": "BlueLake", "subject": "Plan", "sender": "RedStone",
                                     "created_ts": fourth["created_ts"]}]  # the first's is past the newest 2


def test_a_message_to_two_identities_of_the_agent_counts_once_in_its_product_summary(call, shop):
    """As BlueLake (in both linked projects), a message to both its identities is in both of
    their thread views: the product summary counts it once, names BlueLake once (one agent in
    a product), and its inbox lists it once, under the project it was sent in."""
    both = send(call, "work-backend", "GreenCastle", ["BlueLake", "BlueLake@work-frontend"], "Both of you", thread_id="DUO")
    send(call, "work-backend", "GreenCastle", ["BlueLake"], "Only backend", thread_id="DUO")
    summary = call("summarize_thread_product", product_key="shop", thread_id="DUO", agent_name="BlueLake")
    assert (summary["message_count"], summary["participants"]) == (2, ["GreenCastle", "BlueLake"])
    inbox = call("fetch_inbox_product", product_key="shop", agent_name="BlueLake")["messages"]
    assert [(m["id"], m["project"]) for m in inbox if m["id"] == both["id"]] == [(both["id"], "work-backend")]
    assert summary["message_count"] == call("summarize_thread", project_key="work-backend", thread_id="DUO")["message_count"]


def test_open_acks_name_another_projects_recipient_with_its_project_but_in_its_product(call, shop):
    """They named every recipient bare: RedStone of the frontend read as if of the backend."""
    asked = send(call, "work-backend", "GreenCastle", ["RedStone@work-frontend", "BlueLake@work-other"], "API ready?",
                 thread_id="ASK", ack_required=True)
    summary = call("summarize_thread", project_key="work-backend", thread_id="ASK")
    assert [ack["agent"] for ack in summary["open_acks"]] == ["BlueLake@work-other", "RedStone@work-frontend"]
    assert asked["to"] == ["BlueLake@work-other", "RedStone@work-frontend"]  # as the message says
    # In the product one agent of a linked project is one by its name (as in participants).
    product = call("summarize_thread_product", product_key="shop", thread_id="ASK")
    assert [ack["agent"] for ack in product["open_acks"]] == ["BlueLake@work-other", "RedStone"]
    # Asked of its two identities, one agent of the product owes one ack (it was listed twice).
    both = send(call, "work-backend", "GreenCastle", ["BlueLake", "BlueLake@work-frontend"], "Both?", thread_id="TWO",
                ack_required=True)
    product = call("summarize_thread_product", product_key="shop", thread_id="TWO")
    assert [(ack["message_id"], ack["agent"]) for ack in product["open_acks"]] == [(both["id"], "BlueLake")]


def test_one_agent_cased_two_ways_in_two_linked_projects_is_one_participant_owing_one_ack(call, shop):
    """Names are case-insensitive, and fetch_inbox_product read BlueLake and Bluelake as one agent,
    but its summary listed them as two participants owing two acks of one message (QA, session 32)."""
    call("ensure_project", human_key="/work/mobile")
    call("register_agent", project_key="work-mobile", program="p", model="m", name="Bluelake")
    call("set_contact_policy", project_key="work-mobile", agent_name="Bluelake", policy="open")
    call("products_link", product_key="shop", project_key="work-mobile")
    asked = send(call, "work-backend", "GreenCastle", ["BlueLake", "Bluelake@work-mobile"], "Both?", thread_id="CASE",
                 ack_required=True)
    summary = call("summarize_thread_product", product_key="shop", thread_id="CASE")
    assert summary["participants"] == ["GreenCastle", "BlueLake"]  # as it first appears
    assert [(ack["message_id"], ack["agent"]) for ack in summary["open_acks"]] == [(asked["id"], "BlueLake")]
    inbox = call("fetch_inbox_product", product_key="shop", agent_name="bluelake")["messages"]
    assert [m["id"] for m in inbox] == [asked["id"]]


def test_product_thread_summary_of_an_unknown_thread(call, shop):
    send(call, "work-other", "BlueLake", ["BlueLake"], "outside", thread_id="OUT")
    with pytest.raises(NotFound, match="Thread 'OUT' not found in any project of product 'shop'"):
        call("summarize_thread_product", product_key="shop", thread_id="OUT")


# End to end: the real server, over REST and through the official MCP client.


def test_products_over_rest(server):
    with httpx.Client(base_url=server) as api:
        for path in ("/rest/api", "/rest/web"):
            slug = api.post("/api/ensure_project", json={"human_key": path}).json()["slug"]
            for name in ("BlueLake", "GreenCastle"):
                api.post("/api/register_agent", json={"project_key": slug, "program": "p", "model": "m", "name": name})
                api.post("/api/set_contact_policy", json={"project_key": slug, "agent_name": name, "policy": "open"})
            api.post("/api/send_message", json={"project_key": slug, "sender_name": "GreenCastle", "to": ["BlueLake"],
                                                 "subject": f"from {slug}", "body_md": "x"})
        assert api.post("/api/ensure_product", json={"product_key": "rest-shop"}).status_code == 200
        for slug in ("rest-api", "rest-web"):
            linked = api.post("/api/products_link", json={"product_key": "rest-shop", "project_key": slug})
        assert [p["slug"] for p in linked.json()["projects"]] == ["rest-api", "rest-web"]

        inbox = api.get("/api/fetch_inbox_product", params={"product_key": "rest-shop", "agent_name": "BlueLake"})
        assert [(m["subject"], m["project"]) for m in inbox.json()["messages"]] == [("from rest-web", "rest-web"),
                                                                                   ("from rest-api", "rest-api")]
        assert isinstance(inbox.json()["messages"][0]["id"], str)
        assert api.get("/api/list_products").json()["products"][0]["product_key"] == "rest-shop"
        missing = api.post("/api/products_link", json={"product_key": "nope", "project_key": "rest-api"})
        assert missing.status_code == 404 and "ensure_product" in missing.json()["error"]["hint"]
        typed = api.get("/api/search_messages_product", params={"product_key": "rest-shop", "query": '"open rest-api'})
        assert typed.status_code == 200 and typed.json()["results"] == []


def test_products_through_the_official_mcp_client(server):
    async def session():
        async with Client(f"{server}/mcp", mode="legacy") as client:
            call = tool_caller(client)

            for path in ("/mcp/api", "/mcp/web"):
                slug = (await call("ensure_project", human_key=path))["slug"]
                for name in ("BlueLake", "RedStone"):
                    await call("register_agent", project_key=slug, program="p", model="m", name=name)
                    await call("set_contact_policy", project_key=slug, agent_name=name, policy="open")
                await call("send_message", project_key=slug, sender_name="RedStone", to=["BlueLake"],
                           subject=f"Deploy {slug}", body_md="- ship it", thread_id="DEPLOY")
            await call("ensure_product", product_key="mcp-shop", name="MCP shop")
            await call("products_link", product_key="mcp-shop", project_key="/mcp/api")
            await call("products_link", product_key="mcp-shop", project_key="/mcp/web")

            hits = await call("search_messages_product", product_key="mcp-shop", query="deploy")
            assert {h["project"] for h in hits["results"]} == {"mcp-api", "mcp-web"}
            summary = await call("summarize_thread_product", product_key="mcp-shop", thread_id="DEPLOY")
            assert summary["message_count"] == 2 and summary["projects"] == ["mcp-api", "mcp-web"]
            inbox = await call("fetch_inbox_product", product_key="mcp-shop", agent_name="BlueLake", limit=1)
            assert [m["project"] for m in inbox["messages"]] == ["mcp-web"]

            error = await client.call_tool("summarize_thread_product", {"product_key": "mcp-shop", "thread_id": "nope"})
            assert error.is_error and json.loads(error.content[0].text)["error"]["code"] == "not_found"

    asyncio.run(session())


def peak(work) -> int:
    """The peak of Python's allocations while `work` runs (above what was held before)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def linked_projects_mailing(call, product: str, count: int, body: str, messages: int, **options) -> None:
    """`count` projects linked to `product`, each with `messages` from RedStone to BlueLake."""
    call("ensure_product", product_key=product)
    for n in range(count):
        slug = call("ensure_project", human_key=f"/work/{product}-{n}")["slug"]
        call("products_link", product_key=product, project_key=slug)
        for name in ("BlueLake", "RedStone"):
            call("register_agent", project_key=slug, program="p", model="m", name=name)
        call("set_contact_policy", project_key=slug, agent_name="BlueLake", policy="open")
        for _ in range(messages):
            send(call, slug, "RedStone", ["BlueLake"], "s", body, **options)


@pytest.mark.sqlite_only
def test_a_product_inbox_with_bodies_holds_one_page_of_them_however_many_projects_it_links(call):
    """Each linked project's page of bodies (up to PAGE_BODY_BYTES) was read before the merged page
    was cut to one: ~4 MiB a linked project, ~390 MiB for 100, for an answer of at most 4 MiB."""
    body = "x" * 200_000
    for product, count in (("two", 2), ("ten", 10)):
        linked_projects_mailing(call, product, count, body, messages=3)

    def inbox(product: str) -> None:
        messages = call("fetch_inbox_product", product_key=product, agent_name="BlueLake", include_bodies=True, limit=3)["messages"]
        assert [m["body_md"] for m in messages] == [body] * 3

    growth = peak(lambda: inbox("ten")) - peak(lambda: inbox("two"))
    assert growth < len(body)  # the 8 projects more add headers (~12 KB), not bodies (they added 4.8 MB)


@pytest.mark.sqlite_only
def test_a_product_summary_holds_two_projects_digests_however_many_it_links(call, monkeypatch):
    """Every linked project's digest (its newest DIGESTED messages, 4 KiB of each) was kept until
    the newest of them all were taken."""
    from chalicelib.tools import products, threads

    monkeypatch.setattr(threads, "DIGESTED", 20)
    monkeypatch.setattr(products, "DIGESTED", 20)
    for product, count in (("two", 2), ("ten", 10)):
        linked_projects_mailing(call, product, count, "- point\n" + "x" * 4096, messages=20, thread_id="T")

    def summary(product: str) -> None:
        assert call("summarize_thread_product", product_key=product, thread_id="T")["message_count"] == 20 * (2 if product == "two" else 10)

    growth = peak(lambda: summary("ten")) - peak(lambda: summary("two"))
    assert growth < 20 * 4096  # less than one project's digest (~20 KB; the 8 more digests added 0.95 MB)
