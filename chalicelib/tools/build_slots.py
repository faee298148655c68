"""Build slots: named leases (e.g. `frontend-build`) that keep two agents from running the
same build, dev server or migration at once.

Unlike file reservations, slots are enforced: an exclusive holder excludes everyone else,
shared holders exclude exclusive requests only, and a refused request is a 409.

One row per holder. When two database replicas each granted the same slot (possible once
replicas sync), both rows survive the merge; `holders` then admits them in
(acquired_ts, id) order, so every replica agrees that the earliest one holds the slot and
the other learns it lost on its next call. See docs/reservations.md.
"""

import sqlite3
from typing import Annotated

from pydantic import Field

from .. import clock
from ..errors import Conflict, NotFound
from ..fields import AgentName, ProjectKey
from ..ids import stable_id
from ..registry import Input, Output, tool
from .agents import find_agent, mark_active
from .projects import find_project, refuse_archived
from .reservations import TtlSeconds

SlotName = Annotated[str, Field(min_length=1, max_length=128, description="The slot's name, e.g. frontend-build.")]


class BuildSlot(Output):
    slot: str
    agent: str
    exclusive: bool
    acquired_ts: str
    expires_ts: str


def build_slot(row: sqlite3.Row) -> BuildSlot:
    return BuildSlot(**{name: row[name] for name in BuildSlot.model_fields})


def holders(db: sqlite3.Connection, project_id: int, slot: str | None = None) -> list[sqlite3.Row]:
    """Who holds the slot (every slot, if None) now: unreleased, unexpired rows, admitted in
    (acquired_ts, id) order while compatible with those admitted before them. Rows granted
    concurrently on two replicas can clash; the later one is then simply not a holder."""
    sql = (
        "SELECT s.*, a.name AS agent FROM build_slots s JOIN agents a ON a.id = s.agent_id"
        " WHERE s.project_id = ? AND s.released_ts IS NULL AND s.expires_ts > ?"
    )
    params: list = [project_id, clock.now()]
    if slot is not None:
        sql += " AND s.slot = ?"
        params.append(slot)
    admitted: list[sqlite3.Row] = []
    for row in db.execute(sql + " ORDER BY s.slot, s.acquired_ts, s.id", params):
        if not any(clash(row["exclusive"], held["exclusive"]) for held in admitted if held["slot"] == row["slot"]):
            admitted.append(row)
    return admitted


def clash(exclusive: bool, held_exclusive: bool) -> bool:
    """Readers-writer rule: only two shared holds coexist."""
    return exclusive or held_exclusive


def refuse(slot: str, blockers: list[sqlite3.Row]) -> Conflict:
    held_by = ", ".join(
        f"{row['agent']} ({'exclusive' if row['exclusive'] else 'shared'}, until {row['expires_ts']})" for row in blockers
    )
    return Conflict(
        f"Build slot {slot!r} is held by {held_by}.",
        "Wait until it expires or is released (list_build_slots shows holders), or ask the holder with send_message.",
    )


def own_hold(db: sqlite3.Connection, project: sqlite3.Row, agent: sqlite3.Row, slot: str) -> sqlite3.Row:
    """The agent's current hold on the slot; NotFound if it has none, Conflict if it lost a replica race."""
    current = holders(db, project["id"], slot)
    mine = next((row for row in current if row["agent_id"] == agent["id"]), None)
    if mine is not None:
        return mine
    lost = find_slot_row(db, slot_row_id(project["id"], slot, agent["id"]))
    if lost is not None and lost["released_ts"] is None and lost["expires_ts"] > clock.now():
        raise refuse(slot, [row for row in current if clash(lost["exclusive"], row["exclusive"])])
    raise NotFound(
        f"{agent['name']} does not hold build slot {slot!r}.",
        "It may have expired or been released: acquire_build_slot takes it again.",
    )


def slot_row_id(project_id: int, slot: str, agent_id: int) -> int:
    return stable_id("build_slot", project_id, slot, agent_id)


def find_slot_row(db: sqlite3.Connection, row_id: int) -> sqlite3.Row:
    return db.execute(
        "SELECT s.*, a.name AS agent FROM build_slots s JOIN agents a ON a.id = s.agent_id WHERE s.id = ?", (row_id,)
    ).fetchone()


class AcquireBuildSlotInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    slot: SlotName
    ttl_seconds: TtlSeconds = 3600
    exclusive: bool = Field(True, description="False: share the slot with other shared holders.")


def acquire_build_slot(db: sqlite3.Connection, args: AcquireBuildSlotInput) -> BuildSlot:
    """Take a build slot before a build, dev server or migration that must not run twice.

    Refused (409, naming the holder and its expiry) while another agent holds it
    exclusively, or, for an exclusive request, while anyone else holds it. Shared holders
    coexist. Acquiring a slot you hold renews it for ttl_seconds. Release it when done."""
    project = find_project(db, args.project_key)
    refuse_archived(project)
    agent = find_agent(db, project, args.agent_name)
    blockers = [
        row
        for row in holders(db, project["id"], args.slot)
        if row["agent_id"] != agent["id"] and clash(args.exclusive, row["exclusive"])
    ]
    if blockers:
        raise refuse(args.slot, blockers)
    now = clock.now()
    row_id = slot_row_id(project["id"], args.slot, agent["id"])
    db.execute(
        "INSERT INTO build_slots (id, project_id, slot, agent_id, exclusive, acquired_ts, expires_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET exclusive = excluded.exclusive,"
        # a hold still running keeps its place in the tie-break order
        "  acquired_ts = CASE WHEN released_ts IS NULL AND expires_ts > excluded.acquired_ts"
        "   THEN acquired_ts ELSE excluded.acquired_ts END,"
        "  expires_ts = excluded.expires_ts, released_ts = NULL",
        (row_id, project["id"], args.slot, agent["id"], args.exclusive, now, clock.later(now, args.ttl_seconds)),
    )
    mark_active(db, agent["id"], now)
    return build_slot(find_slot_row(db, row_id))


class RenewBuildSlotInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    slot: SlotName
    extend_seconds: TtlSeconds = 1800


def renew_build_slot(db: sqlite3.Connection, args: RenewBuildSlotInput) -> BuildSlot:
    """Extend your hold on a build slot by extend_seconds. 404 if you no longer hold it
    (expired or released): acquire it again."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    mine = own_hold(db, project, agent, args.slot)
    expires = clock.later(mine["expires_ts"], args.extend_seconds)
    db.execute("UPDATE build_slots SET expires_ts = ? WHERE id = ?", (expires, mine["id"]))
    mark_active(db, agent["id"], clock.now())
    return build_slot(find_slot_row(db, mine["id"]))


class ReleaseBuildSlotInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    slot: SlotName


class SlotReleased(Output):
    released: bool = Field(description="False if you did not hold it (already released or expired).")
    released_ts: str


def release_build_slot(db: sqlite3.Connection, args: ReleaseBuildSlotInput) -> SlotReleased:
    """Release your hold on a build slot. Idempotent."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    now = clock.now()
    released = db.execute(
        "UPDATE build_slots SET released_ts = ? WHERE id = ? AND released_ts IS NULL AND expires_ts > ?",
        (now, slot_row_id(project["id"], args.slot, agent["id"]), now),
    ).rowcount
    mark_active(db, agent["id"], now)
    return SlotReleased(released=bool(released), released_ts=now)


class ListBuildSlotsInput(Input):
    project_key: ProjectKey
    slot: SlotName | None = Field(None, description="Only this slot.")


class BuildSlots(Output):
    slots: list[BuildSlot] = Field(description="Current holders, by slot then acquisition time.")


def list_build_slots(db: sqlite3.Connection, args: ListBuildSlotsInput) -> BuildSlots:
    """Who holds which build slot now (released and expired holds are gone)."""
    project = find_project(db, args.project_key)
    return BuildSlots(slots=[build_slot(row) for row in holders(db, project["id"], args.slot)])


TOOLS = [
    tool(acquire_build_slot, acts_as="agent_name"),
    tool(renew_build_slot, acts_as="agent_name"),
    tool(release_build_slot, acts_as="agent_name"),
    tool(list_build_slots, read_only=True),
]
