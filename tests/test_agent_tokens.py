"""Per-agent identity tokens (chalicelib/security/agent_tokens.py): with REQUIRE_AGENT_TOKENS, acting as
or reading for an agent needs that agent's token, checked centrally in invoke.py for every
tool that declares `acts_as`."""

import hashlib
import json
import sqlite3

import httpx
import pytest

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.errors import Forbidden
from chalicelib.tools import all_tools, tools_by_name

from .aws_events import MCP_HEADERS, tool_call
from .servers import running_server

pytestmark = pytest.mark.both_backends

TOKEN = "bearer-for-tests"
TOOLS = tools_by_name()


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    database = tmp_path_factory.mktemp("tokens") / "agent_mail.db"
    with running_server(database, AUTH_MODE="bearer", AUTH_BEARER_TOKENS=TOKEN) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            client.database = database
            yield client


def post(client, tool, **arguments):
    response = client.post(f"/api/{tool}", json=arguments)
    return response.status_code, response.json()


@pytest.fixture(scope="module")
def agents(api):
    """BlueLake and GreenCastle with their tokens; GreenCastle has one message from BlueLake."""
    assert post(api, "ensure_project", human_key="/tokens")[0] == 200
    tokens = {}
    for name in ("BlueLake", "GreenCastle"):
        status, agent = post(api, "register_agent", project_key="tokens", program="p", model="m", name=name)
        assert status == 200 and agent["registration_token"].startswith("amt_")
        tokens[name] = agent["registration_token"]
        assert post(api, "set_contact_policy", project_key="tokens", agent_name=name, policy="open",
                    registration_token=tokens[name])[0] == 200
    status, sent = post(api, "send_message", project_key="tokens", sender_name="BlueLake", to=["GreenCastle"],
                        subject="Hi", body_md="b", ack_required=True, sender_token=tokens["BlueLake"])
    assert status == 200
    return tokens | {"message_id": sent["message"]["id"]}


def refused(answer, name="GreenCastle"):
    status, body = answer
    return status == 403 and body["error"]["code"] == "forbidden" and repr(name) in body["error"]["message"]


def test_impersonation_is_refused_and_own_token_works(api, agents):
    blue, green, mid = agents["BlueLake"], agents["GreenCastle"], agents["message_id"]
    send = dict(project_key="tokens", sender_name="GreenCastle", to=["BlueLake"], subject="forged", body_md="x")
    assert refused(post(api, "send_message", **send))
    assert refused(post(api, "send_message", **send, sender_token=blue))
    assert refused(post(api, "send_message", **send, sender_token=green + "x"))
    assert post(api, "send_message", **send, sender_token=green)[0] == 200

    inbox = dict(project_key="tokens", agent_name="GreenCastle")
    assert refused(post(api, "fetch_inbox", **inbox))
    assert refused(post(api, "fetch_inbox", **inbox, registration_token=blue))
    response = api.get("/api/fetch_inbox", params=inbox | {"registration_token": blue})
    assert refused((response.status_code, response.json()))
    status, got = post(api, "fetch_inbox", **inbox, registration_token=green)
    assert status == 200 and [m["id"] for m in got["messages"]] == [mid]

    ack = dict(project_key="tokens", agent_name="GreenCastle", message_id=mid)
    assert refused(post(api, "acknowledge_message", **ack, registration_token=blue))
    assert post(api, "acknowledge_message", **ack, registration_token=green)[0] == 200

    # re-registering an existing name (a profile update) is acting as that agent
    again = dict(project_key="tokens", program="evil", model="m", name="GreenCastle")
    assert refused(post(api, "register_agent", **again, registration_token=blue))
    status, agent = post(api, "register_agent", **again, registration_token=green)
    assert status == 200 and agent["program"] == "evil" and agent["registration_token"] is None


