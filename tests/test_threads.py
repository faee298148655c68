import sqlite3

import httpx
import pytest

from chalicelib.errors import NotFound
from chalicelib.store import db
from chalicelib.tools import threads, tools_by_name
from chalicelib.tools.threads import DIGESTED

pytestmark = pytest.mark.both_backends

BODY = """\
## Migration plan
We decided to use WAL mode.
- keep ids application-generated
- [ ] BlueLake: write the migration
- [x] review the schema
TODO: benchmark the inbox query
```
- not a point, code
```
"""


def test_a_thread_lists_its_first_participants_and_counts_the_others(call, project):
    """QA, session 40: participants listed every agent of a thread, so a page of list_threads among
    thousands of agents grew as limit x agents (3,001 names for one thread, past MAX_ANSWER_BYTES for 500)."""
    from chalicelib.tools.thread_summaries import PARTICIPANTS_SHOWN

    crowd = [f"Crowd{n:03d}" for n in range(PARTICIPANTS_SHOWN + 29)]  # BlueLake and these: 30 past the list
    for name in crowd:
        call("register_agent", project_key=project, program="p", model="m", name=name)
        call("set_contact_policy", project_key=project, agent_name=name, policy="open")
    call("send_message", project_key=project, sender_name="BlueLake", to=crowd[:100], cc=crowd[100:], subject="All hands",
         body_md="x", thread_id="ALL")
    [listed] = call("list_threads", project_key=project, limit=1)["threads"]
    summary = call("summarize_thread", project_key=project, thread_id="ALL")
    for shown in (listed, summary):
        assert shown["participants"] == ["BlueLake", *crowd[:PARTICIPANTS_SHOWN - 1]] and shown["participants_more"] == 30


def test_threads_list_get_and_summarize(call, project):
    first = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], cc=["RedStone"],
                 subject="Schema", body_md=BODY, thread_id="DB-1", ack_required=True)["message"]
    reply = call("reply_message", project_key=project, message_id=first["id"], sender_name="GreenCastle",
                 body_md="Agreed, this must land today.\nACTION: RedStone to review", ack_required=True)["message"]
    call("send_message", project_key=project, sender_name="RedStone", to=["BlueLake"], subject="Other", body_md="x")
    call("acknowledge_message", project_key=project, agent_name="GreenCastle", message_id=first["id"])

    threads = call("list_threads", project_key=project)["threads"]
    assert [t["subject"] for t in threads] == ["Other", "Schema"]  # most recent first
    assert threads[1]["message_count"] == 2
    assert threads[1]["participants"] == ["BlueLake", "GreenCastle", "RedStone"]

    thread = call("get_thread", project_key=project, thread_id="DB-1")
    assert [m["subject"] for m in thread["messages"]] == ["Schema", "Re: Schema"]

    summary = call("summarize_thread", project_key=project, thread_id="DB-1")
    assert summary["message_count"] == 2 and summary["participants"] == ["BlueLake", "GreenCastle", "RedStone"]
    assert summary["key_points"] == [
        "BlueLake: Migration plan",
        "BlueLake: We decided to use WAL mode.",
        "BlueLake: keep ids application-generated",
        "BlueLake: review the schema",
        "GreenCastle: Agreed, this must land today.",
    ]
    assert summary["action_items"] == [
        "BlueLake: BlueLake: write the migration",
        "BlueLake: benchmark the inbox query",
        "GreenCastle: RedStone to review",
    ]
    assert summary["open_acks"] == [  # the reply asked for one too; each says which message it waits on
        {"message_id": first["id"], "agent": "RedStone", "subject": "Schema", "sender": "BlueLake", "created_ts": first["created_ts"]},
        {"message_id": reply["id"], "agent": "BlueLake", "subject": "Re: Schema", "sender": "GreenCastle",
         "created_ts": reply["created_ts"]},
    ]


