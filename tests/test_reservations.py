"""File reservations, in process (the `call` fixture: real SQLite file, every tool through invoke)."""

import asyncio
import threading

import orjson
import pytest

from chalicelib import clock, invoke
from chalicelib.security import auth
from chalicelib.store import db
from chalicelib.config import get_settings
from chalicelib.errors import Conflict, InvalidArgument, NotFound, TooManyRequests
from chalicelib.tools.agents import agent_id
from chalicelib.clock import later
from chalicelib.tools import reservations, tools_by_name
from chalicelib.tools.reservations import overlap_peers

from .sql import sql

pytestmark = pytest.mark.both_backends

REAL_NOW = clock.now


def travel(monkeypatch, seconds: float) -> None:
    """From now on the clock reads `seconds` later than real time (no sleeping in tests)."""
    monkeypatch.setattr(clock, "now", lambda: later(REAL_NOW(), seconds))


@pytest.fixture
def reserve(call, project):
    def reserve(agent, *paths, **options):
        return call("file_reservation_paths", project_key=project, agent_name=agent, paths=list(paths), **options)

    return reserve


def patterns(reservations):
    return sorted(r["path_pattern"] for r in reservations)


def test_paths_are_normalised(reserve):
    granted = reserve("BlueLake", "./src//app.py", "docs/", "lib\\util.py", "a/./b", "src/app.py")["granted"]
    assert patterns(granted) == ["a/b", "docs", "lib/util.py", "src/app.py"]  # duplicates collapse into one


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/etc/passwd", "is absolute"),
        ("C:\\repo\\x.py", "is absolute"),
        ("../secrets", "'..'"),
        ("src/../../x", "'..'"),
        ("./", "names no path"),
        ("", "at least 1 character"),
        ("src/a\x00b.py", "holds a NUL character"),  # QA session 32: taken, then in a notice cut search short
    ],
)
def test_paths_outside_the_repository_are_refused(call, project, reserve, path, problem):
    with pytest.raises(InvalidArgument) as refused:
        reserve("BlueLake", "ok.py", path)
    assert "paths.1" in refused.value.message and problem in refused.value.message
    assert refused.value.hint
    assert call("list_file_reservations", project_key=project, active_only=False)["file_reservations"] == []


def test_conflicts_are_granted_but_reported_with_holder_pattern_and_expiry(reserve):
    held = reserve("GreenCastle", "src/**", reason="FEAT-1")["granted"][0]
    result = reserve("BlueLake", "src/app.py", "docs/x.md")
    assert patterns(result["granted"]) == ["docs/x.md", "src/app.py"]
    [conflict] = result["conflicts"]
    assert conflict["path"] == "src/app.py"
    [holder] = conflict["holders"]
    assert holder == held and (holder["agent"], holder["path_pattern"], holder["reason"]) == ("GreenCastle", "src/**", "FEAT-1")
    assert holder["exclusive"] is True and holder["expires_ts"] > clock.now()


@pytest.mark.parametrize(
    ("held_exclusive", "asked_exclusive", "clashes"),
    [(True, True, True), (True, False, True), (False, True, True), (False, False, False)],
)
def test_only_two_shared_reservations_coexist(reserve, held_exclusive, asked_exclusive, clashes):
    reserve("GreenCastle", "docs/**", exclusive=held_exclusive)
    assert bool(reserve("BlueLake", "docs/*.md", exclusive=asked_exclusive)["conflicts"]) is clashes


def test_own_reservations_never_conflict(reserve):
    reserve("BlueLake", "src/**")
    assert reserve("BlueLake", "src/app.py")["conflicts"] == []


@pytest.mark.parametrize(
    ("held", "asked", "clashes"),
    [
        ("src", "src/app.py", True),  # a directory covers what is under it
        ("src/*", "src/lib/deep.py", False),  # a glob reserves what it matches, no more
        ("src/*.py", "src/**/*.ts", False),
        ("src/**", "src/lib/deep.py", True),
        ("src", "srcs/app.py", False),
        ("*.py", "src/app.py", False),  # patterns are anchored at the repository root
        ("**/*.py", "src/app.py", True),
        ("docs/*.md", "docs/api/x.md", False),
        ("notes[old", "notes[old/todo.md", True),  # a `[` opening no class is a plain character
        ("notes[old", "notes[ol", False),
        ("app/[slug]", "app/[slug]/page.tsx", True),  # a class: also the folder spelt so, as git reads it
        ("app/[slug]", "app/s", True),  # and what the glob matches
        ("app/[slug]", "app/slug", False),
        ("app/[slug]/page.tsx", "app/[slug]", True),
        ("app/[[]slug]/**", "app/[slug]/page.tsx", True),  # the folder alone, with `[` in a class of its own
        ("app/[[]slug]/**", "app/s/page.tsx", False),
    ],
)
def test_what_a_pattern_covers(reserve, held, asked, clashes):
    reserve("GreenCastle", held)
    assert bool(reserve("BlueLake", asked)["conflicts"]) is clashes


def test_expired_reservations_never_count(call, project, reserve, monkeypatch):
    reserve("GreenCastle", "src/**", ttl_seconds=60)
    travel(monkeypatch, 61)
    assert reserve("BlueLake", "src/app.py")["conflicts"] == []
    check = call("check_file_reservations", project_key=project, agent_name="BlueLake", paths=["src/app.py"])
    assert check["conflicts"] == []
    assert [r["agent"] for r in call("list_file_reservations", project_key=project)["file_reservations"]] == ["BlueLake"]
    everything = call("list_file_reservations", project_key=project, active_only=False)["file_reservations"]
    assert sorted(r["agent"] for r in everything) == ["BlueLake", "GreenCastle"]


