"""Messages: send, reply, inbox and outbox, read and acknowledge.

A message is stored in its sender's project. Recipients may be agents of other projects
(addressed as Name@project); they find it in their own inbox, where its sender reads as
Name@project. Sending checks every recipient (retired, archived, contact policy) before
storing anything: a message reaches all its recipients or none.
"""

import sqlite3
from collections.abc import Collection
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from operator import itemgetter
from typing import Annotated, Literal

import orjson
from pydantic import AfterValidator, Field

from .. import clock
from ..archive import outbox
from ..attachments import intake
from ..attachments.intake import Attachment, AttachmentInput
from ..attachments.storage import storage, uploader
from ..config import get_settings
from ..store import search_runs, upkeep, wakeup
from ..store.db import placeholders
from ..store.search_index import project_token
from ..errors import LAMBDA_ANSWER_BYTES, MAX_ANSWER_BYTES, Conflict, NotFound, answer_too_large
from ..fields import (
    AgentAddress, AgentName, MessageId, NotBlank, ProjectKey, Storable, Timestamp, acting_agent, empty_list, folded_name, matching,
)
from ..ids import new_id, new_ids
from ..lambda_response import lambda_body, lambda_copies, lambda_weight
from ..profiles import either
from ..registry import Input, Output, Replay, to_json, tool
from ..security import auth
from . import attachment_refs, correspondents, thread_summaries
from .counts import count_message, count_reads
from .paging import NOT_ANOTHER_TOOLS
from .agents import address, agent_id, find_agent, find_agent_by_id, find_agents, mark_active, refuse_inactive
from .projects import find_project, project_by_id, project_id

Importance = Literal["low", "normal", "high", "urgent"]
Subject = Annotated[NotBlank, Field(min_length=1, max_length=512)]
Body = Annotated[Storable, Field(max_length=262_144, description="GitHub-flavoured Markdown.")]
Recipients = Annotated[list[AgentAddress], Field(max_length=100)]
ThreadId = Annotated[NotBlank, Field(min_length=1, max_length=128, description="Thread key; any string, e.g. FEAT-123.")]
Limit = Annotated[int, Field(ge=1, le=500)]
URGENT = ("high", "urgent")  # what urgent_only keeps (message_recipients.urgent)


class Message(Output):
    id: MessageId
    project: str
    thread_id: str
    subject: str
    body_md: str | None
    sender: str
    to: list[str]
    cc: list[str]
    bcc: list[str] = Field(description="Visible to the sender only (and to an admin who asks: get_thread's include_bcc).")
    importance: Importance
    ack_required: bool
    created_ts: str
    attachments: list[Attachment] = empty_list("Read one with get_attachment(..., sha256).")


# Who sent a message: the sender's agents.kind (agent, or human: the person overseeing, send_overseer_message).
SenderKind = Annotated[str, Field(description="agent, or human (an overseer).")]


# Recipient a's address as its message m's project writes it (p: a's project): Name, or
# Name@slug for another project's agent.
RECIPIENT_ADDRESS = "CASE WHEN a.project_id = m.project_id THEN a.name ELSE a.name || '@' || p.slug END"


def recipients_of(db: sqlite3.Connection, message_ids: list[int], viewers: Collection[int] | None = None
                  ) -> dict[int, dict[str, list[str]]]:
    """{message_id: {"to": [...], "cc": [...], "bcc": [...]}}, each list by address (as SQLite's
    NOCASE orders them). Agents of another project than the message's read as Name@project; a
    notice's recipient is in "to". Given `viewers` (agent ids; empty: nobody's), bcc only of the
    messages one of them sent: the others' bcc rows are not even returned."""
    return recipients_and_marks(db, message_ids, viewers, marks=False)[0]


def recipients_and_marks(db: sqlite3.Connection, message_ids: list[int], viewers: Collection[int] | None = None,
                         marks: bool = True) -> tuple[dict[int, dict[str, list[str]]], dict[int, tuple[int, int]]]:
    """recipients_of's lists, and {message_id: (how many of them have not read it, not acknowledged
    it)} (bcc counted where listed; `marks` False: not counted, {}), in three queries.

    A page of 200 messages to 100-300 agents each has ~40,000 recipients, of a few hundred agents:
    a row a recipient, joined to its agent and sorted by address in SQL, took 80-100 ms of a
    fetch_outbox of ~150 ms. Now a row a message and kind lists its recipients' ids, each agent's
    address is made once, and a list is sorted by the rank of its addresses among all of them
    (the page: ~50 ms, bench/wide_pages.py; the rest is reading each row's kind, and the GROUP BY's sort)."""
    if not message_ids:
        return {}, {}
    these = placeholders(message_ids)
    messages = {mid: (project, sender) for mid, project, sender in db.execute(
        f"SELECT id, project_id, sender_id FROM messages WHERE id IN ({these})", message_ids)}
    with_bcc = list(messages) if viewers is None else [mid for mid, (_, sender) in messages.items() if sender in viewers]
    counted = "count(*) - count(read_ts), count(*) - count(ack_ts)" if marks else "0, 0"
    groups = [(mid, kind, ids.split(","), unread, unacked) for mid, kind, ids, unread, unacked in db.execute(
        f"SELECT message_id, kind, group_concat(agent_id), {counted} FROM message_recipients"
        f" WHERE message_id IN ({these}) AND (kind != 'bcc' OR message_id IN ({placeholders(with_bcc) or 'NULL'}))"
        " GROUP BY message_id, kind",
        [*message_ids, *with_bcc],
    )]
    # Agents are never deleted (no statement does; recipient rows reference them): every id is found.
    agents = {id_: (name, project, slug) for id_, name, project, slug in db.execute(
        "SELECT CAST(a.id AS TEXT), a.name, a.project_id, p.slug FROM agents a JOIN projects p ON p.id = a.project_id"
        f" WHERE a.id IN (SELECT agent_id FROM message_recipients WHERE message_id IN ({these}))", message_ids)}
    # Each agent's address in the messages of each project it has some of (Name there, else Name@slug), ranked.
    needed: dict[int, set[str]] = {}
    for mid, _, ids, _, _ in groups:
        needed.setdefault(messages[mid][0], set()).update(ids)
    addresses = [(name if project == home else f"{name}@{slug}", home, agent)
                 for home, ids in needed.items() for agent in ids for name, project, slug in [agents[agent]]]
    addresses.sort(key=lambda item: _nocase(item[0]))
    rank: dict[int, dict[str, int]] = {home: {} for home in needed}  # {project: {agent id: its address's rank}}
    for n, (_, home, agent) in enumerate(addresses):
        rank[home][agent] = n
    ranked = {mid: {"to": [], "cc": [], "bcc": []} for mid in message_ids}
    counts: dict[int, tuple[int, int]] = {}
    for mid, kind, ids, unread, unacked in groups:
        ranks = rank[messages[mid][0]]
        ranked[mid]["to" if kind == "notice" else kind] += [ranks[agent] for agent in ids]
        if marks:
            before = counts.get(mid, (0, 0))
            counts[mid] = (before[0] + unread, before[1] + unacked)
    return {mid: {kind: [addresses[n][0] for n in sorted(kept)] for kind, kept in kinds.items()}
            for mid, kinds in ranked.items()}, counts


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _nocase(text: str) -> str:
    """The key SQLite's NOCASE collation compares: A-Z folded, every other character as it is
    (its UTF-8 bytes compare as the code points do)."""
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


