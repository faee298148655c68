"""The tools whose work may follow a project's agents, at many agents, in-process (invoke.call).

    .venv/bin/python bench/agents_scale.py [--agents 50000] [--calls 20] [--tree /path/to/checkout]

Registers --agents agents in one project (policy open; ~40 s for 50,000), sends 50 messages to
agents across it (half asking for an acknowledgement, a third urgent; some read, some
acknowledged), and prints each tool's median ms over --calls calls: those that read a count or a
view of every agent of the project (get_project, unified_inbox of the project, its ack_pending
view, list_ack_required / list_urgent_unread / list_ack_overdue without agent_name) and, beside
them, tools that should not care (fetch_inbox, send_message, ...). --tree runs another checkout's
code (its chalicelib first on sys.path), so two trees can be compared in turn.
"""

import argparse
import sys
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--agents", type=int, default=50_000)
parser.add_argument("--calls", type=int, default=20)
parser.add_argument("--tree", default=".")
options = parser.parse_args()
sys.path.insert(0, options.tree)

from chalicelib.config import Settings  # noqa: E402
from inprocess import caller, print_medians  # noqa: E402

PROJECT = "/bench/agents"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        call = caller(Settings(database_url=f"sqlite:///{folder}/agents.db", archive_enabled=False))
        call("ensure_project", human_key=PROJECT)
        started = time.monotonic()
        for n in range(options.agents):
            call("register_agent", project_key=PROJECT, program="bench", model="m", name=f"Agent{n:05d}")
            call("set_contact_policy", project_key=PROJECT, agent_name=f"Agent{n:05d}", policy="open")
        print(f"{options.agents} agents registered in {time.monotonic() - started:.0f} s")
        for n in range(50):
            to = f"Agent{n * 37 % options.agents:05d}"
            sent = call("send_message", project_key=PROJECT, sender_name="Agent00000", to=[to], subject=f"s{n}", body_md="b",
                        ack_required=n % 2 == 0, importance="urgent" if n % 3 == 0 else "normal").message
            if n % 4 == 0:
                call("mark_message_read", project_key=PROJECT, agent_name=to, message_id=sent.id)
            if n % 8 == 0:
                call("acknowledge_message", project_key=PROJECT, agent_name=to, message_id=sent.id)
        rows = {
            "get_project": ("get_project", {"project_key": PROJECT}),
            "unified_inbox of the project": ("unified_inbox", {"project_key": PROJECT}),
            "unified_inbox ack_pending": ("unified_inbox", {"project_key": PROJECT, "view": "ack_pending"}),
            "list_ack_required (every agent's)": ("list_ack_required", {"project_key": PROJECT}),
            "list_urgent_unread (every agent's)": ("list_urgent_unread", {"project_key": PROJECT}),
            "list_ack_overdue (every agent's)": ("list_ack_overdue", {"project_key": PROJECT, "older_than_minutes": 1e-6}),
            "macro_start_session": ("macro_start_session", {"human_key": PROJECT, "program": "bench", "model": "m",
                                                            "agent_name": "Agent00003"}),
            "list_agents": ("list_agents", {"project_key": PROJECT}),
            "whois": ("whois", {"project_key": PROJECT, "agent_name": "Agent00037"}),
            "fetch_inbox": ("fetch_inbox", {"project_key": PROJECT, "agent_name": "Agent00037"}),
            "send_message": ("send_message", {"project_key": PROJECT, "sender_name": "Agent00001", "to": ["Agent00002"],
                                              "subject": "x", "body_md": "y"}),
        }
        print_medians(call, rows, options.calls)


if __name__ == "__main__":
    main()
