"""Contacts and contact policies: who may write to whom, within a project and across projects.

Each agent chooses who may write to it (set_contact_policy):

- open: anyone.
- auto (the default): agents it has exchanged mail with (it wrote to them, or someone wrote
  to both), or whose active file reservations overlap its own; anyone else needs an
  approved contact.
- contacts_only: approved contacts only.
- block_all: nobody, not even approved contacts.

Under auto and contacts_only an agent may always answer: whoever wrote to you, or asked
you for contact, may be written back. A contact is one row per pair of agents: asked for
with request_contact, answered with respond_contact; once approved both may write to each
other until it expires. See docs/contacts.md.
"""

import sqlite3
from typing import Annotated, Literal

from pydantic import Field

from .. import clock
from ..archive import outbox
from ..config import get_settings
from ..store.db import placeholders
from ..errors import Conflict, NotAdmitted, NotFound, TooManyRequests
from ..fields import AgentAddress, AgentName, ProjectKey, Storable, acting_agent
from ..ids import stable_id
from ..registry import Input, Output, tool
from . import correspondents
from .agents import Agent, ContactPolicy, address, describe_agent, find_agent, find_agents, refuse_inactive, refusing
from .messages import notify
from .paging import CURSOR_HELP, NEXT_HELP, Keyset, PageCursor, PageLimit
from .projects import find_project, project_by_id
from .reservations import overlap_peers

DEFAULT_TTL = 30 * 24 * 3600
TtlSeconds = Annotated[int, Field(ge=60, le=365 * 24 * 3600, description="How long an approval lasts, in seconds.")]
Reason = Annotated[Storable, Field(max_length=1000, description="Why you want to write; the other agent reads it (in a notice's body).")]


def contact_id(a: int, b: int) -> int:
    # One row per pair, whichever of the two asked.
    return stable_id("contact", min(a, b), max(a, b))


# --- The delivery check -------------------------------------------------------------------


def _contacts_and_answers(db: sqlite3.Connection, sender_id: int, ids: list[int]) -> set[int]:
    """Which of `ids` the sender may write to under any policy but block_all: an approved
    contact, a request from them, or a message from them to the sender."""
    contacts = {
        agent_id
        for (agent_id,) in db.execute(
            "SELECT CASE WHEN requester_id = ? THEN target_id ELSE requester_id END FROM contacts"
            f" WHERE id IN ({placeholders(ids)}) AND expires_ts > ?"
            "  AND (status = 'approved' OR (status = 'pending' AND requester_id != ?))",
            [sender_id, *(contact_id(sender_id, i) for i in ids), clock.now(), sender_id],
        )
    }
    rest = [agent for agent in ids if agent not in contacts]
    return contacts | correspondents.wrote_to(db, rest, sender_id, (correspondents.TO, correspondents.BCC))


def _shared_threads(db: sqlite3.Connection, sender_id: int, ids: list[int]) -> set[int]:
    """Which of `ids` have exchanged mail with the sender: the sender wrote to them (to/cc),
    or both were to/cc recipients of one message (someone wrote to the two of them). Only
    mail actually delivered to another agent counts: posting to yourself into a thread makes
    you no one's correspondent, and a bcc or a notice introduces nobody. (A message from
    them to the sender is an answer: _contacts_and_answers.) Read from the pairs the write path
    keeps (tools/correspondents.py): index lookups, whatever either mailbox's size."""
    wrote = correspondents.written_to(db, sender_id, ids, (correspondents.TO,))
    return wrote | correspondents.addressed_with(db, sender_id, [agent for agent in ids if agent not in wrote])


def admitted(db: sqlite3.Connection, sender: sqlite3.Row, recipients: list[sqlite3.Row]) -> set[int]:
    """Ids of the recipients whose contact policy admits a message from `sender`.

    A few queries (index lookups) and one reservation lookup, whatever the number of recipients
    and the size of their mailboxes; each step runs only for the recipients still undecided."""
    ok = {agent["id"] for agent in recipients if agent["id"] == sender["id"] or agent["contact_policy"] == "open"}
    undecided = [agent for agent in recipients if agent["id"] not in ok and agent["contact_policy"] != "block_all"]
    if undecided:
        ok |= _contacts_and_answers(db, sender["id"], [agent["id"] for agent in undecided])
    auto = [agent for agent in undecided if agent["id"] not in ok and agent["contact_policy"] == "auto"]
    if auto:
        ok |= _shared_threads(db, sender["id"], [agent["id"] for agent in auto])
    neighbours = [a["id"] for a in auto if a["id"] not in ok and a["project_id"] == sender["project_id"]]
    if neighbours:
        ok |= overlap_peers(db, sender["project_id"], sender["id"], neighbours)
    return ok


