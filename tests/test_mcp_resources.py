"""MCP resources: each a read-only tool's JSON output, read through the official client from the real server."""

import asyncio
import json
from urllib.parse import quote

import httpx
import httpx2
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from chalicelib.transports import mcp_resources
from chalicelib.transports.mcp_app import build_mcp_server
from chalicelib.transports.mcp_resources import View
from chalicelib.errors import (SCHEMA_HINT, URI_TEMPLATE_HINT, Conflict, Forbidden, InvalidArgument, NotFound, Unauthorized,
                              Unavailable, internal_error)
from chalicelib.tools import tools_by_name

TOOLS = tools_by_name()
HAS_RESERVATIONS = {"list_file_reservations", "file_reservation_paths"} <= set(TOOLS)
TEMPLATES = {
    "resource://project/{slug}",
    "resource://projects{?include_archived,limit,cursor}",
    "resource://agents/{project_key}{?include_retired,limit,cursor}",
    "resource://inbox/{agent}{?project,limit,include_bodies,urgent_only,unread_only,ack_pending_only,since_ts,cursor,token}",
    "resource://ack-required/{agent}{?project,limit,token}",
    "resource://ack-overdue/{agent}{?project,older_than_minutes,limit,token}",
    "resource://urgent-unread/{agent}{?project,limit,token}",
    "resource://project-ack-required/{project_key}{?limit}",
    "resource://project-ack-overdue/{project_key}{?older_than_minutes,limit}",
    "resource://project-urgent-unread/{project_key}{?limit}",
    "resource://outbox/{agent}{?project,limit,cursor,token}",
    "resource://threads/{project_key}{?agent,limit,cursor,token}",
    "resource://thread/{thread_id}{?project,agent,limit,cursor,token}",
    "resource://message/{id}{?project,agent,token}",
    "resource://product/{key}",
} | ({"resource://file_reservations/{project_key}{?active_only,limit,cursor}"} if "list_file_reservations" in TOOLS else set())


@pytest.fixture(scope="module")
def seed(server):
    """Project res-demo (BlueLake, GreenCastle), one message in thread 'FEAT 1/a', product res-shop."""
    with httpx.Client(base_url=server) as api:
        def post(tool, **arguments):
            response = api.post(f"/api/{tool}", json=arguments)
            assert response.status_code == 200, response.text
            return response.json()

        post("ensure_project", human_key="/res/demo")
        for name in ("BlueLake", "GreenCastle"):
            post("register_agent", project_key="res-demo", program="p", model="m", name=name)
            post("set_contact_policy", project_key="res-demo", agent_name=name, policy="open")  # mail from anyone
        for subject in ("First", "Second"):
            message = post("send_message", project_key="res-demo", sender_name="BlueLake", to=["GreenCastle"],
                           bcc=["BlueLake"], subject=subject, body_md=f"{subject} body", thread_id="FEAT 1/a")["message"]
        post("ensure_product", product_key="res-shop")
        post("products_link", product_key="res-shop", project_key="res-demo")
        if HAS_RESERVATIONS:
            post("file_reservation_paths", project_key="res-demo", agent_name="BlueLake", paths=["src/*.py"])
        yield {"message": message["id"]}


def read(server, uri):
    async def reading():
        async with Client(f"{server}/mcp", mode="legacy") as client:
            return await client.read_resource(uri)

    return asyncio.run(reading())


def rest(server, tool, **arguments):
    return httpx.get(f"{server}/api/{tool}", params=arguments)


