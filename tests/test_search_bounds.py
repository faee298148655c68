"""What one search may cost, whatever the mailbox, the message and the query (an audit of
search): snippets, prefix queries, paging while mail arrives, the product search's window."""

import asyncio
import itertools
import sqlite3
import threading
from pathlib import Path

import pytest

from chalicelib import invoke
from chalicelib.config import get_settings
from chalicelib.errors import InvalidArgument
from chalicelib.ids import new_ids
from chalicelib.tools import search, search_syntax, tools_by_name

from .sql import migrated_until, sql


def test_a_snippet_of_a_long_phrase_in_a_long_body_tries_a_bounded_number_of_places(call, project, monkeypatch,
                                                                                    search_timeout_ms):
    """A 300-word phrase against 120,000 words that all start it took 6.6 s, on the event loop."""
    search_timeout_ms(60_000)  # FTS5 compares the phrase at each of the 120,000 places (~1 s, more on a busy machine)
    body = "a " * 120_000 + "b"
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="log", body_md=body)
    tried = []
    phrase_end = search_syntax._phrase_end
    monkeypatch.setattr(search_syntax, "_phrase_end", lambda lower, phrase, start: tried.append(len(phrase)) or phrase_end(lower, phrase, start))
    [hit] = call("search_messages", project_key=project, query='"' + " ".join(["a"] * 300) + ' b"')["results"]
    assert hit["subject"] == "log" and "**a" in hit["snippet"]
    assert max(tried) <= search_syntax.SNIPPET_WORDS  # of the phrase's 301 words, the first 16
    # looking: each of 3 lists of terms in the subject and the body; marking: each place in the passage
    assert len(tried) <= 3 * 2 * search_syntax.TRIES + search_syntax.PASSAGE_CHARS


def test_a_snippet_shows_a_bounded_passage_of_a_token_without_spaces():
    body = "a-" * 120_000 + "b"  # one whitespace-separated token of 240 KB
    shown = search_syntax.snippet("log", body, search_syntax.snippet_terms("a-a-b"))
    assert shown.startswith("**a**-**a**") and len(shown.replace("**", "")) <= search_syntax.PASSAGE_CHARS + 1  # and "…"


@pytest.fixture
def migrations(call, project):
    for subject in ("Database migration", "Migrated the inbox", "src/migrations/0022.sql is new"):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md="")
    return project


def subjects(call, project, query):
    return sorted(hit["subject"] for hit in call("search_messages", project_key=project, query=query)["results"])


@pytest.mark.parametrize("query", ["m*", "mi*", "database mi*", "NEAR(mi* database)", "subject:d*", "src/m*", "a*b*"])
def test_a_prefix_of_fewer_than_three_letters_is_refused_with_a_hint(call, migrations, query):
    """FTS5 merges the lists of every word a prefix starts: `t*` read most of the index (420 ms at 100k)."""
    with pytest.raises(InvalidArgument, match="at least 3 letters") as refused:
        call("search_messages", project_key=migrations, query=query)
    assert "migrat*" in refused.value.hint


@pytest.mark.both_backends
def test_a_prefix_of_one_cjk_character_finds_the_runs_it_starts(call, project):
    """The tokenizer reads a run of Han or Kana without spaces as one word: 東京 finds no 東京开会,
    and 東京* was refused as shorter than 3 letters. One such character is a word: prefix enough.
    A word in the middle of a run stays unfound, as docs/search.md says."""
    for subject, body in (("会议记录", "明天在東京开会讨论部署计划"), ("Tokyo", "東京开会"), ("Kana", "カタカナ"), ("Seoul", "서울에서 만나요")):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md=body)
    assert subjects(call, project, "東京*") == subjects(call, project, "東*") == ["Tokyo"]
    assert subjects(call, project, "カ*") == ["Kana"] and subjects(call, project, "서*") == ["Seoul"]
    assert subjects(call, project, "会议记录") == ["会议记录"]  # a whole run
    assert subjects(call, project, "東京") == subjects(call, project, "在東*") == []  # inside a run
    with pytest.raises(InvalidArgument, match="or one Chinese, Japanese or Korean character"):
        call("search_messages", project_key=project, query="t*")
    docs = (Path(__file__).resolve().parent.parent / "docs" / "search.md").read_text()
    assert "`東京*` finds 東京开会" in docs and "`東京` and `東京*` find nothing in 明天在東京开会" in docs


