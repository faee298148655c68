"""Retention: how long old mail, idle agents and finished leases stay (docs/retention.md).

A project keeps its mail forever unless it has a policy (set_retention_policy) or the server
a default (RETENTION_MODE, RETENTION_DAYS): `purge` deletes messages older than N days,
`archive_only` drops their bodies from the database once the git archive holds them.
`run_retention(settings)` applies the policies, retires agents idle for
RETENTION_AGENT_IDLE_DAYS (if set), releases the reservations retired agents still hold, deletes
file reservations and build slots that ended RETENTION_LEASE_GRACE_DAYS ago, deletes attachment
content no message has named for ATTACHMENT_UNUSED_DAYS (tools/attachment_refs.py), and merges
the embedded search index's segments a bounded number of pages (store/search_index.py,
merge_fts) and indexes the ids and paths of mail stored before their index (store/search_runs.py
backfill, RUNS_SHARE times the budget). Each kind of work stops after RETENTION_BATCH rows, in transactions of
RETENTION_CHUNK rows, so a run is short and never holds the write lock for long; the next run
takes the rest. It runs from the local archive worker when idle, from `python -m chalicelib
retention run`, and from a scheduled Lambda function on AWS.
"""

import logging
import sqlite3
import time
from collections import defaultdict
from datetime import datetime
from typing import Annotated, Callable

from pydantic import Field

from .. import clock
from ..archive import outbox
from ..attachments.storage import storage
from ..config import CENTURY_DAYS, RetentionMode, Settings, get_settings
from ..errors import Conflict
from ..fields import ProjectKey
from ..ids import RANDOM_BITS, first_id_at
from ..registry import Input, Output, tool
from ..store.db import connection, placeholders, transaction
from ..store import search_runs
from ..store.search_index import merge_fts
from . import attachment_refs, thread_summaries
from .agents import retire
from .counts import uncount_messages
from .mailbox import CURSOR_WINDOW_SECONDS
from .projects import find_project, project_by_id
from .reservations import LIVE, release_some

log = logging.getLogger(__name__)

# Messages a run indexes the runs of (store/search_runs.py backfill: mail stored before migration
# 0052), per row of the budget: a message takes ~0.5 ms, and a million would take 200 hourly runs.
RUNS_SHARE = 10
# How long an archive entry can trail its message: both are written by one transaction.
OUTBOX_LAG_IDS = (60 * 1000) << RANDOM_BITS


class SetRetentionPolicyInput(Input):
    project_key: ProjectKey
    mode: RetentionMode | None = Field(
        description="keep (forever), purge (delete after `days`), archive_only (bodies only in the git archive"
        " after `days`); null: the server's default (RETENTION_MODE)."
    )
    days: Annotated[int, Field(ge=1, le=CENTURY_DAYS)] | None = Field(
        None, description="Age in days after which messages are purged or archived; null: RETENTION_DAYS."
    )


class RetentionPolicy(Output):
    project: str
    mode: RetentionMode | None = Field(description="The project's own mode; null: the server's default applies.")
    days: int | None = Field(description="The project's own age limit in days; null: the server's default.")


def set_retention_policy(db: sqlite3.Connection, args: SetRetentionPolicyInput) -> RetentionPolicy:
    """Set how long a project keeps its messages (an administrator's decision).

    keep: forever. purge: messages older than `days` are deleted from the database (with their
    recipients and search entries). archive_only: their bodies leave the database and stay in the
    git archive only (subjects, recipients and threads remain). Applied by the periodic retention
    run, a batch at a time. mode null resets to the server's default."""
    project = find_project(db, args.project_key)
    if args.mode == "archive_only" and not get_settings().archive_enabled:  # the request is sound; the server is not so set up
        raise Conflict(
            "archive_only needs the git archive, and this server runs without it (ARCHIVE_ENABLED=false).",
            "Enable the archive, or choose purge or keep.",
        )
    if (project["retention_mode"], project["retention_days"]) == (args.mode, args.days):
        return policy(project)
    row = db.execute(
        "UPDATE projects SET retention_mode = ?, retention_days = ? WHERE id = ? RETURNING *",
        (args.mode, args.days, project["id"]),
    ).fetchall()[0]
    outbox.record_project(db, row)  # its project.json says so: a restore from the archive keeps it
    return policy(row)


