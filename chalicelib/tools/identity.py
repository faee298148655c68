"""Agent identity tokens: rotation (issuing is register_agent's; checking is invoke.py's)."""

import sqlite3

from pydantic import Field

from ..security.agent_tokens import issue_token
from ..fields import AgentName, ProjectKey
from ..registry import Input, Output, tool
from .agents import find_agent
from .projects import find_project


class RotateAgentTokenInput(Input):
    project_key: ProjectKey
    agent_name: AgentName


class AgentToken(Output):
    project: str
    agent_name: str
    registration_token: str = Field(description="The agent's new secret token, shown only this once; the old one stops working.")


def rotate_agent_token(db: sqlite3.Connection, args: RotateAgentTokenInput) -> AgentToken:
    """Replace an agent's registration_token with a new one (pass the current one as
    registration_token). The new token is shown only in this answer."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    return AgentToken(project=project["slug"], agent_name=agent["name"], registration_token=issue_token(db, agent["id"]))


TOOLS = [tool(rotate_agent_token, acts_as="agent_name", destructive=True)]