def test_a_query_has_at_most_two_prefixes(call, migrations):
    with pytest.raises(InvalidArgument, match="3 prefixes: at most 2") as refused:
        call("search_messages", project_key=migrations, query="mig* dat* inb*")
    assert refused.value.hint
    assert subjects(call, migrations, "migrat* inb*") == ["Migrated the inbox"]
    assert subjects(call, migrations, "src/mig*") == ["src/migrations/0022.sql is new"]


@pytest.mark.parametrize("query", [
    "migrat*", "NEAR(database migration)", "-".join(["a"] * 17), "database migration", "src/migrations/0022.sql",
    '"database migration"',
])
def test_every_search_runs_off_the_event_loop(settings, migrations, monkeypatch, query):
    """Plain words and short phrases ran on it, at a cost that grows with the bodies they match
    (positions, snippets): a phrase over 500 bodies of 256 KiB held it 0.4-3 s."""
    threads = []
    monkeypatch.setattr(search, "snippet_terms", lambda text: threads.append(threading.current_thread()) or search_syntax.snippet_terms(text))
    asyncio.run(invoke.ajson(tools_by_name()["search_messages"], {"project_key": migrations, "query": query}, settings))
    assert threads and threading.main_thread() not in threads


def test_a_snippet_is_cut_from_a_bounded_start_of_the_body(call, project, monkeypatch):
    """A page of 500 hits read its 500 bodies whole (128 MB of 256 KiB bodies) to cut snippets
    from their first 64 Ki characters."""
    bodies = {"early": "x " * 30_000 + "the deploy plan " + "y " * 100_000, "late": "z " * 120_000 + "deploy"}
    for subject, body in bodies.items():
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md=body)
    given = []
    monkeypatch.setattr(search, "snippet", lambda subject, body, terms: given.append(len(body)) or search_syntax.snippet(subject, body, terms))
    hits = {hit["subject"]: hit["snippet"] for hit in call("search_messages", project_key=project, query="deploy")["results"]}
    assert max(given) <= search_syntax.SNIPPET_CHARS
    terms = search_syntax.snippet_terms("deploy")
    assert hits == {subject: search_syntax.snippet(subject, body, terms) for subject, body in bodies.items()}


def test_a_searchs_python_work_counts_against_its_time_budget(call, project, monkeypatch):
    """Only its SQLite statements were stopped: a phrase over 500 bodies of 256 KiB answered in
    3.3 s with a budget of 2 s. The clock here moves 10 s a snippet."""
    for n in range(3):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"deploy {n}", body_md="x")
    now = [0.0]
    monkeypatch.setattr(search, "monotonic", lambda: now[0])
    snippet = search.snippet
    monkeypatch.setattr(search, "snippet", lambda *args: now.__setitem__(0, now[0] + 10) or snippet(*args))
    with pytest.raises(InvalidArgument, match="took longer than 2000 ms") as refused:
        call("search_messages", project_key=project, query="deploy")
    assert "a smaller limit" in refused.value.hint


def deploy_pages(call, project, **options):
    """The subjects of every page of a search for deploy, in order, following next_cursor."""
    pages, cursor = [], None
    while len(pages) < 50:
        page = call("search_messages", project_key=project, query="deploy", cursor=cursor, **options)
        pages.append([hit["subject"] for hit in page["results"]])
        if (cursor := page["next_cursor"]) is None:
            return pages
    raise AssertionError("paging never ended")


def send_deploy(call, project, subject, body="deploy the build"):
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md=body)


@pytest.mark.parametrize("window", [500, 3])
def test_mail_arriving_between_pages_stays_out_of_a_paging_in_progress(call, project, monkeypatch, window):
    """The first page's cursor started above every id: a new match entered the window and
    shifted every position, so the next page repeated a hit."""
    monkeypatch.setattr(search, "WINDOW", window)
    for number in range(5):
        send_deploy(call, project, f"deploy {number}")
    first = call("search_messages", project_key=project, query="deploy", limit=2)
    send_deploy(call, project, "deploy, newer")
    seen = [hit["subject"] for hit in first["results"]]
    cursor = first["next_cursor"]
    while cursor:
        page = call("search_messages", project_key=project, query="deploy", limit=2, cursor=cursor)
        seen += [hit["subject"] for hit in page["results"]]
        cursor = page["next_cursor"]
    assert sorted(seen) == [f"deploy {number}" for number in range(5)]  # each once; the new one on a new search
    assert "deploy, newer" in sum(deploy_pages(call, project, limit=2), [])


