"""Agents: memorable identities inside a project, and their retirement."""

import functools
import sqlite3
from itertools import islice
from typing import Annotated, Iterable, Literal

from pydantic import Field

from .. import clock
from ..security.agent_tokens import issue_token
from ..archive import outbox
from ..errors import Conflict, NotActive, NotFound, did_you_mean
from ..fields import AgentName, NewAgentName, ProjectKey, acting_agent
from ..ids import stable_id
from ..names import ContactPolicy, random_name, reserved
from ..profiles import offered
from ..registry import Input, Output, tool
from ..store.db import placeholders
from .counts import agent_counts, count_agent
from .paging import CURSOR_HELP, NEXT_HELP, Keyset, PageCursor, PageLimit
from .projects import find_project, refuse_archived, unarchiving

Program = Annotated[str, Field(min_length=1, max_length=128, description="The agent program, e.g. claude-code.")]
Model = Annotated[str, Field(min_length=1, max_length=128, description="The model, e.g. opus-4.")]
TaskDescription = Annotated[str, Field(max_length=4000, description="What the agent is working on.")]
# Re-registering (a session start, joining a thread) must not wipe what the agent said it works on.
KEEP_TASK = "What the agent is working on. Omit (or null) to keep the stored one of an existing agent; \"\" clears it."


class Agent(Output):
    project: str
    name: str
    program: str
    model: str
    task_description: str
    inception_ts: str
    last_active_ts: str
    contact_policy: ContactPolicy = Field(description="Who may write to this agent; see set_contact_policy.")
    retired_ts: str | None = Field(description="Set while the agent is retired: it neither sends nor receives.")
    kind: Literal["agent", "human"] = Field("agent", description="human: a person overseeing the agents (send_overseer_message).")


@functools.lru_cache(maxsize=4096)  # on every request that names an agent; hashing costs ~2 µs
def agent_id(project_id: int, name: str) -> int:
    # Names are case-insensitive: GreenCastle and greencastle are one agent.
    return stable_id("agent", project_id, name.lower())


_AGENT_COLUMNS = (
    "name", "program", "model", "task_description", "inception_ts", "last_active_ts", "contact_policy", "retired_ts", "kind"
)


def describe_agent(project: sqlite3.Row, row: sqlite3.Row) -> Agent:
    return Agent(project=project["slug"], **{key: row[key] for key in _AGENT_COLUMNS})


_AGENT_BY_ID = (
    "SELECT a.*, p.slug AS project_slug, p.archived_ts AS project_archived_ts"
    " FROM agents a JOIN projects p ON p.id = a.project_id WHERE a.id = ?"
)


def find_agents(db: sqlite3.Connection, project: sqlite3.Row, names: Iterable[str]) -> list[sqlite3.Row]:
    """The named agents, in order, each with its project's slug and archived_ts. A name may
    also be an address, Name@project, for an agent of another project. A NotFound names
    every one that is missing."""
    rows, missing = [], {}
    for address in names:
        name, _, project_key = address.partition("@")
        home = find_project(db, project_key) if project_key else project
        row = db.execute(_AGENT_BY_ID, (agent_id(home["id"], name),)).fetchone()
        if row is None:
            missing.setdefault((home["slug"], home["id"]), []).append(name)
        rows.append(row)
    if missing:
        where = "; ".join(f"{', '.join(missed)} in project {slug!r}" for (slug, _), missed in missing.items())
        raise NotFound(
            f"No agent named {where}.{_guesses(db, missing)}",
            f"Check the spelling with list_agents, or have that agent {_registering()} first.",
        )
    return rows


GUESSED = 3  # missing names given a "did you mean"
# A project with more agents guesses among the names sharing the missing one's first letter:
# difflib over its 5,000 names took ~18 ms, inside the write (each new agent's registration).
NEAR_MISS_NAMES = 500


def _registering() -> str:
    """How an agent comes to be, in the tools this server lists (TOOLS_PROFILE)."""
    return "call register_agent" if offered("register_agent") else "start a session (macro_start_session)"


