"""File reservations and build slots through the real server: REST, concurrent REST, official MCP client."""

import asyncio
import json
import threading

import httpx
import pytest
from mcp import Client

from .servers import running_server

AGENTS = [f"Builder{i}" for i in range(10)]


@pytest.fixture(scope="module")
def api(server):
    with httpx.Client(base_url=server) as client:
        client.post("/api/ensure_project", json={"human_key": "/e2e/reservations"}).raise_for_status()
        for name in ("BlueLake", "GreenCastle", *AGENTS):
            client.post(
                "/api/register_agent", json={"project_key": "e2e-reservations", "program": "p", "model": "m", "name": name}
            ).raise_for_status()
        yield client


def test_reserve_conflict_check_release_over_rest(api):
    base = {"project_key": "e2e-reservations"}
    held = api.post("/api/file_reservation_paths", json={**base, "agent_name": "GreenCastle", "paths": ["src/**"]})
    assert held.status_code == 200
    reservation_id = held.json()["granted"][0]["id"]
    assert isinstance(reservation_id, str)  # 63-bit ids travel as strings

    asked = api.post("/api/file_reservation_paths", json={**base, "agent_name": "BlueLake", "paths": ["./src/app.py"]}).json()
    assert asked["granted"][0]["path_pattern"] == "src/app.py"
    assert [(c["path"], c["holders"][0]["agent"], c["holders"][0]["id"]) for c in asked["conflicts"]] == [
        ("src/app.py", "GreenCastle", reservation_id)
    ]

    checked = api.get("/api/check_file_reservations", params=[*base.items(), ("paths", "src/a.py"), ("paths", "b.py")])
    assert [c["path"] for c in checked.json()["conflicts"]] == ["src/a.py"]

    released = api.post("/api/release_file_reservations", json={**base, "agent_name": "GreenCastle", "file_reservation_ids": [reservation_id]})
    assert released.json()["released"] == 1
    listed = api.get("/api/list_file_reservations", params=base).json()["file_reservations"]
    assert [(r["agent"], r["path_pattern"]) for r in listed] == [("BlueLake", "src/app.py")]


def test_errors_over_rest(api):
    bad = api.post("/api/file_reservation_paths", json={"project_key": "e2e-reservations", "agent_name": "BlueLake", "paths": ["../x"]})
    assert bad.status_code == 422 and "'..'" in bad.json()["error"]["message"]
    api.post("/api/acquire_build_slot", json={"project_key": "e2e-reservations", "agent_name": "BlueLake", "slot": "db"}).raise_for_status()
    taken = api.post("/api/acquire_build_slot", json={"project_key": "e2e-reservations", "agent_name": "GreenCastle", "slot": "db"})
    assert taken.status_code == 409
    error = taken.json()["error"]
    assert error["code"] == "conflict" and "BlueLake" in error["message"] and error["hint"]


def test_an_agent_past_its_active_reservations_gets_a_429_and_reserves_nothing(api):
    base = {"project_key": "e2e-reservations", "agent_name": "Builder0"}
    files = [f"hoard/f{n}.py" for n in range(1001)]
    assert api.post("/api/file_reservation_paths", json={**base, "paths": files[:1000], "ttl_seconds": 600}).status_code == 200
    refused = api.post("/api/file_reservation_paths", json={**base, "paths": files[999:]})  # one held, one more
    assert refused.status_code == 429 and 590 < int(refused.headers["Retry-After"]) <= 600
    error = refused.json()["error"]
    assert error["code"] == "rate_limited" and "Builder0 holds 1,000 active file reservations; 1 more" in error["message"]
    assert api.post("/api/release_file_reservations", json=base).json()["released"] == 1000


HOARDER, NEIGHBOUR = "hoarder-credential-0123456789", "neighbour-credential-0123456789"


