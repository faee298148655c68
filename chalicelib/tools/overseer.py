"""Overseers: the people who run the agents, reading all the mail and stepping in.

A person writes as a human sender: an agents row of kind 'human' in the project (created on
first use), so agents read the message with fetch_inbox like any other and can answer it with
reply_message, but no agent can register under or send as that name. The unified inbox lists
the newest mail across projects, the view the web UI (chalicelib/web/) opens on.
"""

import sqlite3
from typing import Annotated, Literal

import orjson
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from .. import clock
from ..archive import outbox
from ..errors import Conflict, NotFound
from ..fields import AgentName, MessageId, ProjectKey, empty_list, given, with_bcc
from ..names import DEFAULT_CONTACT_POLICY, OVERSEER_NAMES, OVERSEER_PROFILE
from ..registry import Input, Output, tool
from ..security.scopes import in_scope
from ..store.db import placeholders
from .agents import Agent, agent_id, describe_agent, find_agent
from .counts import count_agent
from .messages import (
    Body, Importance, Recipients, SenderKind, SentMessage, Subject, ThreadId, deliver, find_message, recipients_and_marks,
)
from .products import ProductKey, find_product, linked_projects
from .projects import find_project, refuse_archived

OVERSEER, OVERSEER_ELSEWHERE = OVERSEER_NAMES
OVERSEER_POLICY = DEFAULT_CONTACT_POLICY["human"]  # any agent may write to the person, or answer it


class SendOverseerMessageInput(Input):
    project_key: ProjectKey
    to: Annotated[Recipients, Field(min_length=1)]
    subject: Subject | None = Field(None, description="Required unless reply_to is given (then 'Re: <original>').")
    body_md: Body
    cc: Recipients = empty_list()
    importance: Importance = "normal"
    ack_required: bool = False
    thread_id: ThreadId | None = Field(None, description="Join an existing thread; omit to start a new one.")
    reply_to: MessageId | None = Field(None, description="Answer this message: its thread, and its subject with 'Re:'.")
    overseer_name: AgentName = Field(OVERSEER, description="The name the person signs with (never an agent's).")
    model_config = ConfigDict(json_schema_extra={"anyOf": [given("subject"), given("reply_to")]})

    @model_validator(mode="after")
    def _subject_or_reply_to(self):
        if self.subject is None and self.reply_to is None:
            raise ValueError("a subject is required (or reply_to, to answer a message)")
        return self


def writes_as(name: str, agent_has_it: bool) -> str:
    """The name a person asking for `name` writes under, `agent_has_it` telling whether an agent has
    that name: OVERSEER_ELSEWHERE instead of the default where an agent has it (one registered
    before it was reserved), so that the person is never refused there."""
    return OVERSEER_ELSEWHERE if agent_has_it and name.lower() == OVERSEER.lower() else name


def overseer(db: sqlite3.Connection, project: sqlite3.Row, name: str) -> sqlite3.Row:
    """The project's human sender called `name` (or what writes_as makes of it), created on
    first use (not in an archived project). Conflict if an agent has that name."""
    row = _agent_row(db, project, name)
    if (moved := writes_as(name, row is not None and row["kind"] != "human")) != name:
        name, row = moved, _agent_row(db, project, moved)
    key = agent_id(project["id"], name)
    if row is None:
        refuse_archived(project)  # an archived project takes no new agent, human or not
        now, profile = clock.now(), OVERSEER_PROFILE
        db.execute(
            "INSERT INTO agents (id, project_id, name, program, model, task_description, inception_ts, last_active_ts,"
            " contact_policy, kind) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'human')",
            (key, project["id"], name, profile["program"], profile["model"], profile["task_description"], now, now,
             OVERSEER_POLICY),
        )
        count_agent(db, project["id"])
        row = find_agent(db, project, name)
        outbox.record_agent(db, project, row)
        return row
    if row["kind"] != "human":
        raise Conflict(
            f"{row['name']} is an agent of project {project['slug']!r}: a person cannot write under its name.",
            "Choose another overseer_name.",
        )
    return find_agent(db, project, name)


def _agent_row(db: sqlite3.Connection, project: sqlite3.Row, name: str) -> sqlite3.Row | None:
    return db.execute("SELECT * FROM agents WHERE id = ?", (agent_id(project["id"], name),)).fetchone()


class EnsureOverseerInput(Input):
    project_key: ProjectKey
    overseer_name: AgentName = OVERSEER


def ensure_overseer(db: sqlite3.Connection, args: EnsureOverseerInput) -> Agent:
    """Create the project's human sender for a person (or return it): the name they write under,
    and force-release under in the web UI. Conflict if an agent has that name."""
    project = find_project(db, args.project_key)
    return describe_agent(project, overseer(db, project, args.overseer_name))


