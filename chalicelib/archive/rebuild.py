"""The archive from the database (rebuild, verify) and the database from the archive (restore).

The database's rows are turned into the same entries the outbox carries, and rendered by
the same function, so a rebuilt archive matches one written entry by entry.
"""

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from itertools import chain

from dulwich.objects import Blob

from .. import clock
from ..ids import stable_id, time_of
from ..store.db import chunks, placeholders, transaction
from ..tools.agents import agent_id
from ..tools.contacts import put_contact
from ..tools.counts import count_agent, count_reads
from ..human_keys import normalize_human_key
from ..tools.reservations import literal_prefix
from ..attachments.intake import Attachment
from ..tools.messages import (
    MESSAGE_COLUMNS, Message, attachments_json, attachments_of, recipients_of, store_message, store_recipients,
)
from . import outbox, render as rendering
from .gitrepo import GitArchive
from .render import (
    agent_dir, agent_kind, attachment_path, batches, contact_policy, document, message_path, parse_document, project_json_path, render,
    reservation_id_of_name, second_dir_of_name,
)

CHUNK = 1000
# Messages doctor --repair brings back per write transaction (import_unexpected): SQLite has one
# write lock, and a running server's writers wait while a batch holds it; a repair that stops
# half way keeps every batch committed before, and run again imports the rest.
IMPORT_BATCH = 200


def restore_attachment(archive: GitArchive, folder: str, sha256: str, where=None) -> None:
    """Put an archived attachment back into the attachment storage (`where`, by default the
    settings'): a no-op if it is there (a lost database, its attachments kept), else the archive's
    copy, which must be that content (a changed file was stored under another sha256, and the
    message lost its attachment)."""
    from ..attachments.storage import storage
    from ..config import get_settings

    where = where or storage(get_settings())
    if where.size(sha256) is not None:
        return
    path = attachment_path(folder, sha256)
    content = archive.read(path)
    if content is None or hashlib.sha256(content).hexdigest() != sha256:
        raise ValueError(f"the archive {'lacks' if content is None else 'holds another content at'} {path}, an attachment"
                         " of its mail, and the attachment storage lacks it too: put the file there (ATTACHMENTS_DIR,"
                         " or the bucket's blobs/), or restore an older commit of the archive")
    where.put(content)


def message_entries(db: sqlite3.Connection, archived_body: Callable[[dict], str | None] = lambda entry: None) -> Iterator[dict]:
    """Every message as the entry `deliver` recorded for it (bcc included). A message whose body
    retention archived (body_archived_ts: the database keeps only a note) takes the body of its
    file in the archive, `archived_body(entry)`: that file is the body's only copy, and the note
    must never replace it (None: the archive has no such file; the note stands in)."""
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


def body_in_archive(archive: GitArchive, entry: dict) -> str | None:
    """The body of a message's canonical file in the archive (None: there is none)."""
    content = archive.read(message_path(entry))
    return None if content is None else parse_document(content)["body_md"]


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
    entries = chain(other_entries(db), message_entries(db, lambda entry: body_in_archive(archive, entry)))  # streamed
    for batch in batches(entries, CHUNK, rendering.BATCH_MAX_BYTES):
        archive.apply(batch, keep_newer=False)
        archive.maintain_if_due()  # as the workers do: a commit a batch, whose packs must not pile up
        total += len(batch)
        on_batch(len(batch))
    return total


def current_path(path: str) -> str:
    """A message file's path in today's layout: a file of the first layout (a flat month
    folder, YYYY/MM/{file}) moves to its per-second folder; anything else stays."""
    parts = path.split("/")
    folder = second_dir_of_name(parts[-1]) if len(parts) >= 3 and parts[-2].isdigit() and len(parts[-2]) == 2 else None
    if folder and "/".join(parts[-3:-1]) == folder[:7]:
        return "/".join([*parts[:-3], folder, parts[-1]])
    return path


def blob_id(content: bytes) -> bytes:
    return Blob.from_string(content).id


def verify(db: sqlite3.Connection, archive: GitArchive) -> dict[str, list[str]]:
    """Message files (canonical, and each agent's inbox and outbox copy) that are missing,
    unexpected or different in the archive, and
    files that belong to another project than their folder's ("foreign": a profile, project.json
    or message whose human key is not the folder project's). Files are compared by blob id;
    a document written before documents carried project_human_key matches without it, files
    of the first layout are compared at the path they move to (migrate.py), and files of
    messages retention purged (ids below their project's purged_before_id) are expected. A
    message whose body retention archived is compared with the body of its file (the only copy
    left): the rest of the document must still match. Each file reservation of the database
    must have its file too (reservation_problems), each contact and each recipient's marks theirs
    as the rows say (contact_problems, mark_problems), an agent's profile must say whether it
    is retired and, as a restore reads them, whether it is a person and its contact policy
    (profile_problems; profiles written before they said so: different, which a rebuild
    rewrites), and each project its project.json, saying whether it is archived and its
    retention policy (project_json_problems). Messages and marks are compared CHUNK at a time,
    each way (message_problems, stray_messages): memory does not grow with the archive. An
    attachment file must hold the content its name (a sha256) says: read, once each."""
    projects = db.execute("SELECT slug, human_key, created_ts, archived_ts, retention_mode, retention_days FROM projects").fetchall()
    owners, purged_before = {row["slug"]: row["human_key"] for row in projects}, purged_before_ids(db)
    missing, different = message_problems(db, archive)
    unexpected, foreign = stray_messages(db, archive, owners, purged_before)
    for chunk in chunks(archived_copies(archive), CHUNK):
        unexpected += stray_copies(db, archive, chunk, purged_before)
    for problems in (reservation_problems(db, archive), contact_problems(db, archive), mark_problems(db, archive),
                     product_problems(db, archive), project_json_problems(archive, projects), profile_problems(db, archive)):
        missing += problems[0]
        different += problems[1]
    return {
        "missing": sorted(missing),
        "unexpected": sorted(unexpected, key=current_path),
        "different": sorted(different),
        "foreign": sorted([*foreign_files(archive, owners), *foreign]),
    }


def purged_before_ids(db: sqlite3.Connection) -> dict[str, int]:
    """{project slug: the id below which retention purged its mail (0: none)}."""
    return {slug: purged or 0 for slug, purged in db.execute("SELECT slug, purged_before_id FROM projects")}


