"""Contact policies and contacts, in process (every tool through invoke, on a real SQLite file)."""

import re

import pytest

from chalicelib import clock
from chalicelib.store import db
from chalicelib.errors import Conflict, InvalidArgument, NotFound
from chalicelib.ids import new_id, stable_id
from chalicelib.tools import tools_by_name
from chalicelib.tools.agents import agent_id
from chalicelib.tools.reservations import literal_prefix
from chalicelib.clock import later

from .sql import sql, turso_plans

pytestmark = pytest.mark.both_backends

TEAM = "work-team"
REAL_NOW = clock.now


@pytest.fixture
def team(call):
    """A project whose three agents keep the default policy (auto)."""
    call("ensure_project", human_key="/work/team")
    for name in ("BlueLake", "GreenCastle", "RedStone"):
        call("register_agent", project_key=TEAM, program="claude-code", model="opus", name=name)
    return TEAM


def policy(call, agent, value, project=TEAM):
    call("set_contact_policy", project_key=project, agent_name=agent, policy=value)


def inbox(call, agent, project=TEAM):
    return call("fetch_inbox", project_key=project, agent_name=agent, include_bodies=True)["messages"]


def stored_messages(settings) -> tuple[int, int]:
    with sql(settings) as conn:
        counts = "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM message_recipients)"
        return tuple(conn.execute(counts).fetchone())


def reserve(settings, project_key, agent, pattern, expires_in=3600):
    """A file reservation row, inserted directly (the schema of migrations/0004, and 0026's prefix)."""
    project_id = stable_id("project", project_key)
    now = clock.now()
    with sql(settings) as conn:
        conn.execute(
            "INSERT INTO file_reservations (id, project_id, agent_id, path_pattern, path_prefix, exclusive, created_ts,"
            " expires_ts) VALUES (?, ?, ?, ?, ?, 1, ?, ?)",
            (new_id(), project_id, agent_id(project_id, agent), pattern, literal_prefix(pattern), now, later(now, expires_in)),
        )


def test_agents_start_with_the_auto_policy(call, team):
    assert call("whois", project_key=team, agent_name="BlueLake")["contact_policy"] == "auto"
    agent = call("set_contact_policy", project_key=team, agent_name="BlueLake", policy="contacts_only")
    assert agent["contact_policy"] == "contacts_only"
    with pytest.raises(InvalidArgument, match="policy"):
        policy(call, "BlueLake", "friends")


def test_a_blocked_send_names_the_blocked_and_stores_nothing(call, team, send, settings):
    policy(call, "GreenCastle", "open")
    with pytest.raises(Conflict) as info:
        send("BlueLake", ["GreenCastle", "RedStone"])
    error = info.value
    assert "RedStone (auto)" in error.message and "GreenCastle" not in error.message
    assert "request_contact(project_key='work-team', agent_name='BlueLake', to_agent='RedStone')" in error.hint
    assert stored_messages(settings) == (0, 0)  # not even GreenCastle's copy
    assert inbox(call, "GreenCastle") == []


def test_a_blocked_sends_hint_is_one_sentence_a_step(call, team, send):
    """The steps were joined '…once it accepts; Call request_contact…' (a capital after a semicolon)."""
    ask = "Call request_contact(project_key='work-team', agent_name='BlueLake', to_agent='{}') and send again once it accepts."
    with pytest.raises(Conflict) as both:
        send("BlueLake", ["GreenCastle", "RedStone"])
    assert both.value.hint == f"{ask.format('GreenCastle')} {ask.format('RedStone')} Otherwise send without them."
    pending = call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    assert pending["next_step"].endswith(" then send again; or write to others meanwhile.")
    with pytest.raises(Conflict) as waiting:
        send("BlueLake", ["GreenCastle", "RedStone"])
    assert waiting.value.hint == (
        f"{ask.format('RedStone')} Your contact request to GreenCastle is pending since {pending['requested_ts']};"
        " GreenCastle has been notified (a notice in its inbox) and answers with respond_contact. Meanwhile"
        " wait_for_mail(project_key='work-team', agent_name='BlueLake') tells you when it answers (a notice), then send"
        " again. Otherwise send without them.")


