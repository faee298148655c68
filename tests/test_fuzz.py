"""Fuzzing, bounded: schemathesis against the real server's /openapi.json (no 5xx, responses
as documented), hypothesis-made malformed JSON-RPC to /mcp (never a 5xx, the worker lives),
and attack strings stored and returned verbatim as data."""

import decimal
import json
import socket
import tomllib
from pathlib import Path

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import TypeAdapter, ValidationError
from schemathesis.config import SchemathesisConfig

from chalicelib.attachments.intake import BASE64, NOT_DOTS, AttachmentInput, FileName, climbs_or_has_nul, decode_base64
from chalicelib.errors import InvalidArgument
from chalicelib.fields import MAX_ID_NUMBER
from chalicelib.tools.projects import normalize_human_key
from chalicelib.tools.reservations import REPO_PATH, normalize_path

from .aws_events import MCP_HEADERS
from .servers import running_server


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("fuzz") / "db.sqlite") as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    # bench/fuzz.toml: the response-time bounds. Only the fuzzing phase here: the coverage phase
    # makes every boundary case the schema has (~8,000, a minute); bench/fuzz.py runs it.
    config = SchemathesisConfig.from_dict({**tomllib.loads(FUZZ_CONFIG.read_text()), "phases": {"coverage": {"enabled": False}}})
    return schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json", config=config)


FUZZ_CONFIG = Path(__file__).resolve().parent.parent / "bench" / "fuzz.toml"
schema = schemathesis.pytest.from_fixture("api_schema")
# Every check schemathesis has, with its default expected statuses: positive_data_acceptance wants
# a schema-valid request answered 2xx/3xx/401/403/404/409/429/5xx (never 400 or 422: whatever the
# server refuses for its shape, the schema states), negative_data_rejection a schema-invalid one
# refused (4xx). A small derandomized budget: a quick guard; bench/fuzz.py is the long run.
schemathesis.checks.load_all_checks()
CHECKS = schemathesis.checks.CHECKS.get_all()


@schema.parametrize()
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_openapi_operations(case):
    for arguments in (case.body, case.query):  # the suite does not wait: wait_for_mail long-polls 20 s by default
        if case.operation.path == "/api/wait_for_mail" and isinstance(arguments, dict) and "timeout_seconds" not in arguments:
            arguments["timeout_seconds"] = 0
    case.validate_response(case.call(timeout=35), checks=CHECKS)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
RPC_LIKE = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.sampled_from(["2.0", "1.0", 2]) | JSON_VALUES,
        "id": st.integers() | st.text(max_size=8) | JSON_VALUES,
        "method": st.sampled_from(["tools/call", "tools/list", "initialize", "ping", "resources/read", "x"]) | JSON_VALUES,
        "params": st.fixed_dictionaries({}, optional={"name": st.sampled_from(["send_message", "fetch_inbox", "nope"]) | JSON_VALUES,
                                                      "arguments": JSON_VALUES, "protocolVersion": JSON_VALUES}) | JSON_VALUES,
    },
)
BODIES = (
    RPC_LIKE.map(lambda value: json.dumps(value).encode())
    | st.lists(RPC_LIKE, max_size=3).map(lambda value: json.dumps(value).encode())  # batches
    | st.binary(max_size=64)
    | JSON_VALUES.map(lambda value: json.dumps(value).encode())
)


@given(body=BODIES)
@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_malformed_json_rpc_never_gets_a_5xx(fuzz_server, body):
    response = httpx.post(f"{fuzz_server}/mcp", headers=MCP_HEADERS, content=body, timeout=10)
    assert response.status_code < 500, (body, response.status_code, response.text)


def test_the_worker_survives_the_fuzzing(fuzz_server):
    assert httpx.get(f"{fuzz_server}/ready").status_code == 200


ATTACKS = [
    "../../../../etc/passwd",
    "..\\..\\windows\\system32",
    "'; DROP TABLE messages; --",
    "\" OR 1=1 --",
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "\u202e bidi",
]