MESSAGE_COLUMNS = (
    "m.id, m.project_id, m.thread_id, m.subject, m.body_md, m.importance, m.ack_required, m.created_ts, m.sender_id,"
    " s.name AS sender, m.attachments"
)


# A page of messages with bodies ends once they pass this (it holds one at least): the answer stays
# well under MAX_ANSWER_BYTES, and no more is read into memory (500 bodies of 256 KiB took 390 MB
# before the answer was refused as too large).
PAGE_BODY_BYTES = MAX_ANSWER_BYTES // 2
# The current call's: half of it when its answer is sent twice (an MCP tools/call result holds the
# tool's JSON as text and as structuredContent: 4 MiB of bodies made 8.4 MB, past Lambda's 6 MB).
page_body_bytes: ContextVar[int] = ContextVar("page_body_bytes", default=PAGE_BODY_BYTES)
# On AWS Lambda, the same share of what its response holds, weighed as written there (LambdaSize):
# ~3 MB, whatever the call's copies (they are all counted). A web UI page's bodies too, as its HTML
# writes them: the rest holds the page's markup (Markdown's tags, at most ~0.7 MB; ~0.45 KB a message).
LAMBDA_PAGE_BYTES = LAMBDA_ANSWER_BYTES * PAGE_BODY_BYTES // MAX_ANSWER_BYTES


def within_page(items, limit: int, text=None, as_json: bool = False) -> tuple[list, bool]:
    """The first `limit` of `items`, read lazily, fewer once their texts (`text(item)`: a body, or
    a row's JSON if `as_json`; None: not counted) pass the call's budget (page_size); and whether an
    item was left after them."""
    page, (size, budget) = [], page_size(as_json)
    for item in items:
        if text:
            size.add(text(item))
        if len(page) == limit or (page and size.over(budget)):
            return page, True
        page.append(item)
    return page, False


def page_size(as_json: bool) -> "tuple[Utf8Size | LambdaSize, int]":
    """How the call counts a page's texts, and its budget for them. Their UTF-8 (counted in
    characters, a page of emoji was four times its budget), within page_body_bytes; on AWS Lambda
    (lambda_copies) as its response writes them, within LAMBDA_PAGE_BYTES: there a page of Cyrillic
    or escape-heavy bodies within the UTF-8 budget was past its 6 MB (a 422, not a shorter page)."""
    if copies := lambda_copies.get():
        return LambdaSize(copies, as_json), LAMBDA_PAGE_BYTES
    return Utf8Size(), page_body_bytes.get()


class Utf8Size:
    """The UTF-8 size of texts added one by one, measured only as far as a limit needs: an ASCII
    text is its length (str.isascii() costs nothing); any other counts UTF-8's most, 4 bytes a
    character, until the sum could pass the limit, and is encoded (once) only then. So a page
    of bodies far under the budget encodes none, and a body is never encoded twice to be counted."""

    def __init__(self) -> None:
        self.known, self.at_most, self.unmeasured = 0, 0, []

    def add(self, text: str) -> None:
        if text.isascii():
            self.known += len(text)
        else:
            self.later(text, 4 * len(text))

    def later(self, text: str, most: int) -> None:
        """Counted as `most` until the sum could pass the limit, then measured."""
        self.unmeasured.append(text)
        self.at_most += most

    def measure(self, text: str) -> int:
        return len(text.encode())

    def over(self, limit: int) -> bool:
        if self.known + self.at_most > limit:
            self.known += sum(map(self.measure, self.unmeasured))
            self.unmeasured, self.at_most = [], 0
        return self.known > limit


class LambdaSize(Utf8Size):
    """What texts added one by one weigh in an AWS Lambda function's response, in each of the
    call's `copies` (lambda_weight of a body's JSON string, orjson's, or as the transport writes it,
    lambda_body: a web UI page's HTML; or of a row's JSON). As Utf8Size, measured only as far as a
    limit needs: each counts its most, 12 bytes a character a copy (one above U+FFFF,
    \\uXXXX\\uXXXX; a `"`, 8 at most; `&amp;`, 5), until the sum could pass the limit, and is
    measured (once) only then: a page of small bodies measures none."""

    def __init__(self, copies: tuple[int, ...], as_json: bool) -> None:
        super().__init__()
        self.copies, self.as_json, self.written = copies, as_json, lambda_body.get() or orjson.dumps

    def add(self, text: str) -> None:
        self.later(text, 12 * (len(text) + 1) * len(self.copies))  # (+1: a body's quotes)

    def measure(self, text: str) -> int:
        return lambda_weight(text.encode() if self.as_json else self.written(text), self.copies)


