"""The archive written from the database (`archive rebuild`).

The database's rows are turned into the same entries the outbox carries, and rendered by
the same function, so a rebuilt archive matches one written entry by entry.
"""

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from itertools import chain


from ..store.db import placeholders
from ..tools.messages import MESSAGE_COLUMNS, Message, attachments_of, recipients_of
from . import outbox, render as rendering
from .gitrepo import GitArchive
from .render import batches, message_of


CHUNK = 1000


def message_entries(db: sqlite3.Connection, archived_body: Callable[[dict], str | None] = lambda entry: None) -> Iterator[dict]:
    """Every message as the entry `deliver` recorded for it (bcc included). A message whose body
    retention archived (body_archived_ts: the database keeps only a note) takes the body of its
    files in the archive, `archived_body(entry)`: they hold the body's only copies, and the note
    must never replace them (None: the archive has no such file; the note stands in)."""
    last, projects = 0, projects_by_id(db)  # for project.json (a joined p.created_ts would meet m.created_ts)
    while True:
        rows = db.execute(
            f"SELECT {MESSAGE_COLUMNS}, m.body_archived_ts, p.slug, p.human_key"
            " FROM messages m"
            " JOIN agents s ON s.id = m.sender_id"
            " JOIN projects p ON p.id = m.project_id WHERE m.id > ? ORDER BY m.id LIMIT ?",
            (last, CHUNK),
        ).fetchall()
        if not rows:
            return
        ids = [row["id"] for row in rows]
        recipients = recipients_of(db, ids)
        notices = {mid for (mid,) in db.execute(
            f"SELECT DISTINCT message_id FROM message_recipients WHERE kind = 'notice' AND message_id IN ({placeholders(ids)})", ids)}
        for row in rows:
            message = Message(
                id=row["id"], project=row["slug"], thread_id=row["thread_id"], subject=row["subject"], body_md=row["body_md"],
                sender=row["sender"], importance=row["importance"], ack_required=bool(row["ack_required"]),
                created_ts=row["created_ts"], attachments=attachments_of(row), **recipients[row["id"]],
            )
            entry = json.loads(outbox.message_entry(message, row["human_key"], row["id"] in notices))
            entry |= outbox.project_payload(projects[row["project_id"]])
            if row["body_archived_ts"] and (body := archived_body(entry)) is not None:
                entry["body_md"] = body
            yield entry
        last = rows[-1]["id"]


def body_in_archive(entry: dict, held: Callable[[str], bytes | None], blob: Callable[[bytes], bytes]) -> str | None:
    """The body of a message that retention archived, from its files in the archive (`held`: a
    path's blob id, `blob`: its content): the body most of them hold (the canonical file, the
    sender's copy and each recipient's: copies of one document), the canonical file's on a tie.
    So one file damaged or lost, the canonical one too, neither hides the body nor, rewritten
    from the note, replaces it in the others. None: no file holds one (the note stands in)."""
    votes: dict[str, int] = {}
    bodies: dict[bytes, str | None] = {}  # blob id -> its body: copies alike are read once
    for path in rendering.message_copies(entry):  # the canonical file first
        if (sha := held(path)) is None:
            continue
        if sha not in bodies:
            document = message_of(blob(sha))
            bodies[sha] = None if document is None else document["body_md"]
        if bodies[sha] is not None:
            votes[bodies[sha]] = votes.get(bodies[sha], 0) + 1
    return max(votes, key=votes.__getitem__, default=None)  # (max keeps the first of equals)


def other_entries(db: sqlite3.Connection) -> Iterator[dict]:
    """Every project (its project.json: ensure_project and archive_project write one), agent
    profile, file reservation, contact, recipient's marks and product, as entries."""
    projects = projects_by_id(db)
    for row in projects.values():
        yield {"kind": "project", "project": row["slug"], **outbox.project_payload(row)}
    for row in db.execute("SELECT * FROM agents ORDER BY id").fetchall():
        project = projects[row["project_id"]]
        yield {"kind": "agent", "project": project["slug"], **outbox.agent_payload(project, row)}
    yield from reservation_entries(db, projects)
    yield from contact_entries(db, projects)
    yield from mark_entries(db, projects)
    yield from product_entries(db)


def projects_by_id(db: sqlite3.Connection) -> dict[int, sqlite3.Row]:
    return {row["id"]: row for row in db.execute("SELECT * FROM projects ORDER BY id")}