def test_reserving_again_renews_the_same_lease(call, project, reserve, monkeypatch):
    first = reserve("BlueLake", "src/**", ttl_seconds=60)["granted"][0]
    travel(monkeypatch, 30)
    again = reserve("BlueLake", "src/**", ttl_seconds=7200, exclusive=False, reason="wider")["granted"][0]
    assert (again["id"], again["created_ts"]) == (first["id"], first["created_ts"])
    assert again["expires_ts"] > later(first["expires_ts"], 7000)
    assert (again["exclusive"], again["reason"]) == (False, "wider")
    assert len(call("list_file_reservations", project_key=project, active_only=False)["file_reservations"]) == 1

    call("release_file_reservations", project_key=project, agent_name="BlueLake")
    renewed = reserve("BlueLake", "src/**")["granted"][0]
    assert renewed["id"] == first["id"] and renewed["created_ts"] > first["created_ts"] and renewed["released_ts"] is None


def test_release_by_pattern_by_id_or_all(call, project, reserve):
    granted = {r["path_pattern"]: r["id"] for r in reserve("BlueLake", "a.py", "b.py", "c.py", "d.py")["granted"]}
    reserve("GreenCastle", "a.py", exclusive=False)

    def release(**which):
        return call("release_file_reservations", project_key=project, agent_name="BlueLake", **which)["released"]

    assert release(paths=["a.py"], file_reservation_ids=[granted["b.py"]]) == 2
    assert release(paths=["a.py", "nothing.py"]) == 0  # already released: a no-op
    assert release() == 2
    active = call("list_file_reservations", project_key=project)["file_reservations"]
    assert [(r["agent"], r["path_pattern"]) for r in active] == [("GreenCastle", "a.py")]


def test_an_agent_over_its_limit_renews_and_releases_a_limits_worth_a_call(call, project, reserve, monkeypatch):
    """Review, session 18: renewing or releasing all of them updated every row of an agent holding
    more than HELD_PER_AGENT (from before the limit, or two Turso replicas granting at once) in one
    call. A call now takes a limit's worth: renewing goes on from next_cursor, releasing says more."""
    held = {r["id"]: r["expires_ts"] for r in reserve("BlueLake", *(f"f{n}.py" for n in range(5)))["granted"]}
    reserve("GreenCastle", "g.py")
    monkeypatch.setattr(reservations, "HELD_PER_AGENT", 2)  # BlueLake holds more
    renewed, pages, cursor = {}, [], None
    while True:
        page = call("renew_file_reservations", project_key=project, agent_name="BlueLake", extend_seconds=60, cursor=cursor)
        pages.append(page["renewed"])
        renewed.update((r["id"], r["expires_ts"]) for r in page["file_reservations"])
        if not (cursor := page["next_cursor"]):
            break
    assert pages == [2, 2, 1] and renewed == {rid: later(expires, 60) for rid, expires in held.items()}  # each once
    released = [call("release_file_reservations", project_key=project, agent_name="BlueLake") for _ in range(3)]
    assert [(answer["released"], answer["more"]) for answer in released] == [(2, True), (2, True), (1, False)]
    active = call("list_file_reservations", project_key=project)["file_reservations"]
    assert [(r["agent"], r["path_pattern"]) for r in active] == [("GreenCastle", "g.py")]


def test_retiring_an_agent_over_its_limit_releases_a_limits_worth_and_the_rest_block_nobody(call, project, reserve, monkeypatch):
    """Review, session 18: retire_agent released every active reservation of an agent holding more
    than HELD_PER_AGENT in one write. It releases a limit's worth a call (more: call again); those
    still held by the retired agent conflict with nobody meanwhile."""
    reserve("BlueLake", *(f"f{n}.py" for n in range(5)))
    monkeypatch.setattr(reservations, "HELD_PER_AGENT", 2)  # BlueLake holds more
    retired = call("retire_agent", project_key=project, agent_name="BlueLake")
    assert (retired["released_file_reservations"], retired["more"]) == (2, True)
    assert len(call("list_file_reservations", project_key=project)["file_reservations"]) == 3  # still held, for now
    paths = [f"f{n}.py" for n in range(5)]
    assert call("check_file_reservations", project_key=project, agent_name="GreenCastle", paths=paths)["conflicts"] == []
    assert reserve("GreenCastle", "f0.py", "f4.py")["conflicts"] == []  # whichever were left
    again = [call("retire_agent", project_key=project, agent_name="BlueLake") for _ in range(2)]
    assert [(answer["released_file_reservations"], answer["more"]) for answer in again] == [(2, True), (1, False)]
    active = call("list_file_reservations", project_key=project)["file_reservations"]
    assert {r["agent"] for r in active} == {"GreenCastle"}


def test_a_retired_agent_reserves_nothing_until_unretired(call, project, reserve):
    """Review, session 18: a retired agent's reservations conflict with nobody, yet it could still
    reserve: what it took blocked no one, a way around every other agent's exclusive ones."""
    reserve("GreenCastle", "src/api.py")
    call("retire_agent", project_key=project, agent_name="BlueLake")
    with pytest.raises(Conflict) as refused:
        reserve("BlueLake", "src/api.py")
    assert "BlueLake is retired" in refused.value.message and "unretire_agent" in refused.value.hint
    assert {r["agent"] for r in call("list_file_reservations", project_key=project)["file_reservations"]} == {"GreenCastle"}
    call("unretire_agent", project_key=project, agent_name="BlueLake")
    [conflict] = reserve("BlueLake", "src/api.py")["conflicts"]  # at work again: granted, the clash reported
    assert [holder["agent"] for holder in conflict["holders"]] == ["GreenCastle"]


def test_releasing_another_agents_reservation_by_id_is_refused(call, project, reserve):
    theirs = reserve("GreenCastle", "a.py")["granted"][0]["id"]
    with pytest.raises(NotFound) as refused:
        call("release_file_reservations", project_key=project, agent_name="BlueLake", file_reservation_ids=[theirs])
    assert theirs in refused.value.message and "force_release_file_reservation" in refused.value.hint
    assert len(call("list_file_reservations", project_key=project)["file_reservations"]) == 1


def test_renew_extends_active_reservations_only(call, project, reserve, monkeypatch):
    short = reserve("BlueLake", "short.py", ttl_seconds=60)["granted"][0]
    long = reserve("BlueLake", "long.py", ttl_seconds=600)["granted"][0]
    travel(monkeypatch, 120)
    renewed = call("renew_file_reservations", project_key=project, agent_name="BlueLake", extend_seconds=900)
    assert renewed["renewed"] == 1
    [reservation] = renewed["file_reservations"]
    assert reservation["id"] == long["id"] and reservation["expires_ts"] == later(long["expires_ts"], 900)
    assert short["id"] not in [r["id"] for r in call("list_file_reservations", project_key=project)["file_reservations"]]


