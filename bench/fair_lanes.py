"""How long one credential's search waits while another credential floods heavy searches (the
slow-read lane, invoke.py and store/fair_lane.py), for several trees in one run.

    git archive <commit> | tar -x -C /tmp/before
    .venv/bin/python bench/fair_lanes.py --tree /tmp/before --tree . [--seconds 4] [--flooders 8] [--rounds 1]

Each tree's server (`python -m chalicelib serve`, bench/writer_hold.py's Server: 127.0.0.1, a fresh
database, bearer tokens "flood" and "other", no rate limits) is seeded with --messages messages
of 256 KiB; then --flooders clients of credential "flood" loop a heavy search (phrases, limit 100)
for --seconds, and meanwhile credential "other" asks a light search (limit 5), one at a time,
every 0.2 s. Printed per tree: the light search's time (p50, max) and the flood's searches done
(their p50). Trees take turns. Not a test: the machine is shared, compare trees of one run.
"""

import argparse
import statistics
import threading
import time
from pathlib import Path

import httpx

from writer_hold import Server

PROJECT = "/bench/fair-lanes"
LINE = "- decided: the quick brown fox jumps over the lazy dog " * 4 + "\n"
BODY = (LINE * (262_144 // len(LINE) + 1))[: 262_144 - 10]
HEAVY = {"project_key": PROJECT, "query": '"the quick" AND "lazy dog" AND fox AND jumps AND over', "limit": 100}
LIGHT = {"project_key": PROJECT, "query": "plan", "limit": 5}


def client(url: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120)


def seed(url: str, messages: int) -> None:
    with client(url, "other") as http:
        def post(tool: str, **arguments) -> None:
            http.post(f"/api/{tool}", json=arguments).raise_for_status()

        post("ensure_project", human_key=PROJECT)
        for name in ("BlueLake", "GreenCastle"):
            post("register_agent", project_key=PROJECT, name=name, program="bench", model="bench")
            post("set_contact_policy", project_key=PROJECT, agent_name=name, policy="open")
        post("send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="plan", body_md="the plan")
        for number in range(messages):
            post("send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject=f"big {number}",
                 body_md=BODY, thread_id="big")


def timed_searches(url: str, token: str, body: dict, until: float, pause: float, times: list[float]) -> None:
    with client(url, token) as http:
        while time.monotonic() < until:
            started = time.perf_counter()
            http.post("/api/search_messages", json=body).raise_for_status()
            times.append(time.perf_counter() - started)
            time.sleep(pause)


def one_tree(tree: Path, args) -> dict:
    server = Server(tree, AUTH_MODE="bearer", AUTH_BEARER_TOKENS="flood,other", REQUIRE_AGENT_TOKENS="false",
                    RATE_LIMIT_READS_PER_MINUTE="0", RATE_LIMIT_WRITES_PER_MINUTE="0", ARCHIVE_ENABLED="false")
    try:
        seed(server.url, args.messages)
        alone: list[float] = []
        timed_searches(server.url, "flood", HEAVY, time.monotonic() + 1, 0, alone)  # one heavy search, unhindered
        flood, light = [], []
        until = time.monotonic() + args.seconds
        flooders = [threading.Thread(target=timed_searches, args=(server.url, "flood", HEAVY, until, 0, flood))
                    for _ in range(args.flooders)]
        for thread in flooders:
            thread.start()
        time.sleep(0.5)  # the flood's queue fills
        timed_searches(server.url, "other", LIGHT, until, 0.2, light)
        for thread in flooders:
            thread.join()
        return {"heavy alone": statistics.median(alone), "light n": len(light), "light p50": statistics.median(light),
                "light max": max(light), "flood n": len(flood), "flood p50": statistics.median(flood)}
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout (repeatable); default: this one")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--messages", type=int, default=100)
    args = parser.parse_args()
    trees = [tree.resolve() for tree in (args.tree or [Path(__file__).resolve().parent.parent])]
    for number in range(args.rounds):
        for tree in (trees if number % 2 == 0 else trees[::-1]):
            got = one_tree(tree, args)
            print(f"round {number + 1} {tree}: heavy search alone {got['heavy alone'] * 1000:.0f} ms; "
                  f"other's light search p50 {got['light p50'] * 1000:.0f} ms, max {got['light max'] * 1000:.0f} ms "
                  f"({got['light n']} searches); flood {got['flood n']} searches, p50 {got['flood p50'] * 1000:.0f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
