"""Reads over big bodies: each call's time and the longest /health wait meanwhile, for two trees.

    git archive <commit> | tar -x -C /tmp/before
    .venv/bin/python bench/read_bounds.py --before /tmp/before [--after .] [--messages 500] [--sustained 5]

Seeds one database (through the --after tree's server: both trees share the schema) with
--messages messages of 256 KiB bodies in one thread and a product linking their project (the
security review's mailbox, session 16), then starts each tree's server on it in turn (uvicorn,
127.0.0.1, no authentication) and times each call three times while a thread asks GET /health
every 5 ms: the call's median, the longest /health wait, the status and the answer's size.
--sustained N: two clients loop the attack for N s while /health and a small send_message from
another client are timed (p50). Last, the server's peak memory (VmHWM). Not a test; the machine
is shared, so compare the two trees of one run.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

PROJECT = "/bench/big"
BODY_LINE = "- decided: the quick brown fox jumps over the lazy dog " * 4 + "\n"
BODY = (BODY_LINE * (262_144 // len(BODY_LINE) + 1))[: 262_144 - 10]
PHRASES = '"the quick" AND "lazy dog" AND fox AND jumps AND over'
CALLS = {
    "summarize_thread_product": dict(product_key="big", thread_id="big", agent_name="Bob"),
    "search_messages phrases, limit 20": dict(project_key=PROJECT, query=PHRASES, agent_name="Bob", limit=20),
    "search_messages phrases, limit 500": dict(project_key=PROJECT, query=PHRASES, agent_name="Bob", limit=500),
    "search_messages fox, limit 20": dict(project_key=PROJECT, query="fox", agent_name="Bob", limit=20),
    "fetch_outbox bodies, limit 500": dict(project_key=PROJECT, agent_name="Eve", include_bodies=True, limit=500),
    "fetch_inbox bodies, limit 500": dict(project_key=PROJECT, agent_name="Bob", include_bodies=True, limit=500),
    "whois, 60,000 unknown keys": dict(project_key=PROJECT, agent_name="Bob", **{f"k{n}": 1 for n in range(60_000)}),
}
SUSTAINED = ["summarize_thread_product", "search_messages phrases, limit 500", "fetch_outbox bodies, limit 500"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """uvicorn serving `tree`'s code on `database`, on 127.0.0.1."""

    def __init__(self, tree: Path, database: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "ARCHIVE_ENABLED": "false", "LOG_LEVEL": "WARNING",
               "ATTACHMENTS_DIR": str(database.parent / "attachments"), "PYTHONPATH": str(tree)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "chalicelib.transports.asgi:app", "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", "--no-access-log"], cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(600):
            try:
                if httpx.get(f"{self.url}/health").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("the server did not start")

    def peak_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def seed(url: str, messages: int) -> None:
    with httpx.Client(base_url=url, timeout=60) as client:
        def post(tool, **arguments):
            return client.post(f"/api/{tool}", json=arguments).raise_for_status().json()

        post("ensure_project", human_key=PROJECT)
        for name in ("Bob", "Eve", "Alice"):
            post("register_agent", project_key=PROJECT, name=name, program="bench", model="bench")
            post("set_contact_policy", project_key=PROJECT, agent_name=name, policy="open")
        post("ensure_product", product_key="big", name="Big")
        post("products_link", product_key="big", project_key=PROJECT)
        for n in range(messages):
            post("send_message", project_key=PROJECT, sender_name="Eve", to=["Bob"], subject=f"big {n}", body_md=BODY,
                 thread_id="big", ack_required=True)


class HealthProbe:
    """GET /health every 5 ms from a thread; `worst` is the longest wait since the last reset."""

    def __init__(self, url: str) -> None:
        self.url, self.worst, self.waits, self.stopped = url, 0.0, [], threading.Event()
        self.thread = threading.Thread(target=self._probe, daemon=True)
        self.thread.start()

    def _probe(self) -> None:
        with httpx.Client(base_url=self.url) as client:
            while not self.stopped.is_set():
                started = time.perf_counter()
                client.get("/health")
                waited = time.perf_counter() - started
                self.worst = max(self.worst, waited)
                self.waits.append(waited)
                time.sleep(0.005)

    def reset(self) -> None:
        self.worst, self.waits = 0.0, []

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def single_calls(url: str) -> dict[str, str]:
    rows = {}
    probe = HealthProbe(url)
    with httpx.Client(base_url=url, timeout=120) as client:
        for label, arguments in CALLS.items():
            times, worst = [], 0.0
            for _ in range(3):
                probe.reset()
                time.sleep(0.1)
                started = time.perf_counter()
                answer = client.post(f"/api/{label.split()[0].rstrip(',')}", content=json.dumps(arguments),
                                     headers={"Content-Type": "application/json"})
                times.append(time.perf_counter() - started)
                time.sleep(0.05)
                worst = max(worst, probe.worst)
            rows[label] = (f"{statistics.median(times) * 1000:7.0f} ms  /health worst {worst * 1000:5.0f} ms"
                           f"  {answer.status_code}  {len(answer.content):>9,} B")
    probe.stop()
    return rows


def sustained(url: str, seconds: float) -> dict[str, str]:
    rows = {}
    for label in SUSTAINED:
        tool, arguments, stop = label.split()[0].rstrip(","), CALLS[label], time.time() + seconds
        statuses: list[int] = []

        def attack():
            with httpx.Client(base_url=url, timeout=120) as client:
                while time.time() < stop:
                    statuses.append(client.post(f"/api/{tool}", json=arguments).status_code)

        sends: list[float] = []

        def send():
            with httpx.Client(base_url=url, timeout=120) as client:
                while time.time() < stop:
                    started = time.perf_counter()
                    client.post("/api/send_message", json=dict(project_key=PROJECT, sender_name="Alice", to=["Eve"],
                                                               subject="ping", body_md="p")).raise_for_status()
                    sends.append(time.perf_counter() - started)
                    time.sleep(0.05)

        probe = HealthProbe(url)
        threads = [threading.Thread(target=attack) for _ in range(2)] + [threading.Thread(target=send)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        probe.stop()
        rows[label] = (f"/health p50 {statistics.median(probe.waits) * 1000:6.1f} ms max {max(probe.waits) * 1000:6.0f} ms;"
                       f" send_message p50 {statistics.median(sends) * 1000:6.1f} ms; attack calls"
                       f" {dict(sorted({s: statuses.count(s) for s in statuses}.items()))}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--sustained", type=float, default=0)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        database = Path(directory) / "db.sqlite"
        server = Server(options.after.resolve(), database)
        seed(server.url, options.messages)
        server.stop()
        for name, tree in (("before", options.before), ("after", options.after)):
            server = Server(tree.resolve(), database)
            try:
                print(f"== {name}: {tree}")
                for label, row in single_calls(server.url).items():
                    print(f"  {label:38} {row}")
                if options.sustained:
                    for label, row in sustained(server.url, options.sustained).items():
                        print(f"  sustained {label:38} {row}")
                print(f"  peak memory {server.peak_mb():.0f} MB")
            finally:
                server.stop()


if __name__ == "__main__":
    main()