def body_of(row) -> str:
    return row["body_md"] or ""


def message_columns(body_chars: int | None = None) -> str:
    """MESSAGE_COLUMNS with only each body's first `body_chars` characters (0: none): a caller
    that shows no body, or digests a part, holds no 256 KiB string per row."""
    if body_chars is None:
        return MESSAGE_COLUMNS
    body = f"substr(m.body_md, 1, {int(body_chars)})" if body_chars else "NULL"
    return MESSAGE_COLUMNS.replace("m.body_md", f"{body} AS body_md")

MAX_ATTACHMENTS = 100  # whatever ATTACHMENTS_MAX_PER_MESSAGE says
Attachments = Annotated[list[AttachmentInput], Field(
    max_length=MAX_ATTACHMENTS,
    description="Files: each with content_base64 (counts against the request size limit), an uploaded sha256"
                " (request_attachment_upload), or a path inside the project's directory (a local server without authentication).",
    # The schema says this server's ATTACHMENTS_MAX_PER_MESSAGE, read when it is made (more: a 422 it did not say).
    json_schema_extra=lambda schema: schema.update(maxItems=min(MAX_ATTACHMENTS, get_settings().attachments_max_per_message)),
)]


def attachments_of(row) -> list[Attachment]:
    """A message row's attachments (the messages.attachments column: JSON, NULL for none)."""
    return [Attachment.model_validate(item) for item in orjson.loads(row["attachments"])] if row["attachments"] else []


def attachments_json(attachments: list[Attachment]) -> str | None:
    """The column's value: the JSON pydantic writes (fetch_inbox's SQL copies it byte for byte)."""
    return to_json(attachments).decode() if attachments else None


def messages_from_rows(db, project: sqlite3.Row, rows, viewer_id: int | frozenset[int] | None = None, bodies=True,
                       all_bcc: bool = False, model: type[Message] = Message) -> list[Message]:
    """Rows selected with MESSAGE_COLUMNS → Messages, as the viewer (an agent id, or an agent's
    identities across a product) sees them; `all_bcc`: every message's bcc, as the overseer who
    asks sees them (include_bcc). A `model` with fields of its own reads them from the row's
    columns of the same names (get_thread's sender_kind)."""
    viewers = viewer_id if isinstance(viewer_id, frozenset) else () if viewer_id is None else (viewer_id,)
    # bcc recipients are invisible to everyone but the sender (and the overseer who asks)
    recipients = recipients_of(db, [row["id"] for row in rows], None if all_bcc else viewers)
    own = [name for name in model.model_fields if name not in Message.model_fields]
    messages = []
    for row in rows:
        lists = recipients[row["id"]]
        messages.append(
            model(
                id=row["id"],
                project=project["slug"],
                thread_id=row["thread_id"],
                subject=row["subject"],
                body_md=row["body_md"] if bodies else None,
                sender=row["sender"],
                importance=row["importance"],
                ack_required=bool(row["ack_required"]),
                created_ts=row["created_ts"],
                attachments=attachments_of(row),
                **lists,
                **{name: row[name] for name in own},
            )
        )
    return messages


def visible_to(viewers: list[int], alias: str = "m") -> tuple[str, list[int]]:
    """(SQL condition, parameters): the message `alias` was sent or received (any kind) by one
    of the agents `viewers` (an agent's identities; empty: visible to nobody). The one
    definition of "mail this agent may read", for every tool that reads mail as an agent."""
    marks = placeholders(viewers) if viewers else "NULL"
    return (
        f"({alias}.sender_id IN ({marks}) OR EXISTS (SELECT 1 FROM message_recipients v"
        f" WHERE v.message_id = {alias}.id AND v.agent_id IN ({marks})))",
        [*viewers, *viewers],
    )


def seen_in_thread(db, project_id: int, thread_id: str, viewers, after: int = -(2**63), limit: int = -1,
                   newest: bool = True) -> list[int]:
    """The ids of the project's messages of the thread that the viewers sent or received (any
    kind, as visible_to) after the id `after`: the `limit` newest (or oldest), in that order (-1: all). Read from each viewer's own rows of the thread, sent and received, through
    their indexes (migrations/0048): testing each message of a long thread for the viewer read
    all of it for one cc'd on a few."""
    order = "DESC" if newest else "ASC"
    ids: set[int] = set()
    for viewer in viewers:
        for sql in ("SELECT id FROM messages WHERE sender_id = ? AND project_id = ? AND thread_id = ? AND id > ?"
                    f" ORDER BY id {order} LIMIT ?",
                    "SELECT message_id FROM message_recipients WHERE agent_id = ? AND message_project_id = ? AND thread_id = ?"
                    f" AND message_id > ? ORDER BY message_id {order} LIMIT ?"):
            ids.update(id_ for (id_,) in db.execute(sql, (viewer, project_id, thread_id, after, limit)))
    found = sorted(ids, reverse=newest)
    return found if limit < 0 else found[:limit]


def find_message(db: sqlite3.Connection, project: sqlite3.Row, message_id: int, viewer_id: int | None = None):
    """A message of the project; given a viewer, a message it sent or received (of any project)."""
    if viewer_id is None:
        where, params = "m.project_id = ?", [project["id"]]
    else:
        where, params = visible_to([viewer_id])
    row = db.execute(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m JOIN agents s ON s.id = m.sender_id WHERE m.id = ? AND {where}",
        (message_id, *params),
    ).fetchone()
    if row is None:
        raise NotFound(
            f"Message {message_id} not found in project {project['slug']!r}"
            + (" among the viewer's mail." if viewer_id is not None else "."),
            f"Take message ids from {either('fetch_inbox', 'fetch_outbox', 'search_messages')}.",
        )
    return row