def refuse_blocked(db: sqlite3.Connection, project: sqlite3.Row, sender: sqlite3.Row, recipients: list) -> None:
    """Conflict naming every recipient whose contact policy refuses `sender` (before anything is
    stored), and for each what to do: ask, wait for a pending request or for the time a declined
    one may be asked again, or leave it out."""
    ok = admitted(db, sender, recipients)
    blocked = [agent for agent in recipients if agent["id"] not in ok]
    if not blocked:
        return
    now = clock.now()
    requests = _own_requests(db, sender, [agent for agent in blocked if agent["contact_policy"] != "block_all"])
    # What stands in the way of asking (request_contact would refuse): the sender's own request.
    waits = {
        agent["id"]: wait for agent in blocked
        if agent["id"] in requests and (wait := _request_wait(project, sender, address(agent, project), requests[agent["id"]], now))
    }
    askable = [agent for agent in blocked if agent["contact_policy"] != "block_all" and agent["id"] not in waits]
    closed = [address(agent, project) for agent in blocked if agent["contact_policy"] == "block_all"]
    named = ", ".join(f"{address(agent, project)} ({agent['contact_policy']})" for agent in blocked)
    steps = [
        f"Call request_contact(project_key={project['slug']!r}, agent_name={sender['name']!r},"
        f" to_agent={address(agent, project)!r}) and send again once it accepts"
        for agent in askable
    ]
    steps += [note for _, note in waits.values()]
    hints = [f"{step}." for step in steps]  # each a sentence: a note starts with an agent's name
    if steps:
        hints.append("Otherwise send without them.")
    if closed:
        hints.append(f"{', '.join(closed)} accept{'s' if len(closed) == 1 else ''} no messages at all: leave them out.")
    states = sorted({state for state, _ in waits.values()})
    raise refusing([address(agent, project) for agent in blocked], NotAdmitted(
        f"Not sent: the contact policy of {named} does not admit messages from {sender['name']}"
        + (f" (contact request {' or '.join(states)})" if states else "")
        + ". Nothing was delivered to any recipient.",
        " ".join(hints),
    ))


def _own_requests(db: sqlite3.Connection, sender: sqlite3.Row, agents: list) -> dict[int, sqlite3.Row]:
    """{agent id: contacts row} of the contact requests the sender made to these agents (any state)."""
    if not agents:
        return {}
    ids = [contact_id(sender["id"], agent["id"]) for agent in agents]
    rows = db.execute(
        f"SELECT * FROM contacts WHERE id IN ({placeholders(ids)}) AND requester_id = ?", [*ids, sender["id"]]
    )
    return {row["target_id"]: row for row in rows}


def _request_wait(project: sqlite3.Row, sender: sqlite3.Row, target: str, row: sqlite3.Row, now: str) -> tuple[str, str] | None:
    """(state, what to do) while the sender's own request to `target` keeps it from asking again
    (as request_contact decides): pending, declined, or lapsed within the hour. None: it may ask."""
    if row["status"] == "approved":
        return None  # lapsed (else the target admitted the sender): asked for again at once
    if row["status"] == "pending" and row["expires_ts"] > now:
        return "pending", pending_note(project, sender, target, row["requested_ts"])
    again = ask_again_after(row)
    if again <= now:
        return None
    if row["status"] == "denied":
        return "declined", (
            f"{target} declined your contact request at {row['responded_ts']}: request_contact is refused until {again}."
            f" Meanwhile write to agents that admit you, or ask the person who runs you to settle it with {target}"
        )
    return "lapsed", f"Your contact request to {target} of {row['requested_ts']} lapsed; you may ask again after {again}"


def pending_note(project: sqlite3.Row, requester: sqlite3.Row, target: str, since: str) -> str:
    """What a requester is told while its contact request waits for an answer (a clause: no final stop)."""
    return (
        f"Your contact request to {target} is pending since {since}; {target} has been notified (a notice in its inbox)"
        f" and answers with respond_contact. Meanwhile wait_for_mail(project_key={project['slug']!r},"
        f" agent_name={requester['name']!r}) tells you when it answers (a notice), then send again"
    )


# --- Contacts -----------------------------------------------------------------------------


class Contact(Output):
    from_agent: str = Field(description="Who asked (Name@project if of another project).")
    to_agent: str = Field(description="Who was asked, and answers.")
    status: Literal["pending", "approved", "denied", "expired"]
    reason: str
    requested_ts: str
    responded_ts: str | None
    expires_ts: str = Field(description="When the request, approval or denial lapses.")
    next_step: str | None = Field(None, description="What to do now, while the request is pending.")


