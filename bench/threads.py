"""What list_threads reads and what send_message pays for it, in-process, on a database made
by bench/scale.py (left unchanged: every write is rolled back).

    .venv/bin/python bench/threads.py --db /work/tmp/x/scale-1000000.db [--tree .] [--calls 2000]

1. Reads per list_threads call: the file reads (pread calls, /proc/self/io syscr) of one call on
   a new connection, so that SQLite's page cache starts empty: the pages a call needs from the
   OS, which on a cold cache are disk reads. Median over the project and 20 agents. Unlike a
   time, this does not depend on what else the machine is doing.
2. thread_summaries.record, the summary upkeep of one send: one message from a random agent to
   one or two others, in a transaction of its own as send_message does, into a new thread (rows
   inserted), into one of the project's threads (a first reply by this writer: the rows of a
   database made by migration 0019 were writer -1's, so before 0021 this inserted rows too),
   or a next reply (rows updated: timed after an untimed first).

--tree: the checkout whose code is measured (another commit's, to compare before and after).
"""

import argparse
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--db", type=Path, required=True)
parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
parser.add_argument("--calls", type=int, default=2000)
options = parser.parse_args()
sys.path.insert(0, str(options.tree.resolve()))
from chalicelib.config import Settings  # noqa: E402
from chalicelib.ids import new_id  # noqa: E402
from chalicelib.store import db as store  # noqa: E402
from chalicelib.tools import thread_summaries  # noqa: E402
from chalicelib.tools.threads import ListThreadsInput, list_threads  # noqa: E402


def reads() -> int:
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("syscr"))


settings = Settings(database_url=f"sqlite:///{options.db}", archive_enabled=False)
store.migrate(settings)
for label, agents in (("project", [None] * 5), ("agent", [f"Agent{n:02d}" for n in range(20)])):
    counts = []
    for agent in agents:
        conn = store.connect(settings)
        conn.execute("SELECT 1 FROM projects").fetchall()  # the schema: read once per connection
        before = reads()
        with store.transaction(conn, write=False):
            list_threads(conn, ListThreadsInput(project_key="/bench/scale", agent_name=agent))
        counts.append(reads() - before)
        conn.close()
    print(f"{options.db.name} list_threads as {label:<7} file reads per call: median {statistics.median(counts):.0f}"
          f" (min {min(counts)}, max {max(counts)})")

db = sqlite3.connect(options.db, isolation_level=None)
(project_id,) = db.execute("SELECT id FROM projects").fetchone()
agents = [row[0] for row in db.execute("SELECT id FROM agents WHERE project_id = ?", (project_id,))]
threads = [row[0] for row in db.execute("SELECT thread_id FROM messages ORDER BY id DESC LIMIT 2000")]
with_heads = "subject" in (thread_summaries.record.__doc__ or "")  # since migration 0021: subject, created_ts too
rng = random.Random(1)


def message(thread_id: str | None, sender: int, to: list[int]) -> tuple:
    message_id = new_id()
    heads = ("a subject of some forty characters, or so", "2026-11-30T12:00:00.000000+00:00") if with_heads else ()
    return (message_id, thread_id or str(message_id), sender, {agent: "to" for agent in to}, *heads)


for label in ("new thread", "first reply by this writer", "next reply"):
    times = []
    for _ in range(options.calls):
        sender, *to = rng.sample(agents, rng.choice([2, 3]))
        thread_id = None if label == "new thread" else rng.choice(threads)
        db.execute("BEGIN IMMEDIATE")
        if label == "next reply":  # the rows are this writer's already: they are updated, not inserted
            thread_summaries.record(db, project_id, [message(thread_id, sender, to)])
        started = time.perf_counter()
        thread_summaries.record(db, project_id, [message(thread_id, sender, to)])
        times.append((time.perf_counter() - started) * 1e6)
        db.execute("ROLLBACK")
    times.sort()
    print(f"{options.db.name} record, {label:<26} median {statistics.median(times):6.0f} µs"
          f"  p95 {times[int(len(times) * 0.95)]:6.0f} µs")
