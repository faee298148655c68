"""How long `db restore-from-archive` takes, in the code tree of the working directory: run it in
two checkouts in turn to compare them.

    cd /path/to/checkout && /work/main/.venv/bin/python /work/main/bench/restore.py [--messages 5000] [--rounds 2]

Sends --messages messages among 10 agents of one project (2 recipients each), marks half of the
copies read and half of those acknowledged, archives it all (the local worker's drain), then
restores the archive into a new database and prints how long that took and what it restored.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())  # the tree under test
try:
    from chalicelib.archive.restore import restore  # noqa: E402
except ImportError:  # a tree from before session 32, when rebuild.py held it
    from chalicelib.archive.rebuild import restore  # noqa: E402
from chalicelib.archive.gitrepo import GitArchive  # noqa: E402
from chalicelib.archive.worker import drain  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.store import db  # noqa: E402
from inprocess import caller  # noqa: E402

AGENTS = [f"Agent{n}" for n in range(10)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    for _ in range(options.rounds):
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings(database_url=f"sqlite:///{folder}/live.db", archive_dir=Path(folder) / "archive")
            db.migrate(settings)
            call = caller(settings)
            call("ensure_project", human_key="/bench/restore")
            for name in AGENTS:
                call("register_agent", project_key="bench-restore", program="bench", model="m", name=name)
                call("set_contact_policy", project_key="bench-restore", agent_name=name, policy="open")
            for n in range(options.messages):
                to = [AGENTS[(n + 1) % 10], AGENTS[(n + 2) % 10]]
                sent = call("send_message", project_key="bench-restore", sender_name=AGENTS[n % 10], to=to,
                            subject=f"m{n}", body_md="x " * 100, ack_required=True).message
                for number, agent in enumerate(to):
                    if (n + number) % 2 == 0:
                        tool = "acknowledge_message" if n % 4 < 2 else "mark_message_read"
                        call(tool, project_key="bench-restore", agent_name=agent, message_id=sent.id)
            with GitArchive.local(settings) as archive:
                drain(settings, archive)
            restored = Settings(database_url=f"sqlite:///{folder}/restored.db")
            db.migrate(restored)
            started = time.perf_counter()
            with db.connection(restored) as conn, db.transaction(conn, write=True), GitArchive.local(settings) as archive:
                counts = restore(conn, archive)
            print(f"{os.getcwd()}: restore {time.perf_counter() - started:.2f} s {counts}", flush=True)


if __name__ == "__main__":
    main()
