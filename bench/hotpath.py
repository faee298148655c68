"""CPU per request of the hot paths, in-process, through uvicorn's HTTP protocol: several code trees.

    .venv/bin/python bench/hotpath.py --tree /path/to/old-checkout --tree . [--rounds 3] [--requests 4000]
    .venv/bin/python bench/hotpath.py --tree . --profile fetch      # cProfile of one scenario, top functions
    .venv/bin/python bench/hotpath.py --tree /path/to/old-checkout --tree . --scenarios writer

bench/run.py measures req/s through the kernel, and on this shared 2-core machine its numbers
swing by ±15% from one minute to the next. This drives the same server code without sockets:
each tree's app is loaded the way `uvicorn` loads it (chalicelib/transports/http_protocol.py, the
same logging set-up, the lifespan: migrations, archive worker, gc.freeze), seeded as bench/run.py
seeds it, and fed raw HTTP/1.1 requests through 50 protocol instances with a fake transport (a
round = one request on each, then the loop runs until all 50 are answered, as wrk's 50
connections do). It prints the process's CPU time per request (all its threads: the writer
thread counts for send_message) — what limits req/s when the server is CPU-bound. Trees take
turns, each in a fresh process, so drift hits them alike. A tree needs no script of its own:
the child runs with the tree as its working directory and first on sys.path.

`writer` is the writer thread's own CPU per send, without HTTP: batches of 50 sends, each one
`Writer._commit` as the server's writer thread runs it. Under load that thread limits
send_message (it runs every write), so this is what a change to the write path costs.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = "/bench/project"
CONNECTIONS = 50
SCENARIOS = ("health", "fetch", "send", "writer")
WRITER_BATCH = 50


def request(method: str, path: str, body: bytes = b"", mcp: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n"
    if body:
        head += "Content-Type: application/json\r\n" + (f"Accept: application/json, text/event-stream\r\n" if mcp else "")
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


def tools_call(number: int, name: str, arguments: dict) -> bytes:
    call = {"jsonrpc": "2.0", "id": number, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
    return request("POST", "/mcp", json.dumps(call, separators=(",", ":")).encode(), mcp=True)


class Transport:
    """The little of asyncio.Transport that uvicorn's protocol uses; counts complete responses."""

    def __init__(self, port: int, driver: "Driver") -> None:
        self.port, self.driver, self.last = port, driver, b""

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", self.port)}.get(name, default)

    def write(self, data: bytes) -> None:
        self.last = data
        self.driver.answered(data.count(b"HTTP/1.1 "))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class Driver:
    def __init__(self, config, state) -> None:
        self.protocols, self.transports = [], []
        for n in range(CONNECTIONS):
            protocol = config.http_protocol_class(config=config, server_state=state, app_state={})
            transport = Transport(40000 + n, self)
            protocol.connection_made(transport)
            self.protocols.append(protocol)
            self.transports.append(transport)
        self.pending, self.done = 0, None

    def answered(self, count: int) -> None:
        self.pending -= count
        if self.pending <= 0 and self.done is not None:
            self.done.set()

    async def round(self, requests: list[bytes]) -> None:
        """One request on each of the first len(requests) connections; until all are answered."""
        self.pending, self.done = len(requests), asyncio.Event()
        for protocol, raw in zip(self.protocols, requests):
            protocol.data_received(raw)
        await asyncio.wait_for(self.done.wait(), 30)

    async def one(self, raw: bytes) -> bytes:
        await self.round([raw])
        return self.transports[0].last


def scenario_requests(name: str, counter: list[int]) -> list[bytes]:
    if name == "health":
        return [request("GET", "/health")] * CONNECTIONS
    if name == "fetch":
        return [tools_call(1, "fetch_inbox", {"project_key": PROJECT, "agent_name": "BlueLake"})] * CONNECTIONS
    batch = []
    for _ in range(CONNECTIONS):
        counter[0] += 1
        subject = f"bench-send {counter[0]}"
        batch.append(tools_call(counter[0], "send_message", {"project_key": PROJECT, "sender_name": "GreenCastle",
                                                             "to": ["BlueLake"], "subject": subject, "body_md": f"Body of {subject}."}))
    return batch