_CONTACTS = outbox.CONTACT_ROWS


def _contact(row: sqlite3.Row, project: sqlite3.Row, now: str) -> Contact:
    """A contacts row (selected with _CONTACTS) as seen from `project`."""

    def side(prefix: str) -> str:
        agent = {"name": row[f"{prefix}_name"], "project_id": row[f"{prefix}_project_id"]}
        return address(agent | {"project_slug": row[f"{prefix}_slug"]}, project)

    return Contact(
        from_agent=side("requester"),
        to_agent=side("target"),
        status=row["status"] if row["expires_ts"] > now else "expired",
        **{key: row[key] for key in ("reason", "requested_ts", "responded_ts", "expires_ts")},
    )


def _find_contact(db: sqlite3.Connection, a: sqlite3.Row, b: sqlite3.Row) -> sqlite3.Row | None:
    return db.execute(f"{_CONTACTS} WHERE c.id = ?", (contact_id(a["id"], b["id"]),)).fetchone()


def _store(db, requester, target, *, status, reason, ttl, requested_ts, responded_ts, expires_ts) -> sqlite3.Row:
    """The pair's contact as asked or answered now, and its archive file."""
    key = put_contact(db, requester["id"], target["id"], (status, reason, ttl, requested_ts, responded_ts, expires_ts))
    outbox.record_contact(db, key)
    return _find_contact(db, requester, target)