SAME_AS_TOOL = [
    ("resource://projects", "list_projects", {}),
    ("resource://project/res-demo", "get_project", {"project_key": "res-demo"}),
    ("resource://project/%2Fres%2Fdemo", "get_project", {"project_key": "/res/demo"}),  # a human key, encoded
    ("resource://projects?limit=1&include_archived=true", "list_projects", {"limit": 1, "include_archived": True}),
    ("resource://agents/res-demo", "list_agents", {"project_key": "res-demo"}),
    ("resource://agents/res-demo?limit=1", "list_agents", {"project_key": "res-demo", "limit": 1}),
    ("resource://inbox/GreenCastle?project=res-demo", "fetch_inbox", {"project_key": "res-demo", "agent_name": "GreenCastle"}),
    ("resource://inbox/GreenCastle?include_bodies=true&limit=1&project=res-demo", "fetch_inbox",
     {"project_key": "res-demo", "agent_name": "GreenCastle", "limit": 1, "include_bodies": True}),
    ("resource://outbox/BlueLake?project=res-demo", "fetch_outbox", {"project_key": "res-demo", "agent_name": "BlueLake"}),
    ("resource://thread/FEAT%201%2Fa?project=res-demo", "get_thread", {"project_key": "res-demo", "thread_id": "FEAT 1/a"}),
    ("resource://thread/FEAT%201%2Fa?project=res-demo&limit=1", "get_thread",  # pages: it named a cursor it took not
     {"project_key": "res-demo", "thread_id": "FEAT 1/a", "limit": 1}),
    ("resource://threads/res-demo", "list_threads", {"project_key": "res-demo"}),
    ("resource://threads/res-demo?agent=GreenCastle&limit=1", "list_threads",
     {"project_key": "res-demo", "agent_name": "GreenCastle", "limit": 1}),
    ("resource://message/{message}?project=%2Fres%2Fdemo", "get_message", {"project_key": "res-demo", "message_id": "{message}"}),
    ("resource://product/res-shop", "get_product", {"product_key": "res-shop"}),
    pytest.param("resource://file_reservations/res-demo", "list_file_reservations", {"project_key": "res-demo"},
                 marks=pytest.mark.skipif(not HAS_RESERVATIONS, reason="file reservation tools not present")),
    pytest.param("resource://file_reservations/res-demo?active_only=false", "list_file_reservations",
                 {"project_key": "res-demo", "active_only": False},
                 marks=pytest.mark.skipif(not HAS_RESERVATIONS, reason="file reservation tools not present")),
]


@pytest.mark.parametrize(("uri", "tool", "arguments"), SAME_AS_TOOL, ids=lambda value: str(value)[:50])
def test_a_resource_is_its_tools_json_output(server, seed, uri, tool, arguments):
    uri = uri.format(**seed)
    arguments = {key: str(value).format(**seed) for key, value in arguments.items()}
    [content] = read(server, uri).contents
    expected = rest(server, tool, **arguments)
    assert expected.status_code == 200
    assert (content.uri, content.mime_type) == (uri, "application/json")
    assert json.loads(content.text) == expected.json()


def test_a_list_resource_pages_with_the_tools_cursor(server, seed):
    [first] = read(server, "resource://agents/res-demo?limit=1").contents
    page = json.loads(first.text)
    [second] = read(server, f"resource://agents/res-demo?limit=1&cursor={page['next_cursor']}").contents
    rest_page = json.loads(second.text)
    assert [a["name"] for a in page["agents"] + rest_page["agents"]] == ["BlueLake", "GreenCastle"]
    assert rest_page["next_cursor"] is None


PAGED = [("resource://projects?limit=1", "list_projects", {}, "projects"),
         ("resource://agents/res-demo?limit=1", "list_agents", {"project_key": "res-demo"}, "agents")] + (
    [("resource://file_reservations/res-demo?limit=1", "list_file_reservations", {"project_key": "res-demo"}, "file_reservations")]
    if HAS_RESERVATIONS else [])


