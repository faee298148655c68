"""What a credential may do: its role, and the projects it reaches (IMAP-style ACLs).

A principal (chalicelib/security/auth.py) carries a role and, if scoped, a set of projects
(slugs or human keys). invoke.py calls `authorize` for every tool call, inside the call's
transaction, before the agent-token check and the handler:

- the role: a reader calls read-only tools only; a writer every tool but the admin-only ones
  (ADMIN_ONLY); an admin everything;
- the projects: every project the call names (project_key, human_key, the @project of each
  Name@project address, and every linked project of a product for the tools that span one)
  must be in scope; an unknown project out of scope is refused the same way as a known one,
  so the refusal tells nothing about which projects exist. A tool that names no project
  reaches them all (archive_status without project_key), so a scoped principal may call it
  only if it is in GLOBAL_OK;
- reading mail with agent tokens on: a non-admin caller must name the agent it reads as
  (READS_MAIL_AS; that agent's token is then checked like any acts_as field), and the tool
  shows only mail that agent sent or received. The overseer's views across agents (the
  unified inbox, a project's attention views without agent_name) are the admin's.

A product the principal does not see (tools/products.py: seen_by; list_products leaves it
out) is answered as a missing one. `narrowed_input` then has list_projects and list_products
ask for the principal's projects only (and unified_inbox of a product read those of its linked projects), and `visible_output` narrows the projects a product lists, in every tool's answer. A
project joins (products_link) only a product that links no project out of scope.
An unrestricted principal (admin of every project: AUTH_MODE=none, plain bearer tokens, the
CLI) returns at the first line: no query, no cost on the hot path.
"""

import sqlite3
import unicodedata
from contextlib import contextmanager
from contextvars import ContextVar

from ..errors import Forbidden, NotFound, ToolError
from .auth import OPERATOR, ROLES, Principal, current

ADMIN_ONLY = frozenset({
    "archive_project",  # hides and freezes a whole project
    "unarchive_project",
    "install_precommit_guard",  # writes into a git work tree on the server's machine
    "uninstall_precommit_guard",
    "send_overseer_message",  # writes as the human overseer, past every contact policy
    "ensure_overseer",  # the name a person acts under (force_release_file_reservation)
    "set_retention_policy",  # decides when a project's mail is purged
})

# Read-only in the database, but it hands out a place to store bytes (an upload URL): a writer's,
# as is the upload itself (PUT /api/attachments, asgi.py).
STORES_BYTES = frozenset({"request_attachment_upload"})

# Tools that read mail, and the input field naming the agent they read as: with agent tokens
# required, a non-admin caller must give it (the handler then shows only that agent's mail).
READS_MAIL_AS = {
    "get_message": "agent_name",
    "get_thread": "agent_name",
    "summarize_thread": "agent_name",
    "list_threads": "agent_name",
    "search_messages": "agent_name",
    "macro_prepare_thread": "agent_name",
    "summarize_thread_product": "agent_name",
    "search_messages_product": "agent_name",
    # The attention views: without agent_name they list every agent's mail.
    "list_ack_required": "agent_name",
    "list_ack_overdue": "agent_name",
    "list_urgent_unread": "agent_name",
}

# Mail of every agent with no agent to read as (the web UI's inbox): with agent tokens
# required, the admin's (the operator, a human overseer) only.
OVERSEER_VIEWS = frozenset({"unified_inbox"})

# Tools whose call reaches every project linked to the product they name.
SPANS_PRODUCT = frozenset({"fetch_inbox_product", "search_messages_product", "summarize_thread_product"})

# Tools that name no project and are fine for a scoped principal (answers narrowed below, or harmless).
GLOBAL_OK = frozenset({"health_check", "list_projects", "list_products", "get_product", "ensure_product"})

# Tools asked for the principal's projects only (narrowed_input), and with a product key, those of its projects.
NARROWED = frozenset({"health_check", "list_projects", "list_products", "ensure_product", "unified_inbox"})

# Every input field that takes Name@project addresses (fields.AgentAddress; tests/test_authz_scopes.py
# checks that none is missing): the project an address names is checked like project_key.
ADDRESS_FIELDS = ("to", "cc", "bcc", "to_agent", "from_agent", "target", "recipient", "sender")


def required_role(tool) -> str:
    if tool.name in ADMIN_ONLY:
        return "admin"
    return "reader" if tool.read_only and tool.name not in STORES_BYTES else "writer"


def has_role(principal: Principal, needed: str) -> bool:
    """Whether the principal's role is `needed` or above."""
    return ROLES.index(principal.role) >= ROLES.index(needed)


def may_call(name: str) -> bool:
    """Whether the caller of the call being run may call the tool (as far as its role says): what a
    hint names must be callable, and an admin-only one is not a writer's (its call would get a 403)."""
    return name not in ADMIN_ONLY or has_role(current.get() or OPERATOR, "admin")


