"""The database filled from the archive (`db restore-from-archive`), and what doctor --repair
brings back into a restored database: mail, agents and changes made since its backup.
"""

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator


from .. import clock
from ..ids import stable_id, time_of
from ..store.db import chunks, placeholders, transaction
from ..tools.agents import agent_id
from ..tools.contacts import put_contact
from ..tools.counts import count_agent, count_reads
from ..human_keys import normalize_human_key
from ..tools.reservations import literal_prefix
from ..attachments.intake import Attachment
from ..tools.messages import attachments_json, store_message, store_recipients
from . import outbox, render as rendering
from .gitrepo import GitArchive
from .render import agent_dir, agent_kind, attachment_path, contact_policy, json_of, message_of, parse_document, project_json_path
from .verify import archived_marks, archived_reservations, mark_row, message_id_of, profiles, same_project

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
        mark = json_of(archive.repo[sha].data) or {}  # (edited into no JSON: no mark)
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
        entry = message_of(archive.repo[found[1]].data) if found else None  # None: left (no message document)
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
    # One edited into nonsense (no JSON, no human_key) is left out: the folder's project is made from its mail.
    described = {folder: project for folder in folders if isinstance((project := json_of(
        archive.read(project_json_path(folder))) or {}).get("human_key"), str)}
    projects.claim({folder: project["human_key"] for folder, project in described.items()})
    for folder, project in described.items():
        projects.folders[folder] = projects.key(project["human_key"], folder)
        key = projects.folders[folder]  # of two folders of one project (0031 respelled keys), the newer state
        projects.states[key] = max(project, projects.states.get(key, project), key=rendering.version_of)
    return described


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
        if (described := json_of(archive.read(project_json_path(folder)))) is not None:  # (no JSON: no change)
            if same_project(described.get("human_key"), ours) and rendering.version_of(described) > (project["archive_version"] or 0):
                found.append((project_json_path(folder), described))
        agents = dict(db.execute("SELECT name, archive_version FROM agents WHERE project_id = ?", (project["id"],)).fetchall())
        for _, profile in profiles(archive, [folder]):
            if (profile["name"] in agents and same_project(profile.get("project_human_key", ours), ours)
                    and rendering.version_of(profile) > (agents[profile["name"]] or 0)):
                found.append((f"{agent_dir(folder, profile['name'])}/profile.json", profile))
        held = dict(db.execute("SELECT id, archive_version FROM file_reservations WHERE project_id = ?", (project["id"],)).fetchall())
        for reservation_id, sha in archived_reservations(archive, [folder]).items():
            r = json_of(archive.repo[sha].data)
            if r is None or not same_project(r.get("project_human_key", ours), ours):  # (no JSON: no change)
                continue
            newer = rendering.version_of(r) > (held[reservation_id] or 0) if reservation_id in held else r["created_ts"] > moment
            if newer:
                found.append((f"projects/{folder}/file_reservations/{reservation_id}.json", r))
        for path, sha in archive.walk(f"projects/{folder}/contacts"):
            if not str((c := json_of(archive.repo[sha].data) or {}).get("id")).isdigit():
                continue  # edited into nonsense: no change
            row = db.execute("SELECT archive_version FROM contacts WHERE id = ?", (int(c["id"]),)).fetchone()
            if same_project(c.get("project_human_key", ours), ours) and (
                    rendering.version_of(c) > (row[0] or 0) if row else c["requested_ts"] > moment):
                found.append((path, c))
    for path, sha in archive.walk("products"):
        if (product := json_of(archive.repo[sha].data)) is None:
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
            if (r := json_of(archive.repo[sha].data)) is None:
                continue  # edited into no JSON: left out, as a contact or product that is no more one
            human_key = projects.key(r.get("project_human_key") or projects.folders[folder], folder)
            holder = projects.agent(r["agent"], folder, human_key)
            store_reservation(db, r, projects.ids[human_key], holder, activity)
            counts["file_reservations"] += 1
    for folder in folders:  # once every project is made: a contact may name another project's agent
        for _, sha in archive.walk(f"projects/{folder}/contacts"):
            if (c := json_of(archive.repo[sha].data)) is None:
                continue  # edited into no JSON: left out (store_contact leaves out one that says no contact)
            human_key = projects.key(c.get("project_human_key") or projects.folders[folder], folder)
            counts["contacts"] += store_contact(db, c, lambda address: projects.agent(address, folder, human_key))
    for _, sha in archive.walk("products"):  # once every project is made: a product spans several
        counts["products"] += store_product(db, json_of(archive.repo[sha].data))
    slugs = {human_key: slug for slug, human_key in projects.slugs.items()}
    marks = missing_marks(db, archive, [folder for folder in folders if folder in projects.folders],
                          lambda folder: slugs.get(projects.folders[folder], folder))
    for chunk in chunks(marks, IMPORT_BATCH):  # streamed: a mailbox has many
        counts["marks"] += store_marks(db, chunk)
    activity.store(db)
    counts["projects"] = len(projects.ids)
    return counts
