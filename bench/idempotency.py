"""The cost of idempotency keys on send_message throughput: MCP tools/call at c50 with wrk,
without and with a key per send, alternating (before/after in the same run; the machine drifts).

    .venv/bin/python bench/idempotency.py [--duration 5] [--rounds 2] [--connections 50]

Starts uvicorn on a fresh temporary database (the git archive off, so only the write path is
measured), seeds a project, then runs bench/mcp_send_message.lua with BENCH_IDEMPOTENCY_KEYS
unset and set. Target: with keys at most 10% slower. Also prints the server's CPU time per
request (from /proc): steadier than req/s when other work shares the machine.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import HTTP_PROTOCOL, _running  # noqa: E402

BENCH = Path(__file__).resolve().parent
PROJECT = "/bench/idempotency"


def seed(url: str) -> None:
    with httpx.Client(base_url=f"{url}/api", timeout=30) as client:
        client.post("/ensure_project", json={"human_key": PROJECT}).raise_for_status()
        for name in ("BlueLake", "GreenCastle"):
            client.post("/register_agent", json={"project_key": PROJECT, "program": "b", "model": "b", "agent_name": name}).raise_for_status()
        client.post("/set_contact_policy", json={"project_key": PROJECT, "agent_name": "BlueLake", "policy": "open"}).raise_for_status()


def server_cpu_seconds() -> float:
    """CPU time (user + system) of this process's children: the server (wrk has exited)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # ppid
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def wrk(url: str, args, keys: bool) -> tuple[float, float, int, float]:
    """(req/s, p99 ms, errors, server CPU µs per request) of one wrk run. On a shared machine
    req/s swings with the neighbours' load; the server's CPU per request much less."""
    env = {**os.environ, "BENCH_IDEMPOTENCY_KEYS": "1" if keys else "0"}
    cpu = server_cpu_seconds()
    out = subprocess.run(
        ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", "-s", str(BENCH / "mcp_send_message.lua"),
         f"{url}/mcp", "--", PROJECT],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
    errors = int(re.search(r"ERRORS (\d+)", out).group(1)) if "ERRORS" in out else -1
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return rate, p99_ms, errors, (server_cpu_seconds() - cpu) / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-idem-") as directory:
        command = lambda port: [sys.executable, "-m", "uvicorn", "chalicelib.transports.asgi:app", "--port", str(port),  # noqa: E731
                                "--http", HTTP_PROTOCOL, "--log-level", "warning", "--no-access-log"]
        # As tests/servers.py starts it, with more time to start on a loaded machine.
        with _running(command, Path(directory) / "bench.db", {"ARCHIVE_ENABLED": "false"}, ready="/ready", timeout=120) as url:
            seed(url)
            wrk(url, argparse.Namespace(connections=args.connections, duration=2), keys=False)  # warm-up
            results = {False: [], True: []}
            for _ in range(args.rounds):
                for keys in (False, True):
                    results[keys].append(wrk(url, args, keys))
                    rate, p99, errors, cpu = results[keys][-1]
                    print(f"{'with keys' if keys else 'no keys  '}  {rate:8.0f} req/s  p99 {p99:6.1f} ms  errors {errors}"
                          f"  server CPU {cpu:5.0f} µs/request", flush=True)
    plain, keyed = (statistics.median(r[0] for r in results[k]) for k in (False, True))
    print(f"median: no keys {plain:.0f} req/s, with keys {keyed:.0f} req/s: {100 * (keyed / plain - 1):+.1f}%")
    plain, keyed = (statistics.median(r[3] for r in results[k]) for k in (False, True))
    print(f"median server CPU: no keys {plain:.0f} µs/request, with keys {keyed:.0f} µs/request: {100 * (keyed / plain - 1):+.1f}%")


if __name__ == "__main__":
    main()
