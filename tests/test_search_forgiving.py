"""search_messages as agents type it (issue 14): ordinary text works as literal words, operators
on purpose, filters, paging with a cursor, and "only the mail I may see"; on both backends."""

import httpx
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st
import sqlite3

from chalicelib import invoke
from chalicelib.errors import Forbidden, InvalidArgument
from chalicelib.tools import search, tools_by_name
from chalicelib.tools.search_syntax import fts5_query, literal_query

from .servers import running_server

pytestmark = pytest.mark.both_backends

TYPED = [  # (what an agent types, the subject of the one message it must find)
    ("CART-12", "Checkout bug CART-12"),
    ("api.py", "Refactor api.py"),
    ("src/cart/api.py", "Touching src/cart/api.py"),
    ("fix: bug", "fix: bug in totals"),
    ("it's", "it's done"),
    ("C++", "C++ bindings"),
    ("-flag", "remove the -flag option"),
]


@pytest.fixture
def typed(call, project):
    for _, subject in TYPED:
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md="")
    return project


def subjects(call, project, query, **options):
    return [hit["subject"] for hit in call("search_messages", project_key=project, query=query, **options)["results"]]


@pytest.mark.parametrize("query,subject", TYPED)
def test_ids_file_names_paths_and_punctuation_are_literal_words(call, typed, query, subject):
    assert subject in subjects(call, typed, query)[:1]


def test_ids_match_as_a_whole_not_as_any_of_their_parts(call, typed):
    assert subjects(call, typed, "CART-12") == ["Checkout bug CART-12"]
    assert subjects(call, typed, "CART-13") == []


def test_operators_still_work_when_used_as_operators(call, typed):
    assert set(subjects(call, typed, "CART-12 OR api.py")) == {"Checkout bug CART-12", "Refactor api.py", "Touching src/cart/api.py"}
    assert subjects(call, typed, "api.py NOT src") == ["Refactor api.py"]
    assert subjects(call, typed, '"cart api"') == ["Touching src/cart/api.py"]
    assert subjects(call, typed, "subject:bindings") == ["C++ bindings"]
    assert subjects(call, typed, "bind*") == ["C++ bindings"]
    assert subjects(call, typed, "(checkout OR bindings) AND bug") == ["Checkout bug CART-12"]
    assert subjects(call, typed, "NEAR(remove option, 3)") == ["remove the -flag option"]


def test_near_takes_phrases_and_any_distance(call, project):
    """FTS5 reads NEAR's distance as a 32-bit int (2147483648 found nothing, 4294967298 was 2), and a
    phrase inside NEAR( ), which FTS5 allows, made the group the required word "near": 0 hits, no hint."""
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Plan",
         body_md="deploy the staging plan today")
    found = lambda query: subjects(call, project, query) == ["Plan"]  # noqa: E731
    assert not found("NEAR(deploy plan, 1)")  # two words between them
    assert all(found(f"NEAR(deploy plan, {distance})") for distance in (2, 2147483648, 4294967297, 4294967298, 10**40, "٢"))
    assert found('NEAR("deploy the" plan)') and found('NEAR("the staging" deploy, 0)') and found('NEAR("dep"* plan)')
    assert not found('NEAR("staging plan" deploy, 0)')  # a phrase stays a phrase: "the" lies between
    assert found("NEAR(deploy (plan))") and found('NEAR("deploy plan)')  # no NEAR group: its words, not the word "near"


def test_a_query_of_operator_words_alone_marks_them_in_the_snippet(call, project):
    """`AND` alone is searched as the word: it found the message, with an empty snippet (the
    words to mark left the operators out)."""
    for subject, body in (("Music", "rock and roll"), ("Menu", "salt or pepper"), ("Place", "NOT near here")):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md=body)
    snippets = lambda query: [hit["snippet"] for hit in call("search_messages", project_key=project, query=query)["results"]]  # noqa: E731
    assert snippets("AND") == ["rock **and** roll"]
    assert snippets("OR") == ["salt **or** pepper"]
    assert snippets("NOT") == ["**NOT** near here"]
    assert snippets("NEAR") == ["NOT **near** here"]
    assert snippets("rock AND") == ["**rock** **and** roll"]  # at an end, a word too
    assert set(snippets("rock OR pepper")) == {"**rock** and roll", "salt or **pepper**"}  # between two, an operator