def test_open_admits_anyone(call, team, send):
    policy(call, "GreenCastle", "open")
    send("BlueLake", ["GreenCastle"])
    assert len(inbox(call, "GreenCastle")) == 1


def share_a_thread(call, send):
    """RedStone writes to BlueLake and GreenCastle (to and cc): the two now share a thread
    without ever having written to each other."""
    for agent in ("BlueLake", "GreenCastle"):
        policy(call, agent, "open")
    send("RedStone", ["BlueLake"], cc=["GreenCastle"])
    for agent in ("BlueLake", "GreenCastle"):
        policy(call, agent, "auto")


def test_auto_admits_agents_sharing_a_thread(call, team, send):
    share_a_thread(call, send)
    send("BlueLake", ["GreenCastle"], subject="new topic")  # any thread: they have talked before
    policy(call, "GreenCastle", "contacts_only")
    with pytest.raises(Conflict, match="GreenCastle"):  # a shared thread is not a contact
        send("BlueLake", ["GreenCastle"])


def test_bcc_is_not_conversation(call, team, send):
    policy(call, "GreenCastle", "open")
    policy(call, "BlueLake", "open")
    send("RedStone", ["BlueLake"], bcc=["GreenCastle"])  # GreenCastle saw it; BlueLake does not know
    policy(call, "GreenCastle", "auto")
    policy(call, "BlueLake", "auto")
    with pytest.raises(Conflict, match="GreenCastle"):
        send("BlueLake", ["GreenCastle"])
    with pytest.raises(Conflict, match="BlueLake"):
        send("GreenCastle", ["BlueLake"])


def test_auto_admits_agents_with_overlapping_reservations(call, team, send, settings):
    reserve(settings, "/work/team", "BlueLake", "src/**")
    reserve(settings, "/work/team", "GreenCastle", "src/app.py")
    reserve(settings, "/work/team", "RedStone", "docs/**")
    send("BlueLake", ["GreenCastle"])
    with pytest.raises(Conflict, match="RedStone"):  # no overlap
        send("BlueLake", ["RedStone"])
    policy(call, "GreenCastle", "contacts_only")
    with pytest.raises(Conflict, match="GreenCastle"):
        send("BlueLake", ["GreenCastle"])


@pytest.mark.parametrize("broad", ["**", "*.py", "**/app.py"])
def test_a_pattern_that_starts_with_a_glob_admits_no_one(call, team, send, settings, broad):
    """It names no part of the tree, so it overlaps everything: reserving `**` (granted to anyone,
    a fresh identity too) let an agent write to every `auto` agent holding a reservation."""
    reserve(settings, "/work/team", "BlueLake", broad)
    reserve(settings, "/work/team", "GreenCastle", "src/app.py")
    with pytest.raises(Conflict, match="GreenCastle"):
        send("BlueLake", ["GreenCastle"])
    with pytest.raises(Conflict, match="BlueLake"):  # nor the other way
        send("GreenCastle", ["BlueLake"])
    reserve(settings, "/work/team", "BlueLake", "src/**")  # naming a folder it does
    send("BlueLake", ["GreenCastle"])


def test_expired_reservations_do_not_count(call, team, send, settings):
    reserve(settings, "/work/team", "BlueLake", "src/**", expires_in=-1)
    reserve(settings, "/work/team", "GreenCastle", "src/app.py")
    with pytest.raises(Conflict, match="GreenCastle"):
        send("BlueLake", ["GreenCastle"])


def test_whoever_wrote_to_you_may_be_answered(call, team, send):
    policy(call, "BlueLake", "open")
    policy(call, "GreenCastle", "contacts_only")
    first = send("GreenCastle", ["BlueLake"])
    call("reply_message", project_key=team, message_id=first["id"], sender_name="BlueLake", body_md="sure")
    send("BlueLake", ["GreenCastle"], subject="and another thing")
    policy(call, "GreenCastle", "block_all")
    with pytest.raises(Conflict, match="GreenCastle") as info:
        call("reply_message", project_key=team, message_id=first["id"], sender_name="BlueLake", body_md="again")
    assert "accepts no messages" in info.value.hint


