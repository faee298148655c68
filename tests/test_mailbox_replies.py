"""Replies and contacts that do what an agent means; one vocabulary (agent_name, old names as aliases)."""

import pytest

from chalicelib import clock
from chalicelib.clock import later
from chalicelib.errors import Conflict
from chalicelib.tools import tools_by_name

pytestmark = pytest.mark.both_backends


@pytest.fixture
def strangers(call):
    """BlueLake, GreenCastle and RedStone with the default policy (auto): strangers need a contact."""
    call("ensure_project", human_key="/work/strangers")
    for name in ("BlueLake", "GreenCastle", "RedStone"):
        call("register_agent", project_key="work-strangers", program="p", model="m", agent_name=name)
    return "work-strangers"


def test_a_reply_by_the_original_sender_goes_to_the_original_recipients(call, project):
    original = call("send_message", project_key=project, agent_name="BlueLake", to=["GreenCastle"], cc=["RedStone"],
                    subject="Plan", body_md="v1")["message"]
    follow_up = call("reply_message", project_key=project, message_id=original["id"], agent_name="BlueLake",
                     body_md="v2")["message"]
    assert (follow_up["to"], follow_up["cc"]) == (["GreenCastle"], ["RedStone"])
    answer = call("reply_message", project_key=project, message_id=original["id"], agent_name="GreenCastle",
                  body_md="ok")["message"]
    assert (answer["to"], answer["cc"]) == (["BlueLake"], [])


def test_a_person_answers_mail_another_projects_agent_sent_them(call, project):
    """QA, session 40: the person's reply_to took only the project's own messages: a reply from an
    agent of another project, in the person's inbox, was "not found in project" (agents' replies
    find it). Now either."""
    call("ensure_project", human_key="/work/q2")
    call("register_agent", project_key="work-q2", program="p", model="m", name="Rook")
    call("set_contact_policy", project_key="work-q2", agent_name="Rook", policy="open")
    asked = call("send_overseer_message", project_key=project, to=["Rook@work-q2"], subject="Status?", body_md="How is it going?")
    answer = call("reply_message", project_key="work-q2", message_id=asked["message"]["id"], sender_name="Rook", body_md="Done.")
    [received] = call("fetch_inbox", project_key=project, agent_name="Overseer")["messages"]
    assert received["id"] == answer["message"]["id"]
    again = call("send_overseer_message", project_key=project, to=["Rook@work-q2"], reply_to=received["id"], body_md="Thanks!")
    assert again["message"]["subject"] == received["subject"] and again["message"]["thread_id"] == received["thread_id"]
    rooks = call("fetch_inbox", project_key="work-q2", agent_name="Rook", include_bodies=True)["messages"]
    assert [m["body_md"] for m in rooks if m["id"] == again["message"]["id"]] == ["Thanks!"]


def test_a_reply_refused_for_recipients_it_picked_gives_the_call_without_them(call, project):
    """QA session 33: a follow-up to someone since retired (or closed to all mail) was told "Leave them
    out", though the caller named nobody: reply_message picks its recipients. The hint gives the call."""
    original = call("send_message", project_key=project, agent_name="BlueLake", to=["GreenCastle"], cc=["RedStone"],
                    subject="Plan", body_md="v1")["message"]
    call("retire_agent", project_key=project, agent_name="RedStone")
    with pytest.raises(Conflict) as retired:
        call("reply_message", project_key=project, message_id=original["id"], agent_name="BlueLake", body_md="v2")
    fix = (f"reply_message(project_key='work-demo', agent_name='BlueLake', message_id='{original['id']}',"
           " to=['GreenCastle'], body_md=...) sends it without them.")
    assert retired.value.hint.endswith(fix)
    sent = call("reply_message", project_key=project, message_id=original["id"], agent_name="BlueLake", body_md="v2",
                to=["GreenCastle"])["message"]
    assert (sent["to"], sent["cc"]) == (["GreenCastle"], [])
    call("unretire_agent", project_key=project, agent_name="RedStone")
    call("set_contact_policy", project_key=project, agent_name="GreenCastle", policy="block_all")
    with pytest.raises(Conflict) as closed:  # the one left is a cc: it becomes the to
        call("reply_message", project_key=project, message_id=original["id"], agent_name="BlueLake", body_md="v3")
    assert "to=['RedStone'], body_md=...) sends it without them." in closed.value.hint
    with pytest.raises(Conflict) as alone:  # its only recipient is closed: nobody is left to name
        call("reply_message", project_key=project, message_id=sent["id"], agent_name="BlueLake", body_md="v4")
    assert alone.value.hint.endswith("pass to=[...] with whom it should reach instead.")
    with pytest.raises(Conflict) as named:  # recipients the caller named: its own hint only
        call("reply_message", project_key=project, message_id=original["id"], agent_name="BlueLake", body_md="v5",
             to=["GreenCastle"])
    assert "picked for it" not in named.value.hint


