"""Ids and paths as single terms: an index of the word runs written without spaces.

FTS5 finds `src/mod43/file39.py` as the phrase of its words, walking each word's list of
messages: `mod43` and `file39` are each in thousands of messages at a million, so a search for
the path grew with the mailbox (0.7 ms at 10k, 2.6 ms at 1M). Here every run of 2 to RUN_WORDS
words written without a space between them (`CART-12`, `src/mod43/file39.py`, and each part of
it: `mod43 file39`, `src mod43`, ...) is one row of `message_runs`, its words folded and stemmed
as the full index reads them, with its message's project and the best place of it there; a
project's search for one such run is one ordered look-up of its term in the project: best place
first, then newest (tools/search.py `_run_page`).

What is indexed: the subject and the body's first BODY_CHARS characters, at most MAX_TERMS
distinct terms a message (a run of k words has up to 5k; a long base64 blob or minified file
would add thousands of rows to one send), each at most TERM_CHARS long. A query of a longer run
(a URL) is the full-text index's.

Embedded SQLite keeps the rows in the database (migrations/0052_search_runs.sql: triggers drop
them with a purged message or an archived body), written with the full-text entry at the end
of the transaction; a database that had mail before that migration fills them in from its
newest message down (`backfill`, a bounded part each retention run), and until it is done,
searches for a run take the full-text path. A Turso replica keeps them in its sidecar index
(store/search_index.py), written with its full-text entries.
"""

import re
import string

from .tokenizer import folded, stem

BODY_CHARS = 64 * 1024  # of a body, as search's other checks read (tools/search_syntax.py LOOK_CHARS)
RUN_WORDS = 6
MAX_TERMS = 2000
TERM_CHARS = 120
# Where a message has a term, best first: a search ranks by it (a subject that is `api.py` before one
# that names `src/cart/api.py`), then newest first. An archived body's rows (below SUBJECT) leave with it.
PLACE_SUBJECT_WHOLE, PLACE_SUBJECT, PLACE_BODY_WHOLE, PLACE_BODY = 3, 2, 1, 0
# What unicode61 reads as a word: letters, digits and private-use characters (`_` separates too).
_WORD = re.compile(r"(?:[^\W_]|[\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd])+")
_EDGES = string.punctuation  # a word's own punctuation (`plan.`, `(see`), not a run's


def _runs(text: str):
    """The words of each run in the text: what is written between spaces, when it has two words or
    more (`src/api.py`, `CART-12`, `snake_case`; not `plan.`). (Split, not one regular expression:
    5x faster on prose, where most of what stands between spaces is one word.)"""
    for chunk in folded(text).split():  # folded first: Python's \w takes no combining mark
        if not chunk.isalnum() and not chunk.strip(_EDGES).isalnum() and len(words := _WORD.findall(chunk)) > 1:
            yield words


def _stemmed(words: list[str]) -> list[str]:
    """A run's words as the index keeps them: lower case, stemmed (porter: migrations is migrat; no
    suffix it takes off ends in a digit, so `12345` of `CART-12345` is not looked up: ids are many)."""
    return [word.lower() if word[-1].isdigit() else stem(word.lower()) for word in words]


def message_terms(subject: str, body: str) -> list[tuple[str, int]]:
    """(term, place) of each distinct run of a message and part of one (2 to RUN_WORDS words, at
    most TERM_CHARS), in text order, at most MAX_TERMS: the subject's, then the body's start's;
    its place the best of where it is (PLACE_SUBJECT_WHOLE: the subject has it as a whole run,
    `api.py`, not as `src/api.py`'s part; ...; PLACE_BODY). (One loop: it runs in every send.)"""
    found: dict[str, int] = {}
    for whole_place, text in ((PLACE_SUBJECT_WHOLE, subject), (PLACE_BODY_WHOLE, body_start(body))):
        for run in _runs(text):
            words, last = _stemmed(run), len(run)
            for start in range(last - 1):
                for end in range(start + 2, min(start + RUN_WORDS, last) + 1):
                    term = " ".join(words[start:end])
                    place = whole_place if start == 0 and end == last else whole_place - 1
                    if len(term) <= TERM_CHARS and found.get(term, -1) < place:
                        found[term] = place
                        if len(found) >= MAX_TERMS:
                            return list(found.items())
    return list(found.items())


def body_start(body: str) -> str:
    """What is indexed of a body: its first BODY_CHARS characters, less a run the cut goes through
    (`CART-12345` cut after `CART-1` is no `CART-1`)."""
    if len(body) <= BODY_CHARS:
        return body
    start = body[:BODY_CHARS]
    if body[BODY_CHARS].isspace():
        return start
    kept = start.rsplit(None, 1)
    return kept[0] if len(kept) == 2 else ""


def query_term(query: str) -> str | None:
    """The term to look up for a query that is one run typed without spaces (`CART-12`, `"src/api.py"`)
    of at most RUN_WORDS words and TERM_CHARS; None for any other query (a longer run, a URL, is the
    full-text index's phrase: checking each candidate's text for it cost ~10 ms a 64 KiB body)."""
    text = query.strip().strip('"')
    runs = list(_runs(text)) if text.isascii() else []
    if len(runs) != 1 or any(c.isspace() for c in text) or len(runs[0]) > RUN_WORDS:
        return None
    term = " ".join(_stemmed(runs[0]))
    return term if len(term) <= TERM_CHARS else None


def add(db, rows: list[tuple[int, int, str, str]]) -> None:
    """(message id, project id, subject, indexed body) of new messages into message_runs."""
    if found := [(term, project_id, message_id, place) for message_id, project_id, subject, body in rows
                 for term, place in message_terms(subject, body)]:
        db.executemany("INSERT OR IGNORE INTO message_runs (term, project_id, message_id, place) VALUES (?, ?, ?, ?)", found)


def _below(db) -> int:
    """The backfill's mark: every message from this id up is in message_runs (0: every message)."""
    return db.execute("SELECT below FROM message_runs_backfill").fetchone()[0]


def ready(index_conn) -> bool:
    """Whether every message of the index is in message_runs (a backfill done)."""
    return _below(index_conn) <= 0


def backfill(db, limit: int) -> int:
    """Index the runs of the `limit` newest messages not indexed yet, in the caller's write
    transaction; how many (fewer than `limit`: the backfill is done)."""
    if (below := _below(db)) <= 0:
        return 0
    rows = db.execute(
        "SELECT id, project_id, subject, CASE WHEN body_archived_ts IS NULL THEN body_md ELSE '' END FROM messages"
        " WHERE id < ? ORDER BY id DESC LIMIT ?", (below, limit),
    ).fetchall()
    add(db, [tuple(row) for row in rows])
    done = len(rows) < limit
    db.execute("UPDATE message_runs_backfill SET below = ?", (0 if done or not rows else rows[-1][0],))
    return len(rows)


def left(db) -> int:
    """How many messages the backfill has still to index (a database with mail from before 0052)."""
    below = _below(db)
    return db.execute("SELECT count(*) FROM messages WHERE id < ?", (below,)).fetchone()[0] if below > 0 else 0
