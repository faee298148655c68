"""Products: a named group of projects (say a backend and a frontend repository).

An agent name belongs to one project; across the projects of a product, the same name is
taken to be the same agent. So the product tools read one agent's inbox, search the mail
and summarise a thread over every linked project, by running the project tools on each
linked project and merging what they return.
"""

import heapq
import sqlite3
from typing import Annotated

import orjson
from pydantic import AfterValidator, Field, PrivateAttr

from .. import clock
from ..archive import outbox
from ..errors import Conflict, NotFound
from ..fields import AgentName, NotBlank, ProjectKey, Timestamp, folded_name
from ..ids import stable_id
from ..names import PRODUCT_KEY_PATTERN
from ..registry import Input, Output, tool
from ..security.agent_tokens import matching_projects, refused
from ..security.scopes import entry_names
from ..store.db import placeholders
from . import thread_summaries
from .agents import agent_id
from .messages import (
    NEXT_OLDER_HELP, OLDER_THAN_HELP, FetchInboxInput, IncludeBodies, InboxMessage, Limit, OlderThan, ThreadId, fetch_inbox,
    within_page,
)
from .paging import CURSOR_HELP, NEXT_HELP, Keyset, PageCursor, PageLimit
from .projects import Project, among, find_project, project_by_id
from .search import INDEXING_HELP, QUERY_HELP, Cursor, SearchHit, search_projects
from .threads import DIGEST_CHARS, DIGESTED, OpenAck, ReadAs, ThreadSummary, messages_in_thread, open_acks, summary

KEY_RULES = "Product keys are 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, e.g. acme-shop."


def _product_key(value: str) -> str:
    if not PRODUCT_KEY_PATTERN.fullmatch(value):
        raise ValueError(f"{value!r} is not a valid product key. {KEY_RULES}")
    return value.lower()  # keys are case-insensitive: Acme-Shop and acme-shop are one product


ProductKey = Annotated[
    str, AfterValidator(_product_key),
    Field(description=f"The product's key (case-insensitive). {KEY_RULES}", json_schema_extra={"pattern": f"^{PRODUCT_KEY_PATTERN.pattern}$"}),
]


class Product(Output):
    product_key: str
    name: str
    created_ts: str
    projects: list[Project] = Field(description="The linked projects, by slug.")


def product_id(product_key: str) -> int:
    return stable_id("product", product_key)


def find_product(db: sqlite3.Connection, product_key: str) -> sqlite3.Row:
    row = db.execute("SELECT * FROM products WHERE id = ?", (product_id(product_key),)).fetchone()
    if row is None:
        raise product_not_found(product_key)
    return row


def product_not_found(product_key: str) -> NotFound:
    return NotFound(f"Product {product_key!r} not found.", "Create it with ensure_product, or see list_products for product keys.")


def seen_by(db: sqlite3.Connection, scope: frozenset[str], table: str = "products") -> tuple[str, list]:
    """SQL for "a credential scoped to `scope` sees the product" and its parameters: it links a
    project in scope, or links none and was made by an unrestricted caller or by a scope holding
    this one (made_within: one it may link its projects into, security/scopes.py)."""
    condition, keys = among(scope, "p")
    made, params = _made_within(db, scope, table)
    return (
        f"(EXISTS (SELECT 1 FROM product_projects l JOIN projects p ON p.id = l.project_id WHERE l.product_id = {table}.id"
        f" AND {condition}) OR (NOT EXISTS (SELECT 1 FROM product_projects l WHERE l.product_id = {table}.id) AND {made}))",
        [*keys, *params],
    )


def _made_within(db: sqlite3.Connection, scope: frozenset[str], table: str) -> tuple[str, list]:
    """SQL for "the product was made by an unrestricted caller, or by a scope holding every project
    of `scope`" and its parameters: projects, not spellings (w-a and /w/a are one), as each entry
    of `scope` comes with all its project's names (entry_names), one of which the owner's lists."""
    return (
        f"({table}.owner_scope IS NULL OR NOT EXISTS (SELECT 1 FROM json_each(?) mine WHERE NOT EXISTS ("
        f"SELECT 1 FROM json_each(mine.value) name JOIN json_each({table}.owner_scope) owned ON owned.value = name.value)))",
        [orjson.dumps(entry_names(db, scope)).decode()],
    )


