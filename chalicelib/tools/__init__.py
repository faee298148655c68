"""Every tool group; the registry is the concatenation of their TOOLS lists."""

from . import agents, archive, build_slots, contacts, health, identity, macros, mailbox, messages, products, projects, reservations, search, threads

TOOLS = [
    *health.TOOLS,
    *projects.TOOLS,
    *agents.TOOLS,
    *identity.TOOLS,
    *messages.TOOLS,
    *mailbox.TOOLS,
    *threads.TOOLS,
    *search.TOOLS,
    *contacts.TOOLS,
    *reservations.TOOLS,
    *build_slots.TOOLS,
    *products.TOOLS,
    *macros.TOOLS,
    *archive.TOOLS,
]


def all_tools() -> list:
    return TOOLS


_by_name = {t.name: t for t in TOOLS}


def tools_by_name() -> dict:
    return _by_name
