"""Waiting for mail with a durable cursor, and the views of what needs attention.

Message ids are time-ordered (new_id), but ids are made before their transaction commits:
a message committed later may carry a smaller id than one already seen (another writer
process, another Turso replica, a busy write lock). So a cursor is not "the last id seen".
It is a floor and the ids already seen above it: the next call returns every message
above the floor it did not return before. The floor trails the clock by CURSOR_WINDOW_SECONDS,
longer than any write takes from making its id to being visible (a push retries for at most
REPLICA_SYNC_TIMEOUT_MS, a replica pulls within a second). The cursor is self-contained
text, so it survives restarts and works on every process and replica (docs/mailbox.md).
"""

import re
import sqlite3
import time
from typing import Annotated

import orjson

from pydantic import Field, PrivateAttr

from .. import clock
from ..errors import InvalidArgument
from ..fields import AgentName, ProjectKey, with_bcc
from ..ids import id_at
from ..store.db import placeholders
from ..registry import Input, Output, tool
from .agents import find_agent
from .messages import INBOX_FILTERS, InboxMessage, inbox_items, inbox_page
from .projects import find_project

CURSOR_WINDOW_SECONDS = 60
MAX_SEEN = 1000  # ids a cursor remembers; beyond (1000 messages a minute), the oldest are let go
MAX_WAIT_SECONDS = 25  # under API Gateway's 29 s
_CURSOR = re.compile(r"^m1\.[0-9a-z]{1,13}(\.[0-9a-z]{1,13}){0,%d}$" % MAX_SEEN)


class Cursor:
    """A floor id and the ids above it already returned, as `m1.<floor>.<offset>...` (base 36)."""

    def __init__(self, floor: int, seen: set[int]) -> None:
        self.floor = floor
        self.seen = seen

    @classmethod
    def parse(cls, text: str) -> "Cursor":
        if not _CURSOR.fullmatch(text):  # fullmatch: Python's $ would let a final newline through
            raise not_given()
        floor, *offsets = (int(part, 36) for part in text.split(".")[1:])
        seen = {floor + offset for offset in offsets}
        if max(seen, default=floor) >= 2**63:  # 13 base-36 digits pass SQLite's largest integer (an OverflowError: a 500)
            raise not_given()
        return cls(floor, seen)

    def __str__(self) -> str:
        return ".".join(["m1", _base36(self.floor), *(_base36(id_ - self.floor) for id_ in sorted(self.seen))])

    def advanced(self, returned: list[int], first_left: int | None) -> "Cursor":
        """The cursor after returning `returned`; `first_left` is the smallest id not returned
        for lack of room (the floor must not pass it)."""
        floor = max(self.floor, id_at(time.time() - CURSOR_WINDOW_SECONDS))
        if first_left is not None:
            floor = min(floor, first_left)
        seen = sorted(id_ for id_ in self.seen.union(returned) if id_ >= floor)
        if len(seen) > MAX_SEEN:
            floor = seen[-MAX_SEEN]
            seen = seen[-MAX_SEEN:]
        return Cursor(floor, set(seen))


def not_given() -> InvalidArgument:
    return InvalidArgument(
        "cursor is not one wait_for_mail gave out.",
        "Pass the cursor of the previous wait_for_mail answer unchanged, or omit it to start from now.",
    )


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[digit] + digits
        if not number:
            return digits


class WaitForMailInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    cursor: Annotated[str, Field(max_length=14 * (MAX_SEEN + 1) + 3, json_schema_extra={"pattern": _CURSOR.pattern})] | None = Field(
        None, description="The cursor of the previous answer; omit it to wait for mail newer than this call."
    )
    timeout_seconds: Annotated[float, Field(ge=0, le=MAX_WAIT_SECONDS)] = Field(
        20, description=f"How long to wait when nothing is new (at most {MAX_WAIT_SECONDS}); 0 checks once."
    )
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    include_bodies: bool = Field(True, description="With each message's body_md: an answer then ends after ~4 MiB of"
                                                   " bodies (more: true).")