def test_renewing_only_lapsed_reservations_is_a_404_saying_reserve_again(call, project, reserve, monkeypatch):
    held = reserve("BlueLake", "lib/**", ttl_seconds=60)["granted"][0]
    travel(monkeypatch, 61)
    for which in ({"file_reservation_ids": [held["id"]]}, {"paths": ["lib/**"]}):
        with pytest.raises(NotFound) as refused:
            call("renew_file_reservations", project_key=project, agent_name="BlueLake", extend_seconds=600, **which)
        assert "lib/**" in refused.value.message and "expired at" in refused.value.message
        assert "file_reservation_paths(paths=['lib/**'])" in refused.value.hint
    # All of them, none held (lapsed, or released on purpose): nothing to renew, no error telling
    # a heartbeat to reserve again what its agent let go.
    assert call("renew_file_reservations", project_key=project, agent_name="BlueLake")["renewed"] == 0
    assert call("list_file_reservations", project_key=project)["file_reservations"] == []


def test_renewing_some_lapsed_reservations_renews_the_others_and_lists_those(call, project, reserve, monkeypatch):
    short = reserve("BlueLake", "short.py", ttl_seconds=60)["granted"][0]
    long = reserve("BlueLake", "long.py", ttl_seconds=600)["granted"][0]
    travel(monkeypatch, 120)
    renewed = call("renew_file_reservations", project_key=project, agent_name="BlueLake", extend_seconds=900,
                   file_reservation_ids=[short["id"], long["id"]])
    assert [r["id"] for r in renewed["file_reservations"]] == [long["id"]]
    assert [r["id"] for r in renewed["lapsed"]] == [short["id"]]


def test_a_heartbeat_renewing_all_lists_what_expired_since_and_is_not_held_again(call, project, reserve, monkeypatch):
    """An agent that slept past a lease hears of it at its next renew-all, not only by naming it."""
    hour, day = 3600, 24 * 3600
    slept = reserve("BlueLake", "slept.py", ttl_seconds=hour)["granted"][0]
    reserve("BlueLake", "again.py", "let_go.py", ttl_seconds=hour)
    reserve("BlueLake", "held.py", ttl_seconds=3 * day)
    reserve("BlueLake", "old.py", ttl_seconds=60)  # expired over a day before the heartbeat: no longer news
    reserve("GreenCastle", "theirs.py", ttl_seconds=hour)
    call("release_file_reservations", project_key=project, agent_name="BlueLake", paths=["let_go.py"])
    travel(monkeypatch, 2 * hour)
    reserve("BlueLake", "again.py", ttl_seconds=2 * day)  # lapsed, then held again
    travel(monkeypatch, day + hour / 2)
    heartbeat = call("renew_file_reservations", project_key=project, agent_name="BlueLake", extend_seconds=600)
    assert patterns(heartbeat["file_reservations"]) == ["again.py", "held.py"]
    assert [(r["id"], r["expires_ts"]) for r in heartbeat["lapsed"]] == [(slept["id"], slept["expires_ts"])]
    assert call("renew_file_reservations", project_key=project, agent_name="RedStone")["lapsed"] == []


def test_a_heartbeat_does_not_list_a_lapse_still_held_by_a_wider_active_reservation(call, project, reserve, monkeypatch):
    """Reserving again what a live reservation of the same agent already holds as strongly is wrong advice."""
    hour = 3600
    reserve("BlueLake", "src/api.py", "src/app", "src/*.ts", "docs/a.md", "lib/x.py", "tools/run.py", ttl_seconds=60)
    reserve("BlueLake", "tests/t.py", "web", ttl_seconds=60, exclusive=False)
    reserve("BlueLake", "src/**", ttl_seconds=3 * hour)  # exclusive: holds all of src/ as strongly
    reserve("BlueLake", "docs/*.md", ttl_seconds=3 * hour)  # the file docs/a.md: held (test below)
    reserve("BlueLake", "lib", "tests/**", "web/**", ttl_seconds=3 * hour, exclusive=False)
    reserve("GreenCastle", "tools/**", ttl_seconds=3 * hour)  # another agent's cover is no cover
    travel(monkeypatch, hour)
    heartbeat = call("renew_file_reservations", project_key=project, agent_name="BlueLake", extend_seconds=600)
    # lib/x.py was exclusive, lib only shared: still news. A shared lapse is held by a shared or exclusive cover.
    assert patterns(heartbeat["lapsed"]) == ["lib/x.py", "tools/run.py"]


def test_a_heartbeat_does_not_list_a_file_a_glob_of_the_same_agent_still_holds(call, project, reserve, monkeypatch):
    """Security review, session 17: an expired src/api.py was listed while src/*.py was active. A plain
    path is taken as the file it names, as the pre-commit check takes paths; a glob is held only by
    folders (overlapping is not holding: docs/*.md holds little of docs/**)."""
    hour = 3600
    reserve("BlueLake", "src/api.py", "web/app.ts", "docs/**", "notes.md", "lib/x.py", ttl_seconds=60)
    reserve("BlueLake", "src/*.py", "web/*.py", "docs/*.md", ttl_seconds=3 * hour)
    reserve("BlueLake", "*.md", ttl_seconds=3 * hour, exclusive=False)  # notes.md was exclusive
    reserve("GreenCastle", "lib/*.py", ttl_seconds=3 * hour)  # another agent's cover is no cover
    travel(monkeypatch, hour)
    heartbeat = call("renew_file_reservations", project_key=project, agent_name="BlueLake", extend_seconds=600)
    assert patterns(heartbeat["lapsed"]) == ["docs/**", "lib/x.py", "notes.md", "web/app.ts"]


