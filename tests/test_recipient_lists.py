"""A message's recipient lists, as every reader shows them (fetch_outbox, get_thread, unified_inbox):
by address as SQLite's NOCASE orders them, Name@project for another project's agent, bcc only
where it may be seen, and unified_inbox's unread and ack_pending of the same recipients.

tools/messages.py recipients_and_marks builds them from a row per message and kind (a page of
wide messages read a row per recipient, sorted in SQL: bench/wide_pages.py); the answers must be
what the one statement that did it gave, kept here as the reference."""

import pytest

from chalicelib.store.db import placeholders
from chalicelib.tools.messages import recipients_and_marks, recipients_of

from .sql import sql

pytestmark = pytest.mark.both_backends

# Lower and upper case first letters, names that share a beginning ("Mole", "Mole2", "Mole@..."):
# NOCASE puts "aardvark" before "Apex@work-api" and "BlueLake", a binary sort would not.
HERE = ["aardvark", "Zebra", "Mole", "Mole2", "bison", "Yak"]
THERE = ["Apex", "Mole", "zed"]  # agents of work-api


def reference(conn, message_ids, viewers):
    """The lists and counts as the one statement of each gave them before (ORDER BY in SQL; the
    counts as unified_inbox's, of every recipient or of all but bcc)."""
    found = {mid: {"to": [], "cc": [], "bcc": []} for mid in message_ids}
    bcc_seen = "" if viewers is None else f" AND (r.kind != 'bcc' OR m.sender_id IN ({placeholders(viewers) or 'NULL'}))"
    for mid, kind, name in conn.execute(
        "SELECT r.message_id, r.kind, CASE WHEN a.project_id = m.project_id THEN a.name ELSE a.name || '@' || p.slug END AS address"
        " FROM message_recipients r JOIN messages m ON m.id = r.message_id JOIN agents a ON a.id = r.agent_id"
        f" JOIN projects p ON p.id = a.project_id WHERE r.message_id IN ({placeholders(message_ids)}){bcc_seen}"
        " ORDER BY address COLLATE NOCASE", [*message_ids, *(viewers or ())]):
        found[mid]["to" if kind == "notice" else kind].append(name)
    counts = {mid: (unread, unacked) for mid, unread, unacked in conn.execute(
        "SELECT message_id, count(*) - count(read_ts), count(*) - count(ack_ts) FROM message_recipients"
        f" WHERE message_id IN ({placeholders(message_ids)}){'' if viewers is None else ' AND kind != ' + repr('bcc')}"
        " GROUP BY message_id", message_ids)}
    return found, counts


@pytest.fixture
def mail(call, project):
    """Messages of work-demo to its agents and work-api's, with cc, bcc, reads, acks, a notice;
    and one of work-api to work-demo's agents (its own read as plain names there)."""
    call("ensure_project", human_key="/work/api")
    for key, names in (("work-demo", HERE), ("work-api", THERE)):
        for name in names:
            call("register_agent", project_key=key, program="p", model="m", name=name)
            call("set_contact_policy", project_key=key, agent_name=name, policy="open")
    sent = [
        call("send_message", project_key=project, sender_name="BlueLake", to=["Zebra", "aardvark", "Apex@work-api", "RedStone"],
             cc=["Mole2", "zed@work-api", "Mole", "Mole@work-api"], bcc=["Yak", "bison"], subject="Wide", body_md="x",
             ack_required=True, thread_id="T"),
        call("send_message", project_key=project, sender_name="GreenCastle", to=["bison"], cc=["BlueLake", "Yak"],
             bcc=["aardvark", "zed@work-api"], subject="Another's bcc", body_md="x", ack_required=True, thread_id="T"),
        call("send_message", project_key="work-api", sender_name="zed", to=["Mole", "BlueLake@work-demo", "Apex"],
             cc=["aardvark@work-demo"], bcc=["Mole@work-demo"], subject="From work-api", body_md="x"),
    ]
    call("register_agent", project_key=project, program="p", model="m", name="Quokka")
    call("set_contact_policy", project_key=project, agent_name="Quokka", policy="contacts_only")
    call("request_contact", project_key=project, from_agent="Yak", to_agent="Quokka")  # a notice to Quokka
    first = sent[0]["message"]["id"]
    call("acknowledge_message", project_key=project, agent_name="aardvark", message_id=first)
    call("mark_message_read", project_key=project, agent_name="Yak", message_id=first)  # a bcc copy
    call("acknowledge_message", project_key=project, agent_name="bison", message_id=sent[1]["message"]["id"])
    return [item["message"] for item in sent]


