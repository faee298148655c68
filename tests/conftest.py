import pytest

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.registry import tools_by_name

from .servers import running_server

TOOLS = tools_by_name()


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/agent_mail.db")


@pytest.fixture
def call(settings):
    """call("send_message", project_key=..., ...) -> the output as JSON-ready dict."""

    def call(tool_name: str, /, **arguments):
        return invoke.call(TOOLS[tool_name], arguments, settings).model_dump(mode="json")

    return call


@pytest.fixture
def project(call):
    """A project with three agents that accept anyone's messages: BlueLake, GreenCastle, RedStone.
    (Contact policies are tested in test_contacts.py, on agents that keep the default.)"""
    call("ensure_project", human_key="/work/demo")
    for name in ("BlueLake", "GreenCastle", "RedStone"):
        call("register_agent", project_key="work-demo", program="claude-code", model="opus", name=name)
        call("set_contact_policy", project_key="work-demo", agent_name=name, policy="open")
    return "work-demo"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real uvicorn server on a fresh database, shared by a test module."""
    with running_server(tmp_path_factory.mktemp("server") / "agent_mail.db") as url:
        yield url