def test_with_no_mail_between_pages_paging_gives_the_ranking_of_one_page(call, project):
    for number, body in enumerate(["deploy", "deploy deploy deploy", "deploy deploy", "deploy and more words here", "deploy x4 " * 4]):
        send_deploy(call, project, f"note {number}", body)
    whole = deploy_pages(call, project, limit=50)
    assert len(whole) == 1 and len(whole[0]) == 5
    assert sum(deploy_pages(call, project, limit=1), []) == sum(deploy_pages(call, project, limit=2), []) == whole[0]


def test_without_a_rare_term_paging_is_exact_whatever_mail_arrives(call, project, monkeypatch):
    """Hits are then listed newest first, an order new mail cannot change (bm25's statistics,
    which any new message changes, reorder ranked hits: docs/search.md)."""
    monkeypatch.setattr(search, "RARE", 1)  # a term in more than one message weighs nothing
    for number in range(6):
        send_deploy(call, project, f"deploy {number}", "deploy alpha" if number % 2 else "deploy beta beta")
    first = call("search_messages", project_key=project, query="deploy beta", limit=1)
    for number in range(20):
        send_deploy(call, project, f"other {number}", "beta, and deploy elsewhere" if number % 3 else "beta only")
    seen, cursor = [hit["subject"] for hit in first["results"]], first["next_cursor"]
    while cursor:
        page = call("search_messages", project_key=project, query="deploy beta", limit=1, cursor=cursor)
        seen += [hit["subject"] for hit in page["results"]]
        cursor = page["next_cursor"]
    assert seen == ["deploy 4", "deploy 2", "deploy 0"]


def test_a_product_search_read_as_an_agent_ranks_the_window_of_a_filtered_search(call, project, monkeypatch):
    """search_project added the reader's condition, but its window was the unfiltered one: 500
    matches ranked where search_messages with agent_name ranks 50 (~14 ms against ~1 at 100k)."""
    monkeypatch.setattr(search, "FILTERED_WINDOW", 3)
    call("ensure_product", product_key="shop")
    call("products_link", product_key="shop", project_key=project)
    for number in range(8):
        send_deploy(call, project, f"deploy {number}")
    windows = []
    ranked = search._ranked
    monkeypatch.setattr(search, "_ranked", lambda index, query, window: windows.append(len(window)) or ranked(index, query, window))
    hits = call("search_messages_product", product_key="shop", query="deploy", limit=2, agent_name="GreenCastle")["results"]
    assert len(hits) == 2 and windows == [3]
    windows.clear()
    call("search_messages", project_key=project, query="deploy", limit=2, agent_name="GreenCastle")
    assert windows == [3]
    windows.clear()
    call("search_messages_product", product_key="shop", query="deploy", limit=2)  # the whole project: no filter
    assert windows == [8]


def test_a_product_search_runs_off_the_event_loop_too():
    product_search = tools_by_name()["search_messages_product"]
    assert product_search.off_loop(product_search.input(product_key="shop", query="migrat*"))
    assert product_search.off_loop(product_search.input(product_key="shop", query="migration"))


def words_sharing_a_prefix(settings, project, messages: int) -> None:
    """`messages` messages of 10 words each, all distinct and all starting with fil: FTS5 reads
    fil* by merging 10 × `messages` word lists. Bulk SQL (sends would take long); on a replica the
    sidecar index takes them in at the next search, as it takes in other replicas' mail."""
    with sql(settings) as db:
        (project_id,) = db.execute("SELECT id FROM projects WHERE slug = ?", (project,)).fetchone()
        blue, green = (db.execute("SELECT id FROM agents WHERE project_id = ? AND name = ?", (project_id, name)).fetchone()[0]
                       for name in ("BlueLake", "GreenCastle"))
        rows = [(m, project_id, blue, f"T-{m}", f"fil{m}", " ".join(f"fil{m}x{word}" for word in range(10)))
                for m in new_ids(messages)]
        db.executemany("INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, created_ts)"
                       " VALUES (?, ?, ?, ?, ?, ?, 'normal', '2026-01-01T00:00:00.000Z')", rows)
        db.executemany("INSERT INTO message_recipients (id, message_id, agent_id, kind) VALUES (?, ?, ?, 'to')",
                       [(r, row[0], green) for r, row in zip(new_ids(messages), rows)])
        if not settings.turso_sync_url:  # embedded: the index is written with the messages (migration 0022)
            db.executemany("INSERT INTO messages_fts (rowid, subject, body_md, project) VALUES (?, ?, ?, ?)",
                           [(r[0], r[4], r[5], f"p{project_id}") for r in rows])


