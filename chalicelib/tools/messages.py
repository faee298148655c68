"""Messages: send, reply, inbox and outbox, read and acknowledge."""

import sqlite3
from typing import Annotated, Literal

from pydantic import Field

from .. import clock
from ..db import dicts
from ..errors import NotFound
from ..fields import AgentName, MessageId, ProjectKey, Timestamp
from ..ids import new_id
from ..registry import Input, Output, tool
from .agents import find_agent, find_agents
from .projects import find_project

Importance = Literal["low", "normal", "high", "urgent"]
Subject = Annotated[str, Field(min_length=1, max_length=512)]
Body = Annotated[str, Field(max_length=262_144, description="GitHub-flavoured Markdown.")]
Recipients = Annotated[list[AgentName], Field(max_length=100)]
ThreadId = Annotated[str, Field(min_length=1, max_length=128, description="Thread key; any string, e.g. FEAT-123.")]
Limit = Annotated[int, Field(ge=1, le=500)]


class Message(Output):
    id: MessageId
    project: str
    thread_id: str
    subject: str
    body_md: str | None
    sender: str
    to: list[str]
    cc: list[str]
    bcc: list[str] = Field(description="Visible to the sender only.")
    importance: Importance
    ack_required: bool
    created_ts: str


def recipients_of(db: sqlite3.Connection, message_ids: list[int]) -> dict[int, dict[str, list[str]]]:
    """{message_id: {"to": [...], "cc": [...], "bcc": [...]}} in one query."""
    found: dict[int, dict[str, list[str]]] = {mid: {"to": [], "cc": [], "bcc": []} for mid in message_ids}
    if message_ids:
        marks = ",".join("?" * len(message_ids))
        rows = db.execute(
            f"SELECT r.message_id, r.kind, a.name FROM message_recipients r JOIN agents a ON a.id = r.agent_id"
            f" WHERE r.message_id IN ({marks}) ORDER BY a.name COLLATE NOCASE",
            message_ids,
        )
        for message_id, kind, name in rows:
            found[message_id][kind].append(name)
    return found


MESSAGE_COLUMNS = (
    "m.id, m.thread_id, m.subject, m.body_md, m.importance, m.ack_required, m.created_ts, m.sender_id, s.name AS sender"
)


def messages_from_rows(db, project: sqlite3.Row, rows, viewer_id: int | None = None, bodies=True) -> list[Message]:
    """Rows selected with MESSAGE_COLUMNS → Messages."""
    recipients = recipients_of(db, [row["id"] for row in rows])
    messages = []
    for row in rows:
        lists = recipients[row["id"]]
        if row["sender_id"] != viewer_id:
            lists["bcc"] = []  # bcc recipients are invisible to everyone but the sender
        messages.append(
            Message(
                id=row["id"],
                project=project["slug"],
                thread_id=row["thread_id"],
                subject=row["subject"],
                body_md=row["body_md"] if bodies else None,
                sender=row["sender"],
                importance=row["importance"],
                ack_required=bool(row["ack_required"]),
                created_ts=row["created_ts"],
                **lists,
            )
        )
    return messages


def find_message(db: sqlite3.Connection, project: sqlite3.Row, message_id: int) -> sqlite3.Row:
    row = db.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN agents s ON s.id = m.sender_id WHERE m.id = ? AND m.project_id = ?",
        (message_id, project["id"]),
    ).fetchone()
    if row is None:
        raise NotFound(
            f"Message {message_id} not found in project {project['slug']!r}.",
            "Take message ids from fetch_inbox, fetch_outbox or search_messages.",
        )
    return row


