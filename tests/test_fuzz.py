"""Fuzzing, bounded: schemathesis against the real server's /openapi.json (no 5xx, responses
as documented), hypothesis-made malformed JSON-RPC to /mcp (never a 5xx, the worker lives),
and attack strings stored and returned verbatim as data."""

import json

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings, strategies as st

from .aws_events import MCP_HEADERS
from .servers import running_server


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("fuzz") / "db.sqlite") as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    return schemathesis.openapi.from_url(f"{fuzz_server}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")
# Every check schemathesis has but the timing one and, for now, the two that compare the schema's
# strictness with the server's (positive/negative data acceptance: the schema now carries most of
# the validators' rules, not yet all, e.g. repo-relative paths). bench/fuzz.py runs every check.
schemathesis.checks.load_all_checks()
NOT_YET = (schemathesis.checks.max_response_time, schemathesis.checks.positive_data_acceptance,
           schemathesis.checks.negative_data_rejection)
CHECKS = [check for check in schemathesis.checks.CHECKS.get_all() if check not in NOT_YET]


@schema.parametrize()
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_openapi_operations(case):
    response = case.call(timeout=10)
    if response.status_code == 400 and response.text == "Invalid HTTP request received.":
        return  # uvicorn (h11) refused an over-long request line before the app saw it
    case.validate_response(response, checks=CHECKS)


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
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
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
    "\u0000nul and \u202e bidi",
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
        reserved = post("file_reservation_paths", project_key="verbatim", agent_name="BlueLake", paths=["../../etc/passwd"])
        assert reserved.status_code in (200, 422) and reserved.status_code < 500
        assert client.get("/ready").status_code == 200  # the tables are all still there
