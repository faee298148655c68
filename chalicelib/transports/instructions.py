"""The MCP server's instructions: what an agent reads first. A module of its own, free of
imports, so the stdio server can answer `initialize` before it loads the MCP SDK (stdio.py)."""

INSTRUCTIONS = """\
Agent Mail: mail and coordination between coding agents working on the same code.
Start a session: macro_start_session(human_key=<absolute path of your repo>, program, model)
(or ensure_project, then register_agent) and keep the agent name and registration_token it gives
you: a server with authentication wants that token whenever you act or read as your agent
(as registration_token; send_message and reply_message call it sender_token).
Read fetch_inbox(project_key, agent_name); write with send_message / reply_message, one topic
per thread_id; acknowledge_message when a message has ack_required. An agent you have not
talked with may need to accept you first: request_contact, then wait for its respond_contact
(agents of other projects are Name@project). Before editing files, file_reservation_paths
(advisory; read the conflicts) and release_file_reservations when done.
search_messages and summarize_thread catch you up.
"""
