"""Build slots: named leases (e.g. `frontend-build`) that keep two agents from running the
same build, dev server or migration at once.

Unlike file reservations, slots are enforced: an exclusive holder excludes everyone else,
shared holders exclude exclusive requests only, and a refused request is a 409.

One row per holder. On Turso replicas two processes can each grant the same slot; both
rows reach the primary, and `confirm_build_slot` then settles the race before either
answers: exactly one is confirmed, the other withdraws and is refused. See docs/turso.md.
"""

import sqlite3
import time
from typing import Annotated

from pydantic import Field

from .. import clock
from ..store.db import refresh, transaction, values_of
from ..errors import Conflict, NotFound
from ..fields import AgentName, NotBlank, ProjectKey
from ..ids import stable_id
from ..registry import Input, Output, tool
from .agents import agent_id, find_agent, mark_active, refuse_retired
from .paging import CURSOR_HELP, NEXT_HELP, Keyset, PageCursor1
from .projects import find_project, refuse_archived
from .reservations import ExtendSeconds, TtlSeconds

SlotName = Annotated[NotBlank, Field(min_length=1, max_length=128, description="The slot's name, e.g. frontend-build.")]


class BuildSlot(Output):
    slot: str
    agent: str
    exclusive: bool
    acquired_ts: str
    expires_ts: str


def build_slot(row: sqlite3.Row) -> BuildSlot:
    return BuildSlot(**{name: row[name] for name in BuildSlot.model_fields})


def holders(db: sqlite3.Connection, project_id: int, slots: list[str]) -> list[sqlite3.Row]:
    """Who holds these slots now: unreleased, unexpired rows, confirmed ones
    first, then in (acquired_ts, id) order, each admitted while compatible with those before it.
    (A grant being settled across replicas may clash with another; the later one is no holder.
    Nor is a retired agent: it cannot take a slot, and retiring releases what it held.)
    The slots are a VALUES table joined by equality (values_of: with `slot IN (...)`, even of one,
    Turso's engine read every row of the project's, released ones too)."""
    wanted, params = values_of([(slot,) for slot in slots])
    sql = (
        f"WITH wanted (slot) AS ({wanted}) SELECT s.*, a.name AS agent FROM wanted CROSS JOIN build_slots s"
        " JOIN agents a ON a.id = s.agent_id"
        " WHERE s.project_id = ? AND s.slot = wanted.slot AND s.released_ts IS NULL AND s.expires_ts > ?"
        " AND a.retired_ts IS NULL"  # a retired agent holds nothing (retiring releases a bounded number at a time)
    )
    params += [project_id, clock.now()]
    admitted: list[sqlite3.Row] = []
    # Per slot, whether its holders so far are one exclusive one (else all shared): what a
    # newcomer clashes with, in one look however many share it.
    exclusive: dict[str, bool] = {}
    for row in db.execute(sql + " ORDER BY s.slot, s.confirmed_ts IS NULL, s.acquired_ts, s.id", params):
        held = exclusive.get(row["slot"])
        if held is None or not clash(row["exclusive"], held):
            exclusive[row["slot"]] = bool(row["exclusive"])
            admitted.append(row)
    return admitted


def clash(exclusive: bool, held_exclusive: bool) -> bool:
    """Readers-writer rule: two holds coexist only when both are shared."""
    return exclusive or held_exclusive


NAMED_BLOCKERS = 5  # holders a refusal names; the others are counted (a slot may be shared by every agent)


def refuse(slot: str, blockers: list[sqlite3.Row]) -> Conflict:
    held_by = ", ".join(
        f"{row['agent']} ({'exclusive' if row['exclusive'] else 'shared'}, until {row['expires_ts']})"
        for row in blockers[:NAMED_BLOCKERS]
    ) + (f" and {len(blockers) - NAMED_BLOCKERS} more" if len(blockers) > NAMED_BLOCKERS else "")
    return Conflict(
        f"Build slot {slot!r} is held by {held_by}.",
        "Wait until it expires or is released (list_build_slots shows holders), or ask the holder with send_message.",
    )