def test_unknown_agents_and_projects_get_the_same_refusal(api, agents):
    wrong = post(api, "fetch_inbox", project_key="tokens", agent_name="GreenCastle", registration_token="amt_guess")
    unknown = post(api, "fetch_inbox", project_key="tokens", agent_name="Ghost", registration_token="amt_guess")
    elsewhere = post(api, "fetch_inbox", project_key="no-such-project", agent_name="GreenCastle", registration_token="amt_guess")
    assert refused(wrong) and refused(unknown, "Ghost") and refused(elsewhere)
    assert json.dumps(unknown).replace("Ghost", "GreenCastle") == json.dumps(wrong) == json.dumps(elsewhere)


def test_through_mcp(api, agents):
    headers = MCP_HEADERS | {"Authorization": f"Bearer {TOKEN}"}
    arguments = dict(project_key="tokens", sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b")
    forged = api.post("/mcp", headers=headers, json=tool_call("send_message", arguments | {"sender_token": agents["GreenCastle"]}))
    result = forged.json()["result"]
    assert result["isError"] and json.loads(result["content"][0]["text"])["error"]["code"] == "forbidden"
    own = api.post("/mcp", headers=headers, json=tool_call("send_message", arguments | {"sender_token": agents["BlueLake"]}))
    assert not own.json()["result"]["isError"]


def test_rotation_and_storage(api, agents):
    status, agent = post(api, "create_agent_identity", project_key="tokens", program="p", model="m", name_hint="RedStone")
    first = agent["registration_token"]
    assert refused(post(api, "rotate_agent_token", project_key="tokens", agent_name="RedStone", registration_token=agents["BlueLake"]), "RedStone")
    status, rotated = post(api, "rotate_agent_token", project_key="tokens", agent_name="RedStone", registration_token=first)
    assert status == 200 and rotated["registration_token"] not in (first, None)
    inbox = dict(project_key="tokens", agent_name="RedStone")
    assert refused(post(api, "fetch_inbox", **inbox, registration_token=first), "RedStone")
    assert post(api, "fetch_inbox", **inbox, registration_token=rotated["registration_token"])[0] == 200
    with sqlite3.connect(api.database) as conn:
        stored = [row[0] for row in conn.execute("SELECT token_sha256 FROM agent_tokens")]
    assert hashlib.sha256(rotated["registration_token"].encode()).hexdigest() in stored
    assert not any(token in stored for token in (first, rotated["registration_token"]))


def test_every_tool_that_names_an_acting_agent_declares_it():
    """A new tool with an agent_name-like input must say whether it acts as that agent."""
    not_acting = {("whois", "agent_name"), ("check_file_reservations", "agent_name"), ("respond_contact", "from_agent"),
                  ("request_contact", "to_agent"), ("products_link", "name"), ("ensure_product", "name")}
    for tool in all_tools():
        for field in tool.input.model_fields:
            if field in ("agent_name", "sender_name", "from_agent", "to_agent", "requester") and (tool.name, field) not in not_acting:
                assert field in tool.acts_as, (tool.name, field)


def test_not_required_without_auth(tmp_path):
    """AUTH_MODE=none (loopback): tokens are issued but not asked for, unless REQUIRE_AGENT_TOKENS=true."""
    loose = Settings(database_url=f"sqlite:///{tmp_path}/a.db")
    strict = loose.model_copy(update={"require_agent_tokens": True})
    from chalicelib.store import db

    db.migrate(loose)
    invoke.call(TOOLS["ensure_project"], {"human_key": "/t"}, loose)
    token = invoke.call(TOOLS["register_agent"], {"project_key": "t", "program": "p", "model": "m", "name": "BlueLake"}, loose).registration_token
    invoke.call(TOOLS["fetch_inbox"], {"project_key": "t", "agent_name": "BlueLake"}, loose)
    with pytest.raises(Forbidden):
        invoke.call(TOOLS["fetch_inbox"], {"project_key": "t", "agent_name": "BlueLake"}, strict)
    invoke.call(TOOLS["fetch_inbox"], {"project_key": "t", "agent_name": "BlueLake", "registration_token": token}, strict)
