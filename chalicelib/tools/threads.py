"""Threads: messages that share a thread_id, listed, read and summarised."""

import re
import sqlite3
from typing import Annotated

from pydantic import Field

from ..errors import NotFound
from ..store.db import placeholders
from ..fields import AgentName, Id, MessageId, ProjectKey, with_bcc
from ..registry import Input, Output, tool
from . import thread_summaries
from .agents import find_agent
from .messages import (
    RECIPIENT_ADDRESS, Limit, Message, OlderThan, SenderKind, ThreadId, body_of, message_columns, messages_from_rows,
    seen_in_thread, within_page,
)
from ..security.scopes import may_mention
from .projects import find_project, project_by_id


def messages_in_thread(
    db: sqlite3.Connection, project: sqlite3.Row, thread_id: str, bodies=True, viewers: frozenset[int] | None = None,
    newest: int = -1, body_chars: int | None = None,
) -> list[Message]:
    """The thread's messages in this project (the `newest` ones, if given), oldest first; empty
    if it has none here. Given viewers (an agent's identities), only the messages they sent or
    received. `body_chars`: only each body's first so many characters."""
    where, params = in_thread(db, project, thread_id, viewers, limit=newest)
    rows = db.execute(
        f"SELECT {message_columns(body_chars if bodies else 0)} FROM messages m JOIN agents s ON s.id = m.sender_id"
        f" WHERE {where} ORDER BY m.id DESC LIMIT ?", (*params, newest),
    ).fetchall()
    return messages_from_rows(db, project, rows[::-1], viewer_id=viewers, bodies=bodies)


def in_thread(db: sqlite3.Connection, project: sqlite3.Row, thread_id: str, viewers: frozenset[int] | None,
              after: int = -(2**63), limit: int = -1, newest: bool = True) -> tuple[str, list]:
    """(SQL condition, parameters) on `m`: a message of the thread past `after`, of the `limit`
    newest (or oldest) the viewers see, if given (seen_in_thread: their own rows of the thread,
    not each of its messages tested)."""
    if viewers is None:
        return "m.project_id = ? AND m.thread_id = ? AND m.id > ?", [project["id"], thread_id, after]
    ids = seen_in_thread(db, project["id"], thread_id, viewers, after=after, limit=limit, newest=newest)
    return f"m.id IN ({placeholders(ids) if ids else 'NULL'})", ids


def no_thread(db: sqlite3.Connection, project: sqlite3.Row, thread_id: str, viewers: frozenset[int] | None) -> NotFound:
    """The 404 of a thread the project (or the reader's mail in it) does not hold. A thread id the
    reader took from mail of another project is that project's thread: the usual hint (take it from
    fetch_inbox, where the agent took it) would send it round in a loop."""
    missing = f"Thread {thread_id!r} not found in project {project['slug']!r}" + (
        " among the reader's mail." if viewers is not None else ".")
    if viewers and (found := received_from_elsewhere(db, project["id"], thread_id, viewers)):
        sender, home, ids = found
        return NotFound(missing, (
            f"It is a thread of project {home!r}: the mail you got in it came from {sender}@{home}, and a thread is"
            f" its sender's project's. Read that mail with get_message (message_id {', '.join(map(str, ids))})."))
    return NotFound(missing, "Use list_threads to see thread ids; a message's thread_id is in fetch_inbox results.")


OTHER_PROJECTS_LOOKED_AT = 50  # projects a reader's mail came from, looked through for a missing thread


def received_from_elsewhere(db: sqlite3.Connection, project_id: int, thread_id: str,
                            viewers: frozenset[int]) -> tuple[str, str, list[int]] | None:
    """(sender, its project's slug, up to 3 message ids, newest first) of mail of this thread that the
    viewers received from another project, or None. The viewer's rows (inbox_by_thread) are
    walked a project at a time, one probe for each: a 404 must not read a whole mailbox."""
    for viewer in sorted(viewers):
        other = -(2**63)
        for _ in range(OTHER_PROJECTS_LOOKED_AT):
            row = db.execute("SELECT message_project_id FROM message_recipients WHERE agent_id = ? AND message_project_id > ?"
                             " ORDER BY message_project_id LIMIT 1", (viewer, other)).fetchone()
            if row is None:
                break
            other = row[0]
            ids = [] if other == project_id else [message_id for (message_id,) in db.execute(
                "SELECT message_id FROM message_recipients WHERE agent_id = ? AND message_project_id = ? AND thread_id = ?"
                " ORDER BY message_id DESC LIMIT 3", (viewer, other, thread_id))]
            home = project_by_id(db, other) if ids else None
            if home is not None and may_mention(home):
                sender = db.execute("SELECT s.name FROM messages m JOIN agents s ON s.id = m.sender_id WHERE m.id = ?",
                                    (ids[0],)).fetchone()[0]
                return sender, home["slug"], ids
    return None