def send_overseer_message(db: sqlite3.Connection, args: SendOverseerMessageInput) -> SentMessage:
    """Write to agents as a person overseeing them (a human sender, never an agent).

    The message reaches the recipients like any other (fetch_inbox), whatever their contact
    policy; they can answer it with reply_message. With reply_to, it joins that message's thread."""
    project = find_project(db, args.project_key)
    sender = overseer(db, project, args.overseer_name)
    thread_id, subject = args.thread_id, args.subject
    if args.reply_to is not None:
        try:
            original = find_message(db, project, args.reply_to)  # any of the project's messages: the person oversees them
        except NotFound:  # or one another project's agent sent the person, as reply_message answers an agent's
            original = find_message(db, project, args.reply_to, viewer_id=sender["id"])
        thread_id = original["thread_id"]
        subject = subject or (original["subject"] if original["subject"].lower().startswith("re:") else f"Re: {original['subject']}"[:512])
    message = deliver(
        db, project, sender, to=args.to, cc=args.cc, bcc=[], subject=subject, body_md=args.body_md,
        importance=args.importance, ack_required=args.ack_required, thread_id=thread_id, overseer=True,
    )
    return SentMessage(message=message, recipients=len(message.to) + len(message.cc))


class UnifiedInboxInput(Input):
    project_key: ProjectKey | None = Field(None, description="Only this project's messages.")
    product_key: ProductKey | None = Field(
        None, description="Only the messages of this product's linked projects (with project_key: that project's, if linked).")
    thread_id: ThreadId | None = Field(None, description="Only this thread (in each project read: a thread id is a project's).")
    before_id: MessageId | None = Field(None, description="Paging: only messages older than this id.")
    view: Literal["urgent", "ack_pending", "to_overseer"] | None = Field(
        None, description="Only what needs attention: urgent (importance high or urgent), ack_pending (some recipient has"
        " not acknowledged it yet), to_overseer (sent to a person: a human agent such as Overseer). With thread_id: the"
        " thread's.")
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    include_newest_read: bool = Field(True, description="False: newest_read_ts is not looked up (null), for a view"
                                      " that shows no unread marks (one index look-up fewer).")
    include_newest_ack: bool = Field(True, description="False: newest_ack_ts is not looked up (null), for a caller"
                                     " that wants the messages only (one index look-up fewer).")
    include_bcc: bool = with_bcc("Also list each message's bcc recipients (bcc), count them in unread and ack_pending, and"
                                 " take their open acks into view ack_pending")
    # Not an argument: set by security/scopes.py for a scoped credential, which reads its own
    # projects of a product only (those get_product shows it).
    _scope: frozenset[str] | None = PrivateAttr(None)


class InboxEntry(Output):
    id: MessageId
    project: str
    thread_id: str
    subject: str
    excerpt: str = Field(description="The body's first 160 characters.")
    sender: str
    sender_kind: SenderKind
    to: list[str]
    cc: list[str]
    bcc: list[str] = empty_list("With include_bcc; else empty.")
    importance: Importance
    ack_required: bool
    created_ts: str
    unread: int = Field(description="Recipients (to and cc; bcc too with include_bcc) who have not read it yet.")
    ack_pending: int = Field(description="Recipients (to and cc; bcc too with include_bcc) who have not acknowledged it"
                             " (when it asks for acks).")
    attachment_count: int = Field(0, description="How many files it carries (get_message lists them).")


class UnifiedInbox(Output):
    messages: list[InboxEntry]
    next_before_id: MessageId | None = Field(description="Pass as before_id for the next (older) page.")
    newest_ack_ts: str | None = Field(None, description="When the newest acknowledgement of its projects' messages was given"
                                      " (all, or project_key's or product_key's, by any agent; not narrowed by thread_id or"
                                      " view): it changes when"
                                      " any message's ack_pending drops, so a view polling it sees acks without new mail."
                                      " Null with include_newest_ack false.")
    newest_read_ts: str | None = Field(None, description="When the newest first read in its projects was made (as"
                                       " newest_ack_ts): it changes when any message's unread drops, so a view polling it"
                                       " sees reads without new mail. Null with include_newest_read false.")


