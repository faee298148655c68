"""Full-text search over message subjects and bodies (SQLite FTS5, bm25 ranking).

Queries are read forgivingly (tools/search_syntax.py): ids, file names, paths and punctuation
are literal words; operators work when used as operators; no query fails to parse.

Bounded ranking, so a search costs the same at a million messages as at ten thousand:

- A page ranks a window of the newest WINDOW matching messages (FTS5 walks matches newest
  first by id and stops there), not every match. next_cursor continues with the rest of the
  window, then the next older window: paging reaches every match exactly once when no mail
  arrives between pages. A window ends at its newest match, so mail arriving meanwhile (newer
  ids) stays out of it; but any new message changes bm25's statistics, which may reorder the
  window's ranked hits: one may then come twice or be skipped (docs/search.md). Trade-off: a
  strong match older than the newest WINDOW matches shows on a later page, not the first.
- bm25 weighs a term by how many messages contain it, and FTS5 counts those by reading every
  one of them (60 ms for "the" at 100k messages, growing with the mailbox). So only the
  query's terms found in at most RARE messages weigh in the score (a probe of RARE+1 matches
  tells); a term in more messages than that says little about relevance anyway (a word in
  half the messages has a bm25 weight of ~0). Ties, and queries of only common words, list
  the newest first.
- A query with a word found in nearly every message takes its window from its rarer words and
  checks the whole query on those candidates only (tools/search_narrowing.py).
- FTS5 reads a prefix (`migrat*`) by merging the lists of every word it starts (there is no
  prefix index): `t*` cost 420 ms at 100k messages. So a prefix needs MIN_PREFIX letters or
  digits, or one CJK character (a word: 東京* finds 東京开会), and a query has at most MAX_PREFIXES
  of them (422 with a hint otherwise).
- Every search runs off the event loop: what any query costs grows with the bodies it matches
  (FTS5 reads a match's positions, a snippet its text: a phrase over 500 bodies of 256 KiB held
  the loop 0.4-3 s), and with the mailbox for a prefix, NEAR or a long phrase.
- Whatever the query, the search stops after SEARCH_TIMEOUT_MS, its statements (a progress
  handler on the connection, removed after) and its Python work (narrowing checks, snippets)
  alike: such a query is too broad for this mailbox (422 with a hint), and searches share one
  thread (invoke.py `_slow_reads`): one must not hold it for long. Of each body, that work
  reads a bounded start (SNIPPET_CHARS; search_narrowing.py leaves the rest to the index).
"""

import logging
import re
import sqlite3
from time import monotonic
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated

from pydantic import AfterValidator, Field

from ..config import get_settings
from ..errors import InvalidArgument, Unavailable
from ..fields import AgentAddress, AgentName, MessageId, ProjectKey, Timestamp, empty_list
from ..registry import Input, Output, tool
from ..store.db import placeholders
from ..store.disconnect import client_gone, client_left
from ..store import search_runs
from ..store.search_index import SearchIndex, damaged, discard_damaged, in_projects, in_text, search_index
from .agents import find_agent, find_agents
from .counts import mail_stamp, mail_total
from .messages import Importance, Limit, ThreadId, visible_to
from .projects import find_project
from .search_narrowing import Narrowed, narrowed
from .search_syntax import (SNIPPET_CHARS, fts5_query, fts5_terms, fts5_phrases, has_cjk, literal_query, nesting,
                            plain_terms, snippet, snippet_terms)

log = logging.getLogger(__name__)

