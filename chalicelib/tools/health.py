"""Liveness and readiness of the service and its database."""

import sqlite3

from .. import __version__, clock
from ..registry import Input, Output, tool


class HealthCheckInput(Input):
    pass


class Health(Output):
    status: str
    version: str
    time: str
    projects: int


def health_check(db: sqlite3.Connection, args: HealthCheckInput) -> Health:
    """Check that the server and its database answer. Call it first if anything seems wrong."""
    (projects,) = db.execute("SELECT count(*) FROM projects").fetchone()
    return Health(status="ok", version=__version__, time=clock.now(), projects=projects)


TOOLS = [tool(health_check, read_only=True)]