def test_a_reply_demands_an_ack_only_when_asked(call, project):
    original = call("send_message", project_key=project, agent_name="BlueLake", to=["GreenCastle"], subject="Review",
                    body_md="please", ack_required=True, importance="high")["message"]
    thanks = call("reply_message", project_key=project, message_id=original["id"], agent_name="GreenCastle",
                  body_md="Looks good")["message"]
    assert thanks["ack_required"] is False and thanks["importance"] == "high"
    asked = call("reply_message", project_key=project, message_id=original["id"], agent_name="GreenCastle",
                 body_md="Please confirm", ack_required=True, importance="low")["message"]
    assert asked["ack_required"] is True and asked["importance"] == "low"


def test_a_send_to_a_pending_contact_says_it_is_pending(call, strangers):
    with pytest.raises(Conflict) as refused:
        call("send_message", project_key=strangers, agent_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b")
    assert "request_contact(project_key='work-strangers', agent_name='BlueLake', to_agent='GreenCastle')" in refused.value.hint
    request = call("request_contact", project_key=strangers, agent_name="BlueLake", to_agent="GreenCastle")
    assert request["status"] == "pending"
    assert "pending since" in request["next_step"] and "wait_for_mail(project_key='work-strangers'" in request["next_step"]
    with pytest.raises(Conflict) as pending:
        call("send_message", project_key=strangers, agent_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b")
    error = pending.value
    assert "pending" in error.message
    assert f"pending since {request['requested_ts']}" in error.hint and "has been notified" in error.hint
    assert "agent_name='BlueLake'" in error.hint and "to_agent=..." not in error.hint
    again = call("request_contact", project_key=strangers, agent_name="BlueLake", to_agent="GreenCastle")
    assert again["status"] == "pending" and again["next_step"]


def test_a_send_after_a_declined_request_says_when_one_may_ask_again(call, strangers, monkeypatch):
    """The hint named request_contact, which the decline refuses: an agent following it looped."""
    call("request_contact", project_key=strangers, agent_name="BlueLake", to_agent="GreenCastle", ttl_seconds=60)
    call("respond_contact", project_key=strangers, agent_name="GreenCastle", from_agent="BlueLake", accept=False)
    with pytest.raises(Conflict) as asked:
        call("request_contact", project_key=strangers, agent_name="BlueLake", to_agent="GreenCastle")
    again = asked.value.hint.removeprefix("You may ask again after ").rstrip(".")
    for seconds in (0, 120):  # while the decline lasts, and after it (asking again waits for the hour)
        real_now = clock.now
        monkeypatch.setattr(clock, "now", lambda: later(real_now(), seconds))
        with pytest.raises(Conflict) as refused:
            call("send_message", project_key=strangers, agent_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b")
        assert "declined" in refused.value.message
        assert "GreenCastle declined your contact request at" in refused.value.hint and f"until {again}" in refused.value.hint
        assert "request_contact(" not in refused.value.hint and "write to agents that admit you" in refused.value.hint
        monkeypatch.undo()


def test_a_handshake_keeps_its_request_when_the_welcome_must_wait(call, strangers):
    shook = call("macro_contact_handshake", project_key=strangers, agent_name="BlueLake", target="GreenCastle",
                 welcome_subject="Hi", welcome_body="Let's pair")
    assert shook["request"]["status"] == "pending" and shook["welcome"] is None
    assert "request was kept" in shook["note"] and "send_message" in shook["note"]
    [contact] = call("list_contacts", project_key=strangers, agent_name="GreenCastle")["contacts"]
    assert contact["status"] == "pending"
    [notice] = call("fetch_inbox", project_key=strangers, agent_name="GreenCastle")["messages"]
    assert notice["kind"] == "notice"  # the request's notice, but no welcome
    call("respond_contact", project_key=strangers, agent_name="GreenCastle", from_agent="BlueLake", accept=True)
    welcomed = call("macro_contact_handshake", project_key=strangers, agent_name="BlueLake", target="GreenCastle",
                    welcome_subject="Hi", welcome_body="Let's pair")
    assert welcomed["welcome"]["message"]["subject"] == "Hi" and welcomed["note"] is None


def test_old_field_names_are_still_accepted(call, strangers):
    call("register_agent", project_key=strangers, program="p", model="m", name="PinkDog")
    call("request_contact", project_key=strangers, from_agent="PinkDog", to_agent="RedStone")
    call("respond_contact", project_key=strangers, to_agent="RedStone", from_agent="PinkDog", accept=True)
    sent = call("send_message", project_key=strangers, sender_name="PinkDog", to=["RedStone"], subject="s", body_md="b")
    call("reply_message", project_key=strangers, message_id=sent["message"]["id"], sender_name="RedStone", body_md="r")
    call("macro_contact_handshake", project_key=strangers, requester="PinkDog", target="BlueLake")


def test_schemas_name_the_acting_agent_agent_name():
    for name in ("register_agent", "send_message", "reply_message", "request_contact", "respond_contact",
                 "macro_contact_handshake"):
        properties = tools_by_name()[name].input.model_json_schema()["properties"]
        assert "agent_name" in properties, name
        assert not {"name", "sender_name", "requester"} & set(properties), name
