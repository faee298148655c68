"""Ids and paths typed alone, found by the runs' index (chalicelib/store/search_runs.py, issue 12):
the messages that have them written as typed, ranked by where, newest next; on both backends."""

import pytest

from chalicelib.store import db, search_runs
from chalicelib.store.search_runs import message_terms, query_term
from chalicelib.tools import retention, search
from chalicelib.tools.retention import run_retention

from .servers import running_server
from .sql import sql

pytestmark = pytest.mark.both_backends

# What the full-text index finds for src/cart/api.py (tests/test_search_narrowing.py), and two it does
# not: the words written apart, and xsrc (another word).
FOUND = {
    "exact": "Touching src/cart/api.py today.",
    "upper case": "TOUCHING SRC/CART/API.PY",
    "stemmed": "Renamed src/carts/api.py",  # porter reads carts as cart
    "beyond ascii": "src/cart/api.py — déjà vu",
    "underscore": "src_cart_api_py",  # _ separates words for the index too
}
NOT_FOUND = {"scattered": "cart api in src, then py", "apart": "src cart api py", "glued": "xsrc/cart/api.py"}


def sent(call, project, subject, body="", sender="BlueLake"):
    return call("send_message", project_key=project, sender_name=sender, to=["GreenCastle"], subject=subject, body_md=body)["message"]["id"]


def found(call, project, query, **options):
    return [hit["subject"] for hit in call("search_messages", project_key=project, query=query, limit=50, **options)["results"]]


def body_terms(text: str) -> dict[str, int]:
    return dict(message_terms("", text))


def test_a_text_has_each_part_of_each_run_as_the_index_reads_its_words():
    assert list(body_terms("Fix CART-12 in src/Mod43/migrations.py, then x")) == [
        "cart 12", "src mod43", "src mod43 migrat", "src mod43 migrat py", "mod43 migrat", "mod43 migrat py", "migrat py"]
    assert body_terms("a/b c-d") == {"a b": 1, "c d": 1} and body_terms("x/a/b") == {"x a": 0, "x a b": 1, "a b": 0}
    assert list(body_terms("café/menü snake_case")) == ["cafe menu", "snake case"]  # folded; _ is a separator
    assert body_terms("one two three, (four) five.") == {}  # words alone are the full-text index's
    long = "/".join(f"w{n}" for n in range(20))
    assert max(len(term.split()) for term in body_terms(long)) == search_runs.RUN_WORDS
    assert body_terms("a" * 200 + "/b") == {}  # longer than TERM_CHARS
    assert len(body_terms(" ".join(f"x{n}/y" for n in range(5000)))) == search_runs.MAX_TERMS
    # The subject's places rank first; a run whole somewhere is whole.
    assert dict(message_terms("Refactor api.py", "see src/api.py and api.py")) == {"api py": 3, "src api": 0, "src api py": 1}
    assert dict(message_terms("x", "a-b " * 10 + "x " * search_runs.BODY_CHARS + "c-d")) == {"a b": 1}  # the body's start
    cut = "x" * (search_runs.BODY_CHARS - len(" see CART-1")) + " see CART-12345 then"
    assert body_terms(cut) == {} and body_terms(cut[: search_runs.BODY_CHARS]) == {"cart 1": 1}  # a run the cut goes through: out
    assert body_terms("\ue000CART-12 and CART-12\ue000") == {"\ue000cart 12": 1, "cart 12\ue000": 1}  # private use: a letter


def test_a_query_of_one_run_typed_without_spaces_is_looked_up_by_its_term():
    assert query_term("CART-12") == "cart 12" and query_term(' "src/api.py" ') == "src api py"
    assert query_term("/src/migrations.py:") == "src migrat py"
    assert query_term("a/b/c/d/e/f") == "a b c d e f" and query_term("a/b/c/d/e/f/g") is None  # longer: the full-text phrase
    assert query_term("a" * 100 + "/" + "b" * 19) == "a" * 100 + " " + "b" * 19 and query_term("a" * 100 + "/" + "b" * 20) is None
    for query in ("deploy", "src/api.py now", "café/menu", "-flag", "C++"):
        assert query_term(query) is None, query


def test_a_path_finds_the_messages_that_have_it_as_typed(call, project):
    for subject, body in {**FOUND, **NOT_FOUND}.items():
        sent(call, project, subject, body)
    assert set(found(call, project, "src/cart/api.py")) == set(FOUND)
    assert set(found(call, project, "cart/api")) == set(FOUND) | {"glued"}  # a part of a run
    assert set(found(call, project, '"src cart api py"')) == set(FOUND) | {"apart"}  # a phrase with spaces: full text
    assert found(call, project, "src/cart/api.py", sender="GreenCastle") == []
    assert found(call, project, "cart/api.rb") == []


