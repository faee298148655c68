"""Tool latency on embedded SQLite next to a Turso replica, one call at a time (as in a Lambda).

    .venv/bin/python bench/replica.py [--calls 300]

Starts a real `tursodb --sync-server` on 127.0.0.1 (installed by scripts/bootstrap.sh), runs
send_message and fetch_inbox (20-message pages) `--calls` times through chalicelib.invoke on
each backend, and prints calls/s, p50 and p99. On the replica every send pushes to the primary
before it returns; fetch_inbox pulls first when the last pull is older than
REPLICA_MAX_STALENESS_MS (shown for the default and for 0: a pull before every read).
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.tools import tools_by_name  # noqa: E402
from tests.turso import turso_server  # noqa: E402  (the same way the tests start it)

TOOLS = tools_by_name()
PROJECT = "/bench/replica"


def call(settings: Settings, tool: str, **arguments):
    return invoke.call(TOOLS[tool], arguments, settings)


def seed(settings: Settings) -> None:
    call(settings, "ensure_project", human_key=PROJECT)
    for name in ("BlueLake", "GreenCastle"):
        call(settings, "register_agent", project_key=PROJECT, program="bench", model="m", name=name)
        call(settings, "set_contact_policy", project_key=PROJECT, agent_name=name, policy="open")


def measure(settings: Settings, tool: str, calls: int, **arguments) -> dict:
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        call(settings, tool, **arguments)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    return {
        "calls/s": round(calls / sum(latencies)),
        "p50 ms": round(statistics.median(latencies) * 1000, 2),
        "p99 ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 2),
    }


def run(settings: Settings, calls: int) -> dict:
    seed(settings)
    send = dict(project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="bench", body_md="hello " * 40)
    results = {"send_message": measure(settings, "send_message", calls, **send)}
    results["fetch_inbox"] = measure(settings, "fetch_inbox", calls, project_key=PROJECT, agent_name="GreenCastle", include_bodies=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        embedded = Settings(database_url=f"sqlite:///{directory}/embedded.db", archive_enabled=False)
        rows.append(("embedded SQLite", run(embedded, args.calls)))
        for staleness in (1000, 0):
            with turso_server(Path(directory) / f"primary-{staleness}") as primary:
                replica = Settings(
                    database_url=f"sqlite:///{directory}/replica-{staleness}.db",
                    turso_sync_url=primary.url,
                    replica_max_staleness_ms=staleness,
                    archive_enabled=False,
                )
                rows.append((f"Turso replica, staleness {staleness} ms", run(replica, args.calls)))
    print(f"{'backend':38} {'tool':14} {'calls/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for backend, results in rows:
        for tool, numbers in results.items():
            print(f"{backend:38} {tool:14} {numbers['calls/s']:>8} {numbers['p50 ms']:>8} {numbers['p99 ms']:>8}")


if __name__ == "__main__":
    main()