def reader(db: sqlite3.Connection, project: sqlite3.Row, agent_name: str | None) -> frozenset[int] | None:
    """The agent a thread tool reads as (its id), or None to read the whole project."""
    return None if agent_name is None else frozenset({find_agent(db, project, agent_name)["id"]})


ReadAs = Annotated[
    AgentName | None,
    Field(description="Read as this agent: only the messages it sent or received. Required with agent tokens on"
                      " (but for an admin credential)."),
]


class ThreadInfo(Output):
    thread_id: str
    subject: str
    message_count: int
    participants: list[str] = Field(description=f"Who took part (senders, to and cc), in order of appearance: the first"
                                    f" {thread_summaries.PARTICIPANTS_SHOWN}.")
    participants_more: int = Field(0, description="How many more took part, after those listed.")
    first_ts: str
    last_ts: str


class ListThreadsInput(Input):
    project_key: ProjectKey
    limit: Limit = 50
    agent_name: ReadAs = None
    cursor: OlderThan | None = Field(None, description="The next_cursor of the previous page: threads last active before that page's (a thread"
                                     " that gets mail meanwhile moves to the first page, and is not on the next).")


class Threads(Output):
    threads: list[ThreadInfo]
    next_cursor: str | None = Field(None, description="Pass as cursor for the next (less recently active) page; null on the last page.")


def list_threads(db: sqlite3.Connection, args: ListThreadsInput) -> Threads:
    """The project's threads, most recently active first, a page at a time."""
    project = find_project(db, args.project_key)
    viewers = reader(db, project, args.agent_name)
    viewer = next(iter(viewers)) if viewers is not None else 0  # thread_summaries' view: 0, the whole project
    before = int(args.cursor) if args.cursor else None
    threads, next_page = thread_summaries.newest(db, project, viewer, args.limit, before)
    return Threads(threads=[ThreadInfo(**info) for info in threads], next_cursor=None if next_page is None else str(next_page))


class GetThreadInput(Input):
    project_key: ProjectKey
    thread_id: ThreadId
    include_bodies: bool = True
    limit: Limit = Field(20, description="At most this many messages per page.")
    cursor: Id | None = Field(None, description="next_cursor of the previous page: the messages after it.")
    agent_name: ReadAs = None
    include_bcc: bool = with_bcc("Also list the bcc recipients (bcc) of each message, whoever sent it")


class ThreadMessage(Message):
    sender_kind: SenderKind  # (as unified_inbox's: a reader tells the overseer's mail without a whois per sender)


class Thread(Output):
    thread_id: str
    messages: list[ThreadMessage]
    next_cursor: Id | None = Field(description="Pass as cursor for the next page; null on the last page.")


def get_thread(db: sqlite3.Connection, args: GetThreadInput) -> Thread:
    """A thread's messages, oldest first, a page at a time (limit, and at most ~4 MiB of bodies)."""
    project = find_project(db, args.project_key)
    viewers = reader(db, project, args.agent_name)
    where, params = in_thread(db, project, args.thread_id, viewers, after=args.cursor or 0, limit=args.limit + 1, newest=False)
    rows = db.execute(
        f"SELECT {message_columns(None if args.include_bodies else 0)}, s.kind AS sender_kind"
        f" FROM messages m JOIN agents s ON s.id = m.sender_id WHERE {where} ORDER BY m.id LIMIT ?", (*params, args.limit + 1),
    )
    page, more = within_page(rows, args.limit, body_of if args.include_bodies else None)  # what is past it is never read
    if not page and args.cursor is None:
        raise no_thread(db, project, args.thread_id, viewers)  # (a page holds at least its first message)
    messages = messages_from_rows(db, project, page, viewer_id=viewers, bodies=args.include_bodies, all_bcc=args.include_bcc,
                                  model=ThreadMessage)
    return Thread(thread_id=args.thread_id, messages=messages, next_cursor=page[-1]["id"] if more else None)


