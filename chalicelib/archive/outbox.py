"""The transactional outbox: archive work recorded in the same transaction as the data.

A write tool calls `record_*` inside its transaction; the row commits (or rolls back) with
the message, profile, reservation, contact or project it describes, so the archive can lag behind the
database but never silently diverge from it. Workers take `pending` rows, write them to
git, and mark them `done` only after the commit; a failure is counted and kept for retry.
"""

import sqlite3
import threading
from collections.abc import Callable

import orjson

from .. import clock
from ..store.db import placeholders
from ..config import get_settings
from ..ids import new_id
from ..names import DEFAULT_CONTACT_POLICY
from .render import rendered_size

RESERVATION_COLUMNS = ("id", "agent", "path_pattern", "exclusive", "reason", "created_ts", "expires_ts", "released_ts")


def archiving() -> bool:
    """The process-wide switch (ARCHIVE_ENABLED): off, nothing is queued (nor built), so nothing piles up."""
    return get_settings().archive_enabled


def record(db: sqlite3.Connection, project: str, kind: str, entity_id: int, payload: dict) -> None:
    if archiving():
        # orjson: the json module's encoder cost ~10 µs of every send_message (the worker reads either)
        _insert(db, project, kind, entity_id, orjson.dumps({"kind": kind, "project": project, **payload}))


# Set by every row recorded in this process: cloud.publish_after_write has something to send.
recorded = threading.Event()


def _insert(db: sqlite3.Connection, project: str, kind: str, entity_id: int, entry: bytes) -> None:
    recorded.set()
    db.execute(
        "INSERT INTO archive_outbox (id, project, kind, entity_id, payload, created_ts) VALUES (?, ?, ?, ?, ?, ?)",
        (new_id(), project, kind, entity_id, entry.decode(), clock.now()),
    )


def record_message(db: sqlite3.Connection, message, human_key: str, notice: bool = False) -> None:
    """`message`: the messages.Message just stored (bcc included: the archive keeps it);
    `human_key`: its project's, so every archived document says whose it is; `notice`: a
    system notice (messages.notify)."""
    if archiving():
        _insert(db, message.project, "message", int(message.id), message_entry(message, human_key, notice))


# A message without attachments is archived as before they existed (old archives verify).
_NOT_ARCHIVED, _NOT_ARCHIVED_WITHOUT_ATTACHMENTS = {"project"}, {"project", "attachments"}


def message_entry(message, human_key: str, notice: bool = False) -> bytes:
    """A message's archive entry as JSON: the message as its model serializes it, with its kind,
    project and project's human key, and `"notice": true` for a system notice (its recipient
    is in "to", as Message shows it; a restore must not make it conversation: docs/contacts.md).
    Spliced rather than built as a dict and encoded again (pydantic-core writes the JSON
    itself: ~3 µs less of every send)."""
    exclude = _NOT_ARCHIVED if message.attachments else _NOT_ARCHIVED_WITHOUT_ATTACHMENTS
    fields = message.__pydantic_serializer__.to_json(message, exclude=exclude)  # b'{"id":...}': never empty
    return b'{"kind":"message","project":%b,"project_human_key":%b,%b%b' % (
        orjson.dumps(message.project), orjson.dumps(human_key), b'"notice":true,' if notice else b"", fields[1:])


def project_payload(project: sqlite3.Row) -> dict:
    """What an entry says of its project for projects/{slug}/project.json, which every entry
    writes: its human key, when it was made (a restore's created_ts, even with no message to
    date it), and, while it is archived, since when (so a restore keeps it archived), or, once
    unarchived, since when it is active again, its retention policy if it has one of its own, and
    the version of its last change (so a writer keeps the newer of two project.json)."""
    payload = {"project_human_key": project["human_key"], "project_created_ts": project["created_ts"]}
    if project["archived_ts"]:
        payload["project_archived_ts"] = project["archived_ts"]
    elif project["unarchived_ts"]:
        payload["project_unarchived_ts"] = project["unarchived_ts"]
    # A policy of its own (set_retention_policy), so a restore keeps it: a mode, days, or both
    # (days alone: the server's mode after the project's days).
    if project["retention_mode"]:
        payload["project_retention_mode"] = project["retention_mode"]
    if project["retention_days"]:
        payload["project_retention_days"] = project["retention_days"]
    if project["archive_version"]:
        payload["project_version"] = str(project["archive_version"])
    return payload


def versioned(payload: dict, row: sqlite3.Row) -> dict:
    """The payload with its row's archive version (as a string, as ids: JSON readers may hold
    numbers as doubles); a row not changed since versions exist has none, and its file is as before."""
    return {**payload, "version": str(row["archive_version"])} if row["archive_version"] else payload


VERSIONED = ("projects", "agents", "file_reservations", "contacts", "products")  # the rows whose archive files entries rewrite