def test_a_bcc_recipient_s_own_open_ack_is_in_its_own_summary_only(call, project):
    """A bcc recipient read its own summary of the thread (and macro_prepare_thread's) as if it
    owed no ack, while list_ack_required listed the message for it."""
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], bcc=["RedStone"],
                subject="Sign off", body_md="please ack", ack_required=True)["message"]

    def owing(reader):
        summary = call("summarize_thread", project_key=project, thread_id=sent["thread_id"], agent_name=reader)
        return [ack["agent"] for ack in summary["open_acks"]]

    assert owing("RedStone") == ["GreenCastle", "RedStone"]
    prepared = call("macro_prepare_thread", project_key=project, thread_id=sent["thread_id"], program="p", model="m",
                    agent_name="RedStone")
    assert [ack["agent"] for ack in prepared["thread"]["open_acks"]] == ["GreenCastle", "RedStone"]
    assert owing("BlueLake") == ["GreenCastle", "RedStone"]  # its sender's
    assert owing("GreenCastle") == ["GreenCastle"] and owing(None) == ["GreenCastle"]  # nobody else's


def test_summaries_are_deterministic(call, project):
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s",
         body_md=BODY, thread_id="T")
    assert call("summarize_thread", project_key=project, thread_id="T") == call(
        "summarize_thread", project_key=project, thread_id="T"
    )


def test_a_todo_in_a_list_is_an_action_item(call, project):
    """QA session 36: `- TODO: fix the bug` (a TODO written as a bullet, as Markdown lists are) was a
    key point, "TODO: fix the bug", and only an unbulleted TODO line an action item."""
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", thread_id="T",
         body_md="- TODO: fix the bug\n* FIXME flaky test\n2. Action: ship it\n- todos are done\n- [ ] TODO: review")
    summary = call("summarize_thread", project_key=project, thread_id="T")
    assert summary["action_items"] == ["BlueLake: fix the bug", "BlueLake: flaky test", "BlueLake: ship it",
                                       "BlueLake: TODO: review"]
    assert summary["key_points"] == ["BlueLake: todos are done"]


def test_unknown_thread(call, project):
    with pytest.raises(NotFound, match="Thread 'nope' not found") as info:
        call("get_thread", project_key=project, thread_id="nope")
    assert "list_threads" in info.value.hint
    with pytest.raises(NotFound):
        call("summarize_thread", project_key=project, thread_id="nope")


def test_a_thread_named_by_mail_from_another_project_is_said_to_be_that_projects(call, project):
    """QA session 33: the 404 of a thread id taken from mail of another project said to take thread ids
    from fetch_inbox, where the agent had taken it. A thread is its sender's project's: the hint says
    whose, and which of the reader's messages are in it."""
    call("ensure_project", human_key="/work/api")
    call("register_agent", project_key="work-api", program="p", model="m", name="CopperLynx")
    sent = call("send_message", project_key="work-api", agent_name="CopperLynx", to=["BlueLake@work-demo"],
                subject="API v2", body_md="see", thread_id="API-7")["message"]
    [received] = call("fetch_inbox", project_key=project, agent_name="BlueLake")["messages"]
    assert received["thread_id"] == "API-7"
    for tool in ("get_thread", "summarize_thread"):
        with pytest.raises(NotFound) as info:
            call(tool, project_key=project, agent_name="BlueLake", thread_id="API-7")
        assert info.value.hint == ("It is a thread of project 'work-api': the mail you got in it came from CopperLynx@work-api,"
                                   f" and a thread is its sender's project's. Read that mail with get_message (message_id {sent['id']}).")
    with pytest.raises(NotFound) as other:  # another reader got none of it: the usual hint
        call("get_thread", project_key=project, agent_name="GreenCastle", thread_id="API-7")
    assert "list_threads" in other.value.hint
    assert call("get_message", project_key=project, agent_name="BlueLake", message_id=sent["id"])["subject"] == "API v2"


def test_get_thread_says_whether_each_sender_is_a_person_or_an_agent(call, project):
    """Its messages carried no sender_kind (unified_inbox's do): a reader, the web UI's thread page
    among them, asked whois about each sender to tell the overseer from the agents."""
    call("send_overseer_message", project_key=project, to=["BlueLake"], subject="Stop", body_md="stop", thread_id="KINDS")
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Re: Stop", body_md="ok",
         thread_id="KINDS")
    for reader in ({}, {"agent_name": "BlueLake"}):
        messages = call("get_thread", project_key=project, thread_id="KINDS", **reader)["messages"]
        assert [(m["sender"], m["sender_kind"]) for m in messages] == [("Overseer", "human"), ("BlueLake", "agent")], reader
    [entry] = call("unified_inbox", project_key=project, thread_id="KINDS", limit=1)["messages"]
    assert entry["sender_kind"] == messages[-1]["sender_kind"]  # the same values as unified_inbox's