async def child(args) -> dict:
    import uvicorn.config
    from uvicorn.server import ServerState

    config = uvicorn.config.Config("chalicelib.transports.asgi:app", http="chalicelib.transports.http_protocol:HttpProtocol",
                                   log_level="warning", access_log=False)
    config.load()  # as uvicorn does: its logging set-up, then the app's import
    lifespan = config.lifespan_class(config)
    await lifespan.startup()
    driver = Driver(config, ServerState())

    async def post(tool: str, **body) -> None:
        answer = await driver.one(request("POST", f"/api/{tool}", json.dumps(body).encode()))
        assert b" 200 OK" in answer.split(b"\r\n", 1)[0], answer

    await post("ensure_project", human_key=PROJECT)
    for name in ("BlueLake", "GreenCastle"):
        await post("register_agent", project_key=PROJECT, program="bench", model="bench", name=name)
    await post("set_contact_policy", project_key=PROJECT, agent_name="BlueLake", policy="open")
    for n in range(20):
        await post("send_message", project_key=PROJECT, sender_name="GreenCastle", to=["BlueLake"], subject=f"seed {n}", body_md=f"Seed message {n}.")
    answer = await driver.one(scenario_requests("fetch", [0])[0])
    assert answer.count(b'"subject":"seed') == 20 and b'"isError":false' in answer, answer[:500]

    async def archive_drained() -> None:  # as bench/run.py: the worker's backlog is not what is measured
        for _ in range(600):
            answer = await driver.one(request("GET", "/api/archive_status"))
            if b'"pending":0' in answer:
                return
            await asyncio.sleep(0.1)

    results, counter = {}, [0]
    rounds = max(1, args.requests // CONNECTIONS)
    for name in args.scenarios:
        if name == "writer":
            results[name] = writer_cpu(rounds, counter)
            continue
        for _ in range(max(1, rounds // 5)):  # warm-up: lazy imports, caches
            await driver.round(scenario_requests(name, counter))
        await archive_drained()
        batches = [scenario_requests(name, counter) for _ in range(rounds)]
        profiler = None
        if args.profile == name:
            import cProfile
            profiler = cProfile.Profile()
            profiler.enable()
        chunks = []  # CPU per request of each tenth: the least is the least disturbed by the machine's other work
        for start in range(0, rounds, max(1, rounds // 10)):
            chunk = batches[start:start + max(1, rounds // 10)]
            cpu = time.process_time()
            for batch in chunk:
                await driver.round(batch)
            chunks.append((time.process_time() - cpu) / (len(chunk) * CONNECTIONS) * 1e6)
        if profiler:
            profiler.disable()
            profiler.dump_stats(args.profile_out)
        last = driver.transports[0].last
        assert b" 200 OK" in last and (name == "health" or b'"isError":false' in last), last[:500]
        results[name] = {"cpu_us": statistics.median(chunks), "min_us": min(chunks)}
    await lifespan.shutdown()
    return results


def writer_cpu(batches: int, counter: list[int]) -> dict:
    """The writer thread's own CPU per send (what limits send_message under load), without HTTP:
    batches of WRITER_BATCH sends, each one `Writer._commit` as the server's writer thread runs it."""
    from chalicelib import invoke
    from chalicelib.config import get_settings
    from chalicelib.tools import tools_by_name

    writer = invoke.Writer.__new__(invoke.Writer)  # its _commit, without a thread of its own
    writer.settings = get_settings()
    send, loop = tools_by_name()["send_message"], asyncio.get_running_loop()
    principal = (invoke.caller(None),) if hasattr(invoke, "caller") else ()  # older trees take none
    copies = ((),) if hasattr(invoke, "lambda_copies") else ()  # how Lambda weighs the answer: () off Lambda (older trees: none)

    def batch() -> list:
        jobs = []
        for _ in range(WRITER_BATCH):
            counter[0] += 1
            args = invoke.parse(send, {"project_key": PROJECT, "sender_name": "GreenCastle", "to": ["BlueLake"],
                                       "subject": f"bench-send {counter[0]}", "body_md": f"Body of bench-send {counter[0]}."})
            jobs.append((send, args, *principal, *copies, loop.create_future()))
        return jobs

    for _ in range(max(1, batches // 5)):  # warm-up
        writer._commit(batch())
    chunks = []
    for _ in range(10):
        jobs = [batch() for _ in range(max(1, batches // 10))]
        cpu = time.thread_time()
        for one in jobs:
            writer._commit(one)
        chunks.append((time.thread_time() - cpu) / (len(jobs) * WRITER_BATCH) * 1e6)
    return {"cpu_us": statistics.median(chunks), "min_us": min(chunks)}


def run_child(tree: Path, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="hotpath-") as directory:
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{directory}/bench.db", "ARCHIVE_DIR": f"{directory}/archive",
               "ATTACHMENTS_DIR": f"{directory}/attachments", "LOG_LEVEL": "WARNING", "MCP_LEAN_PATH": "true"}
        command = [sys.executable, str(Path(__file__).resolve()), "--child", "--requests", str(args.requests),
                   "--scenarios", ",".join(args.scenarios)]
        if args.profile:
            command += ["--profile", args.profile, "--profile-out", args.profile_out]
        out = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            sys.exit(f"{tree} failed:\n{out.stdout}\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout (repeatable); default: this one")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=4000, help="per scenario and run")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--profile", choices=SCENARIOS[:3], help="cProfile this scenario (one run per tree) and print its top functions")
    parser.add_argument("--profile-out", default="")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.scenarios = args.scenarios.split(",")
    if args.child:
        sys.path.insert(0, os.getcwd())
        try:
            import uvloop
            uvloop.install()  # as uvicorn's "auto" loop does
        except ImportError:
            pass
        print(json.dumps(asyncio.run(child(args))))
        return
    trees = [tree.resolve() for tree in (args.tree or [Path(__file__).resolve().parent.parent])]
    if args.profile:
        import pstats
        for tree in trees:
            args.profile_out = args.profile_out or tempfile.mktemp(suffix=".prof")
            print(f"== {tree}: {run_child(tree, args)}")
            stats = pstats.Stats(args.profile_out)
            print(f"function calls per request (event-loop thread): {stats.total_calls / args.requests:.1f}")
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats("chalicelib", 45)
        return
    runs: dict[Path, list[dict]] = {tree: [] for tree in trees}
    for number in range(args.rounds):
        for tree in (trees if number % 2 == 0 else trees[::-1]):
            runs[tree].append(run_child(tree, args))
            print(f"round {number + 1} {tree}: " + ", ".join(f"{k} {v['cpu_us']:.1f} (min {v['min_us']:.1f})" for k, v in runs[tree][-1].items()), flush=True)
    first = trees[0]
    for key, title in (("cpu_us", "median"), ("min_us", "least")):
        print(f"\nCPU µs per request, {title} of each run's tenths, median over {args.rounds} runs (change against the first tree)")
        for name in args.scenarios:
            base = statistics.median(r[name][key] for r in runs[first])
            cells = []
            for tree in trees:
                value = statistics.median(r[name][key] for r in runs[tree])
                cells.append(f"{tree.name}: {value:7.1f}" + ("" if tree == first else f" ({(value / base - 1) * 100:+.1f}%)"))
            print(f"{name:<7} " + "   ".join(cells))


if __name__ == "__main__":
    main()
