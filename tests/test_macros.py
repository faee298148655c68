"""Macros: one call doing the work of several, in one transaction."""

import asyncio

import pytest
from mcp import Client

from chalicelib import invoke
from chalicelib.errors import InvalidArgument, NotFound
from chalicelib.tools import macros, tools_by_name
from tests.sql import write_lock_free

pytestmark = pytest.mark.both_backends

TOOLS = tools_by_name()


def test_start_session_registers_reserves_and_reads(call, project):
    call("send_message", project_key=project, sender_name="BlueLake", to=["RedStone"], subject="Welcome", body_md="hi")
    started = call(
        "macro_start_session", human_key="/work/demo", program="codex", model="gpt-5", agent_name="RedStone",
        file_reservation_paths=["src/**"], file_reservation_reason="FEAT-1",
    )
    assert started["project"]["slug"] == project
    assert (started["agent"]["name"], started["agent"]["program"]) == ("RedStone", "codex")
    assert [g["path_pattern"] for g in started["file_reservations"]["granted"]] == ["src/**"]
    assert [m["subject"] for m in started["inbox"]] == ["Welcome"]


def test_start_session_for_a_new_agent_in_a_new_project(call):
    started = call("macro_start_session", human_key="/brand/new", program="p", model="m", inbox_limit=0)
    assert started["project"]["slug"] == "brand-new"
    assert started["agent"]["name"] and started["inbox"] == [] and started["file_reservations"] is None


def test_a_failing_macro_changes_nothing(call, project):
    with pytest.raises(NotFound):
        call("macro_prepare_thread", project_key=project, thread_id="nope", program="p", model="m", agent_name="NewOne")
    assert "NewOne" not in [a["name"] for a in call("list_agents", project_key=project)["agents"]]


def test_prepare_thread(call, project):
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Plan",
         body_md="- [ ] write tests", thread_id="T-1")
    prepared = call("macro_prepare_thread", project_key=project, thread_id="T-1", program="p", model="m",
                    agent_name="GreenCastle", include_inbox_bodies=True)
    assert prepared["thread"]["action_items"] == ["BlueLake: write tests"]
    assert prepared["inbox"][0]["body_md"] == "- [ ] write tests"


def test_prepare_thread_without_agent_name_says_it_created_a_new_agent(call, project):
    """An agent that left out its name silently became someone else, with someone else's inbox."""
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Plan", body_md="x",
         thread_id="T-1")
    fresh = call("macro_prepare_thread", project_key=project, thread_id="T-1", program="p", model="m")
    name = fresh["agent"]["name"]
    assert name not in ("BlueLake", "GreenCastle", "RedStone")
    assert f"created a new agent, {name}" in fresh["note"] and "agent_name=" in fresh["note"]
    mine = call("macro_prepare_thread", project_key=project, thread_id="T-1", program="p", model="m", agent_name="GreenCastle")
    assert mine["note"] is None and [m["subject"] for m in mine["inbox"]] == ["Plan"]
    schema = TOOLS["macro_prepare_thread"].input.model_json_schema()
    assert "NEW agent" in schema["properties"]["agent_name"]["description"]


def test_a_new_name_close_to_an_existing_one_makes_that_agent_and_says_so(call, project):
    """QA session 33: "CrimsonLar" for CrimsonLark quietly made a second identity (empty inbox, new token,
    note null), and the agent carried on as a stranger. It is still made (a new name is a new agent), with
    a note naming the close existing ones."""
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Plan", body_md="x",
         thread_id="T-1")
    made = call("register_agent", project_key=project, program="p", model="m", agent_name="BlueLak")
    assert made["name"] == "BlueLak" and made["registration_token"]
    assert "No agent was named BlueLak, so this created it" in made["note"] and "Did you mean 'BlueLake'?" in made["note"]
    started = call("macro_start_session", human_key="/work/demo", program="p", model="m", agent_name="GreenCastl")
    assert started["agent"]["name"] == "GreenCastl" and "Did you mean 'GreenCastle'?" in started["note"]
    joined = call("macro_prepare_thread", project_key=project, thread_id="T-1", program="p", model="m", agent_name="RedSton")
    assert "Did you mean 'RedStone'?" in joined["note"]
    assert call("register_agent", project_key=project, program="p", model="m", agent_name="QuietOtter")["note"] is None
    assert call("macro_start_session", human_key="/work/demo", program="p", model="m", agent_name="BlueLake")["note"] is None


