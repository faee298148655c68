"""The contact flow end to end, against the real server: REST over HTTP, and the official MCP client."""

import asyncio
import json

import httpx
from mcp import Client

from .servers import tool_caller


def test_contact_flow_over_rest(server):
    with httpx.Client(base_url=f"{server}/api") as api:

        def post(tool, **arguments):
            response = api.post(f"/{tool}", json=arguments)
            assert response.status_code == 200, response.text
            return response.json()

        post("ensure_project", human_key="/rest/backend")
        post("ensure_project", human_key="/rest/frontend")
        post("register_agent", project_key="rest-backend", program="p", model="m", name="BlueLake")
        post("register_agent", project_key="rest-frontend", program="p", model="m", name="PinkDog")
        message = {"project_key": "rest-backend", "sender_name": "BlueLake", "to": ["PinkDog@rest-frontend"],
                   "subject": "API change", "body_md": "v2 is out"}

        refused = api.post("/send_message", json=message)
        assert refused.status_code == 409
        error = refused.json()["error"]
        assert error["code"] == "conflict" and "PinkDog@rest-frontend" in error["message"]
        assert "request_contact" in error["hint"]

        post("request_contact", project_key="rest-backend", from_agent="BlueLake", to_agent="PinkDog@rest-frontend",
             reason="API v2")
        inbox = {"project_key": "rest-frontend", "agent_name": "PinkDog"}
        [notice] = api.get("/fetch_inbox", params=inbox).json()["messages"]
        assert (notice["kind"], notice["sender"]) == ("notice", "BlueLake@rest-backend")
        post("respond_contact", project_key="rest-frontend", to_agent="PinkDog", from_agent="BlueLake@rest-backend",
             accept=True)

        sent = post("send_message", **message)["message"]
        assert sent["id"] in [m["id"] for m in api.get("/fetch_inbox", params=inbox).json()["messages"]]
        contacts = api.get("/list_contacts", params=inbox).json()
        assert [(c["from_agent"], c["status"]) for c in contacts["contacts"]] == [("BlueLake@rest-backend", "approved")]


def test_contact_flow_through_the_official_mcp_client(server):
    async def session():
        async with Client(f"{server}/mcp", mode="legacy") as client:

            call = tool_caller(client)

            await call("ensure_project", human_key="/mcp/team")
            for name in ("BlueLake", "GreenCastle"):
                await call("register_agent", project_key="mcp-team", program="p", model="m", name=name)
            message = {"project_key": "mcp-team", "sender_name": "BlueLake", "to": ["GreenCastle"],
                       "subject": "Schema", "body_md": "review?"}

            refused = await client.call_tool("send_message", message)
            assert refused.is_error
            error = json.loads(refused.content[0].text)["error"]
            assert error["code"] == "conflict" and "GreenCastle" in error["message"]
            assert "request_contact" in error["hint"]

            asked = await call("request_contact", project_key="mcp-team", from_agent="BlueLake", to_agent="GreenCastle")
            assert asked["status"] == "pending"
            answered = await call("respond_contact", project_key="mcp-team", to_agent="GreenCastle",
                                  from_agent="BlueLake", accept=True)
            assert answered["status"] == "approved"
            sent = await call("send_message", **message)
            inbox = await call("fetch_inbox", project_key="mcp-team", agent_name="GreenCastle")
            assert [m["kind"] for m in inbox["messages"]] == ["to", "notice"]
            assert inbox["messages"][0]["id"] == sent["message"]["id"]

    asyncio.run(session())