@hypothesis_settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list('ab12 -+:*"()^.,/\'_{}[]\\\x00') + ["AND", "OR", "NOT", "NEAR(", "subject:", "body:", " "]), max_size=30))
def test_no_text_makes_an_invalid_fts5_query(pieces):
    """A NUL among them too: it ended an FTS5 string early ("unterminated string": a 500)."""
    text = "".join(pieces)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE VIRTUAL TABLE messages_fts USING fts5 (subject, body_md, tokenize = 'porter unicode61')")
    for query in (fts5_query(text), literal_query(text)):
        if query is not None:
            db.execute("SELECT * FROM messages_fts WHERE messages_fts MATCH ?", (query,)).fetchall()


@pytest.fixture
def mail(call, project):
    """Six messages about 'deploy' from three senders, two threads, mixed importance; one bcc."""
    def send(sender, to, subject, **options):
        return call("send_message", project_key=project, sender_name=sender, to=to, subject=subject,
                    body_md="deploy notes", **options)["message"]

    sent = [
        send("BlueLake", ["GreenCastle"], "deploy one", thread_id="T-1"),
        send("BlueLake", ["RedStone"], "deploy two", thread_id="T-1", importance="urgent"),
        send("GreenCastle", ["BlueLake"], "deploy three", thread_id="T-2", importance="high"),
        send("RedStone", ["GreenCastle"], "deploy four", thread_id="T-2", bcc=["BlueLake"]),
        send("GreenCastle", ["RedStone"], "deploy five", thread_id="T-2"),
        send("RedStone", ["RedStone"], "deploy six", thread_id="T-3", importance="low"),
    ]
    return project, sent


def found(call, project, **options):
    return sorted(subjects(call, project, "deploy", limit=50, **options))


def test_filters_by_sender_recipient_thread_importance_and_time(call, mail):
    project, sent = mail
    assert found(call, project, sender="BlueLake") == ["deploy one", "deploy two"]
    assert found(call, project, recipient="RedStone") == ["deploy five", "deploy six", "deploy two"]
    assert found(call, project, thread_id="T-2") == ["deploy five", "deploy four", "deploy three"]
    assert found(call, project, importance=["high", "urgent"]) == ["deploy three", "deploy two"]
    assert found(call, project, since_ts=sent[3]["created_ts"]) == ["deploy five", "deploy six"]
    assert found(call, project, until_ts=sent[1]["created_ts"]) == ["deploy one", "deploy two"]
    assert found(call, project, sender="GreenCastle", thread_id="T-2", importance=["normal"]) == ["deploy five"]


def test_a_recipient_filter_does_not_reveal_bcc(call, mail):
    project, _ = mail
    assert found(call, project, recipient="BlueLake") == ["deploy three"]  # not "four": BlueLake was bcc
    assert found(call, project, recipient="BlueLake", agent_name="BlueLake") == ["deploy four", "deploy three"]
    assert found(call, project, recipient="BlueLake", agent_name="RedStone") == ["deploy four"]  # RedStone sent it


def test_agent_name_keeps_to_the_mail_the_agent_sent_or_received(call, mail):
    project, _ = mail
    assert found(call, project, agent_name="BlueLake") == ["deploy four", "deploy one", "deploy three", "deploy two"]
    assert found(call, project, agent_name="GreenCastle") == ["deploy five", "deploy four", "deploy one", "deploy three"]


def test_agent_name_includes_mail_received_from_another_project(call, mail):
    project, _ = mail
    call("ensure_project", human_key="/work/other")
    call("register_agent", project_key="work-other", program="p", model="m", name="Visitor")
    call("send_message", project_key="work-other", sender_name="Visitor", to=[f"BlueLake@{project}"],
         subject="deploy from afar", body_md="")
    hits = call("search_messages", project_key=project, query="afar", agent_name="BlueLake")["results"]
    assert [(hit["subject"], hit["sender"]) for hit in hits] == [("deploy from afar", "Visitor@work-other")]
    assert subjects(call, project, "afar") == []  # the project's own mail: not stored here
    # The sender as the hits name it (QA, session 40: `sender` took a name of the project only: 422)
    filtered = call("search_messages", project_key=project, query="deploy", agent_name="BlueLake", sender="Visitor@work-other")
    assert [hit["subject"] for hit in filtered["results"]] == ["deploy from afar"]


