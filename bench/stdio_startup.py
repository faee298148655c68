"""Start-up time of the stdio MCP server (`agent-mail stdio`): a client spawns it for every
session and waits for its `initialize` answer.

    .venv/bin/python bench/stdio_startup.py [--runs 10]

Prints, over the runs, the time from spawning the process to its `initialize` answer (answered
before the MCP SDK is imported: chalicelib/transports/stdio.py), and to its first `tools/list`
answer (the SDK loaded, the database migrated: about what `initialize` would cost without the
quick answer), and (on Linux) the CPU time the server had used by then: on a loaded machine
the wall times vary with the other processes, its CPU time much less. Each run uses a fresh database in a temporary directory, and this checkout's
code (PYTHONPATH: the installed script would import the checkout it was installed from).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMAND = [str(Path(sys.executable).parent / "agent-mail"), "stdio"]
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
              "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


def line(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a running process (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(directory: str) -> tuple[float, float, float]:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{directory}/agent_mail.db", "ARCHIVE_DIR": f"{directory}/archive",
           "ATTACHMENTS_DIR": f"{directory}/attachments", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    server = subprocess.Popen(COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=directory)
    server.stdin.write(line(INITIALIZE))
    server.stdin.flush()
    assert json.loads(server.stdout.readline())["id"] == 1
    initialized = time.perf_counter() - started
    server.stdin.write(line(INITIALIZED) + line(TOOLS_LIST))
    server.stdin.flush()
    assert json.loads(server.stdout.readline())["id"] == 2
    listed = time.perf_counter() - started
    cpu = cpu_seconds(server.pid)
    server.stdin.close()
    server.wait(timeout=30)
    return initialized, listed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    runs = parser.parse_args().runs
    results = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as directory:
            results.append(one_run(directory))
    for label, values in (("initialize answer", [r[0] for r in results]), ("first tools/list answer", [r[1] for r in results]),
                          ("CPU by tools/list", [r[2] for r in results])):
        ms = [v * 1000 for v in values]
        print(f"{label:<24} median {statistics.median(ms):7.1f} ms   min {min(ms):7.1f} ms   max {max(ms):7.1f} ms   ({runs} runs)")


if __name__ == "__main__":
    main()