def deliver(db, project, sender, *, to, cc, bcc, subject, body_md, importance, ack_required, thread_id) -> Message:
    """Store one message and all its recipient rows (in the caller's transaction: all or nothing)."""
    kinds: dict[str, tuple[str, str]] = {}  # lower(name) -> (kind, name); to beats cc beats bcc
    for kind, names in (("to", to), ("cc", cc), ("bcc", bcc)):
        for name in names:
            kinds.setdefault(name.lower(), (kind, name))
    agents = find_agents(db, project, [name for _, name in kinds.values()])
    message_id, now = new_id(), clock.now()
    db.execute(
        "INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, ack_required, created_ts)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (message_id, project["id"], sender["id"], thread_id or str(message_id), subject, body_md, importance, ack_required, now),
    )
    db.executemany(
        "INSERT INTO message_recipients (message_id, agent_id, kind) VALUES (?, ?, ?)",
        [(message_id, agent["id"], kind) for agent, (kind, _) in zip(agents, kinds.values())],
    )
    db.execute("UPDATE agents SET last_active_ts = ? WHERE id = ?", (now, sender["id"]))
    lists: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
    for agent, (kind, _) in sorted(zip(agents, kinds.values()), key=lambda pair: pair[0]["name"].lower()):
        lists[kind].append(agent["name"])
    return Message(
        id=message_id,
        project=project["slug"],
        thread_id=thread_id or str(message_id),
        subject=subject,
        body_md=body_md,
        sender=sender["name"],
        importance=importance,
        ack_required=ack_required,
        created_ts=now,
        **lists,
    )


class SentMessage(Output):
    message: Message
    recipients: int


class SendMessageInput(Input):
    project_key: ProjectKey
    sender_name: AgentName
    to: Annotated[Recipients, Field(min_length=1)]
    subject: Subject
    body_md: Body
    cc: Recipients = []
    bcc: Recipients = Field([], description="Receive the message; invisible to the other recipients.")
    importance: Importance = "normal"
    ack_required: bool = False
    thread_id: ThreadId | None = Field(None, description="Join an existing thread; omit to start a new one.")


def send_message(db: sqlite3.Connection, args: SendMessageInput) -> SentMessage:
    """Send a message to agents of the project. Every recipient gets it, or none does."""
    project = find_project(db, args.project_key)
    sender = find_agent(db, project, args.sender_name)
    message = deliver(db, project, sender, **args.model_dump(exclude={"project_key", "sender_name"}))
    return SentMessage(message=message, recipients=len(message.to) + len(message.cc) + len(message.bcc))


class ReplyMessageInput(Input):
    project_key: ProjectKey
    message_id: MessageId
    sender_name: AgentName
    body_md: Body
    to: Recipients | None = Field(None, description="Defaults to the original sender.")
    cc: Recipients = []
    bcc: Recipients = []
    subject_prefix: Annotated[str, Field(max_length=32)] = "Re:"


def reply_message(db: sqlite3.Connection, args: ReplyMessageInput) -> SentMessage:
    """Reply in the original message's thread, keeping its importance and ack requirement."""
    project = find_project(db, args.project_key)
    sender = find_agent(db, project, args.sender_name)
    original = find_message(db, project, args.message_id)
    subject = original["subject"]
    if args.subject_prefix and not subject.lower().startswith(args.subject_prefix.lower()):
        subject = f"{args.subject_prefix} {subject}"[:512]
    message = deliver(
        db,
        project,
        sender,
        to=args.to or [original["sender"]],
        cc=args.cc,
        bcc=args.bcc,
        subject=subject,
        body_md=args.body_md,
        importance=original["importance"],
        ack_required=bool(original["ack_required"]),
        thread_id=original["thread_id"],
    )
    return SentMessage(message=message, recipients=len(message.to) + len(message.cc) + len(message.bcc))


class InboxMessage(Output):
    id: MessageId
    thread_id: str
    subject: str
    sender: str
    kind: Literal["to", "cc", "bcc"]
    importance: Importance
    ack_required: bool
    created_ts: str
    read_ts: str | None
    ack_ts: str | None
    body_md: str | None = Field(description="Only with include_bodies.")


class Inbox(Output):
    messages: list[InboxMessage]


class FetchInboxInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    limit: Limit = 20
    urgent_only: bool = Field(False, description="Only high and urgent messages.")
    include_bodies: bool = False
    since_ts: Timestamp | None = Field(None, description="Only messages created after this time.")


