"""What one search may cost, whatever the mailbox, the message and the query (an audit of
search): snippets, prefix queries, paging while mail arrives, the product search's window."""

import pytest

from chalicelib.tools import search_syntax


def test_a_snippet_of_a_long_phrase_in_a_long_body_tries_a_bounded_number_of_places(call, project, monkeypatch):
    """A 300-word phrase against 120,000 words that all start it took 6.6 s, on the event loop."""
    body = "a " * 120_000 + "b"
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="log", body_md=body)
    tried = []
    phrase_end = search_syntax._phrase_end
    monkeypatch.setattr(search_syntax, "_phrase_end", lambda lower, phrase, start: tried.append(len(phrase)) or phrase_end(lower, phrase, start))
    [hit] = call("search_messages", project_key=project, query="-".join(["a"] * 300) + "-b")["results"]
    assert hit["subject"] == "log" and "**a" in hit["snippet"]
    assert max(tried) <= search_syntax.SNIPPET_WORDS  # of the phrase's 301 words, the first 16
    # looking: each of 3 lists of terms in the subject and the body; marking: each place in the passage
    assert len(tried) <= 3 * 2 * search_syntax.TRIES + search_syntax.PASSAGE_CHARS


def test_a_snippet_shows_a_bounded_passage_of_a_token_without_spaces():
    body = "a-" * 120_000 + "b"  # one whitespace-separated token of 240 KB
    shown = search_syntax.snippet("log", body, search_syntax.snippet_terms("a-a-b"))
    assert shown.startswith("**a**-**a**") and len(shown.replace("**", "")) <= search_syntax.PASSAGE_CHARS + 1  # and "…"