def store_message(db, row: tuple) -> None:
    """One messages row (id, project_id, sender_id, thread_id, subject, body_md, importance,
    ack_required, created_ts, attachments), and into the full-text index at the end of the
    transaction, with the rest of the batch: FTS5 flushes its pending index at every savepoint
    (migrations/0022_search_index_at_commit.sql), and its runs (ids, paths: store/search_runs.py).
    A replica's index is its sidecar file."""
    db.execute(
        "INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, ack_required, created_ts,"
        " attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        row,
    )
    if row[9]:
        attachment_refs.name(db, row[0], [item["sha256"] for item in orjson.loads(row[9])])
    if not hasattr(db, "replica"):
        upkeep.later(db, _index_for_search, (row[0], row[1], row[4], row[5]))


def _index_for_search(db, rows: list[tuple[int, int, str, str]]) -> None:
    """(id, project id, subject, body) into the full-text index (with its project's token: migration
    0045) and message_runs."""
    db.executemany("INSERT INTO messages_fts (rowid, subject, body_md, project) VALUES (?, ?, ?, ?)",
                   [(message_id, subject, body, project_token(project_id)) for message_id, project_id, subject, body in rows])
    search_runs.add(db, rows)


def store_recipients(
    db, project_id: int, thread_id: str, message_id: int, sender_id: int, importance: str, ack_required: bool,
    kinds: dict[int, str], subject: str, created_ts: str, new_thread: bool = False,
) -> None:
    """One row per recipient ({agent id: kind}), found by (message, agent), with
    the message's urgency and ack_required copied for the inbox filters' partial indexes
    (migrations/0020_inbox_filters.sql), the recipient's project for the views of a project's
    every agent (0043_recipients_by_project.sql), and the message's project and thread and
    whether the recipient is a person for the views of a project's mail and an agent's of a
    thread (0048_recipients_by_message_project.sql); and the message counted (chalicelib/tools/counts.py)
    and onto its thread's summaries (chalicelib/tools/thread_summaries.py), both at the end of
    the transaction; and who wrote to whom (chalicelib/tools/correspondents.py). `new_thread`:
    this message starts its thread."""
    urgent = importance in URGENT
    # Time-ordered ids: a send's rows go at the table's end. (A hash of (message, agent) put each
    # on a random page: ~20 of a group commit's ~60 pages written were recipient rows.)
    db.executemany(
        "INSERT INTO message_recipients (id, message_id, agent_id, kind, urgent, ack_required, message_project_id, thread_id,"
        " project_id, human) SELECT ?, ?, id, ?, ?, ?, ?, ?, project_id, kind = 'human' FROM agents WHERE id = ?",
        [(row_id, message_id, kind, urgent, ack_required, project_id, thread_id, agent_id)
         for row_id, (agent_id, kind) in zip(new_ids(len(kinds)), kinds.items())],
    )
    count_message(db, project_id, sender_id, kinds)
    correspondents.record(db, sender_id, kinds)  # now, not at COMMIT: the batch's next send may be an answer to it
    thread_summaries.add(db, project_id, (message_id, thread_id, sender_id, kinds, subject, created_ts), new_thread)


def deliver(
    db, project, sender, *, to, cc, bcc, subject, body_md, importance, ack_required, thread_id, notice=False,
    overseer=False,
    attachments: list[AttachmentInput] = (),
) -> Message:
    """Store one message and all its recipient rows (in the caller's transaction: all or nothing).

    Recipients are names or Name@project addresses. Every recipient is checked before
    anything is stored: retired agents and archived projects refuse everything, and each
    recipient's contact policy must admit the sender. A notice (a system notice such as a
    contact request: every recipient gets kind "notice") skips the contact policy, and so does a
    human overseer's message (overseer: the person in charge is not subject to agents' policies)."""
    addressed = admitted_recipients(db, project, sender, to, cc, bcc, notice, overseer)
    # Stored before the message (content-addressed: a rollback leaves only an unreferenced copy).
    stored = intake.store(list(attachments), project["human_key"], get_settings(), _sizes(db, sender["id"])) if attachments else []
    message_id, now, new_thread = new_id(), clock.now(), not thread_id
    if stored:
        attachment_refs.take_back(db, [item.sha256 for item in stored], now, get_settings())
    thread_id = thread_id or str(message_id)
    store_message(db, (message_id, project["id"], sender["id"], thread_id, subject, body_md, importance, ack_required, now,
                       attachments_json(stored)))
    store_recipients(db, project["id"], thread_id, message_id, sender["id"], importance, ack_required,
                     {agent_id: kind for agent_id, (kind, _) in addressed.items()}, subject, now, new_thread)
    wakeup.delivered(addressed)  # their waiting wait_for_mail calls wake once this commits
    mark_active(db, sender["id"], now)
    lists: dict[str, list[str]] = {"to": [], "cc": [], "bcc": []}
    for kind, agent in addressed.values():
        lists["to" if kind == "notice" else kind].append(address(agent, project))
    for names in lists.values():
        names.sort(key=str.lower)
    message = Message(
        id=message_id,
        project=project["slug"],
        thread_id=thread_id,
        subject=subject,
        body_md=body_md,
        sender=sender["name"],
        importance=importance,
        ack_required=ack_required,
        created_ts=now,
        attachments=stored,
        **lists,
    )
    outbox.record_message(db, message, project["human_key"], notice)  # archived after the commit, by the worker
    return message