def test_every_list_resource_takes_its_next_cursor_pasted_as_it_came(server, seed):
    """list_projects' and list_file_reservations' cursors held %3A and %2B (a timestamp, percent-
    encoded): the resource URI's value is decoded on the way, so the tool refused its own cursor."""
    with httpx.Client(base_url=server) as api:
        assert api.post("/api/ensure_project", json={"human_key": "/res/paged"}).status_code == 200
        if HAS_RESERVATIONS:
            assert api.post("/api/file_reservation_paths", json={"project_key": "res-demo", "agent_name": "GreenCastle",
                                                                  "paths": ["docs/*.md"]}).status_code == 200
    for uri, tool, arguments, key in PAGED:
        [first] = read(server, uri).contents
        cursor = json.loads(first.text)["next_cursor"]
        assert cursor and cursor == quote(cursor, safe=",~"), cursor  # nothing a URI would change
        [second] = read(server, f"{uri}&cursor={cursor}").contents
        expected = rest(server, tool, **arguments, limit=1, cursor=cursor)
        assert expected.status_code == 200 and json.loads(second.text) == expected.json()
        assert json.loads(second.text)[key] != json.loads(first.text)[key]
    old = "s2026-12-03T09%3A17%3A17.427257%2B00%3A00,sres-demo"  # as list_projects gave them: still read
    assert rest(server, "list_projects", cursor=old).status_code == 200


def test_query_parameters_reach_the_tool(server, seed):
    [full] = read(server, "resource://inbox/GreenCastle?project=res-demo&include_bodies=true").contents
    [short] = read(server, "resource://inbox/GreenCastle?limit=1&project=res-demo").contents
    assert [m["body_md"] for m in json.loads(full.text)["messages"]] == ["Second body", "First body"]
    assert [m["body_md"] for m in json.loads(short.text)["messages"]] == [None]
    # The outbox is the sender's view: bcc included. get_message without a reader hides it.
    [outbox] = read(server, "resource://outbox/BlueLake?project=res-demo").contents
    [message] = read(server, f"resource://message/{seed['message']}?project=res-demo").contents
    assert json.loads(outbox.text)["messages"][0]["bcc"] == ["BlueLake"] and json.loads(message.text)["bcc"] == []


def resource_error(server, uri) -> MCPError:
    async def reading():
        async with Client(f"{server}/mcp", mode="legacy") as client:
            with pytest.raises(MCPError) as info:  # caught inside: the client's task group would wrap it
                await client.read_resource(uri)
            return info.value

    return asyncio.run(reading())


@pytest.mark.parametrize(
    ("uri", "tool", "arguments", "code"),
    [
        ("resource://inbox/Ghost?project=res-demo", "fetch_inbox", {"project_key": "res-demo", "agent_name": "Ghost"},
         "not_found"),
        ("resource://project/missing", "get_project", {"project_key": "missing"}, "not_found"),
        ("resource://message/123?project=res-demo", "get_message", {"project_key": "res-demo", "message_id": 123},
         "not_found"),
        ("resource://message/abc?project=res-demo", "get_message", {"project_key": "res-demo", "message_id": "abc"},
         "invalid_argument"),
        ("resource://inbox/GreenCastle?project=res-demo&limit=0", "fetch_inbox",
         {"project_key": "res-demo", "agent_name": "GreenCastle", "limit": 0}, "invalid_argument"),
        ("resource://thread/nope?project=res-demo", "get_thread", {"project_key": "res-demo", "thread_id": "nope"},
         "not_found"),
    ],
)
def test_a_tool_error_is_a_resource_error_with_the_same_message(server, seed, uri, tool, arguments, code):
    error = resource_error(server, uri)
    expected = rest(server, tool, **arguments).json()
    assert expected["error"]["code"] == code
    assert error.code == -32602  # invalid params: the caller's to fix
    assert error.message == expected["error"]["message"]
    hint = error.data["error"].pop("hint")  # REST's, then how the URI spells an argument it names ({id} for message_id)
    rest_hint = expected["error"].pop("hint")  # (but for invalid values: not the tool's input schema, the URI template)
    assert hint.startswith(URI_TEMPLATE_HINT if rest_hint == SCHEMA_HINT else rest_hint) and error.data == expected