@pytest.fixture
def search_timeout_ms(monkeypatch):
    """set_to(ms): SEARCH_TIMEOUT_MS for the calls that follow."""
    def set_to(ms: int) -> None:
        monkeypatch.setenv("SEARCH_TIMEOUT_MS", str(ms))
        get_settings.cache_clear()

    yield set_to
    get_settings.cache_clear()  # the environment is restored next (monkeypatch), then read again


@pytest.mark.both_backends
@pytest.mark.parametrize("query", ["fil*", "NEAR(fil* later)"])
def test_a_search_stops_at_its_time_budget_and_the_next_one_runs(settings, call, project, monkeypatch, search_timeout_ms, query):
    """A prefix of many words cost what merging their lists costs (`the*`: seconds at 1M messages),
    with no bound, in the one thread of slow reads: a few such searches kept every other waiting."""
    words_sharing_a_prefix(settings, project, 3000)
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="filed", body_md="filed later")
    monkeypatch.setattr(search, "STEPS_BETWEEN_CHECKS", 1)  # the clock looked at every step: the merge takes a few ms here
    search_timeout_ms(1)
    with pytest.raises(InvalidArgument, match="took longer than 1 ms") as refused:
        call("search_messages", project_key=project, query=query)
    assert "migrat*" in refused.value.hint
    # The same connections (the pool's, or the replica's and its index's): nothing of the aborted search is left on them.
    assert call("fetch_inbox", project_key=project, agent_name="GreenCastle", limit=1)["messages"][0]["subject"] == "filed"
    search_timeout_ms(60_000)
    assert [hit["subject"] for hit in call("search_messages", project_key=project, query="filed")["results"]] == ["filed"]
    assert call("search_messages", project_key=project, query=query, limit=3)["results"]


