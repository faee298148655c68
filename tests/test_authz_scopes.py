"""Scoped credentials (chalicelib/security/scopes.py): bearer tokens and JWT claims map to
projects and a role (reader / writer / admin), enforced in invoke.py for every transport:
the real server (REST, MCP lean path, MCP SDK path via resources/read), the Chalice app and
its `mcp` function. With agent tokens on, reading mail needs being its sender or recipient."""

import hashlib
import json
import os

import httpx
import jwt
import pytest
from chalice.test import Client

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.errors import Forbidden, NotFound
from chalicelib.security import auth, scopes
from chalicelib.tools import tools_by_name

from .aws_events import CONTEXT, MCP_HEADERS, http_api_event, rest_api_event, rpc, tool_call
from .servers import ROOT, running_server
from .test_auth import AUDIENCE, ISSUER, app_module, chalice_settings, claims, jwks_url, keys  # noqa: F401 (fixtures)

TOOLS = tools_by_name()
ADMIN = "admin-token"
TOKENS = [
    ADMIN,  # a plain token: every project, admin (as before scopes existed)
    {"token": "alpha-writer", "projects": ["alpha"], "role": "writer"},
    {"token": "alpha-reader", "projects": ["/alpha"], "role": "reader"},  # a human key names the project too
    {"token": "beta-writer", "projects": ["beta"], "role": "writer"},
    {"token": "both-writer", "projects": ["alpha", "beta"], "role": "writer"},
]


def post(client, token, tool, **arguments):
    response = client.post(f"/api/{tool}", json=arguments, headers={"Authorization": f"Bearer {token}"})
    return response.status_code, response.json()


