"""The server's memory under long, varied use: does anything it keeps grow without bound?

    .venv/bin/python bench/soak.py [--rounds 30] [--requests 400] [--workers 8]

Starts the real server (uvicorn, archive worker included) on a fresh database and sends rounds
of mixed traffic from `--workers` threads: new agents and threads, sends and replies of varied
bodies (some long), inboxes, searches for ever new words, ids and prefixes, threads, the web
UI's pages, MCP calls (the lean path and the SDK's), reservations, bad requests. Everything
differs from round to round, as months of use would. Prints the server's RSS after each round
and its growth per 1,000 requests over the second half: caches that are bounded level off.
"""

import argparse
import collections
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import running_server  # noqa: E402

PROJECT = "/soak/shop"
SLUG = "soak-shop"
MCP = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
ANSWERS: collections.Counter = collections.Counter()  # (first path segment, status): the traffic was what it meant to be


def server_rss_mb(port: int) -> float:
    """The resident memory of the process listening on the port."""
    found = subprocess.run(["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True).stdout
    pid = found.split("pid=")[1].split(",")[0]
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) / 1024


def word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 9)))


def body(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.05:
        return "<" * rng.randint(50_000, 200_000)  # a pasted log: 4x its size as HTML
    if shape < 0.3:
        return f"## {word(rng)}\n\n- [ ] {word(rng)}\n- **{word(rng)}** `{word(rng)}()`\n\n| a | b |\n|---|---|\n| {word(rng)} | 1 |\n"
    return " ".join(word(rng) for _ in range(rng.randint(5, 300))) + f" CART-{rng.randint(1, 10**6)}"


class Traffic:
    def __init__(self, url: str, seed: int) -> None:
        tally = lambda response: ANSWERS.update([(response.request.url.path.split("/")[1] or "/", response.status_code)])  # noqa: E731
        self.http = httpx.Client(base_url=url, timeout=60, event_hooks={"response": [tally]})
        self.rng = random.Random(seed)
        self.agents = ["BlueLake", "RedFox"]
        self.threads = ["T-0"]
        self.mcp_id = 0

    def call(self, tool: str, **args):
        return self.http.post(f"/api/{tool}", json=args)

    def mcp(self, method: str, **params):
        self.mcp_id += 1
        return self.http.post("/mcp", headers=MCP, json={"jsonrpc": "2.0", "id": self.mcp_id, "method": method, "params": params})

    def one(self) -> None:
        rng = self.rng
        choice = rng.random()
        agent = rng.choice(self.agents)
        if choice < 0.03:
            name = f"{rng.choice(['Blue', 'Red', 'Green', 'Gold', 'Silver'])}{rng.choice(['Lake', 'Fox', 'Hill', 'Stone'])}{rng.randint(1, 10**6)}"
            if self.call("register_agent", project_key=SLUG, program="soak", model="m", name=name).status_code == 200:
                self.call("set_contact_policy", project_key=SLUG, agent_name=name, policy="open")
                self.agents.append(name)
        elif choice < 0.25:
            thread = rng.choice(self.threads) if rng.random() < 0.7 else f"T-{rng.randint(1, 10**9)}"
            self.threads.append(thread)
            self.call("send_message", project_key=SLUG, sender_name=agent, to=rng.sample(self.agents, min(2, len(self.agents))),
                      subject=word(rng), body_md=body(rng), thread_id=thread, importance=rng.choice(["normal", "high", "urgent"]))
        elif choice < 0.35:
            self.call("fetch_inbox", project_key=SLUG, agent_name=agent, include_bodies=rng.random() < 0.3)
        elif choice < 0.45:
            query = rng.choice([word(rng), f"CART-{rng.randint(1, 10**6)}", word(rng)[:4] + "*", f'"{word(rng)} {word(rng)}"'])
            self.call("search_messages", project_key=SLUG, query=query)
        elif choice < 0.52:
            self.call("get_thread", project_key=SLUG, thread_id=rng.choice(self.threads))
        elif choice < 0.62:
            page = rng.choice(["/", "/ui/projects", f"/ui/project?p={SLUG}", f"/ui/thread?p={SLUG}&t={rng.choice(self.threads)}",
                               f"/ui/search?q={word(rng)}", f"/ui/agent?p={SLUG}&a={agent}"])
            self.http.get(page)
        elif choice < 0.75:
            self.mcp("tools/call", name="fetch_inbox", arguments={"project_key": SLUG, "agent_name": agent, "limit": 5})
        elif choice < 0.78:
            self.mcp(rng.choice(["tools/list", "resources/list", "prompts/list", "ping"]))
        elif choice < 0.82:
            self.mcp("resources/read", uri=f"resource://inbox/{agent}?project={SLUG}")
        elif choice < 0.9:
            path = f"src/{word(rng)}/**"
            answer = self.call("file_reservation_paths", project_key=SLUG, agent_name=agent, paths=[path], ttl_seconds=60)
            if answer.status_code == 200 and rng.random() < 0.8:
                self.call("release_file_reservations", project_key=SLUG, agent_name=agent, paths=[path])
        elif choice < 0.95:
            self.call("send_message", project_key=SLUG, sender_name=word(rng), to=["x"], body_md="")  # 422 / 404
        else:
            self.http.post("/mcp", headers=MCP, content=b"{" + word(rng).encode())  # a parse error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=400, help="per round")
    parser.add_argument("--workers", type=int, default=8)
    options = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="agent-mail-soak-"))
    with running_server(directory / "db.sqlite") as url:
        port = int(url.rsplit(":", 1)[1])
        setup = Traffic(url, 0)
        setup.call("ensure_project", human_key=PROJECT)
        for name in setup.agents:
            setup.call("register_agent", project_key=SLUG, program="soak", model="m", name=name)
            setup.call("set_contact_policy", project_key=SLUG, agent_name=name, policy="open")
        workers = [Traffic(url, seed) for seed in range(1, options.workers + 1)]
        for worker in workers:
            worker.agents = list(setup.agents)
        curve = [(0, server_rss_mb(port))]
        print(f"round 0: {curve[0][1]:.0f} MB", flush=True)
        started = time.monotonic()
        with ThreadPoolExecutor(options.workers) as pool:
            for round_ in range(1, options.rounds + 1):
                share = options.requests // options.workers
                list(pool.map(lambda worker: [worker.one() for _ in range(share)], workers))
                curve.append((round_ * share * options.workers, server_rss_mb(port)))
                print(f"round {round_}: {curve[-1][0]:,} requests, {curve[-1][1]:.0f} MB "
                      f"({time.monotonic() - started:.0f} s)", flush=True)
    half = curve[len(curve) // 2:]
    growth = (half[-1][1] - half[0][1]) / max(1, half[-1][0] - half[0][0]) * 1000
    print("answers:", ", ".join(f"{path} {status}: {count}" for (path, status), count in sorted(ANSWERS.items())))
    print(f"peak {max(mb for _, mb in curve):.0f} MB; second half: {growth:+.2f} MB per 1,000 requests")


if __name__ == "__main__":
    main()