def made_within(db: sqlite3.Connection, product: sqlite3.Row, scope: frozenset[str]) -> bool:
    """Whether the product was made by an unrestricted caller or by a scope holding `scope`'s projects."""
    condition, params = _made_within(db, scope, "products")
    return bool(db.execute(f"SELECT {condition} FROM products WHERE id = ?", (*params, product["id"])).fetchone()[0])


def hidden_from(db: sqlite3.Connection, product_key: str, scope: frozenset[str]) -> bool:
    """Whether the product exists but a credential scoped to `scope` does not see it (seen_by)."""
    condition, params = seen_by(db, scope)
    row = db.execute(f"SELECT NOT {condition} FROM products WHERE id = ?", (*params, product_id(product_key))).fetchone()
    return row is not None and bool(row[0])


def linked_projects(db: sqlite3.Connection, product: sqlite3.Row) -> list[sqlite3.Row]:
    return db.execute(
        "SELECT p.* FROM product_projects l JOIN projects p ON p.id = l.project_id"
        " WHERE l.product_id = ? ORDER BY p.slug, p.human_key",
        (product["id"],),
    ).fetchall()


def _product(db: sqlite3.Connection, row: sqlite3.Row) -> Product:
    return Product(
        product_key=row["product_key"],
        name=row["name"],
        created_ts=row["created_ts"],
        projects=[Project(**dict(project)) for project in linked_projects(db, row)],
    )


class EnsureProductInput(Input):
    product_key: ProductKey
    name: Annotated[NotBlank, Field(min_length=1, max_length=256)] | None = Field(  # a NUL was stored (and served in the UI)
        None, description="Display name; defaults to the key. Given for an existing product, it renames it."
    )
    _scope: frozenset[str] | None = PrivateAttr(None)  # a scoped caller's projects (security/scopes.py): the new product's owner


def ensure_product(db: sqlite3.Connection, args: EnsureProductInput) -> Product:
    """Create a product — a group of projects, such as a backend and a frontend repository —
    or return it if it exists (idempotent). Then link projects to it with products_link."""
    key = product_id(args.product_key)
    owner = orjson.dumps(sorted(args._scope)).decode() if args._scope is not None else None
    made = db.execute(
        "INSERT OR IGNORE INTO products (id, product_key, name, created_ts, owner_scope) VALUES (?, ?, ?, ?, ?)",
        (key, args.product_key, args.name or args.product_key, clock.now(), owner),
    ).rowcount
    renamed = args.name and db.execute("UPDATE products SET name = ? WHERE id = ? AND name != ?", (args.name, key, args.name)).rowcount
    if made or renamed:
        outbox.record_product(db, key)  # products/{key}.json: a restore from the archive keeps it
    return _product(db, find_product(db, args.product_key))


class ProductsLinkInput(Input):
    product_key: ProductKey
    project_key: ProjectKey


MAX_LINKED = 100  # projects of one product: get_product lists them all, and its inbox and summaries read each


def products_link(db: sqlite3.Connection, args: ProductsLinkInput) -> Product:
    """Link a project to a product (idempotent). A project may belong to several products; a
    product links at most 100 projects."""
    product = find_product(db, args.product_key)
    project = find_project(db, args.project_key)
    link = stable_id("product_project", product["id"], project["id"])
    if db.execute("SELECT 1 FROM product_projects WHERE id = ?", (link,)).fetchone() is None:
        (linked,) = db.execute("SELECT count(*) FROM product_projects WHERE product_id = ?", (product["id"],)).fetchone()
        if linked >= MAX_LINKED:
            raise Conflict(f"Product {product['product_key']!r} links {linked} projects, the most a product may.",
                           "Unlink one first (products_unlink), or group these projects in another product.")
    if db.execute(
        "INSERT OR IGNORE INTO product_projects (id, product_id, project_id, linked_ts) VALUES (?, ?, ?, ?)",
        (link, product["id"], project["id"], clock.now()),
    ).rowcount:
        outbox.record_product(db, product["id"])
    return _product(db, product)


