"""The contact-policy check of a send as agents' mailboxes grow, in-process.

    .venv/bin/python bench/contact_check.py [--sizes 10000,200000] [--calls 9] [--dir /work/tmp/contact-bench]

Per size, one database (kept in --dir, built with bulk SQL, so an older checkout builds the same
rows): in one project, Alice and Bob (policy auto) have each received that many messages from
Dave and Carol, and never wrote to each other; 100 newcomers (auto) have no mail. Prints the
median of --calls refused sends (nothing is stored) of: Alice to Bob (two big mailboxes), Alice
to the 100 newcomers, a newcomer to Bob, and Bob to a newcomer.
"""

import argparse
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.errors import Conflict  # noqa: E402
from chalicelib.ids import new_ids, stable_id  # noqa: E402
from chalicelib.tools import tools_by_name  # noqa: E402

TOOLS = tools_by_name()
PROJECT = "bench-contacts"
NEWCOMERS = [f"Newcomer{n:03d}" for n in range(100)]
TS = "2026-01-01T00:00:00.000000+00:00"


def call(settings, name, **arguments):
    return invoke.call(TOOLS[name], arguments, settings)


def build(settings: Settings, size: int) -> None:
    call(settings, "ensure_project", human_key="/bench/contacts")
    for name in ("Alice", "Bob", "Carol", "Dave", *NEWCOMERS):
        call(settings, "register_agent", project_key=PROJECT, program="bench", model="m", agent_name=name)
    with sqlite3.connect(settings.database_path) as db:
        (project,) = db.execute("SELECT id FROM projects WHERE slug = ?", (PROJECT,)).fetchone()
        agent = dict(db.execute("SELECT name, id FROM agents WHERE project_id = ?", (project,)))
        columns = {row[1] for row in db.execute("PRAGMA table_info(message_recipients)")}
        for sender, recipient in (("Carol", "Bob"), ("Dave", "Alice")):
            messages, rows = list(new_ids(size)), list(new_ids(size))
            db.executemany(
                "INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, ack_required, created_ts)"
                " VALUES (?, ?, ?, ?, 's', 'b', 'normal', 0, ?)", [(m, project, agent[sender], f"T-{m}", TS) for m in messages])
            extra = ", urgent, ack_required" if "urgent" in columns else ""
            db.executemany(f"INSERT INTO message_recipients (id, message_id, agent_id, kind{extra}) VALUES (?, ?, ?, 'to'"
                           f"{', 0, 0' if extra else ''})", [(r, m, agent[recipient]) for r, m in zip(rows, messages)])
            if "message_counts" in {row[0] for row in db.execute("SELECT name FROM sqlite_master")}:
                db.execute("INSERT INTO message_counts (id, agent_id, writer, sent, received, read) VALUES (?, ?, 0, ?, 0, 0)",
                           (next(iter(new_ids(1))), agent[sender], size))
                db.execute("INSERT INTO message_counts (id, agent_id, writer, sent, received, read) VALUES (?, ?, 0, 0, ?, 0)",
                           (next(iter(new_ids(1))), agent[recipient], size))
            if "correspondents" in {row[0] for row in db.execute("SELECT name FROM sqlite_master")}:
                db.execute("INSERT INTO correspondents (id, agent_id, peer_id, relation) VALUES (?, ?, ?, 'to')",
                           (stable_id("correspondents", "to", agent[sender], agent[recipient]), agent[sender], agent[recipient]))
        db.execute("ANALYZE")


def refused(settings, sender: str, to: list[str]):
    def send():
        try:
            call(settings, "send_message", project_key=PROJECT, sender_name=sender, to=to, subject="hi", body_md="x")
        except Conflict:
            return
        raise AssertionError("the send was admitted: the bench measures refusals")
    return send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,200000")
    parser.add_argument("--calls", type=int, default=9)
    parser.add_argument("--dir", type=Path, default=Path("/work/tmp/contact-bench"))
    options = parser.parse_args()
    options.dir.mkdir(parents=True, exist_ok=True)
    for size in map(int, options.sizes.split(",")):
        path = options.dir / f"contacts-{size}.db"
        settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
        if not path.exists():
            build(settings, size)
        print(f"{size:,} messages received by Alice and by Bob")
        for label, send in (("Alice to Bob", refused(settings, "Alice", ["Bob"])),
                            ("Alice to 100 newcomers", refused(settings, "Alice", NEWCOMERS)),
                            ("a newcomer to Bob", refused(settings, "Newcomer000", ["Bob"])),
                            ("Bob to a newcomer", refused(settings, "Bob", ["Newcomer001"]))):
            times = []
            for _ in range(options.calls):
                started = time.perf_counter()
                send()
                times.append((time.perf_counter() - started) * 1000)
            print(f"  {label:<24} {statistics.median(times):>9.2f} ms", flush=True)


if __name__ == "__main__":
    main()