def test_an_agent_and_a_project_hold_a_bounded_number_of_active_reservations(call, project, reserve, monkeypatch):
    """Security review, session 17: nothing bounded what one credential held, and every conflict
    check in the project read what was held near its paths (tens of thousands, for `**`)."""
    monkeypatch.setattr(reservations, "HELD_PER_AGENT", 4)
    monkeypatch.setattr(reservations, "HELD_PER_PROJECT", 6)
    first = {r["path_pattern"]: r for r in reserve("BlueLake", "a.py", "b.py", "c.py", ttl_seconds=600)["granted"]}
    with pytest.raises(TooManyRequests) as refused:
        reserve("BlueLake", "a.py", "d.py", "e.py", ttl_seconds=3600)  # a.py renewed, 2 more: 5 of 4
    assert refused.value.status == 429 and "BlueLake holds 3 active file reservations; 2 more" in refused.value.message
    assert "limit of 4" in refused.value.message and "Nothing was reserved" in refused.value.message
    assert "release_file_reservations" in refused.value.hint
    assert 590 < int(refused.value.headers["Retry-After"]) <= 600  # when one of the 3 has expired
    held = call("list_file_reservations", project_key=project)["file_reservations"]
    assert sorted((r["path_pattern"], r["expires_ts"]) for r in held) == [(p, first[p]["expires_ts"]) for p in ("a.py", "b.py", "c.py")]

    assert len(reserve("BlueLake", "a.py", "b.py", "c.py", "d.py")["granted"]) == 4  # renewing 3 adds 1: at the limit
    assert reserve("BlueLake", "a.py", "b.py", ttl_seconds=60)["granted"]  # renewing at the limit
    call("release_file_reservations", project_key=project, agent_name="BlueLake", paths=["d.py"])
    reserve("BlueLake", "e.py")  # released: room again

    reserve("GreenCastle", "g1.py", "g2.py")  # 6 in the project: its limit
    with pytest.raises(TooManyRequests) as refused:
        reserve("RedStone", "r.py")
    assert "The agents of work-demo hold 6 active file reservations; 1 more would pass the limit of 6" in refused.value.message
    assert 50 < int(refused.value.headers["Retry-After"]) <= 60  # a.py and b.py were renewed for 60 s
    travel(monkeypatch, 61)  # expired ones never count
    assert reserve("RedStone", "r.py")["granted"]


def test_a_credential_holds_at_most_its_share_of_a_projects_reservations(call, project, reserve, settings, monkeypatch):
    """Review, session 18: one credential acting as several agents filled its project's limit, and
    every other credential's agents were refused (tests/test_e2e_reservations.py, at full scale over
    HTTP). Its share counts what it took; without authentication every caller is one, with no share."""
    monkeypatch.setattr(reservations, "HELD_PER_AGENT", 3)
    monkeypatch.setattr(reservations, "HELD_PER_PROJECT", 6)
    monkeypatch.setattr(reservations, "HELD_PER_CREDENTIAL", 3)
    hoarder, other = auth.Principal("bearer", "bearer:hoarder"), auth.Principal("jwt", "someone-else")

    def reserve_as(principal, agent, *paths):
        arguments = dict(project_key=project, agent_name=agent, paths=list(paths))
        return invoke.call(tools_by_name()["file_reservation_paths"], arguments, settings, principal)

    reserve_as(hoarder, "BlueLake", "a.py", "b.py")
    with pytest.raises(TooManyRequests) as refused:
        reserve_as(hoarder, "GreenCastle", "c.py", "d.py")
    assert "This credential's agents in work-demo hold 2 active file reservations; 2 more would pass its share of 3" in refused.value.message
    reserve_as(hoarder, "GreenCastle", "c.py")  # its share
    reserve_as(hoarder, "BlueLake", "a.py", "b.py")  # renewing at its share
    with pytest.raises(TooManyRequests):
        reserve_as(hoarder, "BlueLake", "e.py")
    reserve_as(other, "RedStone", "r1.py")  # another credential's agents are not refused
    call("release_file_reservations", project_key=project, agent_name="BlueLake", paths=["a.py"])
    reserve_as(other, "BlueLake", "a.py")  # reserved again: in the share of the credential that did
    reserve_as(hoarder, "RedStone", "r2.py")  # hoarder: b.py, c.py (GreenCastle's), and this
    reserve_as(other, "BlueLake", "a.py", "b.py")  # b.py renewed, still hoarder's: other holds 2
    reserve_as(other, "GreenCastle", "g1.py")  # its third
    with pytest.raises(TooManyRequests) as refused:
        reserve_as(other, "GreenCastle", "g2.py")
    assert "The agents of work-demo hold 6 active file reservations" in refused.value.message  # the project's limit


def test_without_authentication_one_caller_may_fill_its_project(call, project, reserve, settings, monkeypatch):
    """A laptop without authentication: the operator (CLI) and whoever reaches the port are one
    caller, with no share to keep to."""
    monkeypatch.setattr(reservations, "HELD_PER_AGENT", 2)
    monkeypatch.setattr(reservations, "HELD_PER_PROJECT", 6)
    monkeypatch.setattr(reservations, "HELD_PER_CREDENTIAL", 3)
    reserve("BlueLake", "b1.py", "b2.py")
    reserve("GreenCastle", "g1.py", "g2.py")
    arguments = dict(project_key=project, agent_name="RedStone", paths=["r1.py", "r2.py"])
    invoke.call(tools_by_name()["file_reservation_paths"], arguments, settings, auth.ANONYMOUS)
    assert len(call("list_file_reservations", project_key=project)["file_reservations"]) == 6