def test_a_summary_digests_the_newest_messages_and_counts_the_whole_thread(call, project, monkeypatch):
    """Its cost stays flat however long the thread: the bodies and open acks of the newest
    DIGESTED messages; the count, participants and times of all (the thread summaries)."""
    from chalicelib.tools import products, threads

    monkeypatch.setattr(threads, "DIGESTED", 3)
    monkeypatch.setattr(products, "DIGESTED", 3)
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Standup",
         body_md="- old point\nTODO: old action", thread_id="LONG", ack_required=True)
    for n in range(5):
        call("send_message", project_key=project, sender_name=["GreenCastle", "RedStone"][n % 2], to=["BlueLake"],
             subject="Re: Standup", body_md=f"- point {n}", thread_id="LONG")
    summary = call("summarize_thread", project_key=project, thread_id="LONG")
    messages = call("get_thread", project_key=project, thread_id="LONG", include_bodies=False)["messages"]
    assert (summary["subject"], summary["message_count"]) == ("Standup", 6)
    assert summary["participants"] == ["BlueLake", "GreenCastle", "RedStone"]
    assert (summary["first_ts"], summary["last_ts"]) == (messages[0]["created_ts"], messages[-1]["created_ts"])
    assert summary["key_points"] == ["GreenCastle: point 2", "RedStone: point 3", "GreenCastle: point 4"]
    assert summary["action_items"] == [] and summary["open_acks"] == []  # the first message is past the newest 3


def test_summary_items_are_a_lines_first_300_characters(call, project):
    long_point, long_action = "- " + "point " * 20_000, "TODO: " + "act " * 20_000  # ~120 KB lines
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s",
         body_md=f"We decided {'x' * 500}\n{long_action[:1000]}\n{long_point}", thread_id="LONG")
    summary = call("summarize_thread", project_key=project, thread_id="LONG")
    assert summary["key_points"] == ["BlueLake: We decided " + "x" * 289, "BlueLake: " + long_point[2:300].strip()]
    assert summary["action_items"] == ["BlueLake: " + long_action[6:300].strip()]


def test_a_summary_reads_the_first_lines_and_kib_of_each_body(call, project):
    """Each of the newest 500 messages was read whole: 500 bodies of 256 KiB held the event loop
    1.5 s (summarize_thread_product) and 128 MB."""
    far = "- a point past DIGEST_CHARS"
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", thread_id="LONG",
         body_md=f"- near\n{'x' * threads.DIGEST_CHARS}\n{far}\n" + "y" * 200_000)
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", thread_id="LONG",
         body_md="\n" * (threads.DIGEST_LINES - 1) + "TODO: the last line read\nTODO: one line too many")
    summary = call("summarize_thread", project_key=project, thread_id="LONG")
    assert summary["key_points"] == ["BlueLake: near"]
    assert summary["action_items"] == ["BlueLake: the last line read"]