def test_attack_strings_are_stored_and_returned_verbatim(fuzz_server):
    with httpx.Client(base_url=fuzz_server) as client:
        post = lambda tool, **arguments: client.post(f"/api/{tool}", json=arguments)  # noqa: E731
        assert post("ensure_project", human_key="/verbatim").status_code == 200
        for name in ("BlueLake", "GreenCastle"):
            post("register_agent", project_key="verbatim", program=ATTACKS[2], model=ATTACKS[4], name=name,
                 task_description=" ".join(ATTACKS))
        post("set_contact_policy", project_key="verbatim", agent_name="GreenCastle", policy="open")
        for n, attack in enumerate(ATTACKS):
            sent = post("send_message", project_key="verbatim", sender_name="BlueLake", to=["GreenCastle"],
                        subject=attack, body_md=attack, thread_id=f"{attack[:100]}")
            assert sent.status_code == 200, sent.text
            got = client.get("/api/get_message", params={"project_key": "verbatim", "message_id": sent.json()["message"]["id"]}).json()
            assert (got["subject"], got["body_md"], got["thread_id"]) == (attack, attack, attack[:100])
        profile = client.get("/api/whois", params={"project_key": "verbatim", "agent_name": "BlueLake"}).json()
        assert (profile["program"], profile["model"], profile["task_description"]) == (ATTACKS[2], ATTACKS[4], " ".join(ATTACKS))
        inbox = post("fetch_inbox", project_key="verbatim", agent_name="GreenCastle", limit=50).json()
        assert sorted(m["subject"] for m in inbox["messages"]) == sorted(ATTACKS)
        # A NUL, which SQLite's text functions stop at (a search read the body's start up to it), is refused in mail
        nul = post("send_message", project_key="verbatim", sender_name="BlueLake", to=["GreenCastle"],
                   subject="\u0000nul", body_md="b")
        assert nul.status_code == 422 and "NUL" in nul.json()["error"]["message"]
        # A reply's subject prefix is part of its subject (QA, session 30: a NUL came in that way)
        prefixed = post("reply_message", project_key="verbatim", agent_name="GreenCastle", message_id=sent.json()["message"]["id"],
                        body_md="b", subject_prefix="Re:\u0000")
        assert prefixed.status_code == 422 and "NUL" in prefixed.json()["error"]["message"], prefixed.text
        # ... and so is every text that becomes a notice's or a message's body (the handshake's NUL was a 500)
        for tool, arguments in (
            ("macro_contact_handshake", {"target": "BlueLake", "welcome_subject": "hi", "welcome_body": "a\u0000b"}),
            ("macro_contact_handshake", {"target": "BlueLake", "reason": "a\u0000b"}),
            ("macro_prepare_thread", {"thread_id": "a\u0000b", "program": "p", "model": "m"}),
            ("request_contact", {"to_agent": "BlueLake", "reason": "a\u0000b"}),
            ("force_release_file_reservation", {"file_reservation_id": 1, "note": "a\u0000b"}),
        ):
            refused = post(tool, project_key="verbatim", agent_name="GreenCastle", **arguments)
            assert refused.status_code == 422 and "NUL" in refused.json()["error"]["message"], (tool, refused.text)
        reserved = post("file_reservation_paths", project_key="verbatim", agent_name="BlueLake", paths=["../../etc/passwd"])
        assert reserved.status_code in (200, 422) and reserved.status_code < 500
        assert client.get("/ready").status_code == 200  # the tables are all still there


# Where the server and its schema once disagreed (schemathesis' positive_data_acceptance and
# negative_data_rejection found each): both are asked, and must give the same answer.

def served_field(fuzz_server, model: str, field: str):
    """A validator of one input field's schema, as /openapi.json serves it."""
    schema = httpx.get(f"{fuzz_server}/openapi.json").json()
    return jsonschema_rs.validator_for(schema["components"]["schemas"][model]["properties"][field])


def test_a_number_is_not_a_flag_nor_a_flag_a_number(fuzz_server):
    projects = httpx.post(f"{fuzz_server}/api/list_projects", json={"include_archived": 0})
    assert projects.status_code == 422 and "include_archived" in projects.json()["error"]["message"]
    assert httpx.post(f"{fuzz_server}/api/list_projects", json={"include_archived": True}).status_code == 200
    assert httpx.get(f"{fuzz_server}/api/list_projects", params={"include_archived": "true"}).status_code == 200  # a query is text
    inbox = httpx.post(f"{fuzz_server}/api/fetch_inbox", json={"project_key": "x", "agent_name": "BlueLake", "limit": True})
    assert inbox.status_code == 422 and "limit" in inbox.json()["error"]["message"]


