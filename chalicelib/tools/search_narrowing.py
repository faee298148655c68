"""Searches that contain a very common word, made as cheap at a million messages as at ten thousand.

FTS5 finds the messages holding all of a query's words by walking each word's whole list of
messages, so one word found in nearly every message (`src` and `py` in paths, `cart` in ticket
ids, `the`) makes every query with it grow with the mailbox: `src/mod3/file7.py` took 40 ms at
a million messages. So a query of plain words and phrases (tools/search_syntax.py `plain_terms`)
takes its window of candidates from its rarer words only, and then checks the whole query on
just those candidates: the same answer the full index gives, at a cost that follows the
candidates, not the mailbox. A phrase of only common words takes as candidates the newest
messages holding all its words (FTS5 compared the phrase's positions in every one of them).

How common a word is lately: how far back (in ids, which are time-ordered) its SAMPLE newest
messages reach, against how far back the SAMPLE newest messages of all reach. A word in more
than one of every COMMON recent messages is left to the check. The check reads a candidate's
subject and its body's first LOOK_CHARS characters: a body longer than that and not surely
matching there is checked by the index itself, by rowid (re-indexing or scanning 500 bodies of
256 KiB took seconds). (That reach is an estimate:
ids are not spread evenly in time. With COMMON 32 it spanned 69,000 messages, not 32,000, at
bench/scale.py's million, so words in 1.5% of the mail were judged common now and then: their
query took its candidates from one rarer word, most failed the check, and a page came back
short after MAX_WINDOWS windows, at 9 ms. A word kept in is cheap: FTS5 skips through its list.)
"""

import re
import sqlite3
import threading
from collections.abc import Callable

from ..store.db import placeholders
from ..store.search_index import in_text
from ..store.tokenizer import TOKENIZER
from .search_syntax import LOOK_CHARS, plain_terms

SAMPLE = 1000
COMMON = 16
# Candidates re-indexed in the scratch index at a time, the search's clock read between batches:
# tokenizing is one step SQLite cannot interrupt (500 bodies of 64 Ki characters: 1.5 s in one).
SCRATCH_BATCH = 20


def _sure_pattern(term: list[str]) -> re.Pattern:
    """A term's words in lower-case ASCII text, with nothing but separators around and between
    them: there the index reads exactly these tokens, so the text matches, whatever the stemming.
    (The lookbehind after the first word, not before it, keeps the search a fast literal scan.)"""
    first = term[0].lower()
    return re.compile(f"{first}(?<![a-z0-9]{first})" + "".join(f"[^a-z0-9]+{word.lower()}" for word in term[1:]) + "(?![a-z0-9])")


class Narrowed:
    """A query's rarer words (`words`, FTS5 terms: every match has them all) and the test of
    the whole query on a candidate that has them."""

    def __init__(self, fts: str, terms: list[list[str]], words: list[str]) -> None:
        self.fts = fts
        self.words = words
        self.sure = [_sure_pattern(term) for term in terms]

    def matching(self, index, ids: list[int], between: Callable[[], None] = lambda: None) -> list[int]:
        """Those of `ids` whose messages match the whole query, newest first: sure matches
        found in the text (a body's first LOOK_CHARS characters), the others checked by FTS5
        itself: a short text in a scratch index (SCRATCH_BATCH at a time, `between` called
        after each: the search's look at its clock), a longer one in the index, by rowid."""
        if not ids:
            return []
        rows = index.execute(
            f"SELECT rowid, subject, substr(body_md, 1, {LOOK_CHARS + 1}) FROM messages_fts WHERE rowid IN ({placeholders(ids)})", ids
        )
        sure, short, long = [], [], []
        for row in rows:
            if self._surely(row[1:]):
                sure.append(row[0])
            elif len(row[2] or "") > LOOK_CHARS:
                long.append(row[0])
            else:
                short.append(row)
        checked = []
        for start in range(0, len(short), SCRATCH_BATCH):
            checked += _fts_matching(self.fts, short[start : start + SCRATCH_BATCH])
            between()
        return sorted(sure + checked + _indexed_matching(index, self.fts, long), reverse=True)

    def _surely(self, texts) -> bool:
        """Whether every term is found in the subject or the body's start, where the index reads
        exactly its words: lower-case ASCII, the match followed by a character that was read (a
        body cut after LOOK_CHARS may go on with the word)."""
        lowered = [(text.lower(), len(text) > LOOK_CHARS) for text in texts if text and text.isascii()]
        return all(any(_found(pattern, text, cut) for text, cut in lowered) for pattern in self.sure)