def products_unlink(db: sqlite3.Connection, args: ProductsLinkInput) -> Product:
    """Unlink a project from a product (idempotent): the product tools no longer span it.
    Nothing of the project's mail changes."""
    product = find_product(db, args.product_key)
    project = find_project(db, args.project_key)
    if db.execute("DELETE FROM product_projects WHERE product_id = ? AND project_id = ?", (product["id"], project["id"])).rowcount:
        outbox.record_product(db, product["id"])
    return _product(db, product)


class ListProductsInput(Input):
    limit: PageLimit = 100
    cursor: PageCursor | None = Field(None, description=CURSOR_HELP)
    # Not an argument: set by security/scopes.py for a scoped credential (see ListProjectsInput).
    _scope: frozenset[str] | None = PrivateAttr(None)


class Products(Output):
    products: list[Product]
    next_cursor: str | None = Field(None, description=NEXT_HELP)


OLDEST_FIRST = Keyset((("created_ts", "created_ts"), ("product_key", "product_key")))  # keys are unique


def list_products(db: sqlite3.Connection, args: ListProductsInput) -> Products:
    """The products with their linked projects, oldest first, a page at a time."""
    where, params = OLDEST_FIRST.after(args.cursor)
    if args._scope is not None:  # only the products the scope sees
        condition, seen_params = seen_by(db, args._scope)
        where += f" AND {condition}"
        params += seen_params
    rows = db.execute(f"SELECT * FROM products WHERE 1{where}{OLDEST_FIRST.order_by()} LIMIT ?", (*params, args.limit + 1))
    page, cursor = OLDEST_FIRST.page(rows, args.limit)
    return Products(products=[_product(db, row) for row in page], next_cursor=cursor)


class GetProductInput(Input):
    product_key: ProductKey


def get_product(db: sqlite3.Connection, args: GetProductInput) -> Product:
    """One product with its linked projects."""
    return _product(db, find_product(db, args.product_key))


# The agent's token is the handler's business here: an agent name has one identity, and token,
# per linked project, and a product tool reads only the identities the token belongs to.
AgentToken = Annotated[
    str | None,
    Field(None, max_length=256, description="The agent's registration_token: the tool reads only the linked projects"
          " in which it is this agent's token (required when the server requires agent tokens; one that is its token"
          " in none of them is refused, 403, even when not required)."),
]


class FetchInboxProductInput(Input):
    product_key: ProductKey
    agent_name: AgentName
    registration_token: AgentToken = None
    limit: Limit = 20
    urgent_only: bool = Field(False, description="Only high and urgent messages.")
    unread_only: bool = Field(False, description="Only messages not marked read (mark_message_read, acknowledge_message).")
    ack_pending_only: bool = Field(False, description="Only messages that require an acknowledgement not given yet.")
    include_bodies: IncludeBodies = False
    since_ts: Timestamp | None = Field(None, description="Only messages created after this time.")
    cursor: OlderThan | None = Field(None, description=OLDER_THAN_HELP)


class ProductInboxMessage(InboxMessage):
    project: str = Field(description="Slug of the linked project whose agent (of this name) received it: the one it was"
                         " sent in, if the agent is there; reply, mark read and acknowledge there.")


class ProductInbox(Output):
    messages: list[ProductInboxMessage]
    next_cursor: str | None = Field(None, description=NEXT_OLDER_HELP)


def agent_projects(db: sqlite3.Connection, product: sqlite3.Row, name: str) -> list[sqlite3.Row]:
    """The linked projects in which this agent name is registered; NotFound if there are none."""
    projects = linked_projects(db, product)
    found = [
        project
        for project in projects
        if db.execute("SELECT 1 FROM agents WHERE id = ?", (agent_id(project["id"], name),)).fetchone()
    ]
    if not found:
        linked = ", ".join(repr(project["slug"]) for project in projects) or "none"
        raise NotFound(
            f"No agent named {name} in the projects of product {product['product_key']!r} (linked: {linked}).",
            "Check the name with list_agents on a linked project, or link the agent's project with products_link.",
        )
    return found