@pytest.mark.sqlite_only  # the plans of SQLite's planner
@pytest.mark.parametrize(("limit", "index"), [
    ("HELD_PER_AGENT", "file_reservations_by_agent_expiry (agent_id=? AND released_ts=? AND expires_ts>?)"),
    ("HELD_PER_PROJECT", "file_reservations_active (project_id=? AND released_ts=? AND expires_ts>?)"),
    ("HELD_PER_CREDENTIAL", "file_reservations_by_credential (project_id=? AND credential=? AND released_ts=? AND expires_ts>?)"),
])
def test_what_is_held_is_counted_in_an_index(call, project, reserve, settings, monkeypatch, limit, index):
    """Counting walks the active reservations' index entries only: not the expired ones retention
    keeps for a week (RETENTION_LEASE_GRACE_DAYS), nor any table row."""
    caller = auth.Principal("bearer", "bearer:counted")
    invoke.call(tools_by_name()["file_reservation_paths"], dict(project_key=project, agent_name="BlueLake", paths=["a.py"]),
                settings, caller)
    monkeypatch.setattr(reservations, limit, 1)  # the refusal's query too (its Retry-After)
    statements = []
    with db.connection(settings) as conn, db.transaction(conn, write=True), auth.calling(caller):
        conn.set_trace_callback(statements.append)
        reserve_tool = tools_by_name()["file_reservation_paths"]
        with pytest.raises(TooManyRequests):
            reserve_tool.handler(conn, reserve_tool.input(project_key=project, agent_name="BlueLake", paths=["b.py"]))
        conn.set_trace_callback(None)
        held = [sql for sql in statements if "FROM file_reservations WHERE" in sql and "released_ts IS NULL AND expires_ts >" in sql
                and "id IN" not in sql]  # what is held, by agent, by project, by credential, and when there is room
        plans = [" | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")) for sql in held]
    assert len(plans) == {"HELD_PER_AGENT": 2, "HELD_PER_PROJECT": 3, "HELD_PER_CREDENTIAL": 4}[limit]
    assert f"USING COVERING INDEX {index}" in plans[-1] and f"USING COVERING INDEX {index}" in plans[-2]
    assert all("USING COVERING INDEX" in plan and "TEMP B-TREE" not in plan for plan in plans), plans


def test_force_release_is_refused_while_the_holder_is_alive(call, project, reserve):
    held = reserve("GreenCastle", "src/**")["granted"][0]
    with pytest.raises(Conflict) as refused:
        call("force_release_file_reservation", project_key=project, agent_name="BlueLake", file_reservation_id=held["id"])
    assert "GreenCastle" in refused.value.message and "src/**" in refused.value.message
    assert "send_message" in refused.value.hint
    assert len(call("list_file_reservations", project_key=project)["file_reservations"]) == 1


def test_force_release_of_an_expired_reservation_tells_the_holder(call, project, reserve, monkeypatch):
    held = reserve("GreenCastle", "src/**", ttl_seconds=60)["granted"][0]
    travel(monkeypatch, 61)
    forced = call(
        "force_release_file_reservation", project_key=project, agent_name="BlueLake",
        file_reservation_id=held["id"], note="Taking over the parser.",
    )
    assert forced["released"] and forced["notified"] and "expired" in forced["stale_because"]
    assert forced["file_reservation"]["released_ts"] is not None
    [message] = call("fetch_inbox", project_key=project, agent_name="GreenCastle", include_bodies=True)["messages"]
    assert message["sender"] == "BlueLake" and "src/**" in message["subject"]
    assert "Taking over the parser." in message["body_md"] and "expired" in message["body_md"]
    assert message["kind"] == "notice" and message["body_md"].startswith("*Notice from Agent Mail.*\n\n")  # as the others

    again = call("force_release_file_reservation", project_key=project, agent_name="RedStone", file_reservation_id=held["id"])
    assert (again["released"], again["notified"]) == (False, False)


def test_a_reason_with_a_nul_is_refused_and_a_stored_pattern_with_one_reaches_a_notice_whole(call, project, reserve, settings, monkeypatch):
    """QA session 32: a NUL was taken in a pattern and a reason (no git path holds one), and went into
    the force-release notice, where SQLite's text functions stop at it: a search for a word after
    it showed a snippet cut there. A pattern an older version stored still gets its notice, NUL shown as U+FFFD."""
    for tool, arguments in (("file_reservation_paths", {"paths": ["src/c.py"], "reason": "r\x00s"}),
                            ("macro_file_reservation_cycle", {"paths": ["src/c.py"], "reason": "r\x00s"})):
        with pytest.raises(InvalidArgument) as refused:
            call(tool, project_key=project, agent_name="GreenCastle", **arguments)
        assert "reason" in refused.value.message and "NUL" in refused.value.message
    held = reserve("GreenCastle", "src/ab.py", ttl_seconds=60)["granted"][0]
    with sql(settings) as conn:
        conn.execute("UPDATE file_reservations SET path_pattern = 'src/a' || char(0) || 'b.py' WHERE id = ?", (held["id"],))
    travel(monkeypatch, 61)
    assert call("force_release_file_reservation", project_key=project, agent_name="BlueLake", file_reservation_id=held["id"])["notified"]
    [notice] = call("fetch_inbox", project_key=project, agent_name="GreenCastle", include_bodies=True)["messages"]
    assert notice["subject"] == "Released your file reservation src/a\ufffdb.py" and "\x00" not in notice["body_md"]
    [hit] = call("search_messages", project_key=project, query="expired")["results"]
    assert "expired" in hit["snippet"], hit


def test_force_release_when_the_holder_went_quiet_tells_it_even_without_notify_previous(call, project, reserve, monkeypatch):
    """QA session 31: with notify_previous=false a lease still running vanished without a trace: no
    notice, and a heartbeat lists what expired, not what was taken. Its holder may be editing under it."""
    held = reserve("GreenCastle", "src/**", ttl_seconds=86400)["granted"][0]
    travel(monkeypatch, get_settings().stale_agent_seconds + 1)
    forced = call(
        "force_release_file_reservation", project_key=project, agent_name="BlueLake",
        file_reservation_id=held["id"], notify_previous=False,
    )
    assert "GreenCastle has been inactive" in forced["stale_because"] and forced["notified"]
    [message] = call("fetch_inbox", project_key=project, agent_name="GreenCastle", include_bodies=True)["messages"]
    assert message["kind"] == "notice" and "src/**" in message["subject"] and "BlueLake force-released" in message["body_md"]


