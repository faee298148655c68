"""Projects: one per code repository, keyed by its absolute path (the human key).

Slugs are unique (docs/identity.md): a project gets the plain slug of its path
(`/home/me/shop` -> `home-me-shop`) unless another project already holds it; then
`<plain slug>-<6 hex digits of its id>` (the id is itself a hash of the human key, so the
suffix is the same on every replica). Two replicas creating `/home/me/shop` and
`/home/me/Shop` at once can both take the plain slug; `settle_slug` runs after the push and
moves one of them off it, so a slug once answered stays that project's.
"""

import functools
import ntpath
import posixpath
import re
import unicodedata
import sqlite3
from typing import Annotated

from pydantic import AfterValidator, Field, PrivateAttr

from .. import clock
from ..archive import outbox
from ..errors import NotActive, NotFound
from ..store.db import placeholders, refresh, transaction
from ..fields import MAX_PROJECT_KEY, ProjectKey
from ..human_keys import is_path, normalize_human_key
from ..profiles import either, offered
from ..ids import stable_id
from ..registry import Input, Output, tool
from ..security.scopes import may_mention
from .counts import project_counts
from .paging import CURSOR_HELP, NEXT_HELP, Keyset, PageCursor, PageLimit


def slugify(human_key: str) -> str:
    """The plain slug of a path (accents dropped: café gives cafe); several paths share one (case, punctuation)."""
    letters = unicodedata.normalize("NFKD", human_key).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", letters.lower()).strip("-") or "root"


def distinct_slug(plain: str, project_id: int) -> str:
    """The slug of a project whose plain slug another project holds: the same on every replica
    (migrations/0012_a_unique_slugs.sql computes it in SQL)."""
    return f"{plain}-{project_id & 0xFFFFFF:06x}"


def free_slug(db: sqlite3.Connection, human_key: str, project_id: int) -> str:
    """The plain slug if no other project holds it, else the distinct one, else the plain slug
    and the whole id after `--`, which no plain nor distinct slug has (slugify makes a single `-`
    of every run): a slug only this project can get. Before, it took `-`: a path ending in those
    16 digits, made first by anyone who could hash the path, had it already (QA, session 30)."""
    plain = slugify(human_key)
    candidates = (plain, distinct_slug(plain, project_id))
    for slug in candidates:
        if not db.execute("SELECT 1 FROM projects WHERE slug = ? AND id != ? LIMIT 1", (slug, project_id)).fetchone():
            return slug
    return f"{plain}--{project_id:016x}"


ABSOLUTE_PATH = r"^(/|[A-Za-z]:[\\/])[^\x00]*$"  # what path_input accepts, for the JSON schema


def path_input(value: str) -> str:
    """An absolute path as a caller typed it, normalized (normalize_human_key). One with a NUL
    character is refused: no file system has one (the guard's realpath of one raised: a 500)."""
    if "\x00" in value:
        raise ValueError(f"{value!r} holds a NUL character, which no path has")
    return normalize_human_key(value)


def _fits_a_project_key(normal: str) -> str:
    """A normalised key no longer than a project_key may be: NFC makes some text longer (U+0958
    has no composed form: it becomes two characters), and the key answered must be one every
    tool takes back."""
    if len(normal) > MAX_PROJECT_KEY:
        raise ValueError(f"is {len(normal)} characters once normalised (Unicode NFC), over the {MAX_PROJECT_KEY}"
                         " a project key may have")
    return normal


HumanKey = Annotated[
    str,
    Field(min_length=1, max_length=MAX_PROJECT_KEY, description="Absolute path of the project's working directory.",
          json_schema_extra={"pattern": ABSOLUTE_PATH}),
    AfterValidator(path_input),
    AfterValidator(_fits_a_project_key),
]


class Project(Output):
    slug: str
    human_key: str
    created_ts: str
    archived_ts: str | None = Field(description="Set while the project is archived (read-only).")
    _created: bool = PrivateAttr(False)  # made by this call: settle_slug may still move it
    _id: int = PrivateAttr(0)  # its row's: the hash of its human key, or of an older spelling (migrations/0031)


def _project(row: sqlite3.Row, kind: type[Project] = Project) -> Project:
    project = kind(**{key: row[key] for key in ("slug", "human_key", "created_ts", "archived_ts")})
    project._id = row["id"]
    return project


class EnsuredProject(Project):
    note: str | None = Field(
        None, description="Set when this call created the project inside another project's directory: that"
        " project's agents do not see this one's mail."
    )