def message_problems(db: sqlite3.Connection, archive: GitArchive) -> tuple[list[str], list[str]]:
    """(missing, different) message files, the canonical one and each agent's copy: each message
    of the database looked up where it belongs (or, in an archive of the first layout, in its flat
    month folder) and its blob id compared with its document's (rendered, once per bcc list its
    copies show), never read."""
    head = archive.head()

    def held(path: str) -> bytes | None:
        return archive.file_id(path, head) or archive.file_id(first_layout_path(path), head)

    def archived_body(entry: dict) -> str | None:
        sha = held(message_path(entry))
        return None if sha is None else parse_document(archive.repo[sha].data)["body_md"]

    missing, different = [], set()
    for entry in message_entries(db, archived_body):
        older = {key: value for key, value in entry.items() if key != "project_human_key"}  # as written before it existed
        expected: dict[tuple, bytes] = {}  # bcc list shown -> its document's blob id
        for path, bcc in rendering.message_copies(entry).items():
            if (sha := held(path)) is None:
                missing.append(path)
                continue
            if (shown := tuple(bcc)) not in expected:
                expected[shown] = blob_id(document({**entry, "bcc": bcc}))
            if sha != expected[shown] and sha != blob_id(document({**older, "bcc": bcc})):
                different.add(path)
        # Its attachments' files, which a restore takes the content from: each must hold the
        # content its name (a sha256) says (one file may serve many messages: checked once).
        for file, sha256 in rendering.attachment_paths(entry).items():
            if held(file) is None:
                missing.append(file)
            elif not archive.holds_attachment(file, sha256, head):
                different.add(file)
    return list(dict.fromkeys(missing)), list(different)


def stray_messages(db: sqlite3.Connection, archive: GitArchive, owners: dict[str, str],
                   purged_before: dict[str, int]) -> tuple[list[str], list[str]]:
    """(unexpected, foreign) canonical message files: the archive's, CHUNK at a time, that are not
    where a message of the database belongs (found by the id a file's name ends with), but those
    of mail retention purged. A file whose document names another project (or, an older document,
    whose message is another project's) is foreign."""
    unexpected, foreign = [], []
    for slug in archive.folders("projects"):
        for chunk in chunks(archive.walk(f"projects/{slug}/messages"), CHUNK):
            ids = {message_id_of(path) for path, _ in chunk} - {None}
            belongs = {row["id"]: message_path(dict(row)) for row in db.execute(
                "SELECT m.id, m.created_ts, m.subject, p.slug AS project FROM messages m JOIN projects p ON p.id = m.project_id"
                f" WHERE m.id IN ({placeholders(ids)}) AND p.slug = ?", (*ids, slug))}
            for original, sha in chunk:
                message_id = message_id_of(original)
                if belongs.get(message_id) == current_path(original) or (
                        message_id is not None and message_id < purged_before.get(slug, 0)):
                    continue  # in its place, or purged by retention: the archive keeps it (docs/retention.md)
                document = parse_document(archive.repo[sha].data)
                key = document.get("project_human_key") or project_of_message(db, document.get("id"))
                (foreign if key is not None and not same_project(key, owners.get(slug)) else unexpected).append(original)
    return unexpected, foreign


def project_of_message(db: sqlite3.Connection, message_id) -> str | None:
    """The human key of the project that has this message, if any (an older document names none)."""
    if not str(message_id).isdigit():
        return None
    row = db.execute("SELECT p.human_key FROM messages m JOIN projects p ON p.id = m.project_id WHERE m.id = ?",
                     (int(message_id),)).fetchone()
    return row and row[0]


def first_layout_path(path: str) -> str:
    """Where a message file (or copy) of today's layout sat in the first (its flat month folder)."""
    parts = path.split("/")
    return "/".join([*parts[:-7], *parts[-7:-5], parts[-1]])


def is_copy(path: str) -> bool:
    """Whether the path is of a message's copy in an agent's inbox/ or outbox/ (not its canonical file)."""
    parts = path.split("/")
    return len(parts) > 5 and parts[2] == "agents" and parts[4] in ("inbox", "outbox")


def archived_copies(archive: GitArchive) -> Iterator[tuple[str, bytes]]:
    """(path, blob id) of every file in the agents' inbox/ and outbox/ folders."""
    for slug in archive.folders("projects"):
        for name in archive.folders(f"projects/{slug}/agents"):
            for box in ("inbox", "outbox"):
                yield from archive.walk(f"projects/{slug}/agents/{name}/{box}")


def stray_copies(db: sqlite3.Connection, archive: GitArchive, found: list[tuple[str, bytes]],
                 purged_before: dict[str, int]) -> list[str]:
    """Those of these agents' copies ((path, blob id)) whose message the database lacks, but those
    the archive keeps: of mail retention purged (by its folder's project, or the project its
    document names: a copy of another project's mail), or whose canonical file is there (mail
    verify calls unexpected, which doctor --repair brings back with its copies). Only those whose
    message the database lacks have their document read."""
    ids = {message_id_of(path) for path, _ in found} - {None}
    known = {row[0] for row in db.execute(f"SELECT id FROM messages WHERE id IN ({placeholders(ids)})", list(ids))} if ids else set()
    strays = []
    for path, sha in found:
        message_id = message_id_of(path)
        if message_id in known or (message_id is not None and (
                message_id < purged_before.get(path.split("/")[1], 0) or kept_mail(archive, sha, message_id, purged_before))):
            continue
        strays.append(path)
    return strays


def kept_mail(archive: GitArchive, sha: bytes, message_id: int, purged_before: dict[str, int]) -> bool:
    """Whether a copy's document names a message (this id) of a project whose mail retention
    purged past it, or whose canonical file the archive holds; False for a file that is no
    message document."""
    try:
        entry = parse_document(archive.repo[sha].data)
        if int(entry["id"]) != message_id:
            return False
        return message_id < purged_before.get(entry["project"], 0) or any(
            archive.file_id(path) for path in (message_path(entry), first_layout_path(message_path(entry))))
    except (ValueError, KeyError, TypeError):  # not a message document: made up, or edited into nonsense
        return False


def reservation_problems(db: sqlite3.Connection, archive: GitArchive) -> tuple[list[str], list[str]]:
    """(missing, different) file reservation files: each reservation of the database has its
    file, by id or (an archive written before) of the first naming. Files of reservations the
    database no longer has are the archive's history (retention deletes ended ones)."""
    found = archived_reservations(archive, archive.folders("projects"))
    missing, different = [], []
    for entry in reservation_entries(db):
        older = {key: value for key, value in entry.items() if key != "project_human_key"}  # as written before it existed
        [(path, content)] = [(path, content) for path, content in render(entry).items() if "/file_reservations/" in path]
        if int(entry["id"]) not in found:
            missing.append(path)
        elif found[int(entry["id"])] not in (blob_id(content), blob_id(render(older)[path])):
            different.append(path)
    return missing, different


def contact_problems(db: sqlite3.Connection, archive: GitArchive) -> tuple[list[str], list[str]]:
    """(missing, different) contact files: each contact of the database has its file, saying what
    the row does (a contact asked for or answered before contacts were archived has none: a
    rebuild writes it)."""
    found = {path: sha for folder in archive.folders("projects") for path, sha in archive.walk(f"projects/{folder}/contacts")}
    return compared(
        ((path, content) for entry in contact_entries(db) for path, content in render(entry).items() if "/contacts/" in path), found.get)


