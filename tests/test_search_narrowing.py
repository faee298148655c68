"""Search with a very common word (issue 12): the window comes from the query's rarer words and
the whole query is checked on those candidates; the answers are those of the full index."""

import re
import unicodedata

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from chalicelib.tools import search, search_narrowing
from chalicelib.tools.search_syntax import (
    LOOK_CHARS, _around, _first_start, _lowered, _marked_words, marked, plain_terms, snippet, snippet_terms,
)

pytestmark = pytest.mark.both_backends

# Every message has src and py; cart and api are in few. Subjects name what FTS5 answers.
BODIES = {
    "exact": "Touching src/cart/api.py today.",
    "upper case": "TOUCHING SRC/CART/API.PY",
    "stemmed": "Renamed src/carts/api.py",  # porter reads carts as cart: a match FTS5 makes
    "beyond ascii": "src/cart/api.py — déjà vu",
    "scattered": "cart api in src, then py",  # every word, but not the phrase
    "glued": "xsrc/cart/api.py",  # xsrc is another word
    "underscore": "src_cart_api_py",  # _ separates words for the index too: a match
}
FILLER = 30


@pytest.fixture
def paths(call, project, monkeypatch):
    """The full-text path's narrowing: a path typed alone takes the runs' index (tests/test_search_runs.py),
    but not in a query with other words, nor while a database's runs are being filled in."""
    monkeypatch.setattr(search, "_typed_run", lambda *args: None)
    monkeypatch.setattr(search_narrowing, "SAMPLE", 10)  # a word in fewer than 10 messages is rare here
    for number in range(FILLER):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"filler {number}",
             body_md=f"see src/mod{number}/file.py")
    for subject, body in BODIES.items():
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md=body)
    return project


def found(call, project, query, **options):
    return {hit["subject"] for hit in call("search_messages", project_key=project, query=query, limit=50, **options)["results"]}


def test_a_path_of_common_words_finds_what_the_full_index_finds(call, paths, monkeypatch):
    checked = []
    fts_matching = search_narrowing._fts_matching
    monkeypatch.setattr(search_narrowing, "_fts_matching", lambda fts, rows: checked.extend(rows) or fts_matching(fts, rows))
    narrowed = found(call, paths, "src/cart/api.py")
    assert narrowed == {"exact", "upper case", "stemmed", "beyond ascii", "underscore"}
    assert {row[1] for row in checked} == {"stemmed", "beyond ascii", "scattered", "glued"}  # only the unsure ones
    monkeypatch.setattr(search, "narrowed", lambda *args: None)
    assert found(call, paths, "src/cart/api.py") == narrowed


def test_a_long_body_is_checked_by_its_start_then_by_the_index(call, paths, monkeypatch):
    """Each candidate's body was lower-cased and scanned whole, and an unsure one re-indexed whole
    in the scratch index: 500 candidates of 256 KiB took seconds."""
    far = "x " * LOOK_CHARS
    for subject, body in {"long, found at the start": f"src/cart/api.py {far}", "long, found past the start": f"{far} src/cart/api.py",
                          "long, scattered": f"cart {far} api src py"}.items():
        call("send_message", project_key=paths, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md=body)
    re_indexed = []
    fts_matching = search_narrowing._fts_matching
    monkeypatch.setattr(search_narrowing, "_fts_matching", lambda fts, rows: re_indexed.extend(rows) or fts_matching(fts, rows))
    narrowed = found(call, paths, "src/cart/api.py")
    assert {"long, found at the start", "long, found past the start"} <= narrowed and "long, scattered" not in narrowed
    assert re_indexed and max(len(row[2]) for row in re_indexed) <= LOOK_CHARS
    monkeypatch.setattr(search, "narrowed", lambda *args: None)
    assert found(call, paths, "src/cart/api.py") == narrowed


def test_the_check_of_candidates_reads_the_clock_between_small_batches(call, paths, monkeypatch):
    """The scratch index took a whole window's unsure candidates in one statement, which nothing
    interrupts: 500 bodies of 64 Ki characters beyond ASCII held the search 1.5 s past its budget."""
    from chalicelib.errors import ToolError
    for number in range(8):
        call("send_message", project_key=paths, sender_name="BlueLake", to=["GreenCastle"], subject=f"accented {number}",
             body_md="src/cart/api.py — déjà vu")
    monkeypatch.setattr(search_narrowing, "SCRATCH_BATCH", 3)
    batches = []
    fts_matching = search_narrowing._fts_matching
    monkeypatch.setattr(search_narrowing, "_fts_matching", lambda fts, rows: batches.append(len(rows)) or fts_matching(fts, rows))
    assert "accented 7" in found(call, paths, "src/cart/api.py")
    assert len(batches) > 3 and max(batches) == 3  # 12 unsure candidates, 3 at a time

    def spending_the_budget(fts, rows):  # the first batch takes the search's whole time
        batches.append(len(rows))
        search._budget.get().deadline = 0
        return fts_matching(fts, rows)

    batches.clear()
    monkeypatch.setattr(search_narrowing, "_fts_matching", spending_the_budget)
    with pytest.raises(ToolError, match="SEARCH_TIMEOUT_MS"):
        found(call, paths, "src/cart/api.py")
    assert batches == [3]  # the next batches were not indexed


