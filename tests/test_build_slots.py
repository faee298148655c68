"""Build slots, in process. (Concurrent acquires through the real server: test_e2e_reservations.py.)"""

import pytest

from chalicelib.store import db
from chalicelib.errors import Conflict, InvalidArgument, NotFound
from chalicelib.ids import stable_id
from chalicelib.tools import tools_by_name
from chalicelib.tools.agents import agent_id
from chalicelib import clock
from chalicelib.clock import later

from .sql import sql, turso_plans
from .test_reservations import travel

pytestmark = pytest.mark.both_backends


@pytest.fixture
def slot(call, project):
    """slot("acquire", "BlueLake", ...) calls the {verb}_build_slot tool on slot "frontend"."""

    def slot(verb, agent, **options):
        return call(f"{verb}_build_slot", project_key=project, agent_name=agent, slot=options.pop("slot", "frontend"), **options)

    return slot


def holders(call, project, slot="frontend"):
    return [(s["agent"], s["exclusive"]) for s in call("list_build_slots", project_key=project, slot=slot)["slots"]]


@pytest.mark.parametrize("name", ["build\x00x", "   "])
def test_a_slot_name_with_a_nul_or_only_spaces_is_refused(slot, name):
    """QA session 32: both were taken (thread ids and subjects refuse them)."""
    with pytest.raises(InvalidArgument) as refused:
        slot("acquire", "BlueLake", slot=name)
    assert "slot" in refused.value.message and ("NUL" in refused.value.message or "only spaces" in refused.value.message)


def test_an_exclusive_slot_refuses_everyone_else(slot):
    held = slot("acquire", "BlueLake")
    assert (held["slot"], held["agent"], held["exclusive"]) == ("frontend", "BlueLake", True)
    for exclusive in (True, False):
        with pytest.raises(Conflict) as refused:
            slot("acquire", "GreenCastle", exclusive=exclusive)
        assert "BlueLake" in refused.value.message and held["expires_ts"] in refused.value.message
        assert refused.value.hint
    assert slot("acquire", "GreenCastle", slot="backend")["agent"] == "GreenCastle"  # another slot is free


def test_acquiring_again_renews(slot, monkeypatch):
    first = slot("acquire", "BlueLake", ttl_seconds=60)
    travel(monkeypatch, 30)
    again = slot("acquire", "BlueLake", ttl_seconds=600)
    assert again["acquired_ts"] == first["acquired_ts"] and again["expires_ts"] > later(first["expires_ts"], 500)


def test_shared_holders_coexist_but_block_an_exclusive_request(call, project, slot):
    slot("acquire", "BlueLake", exclusive=False)
    slot("acquire", "GreenCastle", exclusive=False)
    assert holders(call, project) == [("BlueLake", False), ("GreenCastle", False)]
    with pytest.raises(Conflict) as refused:
        slot("acquire", "RedStone")
    assert "BlueLake (shared" in refused.value.message and "GreenCastle (shared" in refused.value.message
    with pytest.raises(Conflict):
        slot("acquire", "BlueLake")  # not even a shared holder may turn exclusive while others share


def test_a_refusal_names_a_few_holders_and_counts_the_others(call, project, slot):
    """QA, session 40: the 409 named every shared holder (3,000 agents: 183 KB)."""
    sharing = [f"Sharer{n}" for n in range(8)]
    for name in sharing:
        call("register_agent", project_key=project, program="p", model="m", name=name)
        slot("acquire", name, exclusive=False)
    with pytest.raises(Conflict) as refused:
        slot("acquire", "BlueLake")
    named = [name for name in sharing if f"{name} (shared" in refused.value.message]
    assert named == sharing[:5] and refused.value.message.endswith(" and 3 more.")


def test_a_retried_grant_whose_hold_has_ended_is_not_granted_again(call, project, slot, monkeypatch):
    """QA, session 40: a retry (its idempotency key) of a grant since released, or expired, answered
    the old grant while another agent held the slot: two agents believed they held it. The retry
    is settled on what holds now (docs/mailbox.md)."""
    first = slot("acquire", "BlueLake", idempotency_key="deploy-1")
    assert slot("acquire", "BlueLake", idempotency_key="deploy-1") == first  # while it holds: the same answer
    slot("release", "BlueLake")
    with pytest.raises(Conflict) as ended:  # nobody holds it now
        slot("acquire", "BlueLake", idempotency_key="deploy-1")
    assert "has ended (released at" in ended.value.message and "new idempotency key" in ended.value.hint
    slot("acquire", "GreenCastle")
    with pytest.raises(Conflict) as taken:
        slot("acquire", "BlueLake", idempotency_key="deploy-1")
    assert "held by GreenCastle" in taken.value.message
    second = slot("acquire", "RedStone", slot="ci", ttl_seconds=60, idempotency_key="ci-1")
    travel(monkeypatch, 61)
    with pytest.raises(Conflict) as expired:
        slot("acquire", "RedStone", slot="ci", ttl_seconds=60, idempotency_key="ci-1")
    assert f"(expired at {second['expires_ts']})" in expired.value.message
    assert holders(call, project) == [("GreenCastle", True)]