def new_versions(db: sqlite3.Connection, table: str, ids: list[int]) -> list[sqlite3.Row]:
    """Date a change of these rows for the archive (their entries carry the version, their files
    record it, and the writer keeps the newer file: docs/archive.md, "Order of updates"); the rows.
    new_id(), or the row's last version + 1 if that is larger: one row's versions grow in the
    order the database committed its changes, whatever the clocks of the hosts that made them."""
    if table not in VERSIONED:
        raise ValueError(f"not a versioned table: {table}")
    return db.execute(
        f"UPDATE {table} SET archive_version = max(?, coalesce(archive_version, 0) + 1)"
        f" WHERE id IN ({placeholders(ids)}) RETURNING *",
        [new_id(), *ids],
    ).fetchall()


def record_project(db: sqlite3.Connection, project: sqlite3.Row) -> None:
    """project.json alone: the project was created, archived or unarchived."""
    if archiving():
        [project] = new_versions(db, "projects", [project["id"]])
        record(db, project["slug"], "project", project["id"], project_payload(project))


def agent_payload(project: sqlite3.Row, agent: sqlite3.Row) -> dict:
    payload = {
        "id": str(agent["id"]),
        "name": agent["name"],
        "program": agent["program"],
        "model": agent["model"],
        "task_description": agent["task_description"],
        "inception_ts": agent["inception_ts"],
        "agent_kind": agent["kind"],  # "kind" names the entry's
        **project_payload(project),
    }
    if agent["retired_ts"]:  # only then: an active agent's profile stays as it was written before
        payload["retired_ts"] = agent["retired_ts"]
    if agent["contact_policy"] != DEFAULT_CONTACT_POLICY[agent["kind"]]:  # likewise: one it chose, so a restore keeps it
        payload["contact_policy"] = agent["contact_policy"]
    return versioned(payload, agent)


def record_agent(db: sqlite3.Connection, project: sqlite3.Row, agent: sqlite3.Row) -> None:
    if archiving():
        [agent] = new_versions(db, "agents", [agent["id"]])
        record(db, project["slug"], "agent", agent["id"], agent_payload(project, agent))


def reservation_payload(row: sqlite3.Row, project: sqlite3.Row) -> dict:
    payload = {key: str(row[key]) if key == "id" else (bool(row[key]) if key == "exclusive" else row[key]) for key in RESERVATION_COLUMNS}
    return versioned({**payload, **project_payload(project)}, row)


def record_reservations(db: sqlite3.Connection, project: sqlite3.Row, ids: list[int]) -> None:
    """The reservations' current state (after an insert, renewal or release)."""
    if not ids or not archiving():
        return
    new_versions(db, "file_reservations", ids)
    rows = db.execute(
        f"SELECT r.*, a.name AS agent FROM file_reservations r JOIN agents a ON a.id = r.agent_id WHERE r.id IN ({placeholders(ids)})", ids
    )
    for row in rows:
        record(db, project["slug"], "reservation", row["id"], reservation_payload(row, project))


CONTACT_COLUMNS = ("status", "reason", "ttl_seconds", "requested_ts", "responded_ts", "expires_ts")
# Contacts with their two agents' names and projects (tools/contacts.py reads them so too).
CONTACT_ROWS = (
    "SELECT c.*, ra.name AS requester_name, ra.project_id AS requester_project_id, rp.slug AS requester_slug,"
    " ta.name AS target_name, ta.project_id AS target_project_id, tp.slug AS target_slug"
    " FROM contacts c JOIN agents ra ON ra.id = c.requester_id JOIN projects rp ON rp.id = ra.project_id"
    " JOIN agents ta ON ta.id = c.target_id JOIN projects tp ON tp.id = ta.project_id"
)


def contact_payload(row: sqlite3.Row, project_of: Callable[[int], sqlite3.Row]) -> tuple[str, dict]:
    """(its folder's slug, its entry) of a contact row of CONTACT_ROWS. Filed in the project of the
    pair's first agent (the lower id, as contact_id orders them), so its file stays put whoever
    asks next; the other agent is Name@slug there if it is another project's, as in messages."""
    first = "requester" if row["requester_id"] < row["target_id"] else "target"
    home = project_of(row[f"{first}_project_id"])

    def address(role: str) -> str:
        same = row[f"{role}_project_id"] == home["id"]
        return row[f"{role}_name"] if same else f"{row[f'{role}_name']}@{row[f'{role}_slug']}"

    payload = {"id": str(row["id"]), "requester": address("requester"), "target": address("target"),
               **{key: row[key] for key in CONTACT_COLUMNS}}
    return home["slug"], versioned({**payload, **project_payload(home)}, row)


