"""How long `archive verify` takes (archive/verify.py, in-process), in the code tree of the working
directory: build the archive once with --keep, then verify it from two checkouts in turn.

    cd /path/to/checkout && /work/main/.venv/bin/python /work/main/bench/verify.py --keep /tmp/v [--messages 3000] [--rounds 3]

Sends --messages messages among 10 agents of one project (two to, one cc, every fifth a bcc),
marks half of the copies read, archives it all (the local worker's drain), then times verify
(which must find nothing). With --keep DIR an archive already built there is reused.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.getcwd())  # the tree under test
try:
    from chalicelib.archive.verify import verify  # noqa: E402
except ImportError:  # a tree from before session 32, when rebuild.py held it
    from chalicelib.archive.rebuild import verify  # noqa: E402
from chalicelib.archive.gitrepo import GitArchive  # noqa: E402
from chalicelib.archive.worker import drain  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.store import db  # noqa: E402
from inprocess import caller  # noqa: E402

AGENTS = [f"Agent{n}" for n in range(10)]


def build(settings: Settings, messages: int) -> None:
    db.migrate(settings)
    call = caller(settings)
    call("ensure_project", human_key="/bench/verify")
    for name in AGENTS:
        call("register_agent", project_key="bench-verify", program="bench", model="m", name=name)
        call("set_contact_policy", project_key="bench-verify", agent_name=name, policy="open")
    for n in range(messages):
        to = [AGENTS[(n + 1) % 10], AGENTS[(n + 2) % 10]]
        sent = call("send_message", project_key="bench-verify", sender_name=AGENTS[n % 10], to=to,
                    cc=[AGENTS[(n + 3) % 10]], bcc=[AGENTS[(n + 4) % 10]] if n % 5 == 0 else [], subject=f"m{n}",
                    body_md="x " * 100).message
        if n % 2 == 0:
            call("mark_message_read", project_key="bench-verify", agent_name=to[0], message_id=sent.id)
    with GitArchive.local(settings) as archive:
        drain(settings, archive)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, required=True, help="where the database and archive are (built if missing)")
    options = parser.parse_args()
    settings = Settings(database_url=f"sqlite:///{options.keep}/agent_mail.db", archive_dir=options.keep / "archive")
    if not settings.archive_dir.exists():
        options.keep.mkdir(parents=True, exist_ok=True)
        build(settings, options.messages)
    times, cpu = [], []
    for _ in range(options.rounds):
        started, started_cpu = time.perf_counter(), time.process_time()
        with db.connection(settings) as conn, db.transaction(conn, write=False), GitArchive.to_read(settings) as archive:
            problems = verify(conn, archive)
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - started_cpu)
        assert not any(problems.values()), json.dumps(problems)[:2000]
    print(f"{os.getcwd()}: verify {' '.join(f'{t:.2f}' for t in times)} s, best {min(times):.2f} s (CPU best"
          f" {min(cpu):.2f} s)", flush=True)


if __name__ == "__main__":
    main()