def _guesses(db: sqlite3.Connection, missing: dict[tuple[str, int], list[str]]) -> str:
    """A "did you mean" for the first GUESSED missing names, each project's names read once: a
    guess for every one (a send names up to 300) read up to 5,000 names and ran difflib over them
    each time, holding the writer, and so every client's writes, for seconds."""
    first = list(islice(((key, name) for (_, key), missed in missing.items() for name in missed), GUESSED))
    names = {key: _names(db, key) for key in {key for key, _ in first}}
    more = sum(map(len, missing.values())) - len(first)
    return "".join(did_you_mean(name, _near(db, key, names[key], name)) for key, name in first) + (
        f" (No guesses for the other {more}.)" if more > 0 else "")


def _names(db: sqlite3.Connection, project_id: int) -> list[str]:
    """The project's agent names, up to one past NEAR_MISS_NAMES: a "did you mean"'s candidates (_near)."""
    return [row[0] for row in db.execute("SELECT name FROM agents WHERE project_id = ? LIMIT ?", (project_id, NEAR_MISS_NAMES + 1))]


def _near(db: sqlite3.Connection, project_id: int, names: list[str], word: str) -> list[str]:
    """The candidates of a "did you mean" for `word`: the project's `names` (_names), or, past
    NEAR_MISS_NAMES, those starting with its letter (agents_by_name; names start with an ASCII letter)."""
    if len(names) <= NEAR_MISS_NAMES or not word[:1].isascii():
        return names
    letter = word[0].lower()
    return [row[0] for row in db.execute(
        "SELECT name FROM agents WHERE project_id = ? AND name >= ? COLLATE NOCASE AND name < ? COLLATE NOCASE LIMIT 5000",
        (project_id, letter, chr(ord(letter) + 1)))]


def find_agent(db: sqlite3.Connection, project: sqlite3.Row, name: str) -> sqlite3.Row:
    return find_agents(db, project, [name])[0]


def find_agent_by_id(db: sqlite3.Connection, key: int) -> sqlite3.Row:
    """An agent known to exist (e.g. a message's sender), with its project's slug and archived_ts."""
    return db.execute(_AGENT_BY_ID, (key,)).fetchone()


def address(agent: sqlite3.Row, home: sqlite3.Row) -> str:
    """How agents of project `home` write to `agent`: its name, or Name@slug if it is another project's."""
    return agent["name"] if agent["project_id"] == home["id"] else f"{agent['name']}@{agent['project_slug']}"


def refuse_human(project: sqlite3.Row, row: sqlite3.Row | None) -> None:
    """Conflict if `row` is a human overseer's: no agent registers under or acts as a person. An
    agent under a name reserved for them (one registered before it was) is an agent and passes."""
    if row is not None and row["kind"] == "human":
        raise Conflict(
            f"{row['name']} is a human overseer's name in project {project['slug']!r}, not an agent's.",
            "Agents cannot register under or act as a person's name: use your own agent name.",
        )


def refuse_people(db: sqlite3.Connection, project_key: str | None, names: Iterable[str | None]) -> None:
    """refuse_human for the agents a write acts as: invoke.admitted calls it for every tool's acting
    agents (Tool.acts_as), so that no tool lets an agent send, ask, answer, block or retire as the
    person. The person acts through send_overseer_message and the web UI, whose admin tools act as
    nobody (web/pages.py). People are few: one probe of their index by name (migrations/0048
    agents_people) clears most writes before the project and the rows are looked up."""
    names = [name for name in names if name]
    if not names or db.execute(f"SELECT 1 FROM agents WHERE kind = 'human' AND name COLLATE NOCASE IN ({placeholders(names)})"
                               " LIMIT 1", names).fetchone() is None:
        return
    try:
        project = find_project(db, project_key) if project_key else None
    except NotFound:
        return  # the tool's to report (or a project to create)
    for name in names if project else ():
        refuse_human(project, db.execute("SELECT name, kind FROM agents WHERE id = ?", (agent_id(project["id"], name),)).fetchone())


def refuse_reserved(name: str) -> None:
    """Conflict if the name is reserved for people (names.OVERSEER_NAMES): an agent under it would
    write as the human overseer, and the person could no longer write there."""
    if reserved(name):
        raise Conflict(
            f"{name} is reserved for the human overseer: no agent registers under it.",
            "Use another agent name, or omit it to get a fresh one generated.",
        )


def refuse_retired(project: sqlite3.Row, agent: sqlite3.Row, what: str) -> None:
    """Conflict if the agent is retired: it does nothing (`what`: send, reserve files) until unretired."""
    if agent["retired_ts"]:
        slug, name = project["slug"], agent["name"]
        raise NotActive(f"{name} is retired (since {agent['retired_ts']}) and cannot {what}.",
                        f"To {what}, first {unretire(slug, name)}.")