def record_contact(db: sqlite3.Connection, contact_id: int) -> None:
    """The contact's current state (asked for, answered, asked again)."""
    if not archiving():
        return
    new_versions(db, "contacts", [contact_id])
    row = db.execute(f"{CONTACT_ROWS} WHERE c.id = ?", (contact_id,)).fetchone()
    slug, payload = contact_payload(row, lambda project_id: db.execute("SELECT * FROM projects WHERE id = ?", (project_id,)).fetchone())
    record(db, slug, "contact", contact_id, payload)


def mark_payload(project: sqlite3.Row, agent: str, message_id: int, created_ts: str, read_ts: str, ack_ts: str | None) -> dict:
    """A recipient's marks of a message: when it first read it and, once it did, acknowledged it
    (archive/render.py mark_files: a file of each, written once)."""
    payload = {"agent": agent, "message_id": str(message_id), "message_created_ts": created_ts, "read_ts": read_ts,
               "project_human_key": project["human_key"]}
    return {**payload, "ack_ts": ack_ts} if ack_ts else payload


def record_mark(db: sqlite3.Connection, project: sqlite3.Row, agent: str, message: sqlite3.Row, read_ts: str,
                ack_ts: str | None) -> None:
    """`agent` (of `project`) read or acknowledged `message` (of any project) for the first time."""
    if archiving():
        record(db, project["slug"], "mark", message["id"],
               mark_payload(project, agent, message["id"], message["created_ts"], read_ts, ack_ts))


PRODUCTS = "~products"  # the outbox's group of product entries (a commit, an SQS message group): no project's slug


def product_payload(db: sqlite3.Connection, product: sqlite3.Row) -> dict:
    """A product with the human keys of its projects, and since when each is linked."""
    links = db.execute("SELECT p.human_key, l.linked_ts FROM product_projects l JOIN projects p ON p.id = l.project_id"
                       " WHERE l.product_id = ? ORDER BY p.human_key", (product["id"],)).fetchall()
    payload = {key: product[key] for key in ("product_key", "name", "created_ts", "owner_scope")}
    return versioned({**payload, "projects": [{"human_key": key, "linked_ts": linked} for key, linked in links]}, product)


def record_product(db: sqlite3.Connection, product_id: int) -> None:
    """The product's current state (made, renamed, a project linked or unlinked)."""
    if archiving():
        [product] = new_versions(db, "products", [product_id])
        record(db, PRODUCTS, "product", product_id, product_payload(db, product))


def move_pending(db: sqlite3.Connection, old_slug: str, new_slug: str, entity_ids: list[int]) -> None:
    """Archive work not yet written for these entities goes under the project's new slug
    (a project that left a slug another replica gave at the same time: tools/projects.py)."""
    if entity_ids:
        db.execute(
            "UPDATE archive_outbox SET project = ?, payload = json_set(payload, '$.project', ?)"
            f" WHERE state IN ('pending', 'queued') AND project = ? AND entity_id IN ({placeholders(entity_ids)})",
            [new_slug, new_slug, old_slug, *entity_ids],
        )


# The worker's side


def take(db: sqlite3.Connection, limit: int, max_bytes: int | None = None) -> list[sqlite3.Row]:
    """Pending rows due now, oldest first (a failed row waits for its retry_ts): up to `limit`
    and, with max_bytes, only those that render to at most that many bytes together (the
    first one whatever its size). Rows are read one at a time: the rest are never loaded."""
    rows, size = [], 0
    cursor = db.execute(
        "SELECT id, project, payload, attempts FROM archive_outbox WHERE state = 'pending'"
        " AND (retry_ts IS NULL OR retry_ts <= ?) ORDER BY id LIMIT ?",
        (clock.now(), limit),
    )
    try:
        for row in cursor:
            if max_bytes is not None:
                size += rendered_size(orjson.loads(row["payload"]), len(row["payload"]))
                if rows and size > max_bytes:
                    break
            rows.append(row)
    finally:
        cursor.close()  # a statement left open would hold its read snapshot (Turso: the next write fails)
    return rows


def mark_done(db: sqlite3.Connection, ids: list[int], commit: str | None) -> None:
    """One statement for many rows: the worker holds the write lock (which the requests'
    writes wait for) as briefly as it can."""
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        db.execute(
            "UPDATE archive_outbox SET state = 'done', done_ts = ?, git_commit = ?, last_error = NULL"
            f" WHERE id IN ({placeholders(chunk)})",
            [clock.now(), commit, *chunk],
        )