# Lines worth surfacing, recognised without a language model (deterministic).
# A TODO line may be a list's item ("- TODO: ...", "2. Action: ..."), as a checkbox is.
_ACTION = re.compile(
    r"^(?:[-*+]\s*\[ \]\s*|(?:[-*+]\s+|\d+[.)]\s+)?(?:TODO|FIXME|ACTION(?: ITEM)?|NEXT(?: STEP)?S?)\b[:\s-]*)(?P<text>.+)", re.I
)
_POINT = re.compile(
    r"^(?:#{1,6}\s+|[-*+]\s+(?:\[[xX]\]\s*)?|\d+[.)]\s+)(?P<text>.+)"
    r"|^(?P<flagged>.*\b(?:decided|decision|agreed|must|blocker|blocked|important|note|conclusion)\b.*)$",
    re.I,
)
_MAX_ITEMS = 20
# A key point or action item is a line, read up to here: a regular expression over a 256 KiB
# line held the GIL (and so the event loop) ~6 ms, and an item is meant to be read at a glance.
_MAX_LINE = 300
# Of each message, a summary reads the first DIGEST_LINES lines of its first DIGEST_CHARS
# characters: 500 bodies of 256 KiB held the event loop 1.5 s (and 128 MB); now at most 2 MB
# and 25,000 lines (~0.1 s, in a thread).
DIGEST_CHARS = 4096
DIGEST_LINES = 50


class OpenAck(Output):
    message_id: MessageId
    agent: str = Field(description="The recipient yet to acknowledge it (another project's as Name@slug).")
    subject: str = Field(description="The message's subject.")
    sender: str = Field(description="Who sent the message.")
    created_ts: str = Field(description="When the message was sent.")


# A summary digests the bodies of a thread's newest messages only, so it costs the same at any
# length (the counts and participants cover the whole thread: thread_summaries.header).
DIGESTED = 500
# ... and lists the newest open acks of those, counting the rest: 500 messages to 99 agents each
# made 45,540 (8.5 MB, refused as answer_too_large; a 630 KB digest page).
OPEN_ACKS = 100


class ThreadSummary(ThreadInfo):
    key_points: list[str] = Field(
        description=f"Headings, bullets and decision lines (their first 300 characters), prefixed with their author;"
        f" from the first {DIGEST_LINES} lines ({DIGEST_CHARS // 1024} KiB) of each of the newest {DIGESTED} messages."
    )
    action_items: list[str] = Field(
        description=f"Unchecked boxes and TODO/ACTION lines (their first 300 characters), prefixed with their author;"
        f" from the first {DIGEST_LINES} lines ({DIGEST_CHARS // 1024} KiB) of each of the newest {DIGESTED} messages."
    )
    open_acks: list[OpenAck] = Field(
        description=f"Recipients who have not acknowledged one of the newest {DIGESTED} messages that asks for it:"
        f" the newest {OPEN_ACKS} (by message), oldest first."
    )
    open_acks_more: int = Field(0, description="How many more such (recipient, message) are waiting, older than those listed.")


def extract(messages: list[Message]) -> tuple[list[str], list[str]]:
    """(key points, action items) from the message bodies, in thread order, without repeats."""
    points: dict[str, None] = {}
    actions: dict[str, None] = {}
    for message in messages:
        in_code = False
        for line in (message.body_md or "")[:DIGEST_CHARS].splitlines()[:DIGEST_LINES]:
            line = line.strip()[:_MAX_LINE]
            if line.startswith("```"):
                in_code = not in_code
            if in_code or not line or line.startswith("```"):
                continue
            if match := _ACTION.match(line):
                actions.setdefault(f"{message.sender}: {match['text'].strip()}", None)
            elif len(points) < _MAX_ITEMS and (match := _POINT.match(line)):  # the first _MAX_ITEMS are kept
                points.setdefault(f"{message.sender}: {(match['text'] or match['flagged']).strip()}", None)
    return list(points)[:_MAX_ITEMS], list(actions)[:_MAX_ITEMS]


class SummarizeThreadInput(Input):
    project_key: ProjectKey
    thread_id: ThreadId
    agent_name: ReadAs = None
    include_bcc: bool = with_bcc("open_acks lists bcc recipients too")


