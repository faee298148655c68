"""Search queries as agents type them, turned into FTS5 queries that always parse.

FTS5's own syntax reads `CART-12` as "column CART, minus 12", `api.py` as a syntax error and
`fix: bug` as a column filter. Agents type ids, file names, paths and punctuation, so here
every word is literal text unless it is an operator used as one:

- words (all must match); anything with punctuation (CART-12, src/cart/api.py, it's, C++,
  -flag) is the phrase of its words, as the index tokenizes them;
- "exact phrase" (an unclosed quote is just punctuation);
- prefix* (a word ending in *);
- AND, OR, NOT (upper case, between two terms), ( ) when balanced;
- NEAR(a b) and NEAR(a b, 5), its terms words, prefixes or "phrases"; a distance past
  NEAR_MAX_DISTANCE means the same as it (anywhere in the column); a NEAR( that is no such
  group is read without its NEAR (not as the word "near", which would find nothing);
- subject:word, body:word (or subject:"a phrase"); any other `name:` is literal text.

`fts5_query` returns the FTS5 query, or None when the text holds no searchable word;
`fts5_terms` its terms (phrases, prefixes, column filters, NEAR groups), for ranking;
`fts5_phrases` the phrases and prefixes of an FTS5 query, which tools/search.py bounds.
`literal_query` is the fallback that treats every word as text. `plain_terms` splits a query
of only words and phrases into its words, for tools/search_narrowing.py.
"""

import itertools
import os
import re
import unicodedata
from functools import lru_cache

from ..store.tokenizer import stem

COLUMNS = {"subject": "subject", "body": "body_md", "body_md": "body_md"}
OPERATORS = ("AND", "OR", "NOT")
_TOKEN = re.compile(
    r'(?P<column>[A-Za-z_]+):"(?P<column_phrase>[^"]*)"'  # subject:"a phrase"
    r'|"(?P<phrase>[^"]*)"'  # "a phrase"
    r"|(?P<paren>[()])"
    r'|(?P<word>[^\s()"]+)'  # anything else up to space, quote or parenthesis
    r'|"'  # an unclosed quote: punctuation
)
_NEAR = re.compile(r'NEAR\((?P<terms>(?:[^()"]|"[^"]*")*?)(?:,\s*(?P<distance>\d+))?\)')
_NEAR_TERM = re.compile(r'"(?P<phrase>[^"]*)"(?P<star>\*)?|(?P<word>[^\s"]+)')
# More words than any column holds (a body is at most 262,144 characters), so a larger distance
# means the same: anywhere in the column. FTS5 reads the distance as a 32-bit int: 2**31 and
# above wrapped (4294967298 was 2).
NEAR_MAX_DISTANCE = 1_000_000


def _searchable(text: str) -> bool:
    """Whether the index's tokenizer (unicode61) finds a word in it: letters or digits."""
    return any(char.isalnum() for char in text)


# Scripts the tokenizer reads a run of as one word when written without spaces (Chinese, Japanese),
# so that a prefix can only be the start of a run, often one character (a Han one is often a word
# in itself); a broad one is bounded by the search's time budget like any other query.
_CJK_NAMES = ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH", "HIRAGANA", "KATAKANA", "HALFWIDTH KATAKANA",
              "HANGUL")


def has_cjk(text: str) -> bool:
    """Whether the text holds a Han, Hiragana, Katakana or Hangul character."""
    return any(not char.isascii() and unicodedata.name(char, "").startswith(_CJK_NAMES) for char in text)


def _quote(text: str) -> str:
    """As an FTS5 string. A NUL would end it early for SQLite ("unterminated string": a 500); the
    tokenizer reads it as a separator anyway, as it reads a space."""
    return '"' + text.replace('"', '""').replace("\x00", " ") + '"'


def _term(word: str) -> str | None:
    """One typed word as an FTS5 term: a phrase of its words, with a trailing * a prefix."""
    if word.endswith("*") and _searchable(word):
        return _quote(word.rstrip("*")) + " *"
    return _quote(word) if _searchable(word) else None


