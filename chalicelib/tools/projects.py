"""Projects: one per code repository, keyed by its absolute path (the human key)."""

import functools
import posixpath
import re
import sqlite3
from typing import Annotated

from pydantic import AfterValidator, Field

from .. import clock
from ..errors import Conflict, InvalidArgument, NotFound
from ..fields import ProjectKey
from ..ids import stable_id
from ..registry import Input, Output, tool
from .counts import project_message_count

_WINDOWS_PATH = re.compile(r"[A-Za-z]:[\\/]")


def is_path(value: str) -> bool:
    return value.startswith("/") or _WINDOWS_PATH.match(value) is not None


def normalize_human_key(value: str) -> str:
    if _WINDOWS_PATH.match(value):
        return value.rstrip("\\/") or value
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path; pass the project's working directory, e.g. /home/me/repo")
    return posixpath.normpath(value).replace("//", "/")


def slugify(human_key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", human_key.lower()).strip("-") or "root"


HumanKey = Annotated[
    str,
    Field(min_length=1, max_length=1024, description="Absolute path of the project's working directory."),
    AfterValidator(normalize_human_key),
]


class Project(Output):
    slug: str
    human_key: str
    created_ts: str
    archived_ts: str | None = Field(description="Set while the project is archived (read-only).")


def _project(row: sqlite3.Row) -> Project:
    return Project(**{key: row[key] for key in ("slug", "human_key", "created_ts", "archived_ts")})


def find_project(db: sqlite3.Connection, project_key: str) -> sqlite3.Row:
    """The project named by slug or human key, or a NotFound that says how to create it."""
    if is_path(project_key):
        key = _human_key_id(project_key)
        rows = db.execute("SELECT * FROM projects WHERE id = ?", (key,)).fetchall()
    else:
        rows = db.execute("SELECT * FROM projects WHERE slug = ?", (project_key,)).fetchall()
    if len(rows) > 1:
        raise InvalidArgument(
            f"Slug {project_key!r} names several projects.", "Pass the project's absolute path (human_key) instead."
        )
    if not rows:
        raise NotFound(
            f"Project {project_key!r} not found.",
            "Call ensure_project with the absolute path of the repository first, or list_projects to see slugs.",
        )
    return rows[0]


def project_id(db: sqlite3.Connection, project_key: str) -> int:
    """The id of the project named by slug or human key. A human key gives it without a query,
    and without checking that the project exists: a caller whose query then finds nothing
    must call find_project for the error. A slug is looked up (find_project)."""
    if is_path(project_key):
        return _human_key_id(project_key)
    return find_project(db, project_key)["id"]


@functools.lru_cache(maxsize=4096)  # on every request that names a project: normalising and hashing cost ~3 µs
def _human_key_id(human_key: str) -> int:
    return stable_id("project", normalize_human_key(human_key))


def project_by_id(db: sqlite3.Connection, project_id: int) -> sqlite3.Row:
    """A project known to exist, e.g. an agent's or a message's."""
    return db.execute("SELECT * FROM projects WHERE id = ?", (project_id,)).fetchone()


class EnsureProjectInput(Input):
    human_key: HumanKey


def ensure_project(db: sqlite3.Connection, args: EnsureProjectInput) -> Project:
    """Create the project for a repository path, or return it if it exists (idempotent)."""
    db.execute(
        "INSERT OR IGNORE INTO projects (id, slug, human_key, created_ts) VALUES (?, ?, ?, ?)",
        (stable_id("project", args.human_key), slugify(args.human_key), args.human_key, clock.now()),
    )
    return _project(find_project(db, args.human_key))


class ListProjectsInput(Input):
    include_archived: bool = False


class Projects(Output):
    projects: list[Project]


def list_projects(db: sqlite3.Connection, args: ListProjectsInput) -> Projects:
    """All projects, oldest first; archived ones only with include_archived."""
    where = "" if args.include_archived else " WHERE archived_ts IS NULL"
    rows = db.execute(f"SELECT * FROM projects{where} ORDER BY created_ts, slug")
    return Projects(projects=[_project(row) for row in rows])


class GetProjectInput(Input):
    project_key: ProjectKey


class ProjectDetails(Project):
    agents: int
    messages: int


def get_project(db: sqlite3.Connection, args: GetProjectInput) -> ProjectDetails:
    """One project with its agent and message counts."""
    row = find_project(db, args.project_key)
    (agents,) = db.execute("SELECT count(*) FROM agents WHERE project_id = ?", (row["id"],)).fetchone()
    return ProjectDetails(**_project(row).model_dump(), agents=agents, messages=project_message_count(db, row["id"]))


def refuse_archived(project: sqlite3.Row) -> None:
    """Conflict if the project is archived: it takes no new messages, agents or contacts."""
    if project["archived_ts"]:
        raise Conflict(
            f"Project {project['slug']!r} is archived (since {project['archived_ts']}): it is read-only.",
            f"Call unarchive_project(project_key={project['slug']!r}) to use it again.",
        )


class ArchiveProjectInput(Input):
    project_key: ProjectKey


def archive_project(db: sqlite3.Connection, args: ArchiveProjectInput) -> Project:
    """Archive a project: hidden from list_projects and read-only until unarchived. Idempotent.

    Everything stays readable (inboxes, threads, search). Sending messages from or to its
    agents, registering agents and contact requests are refused with a hint to unarchive."""
    project = find_project(db, args.project_key)
    # coalesce: archiving again keeps the first time
    sql = "UPDATE projects SET archived_ts = coalesce(archived_ts, ?) WHERE id = ? RETURNING *"
    return _project(db.execute(sql, (clock.now(), project["id"])).fetchall()[0])


def unarchive_project(db: sqlite3.Connection, args: ArchiveProjectInput) -> Project:
    """Make an archived project active again. Idempotent."""
    project = find_project(db, args.project_key)
    sql = "UPDATE projects SET archived_ts = NULL WHERE id = ? RETURNING *"
    return _project(db.execute(sql, (project["id"],)).fetchall()[0])


TOOLS = [
    tool(ensure_project),
    tool(list_projects, read_only=True),
    tool(get_project, read_only=True),
    tool(archive_project),
    tool(unarchive_project),
]