class GetRetentionPolicyInput(Input):
    project_key: ProjectKey


def get_retention_policy(db: sqlite3.Connection, args: GetRetentionPolicyInput) -> RetentionPolicy:
    """A project's own retention policy (null fields: the server's default applies)."""
    return policy(find_project(db, args.project_key))


def policy(row: sqlite3.Row) -> RetentionPolicy:
    return RetentionPolicy(project=row["slug"], mode=row["retention_mode"], days=row["retention_days"])


# The periodic run


def run_retention(settings: Settings, budget: int | None = None) -> dict[str, int]:
    """One bounded retention run: at most `budget` (RETENTION_BATCH) rows of each kind. How many
    messages were purged or archived, agents retired, retired agents' reservations released,
    reservations and build slots deleted, steps of recounting the threads purges cut (a message read, a thread finished),
    unused attachment content condemned and deleted (tools/attachment_refs.py), steps of merging the search index (store/search_index.py;
    a replica's database has no index) and messages whose runs it indexed (store/search_runs.py)."""
    budget = budget or settings.retention_batch
    now = clock.now()
    done = dict.fromkeys(("messages_purged", "bodies_archived", "agents_retired", "reservations_released", "reservations_deleted",
                          "slots_deleted"), 0)
    with connection(settings) as conn:
        with transaction(conn, write=False):
            projects = conn.execute("SELECT id, slug, retention_mode, retention_days FROM projects").fetchall()
        for project in projects:
            mode = project["retention_mode"] or settings.retention_mode
            days = project["retention_days"] or settings.retention_days
            cutoff = first_id_at(int(datetime.fromisoformat(now).timestamp() * 1000) - days * 86_400_000)
            if mode == "purge":
                step, kind = (lambda db, limit, p=project["id"]: purge_messages(db, p, cutoff, limit)), "messages_purged"
            elif mode == "archive_only" and settings.archive_enabled:
                step, kind = (lambda db, limit, p=project["id"]: archive_bodies(db, p, cutoff, limit, now)), "bodies_archived"
            else:
                if mode == "archive_only":
                    log.warning("project %s: archive_only, but the archive is off; its mail is kept", project["slug"])
                continue
            done[kind] += chunked(conn, settings, budget - done[kind], step)
        done["thread_recount_steps"] = recount_cut_threads(conn, settings, now, budget)
        if settings.retention_agent_idle_days:
            idle_since = clock.later(now, -86400 * settings.retention_agent_idle_days)
            done["agents_retired"] = chunked(conn, settings, budget, lambda db, limit: retire_idle(db, idle_since, now, limit))
        done["reservations_released"] = chunked(conn, settings, budget, lambda db, limit: release_left_behind(db, now, limit))
        ended = clock.later(now, -86400 * settings.retention_lease_grace_days)
        for table, kind in (("file_reservations", "reservations_deleted"), ("build_slots", "slots_deleted")):
            done[kind] = chunked(conn, settings, budget, lambda db, limit, t=table: delete_ended(db, t, ended, limit))
        done.update(attachment_refs.collect(conn, settings, storage(settings), budget, now))
        embedded = not settings.turso_sync_url  # (a replica's search index is its sidecar, kept by searches)
        done["search_merge_steps"] = merge_fts(conn) if embedded else 0
        done["search_runs_indexed"] = chunked(conn, settings, budget * RUNS_SHARE, search_runs.backfill) if embedded else 0
    if any(done.values()):
        log.info("retention: %s", done)
    return done