def find_project(db: sqlite3.Connection, project_key: str) -> sqlite3.Row:
    """The project named by slug or human key, or a NotFound that says how to create it."""
    row = project_named(db, project_key)
    if row is None:
        raise NotFound(f"Project {project_key!r} not found.", _not_found_hint(db, project_key))
    return row


def project_named(db: sqlite3.Connection, project_key: str) -> sqlite3.Row | None:
    """The project named by slug or human key, or None."""
    if is_path(project_key):
        row = project_by_key(db, _normal_key(project_key)[0])
        rows = [] if row is None else [row]
    else:
        rows = db.execute("SELECT * FROM projects WHERE slug = ?", (project_key,)).fetchall()
    # A slug is shared only for a moment (two replicas racing, until settle_slug), or for good
    # after a crash in between: then it names the oldest of them, on every replica alike.
    return min(rows, key=project_order) if len(rows) > 1 else rows[0] if rows else None


MAX_PARENTS = 32  # folders above a path looked up for the project it is inside


def _not_found_hint(db: sqlite3.Connection, project_key: str) -> str:
    """What to pass instead: the project a path is inside (an agent started in a subfolder, whom
    ensure_project would give a project of its own, apart from its team), or the slug a
    mistyped one stands for; else how to create one."""
    if is_path(project_key) and (row := enclosing_project(db, _normal_key(project_key)[0])) is not None and may_mention(row):
        return (f"It is inside project {row['slug']!r} ({row['human_key']}): pass that (the repository's"
                f" root), not a folder below it; {either('ensure_project') or 'macro_start_session'}"
                " is for a new repository.")
    if not is_path(project_key) and (slug := slugify(project_key)) != project_key and any(
        may_mention(row) for row in db.execute("SELECT * FROM projects WHERE slug = ?", (slug,))
    ):
        return f"Did you mean {slug!r}? Slugs are lower case" + (" (list_projects shows them)." if offered("list_projects") else ".")
    if offered("ensure_project"):  # (with list_projects: the full profile)
        return "Call ensure_project with the absolute path of the repository first, or list_projects to see slugs."
    return "Call macro_start_session with the absolute path of the repository first: it creates the project."


def enclosing_project(db: sqlite3.Connection, human_key: str) -> sqlite3.Row | None:
    """The nearest project whose directory holds this (normalised) path, up to MAX_PARENTS folders up,
    below the root: a project at / (or C:\\) holds every path, so it is no repository one is inside."""
    path, paths = human_key, ntpath if human_key[1:2] == ":" else posixpath
    for _ in range(MAX_PARENTS):
        parent = paths.dirname(path)
        if paths.dirname(parent) == parent:  # the root (or the path itself is)
            return None
        path = parent
        if (row := project_by_key(db, path)) is not None:
            return row
    return None


def project_order(row: sqlite3.Row) -> tuple:
    return row["created_ts"], row["id"]


def project_id(db: sqlite3.Connection, project_key: str) -> int:
    """The id of the project named by slug or human key. A human key gives it without a query,
    and without checking that the project exists: a caller whose query then finds nothing
    must call find_project, for the error or for the id of a project whose key migrations/0031
    respelled (its id is the hash of the old spelling). A slug is looked up (find_project)."""
    if is_path(project_key):
        return _normal_key(project_key)[1]
    return find_project(db, project_key)["id"]


@functools.lru_cache(maxsize=4096)  # on every request that names a project: normalising and hashing cost ~3 µs
def _normal_key(project_key: str) -> tuple[str, int]:
    """A path's human key, and the id of a project created under it."""
    human_key = normalize_human_key(project_key)
    return human_key, stable_id("project", human_key)


def project_by_key(db: sqlite3.Connection, human_key: str) -> sqlite3.Row | None:
    """The project of a (normalised) human key. By key, not by id: a project whose key
    migrations/0031 respelled keeps the id of its old spelling."""
    # fetchall: a lookup of a non-unique index left unfinished (fetchone) keeps a Turso replica's
    # read snapshot open, and its next write transaction fails ("database snapshot is stale").
    rows = db.execute("SELECT * FROM projects WHERE human_key = ?", (human_key,)).fetchall()
    if not rows and not human_key.isascii():  # a key stored before keys were NFC: as macOS gave it (NFD)
        rows = db.execute("SELECT * FROM projects WHERE human_key = ?", (unicodedata.normalize("NFD", human_key),)).fetchall()
    return rows[0] if rows else None