def test_release_frees_the_slot(call, project, slot):
    slot("acquire", "BlueLake")
    assert slot("release", "BlueLake")["released"] is True
    assert slot("release", "BlueLake")["released"] is False  # idempotent
    assert holders(call, project) == []
    assert slot("acquire", "GreenCastle")["agent"] == "GreenCastle"


def test_an_expired_hold_frees_the_slot(slot, monkeypatch):
    slot("acquire", "BlueLake", ttl_seconds=60)
    travel(monkeypatch, 61)
    assert slot("acquire", "GreenCastle")["agent"] == "GreenCastle"
    with pytest.raises(NotFound) as gone:
        slot("renew", "BlueLake")
    assert "acquire_build_slot" in gone.value.hint


def test_a_retired_agent_takes_no_slot_and_its_leftover_hold_blocks_nobody(call, project, slot, settings):
    """Retiring releases an agent's slots (a bounded number at a time); a retired agent took and
    renewed them all the same, and a hold left over blocked every other agent until it expired."""
    slot("acquire", "BlueLake", slot="left-over", ttl_seconds=86400)
    slot("acquire", "RedStone", slot="shared", exclusive=False)
    slot("acquire", "BlueLake", slot="shared", exclusive=False)
    call("retire_agent", project_key=project, agent_name="GreenCastle")
    with pytest.raises(Conflict) as refused:
        slot("acquire", "GreenCastle")
    assert "retired" in refused.value.message and "unretire_agent" in refused.value.hint
    with sql(settings) as conn:  # BlueLake retired with its holds left: what retiring may leave until later
        conn.execute("UPDATE agents SET retired_ts = '2026-01-01T00:00:00+00:00' WHERE name = 'BlueLake'")
    with pytest.raises(Conflict):
        slot("renew", "BlueLake", slot="left-over")
    assert holders(call, project, "left-over") == [] and holders(call, project, "shared") == [("RedStone", False)]
    assert [held["slot"] for held in call("list_build_slots", project_key=project)["slots"]] == ["shared"]
    assert slot("acquire", "RedStone", slot="left-over")["agent"] == "RedStone"


def test_renew_extends_the_hold(slot):
    held = slot("acquire", "BlueLake", ttl_seconds=60)
    renewed = slot("renew", "BlueLake", extend_seconds=600)
    assert renewed["expires_ts"] == later(held["expires_ts"], 600) and renewed["acquired_ts"] == held["acquired_ts"]


def test_extend_seconds_is_described_as_what_it_does_added_to_the_expiry():
    """QA session 33: renew_build_slot's extend_seconds said "How long the lease lasts" (acquire's ttl_seconds):
    an agent renewing a 1-hour hold "to 10 minutes" held it 70."""
    for name in ("renew_build_slot", "renew_file_reservations"):
        field = tools_by_name()[name].input.model_json_schema()["properties"]["extend_seconds"]
        assert field["description"] == "Seconds added to the current expiry (not the lease's new length).", name


def test_two_replicas_granting_the_slot_agree_on_the_earliest(call, project, slot, settings):
    """What a sync between replicas that each granted the slot leaves behind: two exclusive rows."""
    winner = slot("acquire", "BlueLake")
    with db.connection(settings) as conn:
        (project_id,) = conn.execute("SELECT id FROM projects WHERE slug = ?", (project,)).fetchone()
        loser_agent = agent_id(project_id, "GreenCastle")
        conn.execute(
            "INSERT INTO build_slots (id, project_id, slot, agent_id, exclusive, acquired_ts, expires_ts)"
            " VALUES (?, ?, 'frontend', ?, 1, ?, ?)",
            (stable_id("build_slot", project_id, "frontend", loser_agent), project_id, loser_agent,
             later(winner["acquired_ts"], 0.001), winner["expires_ts"]),
        )
    assert holders(call, project) == [("BlueLake", True)]
    for verb in ("renew", "acquire"):
        with pytest.raises(Conflict) as lost:
            slot(verb, "GreenCastle")
        assert "BlueLake" in lost.value.message
    slot("release", "BlueLake")
    assert holders(call, project) == [("GreenCastle", True)]  # its own grant still runs