def test_ids_as_numbers_are_bounded_as_the_schema_reads_them(fuzz_server):
    ids = served_field(fuzz_server, "GetMessageInput", "message_id")
    assert httpx.post(f"{fuzz_server}/api/ensure_project", json={"human_key": "/ids"}).status_code == 200
    for number in (1, MAX_ID_NUMBER, MAX_ID_NUMBER + 1, MAX_ID_NUMBER + 512, 2**63 - 1, 2**63 + 191):
        answer = httpx.post(f"{fuzz_server}/api/get_message", json={"project_key": "ids", "message_id": number})
        assert (answer.status_code == 404) == ids.is_valid(number), (number, answer.text)  # 404: no such message
        text = httpx.post(f"{fuzz_server}/api/get_message", json={"project_key": "ids", "message_id": str(number)})
        assert (text.status_code == 404) == ids.is_valid(str(number)) == (number < 2**63), (number, text.text)
    assert not ids.is_valid(MAX_ID_NUMBER + 1) and ids.is_valid(str(2**63 - 1))
    schema = httpx.get(f"{fuzz_server}/openapi.json").json()  # however its bound is read: the same number
    bound = schema["components"]["schemas"]["GetMessageInput"]["properties"]["message_id"]["anyOf"][0]["maximum"]
    assert int(bound) == int(decimal.Decimal(repr(bound))) == MAX_ID_NUMBER


def test_an_id_past_64_bits_is_no_id_whatever_path_reads_it(fuzz_server):
    """QA, session 40: the lean MCP path reads a number past 64 bits as a float (orjson), and the
    refusal said "1.1805916207174113e+21 is too large for a JSON number; send it as a string,
    "1.1805916207174113e+21"": another id than the one sent. REST read it exactly."""
    assert httpx.post(f"{fuzz_server}/api/ensure_project", json={"human_key": "/big"}).status_code == 200
    call = '{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_message", "arguments": '
    for path, body in (("/api/get_message", f'{{"project_key": "big", "message_id": {2**70}}}'),
                       ("/mcp", call + f'{{"project_key": "big", "message_id": {2**70}}}}}}}')):
        answer = httpx.post(f"{fuzz_server}{path}", content=body, headers={"content-type": "application/json",
                                                                          "accept": "application/json, text/event-stream"})
        assert "ids go up to 9223372036854775807" in answer.text and "as a string" not in answer.text, (path, answer.text)


def test_an_id_may_be_written_as_a_whole_float_in_a_query_and_in_a_body_as_the_schema_says(fuzz_server):
    """The schema's integer takes 493.0, and a query's text is a number's: before_id=493.0 was a 422
    (bench/fuzz.py --known). A body's "493.0" was taken too, though the schema's string pattern
    said digits only: now the pattern says so too."""
    ids = served_field(fuzz_server, "GetMessageInput", "message_id")
    assert httpx.post(f"{fuzz_server}/api/ensure_project", json={"human_key": "/floats"}).status_code == 200
    for text, status in (("493.0", 404), ("493", 404), ("493.5", 422), ("0.0", 422), ("4.93e2", 422), ("0493.0", 422),
                         (f"{2**63 - 1}.00", 404), (f"{2**63}.0", 422)):
        answer = httpx.get(f"{fuzz_server}/api/get_message", params={"project_key": "floats", "message_id": text})
        assert answer.status_code == status, (text, answer.text)  # 404: read as an id, no such message
        body = httpx.post(f"{fuzz_server}/api/get_message", json={"project_key": "floats", "message_id": text})
        assert body.status_code == status and ids.is_valid(text) == (status == 404), (text, body.text)
    # A JSON number with a fraction is read as a float, exact only up to 2**53: 386771164157945751.0
    # was looked up as 386771164157945728 (a 404 for another message, or that message) instead of a 422.
    for number, status in (("9007199254740992.0", 404), ("386771164157945751.0", 422), ("386771164157945751", 404)):
        body = httpx.post(f"{fuzz_server}/api/get_message", content=f'{{"project_key": "floats", "message_id": {number}}}',
                          headers={"content-type": "application/json"})
        assert body.status_code == status, (number, body.text)


