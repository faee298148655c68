"""Macros: one call for what an agent otherwise does in three or four.

Each macro runs the same handlers as the single tools, in one transaction: it happens
entirely or not at all (macro_prepare_thread reads before its write, which only registers). A macro resolves its project once and hands the single tools its
human key, which names the project by id (a hash), never by a slug looked up again.
"""

import sqlite3
from typing import Annotated

from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from .. import clock
from ..archive import outbox
from ..errors import Conflict, Forbidden, NotFound
from ..fields import AgentAddress, AgentName, NewAgentName, ProjectKey, acting_agent, given
from ..security.agent_tokens import holds_token
from .agents import find_agent, find_agent_by_id
from ..registry import Input, Output, tool
from ..store.db import transaction
from ..store.upkeep import savepoint
from .agents import KEEP_TASK, agent_id, Agent, Model, Program, RegisterAgentInput, RegisteredAgent, TaskDescription, register_agent
from .contacts import Contact, Reason, RequestContactInput, RespondContactInput, request_contact, respond_contact
from .messages import Body, FetchInboxInput, ThreadId, InboxMessage, SendMessageInput, SentMessage, Subject, fetch_inbox, send_message
from .projects import EnsureProjectInput, HumanKey, Project, ensure_project, find_project, settle_slug
from .reservations import (
    FileReservationPathsInput,
    Paths,
    Released,
    ReservationReason,
    Reserved,
    TtlSeconds,
    file_reservation_paths,
    reservations_by_id,
)
from . import thread_summaries
from .threads import SummarizeThreadInput, ThreadSummary, summarize_thread

InboxLimit = Annotated[int, Field(ge=0, le=100, description="How many inbox messages to return (0: none).")]


def _inbox(db: sqlite3.Connection, project_key: str, agent: str, limit: int, bodies: bool) -> list[InboxMessage]:
    if not limit:
        return []
    args = FetchInboxInput(project_key=project_key, agent_name=agent, limit=limit, include_bodies=bodies)
    return fetch_inbox(db, args).messages


def _register(db: sqlite3.Connection, project_key: str, args) -> Agent:
    return register_agent(
        db,
        RegisterAgentInput(
            project_key=project_key,
            program=args.program,
            model=args.model,
            agent_name=args.agent_name,
            task_description=args.task_description,
        ),
    )


class MacroStartSessionInput(Input):
    human_key: HumanKey
    program: Program
    model: Model
    agent_name: NewAgentName | None = Field(None, description=(
        "Your name, if you have one; omit to get a new one. A name no agent has creates that agent (the note names"
        " close existing ones)."))
    task_description: TaskDescription | None = Field(None, description=KEEP_TASK)
    file_reservation_paths: Paths | None = Field(None, description="Files or globs to reserve (exclusive) right away.")
    file_reservation_reason: ReservationReason = ""
    file_reservation_ttl_seconds: TtlSeconds = 3600
    inbox_limit: InboxLimit = 10


class SessionStarted(Output):
    project: Project
    agent: RegisteredAgent
    file_reservations: Reserved | None
    inbox: list[InboxMessage]
    note: str | None = Field(None, description="Set when this call created the project inside another project's directory,"
                             " or an agent under a name close to existing ones, or when the agent is retired (agent.note).")


def macro_start_session(db: sqlite3.Connection, args: MacroStartSessionInput) -> SessionStarted:
    """Start a session in one call: ensure the project, register yourself (or refresh your
    profile), optionally reserve files, and read your inbox. Keep the agent name it returns."""
    project = ensure_project(db, EnsureProjectInput(human_key=args.human_key))
    agent = _register(db, project.human_key, args)
    reserved = None
    if args.file_reservation_paths:
        reserved = file_reservation_paths(
            db,
            FileReservationPathsInput(
                project_key=project.human_key,
                agent_name=agent.name,
                paths=args.file_reservation_paths,
                ttl_seconds=args.file_reservation_ttl_seconds,
                reason=args.file_reservation_reason,
            ),
        )
    inbox = _inbox(db, project.human_key, agent.name, args.inbox_limit, bodies=False)
    note = " ".join(filter(None, (project.note, agent.note))) or None
    return SessionStarted(project=project, agent=agent, file_reservations=reserved, inbox=inbox, note=note)