def unified_inbox(db: sqlite3.Connection, args: UnifiedInboxInput) -> UnifiedInbox:
    """The newest messages across all projects (or of one project or thread, or of a product's
    linked projects), newest first, with read and acknowledgement counts: what the people
    overseeing the agents read. bcc stays hidden (in the lists, the counts and the views) unless
    the overseer asks for it (include_bcc)."""
    project = find_project(db, args.project_key) if args.project_key is not None else None
    projects = None if project is None else [project["id"]]  # None: all of them
    if args.product_key is not None:  # its linked projects (with project_key: that one, if linked)
        linked = [linked["id"] for linked in linked_projects(db, find_product(db, args.product_key)) if in_scope(linked, args._scope)]
        projects = linked if projects is None else [id_ for id_ in projects if id_ in linked]
    # The page's ids first, each through an index: a thread's, a view's, each project's of a product.
    if args.thread_id is not None:
        scope = projects if projects is not None else [id_ for (id_,) in db.execute(  # those with the thread (0044)
            "SELECT DISTINCT project_id FROM thread_summaries WHERE thread_id = ? AND viewer_id = 0", (args.thread_id,))]
        ids = _thread_ids(db, scope, args.thread_id, args.view, args.before_id, args.limit, args.include_bcc)
    elif args.product_key is not None:
        ids = _product_ids(db, projects, args.view, args.before_id, args.limit, args.include_bcc)
    elif args.view is not None:
        ids = _view_ids(db, args.view, None if project is None else project["id"], args.before_id, args.limit,
                        with_bcc=args.include_bcc)
    else:
        ids = None
    if ids is not None:
        where, params = [f"m.id IN ({placeholders(ids)})" if ids else "0"], ids
    else:  # every message (of the project), newest first
        where, params = (["m.project_id = ?"], [project["id"]]) if project is not None else ([], [])
        if args.before_id is not None:
            where.append("m.id < ?")
            params.append(args.before_id)
    rows = db.execute(
        "SELECT m.id, p.slug, m.thread_id, m.subject, substr(m.body_md, 1, 160) AS excerpt, s.name, s.kind,"
        " m.importance, m.ack_required, m.created_ts, m.attachments"
        " FROM messages m JOIN agents s ON s.id = m.sender_id JOIN projects p ON p.id = m.project_id"
        + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY m.id DESC LIMIT ?",
        [*params, args.limit],
    ).fetchall()
    ids = [row[0] for row in rows]
    # bcc: everyone's, or nobody's (in the lists and the counts)
    recipients, counts = recipients_and_marks(db, ids, None if args.include_bcc else ())
    entries = []
    for mid, slug, thread_id, subject, excerpt, sender, kind, importance, ack_required, created_ts, attached in rows:
        unread, unacked = counts.get(mid, (0, 0))
        entries.append(InboxEntry(
            id=mid, project=slug, thread_id=thread_id, subject=subject, excerpt=excerpt, sender=sender,
            sender_kind=kind, to=recipients[mid]["to"], cc=recipients[mid]["cc"], bcc=recipients[mid]["bcc"], importance=importance,
            ack_required=bool(ack_required), created_ts=created_ts, unread=unread,
            ack_pending=unacked if ack_required else 0, attachment_count=len(orjson.loads(attached)) if attached else 0,
        ))
    full = len(rows) == args.limit
    return UnifiedInbox(messages=entries, next_before_id=ids[-1] if full else None,
                        newest_ack_ts=_newest(db, "ack_ts", projects) if args.include_newest_ack else None,
                        newest_read_ts=_newest(db, "read_ts", projects) if args.include_newest_read else None)


def _newest(db: sqlite3.Connection, mark: Literal["ack_ts", "read_ts"], projects: list[int] | None) -> str | None:
    """The time of the newest acknowledgement (ack_ts) or first read (read_ts) of every project's
    messages (None) or of these projects' (by any agent, of any project): one look-up in an index
    of the rows so marked, of all or one per project (migrations/0036_acks_given.sql,
    0037_reads_made.sql, 0048)."""
    if projects is None:
        return db.execute(f"SELECT max({mark}) FROM message_recipients WHERE {mark} IS NOT NULL").fetchone()[0]
    if not projects:
        return None
    return db.execute(
        f"SELECT max((SELECT max(r.{mark}) FROM message_recipients r WHERE r.message_project_id = p.id AND r.{mark} IS NOT NULL))"
        f" FROM projects p WHERE p.id IN ({placeholders(projects)})", projects).fetchone()[0]


def _product_ids(db: sqlite3.Connection, projects: list[int], view: str | None, before_id: int | None, limit: int,
                 with_bcc: bool = False) -> list[int]:
    """The ids of the newest `limit` messages (of the view) of these projects (a product's): each
    project's newest through its index, merged (ids are time-ordered across projects), so a page
    costs at most `limit` rows a project however much other mail there is."""
    before = before_id or 2**63 - 1

    def newest_of(project_id: int, above: int) -> list[int]:
        if view is not None:
            return _view_ids(db, view, project_id, before, limit, above, with_bcc)
        return [id_ for (id_,) in db.execute(
            "SELECT id FROM messages WHERE project_id = ? AND id < ? AND id > ? ORDER BY id DESC LIMIT ?",
            (project_id, before, above, limit))]

    return _newest_merged(projects, newest_of, limit)