REPO_PATH_SCHEMA = jsonschema_rs.validator_for({"type": "string", "pattern": REPO_PATH})


@given(path=st.text(alphabet="./\\aC: \r", max_size=8))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_repo_paths_the_schema_allows_are_the_ones_the_server_takes(path):
    try:
        normalize_path(path)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == REPO_PATH_SCHEMA.is_valid(path), path


BASE64_SCHEMA = jsonschema_rs.validator_for({"type": "string", "pattern": BASE64})
FILE_NAME_SCHEMA = jsonschema_rs.validator_for({"type": "string", "pattern": NOT_DOTS})


@given(name=st.text(alphabet="./a\\\x01", min_size=1, max_size=6))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_file_names_the_schema_allows_are_the_ones_the_server_takes(name):
    """An attachment named "." fit the schema and got a 422 (bench/fuzz.py --known)."""
    try:
        TypeAdapter(FileName).validate_python(name)
        accepted = True
    except ValidationError:
        accepted = False
    assert accepted == FILE_NAME_SCHEMA.is_valid(name), name


ATTACHMENT_SCHEMA = jsonschema_rs.validator_for(AttachmentInput.model_json_schema())


@given(path=st.text(alphabet="./a\\\x00", min_size=1, max_size=8))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_attachment_paths_the_schema_allows_are_the_ones_the_server_reads(path):
    """A path with a `..` part fit the schema and got a 422 when the message was sent: the schema says so now."""
    assert (not climbs_or_has_nul(path)) == ATTACHMENT_SCHEMA.is_valid({"path": path}), path


@given(text=st.text(alphabet="AQ/+=\n -é", max_size=13))
@settings(max_examples=500, deadline=None, derandomize=True)
def test_base64_the_schema_allows_is_what_the_server_decodes(text):
    """"AAA" (no padding) fit the schema, which said nothing of base64, and got a 422 (bench/fuzz.py --known)."""
    assert (decode_base64(text) is not None) == BASE64_SCHEMA.is_valid(text), text


@given(path=st.text(alphabet="/\\.aC:", max_size=8))
@settings(max_examples=200, deadline=None, derandomize=True)
def test_a_normalized_human_key_stays_valid(path):
    try:
        once = normalize_human_key(path)
    except ValueError:
        return
    assert normalize_human_key(once) == once  # macro_start_session validates it twice (A:\ gave a 500)


def test_attachment_sources_the_schema_allows_are_the_ones_the_server_takes():
    schema = jsonschema_rs.validator_for(AttachmentInput.model_json_schema())
    sha = "0" * 64
    for attachment in ({"name": "a", "content_base64": "", "path": None}, {"path": "a"}, {"name": "a", "sha256": sha},
                       {"content_base64": "", "path": "", "sha256": sha}, {"content_base64": None, "path": "", "sha256": sha},
                       {"content_base64": "eA=="}, {"name": "a"}, {}, {"path": "a", "sha256": None, "content_base64": None}):
        try:
            AttachmentInput.model_validate(attachment)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == schema.is_valid(attachment), attachment


def test_the_schema_says_an_attachment_path_has_no_nul_which_the_server_refuses_with_a_hint(call, tmp_path):
    """A path with a NUL fit the schema and got a 422 (a fuzz finding): the schema now says so too."""
    schema = jsonschema_rs.validator_for(AttachmentInput.model_json_schema())
    assert schema.is_valid({"path": "logs/a b.txt"}) and not schema.is_valid({"path": "logs/a\x00b"})
    call("ensure_project", human_key=str(tmp_path))
    call("register_agent", project_key=str(tmp_path), program="p", model="m", name="BlueLake")
    with pytest.raises(InvalidArgument, match="must not contain '..' or a NUL character"):
        call("send_message", project_key=str(tmp_path), sender_name="BlueLake", to=["BlueLake"], subject="s", body_md="b",
             attachments=[{"path": "logs/a\x00b"}])


def test_a_request_http_cannot_parse_gets_the_api_error_shape(fuzz_server):
    host, port = fuzz_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /api/list_projects?x=" + b"0" * 100_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ") and b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "bad_request"


