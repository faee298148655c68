"""Views of what needs attention: as tools (both backends) and as MCP resources (official client)."""

import asyncio
import json
import threading

import httpx
import orjson
import pytest
from mcp import Client

from chalicelib import invoke
from chalicelib.tools import messages, overseer, thread_summaries, tools_by_name

from .sql import sql

pytestmark = pytest.mark.both_backends


def send(call, project, sender, to, subject, **options):
    return call("send_message", project_key=project, agent_name=sender, to=to, subject=subject, body_md="b", **options)["message"]


def subjects(view):
    return [(m["recipient"], m["subject"]) for m in view["messages"]]


def test_ack_required_overdue_and_urgent_unread(call, project, settings):
    old = send(call, project, "BlueLake", ["GreenCastle", "RedStone"], "old", ack_required=True)
    send(call, project, "BlueLake", ["GreenCastle"], "fresh", ack_required=True)
    urgent = send(call, project, "RedStone", ["GreenCastle"], "fire", importance="urgent")
    send(call, project, "RedStone", ["GreenCastle"], "calm", importance="low")
    call("acknowledge_message", project_key=project, agent_name="RedStone", message_id=old["id"])
    with sql(settings) as conn:  # "old" was sent two hours ago
        conn.execute("UPDATE messages SET created_ts = '2020-01-01T00:00:00+00:00' WHERE id = ?", (int(old["id"]),))

    def view(tool, **options):
        return subjects(call(tool, project_key=project, **options))

    assert view("list_ack_required", agent_name="GreenCastle") == [("GreenCastle", "old"), ("GreenCastle", "fresh")]
    assert view("list_ack_required") == [("GreenCastle", "old"), ("GreenCastle", "fresh")]  # RedStone acknowledged
    assert view("list_ack_overdue", older_than_minutes=60) == [("GreenCastle", "old")]
    assert view("list_ack_overdue", agent_name="RedStone") == []
    assert view("list_urgent_unread") == [("GreenCastle", "fire")]
    call("mark_message_read", project_key=project, agent_name="GreenCastle", message_id=urgent["id"])
    assert view("list_urgent_unread", agent_name="GreenCastle") == []
    assert view("list_ack_required", limit=1) == [("GreenCastle", "old")]


def test_a_projects_view_hides_bcc_recipients_as_get_thread_does(call, project):
    hidden = send(call, project, "BlueLake", ["GreenCastle"], "quiet", bcc=["RedStone"], ack_required=True, importance="urgent")
    for tool in ("list_ack_required", "list_urgent_unread"):
        assert subjects(call(tool, project_key=project)) == [("GreenCastle", "quiet")], tool
        assert subjects(call(tool, project_key=project, agent_name="RedStone")) == [("RedStone", "quiet")], tool  # its own
    call("acknowledge_message", project_key=project, agent_name="GreenCastle", message_id=hidden["id"])
    assert call("list_ack_required", project_key=project)["messages"] == []
    thread = call("get_thread", project_key=project, thread_id=hidden["thread_id"])
    assert "RedStone" not in str(thread)
    # the overseers' inbox too: its counts and its views named no bcc recipient, but counted one
    [entry] = call("unified_inbox", project_key=project)["messages"]
    assert (entry["to"], entry["cc"], entry["unread"], entry["ack_pending"]) == (["GreenCastle"], [], 0, 0)  # it acknowledged
    for thread_id in (None, hidden["thread_id"]):  # a view of the project's mail, and of the thread's
        assert call("unified_inbox", project_key=project, thread_id=thread_id, view="ack_pending")["messages"] == []
    assert [m["subject"] for m in call("unified_inbox", project_key=project, view="urgent")["messages"]] == ["quiet"]


