"""Per-agent identity tokens: proof that a caller may act as (or read for) an agent.

register_agent and create_agent_identity return a new agent's `registration_token` once;
only its SHA-256 is stored (a token is 256 random bits, so a plain hash is enough: no
salt or slow hash is needed against guessing). rotate_agent_token replaces it.

With REQUIRE_AGENT_TOKENS (default whenever AUTH_MODE is not none), invoke.py checks,
before the handler runs, every input field a tool declares with `tool(..., acts_as=...)`:
the named agent's token must come with the call (`registration_token`, or `sender_token`
on send_message / reply_message). An unknown project, an unknown agent, a missing token
and a wrong token all get the same 403, so a caller without access learns nothing about
which agents exist. A tool over a product checks the token against the agent's identity in
each linked project (one name, one identity and token per project) and reads only those
in which it matches; a token given that matches none is refused even when tokens are not
required (the tool would read nothing, and say nothing of why).
"""

import hashlib
import hmac
import secrets
import sqlite3

from .. import clock
from ..errors import NotFound, TokenRefused


# REST's other way to pass the acting agent's token (transports/rest.py): a GET then keeps it out
# of URLs (and so out of access logs, proxies and browser history).
HEADER = "X-Agent-Token"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(db: sqlite3.Connection, agent_id: int) -> str:
    """A new token for the agent, replacing any previous one: the only time it is seen."""
    token, now = "amt_" + secrets.token_urlsafe(32), clock.now()
    # Updated, or else inserted: not an upsert (docs/turso.md).
    db.execute("UPDATE agent_tokens SET token_sha256 = ?, created_ts = ? WHERE agent_id = ?", (digest(token), now, agent_id))
    db.execute(
        "INSERT INTO agent_tokens (agent_id, token_sha256, created_ts) VALUES (?, ?, ?) ON CONFLICT (agent_id) DO NOTHING",
        (agent_id, digest(token), now),
    )
    return token


def check(db: sqlite3.Connection, tool, args) -> None:
    """Forbidden unless the call carries the token of every agent it acts as. For a tool over a
    product (product_key), the token must be the agent's in one of the linked projects (the
    tool then reads only those: `matching_projects`)."""
    from ..tools.projects import find_project

    token = getattr(args, tool.token_field, None)
    for field in tool.acts_as:
        name = getattr(args, field, None)
        if name is None:
            continue  # the tool acts as nobody (e.g. get_message without agent_name)
        if getattr(args, "product_key", None) is not None and getattr(args, "project_key", None) is None:
            if not matching_projects(db, args.product_key, name, token):
                raise refused(tool.token_field, name)
            continue
        project_key = getattr(args, "project_key", None) or getattr(args, "human_key", None)
        try:
            project = find_project(db, project_key)
        except NotFound:
            if tool.may_create:
                continue
            raise refused(tool.token_field, name) from None
        stored = _stored(db, project["id"], name)
        if stored is None and tool.may_create:
            continue  # registering a new agent
        if not _matches(token, stored[0] if stored else None):
            raise refused(tool.token_field, name)


def matching_projects(db: sqlite3.Connection, product_key: str, name: str, token: str | None) -> list:
    """The product's linked projects in which `name` is an agent whose token is `token`."""
    from ..tools.products import find_product, linked_projects

    try:
        projects = linked_projects(db, find_product(db, product_key))
    except NotFound:
        return []
    return [project for project in projects if _matches(token, (_stored(db, project["id"], name) or (None,))[0])]


def holds_token(db: sqlite3.Connection, agent_id: int, token: str | None) -> bool:
    """Whether `token` is this agent's token."""
    row = db.execute("SELECT token_sha256 FROM agent_tokens WHERE agent_id = ?", (agent_id,)).fetchone()
    return _matches(token, row[0] if row else None)


def _stored(db: sqlite3.Connection, project_id: int, name: str):
    """(token hash or None,) for an existing agent, None for no such agent."""
    from ..tools.agents import agent_id

    return db.execute(
        "SELECT t.token_sha256 FROM agents a LEFT JOIN agent_tokens t ON t.agent_id = a.id WHERE a.id = ?",
        (agent_id(project_id, name),),
    ).fetchone()


def _matches(token: str | None, stored: str | None) -> bool:
    # compare_digest even when nothing is stored: the same work whether or not the agent exists
    matches = hmac.compare_digest(digest(token or ""), stored or "")
    return token is not None and stored is not None and matches


def refused(field: str, name: str) -> TokenRefused:
    """The 403 for a call without this agent's token in `field` (the same whatever was wrong)."""
    return TokenRefused(
        f"Not allowed to act as agent {name!r} here: {field} is missing or wrong.",
        f"Pass {field} (over REST, or the {HEADER} header, which keeps it out of URLs): the registration_token that"
        " register_agent (or rotate_agent_token) gave this agent.",
    )