def settle_session(db: sqlite3.Connection, args: MacroStartSessionInput, started: SessionStarted) -> SessionStarted:
    """As ensure_project's settle step: if the project had to leave a slug another replica gave
    meanwhile, the answer and the archive work this call queued follow it to its new slug."""
    key = started.project._id
    moved = settle_slug(db, key, started.project._created)
    if not moved:
        return started
    entities = [agent_id(key, started.agent.name)]
    entities += [int(r.id) for r in started.file_reservations.granted] if started.file_reservations else []
    with transaction(db, write=True):
        outbox.move_pending(db, started.project.slug, moved, entities)
    return started.model_copy(update={
        "project": started.project.model_copy(update={"slug": moved}),
        "agent": started.agent.model_copy(update={"project": moved}),
    })


# What macro_prepare_thread reads: the thread's summary (None: the agent has no mail in it), the
# agent's inbox, and the note saying so.
Read = tuple[ThreadSummary | None, list[InboxMessage], list[str]]


class MacroPrepareThreadInput(Input):
    project_key: ProjectKey
    thread_id: ThreadId  # as summarize_thread takes it (its refusals were this macro's 500s)
    program: Program
    model: Model
    agent_name: NewAgentName | None = Field(
        None, description="Your name: pass it to act as yourself. Omitted, a NEW agent with a fresh name is created;"
        " a name no agent has creates that agent (the note names close existing ones)."
    )
    task_description: TaskDescription | None = Field(None, description=KEEP_TASK)
    inbox_limit: InboxLimit = 10
    include_inbox_bodies: bool = False
    _read: Read | None = PrivateAttr(None)  # read_ahead's: the write only adds it to the answer


class ThreadPrepared(Output):
    agent: RegisteredAgent
    thread: ThreadSummary | None = Field(description="Your view of the thread; null when you have no mail in it yet (see note).")
    inbox: list[InboxMessage]
    note: str | None = Field(None, description="Set when no agent_name was given (a new agent was created), or one close to"
                             " existing names created that agent or the agent is retired (agent.note), when you have no mail in the thread yet,"
                             " or when your inbox has more than its bodies let in.")


def read_ahead(args: MacroPrepareThreadInput):
    """Tool.prepare of macro_prepare_thread: its reads (a summary digests up to 500 bodies, seconds
    for long ones), done before the write, which only registers the agent: other writes waited."""
    return lambda db: setattr(args, "_read", thread_and_inbox(db, args))


def thread_and_inbox(db: sqlite3.Connection, args: MacroPrepareThreadInput) -> Read:
    """The thread as args.agent_name sees it (the whole of it without a name) and its inbox: an
    agent not registered yet (a new name) has no mail in it, and an empty inbox."""
    project = find_project(db, args.project_key)
    summarized = SummarizeThreadInput(project_key=project["human_key"], thread_id=args.thread_id, agent_name=args.agent_name)
    notes = []
    try:
        thread = summarize_thread(db, summarized)
    except NotFound:
        if args.agent_name is None:
            raise  # no such thread in the project: nobody is registered
        if thread_summaries.header(db, project, args.thread_id, None) is None:  # not the new agent's NotFound: the thread's
            summarize_thread(db, summarized.model_copy(update={"agent_name": None}))
            raise
        # The agent's view of a thread it has no mail in (a newcomer): nothing to summarise, but
        # joining must not fail (it failed, and the hint sent it to list_threads, which lists it).
        thread = None
        notes.append(
            f"{args.agent_name} has no messages in thread {args.thread_id!r}, so there is nothing of it to summarise"
            " for you: ask a participant to cc you, or write in it"
            f" (send_message with thread_id={args.thread_id!r})."
        )
    known = args.agent_name is not None and find_agent_by_id(db, agent_id(project["id"], args.agent_name)) is not None
    if not known or not args.inbox_limit:
        return thread, [], notes
    inbox = fetch_inbox(db, FetchInboxInput(project_key=project["human_key"], agent_name=args.agent_name,
                                            limit=args.inbox_limit, include_bodies=args.include_inbox_bodies))
    if inbox.next_cursor and len(inbox.messages) < args.inbox_limit:  # bodies filled the answer (~4 MiB)
        notes.append(f"Your inbox holds more than the {len(inbox.messages)} messages whose bodies fit here: fetch_inbox"
                     f" with cursor={inbox.next_cursor!r} gives the next ones.")
    return thread, inbox.messages, notes


