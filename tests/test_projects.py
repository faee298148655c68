import pytest

from chalicelib.errors import InvalidArgument, NotFound

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