def test_lists_of_whole_recipient_lists_run_off_the_event_loop(call, project, settings, monkeypatch):
    """fetch_outbox, unified_inbox and list_threads name every recipient (or participant) of what
    they list, up to 300 a message: a page of such messages held the event loop 0.1 to 0.4 s a
    call (/health waited up to 1 s). They run in the slow-read lane, their encoding with them."""
    send(call, project, "BlueLake", ["GreenCastle"], "wide", bcc=["RedStone"])
    ran_on = []

    def recording(owner, name):
        def record(*args, real=getattr(owner, name)):
            ran_on.append((name, threading.current_thread()))
            return real(*args)
        monkeypatch.setattr(owner, name, record)

    for owner, name in ((messages, "recipients_of"), (overseer, "recipients_and_marks"), (thread_summaries, "_addresses")):
        recording(owner, name)
    tools, listed = tools_by_name(), {}
    for tool, arguments in (("fetch_outbox", dict(agent_name="BlueLake")), ("unified_inbox", {}), ("list_threads", {})):
        answer = orjson.loads(asyncio.run(invoke.ajson(tools[tool], dict(project_key=project, **arguments), settings)))
        [listed[tool]] = answer.get("messages") or answer["threads"]
    assert [name for name, _ in ran_on] == ["recipients_of", "recipients_and_marks", "_addresses"]
    assert all(thread is not threading.main_thread() for _, thread in ran_on)
    assert (listed["fetch_outbox"]["to"], listed["fetch_outbox"]["bcc"]) == (["GreenCastle"], ["RedStone"])  # the sender's
    assert (listed["unified_inbox"]["to"], listed["unified_inbox"]["cc"]) == (["GreenCastle"], [])
    assert listed["list_threads"]["participants"] == ["BlueLake", "GreenCastle"]


@pytest.mark.sqlite_only
def test_views_and_inbox_filters_as_mcp_resources(server):
    with httpx.Client(base_url=server) as api:
        def post(tool, **arguments):
            response = api.post(f"/api/{tool}", json=arguments)
            assert response.status_code == 200, response.text
            return response.json()

        post("ensure_project", human_key="/views/mcp")
        for name in ("BlueLake", "GreenCastle"):
            post("register_agent", project_key="views-mcp", program="p", model="m", agent_name=name)
            post("set_contact_policy", project_key="views-mcp", agent_name=name, policy="open")
        post("send_message", project_key="views-mcp", agent_name="BlueLake", to=["GreenCastle"], subject="ack me",
             body_md="b", ack_required=True)
        read = post("send_message", project_key="views-mcp", agent_name="BlueLake", to=["GreenCastle"], subject="urgent",
                    body_md="b", importance="urgent")["message"]
        post("mark_message_read", project_key="views-mcp", agent_name="GreenCastle", message_id=read["id"])

    async def reading(*uris):
        async with Client(f"{server}/mcp", mode="legacy") as client:
            return [json.loads((await client.read_resource(uri)).contents[0].text) for uri in uris]

    unread, pending, project_wide, urgent = asyncio.run(reading(
        "resource://inbox/GreenCastle?project=views-mcp&unread_only=true",
        "resource://ack-required/GreenCastle?project=views-mcp",
        "resource://project-ack-required/views-mcp",
        "resource://urgent-unread/GreenCastle?project=views-mcp",
    ))
    assert [m["subject"] for m in unread["messages"]] == ["ack me"]
    assert [m["subject"] for m in pending["messages"]] == ["ack me"]
    assert [(m["recipient"], m["subject"]) for m in project_wide["messages"]] == [("GreenCastle", "ack me")]
    assert urgent["messages"] == []  # read already


def test_a_projects_view_is_the_oldest_of_every_agents_own(call, project):
    """The project's view (each agent's oldest `limit`, merged) against each agent's inbox filtered
    the same way, for mail spread over agents, some of it read, acknowledged or urgent."""
    import random

    rng = random.Random(12)
    names = ["BlueLake", "GreenCastle", "RedStone"]
    for extra in ("amberfox", "Cobalt7"):
        call("register_agent", project_key=project, program="p", model="m", name=extra)
        call("set_contact_policy", project_key=project, agent_name=extra, policy="open")
        names.append(extra)
    for n in range(40):
        to = rng.sample(names, rng.randint(1, 3))
        message = send(call, project, rng.choice(names), to, f"m{n}", ack_required=rng.random() < 0.5,
                       importance=rng.choice(["normal", "high", "urgent"]))
        for name in to:
            if rng.random() < 0.3:
                call("acknowledge_message", project_key=project, agent_name=name, message_id=message["id"])
            elif rng.random() < 0.3:
                call("mark_message_read", project_key=project, agent_name=name, message_id=message["id"])

    def reference(filters: dict, limit: int) -> list[tuple[str, str]]:
        mine = [(int(m["id"]), name.lower(), name, m["subject"]) for name in names
                for m in call("fetch_inbox", project_key=project, agent_name=name, limit=500, **filters)["messages"]]
        return [(name, subject) for _, _, name, subject in sorted(mine)[:limit]]

    for limit in (1, 7, 50):
        assert subjects(call("list_ack_required", project_key=project, limit=limit)) == reference({"ack_pending_only": True}, limit)
        assert subjects(call("list_urgent_unread", project_key=project, limit=limit)) == reference(
            {"urgent_only": True, "unread_only": True}, limit)
        assert subjects(call("list_ack_required", project_key=project, agent_name="Cobalt7", limit=limit)) == [
            pair for pair in reference({"ack_pending_only": True}, 500) if pair[0] == "Cobalt7"][:limit]