def admitted_recipients(db, project, sender, to, cc, bcc, notice=False, overseer=False) -> dict[int, tuple[str, sqlite3.Row]]:
    """{agent id: (kind, agent)} of a message's recipients (to beats cc beats bcc), once each
    exists, is active, and (but for a notice or a person's message) admits the sender."""
    kinds = ["notice" if notice else kind for kind, names in (("to", to), ("cc", cc), ("bcc", bcc)) for _ in names]
    addressed: dict[int, tuple[str, sqlite3.Row]] = {}
    for kind, agent in zip(kinds, find_agents(db, project, [*to, *cc, *bcc])):
        addressed.setdefault(agent["id"], (kind, agent))
    recipients = [agent for _, agent in addressed.values()]
    refuse_inactive(project, sender, recipients)
    if not notice and not overseer:
        from .contacts import refuse_blocked  # not at the top: contacts → reservations → this module

        refuse_blocked(db, project, sender, recipients)
    return addressed


def notify(db, project, sender, to: str, subject: str, body: str) -> Message:
    """A system notice to one agent (a name, or Name@project) about what `sender` did: delivered
    whatever its contact policy, never counted as conversation. The body starts with "*Notice
    from Agent Mail.*", so the reader tells the server's words from the sender's own. A NUL (in a
    pattern or name stored before they were refused) becomes U+FFFD: the notice is still sent, and
    search reads its text whole (fields.Storable)."""
    subject, body = subject.replace("\x00", "\ufffd"), body.replace("\x00", "\ufffd")
    return deliver(
        db, project, sender, to=[to], cc=[], bcc=[], subject=subject[:512], body_md=f"*Notice from Agent Mail.*\n\n{body}",
        importance="normal", ack_required=False, thread_id=None, notice=True,
    )


def prepared_attachments(refusals):
    """Tool.prepare of a tool that sends: the send's own refusals (`refusals(db, project, args)`:
    an unknown sender or recipient, a contact policy), then its attachments checked, loaded and
    converted before the write. A send refused anyway converts nothing (4 images of 50
    megapixels: 3 s of CPU before a 404)."""
    def prepare(args):
        if not args.attachments:
            return None

        def work(db) -> None:
            project = find_project(db, args.project_key)
            refusals(db, project, args)
            sender = agent_id(project["id"], args.agent_name)  # (refusals found it)
            intake.prepare(list(args.attachments), project["human_key"], get_settings(), _sizes(db, sender))

        return work

    return prepare


def _sizes(db, sender_id: int) -> intake.SizeOf:
    """What stored content this sender may attach by its sha256 (attachment_refs.sizes), as the
    caller's credential uploaded it."""
    return attachment_refs.sizes(db, storage(get_settings()), sender_id, uploader(auth.current_credential()))


class SentMessage(Output):
    message: Message
    recipients: int


class SendMessageInput(Input):
    project_key: ProjectKey
    agent_name: AgentName = acting_agent("sender_name", description="You: the sender.")
    to: Annotated[Recipients, Field(min_length=1)]
    subject: Subject
    body_md: Body
    cc: Recipients = empty_list()
    bcc: Recipients = empty_list("Receive the message; invisible to the other recipients.")
    importance: Importance = "normal"
    ack_required: bool = False
    thread_id: ThreadId | None = Field(None, description="Join an existing thread; omit to start a new one.")
    attachments: Attachments = empty_list()


def send_message(db: sqlite3.Connection, args: SendMessageInput) -> SentMessage:
    """Send a message to agents of the project. Every recipient gets it, or none does.

    Address an agent of another project as Name@project. If a recipient's contact policy
    does not admit you yet, nothing is sent and the error names whom to ask with
    request_contact."""
    project = find_project(db, args.project_key)
    sender = _sender(db, project, args)
    message = deliver(db, project, sender, attachments=args.attachments,
                      **args.model_dump(exclude={"project_key", "agent_name", "attachments"}))
    return SentMessage(message=message, recipients=len(message.to) + len(message.cc) + len(message.bcc))


def _sender(db, project, args) -> sqlite3.Row:
    return find_agent(db, project, args.agent_name)  # never a person's: invoke.admitted refused it (refuse_people)


def _send_refusals(db, project, args: SendMessageInput) -> None:
    admitted_recipients(db, project, _sender(db, project, args), args.to, args.cc, args.bcc)


class ReplyMessageInput(Input):
    project_key: ProjectKey
    message_id: MessageId
    agent_name: AgentName = acting_agent("sender_name", description="You: the one replying.")
    body_md: Body
    to: Recipients | None = Field(
        None, description="Defaults to the original sender; for the original sender, to the original to and cc."
    )
    cc: Recipients = empty_list()
    bcc: Recipients = empty_list()
    subject_prefix: Annotated[Storable, Field(max_length=32)] = "Re:"  # a part of the subject
    attachments: Attachments = empty_list()
    importance: Importance | None = Field(None, description="Defaults to the original message's.")
    ack_required: bool = Field(False, description="Ask the recipients to acknowledge this reply.")


def reply_message(db: sqlite3.Connection, args: ReplyMessageInput) -> SentMessage:
    """Reply in the original message's thread, with its importance; no ack required unless asked.

    Goes by default to the original sender; a reply by the original sender goes to the
    original to and cc recipients (a follow-up). Works for a message received from another
    project too: the reply is stored in your project under the same thread_id."""
    project = find_project(db, args.project_key)
    sender, original, to, cc = _reply_to(db, project, args)
    subject = original["subject"]
    if args.subject_prefix and not subject.lower().startswith(args.subject_prefix.lower()):
        subject = f"{args.subject_prefix} {subject}"[:512]
    with _picked_recipients_named(project, args, to, cc):
        message = deliver(
            db,
            project,
            sender,
            to=to,
            cc=cc,
            bcc=args.bcc,
            subject=subject,
            body_md=args.body_md,
            importance=args.importance or original["importance"],
            ack_required=args.ack_required,
            thread_id=original["thread_id"],
            attachments=args.attachments,
        )
    return SentMessage(message=message, recipients=len(message.to) + len(message.cc) + len(message.bcc))