@pytest.mark.sqlite_only
def test_a_server_answers_an_id_from_the_runs_and_pages_on_with_their_cursor(tmp_path):
    """Through the HTTP server: the run as written (not "cart 12" apart), subjects first, a run cursor."""
    import httpx

    with running_server(tmp_path / "db.sqlite") as url:
        def call(tool, **arguments):
            answer = httpx.post(f"{url}/api/{tool}", json=arguments, timeout=30)
            assert answer.status_code == 200, answer.text
            return answer.json()

        slug = call("ensure_project", human_key="/work/http")["slug"]
        for name in ("BlueLake", "GreenCastle"):
            call("register_agent", project_key=slug, name=name, program="p", model="m")
        call("set_contact_policy", project_key=slug, agent_name="GreenCastle", policy="open")
        for subject, body in [("CART-12 broke", ""), ("apart", "cart 12"), ("later", "see CART-12"), ("newest", "CART-12 again")]:
            call("send_message", project_key=slug, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md=body)
        first = call("search_messages", project_key=slug, query="CART-12", limit=2)
        rest = call("search_messages", project_key=slug, query="CART-12", limit=2, cursor=first["next_cursor"])
    assert [hit["subject"] for hit in first["results"] + rest["results"]] == ["CART-12 broke", "newest", "later"]
    assert first["next_cursor"].endswith(f".{search.RUN_CURSOR + search_runs.PLACE_BODY_WHOLE}") and rest["next_cursor"] is None


def test_the_subjects_whole_run_ranks_first_then_the_newest(call, project):
    ids = {subject: sent(call, project, subject, body) for subject, body in [
        ("Refactor api.py", ""), ("Touching src/cart/api.py", ""), ("later", "api.py in the body"),
        ("latest", "src/api.py in the body")]}
    results = call("search_messages", project_key=project, query="api.py")["results"]
    assert [hit["subject"] for hit in results] == ["Refactor api.py", "Touching src/cart/api.py", "later", "latest"]
    assert {hit["score"] for hit in results} == {0.0} and "**api.py**" in results[0]["snippet"]
    assert results[0]["id"] == ids["Refactor api.py"]


def test_paging_reaches_every_match_once_newest_first(call, project):
    subjects = [f"note {n}" for n in range(11)]
    for n, subject in enumerate(subjects):
        sent(call, project, subject, f"CART-{n % 2}7 and more" if n % 3 else "CART-7 here", sender="BlueLake" if n % 4 else "RedStone")
    pages, cursor = [], None
    while True:
        page = call("search_messages", project_key=project, query="CART-7", limit=2, cursor=cursor)
        pages.append([hit["subject"] for hit in page["results"]])
        if (cursor := page["next_cursor"]) is None:
            break
        assert len(pages) < 20
    expected = [subject for n, subject in enumerate(subjects) if n % 3 == 0][::-1]
    assert [subject for page in pages for subject in page] == expected
    # Filters thin the windows out: still every match once.
    assert found(call, project, "CART-7", sender="RedStone") == [s for n, s in enumerate(subjects) if n % 3 == 0 and n % 4 == 0][::-1]


def test_a_project_finds_its_run_among_another_projects_many(call, project):
    """QA, session 41: the term's rows of every project were read in order, four windows a call:
    a project with one of 200 messages holding CART-77 got an empty first page (with a cursor)."""
    call("ensure_project", human_key="/work/busy")
    for name in ("BlueLake", "GreenCastle"):
        call("register_agent", project_key="work-busy", program="p", model="m", name=name)
    call("set_contact_policy", project_key="work-busy", agent_name="GreenCastle", policy="open")
    sent(call, project, "ours", "see CART-77")
    for n in range(200):
        sent(call, "work-busy", f"CART-77 {n}")
    answer = call("search_messages", project_key=project, query="CART-77", limit=1)
    assert [hit["subject"] for hit in answer["results"]] == ["ours"] and answer["next_cursor"] is None
    assert len(found(call, "work-busy", "CART-77")) == 50  # (limit 50)


def test_a_run_longer_than_six_words_is_the_phrase_of_its_words(call, project):
    """A URL's first 6 words are in every link of its site: checking each candidate's text for the
    whole run cost ~10 ms a 64 KiB body (QA, session 41: 2 s, then a 422). It is FTS5's phrase."""
    sent(call, project, "whole", "see https://example.com/org/repo/pull/12/files")
    sent(call, project, "other pull", "see https://example.com/org/repo/pull/13/files")
    sent(call, project, "apart", "see example.com/org/repo/pull 12/files")
    assert set(found(call, project, "example.com/org/repo/pull/12/files")) == {"whole", "apart"}
    assert set(found(call, project, "example.com/org/repo/pull")) == {"whole", "other pull", "apart"}  # 5 words: the runs


