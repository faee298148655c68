"""REST and OpenAPI over real HTTP against the real server."""

import httpx
import pytest

from chalicelib.tools import all_tools


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server) as client:
        client.post("/api/ensure_project", json={"human_key": "/rest/demo"}).raise_for_status()
        for name in ("BlueLake", "GreenCastle"):
            client.post("/api/register_agent", json={"project_key": "rest-demo", "program": "p", "model": "m", "name": name})
        client.post("/api/set_contact_policy", json={"project_key": "rest-demo", "agent_name": "GreenCastle", "policy": "open"})
        yield client


def test_health_and_ready(api):
    assert api.get("/health").json() == {"status": "ok"}
    ready = api.get("/ready").json()
    assert ready["status"] == "ok" and ready["problems"] == [] and "projects" not in ready  # open to anyone: no count
    assert api.post("/api/health_check", json={}).json()["projects"] >= 1


def test_post_then_get_roundtrip(api):
    sent = api.post("/api/send_message", json={
        "project_key": "rest-demo", "sender_name": "BlueLake", "to": ["GreenCastle"], "subject": "REST", "body_md": "hi",
    })
    assert sent.status_code == 200 and sent.headers["content-type"] == "application/json"
    message_id = sent.json()["message"]["id"]
    inbox = api.get("/api/fetch_inbox", params={"project_key": "rest-demo", "agent_name": "GreenCastle", "limit": 5})
    assert message_id in [m["id"] for m in inbox.json()["messages"]]
    got = api.get("/api/get_message", params={"project_key": "/rest/demo", "message_id": message_id})
    assert got.json()["body_md"] == "hi"


def test_tools_without_arguments_take_an_empty_body(api):
    assert api.post("/api/list_projects").status_code == 200
    assert api.post("/api/health_check", json={}).json()["status"] == "ok"


@pytest.mark.parametrize(
    ("method", "path", "payload", "status", "code"),
    [
        ("POST", "/api/get_project", {"project_key": "missing"}, 404, "not_found"),
        ("POST", "/api/ensure_project", {"human_key": "relative"}, 422, "invalid_argument"),
        ("POST", "/api/send_message", {"project_key": "rest-demo"}, 422, "invalid_argument"),
        ("GET", "/api/fetch_inbox?project_key=rest-demo&agent_name=BlueLake&limit=0", None, 422, "invalid_argument"),
        ("GET", "/api/search_messages?project_key=rest-demo&query=open&cursor=bogus", None, 422, "invalid_argument"),
        # a subject or thread id of spaces: "" was refused, "   " stored
        ("POST", "/api/send_message", {"project_key": "rest-demo", "sender_name": "BlueLake", "to": ["GreenCastle"],
                                       "subject": "   ", "body_md": "x"}, 422, "invalid_argument"),
        ("POST", "/api/send_message", {"project_key": "rest-demo", "sender_name": "BlueLake", "to": ["GreenCastle"],
                                       "subject": "s", "body_md": "x", "thread_id": " \t"}, 422, "invalid_argument"),
        # a parameter given twice: the last one was read (another agent's inbox)
        ("GET", "/api/fetch_inbox?project_key=rest-demo&agent_name=BlueLake&agent_name=GreenCastle", None, 422, "invalid_argument"),
    ],
)
def test_errors_have_one_json_shape(api, method, path, payload, status, code):
    response = api.request(method, path, json=payload)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"] and error["hint"]


def test_malformed_json_is_a_422_not_a_500(api):
    response = api.post("/api/ensure_project", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_argument"


@pytest.mark.parametrize("body", [b"\x0b", b"\x0c", b" \x0b\n"])
def test_a_body_of_what_json_does_not_call_whitespace_is_malformed_not_no_arguments(api, body):
    """A vertical tab or a form feed is no JSON whitespace; strip() took the body for empty, so it
    was read as no arguments and answered 200 (found by bench/fuzz.py, seed 2026120223)."""
    response = api.post("/api/list_projects", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_argument", response.text
    blank = api.post("/api/list_projects", content=b" \t\r\n", headers={"content-type": "application/json"})
    assert blank.status_code == 200  # JSON's own whitespace only: no arguments, as an empty body


def test_write_tools_refuse_get(api):
    assert api.get("/api/send_message").status_code == 405


def test_openapi_documents_every_tool(api):
    spec = api.get("/openapi.json").json()
    for tool in all_tools():
        operations = spec["paths"][tool.rest_path]
        assert set(operations) == ({"get", "post"} if tool.read_only else {"post"})
        assert operations["post"]["operationId"] == tool.name
        assert "404" in operations["post"]["responses"]
        assert "security" not in operations["post"]  # no authentication: nothing to authorize in /docs
    assert "securitySchemes" not in spec["components"]
    assert api.get("/docs").status_code == 200
