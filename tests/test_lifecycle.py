"""Retiring agents and archiving projects, in process (real SQLite file, every tool through invoke)."""

import pytest

from chalicelib import clock, invoke
from chalicelib.config import get_settings
from chalicelib.errors import Conflict
from chalicelib.security import auth
from chalicelib.tools import tools_by_name
from chalicelib.ids import new_id, stable_id
from chalicelib.tools.agents import agent_id
from chalicelib.clock import later

from .sql import sql

pytestmark = pytest.mark.both_backends

TEAM = "work-team"


@pytest.fixture
def team(call):
    """A project of three agents that accept anyone's messages."""
    call("ensure_project", human_key="/work/team")
    for name in ("BlueLake", "GreenCastle", "RedStone"):
        call("register_agent", project_key=TEAM, program="claude-code", model="opus", name=name)
        call("set_contact_policy", project_key=TEAM, agent_name=name, policy="open")
    return TEAM


def count_messages(settings) -> int:
    with sql(settings) as conn:
        return conn.execute("SELECT count(*) FROM messages").fetchone()[0]


def names(call, **options):
    return [agent["name"] for agent in call("list_agents", project_key=TEAM, **options)["agents"]]


def test_sending_to_retired_agents_says_so_in_good_english(call, team, send):
    call("retire_agent", project_key=team, agent_name="RedStone")
    with pytest.raises(Conflict) as one:
        send("BlueLake", ["RedStone"])
    assert one.value.message == "Not sent: RedStone is retired and gets no new mail."
    call("retire_agent", project_key=team, agent_name="GreenCastle")
    with pytest.raises(Conflict) as two:
        send("BlueLake", ["RedStone", "GreenCastle"])
    assert two.value.message == "Not sent: RedStone, GreenCastle are retired and get no new mail."


def test_a_retired_agent_gets_no_mail_and_sends_none(call, team, send, settings):
    retired = call("retire_agent", project_key=team, agent_name="RedStone")
    assert retired["retired_ts"] and retired["released_file_reservations"] == 0
    again = call("retire_agent", project_key=team, agent_name="RedStone")
    assert again["retired_ts"] == retired["retired_ts"]  # idempotent: the first time is kept

    with pytest.raises(Conflict, match="RedStone is retired") as info:
        send("BlueLake", ["GreenCastle"], cc=["RedStone"])
    assert "list_agents" in info.value.hint
    assert count_messages(settings) == 0  # not even GreenCastle's copy
    with pytest.raises(Conflict, match="RedStone is retired") as info:
        send("RedStone", ["BlueLake"])
    assert "unretire_agent" in info.value.hint
    with pytest.raises(Conflict, match="retired"):
        call("request_contact", project_key=team, from_agent="BlueLake", to_agent="RedStone")

    assert call("whois", project_key=team, agent_name="RedStone")["retired_ts"] == retired["retired_ts"]
    profile = call("register_agent", project_key=team, program="codex", model="gpt", name="RedStone")
    assert profile["retired_ts"] == retired["retired_ts"]  # a new session does not unretire it by accident
    assert names(call) == ["BlueLake", "GreenCastle"]
    assert names(call, include_retired=True) == ["BlueLake", "GreenCastle", "RedStone"]

    assert call("unretire_agent", project_key=team, agent_name="RedStone")["retired_ts"] is None
    send("BlueLake", ["RedStone"])
    send("RedStone", ["BlueLake"])
    assert count_messages(settings) == 2