def test_an_unknown_query_parameter_is_refused_naming_the_ones_the_template_takes(server, seed):
    """The SDK drops a query parameter its template does not name: a misspelt limit (or token)
    would be read as absent. It is invalid params, as an unknown field of a tool is."""
    misspelt = resource_error(server, "resource://inbox/GreenCastle?project=res-demo&limt=1")
    assert misspelt.code == -32602
    assert misspelt.message == "resource://inbox/GreenCastle has no query parameter limt. Did you mean 'limit'?"
    assert misspelt.data["error"]["code"] == "invalid_argument"
    assert misspelt.data["error"]["hint"].endswith("takes the query parameters project, limit, include_bodies, urgent_only,"
                                                   " unread_only, ack_pending_only, since_ts, cursor, token.")
    # A tool argument under its tool name: the message says how the URI spells it (no value echoed).
    tool_names = resource_error(server, "resource://thread/x?project=res-demo&agent_name=GreenCastle&registration_token=amt_secret")
    assert tool_names.message == ("resource://thread/x has no query parameter agent_name (here ?agent=),"
                                  " registration_token (here ?token=).")
    assert "amt_secret" not in json.dumps(tool_names.data)
    pathless = resource_error(server, "resource://project/res-demo?bogus=1")
    assert (pathless.code, pathless.data["error"]["hint"]) == (-32602, "resource://project/{slug} takes no query parameters.")
    # The query-taking template wins, as in the SDK: resource://projects alone takes none.
    assert json.loads(read(server, "resource://projects?limit=1").contents[0].text)["projects"]


def test_a_query_parameter_given_twice_is_refused_as_rest_refuses_it(server, seed):
    """The SDK read the first value: projects?limit=1&limit=3 gave one project, and
    inbox/X?project=a&project=b read a's inbox. REST answers the same 422."""
    twice = resource_error(server, "resource://projects?limit=1&limit=3")
    assert twice.code == -32602 and twice.data["error"]["code"] == "invalid_argument"
    assert twice.message == "The query parameter limit is given more than once in resource://projects; it takes one value."
    assert "Pass limit once" in twice.data["error"]["hint"]
    assert rest(server, "list_projects", limit=[1, 3]).status_code == 422
    tokens = resource_error(server, "resource://inbox/GreenCastle?project=res-demo&token=amt_one&project=other&token=amt_two")
    assert "project is given more than once" in tokens.message and "amt_" not in json.dumps(tokens.data)


def test_a_missing_required_query_parameter_is_named(server, seed):
    error = resource_error(server, "resource://outbox/BlueLake")
    assert error.code == -32602
    assert error.message == "resource://outbox/BlueLake needs the query parameter project."
    assert error.data["error"]["code"] == "invalid_argument" and "?project=" in error.data["error"]["hint"]
    with_token = resource_error(server, "resource://outbox/BlueLake?token=amt_s3cret&limit=5")
    assert with_token.message == "resource://outbox/BlueLake needs the query parameter project."  # no value repeated
    assert "amt_s3cret" not in json.dumps(with_token.data)


def test_an_unknown_resource(server, seed):
    assert "No resource matches this URI." in resource_error(server, "resource://nope/1").message
    assert "Did you mean 'thread'" in resource_error(server, "resource://thred/x?project=res-demo").message
    # A thread id with a raw ',' matches no template: the kind was right, the value needs encoding
    # (it was told "Did you mean 'thread' or 'threads'?").
    refused = resource_error(server, "resource://thread/a,b?project=res-demo").message
    assert "percent-encode" in refused and "Did you mean" not in refused and "a,b" not in refused


def test_a_bad_value_names_its_argument_and_how_the_uri_spells_it(server, seed):
    """The error names the tool's argument (message_id), which the URI spells {id}: its hint says so."""
    refused = resource_error(server, "resource://message/abc?project=res-demo")
    assert "message_id" in refused.message and refused.data["error"]["hint"].endswith("In this resource's URI, message_id is {id}.")