def compared(expected: Iterable[tuple[str, bytes]], found: Callable[[str], bytes | None]) -> tuple[list[str], list[str]]:
    """(missing, different): of the expected files ((path, content), read once, none kept), those
    the archive lacks, and those whose blob there (`found(path)`: its id, or None) is not their content's."""
    missing, different = [], []
    for path, content in expected:
        if (sha := found(path)) is None:
            missing.append(path)
        elif sha != blob_id(content):
            different.append(path)
    return missing, different


def product_problems(db: sqlite3.Connection, archive: GitArchive) -> tuple[list[str], list[str]]:
    """(missing, different) product files: each product of the database has its file, saying what
    its row and links do (a product made before products were archived has none: a rebuild writes it)."""
    return compared(
        ((path, content) for entry in product_entries(db) for path, content in render(entry).items()), dict(archive.walk("products")).get)


def store_product(db: sqlite3.Connection, product: dict) -> bool:
    """A product file's product into the database, as its file last says, linked to those of its
    projects the database has; False (nothing stored) for a file edited into no product."""
    if not isinstance(product, dict):
        return False
    key, links, owner = product.get("product_key"), product.get("projects"), product.get("owner_scope")
    if not (isinstance(key, str) and rendering.PRODUCT_KEY_PATTERN.fullmatch(key) and isinstance(links, list)
            and all(isinstance(product.get(field), str) for field in ("name", "created_ts")) and scope_or_none(owner)):
        return False
    product_id = stable_id("product", key)
    state = (product["name"], product["created_ts"], owner, rendering.version_of(product) or None)
    if not db.execute("UPDATE products SET name = ?, created_ts = ?, owner_scope = ?, archive_version = ? WHERE id = ?",
                      (*state, product_id)).rowcount:
        db.execute("INSERT INTO products (name, created_ts, owner_scope, archive_version, id, product_key)"
                   " VALUES (?, ?, ?, ?, ?, ?)", (*state, product_id, key))
    db.execute("DELETE FROM product_projects WHERE product_id = ?", (product_id,))
    for link in links:
        if not (isinstance(link, dict) and isinstance(link.get("linked_ts"), str)):
            continue
        if project := db.execute("SELECT id FROM projects WHERE human_key = ?", (link.get("human_key"),)).fetchone():
            db.execute("INSERT OR IGNORE INTO product_projects (id, product_id, project_id, linked_ts) VALUES (?, ?, ?, ?)",
                       (stable_id("product_project", product_id, project[0]), product_id, project[0], link["linked_ts"]))
    return True


def scope_or_none(owner) -> bool:
    """Whether a product file's owner_scope is one ensure_product writes: none, or a JSON list of
    project keys (the products tools read it with json_each: anything else would fail them)."""
    if owner is None:
        return True
    try:
        keys = json.loads(owner) if isinstance(owner, str) else None
    except ValueError:
        return False
    return isinstance(keys, list) and all(isinstance(key, str) for key in keys)


def archived_marks(archive: GitArchive, folders: list[str]) -> Iterator[tuple[str, str, str, bytes]]:
    """(folder, agent name, path, blob id) of every mark file of these project folders."""
    for folder in folders:
        for name in archive.folders(f"projects/{folder}/agents"):
            for path, sha in archive.walk(f"projects/{folder}/agents/{name}/marks"):
                yield folder, name, path, sha


def mark_problems(db: sqlite3.Connection, archive: GitArchive) -> tuple[list[str], list[str]]:
    """(missing, different) mark files: each read recipient row has its read's file and, once
    acknowledged, its acknowledgement's, saying what the row does (a read made before marks were
    archived has none: a rebuild writes it), and a file whose message and recipient the database
    has says no more than the row (a read the database lacks: one made after the backup a restored
    database came from, which doctor --repair brings back). Each way CHUNK at a time, as messages."""
    head = archive.head()
    missing, different = compared(((path, content) for entry in mark_entries(db) for path, content in render(entry).items()),
                                  lambda path: archive.file_id(path, head))
    for chunk in chunks(archived_marks(archive, archive.folders("projects")), CHUNK):
        ids = {int(stem) for *_, path, _ in chunk if (stem := path.rsplit("/", 1)[-1].split("-")[0]).isdigit()}
        expected = {path for entry in mark_entries(db, message_ids=ids) for path in render(entry)}
        for folder, name, path, sha in chunk:  # no read row of the database: its message purged, or read since a backup
            if path not in expected and mark_row(db, folder, name, json.loads(archive.repo[sha].data)) is not None:
                different.append(path)
    return missing, different


def mark_row(db: sqlite3.Connection, slug: str, name: str, mark: dict) -> sqlite3.Row | None:
    """The recipient row of agent `name` of project `slug` that lacks what its mark file says (a
    read, or an acknowledgement); None when there is none such."""
    message_id, read_ts, ack_ts = mark.get("message_id"), mark.get("read_ts"), mark.get("ack_ts")
    if not (str(message_id).isdigit() and isinstance(read_ts, str) and isinstance(ack_ts, str | None)):
        return None  # edited by hand into no mark
    return db.execute(
        "SELECT r.id, r.kind, r.agent_id, r.read_ts FROM message_recipients r JOIN agents a ON a.id = r.agent_id"
        " JOIN projects p ON p.id = a.project_id WHERE r.message_id = ? AND a.name = ? AND p.slug = ?"
        " AND (r.read_ts IS NULL OR (r.ack_ts IS NULL AND ? IS NOT NULL))", (int(message_id), name, slug, ack_ts)
    ).fetchone()


def missing_marks(db: sqlite3.Connection, archive: GitArchive, folders: list[str] | None = None,
                  slug_of: Callable[[str], str] = lambda folder: folder) -> Iterator[tuple]:
    """(path, recipient row id, read_ts, ack_ts) of the marks the archive holds and the database's
    recipient rows lack (a restore; after a restored backup, the reads and acknowledgements made
    since), for store_marks; in these folders (by default, of the database's projects).
    `slug_of`: a folder's project's slug in the database (a restore may have given it another:
    two projects of one slug). Streamed: each is looked for when it is reached."""
    if folders is None:
        folders = [row[0] for row in db.execute("SELECT slug FROM projects")]
    for folder, name, path, sha in archived_marks(archive, folders):
        mark = json.loads(archive.repo[sha].data)
        if (row := mark_row(db, slug_of(folder), name, mark)) is not None:
            yield path, row["id"], mark["read_ts"], mark.get("ack_ts")