def test_request_respond_then_send(call, team, send, settings):
    with pytest.raises(Conflict):
        send("BlueLake", ["GreenCastle"])
    asked = call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle",
                 reason="Schema review for FEAT-7")
    assert (asked["from_agent"], asked["to_agent"], asked["status"]) == ("BlueLake", "GreenCastle", "pending")

    [notice] = inbox(call, "GreenCastle")
    assert notice["kind"] == "notice" and notice["sender"] == "BlueLake"
    assert "Contact request from BlueLake" in notice["subject"]
    assert "Schema review for FEAT-7" in notice["body_md"] and "respond_contact" in notice["body_md"]
    with pytest.raises(Conflict):  # the notice is not conversation, and the request is not yet accepted
        send("BlueLake", ["GreenCastle"])
    send("GreenCastle", ["BlueLake"], subject="What is it about?")  # whoever asked may be answered

    again = call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    assert again == asked and len(inbox(call, "GreenCastle")) == 1  # asking again sends no second notice

    accepted = call("respond_contact", project_key=team, to_agent="GreenCastle", from_agent="BlueLake", accept=True)
    assert accepted["status"] == "approved" and accepted["responded_ts"]
    assert accepted["expires_ts"] > later(accepted["responded_ts"], 29 * 24 * 3600)  # 30 days by default
    assert any(m["kind"] == "notice" and "accepted" in m["subject"] for m in inbox(call, "BlueLake"))

    send("BlueLake", ["GreenCastle"], subject="Schema")
    policy(call, "BlueLake", "contacts_only")
    send("GreenCastle", ["BlueLake"], subject="Both ways")  # an approved contact admits both directions
    for agent, other in (("BlueLake", "GreenCastle"), ("GreenCastle", "BlueLake")):
        [contact] = call("list_contacts", project_key=team, agent_name=agent)["contacts"]
        assert (contact["status"], {contact["from_agent"], contact["to_agent"]}) == ("approved", {agent, other})


def test_block_all_refuses_even_contacts(call, team, send):
    call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    call("respond_contact", project_key=team, to_agent="GreenCastle", from_agent="BlueLake", accept=True)
    policy(call, "GreenCastle", "block_all")
    with pytest.raises(Conflict, match=r"GreenCastle \(block_all\)"):
        send("BlueLake", ["GreenCastle"])
    with pytest.raises(Conflict, match="block_all"):
        call("request_contact", project_key=team, from_agent="RedStone", to_agent="GreenCastle")


def test_declining_keeps_the_asker_out_until_it_expires(call, team, send, monkeypatch):
    call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle", ttl_seconds=3600)
    declined = call("respond_contact", project_key=team, to_agent="GreenCastle", from_agent="BlueLake", accept=False)
    assert declined["status"] == "denied"
    assert any("declined" in m["subject"] for m in inbox(call, "BlueLake"))
    with pytest.raises(Conflict, match="declined"):
        call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    with pytest.raises(Conflict):
        send("BlueLake", ["GreenCastle"])
    # GreenCastle may change its mind
    call("respond_contact", project_key=team, to_agent="GreenCastle", from_agent="BlueLake", accept=True)
    send("BlueLake", ["GreenCastle"])


def test_contacts_expire(call, team, send, monkeypatch):
    call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle", ttl_seconds=3600)
    call("respond_contact", project_key=team, to_agent="GreenCastle", from_agent="BlueLake", accept=True)
    policy(call, "GreenCastle", "contacts_only")
    send("BlueLake", ["GreenCastle"])
    monkeypatch.setattr(clock, "now", lambda: later(REAL_NOW(), 3601))
    [contact] = call("list_contacts", project_key=team, agent_name="BlueLake")["contacts"]
    assert contact["status"] == "expired"
    with pytest.raises(Conflict, match="GreenCastle"):
        send("BlueLake", ["GreenCastle"])
    renewed = call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    assert renewed["status"] == "pending"