WINDOW = 500  # matches ranked together; see the module docstring
FILTERED_WINDOW = 50  # with filters, fewer: finding each match may take reading many that fail them
NARROWED_WINDOW = 20  # candidates of a narrowed query (search_narrowing.py): each is read and checked
RARE = 5000  # a term in at most this many messages weighs in the ranking
MAX_RANKED_TERMS = 8
SCOPED_SHARE = 16  # projects with at most 1/16 of the mail search within themselves in the index (_scope)
MAX_WINDOWS = 4  # windows one call may walk to fill its page (filters may thin them out)
RUN_CURSOR = 900_000  # added to the place in a run page's cursor: above any full-text skip (below WINDOW)
RUN_WINDOW_MAX = 4096  # rows of a run's term read at once (_run_page)
MIN_PREFIX = 3  # letters or digits of a prefix (t*: every word starting with t), or one CJK character
MAX_PREFIXES = 2
MAX_NESTING = 32  # levels of parentheses (FTS5's parser overflows at ~99)
STEPS_BETWEEN_CHECKS = 1000  # SQLite VM steps between looks at the clock (fewer came no closer: docs/limits.md)
QUERY_HELP = (
    "Plain words (all must match); ids, file names and paths work as typed (CART-12, src/api.py)."
    ' Operators: "exact phrase", prefix*, AND / OR / NOT, (groups), NEAR(a b), subject:word, body:word.'
)
_CURSOR = re.compile(r"^([0-9]{1,19})\.([0-9]{1,6})$")  # not \d: Python's takes every script's digits, the schema's not


def _given(cursor: str) -> str:
    """A cursor this tool gave, refused when the call is read (a query without a word would not get to it)."""
    if not _CURSOR.fullmatch(cursor):  # fullmatch: Python's $ would let a final newline through
        raise InvalidArgument(f"Cursor {cursor!r} is not one this tool gave.", "Pass next_cursor as it came, or omit it.")
    return cursor


Cursor = Annotated[str, Field(max_length=40, json_schema_extra={"pattern": _CURSOR.pattern}), AfterValidator(_given)]


class SearchMessagesInput(Input):
    project_key: ProjectKey
    query: Annotated[str, Field(min_length=1, max_length=1000, description=QUERY_HELP)]
    limit: Limit = 20
    sender: AgentAddress | None = Field(None, description="Only messages this agent sent (Name@project for another project's,"
                                        " as the hits name it).")
    recipient: AgentAddress | None = Field(None, description="Only messages to this agent (to or cc; bcc only for its sender or itself).")
    thread_id: ThreadId | None = Field(None, description="Only messages of this thread.")
    importance: Annotated[list[Importance], Field(max_length=4)] = empty_list("Only these importances.")
    since_ts: Timestamp | None = Field(None, description="Only messages created after this time.")
    until_ts: Timestamp | None = Field(None, description="Only messages created at or before this time.")
    agent_name: AgentName | None = Field(
        None,
        description="Search only the mail this agent sent or received (other projects' mail to it included)."
        " Acts as this agent: with agent tokens on, its token is required.",
    )
    cursor: Cursor | None = Field(None, description="next_cursor of the previous page.")


class SearchHit(Output):
    id: MessageId
    thread_id: str
    subject: str
    sender: str
    importance: Importance
    created_ts: str
    snippet: str = Field(description="The first passage with a query word (subject or body), words marked with **.")
    score: float = Field(description="bm25 relevance of the query's distinctive terms; lower is better, 0 for none (and for an id"
                                     " or path typed alone: those hits come subjects first, then newest).")


INDEXING_HELP = (
    "Set while this server's search index is still being built (a new Turso replica's, newest mail first): how far it"
    " has got. The results are the matches among the mail indexed so far; next_cursor goes on to older mail once that"
    " is indexed (a page of it asked for sooner answers 503: retry)."
)


class SearchResults(Output):
    query: str
    results: list[SearchHit]
    next_cursor: str | None = Field(None, description="Pass as cursor for more hits; null when there are no more.")
    indexing: str | None = Field(None, description=INDEXING_HELP)