def _near_terms(text: str) -> list[str]:
    """The FTS5 terms of a NEAR group's inside: "phrases" (with a trailing * a prefix), words."""
    terms = []
    for match in _NEAR_TERM.finditer(text):
        if match["word"] is not None:
            term = _term(match["word"])
        else:
            term = (_quote(match["phrase"]) + (" *" if match["star"] else "")) if _searchable(match["phrase"]) else None
        if term:
            terms.append(term)
    return terms


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, FTS5 text) items: kind is 'term', 'op', '(' or ')'."""
    items: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        if text.startswith("NEAR(", position):
            near = _NEAR.match(text, position)
            if near is None:  # meant as the operator, yet no group: what follows, read as usual
                position += len("NEAR")
                continue
            if terms := _near_terms(near["terms"]):
                distance = f", {min(int(near['distance']), NEAR_MAX_DISTANCE)}" if near["distance"] else ""
                items.append(("term", f"NEAR({' '.join(terms)}{distance})"))
            position = near.end()
            continue
        match = _TOKEN.search(text, position)
        if match is None:
            break
        position = match.end()
        if match["column"] is not None:
            column = COLUMNS.get(match["column"].lower())
            if column and _searchable(match["column_phrase"]):
                items.append(("term", f"{column} : {_quote(match['column_phrase'])}"))
            else:
                items += [("term", term) for term in (_term(match["column"]), _term(match["column_phrase"])) if term]
        elif match["phrase"] is not None:
            if _searchable(match["phrase"]):
                items.append(("term", _quote(match["phrase"])))
        elif match["paren"]:
            items.append((match["paren"], match["paren"]))
        elif match["word"]:
            word = match["word"]
            name, colon, rest = word.partition(":")
            if word in OPERATORS:
                items.append(("op", word))
            elif colon and name.lower() in COLUMNS and (term := _term(rest)):
                items.append(("term", f"{COLUMNS[name.lower()]} : {term}"))
            elif term := _term(word):
                items.append(("term", term))
    return items


def _nesting(items: list[tuple[str, str]]) -> int | None:
    """How deep the groups go (0: none), or None when the parentheses are unbalanced."""
    depth = deepest = 0
    for kind, _ in items:
        depth += {"(": 1, ")": -1}.get(kind, 0)
        if depth < 0:
            return None
        deepest = max(deepest, depth)
    return deepest if depth == 0 else None


def nesting(text: str) -> int:
    """How deep the query's groups go (its parentheses ignored when unbalanced: 0). FTS5's parser
    refuses ~99 levels ("parser stack overflow"), which tools/search.py bounds well before."""
    return _nesting(_tokens(text)) or 0


def fts5_query(text: str) -> str | None:
    items = _tokens(text)
    if _nesting(items) is None:
        items = [item for item in items if item[0] not in "()"]
    out: list[tuple[str, str]] = []
    for index, (kind, value) in enumerate(items):
        if kind == "op":
            after = items[index + 1][0] if index + 1 < len(items) else None
            if out and out[-1][0] in ("term", ")") and after in ("term", "(", "op"):
                out.append((kind, value))
            else:  # not between two terms: the word itself
                out.append(("term", _quote(value)))
        elif kind == ")" and out and out[-1][0] in ("(", "op"):
            return literal_query(text)  # "()" or "(a OR)": no structure worth keeping
        else:
            out.append((kind, value))
    while out and out[-1][0] == "op":  # "a AND OR" leaves a trailing operator
        out[-1] = ("term", _quote(out[-1][1]))
    joined: list[str] = []
    for index, (kind, value) in enumerate(out):
        if index and (out[index - 1][0], kind) in ((")", "term"), (")", "("), ("term", "(")):
            joined.append("AND")  # FTS5 has no implicit AND next to a parenthesis
        joined.append(value)
    return " ".join(joined) or None


_QUOTED = re.compile(r'"([^"]*)"( \*)?')  # a phrase in fts5_query's output (its quoted text holds no "); " *": a prefix


def fts5_phrases(fts: str) -> list[tuple[list[str], bool]]:
    """The phrases of an FTS5 query from fts5_query (words, in NEAR groups and columns too): the
    words of each, and whether its last one is a prefix (FTS5 reads `"src/mig" *` as src, then
    a word starting with mig)."""
    return [(re.findall(r"[^\W_]+", quoted), bool(star)) for quoted, star in _QUOTED.findall(fts)]


def fts5_terms(text: str) -> list[str]:
    """The query's terms, each a valid FTS5 query by itself, without repeats."""
    return list(dict.fromkeys(value for kind, value in _tokens(text) if kind == "term"))


_ASCII_WORD = re.compile(r"[A-Za-z0-9]+")  # what unicode61 reads as one word of ASCII text