def store_marks(db: sqlite3.Connection, marks: list[tuple]) -> int:
    """missing_marks' marks into their rows, each row's first read counted as mark_message_read
    counts it (not a bcc copy's; not one its agent made meanwhile: marks are never overwritten).
    The number of reads and acknowledgements set (an acknowledgement's file also says its read)."""
    first_reads, stored = [], 0
    for _, row_id, read_ts, ack_ts in marks:
        read = db.execute(
            "UPDATE message_recipients SET read_ts = ? WHERE id = ? AND read_ts IS NULL RETURNING agent_id, kind", (read_ts, row_id)
        ).fetchall()
        first_reads += [agent for agent, kind in read if kind != "bcc"]
        acked = ack_ts is not None and db.execute(
            "UPDATE message_recipients SET ack_ts = ? WHERE id = ? AND ack_ts IS NULL", (ack_ts, row_id)).rowcount
        stored += len(read) + acked
    count_reads(db, first_reads)
    return stored


PROFILE_FIELDS = ("program", "model", "task_description", "inception_ts")  # in every profile ever written


def profile_problems(db: sqlite3.Connection, archive: GitArchive) -> tuple[list[str], list[str]]:
    """(missing, different) agent profiles: one the database's agent has none of (an agent
    registered while ARCHIVE_ENABLED was off: a restore knew no such agent for its mail), or one
    that does not say what the database does: its registration (PROFILE_FIELDS:
    another database's agent of the same name, archived into this archive by a server started
    on a mistyped DATABASE_URL, overwrote them), its retired_ts, or its kind and contact policy as a
    restore reads them (render.agent_kind, render.contact_policy). Another project's is no
    concern here (foreign)."""
    missing, different = [], []
    for row in db.execute(f"SELECT a.name, a.retired_ts, a.kind, a.contact_policy, {', '.join(f'a.{field}' for field in PROFILE_FIELDS)},"
                          " p.slug, p.human_key FROM agents a JOIN projects p ON p.id = a.project_id"):
        path = f"{agent_dir(row['slug'], row['name'])}/profile.json"
        content = archive.read(path)
        if content is None:
            missing.append(path)
            continue
        profile = json.loads(content)
        if not same_project(profile.get("project_human_key", row["human_key"]), row["human_key"]):
            continue
        if (profile.get("retired_ts") != row["retired_ts"] or agent_kind(profile) != row["kind"]
                or contact_policy(profile) != row["contact_policy"]
                or any(profile.get(field) != row[field] for field in PROFILE_FIELDS)):
            different.append(path)
    return missing, different


def project_json_problems(archive: GitArchive, projects: list[sqlite3.Row]) -> tuple[list[str], list[str]]:
    """(missing, different) project.json files: a project's is missing if it was made before
    ensure_project archived one and got no entry since (`archive rebuild` writes it: missing_advice),
    different if its archived_ts or retention policy is not its project's (written before archiving
    or setting one wrote it) or its created_ts, when it says one, is not (another database's
    project of the same key wrote it: a server on a mistyped DATABASE_URL); one of another
    project is foreign."""
    missing, different = [], []
    for row in projects:
        content = archive.read(project_json_path(row["slug"]))
        if content is None:
            missing.append(project_json_path(row["slug"]))
            continue
        described = json.loads(content)
        created = described.get("created_ts")
        if same_project(described.get("human_key"), row["human_key"]) and (
                described.get("archived_ts") != row["archived_ts"] or created not in (None, row["created_ts"])
                or rendering.retention_of(described) != (row["retention_mode"], row["retention_days"])):
            different.append(project_json_path(row["slug"]))
    return missing, different


def missing_advice(problems: dict[str, list[str]]) -> list[str]:
    """What to do about verify's missing project.json files, agent profiles and attachment files
    (each a rebuild writes from the database), in words: a line each kind, or none."""
    advice = []
    slugs = [path.split("/")[1] for path in problems["missing"] if path.endswith("/project.json")]
    if slugs:
        named = ", ".join(slugs[:10]) + (", ..." if len(slugs) > 10 else "")
        advice.append(f"no project.json in the archive for {len(slugs)} project(s) ({named}), made before ensure_project"
                      " archived one: run `python -m chalicelib archive rebuild` to write it")
    for kind, what, why in (("/profile.json", "agent profile(s)", "a restore would not know these agents, whose mail"
                             " then could not come back"), ("/attachments/", "attachment file(s)", "a restore takes the"
                             " content from them")):
        paths = [path for path in problems["missing"] if kind in path]
        if paths:
            advice.append(f"{len(paths)} {what} missing from the archive (the first: {paths[0]}; {why}):"
                          " run `python -m chalicelib archive rebuild` to write them")
    if changed := [path for path in problems["different"] if "/attachments/" in path]:
        advice.append(f"{len(changed)} attachment file(s) of the archive hold another content than their name says (the"
                      f" first: {changed[0]}): run `python -m chalicelib archive rebuild` to write them from the attachment storage")
    return advice


def archived_reservations(archive: GitArchive, folders: list[str]) -> dict[int, bytes]:
    """{reservation id: blob id} of the reservation files of these project folders. A file
    named by its id wins over a file of the first naming (sha1 of the pattern, read to learn
    whose it is), which was written before it and never again."""
    found: dict[int, bytes] = {}
    older: list[bytes] = []
    for folder in folders:
        for path, sha in archive.walk(f"projects/{folder}/file_reservations"):
            reservation_id = reservation_id_of_name(path.rsplit("/", 1)[-1])
            if reservation_id is None:
                older.append(sha)
            else:
                found[reservation_id] = sha
    for sha in older:
        found.setdefault(int(json.loads(archive.repo[sha].data)["id"]), sha)
    return found


def still_unexpected(db: sqlite3.Connection, paths: list[str]) -> list[str]:
    """Those of verify's unexpected canonical files that are still no message of the database (read
    again now: verify's read may predate mail the worker has archived since), and its copies (a
    copy of mail archived since is not unexpected: its canonical file is there)."""
    ids = {path: message_id_of(path) for path in paths}
    known = set()
    for chunk in chunks([mid for mid in ids.values() if mid is not None], CHUNK):
        known |= {row[0] for row in db.execute(f"SELECT id FROM messages WHERE id IN ({placeholders(chunk)})", chunk)}
    return [path for path in paths if is_copy(path) or ids[path] not in known]


def remove_stray_copies(db: sqlite3.Connection, archive: GitArchive, paths: list[str]) -> int:
    """Remove from the archive, in one commit, those of these copies (verify's unexpected ones)
    that still are (stray_copies, asked again now); how many. Nothing the database or the
    archive's mail holds is lost: a copy goes with its message."""
    found = [(path, sha) for path in paths if is_copy(path) and (sha := archive.file_id(path))]
    strays = [path for chunk in chunks(found, CHUNK) for path in stray_copies(db, archive, chunk, purged_before_ids(db))]
    archive.remove(strays, f"archive: {len(strays)} copies of no message removed\n\n" + "\n".join(strays) + "\n")
    return len(strays)


def message_id_of(path: str) -> int | None:
    """The id a message file's name ends with (`{created}__{subject}__{id}.md`), if it does."""
    digits = path.rsplit("__", 1)[-1].removesuffix(".md")
    return int(digits) if digits.isdigit() else None