def _filters(db, project: sqlite3.Row, args: SearchMessagesInput) -> tuple[str, list]:
    """SQL conditions on `m` (messages) for the scope and filters, and their parameters."""
    caller = find_agent(db, project, args.agent_name)["id"] if args.agent_name else None
    if caller is None:
        sql, params = "m.project_id = ?", [project["id"]]
    else:  # what the caller may see: mail it sent or received, in any project
        sql = "(m.sender_id = ? OR EXISTS (SELECT 1 FROM message_recipients WHERE message_id = m.id AND agent_id = ?))"
        params = [caller, caller]
    if args.sender:
        sql += " AND m.sender_id = ?"
        params.append(find_agents(db, project, [args.sender])[0]["id"])
    if args.recipient:
        # A bcc recipient is visible only to the message's sender and to itself.
        sql += (
            " AND EXISTS (SELECT 1 FROM message_recipients WHERE message_id = m.id AND agent_id = ?"
            " AND (kind != 'bcc' OR agent_id = ? OR m.sender_id = ?))"
        )
        params += [find_agents(db, project, [args.recipient])[0]["id"], caller, caller]
    if args.thread_id:
        sql += " AND m.thread_id = ?"
        params.append(args.thread_id)
        if caller is not None:  # the thread's messages by project (messages_by_thread), not every match in the index
            projects = _thread_projects(db, caller, project["id"], args.thread_id)
            sql += f" AND m.project_id IN ({placeholders(projects)})"
            params += projects
    if args.importance:
        sql += f" AND m.importance IN ({placeholders(args.importance)})"
        params += args.importance
    if args.since_ts:
        sql += " AND m.created_ts > ?"
        params.append(args.since_ts)
    if args.until_ts:
        sql += " AND m.created_ts <= ?"
        params.append(args.until_ts)
    return sql, params


def _thread_projects(db, agent_id: int, home: int, thread_id: str) -> list[int]:
    """The projects where the agent has mail of the thread: its own (what it sent is there), and
    those of what it received, each asked of its recipient rows (inbox_by_thread, migration 0048)
    one project at a time (a thread is per project: each side of cross-project mail has its own).
    Without them a search in the agent's thread read every match of the query in every project."""
    projects, after = [home], -(2**63)
    while (row := db.execute(
        "SELECT message_project_id FROM message_recipients WHERE agent_id = ? AND message_project_id > ?"
        " ORDER BY message_project_id LIMIT 1", (agent_id, after),
    ).fetchone()) is not None:
        after = row[0]
        if after != home and db.execute(
            "SELECT 1 FROM message_recipients WHERE agent_id = ? AND message_project_id = ? AND thread_id = ? LIMIT 1",
            (agent_id, after, thread_id),
        ).fetchone():
            projects.append(after)
    return projects


def _cursor(cursor: str | None) -> tuple[int, int]:
    """(ids below this, hits of that window already returned), of a cursor the input checked (_given)."""
    if cursor is None:
        return 2**63 - 1, 0  # above every id: the first window then ends at its newest match
    match = _CURSOR.fullmatch(cursor)
    return min(int(match[1]), 2**63 - 1), int(match[2])  # 19 digits may pass the largest id (SQLite's: an OverflowError)


def bounded_query(text: str) -> str | None:
    """The FTS5 query of the typed text (None: no word in it), refused when its prefixes would
    make FTS5 read much of the index (see the module docstring)."""
    if (depth := nesting(text)) > MAX_NESTING:  # FTS5 refuses ~99 (then every word, operators too, was literal text)
        raise InvalidArgument(
            f"The query's parentheses nest {depth} deep: at most {MAX_NESTING} levels are allowed.",
            "Drop the extra parentheses: (a OR b) c means the same however many wrap it.",
        )
    fts = fts5_query(text)
    prefixes = [words[-1] for words, prefix in fts5_phrases(fts or "") if prefix]
    if short := [prefix for prefix in prefixes if len(prefix) < MIN_PREFIX and not has_cjk(prefix)]:
        raise InvalidArgument(
            f"The prefix {short[0]}* is too short: a prefix needs at least {MIN_PREFIX} letters or digits"
            " (or one Chinese, Japanese or Korean character).",
            "Type more of the word before the * (migrat*), or the whole word.",
        )
    if len(prefixes) > MAX_PREFIXES:
        raise InvalidArgument(
            f"The query has {len(prefixes)} prefixes: at most {MAX_PREFIXES} are allowed.", "Type the others as whole words."
        )
    return in_text(fts) if fts else None


def _rank_query(index, terms: list[str]) -> str | None:
    """The query's rare terms, OR'ed: what bm25 can weigh cheaply (see the module docstring)."""
    rare = [
        term
        for term in terms[:MAX_RANKED_TERMS]
        if index.execute("SELECT 1 FROM messages_fts WHERE messages_fts MATCH ? LIMIT 1 OFFSET ?", (in_text(term), RARE)).fetchone()
        is None
    ]
    return in_text(" OR ".join(f"({term})" for term in rare)) if rare else None