def test_file_reservation_cycle_reports_conflicts_and_can_release(call, project):
    call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=["src/app.py"])
    cycle = call("macro_file_reservation_cycle", project_key=project, agent_name="GreenCastle", paths=["src/**"],
                 auto_release=True)
    [conflict] = cycle["file_reservations"]["conflicts"]
    assert [holder["agent"] for holder in conflict["holders"]] == ["BlueLake"]
    assert cycle["released"]["released"] == 1
    active = call("list_file_reservations", project_key=project)["file_reservations"]
    assert [r["agent"] for r in active] == ["BlueLake"]


def test_a_reservation_cycle_leaves_what_the_agent_held_as_it_was(call, project):
    """auto_release released the agent's own earlier lease of the same path (renewed it with the
    cycle's ttl, flag and reason, then ended it): a conflict check cost it its reservation."""
    [held] = call("file_reservation_paths", project_key=project, agent_name="GreenCastle", paths=["long/held.py"],
                  ttl_seconds=86400, reason="long task")["granted"]
    cycle = call("macro_file_reservation_cycle", project_key=project, agent_name="GreenCastle",
                 paths=["long/held.py", "new/one.py"], ttl_seconds=60, exclusive=False, auto_release=True)
    assert cycle["released"]["released"] == 1  # the new one only
    kept, new = sorted(cycle["file_reservations"]["granted"], key=lambda row: row["path_pattern"])
    assert kept == held and new["path_pattern"] == "new/one.py" and new["released_ts"]
    [active] = call("list_file_reservations", project_key=project)["file_reservations"]
    assert {key: active[key] for key in held} == held


def test_contact_handshake_with_welcome(call, project):
    for name in ("BlueLake", "GreenCastle"):
        call("set_contact_policy", project_key=project, agent_name=name, policy="contacts_only")
    target_token = call("rotate_agent_token", project_key=project, agent_name="GreenCastle")["registration_token"]
    shake = call("macro_contact_handshake", project_key=project, requester="BlueLake", target="GreenCastle",
                 reason="pairing", auto_accept=True, target_token=target_token, welcome_subject="Hello",
                 welcome_body="Let's pair")
    assert shake["response"]["status"] == "approved"
    assert shake["welcome"]["message"]["to"] == ["GreenCastle"]
    subjects = [m["subject"] for m in call("fetch_inbox", project_key=project, agent_name="GreenCastle")["messages"]]
    assert "Hello" in subjects
    for half in ({"welcome_subject": "Hi"}, {"welcome_body": "Hi"}):  # was taken, and no welcome sent, nothing said
        with pytest.raises(InvalidArgument, match="go together"):
            call("macro_contact_handshake", project_key=project, requester="BlueLake", target="GreenCastle", **half)


def test_macros_over_mcp(server):
    async def session():
        async with Client(f"{server}/mcp", mode="legacy") as client:
            result = await client.call_tool(
                "macro_start_session", {"human_key": "/macro/mcp", "program": "p", "model": "m", "inbox_limit": 5}
            )
            assert not result.is_error, result.content[0].text
            return result.structured_content

    started = asyncio.run(session())
    assert started["project"]["slug"] == "macro-mcp" and started["inbox"] == []


@pytest.mark.sqlite_only  # a replica runs one call at a time (docs/turso.md): the other write waits there
def test_prepare_thread_reads_before_its_write_while_other_writes_commit(call, project, settings, held):
    """Security review, session 16: the summary (up to 500 bodies digested) was read inside the
    write that registers the agent, and other clients' writes waited 1.9 s (p50) behind it."""
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Plan",
         body_md="- [ ] write tests", thread_id="T-1")
    started, go_on, threads = held(macros, "summarize_thread")
    prepare = {"project_key": project, "thread_id": "T-1", "program": "p", "model": "m", "agent_name": "GreenCastle"}
    send = {"project_key": project, "sender_name": "RedStone", "to": ["BlueLake"], "subject": "meanwhile", "body_md": "b"}

    async def meanwhile():
        preparing = asyncio.ensure_future(invoke.acall(TOOLS["macro_prepare_thread"], prepare, settings))
        assert await asyncio.to_thread(started.wait, 10)
        await invoke.acall(TOOLS["send_message"], send, settings)
        reading = not preparing.done()
        go_on.set()
        return reading, await preparing

    reading, prepared = asyncio.run(meanwhile())
    assert reading  # the other write committed while the thread was being summarised
    assert "db-writer" not in threads and prepared.thread.action_items == ["BlueLake: write tests"]
    assert [m.subject for m in prepared.inbox] == ["Plan"]