def test_words_and_phrases_together(call, paths, monkeypatch):
    queries = ["cart src", "src/cart/api.py today", '"cart api" py', "api.py AND src", "src cart AND"]
    narrowed = {query: found(call, paths, query) for query in queries}
    monkeypatch.setattr(search, "narrowed", lambda *args: None)
    assert narrowed == {query: found(call, paths, query) for query in queries}
    assert narrowed["src/cart/api.py today"] == {"exact"}


def test_paging_a_narrowed_search_reaches_every_match_once(call, paths, monkeypatch):
    monkeypatch.setattr(search, "NARROWED_WINDOW", 2)  # two candidates a window
    pages, cursor = [], None
    while True:
        page = call("search_messages", project_key=paths, query="src/cart/api.py", limit=2, cursor=cursor)
        pages += [hit["subject"] for hit in page["results"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 20
    assert sorted(pages) == sorted({"exact", "upper case", "stemmed", "beyond ascii", "underscore"})


def test_only_queries_of_plain_words_and_phrases_are_narrowed():
    assert plain_terms("src/cart/api.py CART-12") == [["src", "cart", "api", "py"], ["CART", "12"]]
    assert plain_terms('"exact phrase" AND word') == [["exact", "phrase"], ["word"]]
    for query in ["a OR b", "a NOT b", "(a b)", "bind*", "subject:x", "NEAR(a b)", "café x", "a AND", "AND a"]:
        assert plain_terms(query) is None, query


PIECES = ["cart", "Cart", "(cart", "x.cart", "foo_cart", "cartography", "ĉart", "CART-12", "é12", "x12", "12",
          "İstanbul", "istanbul", "api.py", " ", "\n", "-"]


def unaccented(text: str) -> str:
    """The text as the index reads its Latin letters (unicode61, remove_diacritics: ĉart is cart),
    one character for one."""
    return "".join(base if 0xC0 <= ord(char) < 0x250 and (base := unicodedata.normalize("NFD", char)[0]).isascii() else char
                   for char in text)


def pattern_marked(pattern: re.Pattern, text: str) -> str:
    """What the pattern finds in the text as the index reads it, marked **like this** in the text."""
    pieces, done = [], 0
    for found in pattern.finditer(unaccented(text)):
        pieces += [text[done:found.start()], "**", text[found.start():found.end()], "**"]
        done = found.end()
    return "".join(pieces) + text[done:]


def first_word_start(text: str, words: list[str]) -> int | None:
    """Where snippets find the first word starting with one of `words` (in the text lower case, without accents)."""
    return _first_start(text, _lowered(text), [(word,) for word in words])


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=30),
       st.lists(st.sampled_from(["cart", "12", "api", "istanbul"]), min_size=1, max_size=3))
def test_snippets_find_the_first_query_word_where_the_pattern_does(pieces, words):
    text = " ".join(pieces)
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\w*", re.I)
    found = pattern.search(unaccented(text))
    assert first_word_start(text, words) == (found.start() if found else None)



@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([*PIECES, "_cart", "cart_x", "12cart", "ſ12"]), max_size=20),
       st.lists(st.sampled_from(["cart", "12", "api", "istanbul", "ca"]), min_size=1, max_size=3))
def test_snippets_mark_the_words_the_pattern_marks(pieces, words):
    text = " ".join(pieces)
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\w*", re.I)
    assert _marked_words(text, words) == pattern_marked(pattern, text)
    assert marked(text, [(word,) for word in words]) == pattern_marked(pattern, text)  # one-word terms

def reference_snippet_window(text: str, found: int | None, width: int = 16) -> tuple[list[str], bool, bool]:
    """The window as snippet() took it before it split only what it shows: every token of the text."""
    tokens = text.split()
    first = len(text[: found + 1].split()) - 1 if found is not None else 0
    start = max(0, first - width // 4)
    return tokens[start:start + width], start > 0, start + width < len(tokens)


@hypothesis_settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([*PIECES, "  ", "\t", "a", "b c", "xcart", "cart."]), max_size=60),
       st.lists(st.sampled_from(["cart", "12", "api", "istanbul"]), min_size=1, max_size=3))
