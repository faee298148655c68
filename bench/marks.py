"""What a read and an acknowledgement cost, in-process (invoke.call), in the code tree of the
working directory: run it in two checkouts in turn to compare them.

    cd /path/to/checkout && /work/main/.venv/bin/python /work/main/bench/marks.py [--messages 2000] [--rounds 3]

Sends --messages messages to one agent (archive on, no worker: entries only queue), then marks
each read, then acknowledges each, and prints the median µs of a mark_message_read and of an
acknowledge_message over 10 slices of each round, and the archive entries queued per call.
"""

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())  # the tree under test
from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.store.db import migrate  # noqa: E402
from chalicelib.tools import tools_by_name  # noqa: E402

TOOLS = tools_by_name()


def call(settings, tool, **arguments):
    return invoke.call(TOOLS[tool], arguments, settings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    for _ in range(options.rounds):
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings(database_url=f"sqlite:///{folder}/bench.db", archive_dir=Path(folder) / "archive")
            migrate(settings)
            call(settings, "ensure_project", human_key="/bench/marks")
            for name in ("BlueLake", "GreenCastle"):
                call(settings, "register_agent", project_key="bench-marks", program="bench", model="m", name=name)
                call(settings, "set_contact_policy", project_key="bench-marks", agent_name=name, policy="open")
            ids = [call(settings, "send_message", project_key="bench-marks", sender_name="BlueLake", to=["GreenCastle"],
                        subject=f"m{n}", body_md="x", ack_required=True).message.id for n in range(options.messages)]
            queued = sqlite3.connect(f"{folder}/bench.db").execute("SELECT count(*) FROM archive_outbox").fetchone()[0]
            results = []
            for tool in ("mark_message_read", "acknowledge_message"):
                slices = []
                for chunk in [ids[start::10] for start in range(10)]:
                    started = time.perf_counter()
                    for message_id in chunk:
                        call(settings, tool, project_key="bench-marks", agent_name="GreenCastle", message_id=message_id)
                    slices.append((time.perf_counter() - started) / len(chunk) * 1e6)
                after = sqlite3.connect(f"{folder}/bench.db").execute("SELECT count(*) FROM archive_outbox").fetchone()[0]
                results.append(f"{tool} {statistics.median(slices):.0f} µs ({(after - queued) / len(ids):.1f} entries a call)")
                queued = after
            print(f"{os.getcwd()}: " + ", ".join(results), flush=True)


if __name__ == "__main__":
    main()