@pytest.mark.both_backends
def test_a_product_search_is_one_search_of_all_its_projects(settings, call, project, monkeypatch, search_timeout_ms):
    """A product's search searched each linked project and merged them: a prefix cost the index's
    work once a project (each with a budget of its own, until one budget spanned them). Now one
    search of them all: it costs what one project's does, and SEARCH_TIMEOUT_MS stops it alike.
    The clock here ticks once a look, so the budget counts the searches' work, not the machine's speed."""
    words_sharing_a_prefix(settings, project, 300)
    call("ensure_project", human_key="/work/outside")  # not linked: both searches keep to their projects in the index
    call("ensure_product", product_key="shop", name="Shop")
    for key in [project, *(call("ensure_project", human_key=f"/work/other-{n}")["slug"] for n in range(5))]:
        call("products_link", product_key="shop", project_key=key)
    ticks = itertools.count()
    monkeypatch.setattr(search, "monotonic", lambda: next(ticks))
    monkeypatch.setattr(search, "STEPS_BETWEEN_CHECKS", 100)

    def looks(tool, **arguments) -> int:
        before = next(ticks)
        call(tool, query="fil*", limit=5, **arguments)
        return next(ticks) - before

    search_timeout_ms(10**12)
    one, product = looks("search_messages", project_key=project), looks("search_messages_product", product_key="shop")
    assert product < 1.5 * one  # six projects, one search (a search of each cost 2.2x one)
    search_timeout_ms(1000 * one // 2)  # half of what the search needs
    for tool, key in (("search_messages", {"project_key": project}), ("search_messages_product", {"product_key": "shop"})):
        with pytest.raises(InvalidArgument, match="took longer than"):
            call(tool, query="fil*", limit=5, **key)


@pytest.mark.sqlite_only
def test_a_small_project_among_many_searches_within_itself_in_the_index(call, project, settings, traced):
    """The index holds every project's mail: a project's search walked every project's newest
    matches for its own (17 ms among 100 active ones). A project with at most 1/16 of the mail now
    asks FTS5 for its own matches only (migration 0045: the project is a column of the index); one
    with most of it does not (its own list is then nearly every message's)."""
    for n in range(16):
        key = call("ensure_project", human_key=f"/work/busy-{n}")["slug"]
        call("register_agent", project_key=key, program="p", model="m", name="RedFox")
        call("send_message", project_key=key, sender_name="RedFox", to=["RedFox"], subject="deploy plan", body_md="deploy")
    send_deploy(call, project, "deploy mine")
    traced.clear()
    assert [hit["subject"] for hit in call("search_messages", project_key=project, query="deploy")["results"]] == ["deploy mine"]
    [window] = [sql for sql in traced if "ORDER BY messages_fts.rowid DESC" in sql]
    assert "project : (p" in window, window
    for n in range(20):
        send_deploy(call, project, f"deploy more {n}")
    traced.clear()
    assert len(call("search_messages", project_key=project, query="deploy")["results"]) == 20
    [window] = [sql for sql in traced if "ORDER BY messages_fts.rowid DESC" in sql]
    assert "project :" not in window, window


@pytest.mark.both_backends
def test_a_word_like_a_project_token_finds_the_text_not_the_project(call, project, settings):
    """The index has a `project` column of tokens `p<project id>` (migration 0045): a word typed
    like one is looked for in subjects and bodies only."""
    with sql(settings) as db:
        (project_id,) = db.execute("SELECT id FROM projects WHERE slug = ?", (project,)).fetchone()
    send_deploy(call, project, "no token here")
    send_deploy(call, project, "about p42", body="see p42 and P7")
    for token in (f"p{project_id}", f"\u1e57{project_id}", f"\u1e56{project_id}", f"p\u0308{project_id}"):  # ṗ, Ṗ, p̈: p to the tokenizer
        assert call("search_messages", project_key=project, query=token)["results"] == [], token
    assert [hit["subject"] for hit in call("search_messages", project_key=project, query="P42")["results"]] == ["about p42"]
    assert [hit["subject"] for hit in call("search_messages", project_key=project, query="p7 OR nothing")["results"]] == ["about p42"]


@pytest.mark.sqlite_only
def test_mail_indexed_before_the_project_column_is_found_after_it(tmp_path):
    """Migration 0045 rebuilds the index with each message's project: mail indexed by an older
    release is found, by a project's own search too when it holds a small share of the mail."""
    from chalicelib.config import Settings
    from chalicelib.ids import stable_id
    from chalicelib.store import db as store
    from chalicelib.tools.agents import agent_id

    path = tmp_path / "old.db"
    conn = migrated_until(path, "0045")
    with store.transaction(conn, write=True):
        for n in range(17):
            project = stable_id("project", f"/old/{n}")
            conn.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, ?, ?, 't')", (project, f"old-{n}", f"/old/{n}"))
            conn.execute("INSERT INTO agents (id, project_id, name, program, model, inception_ts, last_active_ts)"
                         " VALUES (?, ?, 'BlueLake', 'p', 'm', 't', 't')", (agent_id(project, "BlueLake"), project))
            message = 1000 + n
            conn.execute("INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, created_ts)"
                         " VALUES (?, ?, ?, 'T', ?, 'the deploy plan', 'normal', '2026-01-01T00:00:00.000Z')",
                         (message, project, agent_id(project, "BlueLake"), f"plan {n}"))
            conn.execute("INSERT INTO project_counts (id, project_id, writer, messages) VALUES (?, ?, 0, 1)", (-project, project))
            conn.execute("INSERT INTO messages_fts (rowid, subject, body_md) VALUES (?, ?, 'the deploy plan')", (message, f"plan {n}"))
    conn.close()
    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
    store._migrated.discard(settings.database_url)
    found = invoke.call(tools_by_name()["search_messages"], {"project_key": "/old/3", "query": "deploy"}, settings).results
    assert [hit.subject for hit in found] == ["plan 3"]  # 1 of 17 messages: scoped (SCOPED_SHARE)
    assert search._scope(sqlite3.connect(path), [stable_id("project", "/old/3")]) is not None