def unretire(slug: str, name: str) -> str:
    """How the retired agent `name` comes back: what a refusal's hint and register_agent's note say."""
    return unretiring(f"call unretire_agent(project_key={slug!r}, agent_name={name!r})", name)


def unretiring(call: str, who: str) -> str:
    """How retired agents come back: `call` (of unretire_agent) if the profile lists it, else through
    the person who oversees them (profiles.py: a hint names only tools the agent's host lets it call)."""
    return call if offered("unretire_agent") else f"ask your human overseer to unretire {who} (Unretire, in the web UI)"


def refuse_inactive(home: sqlite3.Row, sender: sqlite3.Row, recipients: list[sqlite3.Row]) -> None:
    """Conflict if the sender or a recipient is retired, or in an archived project.

    Called before anything is stored, so a refused message reaches nobody."""
    refuse_archived(home)
    refuse_retired(home, sender, "send")
    retired = [address(agent, home) for agent in recipients if agent["retired_ts"]]
    if retired:
        raise refusing(retired, Conflict(
            f"Not sent: {', '.join(retired)} {'is retired and gets' if len(retired) == 1 else 'are retired and get'} no new mail.",
            f"Leave them out (list_agents shows the active agents), or {unretiring('have them call unretire_agent', 'them')}.",
        ))
    for agent in recipients:
        if agent["project_archived_ts"]:
            slug = agent["project_slug"]
            raise refusing([address(other, home) for other in recipients if other["project_slug"] == slug], Conflict(
                f"Not sent: {address(agent, home)} is in project {slug!r}, which is archived.",
                f"Leave its agents out, or first {unarchiving(slug)}.",
            ))


def refusing(addresses: list[str], error: Conflict) -> Conflict:
    """The refusal, with the recipients it refuses (Conflict.refused)."""
    error.refused = tuple(addresses)
    return error


def _insert_agent(db, project, name, args) -> sqlite3.Row:
    now = clock.now()
    db.execute(
        "INSERT INTO agents (id, project_id, name, program, model, task_description, inception_ts, last_active_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (agent_id(project["id"], name), project["id"], name, args.program, args.model, args.task_description or "", now, now),
    )
    count_agent(db, project["id"])
    row = find_agent(db, project, name)
    outbox.record_agent(db, project, row)
    return row


def mark_active(db: sqlite3.Connection, agent_id: int, now: str) -> None:
    """Sending, reserving and holding slots is activity: it keeps an agent from looking stale."""
    db.execute("UPDATE agents SET last_active_ts = ? WHERE id = ?", (now, agent_id))


def _exists(db: sqlite3.Connection, project: sqlite3.Row, name: str) -> bool:
    return db.execute("SELECT 1 FROM agents WHERE id = ?", (agent_id(project["id"], name),)).fetchone() is not None


def _unused_name(db: sqlite3.Connection, project: sqlite3.Row) -> str:
    for attempt in range(10_000):
        # Once the adjective+noun space looks full, add digits.
        name = random_name() + (str(attempt) if attempt >= 100 else "")
        if not _exists(db, project, name):
            return name
    raise Conflict("No free agent name left in this project.", "Pass an explicit name.")


class RegisteredAgent(Agent):
    registration_token: str | None = Field(
        None,
        description="Set when the agent is created, and shown only this once: the secret that proves you are"
        " this agent (registration_token / sender_token arguments). Keep it; rotate_agent_token replaces it.",
    )
    note: str | None = Field(
        None, description="Set when a name no agent had created this agent while existing names are close to it (a"
        " mistyped own name makes a stranger, without your mail, contacts or reservations), or when the agent is retired.")


def registered(db: sqlite3.Connection, project: sqlite3.Row, row: sqlite3.Row) -> RegisteredAgent:
    """A newly created agent, with its new token."""
    return RegisteredAgent(**describe_agent(project, row).model_dump(), registration_token=issue_token(db, row["id"]))


class RegisterAgentInput(Input):
    project_key: ProjectKey
    program: Program
    model: Model
    agent_name: NewAgentName | None = acting_agent("name", default=None, description=(
        "Omit to get a fresh memorable name like GreenCastle. A name no agent has creates that agent (the note names"
        " close existing ones)."))
    task_description: TaskDescription | None = Field(None, description=KEEP_TASK)


