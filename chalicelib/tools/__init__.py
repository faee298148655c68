"""Every tool group; the registry is the concatenation of their TOOLS lists."""

from . import agents, build_slots, contacts, health, macros, messages, products, projects, reservations, search, threads

TOOLS = [
    *health.TOOLS,
    *projects.TOOLS,
    *agents.TOOLS,
    *messages.TOOLS,
    *threads.TOOLS,
    *search.TOOLS,
    *contacts.TOOLS,
    *reservations.TOOLS,
    *build_slots.TOOLS,
    *products.TOOLS,
    *macros.TOOLS,
]