def test_retiring_releases_active_file_reservations(call, team, settings):
    project_id, now = stable_id("project", "/work/team"), clock.now()
    rows = [("src/**", later(now, 3600), None), ("old/**", later(now, -1), None), ("docs/**", later(now, 3600), now)]
    with sql(settings) as conn:
        conn.executemany(
            "INSERT INTO file_reservations (id, project_id, agent_id, path_pattern, exclusive, created_ts, expires_ts,"
            " released_ts) VALUES (?, ?, ?, ?, 1, ?, ?, ?)",
            [(new_id(), project_id, agent_id(project_id, "BlueLake"), pattern, now, expires, released)
             for pattern, expires, released in rows],
        )
    assert call("retire_agent", project_key=team, agent_name="BlueLake")["released_file_reservations"] == 1
    with sql(settings) as conn:
        unreleased = [tuple(row) for row in conn.execute("SELECT path_pattern FROM file_reservations WHERE released_ts IS NULL")]
    assert unreleased == [("old/**",)]  # the expired one needed no release
    for tool, arguments in (("renew_file_reservations", {}), ("file_reservation_paths", {"paths": ["src/x.py"]})):
        with pytest.raises(Conflict, match="retired") as refused:  # renewing what retiring left over was taken
            call(tool, project_key=team, agent_name="BlueLake", **arguments)
        assert "unretire_agent" in refused.value.hint


def test_an_archived_project_is_hidden_and_read_only(call, team, send, settings):
    first = send("BlueLake", ["GreenCastle"])
    archived = call("archive_project", project_key=team)
    assert archived["archived_ts"]
    assert call("archive_project", project_key="/work/team")["archived_ts"] == archived["archived_ts"]

    assert call("list_projects")["projects"] == []
    assert [p["slug"] for p in call("list_projects", include_archived=True)["projects"]] == [team]
    assert call("get_project", project_key=team)["archived_ts"] == archived["archived_ts"]

    with pytest.raises(Conflict, match="archived") as info:
        send("BlueLake", ["GreenCastle"])
    assert "unarchive_project(project_key='work-team')" in info.value.hint
    with pytest.raises(Conflict, match="archived"):
        call("reply_message", project_key=team, message_id=first["id"], sender_name="GreenCastle", body_md="x")
    with pytest.raises(Conflict, match="archived"):
        call("register_agent", project_key=team, program="p", model="m")
    with pytest.raises(Conflict, match="archived"):
        call("request_contact", project_key=team, from_agent="BlueLake", to_agent="GreenCastle")
    with pytest.raises(Conflict, match="archived"):  # nor a new human sender (it made one)
        call("ensure_overseer", project_key=team, overseer_name="NewBoss")
    assert [agent["name"] for agent in call("list_agents", project_key=team)["agents"]] == ["BlueLake", "GreenCastle", "RedStone"]
    assert count_messages(settings) == 1

    # everything stays readable, and a reader may still mark what it has read
    [received] = call("fetch_inbox", project_key=team, agent_name="GreenCastle")["messages"]
    call("acknowledge_message", project_key=team, agent_name="GreenCastle", message_id=received["id"])
    assert call("search_messages", project_key=team, query="hi")["results"]

    assert call("unarchive_project", project_key=team)["archived_ts"] is None
    assert [p["slug"] for p in call("list_projects")["projects"]] == [team]
    send("BlueLake", ["GreenCastle"])


def test_no_message_into_an_archived_project_from_outside(call, team, send):
    call("ensure_project", human_key="/work/other")
    call("register_agent", project_key="work-other", program="p", model="m", name="PinkDog")
    call("archive_project", project_key=team)
    with pytest.raises(Conflict, match="BlueLake@work-team is in project 'work-team', which is archived"):
        send("PinkDog", ["BlueLake@work-team"], project="work-other")


