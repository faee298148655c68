"""Every tool group; the registry is the concatenation of their TOOLS lists."""

from . import agents, health, messages, projects, search, threads

TOOLS = [*health.TOOLS, *projects.TOOLS, *agents.TOOLS, *messages.TOOLS, *threads.TOOLS, *search.TOOLS]