def same_project(human_key: str | None, owner: str | None) -> bool:
    """Whether the key an archive file records is its folder's project's, perhaps spelled as it
    then was (before migrations/0031 a Windows key was stored as typed)."""
    return human_key == owner or (None not in (human_key, owner) and normalize_human_key(human_key) == normalize_human_key(owner))


def foreign_files(archive: GitArchive, owners: dict[str, str]) -> list[str]:
    """project.json and agent profiles that name another project than the folder's."""
    found = []
    for slug in archive.folders("projects"):
        owner = owners.get(slug)
        project = archive.read(project_json_path(slug))
        if project is not None and not same_project(json.loads(project)["human_key"], owner):
            found.append(project_json_path(slug))
        for name in archive.folders(f"projects/{slug}/agents"):
            path = f"projects/{slug}/agents/{name}/profile.json"
            profile = archive.read(path)
            if profile is not None and not same_project(json.loads(profile).get("project_human_key"), owner):
                found.append(path)
    return found


class Restorer:
    """Projects, keyed by human key (never by slug: two projects may share one), as restore
    creates them; a slug already given to another project gets a suffix (-2, -3, ...)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.ids: dict[str, int] = {}  # human key -> project id
        self.slugs: dict[str, str] = {}  # slug -> human key
        self.folders: dict[str, str] = {}  # archive folder -> the human key it belongs to
        self.states: dict[str, dict] = {}  # human key -> its project.json (archived_ts, unarchived_ts)
        self.claims: dict[str, str] = {}  # normalised human key -> the folder whose project has it
        self.earliest: dict[str, str] = {}  # human key -> its earliest profile or message read

    def know(self) -> None:
        """The database's projects, as if this restore had made them (its slugs taken, its keys
        claimed by their folders): a repair that brings back the archive's newer projects
        (bring_back) makes none of them twice."""
        for row in self.db.execute("SELECT id, slug, human_key FROM projects"):
            self.ids[row["human_key"]], self.slugs[row["slug"]] = row["id"], row["human_key"]
            self.folders[row["slug"]] = row["human_key"]
            self.claims.setdefault(normalize_human_key(row["human_key"]), row["slug"])

    def claim(self, owners: dict[str, str]) -> None:
        """Which folder's project takes each normalised key, from {folder: its project.json's key}:
        the one whose project.json spells it so (it held the key, or took it and wrote since),
        else the first by name (a plain slug before its suffixed ones: the older project's)."""
        for folder, written in sorted(owners.items(), key=lambda item: (normalize_human_key(item[1]) != item[1], item[0])):
            self.claims.setdefault(normalize_human_key(written), folder)

    def key(self, written: str, folder: str) -> str:
        """The human key a project is restored under: the normal form of the key as written (an
        archive may spell one directory C:/x and C:\\x), or, when another folder's project has
        that form, the key as written (two projects migrations/0031 left apart stay apart)."""
        normal = normalize_human_key(written)
        return normal if self.claims.setdefault(normal, folder) == folder else written

    def project(self, human_key: str, slug: str, created_ts: str) -> int:
        """The project's id, creating it on first sight: made when its project.json says, else
        (an archive written before project.json said) at `created_ts`, the time of the profile or
        message read, until `date_unsaid` dates it by the earliest of them."""
        self.earliest[human_key] = min(created_ts, self.earliest.get(human_key, created_ts))
        if human_key not in self.ids:
            unique, number = slug, 1
            while unique in self.slugs:
                number += 1
                unique = f"{slug}-{number}"
            self.ids[human_key], self.slugs[unique] = stable_id("project", human_key), human_key
            state = self.states.get(human_key, {})
            self.db.execute(
                "INSERT INTO projects (id, slug, human_key, created_ts, archived_ts, unarchived_ts, retention_mode,"
                " retention_days, archive_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (self.ids[human_key], unique, human_key, state.get("created_ts") or created_ts, state.get("archived_ts"),
                 state.get("unarchived_ts"), *rendering.retention_of(state), rendering.version_of(state) or None),
            )
        return self.ids[human_key]

    def date_unsaid(self) -> None:
        """Projects whose project.json does not say when they were made (written before it did)
        were made by their earliest profile or message: the first read (profiles go by name) may
        be later. (Timestamps sort as text: clock.py.)"""
        for human_key, project_id in self.ids.items():
            if not self.states.get(human_key, {}).get("created_ts"):
                self.db.execute("UPDATE projects SET created_ts = ? WHERE id = ?", (self.earliest[human_key], project_id))

    def agent(self, address: str, folder: str, human_key: str) -> int:
        """Name (of the message's project) or Name@folder (another project's archive folder)."""
        name, _, other = address.partition("@")
        return agent_id(self.ids[self.folders.get(other, human_key) if other else human_key], name)

    def known(self, address: str, folder: str, human_key: str, since: str, activity: "Activity") -> int:
        """1 if an agent a message names had no profile in the archive (one registered while
        ARCHIVE_ENABLED was off; archive verify names it), and is made now from its address,
        so that its mail comes back (it failed the whole restore); else 0."""
        name, _, other = address.partition("@")
        key = self.folders.get(other, human_key) if other else human_key
        if key not in self.ids or self.db.execute("SELECT 1 FROM agents WHERE id = ?", (agent_id(self.ids[key], name),)).fetchone():
            return 0  # (a project folder never made is the message's own to fail on)
        store_agent(self.db, self.ids[key], {"name": name, "program": "unknown", "model": "unknown", "inception_ts": since,
                                             "task_description": "Restored from its mail: the archive had no profile of it."},
                    activity)
        return 1


class Activity:
    """Each agent's newest act the archive records, for its last_active_ts: a restore must not
    make agents that worked minutes before look idle (retention would retire them, and a
    reservation of theirs would look abandoned). The acts: its registration (inception_ts) and
    its profile's last write unless that retired it (registering again rewrites the profile),
    the messages it sent, the reservations it took, and a reservation's last write while it is
    not released (a renewal). A release is left out: another agent's force release, or a
    retirement, writes it too. Reading mail is no act (docs/retention.md)."""

    def __init__(self, now: str) -> None:
        self.now = now  # a file's write time is never later than the restore
        self.newest: dict[int, str] = {}  # agent id -> last_active_ts

    def saw(self, agent: int, *timestamps: str | None) -> None:
        newest = max(filter(None, timestamps), default="")
        if newest > self.newest.get(agent, ""):
            self.newest[agent] = newest

    def written(self, document: dict) -> str | None:
        """When a profile's or reservation's file was last written: its version is a new_id() made
        then (outbox.new_versions); None for a file without one. At most the restore's time: a
        host whose clock ran ahead must not date an act in the future."""
        version = rendering.version_of(document)
        return min(clock.from_epoch(time_of(version)), self.now) if version else None

    def store(self, db: sqlite3.Connection) -> None:
        """Each agent's last activity moved up to its newest act seen (never back: a repair's agents have their own)."""
        db.executemany("UPDATE agents SET last_active_ts = ? WHERE id = ? AND last_active_ts < ?",
                       [(ts, agent, ts) for agent, ts in self.newest.items()])


