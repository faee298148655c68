"""The git archive's progress, as the outbox records it (docs/archive.md)."""

import sqlite3

from pydantic import Field

from ..archive import outbox
from ..store import heartbeats
from ..fields import ProjectKey
from ..registry import Input, Output, tool
from .projects import find_project


class ArchiveStatusInput(Input):
    project_key: ProjectKey | None = Field(None, description="Omit for every project.")


class WorkerState(Output):
    pid: int
    host: str
    started_ts: str
    heartbeat_ts: str
    age_seconds: float = Field(description="Seconds since its last heartbeat: a running worker beats every ARCHIVE_HEARTBEAT_SECONDS.")
    restarts: int = Field(description="How often its supervisor restarted it.")
    last_error: str | None


class ArchiveStatus(Output):
    pending: int = Field(description="Outbox entries not yet in the archive (failed ones included).")
    failed: int = Field(description="Pending entries that failed at least once; retried, never dropped.")
    failed_error: str | None = Field(None, description="The error of the oldest failed entry (none when nothing failed).")
    last_commit: str | None = Field(description="The archive commit of the last archived entry.")
    last_commit_ts: str | None
    lag_seconds: float = Field(description="Age of the oldest pending entry (0 when none).")
    worker: WorkerState | None = Field(description="The local archive worker's last heartbeat (none on AWS, where SQS drives it).")


def archive_status(db: sqlite3.Connection, args: ArchiveStatusInput) -> ArchiveStatus:
    """How far the git archive lags behind the database: pending and failed entries, the
    last commit, the age of the oldest pending entry, and the worker's last heartbeat."""
    project = find_project(db, args.project_key)["slug"] if args.project_key else None
    return ArchiveStatus(**outbox.status(db, project), worker=heartbeats.last(db, heartbeats.ARCHIVE_WORKER))


TOOLS = [tool(archive_status, read_only=True)]
