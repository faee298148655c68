"""Attack cost: /health latency while the worst request of each kind runs in parallel.

    .venv/bin/python bench/attack.py [--duration 10]

Starts the real server (uvicorn, as scripts/serve does) on a fresh database, seeds the largest
inputs the API accepts, then for --duration seconds runs one client per attack in a loop while
another, in a process of its own (as a load balancer's health check would be: not waiting on
the attack clients' interpreter), asks GET /health one request at a time. Prints each attack's requests, statuses and
latency, and /health's p50/p99/max; exits 1 if /health's p99 is 50 ms or more (docs/limits.md).
"""

import argparse
import multiprocessing
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import running_server  # noqa: E402

PROJECT = "attack"
BODY = "x" * 262_144  # the largest body a message may have
GLOB = "*" + "a*" * 100 + "c"
GLOB_PATHS = ["*" + "b*" * 100 + f"d{n}" for n in range(150)]  # issue 11's request (~31 KB)
DEEP_PATHS = ["*" + "b*" * 500 + f"d{n}" for n in range(200)]  # 1 KiB patterns, ~200 KB body


def seed(url: str) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        def post(tool, **arguments):
            return client.post(f"/api/{tool}", json=arguments).raise_for_status().json()

        post("ensure_project", human_key=f"/{PROJECT}")
        for name in ("BlueLake", "GreenCastle"):
            post("register_agent", project_key=PROJECT, name=name, program="bench", model="bench")
        post("set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="open")
        for n in range(40):
            post("send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject=f"big {n}",
                 body_md=BODY, thread_id="BIG")
        post("file_reservation_paths", project_key=PROJECT, agent_name="BlueLake", paths=[GLOB, "*" + "a*" * 500 + "c"])


def slow_reader(url: str) -> int:
    """Asks for a 5 MB answer and never reads it (the server drops it after SEND_TIMEOUT_SECONDS)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((host, int(port)))
        query = f"project_key={PROJECT}&agent_name=GreenCastle&include_bodies=true&limit=20"
        sock.sendall(f"GET /api/fetch_inbox?{query} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        time.sleep(3)
    return 0


def probe_health(url: str, seconds: float, answers) -> None:
    """GET /health one request at a time for `seconds`; sends back (alone, under attack) latencies:
    the first 200 before the attacks start (the parent waits for them), then the rest."""
    with httpx.Client(base_url=url, timeout=10) as client:
        def timed() -> float:
            started = time.perf_counter()
            client.get("/health").raise_for_status()
            return time.perf_counter() - started

        answers.send([timed() for _ in range(200)])
        under_attack, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            under_attack.append(timed())
            time.sleep(0.005)
        answers.send(under_attack)


ATTACKS = {
    "check_file_reservations, issue 11's globs": ("check_file_reservations", {"agent_name": "GreenCastle", "paths": GLOB_PATHS}),
    "check_file_reservations, 200 x 1 KiB globs": ("check_file_reservations", {"agent_name": "GreenCastle", "paths": DEEP_PATHS}),
    "get_thread, a page of 256 KiB bodies": ("get_thread", {"thread_id": "BIG"}),
    "summarize_thread, 40 x 256 KiB": ("summarize_thread", {"thread_id": "BIG"}),
    "fetch_inbox, 20 x 256 KiB bodies": ("fetch_inbox", {"agent_name": "GreenCastle", "include_bodies": True, "limit": 20}),
    "fetch_inbox, 500 bodies (over the cap)": ("fetch_inbox", {"agent_name": "GreenCastle", "include_bodies": True, "limit": 500}),
    "send_message, 256 KiB body": ("send_message", {"sender_name": "BlueLake", "to": ["GreenCastle"], "subject": "s",
                                                    "body_md": BODY, "thread_id": "SENT"}),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, \
            running_server(Path(directory) / "attack.db", ARCHIVE_ENABLED="false", SEND_TIMEOUT_SECONDS="2") as url:
        seed(url)
        stop = threading.Event()
        results: dict[str, list[tuple[int, float]]] = {name: [] for name in [*ATTACKS, "slow reader (never reads 5 MB)"]}

        def attack(name: str, tool: str, arguments: dict) -> None:
            with httpx.Client(base_url=url, timeout=120) as client:
                while not stop.is_set():
                    started = time.perf_counter()
                    status = client.post(f"/api/{tool}", json={"project_key": PROJECT, **arguments}).status_code
                    results[name].append((status, time.perf_counter() - started))

        def slow() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                slow_reader(url)
                results["slow reader (never reads 5 MB)"].append((0, time.perf_counter() - started))

        threads = [threading.Thread(target=attack, args=(name, *call)) for name, call in ATTACKS.items()]
        threads.append(threading.Thread(target=slow))
        answers, child_end = multiprocessing.Pipe(duplex=False)
        prober = multiprocessing.get_context("spawn").Process(target=probe_health, args=(url, args.duration, child_end))
        prober.start()
        baseline = answers.recv()  # /health alone first
        for thread in threads:
            thread.start()
        health = answers.recv()
        prober.join()
        stop.set()
        for thread in threads:
            thread.join()

    print(f"{'attack (in parallel, each in a loop)':45} {'requests':>8} {'statuses':>14} {'p50 ms':>8} {'max ms':>8}")
    for name, done in results.items():
        times = [seconds * 1000 for _, seconds in done] or [0.0]
        statuses = ",".join(str(s) for s in sorted({s for s, _ in done})) or "-"
        print(f"{name:45} {len(done):8} {statuses:>14} {statistics.median(times):8.1f} {max(times):8.1f}")
    for label, samples in (("GET /health alone", baseline), ("GET /health under attack", health)):
        ms = sorted(seconds * 1000 for seconds in samples)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
        print(f"{label:45} {len(ms):8} {'':>14} p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms")
    return 0 if p99 < 50 else 1


if __name__ == "__main__":
    sys.exit(main())
