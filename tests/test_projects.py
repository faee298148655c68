import pytest

from chalicelib import invoke
from chalicelib.config import get_settings
from chalicelib.errors import InvalidArgument, NotFound
from chalicelib.security import auth
from chalicelib.tools import tools_by_name

pytestmark = pytest.mark.both_backends


def test_ensure_project_is_idempotent_and_slugged(call):
    first = call("ensure_project", human_key="/home/me/My Repo/")
    again = call("ensure_project", human_key="/home/me/My Repo")
    assert first == again
    assert first["slug"] == "home-me-my-repo"
    assert first["human_key"] == "/home/me/My Repo"


def test_relative_path_is_refused_with_a_hint(call):
    with pytest.raises(InvalidArgument, match="not an absolute path"):
        call("ensure_project", human_key="my-repo")


def test_a_human_key_answered_is_one_every_tool_takes_back(call):
    """NFC makes U+0958 two characters: a key typed in 1,003 was stored and answered in 2,003,
    which every project_key refused (at most 1,024) (QA, session 32). Measured once normalised."""
    longest = call("ensure_project", human_key="/w/" + "\u0958" * 510)["human_key"]
    assert len(longest) == 1023 and call("get_project", project_key=longest)["human_key"] == longest
    with pytest.raises(InvalidArgument, match="is 1025 characters once normalised .* over the 1024") as refused:
        call("ensure_project", human_key="/w/" + "\u0958" * 511)
    assert refused.value.status == 422
    with pytest.raises(InvalidArgument, match="once normalised"):
        call("macro_start_session", human_key="/w/" + "\u0958" * 1000, program="p", model="m")
    assert [p["human_key"] for p in call("list_projects")["projects"]] == [longest]  # nothing else made


def test_project_key_accepts_slug_or_human_key(call):
    call("ensure_project", human_key="/srv/app")
    assert call("get_project", project_key="srv-app")["human_key"] == "/srv/app"
    assert call("get_project", project_key="/srv/app/")["slug"] == "srv-app"


def test_get_project_counts_agents_and_messages(call, project):
    call("send_message", project_key=project, sender_name="BlueLake", to=["RedStone"], subject="hi", body_md="x")
    details = call("get_project", project_key=project)
    assert (details["agents"], details["messages"]) == (3, 1)


def test_list_projects(call):
    for path in ("/a/one", "/a/two"):
        call("ensure_project", human_key=path)
    assert [p["slug"] for p in call("list_projects")["projects"]] == ["a-one", "a-two"]


def test_unknown_project_says_how_to_fix_it(call):
    with pytest.raises(NotFound) as info:
        call("get_project", project_key="nope")
    assert "nope" in info.value.message and "ensure_project" in info.value.hint


@pytest.mark.parametrize("home, asked", [("/home/me/shop", "/home/me/shop/src/api/"), ("C:\\Users\\me\\shop", "c:/Users/me/shop/src")])
def test_a_folder_inside_a_project_is_pointed_to_the_project(call, home, asked):
    """An agent started in a subfolder: ensure_project (the old hint) would split it from its team."""
    slug = call("ensure_project", human_key=home)["slug"]
    with pytest.raises(NotFound) as info:
        call("get_project", project_key=asked)
    assert f"inside project {slug!r} ({home})" in info.value.hint and "not a folder below it" in info.value.hint


def test_a_mistyped_slug_is_pointed_to_the_slug(call):
    call("ensure_project", human_key="/srv/web-app")
    with pytest.raises(NotFound) as info:
        call("get_project", project_key="Srv-Web-App ")
    assert info.value.hint.startswith("Did you mean 'srv-web-app'?")


def test_a_project_made_inside_another_says_so(call):
    """An agent started in a subfolder got a project of its own, apart from its team, silently."""
    call("ensure_project", human_key="/home/me/shop")
    nested = call("ensure_project", human_key="/home/me/shop/src")
    assert nested["slug"] == "home-me-shop-src"
    assert "inside project 'home-me-shop' (/home/me/shop)" in nested["note"] and "project_key='home-me-shop'" in nested["note"]
    assert "(archive_project this one)" in nested["note"]
    assert call("ensure_project", human_key="/home/me/shop/src")["note"] is None  # said once, when made
    assert call("ensure_project", human_key="/home/me/elsewhere")["note"] is None
    started = call("macro_start_session", human_key="/home/me/shop/docs", program="p", model="m")
    assert "inside project 'home-me-shop'" in started["note"] and "note" not in started["project"]


@pytest.mark.parametrize("root, under", [("/", "/home/me/shop"), ("C:\\", "C:\\Users\\me\\shop")])
def test_the_filesystem_root_holds_no_project_as_its_folder(call, root, under):
    """QA session 36: after ensure_project('/') (slug root) every new project's note said "Created ...
    inside project 'root' (/)", and every path not found was pointed to it. A root is no repository
    around another: it stays a project (an agent started there), never the one a path is inside."""
    assert call("ensure_project", human_key=root)["note"] is None
    assert call("ensure_project", human_key=under)["note"] is None
    with pytest.raises(NotFound) as missing:
        call("get_project", project_key=under + "x")
    assert "inside project" not in missing.value.hint
    assert "inside project" in call("ensure_project", human_key=under + "/src")["note"]  # a real one still is


def test_the_note_of_a_project_inside_another_names_archive_project_only_to_whom_may_call_it(call, settings, monkeypatch):
    """archive_project is the admin's and only the full TOOLS_PROFILE lists it: the note sends others to the overseer."""
    call("ensure_project", human_key="/home/me/shop")
    writer = auth.scoped("bearer", "bearer:writer", None, "writer")
    for n, (profile, principal) in enumerate([("minimal", None), ("core", None), ("full", writer)]):
        monkeypatch.setenv("TOOLS_PROFILE", profile)  # what the tools' notes read (get_settings)
        get_settings.cache_clear()
        try:
            note = invoke.call(tools_by_name()["ensure_project"], {"human_key": f"/home/me/shop/part{n}"}, settings, principal).note
        finally:
            get_settings.cache_clear()
        assert "archive_project" not in note and "(your human overseer can archive this one)" in note, profile