def require_role(principal: Principal, needed: str, what: str) -> None:
    """Forbidden unless the principal's role is `needed` or above."""
    if not has_role(principal, needed):
        raise Forbidden(
            f"{what} needs the {needed} role; this credential is a {principal.role}.",
            "Ask the operator for a credential with that role (docs/security.md).",
        )


def authorize(db: sqlite3.Connection, tool, args, principal: Principal, tokens_required: bool) -> None:
    """Forbidden unless `principal` may make this call (invoke.py calls it unless the principal is unrestricted)."""
    require_role(principal, required_role(tool), tool.name)
    if getattr(args, "include_bcc", False) and principal.role != "admin":  # (fields.with_bcc)
        raise Forbidden(
            f"{tool.name} with include_bcc tells whom mail was bcc'd to: it needs the admin role; this credential is a {principal.role}.",
            "Leave include_bcc out: a bcc recipient stays the sender's secret.",
        )
    if tokens_required and principal.role != "admin":
        field = READS_MAIL_AS.get(tool.name)
        if field and getattr(args, field, None) is None:
            raise Forbidden(
                f"{tool.name} shows mail only to its sender and recipients: name the agent you read as.",
                f"Pass {field} and that agent's registration_token.",
            )
        if tool.name in OVERSEER_VIEWS:
            raise Forbidden(
                f"{tool.name} shows every agent's mail: it needs the admin role; this credential is a {principal.role}.",
                "Read as an agent instead: fetch_inbox or fetch_outbox with agent_name and its registration_token.",
            )
    if principal.projects is not None:
        _check_projects(db, tool, args, principal.projects)


def _check_projects(db: sqlite3.Connection, tool, args, scope: frozenset[str]) -> None:
    from ..tools.products import find_product, hidden_from, linked_projects
    from ..tools.projects import find_project, is_path, normalize_human_key, slugify

    keys = [value for field in ("project_key", "human_key") if (value := getattr(args, field, None))]
    for field in ADDRESS_FIELDS:
        value = getattr(args, field, None)
        for address in [value] if isinstance(value, str) else value or ():
            if "@" in address:
                keys.append(address.partition("@")[2])
    for key in keys:
        try:
            project = find_project(db, key)
        except NotFound:  # not created yet (ensure_project): in scope if named there
            name = normalize_human_key(key) if is_path(key) else key
            if name in scope or (is_path(key) and _gets_slug_in(db, slugify(name), scope)):
                continue
            raise _out_of_scope(key) from None
        if not in_scope(project, scope):
            raise _out_of_scope(key)
    if getattr(args, "product_key", None) is not None and hidden_from(db, args.product_key, scope):
        raise _unseen_product(tool, args.product_key)
    if tool.name in SPANS_PRODUCT:
        try:
            projects = linked_projects(db, find_product(db, args.product_key))
        except NotFound:
            raise _out_of_scope(args.product_key) from None
        if any(not in_scope(project, scope) for project in projects):
            raise Forbidden(
                f"Product {args.product_key!r} links projects outside this credential's scope.",
                "Use the per-project tools on the projects in scope.",
            )
        keys.append(args.product_key)
    if tool.name == "products_link" or (tool.name == "ensure_product" and args.name):
        _check_joined_product(db, args.product_key, scope)
    if not keys and tool.name not in GLOBAL_OK and not (tool.name == "unified_inbox" and args.product_key):
        raise Forbidden(
            f"{tool.name} without a project reaches every project; this credential is scoped to some.",
            "Pass project_key.",
        )


def _check_joined_product(db: sqlite3.Connection, product_key: str, scope: frozenset[str]) -> None:
    """A project joins (and a name is given to) a product whose tools span all it links: not
    another scope's product (one that links a project out of scope, or that another scoped
    credential made), whose users would reach the project (and then be refused their own
    product), or see it renamed."""
    from ..tools.products import find_product, linked_projects, made_within

    try:
        product = find_product(db, product_key)
    except NotFound:
        return  # the handler says so
    # Made by a scope (maybe still empty): one reaching past the maker's would make it span more.
    beyond = not made_within(db, product, scope)
    if beyond or any(not in_scope(project, scope) for project in linked_projects(db, product)):
        raise Forbidden(
            f"Product {product_key!r} links projects outside this credential's scope: it cannot link a project of yours"
            " or be renamed with it.",
            "Link your project into a product of your own (ensure_product with another key).",
        )


# The scope of the call being run (invoke.run sets it for a scoped caller), so that a tool's hints
# and notes name no project out of it (tools/projects.py): that would tell the project exists.
_mentionable: ContextVar[frozenset[str] | None] = ContextVar("mentionable", default=None)