def macro_prepare_thread(db: sqlite3.Connection, args: MacroPrepareThreadInput) -> ThreadPrepared:
    """Join a thread in one call: register yourself (pass your agent_name; without it a new
    agent is created), get the thread's summary (participants, key points, action items,
    open acks) and your inbox.

    Given agent_name, the summary is that agent's view (the messages it sent or received),
    as summarize_thread with agent_name; with agent tokens on that is required."""
    project = find_project(db, args.project_key)
    # Read before the write (invoke runs read_ahead first). Called directly (not by invoke, so in no
    # batch of writes whose upkeep is pending): read now, before registering.
    thread, inbox, notes = args._read or thread_and_inbox(db, args)
    notes = list(notes)  # a write may run again (a replica's retry): the read stays as it was
    agent = _register(db, project["human_key"], args)
    if args.agent_name is None:  # an agent that meant to act as itself must hear it did not
        notes.append(
            f"No agent_name was given, so this created a new agent, {agent.name}, with an empty inbox."
            " To act as yourself, call again with agent_name=<your name>; otherwise keep this name (and its"
            " registration_token)."
        )
    notes += [agent.note] if agent.note else []
    return ThreadPrepared(agent=agent, thread=thread, inbox=inbox, note=" ".join(notes) or None)


class MacroFileReservationCycleInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    paths: Paths
    ttl_seconds: TtlSeconds = 3600
    exclusive: bool = True
    reason: ReservationReason = ""
    auto_release: bool = Field(False, description="Release the reservations again at once (a conflict check).")


class ReservationCycle(Output):
    file_reservations: Reserved
    released: Released | None


def macro_file_reservation_cycle(db: sqlite3.Connection, args: MacroFileReservationCycleInput) -> ReservationCycle:
    """Reserve files and see the conflicts; with auto_release, a conflict check: nothing it
    reserves stays reserved, and a reservation you held already stays as it was (ttl, flag, reason)."""
    project_key = find_project(db, args.project_key)["human_key"]
    reserve = FileReservationPathsInput(**(args.model_dump(exclude={"auto_release"}) | {"project_key": project_key}))
    if not args.auto_release:
        return ReservationCycle(file_reservations=file_reservation_paths(db, reserve), released=None)
    # Reserved, then undone: releasing renewed (and then ended) the leases the agent held before.
    try:
        with savepoint(db, "reservation_check"):
            raise _Undone(file_reservation_paths(db, reserve))
    except _Undone as undone:
        reserved = undone.reserved
    now = clock.now()
    held = {row.id: row for row in reservations_by_id(db, [row.id for row in reserved.granted])
            if row.released_ts is None and row.expires_ts > now}
    granted = [held.get(row.id) or row.model_copy(update={"released_ts": now}) for row in reserved.granted]
    released = Released(released=len(granted) - len(held), released_ts=now)
    return ReservationCycle(file_reservations=reserved.model_copy(update={"granted": granted}), released=released)


class _Undone(Exception):
    """Rolls back the savepoint it leaves, with what the write in it answered."""

    def __init__(self, reserved: Reserved) -> None:
        self.reserved = reserved


