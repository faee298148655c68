"""Who learns what about mail, whatever the credential: bcc stays the sender's secret
(summaries, their product and macro variants, whois), contact policies count only mail
actually exchanged, only the target accepts a contact, and contact requests are rate limited."""

import pytest

from chalicelib import config
from chalicelib.errors import Conflict, Forbidden, ToolError

pytestmark = pytest.mark.both_backends


@pytest.fixture
def world(call, project):
    """The conftest project (BlueLake, GreenCastle, RedStone; open), in product p with a second project."""
    call("ensure_project", human_key="/work/other")
    call("register_agent", project_key="work-other", program="p", model="m", name="PinkDog")
    call("ensure_product", product_key="p")
    for key in (project, "work-other"):
        call("products_link", product_key="p", project_key=key)
    return project


def test_bcc_recipients_are_not_in_open_acks_or_whois(call, world, send):
    sent = send("BlueLake", ["GreenCastle"], project=world, bcc=["RedStone"], ack_required=True, thread_id="T-1")
    before = call("whois", project_key=world, agent_name="RedStone")
    assert (before["messages_received"], before["unread"]) == (0, 0)  # the bcc copy is RedStone's secret
    summaries = {
        "summarize_thread": call("summarize_thread", project_key=world, thread_id="T-1"),
        "as GreenCastle": call("summarize_thread", project_key=world, thread_id="T-1", agent_name="GreenCastle"),
        "summarize_thread_product": call("summarize_thread_product", product_key="p", thread_id="T-1"),
        "macro_prepare_thread": call("macro_prepare_thread", project_key=world, thread_id="T-1", program="p",
                                     model="m", agent_name="GreenCastle")["thread"],
    }
    for name, summary in summaries.items():
        assert [ack["agent"] for ack in summary["open_acks"]] == ["GreenCastle"], name
        assert "RedStone" not in summary["participants"], name
    # the bcc recipient sees its own acknowledgement to give (session 32), and still not itself as a participant
    own = call("summarize_thread", project_key=world, thread_id="T-1", agent_name="RedStone")
    assert [ack["agent"] for ack in own["open_acks"]] == ["GreenCastle", "RedStone"] and "RedStone" not in own["participants"]
    # the sender sees whom it asked
    mine = call("summarize_thread", project_key=world, thread_id="T-1", agent_name="BlueLake")
    assert [ack["agent"] for ack in mine["open_acks"]] == ["GreenCastle", "RedStone"]
    assert call("get_message", project_key=world, message_id=sent["id"], agent_name="BlueLake")["bcc"] == ["RedStone"]


def test_the_overseer_who_asks_counts_bcc_recipients_as_any_other(call, world, send):
    """The overseer's views left a bcc recipient's pending ack out: "every recipient acknowledged"
    while RedStone (bcc) still owed one. An admin asks for it (include_bcc); nobody else sees it."""
    sent = send("BlueLake", ["GreenCastle"], project=world, bcc=["RedStone"], ack_required=True, thread_id="T-BCC")
    call("acknowledge_message", project_key=world, agent_name="GreenCastle", message_id=sent["id"])
    [entry] = call("unified_inbox", project_key=world, thread_id="T-BCC", include_bcc=True)["messages"]
    assert (entry["to"], entry["bcc"], entry["unread"], entry["ack_pending"]) == (["GreenCastle"], ["RedStone"], 1, 1)
    for thread_id in (None, "T-BCC"):  # Waiting for acks, of the project and of the thread
        waiting = call("unified_inbox", project_key=world, thread_id=thread_id, view="ack_pending", include_bcc=True)["messages"]
        assert [m["id"] for m in waiting] == [sent["id"]]
        assert call("unified_inbox", project_key=world, thread_id=thread_id, view="ack_pending")["messages"] == []
    [hidden] = call("unified_inbox", project_key=world, thread_id="T-BCC")["messages"]
    assert (hidden["bcc"], hidden["ack_pending"]) == ([], 0)
    summary = call("summarize_thread", project_key=world, thread_id="T-BCC", include_bcc=True)
    assert [ack["agent"] for ack in summary["open_acks"]] == ["RedStone"] and "RedStone" not in summary["participants"]
    assert call("summarize_thread", project_key=world, thread_id="T-BCC")["open_acks"] == []
    [shown] = call("get_thread", project_key=world, thread_id="T-BCC", include_bcc=True)["messages"]
    assert (shown["to"], shown["bcc"]) == (["GreenCastle"], ["RedStone"])
    assert call("get_thread", project_key=world, thread_id="T-BCC")["messages"][0]["bcc"] == []
    for tool in ("list_ack_required", "list_ack_overdue"):
        options = {"older_than_minutes": 1e-6} if tool == "list_ack_overdue" else {}
        listed = call(tool, project_key=world, include_bcc=True, **options)["messages"]
        assert [(m["recipient"], m["kind"]) for m in listed] == [("RedStone", "bcc")], tool
        assert call(tool, project_key=world, **options)["messages"] == [], tool


def test_posting_to_yourself_does_not_make_you_a_participant(call, world, send):
    for name in ("BlueLake", "GreenCastle", "RedStone"):
        call("set_contact_policy", project_key=world, agent_name=name, policy="auto")
    call("set_contact_policy", project_key=world, agent_name="BlueLake", policy="open")
    send("GreenCastle", ["BlueLake"], project=world, thread_id="PRIVATE")  # GreenCastle takes part in PRIVATE
    send("RedStone", ["RedStone"], project=world, thread_id="PRIVATE")  # RedStone posts to itself into it
    with pytest.raises(Conflict, match="GreenCastle"):
        send("RedStone", ["GreenCastle"], project=world, subject="let me in")
    # mail actually exchanged still counts: BlueLake writes to both, now they may talk
    call("set_contact_policy", project_key=world, agent_name="RedStone", policy="open")
    send("BlueLake", ["GreenCastle"], cc=["RedStone"], project=world)
    send("RedStone", ["GreenCastle"], project=world, subject="hello, co-recipient")


