"""Liveness and readiness of the service and its database."""

import sqlite3

from pydantic import Field, PrivateAttr

from .. import __version__, clock
from ..registry import Input, Output, tool
from .projects import among


class HealthCheckInput(Input):
    # Not an argument: security/scopes.py sets it for a credential scoped to some projects, whose
    # count is then of those only (a scoped credential learns nothing of the others).
    _scope: frozenset[str] | None = PrivateAttr(None)


class Health(Output):
    status: str
    version: str
    time: str
    projects: int = Field(description="The projects this credential may use.")


def health_check(db: sqlite3.Connection, args: HealthCheckInput) -> Health:
    """Check that the server and its database answer. Call it first if anything seems wrong."""
    condition, keys = among(args._scope) if args._scope is not None else ("1", [])
    (projects,) = db.execute(f"SELECT count(*) FROM projects WHERE {condition}", keys).fetchone()
    return Health(status="ok", version=__version__, time=clock.now(), projects=projects)


TOOLS = [tool(health_check, read_only=True)]