def _found(pattern: re.Pattern, text: str, cut: bool) -> bool:
    found = pattern.search(text)
    return found is not None and (not cut or found.end() < len(text))


def narrowed(index, query: str, fts: str) -> Narrowed | None:
    """The query narrowed to its rarer words, when it also has common ones; None when leaving
    no word out would gain nothing."""
    terms = plain_terms(query)
    words = list(dict.fromkeys(f'"{word}"' for term in terms or [] for word in term))
    if len(words) < 2:
        return None
    # The SAMPLE newest messages, as their recipients' narrow index lists them (every message
    # has one; the messages table would be read row by row, bodies and all).
    newest, oldest, count = index.execute(
        "SELECT max(message_id), min(message_id), count(*) FROM (SELECT DISTINCT message_id FROM message_recipients"
        " INDEXED BY recipients_by_message ORDER BY message_id DESC LIMIT ?)", (SAMPLE + 1,)
    ).fetchone()
    if count <= SAMPLE:  # no word can be in SAMPLE messages: none is common
        return None
    # Common: its SAMPLE newest messages reach back less than COMMON times as far as the SAMPLE
    # newest of all, i.e. more than SAMPLE of its messages are newer than `bound`. Counted only
    # that far back (FTS5 stops at the rowid bound): a rare word reads its few recent matches,
    # not SAMPLE of them from anywhere in the mailbox.
    bound = newest - COMMON * (newest - oldest)
    rarer = [word for word in words if not _in_more_than(index, word, SAMPLE, newer_than=bound)]
    if not rarer and any(len(term) > 1 for term in terms):
        # Only common words, in a phrase: FTS5 compares their positions in every message that has
        # them all (168 ms at 100k messages); the candidates are the newest of those instead.
        return Narrowed(fts, terms, words)
    return Narrowed(fts, terms, rarer) if 0 < len(rarer) < len(words) else None


def _in_more_than(index, word: str, count: int, newer_than: int) -> bool:
    """Whether more than `count` messages with an id above `newer_than` have the word."""
    return index.execute(
        "SELECT 1 FROM messages_fts WHERE messages_fts MATCH ? AND rowid > ? ORDER BY rowid DESC LIMIT 1 OFFSET ?",
        (in_text(word), newer_than, count),
    ).fetchone() is not None


class _Scratch(threading.local):
    """A small in-memory index per thread (a cache, safe to lose), with the full index's tokenizer."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.conn.execute(
            f"CREATE VIRTUAL TABLE messages_fts USING fts5 (subject, body_md, content = '', tokenize = '{TOKENIZER}')"
        )


_scratch = _Scratch()


def _indexed_matching(index, fts: str, ids: list[int]) -> list[int]:
    """Those of `ids` that match the FTS5 query, asked of the index row by row (`rowid IN`: FTS5
    looks each up in every word's list, ~0.1-1 ms a row at a million messages, however long it is)."""
    if not ids:
        return []
    return [row[0] for row in index.execute(
        f"SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? AND rowid IN ({placeholders(ids)})", (fts, *ids)
    )]


def _fts_matching(fts: str, rows: list) -> list[int]:
    """The ids of those (id, subject, body) rows that match the FTS5 query, as the full index would answer."""
    if not rows:
        return []
    scratch = _scratch.conn
    scratch.execute("INSERT INTO messages_fts (messages_fts) VALUES ('delete-all')")
    scratch.executemany("INSERT INTO messages_fts (rowid, subject, body_md) VALUES (?, ?, ?)", rows)
    return [row[0] for row in scratch.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ?", (fts,))]
