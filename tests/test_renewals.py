"""What an agent renews (a build slot, its token, its file reservations) is updated in place,
on both backends. On a Turso replica, pyturso 0.8 fails an INSERT ... ON CONFLICT DO UPDATE
of a row with text once its table holds a few pages ("TEXT value contains invalid UTF-8"),
so these are an UPDATE and then an INSERT (docs/turso.md)."""

import pytest

from chalicelib import invoke
from chalicelib.errors import Forbidden
from chalicelib.tools import tools_by_name

pytestmark = pytest.mark.both_backends

TOOLS = tools_by_name()
AGENTS = [f"Agent{n:02d}" for n in range(16)]


def test_many_agents_renew_what_they_hold(settings):
    strict = settings.model_copy(update={"require_agent_tokens": True})

    def call(tool: str, **arguments):
        return invoke.call(TOOLS[tool], {"project_key": "/work/renewals", **arguments}, strict).model_dump(mode="json")

    invoke.call(TOOLS["ensure_project"], {"human_key": "/work/renewals"}, strict)
    tokens = {name: call("register_agent", program="p", model="m", name=name)["registration_token"] for name in AGENTS}
    first, old = {}, {}
    for round_ in range(2):
        for name in AGENTS:
            token = tokens[name]
            slot = call("acquire_build_slot", agent_name=name, registration_token=token, slot=f"build-{name}", ttl_seconds=60 + round_)
            first.setdefault(name, slot["acquired_ts"])
            assert slot["acquired_ts"] == first[name]  # a renewal keeps its place in the tie-break order
            reserved = call("file_reservation_paths", agent_name=name, registration_token=token,
                            paths=[f"src/{name}/**", f"docs/{name}.md"], reason=f"round {round_}")
            assert [r["reason"] for r in reserved["granted"]] == [f"round {round_}"] * 2
            old[name], tokens[name] = token, call("rotate_agent_token", agent_name=name, registration_token=token)["registration_token"]
    slots = call("list_build_slots")["slots"]
    assert len(slots) == len(AGENTS) and all(s["expires_ts"] > s["acquired_ts"] for s in slots)
    held = call("list_file_reservations")["file_reservations"]
    assert len(held) == 2 * len(AGENTS) and {r["reason"] for r in held} == {"round 1"}
    for name in (AGENTS[0], AGENTS[-1]):  # only the newest token works
        with pytest.raises(Forbidden):
            call("rotate_agent_token", agent_name=name, registration_token=old[name])
        assert call("fetch_inbox", agent_name=name, registration_token=tokens[name])["messages"] == []