def test_an_agents_search_in_a_thread_walks_the_threads_messages(call, mail, settings, traced):
    """With agent_name the thread's search had no project to walk the thread's messages by
    (messages_by_thread), so it read every match of the query in every project, and sorted them."""
    project, _ = mail
    call("ensure_project", human_key="/work/other")
    call("register_agent", project_key="work-other", program="p", model="m", name="Visitor")
    call("send_message", project_key="work-other", sender_name="Visitor", to=[f"BlueLake@{project}"],
         subject="deploy reply from afar", body_md="", thread_id="T-2")  # the other side's half of the thread
    call("send_message", project_key="work-other", sender_name="Visitor", to=["Visitor"], subject="deploy, not to it",
         body_md="", thread_id="T-2")
    traced.clear()
    assert found(call, project, thread_id="T-2", agent_name="BlueLake") == ["deploy four", "deploy reply from afar", "deploy three"]
    assert found(call, project, thread_id="T-2", agent_name="GreenCastle") == ["deploy five", "deploy four", "deploy three"]
    assert found(call, "work-other", thread_id="T-2", agent_name="Visitor") == ["deploy reply from afar", "deploy, not to it"]
    if not settings.turso_sync_url:  # (on a replica the statements run on the sidecar: tests/test_search_index.py)
        window = next(sql for sql in traced if "ORDER BY m.id DESC" in sql)
        with sqlite3.connect(settings.database_path) as conn:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {window}")]
        assert plan[0].startswith("SEARCH m USING INDEX messages_by_thread (project_id=? AND thread_id=?"), plan


def test_unknown_filter_agents_are_not_found(call, mail):
    project, _ = mail
    with pytest.raises(Exception, match="Nobody"):
        call("search_messages", project_key=project, query="deploy", sender="Nobody")