def identities(db: sqlite3.Connection, product: sqlite3.Row, name: str, token: str | None) -> list[sqlite3.Row]:
    """The linked projects where the agent is registered (and, given a token, where it is its token).
    A token that is its token in none is refused, as agent_tokens.check does when tokens are
    required: otherwise (AUTH_MODE=none) a stale one read nothing, an empty page saying nothing."""
    found = agent_projects(db, product, name)
    if token is None:
        return found
    mine = [project for project in matching_projects(db, product["product_key"], name, token) if project in found]
    if not mine:
        raise refused("registration_token", name)
    return mine


def fetch_inbox_product(db: sqlite3.Connection, args: FetchInboxProductInput) -> ProductInbox:
    """An agent's received messages across every project of a product, newest first.

    The same agent name in several linked projects counts as one agent; each message names
    the linked project where the agent received it (the one it was sent in, if the agent is there)."""
    product = find_product(db, args.product_key)
    newest: dict[int, ProductInboxMessage] = {}
    # Without bodies: those of the merged page alone are read, below. Each project's page of bodies
    # (up to PAGE_BODY_BYTES) was read and then dropped: ~4 MiB held a linked project.
    options = args.model_dump(exclude={"product_key", "registration_token", "include_bodies"})
    for project in identities(db, product, args.agent_name, args.registration_token):
        for message in fetch_inbox(db, FetchInboxInput(project_key=project["human_key"], **options)).messages:
            # Sent to the agent in two linked projects: listed once, under the project it was sent in.
            if message.id not in newest or "@" in newest[message.id].sender and "@" not in message.sender:
                newest[message.id] = ProductInboxMessage(**message.model_dump(), project=project["slug"])
        # Ids are time-ordered across projects: each project gave its newest `limit` below the
        # cursor, so the newest `limit` of them all are the page; no more are kept.
        newest = dict(heapq.nlargest(args.limit, newest.items()))
    messages = sorted(newest.values(), key=lambda message: message.id, reverse=True)
    more = len(messages) == args.limit
    if args.include_bodies and messages:
        messages, cut = with_bodies(db, messages)
        more = more or cut
    return ProductInbox(messages=messages, next_cursor=str(messages[-1].id) if more and messages else None)


def with_bodies(db: sqlite3.Connection, messages: list[ProductInboxMessage]) -> tuple[list[ProductInboxMessage], bool]:
    """The messages (newest first) with their bodies, read one by one and no further than a page
    of them (within_page: PAGE_BODY_BYTES); and whether that cut the page short."""
    by_id = {message.id: message for message in messages}
    rows = db.execute(f"SELECT id, body_md FROM messages WHERE id IN ({placeholders(by_id)}) ORDER BY id DESC", list(by_id))
    page, cut = within_page(rows, len(messages), lambda row: row[1])
    return [by_id[key].model_copy(update={"body_md": body}) for key, body in page], cut


def product_reader(db, product: sqlite3.Row, name: str | None, token: str | None) -> frozenset[int] | None:
    """The identities (agent ids) of the agent a product tool reads as, or None to read everything."""
    if name is None:
        return None
    return frozenset(agent_id(project["id"], name) for project in identities(db, product, name, token))


class SearchMessagesProductInput(Input):
    product_key: ProductKey
    query: Annotated[str, Field(min_length=1, max_length=1000, description=QUERY_HELP)]
    limit: Limit = 20
    agent_name: ReadAs = None
    registration_token: AgentToken = None
    cursor: Cursor | None = Field(None, description="next_cursor of the previous page.")


class ProductSearchHit(SearchHit):
    project: str = Field(description="Slug of the project the message belongs to.")


class ProductSearchResults(Output):
    query: str
    results: list[ProductSearchHit]
    next_cursor: str | None = Field(None, description="Pass as cursor for more hits; null when there are no more.")
    indexing: str | None = Field(None, description=INDEXING_HELP)


def search_messages_product(db: sqlite3.Connection, args: SearchMessagesProductInput) -> ProductSearchResults:
    """Search the messages of every project of a product; best matches first, same syntax as
    search_messages. next_cursor goes on to older matches in all of them."""
    product = find_product(db, args.product_key)
    viewers = product_reader(db, product, args.agent_name, args.registration_token)
    linked = linked_projects(db, product)
    slugs = {project["id"]: project["slug"] for project in linked}
    hits, next_cursor, indexing = search_projects(db, linked, args.query, args.limit, viewers, args.cursor)
    for project, _ in hits:  # (an agent's mail from a project the product does not link)
        slugs.setdefault(project, project_by_id(db, project)["slug"])
    return ProductSearchResults(query=args.query, next_cursor=next_cursor, indexing=indexing,
                                results=[ProductSearchHit(**hit.model_dump(), project=slugs[project]) for project, hit in hits])