def test_a_request_that_lapsed_or_was_declined_is_asked_again_only_after_the_hour(call, team, monkeypatch):
    """ttl_seconds=60 ended a request (or its decline) within a minute, and each new ask was a
    new notice in the target's inbox: the flood limits counted the pair's one row once."""
    from chalicelib.tools.contacts import TooManyRequests

    first = call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle", ttl_seconds=60)
    monkeypatch.setattr(clock, "now", lambda: later(REAL_NOW(), 61))
    with pytest.raises(TooManyRequests) as refused:
        call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle", ttl_seconds=60)
    assert 3400 < int(refused.value.headers["Retry-After"]) <= 3540 and "one request to an agent an hour" in refused.value.message
    call("respond_contact", project_key=team, to_agent="GreenCastle", from_agent="BlueLake", accept=False)
    monkeypatch.setattr(clock, "now", lambda: later(REAL_NOW(), 130))  # the decline, lasting its 60 s, is over
    with pytest.raises(TooManyRequests):
        call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    assert [m["subject"] for m in inbox(call, "GreenCastle")].count("Contact request from BlueLake") == 1
    monkeypatch.setattr(clock, "now", lambda: later(REAL_NOW(), 3700))
    assert call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")["status"] == "pending"
    declined = [m for m in inbox(call, "BlueLake") if "declined" in m["subject"]]
    assert declined and f"before {later(first['requested_ts'], 3600)}." in declined[0]["body_md"]  # not after its 60 s


def test_a_contact_that_was_approved_is_asked_for_again_once_it_lapsed_however_soon(call, team, monkeypatch):
    """The once-an-hour rule is for requests that lapsed unanswered or were declined: a lapsed
    approval (or an open agent's, which sends no notice) is asked for again at once."""
    call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle", ttl_seconds=60)
    call("respond_contact", project_key=team, to_agent="GreenCastle", from_agent="BlueLake", accept=True, ttl_seconds=60)
    policy(call, "RedStone", "open")
    call("request_contact", project_key=team, from_agent="BlueLake", to_agent="RedStone", ttl_seconds=60)
    monkeypatch.setattr(clock, "now", lambda: later(REAL_NOW(), 120))
    assert call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")["status"] == "pending"
    assert call("request_contact", project_key=team, from_agent="BlueLake", to_agent="RedStone")["status"] == "approved"


def test_open_agents_accept_requests_at_once(call, team):
    policy(call, "GreenCastle", "open")
    contact = call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    assert contact["status"] == "approved"
    assert inbox(call, "GreenCastle") == []  # nothing to answer, so no notice


def test_an_agent_that_declined_you_then_opened_accepts_your_request_at_once(call, team, send):
    """QA session 31: its stored denial was checked before its policy, so the request was refused
    (409, "ask again after" a month) while a send to it went through."""
    policy(call, "GreenCastle", "contacts_only")
    call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    call("respond_contact", project_key=team, to_agent="GreenCastle", from_agent="BlueLake", accept=False)
    policy(call, "GreenCastle", "open")
    send("BlueLake", ["GreenCastle"])
    contact = call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    assert (contact["status"], contact["to_agent"]) == ("approved", "GreenCastle")
    assert [m["subject"] for m in inbox(call, "GreenCastle")].count("Contact request from BlueLake") == 1  # no new notice
    policy(call, "GreenCastle", "contacts_only")  # the approval stands once it closes again
    send("BlueLake", ["GreenCastle"])


def test_asking_someone_who_asked_you_accepts(call, team, send):
    call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    crossed = call("request_contact", project_key=team, from_agent="GreenCastle", to_agent="BlueLake")
    assert (crossed["from_agent"], crossed["status"]) == ("BlueLake", "approved")
    policy(call, "GreenCastle", "contacts_only")
    send("BlueLake", ["GreenCastle"])


def test_a_retired_requester_is_answered_without_a_notice(call, team):
    """QA, session 28: declining (or revoking) the request of an agent since retired answered 409
    (its notice refused a retired recipient), and the contact stayed as it was."""
    call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    call("retire_agent", project_key=team, agent_name="BlueLake")
    declined = call("respond_contact", project_key=team, to_agent="GreenCastle", from_agent="BlueLake", accept=False)
    assert declined["status"] == "denied"
    assert not [m for m in inbox(call, "BlueLake") if "declined" in m["subject"]]


def test_respond_needs_a_request(call, team):
    with pytest.raises(NotFound, match="RedStone has not asked GreenCastle") as info:
        call("respond_contact", project_key=team, to_agent="GreenCastle", from_agent="RedStone", accept=True)
    assert "request_contact" in info.value.hint
    call("request_contact", project_key=team, from_agent="GreenCastle", to_agent="RedStone")
    with pytest.raises(NotFound):  # the asker cannot answer its own request
        call("respond_contact", project_key=team, to_agent="GreenCastle", from_agent="RedStone", accept=True)
    with pytest.raises(Conflict, match="itself"):
        call("request_contact", project_key=team, from_agent="GreenCastle", to_agent="greencastle")


