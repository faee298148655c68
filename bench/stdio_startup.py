"""Start-up time of the stdio MCP server (`agent-mail stdio`): a client spawns it for every
session and waits for its `initialize` answer, then for its first `tools/list`.

    .venv/bin/python bench/stdio_startup.py [--runs 10]
    .venv/bin/python bench/stdio_startup.py --tree /path/to/old-checkout --tree . [--archive-held]

For each code tree (default: this checkout), the median over the runs of: the time from
spawning the process to its `initialize` answer (answered before the MCP SDK is imported:
chalicelib/transports/stdio.py) and to its first `tools/list` answer (the SDK loaded, the
database migrated), each with the CPU time (user + system, all threads, Linux /proc) the server
had used by then; on a loaded machine the wall times vary with the other processes, the CPU
times much less. Also the CPU of the archive worker the server starts (a process of its own,
`archive work`) once it has settled: every session pays it too. With --archive-held the bench
holds the archive's lock, as a running HTTP server's worker (or another session's) would, so
the session's worker waits for it; without, each run's worker takes the lock and writes.

Each run uses a fresh database in a temporary directory. A tree runs through PYTHONPATH (the
installed script would import the checkout it was installed from); trees take turns, so drift
hits them alike. PYTHONDONTWRITEBYTECODE is dropped and each tree runs once unmeasured first:
a client's server imports cached bytecode (compiling the checkout costs ~90 ms a start).
"""

import argparse
import fcntl
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
MAX_RUNS = 50
SETTLED_SECONDS = 0.5  # the worker's CPU time unchanged this long: done starting
SETTLE_LIMIT_SECONDS = 10.0
METRICS = (
    ("initialize_ms", "initialize answer (wall)"),
    ("initialize_cpu_ms", "CPU by initialize"),
    ("tools_list_ms", "first tools/list answer (wall)"),
    ("tools_list_cpu_ms", "CPU by tools/list"),
    ("worker_cpu_ms", "archive worker's CPU, settled"),
)


def line(message: dict) -> bytes:
    return json.dumps(message).encode() + b"\n"


def cpu_ms(pid: int) -> float:
    """User and system CPU time of a running process, all its threads (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def child_pid(pid: int) -> int | None:
    """The process `pid` started (the archive worker), if any yet."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def settled_cpu_ms(server_pid: int) -> float:
    """The archive worker's CPU time once it stops growing (NaN without a worker)."""
    deadline, pid = time.monotonic() + SETTLE_LIMIT_SECONDS, None
    while pid is None and time.monotonic() < deadline:
        pid = child_pid(server_pid)
        time.sleep(0.02)
    if pid is None:
        return float("nan")
    last, since = cpu_ms(pid), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < SETTLED_SECONDS:
        time.sleep(0.05)
        now = cpu_ms(pid)
        if now != last:
            last, since = now, time.monotonic()
    return last


def hold_lock(archive_dir: Path):
    """The archive's lock (ops/supervisor.exclusive's file), held by this process until closed."""
    handle = open(archive_dir.with_name(archive_dir.name + ".lock"), "a+")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def one_run(tree: Path, archive_held: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="stdio-startup-") as directory:
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{directory}/agent_mail.db", "ARCHIVE_DIR": f"{directory}/archive",
               "ATTACHMENTS_DIR": f"{directory}/attachments", "LOG_LEVEL": "WARNING", "PYTHONPATH": str(tree)}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        lock = hold_lock(Path(directory) / "archive") if archive_held else None
        try:
            started = time.perf_counter()
            server = subprocess.Popen(COMMAND, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=directory)
            try:
                result = {}
                for requests, answer_id, name in ((line(INITIALIZE), 1, "initialize"),
                                                  (line(INITIALIZED) + line(TOOLS_LIST), 2, "tools_list")):
                    server.stdin.write(requests)
                    server.stdin.flush()
                    assert json.loads(server.stdout.readline())["id"] == answer_id
                    result[f"{name}_ms"] = (time.perf_counter() - started) * 1000
                    result[f"{name}_cpu_ms"] = cpu_ms(server.pid)
                result["worker_cpu_ms"] = settled_cpu_ms(server.pid)
                server.stdin.close()
                server.wait(timeout=30)
            finally:
                if server.poll() is None:
                    server.kill()
                    server.wait()
        finally:
            if lock:
                lock.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout (repeatable); default: this one")
    parser.add_argument("--runs", type=int, default=10, help=f"per tree (at most {MAX_RUNS})")
    parser.add_argument("--archive-held", action="store_true", help="hold the archive's lock: the session's worker waits")
    args = parser.parse_args()
    runs = max(1, min(args.runs, MAX_RUNS))
    trees = [tree.resolve() for tree in (args.tree or [ROOT])]
    for tree in trees:
        one_run(tree, args.archive_held)  # writes the tree's bytecode cache
    results: dict[Path, list[dict]] = {tree: [] for tree in trees}
    for number in range(runs):
        for tree in (trees if number % 2 == 0 else trees[::-1]):
            results[tree].append(one_run(tree, args.archive_held))
    first = trees[0]
    print(f"median over {runs} runs per tree{' (archive lock held: the worker waits)' if args.archive_held else ''};"
          " change against the first tree")
    for key, label in METRICS:
        base = statistics.median(r[key] for r in results[first])
        cells = []
        for tree in trees:
            value = statistics.median(r[key] for r in results[tree])
            cells.append(f"{tree.name}: {value:7.1f} ms" + ("" if tree == first else f" ({(value / base - 1) * 100:+.0f}%)"))
        print(f"{label:<32} " + "   ".join(cells))


if __name__ == "__main__":
    main()