def test_a_projects_view_is_the_oldest_of_its_agents_views_merged(call, project):
    """The project's view reads each agent's oldest matching mail below the oldest `limit` found so
    far (each agent read `limit` rows: 40 agents × 50 at a million messages). Whatever the limit,
    it must answer what merging every agent's own view answers (bcc left out, ties by name)."""
    import random

    rng, names = random.Random(7), ["BlueLake", "GreenCastle", "RedStone"]
    for n in range(40):
        sender = rng.choice(names)
        others = [name for name in names if name != sender]
        to = rng.sample(others, rng.randint(1, 2))
        bcc = [name for name in others if name not in to and rng.random() < 0.5]
        sent = send(call, project, sender, to, f"m{n}", bcc=bcc, importance=rng.choice(["normal", "high", "urgent"]),
                    ack_required=rng.random() < 0.6)
        for reader in to + bcc:
            if rng.random() < 0.3:
                call("acknowledge_message", project_key=project, agent_name=reader, message_id=sent["id"])
            elif rng.random() < 0.3:
                call("mark_message_read", project_key=project, agent_name=reader, message_id=sent["id"])
    for tool in ("list_ack_required", "list_urgent_unread"):
        merged = sorted((int(m["id"]), place, m["recipient"], m["subject"]) for place, name in enumerate(sorted(names, key=str.lower))
                        for m in call(tool, project_key=project, agent_name=name, limit=500)["messages"] if m["kind"] != "bcc")
        assert len(merged) > 10
        for limit in (1, 2, 5, 9, 500):
            assert subjects(call(tool, project_key=project, limit=limit)) == [(r, s) for _, _, r, s in merged[:limit]], (tool, limit)


def test_a_projects_views_hold_the_mail_its_agents_received_from_any_project(call, project):
    """A project's list_* views are of its agents' copies (migration 0043 keeps the recipient's project on
    each): mail from another project is in them, its sender's project's are not. unified_inbox's
    views and marks are of the project's messages instead (0048): the sender's project's."""
    call("ensure_project", human_key="/work/other")
    call("register_agent", project_key="work-other", program="p", model="m", name="PinkDog")
    call("set_contact_policy", project_key="work-other", agent_name="PinkDog", policy="open")
    sent = send(call, project, "BlueLake", ["PinkDog@work-other"], "across", ack_required=True, importance="urgent")
    assert subjects(call("list_ack_required", project_key="work-other")) == [("PinkDog", "across")]
    assert subjects(call("list_urgent_unread", project_key="work-other")) == [("PinkDog", "across")]
    assert call("list_ack_required", project_key=project)["messages"] == []

    def unified(key, **options):
        return call("unified_inbox", project_key=key, **options)

    assert [m["subject"] for m in unified(project, view="ack_pending")["messages"]] == ["across"]
    assert unified("work-other", view="ack_pending")["messages"] == []
    receipt = call("acknowledge_message", project_key="work-other", agent_name="PinkDog", message_id=sent["id"])
    assert (unified(project)["newest_read_ts"], unified(project)["newest_ack_ts"]) == (receipt["read_ts"], receipt["ack_ts"])
    assert (unified("work-other")["newest_read_ts"], unified("work-other")["newest_ack_ts"]) == (None, None)
    assert call("list_ack_required", project_key="work-other")["messages"] == []
    assert call("list_urgent_unread", project_key="work-other")["messages"] == []