def _ranked(index, rank_query: str | None, window: list[int]) -> list[tuple[int, float]]:
    """The window's ids with their scores, best first (ties: newest first)."""
    scores: dict[int, float] = {}
    if rank_query and window:
        # bm25 (a docsize read each) only for the window's own rows, not every match in its
        # range; `+rowid` filters FTS5's rows instead of making it look each id up.
        scores = dict(
            index.execute(
                "SELECT rowid, bm25(messages_fts, 2.0, 1.0, 0.0) FROM messages_fts WHERE messages_fts MATCH ?"
                f" AND rowid BETWEEN ? AND ? AND +rowid IN ({placeholders(window)})",
                (rank_query, window[-1], window[0], *window),
            ).fetchall()
        )
    return sorted(((mid, scores.get(mid, 0.0)) for mid in window), key=lambda hit: (hit[1], -hit[0]))


def _filtered(args: SearchMessagesInput) -> bool:
    """Whether the search has conditions beyond the project (its window is then FILTERED_WINDOW)."""
    return any((args.sender, args.recipient, args.thread_id, args.importance, args.since_ts, args.until_ts, args.agent_name))


def _window_sql(where: str, by_thread: bool) -> str:
    """The newest matches below an id and from another (an index being built holds all the mail
    from there up only). Most searches walk the index's matches newest first and check each
    against the filters; within one thread, the thread's few messages (the messages_by_thread
    index: `where` then names the thread's projects) are checked against the index instead."""
    if by_thread:  # CROSS JOIN: the thread first (with an agent's visibility test the planner chose the index's matches)
        return (
            "SELECT m.id FROM messages m CROSS JOIN messages_fts ON messages_fts.rowid = m.id"
            f" WHERE messages_fts MATCH ? AND m.id < ? AND m.id >= ? AND {where} ORDER BY m.id DESC LIMIT ?"
        )
    return (
        "SELECT messages_fts.rowid FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid"
        " WHERE messages_fts MATCH ? AND messages_fts.rowid < ? AND messages_fts.rowid >= ?"
        f" AND {where} ORDER BY messages_fts.rowid DESC LIMIT ?"
    )


def _ranked_page(index, fts: str, rank_query: str | None, where: str, params: list, args: SearchMessagesInput,
                 filtered: bool, scope: list[int] | None, floor: int | None, narrow: Narrowed | None = None):
    """([(id, score)] of one page, best first within each window, and the next cursor). A
    narrowed query's window is of its rarer words' matches, checked against the whole query;
    `filtered`: `where` has conditions beyond the project, which matches may fail; `scope`: the
    projects `where` keeps to, given when they hold a small share of the mail (_scope): the index
    then walks their matches only (not given for a thread's search: it walks the thread's);
    `floor`: the lowest id of an index being built (_index), below which the next cursor goes on."""
    below, skip = _cursor(args.cursor)
    limit = args.limit
    size = max(args.limit, NARROWED_WINDOW if narrow else FILTERED_WINDOW) if filtered or narrow else WINDOW
    sql = _window_sql(where, by_thread=args.thread_id is not None)
    match = in_text(" ".join(narrow.words)) if narrow else fts
    if scope:
        match = in_projects(match, scope)
    page: list[tuple[int, float]] = []
    for _ in range(MAX_WINDOWS):
        window = [row[0] for row in index.execute(sql, (match, below, -(2**63) if floor is None else floor, *params, size))]
        if window:  # the window ends at its newest id, so mail arriving later (newer ids) stays out of it
            below = window[0] + 1
        ranked = _ranked(index, rank_query, narrow.matching(index, window, _in_time) if narrow else window)
        _in_time()
        taken = ranked[skip : skip + limit - len(page)]
        page += taken
        if skip + len(taken) < len(ranked):
            return page, f"{below}.{skip + len(taken)}"
        if len(window) < size:  # no more matches (in an index being built: so far)
            return page, None if floor is None else f"{floor}.0"
        below, skip = window[-1], 0
        if len(page) == limit:
            break
    return page, f"{below}.{skip}"