@pytest.fixture
def two_projects(call):
    call("ensure_project", human_key="/work/backend")
    call("ensure_project", human_key="/work/frontend")
    call("register_agent", project_key="work-backend", program="codex", model="gpt", name="BlueLake")
    call("register_agent", project_key="work-frontend", program="codex", model="gpt", name="PinkDog")
    return "work-backend", "work-frontend"


def test_cross_project_contact_send_and_reply(call, two_projects, send, settings):
    backend, frontend = two_projects
    with pytest.raises(Conflict, match="PinkDog@work-frontend"):
        send("BlueLake", ["PinkDog@work-frontend"], project=backend)
    # the project after @ may be a slug or a human key
    asked = call("request_contact", project_key=backend, from_agent="BlueLake", to_agent="PinkDog@/work/frontend")
    assert asked["to_agent"] == "PinkDog@work-frontend"
    [notice] = inbox(call, "PinkDog", frontend)
    assert notice["sender"] == "BlueLake@work-backend" and "from_agent='BlueLake@work-backend'" in notice["body_md"]
    accepted = call("respond_contact", project_key=frontend, to_agent="PinkDog", from_agent="BlueLake@work-backend",
                    accept=True)
    assert (accepted["from_agent"], accepted["to_agent"]) == ("BlueLake@work-backend", "PinkDog")

    sent = send("BlueLake", ["PinkDog@work-frontend"], project=backend, subject="API change", thread_id="API-1")
    assert (sent["project"], sent["to"]) == (backend, ["PinkDog@work-frontend"])
    received = next(m for m in inbox(call, "PinkDog", frontend) if m["subject"] == "API change")
    assert received["sender"] == "BlueLake@work-backend" and received["kind"] == "to"
    assert call("get_project", project_key=backend)["messages"] == 2  # the request notice and the message

    seen = call("get_message", project_key=frontend, message_id=sent["id"], agent_name="PinkDog")
    assert (seen["project"], seen["sender"], seen["to"]) == (backend, "BlueLake", ["PinkDog@work-frontend"])
    with pytest.raises(NotFound):  # without a reader, only the project's own messages
        call("get_message", project_key=frontend, message_id=sent["id"])
    call("acknowledge_message", project_key=frontend, agent_name="PinkDog", message_id=sent["id"])

    reply = call("reply_message", project_key=frontend, message_id=sent["id"], sender_name="PinkDog",
                 body_md="Looks good")["message"]
    assert (reply["project"], reply["thread_id"], reply["to"]) == (frontend, "API-1", ["BlueLake@work-backend"])
    answer = next(m for m in inbox(call, "BlueLake", backend) if m["id"] == reply["id"])
    assert answer["sender"] == "PinkDog@work-frontend" and answer["subject"] == "Re: API change"


def test_addresses_are_checked(call, two_projects, send):
    backend, _ = two_projects
    with pytest.raises(NotFound, match="Ghost in project 'work-frontend'"):
        send("BlueLake", ["Ghost@work-frontend"], project=backend)
    with pytest.raises(NotFound, match="nowhere"):
        send("BlueLake", ["PinkDog@nowhere"], project=backend)
    with pytest.raises(InvalidArgument, match="names no project"):
        send("BlueLake", ["PinkDog@"], project=backend)
    with pytest.raises(InvalidArgument, match="not a valid agent name"):
        send("BlueLake", ["Pink Dog@work-frontend"], project=backend)


@pytest.mark.sqlite_only  # counts statements with sqlite3's trace callback
def test_the_check_costs_a_few_queries_whatever_the_recipients(call, team, settings):
    names = [f"Peer{i}" for i in range(20)]
    for name in names:
        call("register_agent", project_key=team, program="p", model="m", name=name)
    statements = []
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        conn.set_trace_callback(statements.append)
        send_tool = tools_by_name()["send_message"]
        args = send_tool.input(project_key=team, sender_name="BlueLake", to=names, subject="s", body_md="b")
        with pytest.raises(Conflict):
            send_tool.handler(conn, args)
        conn.set_trace_callback(None)
    # contacts, answers, written to, addressed together (lower ids, higher ids); the pending requests to word the refusal
    assert len([s for s in statements if re.search(r"\b(FROM|JOIN) (contacts|correspondents)\b", s)]) == 6
    assert len([s for s in statements if "FROM file_reservations" in s]) == 1
    assert not [s for s in statements if "FROM messages" in s or "FROM message_recipients" in s]  # no mailbox is walked