def test_a_claim_that_lost_names_the_claim_that_won_not_another_loser(call, project, settings):
    """QA, session 40: three claims raced through three replicas; each loser's 409 named the other
    loser too, as holding the slot "until ...", though its claim was withdrawn."""
    from chalicelib.tools.build_slots import AcquireBuildSlotInput, confirm_build_slot

    now = clock.now()
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        (project_id,) = conn.execute("SELECT id FROM projects WHERE slug = ?", (project,)).fetchone()
        for n, name in enumerate(("BlueLake", "GreenCastle", "RedStone")):  # claimed in this order, none confirmed yet
            conn.execute("INSERT INTO build_slots (id, project_id, slot, agent_id, exclusive, acquired_ts, expires_ts)"
                         " VALUES (?, ?, 'deploy', ?, 1, ?, ?)", (stable_id("build_slot", project_id, "deploy", agent_id(project_id, name)),
                                                                  project_id, agent_id(project_id, name), later(now, n / 1000),
                                                                  later(now, 600)))
    with db.connection(settings) as conn, pytest.raises(Conflict) as lost:
        confirm_build_slot(conn, AcquireBuildSlotInput(project_key=project, agent_name="GreenCastle", slot="deploy"), None)
    assert "BlueLake (exclusive" in lost.value.message and "RedStone" not in lost.value.message


def test_a_tie_goes_to_the_lower_id(call, project, slot, settings):
    with db.connection(settings) as conn:
        (project_id,) = conn.execute("SELECT id FROM projects WHERE slug = ?", (project,)).fetchone()
        rows = sorted(
            (stable_id("build_slot", project_id, "frontend", agent_id(project_id, name)), agent_id(project_id, name), name)
            for name in ("BlueLake", "GreenCastle", "RedStone")
        )
        conn.executemany(
            "INSERT INTO build_slots (id, project_id, slot, agent_id, exclusive, acquired_ts, expires_ts)"
            " VALUES (?, ?, 'frontend', ?, 1, '2026-01-01T00:00:00.000000+00:00', '2999-01-01T00:00:00.000000+00:00')",
            [(row_id, project_id, agent) for row_id, agent, _ in rows],
        )
    assert holders(call, project) == [(rows[0][2], True)]


def test_list_build_slots_by_slot(call, project, slot):
    slot("acquire", "BlueLake", slot="backend")
    slot("acquire", "GreenCastle", slot="alpha", exclusive=False)
    listed = call("list_build_slots", project_key=project)["slots"]
    assert [(s["slot"], s["agent"]) for s in listed] == [("alpha", "GreenCastle"), ("backend", "BlueLake")]


def test_an_archived_project_grants_no_slot(call, project, slot):
    slot("acquire", "GreenCastle", slot="deploy")
    call("archive_project", project_key=project)
    with pytest.raises(Conflict) as refused:
        slot("acquire", "BlueLake")
    assert "archived" in refused.value.message
    with pytest.raises(Conflict, match="archived"):  # nor renews one (QA session 31: renew did, acquire not)
        slot("renew", "GreenCastle", slot="deploy")
    assert slot("release", "GreenCastle", slot="deploy")["released"] is True  # letting go is fine


@pytest.mark.sqlite_only  # the plans of Turso's planner (turso_plans)
def test_a_slots_holders_are_looked_up_by_slot_on_turso_too(call, project, slot, settings, request):
    """`slot IN (...)`, even of one slot, read every row of the project's on Turso's engine (a
    replica's), released ones too: their number grows with every acquire until retention's cleanup."""
    slot("acquire", "BlueLake", slot="backend")
    statements = request.getfixturevalue("traced")
    slot("acquire", "GreenCastle", slot="alpha", exclusive=False)
    call("list_build_slots", project_key=project)
    call("list_build_slots", project_key=project, slot="backend")
    lookups = turso_plans(settings.database_path, [sql for sql in statements if "s.slot" in sql])
    assert len(lookups) >= 3, lookups
    for statement, steps in lookups.items():
        assert "SEARCH s USING INDEX build_slots_by_slot (project_id=? AND slot=?" in " | ".join(steps), (statement, steps)