def test_a_sha256_is_exactly_64_hex_digits(fuzz_server):
    with httpx.Client(base_url=fuzz_server) as client:
        assert client.post("/api/ensure_project", json={"human_key": "/sha"}).status_code == 200
        assert client.post("/api/register_agent", json={"project_key": "sha", "program": "p", "model": "m", "name": "BlueLake"}).status_code == 200
        for sha, status in (("a" * 64, 200), ("a" * 66, 422), (" " + "a" * 64, 422)):  # 66 digits once reached storage: a 500
            answer = client.get("/api/request_attachment_upload", params={"project_key": "sha", "agent_name": "BlueLake", "sha256": sha, "size": 1})
            assert answer.status_code == status, (sha, answer.text)


def test_an_overseer_message_needs_a_subject_or_reply_to_in_the_schema_too(fuzz_server):
    schema = httpx.get(f"{fuzz_server}/openapi.json").json()["components"]["schemas"]["SendOverseerMessageInput"]
    rule = jsonschema_rs.validator_for({"anyOf": schema["anyOf"]})
    with httpx.Client(base_url=fuzz_server) as client:
        assert client.post("/api/ensure_project", json={"human_key": "/oversee"}).status_code == 200
        client.post("/api/register_agent", json={"project_key": "oversee", "program": "p", "model": "m", "name": "BlueLake"})
        for extra, status in (({}, 422), ({"subject": None}, 422), ({"subject": "hi"}, 200), ({"reply_to": "1"}, 404)):
            message = {"project_key": "oversee", "to": ["BlueLake"], "body_md": "", **extra}
            assert client.post("/api/send_overseer_message", json=message).status_code == status, extra
            assert rule.is_valid(message) == (status != 422), extra


def test_a_handshakes_welcome_is_both_or_neither_in_the_schema_too(fuzz_server):
    """Both welcome fields given (not null), or neither: a null is not given, in the schema as in the
    validator (the schema's dependentRequired took a null as given: seed 3838 found a 422 for it)."""
    schema = httpx.get(f"{fuzz_server}/openapi.json").json()["components"]["schemas"]["MacroContactHandshakeInput"]
    rule = jsonschema_rs.validator_for({"anyOf": schema["anyOf"]})
    with httpx.Client(base_url=fuzz_server) as client:
        assert client.post("/api/ensure_project", json={"human_key": "/welcome"}).status_code == 200
        for name in ("BlueLake", "GreenCastle"):
            client.post("/api/register_agent", json={"project_key": "welcome", "program": "p", "model": "m", "name": name})
        for extra, status in (({}, 200), ({"welcome_subject": None, "welcome_body": None}, 200),
                              ({"welcome_subject": None, "welcome_body": ""}, 422), ({"welcome_body": "b"}, 422),
                              ({"welcome_subject": "s", "welcome_body": None}, 422), ({"welcome_subject": "s", "welcome_body": ""}, 200)):
            shake = {"project_key": "welcome", "agent_name": "BlueLake", "target": "GreenCastle", **extra}
            assert client.post("/api/macro_contact_handshake", json=shake).status_code == status, extra
            assert rule.is_valid(shake) == (status != 422), extra


def test_a_wait_for_mail_cursor_has_the_shape_the_schema_gives(fuzz_server):
    cursor = served_field(fuzz_server, "WaitForMailInput", "cursor")
    with httpx.Client(base_url=fuzz_server) as client:
        assert client.post("/api/ensure_project", json={"human_key": "/cursor"}).status_code == 200
        client.post("/api/register_agent", json={"project_key": "cursor", "program": "p", "model": "m", "name": "BlueLake"})
        for text in ("", "m1.a\n", "m1.0", "m1.zz.1"):
            answer = client.post("/api/wait_for_mail", json={"project_key": "cursor", "agent_name": "BlueLake", "cursor": text, "timeout_seconds": 0})
            assert (answer.status_code == 200) == cursor.is_valid(text), (text, answer.text)