class SummarizeThreadProductInput(Input):
    product_key: ProductKey
    thread_id: ThreadId
    agent_name: ReadAs = None
    registration_token: AgentToken = None


class ProductThreadSummary(ThreadSummary):
    projects: list[str] = Field(description="Slugs of the linked projects that have messages in this thread.")


def summarize_thread_product(db: sqlite3.Connection, args: SummarizeThreadProductInput) -> ProductThreadSummary:
    """Summarise a thread across a product: the messages with this thread_id in every
    linked project, digested together like summarize_thread does."""
    product = find_product(db, args.product_key)
    viewers = product_reader(db, product, args.agent_name, args.registration_token)
    headers, messages, having = [], [], []
    linked = linked_projects(db, product)
    for project in linked:
        if header := thread_summaries.header(db, project, args.thread_id, viewers):
            headers.append(header)
            having.append(project)
            # The newest DIGESTED of all the projects' so far: a call holds two projects' digests
            # at most, not each linked project's (500 excerpts of 4 KiB).
            found = messages_in_thread(db, project, args.thread_id, viewers=viewers, newest=DIGESTED, body_chars=DIGEST_CHARS)
            messages = sorted(messages + found, key=lambda message: message.id)[-DIGESTED:]
    if not headers:
        raise NotFound(
            f"Thread {args.thread_id!r} not found in any project of product {args.product_key!r}.",
            "Take thread ids from fetch_inbox_product or search_messages_product; see get_product for the linked projects.",
        )
    # The open acks of those messages (those past the newest OPEN_ACKS are counted by recipient
    # row: an agent reached through two linked projects is one listed ack, two counted ones).
    acks, more = open_acks(db, messages, viewers)
    slugs = {project["slug"] for project in linked}
    # One agent across the product owes a message one ack, however many of its identities it
    # reached and however each project cases its name (names are case-insensitive).
    owed: dict[tuple[int, str], OpenAck] = {}
    for ack in acks:
        agent = in_product(ack.agent, slugs)
        owed.setdefault((ack.message_id, folded_name(agent)), ack.model_copy(update={"agent": agent}))
    acks = [owed[key] for key in sorted(owed)]
    return ProductThreadSummary(**summary(args.thread_id, merged_header(headers, slugs), messages, acks, more),
                                projects=[project["slug"] for project in having])


def in_product(address: str, linked: set[str]) -> str:
    """An address as a product writes it: an agent of a linked project is one agent by its name
    (a project addresses another project's agents as Name@slug), others keep Name@slug."""
    name, _, slug = address.partition("@")
    return name if slug in linked else address


def merged_header(headers: list[dict], linked: set[str]) -> dict:
    """One thread's headers from several projects (thread_summaries.header) as one: each
    participant once (in_product, whatever the case of its name), where, and as, it first appears."""
    places: dict[str, tuple] = {}
    for first, rank, address in sorted((place for header in headers for place in header["participants"]), key=thread_summaries.place_order):
        address = in_product(address, linked)
        places.setdefault(folded_name(address), (first, rank, address))
    return {**min(headers, key=lambda header: header["first_id"]), "message_count": sum(h["message_count"] for h in headers),
            "participants": list(places.values()), "last_ts": max(header["last_ts"] for header in headers)}


TOOLS = [
    tool(ensure_product, repeat_safe=True),
    tool(products_link, repeat_safe=True),
    tool(products_unlink, destructive=True, repeat_safe=True),
    tool(list_products, read_only=True),
    tool(get_product, read_only=True),
    tool(fetch_inbox_product, read_only=True, acts_as="agent_name", off_loop=lambda args: args.include_bodies),
    tool(search_messages_product, read_only=True, acts_as="agent_name", off_loop=True),  # as search_messages
    tool(summarize_thread_product, read_only=True, acts_as="agent_name", off_loop=True),  # digests up to 500 messages
]