def reservation_entries(db: sqlite3.Connection, projects: dict[int, sqlite3.Row] | None = None) -> Iterator[dict]:
    projects = projects or projects_by_id(db)
    for row in db.execute(
        "SELECT r.*, a.name AS agent FROM file_reservations r JOIN agents a ON a.id = r.agent_id ORDER BY r.id"
    ).fetchall():
        project = projects[row["project_id"]]
        yield {"kind": "reservation", "project": project["slug"], **outbox.reservation_payload(row, project)}


def contact_entries(db: sqlite3.Connection, projects: dict[int, sqlite3.Row] | None = None) -> Iterator[dict]:
    projects = projects or projects_by_id(db)
    for row in db.execute(f"{outbox.CONTACT_ROWS} ORDER BY c.id").fetchall():
        slug, payload = outbox.contact_payload(row, projects.__getitem__)
        yield {"kind": "contact", "project": slug, **payload}


def mark_entries(db: sqlite3.Connection, projects: dict[int, sqlite3.Row] | None = None,
                 message_ids: Iterable[int] | None = None) -> Iterator[dict]:
    """Every recipient's marks of every message it read, or of these messages (streamed: a mailbox has many)."""
    projects = projects or projects_by_id(db)
    ids = None if message_ids is None else list(message_ids)
    for row in db.execute("SELECT r.message_id, r.read_ts, r.ack_ts, a.name, a.project_id, m.created_ts FROM message_recipients r"
                          " JOIN agents a ON a.id = r.agent_id JOIN messages m ON m.id = r.message_id WHERE r.read_ts IS NOT NULL"
                          + ("" if ids is None else f" AND r.message_id IN ({placeholders(ids)})"), ids or ()):
        project = projects[row["project_id"]]
        payload = outbox.mark_payload(project, row["name"], row["message_id"], row["created_ts"], row["read_ts"], row["ack_ts"])
        yield {"kind": "mark", "project": project["slug"], **payload}


def product_entries(db: sqlite3.Connection) -> Iterator[dict]:
    for row in db.execute("SELECT * FROM products ORDER BY id").fetchall():
        yield {"kind": "product", "project": outbox.PRODUCTS, **outbox.product_payload(db, row)}


def count_entries(db: sqlite3.Connection) -> int:
    tables = ("messages", "agents", "file_reservations", "contacts", "products", "projects")
    return sum(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in tables)


def projects_beside_empty_database(db: sqlite3.Connection, archive: GitArchive) -> list[str]:
    """The archive's project folders when the database has no project at all (else []): a new,
    empty database beside an archive that holds projects is most likely a mistyped DATABASE_URL
    (or a database still to restore), and mail archived from it starts a second history there."""
    if db.execute("SELECT 1 FROM projects LIMIT 1").fetchone():
        return []
    return archive.folders("projects")


def empty_database_advice(settings, folders: list[str]) -> tuple[str, str]:
    """(what is wrong, the two likely fixes) for projects_beside_empty_database's folders."""
    named = ", ".join(folders[:5]) + (", ..." if len(folders) > 5 else "")
    return (f"the database {settings.database_path} is empty but the archive {settings.archive_dir} holds"
            f" {len(folders)} projects ({named})",
            "DATABASE_URL may name the wrong file (set it to this archive's database), or restore this database"
            " from the archive: python -m chalicelib db restore-from-archive")


def rebuild(db: sqlite3.Connection, archive: GitArchive, on_batch=lambda n: None) -> int:
    """Write every entity of the database into the archive, CHUNK entries (or BATCH_MAX_BYTES
    of content) per commit (per project); what is already there does not change. The
    database's state wins over a newer version in the archive (a database restored from a
    backup older than the archive). The number of entries."""
    total = 0
    head = archive.head()

    def body(entry: dict) -> str | None:
        return body_in_archive(entry, lambda path: archive.file_id(path, head), lambda sha: archive.repo[sha].data)

    entries = chain(other_entries(db), message_entries(db, body))  # streamed
    for batch in batches(entries, CHUNK, rendering.BATCH_MAX_BYTES):
        archive.apply(batch, keep_newer=False)
        archive.maintain_if_due()  # as the workers do: a commit a batch, whose packs must not pile up
        total += len(batch)
        on_batch(len(batch))
    return total