def own_hold(db: sqlite3.Connection, project: sqlite3.Row, agent: sqlite3.Row, slot: str) -> sqlite3.Row:
    """The agent's current hold on the slot; NotFound if it has none, Conflict if it lost a replica race."""
    current = holders(db, project["id"], [slot])
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
    refuse_retired(project, agent, "take build slots")
    blockers = [
        row
        for row in holders(db, project["id"], [args.slot])
        if row["agent_id"] != agent["id"] and clash(args.exclusive, row["exclusive"])
    ]
    if blockers:
        raise refuse(args.slot, blockers)
    now = clock.now()
    expires = clock.later(now, args.ttl_seconds)
    row_id = slot_row_id(project["id"], args.slot, agent["id"])
    # A hold is updated, or else inserted: not an upsert (docs/turso.md).
    db.execute(
        "UPDATE build_slots SET exclusive = ?,"
        # a hold still running keeps its place in the tie-break order, and its confirmation
        " acquired_ts = CASE WHEN released_ts IS NULL AND expires_ts > ? THEN acquired_ts ELSE ? END,"
        " confirmed_ts = CASE WHEN released_ts IS NULL AND expires_ts > ? THEN confirmed_ts END,"
        " expires_ts = ?, released_ts = NULL WHERE id = ?",
        (args.exclusive, now, now, now, expires, row_id),
    )
    db.execute(
        "INSERT INTO build_slots (id, project_id, slot, agent_id, exclusive, acquired_ts, expires_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (row_id, project["id"], args.slot, agent["id"], args.exclusive, now, expires),
    )
    mark_active(db, agent["id"], now)
    return build_slot(find_slot_row(db, row_id))


SETTLE_SECONDS = 5.0  # how long a claim waits for a rival claim to withdraw before it gives up
SETTLE_POLL_SECONDS = 0.02


def confirm_build_slot(db: sqlite3.Connection, args: AcquireBuildSlotInput, granted: BuildSlot) -> BuildSlot:
    """Settle a fresh grant against rival claims that other replicas pushed meanwhile.

    Every claim was pushed before its check, so of two racing claims at least one sees the
    other (neither can see the primary without the other's claim). A claim alone is confirmed.
    One that sees a confirmed rival, or an unconfirmed rival earlier in (acquired_ts, id) order,
    withdraws and is refused. The earliest claim waits for later ones to withdraw (or confirm,
    if they saw no rival: then it withdraws). So exactly one wins, whatever the interleaving.
    On embedded SQLite a grant never has a rival, and is confirmed at once."""
    project = find_project(db, args.project_key)
    row_id = slot_row_id(project["id"], args.slot, agent_id(project["id"], args.agent_name))
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        refresh(db)  # our claim is on the primary: now see every claim pushed before it
        with transaction(db, write=True):
            mine = find_slot_row(db, row_id)
            if mine["released_ts"] is not None or mine["expires_ts"] <= clock.now():
                raise ended(args.slot, mine, holders(db, project["id"], [args.slot]))  # a replayed grant, since let go
            if mine["confirmed_ts"] is not None:  # a hold renewed while running
                return build_slot(mine)
            rivals = [
                row
                for row in db.execute(
                    "SELECT s.*, a.name AS agent FROM build_slots s JOIN agents a ON a.id = s.agent_id"
                    " WHERE s.project_id = ? AND s.slot = ? AND s.id != ? AND s.released_ts IS NULL AND s.expires_ts > ?"
                    " AND a.retired_ts IS NULL",
                    (project["id"], args.slot, row_id, clock.now()),
                )
                if clash(mine["exclusive"], row["exclusive"])
            ]
            if not rivals:
                db.execute("UPDATE build_slots SET confirmed_ts = ? WHERE id = ?", (clock.now(), row_id))
                return build_slot(find_slot_row(db, row_id))
            lost = any(row["confirmed_ts"] is not None or claim_order(row) < claim_order(mine) for row in rivals)
            give_up = lost or time.monotonic() > deadline
            if give_up:
                db.execute("UPDATE build_slots SET released_ts = ? WHERE id = ?", (clock.now(), row_id))
        if give_up:  # named: the rivals that won (confirmed, or claimed earlier), not other losers withdrawing too
            raise refuse(args.slot, [row for row in rivals if row["confirmed_ts"] is not None or claim_order(row) < claim_order(mine)]
                         or rivals)
        time.sleep(SETTLE_POLL_SECONDS)


