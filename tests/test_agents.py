import re

import pytest

from chalicelib.errors import InvalidArgument, NotFound

pytestmark = pytest.mark.both_backends


def test_register_with_a_name_then_update_profile(call, project):
    before = call("whois", project_key=project, agent_name="BlueLake")
    updated = call(
        "register_agent", project_key=project, program="codex", model="gpt-5", name="BlueLake", task_description="db"
    )
    assert (updated["program"], updated["model"], updated["task_description"]) == ("codex", "gpt-5", "db")
    assert updated["inception_ts"] == before["inception_ts"]
    assert updated["last_active_ts"] > before["last_active_ts"]
    assert len(call("list_agents", project_key=project)["agents"]) == 3


def test_list_agents_looks_up_several_names_in_one_call(call, project):
    """names: those of them there are (any case), a retired one only with include_retired, a page
    at a time as without names; another project's agent of the same name is not among them."""
    call("ensure_project", human_key="/work/other")
    call("register_agent", project_key="work-other", program="p", model="m", name="PinkDog")
    call("retire_agent", project_key=project, agent_name="RedStone")

    def named(names, **options):
        return [agent["name"] for agent in call("list_agents", project_key=project, names=names, **options)["agents"]]

    assert named(["greencastle", "PinkDog", "RedStone", "BlueLake", "bluelake"]) == ["BlueLake", "GreenCastle"]
    assert named(["RedStone", "BlueLake"], include_retired=True) == ["BlueLake", "RedStone"]
    page = call("list_agents", project_key=project, names=["RedStone", "BlueLake", "GreenCastle"], include_retired=True, limit=2)
    assert [agent["name"] for agent in page["agents"]] == ["BlueLake", "GreenCastle"] and page["next_cursor"]
    assert named(["RedStone", "BlueLake", "GreenCastle"], include_retired=True, cursor=page["next_cursor"]) == ["RedStone"]
    with pytest.raises(InvalidArgument):
        call("list_agents", project_key=project, names=[])


def test_registering_again_keeps_the_task_description_unless_given(call, project):
    call("register_agent", project_key=project, program="codex", model="gpt-5", name="BlueLake", task_description="db")
    call("register_agent", project_key=project, program="codex", model="gpt-5", name="BlueLake")
    call("macro_start_session", human_key="/work/demo", program="codex", model="gpt-5", agent_name="BlueLake")
    call("send_message", project_key=project, sender_name="BlueLake", to=["RedStone"], subject="a", body_md="", thread_id="T-1")
    call("macro_prepare_thread", project_key=project, thread_id="T-1", program="codex", model="gpt-5", agent_name="BlueLake")
    assert call("whois", project_key=project, agent_name="BlueLake")["task_description"] == "db"
    cleared = call("register_agent", project_key=project, program="codex", model="gpt-5", name="BlueLake", task_description="")
    assert cleared["task_description"] == ""


def test_register_without_name_gets_a_memorable_fresh_name(call, project):
    names = {call("register_agent", project_key=project, program="p", model="m")["name"] for _ in range(5)}
    assert len(names) == 5
    assert all(re.fullmatch(r"[A-Z][a-z]+[A-Z][a-z]+", name) for name in names)


def test_names_are_case_insensitive(call, project):
    assert call("whois", project_key=project, agent_name="bluelake")["name"] == "BlueLake"


def test_create_agent_identity_never_reuses_a_name(call, project):
    taken = call("create_agent_identity", project_key=project, program="p", model="m", name_hint="BlueLake")
    assert taken["name"] != "BlueLake"
    free = call("create_agent_identity", project_key=project, program="p", model="m", name_hint="QuietOwl")
    assert free["name"] == "QuietOwl"


@pytest.mark.parametrize("bad", ["x", "has space", "../etc", "1abc", "a" * 65, "Émile"])
def test_invalid_names_get_a_helpful_error(call, project, bad):
    with pytest.raises(InvalidArgument) as info:
        call("register_agent", project_key=project, program="p", model="m", name=bad)
    assert "GreenCastle" in info.value.message  # the rule comes with an example


def test_whois_counts_messages(call, project):
    call("send_message", project_key=project, sender_name="BlueLake", to=["RedStone"], subject="a", body_md="")
    call("send_message", project_key=project, sender_name="RedStone", to=["BlueLake"], subject="b", body_md="")
    profile = call("whois", project_key=project, agent_name="BlueLake")
    assert (profile["messages_sent"], profile["messages_received"], profile["unread"]) == (1, 1, 1)


def test_unknown_agent_is_named_in_the_error(call, project):
    with pytest.raises(NotFound, match="Nobody"):
        call("whois", project_key=project, agent_name="Nobody")


@pytest.mark.sqlite_only
def test_many_unknown_recipients_read_the_names_once_and_get_a_few_guesses(call, project, request, monkeypatch):
    """Each unknown recipient read the project's names (up to 5,000) and ran difflib over them, in
    the writer: a send naming 300 unknown agents held every client's writes for 3.5 s."""
    import difflib

    real, compared = difflib.get_close_matches, []  # (the real one, counted)
    monkeypatch.setattr(difflib, "get_close_matches", lambda word, *args, **kwargs: compared.append(word) or real(word, *args, **kwargs))
    unknown = ["BlueLak", "GreenCastl", "RedSton", *(f"Nobody{n}" for n in range(296)), "Ghost@work-demo"]
    statements = request.getfixturevalue("traced")
    with pytest.raises(NotFound) as info:
        call("send_message", project_key=project, sender_name="BlueLake", to=unknown[:100], cc=unknown[100:200],
             bcc=unknown[200:], subject="s", body_md="b")
    message = info.value.message
    assert all(name.partition("@")[0] in message for name in unknown)  # every one is named
    assert message.endswith("Did you mean 'BlueLake'? Did you mean 'GreenCastle'? Did you mean 'RedStone'?"
                            " (No guesses for the other 297.)")
    assert compared == ["BlueLak", "GreenCastl", "RedSton"]
    assert len([s for s in statements if s.startswith("SELECT name FROM agents")]) == 1


def test_a_big_projects_did_you_mean_looks_among_the_names_of_its_first_letter(call, project, monkeypatch):
    """difflib over a project's 5,000 names took ~18 ms inside the write of each new agent's
    registration: past NEAR_MISS_NAMES agents the guess chooses among those sharing its first letter."""
    from chalicelib.tools import agents

    def note(name: str) -> str:
        return call("register_agent", project_key=project, program="p", model="m", name=name).get("note") or ""

    assert "Did you mean 'GreenCastle'" in note("GreenCastel")  # 4 agents: all of them
    assert "'GreenCastle'" in note("ReenCastle")  # (a typo in the first letter)
    monkeypatch.setattr(agents, "NEAR_MISS_NAMES", 4)  # the project has 6 agents now
    assert "'GreenCastle'" in note("greenCastl")  # its letter, any case
    assert "GreenCastle" not in note("ReenCastl") and "RedStone" in note("RedStonr")  # only R's
    with pytest.raises(NotFound, match="Did you mean 'BlueLake'"):
        call("send_message", project_key=project, sender_name="BlueLake", to=["BlueLak"], subject="s", body_md="b")
