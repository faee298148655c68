"""File reservations: advisory leases on repo-relative paths and globs."""

import sqlite3

from .. import clock
from ..globs import overlaps


def active_reservations(db: sqlite3.Connection, project_id: int) -> list[sqlite3.Row]:
    """Unreleased, unexpired reservations of a project (expired ones never count)."""
    return db.execute(
        "SELECT * FROM file_reservations WHERE project_id = ? AND released_ts IS NULL AND expires_ts > ?",
        (project_id, clock.now()),
    ).fetchall()


def overlap_peers(db: sqlite3.Connection, project_id: int, agent_id: int) -> set[int]:
    """Agents holding an active reservation that overlaps one of `agent_id`'s."""
    active = active_reservations(db, project_id)
    mine = [row["path_pattern"] for row in active if row["agent_id"] == agent_id]
    return {
        row["agent_id"]
        for row in active
        if row["agent_id"] != agent_id and any(overlaps(pattern, row["path_pattern"]) for pattern in mine)
    }


TOOLS: list = []