def plain_terms(text: str) -> list[list[str]] | None:
    """The words of each term of a query of only words and phrases (all must match): every
    match of the query contains every term's words, in order. None for any other query (OR,
    NOT, groups, prefixes, columns, NEAR) or for text beyond ASCII, whose word boundaries only
    the tokenizer knows. Used by tools/search_narrowing.py."""
    terms = []
    items = _tokens(text)
    for index, (kind, value) in enumerate(items):
        between_terms = 0 < index < len(items) - 1 and items[index - 1][0] == items[index + 1][0] == "term"
        if kind == "op" and value == "AND" and between_terms:
            continue  # AND between two terms (elsewhere fts5_query reads it as a word: not plain)
        if kind != "term" or not (value.startswith('"') and value.endswith('"')) or not value.isascii():
            return None
        terms.append(_ASCII_WORD.findall(value[1:-1]))
    return terms or None


def literal_query(text: str) -> str | None:
    """Every word of the text as literal text (all must match)."""
    terms = [_quote(word) for word in re.split(r'[\s"()]+', text) if _searchable(word)]
    return " ".join(terms) or None


def query_words(text: str) -> list[str]:
    """The words a query searches, lower case, for marking them in a snippet: those fts5_query
    quotes, but those it excludes (NOT's operand: a hit holds none of them where it matched).
    An operator used as one is left out, but not one it reads as a word (`AND` alone, `OR` at
    an end), nor a column name it reads as text."""
    quoted = _QUOTED.findall(" ".join(_without_excluded(fts5_query(text) or "")))
    return list(dict.fromkeys(_lower(word) for phrase, _ in quoted for word in re.findall(r"\w+", phrase)))


# fts5_query's output, a token at a time: a phrase (and its prefix star), a column filter, a
# group's parentheses (NEAR's too), an operator.
_FTS5_TOKEN = re.compile(r'"[^"]*"(?: \*)?|\{[^}]*\} :|\w+ :|NEAR\(|[()]|AND|OR|NOT|\S+')


def _without_excluded(fts: str) -> list[str]:
    """fts5_query's tokens less each NOT's operand (its column filter, then a phrase or a group)."""
    tokens, kept, at = _FTS5_TOKEN.findall(fts), [], 0
    while at < len(tokens):
        if tokens[at] != "NOT":
            kept.append(tokens[at])
            at += 1
            continue
        at += 1
        while at < len(tokens) and tokens[at].endswith(" :"):
            at += 1
        depth = 0
        while at < len(tokens):  # the operand: one phrase, or a group to its closing parenthesis
            depth += tokens[at] in ("(", "NEAR(") or -(tokens[at] == ")")
            at += 1
            if depth <= 0:
                break
    return kept


def snippet_terms(text: str) -> list[tuple[str, ...]]:
    """What a snippet looks for, lower case: the phrases of a query of plain words and phrases
    (`CART-12` is one: ("cart", "12")), else each of its words alone; its first SNIPPET_WORDS
    words only (a longer phrase is cut), so that what a snippet tries is bounded. A word alone
    is cut to what it shares with its stem (_stem_start), a prefix's word is not."""
    return list(_snippet_terms(text))


@lru_cache(maxsize=256)
def _snippet_terms(text: str) -> tuple[tuple[str, ...], ...]:
    """snippet_terms' answer, read once per query: the web UI's search page marks each of its 100
    hits again (parsing the query each time was a sixth of the page's time)."""
    plain = plain_terms(text)
    terms = [tuple(_lowered(word) for word in words) for words in plain if words] if plain else []
    terms = list(dict.fromkeys(terms)) or [(_lowered(word),) for word in query_words(text)]
    prefixes = {_lowered(words[-1]) for words, prefix in fts5_phrases(fts5_query(text) or "") if prefix and words}
    terms = list(dict.fromkeys((_stem_start(term[0]),) if len(term) == 1 and term[0] not in prefixes else term
                               for term in terms))
    bounded, room = [], SNIPPET_WORDS
    for term in terms:
        if room <= 0:
            break
        bounded.append(term[:room])
        room -= len(term)
    return tuple(dict.fromkeys(bounded))


def _stem_start(word: str) -> str:
    """The start a word shares with its stem, at least 3 characters: the index matches stems
    (`migrations` finds migration, `deploying` deployed), and a snippet marks the words starting
    with it (`migrat`, `deploy`: porter's y to i, deploi, kept as typed)."""
    stemmed = stem(word)
    start = os.path.commonprefix([word, stemmed])
    if stemmed[len(start):].startswith("i") and word[len(start):].startswith("y"):
        start += "y"
    return start if len(start) >= 3 else word