def test_an_expired_lease_force_released_without_a_notice_is_a_lapse_at_the_next_heartbeat(call, project, reserve,
                                                                                            monkeypatch):
    """notify_previous=false spares the holder of an expired lease a notice: its heartbeat lists the lapse,
    whoever released the lease after it expired (it used to list only those released by no one)."""
    [taken] = reserve("GreenCastle", "src/**", ttl_seconds=60)["granted"]
    [lapsed] = reserve("GreenCastle", "docs/**", ttl_seconds=120)["granted"]
    reserve("GreenCastle", "lib/**", ttl_seconds=60)
    call("release_file_reservations", project_key=project, agent_name="GreenCastle", paths=["lib/**"])
    travel(monkeypatch, 121)
    forced = call("force_release_file_reservation", project_key=project, agent_name="BlueLake",
                  file_reservation_id=taken["id"], notify_previous=False)
    assert forced["released"] and not forced["notified"] and "expired" in forced["stale_because"]
    assert call("fetch_inbox", project_key=project, agent_name="GreenCastle")["messages"] == []
    heartbeat = call("renew_file_reservations", project_key=project, agent_name="GreenCastle")
    assert [(r["id"], r["released_ts"] is not None) for r in heartbeat["lapsed"]] == [(lapsed["id"], False), (taken["id"], True)]
    reserve("GreenCastle", "src/**")  # held again: no longer news
    assert [r["id"] for r in call("renew_file_reservations", project_key=project, agent_name="GreenCastle")["lapsed"]] == [
        lapsed["id"]]


def test_renewing_keeps_the_holder_from_looking_stale(call, project, reserve, monkeypatch):
    held = reserve("GreenCastle", "src/**", ttl_seconds=86400)["granted"][0]
    travel(monkeypatch, get_settings().stale_agent_seconds + 1)
    call("renew_file_reservations", project_key=project, agent_name="GreenCastle", extend_seconds=60)
    with pytest.raises(Conflict):
        call("force_release_file_reservation", project_key=project, agent_name="BlueLake", file_reservation_id=held["id"])


def test_stale_agent_seconds_is_a_setting(call, project, reserve, monkeypatch):
    held = reserve("GreenCastle", "src/**", ttl_seconds=86400)["granted"][0]
    monkeypatch.setenv("STALE_AGENT_SECONDS", "60")
    get_settings.cache_clear()
    try:
        travel(monkeypatch, 61)
        forced = call("force_release_file_reservation", project_key=project, agent_name="BlueLake", file_reservation_id=held["id"])
    finally:
        get_settings.cache_clear()
    assert forced["released"]


def test_force_release_from_a_retired_holder_sends_nothing(call, project, reserve, monkeypatch):
    reserve("GreenCastle", "src/**", "docs/**")
    monkeypatch.setattr(reservations, "HELD_PER_AGENT", 1)  # retiring releases one: the other is still held
    call("retire_agent", project_key=project, agent_name="GreenCastle")
    [held] = call("list_file_reservations", project_key=project)["file_reservations"]
    forced = call("force_release_file_reservation", project_key=project, agent_name="BlueLake", file_reservation_id=held["id"])
    assert forced["stale_because"] == "GreenCastle is retired" and forced["notified"] is False


def test_an_archived_project_takes_no_reservations(call, project, reserve):
    reserve("BlueLake", "docs/**")
    call("archive_project", project_key=project)
    with pytest.raises(Conflict) as refused:
        reserve("BlueLake", "src/**")
    assert "archived" in refused.value.message
    with pytest.raises(Conflict, match="archived"):  # nor renews one (QA session 31: a heartbeat did, a new grant not)
        call("renew_file_reservations", project_key=project, agent_name="BlueLake", extend_seconds=600)
    assert call("release_file_reservations", project_key=project, agent_name="BlueLake")["released"] == 1  # letting go is fine


@pytest.mark.parametrize("notify", [True, False])
def test_force_release_is_refused_to_a_retired_agent_and_in_an_archived_project(call, project, reserve, monkeypatch, notify):
    """QA session 30: it checked neither; only its notice to the holder did ("cannot send"), so with
    notify_previous=false a retired agent released, and so did anyone in a read-only project."""
    [held] = reserve("GreenCastle", "src/**", ttl_seconds=60)["granted"]
    travel(monkeypatch, 3600)  # expired: releasable by anyone still acting
    force = lambda: call("force_release_file_reservation", project_key=project, agent_name="BlueLake",  # noqa: E731
                         file_reservation_id=held["id"], notify_previous=notify)
    call("retire_agent", project_key=project, agent_name="BlueLake")
    with pytest.raises(Conflict) as refused:
        force()
    assert "BlueLake is retired" in refused.value.message and "cannot force-release" in refused.value.message
    call("unretire_agent", project_key=project, agent_name="BlueLake")
    call("archive_project", project_key=project)
    with pytest.raises(Conflict) as refused:
        force()
    assert "read-only" in refused.value.message
    call("unarchive_project", project_key=project)
    assert force()["released"] is True


def test_unknown_reservation_id_is_a_404(call, project):
    with pytest.raises(NotFound):
        call("force_release_file_reservation", project_key=project, agent_name="BlueLake", file_reservation_id=12345)


def test_check_reports_other_agents_exclusive_reservations(call, project, reserve):
    reserve("BlueLake", "src/**")
    reserve("GreenCastle", "docs/**", exclusive=False)

    def conflicting(**who):
        found = call("check_file_reservations", project_key=project, paths=["src/a.py", "docs/x.md", "README.md"], **who)
        return {c["path"]: [h["agent"] for h in c["holders"]] for c in found["conflicts"]}

    assert conflicting(agent_name="GreenCastle") == {"src/a.py": ["BlueLake"]}  # shared ones never block
    assert conflicting(agent_name="BlueLake") == {}
    assert conflicting() == {"src/a.py": ["BlueLake"]}  # a committer who holds nothing