def _reply_to(db, project, args: ReplyMessageInput) -> tuple[sqlite3.Row, sqlite3.Row, list[str], list[str]]:
    """(sender, original, to, cc) of a reply: to the original's sender, or for a follow-up by
    that sender, to whom the original went."""
    sender = _sender(db, project, args)
    original = find_message(db, project, args.message_id, viewer_id=sender["id"])
    to, cc = args.to, args.cc
    if not to and original["sender_id"] == sender["id"]:  # a follow-up: to whom the original went
        recipients = recipients_of(db, [original["id"]], ())[original["id"]]  # to and cc only
        to, cc = recipients["to"], cc or recipients["cc"]
    return sender, original, to or [address(find_agent_by_id(db, original["sender_id"]), project)], cc


def _reply_refusals(db, project, args: ReplyMessageInput) -> None:
    sender, _, to, cc = _reply_to(db, project, args)
    with _picked_recipients_named(project, args, to, cc):
        admitted_recipients(db, project, sender, to, cc, args.bcc)


@contextmanager
def _picked_recipients_named(project: sqlite3.Row, args: ReplyMessageInput, to: list[str], cc: list[str]):
    """A refusal of recipients reply_message picked itself (no `to` given) ends with the call that
    leaves them out: its "leave them out" spoke of a list the caller never wrote."""
    try:
        yield
    except Conflict as error:
        if args.to or not error.refused:
            raise
        refused = {folded_name(name) for name in error.refused}
        keep_to, keep_cc = ([name for name in names if folded_name(name) not in refused] for names in (to, cc))
        keep_to, keep_cc = (keep_to, keep_cc) if keep_to else (keep_cc, [])
        if keep_to:
            fix = (f"reply_message(project_key={project['slug']!r}, agent_name={args.agent_name!r},"
                   f" message_id={str(args.message_id)!r}, to={keep_to!r}{f', cc={keep_cc!r}' if keep_cc else ''},"
                   " body_md=...) sends it without them.")
        else:
            fix = "pass to=[...] with whom it should reach instead."
        error.hint += f" This reply's recipients were picked for it (the original's sender, or for a follow-up its to and cc): {fix}"
        raise


class InboxMessage(Output):
    id: MessageId
    thread_id: str
    subject: str
    sender: str
    sender_kind: SenderKind  # (a reader tells the overseer's mail without a whois per sender, as get_thread's)
    kind: Literal["to", "cc", "bcc", "notice"] = Field(description="notice: a system notice, e.g. a contact request.")
    importance: Importance
    ack_required: bool
    created_ts: str
    read_ts: str | None
    ack_ts: str | None
    body_md: str | None = Field(description="Only with include_bodies.")
    attachments: list[Attachment] = empty_list("Read one with get_attachment(..., sha256).")


def _below_largest_id(text: str) -> str:
    """19 digits may pass the largest integer SQLite holds (an OverflowError, a 500): read as that."""
    return str(min(int(text), 2**63 - 1))


# A page of mail newest first ends at a message id; the next page is the messages older than it.
# (No max_length: another tool's longer cursor would be "at most 32 characters"; the pattern bounds it.)
OlderThan = Annotated[str, matching("^[0-9]{1,19}$", NOT_ANOTHER_TOOLS), AfterValidator(_below_largest_id)]
OLDER_THAN_HELP = "The next_cursor of the previous page: only messages older than that page."
IncludeBodies = Annotated[bool, Field(description="With each message's body_md: a page then ends after ~4 MiB of bodies"
                                                  " (fewer than limit; next_cursor goes on).")]
NEXT_OLDER_HELP = "Pass as cursor to get the next (older) page; null on the last page."


class Inbox(Output):
    messages: list[InboxMessage]
    next_cursor: str | None = Field(None, description=NEXT_OLDER_HELP)


class FetchInboxInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    limit: Limit = 20
    urgent_only: bool = Field(False, description="Only high and urgent messages.")
    unread_only: bool = Field(False, description="Only messages not marked read (mark_message_read, acknowledge_message).")
    ack_pending_only: bool = Field(False, description="Only messages that require an acknowledgement not given yet.")
    include_bodies: IncludeBodies = False
    since_ts: Timestamp | None = Field(None, description="Only messages created after this time.")
    cursor: OlderThan | None = Field(None, description=OLDER_THAN_HELP)


# One inbox message as the JSON pydantic would write for InboxMessage (its field order, the id as
# a string, ack_required a boolean), rendered by the database: cheaper than a Python object per row.
# json('true') and json('false') are constants, made once per query rather than once per row.
_INBOX_MESSAGE_JSON = (
    "json_object('id', CAST(m.id AS TEXT), 'thread_id', m.thread_id, 'subject', m.subject,"
    " 'sender', CASE WHEN s.project_id = ? THEN s.name"
    " ELSE s.name || '@' || (SELECT slug FROM projects WHERE id = s.project_id) END, 'sender_kind', s.kind,"
    " 'kind', r.kind, 'importance', m.importance,"
    " 'ack_required', CASE WHEN m.ack_required THEN json('true') ELSE json('false') END, 'created_ts', m.created_ts,"
    " 'read_ts', r.read_ts, 'ack_ts', r.ack_ts, 'body_md', {body_md},"
    " 'attachments', CASE WHEN m.attachments IS NULL THEN json_array() ELSE json(m.attachments) END)"
)

_INBOX_FROM = " FROM message_recipients r JOIN messages m ON m.id = r.message_id JOIN agents s ON s.id = m.sender_id"  # its r, m, s