def test_a_summary_lists_the_newest_open_acks_and_counts_the_rest(call, project):
    """open_acks listed every recipient yet to ack any of the newest 500 messages: 460 messages to
    99 agents made 45,540 (8.5 MB), refused as answer_too_large with a hint it could not follow."""
    sent = [call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle", "RedStone"], subject=f"s{n}",
                 body_md="b", thread_id="ASKS", ack_required=True)["message"]["id"] for n in range(threads.OPEN_ACKS // 2 + 3)]
    call("acknowledge_message", project_key=project, agent_name="GreenCastle", message_id=sent[-1])
    call("ensure_product", product_key="p")
    call("products_link", product_key="p", project_key=project)
    waiting = [(id_, name) for id_ in sent for name in ("GreenCastle", "RedStone") if (id_, name) != (sent[-1], "GreenCastle")]
    for summary in (call("summarize_thread", project_key=project, thread_id="ASKS"),
                    call("summarize_thread_product", product_key="p", thread_id="ASKS")):
        assert [(ack["message_id"], ack["agent"]) for ack in summary["open_acks"]] == waiting[-threads.OPEN_ACKS:]
        assert summary["open_acks_more"] == len(waiting) - threads.OPEN_ACKS == 5
    mine = call("summarize_thread", project_key=project, thread_id="ASKS", agent_name="RedStone")
    assert len(mine["open_acks"]) == threads.OPEN_ACKS and mine["open_acks_more"] == 5  # its messages: all of them


@pytest.mark.sqlite_only
def test_reading_a_thread_as_an_agent_costs_its_own_messages_not_the_threads_length(call, project, settings, monkeypatch):
    """messages_in_thread and get_thread as an agent tested each message of the thread, newest
    (oldest) first, until enough were the agent's: for one cc'd on the first message of a thread
    of 150,000, the whole thread (summarize_thread 214 ms, get_thread 144 ms). Counted in SQLite
    virtual machine steps, the work grows with the thread no more."""
    steps = [0]
    connect = sqlite3.connect

    def counted_connect(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_progress_handler(lambda: steps.__setitem__(0, steps[0] + 1), 100)  # one per 100 steps
        return conn

    monkeypatch.setattr(sqlite3, "connect", counted_connect)
    monkeypatch.setitem(db._pools, settings.database_url, [])

    def chat(n: int):
        for _ in range(n):
            call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                 thread_id="LONG")

    def cost(tool: str) -> tuple[int, dict]:
        steps[0] = 0
        answer = call(tool, project_key=project, thread_id="LONG", agent_name="RedStone")
        return steps[0], answer

    first = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], cc=["RedStone"],
                 subject="kickoff", body_md="b", thread_id="LONG")["message"]
    chat(20)
    short = {tool: cost(tool)[0] for tool in ("summarize_thread", "get_thread")}
    chat(400)
    for tool in ("summarize_thread", "get_thread"):
        spent = cost(tool)[0]
        assert spent <= short[tool] + 5, (tool, spent, short[tool])  # (was 20 times as much)
    assert cost("summarize_thread")[1]["message_count"] == 1
    assert [m["id"] for m in cost("get_thread")[1]["messages"]] == [first["id"]]


def test_summaries_run_off_the_event_loop():
    for name, thread in (("summarize_thread", {"project_key": "p"}), ("summarize_thread_product", {"product_key": "p"})):
        summarize = tools_by_name()[name]
        assert summarize.off_loop(summarize.input(thread_id="T", **thread))


def test_a_long_threads_summary_over_rest_counts_all_and_digests_the_newest(server):
    """Through the real server: a thread one message longer than DIGESTED. The count covers
    every message; the oldest one's action item and open ack are past the digest."""
    with httpx.Client(base_url=server, timeout=30) as api:
        def post(tool, **arguments):
            response = api.post(f"/api/{tool}", json=arguments)
            assert response.status_code == 200, response.text
            return response.json()

        slug = post("ensure_project", human_key="/rest/long-thread")["slug"]
        for name in ("BlueLake", "GreenCastle"):
            post("register_agent", project_key=slug, program="p", model="m", name=name)
            post("set_contact_policy", project_key=slug, agent_name=name, policy="open")
        first = post("send_message", project_key=slug, sender_name="BlueLake", to=["GreenCastle"], subject="Standup",
                     body_md="TODO: the oldest action", ack_required=True)["message"]
        for n in range(1, DIGESTED + 1):
            post("send_message", project_key=slug, sender_name="GreenCastle", to=["BlueLake"], subject="Re: Standup",
                 body_md=f"- point {n}", thread_id=first["thread_id"])
        summary = api.get("/api/summarize_thread", params={"project_key": slug, "thread_id": first["thread_id"]}).json()
    assert (summary["subject"], summary["message_count"]) == ("Standup", DIGESTED + 1)
    assert summary["participants"] == ["BlueLake", "GreenCastle"] and summary["first_ts"] == first["created_ts"]
    assert summary["key_points"][:2] == ["GreenCastle: point 1", "GreenCastle: point 2"]
    assert summary["action_items"] == [] and summary["open_acks"] == []