def test_a_snippet_shows_the_tokens_around_the_first_match(pieces, words):
    text = "".join(pieces)
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, words)) + r")\w*", re.I)
    found = first_word_start(text, words)
    assert _around(text, found or 0, 4, 16) == reference_snippet_window(text, found)
    longest = max(words, key=len)  # the snippet centres on the longest word's first place, if any, as the index reads it
    at_longest = re.search(r"\b" + re.escape(longest) + r"\w*", unaccented(text), re.I)
    found = at_longest.start() if at_longest else first_word_start(text, words)
    shown, before, after = reference_snippet_window(text, found)
    expected = ("…" if before else "") + " ".join(pattern_marked(pattern, token) for token in shown) + ("…" if after else "")
    assert snippet("", text, [(word,) for word in words]) == expected


PHRASE_PIECES = ["cart", "Cart", "CART-12", "cart 12", "cart_12", "cart-123", "x-cart-12", "xcart-12", "12", "-", " ",
                 "(", ")", ".", "api.py", "src/cart/api.py", "é", "_", "cart12", "src"]


@hypothesis_settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(PHRASE_PIECES), max_size=25),
       st.sampled_from([("cart", "12"), ("src", "cart", "api", "py"), ("api", "py"), ("cart", "cart")]))
def test_a_phrase_is_marked_where_the_pattern_of_its_words_finds_it(pieces, phrase):
    """Each place of the phrase marked as a whole (`**CART-12**`, `**src/cart/api.py**`), its words
    alone nowhere else; where it is not, its words are marked one by one."""
    text = "".join(pieces)
    pattern = re.compile(r"(?<!\w)" + r"[\W_]+".join(map(re.escape, phrase)) + r"(?![^\W_])", re.I)
    expected = pattern.sub(r"**\g<0>**", text) if pattern.search(text) else _marked_words(text, list(dict.fromkeys(phrase)))
    assert marked(text, [phrase]) == expected


def test_a_snippet_centres_on_the_phrase_not_on_its_words_elsewhere():
    body = "The cart page lists 12 items; see src/cart/api.py. " + "More words here. " * 20 + "Fixed in CART-12 today."
    terms = snippet_terms("CART-12")
    assert terms == [("cart", "12")]
    assert snippet("Weekly", body, terms) == "…words here. Fixed in **CART-12** today."
    path = snippet("Weekly", body, snippet_terms("src/cart/api.py"))
    assert "**src/cart/api.py**" in path and path.count("**") == 2
    # words of an OR query, a prefix or text beyond ASCII: each word alone, as before
    assert snippet_terms("cart OR api") == [("cart",), ("api",)] and snippet_terms("car*") == [("car",)]


def test_a_snippet_finds_and_marks_what_the_stemmer_matched(call, project):
    """The index matches stems (porter: `migrations` finds migration); a snippet looked for the typed
    word, found none, and showed the body's start with nothing marked."""
    body = "Notes from the sync. " + "Other topics went by. " * 30 + "The database migration ran on staging at noon."
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Weekly notes", body_md=body)
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="We deployed the cart", body_md="ok")

    def snippets(query):
        return [hit["snippet"] for hit in call("search_messages", project_key=project, query=query)["results"]]

    assert snippets("migrations") == snippets("migration") == ["…went by. The database **migration** ran on staging at noon."]
    assert snippets("deploying") == snippets("deploy") == ["We **deployed** the cart"]
    assert snippets("happy OR deploying") == ["We **deployed** the cart"]
    assert snippet_terms("migrations deploying") == [("migrat",), ("deploy",)]
    assert snippet_terms("migrations*") == [("migrations",)]  # a prefix is not stemmed: FTS5 reads it as typed
    assert snippet_terms("using") == [("using",)]  # its stem "us" would mark any word starting so


def test_a_phrase_of_only_common_words_is_checked_on_the_newest_messages_holding_them_all(call, paths, monkeypatch):
    """FTS5 compared the positions of such a phrase in every message holding its words (168 ms at
    100k messages for `"database the the database the"`): now its candidates are the newest of
    those, NARROWED_WINDOW at a time, and paging reaches what the full index finds."""
    monkeypatch.setattr(search, "NARROWED_WINDOW", 2)
    for subject, body in [("py first", "py src/x"), ("then src", "py; src"), ("inverted", "src py")]:
        call("send_message", project_key=paths, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md=body)
    checked = []
    matching = search_narrowing.Narrowed.matching
    monkeypatch.setattr(search_narrowing.Narrowed, "matching", lambda self, index, ids, *rest: checked.append(len(ids)) or matching(self, index, ids, *rest))
    pages, cursor = [], None
    while len(pages) < 100:
        page = call("search_messages", project_key=paths, query='"py src"', limit=2, cursor=cursor)
        pages += [hit["subject"] for hit in page["results"]]
        if (cursor := page["next_cursor"]) is None:
            break
    assert checked and max(checked) <= 2
    monkeypatch.setattr(search, "narrowed", lambda *args: None)
    assert sorted(pages) == sorted(found(call, paths, '"py src"')) == ["py first", "then src"]