def test_a_refusals_hint_names_unretire_and_unarchive_only_to_whom_may_call_them(call, team, send, settings, monkeypatch):
    """The refusals of a retired agent and of an archived project named unretire_agent and unarchive_project
    under every TOOLS_PROFILE, though only full lists them (an MCP host lets its model call listed tools only),
    and unarchive_project, the admin's, to a writer too: they send to the human overseer instead (the web UI)."""
    call("ensure_project", human_key="/work/other")
    call("register_agent", project_key="work-other", program="p", model="m", name="PinkDog")
    call("retire_agent", project_key=team, agent_name="RedStone")
    writer = auth.scoped("bearer", "bearer:writer", None, "writer")

    def hints(principal=None) -> list[str]:
        """The hints of a retired sender, a retired recipient, a project archived and one archived elsewhere."""
        said = []
        for sender, to, project in (("RedStone", ["BlueLake"], team), ("BlueLake", ["RedStone"], team),
                                    ("BlueLake", ["GreenCastle"], team), ("PinkDog", ["BlueLake@work-team"], "work-other")):
            if sender == "BlueLake" and to == ["GreenCastle"]:
                call("archive_project", project_key=team)
            arguments = dict(project_key=project, sender_name=sender, to=to, subject="Hello", body_md="hi")
            with pytest.raises(Conflict) as refused:
                invoke.call(tools_by_name()["send_message"], arguments, settings, principal)
            said.append(refused.value.hint)
        call("unarchive_project", project_key=team)
        return said

    def under(profile: str, principal=None) -> list[str]:
        monkeypatch.setenv("TOOLS_PROFILE", profile)  # what the tools' hints read (get_settings)
        get_settings.cache_clear()
        try:
            return hints(principal)
        finally:
            get_settings.cache_clear()

    assert under("full") == [
        "To send, first call unretire_agent(project_key='work-team', agent_name='RedStone').",
        "Leave them out (list_agents shows the active agents), or have them call unretire_agent.",
        "To use it again, call unarchive_project(project_key='work-team').",
        "Leave its agents out, or first call unarchive_project(project_key='work-team').",
    ]
    for profile in ("minimal", "core"):
        assert under(profile) == [
            "To send, first ask your human overseer to unretire RedStone (Unretire, in the web UI).",
            "Leave them out (list_agents shows the active agents), or ask your human overseer to unretire them"
            " (Unretire, in the web UI).",
            "To use it again, ask your human overseer to unarchive it (Unarchive, on the project's page in the web UI).",
            "Leave its agents out, or first ask your human overseer to unarchive it (Unarchive, on the project's page in the"
            " web UI).",
        ]
    written = under("full", writer)  # unarchive_project is the admin's: a writer's call of it gets a 403
    assert "unretire_agent(" in written[0] and "unarchive_project" not in " ".join(written[2:])
    assert "ask your human overseer to unarchive it" in written[2] and "ask your human overseer to unarchive it" in written[3]


def test_registering_a_retired_agent_says_it_is_retired_and_how_it_comes_back(call, team, settings, monkeypatch):
    """QA: register_agent (and macro_start_session) under a retired agent's name answered note null;
    only retired_ts told, and the agent's first send was refused. The note says it, with the 409's hint."""
    call("retire_agent", project_key=team, agent_name="RedStone")
    registered = call("register_agent", project_key=team, program="codex", model="gpt", name="RedStone")
    assert registered["note"].startswith("RedStone is retired (since ")
    assert registered["note"].endswith("To work as it again, first call unretire_agent(project_key='work-team',"
                                       " agent_name='RedStone'), or omit agent_name to register a new agent.")
    started = call("macro_start_session", human_key="/work/team", program="codex", model="gpt", agent_name="RedStone")
    assert started["note"] == started["agent"]["note"] and started["note"].startswith("RedStone is retired")
    assert call("register_agent", project_key=team, program="codex", model="gpt", name="BlueLake")["note"] is None
    monkeypatch.setenv("TOOLS_PROFILE", "minimal")  # unretire_agent not listed: the overseer's Unretire, as the 409 says
    get_settings.cache_clear()
    try:
        minimal = call("macro_start_session", human_key="/work/team", program="codex", model="gpt", agent_name="RedStone")
    finally:
        get_settings.cache_clear()
    assert "first ask your human overseer to unretire RedStone (Unretire, in the web UI)" in minimal["note"]
    assert "unretire_agent" not in minimal["note"]
