"""CPU of the writer thread per send_message, in-process, group-committed in batches of 50: several code trees.

    .venv/bin/python bench/writer.py --tree /path/to/old-checkout --tree . [--rounds 5]

Under load the writer thread is what limits send_message (one thread commits every write), so
its CPU per send is what a change to the write path costs, without the HTTP side and the
machine's drift in req/s (bench/compare.py). Each tree runs in a fresh process with its own
code (working directory and first on sys.path), on a fresh database: a project, two agents,
then 10 x 20 batches of 50 sends from one to the other, each batch one `Writer._commit`, as
the server's writer thread runs them. Trees take turns.
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

BATCH, BATCHES, ROUNDS_IN_PROCESS = 50, 20, 10


def child() -> dict:
    sys.path.insert(0, os.getcwd())
    from chalicelib import invoke
    from chalicelib.config import get_settings
    from chalicelib.tools import TOOLS

    settings, tools = get_settings(), {tool.name: tool for tool in TOOLS}
    for name, args in (("ensure_project", {"human_key": "/bench/project"}),
                       *[("register_agent", {"project_key": "/bench/project", "program": "b", "model": "b", "name": name})
                         for name in ("BlueLake", "GreenCastle")],
                       ("set_contact_policy", {"project_key": "/bench/project", "agent_name": "BlueLake", "policy": "open"})):
        invoke.call(tools[name], args, settings)
    writer = invoke.Writer.__new__(invoke.Writer)  # its _commit, without its thread
    writer.settings = settings
    loop, send, sent = asyncio.new_event_loop(), tools["send_message"], [0]
    principal = (invoke.caller(None),) if hasattr(invoke, "caller") else ()  # older trees take no principal

    def batch() -> list:
        jobs = []
        for _ in range(BATCH):
            sent[0] += 1
            args = invoke.parse(send, {"project_key": "/bench/project", "sender_name": "GreenCastle", "to": ["BlueLake"],
                                       "subject": f"bench-send {sent[0]}", "body_md": f"Body of bench-send {sent[0]}."})
            jobs.append((send, args, *principal, loop.create_future()))
        return jobs

    for _ in range(5):  # warm-up
        writer._commit(batch())
    per_send = []
    for _ in range(ROUNDS_IN_PROCESS):
        batches = [batch() for _ in range(BATCHES)]
        started = time.thread_time()
        for jobs in batches:
            writer._commit(jobs)
        per_send.append((time.thread_time() - started) / (BATCH * BATCHES) * 1e6)
    return {"median_us": statistics.median(per_send), "least_us": min(per_send)}


def run_child(tree: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as directory:
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{directory}/bench.db", "ARCHIVE_DIR": f"{directory}/archive",
               "ATTACHMENTS_DIR": f"{directory}/attachments", "LOG_LEVEL": "WARNING"}
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child"], cwd=tree, env=env,
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            sys.exit(f"{tree} failed:\n{out.stderr[-3000:]}")
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", action="append", type=Path, help="a checkout (repeatable); default: this one")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child()))
        return
    trees = [tree.resolve() for tree in (args.tree or [Path(__file__).resolve().parent.parent])]
    runs: dict[Path, list[dict]] = {tree: [] for tree in trees}
    for number in range(args.rounds):
        for tree in (trees if number % 2 == 0 else trees[::-1]):
            runs[tree].append(run_child(tree))
            print(f"round {number + 1} {tree}: {runs[tree][-1]['median_us']:.1f} µs (least {runs[tree][-1]['least_us']:.1f})",
                  flush=True)
    first = trees[0]
    for key in ("median_us", "least_us"):
        base = statistics.median(r[key] for r in runs[first])
        cells = []
        for tree in trees:
            value = statistics.median(r[key] for r in runs[tree])
            cells.append(f"{tree.name}: {value:6.1f}" + ("" if tree == first else f" ({(value / base - 1) * 100:+.1f}%)"))
        print(f"writer CPU µs per send, {key.split('_')[0]} over {args.rounds} runs: " + "   ".join(cells))


if __name__ == "__main__":
    main()