def test_one_credential_holds_at_most_its_share_of_a_projects_reservations(tmp_path):
    """Review, session 18: one bearer token registered 10 agents and reserved 1,000 paths with each;
    the project's 10,000 were full, and every other agent of the project, its own token or not,
    was refused until they expired. A credential now holds at most half a project's reservations."""
    tokens = json.dumps([{"token": HOARDER, "projects": ["e2e-share"], "role": "writer"}, NEIGHBOUR])
    with running_server(tmp_path / "agent_mail.db", AUTH_MODE="bearer", AUTH_BEARER_TOKENS=tokens) as url:
        hoarder, neighbour = (httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)
                              for token in (HOARDER, NEIGHBOUR))
        with hoarder, neighbour:
            neighbour.post("/api/ensure_project", json={"human_key": "/e2e/share"}).raise_for_status()

            def reserve(client, name, files):
                agent = client.post("/api/register_agent", json={"project_key": "e2e-share", "program": "p", "model": "m",
                                                                 "name": name}).json()
                return client.post("/api/file_reservation_paths", json={
                    "project_key": "e2e-share", "agent_name": name, "registration_token": agent["registration_token"],
                    "paths": files, "ttl_seconds": 600})

            answers = [reserve(hoarder, f"Hoard{n}", [f"hoard{n}/f{i}.py" for i in range(1000)]) for n in range(10)]
            assert [answer.status_code for answer in answers] == [200] * 5 + [429] * 5
            error = answers[-1].json()["error"]
            assert error["code"] == "rate_limited" and 590 < int(answers[-1].headers["Retry-After"]) <= 600
            assert "This credential's agents in e2e-share hold 5,000 active file reservations; 1,000 more" in error["message"]
            assert "its share of 5,000, of the project's 10,000" in error["message"] and "Nothing was reserved" in error["message"]
            assert reserve(neighbour, "Neighbour", [f"mine/f{i}.py" for i in range(1000)]).status_code == 200
            held = neighbour.get("/api/list_file_reservations", params={"project_key": "e2e-share", "limit": 500}).json()
            assert len(held["file_reservations"]) == 500 and held["next_cursor"]


def test_concurrent_acquires_of_a_free_slot_have_one_winner(server, api):
    start = threading.Barrier(len(AGENTS))
    statuses: dict[str, int] = {}

    def acquire(agent: str) -> None:
        with httpx.Client(base_url=server) as client:  # one connection each: the requests really race
            start.wait()
            response = client.post(
                "/api/acquire_build_slot", json={"project_key": "e2e-reservations", "agent_name": agent, "slot": "deploy"}
            )
            statuses[agent] = response.status_code

    threads = [threading.Thread(target=acquire, args=(agent,)) for agent in AGENTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [agent for agent, status in statuses.items() if status == 200]
    assert len(winners) == 1 and sorted(statuses.values()) == [200] + [409] * (len(AGENTS) - 1)
    listed = api.get("/api/list_build_slots", params={"project_key": "e2e-reservations", "slot": "deploy"}).json()
    assert [s["agent"] for s in listed["slots"]] == winners


def test_through_the_official_mcp_client(server, api):
    async def session():
        async with Client(f"{server}/mcp", mode="legacy") as client:

            async def call(tool_name, /, **arguments):
                result = await client.call_tool(tool_name, {"project_key": "e2e-reservations", **arguments})
                payload = json.loads(result.content[0].text)
                return (payload["error"]["code"] if result.is_error else None), payload

            _, held = await call("file_reservation_paths", agent_name="BlueLake", paths=["docs/**"], reason="MCP")
            _, asked = await call("file_reservation_paths", agent_name="GreenCastle", paths=["docs/api.md"], exclusive=False)
            assert asked["conflicts"][0]["holders"][0]["reason"] == "MCP"
            _, checked = await call("check_file_reservations", agent_name="GreenCastle", paths=["docs/api.md"])
            assert checked["conflicts"][0]["holders"][0]["agent"] == "BlueLake"
            code, refused = await call("force_release_file_reservation", agent_name="GreenCastle",
                                       file_reservation_id=held["granted"][0]["id"])
            assert code == "conflict" and "BlueLake" in refused["error"]["message"]
            _, renewed = await call("renew_file_reservations", agent_name="BlueLake", paths=["docs/**"], extend_seconds=60)
            assert renewed["renewed"] == 1

            _, slot = await call("acquire_build_slot", agent_name="GreenCastle", slot="mcp")
            code, _ = await call("acquire_build_slot", agent_name="BlueLake", slot="mcp")
            assert (slot["agent"], code) == ("GreenCastle", "conflict")
            _, released = await call("release_build_slot", agent_name="GreenCastle", slot="mcp")
            _, listed = await call("list_build_slots", slot="mcp")
            assert released["released"] and listed["slots"] == []

    asyncio.run(session())