def register_agent(db: sqlite3.Connection, args: RegisterAgentInput) -> RegisteredAgent:
    """Register an agent in a project. With an existing name, update its profile and
    last_active time; with a name no agent has, create that agent (its note names existing
    agents with close names: a mistyped own name makes a stranger); without a name, create a
    new agent with a memorable name. Registering does not unretire a retired agent (its note says so).

    program and model are always replaced; task_description only when given."""
    project = find_project(db, args.project_key)
    refuse_archived(project)
    if args.agent_name is None:
        return registered(db, project, _insert_agent(db, project, _unused_name(db, project), args))
    if not _exists(db, project, args.agent_name):  # only a new agent: one that registered under it before it was reserved keeps it
        refuse_reserved(args.agent_name)
    # (A person's name was refused before: invoke.admitted, refuse_people.)
    updated = db.execute(
        "UPDATE agents SET program = ?, model = ?, task_description = coalesce(?, task_description), last_active_ts = ?"
        " WHERE id = ?",
        (args.program, args.model, args.task_description, clock.now(), agent_id(project["id"], args.agent_name)),
    )
    if updated.rowcount:
        row = find_agent(db, project, args.agent_name)
        outbox.record_agent(db, project, row)
        agent = RegisteredAgent(**describe_agent(project, row).model_dump())
        if row["retired_ts"]:  # (a session start must not undo a retirement): said now, not by its first send's 409
            agent.note = (f"{row['name']} is retired (since {row['retired_ts']}): it cannot send or reserve files, and gets no"
                          f" new mail. To work as it again, first {unretire(project['slug'], row['name'])}, or omit"
                          " agent_name to register a new agent.")
        return agent
    close = did_you_mean(args.agent_name, _near(db, project["id"], _names(db, project["id"]), args.agent_name))  # before it is one of them
    agent = registered(db, project, _insert_agent(db, project, args.agent_name, args))
    if close:
        agent.note = (f"No agent was named {args.agent_name}, so this created it, with an empty inbox and no contacts or"
                      f" reservations.{close} To act as yourself, call again with your own name; otherwise keep this one"
                      " (and its registration_token).")
    return agent


class CreateAgentIdentityInput(Input):
    project_key: ProjectKey
    program: Program
    model: Model
    name_hint: NewAgentName | None = Field(None, description="Used if free; otherwise a fresh name is generated.")
    task_description: TaskDescription = ""


def create_agent_identity(db: sqlite3.Connection, args: CreateAgentIdentityInput) -> RegisteredAgent:
    """Always create a new agent identity (never reuse an existing one)."""
    project = find_project(db, args.project_key)
    refuse_archived(project)
    name = args.name_hint
    if name is None or reserved(name) or _exists(db, project, name):
        name = _unused_name(db, project)
    return registered(db, project, _insert_agent(db, project, name, args))


class WhoisInput(Input):
    project_key: ProjectKey
    agent_name: AgentName


class AgentProfile(Agent):
    messages_sent: int
    messages_received: int = Field(description="As to, cc or notice (bcc copies are not counted).")
    unread: int = Field(description="Of those, not read yet.")


def whois(db: sqlite3.Connection, args: WhoisInput) -> AgentProfile:
    """An agent's profile with its message counts."""
    project = find_project(db, args.project_key)
    row = find_agent(db, project, args.agent_name)
    sent, received, unread = agent_counts(db, row["id"])
    return AgentProfile(
        **describe_agent(project, row).model_dump(), messages_sent=sent, messages_received=received, unread=unread
    )


NAMES_LOOKED_UP = 500  # list_agents' names: a page's worth (PageLimit's most)


class ListAgentsInput(Input):
    project_key: ProjectKey
    include_retired: bool = False
    limit: PageLimit = 100
    cursor: PageCursor | None = Field(None, description=CURSOR_HELP)
    names: Annotated[list[AgentName], Field(min_length=1, max_length=NAMES_LOOKED_UP)] | None = Field(
        None, description="Only the agents of these names (any case) there are: several looked up in one call (whois"
        " is one at a time). A name of no agent, or of a retired one without include_retired, is left out.")


class Agents(Output):
    agents: list[Agent]
    next_cursor: str | None = Field(None, description=NEXT_HELP)