def ended(slot: str, mine: sqlite3.Row, current: list[sqlite3.Row]) -> Conflict:
    """A retry (its idempotency key) of a grant whose hold has ended since: the retry is settled on
    what holds now (it answered the old grant, while another agent held the slot)."""
    if blockers := [row for row in current if row["agent_id"] != mine["agent_id"]]:
        return refuse(slot, blockers)
    return Conflict(
        f"{mine['agent']}'s hold of build slot {slot!r} that this request granted has ended"
        f" ({'released' if mine['released_ts'] else 'expired'} at {mine['released_ts'] or mine['expires_ts']}).",
        "Acquire it again with a new idempotency key (or none) if you still need it.",
    )


def claim_order(row: sqlite3.Row) -> tuple:
    """The deterministic tie-break between racing claims: every replica sorts them alike."""
    return row["acquired_ts"], row["id"]


class RenewBuildSlotInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    slot: SlotName
    extend_seconds: ExtendSeconds = 1800


def renew_build_slot(db: sqlite3.Connection, args: RenewBuildSlotInput) -> BuildSlot:
    """Extend your hold on a build slot by extend_seconds. 404 if you no longer hold it
    (expired or released): acquire it again."""
    project = find_project(db, args.project_key)
    refuse_archived(project)  # read-only: what it holds lapses (acquire grants nothing there either)
    agent = find_agent(db, project, args.agent_name)
    refuse_retired(project, agent, "renew build slots")
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
    limit: Annotated[int, Field(ge=1, le=500, description="The holders of at most this many slots per page; next_cursor continues.")] = 100
    cursor: PageCursor1 | None = Field(None, description=CURSOR_HELP)


class BuildSlots(Output):
    slots: list[BuildSlot] = Field(description="Current holders, by slot then acquisition time.")
    next_cursor: str | None = Field(None, description=NEXT_HELP)


BY_NAME = Keyset((("slot", "slot"),))


def list_build_slots(db: sqlite3.Connection, args: ListBuildSlotsInput) -> BuildSlots:
    """Who holds which build slot now (released and expired holds are gone), by slot name, a
    page of slots at a time."""
    project = find_project(db, args.project_key)
    if args.slot is not None:
        return BuildSlots(slots=[build_slot(row) for row in holders(db, project["id"], [args.slot])])
    after, params = BY_NAME.after(args.cursor)
    held = db.execute(
        "SELECT DISTINCT slot FROM build_slots s JOIN agents a ON a.id = s.agent_id"
        " WHERE s.project_id = ? AND s.released_ts IS NULL AND s.expires_ts > ? AND a.retired_ts IS NULL"
        f"{after}{BY_NAME.order_by()} LIMIT ?",
        (project["id"], clock.now(), *params, args.limit + 1),
    )
    page, cursor = BY_NAME.page(held, args.limit)
    rows = holders(db, project["id"], [row["slot"] for row in page]) if page else []
    return BuildSlots(slots=[build_slot(row) for row in rows], next_cursor=cursor)


TOOLS = [
    tool(acquire_build_slot, acts_as="agent_name", settle=confirm_build_slot, idempotent=True),
    tool(renew_build_slot, acts_as="agent_name"),
    tool(release_build_slot, acts_as="agent_name", fresh=True, destructive=True, repeat_safe=True),  # "not held" must not be another replica's news
    tool(list_build_slots, read_only=True, off_loop=True),  # a slot's holders are never split: a shared one may have thousands
]