def store_document(db: sqlite3.Connection, archive: GitArchive, folder: str, entry: dict, project_id: int,
                   agent: Callable[[str], int]) -> int:
    """A message file's message, its recipients and attachments, back into the database
    (`agent`: an address's agent id); its sender's id."""
    sender = agent(entry["sender"])
    attachments = [Attachment.model_validate(item) for item in entry.get("attachments", [])]
    store_message(db, (int(entry["id"]), project_id, sender, entry["thread_id"], entry["subject"], entry["body_md"],
                       entry["importance"], entry["ack_required"], entry["created_ts"], attachments_json(attachments)))
    for item in attachments:  # the archive's copy, back into the attachment storage
        restore_attachment(archive, folder, item.sha256)
    kinds = {agent(address): kind for kind in ("bcc", "cc", "to") for address in entry[kind]}  # to beats cc beats bcc
    if entry.get("notice"):  # a system notice: its recipient is in "to", but it is no conversation
        kinds = dict.fromkeys(kinds, "notice")
    store_recipients(db, project_id, entry["thread_id"], int(entry["id"]), sender, entry["importance"], entry["ack_required"],
                     kinds, entry["subject"], entry["created_ts"])
    return sender


def import_unexpected(db: sqlite3.Connection, archive: GitArchive, paths: list[str]) -> tuple[int, list[str]]:
    """Bring back into the database the messages of `paths` (verify's `unexpected`: files of the
    folder's own project that the database lacks; after a backup was restored, the mail sent
    since) whose sender and recipients it has; (how many, the paths left: an agent of theirs
    is in neither the database nor, for bring_back, the archive's profiles). Oldest first, so threads grow
    in order; a sender's last activity moves up to its newest message brought back. `db` is in
    no transaction: each IMPORT_BATCH messages are one write transaction of their own."""
    documents = [path for _, path in sorted((message_id_of(path) or 0, path) for path in paths)]
    brought, left = 0, []
    for chunk in chunks(documents, IMPORT_BATCH):
        with transaction(db, write=True):
            done, skipped = import_batch(db, archive, chunk)
        brought, left = brought + done, left + skipped
    return brought, left


def import_batch(db: sqlite3.Connection, archive: GitArchive, paths: list[str]) -> tuple[int, list[str]]:
    """import_unexpected's work for some of its paths, in the caller's transaction."""
    projects = {row[0]: row[1] for row in db.execute("SELECT slug, id FROM projects")}
    brought, left = 0, []
    for path in paths:
        folder = path.split("/")[1]
        found = archive.lookup(path)
        entry = parse_document(archive.repo[found[1]].data) if found else None
        addresses = [entry["sender"], *entry["to"], *entry["cc"], *entry["bcc"]] if entry else []

        def agent(address: str) -> int | None:
            name, _, other = address.partition("@")
            project = projects.get(other or folder)
            return None if project is None else agent_id(project, name)

        ids = [agent(address) for address in addresses]
        known = {row[0] for row in db.execute(f"SELECT id FROM agents WHERE id IN ({placeholders(ids)})", ids)} if ids else set()
        if entry and db.execute("SELECT 1 FROM messages WHERE id = ?", (int(entry["id"]),)).fetchone():
            continue  # here by now: never twice
        if entry is None or folder not in projects or None in ids or not known.issuperset(ids):
            left.append(path)
            continue
        sender = store_document(db, archive, folder, entry, projects[folder], agent)
        db.execute("UPDATE agents SET last_active_ts = ? WHERE id = ? AND last_active_ts < ?",
                   (entry["created_ts"], sender, entry["created_ts"]))
        brought += 1
    return brought, left


def read_projects(archive: GitArchive, folders: list[str], projects: Restorer) -> dict[str, dict]:
    """The project.json of each folder that has one ({folder: it}), read before any project is
    made: `projects` learns the key each folder's project is restored under and its newest state
    (whether it is archived)."""
    described = {folder: json.loads(owner) for folder in folders if (owner := archive.read(project_json_path(folder)))}
    projects.claim({folder: project["human_key"] for folder, project in described.items()})
    for folder, project in described.items():
        projects.folders[folder] = projects.key(project["human_key"], folder)
        key = projects.folders[folder]  # of two folders of one project (0031 respelled keys), the newer state
        projects.states[key] = max(project, projects.states.get(key, project), key=rendering.version_of)
    return described


def profiles(archive: GitArchive, folders: list[str]) -> Iterator[tuple[str, dict]]:
    """(folder, profile) of every agent profile in these project folders."""
    for folder in folders:
        for name in archive.folders(f"projects/{folder}/agents"):
            content = archive.read(f"projects/{folder}/agents/{name}/profile.json")
            if content is not None:
                yield folder, json.loads(content)


def store_agent(db: sqlite3.Connection, project_id: int, profile: dict, activity: Activity) -> None:
    """An agent back into the database from its profile, under the id it had (agent_id)."""
    key, kind = agent_id(project_id, profile["name"]), agent_kind(profile)
    db.execute(
        "INSERT INTO agents (id, project_id, name, program, model, task_description, inception_ts, last_active_ts,"
        " retired_ts, archive_version, kind, contact_policy) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (key, project_id, profile["name"], profile["program"], profile["model"], profile["task_description"],
         profile["inception_ts"], profile["inception_ts"], profile.get("retired_ts"), rendering.version_of(profile) or None,
         kind, contact_policy(profile)),
    )
    count_agent(db, project_id)
    activity.saw(key, profile["inception_ts"], None if profile.get("retired_ts") else activity.written(profile))


def backup_moment(db: sqlite3.Connection) -> str:
    """The newest thing the database holds (its projects, its agents and their last acts, which
    include taking a reservation, and messages): as near as it can tell, when the backup a restored
    database came from was taken ("~", after every time, for an empty one). Timestamps sort as
    text; messages are newest by id."""
    return db.execute(
        "SELECT max(coalesce((SELECT max(created_ts) FROM projects), ''), coalesce((SELECT max(inception_ts) FROM agents), ''),"
        " coalesce((SELECT max(last_active_ts) FROM agents), ''),"
        " coalesce((SELECT created_ts FROM messages ORDER BY id DESC LIMIT 1), ''))"
    ).fetchone()[0] or "~"