# fetch_inbox's filters, as conditions on r (message_recipients). Written exactly as the partial
# indexes' WHERE clauses (migrations/0020_inbox_filters.sql), so that the planner uses them: each
# filter and each combination with urgent_only reads only matching rows (tests/test_mailbox_perf_indexes.py).
INBOX_FILTERS = {
    "urgent_only": "r.urgent = 1",
    "unread_only": "r.read_ts IS NULL",
    "ack_pending_only": "r.ack_required = 1 AND r.ack_ts IS NULL",
}


def inbox_page(db, home_id: int, recipient_id: int, where: str = "", params=(), *, order="DESC", limit: int,
               bodies=False) -> tuple[list[str], bool]:
    """The InboxMessage JSON of one recipient's messages matching `where` (conditions on r and
    m), by id in `order`: the query every inbox view shares (message_id_of gives a row's id); and
    whether a page with bodies was cut short, at PAGE_BODY_BYTES (more rows follow its last)."""
    cursor = db.execute(_inbox_sql(where, order, bodies), [home_id, recipient_id, *params, limit])
    cursor.row_factory = None  # tuples: no sqlite3.Row per row
    if bodies:  # read lazily, measured as it goes (the row's JSON: str() of a str is itself)
        return within_page(map(_first, cursor), limit, str, as_json=True)
    if limit <= _SURELY_UNDER_CAP:
        return list(map(_first, cursor.fetchall())), False
    # Otherwise read lazily too: reading stops at the answer's cap.
    rows: list[str] = []
    size = 0
    while chunk := cursor.fetchmany(20):
        texts = list(map(_first, chunk))
        size += sum(map(len, texts)) + len(texts)
        if size > MAX_ANSWER_BYTES:
            raise answer_too_large()
        rows += texts
    return rows, False