@pytest.mark.parametrize("kept_by", ["the write path", "the migration"])
def test_mail_exchanged_is_what_the_messages_say(call, team, settings, kept_by):
    """The check reads the pairs the write path keeps (tools/correspondents.py), or the migration
    made of the mail stored before it: it finds exactly what the messages say, for random mail in
    to, cc and bcc."""
    import random

    from chalicelib.tools import contacts

    rng = random.Random(7)
    names = ["BlueLake", "GreenCastle", "RedStone", "amberfox", "Cobalt7", "dustyowl", "EmberHill", "frostpine", "GoldFinch"]
    for name in names[3:]:
        call("register_agent", project_key=team, program="p", model="m", name=name)
    for name in names:
        policy(call, name, "open")
    for n in range(15):  # sparse: most pairs have exchanged nothing, some only through a bcc
        sender, *others = rng.sample(names, 3)
        kinds = {kind: [name for name in others if rng.random() < 0.4] for kind in ("to", "cc", "bcc")}
        call("send_message", project_key=team, sender_name=sender, to=kinds["to"] or [others[0]], cc=kinds["cc"],
             bcc=kinds["bcc"], subject=f"m{n}", body_md="b")
    for _ in range(2):  # with itself, and to a group of agents (again: its pairs are known)
        call("send_message", project_key=team, sender_name="BlueLake", to=["BlueLake", "RedStone", "amberfox"], cc=["Cobalt7"],
             subject="group", body_md="b")
    if kept_by == "the migration":
        [(_, migration)] = [(version, text) for version, text in db.migrations() if version == "0033_correspondents"]
        with sql(settings) as conn:
            conn.execute("DELETE FROM correspondents")
            conn.execute(next(s for s in db.split_statements(migration) if "INSERT INTO correspondents" in s))
    ids = {name: agent_id(stable_id("project", "/work/team"), name) for name in names}
    with db.connection(settings) as conn:
        rows = conn.execute("SELECT m.id, m.sender_id, r.agent_id, r.kind FROM messages m JOIN message_recipients r ON r.message_id = m.id").fetchall()
        addressed: dict[int, set[int]] = {}
        for message, _, agent, kind in rows:
            if kind in ("to", "cc"):
                addressed.setdefault(message, set()).add(agent)
        for sender in ids.values():
            others = [agent for agent in ids.values() if agent != sender]
            answers = {agent for _, from_, agent_to, kind in rows for agent in others
                       if from_ == agent and agent_to == sender and kind != "notice"}
            wrote = {agent for message, from_, agent, kind in rows if from_ == sender and agent != sender and kind in ("to", "cc")}
            both = {agent for group in addressed.values() if sender in group for agent in group if agent != sender}
            assert contacts._contacts_and_answers(conn, sender, others) == answers
            assert contacts._shared_threads(conn, sender, others) == (wrote | both) & set(others)


@pytest.mark.sqlite_only
def test_the_contact_check_looks_each_pair_up_on_turso_too(call, team, send, settings, request):
    """The check of an auto recipient asks whether the sender wrote to it: `peer_id IN (...)` read
    every row of the sender's on Turso's engine (a replica's), however many agents it wrote to."""
    policy(call, "GreenCastle", "open")
    send("BlueLake", ["GreenCastle"])
    policy(call, "GreenCastle", "auto")
    statements = request.getfixturevalue("traced")
    send("BlueLake", ["GreenCastle"])  # admitted: BlueLake wrote to it
    checks = {statement: steps for statement, steps in turso_plans(settings.database_path, statements).items()
              if "correspondents" in statement}
    assert checks
    for statement, steps in checks.items():
        assert not [step for step in steps if step.endswith("(agent_id=?)")], (statement, steps)