def newcomers(db: sqlite3.Connection, archive: GitArchive) -> tuple[Restorer, list[str], list[tuple[str, dict]]]:
    """What the archive has and the database lacks, made since the backup a restored database
    came from: (a Restorer that knows the database's projects, the folders of projects it lacks,
    (folder, profile) of agents it lacks). A project is new if its project.json says it was made
    after the newest thing the database holds (its projects, agents and messages: the backup's
    moment): one made before is another database's (a mistyped DATABASE_URL, whose server
    archived its own projects beside this archive's), and stays foreign.
    A profile counts in its folder's project only."""
    projects = Restorer(db)
    projects.know()
    ours = dict(projects.folders)  # slug -> human key, the database's
    backed_up = backup_moment(db)
    described = read_projects(archive, archive.folders("projects"), projects)
    projects.folders |= ours  # a folder of the database's project stays its own
    keys = {normalize_human_key(key) for key in ours.values()}  # (a folder of another spelling of ours is not new)
    new = [folder for folder, project in described.items()
           if folder not in ours and normalize_human_key(project["human_key"]) not in keys
           and project.get("created_ts", "") > backed_up]
    owners = {folder: projects.folders[folder] for folder in [*ours, *new]}
    agents = [(folder, profile) for folder, profile in profiles(archive, list(owners))
              if same_project(profile.get("project_human_key"), owners[folder])
              and (folder in new or not db.execute("SELECT 1 FROM agents WHERE id = ?",
                                                   (agent_id(projects.ids[owners[folder]], profile["name"]),)).fetchone())]
    return projects, new, agents


def newcomer_paths(db: sqlite3.Connection, archive: GitArchive) -> list[str]:
    """The project.json and profiles of newcomers (doctor names them)."""
    _, new, agents = newcomers(db, archive)
    return [*map(project_json_path, new), *(f"{agent_dir(folder, profile['name'])}/profile.json" for folder, profile in agents)]


def bring_back(db: sqlite3.Connection, archive: GitArchive) -> tuple[int, int]:
    """Make the newcomers' projects and agents as restore makes them (the same ids, a project
    archived if its project.json says so, an agent's last activity the newest its profile
    records), so that import_unexpected has their mail's senders and recipients; (projects, agents)."""
    projects, new, agents = newcomers(db, archive)
    activity, known = Activity(clock.now()), len(projects.ids)
    for folder in new:
        key = projects.folders[folder]
        projects.project(key, folder, projects.states[key]["created_ts"])
    for folder, profile in agents:
        store_agent(db, projects.ids[projects.folders[folder]], profile, activity)
    activity.store(db)
    return len(projects.ids) - known, len(agents)


def store_reservation(db: sqlite3.Connection, r: dict, project_id: int, holder: int, activity: Activity) -> None:
    """A reservation file's reservation into the database, as its file last says (a row of its id
    updated: the credential whose share it counts in, which the archive does not know, stays)."""
    state = (r["exclusive"], r["reason"], r["created_ts"], r["expires_ts"], r["released_ts"], rendering.version_of(r) or None)
    if not db.execute("UPDATE file_reservations SET exclusive = ?, reason = ?, created_ts = ?, expires_ts = ?, released_ts = ?,"
                      " archive_version = ? WHERE id = ?", (*state, int(r["id"]))).rowcount:
        db.execute(
            "INSERT INTO file_reservations (id, project_id, agent_id, path_pattern, path_prefix, exclusive, reason,"
            " created_ts, expires_ts, released_ts, archive_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (int(r["id"]), project_id, holder, r["path_pattern"], literal_prefix(r["path_pattern"]), *state),
        )
    activity.saw(holder, r["created_ts"], None if r["released_ts"] else activity.written(r))


def store_contact(db: sqlite3.Connection, c: dict, agent: Callable[[str], int | None]) -> bool:
    """A contact file's contact into the database, as its file last says; False (nothing stored)
    when either agent it names is not in the database (`agent`: an address's agent id), or its
    status is none a contact has or it lacks a field (a file edited by hand)."""
    if (c.get("status") not in ("pending", "approved", "denied") or not all(key in c for key in outbox.CONTACT_COLUMNS)
            or not all(isinstance(c.get(role), str) for role in ("requester", "target"))):
        return False
    try:
        pair = [agent(c["requester"]), agent(c["target"])]
    except KeyError:  # of a project the archive does not have
        return False
    if None in pair or db.execute(f"SELECT count(*) FROM agents WHERE id IN ({placeholders(pair)})", pair).fetchone()[0] < 2:
        return False
    key = put_contact(db, *pair, tuple(c[key] for key in outbox.CONTACT_COLUMNS))
    db.execute("UPDATE contacts SET archive_version = ? WHERE id = ?", (rendering.version_of(c) or None, key))
    return True


def agent_of(address: str, project_id: int, projects: dict[str, int]) -> int | None:
    """The agent id an address names: Name (of project_id) or Name@slug (None: no such project here)."""
    name, _, slug = address.partition("@")
    if not slug:
        return agent_id(project_id, name)
    return agent_id(projects[slug], name) if slug in projects else None


def changes_since(db: sqlite3.Connection, archive: GitArchive, moment: str) -> list[tuple[str, dict]]:
    """(path, document) of what the archive says of the database's projects, agents, file
    reservations, contacts and products that is newer than the database's rows (a larger version:
    outbox.new_versions): after a backup was restored, their changes since (archived, retired,
    registered again, renewed, released, answered, renamed, linked), which a rewrite of the
    archive from the database would undo (the marks its recipient rows lack: missing_marks); and
    the reservations, contacts and products the database lacks that were made after `moment`
    (backup_moment: an older reservation it lacks was deleted by retention, and the archive keeps
    it as history)."""
    found = []
    for project in db.execute("SELECT id, slug, human_key, archive_version FROM projects").fetchall():
        folder, ours = project["slug"], project["human_key"]
        if (content := archive.read(project_json_path(folder))) is not None:
            described = json.loads(content)
            if same_project(described.get("human_key"), ours) and rendering.version_of(described) > (project["archive_version"] or 0):
                found.append((project_json_path(folder), described))
        agents = dict(db.execute("SELECT name, archive_version FROM agents WHERE project_id = ?", (project["id"],)).fetchall())
        for _, profile in profiles(archive, [folder]):
            if (profile["name"] in agents and same_project(profile.get("project_human_key", ours), ours)
                    and rendering.version_of(profile) > (agents[profile["name"]] or 0)):
                found.append((f"{agent_dir(folder, profile['name'])}/profile.json", profile))
        held = dict(db.execute("SELECT id, archive_version FROM file_reservations WHERE project_id = ?", (project["id"],)).fetchall())
        for reservation_id, sha in archived_reservations(archive, [folder]).items():
            r = json.loads(archive.repo[sha].data)
            if not same_project(r.get("project_human_key", ours), ours):
                continue
            newer = rendering.version_of(r) > (held[reservation_id] or 0) if reservation_id in held else r["created_ts"] > moment
            if newer:
                found.append((f"projects/{folder}/file_reservations/{reservation_id}.json", r))
        for path, sha in archive.walk(f"projects/{folder}/contacts"):
            c = json.loads(archive.repo[sha].data)
            row = db.execute("SELECT archive_version FROM contacts WHERE id = ?", (int(c["id"]),)).fetchone()
            if same_project(c.get("project_human_key", ours), ours) and (
                    rendering.version_of(c) > (row[0] or 0) if row else c["requested_ts"] > moment):
                found.append((path, c))
    for path, sha in archive.walk("products"):
        if not isinstance(product := json.loads(archive.repo[sha].data), dict):
            continue  # edited by hand into no product (store_product would store nothing)
        row = db.execute("SELECT archive_version FROM products WHERE product_key = ?", (product.get("product_key"),)).fetchone()
        if rendering.version_of(product) > (row[0] or 0) if row else str(product.get("created_ts")) > moment:
            found.append((path, product))
    return found