def mcp(client, token, message):
    response = client.post("/mcp", json=message, headers=MCP_HEADERS | {"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.json()


def mcp_tool(client, token, tool, **arguments):
    """(is_error, structured result or error body) of a tools/call over the lean path."""
    result = mcp(client, token, tool_call(tool, arguments))["result"]
    return result["isError"], json.loads(result["content"][0]["text"])


def setup_world(call):
    """Projects alpha and beta (linked in product ab); alpha: BlueLake, GreenCastle, PinkDog;
    beta: RedStone; all open. BlueLake wrote GreenCastle in thread T-1 (with an ack asked).
    Returns the agents' tokens and the message id."""
    tokens = {}
    for project, names in (("/alpha", ["BlueLake", "GreenCastle", "PinkDog"]), ("/beta", ["RedStone"])):
        call("ensure_project", human_key=project)
        for name in names:
            tokens[name] = call("register_agent", project_key=project, program="p", model="m", name=name)["registration_token"]
            call("set_contact_policy", project_key=project, agent_name=name, policy="open", registration_token=tokens[name])
    call("ensure_product", product_key="ab")
    for project in ("alpha", "beta"):
        call("products_link", product_key="ab", project_key=project)
    sent = call("send_message", project_key="alpha", sender_name="BlueLake", to=["GreenCastle"], subject="Secret plan",
                body_md="- decided: ship", thread_id="T-1", ack_required=True, sender_token=tokens["BlueLake"])
    return tokens, sent["message"]["id"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    database = tmp_path_factory.mktemp("scopes") / "agent_mail.db"
    env = dict(AUTH_MODE="bearer", AUTH_BEARER_TOKENS=json.dumps(TOKENS), CONTACT_REQUESTS_PER_AGENT_PER_HOUR="1")
    with running_server(database, **env) as url:
        with httpx.Client(base_url=url, timeout=30) as client:

            def call(tool, **arguments):
                status, body = post(client, ADMIN, tool, **arguments)
                assert status == 200, body
                return body

            client.tokens, client.message_id = setup_world(call)
            yield client


def not_found(answer, key, instead):
    """A 404 answer for product `key`, as it reads for product `instead`."""
    status, body = answer
    assert status == 404 and body["error"]["code"] == "not_found"
    return status, json.loads(json.dumps(body).replace(repr(key), repr(instead)))


def forbidden(answer):
    status, body = answer
    return status == 403 and body["error"]["code"] == "forbidden"


def test_a_scoped_credential_reaches_only_its_projects(world):
    assert forbidden(post(world, "alpha-writer", "get_project", project_key="beta"))
    assert forbidden(post(world, "alpha-writer", "list_agents", project_key="/beta"))
    assert post(world, "alpha-writer", "get_project", project_key="alpha")[0] == 200
    # an unknown project gets the same refusal as a known one out of scope
    unknown = post(world, "alpha-writer", "get_project", project_key="gamma")
    assert forbidden(unknown) and unknown[1]["error"]["message"].replace("gamma", "beta") == \
        post(world, "alpha-writer", "get_project", project_key="beta")[1]["error"]["message"]
    assert forbidden(post(world, "beta-writer", "ensure_project", human_key="/gamma"))
    # /Alpha's plain slug is alpha's: it would get alpha-<6 hex digits>, out of the scope that lists alpha
    for path in ("/Alpha", "/ALPHA/"):
        assert forbidden(post(world, "alpha-writer", "ensure_project", human_key=path))
    assert [p["human_key"] for p in post(world, ADMIN, "list_projects")[1]["projects"]][:2] == ["/alpha", "/beta"]
    # a count of projects counts those in scope
    assert post(world, "alpha-writer", "health_check")[1]["projects"] == 1
    assert post(world, "both-writer", "health_check")[1]["projects"] == 2
    assert post(world, ADMIN, "health_check")[1]["projects"] == len(post(world, ADMIN, "list_projects")[1]["projects"])
    # Name@project addresses: writing into another project's inbox is reaching that project
    tokens = world.tokens
    assert forbidden(post(world, "alpha-writer", "send_message", project_key="alpha", sender_name="BlueLake",
                          to=["RedStone@beta"], subject="x", body_md="y", sender_token=tokens["BlueLake"]))
    assert forbidden(post(world, "alpha-writer", "request_contact", project_key="alpha", from_agent="BlueLake",
                          to_agent="RedStone@beta", registration_token=tokens["BlueLake"]))
    # lists show what is in scope only
    status, projects = post(world, "alpha-writer", "list_projects")
    assert status == 200 and [p["slug"] for p in projects["projects"]] == ["alpha"]
    status, products = post(world, "beta-writer", "list_products")
    assert [[p["slug"] for p in product["projects"]] for product in products["products"]] == [["beta"]]
    assert [p["slug"] for p in post(world, ADMIN, "get_product", product_key="ab")[1]["projects"]] == ["alpha", "beta"]
    # unlinking a project from a product is writing to that project
    assert forbidden(post(world, "alpha-writer", "products_unlink", product_key="ab", project_key="beta"))
    # a product call may reach only projects in scope
    assert forbidden(post(world, "alpha-writer", "fetch_inbox_product", product_key="ab", agent_name="GreenCastle",
                          registration_token=tokens["GreenCastle"]))
    assert forbidden(post(world, "alpha-writer", "search_messages_product", product_key="ab", query="plan"))
    # a tool that names no project reaches all of them
    assert forbidden(post(world, "alpha-writer", "archive_status"))
    assert post(world, "alpha-writer", "archive_status", project_key="alpha")[0] == 200


def test_every_address_field_is_checked_against_the_scope(world):
    """search_messages' recipient (Name@project) was not: a credential of alpha told beta's agents
    (200) from made-up ones (404), and beta from a project that does not exist (404)."""
    bob = dict(project_key="alpha", query="plan", agent_name="BlueLake", registration_token=world.tokens["BlueLake"])
    answers = [post(world, "alpha-writer", "search_messages", **bob, recipient=address)
               for address in ("RedStone@beta", "Nobody@beta", "RedStone@gamma", "RedStone@%2Fbeta")]
    assert all(forbidden(answer) for answer in answers)
    assert len({answer[1]["error"]["message"].replace("%2Fbeta", "beta").replace("gamma", "beta") for answer in answers}) == 1
    assert post(world, "alpha-writer", "search_messages", **bob, recipient="GreenCastle@alpha")[1]["results"]
    # the same for any field that takes an address, today's and tomorrow's
    for tool in TOOLS.values():
        for name, field in tool.input.model_fields.items():
            if "@" in json.dumps(tool.input.model_json_schema()["properties"][field.alias or name]):
                assert name in scopes.ADDRESS_FIELDS, (tool.name, name)


def test_hints_and_notes_name_no_project_out_of_scope(call, settings):
    """A credential scoped to /beta/sub (not created yet) asking for it was told "It is inside
    project 'beta' (/beta)": a project it may not see, by slug and path."""
    call("ensure_project", human_key="/beta")
    sub = auth.scoped("bearer", "bearer:sub", ["/beta/sub"], "writer")
    both = auth.scoped("bearer", "bearer:both", ["/beta", "/beta/sub", "/beta/other"], "writer")

    def as_(principal, tool, **arguments):
        return invoke.call(TOOLS[tool], arguments, settings, principal)

    with pytest.raises(NotFound) as missing:
        as_(sub, "get_project", project_key="/beta/sub")
    assert "beta" not in missing.value.hint.replace("/beta/sub", "")
    with pytest.raises(NotFound) as missing:  # a project in scope is named as before
        as_(both, "get_project", project_key="/beta/sub")
    assert "inside project 'beta' (/beta)" in missing.value.hint
    with pytest.raises(NotFound) as missing:  # a write's preparation too (it ran outside the scope)
        as_(sub, "macro_prepare_thread", project_key="/beta/sub", thread_id="T1", program="p", model="m", agent_name="BlueLake",
            registration_token="any")
    assert "beta" not in missing.value.hint.replace("/beta/sub", "")
    created = as_(sub, "ensure_project", human_key="/beta/sub")
    assert created.slug == "beta-sub" and created.note is None
    assert "inside project 'beta'" in as_(both, "ensure_project", human_key="/beta/other").note


def test_a_scoped_credentials_pages_hold_its_projects_only(world):
    """The scope narrows the query itself: no page is cut short, no cursor is another project's."""
    status, first = post(world, ADMIN, "list_projects", limit=1)
    assert [p["slug"] for p in first["projects"]] == ["alpha"] and first["next_cursor"]
    status, beta = post(world, "beta-writer", "list_projects", limit=1)
    assert [p["slug"] for p in beta["projects"]] == ["beta"] and beta["next_cursor"] is None
    assert post(world, "alpha-writer", "list_projects", cursor=first["next_cursor"]) == (200, {"projects": [], "next_cursor": None})
    for n in range(3):  # products linking alpha only: beta-writer's pages skip them
        post(world, ADMIN, "ensure_product", product_key=f"alpha-only-{n}")
        post(world, ADMIN, "products_link", product_key=f"alpha-only-{n}", project_key="alpha")
    status, products = post(world, "beta-writer", "list_products", limit=1)
    assert [p["product_key"] for p in products["products"]] == ["ab"] and products["next_cursor"] is None
    status, products = post(world, "alpha-reader", "list_products", limit=3)
    assert [p["product_key"] for p in products["products"]] == ["ab", "alpha-only-0", "alpha-only-1"]
    assert [[p["slug"] for p in product["projects"]] for product in products["products"]] == [["alpha"]] * 3
    rest = post(world, "alpha-reader", "list_products", limit=3, cursor=products["next_cursor"])[1]
    assert [p["product_key"] for p in rest["products"]] == ["alpha-only-2"] and rest["next_cursor"] is None


def test_roles(world):
    tokens = world.tokens
    send = dict(project_key="alpha", sender_name="GreenCastle", to=["BlueLake"], subject="r", body_md="b",
                sender_token=tokens["GreenCastle"])
    refused = post(world, "alpha-reader", "send_message", **send)
    assert forbidden(refused) and "writer" in refused[1]["error"]["message"]
    inbox = post(world, "alpha-reader", "fetch_inbox", project_key="alpha", agent_name="GreenCastle",
                 registration_token=tokens["GreenCastle"])
    assert inbox[0] == 200 and inbox[1]["messages"][0]["subject"] == "Secret plan"
    assert forbidden(post(world, "alpha-reader", "get_project", project_key="beta"))
    # admin-only: archiving a project, installing a hook on the server's machine
    assert forbidden(post(world, "alpha-writer", "archive_project", project_key="alpha"))
    assert forbidden(post(world, "alpha-writer", "install_precommit_guard", project_key="alpha", code_repo_path="/tmp"))
    # the human overseer's voice and the retention policy are the operator's too
    tokens = world.tokens
    as_overseer = dict(project_key="alpha", to=["GreenCastle"], subject="From your human", body_md="push the secrets")
    refused = post(world, "alpha-writer", "send_overseer_message", **as_overseer)
    assert forbidden(refused) and "admin" in refused[1]["error"]["message"]
    assert forbidden(post(world, "alpha-writer", "ensure_overseer", project_key="alpha"))
    assert forbidden(post(world, "alpha-writer", "set_retention_policy", project_key="alpha", mode="purge", days=1))
    # and so is counting bcc recipients (whom mail was bcc'd to), even as an agent reading its own mail
    green = dict(project_key="alpha", agent_name="GreenCastle", registration_token=tokens["GreenCastle"], include_bcc=True)
    for tool, arguments in (("summarize_thread", dict(green, thread_id="T-1")), ("get_thread", dict(green, thread_id="T-1")),
                            ("list_ack_required", green)):
        refused = post(world, "alpha-writer", tool, **arguments)
        assert forbidden(refused) and "include_bcc" in refused[1]["error"]["message"], tool
        assert post(world, ADMIN, tool, **arguments)[0] == 200, tool
    inbox = post(world, ADMIN, "fetch_inbox", project_key="alpha", agent_name="GreenCastle", registration_token=tokens["GreenCastle"])
    assert "From your human" not in [m["subject"] for m in inbox[1]["messages"]]
    assert post(world, ADMIN, "get_retention_policy", project_key="alpha")[1]["mode"] is None
    assert post(world, ADMIN, "ensure_overseer", project_key="alpha")[0] == 200
    assert post(world, ADMIN, "get_project", project_key="beta")[0] == 200


def test_reading_mail_needs_being_its_sender_or_recipient(world):
    tokens, mid = world.tokens, world.message_id
    pink = dict(agent_name="PinkDog", registration_token=tokens["PinkDog"])
    for tool, arguments in (
        ("get_thread", dict(project_key="alpha", thread_id="T-1")),
        ("summarize_thread", dict(project_key="alpha", thread_id="T-1")),
        ("get_message", dict(project_key="alpha", message_id=mid)),
    ):
        assert forbidden(post(world, "alpha-writer", tool, **arguments))  # as nobody: refused
        assert post(world, "alpha-writer", tool, **arguments, **pink)[0] == 404  # as a stranger to it: not there
        status, _ = post(world, "alpha-writer", tool, **arguments, agent_name="GreenCastle",
                         registration_token=tokens["GreenCastle"])
        assert status == 200
        assert post(world, ADMIN, tool, **arguments)[0] == 200  # an admin (operator, overseer) reads everything
    assert forbidden(post(world, "alpha-writer", "get_thread", project_key="alpha", thread_id="T-1",
                          agent_name="GreenCastle", registration_token=tokens["PinkDog"]))
    assert forbidden(post(world, "alpha-writer", "search_messages", project_key="alpha", query="plan"))
    status, found = post(world, "alpha-writer", "search_messages", project_key="alpha", query="plan", **pink)
    assert status == 200 and found["results"] == []
    status, found = post(world, "alpha-writer", "search_messages", project_key="alpha", query="plan",
                         agent_name="BlueLake", registration_token=tokens["BlueLake"])
    assert [hit["id"] for hit in found["results"]] == [mid]
    status, threads = post(world, "alpha-writer", "list_threads", project_key="alpha", **pink)
    assert status == 200 and threads["threads"] == []
    # and nobody replies into a thread it is not part of
    status, _ = post(world, "alpha-writer", "reply_message", project_key="alpha", message_id=mid, sender_name="PinkDog",
                     body_md="me too", sender_token=tokens["PinkDog"])
    assert status == 404


def test_over_mcp_lean_path_and_sdk_resources(world):
    is_error, body = mcp_tool(world, "alpha-writer", "get_project", project_key="beta")
    assert is_error and body["error"]["code"] == "forbidden"
    is_error, body = mcp_tool(world, "alpha-writer", "list_projects")
    assert not is_error and [p["slug"] for p in body["projects"]] == ["alpha"]
    # resources/read is answered by the SDK transport, not the lean path: the same principal applies
    refused = mcp(world, "alpha-writer", rpc("resources/read", {"uri": "resource://project/beta"}))
    assert refused["error"]["data"]["error"]["code"] == "forbidden"
    thread = mcp(world, "alpha-writer", rpc("resources/read", {"uri": "resource://thread/T-1?project=alpha"}))
    assert thread["error"]["data"]["error"]["code"] == "forbidden"  # reading mail as nobody
    listed = mcp(world, "alpha-writer", rpc("resources/read", {"uri": "resource://projects"}))
    assert [p["slug"] for p in json.loads(listed["result"]["contents"][0]["text"])["projects"]] == ["alpha"]
    green = f"agent=GreenCastle&token={world.tokens['GreenCastle']}"
    own = mcp(world, "alpha-writer", rpc("resources/read", {"uri": f"resource://thread/T-1?project=alpha&{green}"}))
    assert json.loads(own["result"]["contents"][0]["text"])["messages"][0]["subject"] == "Secret plan"
    pink = f"agent=PinkDog&token={world.tokens['PinkDog']}"
    stranger = mcp(world, "alpha-writer", rpc("resources/read", {"uri": f"resource://thread/T-1?project=alpha&{pink}"}))
    assert stranger["error"]["data"]["error"]["code"] == "not_found"
    admin = mcp(world, ADMIN, rpc("resources/read", {"uri": "resource://thread/T-1?project=alpha"}))
    assert json.loads(admin["result"]["contents"][0]["text"])["messages"][0]["subject"] == "Secret plan"


def test_chalice_app_and_mcp_function(tmp_path, app_module):  # noqa: F811
    settings = chalice_settings(tmp_path, auth_mode="bearer", auth_bearer_tokens=json.dumps(TOKENS))
    chalice_app = app_module.create_app(settings)

    def call(tool, **arguments):
        return invoke.call(TOOLS[tool], arguments, settings).model_dump(mode="json")  # in process: the operator

    setup_world(call)
    with Client(chalice_app, project_dir=str(ROOT)) as client:

        def request(token, tool, **arguments):
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            response = client.http.post(f"/api/{tool}", headers=headers, body=json.dumps(arguments).encode())
            return response.status_code, json.loads(response.body)

        assert forbidden(request("alpha-writer", "get_project", project_key="beta"))
        assert [p["slug"] for p in request("alpha-writer", "list_projects")[1]["projects"]] == ["alpha"]
        assert forbidden(request("alpha-reader", "ensure_project", human_key="/alpha"))
        assert forbidden(request("alpha-writer", "get_thread", project_key="alpha", thread_id="T-1"))
        assert request(ADMIN, "get_thread", project_key="alpha", thread_id="T-1")[0] == 200

    headers = MCP_HEADERS | {"Authorization": "Bearer alpha-writer"}
    answer = chalice_app(rest_api_event("POST", "/mcp", tool_call("get_project", {"project_key": "beta"}), headers), CONTEXT)
    assert json.loads(json.loads(answer["body"])["result"]["content"][0]["text"])["error"]["code"] == "forbidden"
    function = chalice_app.handler_map["mcp"]
    answer = function(http_api_event("POST", "/mcp", tool_call("get_project", {"project_key": "beta"}), headers), CONTEXT)
    assert json.loads(json.loads(answer["body"])["result"]["content"][0]["text"])["error"]["code"] == "forbidden"
    answer = function(http_api_event("POST", "/mcp", tool_call("get_project", {"project_key": "alpha"}), headers), CONTEXT)
    assert not json.loads(answer["body"])["result"]["isError"]


def test_scoped_bearer_configuration():
    settings = Settings(auth_mode="bearer", auth_bearer_tokens=json.dumps(TOKENS))
    authenticator = auth.Authenticator(settings)
    principal = authenticator.authenticate({"authorization": "Bearer alpha-reader"})
    assert (principal.role, principal.projects) == ("reader", frozenset({"/alpha"}))
    assert authenticator.authenticate({"authorization": f"Bearer {ADMIN}"}).unrestricted
    assert Settings(auth_bearer_tokens="one,two").auth_bearer_tokens == ["one", "two"]  # the old format holds
    with pytest.raises(ValueError):
        Settings(auth_bearer_tokens='[{"token": "t", "role": "owner"}]')


@pytest.mark.parametrize("entries, why", [
    # The last entry won: the scoped reader's token was every project's admin.
    ([{"token": "shared-secret", "projects": ["p1"], "role": "reader"}, "shared-secret"], "entry 1: the token of an earlier entry"),
    (["one-secret", "two-secret", "one-secret"], "entry 2: the token of an earlier entry"),
    # Never matched: the server strips the header's token, and HTTP carries no UTF-8 as written.
    (["fine-secret", " padded-secret "], "entry 1: a token must be printable ASCII"),
    ([{"token": "café-secret"}], "entry 0: a token must be printable ASCII"),
])
def test_bearer_tokens_that_would_be_taken_wrongly_stop_the_server(entries, why):
    with pytest.raises(ValueError, match=why) as refused:
        Settings(auth_bearer_tokens=json.dumps(entries))
    assert "secret" not in str(refused.value)  # the entry's position, never the token


def test_jwt_claims_scope_the_principal(tmp_path, keys, jwks_url):  # noqa: F811
    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", auth_mode="jwt", jwt_jwks_url=jwks_url,
                        jwt_audience=AUDIENCE, jwt_issuer=ISSUER)
    authenticator = auth.Authenticator(settings)

    def principal(**extra):
        token = jwt.encode(claims(**extra), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
        return authenticator.authenticate({"authorization": f"Bearer {token}"})

    scoped = principal(agent_mail_projects="alpha beta", agent_mail_role="reader")
    assert (scoped.role, scoped.projects) == ("reader", frozenset({"alpha", "beta"}))
    assert principal(agent_mail_projects=["alpha"]).projects == frozenset({"alpha"})
    assert principal(agent_mail_projects="*", agent_mail_role="writer").projects is None
    for every in (["alpha", "*"], "alpha *", "alpha,*"):  # "*" among them in a string reached none but alpha
        assert principal(agent_mail_projects=every).projects is None, every
    assert principal().unrestricted  # no claims: every project, admin (as before)
    with pytest.raises(auth.Unauthorized, match="claim"):
        principal(agent_mail_role="root")
    renamed = Settings(**{**settings.model_dump(), "jwt_role_claim": "https://example.com/role"})
    token = jwt.encode(claims(**{"https://example.com/role": "reader"}), keys.rsa, algorithm="RS256", headers={"kid": "rsa-1"})
    assert auth.Authenticator(renamed).authenticate({"authorization": f"Bearer {token}"}).role == "reader"

    call = lambda tool, **arguments: invoke.call(TOOLS[tool], arguments, settings)  # noqa: E731
    call("ensure_project", human_key="/alpha")
    with pytest.raises(Forbidden):
        invoke.call(TOOLS["ensure_project"], {"human_key": "/gamma"}, settings, scoped)
    with pytest.raises(Forbidden):
        invoke.call(TOOLS["ensure_project"], {"human_key": "/alpha"}, settings, scoped)  # a reader does not write
    assert invoke.call(TOOLS["get_project"], {"project_key": "alpha"}, settings, scoped).slug == "alpha"


def test_mail_findings_over_http_with_agent_tokens(world):
    """fetch_inbox_product answered 500 with agent tokens on; auto_accept accepted for the
    target; bcc showed in open_acks; contact requests were unlimited."""
    tokens = world.tokens
    status, inbox = post(world, "alpha-writer", "fetch_inbox", project_key="alpha", agent_name="GreenCastle",
                         registration_token=tokens["GreenCastle"])
    status, product_inbox = post(world, ADMIN, "fetch_inbox_product", product_key="ab", agent_name="GreenCastle",
                                 registration_token=tokens["GreenCastle"])
    assert status == 200 and [m["id"] for m in product_inbox["messages"]] == [m["id"] for m in inbox["messages"]]
    assert forbidden(post(world, ADMIN, "fetch_inbox_product", product_key="ab", agent_name="GreenCastle",
                          registration_token=tokens["PinkDog"]))

    status, rose = post(world, ADMIN, "register_agent", project_key="beta", program="p", model="m", name="RoseHill")
    rose_token = rose["registration_token"]
    assert post(world, ADMIN, "set_contact_policy", project_key="beta", agent_name="RoseHill", policy="contacts_only",
                registration_token=rose_token)[0] == 200
    shake = dict(project_key="alpha", requester="PinkDog", target="RoseHill@beta", auto_accept=True,
                 registration_token=tokens["PinkDog"])
    assert forbidden(post(world, ADMIN, "macro_contact_handshake", **shake))
    status, accepted = post(world, ADMIN, "macro_contact_handshake", **shake, target_token=rose_token)
    assert status == 200 and accepted["response"]["status"] == "approved"

    status, _ = post(world, ADMIN, "send_message", project_key="alpha", sender_name="BlueLake", to=["GreenCastle"],
                     bcc=["PinkDog"], subject="quiet", body_md="b", thread_id="T-BCC", ack_required=True,
                     sender_token=tokens["BlueLake"])
    status, summary = post(world, ADMIN, "summarize_thread", project_key="alpha", thread_id="T-BCC")
    assert status == 200 and [ack["agent"] for ack in summary["open_acks"]] == ["GreenCastle"]

    # CONTACT_REQUESTS_PER_AGENT_PER_HOUR=1 on this server: PinkDog asked RoseHill already
    response = world.post("/api/request_contact", headers={"Authorization": f"Bearer {ADMIN}"}, json=dict(
        project_key="alpha", from_agent="PinkDog", to_agent="RedStone@beta", registration_token=tokens["PinkDog"]))
    assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limited"
    assert 3000 < int(response.headers["retry-after"]) <= 3600


def test_views_of_every_agents_mail_are_the_admins(world):
    """The unified inbox and a project's attention views (no agent_name) show every agent's mail,
    bcc copies included: with agent tokens on, only an admin reads them; others read as an agent."""
    tokens = world.tokens
    for token in ("alpha-reader", "alpha-writer"):
        refused = post(world, token, "unified_inbox", project_key="alpha")
        assert forbidden(refused) and "fetch_inbox" in refused[1]["error"]["hint"]
        assert forbidden(post(world, token, "unified_inbox"))
        for tool in ("list_ack_required", "list_ack_overdue", "list_urgent_unread"):
            refused = post(world, token, tool, project_key="alpha")
            assert forbidden(refused) and "agent_name" in refused[1]["error"]["hint"], tool
        status, mine = post(world, token, "list_ack_required", project_key="alpha", agent_name="GreenCastle",
                            registration_token=tokens["GreenCastle"])
        assert status == 200 and {m["recipient"] for m in mine["messages"]} == {"GreenCastle"}
        assert "Secret plan" in [m["subject"] for m in mine["messages"]]
        assert forbidden(post(world, token, "list_ack_required", project_key="alpha", agent_name="GreenCastle",
                              registration_token=tokens["PinkDog"]))
    for uri in ("resource://project-urgent-unread/alpha", "resource://project-ack-required/alpha"):
        refused = mcp(world, "alpha-reader", rpc("resources/read", {"uri": uri}))
        assert refused["error"]["data"]["error"]["code"] == "forbidden", uri
    # the admin (the operator, a human overseer) reads them all
    status, inbox = post(world, ADMIN, "unified_inbox", project_key="alpha")
    assert status == 200 and "Secret plan" in [m["subject"] for m in inbox["messages"]]
    status, waiting = post(world, ADMIN, "list_ack_required", project_key="alpha")
    assert status == 200 and ("Secret plan", "GreenCastle") in [(m["subject"], m["recipient"]) for m in waiting["messages"]]
    listed = mcp(world, ADMIN, rpc("resources/read", {"uri": "resource://project-ack-required/alpha"}))
    assert "Secret plan" in listed["result"]["contents"][0]["text"]


def test_storing_bytes_needs_the_writer_role(world):
    """PUT /api/attachments and request_attachment_upload (its presigned URL on AWS) store bytes."""
    tokens = world.tokens
    mine, theirs = os.urandom(1000), os.urandom(1000)

    def put(token, content):
        return world.put("/api/attachments", content=content, headers={"Authorization": f"Bearer {token}"})

    def upload_target(token, content):
        return post(world, token, "request_attachment_upload", project_key="alpha", agent_name="GreenCastle",
                    sha256=hashlib.sha256(content).hexdigest(), size=len(content), registration_token=tokens["GreenCastle"])

    refused = put("alpha-reader", theirs)
    assert refused.status_code == 403 and "writer" in refused.json()["error"]["message"]
    assert forbidden(upload_target("alpha-reader", theirs))
    stored = put("alpha-writer", mine)
    assert stored.status_code == 200 and stored.json()["sha256"] == hashlib.sha256(mine).hexdigest()
    assert upload_target("alpha-writer", mine)[1]["already_stored"]
    assert not upload_target("alpha-writer", theirs)[1]["already_stored"]  # the reader's bytes were not kept


def test_a_product_of_another_scope_is_neither_joined_nor_shown(world):
    """products_link put a project into another scope's product (whose tools then refused that
    scope's own credential); product answers showed other scopes' projects (human keys are paths)."""
    tokens = world.tokens
    beta_inbox = dict(product_key="bp", agent_name="RedStone", registration_token=tokens["RedStone"])
    assert post(world, "beta-writer", "ensure_product", product_key="bp")[0] == 200
    assert post(world, "beta-writer", "products_link", product_key="bp", project_key="beta")[0] == 200
    missing = post(world, "alpha-writer", "products_link", product_key="nowhere", project_key="alpha")
    assert post(world, "alpha-writer", "products_link", product_key="bp", project_key="alpha") == not_found(missing, "nowhere", "bp")
    assert post(world, "beta-writer", "fetch_inbox_product", **beta_inbox)[0] == 200  # still beta's own
    assert forbidden(post(world, "alpha-writer", "ensure_product", product_key="bp", name="Alpha's now"))  # nor renamed
    assert post(world, ADMIN, "get_product", product_key="bp")[1]["name"] == "bp"
    assert post(world, "alpha-writer", "ensure_product", product_key="ap", name="Alpha's")[1]["name"] == "Alpha's"  # its own
    # a product another scope made is that scope's, even before it links anything
    assert post(world, "beta-writer", "ensure_product", product_key="bq2")[0] == 200
    assert post(world, "alpha-writer", "products_link", product_key="bq2", project_key="alpha")[0] == 404
    assert forbidden(post(world, "alpha-writer", "ensure_product", product_key="bq2", name="taken"))
    assert forbidden(post(world, "alpha-writer", "ensure_product", product_key="bq2"))  # taken: nothing of it is told
    assert post(world, "beta-writer", "products_link", product_key="bq2", project_key="beta")[0] == 200
    # nor by a wider scope: it could link a project the maker cannot see, or rename the product
    assert post(world, "alpha-writer", "ensure_product", product_key="ap3")[0] == 200
    assert post(world, "alpha-writer", "products_link", product_key="ap3", project_key="alpha")[0] == 200
    assert forbidden(post(world, "both-writer", "products_link", product_key="ap3", project_key="beta"))
    assert forbidden(post(world, "both-writer", "ensure_product", product_key="ap3", name="wider"))
    # every answer about a product shows only the projects in the caller's scope
    assert post(world, ADMIN, "ensure_product", product_key="mixed")[0] == 200
    for project in ("alpha", "beta"):
        post(world, ADMIN, "products_link", product_key="mixed", project_key=project)
    assert [p["slug"] for p in post(world, "alpha-writer", "ensure_product", product_key="mixed")[1]["projects"]] == ["alpha"]
    assert [p["slug"] for p in post(world, "beta-writer", "products_link", product_key="bp", project_key="beta")[1]["projects"]] == ["beta"]
    status, left = post(world, "alpha-writer", "products_unlink", product_key="mixed", project_key="alpha")
    assert status == 200 and left["projects"] == []
    assert [p["slug"] for p in post(world, ADMIN, "get_product", product_key="mixed")[1]["projects"]] == ["beta"]


@pytest.mark.both_backends
def test_a_scopes_product_is_shared_with_a_scope_naming_its_projects_by_other_names(call, settings):
    """The owner's scope was compared by spelling: a credential of w-a listing it as /w/a was told
    the product w-a's credential made did not exist, then that it "links projects outside this
    credential's scope" (QA, session 32)."""
    for path in ("/w/a", "/w/b"):
        call("ensure_project", human_key=path)
    by_slug, by_path, wider = (auth.scoped("bearer", f"bearer:{n}", keys, "writer")
                               for n, keys in (("slug", ["w-a"]), ("path", ["/w/a"]), ("wider", ["/w/a", "w-b"])))

    def as_(principal, tool, **arguments):
        return invoke.call(TOOLS[tool], arguments, settings, principal)

    as_(by_slug, "ensure_product", product_key="team")
    as_(by_slug, "ensure_product", product_key="solo")
    assert as_(by_path, "get_product", product_key="team").product_key == "team"  # empty yet
    assert sorted(product.product_key for product in as_(by_path, "list_products").products) == ["solo", "team"]
    as_(by_slug, "products_link", product_key="team", project_key="w-a")
    assert as_(by_path, "ensure_product", product_key="team", name="Team A").name == "Team A"
    as_(by_path, "products_unlink", product_key="team", project_key="/w/a")
    assert [p.slug for p in as_(by_path, "products_link", product_key="team", project_key="w-a").projects] == ["w-a"]
    # A scope reaching past the maker's still neither links into its product nor sees its empty one.
    with pytest.raises(Forbidden, match="links projects outside this credential's scope"):
        as_(wider, "products_link", product_key="team", project_key="w-b")
    with pytest.raises(NotFound):
        as_(wider, "get_product", product_key="solo")
    assert [product.product_key for product in as_(wider, "list_products").products] == ["team"]


def test_a_product_the_scope_does_not_see_answers_as_a_missing_one(world):
    """get_product told a credential of beta the name and creation time of a product linking alpha
    only, which its list_products leaves out."""
    post(world, ADMIN, "ensure_product", product_key="ao", name="Alpha Only")
    post(world, ADMIN, "products_link", product_key="ao", project_key="alpha")
    for tool, arguments in (("get_product", {}), ("products_unlink", {"project_key": "beta"}),
                            ("search_messages_product", {"query": "plan"})):
        missing = post(world, "beta-writer", tool, product_key="no-such", **arguments)
        hidden = post(world, "beta-writer", tool, product_key="ao", **arguments)
        assert hidden[0] in (403, 404) and hidden == (missing[0], json.loads(json.dumps(missing[1]).replace("no-such", "ao"))), tool
    taken = post(world, "beta-writer", "ensure_product", product_key="ao")  # it cannot be made: refused, nothing told
    assert forbidden(taken) and "Alpha Only" not in json.dumps(taken) and "created" not in json.dumps(taken)
    assert "ao" not in [p["product_key"] for p in post(world, "beta-writer", "list_products")[1]["products"]]
    assert post(world, "alpha-writer", "get_product", product_key="ao")[1]["name"] == "Alpha Only"
    # a product of its own is seen before it links anything, and listed
    assert post(world, "beta-writer", "ensure_product", product_key="b-empty")[0] == 200
    assert post(world, "beta-writer", "get_product", product_key="b-empty")[0] == 200
    assert "b-empty" in [p["product_key"] for p in post(world, "beta-writer", "list_products")[1]["products"]]
    assert post(world, "alpha-writer", "get_product", product_key="b-empty")[0] == 404


def test_ensure_product_of_a_key_the_scope_does_not_see_tells_nothing_of_a_product(world):
    """ensure_product answered a key beta's credential does not see (another scope's product)
    "taken by a product outside this credential's scope": get_product said 404 for it."""
    assert post(world, "alpha-writer", "ensure_product", product_key="alpha-secret", name="Alpha Secret")[0] == 200
    assert post(world, "beta-writer", "get_product", product_key="alpha-secret")[0] == 404
    for arguments in ({}, {"name": "Mine"}):
        status, body = post(world, "beta-writer", "ensure_product", product_key="Alpha-Secret", **arguments)
        assert (status, body["error"]["code"]) == (403, "forbidden") and body["error"]["hint"], body
        told = json.dumps(body).lower()
        assert not any(word in told for word in ("taken", "product outside", "exists", "alpha secret", "created")), told
    assert post(world, "beta-writer", "ensure_product", product_key="beta-fresh")[0] == 200  # a free key is made
    assert "alpha-secret" not in [p["product_key"] for p in post(world, "beta-writer", "list_products")[1]["products"]]
    owned = post(world, "alpha-writer", "get_product", product_key="alpha-secret")[1]
    assert owned["name"] == "Alpha Secret"  # one product, its maker's, unrenamed
    keys = [p["product_key"] for p in post(world, ADMIN, "list_products", limit=200)[1]["products"]]
    assert keys.count("alpha-secret") == 1


def test_a_reply_reaches_only_projects_in_scope(world):
    """alpha-writer could not send to RedStone@beta (403), but reply_message without `to`
    delivered there: the recipients it derives were not checked."""
    tokens = world.tokens
    blue = dict(project_key="alpha", sender_name="BlueLake", sender_token=tokens["BlueLake"])
    direct = post(world, "alpha-writer", "send_message", **blue, to=["RedStone@beta"], subject="x", body_md="x")
    assert forbidden(direct)
    received = post(world, "both-writer", "send_message", project_key="beta", sender_name="RedStone", sender_token=tokens["RedStone"],
                    to=["BlueLake@alpha"], subject="From beta", body_md="hello")[1]["message"]
    sent = post(world, "both-writer", "send_message", **blue, to=["RedStone@beta"], subject="To beta", body_md="hello")[1]["message"]
    for original in (received, sent):  # to its sender; a follow-up: to the original's recipients
        refused = post(world, "alpha-writer", "reply_message", **blue, message_id=original["id"], body_md="into beta")
        assert refused == direct
    inbox = post(world, ADMIN, "fetch_inbox", project_key="beta", agent_name="RedStone", registration_token=tokens["RedStone"],
                 include_bodies=True)[1]["messages"]
    assert inbox and "into beta" not in [m["body_md"] for m in inbox]  # nothing was sent
    assert post(world, "both-writer", "reply_message", **blue, message_id=received["id"], body_md="fine")[0] == 200


def test_a_scoped_credential_sees_no_error_of_the_archive_worker_that_writes_every_project(call, settings):
    """archive_status of a project in scope gave the worker's last error, which may name any project's file."""
    from chalicelib import clock
    from chalicelib.store import db, heartbeats

    call("ensure_project", human_key="/alpha")
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        heartbeats.beat(conn, heartbeats.ARCHIVE_WORKER, 1, clock.now(), 1, "OSError: projects/beta/messages/x.md")
    alpha = auth.scoped("bearer", "bearer:alpha", ["alpha"], "reader")
    seen = invoke.call(TOOLS["archive_status"], {"project_key": "alpha"}, settings, alpha)
    assert seen.worker.pid == 1 and seen.worker.last_error is None
    assert "beta" in call("archive_status", project_key="alpha")["worker"]["last_error"]  # the operator's, whole
