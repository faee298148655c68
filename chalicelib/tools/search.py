"""Full-text search over message subjects and bodies (SQLite FTS5, bm25 ranking)."""

import sqlite3
from typing import Annotated

from pydantic import Field

from ..store.db import placeholders
from ..errors import InvalidArgument
from ..store.search_index import search_index
from ..fields import MessageId, ProjectKey
from ..registry import Input, Output, tool
from .messages import Importance, Limit, visible_to
from .projects import find_project
from .threads import ReadAs, reader

QUERY_HELP = (
    'Search syntax: words (all must match), "exact phrase", prefix*, AND / OR / NOT, '
    "NEAR(a b), subject:word; put text with punctuation inside double quotes."
)


class SearchMessagesInput(Input):
    project_key: ProjectKey
    query: Annotated[str, Field(min_length=1, max_length=1000, description=QUERY_HELP)]
    limit: Limit = 20
    agent_name: ReadAs = None


class SearchHit(Output):
    id: MessageId
    thread_id: str
    subject: str
    sender: str
    importance: Importance
    created_ts: str
    snippet: str = Field(description="The best matching passage, hits marked with **.")
    score: float = Field(description="bm25 relevance; lower is better.")


class SearchResults(Output):
    query: str
    results: list[SearchHit]


def search_messages(db: sqlite3.Connection, args: SearchMessagesInput) -> SearchResults:
    """Search the project's messages; best matches first (subject hits weigh double).

    Read as agent_name: only messages that agent sent or received."""
    project = find_project(db, args.project_key)
    return SearchResults(query=args.query, results=search_project(db, project, args.query, args.limit, reader(db, project, args.agent_name)))


def search_project(db: sqlite3.Connection, project, query: str, limit: int, viewers: frozenset[int] | None) -> list[SearchHit]:
    """The best `limit` hits of the project (given viewers: among the mail they sent or received)."""
    # The index is in the database itself, or, on a Turso replica, in a sidecar file
    # (chalicelib/store/search_index.py) with the same tables: the same SQL runs on both.
    sidecar = hasattr(db, "replica")
    index = search_index(db).conn if sidecar else db
    # Visibility needs message_recipients, which only the database has: in the index query when
    # that is the database, else on the hits (then fewer than `limit` may remain).
    visible, params = visible_to(list(viewers)) if viewers is not None else ("1", [])
    try:
        matches = index.execute(
            "SELECT messages_fts.rowid, snippet(messages_fts, -1, '**', '**', '…', 16), bm25(messages_fts, 2.0, 1.0) AS score"
            " FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
            f" WHERE messages_fts MATCH ? AND m.project_id = ? AND {'1' if sidecar else visible} ORDER BY score LIMIT ?",
            (query, project["id"], *([] if sidecar else params), limit),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        raise InvalidArgument(f"Cannot parse search query {query!r}: {exc}.", QUERY_HELP) from None
    ids = [match[0] for match in matches]
    messages = {
        row["id"]: row
        for row in db.execute(
            "SELECT m.id, m.thread_id, m.subject, s.name AS sender, m.importance, m.created_ts"
            f" FROM messages m JOIN agents s ON s.id = m.sender_id WHERE m.id IN ({placeholders(ids)}) AND {visible}",
            [*ids, *params],
        )
    }
    return [SearchHit(**dict(messages[mid]), snippet=snippet, score=score) for mid, snippet, score in matches if mid in messages]


TOOLS = [tool(search_messages, read_only=True, acts_as="agent_name")]
