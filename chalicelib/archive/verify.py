"""The archive compared with the database (`archive verify`, doctor): what is missing,
unexpected, different or another project's, read a chunk at a time.
"""

import sqlite3
from collections.abc import Callable, Iterable, Iterator

from dulwich.objects import Blob

from ..store.db import chunks, placeholders
from ..tools.messages import recipients_of
from ..human_keys import normalize_human_key
from . import render as rendering
from .gitrepo import GitArchive
from .render import (
    agent_dir, agent_kind, contact_policy, document, json_of, message_of, message_path, parse_document, project_json_path, render,
    reservation_id_of_name, second_dir_of_name,
)
from .rebuild import CHUNK, body_in_archive, contact_entries, mark_entries, message_entries, product_entries, reservation_entries

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

    def body(entry: dict) -> str | None:  # (a file edited into nonsense, or to another body: different)
        return body_in_archive(entry, held, lambda sha: archive.repo[sha].data)

    missing, different = [], set()
    for entry in message_entries(db, body):
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
                document = message_of(archive.repo[sha].data) or {}  # no message document: unexpected
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
    """Those of these agents' copies ((path, blob id)) that are no copy of a message of the database:
    whose message it lacks, or that lie where none of its copies belongs (the inbox of an agent it
    was not sent to, in its projects or another's; but a copy in another project's folder beside
    its message's canonical file there is that folder's concern, as that file is foreign). But those the archive keeps: of
    mail retention purged (by its folder's project, or the project its document names: a copy of
    another project's mail), or whose canonical file is there (mail verify calls unexpected, which
    doctor --repair brings back with its copies). Only those whose message the database lacks have
    their document read."""
    belongs = copy_paths(db, list({message_id_of(path) for path, _ in found} - {None}))
    strays = []
    for path, sha in found:
        message_id = message_id_of(path)
        if message_id in belongs:
            copies = belongs[message_id]
            if current_path(path) not in copies and (
                    path.split("/")[1] in {copy.split("/")[1] for copy in copies} or not canonical_beside(archive, path)):
                strays.append(path)
        elif message_id is None or not (message_id < purged_before.get(path.split("/")[1], 0)
                                        or kept_mail(archive, sha, message_id, purged_before)):
            strays.append(path)
    return strays


def canonical_beside(archive: GitArchive, path: str) -> bool:
    """Whether the project folder of a copy (projects/{slug}/agents/{name}/{box}/...) holds a
    canonical file of the same name (projects/{slug}/messages/...)."""
    parts = path.split("/")
    return archive.file_id("/".join([*parts[:2], "messages", *parts[5:]])) is not None


def copy_paths(db: sqlite3.Connection, ids: list[int]) -> dict[int, set[str]]:
    """{message id: where its agents' copies belong} of those of these messages the database has:
    its sender's outbox and its recipients' inboxes (render.message_copies, from the rows a path
    is made of: no body read)."""
    if not ids:
        return {}
    rows = db.execute("SELECT m.id, m.created_ts, m.subject, p.slug AS project, s.name AS sender FROM messages m"
                      " JOIN projects p ON p.id = m.project_id JOIN agents s ON s.id = m.sender_id"
                      f" WHERE m.id IN ({placeholders(ids)})", ids).fetchall()
    recipients = recipients_of(db, [row["id"] for row in rows])
    return {row["id"]: {path for path in rendering.message_copies({**dict(row), **recipients[row["id"]]}) if is_copy(path)}
            for row in rows}


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
            if path not in expected and mark_row(db, folder, name, json_of(archive.repo[sha].data) or {}) is not None:
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
        profile = json_of(content)
        if profile is None:  # edited into no JSON: a rebuild writes it
            different.append(path)
            continue
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
        described = json_of(content)
        if described is None:  # edited into no JSON: a rebuild writes it
            different.append(project_json_path(row["slug"]))
            continue
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
        if str((reservation := json_of(archive.repo[sha].data) or {}).get("id")).isdigit():  # (else edited into nonsense)
            found.setdefault(int(reservation["id"]), sha)
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
        project = json_of(archive.read(project_json_path(slug)))  # (one that is no JSON names no project: different)
        if project is not None and not same_project(project.get("human_key"), owner):
            found.append(project_json_path(slug))
        for name in archive.folders(f"projects/{slug}/agents"):
            path = f"projects/{slug}/agents/{name}/profile.json"
            profile = json_of(archive.read(path))
            if profile is not None and not same_project(profile.get("project_human_key"), owner):
                found.append(path)
    return found


def profiles(archive: GitArchive, folders: list[str]) -> Iterator[tuple[str, dict]]:
    """(folder, profile) of every agent profile in these project folders; but one edited into
    nonsense (no JSON, no name): a restore makes its agent from its mail, and verify calls it different."""
    for folder in folders:
        for name in archive.folders(f"projects/{folder}/agents"):
            profile = json_of(archive.read(f"projects/{folder}/agents/{name}/profile.json"))
            if profile is not None and isinstance(profile.get("name"), str):
                yield folder, profile