def test_search_cursors_have_the_shape_the_schema_gives(fuzz_server):
    """A cursor of 19 digits past the largest id was a 500 (SQLite's OverflowError); a product
    search's cursor had no shape in the schema (schemathesis' positive_data_acceptance)."""
    ours = served_field(fuzz_server, "SearchMessagesInput", "cursor")
    product = served_field(fuzz_server, "SearchMessagesProductInput", "cursor")
    with httpx.Client(base_url=fuzz_server) as client:
        assert client.post("/api/ensure_project", json={"human_key": "/cursors"}).status_code == 200
        assert client.post("/api/ensure_product", json={"product_key": "cursors"}).status_code == 200
        assert client.post("/api/products_link", json={"product_key": "cursors", "project_key": "cursors"}).status_code == 200
        for text in ("9999999999999999999.1", "1.1", "0", "1.9999999", "0" * 40, "-1.1"):
            answer = client.post("/api/search_messages", json={"project_key": "cursors", "query": "x", "cursor": text})
            assert answer.status_code in (200, 422) and (answer.status_code == 200) == ours.is_valid(text), (text, answer.text)
        for text in ("", "cursors=", "cursors=9999999999999999999.1", "other=1.1", "cursors=1.1;other=2.2", "0", "cursors=1",
                     "Cursors=1.1", ";"):
            answer = client.post("/api/search_messages_product", json={"product_key": "cursors", "query": "x", "cursor": text})
            assert answer.status_code in (200, 422) and (answer.status_code == 200) == product.is_valid(text), (text, answer.text)


def test_a_list_cursor_the_schema_allows_is_a_place_in_the_list(fuzz_server):
    """A list's cursor was base64 of JSON: its schema allowed strings that were none ("0"), which
    the tool refused (schemathesis: a schema-valid request rejected). Each one the pattern allows
    now reads as a key, whatever it holds; the others are refused by both."""
    cursor = served_field(fuzz_server, "ListProjectsInput", "cursor")
    for text in ("0", "sx", "sx,i1", "s%ff%fe,i-99999999999999999999", "s2026-12-02T05%3A22%3A20%2B00%3A00,swork-demo",
                 "s,s", "i1,i2", "sx,i1.5", "sx,%41", "sx,sy,sz", "s" + "%4" + "1", "s~._-,i0",
                 "t2026-12-02T05~3A22~3A20~2B00~3A00,twork-demo", "t~4,i0", "tx%41,i0", "t~ff~fe,i0"):
        answer = httpx.post(f"{fuzz_server}/api/list_projects", json={"cursor": text})
        assert answer.status_code in (200, 422) and (answer.status_code == 200) == cursor.is_valid(text), (text, answer.text)


def test_the_schema_says_a_message_text_takes_no_nul_as_the_server_does(fuzz_server):
    """positive_data_acceptance: the server refused a NUL in these (422) while the schema allowed it."""
    for model, field in (("SendMessageInput", "subject"), ("SendMessageInput", "body_md"), ("ReplyMessageInput", "subject_prefix"),
                         ("RequestContactInput", "reason"), ("ForceReleaseInput", "note")):
        schema = served_field(fuzz_server, model, field)
        assert schema.is_valid("a b") and not schema.is_valid("a\x00b"), (model, field)


def test_the_schema_and_the_server_agree_on_a_blank_subject(fuzz_server):
    """QA session 30: the pattern said ECMAScript's \\s, the server Python's strip(): \\x1c or \\x85 fit the
    schema and got a 422, a BOM failed the schema and was taken."""
    schema = served_field(fuzz_server, "SendMessageInput", "subject")
    with httpx.Client(base_url=fuzz_server) as client:
        client.post("/api/ensure_project", json={"human_key": "/blank"})
        client.post("/api/register_agent", json={"project_key": "blank", "program": "p", "model": "m", "name": "BlueLake"})
        for subject in ("a", " ", "\x1c", "\x1f", "\x85", "\ufeff", "\u3000", "x\u3000", "\u2028"):
            sent = client.post("/api/send_message", json={"project_key": "blank", "sender_name": "BlueLake", "to": ["BlueLake"],
                                                          "subject": subject, "body_md": "b"})
            assert sent.status_code in (200, 422) and (sent.status_code == 200) == schema.is_valid(subject), (subject, sent.text)


