"""How long a retention run holds the write lock when its purge cuts one long thread.

    .venv/bin/python bench/retention_recount.py [--messages 20000] [--purged 100] [--dir /tmp/agent-mail-bench-retention]

Builds a database (bulk SQL, as bench/ui.py) with one project of 20 agents and one thread of
`--messages` messages, each to two agents with a third cc'd; the oldest `--purged` are 40 days
old, the rest a day old. The project purges after 30 days. Then runs retention until the thread
is remade from what is left, timing each write transaction (store/db.py `transaction`, as the
run takes it), and prints the longest, the sum, how many, and the runs it took. Checks that
the summaries equal a from-scratch recount. Each measurement on a fresh copy of the database.
"""

import argparse
import json
import shutil
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.ids import first_id_at, stable_id  # noqa: E402
from chalicelib.store import db  # noqa: E402
from chalicelib.tools import counts, retention, thread_summaries, tools_by_name  # noqa: E402
from chalicelib.tools.agents import agent_id  # noqa: E402

DAY_MS = 86_400_000


def build(settings: Settings, messages: int, purged: int) -> int:
    tools = tools_by_name()

    def call(tool, /, **args):
        return invoke.call(tools[tool], args, settings)

    project = call("ensure_project", human_key="/bench/retention")
    names = [f"Agent{i:02d}" for i in range(20)]
    for name in names:
        call("register_agent", project_key=project.slug, program="p", model="m", name=name)
    call("set_retention_policy", project_key=project.slug, mode="purge", days=30)
    pid = stable_id("project", "/bench/retention")
    ids = [agent_id(pid, name) for name in names]
    now_ms = int(time.time() * 1000)
    rows, recipients = [], []
    for i in range(messages):
        at = now_ms - (40 if i < purged else 1) * DAY_MS + i
        mid = first_id_at(at) + 1
        sender = ids[i % 20]
        rows.append((mid, pid, sender, "LONG", f"step {i}", "x", "normal", 0,
                     time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at / 1000)) + f".{at % 1000:03d}000Z"))
        for to, kind in ((ids[(i + 1) % 20], "to"), (ids[(i + 2) % 20], "to"), (ids[(i + 7) % 20], "cc")):
            recipients.append((stable_id("recipient", mid, to), mid, to, kind, None, None, pid, 0, 0, pid, "LONG"))
    conn = sqlite3.connect(settings.database_path)
    with conn:
        conn.executemany("INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance,"
                         " ack_required, created_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO message_recipients (id, message_id, agent_id, kind, read_ts, ack_ts, project_id, urgent,"
                         " ack_required, message_project_id, thread_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", recipients)
        # The search index, as the write path keeps it (a purge's delete trigger takes each message out of it).
        conn.execute("INSERT INTO messages_fts (rowid, subject, body_md, project) SELECT id, subject, body_md, 'p' || project_id"
                     " FROM messages")
        thread_summaries.recount(conn, pid, ["LONG"])
        counts._add_to_projects(conn, [(pid, len(rows), 0)])
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # all in the file: it is copied for each measurement
    conn.close()
    return pid


def summaries(path: Path, pid: int) -> list:
    conn = sqlite3.connect(path)
    rows = conn.execute("SELECT viewer_id, messages, first_id, subject, first_ts, last_id, last_ts, participants"
                        " FROM thread_summaries WHERE project_id = ? ORDER BY viewer_id", (pid,)).fetchall()
    conn.close()
    return [(*row[:7], sorted(json.loads(row[7]))) for row in rows]  # participants: in any order


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--purged", type=int, default=100)
    parser.add_argument("--dir", default="/tmp/agent-mail-bench-retention")
    options = parser.parse_args()
    folder = Path(options.dir)
    folder.mkdir(parents=True, exist_ok=True)
    built = folder / f"built-{options.messages}-{options.purged}.db"
    if not built.exists():
        settings = Settings(database_url=f"sqlite:///{built}", archive_enabled=False)
        db.migrate(settings)
        build(settings, options.messages, options.purged)
    pid = stable_id("project", "/bench/retention")
    path = folder / "run.db"
    for stale in folder.glob("run.db*"):
        stale.unlink()
    shutil.copy(built, path)
    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
    db.migrate(settings)

    held: list[float] = []
    original = retention.transaction

    class timed(original):  # each write transaction of the run, from taking the lock to committing
        def __enter__(self):
            self.started = time.perf_counter(), time.process_time()
            return super().__enter__()

        def __exit__(self, *exc):
            result = super().__exit__(*exc)
            if self.write:
                held.append((time.perf_counter() - self.started[0], time.process_time() - self.started[1]))
            return result

    retention.transaction = timed
    runs, purged = 0, 0
    started = time.perf_counter()
    while True:
        runs += 1
        done = retention.run_retention(settings)
        purged += done["messages_purged"]
        with db.connection(settings) as conn:
            (left,) = conn.execute("SELECT count(*) FROM threads_to_recount").fetchone()
        if not left or runs > 1000:
            break
    total = time.perf_counter() - started
    retention.transaction = original
    kept = summaries(path, pid)
    conn = sqlite3.connect(path)
    with conn:
        thread_summaries.recount(conn, pid, ["LONG"])
    conn.close()
    assert kept == summaries(path, pid), "the summaries differ from a recount"
    walls, cpus = sorted(wall for wall, _ in held), sorted(cpu for _, cpu in held)
    # Wall time, and the process's CPU time (steadier on a shared machine: it leaves out waiting for a core).
    print(f"{options.messages:,}-message thread, {purged} purged: {runs} run(s), {len(held)} write transactions;"
          f" longest {walls[-1] * 1000:.1f} ms (CPU {cpus[-1] * 1000:.1f} ms), median {walls[len(walls) // 2] * 1000:.1f} ms;"
          f" in all {sum(walls) * 1000:.0f} ms (CPU {sum(cpus) * 1000:.0f} ms), run wall {total * 1000:.0f} ms")


if __name__ == "__main__":
    main()