@pytest.mark.parametrize("uri", ["resource://message/abc?project=res-demo", "resource://inbox/GreenCastle?project=res-demo&limit=0"])
def test_invalid_values_send_a_reader_to_the_uri_template_not_a_tools_input_schema(server, seed, uri):
    """Security QA, session 36: the hint said "Check the tool's input schema (tools/list …)", which
    a resource read has none of: what it should check is the resource's URI template."""
    hint = resource_error(server, uri).data["error"]["hint"]
    assert hint.startswith("Check the resource's URI template (resources/templates/list)")
    assert "input schema" not in hint and "tools/list" not in hint


@pytest.mark.parametrize("mode", ["legacy", None])  # the protocol of before 2026-07-28, and the client's newest
def test_an_unknown_prompt_is_invalid_params_with_a_hint(server, mode):
    """The SDK's ValueError was an internal error (-32603, its traceback logged) or code 0, no JSON-RPC code."""
    async def getting():
        async with Client(f"{server}/mcp", **({"mode": mode} if mode else {})) as client:
            with pytest.raises(MCPError) as info:
                await client.get_prompt("x")
            return info.value

    error = asyncio.run(getting())
    assert error.code == -32602 and "this server has no prompts" in error.message
    assert error.data["error"]["code"] == "not_found" and "tools/list" in error.data["error"]["hint"]


def test_resources_and_templates_are_listed(server):
    async def listing():
        async with Client(f"{server}/mcp", mode="legacy") as client:
            return (await client.list_resources()).resources, (await client.list_resource_templates()).resource_templates

    resources, templates = asyncio.run(listing())
    assert [(r.uri, r.name, r.mime_type) for r in resources] == [("resource://projects", "projects", "application/json")]
    assert {t.uri_template for t in templates} == TEMPLATES
    for template in templates:
        assert template.mime_type == "application/json"
        assert f"the {mcp_resources.VIEWS[template.uri_template].tool} tool" in template.description


def test_resources_over_plain_json_rpc_and_the_lean_initialize(server):
    """The lean path answers initialize (advertising resources) and hands resources/* to the SDK."""
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    init = {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}

    def rpc(method, params):
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        return httpx.post(f"{server}/mcp", headers=headers, json=body).json()

    assert "resources" in rpc("initialize", init)["result"]["capabilities"]
    listed = rpc("resources/templates/list", {})["result"]["resourceTemplates"]
    assert {t["uriTemplate"] for t in listed} == TEMPLATES
    [content] = rpc("resources/read", {"uri": "resource://projects"})["result"]["contents"]
    assert json.loads(content["text"]) == rest(server, "list_projects").json()


def test_views_must_name_read_only_tools_and_their_real_arguments(settings, monkeypatch):
    monkeypatch.setattr(mcp_resources, "VIEWS", {"resource://x/{who}": View("fetch_inbox", {"who": "agent"})})
    with pytest.raises(ValueError, match=r"fetch_inbox has no argument \['agent'\]"):
        build_mcp_server(settings)
    monkeypatch.setattr(mcp_resources, "VIEWS", {"resource://x/{project_key}": View("send_message")})
    with pytest.raises(ValueError, match="send_message is not read-only"):
        build_mcp_server(settings)


def test_a_view_whose_tool_is_absent_is_left_out(settings, monkeypatch):
    monkeypatch.setattr(mcp_resources, "VIEWS", {"resource://later/{project_key}": View("not_written_yet")})

    async def templates():
        return await build_mcp_server(settings).list_resource_templates()

    assert asyncio.run(templates()) == []


