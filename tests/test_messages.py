import pytest

from chalicelib import invoke
from chalicelib.errors import InvalidArgument, NotFound
from chalicelib.registry import to_json
from chalicelib.tools import tools_by_name

from .sql import sql

pytestmark = pytest.mark.both_backends


def send(call, project, **overrides):
    args = dict(project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Plan", body_md="Let's go")
    return call("send_message", **(args | overrides))["message"]


def inbox(call, project, agent, **options):
    return call("fetch_inbox", project_key=project, agent_name=agent, **options)["messages"]


def test_send_and_receive(call, project):
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle", "RedStone"],
                subject="Plan", body_md="**go**", importance="high", ack_required=True)
    assert sent["recipients"] == 2
    message = sent["message"]
    assert message["thread_id"] == message["id"]  # a new thread is keyed by its first message
    assert isinstance(message["id"], str) and int(message["id"]) < 2**63
    for agent in ("GreenCastle", "RedStone"):
        [received] = inbox(call, project, agent)
        assert (received["id"], received["sender"], received["kind"]) == (message["id"], "BlueLake", "to")
        assert received["importance"] == "high" and received["ack_required"] is True
        assert received["body_md"] is None and received["read_ts"] is None


def test_bcc_is_invisible_to_other_recipients(call, project):
    message = send(call, project, cc=["RedStone"], bcc=["GreenCastle"], to=["RedStone"])
    assert message["bcc"] == ["GreenCastle"]  # the sender sees it
    [copy] = inbox(call, project, "GreenCastle")
    assert copy["kind"] == "bcc"
    for viewer in (None, "RedStone", "GreenCastle"):
        seen = call("get_message", project_key=project, message_id=message["id"], agent_name=viewer)
        assert seen["bcc"] == [] and seen["to"] == ["RedStone"] and seen["cc"] == []
    [outgoing] = call("fetch_outbox", project_key=project, agent_name="BlueLake")["messages"]
    assert outgoing["bcc"] == ["GreenCastle"]


def test_unknown_recipient_sends_nothing_at_all(call, project, settings):
    with pytest.raises(NotFound, match="Ghost, Phantom"):
        send(call, project, to=["GreenCastle", "Ghost"], cc=["Phantom"])
    with sql(settings) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM message_recipients").fetchone()[0] == 0


def test_validation_errors_name_the_field(call, project):
    with pytest.raises(InvalidArgument, match="to: List should have at least 1 item"):
        send(call, project, to=[])
    with pytest.raises(InvalidArgument, match="importance"):
        send(call, project, importance="critical")
    with pytest.raises(InvalidArgument, match="Extra inputs"):
        call("fetch_inbox", project_key=project, agent_name="BlueLake", colour="red")


def test_reply_keeps_thread_and_importance_and_defaults_to_the_sender(call, project):
    original = send(call, project, thread_id="FEAT-7", importance="urgent", ack_required=True)
    reply = call("reply_message", project_key=project, message_id=original["id"], sender_name="GreenCastle",
                 body_md="On it")["message"]
    assert (reply["thread_id"], reply["subject"], reply["to"]) == ("FEAT-7", "Re: Plan", ["BlueLake"])
    assert reply["importance"] == "urgent" and reply["ack_required"] is False  # "On it" demands no ack
    again = call("reply_message", project_key=project, message_id=reply["id"], sender_name="BlueLake", body_md="ok")
    assert again["message"]["subject"] == "Re: Plan"  # no "Re: Re:"


def test_message_ids_accept_numbers_and_strings(call, project):
    message = send(call, project)
    assert call("get_message", project_key=project, message_id=int(message["id"]))["body_md"] == "Let's go"
    with pytest.raises(NotFound, match="not found"):
        call("get_message", project_key=project, message_id="123")


def test_read_and_acknowledge_are_idempotent(call, project):
    message = send(call, project, ack_required=True)
    args = dict(project_key=project, agent_name="GreenCastle", message_id=message["id"])
    read = call("mark_message_read", **args)
    assert read["read_ts"] and read["ack_ts"] is None
    ack = call("acknowledge_message", **args)
    assert ack["read_ts"] == read["read_ts"] and ack["ack_ts"]
    assert call("acknowledge_message", **args) == ack
    [received] = inbox(call, project, "GreenCastle")
    assert (received["read_ts"], received["ack_ts"]) == (ack["read_ts"], ack["ack_ts"])


def test_only_recipients_can_acknowledge(call, project):
    message = send(call, project)
    with pytest.raises(NotFound, match="among the viewer's mail"):  # not a message RedStone sent or received
        call("acknowledge_message", project_key=project, agent_name="RedStone", message_id=message["id"])
    with pytest.raises(NotFound, match="not sent to BlueLake"):  # its sender
        call("acknowledge_message", project_key=project, agent_name="BlueLake", message_id=message["id"])


