"""The archive from the database (rebuild, verify) and the database from the archive (restore).

The database's rows are turned into the same entries the outbox carries, and rendered by
the same function, so a rebuilt archive matches one written entry by entry.
"""

import json
import sqlite3
from collections.abc import Iterator

from ..ids import stable_id
from ..tools.agents import agent_id
from ..tools.messages import MESSAGE_COLUMNS, Message, recipients_of, store_recipients
from . import outbox
from .gitrepo import GitArchive
from .render import parse_document, render

CHUNK = 1000


def message_entries(db: sqlite3.Connection) -> Iterator[dict]:
    """Every message as the entry `deliver` recorded for it (bcc included)."""
    last = 0
    while True:
        rows = db.execute(
            f"SELECT {MESSAGE_COLUMNS}, p.slug FROM messages m JOIN agents s ON s.id = m.sender_id"
            " JOIN projects p ON p.id = m.project_id WHERE m.id > ? ORDER BY m.id LIMIT ?",
            (last, CHUNK),
        ).fetchall()
        if not rows:
            return
        recipients = recipients_of(db, [row["id"] for row in rows])
        for row in rows:
            message = Message(
                id=row["id"], project=row["slug"], thread_id=row["thread_id"], subject=row["subject"], body_md=row["body_md"],
                sender=row["sender"], importance=row["importance"], ack_required=bool(row["ack_required"]),
                created_ts=row["created_ts"], **recipients[row["id"]],
            )
            yield {"kind": "message", "project": row["slug"], **message.model_dump(mode="json", exclude={"project"})}
        last = rows[-1]["id"]


def other_entries(db: sqlite3.Connection) -> Iterator[dict]:
    """Every agent profile and file reservation, as entries."""
    for row in db.execute(
        "SELECT a.*, p.slug, p.human_key FROM agents a JOIN projects p ON p.id = a.project_id ORDER BY a.id"
    ).fetchall():
        yield {"kind": "agent", "project": row["slug"], **outbox.agent_payload(row, row)}
    for row in db.execute(
        "SELECT r.*, a.name AS agent, p.slug FROM file_reservations r JOIN agents a ON a.id = r.agent_id"
        " JOIN projects p ON p.id = r.project_id ORDER BY r.id"
    ).fetchall():
        yield {"kind": "reservation", "project": row["slug"], **outbox.reservation_payload(row)}


def count_entries(db: sqlite3.Connection) -> int:
    return sum(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in ("messages", "agents", "file_reservations"))


def rebuild(db: sqlite3.Connection, archive: GitArchive, on_batch=lambda n: None) -> int:
    """Write every entity of the database into the archive, CHUNK entries per commit
    (per project); what is already there does not change. The number of entries."""
    total, batch = 0, []
    for entry in (*other_entries(db), *message_entries(db)):
        batch.append(entry)
        if len(batch) == CHUNK:
            archive.apply(batch)
            total += len(batch)
            on_batch(len(batch))
            batch = []
    if batch:
        archive.apply(batch)
        total += len(batch)
        on_batch(len(batch))
    return total


def canonical(files: dict[str, bytes]) -> dict[str, bytes]:
    """The canonical message files among an entry's or a tree's files."""
    return {path: content for path, content in files.items() if path.split("/")[2:3] == ["messages"]}


def verify(db: sqlite3.Connection, archive: GitArchive) -> dict[str, list[str]]:
    """Canonical message files that are missing, unexpected or different in the archive."""
    found = canonical(archive.files())
    expected: dict[str, bytes] = {}
    for entry in message_entries(db):
        expected.update(canonical(render(entry)))
    return {
        "missing": sorted(expected.keys() - found.keys()),
        "unexpected": sorted(found.keys() - expected.keys()),
        "different": sorted(path for path in expected.keys() & found.keys() if expected[path] != found[path]),
    }


def restore(db: sqlite3.Connection, archive: GitArchive, progress=lambda items: items) -> dict[str, int]:
    """Fill an empty database from the archive: projects and agents (profiles), messages and
    their recipients (canonical files), file reservations. Contact policies, read and ack
    marks are not archived and start afresh. `progress` wraps the messages as they are
    restored (the CLI's progress bar)."""
    if db.execute("SELECT 1 FROM messages UNION ALL SELECT 1 FROM agents LIMIT 1").fetchone():
        raise ValueError("the database is not empty; restore into a new DATABASE_URL")
    files = archive.files()
    projects: dict[str, int] = {}
    counts = {"projects": 0, "agents": 0, "messages": 0, "file_reservations": 0}
    for path, content in sorted(files.items()):
        if path.endswith("/profile.json"):
            profile = json.loads(content)
            slug = profile["project"]
            if slug not in projects:
                projects[slug] = stable_id("project", profile["project_human_key"])
                db.execute(
                    "INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, ?, ?, ?)",
                    (projects[slug], slug, profile["project_human_key"], profile["inception_ts"]),
                )
                counts["projects"] += 1
            db.execute(
                "INSERT INTO agents (id, project_id, name, program, model, task_description, inception_ts, last_active_ts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (agent_id(projects[slug], profile["name"]), projects[slug], profile["name"], profile["program"],
                 profile["model"], profile["task_description"], profile["inception_ts"], profile["inception_ts"]),
            )
            counts["agents"] += 1

    def agent(address: str, slug: str) -> int:
        name, _, other = address.partition("@")
        return agent_id(projects[other or slug], name)

    for path, content in progress(list(canonical(files).items())):
        entry = parse_document(content)
        slug, mid = entry["project"], int(entry["id"])
        db.execute(
            "INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, ack_required, created_ts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (mid, projects[slug], agent(entry["sender"], slug), entry["thread_id"], entry["subject"], entry["body_md"],
             entry["importance"], entry["ack_required"], entry["created_ts"]),
        )
        kinds = {agent(a, slug): kind for kind in ("bcc", "cc", "to") for a in entry[kind]}  # to beats cc beats bcc
        store_recipients(db, mid, agent(entry["sender"], slug), entry["importance"], kinds)
        counts["messages"] += 1
    for path, content in files.items():
        if path.split("/")[2:3] == ["file_reservations"]:
            r = json.loads(content)
            slug = path.split("/")[1]
            db.execute(
                "INSERT INTO file_reservations (id, project_id, agent_id, path_pattern, exclusive, reason, created_ts,"
                " expires_ts, released_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (int(r["id"]), projects[slug], agent(r["agent"], slug), r["path_pattern"], r["exclusive"], r["reason"],
                 r["created_ts"], r["expires_ts"], r["released_ts"]),
            )
            counts["file_reservations"] += 1
    return counts