def test_a_path_with_a_nul_character_is_refused_by_the_schema_and_the_server(fuzz_server):
    """No file system has such a path: uninstall_precommit_guard's realpath of one raised (a 500)."""
    repo = served_field(fuzz_server, "UninstallPrecommitGuardInput", "code_repo_path")
    human_key = served_field(fuzz_server, "EnsureProjectInput", "human_key")
    for path in ("/srv/a\x00b", "C:\\a\x00", "/srv/nul"):
        guard = httpx.post(f"{fuzz_server}/api/uninstall_precommit_guard", json={"code_repo_path": path})
        made = httpx.post(f"{fuzz_server}/api/ensure_project", json={"human_key": path})
        nul = "\x00" in path
        assert guard.status_code < 500 and (guard.status_code == 422) == nul == (not repo.is_valid(path)), (path, guard.text)
        assert (made.status_code == 422) == nul == (not human_key.is_valid(path)), (path, made.text)


def test_a_page_cursor_past_the_largest_id_reads_as_the_largest(fuzz_server):
    """19 digits the schema allows, past SQLite's largest integer: fetch_inbox answered a 500
    (OverflowError). Found with a project and agent the fuzzing's queries were given."""
    with httpx.Client(base_url=fuzz_server) as client:
        assert client.post("/api/ensure_project", json={"human_key": "/older"}).status_code == 200
        client.post("/api/register_agent", json={"project_key": "older", "program": "p", "model": "m", "name": "BlueLake"})
        for tool in ("fetch_inbox", "fetch_outbox", "list_threads"):
            answer = client.get(f"/api/{tool}", params={"project_key": "older", "agent_name": "BlueLake", "cursor": "9963046211158480433"})
            assert answer.status_code == 200, (tool, answer.text)
        searched = client.get("/api/search_messages", params={"project_key": "older", "query": "a\x00b"})  # a NUL ended FTS5's string
        assert searched.status_code == 200, searched.text


def test_an_upload_size_past_this_servers_limit_is_past_the_schemas_maximum(fuzz_server):
    """The schema says the server's ATTACHMENT_MAX_BYTES (read when it is made): a larger size was
    a 413 for a request the schema allowed (bench/fuzz.py --known)."""
    size = served_field(fuzz_server, "UploadInput", "size")
    limit = httpx.get(f"{fuzz_server}/openapi.json").json()["components"]["schemas"]["UploadInput"]["properties"]["size"]["maximum"]
    with httpx.Client(base_url=fuzz_server) as client:
        assert client.post("/api/ensure_project", json={"human_key": "/sizes"}).status_code == 200
        client.post("/api/register_agent", json={"project_key": "sizes", "program": "p", "model": "m", "name": "BlueLake"})
        for bytes_ in (1, limit, limit + 1, 7817085607484328):
            answer = client.get("/api/request_attachment_upload",
                                params={"project_key": "sizes", "agent_name": "BlueLake", "sha256": "a" * 64, "size": bytes_})
            assert answer.status_code in (200, 422) and (answer.status_code == 200) == size.is_valid(bytes_), (bytes_, answer.text)


def test_the_schemas_attachment_count_is_this_servers_limit(tmp_path):
    """The schema allowed 100 attachments; past ATTACHMENTS_MAX_PER_MESSAGE (20) the server answered
    a 422 the schema did not say (bench/fuzz.py --known). It says the server's setting now."""
    with running_server(tmp_path / "db.sqlite", ATTACHMENTS_MAX_PER_MESSAGE="3") as url, httpx.Client(base_url=url) as client:
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
        assert {schemas[model]["properties"]["attachments"]["maxItems"] for model in ("SendMessageInput", "ReplyMessageInput")} == {3}
        assert client.post("/api/ensure_project", json={"human_key": "/count"}).status_code == 200
        client.post("/api/register_agent", json={"project_key": "count", "program": "p", "model": "m", "name": "BlueLake"})
        for count, status in ((3, 200), (4, 422)):
            sent = client.post("/api/send_message", json={
                "project_key": "count", "sender_name": "BlueLake", "to": ["BlueLake"], "subject": "s", "body_md": "b",
                "attachments": [{"name": f"{n}.txt", "content_base64": "eA=="} for n in range(count)]})
            assert sent.status_code == status, (count, sent.text)
