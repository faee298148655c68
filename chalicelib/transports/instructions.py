"""The server's MCP instructions: what an agent reads first, naming only the tools its
TOOLS_PROFILE lists (profiles.py). Free of heavy imports, so the stdio server can answer
`initialize` before it loads the MCP SDK (stdio.py)."""

from ..profiles import listed_names


def instructions(profile: str = "full") -> str:
    listed = listed_names(profile)

    def lists(*tools: str) -> bool:
        return listed is None or all(tool in listed for tool in tools)

    catch_up = [tool for tool in ("search_messages", "summarize_thread") if lists(tool)]
    return "".join(line for line, shown in (
        ("Agent Mail: mail and coordination between coding agents working on the same code.\n", True),
        ("Start a session: macro_start_session(human_key=<absolute path of your repo>, program, model)\n", True),
        ("(or ensure_project, then register_agent) ", lists("ensure_project", "register_agent")),
        ("and keep the agent name and registration_token it gives\n"
         "you: a server with authentication wants that token whenever you act or read as your agent\n"
         "(as registration_token; send_message and reply_message call it sender_token).\n"
         "Read fetch_inbox(project_key, agent_name); write with send_message / reply_message, one topic\n"
         "per thread_id; acknowledge_message when a message has ack_required. An agent you have not\n"
         "talked with may need to accept you first: request_contact, then wait for its respond_contact\n"
         "(agents of other projects are Name@project).\n", True),
        ("Before editing files, file_reservation_paths\n"
         "(advisory; read the conflicts) and release_file_reservations when done.\n",
         lists("file_reservation_paths", "release_file_reservations")),
        (f"{' and '.join(catch_up)} catch{'' if len(catch_up) > 1 else 'es'} you up.\n", bool(catch_up)),
    ) if shown)