@contextmanager
def mentioning(scope: frozenset[str] | None):
    """Within it, may_mention answers for this scope (None: every project)."""
    token = _mentionable.set(scope)
    try:
        yield
    finally:
        _mentionable.reset(token)


def may_mention(project) -> bool:
    """Whether a hint or note of the call being run may name this project (a row)."""
    return in_scope(project, _mentionable.get())


def _gets_slug_in(db: sqlite3.Connection, plain: str, scope: frozenset[str]) -> bool:
    """Whether a new project of this plain slug would have a slug the scope lists: it gets the
    plain slug only while no other project has it (else one with 6 hex digits, outside the scope:
    a credential scoped to `alpha` made /Alpha, alpha-3f2a1c, which it could then not reach)."""
    return plain in scope and db.execute("SELECT 1 FROM projects WHERE slug = ?", (plain,)).fetchone() is None


def in_scope(project, scope: frozenset[str] | None) -> bool:
    """Whether a project (a row or an output with slug and human_key) is in the scope (None: all)."""
    return scope is None or not scope.isdisjoint(names_of(project))


def entry_names(db: sqlite3.Connection, scope: frozenset[str]) -> list[list[str]]:
    """Each entry of the scope with every name of the project it names (names_of); an entry
    that names no project yet, alone."""
    from ..tools.projects import project_named

    return [sorted({entry} | (names_of(row) if (row := project_named(db, entry)) else set())) for entry in sorted(scope)]


def names_of(project) -> set[str]:
    """The names a scope may list a project (a row or an output) by: its slug and its human key, and
    that key composed (NFC, as auth.scoped spells a path) if an older build stored it decomposed."""
    # A row (either backend's: turso's Row is no sqlite3.Row) or an output.
    slug, human_key = (project.slug, project.human_key) if hasattr(project, "slug") else (project["slug"], project["human_key"])
    return {slug, human_key} if human_key.isascii() else {slug, human_key, unicodedata.normalize("NFC", human_key)}


def _unseen_product(tool, product_key: str) -> ToolError:
    """A product this scope does not see (list_products leaves it out) gets what a missing one
    would: a NotFound, or the product tools' 403. ensure_product would create a missing one:
    it is refused, without saying a product holds the key, whose, its name or creation time (keys
    are one namespace, so that this key is not to be had is all a refusal can keep to)."""
    from ..tools.products import product_not_found

    if tool.name in SPANS_PRODUCT:
        return _out_of_scope(product_key)
    if tool.name == "ensure_product":
        return Forbidden(f"Product key {product_key!r} cannot be used by this credential.",
                         "Choose another product_key; list_products shows the products this credential can use.")
    return product_not_found(product_key)


def _out_of_scope(key: str) -> Forbidden:
    return Forbidden(
        f"Project {key!r} is not in this credential's scope (or does not exist).",
        "Use a project your credential lists (list_projects shows them), or ask the operator to extend its scope.",
    )


def narrowed_input(tool, args, principal: Principal):
    """health_check, list_projects and list_products of a scoped principal ask for its projects
    only: in their query, so that no count, page or cursor holds anything of the others; unified_inbox of a
    product reads those of its linked projects. ensure_product records them as a new product's owner."""
    if principal.projects is None or tool.name not in NARROWED:
        return args
    args = args.model_copy()
    args._scope = principal.projects
    return args


def check_delivered(db: sqlite3.Connection, output, scope: frozenset[str] | None) -> None:
    """Forbidden if a message the call sent reached a project out of scope: checked on what it
    delivered, since reply_message takes its recipients from the message it answers. The call's
    transaction (or savepoint) then rolls back: the message is never sent."""
    from ..tools.messages import SentMessage
    from ..tools.projects import find_project

    if scope is None or not isinstance(output, SentMessage):
        return
    message = output.message
    for slug in {address.partition("@")[2] for address in (*message.to, *message.cc, *message.bcc) if "@" in address}:
        if not in_scope(find_project(db, slug), scope):
            raise _out_of_scope(slug)


# Tools that answer one product with its linked projects.
ANSWERS_PRODUCT = frozenset({"get_product", "ensure_product", "products_link", "products_unlink"})


def visible_output(tool, output, principal: Principal):
    """The products' projects narrowed to the principal's scope (list_products, ANSWERS_PRODUCT);
    archive_status without the archive worker's last error (of any project's entry)."""
    scope = principal.projects
    if scope is not None and tool.name == "archive_status" and output.worker:
        return output.model_copy(update={"worker": output.worker.model_copy(update={"last_error": None})})
    if scope is None or (tool.name not in ANSWERS_PRODUCT and tool.name != "list_products"):
        return output

    def narrowed(product):
        return product.model_copy(update={"projects": [p for p in product.projects if in_scope(p, scope)]})

    if tool.name in ANSWERS_PRODUCT:
        return narrowed(output)
    return output.model_copy(update={"products": [narrowed(product) for product in output.products]})
