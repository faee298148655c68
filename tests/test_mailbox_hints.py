"""Did-you-mean hints, the one error shape for unknown tools on every transport, and TOOLS_PROFILE."""

import asyncio
import importlib
import json
import re

import httpx
import pytest
from chalice.test import Client as ChaliceClient
from mcp import Client

from chalicelib.config import Settings, get_settings
from chalicelib.errors import InvalidArgument, NotFound, ToolError
from chalicelib.tools import CORE, MINIMAL, all_tools
from chalicelib.transports import stdio
from chalicelib.transports.mcp_app import build_mcp_server

from .servers import ROOT, running_server

pytestmark = pytest.mark.both_backends


def test_an_unknown_field_gets_the_closest_name(call, project):
    with pytest.raises(InvalidArgument, match="Did you mean 'agent_name'") as error:
        call("fetch_inbox", project_key=project, agent_nmae="GreenCastle")
    assert error.value.to_dict()["error"]["hint"]


def test_the_did_you_mean_of_a_field_is_a_sentence_of_its_own(call, project):
    with pytest.raises(InvalidArgument) as error:
        call("fetch_inbox", project_key=project, agent_name="GreenCastle", unred_only=True)
    assert error.value.message == ("Invalid arguments: unred_only: Extra inputs are not permitted."
                                   " Did you mean 'unread_only' or 'urgent_only'?")


