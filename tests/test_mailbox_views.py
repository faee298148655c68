"""Views of what needs attention: as tools (both backends) and as MCP resources (official client)."""

import asyncio
import json

import httpx
import pytest
from mcp import Client

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