def _run_page(index, project_id: int, term: str, where: str, params: list, args: SearchMessagesInput):
    """One page of a project's search for one run typed without spaces (an id, a path:
    store/search_runs.py): the project's messages with its term kept to `where`, best place first
    (the subject's whole run), then newest; score 0. The term's rows are read in that order (its
    index's), in windows growing fourfold (filters may fail many) until the page is full: as a
    word's search reads its matches, bounded by the search's time (a filter failing every row of a
    run in every message of a million: ~1 s). A thread's search reads the thread's messages newest
    first instead, and lists them so (ranking them by place would read every one of a long thread).
    The cursor is the last hit's place and id (RUN_CURSOR, _run_cursor): the next page goes on below
    them."""
    below = _run_cursor(args.cursor)
    if args.thread_id is not None:  # the thread's messages newest first (messages_by_thread), each looked up in the runs
        sql = ("SELECT 0, m.id, 1 FROM messages m CROSS JOIN message_runs r ON r.message_id = m.id"
               f" WHERE r.term = ? AND m.id < ? AND {where} ORDER BY m.id DESC LIMIT ?")
    else:  # the term's rows in order, each flagged kept or not: a window reads at most `size` of them
        sql = ("SELECT r.place, r.message_id, m.id IS NOT NULL FROM (SELECT place, message_id FROM message_runs"
               " WHERE term = ? AND project_id = ? AND (place, message_id) < (?, ?) ORDER BY place DESC, message_id DESC LIMIT ?) r"
               f" LEFT JOIN messages m ON m.id = r.message_id AND {where} ORDER BY r.place DESC, r.message_id DESC")
    page: list[tuple[int, int]] = []  # (place, id)
    size = args.limit + 1
    while True:  # until the page is full or the term's rows end: bounded by the search's time, as a word's window
        arguments = (term, below[1], *params, size) if args.thread_id is not None else (term, project_id, *below, size, *params)
        window = index.execute(sql, arguments).fetchall()
        kept = [(place, mid) for place, mid, keep in window if keep]
        _in_time()
        room = args.limit - len(page)
        page += kept[:room]
        if len(page) == args.limit and (len(kept) > room or len(window) == size):  # more may follow
            return [(mid, 0.0) for _, mid in page], f"{page[-1][1]}.{RUN_CURSOR + page[-1][0]}"
        if len(window) < size:  # the term has no more rows
            return [(mid, 0.0) for _, mid in page], None
        below, size = (window[-1][0], window[-1][1]), min(size * 4, RUN_WINDOW_MAX)


def _run_cursor(cursor: str | None) -> tuple[int, int]:
    """(place, id) of a _run_page cursor ("id.RUN_CURSOR+place", told apart from _ranked_page's
    "id.skip": a skip is below WINDOW): the next page is below them."""
    if cursor is None:
        return search_runs.PLACE_SUBJECT_WHOLE + 1, 2**63 - 1
    message_id, place = _cursor(cursor)
    return place - RUN_CURSOR, message_id


def _is_run_cursor(cursor: str | None) -> bool:
    return cursor is not None and _cursor(cursor)[1] >= RUN_CURSOR


def search_messages(db: sqlite3.Connection, args: SearchMessagesInput) -> SearchResults:
    """Search the project's messages; best matches first (subject hits weigh double).

    Type what you are looking for: ids (CART-12), file names and paths work as typed (alone, they
    find the messages that have them so, subjects first, then newest).
    Filters narrow by sender, recipient, thread, importance and time; agent_name keeps to
    the mail that agent sent or received. Each page ranks the newest matches first by
    relevance; next_cursor goes on to older ones."""
    project = find_project(db, args.project_key)
    where, params = _filters(db, project, args)
    fts = bounded_query(args.query)  # (a query refused, or without a word, before a replica's index is built for it)
    if fts is None:
        return SearchResults(query=args.query, results=[])
    index, building = _index(db, args.cursor)
    # An agent's mail is in any project; a thread's search walks the thread's messages, no other project's.
    scope = _scope(db, [project["id"]]) if args.agent_name is None and args.thread_id is None else None
    with _time_budget(db, index):
        page, next_cursor = _page(index, args.query, fts, where, params, args, _filtered(args), scope, building,
                                  project["id"] if args.agent_name is None else None)
        hits = [hit for _, hit in _hits(db, args.query, project["id"], page)]
        return SearchResults(query=args.query, results=hits, next_cursor=next_cursor, indexing=_indexing(building))


