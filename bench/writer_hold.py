"""How long one client's heavy write holds the other clients' writes (security review, session 16),
before/after in one run: a real server of each checkout on a fresh database, taking turns.

    .venv/bin/python bench/writer_hold.py --base ../agent-mail-before [--rounds 1] [--thread-messages 200]

Each scenario prints the heavy call's status and time, and how long other agents' tiny
send_message calls took meanwhile (started while it runs: they wait for the one writer thread):

- reservations: BlueLake holds 400 patterns that start with a star (`*b1*/**/*.py`, each overlapping
  every other such); GreenCastle asks for 400 more in one call (and how many were stored); then, 400
  held by each (50 a call), list_file_reservations (limit 500).
- images: one send with four 7060x7060 PNGs (one colour each, ~830 KiB of base64 in all).
- macro_prepare_thread: two clients call it in a loop for --seconds on a thread of --thread-messages
  messages of 256 KiB; a third sends a tiny message every 50 ms.
"""

import argparse
import base64
import io
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "/bench/writer-hold"
AGENTS = ("BlueLake", "GreenCastle", "RedStone", "PinkPond")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python -m chalicelib serve` of a checkout, on 127.0.0.1 and a fresh database (`settings`:
    more of its environment, e.g. AUTH_MODE)."""

    def __init__(self, checkout: Path, **settings: str) -> None:
        directory, port = Path(tempfile.mkdtemp(prefix="bench-writer-hold-")), free_port()
        env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "AUTH_MODE": "none", "LOG_LEVEL": "WARNING",
               "DATABASE_URL": f"sqlite:///{directory}/db.sqlite", "ARCHIVE_DIR": str(directory / "archive"),
               "ATTACHMENTS_DIR": str(directory / "attachments"), **settings}
        self.directory = directory
        self.process = subprocess.Popen([sys.executable, "-m", "chalicelib", "serve"], cwd=checkout, env=env,
                                        stdout=subprocess.DEVNULL, stderr=open(directory / "server.log", "wb"))
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the server of {checkout} did not start; see {directory}/server.log")
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        shutil.rmtree(self.directory, ignore_errors=True)


def post(url: str, tool: str, **arguments) -> tuple[int, dict, float]:
    started = time.perf_counter()
    answer = httpx.post(f"{url}/api/{tool}", json=arguments, timeout=600)
    return answer.status_code, answer.json(), time.perf_counter() - started


def setup(url: str) -> None:
    post(url, "ensure_project", human_key=PROJECT)
    for name in AGENTS:
        post(url, "register_agent", project_key=PROJECT, name=name, program="bench", model="bench")
        post(url, "set_contact_policy", project_key=PROJECT, agent_name=name, policy="open")


def tiny_send(url: str) -> float:
    status, _, took = post(url, "send_message", project_key=PROJECT, sender_name="PinkPond", to=["RedStone"], subject="ping",
                           body_md="p")
    assert status == 200
    return took


def beside(url: str, heavy) -> tuple[object, float]:
    """heavy()'s result, and how long a tiny send started 0.3 s into it took."""
    waited = []
    other = threading.Thread(target=lambda: (time.sleep(0.3), waited.append(tiny_send(url))))
    other.start()
    result = heavy()
    other.join()
    return result, waited[0]


def reservations(url: str) -> dict:
    globs = lambda letter: [f"*{letter}{n}*/**/*.py" for n in range(400)]  # noqa: E731
    post(url, "file_reservation_paths", project_key=PROJECT, agent_name="BlueLake", paths=globs("b"), exclusive=False)
    (status, _, took), waited = beside(url, lambda: post(url, "file_reservation_paths", project_key=PROJECT,
                                                         agent_name="GreenCastle", paths=globs("g")))
    stored = post(url, "renew_file_reservations", project_key=PROJECT, agent_name="GreenCastle", extend_seconds=1)[1]["renewed"]
    for start in range(0, 400, 50):  # the same 400 held on both sides (a refused call stored none), 50 a call
        post(url, "file_reservation_paths", project_key=PROJECT, agent_name="GreenCastle", paths=globs("g")[start:start + 50])
    listed, page, list_took = post(url, "list_file_reservations", project_key=PROJECT, limit=500)
    post(url, "release_file_reservations", project_key=PROJECT, agent_name="GreenCastle")
    return {"400 more: status": status, "took": took, "a send waited": waited, "stored": stored,
            "list_file_reservations (limit 500): status": listed, "rows": len(page.get("file_reservations", [])),
            "list took": list_took}


def images(url: str) -> dict:
    from PIL import Image

    pngs = []
    for n in range(4):
        out = io.BytesIO()
        Image.new("RGB", (7060, 7060), (n * 40, 90, 200)).save(out, "PNG", optimize=True)
        pngs.append({"name": f"p{n}.png", "content_base64": base64.b64encode(out.getvalue()).decode()})
    (status, _, took), waited = beside(url, lambda: post(url, "send_message", project_key=PROJECT, sender_name="BlueLake",
                                                         to=["GreenCastle"], subject="pics", body_md="x", attachments=pngs))
    return {"send 4 PNGs: status": status, "took": took, "a send waited": waited}


def macro_prepare_thread(url: str, messages: int, seconds: float) -> dict:
    body = ("- decided: the quick brown fox jumps over the lazy dog\n" * 4700)[:262_000]
    for n in range(messages):
        post(url, "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject=f"big {n}",
             body_md=body, thread_id="big", ack_required=True)
    stop, calls, waits = time.monotonic() + seconds, [], []

    def loop() -> None:
        while time.monotonic() < stop:
            calls.append(post(url, "macro_prepare_thread", project_key=PROJECT, thread_id="big", agent_name="GreenCastle",
                              program="p", model="m")[0])

    clients = [threading.Thread(target=loop) for _ in range(2)]
    for client in clients:
        client.start()
    while time.monotonic() < stop:
        waits.append(tiny_send(url))
        time.sleep(0.05)
    for client in clients:
        client.join()
    return {"calls": len(calls), "statuses": sorted(set(calls)), "sends": len(waits),
            "a send waited p50": statistics.median(waits), "max": max(waits)}


def one_side(checkout: Path, messages: int, seconds: float) -> dict:
    server = Server(checkout)
    try:
        setup(server.url)
        return {"reservations": reservations(server.url), "images": images(server.url),
                "macro_prepare_thread": macro_prepare_thread(server.url, messages, seconds)}
    finally:
        server.stop()


def show(value) -> str:
    return f"{value * 1000:,.0f} ms" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--thread-messages", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    sides = {"base": args.base.resolve(), "this": ROOT}
    for round_number in range(args.rounds):
        for side, checkout in (sides.items() if round_number % 2 == 0 else reversed(sides.items())):
            print(f"round {round_number + 1}: {side} ({checkout})", flush=True)
            for scenario, numbers in one_side(checkout, args.thread_messages, args.seconds).items():
                print(f"  {scenario}: " + "; ".join(f"{name} {show(value)}" for name, value in numbers.items()), flush=True)


if __name__ == "__main__":
    main()