def open_acks(db: sqlite3.Connection, messages: list[Message], viewers: frozenset[int] | None = None, with_bcc: bool = False
              ) -> tuple[list[OpenAck], int]:
    """The newest OPEN_ACKS recipients yet to acknowledge one of these messages (a digest's) that
    asks for it (another project's as Name@slug), oldest first, with the message's subject,
    sender and time (what a reader needs to tell which one it is); and how many more (older) there
    are. A bcc recipient is listed only to the message's sender and to itself (one of the viewers),
    or to the overseer who asks (with_bcc)."""
    marks, by_viewers = placeholders(viewers) if viewers else "NULL", [] if with_bcc else list(viewers or ()) * 2
    seen = "" if with_bcc else f" AND (r.kind != 'bcc' OR m.sender_id IN ({marks}) OR r.agent_id IN ({marks}))"

    def waiting(ids: list[int], joins: str = "") -> str:
        return (f" FROM message_recipients r JOIN messages m ON m.id = r.message_id{joins} WHERE r.message_id IN"
                f" ({placeholders(ids)}) AND r.ack_ts IS NULL{seen}")

    # How many each message waits for, then the rows of the newest messages only: ordering every
    # one by name read and sorted them all (45,540: 60 ms).
    asking = [message.id for message in messages if message.ack_required]
    counts = dict(db.execute(f"SELECT r.message_id, count(*){waiting(asking)} GROUP BY r.message_id",
                             (*asking, *by_viewers)).fetchall()) if asking else {}
    newest, listed = [], 0
    for message_id in sorted(counts, reverse=True):
        if listed >= OPEN_ACKS:
            break
        newest.append(message_id)
        listed += counts[message_id]
    joins = " JOIN agents a ON a.id = r.agent_id JOIN projects p ON p.id = a.project_id JOIN agents s ON s.id = m.sender_id"
    rows = db.execute(
        f"SELECT r.message_id, {RECIPIENT_ADDRESS}, m.subject, s.name, m.created_ts{waiting(newest, joins)}"
        " ORDER BY r.message_id, a.name", (*newest, *by_viewers),
    ).fetchall()[-OPEN_ACKS:] if newest else []
    return [OpenAck(message_id=mid, agent=name, subject=subject, sender=sender, created_ts=created_ts)
            for mid, name, subject, sender, created_ts in rows], sum(counts.values()) - len(rows)


def digest(db: sqlite3.Connection, project: sqlite3.Row, thread_id: str, viewers: frozenset[int] | None, with_bcc: bool = False
           ) -> tuple[list[Message], list[OpenAck], int]:
    """The thread's newest DIGESTED messages the viewers see (oldest first), their newest open
    acks (bcc recipients' too: with_bcc) and how many more they have."""
    messages = messages_in_thread(db, project, thread_id, viewers=viewers, newest=DIGESTED, body_chars=DIGEST_CHARS)
    return messages, *open_acks(db, messages, viewers, with_bcc)


def summary(thread_id: str, header: dict, messages: list[Message], acks: list[OpenAck], more_acks: int) -> dict:
    """The fields of a ThreadSummary: the thread's header (thread_summaries.header), and what
    its newest messages (oldest first) and their open acks (and `more_acks` older) say."""
    key_points, action_items = extract(messages)
    return dict(thread_id=thread_id, subject=header["subject"], message_count=header["message_count"],
                **thread_summaries.shown(header["participants"]), first_ts=header["first_ts"],
                last_ts=header["last_ts"], key_points=key_points, action_items=action_items, open_acks=acks,
                open_acks_more=more_acks)


def summarize_thread(db: sqlite3.Connection, args: SummarizeThreadInput) -> ThreadSummary:
    """A deterministic digest of a thread: participants, counts, and the key points, action
    items and open acks of its newest 500 messages."""
    project = find_project(db, args.project_key)
    viewers = reader(db, project, args.agent_name)
    header = thread_summaries.header(db, project, args.thread_id, viewers)
    if header is None:
        raise no_thread(db, project, args.thread_id, viewers)
    return ThreadSummary(**summary(args.thread_id, header, *digest(db, project, args.thread_id, viewers, args.include_bcc)))


TOOLS = [
    tool(list_threads, read_only=True, acts_as="agent_name", off_loop=True),  # participants: 50 threads of 200 each 15-30 ms
    tool(get_thread, read_only=True, acts_as="agent_name", off_loop=True),
    tool(summarize_thread, read_only=True, acts_as="agent_name", off_loop=True),
]