def project_by_id(db: sqlite3.Connection, project_id: int) -> sqlite3.Row:
    """A project known to exist, e.g. an agent's or a message's."""
    return db.execute("SELECT * FROM projects WHERE id = ?", (project_id,)).fetchone()


def misspelled_keys(db: sqlite3.Connection) -> list[tuple[sqlite3.Row, str, str | None]]:
    """(project, its normal key, the slug of the project holding that key or None) for each active
    project whose key is not normal: a Windows key migrations/0031 left as it was (doctor names them)."""
    found = []
    for row in db.execute("SELECT slug, human_key FROM projects WHERE archived_ts IS NULL ORDER BY created_ts, id").fetchall():
        normal = normalize_human_key(row["human_key"])
        if normal != row["human_key"]:
            holder = project_by_key(db, normal)
            if holder is None or holder["slug"] != row["slug"]:  # (an NFD key is found by its NFC spelling too)
                found.append((row, normal, None if holder is None else holder["slug"]))
    return found


class EnsureProjectInput(Input):
    human_key: HumanKey


def ensure_project(db: sqlite3.Connection, args: EnsureProjectInput) -> EnsuredProject:
    """Create the project for a repository path, or return it if it exists (idempotent).

    Its slug is unique: the plain slug of the path, or, when another path already has that
    one (e.g. /home/me/Shop after /home/me/shop), the plain slug and 6 hex digits. A project
    made inside another's directory (a folder of its repository) says so in `note`."""
    row = project_by_key(db, args.human_key)
    if row is not None:
        return _project(row, EnsuredProject)
    key = stable_id("project", args.human_key)
    inserted = db.execute(
        "INSERT OR IGNORE INTO projects (id, slug, human_key, created_ts) VALUES (?, ?, ?, ?)",
        (key, free_slug(db, args.human_key, key), args.human_key, clock.now()),
    ).rowcount
    row = project_by_id(db, key)
    project = _project(row, EnsuredProject)
    project._created = inserted == 1
    if project._created:
        outbox.record_project(db, row)  # its project.json: restored even if it never gets an agent or a message
    if project._created and (home := enclosing_project(db, args.human_key)) is not None and may_mention(home):
        # Not refused (a monorepo may want a project per folder), but an agent started in a
        # subfolder by mistake must hear it is now apart from its team.
        project.note = (
            f"Created project {project.slug!r} inside project {home['slug']!r} ({home['human_key']}): its agents do not"
            f" see this one's mail. If you meant to join them, use project_key={home['slug']!r} ({archiving()})."
        )
    return project


def settle_project(db: sqlite3.Connection, args: EnsureProjectInput, project: Project) -> Project:
    """ensure_project's settle step (after the push): leave a slug another replica gave meanwhile."""
    moved = settle_slug(db, project._id, project._created)
    return project.model_copy(update={"slug": moved}) if moved else project


def settle_slug(db: sqlite3.Connection, key: int, created: bool) -> str | None:
    """The project's new slug if it had to leave a shared one, else None.

    Each of two projects racing for one slug was pushed before this check, so at least one
    sees the other. One that sees a rival leaves the slug if this very call made it (it has
    answered nobody yet) or if it is the younger in (created_ts, id) order; one that saw no
    rival keeps it. So a slug, once answered, stays, and the replicas end with unique slugs.
    On embedded SQLite writes are serialised and there is never a rival."""
    if not hasattr(db, "replica"):
        return None
    if created:
        refresh(db)  # ours is on the primary: now see every project pushed before it
    with transaction(db, write=False):
        mine = project_by_id(db, key)
        rivals = db.execute("SELECT * FROM projects WHERE slug = ? AND id != ?", (mine["slug"], key)).fetchall()
    if not rivals or not (created or any(project_order(row) < project_order(mine) for row in rivals)):
        return None
    with transaction(db, write=True):
        slug = free_slug(db, mine["human_key"], key)
        db.execute("UPDATE projects SET slug = ? WHERE id = ?", (slug, key))
        outbox.move_pending(db, mine["slug"], slug, [key])  # its project.json goes to its own folder
    return slug


class ListProjectsInput(Input):
    include_archived: bool = False
    limit: PageLimit = 100
    cursor: PageCursor | None = Field(None, description=CURSOR_HELP)
    # Not an argument: security/scopes.py sets it for a credential scoped to some projects (their
    # slugs or human keys), so that the query, its pages and its cursors never touch the others.
    _scope: frozenset[str] | None = PrivateAttr(None)


class Projects(Output):
    projects: list[Project]
    next_cursor: str | None = Field(None, description=NEXT_HELP)