def search_projects(db: sqlite3.Connection, projects: list[sqlite3.Row], query: str, limit: int,
                    viewers: frozenset[int] | None,
                    cursor: str | None = None) -> tuple[list[tuple[int, SearchHit]], str | None, str | None]:
    """One page of the hits of these projects (a product's), each with its project's id, the
    next cursor and SearchResults.indexing: one search of them all, as a project's search is one
    of the index (it holds every project's mail), so it costs the same however many there are (a
    search of each, merged, cost their number, and its cursor held a place in each). Given
    viewers (an agent's identities in them), the mail they sent or received, from any project
    (a linked one's agent gets mail from others too; the product search missed it)."""
    ids = [project["id"] for project in projects]
    if not ids:  # nothing to search, whatever the query says
        return [], None, None
    if viewers is None:
        where, params, scope = f"m.project_id IN ({placeholders(ids)})", ids, _scope(db, ids)
    else:  # the agent's mail, as search_messages' agent_name: what other projects (linked or not) sent it too
        (where, params), scope = visible_to(list(viewers)), None
    fts = bounded_query(query)
    if fts is None:
        return [], None, None
    index, building = _index(db, cursor)
    args = SearchMessagesInput(project_key=projects[0]["human_key"], query=query, limit=limit, cursor=cursor)
    with _time_budget(db, index):
        page, next_cursor = _page(index, query, fts, where, params, args, viewers is not None, scope, building)
        return _hits(db, query, None, page), next_cursor, _indexing(building)


def _scope(db, project_ids: list[int]) -> list[int] | None:
    """The projects a search keeps to in the index itself (FTS5 intersecting the query with their
    messages' lists), when they hold at most 1/SCOPED_SHARE of the mail: a search walked every
    project's newest matches for its own (17 ms among 100 active projects, 0.7 ms so); a project
    holding most of the mail would walk its own long list instead (a sparse pair at 1M: 7.8 ms, 0.3 not so)."""
    (mine,) = db.execute(
        f"SELECT coalesce(sum(messages), 0) FROM project_counts WHERE project_id IN ({placeholders(project_ids)})", project_ids
    ).fetchone()
    return project_ids if mine * SCOPED_SHARE <= mail_total(db) else None


def _index(db, cursor: str | None) -> tuple[sqlite3.Connection, SearchIndex | None]:
    """The connection holding the full-text index: the database itself, or, on a Turso replica, a
    sidecar file (chalicelib/store/search_index.py) with the same tables: the same SQL runs on both.
    And the sidecar while it is being built (else None): it holds the newest mail, from its floor
    up, which the search answers from; a page of older mail (its cursor) waits for it, 503.
    A sidecar catches up once per one_budget (a search of each project, a web UI page's)."""
    if not hasattr(db, "replica"):
        return db, None
    budget = _budget.get()
    with _answering_damage(db, sidecar=True):  # opening and catching up read the sidecar too
        index = search_index(db)
        if budget is None or index not in budget.caught_up:
            index.catch_up(db, mail_stamp(db))
            if budget is not None:
                budget.caught_up.add(index)
    if index.floor is None:
        return index.conn, None
    if _cursor(cursor)[0] <= index.floor:
        raise index.building()
    return index.conn, index


def _indexing(building: SearchIndex | None) -> str | None:
    """SearchResults.indexing: how far the index being built has got."""
    return None if building is None else building.progress()


