"""The cost of idempotency keys in the writer thread alone: send_message as invoke.Writer runs it
(batches of 50 in one transaction, each in its savepoint), without and with a key per send.

    .venv/bin/python bench/idempotency_writer.py [--body-bytes 0] [--chunks 25]

In-process, no HTTP: only what a key adds where every write waits (the lookup, the digest, the
stored row). Plain and keyed chunks of 200 sends take turns; prints the CPU time per send (this
process's, so less disturbed by neighbours than wall time), min and median over the chunks.
Run it from another checkout (cd there; it imports the code of the current directory) to compare.
"""

import argparse
import statistics
import sys
import tempfile
import time

sys.path.insert(0, ".")
from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.security import auth  # noqa: E402
from chalicelib.store.db import connection, transaction  # noqa: E402
from chalicelib.tools import tools_by_name  # noqa: E402

TOOLS = tools_by_name()
PROJECT = "/bench/idempotency-writer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--body-bytes", type=int, default=0, help="extra body per message")
    parser.add_argument("--chunks", type=int, default=25)
    args = parser.parse_args()
    settings = Settings(database_url=f"sqlite:///{tempfile.mkdtemp(prefix='bench-idem-writer-')}/bench.db", archive_enabled=False)
    invoke.call(TOOLS["ensure_project"], {"human_key": PROJECT}, settings)
    for name in ("BlueLake", "GreenCastle"):
        invoke.call(TOOLS["register_agent"], {"project_key": PROJECT, "program": "b", "model": "b", "agent_name": name}, settings)
    invoke.call(TOOLS["set_contact_policy"], {"project_key": PROJECT, "agent_name": "BlueLake", "policy": "open"}, settings)
    send, body = TOOLS["send_message"], "x" * args.body_bytes

    def chunk(tag: str, keys: bool, count: int = 200, batch: int = 50) -> float:
        jobs = [invoke.parse(send, {"project_key": PROJECT, "agent_name": "GreenCastle", "to": ["BlueLake"], "subject": f"s {tag}-{n}",
                                    "body_md": f"Body {tag}-{n}. {body}", **({"idempotency_key": f"{tag}-{n}"} if keys else {})})
                for n in range(count)]
        started = time.process_time()
        for first in range(0, count, batch):
            with connection(settings) as conn, transaction(conn, write=True):
                for job in jobs[first:first + batch]:
                    result, error = invoke._in_savepoint(conn, send, job, settings, auth.OPERATOR)
                    assert error is None, error
        return (time.process_time() - started) / count * 1e6

    for n in range(10):  # warm-up: 2,000 keys stored already
        chunk(f"warm{n}", True), chunk(f"warm{n}", False)
    times: dict[bool, list[float]] = {False: [], True: []}
    for n in range(args.chunks):
        for keys in (False, True):
            times[keys].append(chunk(f"{n}", keys))
    plain, keyed = times[False], times[True]
    print(f"body +{args.body_bytes} bytes: no keys min {min(plain):.0f} median {statistics.median(plain):.0f} µs/send;"
          f" with keys min {min(keyed):.0f} median {statistics.median(keyed):.0f} µs/send;"
          f" keys cost min {100 * (min(keyed) / min(plain) - 1):+.0f}%, median {100 * (statistics.median(keyed) / statistics.median(plain) - 1):+.0f}%")


if __name__ == "__main__":
    main()
