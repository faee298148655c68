"""Agents: memorable identities inside a project."""

import sqlite3
from typing import Annotated, Iterable

from pydantic import Field

from .. import clock
from ..errors import Conflict, NotFound
from ..fields import AgentName, ProjectKey
from ..ids import stable_id
from ..names import random_name
from ..registry import Input, Output, tool
from .projects import find_project

Program = Annotated[str, Field(min_length=1, max_length=128, description="The agent program, e.g. claude-code.")]
Model = Annotated[str, Field(min_length=1, max_length=128, description="The model, e.g. opus-4.")]
TaskDescription = Annotated[str, Field(max_length=4000, description="What the agent is working on.")]


class Agent(Output):
    project: str
    name: str
    program: str
    model: str
    task_description: str
    inception_ts: str
    last_active_ts: str


def agent_id(project_id: int, name: str) -> int:
    # Names are case-insensitive: GreenCastle and greencastle are one agent.
    return stable_id("agent", project_id, name.lower())


def _agent(project: sqlite3.Row, row: sqlite3.Row) -> Agent:
    return Agent(
        project=project["slug"],
        **{key: row[key] for key in ("name", "program", "model", "task_description", "inception_ts", "last_active_ts")},
    )


def find_agents(db: sqlite3.Connection, project: sqlite3.Row, names: Iterable[str]) -> list[sqlite3.Row]:
    """The named agents of a project, in order; a NotFound names every one that is missing."""
    names = list(names)
    rows, missing = [], []
    for name in names:
        row = db.execute("SELECT * FROM agents WHERE id = ?", (agent_id(project["id"], name),)).fetchone()
        if row is None:
            missing.append(name)
        rows.append(row)
    if missing:
        raise NotFound(
            f"No agent named {', '.join(missing)} in project {project['slug']!r}.",
            "Check the spelling with list_agents, or have that agent call register_agent first.",
        )
    return rows


def find_agent(db: sqlite3.Connection, project: sqlite3.Row, name: str) -> sqlite3.Row:
    return find_agents(db, project, [name])[0]


def _insert_agent(db, project, name, args) -> sqlite3.Row:
    now = clock.now()
    db.execute(
        "INSERT INTO agents (id, project_id, name, program, model, task_description, inception_ts, last_active_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (agent_id(project["id"], name), project["id"], name, args.program, args.model, args.task_description, now, now),
    )
    return find_agent(db, project, name)


def _exists(db: sqlite3.Connection, project: sqlite3.Row, name: str) -> bool:
    return db.execute("SELECT 1 FROM agents WHERE id = ?", (agent_id(project["id"], name),)).fetchone() is not None


def _unused_name(db: sqlite3.Connection, project: sqlite3.Row) -> str:
    for attempt in range(10_000):
        # Once the adjective+noun space looks full, add digits.
        name = random_name() + (str(attempt) if attempt >= 100 else "")
        if not _exists(db, project, name):
            return name
    raise Conflict("No free agent name left in this project.", "Pass an explicit name.")


class RegisterAgentInput(Input):
    project_key: ProjectKey
    program: Program
    model: Model
    name: AgentName | None = Field(None, description="Omit to get a fresh memorable name like GreenCastle.")
    task_description: TaskDescription = ""


def register_agent(db: sqlite3.Connection, args: RegisterAgentInput) -> Agent:
    """Register an agent in a project. With an existing name, update its profile and
    last_active time; without a name, create a new agent with a memorable name."""
    project = find_project(db, args.project_key)
    if args.name is None:
        return _agent(project, _insert_agent(db, project, _unused_name(db, project), args))
    updated = db.execute(
        "UPDATE agents SET program = ?, model = ?, task_description = ?, last_active_ts = ? WHERE id = ?",
        (args.program, args.model, args.task_description, clock.now(), agent_id(project["id"], args.name)),
    )
    if updated.rowcount:
        return _agent(project, find_agent(db, project, args.name))
    return _agent(project, _insert_agent(db, project, args.name, args))


class CreateAgentIdentityInput(Input):
    project_key: ProjectKey
    program: Program
    model: Model
    name_hint: AgentName | None = Field(None, description="Used if free; otherwise a fresh name is generated.")
    task_description: TaskDescription = ""


def create_agent_identity(db: sqlite3.Connection, args: CreateAgentIdentityInput) -> Agent:
    """Always create a new agent identity (never reuse an existing one)."""
    project = find_project(db, args.project_key)
    name = args.name_hint
    if name is None or _exists(db, project, name):
        name = _unused_name(db, project)
    return _agent(project, _insert_agent(db, project, name, args))


class WhoisInput(Input):
    project_key: ProjectKey
    agent_name: AgentName


class AgentProfile(Agent):
    messages_sent: int
    messages_received: int
    unread: int


def whois(db: sqlite3.Connection, args: WhoisInput) -> AgentProfile:
    """An agent's profile with its message counts."""
    project = find_project(db, args.project_key)
    row = find_agent(db, project, args.agent_name)
    (sent,) = db.execute("SELECT count(*) FROM messages WHERE sender_id = ?", (row["id"],)).fetchone()
    received, unread = db.execute(
        "SELECT count(*), count(*) - count(read_ts) FROM message_recipients WHERE agent_id = ?", (row["id"],)
    ).fetchone()
    return AgentProfile(
        **_agent(project, row).model_dump(), messages_sent=sent, messages_received=received, unread=unread
    )


class ListAgentsInput(Input):
    project_key: ProjectKey


class Agents(Output):
    agents: list[Agent]


def list_agents(db: sqlite3.Connection, args: ListAgentsInput) -> Agents:
    """All agents of a project, by name."""
    project = find_project(db, args.project_key)
    rows = db.execute("SELECT * FROM agents WHERE project_id = ? ORDER BY name COLLATE NOCASE", (project["id"],))
    return Agents(agents=[_agent(project, row) for row in rows])


TOOLS = [
    tool(register_agent),
    tool(create_agent_identity),
    tool(whois, read_only=True),
    tool(list_agents, read_only=True),
]