def chunked(conn, settings: Settings, budget: int, step: Callable[[sqlite3.Connection, int], int]) -> int:
    """Run `step(db, limit)` in short write transactions until it does less than asked or
    the budget is spent; how many rows it handled."""
    total = 0
    while total < budget:
        limit = min(settings.retention_chunk, budget - total)
        with transaction(conn, write=True):
            count = step(conn, limit)
        total += count
        if count < limit:
            break
    return total


def old_messages(db: sqlite3.Connection, project_id: int, before_id: int, limit: int, with_body_only: bool) -> list[int]:
    """The `limit` oldest of the project's messages older than `before_id` (index
    messages_by_retention, a walk for each body state): oldest first, so a purge stopped at its
    budget has deleted nothing above what it keeps (purged_before_id)."""
    found: list[int] = []
    for archived in ("IS NULL",) if with_body_only else ("IS NULL", "IS NOT NULL"):
        found += [row[0] for row in db.execute(
            f"SELECT id FROM messages WHERE project_id = ? AND body_archived_ts {archived} AND id < ? ORDER BY id LIMIT ?",
            (project_id, before_id, limit),
        )]
    return sorted(found)[:limit]


def purge_messages(db: sqlite3.Connection, project_id: int, before_id: int, limit: int) -> int:
    """Delete old messages with their recipients (the FTS triggers, or the replica's search
    index on its next catch-up, drop them from search), only those the git archive already holds
    (archived_below): a message's attachments, once no message names them, are deleted from the
    attachment storage, where the archive worker reads them (a purge ahead of a lagging archive
    made its entry fail for good, ContentMissing, and the attachment was gone everywhere)."""
    ids = old_messages(db, project_id, archived_below(db, before_id), limit, with_body_only=False)
    if ids:
        threads = db.execute(f"SELECT id, thread_id FROM messages WHERE id IN ({placeholders(ids)}) ORDER BY id", ids).fetchall()
        held = thread_summaries.held_back(db, project_id, threads)
        if held is not None:  # read by a thread's recount begun: kept until it ends (in this run or the next)
            ids = [message_id for message_id in ids if message_id < held]
    if ids:
        uncount_messages(db, ids)  # whois and get_project count what is kept
        db.execute(f"DELETE FROM message_recipients WHERE message_id IN ({placeholders(ids)})", ids)
        attachment_refs.forget(db, ids)  # their content is deleted once nothing names it (attachment_refs.py)
        db.execute(f"DELETE FROM messages WHERE id IN ({placeholders(ids)})", ids)
        # list_threads shows what is kept once the run has recounted them (recount_cut_threads)
        gone = set(ids)
        thread_summaries.queue_recounts(db, project_id, {thread for message_id, thread in threads if message_id in gone})
    if not ids:  # nothing more is gone: no write (each run moved every purge project's mark to its new cutoff)
        return 0
    # How far the project's mail is gone (the archive's files below are of purged mail: archive
    # verify), also after a run stopped at its budget: up to the oldest message it still has.
    (kept,) = db.execute("SELECT min(id) FROM messages WHERE project_id = ? AND id < ?", (project_id, before_id)).fetchone()
    purged = before_id if kept is None else kept
    db.execute("UPDATE projects SET purged_before_id = ? WHERE id = ? AND coalesce(purged_before_id, 0) < ?",
               (purged, project_id, purged))
    return len(ids)


def recount_cut_threads(conn, settings: Settings, now: str, budget: int) -> int:
    """Make the summaries of the threads purges cut again from their remaining messages, in
    transactions of RETENTION_CHUNK messages, at most `budget` a run (thread_summaries.recount_some:
    a thread longer than that is finished by the next runs); how many messages were read."""
    settled = first_id_at(int(datetime.fromisoformat(now).timestamp() * 1000) - CURSOR_WINDOW_SECONDS * 1000)
    return chunked(conn, settings, budget, lambda db, limit: thread_summaries.recount_some(db, limit, settled))


def archived_body(now: str) -> str:
    return f"(The body of this message was archived on {now[:10]}: the git archive keeps it, the database no longer does.)"