def test_only_the_target_accepts_a_handshake_also_across_projects(call, world):
    call("set_contact_policy", project_key="work-other", agent_name="PinkDog", policy="contacts_only")
    shake = dict(project_key=world, requester="BlueLake", target="PinkDog@work-other", auto_accept=True)
    with pytest.raises(Forbidden, match="PinkDog"):
        call("macro_contact_handshake", **shake)
    with pytest.raises(Forbidden):
        call("macro_contact_handshake", **shake, target_token="amt_guess")
    assert call("list_contacts", project_key="work-other", agent_name="PinkDog")["contacts"] == []  # nothing asked
    token = call("rotate_agent_token", project_key="work-other", agent_name="PinkDog")["registration_token"]
    accepted = call("macro_contact_handshake", **shake, target_token=token)
    assert accepted["response"]["status"] == "approved"


def test_product_tools_read_as_an_agent(call, world, send):
    send("BlueLake", ["GreenCastle"], project=world, subject="for green", thread_id="T-2")
    send("BlueLake", ["RedStone"], project=world, subject="for red", thread_id="T-3")
    found = call("search_messages_product", product_key="p", query="for", agent_name="GreenCastle")
    assert [hit["subject"] for hit in found["results"]] == ["for green"]
    assert call("summarize_thread_product", product_key="p", thread_id="T-2", agent_name="GreenCastle")["message_count"] == 1
    with pytest.raises(ToolError, match="not found"):
        call("summarize_thread_product", product_key="p", thread_id="T-3", agent_name="GreenCastle")


@pytest.fixture
def limited(monkeypatch):
    """limited(CONTACT_REQUESTS_PER_...=n, ...): these settings for the test."""

    def limited(**env):
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        config.get_settings.cache_clear()

    yield limited
    config.get_settings.cache_clear()


@pytest.fixture
def limits(limited):
    limited(CONTACT_REQUESTS_PER_AGENT_PER_HOUR=2, CONTACT_REQUESTS_PER_PROJECT_PER_HOUR=3)


def test_contact_requests_are_rate_limited_per_agent_and_per_project(call, limits):
    call("ensure_project", human_key="/inbox")
    call("register_agent", project_key="inbox", program="p", model="m", name="Target")
    for i in range(3):
        call("register_agent", project_key="inbox", program="p", model="m", name=f"Victim{i}")
    call("ensure_project", human_key="/spam")
    throwaways = [call("create_agent_identity", project_key="spam", program="p", model="m")["name"] for _ in range(3)]

    def ask(sender, target):
        return call("request_contact", project_key="spam", from_agent=sender, to_agent=f"{target}@inbox", reason="buy now")

    ask(throwaways[0], "Victim0")
    ask(throwaways[0], "Victim1")
    ask(throwaways[0], "Victim1")  # asking again while pending is no new request
    with pytest.raises(ToolError, match="this agent filed 2") as refused:
        ask(throwaways[0], "Victim2")
    assert refused.value.status == 429 and 3500 <= int(refused.value.headers["Retry-After"]) <= 3600
    ask(throwaways[1], "Target")
    with pytest.raises(ToolError, match="agents of this project filed 3") as refused:
        ask(throwaways[2], "Target")
    assert refused.value.status == 429
    pending = call("list_contacts", project_key="inbox", agent_name="Target")["contacts"]
    assert len(pending) == 1


def test_contact_requests_to_one_agent_are_limited_whichever_projects_ask(call, limited):
    """Each new project brought a fresh per-project budget (QA, session 32: a budget of 3 put 33
    notices into one inbox from 11 throwaway projects): what one agent is sent is bounded too."""
    limited(CONTACT_REQUESTS_PER_PROJECT_PER_HOUR=2, CONTACT_REQUESTS_PER_TARGET_PER_HOUR=3)
    call("ensure_project", human_key="/victim")
    for name, policy in (("Target", "auto"), ("Opened", "open")):
        call("register_agent", project_key="victim", program="p", model="m", name=name)
        call("set_contact_policy", project_key="victim", agent_name=name, policy=policy)

    def ask(project, target):
        call("ensure_project", human_key=f"/junk/{project}")
        name = call("create_agent_identity", project_key=f"junk-{project}", program="p", model="m")["name"]
        return call("request_contact", project_key=f"junk-{project}", agent_name=name, to_agent=f"{target}@victim", reason="BUY")

    for project in (0, 0, 1):  # project 0 spends its budget of 2, project 1 one of its own
        ask(project, "Target")
    with pytest.raises(ToolError, match="the agent you ask was sent 3 in the last hour") as refused:
        ask(1, "Target")
    assert refused.value.status == 429 and 3500 <= int(refused.value.headers["Retry-After"]) <= 3600
    assert ask(2, "Opened")["status"] == "approved"  # an open agent is sent no notice: not limited
    notices = call("fetch_inbox", project_key="victim", agent_name="Target")["messages"]
    assert len(notices) == 3
    for project in (3, 4, 5):  # (review, session 32: what it was sent while open counted once it closed)
        assert ask(project, "Opened")["status"] == "approved"
    call("set_contact_policy", project_key="victim", agent_name="Opened", policy="auto")
    assert ask(6, "Opened")["status"] == "pending"  # the first request it is sent a notice of