NOT_BCC = " AND kind != 'bcc'"  # a recipient's row the views show: a bcc one only to the overseer who asks (include_bcc)
# Each view as a test of one message `m`, for a thread's few messages (its index reads them in order);
# {bcc}: NOT_BCC, or nothing for the overseer who asks. (To the Overseer leaves bcc out always: its
# partial indexes hold to and cc rows only, migrations/0048.)
VIEW_TESTS = {
    "urgent": "m.importance IN ('high', 'urgent')",
    "ack_pending": "EXISTS (SELECT 1 FROM message_recipients r WHERE r.message_id = m.id AND r.ack_required = 1 AND r.ack_ts IS NULL{bcc})",
    "to_overseer": "EXISTS (SELECT 1 FROM message_recipients r WHERE r.message_id = m.id AND r.human = 1" + NOT_BCC + ")",
}


def _thread_ids(db: sqlite3.Connection, projects: list[int], thread_id: str, view: str | None, before_id: int | None,
                limit: int, with_bcc: bool = False) -> list[int]:
    """The ids of the newest `limit` messages (of the view) of the thread in these projects (thread
    ids are a project's: one may name threads in several): each project's through messages_by_thread,
    merged. A view's test reads the thread's messages newest first until `limit` pass it."""
    bcc = "" if with_bcc else NOT_BCC
    before, test = before_id or 2**63 - 1, f" AND {VIEW_TESTS[view].format(bcc=bcc)}" if view else ""

    def newest_of(project_id: int, above: int) -> list[int]:
        return [id_ for (id_,) in db.execute(
            f"SELECT m.id FROM messages m WHERE m.project_id = ? AND m.thread_id = ? AND m.id < ? AND m.id > ?{test}"
            " ORDER BY m.id DESC LIMIT ?", (project_id, thread_id, before, above, limit))]

    return _newest_merged(projects, newest_of, limit)


def _view_ids(db: sqlite3.Connection, view: str, project_id: int | None, before_id: int | None, limit: int,
              above: int = -(2**63), with_bcc: bool = False) -> list[int]:
    """The ids of a view's newest `limit` messages between `above` and before_id, of every project
    or one (the message's, whoever its recipients), each walked through a partial index of only
    such rows (migrations/0032_unified_inbox_views.sql, 0048)."""
    before = before_id or 2**63 - 1
    if view == "urgent":
        in_project, project = ("project_id = ? AND ", [project_id]) if project_id is not None else ("", [])
        return [id_ for (id_,) in db.execute(
            f"SELECT id FROM messages WHERE {in_project}importance IN ('high', 'urgent') AND id < ? AND id > ?"
            " ORDER BY id DESC LIMIT ?", [*project, before, above, limit])]
    # A recipient's row, not a bcc (a view must not show one was made, as VIEW_TESTS) unless the
    # overseer asks: waiting for its ack, or a person's.
    test = f"ack_required = 1 AND ack_ts IS NULL{'' if with_bcc else NOT_BCC}" if view == "ack_pending" else f"human = 1{NOT_BCC}"
    in_project, project = ("message_project_id = ? AND ", [project_id]) if project_id is not None else ("", [])
    return [id_ for (id_,) in db.execute(
        f"SELECT DISTINCT message_id FROM message_recipients WHERE {in_project}{test}"
        " AND message_id < ? AND message_id > ? ORDER BY message_id DESC LIMIT ?", (*project, before, above, limit))]


def _newest_merged(groups, newest_of, limit: int, above: int = -(2**63)) -> list[int]:
    """The newest `limit` ids of all the groups' (a project's, an agent's), without repeats:
    `newest_of(group, above)` gives a group's newest `limit` above an id. Once `limit` are found,
    the next groups read only ids newer than the oldest of them: a few each, not `limit`."""
    newest: set[int] = set()
    for group in groups:
        newest.update(newest_of(group, above))
        if len(newest) >= limit:
            newest = set(sorted(newest, reverse=True)[:limit])
            above = min(newest)
    return sorted(newest, reverse=True)[:limit]


TOOLS = [
    tool(ensure_overseer, repeat_safe=True),
    tool(send_overseer_message, idempotent=True),  # (the web UI's forms carry a key: a double click sends once)
    tool(unified_inbox, read_only=True, off_loop=True),  # to and cc of each: 200 messages to 100-300 agents ~50 ms
]