@pytest.mark.parametrize(
    ("held", "staged", "blocked"),
    [("src", "src/app.py", True), ("src/*.py", "src/app.py", True), ("src/*.py", "src/app.py.d/x.ts", False),
     ("src/*.py", "src/pkg/app.py", False), ("src/**", "src/pkg/app.py", True),
     # QA session 31: a `[` made any pattern a glob, so these reserved nothing under them (the guard let commits in)
     ("notes[old", "notes[old/todo.md", True), ("app/[slug]", "app/[slug]/page.tsx", True),
     ("app/[[]slug]/**", "app/[slug]/page.tsx", True), ("app/[[]slug]/*.tsx", "app/[slug]/page.tsx", True),
     ("app/[slug]", "app/[slugs]/page.tsx", False), ("app/[slug]", "app/s", True), ("app/[slug]", "app/[slug]", True),
     ("app/[[]slug]/**", "app/s/page.tsx", False)],
)
def test_checked_paths_are_files(call, project, reserve, held, staged, blocked):
    reserve("BlueLake", held)
    assert bool(call("check_file_reservations", project_key=project, paths=[staged])["conflicts"]) is blocked


def test_overlap_peers(project, reserve, settings):
    reserve("BlueLake", "src/**")
    reserve("GreenCastle", "src/app.py", exclusive=False)
    reserve("RedStone", "docs/**")
    with db.connection(settings) as conn:
        (project_id,) = conn.execute("SELECT id FROM projects WHERE slug = ?", (project,)).fetchone()
        everyone = [agent_id(project_id, name) for name in ("BlueLake", "GreenCastle", "RedStone")]
        assert overlap_peers(conn, project_id, agent_id(project_id, "BlueLake"), everyone) == {agent_id(project_id, "GreenCastle")}
        assert overlap_peers(conn, project_id, agent_id(project_id, "BlueLake"), everyone[2:]) == set()
        assert overlap_peers(conn, project_id, agent_id(project_id, "RedStone"), everyone) == set()


def test_list_file_reservations_runs_off_the_event_loop(settings, call, project, monkeypatch):
    """Each reservation's conflicts_with compares its pattern with the others near it: a page of
    500 of 20,000 active reservations took ~80 ms, which held every other request on the loop."""
    threads = []
    monkeypatch.setattr(reservations, "with_conflicts",
                        lambda *args, real=reservations.with_conflicts: threads.append(threading.current_thread()) or real(*args))
    call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=["src/api/*.py"])
    listed = asyncio.run(invoke.ajson(tools_by_name()["list_file_reservations"], {"project_key": project}, settings))
    assert b"src/api/*.py" in listed and threads and threads[0] is not threading.main_thread()


def star_globs(letter: str, count: int, start: int = 0, folder: str = "") -> list[str]:
    """Patterns that start with a star (no literal prefix) in `folder`, each overlapping every other
    such one: `*a1*/**/*.py` and `*b2*/**/*.py` both match `a1b2/x.py`."""
    return [f"{folder}*{letter}{n}*/**/*.py" for n in range(start, start + count)]


def test_a_check_that_would_compare_too_much_is_refused_and_answers_list_few_holders(call, project, reserve):
    """Security review, session 16: BlueLake held 1,000 such patterns, then a request for 1,000
    more compared every pair (1M conflicts: the writer was held 48 s, and a 422 came after the
    grant was stored)."""
    reserve("BlueLake", *star_globs("b", 300))
    with pytest.raises(InvalidArgument) as refused:  # 200 x 300 pairs to compare
        reserve("GreenCastle", *star_globs("g", 200))
    assert "60,000 pairs" in refused.value.message and "Nothing was reserved." in refused.value.message
    assert "fewer paths" in refused.value.hint
    assert call("release_file_reservations", project_key=project, agent_name="GreenCastle")["released"] == 0  # none held

    conflicts = reserve("GreenCastle", *star_globs("g", 3))["conflicts"]  # 900 conflicts: 100 listed in full
    assert [(c["path"], len(c["holders"]), c["holders_unlisted"]) for c in conflicts] == [
        ("*g0*/**/*.py", 100, 200), ("*g1*/**/*.py", 0, 300), ("*g2*/**/*.py", 0, 300)]
    assert len({h["path_pattern"] for h in conflicts[0]["holders"]} & set(star_globs("b", 300))) == 100
    checked = call("check_file_reservations", project_key=project, paths=["*/x.py", "src/app.py"])["conflicts"]
    assert [(c["path"], len(c["holders"]), c["holders_unlisted"]) for c in checked] == [("*/x.py", 100, 203)]


@pytest.mark.sqlite_only
def test_list_file_reservations_pages_by_what_its_conflicts_cost_and_never_answers_too_much(call, project, reserve, settings):
    """400 reservations each conflicting with 400 others: a page of 500 listed 160,000 conflicts,
    over 8 MiB, so the project's reservations could not be listed at all (422)."""
    reserve("BlueLake", *star_globs("b", 400), exclusive=False)
    for start in range(0, 400, 50):
        reserve("GreenCastle", *star_globs("g", 50, start))
    tool, seen, cursor = tools_by_name()["list_file_reservations"], [], None
    for _ in range(50):
        page = asyncio.run(invoke.ajson(tool, {"project_key": project, "limit": 500, "cursor": cursor}, settings))
        listed = orjson.loads(page)
        seen += listed["file_reservations"]
        cursor = listed["next_cursor"]
        if cursor is None:
            break
    assert sorted(r["path_pattern"] for r in seen) == sorted(star_globs("b", 400) + star_globs("g", 400))
    assert all(len(r["conflicts_with"]) == 10 and r["conflicts_with"] and r["conflicts_unlisted"] == 390 for r in seen)
    assert len(seen) > len(orjson.loads(asyncio.run(invoke.ajson(tool, {"project_key": project, "limit": 500}, settings)))[
        "file_reservations"])  # the first page ended early


def test_overlap_peers_compares_a_bounded_number_of_pairs(project, reserve, settings, monkeypatch):
    """A send to an `auto` recipient asks whether the two hold overlapping reservations: on the
    writer thread, so past PAIRS_MAX comparisons the answer is no (they ask for contact instead).
    (In a folder: a pattern that starts with a glob admits no one, and is not compared.)"""
    reserve("BlueLake", *star_globs("b", 30, folder="src/"))
    reserve("GreenCastle", *[f"src/docs/g{n}.md" for n in range(30)])  # none meets BlueLake's *.py
    compared = []
    monkeypatch.setattr(reservations, "covers", lambda a, b, budget, real=reservations.covers: compared.append(a) or real(a, b, budget))
    monkeypatch.setattr(reservations, "PAIRS_MAX", 200)
    with db.connection(settings) as conn:
        (project_id,) = conn.execute("SELECT id FROM projects WHERE slug = ?", (project,)).fetchone()
        green = agent_id(project_id, "GreenCastle")
        assert overlap_peers(conn, project_id, agent_id(project_id, "BlueLake"), [green]) == set()
    assert 0 < len(compared) <= 200