def _page(index, query: str, fts: str, where: str, params: list, args: SearchMessagesInput, filtered: bool,
          scope: list[int] | None, building: SearchIndex | None, project_id: int | None = None):
    """One ranked page of the query (its FTS5 form `fts`) and the next cursor (`scope`: _ranked_page;
    `building`: _index's)."""
    floor = None if building is None else building.floor
    # A page goes on the way its first went (their orders differ): a full-text cursor on full text,
    # though the runs were filled in since; a run cursor on the runs.
    run_cursor = _is_run_cursor(args.cursor)
    if run_cursor and building is not None:  # (a replica's index damaged and being built again since)
        raise building.building()
    if building is None and (args.cursor is None or run_cursor) and (run := _typed_run(index, query, project_id)):
        return _run_page(index, project_id, run, where, params, args)
    if run_cursor:  # given with a search that takes no runs (another query, or as an agent): below its id
        args = args.model_copy(update={"cursor": f"{_cursor(args.cursor)[0]}.0"})
    try:
        narrow = narrowed(index, query, fts)
        rank_query = _rank_query(index, narrow.words if narrow else fts5_terms(query))
        return _ranked_page(index, fts, rank_query, where, params, args, filtered, scope, floor, narrow)
    except sqlite3.OperationalError as exc:  # not expected: fts5_query's output parses; then all words are text
        if _interrupted(exc):
            raise
        fts = in_text(literal_query(query))
        return _ranked_page(index, fts, fts, where, params, args, filtered, scope, floor)


def _typed_run(index, query: str, project_id: int | None) -> str | None:
    """search_runs.query_term of a project's search (`project_id`; an agent's across projects and a
    product's take the full-text path) for one plain term (no operator, prefix or column), once the
    index has every message's runs; else None (the full-text path)."""
    if project_id is None or (terms := plain_terms(query)) is None or len(terms) != 1:
        return None
    if (run := search_runs.query_term(query)) is None:
        return None
    return run if search_runs.ready(index) else None