BY_NAME = Keyset((("name", "name COLLATE NOCASE"), ("id", "id")))


def list_agents(db: sqlite3.Connection, args: ListAgentsInput) -> Agents:
    """The active agents of a project by name, a page at a time; retired ones too with include_retired;
    with names, only those named."""
    project = find_project(db, args.project_key)
    where, params = BY_NAME.after(args.cursor)
    if not args.include_retired:
        where += " AND retired_ts IS NULL"
    # Named: each agent's row by its key (agent_id), not the project's list read for them.
    ids = list(dict.fromkeys(agent_id(project["id"], name) for name in args.names or ()))
    rows = db.execute(
        f"SELECT * FROM agents WHERE {f'id IN ({placeholders(ids)})' if ids else 'project_id = ?'}{where}"
        f"{BY_NAME.order_by()} LIMIT ?",
        (*(ids or [project["id"]]), *params, args.limit + 1),
    )
    page, cursor = BY_NAME.page(rows, args.limit)
    return Agents(agents=[describe_agent(project, row) for row in page], next_cursor=cursor)


class RetireAgentInput(Input):
    project_key: ProjectKey
    agent_name: AgentName


class RetiredAgent(Agent):
    released_file_reservations: int = Field(description="Active file reservations released on retirement.")
    more: bool = Field(False, description="A call releases at most 1,000 reservations (what an agent may hold): true"
                       " when the agent still holds some (they conflict with nobody); retire it again to release the next ones.")


def retire_agent(db: sqlite3.Connection, args: RetireAgentInput) -> RetiredAgent:
    """Retire an agent whose work is done: it gets no new mail and cannot send. Idempotent.

    Its active file reservations (1,000 a call: `more` says retire it again for the next ones; those
    it still holds conflict with nobody) and build slots are released. It stays readable (whois, its
    inbox, its threads) but leaves list_agents unless include_retired; unretire_agent brings it back.
    Its name is never reused."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    row, released, more = retire(db, project, agent["id"], clock.now())
    return RetiredAgent(**describe_agent(project, row).model_dump(), released_file_reservations=released, more=more)


def retire(db: sqlite3.Connection, project: sqlite3.Row, key: int, now: str,
           release_at_most: int | None = None) -> tuple[sqlite3.Row, int, bool]:
    """Retire the agent (coalesce: retiring again keeps the first time) and release its active
    file reservations (at most `release_at_most`, HELD_PER_AGENT unless given: the others conflict
    with nobody and expire) and build slots: (its row, how many reservations were released, whether
    it holds more). Also used by retention."""
    from .reservations import LIVE, release_some  # not at the top: reservations imports this module

    row = db.execute(
        "UPDATE agents SET retired_ts = coalesce(retired_ts, ?) WHERE id = ? RETURNING *", (now, key)
    ).fetchall()[0]
    outbox.record_agent(db, project, row)  # the profile says so: a restore keeps it retired
    released, more = release_some(db, project, f"agent_id = ? AND {LIVE}", [key, now], now, release_at_most)
    db.execute(  # a retired agent runs no build: its slots would block others until they expire
        "UPDATE build_slots SET released_ts = ? WHERE project_id = ? AND agent_id = ? AND released_ts IS NULL AND expires_ts > ?",
        (now, project["id"], key, now),
    )
    return row, len(released), more


def unretire_agent(db: sqlite3.Connection, args: RetireAgentInput) -> Agent:
    """Bring a retired agent back: it can send and receive again. Idempotent."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    # Active from now (idle retention would retire it again on its next run); an agent not retired is left as it is.
    row = db.execute(
        "UPDATE agents SET retired_ts = NULL, last_active_ts = CASE WHEN retired_ts IS NULL THEN last_active_ts ELSE ? END"
        " WHERE id = ? RETURNING *", (clock.now(), agent["id"]),
    ).fetchall()[0]
    outbox.record_agent(db, project, row)
    return describe_agent(project, row)


TOOLS = [
    tool(register_agent, acts_as="agent_name", may_create=True),
    tool(create_agent_identity, fresh=True),  # a name another replica just took must look taken
    tool(whois, read_only=True),
    tool(list_agents, read_only=True),
    tool(retire_agent, acts_as="agent_name", destructive=True, repeat_safe=True),
    tool(unretire_agent, acts_as="agent_name", repeat_safe=True),
]