class MacroContactHandshakeInput(Input):
    project_key: ProjectKey
    agent_name: AgentName = acting_agent("requester", description="You: the agent asking.")
    target: AgentAddress
    reason: Reason = ""  # request_contact's
    auto_accept: bool = Field(
        False, description="Accept on the target's behalf (agents of one owner): needs target_token, the target's own token."
    )
    target_token: Annotated[str, Field(max_length=256)] | None = Field(
        None, description="The target's registration_token, required by auto_accept: only the target may accept."
    )
    welcome_subject: Subject | None = None
    welcome_body: Body | None = None
    # One without the other was taken, and no welcome sent, with nothing said. Both given (not null)
    # or neither: a null counts as not given, here as in the schema (dependentRequired counted a null
    # as given: {"welcome_body": "", "welcome_subject": null} passed the schema and got a 422).
    model_config = ConfigDict(json_schema_extra={"anyOf": [
        {"allOf": [given("welcome_subject"), given("welcome_body")]},
        {"not": {"anyOf": [given("welcome_subject"), given("welcome_body")]}},
    ]})

    @model_validator(mode="after")
    def _whole_welcome(self):
        if (self.welcome_subject is None) != (self.welcome_body is None):
            raise ValueError("welcome_subject and welcome_body go together: give both for a welcome, or neither")
        return self


class Handshake(Output):
    request: Contact
    response: Contact | None
    welcome: SentMessage | None
    note: str | None = Field(None, description="Why the welcome was not sent, and what to do.")


def macro_contact_handshake(db: sqlite3.Connection, args: MacroContactHandshakeInput) -> Handshake:
    """Ask for contact, optionally accept on the target's behalf, and optionally send a
    welcome message once allowed.

    Only the target may accept: auto_accept needs target_token, the target's registration_token
    (403 without it, and nothing is requested)."""
    project = find_project(db, args.project_key)
    project_key = project["human_key"]
    if args.auto_accept:
        target = find_agent(db, project, args.target)
        if not holds_token(db, target["id"], args.target_token):
            raise Forbidden(
                f"auto_accept accepts on {args.target}'s behalf: only {args.target} may do that.",
                "Pass target_token (the target's registration_token), or leave auto_accept out and let the target"
                " answer with respond_contact.",
            )
    request = request_contact(
        db,
        RequestContactInput(
            project_key=project_key, agent_name=args.agent_name, to_agent=args.target, reason=args.reason
        ),
    )
    response = None
    if args.auto_accept and request.status != "approved":  # approved already if the target had asked too
        # The target answers in its own project: a Name@project target is addressed there.
        target_name, _, target_project = args.target.partition("@")
        response = respond_contact(
            db,
            RespondContactInput(
                project_key=target_project or project_key,
                agent_name=target_name,
                from_agent=args.agent_name if not target_project else f"{args.agent_name}@{project_key}",
                accept=True,
            ),
        )
    welcome, note = None, None
    if args.welcome_subject and args.welcome_body is not None:
        # The request stands even when the target does not admit the welcome yet (pending).
        try:
            with savepoint(db, "welcome"):
                welcome = send_message(
                    db,
                    SendMessageInput(
                        project_key=project_key,
                        agent_name=args.agent_name,
                        to=[args.target],
                        subject=args.welcome_subject,
                        body_md=args.welcome_body,
                    ),
                )
        except Conflict as refused:
            note = (
                f"The contact request was kept ({request.status}); the welcome was not sent: {refused.message}"
                f" Send it with send_message once {args.target} accepts. {refused.hint}"
            )
    return Handshake(request=request, response=response, welcome=welcome, note=note)


TOOLS = [
    tool(macro_start_session, acts_as="agent_name", may_create=True, settle=settle_session),
    tool(macro_prepare_thread, acts_as="agent_name", may_create=True, prepare=read_ahead),
    tool(macro_file_reservation_cycle, acts_as="agent_name"),
    tool(macro_contact_handshake, acts_as="agent_name"),
]