def bring_back_changes(db: sqlite3.Connection, archive: GitArchive, moment: str) -> tuple[int, list[str]]:
    """Store the changes the archive holds since a restored backup (changes_since), as a restore
    would store them; (how many, the paths left: a reservation or contact whose agent the database
    lacks). An agent's last activity only moves up to its newest act among them."""
    projects = {row["slug"]: row["id"] for row in db.execute("SELECT slug, id FROM projects")}
    brought, left, activity = 0, [], Activity(clock.now())
    for path, document in changes_since(db, archive, moment):
        if path.startswith("products/"):
            brought += store_product(db, document)
            continue
        project_id = projects[path.split("/")[1]]
        if path.endswith("/project.json"):
            db.execute("UPDATE projects SET archived_ts = ?, unarchived_ts = ?, retention_mode = ?, retention_days = ?,"
                       " archive_version = ? WHERE id = ?", (document.get("archived_ts"), document.get("unarchived_ts"),
                                                              *rendering.retention_of(document), rendering.version_of(document),
                                                              project_id))
        elif "/contacts/" in path:
            if not store_contact(db, document, lambda address: agent_of(address, project_id, projects)):
                left.append(path)
                continue
        elif path.endswith("/profile.json"):
            key = agent_id(project_id, document["name"])
            db.execute("UPDATE agents SET program = ?, model = ?, task_description = ?, retired_ts = ?, contact_policy = ?,"
                       " archive_version = ? WHERE id = ?",
                       (document["program"], document["model"], document["task_description"], document.get("retired_ts"),
                        contact_policy(document), rendering.version_of(document), key))
            activity.saw(key, None if document.get("retired_ts") else activity.written(document))
        else:
            holder = agent_id(project_id, document["agent"])
            if not db.execute("SELECT 1 FROM agents WHERE id = ?", (holder,)).fetchone():
                left.append(path)
                continue
            store_reservation(db, document, project_id, holder, activity)
        brought += 1
    activity.store(db)
    return brought, left


def restore(db: sqlite3.Connection, archive: GitArchive, progress=lambda items: items) -> dict[str, int]:
    """Fill an empty database from the archive: projects (archived if their project.json says
    so; one with no agent nor message from its project.json alone) and agents (profiles, with
    their contact policies), messages and their recipients (canonical files) with their read and
    ack marks, file reservations, contacts and products. `progress` wraps the messages as they are
    restored (the CLI's progress bar). Each project is rebuilt under its own human key (from
    project.json, the profiles and the documents), so two projects whose archive folders share a
    slug stay apart. The archive is read a folder at a time, never whole. Each agent's last activity is the newest act the archive records (Activity)."""
    if db.execute("SELECT 1 FROM projects UNION ALL SELECT 1 FROM agents UNION ALL SELECT 1 FROM messages LIMIT 1").fetchone():
        raise ValueError("the database is not empty; restore into a new DATABASE_URL")
    projects, activity = Restorer(db), Activity(clock.now())
    counts = {"projects": 0, "agents": 0, "messages": 0, "file_reservations": 0, "contacts": 0, "marks": 0, "products": 0}
    folders = archive.folders("projects")
    described = read_projects(archive, folders, projects)
    for folder, profile in profiles(archive, folders):
        human_key = projects.key(profile["project_human_key"], folder)
        projects.folders.setdefault(folder, human_key)
        store_agent(db, projects.project(human_key, folder, profile["inception_ts"]), profile, activity)
        counts["agents"] += 1

    def documents():
        for folder in folders:
            for path, sha in archive.walk(f"projects/{folder}/messages"):
                yield folder, path, sha

    for folder, path, sha in progress(documents()):
        try:
            entry = parse_document(archive.repo[sha].data)
        except ValueError as error:  # (json's, and a missing front matter's)
            raise ValueError(f"{path} is no message document ({error}): mend or remove it, or restore an older commit"
                             " of the archive") from None
        human_key = projects.key(entry.get("project_human_key") or projects.folders[folder], folder)
        project_id = projects.project(human_key, folder, entry["created_ts"])
        for address in [entry["sender"], *entry["to"], *entry["cc"], *entry["bcc"]]:
            counts["agents"] += projects.known(address, folder, human_key, entry["created_ts"], activity)
        sender = store_document(db, archive, folder, entry, project_id, lambda address: projects.agent(address, folder, human_key))
        activity.saw(sender, entry["created_ts"])
        counts["messages"] += 1
    alone = [folder for folder in described if projects.folders[folder] not in projects.ids]  # no agent nor message
    unsaid = [project_json_path(folder) for folder in alone if not projects.states[projects.folders[folder]].get("created_ts")]
    first_held = archive.first_held(unsaid)  # project.json written before it said when the project was made
    for folder in alone:
        key = projects.folders[folder]
        projects.project(key, folder, projects.states[key].get("created_ts") or clock.from_epoch(first_held[project_json_path(folder)]))
    projects.date_unsaid()
    for folder in folders:
        for sha in archived_reservations(archive, [folder]).values():  # one file per reservation, whichever naming
            r = json.loads(archive.repo[sha].data)
            human_key = projects.key(r.get("project_human_key") or projects.folders[folder], folder)
            holder = projects.agent(r["agent"], folder, human_key)
            store_reservation(db, r, projects.ids[human_key], holder, activity)
            counts["file_reservations"] += 1
    for folder in folders:  # once every project is made: a contact may name another project's agent
        for _, sha in archive.walk(f"projects/{folder}/contacts"):
            c = json.loads(archive.repo[sha].data)
            human_key = projects.key(c.get("project_human_key") or projects.folders[folder], folder)
            counts["contacts"] += store_contact(db, c, lambda address: projects.agent(address, folder, human_key))
    for _, sha in archive.walk("products"):  # once every project is made: a product spans several
        counts["products"] += store_product(db, json.loads(archive.repo[sha].data))
    slugs = {human_key: slug for slug, human_key in projects.slugs.items()}
    marks = missing_marks(db, archive, [folder for folder in folders if folder in projects.folders],
                          lambda folder: slugs.get(projects.folders[folder], folder))
    for chunk in chunks(marks, IMPORT_BATCH):  # streamed: a mailbox has many
        counts["marks"] += store_marks(db, chunk)
    activity.store(db)
    counts["projects"] = len(projects.ids)
    return counts
