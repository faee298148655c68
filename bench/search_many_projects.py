"""A search in one project of a server holding many, in-process (invoke.call).

    .venv/bin/python bench/search_many_projects.py [--projects 100] [--per-project 2000] [--tree /path/to/checkout]

Makes --projects projects of --per-project messages each (two agents; bodies of 40 words drawn
from 12, so every word is common; messages of all projects interleaved in time, as when they
are all active), stored with the tools' SQL (messages INSERT, store_recipients), the search index
built once at the end, and prints the median ms of 20 searches in the first project. The index
holds every project's mail: a project's search walks the newest matches of all of them until it
has a window of its own, so with common words its cost follows how many other projects match
(docs/search.md, "One index for every project").
"""

import argparse
import random
import sqlite3
import sys
import tempfile

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--projects", type=int, default=100)
parser.add_argument("--per-project", type=int, default=2000)
parser.add_argument("--tree", default=".")
options = parser.parse_args()
sys.path.insert(0, options.tree)

from chalicelib import clock  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.ids import new_id  # noqa: E402
from chalicelib.tools.agents import agent_id  # noqa: E402
from chalicelib.tools.messages import store_recipients  # noqa: E402
from inprocess import caller, print_medians  # noqa: E402

WORDS = "the deploy plan database index fix build test inbox cart api migration".split()


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        call = caller(Settings(database_url=f"sqlite:///{folder}/many.db", archive_enabled=False))
        for n in range(options.projects):
            call("ensure_project", human_key=f"/bench/p{n:04d}")
            for name in ("BlueLake", "RedStone"):
                call("register_agent", project_key=f"/bench/p{n:04d}", program="bench", model="m", name=name)
        db = sqlite3.connect(f"{folder}/many.db", isolation_level=None)
        projects = [row[0] for row in db.execute("SELECT id FROM projects ORDER BY human_key")]
        rng, first = random.Random(1), new_id()
        db.execute("BEGIN")
        for n in range(options.projects * options.per_project):
            project, message = projects[n % len(projects)], first + n * 1000
            sender, recipient = agent_id(project, "BlueLake"), agent_id(project, "RedStone")
            db.execute("INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, ack_required,"
                       " created_ts) VALUES (?, ?, ?, ?, ?, ?, 'normal', 0, ?)",
                       (message, project, sender, f"T-{n % 50}", f"deploy {WORDS[n % len(WORDS)]}",
                        " ".join(rng.choices(WORDS, k=40)), clock.now()))
            store_recipients(db, project, f"T-{n % 50}", message, sender, "normal", False, {recipient: "to"}, "s", clock.now())
        db.execute("COMMIT")
        db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
        db.close()
        print(f"{options.projects} projects of {options.per_project} messages")
        searches = {"search 'deploy'": {"query": "deploy"}, "search 'migration'": {"query": "migration"},
                    "search 'cart api'": {"query": "cart api"}, "search 'deploy' as an agent": {"query": "deploy", "agent_name": "RedStone"}}
        print_medians(call, {label: ("search_messages", {"project_key": "/bench/p0000", **arguments})
                             for label, arguments in searches.items()}, 20)


if __name__ == "__main__":
    main()