def test_prepare_thread_in_one_batch_of_writes_with_a_send(call, project, settings):
    """Its summary was read inside the batch, after a send's deferred upkeep: a 500 ("an aggregate
    was read in a write transaction before its deferred upkeep was applied"), seen under load."""
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Plan", body_md="x",
         thread_id="T-1")
    send = {"project_key": project, "sender_name": "BlueLake", "to": ["GreenCastle"], "subject": "more", "body_md": "y",
            "thread_id": "T-1"}
    prepare = {"project_key": project, "thread_id": "T-1", "program": "p", "model": "m", "agent_name": "GreenCastle"}

    async def together():
        return await asyncio.gather(*(invoke.acall(TOOLS[tool], arguments, settings)
                                      for tool, arguments in [("send_message", send), ("macro_prepare_thread", prepare)] * 3))

    for _ in range(3):
        *_, prepared = asyncio.run(together())
        assert prepared.thread.subject == "Plan"


@pytest.mark.sqlite_only
def test_prepare_thread_reads_without_the_write_lock_in_a_synchronous_call(call, project, settings, monkeypatch):
    """Chalice and the CLI write in BEGIN IMMEDIATE: the summary was read holding SQLite's write lock."""
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Plan", body_md="x",
         thread_id="T-1")
    lock_free = []

    def probe(*args, real=macros.summarize_thread):
        lock_free.append(write_lock_free(settings))
        return real(*args)

    monkeypatch.setattr(macros, "summarize_thread", probe)
    prepared = call("macro_prepare_thread", project_key=project, thread_id="T-1", program="p", model="m", agent_name="GreenCastle")
    assert lock_free == [True] and prepared["thread"]["subject"] == "Plan"


def test_a_newcomer_joins_a_thread_it_has_no_mail_in(call, project):
    """A new (or not yet addressed) agent joining a thread: the macro failed with 'Thread not
    found among the reader's mail' (hint: list_threads, which lists it) and created no one."""
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Plan", body_md="x",
         thread_id="T-1")
    joined = call("macro_prepare_thread", project_key=project, thread_id="T-1", program="p", model="m", agent_name="NewGuy")
    assert joined["agent"]["name"] == "NewGuy" and joined["thread"] is None and joined["inbox"] == []
    assert "NewGuy has no messages in thread 'T-1'" in joined["note"] and "cc you" in joined["note"]
    assert call("whois", project_key=project, agent_name="NewGuy")["name"] == "NewGuy"  # registered
    for name in (None, "Newer"):  # a thread the project does not have stays a 404 (a typo), and registers no one
        with pytest.raises(NotFound, match="Thread 'T-404' not found"):  # the thread's 404, not the new name's
            call("macro_prepare_thread", project_key=project, thread_id="T-404", program="p", model="m",
                 **({"agent_name": name} if name else {}))
    assert "Newer" not in [a["name"] for a in call("list_agents", project_key=project)["agents"]]


@pytest.mark.sqlite_only
def test_prepare_thread_says_when_bodies_left_part_of_the_inbox_out(call, project):
    """With include_inbox_bodies, an inbox page ends at ~4 MiB of bodies: the macro cut it short
    and said nothing (no note, no cursor)."""
    for n in range(18):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"m{n}",
             body_md="x" * 250_000, thread_id="T-1")
    prepared = call("macro_prepare_thread", project_key=project, thread_id="T-1", program="p", model="m",
                    agent_name="GreenCastle", inbox_limit=18, include_inbox_bodies=True)
    shown = len(prepared["inbox"])
    assert 0 < shown < 18 and f"more than the {shown} messages" in prepared["note"] and "fetch_inbox with cursor=" in prepared["note"]
    unnoted = call("macro_prepare_thread", project_key=project, thread_id="T-1", program="p", model="m",
                   agent_name="GreenCastle", inbox_limit=10, include_inbox_bodies=True)
    assert len(unnoted["inbox"]) == 10 and unnoted["note"] is None


def test_an_argument_under_another_tools_name_gets_this_tools_name(call, project):
    """request_contact says to_agent, macro_contact_handshake target; unified_inbox pages with
    before_id, the rest with cursor: an agent used to the one got only "Extra inputs"."""
    from chalicelib.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match=r"to_agent: Extra inputs are not permitted \(this tool calls it 'target'\)"):
        call("macro_contact_handshake", project_key=project, agent_name="BlueLake", to_agent="GreenCastle")
    with pytest.raises(InvalidArgument, match=r"cursor: Extra inputs are not permitted \(this tool calls it 'before_id'\)"):
        call("unified_inbox", cursor="123")