def put_contact(db: sqlite3.Connection, requester: int, target: int, state: tuple) -> int:
    """The pair's row, with `state` (outbox.CONTACT_COLUMNS), updated in place (its archive version
    goes on from the row's) or made; its id."""
    key = contact_id(requester, target)
    if not db.execute("UPDATE contacts SET requester_id = ?, target_id = ?, status = ?, reason = ?, ttl_seconds = ?,"
                      " requested_ts = ?, responded_ts = ?, expires_ts = ? WHERE id = ?", (requester, target, *state, key)).rowcount:
        db.execute("INSERT INTO contacts (requester_id, target_id, status, reason, ttl_seconds, requested_ts, responded_ts,"
                   " expires_ts, id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (requester, target, *state, key))
    return key


def _answer(db, project, responder, requester, row, accept: bool, ttl: int, now: str) -> sqlite3.Row:
    """Record the responder's decision on the requester's request and tell the requester."""
    stored = _store(
        db, requester, responder, status="approved" if accept else "denied", reason=row["reason"], ttl=ttl,
        requested_ts=row["requested_ts"], responded_ts=now, expires_ts=clock.later(now, ttl),
    )
    home = project_by_id(db, requester["project_id"])
    name = address(responder, home)  # as the requester's project spells it
    if accept:
        body = f"{name} accepted your contact request: you may write to each other until {stored['expires_ts']}."
    else:
        body = f"{name} declined your contact request; you cannot ask again before {ask_again_after(stored)}."
    outcome = "accepted" if accept else "declined"
    if not requester["retired_ts"] and not home["archived_ts"]:  # a notice reaches neither: the answer stands all the same
        notify(db, project, responder, address(requester, project), f"Contact request {outcome} by {name}", body)
    return stored


FLOOD_WINDOW = 3600  # seconds


def refuse_flood(db: sqlite3.Connection, requester: sqlite3.Row, target: sqlite3.Row, now: str) -> None:
    """429 once the requester, or all agents of its project together, filed the configured
    number of contact requests within the last hour (CONTACT_REQUESTS_PER_AGENT_PER_HOUR,
    CONTACT_REQUESTS_PER_PROJECT_PER_HOUR), or the target was asked that often by anyone
    (CONTACT_REQUESTS_PER_TARGET_PER_HOUR): throwaway identities, and throwaway projects, cannot
    flood an inbox with requests carrying their text. Counted in the database (a request is a
    write anyway), so the limits hold across processes and Lambda containers."""
    settings = get_settings()
    since = clock.later(now, -FLOOD_WINDOW)
    checks = [
        ("this agent filed", settings.contact_requests_per_agent_per_hour,
         "SELECT min(requested_ts), count(*) FROM contacts WHERE requester_id = ? AND requested_ts > ?", requester["id"]),
        ("the agents of this project filed", settings.contact_requests_per_project_per_hour,
         "SELECT min(c.requested_ts), count(*) FROM contacts c JOIN agents a ON a.id = c.requester_id"
         " WHERE a.project_id = ? AND c.requested_ts > ?", requester["project_id"]),
    ]
    if target["contact_policy"] != "open":  # an open agent is sent no notice: asking it floods nothing
        checks.append(("the agent you ask was sent", settings.contact_requests_per_target_per_hour,
                       # (one answered the instant it was made was answered by a policy: no notice was sent)
                       "SELECT min(requested_ts), count(*) FROM contacts WHERE target_id = ? AND requested_ts > ?"
                       " AND responded_ts IS NOT requested_ts", target["id"]))
    for who, limit, sql, key in checks:
        if not limit:
            continue
        oldest, count = db.execute(sql, (key, since)).fetchone()
        if count >= limit:
            wait = clock.seconds_until(clock.later(oldest, FLOOD_WINDOW), now)
            raise TooManyRequests(
                f"Too many contact requests: {who} {count} in the last hour (limit {limit}).",
                f"Retry after {wait} seconds, or write to agents that already admit you.",
                wait,
            )


def ask_again_after(row: sqlite3.Row) -> str:
    """When the requester of a lapsed or declined request may ask again: once it has ended, and
    an hour after it asked (FLOOD_WINDOW)."""
    return max(row["expires_ts"], clock.later(row["requested_ts"], FLOOD_WINDOW))


class RequestContactInput(Input):
    project_key: ProjectKey
    agent_name: AgentName = acting_agent("from_agent", description="You: the agent asking.")
    to_agent: AgentAddress
    reason: Reason = ""
    ttl_seconds: TtlSeconds = DEFAULT_TTL


def request_contact(db: sqlite3.Connection, args: RequestContactInput) -> Contact:
    """Ask another agent (of this or another project, as Name@project) for permission to write to it.

    The other agent gets a notice in its inbox and answers with respond_contact; once it
    accepts, both of you may write to each other for ttl_seconds (30 days by default).
    You may already write back to it meanwhile. An agent with the open policy accepts at
    once, one with block_all refuses; asking an agent that has asked you accepts its
    request. Asking again while pending changes nothing."""
    project = find_project(db, args.project_key)
    requester, target = find_agents(db, project, [args.agent_name, args.to_agent])
    if requester["id"] == target["id"]:
        # Well-formed, but to_agent is the asker (also when spelt Name@project): a clash with what
        # is stored, not a bad argument, like the refusals below.
        raise Conflict(f"{requester['name']} asked itself for contact.", "Name another agent in to_agent.")
    refuse_inactive(project, requester, [target])
    name = address(target, project)
    if target["contact_policy"] == "block_all":
        raise Conflict(
            f"{name} accepts no messages and no contact requests (contact policy block_all); nothing was requested.",
            f"Only {name} can change that, with set_contact_policy.",
        )
    now = clock.now()
    row = _find_contact(db, requester, target)
    live = row is not None and row["expires_ts"] > now
    asked_by_me = live and row["requester_id"] == requester["id"]
    if live and row["status"] == "approved":
        return _contact(row, project, now)  # nothing new to ask
    if asked_by_me and row["status"] == "pending":
        return _pending(_contact(row, project, now), project, requester, name)
    if asked_by_me and row["status"] == "denied" and target["contact_policy"] != "open":  # open since: admits anyone
        raise Conflict(
            f"{name} declined your contact request at {row['responded_ts']}.",
            f"You may ask again after {ask_again_after(row)}.",
        )
    if live and row["status"] == "pending":  # the target asked first: this is consent
        return _contact(_answer(db, project, requester, target, row, True, args.ttl_seconds, now), project, now)
    again = ask_again_after(row) if row is not None and row["requester_id"] == requester["id"] else now
    if again > now and row["status"] in ("pending", "denied") and target["contact_policy"] != "open":
        # Its request lapsed or was declined within the hour (a short ttl_seconds ends either
        # soon): asked again at once, each ask would be a new notice in the target's inbox.
        raise TooManyRequests(
            f"{requester['name']} asked {name} for contact at {row['requested_ts']}: one request to an agent an hour.",
            f"Ask again after {again}, or write to agents that already admit you.", clock.seconds_until(again, now),
        )
    refuse_flood(db, requester, target, now)
    if target["contact_policy"] == "open":
        stored = _store(
            db, requester, target, status="approved", reason=args.reason, ttl=args.ttl_seconds, requested_ts=now,
            responded_ts=now, expires_ts=clock.later(now, args.ttl_seconds),
        )
        return _contact(stored, project, now)
    stored = _store(
        db, requester, target, status="pending", reason=args.reason, ttl=args.ttl_seconds, requested_ts=now,
        responded_ts=None, expires_ts=clock.later(now, args.ttl_seconds),
    )
    home = project_by_id(db, target["project_id"])
    asker = address(requester, home)
    notify(
        db, project, requester, address(target, project), f"Contact request from {asker}",
        f"{asker} asks to write to you" + (f": {args.reason}" if args.reason else ".") + "\n\n"
        f"Answer with respond_contact(project_key={home['slug']!r}, agent_name={target['name']!r},"
        f" from_agent={asker!r}, accept=true) or accept=false. You may write to {asker} already.",
    )
    return _pending(_contact(stored, project, now), project, requester, name)


def _pending(contact: Contact, project: sqlite3.Row, requester: sqlite3.Row, target: str) -> Contact:
    note = pending_note(project, requester, target, contact.requested_ts)
    return contact.model_copy(update={"next_step": note + "; or write to others meanwhile."})


class RespondContactInput(Input):
    project_key: ProjectKey
    agent_name: AgentName = acting_agent("to_agent", description="You: the agent that was asked.")
    from_agent: AgentAddress = Field(description="Who asked (Name@project if of another project).")
    accept: bool
    ttl_seconds: TtlSeconds | None = Field(None, description="How long an approval lasts; default: what was asked for.")


def respond_contact(db: sqlite3.Connection, args: RespondContactInput) -> Contact:
    """Accept or decline a contact request; answering again changes the answer (e.g. revokes).

    Accepting lets both agents write to each other until the contact expires; declining
    keeps the asker from asking again until then. The asker gets a notice either way (unless
    it was retired since)."""
    project = find_project(db, args.project_key)
    responder, requester = find_agents(db, project, [args.agent_name, args.from_agent])
    row = _find_contact(db, responder, requester)
    if row is None or row["requester_id"] != requester["id"]:
        raise NotFound(
            f"{address(requester, project)} has not asked {responder['name']} for contact.",
            "list_contacts shows the requests you can answer; to ask them yourself, call request_contact.",
        )
    refuse_inactive(project, responder, [])  # (not the requester: one since retired is still answered, without a notice)
    now = clock.now()
    stored = _answer(db, project, responder, requester, row, args.accept, args.ttl_seconds or row["ttl_seconds"], now)
    return _contact(stored, project, now)


class ListContactsInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    limit: PageLimit = 100
    cursor: PageCursor | None = Field(None, description=CURSOR_HELP)


class Contacts(Output):
    contacts: list[Contact]
    next_cursor: str | None = Field(None, description=NEXT_HELP)


NEWEST_FIRST = Keyset((("requested_ts", "c.requested_ts"), ("id", "c.id")), descending=True)


def list_contacts(db: sqlite3.Connection, args: ListContactsInput) -> Contacts:
    """An agent's contacts and contact requests, both directions, most recently asked first, a page at a time."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    where, params = NEWEST_FIRST.after(args.cursor)
    rows = db.execute(
        f"{_CONTACTS} WHERE (c.requester_id = ? OR c.target_id = ?){where}{NEWEST_FIRST.order_by()} LIMIT ?",
        (agent["id"], agent["id"], *params, args.limit + 1),
    )
    page, cursor = NEWEST_FIRST.page(rows, args.limit)
    now = clock.now()
    return Contacts(contacts=[_contact(row, project, now) for row in page], next_cursor=cursor)


class SetContactPolicyInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    policy: ContactPolicy = Field(
        description="open: anyone may write. auto (default): agents you exchanged mail with, agents whose file"
        " reservations overlap yours, and approved contacts. contacts_only: approved contacts only. block_all: nobody."
        " Except under block_all, whoever wrote to you or asked you for contact may always be answered."
    )


def set_contact_policy(db: sqlite3.Connection, args: SetContactPolicyInput) -> Agent:
    """Choose who may write to an agent: open, auto (the default), contacts_only or block_all."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    if agent["contact_policy"] == args.policy:
        return describe_agent(project, agent)
    row = db.execute(
        "UPDATE agents SET contact_policy = ? WHERE id = ? RETURNING *", (args.policy, agent["id"])
    ).fetchall()[0]
    outbox.record_agent(db, project, row)  # its profile says so: a restore from the archive keeps it
    return describe_agent(project, row)


TOOLS = [
    tool(request_contact, acts_as="agent_name", idempotent=True),
    tool(respond_contact, acts_as="agent_name", destructive=True),  # declining revokes an accepted contact
    tool(list_contacts, read_only=True, acts_as="agent_name"),
    tool(set_contact_policy, acts_as="agent_name", destructive=True, repeat_safe=True),  # block_all takes away
]