def among(scope: frozenset[str], table: str = "projects") -> tuple[str, list[str]]:
    """SQL for "the project is one of `scope`" (slugs or human keys) and its parameters. A key an
    older build stored decomposed (NFD) matches its path too, as project_by_key finds it."""
    slugs = sorted(scope)
    keys = sorted(scope | {unicodedata.normalize("NFD", key) for key in scope if not key.isascii() and is_path(key)})
    return f"({table}.slug IN ({placeholders(slugs)}) OR {table}.human_key IN ({placeholders(keys)}))", slugs + keys


OLDEST_FIRST = Keyset((("created_ts", "created_ts"), ("slug", "slug")))  # slugs are unique


def list_projects(db: sqlite3.Connection, args: ListProjectsInput) -> Projects:
    """The projects, oldest first, a page at a time; archived ones only with include_archived."""
    where, params = OLDEST_FIRST.after(args.cursor)
    if not args.include_archived:
        where += " AND archived_ts IS NULL"
    if args._scope is not None:
        condition, keys = among(args._scope)
        where += f" AND {condition}"
        params += keys
    rows = db.execute(f"SELECT * FROM projects WHERE 1{where}{OLDEST_FIRST.order_by()} LIMIT ?", (*params, args.limit + 1))
    page, cursor = OLDEST_FIRST.page(rows, args.limit)
    return Projects(projects=[_project(row) for row in page], next_cursor=cursor)


class GetProjectInput(Input):
    project_key: ProjectKey


class ProjectDetails(Project):
    agents: int
    messages: int


def get_project(db: sqlite3.Connection, args: GetProjectInput) -> ProjectDetails:
    """One project with its agent and message counts."""
    row = find_project(db, args.project_key)
    messages, agents = project_counts(db, row["id"])
    return ProjectDetails(**_project(row).model_dump(), agents=agents, messages=messages)


def refuse_archived(project: sqlite3.Row) -> None:
    """Conflict if the project is archived: it takes no new messages, agents or contacts."""
    if project["archived_ts"]:
        raise NotActive(
            f"Project {project['slug']!r} is archived (since {project['archived_ts']}): it is read-only.",
            f"To use it again, {unarchiving(project['slug'])}.",
        )


def unarchiving(slug: str) -> str:
    """How the caller gets an archived project back: unarchive_project (the admin's) if offered to the
    caller, else through the person who oversees the agents."""
    if offered("unarchive_project"):
        return f"call unarchive_project(project_key={slug!r})"
    return "ask your human overseer to unarchive it (Unarchive, on the project's page in the web UI)"


def archiving() -> str:
    """How a project made by mistake is put away: archive_project (the admin's) if offered to the
    caller, else by the person who oversees the agents."""
    if offered("archive_project"):
        return "archive_project this one"
    return "your human overseer can archive this one"


class ArchiveProjectInput(Input):
    project_key: ProjectKey


def archive_project(db: sqlite3.Connection, args: ArchiveProjectInput) -> Project:
    """Archive a project: hidden from list_projects and read-only until unarchived. Idempotent.

    Everything stays readable (inboxes, threads, search). Sending messages from or to its
    agents, registering agents and contact requests are refused with a hint to unarchive."""
    project = find_project(db, args.project_key)
    # coalesce: archiving again keeps the first time
    sql = "UPDATE projects SET archived_ts = coalesce(archived_ts, ?) WHERE id = ? RETURNING *"
    row = db.execute(sql, (clock.now(), project["id"])).fetchall()[0]
    outbox.record_project(db, row)  # project.json says so: a restore keeps the project archived
    return _project(row)


def unarchive_project(db: sqlite3.Connection, args: ArchiveProjectInput) -> Project:
    """Make an archived project active again. Idempotent."""
    project = find_project(db, args.project_key)
    # unarchived_ts: since when it is active again, in its project.json; kept when it was not archived
    sql = ("UPDATE projects SET unarchived_ts = CASE WHEN archived_ts IS NULL THEN unarchived_ts ELSE ? END,"
           " archived_ts = NULL WHERE id = ? RETURNING *")
    row = db.execute(sql, (clock.now(), project["id"])).fetchall()[0]
    outbox.record_project(db, row)
    return _project(row)


TOOLS = [
    tool(ensure_project, settle=settle_project, repeat_safe=True),
    tool(list_projects, read_only=True),
    tool(get_project, read_only=True),
    tool(archive_project, destructive=True, repeat_safe=True),
    tool(unarchive_project, repeat_safe=True),
]