_WORD_REST = re.compile(r"\w*")
_SEPARATORS = re.compile(r"[\W_]*")  # what the index's tokenizer skips between words: no letter or digit

# What one snippet may cost, whatever the body and the query (a 300-word phrase of `a` against
# a body of 120,000 `a`s took 6.6 s): it looks at the first LOOK_CHARS characters of a text, for
# at most SNIPPET_WORDS words of the query, trying at most TRIES places of each; the passage it
# marks is at most PASSAGE_CHARS long.
LOOK_CHARS = 64 * 1024
SNIPPET_WORDS = 16
TRIES = 100
PASSAGE_CHARS = 1000
# What a snippet may show of a body: a caller need read no more of it (a passage ends within
# PASSAGE_CHARS of where it was found; only what follows a run of ~1,000 blanks may come out shorter).
SNIPPET_CHARS = LOOK_CHARS + PASSAGE_CHARS


# Latin letters with a diacritic, each to its letter without (one character for one, so positions
# hold), as the index's tokenizer (unicode61: remove_diacritics) reads them: `cafe` matches café,
# and its snippet marked nothing there.
_UNACCENTED = {code: base for code in range(0xC0, 0x250) if (base := unicodedata.normalize("NFD", chr(code))[0]).isascii()
               and base != chr(code)}


def _lowered(text: str) -> str:
    """The text lower case and without diacritics on Latin letters, for finding the query's words in it
    (character for character: İ, the one letter whose lower case is two, is read as I)."""
    return text.lower() if text.isascii() else _lower(text).translate(_UNACCENTED)


def _lower(text: str) -> str:
    return text.replace("\u0130", "I").lower()  # İ: the one letter whose lower case is two characters


def _is_word(char: str) -> bool:
    return char.isalnum() or char == "_"  # what \w matches


def _word_start(lower: str, word: str, at: int = 0) -> int:
    """The first place from `at` where `word` starts a word of the lower-cased text (no word
    character before it), or -1; -1 too after TRIES places where it is inside a word."""
    at = lower.find(word, at)
    for _ in range(TRIES):
        if at <= 0 or not _is_word(lower[at - 1]):
            return at
        at = lower.find(word, at + 1)
    return -1


def _first_start(text: str, lower: str, terms: list[tuple[str, ...]]) -> int | None:
    """Where the first place of one of the terms starts in the text (`lower`: the text lower
    case): str.find, ~10x faster than a pattern (which has no literal start) and nothing to
    compile."""
    if len(lower) != len(text):  # a letter whose lower case is longer: positions would shift
        found = _marker(tuple(dict.fromkeys(term[0] for term in terms))).search(text.translate(_UNACCENTED))  # a phrase by its first word
        return found.start() if found else None
    return min((at for term in terms if (at := _term_at(lower, term)) is not None), default=None)


def _term_at(lower: str, term: tuple[str, ...]) -> int | None:
    """Where the term's first place starts: a word starting with a one-word term, or the phrase."""
    if len(term) > 1:
        span = _phrase_span(lower, term)
        return span[0] if span else None
    at = _word_start(lower, term[0])
    return at if at >= 0 else None


def _marked_words(passage: str, words: list[str]) -> str:
    """Each word of the passage that starts with a query word, marked **like this**: what
    `_marker(words)` substitutes (a new query's pattern takes ~80 µs to compile)."""
    if not words:
        return passage
    lower = _lowered(passage)
    if len(lower) != len(passage):  # (positions would shift: the pattern, on the text without accents)
        starts = {found.start(): found.end() for found in _marker(tuple(words)).finditer(passage.translate(_UNACCENTED))}
    else:
        starts = {}
        for word in words:
            at = _word_start(lower, word)
            while at >= 0:
                starts[at] = _WORD_REST.match(lower, at).end()
                at = _word_start(lower, word, at + 1)
    pieces, done = [], 0
    for at in sorted(starts):  # each is its word's first character: marked words never overlap
        pieces += [passage[done:at], "**", passage[at:starts[at]], "**"]
        done = starts[at]
    return "".join(pieces) + passage[done:]