def test_paging_walks_every_match_once_best_first_in_each_window(call, mail, monkeypatch):
    project, _ = mail
    monkeypatch.setattr(search, "WINDOW", 4)  # the newest 4 matches are ranked together, then the next 4
    call("send_message", project_key=project, sender_name="BlueLake", to=["RedStone"], subject="deploy deploy deploy",
         body_md="deploy deploy")  # the best match, and the newest
    pages, cursor = [], None
    while True:
        page = call("search_messages", project_key=project, query="deploy", limit=3, cursor=cursor)
        pages.append([hit["subject"] for hit in page["results"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 10
    every = [subject for page in pages for subject in page]
    assert len(every) == 7 and len(set(every)) == 7
    assert every[0] == "deploy deploy deploy"
    newest_four = {"deploy deploy deploy", "deploy six", "deploy five", "deploy four"}
    assert set(every[:4]) == newest_four  # the first window, ranked, before any older match


def test_a_cursor_that_was_not_given_is_refused(call, mail):
    project, _ = mail
    with pytest.raises(InvalidArgument, match="Cursor"):
        call("search_messages", project_key=project, query="deploy", cursor="../etc")
    # Also when the query has no word (no page to go on with), with a final newline, and with
    # digits of other scripts (Python's \d took them, int() read them; the schema's pattern does not).
    for query, cursor in [("+++", "false"), ("deploy", "12.3\n"), ("+++", "12.3\n"), ("deploy", "\uff11.\uff10"),
                          ("deploy", "9999999999999999999.\u0663"), ("deploy", "\u0669" * 19 + ".0")]:
        with pytest.raises(InvalidArgument, match="Cursor"):
            call("search_messages", project_key=project, query=query, cursor=cursor)


def test_parentheses_nested_too_deep_are_refused_not_misread(call, mail):
    """FTS5's parser refuses ~99 levels; the fallback then read every word as text, OR and NOT
    included, and answered a confident 0 hits."""
    project, _ = mail
    assert sorted(subjects(call, project, "(" * 32 + "one OR five" + ")" * 32, limit=50)) == ["deploy five", "deploy one"]
    assert sorted(subjects(call, project, "(" * 30 + "deploy NOT (one OR (two AND deploy))" + ")" * 30, limit=50)) == [
        "deploy five", "deploy four", "deploy six", "deploy three"]
    for depth in (33, 99, 300):
        with pytest.raises(InvalidArgument, match=f"nest {depth} deep") as refused:
            call("search_messages", project_key=project, query="(" * depth + "one OR five" + ")" * depth)
        assert "Drop the extra parentheses" in refused.value.hint
    assert sorted(subjects(call, project, "(" * 300 + "one OR five", limit=50)) == ["deploy five", "deploy one"]  # unbalanced: ignored


def test_text_without_a_word_finds_nothing(call, mail):
    project, _ = mail
    assert call("search_messages", project_key=project, query="+++ :: **") == {"query": "+++ :: **", "results": [], "next_cursor": None, "indexing": None}


def test_agent_name_needs_that_agents_token_when_tokens_are_required(settings, mail):
    project, _ = mail
    strict = settings.model_copy(update={"require_agent_tokens": True})
    tool = tools_by_name()["search_messages"]
    with pytest.raises(Forbidden):
        invoke.call(tool, {"project_key": project, "query": "deploy", "agent_name": "BlueLake"}, strict)
    token = invoke.call(tools_by_name()["rotate_agent_token"], {"project_key": project, "agent_name": "BlueLake"}, settings)
    token = token.model_dump()["registration_token"]
    hits = invoke.call(tool, {"project_key": project, "query": "deploy", "agent_name": "BlueLake", "registration_token": token}, strict)
    assert len(hits.results) == 4


@pytest.mark.sqlite_only
def test_the_query_forms_over_rest(tmp_path):
    with running_server(tmp_path / "agent_mail.db") as url, httpx.Client(base_url=url) as api:
        api.post("/api/ensure_project", json={"human_key": "/rest/search"})
        for name in ("Ann", "Bob"):
            api.post("/api/register_agent", json={"project_key": "rest-search", "program": "p", "model": "m", "name": name})
        api.post("/api/set_contact_policy", json={"project_key": "rest-search", "agent_name": "Bob", "policy": "open"})
        for subject in [subject for _, subject in TYPED]:
            sent = api.post("/api/send_message", json={"project_key": "rest-search", "sender_name": "Ann", "to": ["Bob"],
                                                      "subject": subject, "body_md": ""})
            assert sent.status_code == 200, sent.text
        for query, subject in TYPED:
            answer = api.get("/api/search_messages", params={"project_key": "rest-search", "query": query})
            assert answer.status_code == 200 and answer.json()["results"][0]["subject"] == subject, (query, answer.text)
        filtered = api.get("/api/search_messages", params={"project_key": "rest-search", "query": "bug",
                                                           "importance": ["normal"], "sender": "Ann", "limit": 1})
        assert [hit["subject"] for hit in filtered.json()["results"]] in (["fix: bug in totals"], ["Checkout bug CART-12"])
        assert filtered.json()["next_cursor"]
        # A cursor not given (here the last of a repeated parameter) is a 422, whatever the query.
        refused = api.get("/api/search_messages?project_key=rest-search&query=%2B%2B%2B&cursor=false&cursor=3.9e%2B248")
        assert refused.status_code == 422 and "Cursor '3.9e+248' is not one this tool gave" in refused.text, refused.text


def test_only_rare_terms_weigh_in_the_ranking_common_ones_list_newest_first(call, project, monkeypatch):
    monkeypatch.setattr(search, "RARE", 2)  # a term in more than 2 messages is "common" here
    for subject, body in [("one", "deploy rollback rollback"), ("two", "deploy"), ("three", "deploy rollback")]:
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md=body)
    common = call("search_messages", project_key=project, query="deploy")["results"]
    assert [(hit["subject"], hit["score"]) for hit in common] == [("three", 0.0), ("two", 0.0), ("one", 0.0)]
    ranked = call("search_messages", project_key=project, query="deploy rollback")["results"]
    assert [hit["subject"] for hit in ranked] == ["one", "three"] and ranked[0]["score"] < ranked[1]["score"] < 0