def test_a_check_reads_no_more_reservations_than_it_may_compare(call, project, reserve, settings, monkeypatch):
    """Security review, session 17: a check read every active reservation near its paths before
    counting the pairs, so one refused for comparing too many had read them all (for `**`, all the
    project held). Reading now stops past what it may compare; here, a project over its limit."""
    reserve("GreenCastle", *star_globs("g", 300, folder="src/"))  # (in a folder: overlap_peers compares them, below)
    read = []

    class Counted(reservations.ActiveNear):
        def __init__(self, db, project_id, patterns, *args, **kwargs):
            super().__init__(db, project_id, patterns, *args, **kwargs)
            read.append((len(patterns), sum(map(len, self.by_prefix.values()))))

    monkeypatch.setattr(reservations, "ActiveNear", Counted)
    monkeypatch.setattr(reservations, "PAIRS_MAX", 20)
    monkeypatch.setattr(reservations, "HELD_PER_AGENT", 10)
    with pytest.raises(InvalidArgument) as refused:  # a pre-commit check may compare ten times more
        call("check_file_reservations", project_key=project, paths=["src/y.py"])
    assert "would compare more pairs of patterns than 200" in refused.value.message
    with pytest.raises(InvalidArgument) as refused:
        reserve("BlueLake", "**")
    assert "would compare more pairs of patterns than 20" in refused.value.message and "Nothing was reserved" in refused.value.message
    listed = call("list_file_reservations", project_key=project, limit=500)  # its first reservation, compared alone
    assert len(listed["file_reservations"]) == 1 and listed["next_cursor"]
    with db.connection(settings) as conn:  # the auto contact policy's question: at most as many patterns as one may hold
        (project_id,) = conn.execute("SELECT id FROM projects WHERE slug = ?", (project,)).fetchone()
        overlap_peers(conn, project_id, agent_id(project_id, "GreenCastle"), [agent_id(project_id, "BlueLake")])
    assert [rows for _, rows in read] == [201, 21, 21, 21, 0] and read[-1][0] == 10


def crafted(n: int) -> tuple[str, str]:
    """(a path, a glob) of QA session 30: legal, ~1 KiB, ~25,000 comparisons to tell apart (5-10 ms)."""
    piece = "a" * 149 + "b"
    pattern = "*/" + "*" * (1 + n % 32) + "*".join([piece] * 6) + "*" * (1 + n // 32)
    return "src/" + ("a" * 149 + piece * 6)[:990] + f"q{n}", pattern


@pytest.fixture
def spent(monkeypatch):
    """What each comparison budget of a call was given and spent, as (given, spent)."""
    budgets = []

    class Counted(reservations.Budget):
        def __init__(self, comparisons):
            super().__init__(comparisons)
            budgets.append(self)

    monkeypatch.setattr(reservations, "Budget", Counted, raising=False)
    return lambda: [(b.left + b.spent, b.spent) for b in budgets]


def test_comparing_costly_patterns_is_bounded_per_request_not_per_pair(call, project, reserve, spent, monkeypatch):
    """QA session 30: PAIRS_MAX bounded the pairs, not what they cost: 50 paths against 1,000 held
    crafted globs (allowed) held the one writer thread ~4 minutes, a check the slow-read thread (and
    every project's pre-commit guard, which then committed anyway) ~47 minutes."""
    path, _ = crafted(0)
    reserve("RedStone", path)  # held before the others: compared with nothing
    reserve("BlueLake", *[crafted(n)[1] for n in range(20)])  # 20 pairs: within the budget
    monkeypatch.setattr(reservations, "PAIRS_MAX", 100)  # 10,000 comparisons a write now: less than one crafted pair
    with pytest.raises(InvalidArgument) as refused:
        reserve("GreenCastle", path)
    assert refused.value.code == "too_much_to_compare" and "Nothing was reserved." in refused.value.message
    assert "fewer paths" in refused.value.hint
    assert call("release_file_reservations", project_key=project, agent_name="GreenCastle")["released"] == 0
    with pytest.raises(InvalidArgument) as refused:  # ten times the budget: still less than 20 pairs cost (500,000)
        call("check_file_reservations", project_key=project, paths=[path])
    assert refused.value.code == "too_much_to_compare"
    for given, used in spent()[-2:]:
        assert used <= given + 2 * 1024  # past it by one charge at most (a segment's tokens)

    listed = call("list_file_reservations", project_key=project, limit=500)  # a page, a budget
    [first] = listed["file_reservations"]  # RedStone's: its 20 clashes cost more than a page may
    assert first["path_pattern"] == path and listed["next_cursor"]
    assert first["conflicts_unchecked"] + len(first["conflicts_with"]) + first["conflicts_unlisted"] == 20
    assert first["conflicts_unchecked"] > 0
    given, used = spent()[-1]
    assert used <= given + 2 * 1024


def test_ordinary_globs_near_a_large_request_fit_the_comparison_budget(call, project, reserve):
    """QA session 30: 20 comparisons a pair allowed, while a long path against a glob of its folder takes
    30-45: 1,000 files against 25 shared globs (25,000 pairs, half of PAIRS_MAX) were refused."""
    folder = "services/billing/internal/handlers"
    reserve("RedStone", *[f"{folder}/*_k{n}_test.go" for n in range(25)], exclusive=False)
    paths = [f"{folder}/invoice_handler_{n}_test.go" for n in range(1000)]
    assert len(reserve("BlueLake", *paths)["granted"]) == 1000
    assert call("check_file_reservations", project_key=project, agent_name="BlueLake", paths=paths)["conflicts"] == []