def test_a_refused_read_is_the_callers_error_not_an_internal_one(tmp_path):
    """403 forbidden (here: an inbox read without the agent's token) is -32602, the caller's to
    fix, with the tool error as data; -32603 (which clients may retry) was wrong for it."""
    from .servers import running_server

    auth = {"Authorization": "Bearer admin-token"}
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"} | auth
    with running_server(tmp_path / "agent_mail.db", AUTH_MODE="bearer", AUTH_BEARER_TOKENS="admin-token",
                        REQUIRE_AGENT_TOKENS="true") as url:
        httpx.post(f"{url}/api/ensure_project", headers=auth, json={"human_key": "/guarded"}).raise_for_status()
        httpx.post(f"{url}/api/register_agent", headers=auth, json={"project_key": "guarded", "program": "p", "model": "m",
                                                                   "name": "BlueLake"}).raise_for_status()
        body = {"jsonrpc": "2.0", "id": 1, "method": "resources/read",
                "params": {"uri": "resource://inbox/BlueLake?project=guarded"}}
        error = httpx.post(f"{url}/mcp", headers=headers, json=body).json()["error"]
        rest_error = httpx.get(f"{url}/api/fetch_inbox", headers=auth, params={"project_key": "guarded", "agent_name": "BlueLake"})
    assert rest_error.status_code == 403
    assert error["code"] == -32602
    assert error["data"]["error"]["code"] == "forbidden" and error["message"] == rest_error.json()["error"]["message"]


def test_a_refused_read_says_how_the_uri_passes_the_token(tmp_path):
    """The tool's hint names its argument registration_token; a resource URI calls it token."""
    from .servers import running_server

    auth = {"Authorization": "Bearer admin-token"}
    with running_server(tmp_path / "agent_mail.db", AUTH_MODE="bearer", AUTH_BEARER_TOKENS='[{"token": "admin-token", "role": "writer"}]',
                        REQUIRE_AGENT_TOKENS="true") as url:
        httpx.post(f"{url}/api/ensure_project", headers=auth, json={"human_key": "/guarded"}).raise_for_status()
        token = httpx.post(f"{url}/api/register_agent", headers=auth, json={
            "project_key": "guarded", "program": "p", "model": "m", "name": "BlueLake"}).json()["registration_token"]

        async def reading():
            transport = streamable_http_client(f"{url}/mcp", http_client=httpx2.AsyncClient(headers=auth))
            async with Client(transport, mode="legacy") as client:
                with pytest.raises(MCPError) as refused:
                    await client.read_resource("resource://inbox/BlueLake?project=guarded")
                with pytest.raises(MCPError) as misnamed:
                    await client.read_resource(f"resource://inbox/BlueLake?project=guarded&registration_token={token}")
                with pytest.raises(MCPError) as unnamed:  # a thread read by a non-admin names its reader
                    await client.read_resource(f"resource://thread/t1?project=guarded&token={token}")
                read = await client.read_resource(f"resource://inbox/BlueLake?project=guarded&token={token}")
                return refused.value, misnamed.value, unnamed.value, json.loads(read.contents[0].text)

        refused, misnamed, unnamed, inbox = asyncio.run(reading())
    assert refused.code == -32602 and refused.data["error"]["code"] == "forbidden"
    assert refused.data["error"]["hint"].endswith("In this resource's URI, registration_token is ?token=.")
    assert misnamed.code == -32602 and "registration_token (here ?token=)" in misnamed.message
    assert unnamed.data["error"]["hint"].endswith("In this resource's URI, agent_name is ?agent=, registration_token is ?token=.")
    assert inbox["messages"] == []


@pytest.mark.parametrize(("error", "code"), [
    (Unauthorized("no credentials"), -32602), (Forbidden("not yours"), -32602), (Conflict("taken"), -32602),
    (NotFound("gone"), -32602), (InvalidArgument("bad"), -32602),
    (Unavailable("busy"), -32603), (internal_error(), -32603),
])
def test_only_a_server_failure_is_an_internal_error(error, code):
    mapped = mcp_resources._mcp_error(error.to_dict())
    assert (mapped.error.code, mapped.error.message, mapped.error.data) == (code, error.message, error.to_dict())
