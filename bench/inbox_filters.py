"""fetch_inbox with its filters on a 100k-message inbox, and wait_for_mail's check.

    .venv/bin/python bench/inbox_filters.py [--messages 100000] [--repeat 50] [--database PATH]

Seeds one agent's inbox with --messages messages by SQL (1 in 10 unread, 1 in 20 needing an
ack, half of those not given, 1 in 50 urgent; the database under /work/tmp/j-mailbox-perf/
unless --database), then times single calls through invoke.call (connection, transaction,
validation, query, output): median and p90 over --repeat calls. Not a test; the machine is
shared, numbers drift: compare trees in one run (alternating), not against old numbers.
"""

import argparse
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.ids import new_id, stable_id  # noqa: E402
from chalicelib.tools import tools_by_name  # noqa: E402
from chalicelib.tools.agents import agent_id  # noqa: E402

TOOLS = tools_by_name()
PROJECT = "/bench/inbox"
DATA = Path("/work/tmp/j-mailbox-perf")


def seed(settings: Settings, count: int) -> None:
    invoke.call(TOOLS["ensure_project"], {"human_key": PROJECT}, settings)
    for name in ("BlueLake", "GreenCastle"):
        invoke.call(TOOLS["register_agent"], {"project_key": PROJECT, "program": "b", "model": "b", "agent_name": name}, settings)
    project = invoke.call(TOOLS["get_project"], {"project_key": PROJECT}, settings)
    conn = sqlite3.connect(settings.database_path)
    [(project_id,)] = conn.execute("SELECT id FROM projects WHERE slug = ?", (project.slug,)).fetchall()
    sender, recipient = agent_id(project_id, "BlueLake"), agent_id(project_id, "GreenCastle")
    rng = random.Random(1)
    messages, recipients = [], []
    for n in range(count):
        message_id = new_id()
        importance = "urgent" if n % 50 == 0 else "normal"
        ack_required = n % 20 == 0
        read = None if n % 10 == 0 else "2026-01-01T00:00:00+00:00"
        ack = None if ack_required and rng.random() < 0.5 else ("2026-01-01T00:00:00+00:00" if ack_required else None)
        messages.append((message_id, project_id, sender, f"T-{n % 500}", f"subject {n}", "body", importance, ack_required,
                         "2026-01-01T00:00:00+00:00"))
        recipients.append((stable_id("recipient", message_id, recipient), message_id, recipient, "to", read, ack,
                           importance == "urgent", ack_required))
    # The columns store_recipients writes; ack_required only from 0020 on (so that an older tree can be measured too).
    columns = ["id", "message_id", "agent_id", "kind", "read_ts", "ack_ts", "urgent", "ack_required"]
    if "ack_required" not in {row[1] for row in conn.execute("PRAGMA table_info(message_recipients)")}:
        columns, recipients = columns[:-1], [row[:-1] for row in recipients]
    with conn:
        conn.executemany("INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance,"
                         " ack_required, created_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", messages)
        conn.executemany(f"INSERT INTO message_recipients ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                         recipients)
    conn.close()


def timed(tool: str, arguments: dict, settings: Settings, repeat: int) -> str:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        invoke.call(TOOLS[tool], arguments, settings)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return f"median {statistics.median(times):7.2f} ms  p90 {times[int(0.9 * (len(times) - 1))]:7.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--database", type=Path, help="the database file (seeded if missing)")
    args = parser.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    database = args.database or DATA / f"inbox-{args.messages}.db"
    settings = Settings(database_url=f"sqlite:///{database}", archive_enabled=False)
    if not database.exists():
        seed(settings, args.messages)
    me = {"project_key": PROJECT, "agent_name": "GreenCastle"}
    cursor = invoke.call(TOOLS["wait_for_mail"], me | {"timeout_seconds": 0}, settings).cursor
    cases = {
        "fetch_inbox (newest 20)": ("fetch_inbox", me),
        "unread_only": ("fetch_inbox", me | {"unread_only": True}),
        "ack_pending_only": ("fetch_inbox", me | {"ack_pending_only": True}),
        "urgent_only + unread_only": ("fetch_inbox", me | {"urgent_only": True, "unread_only": True}),
        "page 100 (cursor)": ("fetch_inbox", me | {"cursor": str(2**62)}),
        "ack_pending + urgent": ("fetch_inbox", me | {"ack_pending_only": True, "urgent_only": True}),
        "list_ack_required (agent)": ("list_ack_required", me),
        "list_ack_required (project)": ("list_ack_required", {"project_key": PROJECT}),
        "list_ack_overdue (agent)": ("list_ack_overdue", me),
        "list_urgent_unread (agent)": ("list_urgent_unread", me),
        "list_urgent_unread (project)": ("list_urgent_unread", {"project_key": PROJECT}),
        "wait_for_mail check": ("wait_for_mail", me | {"cursor": cursor, "timeout_seconds": 0}),
    }
    print(f"{args.messages} messages in one inbox ({database})")
    for name, (tool, arguments) in cases.items():
        print(f"{name:30} {timed(tool, arguments, settings, args.repeat)}")


if __name__ == "__main__":
    main()
