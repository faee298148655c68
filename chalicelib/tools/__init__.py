"""Every tool group; the registry is the concatenation of their TOOLS lists."""

from . import agents, archive, attachments, build_slots, contacts, health, identity, macros, messages, overseer, products, projects, reservations, retention, search, threads

TOOLS = [
    *health.TOOLS,
    *projects.TOOLS,
    *agents.TOOLS,
    *identity.TOOLS,
    *messages.TOOLS,
    *attachments.TOOLS,
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


_by_name = {t.name: t for t in TOOLS}


def tools_by_name() -> dict:
    return _by_name
