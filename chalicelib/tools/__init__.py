"""Every tool group; the registry is the concatenation of their TOOLS lists."""

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


# TOOLS_PROFILE: which tools MCP tools/list offers (every tool stays callable, and on REST).
# 50+ schemas cost an agent tens of thousands of context tokens per session; most sessions
# need a dozen tools (bench/tools_list.py measures each profile).
MINIMAL = (
    "macro_start_session", "send_message", "reply_message", "fetch_inbox", "wait_for_mail", "acknowledge_message",
)
CORE = MINIMAL + (
    "get_message", "get_thread", "search_messages", "list_agents", "request_contact", "file_reservation_paths",
    "release_file_reservations",
)
PROFILES = {"minimal": MINIMAL, "core": CORE}


def profile_tools(profile: str) -> list:
    """The tools a profile lists: all of them for "full"."""
    if profile not in PROFILES:
        return TOOLS
    return [tool for tool in TOOLS if tool.name in PROFILES[profile]]


_by_name = {t.name: t for t in TOOLS}


def tools_by_name() -> dict:
    return _by_name