def archived_below(db: sqlite3.Connection, before_id: int) -> int:
    """`before_id`, lowered to where the git archive holds every message below: older than every
    archive entry still pending (an entry is made with its message, so a message older than the
    oldest pending entry, by more than the time one transaction takes, is archived)."""
    (pending,) = db.execute("SELECT min(id) FROM archive_outbox WHERE state IN ('pending', 'queued')").fetchone()
    return before_id if pending is None else min(before_id, pending - OUTBOX_LAG_IDS)


def archive_bodies(db: sqlite3.Connection, project_id: int, before_id: int, limit: int, now: str) -> int:
    """Replace old bodies with a note, but only of messages the git archive already holds (archived_below)."""
    ids = old_messages(db, project_id, archived_below(db, before_id), limit, with_body_only=True)
    if ids:
        db.execute(
            f"UPDATE messages SET body_md = ?, body_archived_ts = ? WHERE id IN ({placeholders(ids)})",
            [archived_body(now), now, *ids],
        )
    return len(ids)


def retire_idle(db: sqlite3.Connection, idle_since: str, now: str, limit: int) -> int:
    """Retire agents inactive since before `idle_since` (as retire_agent: reservations and slots
    released). Not a project's human overseer: it may read and write rarely, and must stay reachable.
    At most `limit` reservations are released in all (an agent may hold thousands): those left
    conflict with nobody, being a retired agent's, and release_left_behind releases them."""
    rows = db.execute(
        "SELECT id, project_id FROM agents WHERE kind = 'agent' AND retired_ts IS NULL AND last_active_ts < ? LIMIT ?",
        (idle_since, limit),
    ).fetchall()
    releasable = limit
    for row in rows:
        _, released, _ = retire(db, project_by_id(db, row["project_id"]), row["id"], now, release_at_most=releasable)
        releasable -= released
    return len(rows)


def release_left_behind(db: sqlite3.Connection, now: str, limit: int) -> int:
    """Release at most `limit` active reservations of retired agents: what a retirement left (it
    releases a bounded number). They conflict with nobody, but until released they count toward
    their project's and their credential's limits."""
    left = defaultdict(list)
    for project_id, reservation_id in db.execute(
        "SELECT r.project_id, r.id FROM agents a JOIN file_reservations r ON r.agent_id = a.id"
        " WHERE a.retired_ts IS NOT NULL AND r.released_ts IS NULL AND r.expires_ts > ? LIMIT ?", (now, limit)
    ):
        left[project_id].append(reservation_id)
    for project_id, ids in left.items():
        release_some(db, project_by_id(db, project_id), f"id IN ({placeholders(ids)}) AND {LIVE}", [*ids, now], now, len(ids))
    return sum(map(len, left.values()))


def delete_ended(db: sqlite3.Connection, table: str, ended_before: str, limit: int) -> int:
    """Delete file reservations or build slots released or expired before `ended_before`."""
    ids = [row[0] for row in db.execute(
        f"SELECT id FROM {table} WHERE (released_ts IS NOT NULL AND released_ts < ?) OR expires_ts < ? LIMIT ?",
        (ended_before, ended_before, limit),
    )]
    if ids:
        db.execute(f"DELETE FROM {table} WHERE id IN ({placeholders(ids)})", ids)
    return len(ids)


class every:
    """`every(settings)()` runs retention if RETENTION_EVERY_SECONDS have passed since the last
    run (the local archive worker calls it when idle); a failed run is logged and tried again then."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.last = float("-inf")

    def __call__(self) -> None:
        seconds = self.settings.retention_every_seconds
        if not seconds or time.monotonic() - self.last < seconds:
            return
        self.last = time.monotonic()
        try:
            run_retention(self.settings)
        except Exception:
            log.exception("retention run failed")


TOOLS = [
    tool(set_retention_policy, destructive=True, repeat_safe=True),  # purge deletes mail
    tool(get_retention_policy, read_only=True),
]
