"""Wake-up latency of wait_for_mail: from the COMMIT that delivers a message to the waiting
call's return. Not a test: numbers to read (the machine is shared; they drift).

    .venv/bin/python bench/wait_latency.py [--rounds 20]

- in-process: the waiter and the sender in one process (a server): the writer thread wakes
  the waiter right after its COMMIT.
- other process: the sender is another process on the same database file: the one
  data_version watcher (polling every 50 ms) wakes the waiter.
"""

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.tools import tools_by_name  # noqa: E402

TOOLS = tools_by_name()
PROJECT = "/bench/wait"
SENDER = """
import sys, time
from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.tools import tools_by_name
settings = Settings(database_url=sys.argv[1], archive_enabled=False)
send = tools_by_name()["send_message"]
for line in sys.stdin:
    invoke.call(send, dict(project_key="/bench/wait", agent_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b"), settings)
    print(time.time(), flush=True)  # right after the COMMIT returned
"""


def setup(settings: Settings) -> str:
    invoke.call(TOOLS["ensure_project"], {"human_key": PROJECT}, settings)
    for name in ("BlueLake", "GreenCastle"):
        invoke.call(TOOLS["register_agent"], {"project_key": PROJECT, "program": "b", "model": "b", "agent_name": name}, settings)
        invoke.call(TOOLS["set_contact_policy"], {"project_key": PROJECT, "agent_name": name, "policy": "open"}, settings)
    return invoke.call(TOOLS["wait_for_mail"], {"project_key": PROJECT, "agent_name": "GreenCastle", "timeout_seconds": 0}, settings).cursor


def in_process(settings: Settings, rounds: int) -> list[float]:
    cursor = setup(settings)
    latencies = []

    async def one(cursor):
        waiting = asyncio.create_task(invoke.acall(TOOLS["wait_for_mail"], dict(
            project_key=PROJECT, agent_name="GreenCastle", cursor=cursor, timeout_seconds=10), settings))
        await asyncio.sleep(0.05)
        sent = time.perf_counter()
        await invoke.acall(TOOLS["send_message"], dict(
            project_key=PROJECT, agent_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b"), settings)
        got = await waiting
        return got, time.perf_counter() - sent

    async def all_rounds(cursor):
        for _ in range(rounds):
            got, latency = await one(cursor)
            assert got.messages, "timed out"
            cursor = got.cursor
            latencies.append(latency)

    asyncio.run(all_rounds(cursor))
    return latencies


def other_process(settings: Settings, rounds: int) -> list[float]:
    cursor = setup(settings)
    sender = subprocess.Popen([sys.executable, "-c", SENDER, settings.database_url], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    latencies = []
    for _ in range(rounds):
        result = {}

        def wait():
            result["got"] = invoke.call(TOOLS["wait_for_mail"], dict(
                project_key=PROJECT, agent_name="GreenCastle", cursor=cursor, timeout_seconds=10), settings)
            result["at"] = time.time()

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(0.1)
        sender.stdin.write("send\n")
        sender.stdin.flush()
        committed = float(sender.stdout.readline())
        waiter.join()
        assert result["got"].messages, "timed out"
        cursor = result["got"].cursor
        latencies.append(result["at"] - committed)
    sender.stdin.close()
    sender.wait()
    return latencies


def show(name: str, latencies: list[float]) -> None:
    ms = sorted(1000 * latency for latency in latencies)
    print(f"{name:14} n={len(ms):3}  median {statistics.median(ms):6.1f} ms  p90 {ms[int(0.9 * (len(ms) - 1))]:6.1f} ms"
          f"  max {ms[-1]:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-wait-") as directory:
        show("in-process", in_process(Settings(database_url=f"sqlite:///{directory}/a.db", archive_enabled=False), args.rounds))
        show("other process", other_process(Settings(database_url=f"sqlite:///{directory}/b.db", archive_enabled=False), args.rounds))


if __name__ == "__main__":
    main()