def mark_failed(db: sqlite3.Connection, ids: list[int], error: str, retry_seconds: float = 5.0) -> None:
    """Counted and kept pending, never dropped: retried after retry_seconds, doubling with
    every failure up to an hour, so a poison entry does not cost every drain. A queued row
    (cloud mode: SQS retries it) keeps its deadline (mark_queued)."""
    rows = db.execute(f"SELECT id, attempts FROM archive_outbox WHERE id IN ({placeholders(ids)})", ids).fetchall()
    now = clock.now()
    db.executemany(
        "UPDATE archive_outbox SET attempts = attempts + 1, last_error = ?,"
        " retry_ts = CASE WHEN state = 'queued' THEN retry_ts ELSE ? END WHERE id = ?",
        [(error[:2000], clock.later(now, min(retry_seconds * 2 ** row["attempts"], 3600)), row["id"]) for row in rows],
    )


def mark_queued(db: sqlite3.Connection, ids: list[int], deadline: str) -> set[int]:
    """About to be sent to the queue (cloud mode), which should have them archived before
    `deadline` (kept in retry_ts); requeue_overdue takes back those it did not, or that were
    never sent. Only rows still pending (another publisher may have taken them); their ids."""
    return {row[0] for row in db.execute(
        f"UPDATE archive_outbox SET state = 'queued', retry_ts = ? WHERE state = 'pending' AND id IN ({placeholders(ids)})"
        " RETURNING id", [deadline, *ids]).fetchall()}


def mark_unsent(db: sqlite3.Connection, errors: dict[int, str], retry_seconds: float) -> None:
    """Queued rows whose send failed: pending again, counted and backed off (mark_failed). Only
    those still queued: a send whose answer was lost may have reached the worker, which marked it done."""
    back = db.execute(f"UPDATE archive_outbox SET state = 'pending' WHERE state = 'queued' AND id IN ({placeholders(list(errors))})"
                      " RETURNING id", list(errors)).fetchall()
    for (rid,) in back:
        mark_failed(db, [rid], errors[rid], retry_seconds)


def requeue_overdue(db: sqlite3.Connection) -> int:
    """Queued rows past their deadline (their SQS message ended in the dead-letter queue, or
    was lost; rows queued before deadlines were kept have none) go back to pending, counted
    as a failed attempt, so that the sweep publishes them again; with them every other queued
    row of their project, so that its entries go out again in order. Delivered twice, an
    entry changes nothing. How many rows."""
    now = clock.now()
    return db.execute(
        "UPDATE archive_outbox SET state = 'pending', retry_ts = NULL,"
        " attempts = attempts + (coalesce(retry_ts, '') <= ?),"
        " last_error = CASE WHEN coalesce(retry_ts, '') <= ? THEN ? ELSE last_error END"
        " WHERE state = 'queued' AND project IN"
        " (SELECT project FROM archive_outbox WHERE state = 'queued' AND coalesce(retry_ts, '') <= ?)",
        (now, now, "SQS: not archived by the queue's deadline (dead-letter queue?); published again", now),
    ).rowcount


def requeue_failed(db: sqlite3.Connection) -> int:
    """Retry every failed pending entry at the next drain instead of after its backoff; how many."""
    return db.execute("UPDATE archive_outbox SET retry_ts = NULL WHERE state = 'pending' AND attempts > 0").rowcount


def prune(db: sqlite3.Connection, keep_days: float) -> int:
    """Delete rows archived more than `keep_days` ago (the commit holds them); how many. The
    newest archived row stays: status() reads the last commit from it."""
    if keep_days <= 0:
        return 0
    cutoff = clock.later(clock.now(), -keep_days * 86400)
    return db.execute(
        "DELETE FROM archive_outbox WHERE state = 'done' AND done_ts < ?"
        " AND id < (SELECT max(id) FROM archive_outbox WHERE state = 'done')",
        (cutoff,),
    ).rowcount


def status(db: sqlite3.Connection, project: str | None) -> dict:
    where, params = ("AND project = ?", [project]) if project else ("", [])
    pending, failed, oldest = db.execute(
        f"SELECT count(*), count(*) FILTER (WHERE attempts > 0), min(created_ts) FROM archive_outbox"
        f" WHERE state IN ('pending', 'queued') {where}",  # IN, not !=: the (state, id) index serves it
        params,
    ).fetchone()
    last = db.execute(  # the newest archived entry: a backwards walk of the index
        f"SELECT git_commit, done_ts FROM archive_outbox WHERE state = 'done' {where} ORDER BY id DESC LIMIT 1", params
    ).fetchone()
    lag = clock.age_seconds(oldest) if oldest else 0.0
    error = failed and db.execute(  # the oldest failure's: failed entries are retried, so it is the one holding the rest back
        f"SELECT last_error FROM archive_outbox WHERE state IN ('pending', 'queued') AND attempts > 0 {where} ORDER BY id LIMIT 1",
        params,
    ).fetchone()
    return {
        "pending": pending,
        "failed": failed,
        "failed_error": error[0] if error else None,
        "last_commit": last["git_commit"] if last else None,
        "last_commit_ts": last["done_ts"] if last else None,
        "lag_seconds": round(lag, 3),
    }