def inbox_items(db, home_id: int, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """The InboxMessage JSON (without body) of each (message, recipient) pair, in one statement:
    a view over many recipients asked inbox_page once per recipient, ~0.5 ms a statement on a
    Turso replica (15 ms for a project's list_ack_required). Refused past MAX_ANSWER_BYTES, as a page."""
    if not pairs:
        return {}
    messages = sorted({pair[0] for pair in pairs})
    cursor = db.execute(  # every recipient row of the messages (recipients_by_message), the pairs' kept
        f"SELECT r.message_id, r.agent_id, {_INBOX_MESSAGE_JSON.format(body_md='NULL')}{_INBOX_FROM}"
        f" WHERE r.message_id IN ({placeholders(messages)})",
        [home_id, *messages],
    )
    cursor.row_factory = None
    wanted, items, size = set(pairs), {}, 0
    for message_id, recipient, text in cursor:
        if (message_id, recipient) in wanted:
            items[message_id, recipient] = text
            size += len(text) + 1
            if size > MAX_ANSWER_BYTES:
                raise answer_too_large()
    return items


# Without bodies a row is at most ~140 KB (a 512-character subject, 100 attachments' names and
# types): this many rows stay under the answer's cap however long they are (a default page does).
_SURELY_UNDER_CAP = MAX_ANSWER_BYTES // (160 * 1024)
_first = itemgetter(0)


def message_id_of(inbox_json: str) -> int:
    """The id of an inbox row: its JSON starts {"id":"<digits>"."""
    return int(inbox_json[7 : inbox_json.index('"', 7)])


@lru_cache(maxsize=64)  # a few filter combinations; the same text also finds sqlite3's cached statement at once
def _inbox_sql(where: str, order: str, bodies: bool) -> str:
    return (
        f"SELECT {_INBOX_MESSAGE_JSON.format(body_md='m.body_md' if bodies else 'NULL')}{_INBOX_FROM}"
        f" WHERE r.agent_id = ? {where} ORDER BY r.message_id {order} LIMIT ?"
    )


def fetch_inbox(db: sqlite3.Connection, args: FetchInboxInput) -> Inbox:
    """An agent's received messages, newest first (from other projects too: sender Name@project).

    Reading changes nothing (mark_message_read does). Filters combine; a full page gives a
    next_cursor for the older messages. To wait for new mail, use wait_for_mail."""
    return Inbox.model_validate_json(inbox_json(db, args))


def inbox_json(db: sqlite3.Connection, args: FetchInboxInput) -> bytes:
    """fetch_inbox's output as JSON, rendered by the database and not validated again (the
    tool's json_handler: MCP and REST send it as it is)."""
    # The agent's id follows from the names: no lookups before the inbox query. Only an empty
    # inbox asks whether the project and the agent exist (NotFound if not).
    home = project_id(db, args.project_key)
    where = "".join(f" AND {sql}" for name, sql in INBOX_FILTERS.items() if getattr(args, name))
    params: list = []
    if args.since_ts:
        where += " AND m.created_ts > ?"
        params.append(args.since_ts)
    if args.cursor:
        where += " AND r.message_id < ?"
        params.append(int(args.cursor))

    def page(project: int) -> tuple[list[str], bool]:
        return inbox_page(db, project, agent_id(project, args.agent_name), where, params, limit=args.limit, bodies=args.include_bodies)

    rows, cut = page(home)
    if not rows:
        project = find_project(db, args.project_key)
        find_agent(db, project, args.agent_name)
        if project["id"] != home:  # a key migrations/0031 respelled: its ids follow from the old spelling
            rows, cut = page(project["id"])
    next_cursor = f'"{message_id_of(rows[-1])}"' if len(rows) == args.limit or cut else "null"
    return f'{{"messages":[{",".join(rows)}],"next_cursor":{next_cursor}}}'.encode()


class FetchOutboxInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    limit: Limit = 20
    include_bodies: IncludeBodies = False
    since_ts: Timestamp | None = None
    cursor: OlderThan | None = Field(None, description=OLDER_THAN_HELP)


class Outbox(Output):
    messages: list[Message]
    next_cursor: str | None = Field(None, description=NEXT_OLDER_HELP)


def fetch_outbox(db: sqlite3.Connection, args: FetchOutboxInput) -> Outbox:
    """Messages an agent sent, newest first, a page at a time, with all their recipients (bcc included)."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    columns = message_columns(None if args.include_bodies else 0)
    sql = f"SELECT {columns} FROM messages m JOIN agents s ON s.id = m.sender_id WHERE m.sender_id = ?"
    params: list = [agent["id"]]
    if args.since_ts:
        sql += " AND m.created_ts > ?"
        params.append(args.since_ts)
    if args.cursor:
        sql += " AND m.id < ?"
        params.append(int(args.cursor))
    sql += " ORDER BY m.id DESC LIMIT ?"
    params.append(args.limit + 1)  # one more: whether there is a next page
    page, more = within_page(db.execute(sql, params), args.limit, body_of if args.include_bodies else None)
    return Outbox(
        messages=messages_from_rows(db, project, page, viewer_id=agent["id"], bodies=args.include_bodies),
        next_cursor=str(page[-1]["id"]) if more else None,
    )


class GetMessageInput(Input):
    project_key: ProjectKey
    message_id: MessageId
    agent_name: AgentName | None = Field(
        None,
        description="Read as this agent: only a message it sent or received (of any project); the sender also sees bcc."
        " Required with agent tokens on (but for an admin credential).",
    )


def get_message(db: sqlite3.Connection, args: GetMessageInput) -> Message:
    """One message with its body: of the project, or, read as agent_name, one that agent sent or received."""
    project = find_project(db, args.project_key)
    viewer = find_agent(db, project, args.agent_name)["id"] if args.agent_name else None
    row = find_message(db, project, args.message_id, viewer_id=viewer)
    if row["project_id"] != project["id"]:  # received from another project: shown as stored there
        project = project_by_id(db, row["project_id"])
    return messages_from_rows(db, project, [row], viewer_id=viewer)[0]


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
    message = find_message(db, project, args.message_id, viewer_id=agent["id"])
    now = clock.now()
    before = db.execute("SELECT read_ts, ack_ts, kind FROM message_recipients WHERE message_id = ? AND agent_id = ?",
                        (args.message_id, agent["id"])).fetchone()
    if before is None:
        raise NotFound(
            f"Message {args.message_id} was not sent to {agent['name']}.",
            "Only recipients can mark a message read or acknowledge it; see fetch_inbox.",
        )
    # Only the marks this call makes are written: a replica's UPDATE pushes the columns it assigns, so
    # a read through a replica that had not yet pulled an acknowledgement made through another wrote
    # back its stale ack_ts, NULL, and undid it (QA, session 40).
    made = {"read_ts": now} if before["read_ts"] is None else {}
    if acknowledge and before["ack_ts"] is None:
        made["ack_ts"] = now
    if made:
        db.execute(f"UPDATE message_recipients SET {', '.join(f'{mark} = ?' for mark in made)} WHERE message_id = ? AND agent_id = ?",
                   (*made.values(), args.message_id, agent["id"]))
    row = {"read_ts": before["read_ts"], "ack_ts": before["ack_ts"], **made}
    # bcc copies are not counted (whois must not reveal one), nor their reads
    if before["read_ts"] is None and before["kind"] != "bcc":
        count_reads(db, [agent["id"]])
    if (row["read_ts"], row["ack_ts"]) != (before["read_ts"], before["ack_ts"]):  # marks only move forward: once each
        outbox.record_mark(db, project, agent["name"], message, row["read_ts"], row["ack_ts"])
    return Receipt(message_id=args.message_id, read_ts=row["read_ts"], ack_ts=row["ack_ts"])


def mark_message_read(db: sqlite3.Connection, args: ReceiptInput) -> Receipt:
    """Mark a received message read. Idempotent: the first read time is kept."""
    return _receipt(db, args, acknowledge=False)


def acknowledge_message(db: sqlite3.Connection, args: ReceiptInput) -> Receipt:
    """Acknowledge a received message (also marks it read). Idempotent."""
    return _receipt(db, args, acknowledge=True)


def _sent_again(db: sqlite3.Connection, args, kept: list) -> SentMessage:
    """A retried send's first result, read back from the message it stored (messages never change)."""
    project = find_project(db, args.project_key)
    sender = find_agent(db, project, args.agent_name)
    message = messages_from_rows(db, project, [find_message(db, project, kept[0], viewer_id=sender["id"])], viewer_id=sender["id"])[0]
    return SentMessage(message=message, recipients=len(message.to) + len(message.cc) + len(message.bcc))


# An idempotency key keeps the message's id, not the whole answer (its body a second time).
_SENT = Replay(keep=lambda result: [int(result.message.id)], rebuild=_sent_again)

TOOLS = [
    tool(send_message, acts_as="agent_name", token_field="sender_token", idempotent=True, replay=_SENT,
         prepare=prepared_attachments(_send_refusals)),
    tool(reply_message, acts_as="agent_name", token_field="sender_token", idempotent=True, replay=_SENT,
         prepare=prepared_attachments(_reply_refusals)),
    tool(fetch_inbox, read_only=True, acts_as="agent_name", json_handler=inbox_json, off_loop=lambda args: args.include_bodies),
    # Every recipient of every message listed: up to 300 each (20 such: ~5 ms, 200: ~50 ms; bench/wide_pages.py).
    tool(fetch_outbox, read_only=True, acts_as="agent_name", off_loop=True),
    tool(get_message, read_only=True, acts_as="agent_name"),
    # fresh: on a replica behind, a read made through another (its first time) looked unmade, and was made again later
    tool(mark_message_read, acts_as="agent_name", idempotent=True, repeat_safe=True, fresh=True),
    tool(acknowledge_message, acts_as="agent_name", idempotent=True, repeat_safe=True, fresh=True),
]
