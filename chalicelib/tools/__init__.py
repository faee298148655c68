"""Every tool group; the registry is the concatenation of their TOOLS lists."""

from ..profiles import CORE, MINIMAL, listed_names  # noqa: F401 (CORE, MINIMAL: here too, beside the tools)
from . import agents, archive, attachments, build_slots, contacts, health, identity, macros, mailbox, messages, overseer, products, projects, reservations, retention, search, threads

TOOLS = [
    *health.TOOLS,
    *projects.TOOLS,
    *agents.TOOLS,
    *identity.TOOLS,
    *messages.TOOLS,
    *attachments.TOOLS,
    *mailbox.TOOLS,
    *threads.TOOLS,
    *search.TOOLS,
    *contacts.TOOLS,
    *reservations.TOOLS,
    *build_slots.TOOLS,
    *products.TOOLS,
    *macros.TOOLS,
    *retention.TOOLS,
    *archive.TOOLS,
    *overseer.TOOLS,
]


def all_tools() -> list:
    return TOOLS


def profile_tools(profile: str) -> list:
    """The tools a profile lists: all of them for "full"."""
    listed = listed_names(profile)
    return TOOLS if listed is None else [tool for tool in TOOLS if tool.name in listed]


_by_name = {t.name: t for t in TOOLS}


def tools_by_name() -> dict:
    return _by_name