def test_inbox_filters(call, project):
    first = send(call, project, subject="one")
    send(call, project, subject="two", importance="urgent")
    send(call, project, subject="three", importance="low")
    assert [m["subject"] for m in inbox(call, project, "GreenCastle")] == ["three", "two", "one"]
    assert [m["subject"] for m in inbox(call, project, "GreenCastle", limit=1)] == ["three"]
    assert [m["subject"] for m in inbox(call, project, "GreenCastle", urgent_only=True)] == ["two"]
    later = inbox(call, project, "GreenCastle", since_ts=first["created_ts"])
    assert [m["subject"] for m in later] == ["three", "two"]
    assert inbox(call, project, "GreenCastle", include_bodies=True)[0]["body_md"] == "Let's go"
    with pytest.raises(InvalidArgument, match="ISO 8601"):
        inbox(call, project, "GreenCastle", since_ts="yesterday")
    # ISO 8601 (the schema's date-time) past the range once in UTC: the range's end, selecting what the time would
    assert [m["subject"] for m in inbox(call, project, "GreenCastle", since_ts="0001-01-01T00:00:00+14:00")] == ["three", "two", "one"]
    assert inbox(call, project, "GreenCastle", since_ts="9999-12-31T23:59:59-14:00") == []


def test_inbox_json_is_the_validated_outputs_json(call, project, settings):
    """MCP and REST send fetch_inbox's JSON as the database renders it (json_handler): it must
    be byte for byte what pydantic writes for the validated output, awkward text included."""
    awkward = 'quote " backslash \\ newline \n tab \t controls \x01\x1f\x7f é 漢字 🙂 \u2028 </script> \\u0041'
    first = send(call, project, subject=awkward, body_md=awkward, cc=["RedStone"], importance="urgent", ack_required=True)
    send(call, project, to=["RedStone"], cc=["GreenCastle"])
    call("acknowledge_message", project_key=project, agent_name="GreenCastle", message_id=first["id"])
    call("ensure_project", human_key="/work/other")
    call("register_agent", project_key="work-other", program="p", model="m", name="PurpleBear")
    send(call, "work-other", sender_name="PurpleBear", to=["GreenCastle@work-demo"], subject="from afar")
    fetch_inbox = tools_by_name()["fetch_inbox"]
    for options in ({}, {"include_bodies": True}, {"urgent_only": True}, {"project_key": "/work/demo", "limit": 2}):
        args = {"project_key": project, "agent_name": "greencastle", **options}
        encoded = invoke.call(fetch_inbox.json_tool, args, settings)
        assert encoded == to_json(invoke.call(fetch_inbox, args, settings))
    senders = [m["sender"] for m in inbox(call, project, "GreenCastle", include_bodies=True)]
    assert senders == ["PurpleBear@work-other", "BlueLake", "BlueLake"]
    assert inbox(call, project, "GreenCastle", include_bodies=True)[2]["body_md"] == awkward


@pytest.mark.parametrize("project_key, agent_name, missing", [
    ("/work/nowhere", "GreenCastle", "Project '/work/nowhere'"),
    ("nowhere", "GreenCastle", "Project 'nowhere'"),
    ("/work/demo", "Ghost", "Ghost"),
    ("work-demo", "Ghost", "Ghost"),
])
def test_inbox_of_an_unknown_project_or_agent_is_not_found(call, project, settings, project_key, agent_name, missing):
    fetch_inbox = tools_by_name()["fetch_inbox"]
    for tool in (fetch_inbox, fetch_inbox.json_tool):
        with pytest.raises(NotFound, match=missing):
            invoke.call(tool, {"project_key": project_key, "agent_name": agent_name}, settings)
    assert inbox(call, project, "RedStone") == []  # known, and nothing received: empty, not an error


def test_outbox_lists_what_was_sent(call, project):
    send(call, project, subject="a")
    send(call, project, subject="b", to=["RedStone"])
    outbox = call("fetch_outbox", project_key=project, agent_name="BlueLake", include_bodies=True)["messages"]
    assert [(m["subject"], m["to"], m["body_md"]) for m in outbox] == [
        ("b", ["RedStone"], "Let's go"),
        ("a", ["GreenCastle"], "Let's go"),
    ]


def test_a_recipient_named_twice_gets_one_copy(call, project):
    message = send(call, project, to=["GreenCastle", "greencastle"], cc=["GreenCastle"])
    assert (message["to"], message["cc"]) == (["GreenCastle"], [])
    assert len(inbox(call, project, "GreenCastle")) == 1
