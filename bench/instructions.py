"""Before/after without the machine's noise: CPU instructions per request, counted by valgrind.

    .venv/bin/python bench/instructions.py --base ../agent-mail-before [--calls 1000] [--scenarios fetch,send,health]
                                           [--log-level INFO] [--archive]

Each checkout's ASGI app (its own code, this interpreter) runs in process under
`valgrind --tool=callgrind`, with counting switched on only around the measured calls: MCP
fetch_inbox of 20 messages, MCP send_message (50 at a time, so the writer commits them in
groups, as under load) or GET /health, after the same seed and warm-up as bench/run.py.
The count is the same from run to run (±0.5%), where req/s on this machine drifts ±15% and
more; it leaves out the kernel (sockets, fsync) and uvicorn's HTTP parsing, which both sides
share. Beside it, the bytes each call writes (/proc/self/io wchar: WAL pages, checkpoints,
log lines): the kernel's share of a commit grows with them. Both servers log as they do by
default (INFO: a line per request); `--log-level WARNING` leaves the request lines out.
`--archive` turns the git archive on as bench/run.py has it (a send then also writes its
outbox row); the archive worker, another process, is not started. Needs Debian's valgrind.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "/bench/project"


def count(checkout: Path, scenario: str, calls: int, log_level: str, archive: bool) -> tuple[int, int]:
    """Instructions and bytes written (to the database, its WAL, logs) per call of `scenario` in `checkout`."""
    signal = Path(tempfile.mkdtemp(prefix="agent-mail-instructions-"))
    try:
        process = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--callgrind-out-file=/dev/null",
             sys.executable, __file__, "--worker", str(checkout), scenario, str(calls), str(signal)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONHASHSEED": "0", "LOG_LEVEL": log_level,
                                                                         "ARCHIVE_ENABLED": "true" if archive else "false"},
        )
        while not (signal / "ready").exists():
            if process.poll() is not None:
                sys.exit(f"{checkout} {scenario}:\n{process.stdout.read()}")
            time.sleep(0.1)
        subprocess.run(["callgrind_control", "--instr=on", str(process.pid)], check=True, capture_output=True)
        (signal / "go").touch()
        output = process.communicate()[0]
    finally:
        shutil.rmtree(signal, ignore_errors=True)
    collected, written = re.search(r"Collected : (\d+)", output), re.search(r"^written (\d+)$", output, re.M)
    if process.returncode != 0 or collected is None or written is None:
        sys.exit(f"{checkout} {scenario} failed:\n{output}")
    return int(collected.group(1)) // calls, int(written.group(1)) // calls


def worker(checkout: Path, scenario: str, calls: int, signal: Path) -> None:
    """In the valgrind process: seed, warm up, say ready, wait for counting, make the calls."""
    import asyncio

    work = Path(tempfile.mkdtemp(prefix="agent-mail-instructions-db-"))
    os.environ.update(DATABASE_URL=f"sqlite:///{work}/bench.db", ARCHIVE_DIR=str(work / "archive"),
                      ATTACHMENTS_DIR=str(work / "attachments"))
    os.chdir(checkout)
    sys.path.insert(0, str(checkout))
    import orjson
    from chalicelib.archive import worker as archive_worker

    # Not the worker process: it would outlive this one (dd4aaf1's is not bound to its parent).
    archive_worker.LocalWorker.start = archive_worker.LocalWorker.stop = lambda self: None
    from chalicelib.transports.asgi import app

    async def request(method: str, path: str, body: bytes = b"") -> bytes:
        sent = []

        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message):
            sent.append(message)

        headers = [(b"host", b"127.0.0.1:8765"), (b"content-type", b"application/json"),
                   (b"accept", b"application/json, text/event-stream"), (b"content-length", b"%d" % len(body))]
        await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
                   "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": headers,
                   "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8765)}, receive, send)
        answer = b"".join(message.get("body", b"") for message in sent[1:])
        if sent[0]["status"] != 200 or b'"isError":true' in answer:
            raise SystemExit(f"{method} {path}: {sent[0]['status']} {answer[:300]!r}")
        return answer

    def tools_call(name: str, **arguments) -> bytes:
        return orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}})

    sends = 0

    async def send_message() -> None:
        nonlocal sends
        sends += 1
        await request("POST", "/mcp", tools_call("send_message", project_key=PROJECT, sender_name="GreenCastle", to=["BlueLake"],
                                                 subject=f"bench-send {sends}", body_md="Hello from the benchmark."))

    async def run(what: str, n: int) -> None:
        if what == "fetch":
            for _ in range(n):
                await request("POST", "/mcp", fetch)
        elif what == "send":
            for _ in range(n // 50):
                await asyncio.gather(*(send_message() for _ in range(50)))
        else:
            for _ in range(n):
                await request("GET", "/health")

    async def main() -> None:
        startup: asyncio.Queue = asyncio.Queue()
        started = asyncio.Event()

        async def lifespan_send(message):
            started.set()

        await startup.put({"type": "lifespan.startup"})
        lifespan = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, startup.get, lifespan_send))
        await started.wait()
        for tool, arguments in [("ensure_project", {"human_key": PROJECT}),
                                *[("register_agent", {"project_key": PROJECT, "program": "bench", "model": "bench", "name": name})
                                  for name in ("BlueLake", "GreenCastle")],
                                ("set_contact_policy", {"project_key": PROJECT, "agent_name": "BlueLake", "policy": "open"}),
                                *[("send_message", {"project_key": PROJECT, "sender_name": "GreenCastle", "to": ["BlueLake"],
                                                    "subject": f"seed {n}", "body_md": f"Seed message {n}."}) for n in range(20)]]:
            await request("POST", f"/api/{tool}", orjson.dumps(arguments))
        await run(scenario, 250)  # warm: lazy imports, caches, statements
        (signal / "ready").touch()
        while not (signal / "go").exists():
            await asyncio.sleep(0.05)
        written = _written()
        await run(scenario, calls)
        print(f"written {_written() - written}", flush=True)
        lifespan.cancel()
        os._exit(0)  # no shutdown work in the count

    fetch = tools_call("fetch_inbox", project_key=PROJECT, agent_name="BlueLake")
    asyncio.run(main())


def _written() -> int:
    """Bytes this process has written (write calls: the kernel's side of a commit, which the count leaves out)."""
    with open("/proc/self/io") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("wchar"))


def main() -> None:
    if sys.argv[1:2] == ["--worker"]:
        checkout, scenario, calls, signal = sys.argv[2:6]
        return worker(Path(checkout), scenario, int(calls), Path(signal))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--scenarios", default="fetch,send,health")
    parser.add_argument("--log-level", default="INFO", help="the servers' LOG_LEVEL (INFO, their default, logs every request)")
    parser.add_argument("--archive", action="store_true", help="the git archive on (outbox rows), its worker not started")
    args = parser.parse_args()
    print(f"{'scenario':<8} {'base instr/call':>16} {'this instr/call':>16} {'change':>8} {'base bytes/call':>16} {'this bytes/call':>16}")
    for scenario in args.scenarios.split(","):
        (base, base_bytes), (this, this_bytes) = (count(checkout, scenario, args.calls, args.log_level, args.archive)
                                                  for checkout in (args.base.resolve(), ROOT))
        print(f"{scenario:<8} {base:>16,} {this:>16,} {(this / base - 1) * 100:>+7.1f}% {base_bytes:>16,} {this_bytes:>16,}", flush=True)


if __name__ == "__main__":
    main()