def fetch_inbox(db: sqlite3.Connection, args: FetchInboxInput) -> Inbox:
    """An agent's received messages, newest first."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    sql = (
        "SELECT m.id, m.thread_id, m.subject, s.name AS sender, r.kind, m.importance, m.ack_required, m.created_ts,"
        f" r.read_ts, r.ack_ts, {'m.body_md' if args.include_bodies else 'NULL'} AS body_md"
        " FROM message_recipients r JOIN messages m ON m.id = r.message_id JOIN agents s ON s.id = m.sender_id"
        " WHERE r.agent_id = ?"
    )
    params: list = [agent["id"]]
    if args.urgent_only:
        sql += " AND m.importance IN ('high', 'urgent')"
    if args.since_ts:
        sql += " AND m.created_ts > ?"
        params.append(args.since_ts)
    sql += " ORDER BY r.message_id DESC LIMIT ?"
    params.append(args.limit)
    return Inbox(messages=dicts(db.execute(sql, params)))


class FetchOutboxInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    limit: Limit = 20
    include_bodies: bool = False
    since_ts: Timestamp | None = None


class Outbox(Output):
    messages: list[Message]


def fetch_outbox(db: sqlite3.Connection, args: FetchOutboxInput) -> Outbox:
    """Messages an agent sent, newest first, with all their recipients (bcc included)."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    sql = f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN agents s ON s.id = m.sender_id WHERE m.sender_id = ?"
    params: list = [agent["id"]]
    if args.since_ts:
        sql += " AND m.created_ts > ?"
        params.append(args.since_ts)
    sql += " ORDER BY m.id DESC LIMIT ?"
    params.append(args.limit)
    rows = db.execute(sql, params).fetchall()
    return Outbox(messages=messages_from_rows(db, project, rows, viewer_id=agent["id"], bodies=args.include_bodies))


class GetMessageInput(Input):
    project_key: ProjectKey
    message_id: MessageId
    agent_name: AgentName | None = Field(None, description="Who is reading; the sender also sees bcc.")


def get_message(db: sqlite3.Connection, args: GetMessageInput) -> Message:
    """One message with its body."""
    project = find_project(db, args.project_key)
    viewer = find_agent(db, project, args.agent_name)["id"] if args.agent_name else None
    return messages_from_rows(db, project, [find_message(db, project, args.message_id)], viewer_id=viewer)[0]


class ReceiptInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    message_id: MessageId


class Receipt(Output):
    message_id: MessageId
    read_ts: str
    ack_ts: str | None


def _receipt(db: sqlite3.Connection, args: ReceiptInput, acknowledge: bool) -> Receipt:
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    find_message(db, project, args.message_id)
    now = clock.now()
    row = db.execute(
        "UPDATE message_recipients SET read_ts = coalesce(read_ts, ?),"
        " ack_ts = CASE WHEN ? THEN coalesce(ack_ts, ?) ELSE ack_ts END"
        " WHERE message_id = ? AND agent_id = ? RETURNING read_ts, ack_ts",
        (now, acknowledge, now, args.message_id, agent["id"]),
    ).fetchone()
    if row is None:
        raise NotFound(
            f"Message {args.message_id} was not sent to {agent['name']}.",
            "Only recipients can mark a message read or acknowledge it; see fetch_inbox.",
        )
    return Receipt(message_id=args.message_id, read_ts=row["read_ts"], ack_ts=row["ack_ts"])


def mark_message_read(db: sqlite3.Connection, args: ReceiptInput) -> Receipt:
    """Mark a received message read. Idempotent: the first read time is kept."""
    return _receipt(db, args, acknowledge=False)


def acknowledge_message(db: sqlite3.Connection, args: ReceiptInput) -> Receipt:
    """Acknowledge a received message (also marks it read). Idempotent."""
    return _receipt(db, args, acknowledge=True)


TOOLS = [
    tool(send_message),
    tool(reply_message),
    tool(fetch_inbox, read_only=True),
    tool(fetch_outbox, read_only=True),
    tool(get_message, read_only=True),
    tool(mark_message_read),
    tool(acknowledge_message),
]