def snippet(subject: str, body: str, terms: list[tuple[str, ...]], width: int = 16) -> str:
    """About `width` words around the first place of the query's longest term (in the subject,
    else the body), else of any term, else of any of their words; each place of a phrase
    marked **like-this** as a whole, each word starting with a one-word term **like** this.
    The longest term is the most telling one (a path, a ticket id), where the first of any word
    is often a common prefix (`py` in "python"). A phrase found nowhere as a phrase (text the
    index splits where this does not) has its words marked one by one."""
    if not terms:
        return ""
    tries = [[max(terms, key=lambda term: sum(map(len, term)))]]
    if len(terms) > 1:
        tries.append(terms)
    if any(len(term) > 1 for term in terms):
        tries.append([(word,) for word in dict.fromkeys(word for term in terms for word in term)])
    places = [(text, text[:LOOK_CHARS]) for text in (subject, body)]
    for candidates, (text, looked) in itertools.product(tries, places):  # ends on the body if nothing is found
        if (found := _first_start(looked, _lowered(looked), candidates)) is not None:
            break
    shown, more_before, more_after = _around(text, found or 0, width // 4, width)
    passage = " ".join(shown)
    if len(passage) > PASSAGE_CHARS:  # a token thousands of characters long
        passage, more_after = passage[:PASSAGE_CHARS], True
    return ("…" if more_before else "") + marked(passage, terms) + ("…" if more_after else "")


def _phrase_span(lower: str, phrase: tuple[str, ...], at: int = 0) -> tuple[int, int] | None:
    """Where the phrase's first place from `at` starts and ends: its first word starting a word,
    each next one after characters that are no letters or digits (what the index's tokenizer
    skips), the last one ending there. (Lower-cased text of the same length as the original.)
    None too after TRIES places of its first word where the rest does not follow."""
    for _ in range(TRIES):
        if (start := _word_start(lower, phrase[0], at)) < 0:
            return None
        if (end := _phrase_end(lower, phrase, start)) is not None:
            return start, end
        at = start + 1
    return None


def _phrase_end(lower: str, phrase: tuple[str, ...], start: int) -> int | None:
    """Where the phrase starting at `start` ends, or None if it does not go on there."""
    position = start + len(phrase[0])
    for word in phrase[1:]:
        gap = _SEPARATORS.match(lower, position).end()
        if gap == position or not lower.startswith(word, gap):
            return None
        position = gap + len(word)
    if position < len(lower) and lower[position].isalnum():
        return None
    return position


def marked(passage: str, terms: list[tuple[str, ...]]) -> str:
    """The passage with each place of a phrase marked as a whole, then each word starting with
    a one-word term (or with a word of a phrase the passage holds nowhere as a phrase)."""
    phrases = [term for term in terms if len(term) > 1]
    if not phrases:
        return _marked_words(passage, [term[0] for term in terms])
    lower = _lowered(passage)
    spans, found = [], set()
    for phrase in phrases if len(lower) == len(passage) else ():
        span = _phrase_span(lower, phrase)
        while span is not None:
            spans.append(span)
            found.add(phrase)
            span = _phrase_span(lower, phrase, span[0] + 1)
    words = list(dict.fromkeys(word for term in terms if term not in found for word in term))
    pieces, done = [], 0
    for start, end in sorted(spans):
        if start >= done:  # not inside a phrase already marked
            pieces += [_marked_words(passage[done:start], words), "**", passage[start:end], "**"]
            done = end
    return "".join(pieces) + _marked_words(passage[done:], words)


@lru_cache(maxsize=64)
def _marker(words: tuple[str, ...]) -> re.Pattern:
    """The pattern of what snippets mark: words starting with one of these (case ignored)."""
    return re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\w*", re.I)


def _around(text: str, at: int, before: int, width: int) -> tuple[list[str], bool, bool]:
    """`width` whitespace-separated tokens of text: up to `before` of them before the one `at` is
    in, then that one and those after it; and whether more come before and after. Only the
    tokens shown are split out (a body is up to 256 KiB; a page has 20 snippets)."""
    head, tail = text[:at], text[at:]
    glued = bool(head) and not head[-1].isspace() and bool(tail) and not tail[0].isspace()
    previous = head.rsplit(None, before + 1 if glued else before)
    if glued:  # the token `at` is in starts in head
        tail = previous.pop() + tail
    more_before = len(previous) > before  # rsplit's first part then holds the tokens not shown
    shown = previous[1:] if more_before else previous
    following = tail.split(None, width - len(shown))
    more_after = len(following) > width - len(shown)
    return shown + following[: width - len(shown)], more_before, more_after