def test_lists_and_counts_are_the_reference_statements(settings, mail):
    with sql(settings) as conn:
        ids = [mid for (mid,) in conn.execute("SELECT id FROM messages ORDER BY id")]
        people = {name: id_ for name, id_ in conn.execute("SELECT name, id FROM agents WHERE project_id ="
                                                          " (SELECT id FROM projects WHERE slug = 'work-demo')")}
        assert len(ids) == 4  # the three sent and the notice
        for viewers in (None, ()):  # unified_inbox's: every bcc or none, in the lists and the counts
            assert recipients_and_marks(conn, ids, viewers) == reference(conn, ids, viewers)
        for viewers in (None, (), (people["BlueLake"],), (people["BlueLake"], people["GreenCastle"])):
            assert recipients_of(conn, ids, viewers) == reference(conn, ids, viewers)[0]
            assert recipients_of(conn, ids[1:3], viewers) == reference(conn, ids[1:3], viewers)[0]
        assert recipients_and_marks(conn, [], None) == ({}, {})


def test_every_reader_lists_the_recipients_by_address(call, project, mail):
    wide = {"to": ["aardvark", "Apex@work-api", "RedStone", "Zebra"],
            "cc": ["Mole", "Mole2", "Mole@work-api", "zed@work-api"], "bcc": ["bison", "Yak"]}
    [first] = call("fetch_outbox", project_key=project, agent_name="BlueLake")["messages"]
    assert {kind: first[kind] for kind in wide} == wide
    [notice] = call("fetch_outbox", project_key=project, agent_name="Yak")["messages"]
    assert (notice["to"], notice["cc"]) == (["Quokka"], [])
    thread = call("get_thread", project_key=project, thread_id="T", agent_name="BlueLake")["messages"]
    assert [(item["to"], item["cc"], item["bcc"]) for item in thread] == [
        (wide["to"], wide["cc"], wide["bcc"]), (["bison"], ["BlueLake", "Yak"], [])]  # GreenCastle's bcc: not BlueLake's to see
    [from_api] = call("fetch_outbox", project_key="work-api", agent_name="zed")["messages"]
    assert (from_api["to"], from_api["cc"], from_api["bcc"]) == (["Apex", "BlueLake@work-demo", "Mole"], ["aardvark@work-demo"],
                                                                ["Mole@work-demo"])


def test_unified_inbox_counts_the_recipients_it_lists(call, mail):
    for include_bcc in (False, True):
        page = {item["subject"]: item for item in call("unified_inbox", include_bcc=include_bcc)["messages"]}
        wide, another = page["Wide"], page["Another's bcc"]
        assert wide["bcc"] == (["bison", "Yak"] if include_bcc else [])
        # 8 to and cc, aardvark's ack; with bcc 10, Yak's read too
        assert (wide["unread"], wide["ack_pending"]) == ((8, 9) if include_bcc else (7, 7))
        assert another["bcc"] == (["aardvark", "zed@work-api"] if include_bcc else [])
        assert (another["unread"], another["ack_pending"]) == ((4, 4) if include_bcc else (2, 2))
        assert page["From work-api"]["to"] == ["Apex", "BlueLake@work-demo", "Mole"]