class MailArrived(Output):
    messages: list[InboxMessage] = Field(description="New messages, oldest first; empty after a timeout.")
    cursor: str = Field(description="Pass it to the next wait_for_mail: nothing is missed or repeated.")
    more: bool = Field(description="More new messages are waiting: call again at once.")
    _recipient_id: int = PrivateAttr(0)


def wait_for_mail(db: sqlite3.Connection, args: WaitForMailInput) -> MailArrived:
    """Wait until mail arrives for an agent (or the timeout), and return it with a cursor.

    Call it in a loop, each time with the cursor of the previous answer: every message is
    returned exactly once, across restarts and servers. Instead of polling fetch_inbox.
    Changes nothing (messages stay unread)."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    if args.cursor is None:  # from now: what is already there counts as seen
        start = Cursor(id_at(time.time() - CURSOR_WINDOW_SECONDS), set())
        rows = db.execute(  # one more than a cursor holds: then its floor rises past the older ones (advanced)
            "SELECT message_id FROM message_recipients WHERE agent_id = ? AND message_id >= ? ORDER BY message_id DESC LIMIT ?",
            (agent["id"], start.floor, MAX_SEEN + 1),
        ).fetchall()
        cursor, rows, left = start.advanced([row[0] for row in rows], None), [], None
    else:
        cursor = Cursor.parse(args.cursor)
        candidates = db.execute(  # ids first (index only): most above the floor may be seen already
            "SELECT message_id FROM message_recipients WHERE agent_id = ? AND message_id >= ? ORDER BY message_id LIMIT ?",
            (agent["id"], cursor.floor, args.limit + len(cursor.seen) + 1),
        ).fetchall()
        new = [row[0] for row in candidates if row[0] not in cursor.seen]
        chosen, left = new[: args.limit], (new[args.limit] if len(new) > args.limit else None)
        rows, cut = inbox_page(
            db, project["id"], agent["id"], f"AND r.message_id IN ({placeholders(chosen)})", chosen,
            order="ASC", limit=len(chosen), bodies=args.include_bodies,
        ) if chosen else ([], False)
        if cut:  # the bodies filled the answer: the rest comes with the next call
            chosen, left = chosen[: len(rows)], chosen[len(rows)]
        cursor = cursor.advanced(chosen, left)
    result = MailArrived(
        messages=[InboxMessage.model_validate_json(row) for row in rows], cursor=str(cursor), more=left is not None
    )
    result._recipient_id = agent["id"]
    return result


def whether_mail(args: WaitForMailInput) -> WaitForMailInput:
    """A check that finds whether new mail is there, and nothing more: one message, no body."""
    return args.model_copy(update={"limit": 1, "include_bodies": False})


def keep_waiting(args: WaitForMailInput, result: MailArrived):
    """While nothing arrived: the wake-up key (the recipient's id) and the next check's input,
    which goes on from this answer's cursor (a check run again without one would start from its
    own now, counting what arrived meanwhile as seen). None once there is mail."""
    if result.messages:
        return None
    return result._recipient_id, args.model_copy(update={"cursor": result.cursor})


# Views of what needs attention, for one agent or a whole project.


class AttentionInput(Input):
    project_key: ProjectKey
    agent_name: AgentName | None = Field(None, description="One agent's view; omit for every agent of the project.")
    limit: Annotated[int, Field(ge=1, le=500)] = 50
    include_bcc: bool = with_bcc("Every agent's view lists bcc recipients too; one agent's lists its own bcc copies anyway")


class AckOverdueInput(AttentionInput):
    older_than_minutes: Annotated[float, Field(gt=0, le=525_600)] = Field(
        60, description="Only messages waiting for an acknowledgement longer than this."
    )


class AttentionItem(InboxMessage):
    recipient: str = Field(description="Whose attention it needs.")


class Attention(Output):
    messages: list[AttentionItem] = Field(description="Oldest first.")


def _attention(db: sqlite3.Connection, args: AttentionInput, condition: str, created_before: str | None = None) -> Attention:
    """The oldest `limit` messages matching `condition` (on r, the recipient's row), older than
    `created_before` if given, of one agent or of every agent of the project (an item per
    recipient but bcc ones), through the condition's partial index (migrations/0020; every agent's: 0043)."""
    project = find_project(db, args.project_key)
    old_enough, params = (" AND m.created_ts < ?", [created_before]) if created_before else ("", [])
    if args.agent_name:
        agent = find_agent(db, project, args.agent_name)
        page, _ = inbox_page(db, project["id"], agent["id"], f"AND {condition}{old_enough}", params, order="ASC", limit=args.limit)
        return Attention(messages=[_item(json, agent["name"]) for json in page])
    # Every agent's: the project's recipient rows so marked, oldest first, through the condition's
    # partial index by project (migrations/0043), and only the `limit` oldest read whole; a message's
    # copies in the order of their agents' names. A bcc recipient stays hidden here, as in every
    # view but its own and its sender's (and the overseer's who asks).
    if not args.include_bcc:
        condition += " AND r.kind != 'bcc'"
    messages = " JOIN messages m ON m.id = r.message_id" if created_before else ""
    where = f"WHERE r.project_id = ? AND {condition}{old_enough}"
    last = db.execute(f"SELECT r.message_id FROM message_recipients r{messages} {where} ORDER BY r.message_id LIMIT 1 OFFSET ?",
                      (project["id"], *params, args.limit - 1)).fetchone()
    upto = 2**63 - 1 if last is None else last[0]  # every copy of the page's last message: the first by name are shown
    picked = sorted((message_id, name.lower(), agent, name) for message_id, agent, name in db.execute(
        f"SELECT r.message_id, r.agent_id, a.name FROM message_recipients r{messages} JOIN agents a ON a.id = r.agent_id"
        f" {where} AND r.message_id <= ? ORDER BY r.message_id", (project["id"], *params, upto)))[: args.limit]
    items = inbox_items(db, project["id"], [(message_id, agent) for message_id, _, agent, _ in picked])
    return Attention(messages=[_item(items[message_id, agent], name) for message_id, _, agent, name in picked])


def _item(inbox_json: str, recipient: str) -> AttentionItem:
    return AttentionItem.model_validate_json(inbox_json[:-1] + ',"recipient":' + orjson.dumps(recipient).decode() + "}")


def list_ack_required(db: sqlite3.Connection, args: AttentionInput) -> Attention:
    """Messages that require an acknowledgement not given yet (acknowledge_message gives it)."""
    return _attention(db, args, INBOX_FILTERS["ack_pending_only"])


def list_ack_overdue(db: sqlite3.Connection, args: AckOverdueInput) -> Attention:
    """Messages waiting for an acknowledgement for longer than older_than_minutes."""
    return _attention(db, args, INBOX_FILTERS["ack_pending_only"], created_before=clock.later(clock.now(), -args.older_than_minutes * 60))


def list_urgent_unread(db: sqlite3.Connection, args: AttentionInput) -> Attention:
    """Unread messages of importance high or urgent."""
    return _attention(db, args, f"{INBOX_FILTERS['urgent_only']} AND {INBOX_FILTERS['unread_only']}")


TOOLS = [
    # With bodies, an answer holds up to ~4 MiB: read and encoded in the slow-read lane (invoke._wait).
    tool(wait_for_mail, read_only=True, acts_as="agent_name", wait=keep_waiting, wait_probe=whether_mail,
         off_loop=lambda args: args.include_bodies),
    tool(list_ack_required, read_only=True, acts_as="agent_name"),
    tool(list_ack_overdue, read_only=True, acts_as="agent_name"),
    tool(list_urgent_unread, read_only=True, acts_as="agent_name"),
]