def test_the_acting_agent_under_another_name_is_pointed_to_agent_name_never_to_a_token(call, project):
    """QA session 33: send_message(sender=...) was answered "Did you mean 'sender_token'?", the secret's field."""
    for field, said in (("sender", "(this tool calls it 'agent_name')"), ("from_agent", "(this tool calls it 'agent_name')"),
                        ("sender_agent", "(this tool calls it 'agent_name')"), ("sender_id", "sender_id: Extra inputs")):
        with pytest.raises(InvalidArgument) as error:
            call("send_message", project_key=project, to=["GreenCastle"], subject="s", body_md="b", **{field: "BlueLake"})
        assert said in error.value.message and "sender_token" not in error.value.message
    with pytest.raises(InvalidArgument) as token:  # a token's other names still find it
        call("send_message", project_key=project, agent_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b", token="t")
    assert "(this tool calls it 'sender_token')" in token.value.message
    with pytest.raises(InvalidArgument) as either:  # search_messages has agent_name (the reader) and sender (a filter)
        call("search_messages", project_key=project, query="x", sender_name="BlueLake")
    assert "this tool calls it" not in either.value.message


def test_a_field_given_under_both_its_names_is_told_so(call, project):
    """QA, session 40: respond_contact with agent_name and to_agent (its other name) answered
    "to_agent: Extra inputs are not permitted. Did you mean 'from_agent'?"."""
    with pytest.raises(InvalidArgument) as both:
        call("respond_contact", project_key=project, agent_name="GreenCastle", to_agent="GreenCastle", from_agent="BlueLake",
             accept=True)
    assert both.value.message == ("Invalid arguments: to_agent: Extra inputs are not permitted"
                                  " ('to_agent' is another name of 'agent_name', which was given too: send one of them)")


def test_a_field_named_by_the_last_part_of_its_name_is_pointed_to_it(call, project):
    """QA session 36: ensure_overseer(name=...) and send_overseer_message(sender=...) got only "Extra inputs
    are not permitted" (too far from overseer_name for difflib). The last part of one field's name points
    to it, and the person's name is the sender's under its other names; two fields ending so are no telling."""
    with pytest.raises(InvalidArgument) as named:
        call("ensure_overseer", project_key=project, name="Boss")
    assert named.value.message == "Invalid arguments: name: Extra inputs are not permitted. Did you mean 'overseer_name'?"
    for field in ("sender", "sender_name", "agent_name"):
        with pytest.raises(InvalidArgument) as sent:
            call("send_overseer_message", project_key=project, to=["BlueLake"], subject="s", body_md="b", **{field: "Boss"})
        assert sent.value.message.endswith(f"{field}: Extra inputs are not permitted (this tool calls it 'overseer_name')")
    with pytest.raises(InvalidArgument) as keyed:  # project_key or idempotency_key
        call("send_message", project_key=project, agent_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b", key="k")
    assert keyed.value.message == "Invalid arguments: key: Extra inputs are not permitted"


def test_only_a_name_generated_when_omitted_says_to_omit_it(call, project):
    """QA session 33: every agent-name field said "Omit the name to get one generated", which is
    register_agent's; an agent that followed it got "agent_name: Field required". Name@project as
    one's own name (acting on mail from another project) is told how to act there."""
    with pytest.raises(InvalidArgument) as own:
        call("fetch_inbox", project_key=project, agent_name="BlueLake@work-api")
    assert "Omit" not in own.value.message and "pass that project as project_key and the name alone" in own.value.message
    with pytest.raises(InvalidArgument) as recipient:
        call("send_message", project_key=project, agent_name="BlueLake", to=["Blue Lake"], subject="s", body_md="b")
    assert recipient.value.message.endswith("'Blue Lake' is not a valid agent name. Agent names are 2-64 letters and digits"
                                            " starting with a letter, e.g. GreenCastle.")
    for tool, field in (("register_agent", "agent_name"), ("create_agent_identity", "name_hint")):
        with pytest.raises(InvalidArgument, match="Omit the name to get one generated"):
            call(tool, project_key=project, program="p", model="m", **{field: "Blue Lake"})
    with pytest.raises(InvalidArgument, match="Omit the name to get one generated"):
        call("macro_start_session", human_key="/work/demo", program="p", model="m", agent_name="Blue Lake")


def test_a_value_of_the_wrong_form_is_refused_in_words_not_by_its_regular_expression(call, project):
    """QA session 36: an upper-case or short sha256, an attachment name with a folder, a media type in
    capitals and another tool's cursor were refused by quoting the pattern ("String should match pattern
    '^[0-9a-f]{64}$'"); each says what is expected instead (the schemas still give the patterns)."""
    def refusal(tool, **arguments) -> str:
        with pytest.raises(InvalidArgument) as refused:
            call(tool, project_key=project, **arguments)
        assert "pattern" not in refused.value.message and "^" not in refused.value.message
        return refused.value.message

    for sha256 in ("AB" * 32, "ab"):
        assert refusal("get_attachment", agent_name="BlueLake", message_id="1", sha256=sha256) == (
            f"Invalid arguments: sha256: {sha256!r} is not a SHA-256 as attachments list it: 64 hex digits in lower case"
            " (0-9, a-f)")
    sent = dict(agent_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b")
    assert refusal("send_message", **sent, attachments=[{"name": "logs/a.txt", "content_base64": "eA=="}]).endswith(
        "attachments.0.name: 'logs/a.txt' is not a file name: no folders (/ or \\) and no control characters")
    assert refusal("send_message", **sent, attachments=[{"name": "a.txt", "content_base64": "eA==", "media_type": "Text/Plain"}]
                   ).endswith("attachments.0.media_type: 'Text/Plain' is not a media type: type/subtype in lower case, e.g. text/plain")
    others = {"search_messages": "12345.3", "list_agents": "tx,i1", "wait_for_mail": "m1.abc" + ".def" * 20}
    for tool, cursor in others.items():  # another tool's next_cursor, given to fetch_inbox, list_threads or list_agents
        for taker, arguments in (("fetch_inbox", {"agent_name": "BlueLake"}), ("list_threads", {}), ("list_agents", {})):
            if taker != tool:
                assert refusal(taker, **arguments, cursor=cursor) == (
                    f"Invalid arguments: cursor: {cursor!r} is not a cursor this tool gave: pass the next_cursor of its"
                    " previous page as it came, or omit it for the first page")


def test_an_unknown_agent_gets_the_closest_names(call, project):
    with pytest.raises(NotFound, match="Did you mean 'GreenCastle'"):
        call("send_message", project_key=project, agent_name="BlueLake", to=["GreenCastel"], subject="s", body_md="b")


def test_unknown_tools_and_fields_over_rest_and_mcp(server):
    misspelt = httpx.post(f"{server}/api/send_mesage", json={})
    assert misspelt.status_code == 404
    assert "Did you mean 'send_message'" in misspelt.json()["error"]["message"]
    assert misspelt.json()["error"]["hint"]
    field = httpx.post(f"{server}/api/fetch_inbox", json={"project_key": "p", "agent_name": "BlueLake", "limt": 3})
    assert field.status_code == 422 and "Did you mean 'limit'" in field.json()["error"]["message"]

    async def session(mode):
        async with Client(f"{server}/mcp", mode=mode) as client:
            return await client.call_tool("fetch_inbx", {})

    for mode in ("legacy", "auto"):  # the lean path and the SDK's sessions
        result = asyncio.run(session(mode))
        assert result.is_error
        error = json.loads(result.content[0].text)["error"]
        assert error["code"] == "not_found" and "Did you mean 'fetch_inbox'" in error["message"] and error["hint"]


def test_a_text_too_long_is_counted_in_characters(server):
    """QA session 36: a subject, body, thread id or slot over its bound (checked after the text's own
    validators) was "Value should have at most 512 items after validation, not 600"."""
    with httpx.Client(base_url=server, timeout=30) as client:
        sent = client.post("/api/send_message", json={"project_key": "p", "agent_name": "BlueLake", "to": ["GreenCastle"],
                                                       "subject": "s" * 600, "body_md": "b" * 262_145})
        searched = client.get("/api/search_messages", params={"project_key": "p", "query": "q", "thread_id": "t" * 200})
        slot = client.post("/mcp", headers={"Accept": "application/json, text/event-stream"}, json={
            "jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "acquire_build_slot", "arguments": {"project_key": "p", "agent_name": "BlueLake", "slot": "x" * 129}}})
    assert sent.status_code == 422 and searched.status_code == 422
    assert sent.json()["error"]["message"] == (
        "Invalid arguments: subject: String should have at most 512 characters, not 600;"
        " body_md: String should have at most 262144 characters, not 262145")
    assert "thread_id: String should have at most 128 characters, not 200" in searched.json()["error"]["message"]
    assert "slot: String should have at most 128 characters, not 129" in slot.json()["result"]["content"][0]["text"]


def test_a_validation_error_names_a_few_problems_and_how_many_more(server):
    """60,000 unknown keys (a 750 KiB body) came back as a 2.4 MB 422 naming each, after 0.7 s
    on the event loop (REST; 1.3 s over MCP) guessing what each was meant to be."""
    many = {"project_key": "p", "agent_name": "BlueLake", **{f"k{n}": 1 for n in range(60_000)}}
    some = {"a" * 5000: 1, "project_key": "p", "agent_name": "BlueLake", **{f"k{n}": 1 for n in range(30)}}
    mcp = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whois", "arguments": many}}
    with httpx.Client(base_url=server, timeout=30) as client:
        refused = client.post("/api/whois", json=many)
        listed = client.post("/api/whois", json=some)
        over_mcp = client.post("/mcp", json=mcp, headers={"Accept": "application/json, text/event-stream"})
    assert refused.status_code == 422 and len(refused.content) < 1000
    assert "60002 fields, more than any input takes" in refused.json()["error"]["message"]
    error = json.loads(over_mcp.json()["result"]["content"][0]["text"])["error"]
    assert error["code"] == "invalid_argument" and "60002 fields" in error["message"] and len(over_mcp.content) < 1000
    message = listed.json()["error"]["message"]
    assert listed.status_code == 422 and len(message) < 1000 and message.endswith("; and 21 more")
    assert message.count("Extra inputs are not permitted") == 10 and "a" * 100 + "…: Extra" in message


def test_unknown_tool_through_the_sdk_path_has_the_error_shape(tmp_path):
    server = build_mcp_server(Settings(database_url=f"sqlite:///{tmp_path}/a.db"))
    result = asyncio.run(server.call_tool("whoiss", {}))
    assert result.is_error and json.loads(result.content[0].text)["error"]["message"].endswith("Did you mean 'whois'?")


def test_profiles_choose_what_tools_list_offers(tmp_path):
    def listed(profile):
        settings = Settings(database_url=f"sqlite:///{tmp_path}/a.db", tools_profile=profile)
        tools = asyncio.run(build_mcp_server(settings).list_tools())
        return {tool.name for tool in tools}, len(json.dumps([tool.model_dump(mode="json") for tool in tools]))

    (full, full_size), (core, core_size), (minimal, minimal_size) = map(listed, ("full", "core", "minimal"))
    assert full == {tool.name for tool in all_tools()}
    assert core == set(CORE) and minimal == set(MINIMAL) and minimal < core < full
    assert core_size < full_size / 3


def provoked(call, tmp_path) -> list[tuple[str, str]]:
    """(tool, text) of what an agent meets in a session: the answers, refusals and notices of starting,
    asking for contact, answering it and writing, the hints of a mistyped project, agent, message
    id, thread id, cursor or reservation, and the refusals of a retired agent and an archived project."""
    said = []

    def attempt(tool, **arguments):
        try:
            answer = call(tool, **arguments)
        except ToolError as error:
            said.append((tool, f"{error.message} {error.hint}"))
            return None
        said.append((tool, json.dumps(answer)))
        return answer

    def notices(tool, agent):
        for message in attempt("fetch_inbox", project_key=slug, agent_name=agent, include_bodies=True)["messages"]:
            said.append((tool, message["body_md"]))

    repo = str(tmp_path / "shop")
    one = attempt("macro_start_session", human_key=repo, program="p", model="m")
    other = attempt("macro_start_session", human_key=repo, program="p", model="m")
    slug, a, b = one["project"]["slug"], one["agent"]["name"], other["agent"]["name"]
    attempt("send_message", project_key=slug, agent_name=a, to=[b], subject="s", body_md="b")  # not admitted
    attempt("request_contact", project_key=slug, agent_name=a, to_agent=b, reason="pair")
    attempt("send_message", project_key=slug, agent_name=a, to=[b], subject="s", body_md="b")  # the request pending
    notices("request_contact", b)
    attempt("respond_contact", project_key=slug, agent_name=b, from_agent=a, accept=True)
    notices("respond_contact", a)
    sent = attempt("send_message", project_key=slug, agent_name=a, to=[b], subject="s", body_md="b", thread_id="T-1")
    attempt("reply_message", project_key=slug, agent_name=b, message_id=sent["message"]["id"], body_md="r")
    attempt("send_message", project_key=slug, agent_name=a, to=["Nobody"], subject="s", body_md="b")
    attempt("fetch_inbox", project_key="no-such-project", agent_name=a)
    attempt("fetch_inbox", project_key=f"{repo}/src", agent_name=a)
    attempt("list_agents", project_key=slug.upper())
    for tool, more in (("acknowledge_message", {}), ("reply_message", {"body_md": "r"}), ("get_message", {})):
        attempt(tool, project_key=slug, agent_name=b, message_id="12345", **more)
    attempt("wait_for_mail", project_key=slug, agent_name=b, cursor="nope", timeout_seconds=0)
    elsewhere = attempt("macro_start_session", human_key=f"{repo}-api", program="p", model="m")
    attempt("set_contact_policy", project_key=slug, agent_name=b, policy="open")
    attempt("send_message", project_key=elsewhere["project"]["slug"], agent_name=elsewhere["agent"]["name"],
            to=[f"{b}@{slug}"], subject="s", body_md="b", thread_id="API-7")
    for tool in ("get_thread", "summarize_thread"):
        for thread in ("T-2", "API-7"):  # none, and another project's
            attempt(tool, project_key=slug, agent_name=b, thread_id=thread)
    attempt("file_reservation_paths", project_key=slug, agent_name=a, paths=["src/**"])
    attempt("file_reservation_paths", project_key=slug, agent_name=b, paths=["src/app.py"])  # a conflict
    attempt("release_file_reservations", project_key=slug, agent_name=b, file_reservation_ids=["12345"])
    attempt("retire_agent", project_key=slug, agent_name=b)  # (the overseer's doing: its answer is not the agents')
    attempt("send_message", project_key=slug, agent_name=b, to=[a], subject="s", body_md="b")  # a retired sender
    attempt("send_message", project_key=slug, agent_name=a, to=[b], subject="s", body_md="b")  # and recipient
    attempt("archive_project", project_key=slug)
    attempt("send_message", project_key=slug, agent_name=a, to=[a], subject="s", body_md="b")  # from an archived project
    attempt("send_message", project_key=elsewhere["project"]["slug"], agent_name=elsewhere["agent"]["name"],
            to=[f"{a}@{slug}"], subject="s", body_md="b")  # and into one
    return said


@pytest.mark.sqlite_only
def test_every_profile_lists_the_tools_its_instructions_answers_and_hints_name(call, tmp_path, monkeypatch):
    """QA session 33: under core and minimal, the instructions, a contact request's notice (respond_contact)
    and send_message's refusal (request_contact) named tools that tools/list did not offer, which an MCP
    host does not let its model call: under core a contact request could be made, never answered."""
    every = {tool.name for tool in all_tools()}
    names = re.compile(r"\b[a-z_]+\b")
    for profile in ("full", "core", "minimal"):
        monkeypatch.setenv("TOOLS_PROFILE", profile)  # what the tools' hints read (get_settings)
        get_settings.cache_clear()
        try:
            server = build_mcp_server(Settings(database_url=f"sqlite:///{tmp_path}/{profile}.db", tools_profile=profile))
            listed = {tool.name for tool in asyncio.run(server.list_tools())}
            said = [("instructions", server.instructions), *provoked(call, tmp_path / profile)]
            quick = json.loads(stdio.quick_initialize(stdio_initialize(), profile)[1])["result"]["instructions"]
        finally:
            get_settings.cache_clear()
        assert quick == server.instructions  # the stdio server's quick answer words them alike
        unlisted = {(tool, name) for tool, text in said if tool in listed or tool == "instructions"
                    for name in set(names.findall(text)) & every - listed}
        assert not unlisted, f"{profile}: {sorted(unlisted)}"
    assert "respond_contact" in CORE and {"request_contact", "respond_contact"} <= set(MINIMAL)


def stdio_initialize() -> bytes:
    params = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}
    return json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": params}).encode() + b"\n"


@pytest.mark.sqlite_only
def test_a_profile_lists_fewer_tools_but_every_tool_stays_callable(tmp_path):
    with running_server(tmp_path / "a.db", TOOLS_PROFILE="minimal") as url:
        async def session():
            async with Client(f"{url}/mcp", mode="legacy") as client:
                names = {tool.name for tool in (await client.list_tools()).tools}
                result = await client.call_tool("ensure_project", {"human_key": "/profile/demo"})
                return names, result

        names, result = asyncio.run(session())
    assert names == set(MINIMAL)
    assert not result.is_error and result.structured_content["slug"] == "profile-demo"


def test_chalice_answers_old_names_and_hints(tmp_path, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/chalice.db")
    get_settings.cache_clear()
    try:
        # Imported only now: importing app.py builds an app on get_settings() and migrates its database.
        chalice_app = importlib.import_module("app").create_app(get_settings())
        with ChaliceClient(chalice_app, project_dir=str(ROOT)) as client:
            def post(tool, **body):
                return client.http.post(f"/api/{tool}", body=json.dumps(body), headers={"content-type": "application/json"})

            post("ensure_project", human_key="/chalice/demo")
            registered = post("register_agent", project_key="chalice-demo", program="p", model="m", name="BlueLake")
            assert registered.status_code == 200, registered.body
            waited = post("wait_for_mail", project_key="chalice-demo", agent_name="BlueLake", timeout_seconds=0)
            assert waited.status_code == 200 and json.loads(waited.body)["cursor"].startswith("m1.")
            wrong = post("fetch_inbox", project_key="chalice-demo", agent_name="BlueLake", unread_onyl=True)
            assert wrong.status_code == 422 and "Did you mean 'unread_only'" in json.loads(wrong.body)["error"]["message"]
    finally:
        get_settings.cache_clear()