class _Budget:
    """What the searches made inside one_budget share: one SEARCH_TIMEOUT_MS, from the start of
    the first one's statements (not of its replica index's catch-up, which may build it for
    BUILD_SECONDS), and one catch-up of a replica's index (_index)."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.caught_up: set[SearchIndex] = set()

    def start(self) -> float:
        if self.deadline is None:
            self.deadline = monotonic() + get_settings().search_timeout_ms / 1000
        return self.deadline


_budget: ContextVar[_Budget | None] = ContextVar("search_budget", default=None)


@contextmanager
def one_budget():
    """One budget (_Budget) for all the searches made inside: a product's projects, searched one
    by one, each got a budget of its own (41 projects: 41 budgets in one call)."""
    token = None if _budget.get() else _budget.set(_Budget())
    try:
        yield
    finally:
        if token is not None:
            _budget.reset(token)


@contextmanager
def _time_budget(db, index):
    """Stop the index's statements once the search has run SEARCH_TIMEOUT_MS (422), or once the
    budget of the searches it is one of has (one_budget); its Python work asks _in_time. (The
    index is the database itself but on a Turso replica, whose connection takes no handler: there
    a page's rows, read by id, count through _in_time.) The handler is the connection's, which
    is lent to this call alone: it is removed before it goes back, and an interrupted statement
    is reset by sqlite3 (the read transaction ends as any failed call's)."""
    with one_budget(), _answering_damage(db, sidecar=index is not db):
        deadline = _budget.get().start()
        index.set_progress_handler(lambda: monotonic() > deadline or client_left(), STEPS_BETWEEN_CHECKS)
        try:
            yield
        except sqlite3.DatabaseError as exc:
            if _interrupted(exc):
                raise (client_gone() if client_left() else _too_long()) from None
            raise
        finally:
            index.set_progress_handler(None, STEPS_BETWEEN_CHECKS)


@contextmanager
def _answering_damage(db, sidecar: bool):
    """A damaged index answers 503 (caught where it happens, not looked for: a search costs nothing
    more): the database's own, only once FTS5 says so (its file's other damage is not search's to
    answer); a replica's sidecar, whatever SQLite found damaged, FTS5's tables or the file."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if sidecar and damaged(exc):
            raise _damaged_sidecar(db, exc) from None
        if not sidecar and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_CORRUPT_VTAB:  # FTS5's word for its own damage
            raise _damaged_index(exc) from None
        raise


def _in_time() -> None:
    """Between a search's steps in Python (checks of candidates, snippets): the 422 of its statements
    once its budget is spent, ClientGone once its client disconnected (a slow lane's job, a web
    UI page: the answer would go to no one). (Each step is bounded; the search's time is their sum.)"""
    if monotonic() > _budget.get().deadline:
        raise _too_long()
    if client_left():
        raise client_gone()


def _too_long() -> InvalidArgument:
    return InvalidArgument(
        f"The search took longer than {get_settings().search_timeout_ms} ms (SEARCH_TIMEOUT_MS): the query reads too much"
        " of this mailbox.",
        "Type more of each prefix (migrat* rather than mig*) or whole words, fewer NEAR groups, a shorter phrase, a smaller"
        " limit.",
    )


def _damaged_index(exc: sqlite3.DatabaseError) -> Unavailable:
    """A full-text index of the database that FTS5 finds corrupt answers every search that reaches
    the damage with this until it is rebuilt: the operator's to fix, so it is logged (once per search)."""
    log.error("search: the full-text index is damaged (%s); python -m chalicelib doctor --repair rebuilds it", exc)
    return Unavailable(
        "The search index is damaged: searches fail until an operator rebuilds it.",
        "Tell the operator to run `python -m chalicelib doctor --repair`; the other tools work meanwhile.",
    )


def _damaged_sidecar(db, exc: sqlite3.DatabaseError) -> Unavailable:
    """A replica's damaged sidecar index is a cache: removed, it is rebuilt from the replica by the
    next search (before that one's time budget starts, as a new process's first search builds it).
    This search answers 503 rather than rebuild it inside its own budget: a rebuild reads every
    message, which no SEARCH_TIMEOUT_MS bounds. Logged once per damage (the search that meets it).
    A file that cannot be removed (its directory not writable) answers 503 until someone removes
    it, each search naming it in an error line and in its hint."""
    try:
        path = discard_damaged(db)
    except OSError as error:
        log.error("search: the full-text index is damaged (%s) in %s, the replica's sidecar, and removing it failed: %s",
                  exc, error.filename, error)
        return Unavailable(f"The search index is damaged, and removing it for a rebuild failed: {error.strerror}.",
                           f"Have the operator delete {error.filename} (a cache of the replica: the next search rebuilds it)"
                           " or let the server's user write its directory; the other tools work meanwhile.")
    log.warning("search: the full-text index is damaged (%s) in %s, the replica's sidecar: the next search rebuilds it"
                " from the replica", exc, path)
    return Unavailable("The search index was damaged: the next search rebuilds it.",
                       "Retry the search in a moment; the other tools work meanwhile.")


def _interrupted(exc: sqlite3.DatabaseError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT


def _hits(db, query: str, home: int | None, page: list[tuple[int, float]]) -> list[tuple[int, SearchHit]]:
    """The page's hits, each with its message's project id, with snippets, of each body's start
    only (FTS5's snippet() costs ~1 ms a hit on long bodies with common words: it re-reads the
    match's positions and re-tokenizes the text). A sender of another project than `home` (None:
    the message's own) is Name@project."""
    terms = snippet_terms(query)
    if not page:
        return []
    ids = [message_id for message_id, _ in page]
    rows = {
        row[0]: row
        for row in db.execute(
            "SELECT m.id, m.thread_id, m.subject, CASE WHEN s.project_id = coalesce(?, m.project_id) THEN s.name"
            " ELSE s.name || '@' || (SELECT slug FROM projects WHERE id = s.project_id) END,"
            f" m.importance, m.created_ts, substr(m.body_md, 1, {SNIPPET_CHARS}), m.project_id"
            f" FROM messages m JOIN agents s ON s.id = m.sender_id WHERE m.id IN ({placeholders(ids)})",
            (home, *ids),
        ).fetchall()
    }
    hits = []
    for mid, score in page:
        if mid in rows:
            _in_time()
            hits.append((rows[mid][7], SearchHit(
                id=mid, thread_id=rows[mid][1], subject=rows[mid][2], sender=rows[mid][3], importance=rows[mid][4],
                created_ts=rows[mid][5], snippet=snippet(rows[mid][2], rows[mid][6], terms), score=score,
            )))
    return hits


TOOLS = [tool(search_messages, read_only=True, acts_as="agent_name", off_loop=True)]