@pytest.mark.sqlite_only  # (600 sends: the same code on a replica, whose pushes make them slow)
def test_a_rare_filter_over_a_common_run_fills_its_page(call, project):
    """QA, session 41: four windows of the term's rows a call, whatever the filters failed: a
    sender's 5 oldest of 2,000 came an empty page at a time."""
    for n in range(5):
        sent(call, project, f"rare {n}", "HOT-RUN-7", sender="RedStone")
    for n in range(600):  # more than four windows of a page of 5 read (6 + 24 + 96 + 384)
        sent(call, project, f"common {n}", "HOT-RUN-7")
    answer = call("search_messages", project_key=project, query="HOT-RUN-7", sender="RedStone", limit=5)
    assert sorted(hit["subject"] for hit in answer["results"]) == [f"rare {n}" for n in range(5)]


def test_a_search_in_a_thread_and_across_projects(call, project):
    first = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="CART-9 start",
                 body_md="")["message"]
    sent(call, project, "CART-9 elsewhere")
    call("reply_message", project_key=project, message_id=first["id"], sender_name="GreenCastle", body_md="on CART-9 too")
    assert found(call, project, "CART-9", thread_id=first["thread_id"]) == ["Re: CART-9 start", "CART-9 start"]  # newest first
    page = call("search_messages", project_key=project, query="CART-9", thread_id=first["thread_id"], limit=1)
    rest = call("search_messages", project_key=project, query="CART-9", thread_id=first["thread_id"], cursor=page["next_cursor"])
    assert [hit["subject"] for hit in page["results"] + rest["results"]] == ["Re: CART-9 start", "CART-9 start"]
    assert sorted(found(call, project, "CART-9", agent_name="GreenCastle")) == ["CART-9 elsewhere", "CART-9 start", "Re: CART-9 start"]


def test_runs_leave_with_a_purged_message_and_an_archived_body(settings, call, project, later, caught_up):
    sent(call, project, "CART-1 kept subject", "body names src/api.py")
    sent(call, project, "to purge", "CART-1 in the body")
    assert set(found(call, project, "CART-1")) == {"CART-1 kept subject", "to purge"}
    call("set_retention_policy", project_key=project, mode="archive_only", days=30)
    caught_up()
    later(31)
    assert run_retention(settings.model_copy(update={"archive_enabled": True}))["bodies_archived"] == 2
    assert found(call, project, "CART-1") == ["CART-1 kept subject"] and found(call, project, "src/api.py") == []
    call("set_retention_policy", project_key=project, mode="purge", days=30)
    caught_up()
    assert run_retention(settings)["messages_purged"] == 2
    assert found(call, project, "CART-1") == []
    if not settings.turso_sync_url:
        with sql(settings) as conn:
            assert conn.execute("SELECT count(*) FROM message_runs").fetchone()[0] == 0


@pytest.mark.sqlite_only
def test_mail_stored_before_the_runs_index_is_filled_in_by_retention_runs(settings, call, project, monkeypatch):
    """A database of the release before, migrated: its mail is searched as before (the phrase of a
    path's words) until retention runs have filled its runs in, newest first, a bounded part each."""
    for n in range(5):
        sent(call, project, f"CART-5 {n}")
    sent(call, project, "apart", "cart 5")
    with sql(settings) as conn:  # back to the release before, then migrated again
        for statement in ("DROP TRIGGER message_runs_delete", "DROP TRIGGER message_runs_body_archived", "DROP TABLE message_runs",
                          "DROP TABLE message_runs_backfill", "DELETE FROM schema_migrations WHERE version = '0052_search_runs'"):
            conn.execute(statement)
    with db.connection(settings) as conn:
        db.apply_migrations(conn, on_replica=False)
    assert "apart" in found(call, project, "CART-5")  # the full-text index's phrase, meanwhile
    monkeypatch.setattr(retention, "RUNS_SHARE", 1)
    assert run_retention(settings, budget=2)["search_runs_indexed"] == 2
    with sql(settings) as conn:  # the newest two: "apart" (no run) and CART-5 4
        rows = conn.execute("SELECT DISTINCT m.subject FROM message_runs r JOIN messages m ON m.id = r.message_id").fetchall()
        assert [tuple(row) for row in rows] == [("CART-5 4",)]
    assert "apart" in found(call, project, "CART-5")
    first = call("search_messages", project_key=project, query="CART-5", limit=4)  # a full-text page, then the rest filled in
    assert run_retention(settings)["search_runs_indexed"] == 4
    rest = call("search_messages", project_key=project, query="CART-5", limit=4, cursor=first["next_cursor"])
    paged = [hit["subject"] for hit in first["results"] + rest["results"]]  # QA, session 41: a run's order then repeated page 1
    assert sorted(paged) == sorted([f"CART-5 {n}" for n in range(5)] + ["apart"]) and rest["next_cursor"] is None
    assert sorted(found(call, project, "CART-5")) == [f"CART-5 {n}" for n in range(5)]
    assert run_retention(settings)["search_runs_indexed"] == 0
