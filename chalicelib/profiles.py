"""TOOLS_PROFILE: which tools MCP tools/list offers (every tool stays callable, and on REST).
50+ schemas cost an agent tens of thousands of context tokens per session; most sessions need a
dozen tools (bench/tools_list.py measures each profile). A module free of imports: the stdio
server words its instructions for the profile before it loads the tools (transports/stdio.py).

A profile is whole: what its tools' answers, notices and refusals send an agent to do next, and
what its instructions name, it lists (an MCP host lets its model call listed tools only; a
contact request that could not be answered left two new agents unable to write to each other).
"""

MINIMAL = (
    "macro_start_session", "send_message", "reply_message", "fetch_inbox", "wait_for_mail", "acknowledge_message",
    "list_agents", "request_contact", "respond_contact",
)
CORE = MINIMAL + (
    "get_message", "get_thread", "list_threads", "search_messages", "file_reservation_paths", "release_file_reservations",
)
PROFILES = {"minimal": MINIMAL, "core": CORE}


def listed_names(profile: str) -> frozenset[str] | None:
    """The tool names a profile lists; None for "full" (all of them)."""
    return frozenset(PROFILES[profile]) if profile in PROFILES else None


def offered(*tools: str) -> list[str]:
    """Those of `tools` this server's TOOLS_PROFILE lists and the caller's role may call, in order: the
    ones a hint may name (fetch_outbox beside fetch_inbox), so that every tool it names can be called
    (an admin-only one named to a writer would get a 403)."""
    from .config import get_settings  # (not above: the stdio server imports this module before any settings)
    from .security.scopes import may_call

    listed = listed_names(get_settings().tools_profile)
    return [tool for tool in tools if (listed is None or tool in listed) and may_call(tool)]


def either(*tools: str) -> str:
    """The offered ones of `tools` as words: "a, b or c"."""
    shown = offered(*tools)
    return " or ".join(filter(None, (", ".join(shown[:-1]), shown[-1]))) if shown else ""
