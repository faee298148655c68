"""How the full-text index reads text (migrations/0002_search.sql's tokenizer), for the code that
must read a word or a text as it does."""

import sqlite3
import threading
import unicodedata
from functools import lru_cache

TOKENIZER = "porter unicode61"  # as in migrations/0002_search.sql


def folded(text: str) -> str:
    """The text without diacritics, as unicode61 reads it (café is cafe, ṗ123 is p123)."""
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


class _Stemmer(threading.local):
    """An in-memory index per thread (a cache) that reads a word as the full index does."""

    def __init__(self) -> None:
        self.conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        self.conn.executescript(f"CREATE VIRTUAL TABLE words USING fts5 (word, tokenize = '{TOKENIZER}');"
                                " CREATE VIRTUAL TABLE stems USING fts5vocab (words, 'instance');")


_stemmer = _Stemmer()


@lru_cache(maxsize=4096)
def stem(word: str) -> str:
    """The token the index keeps of a word (porter: migrations is migrat, deploying deploi), or the
    word itself when the tokenizer reads it as no word or several."""
    conn = _stemmer.conn
    conn.execute("DELETE FROM words")
    conn.execute("INSERT INTO words (rowid, word) VALUES (1, ?)", (word,))
    tokens = [token for (token,) in conn.execute("SELECT term FROM stems")]
    return tokens[0] if len(tokens) == 1 else word
