"""Pages of wide messages (each to 100-300 recipients): fetch_outbox, unified_inbox, get_thread, fetch_inbox.

    .venv/bin/python bench/wide_pages.py [--dir DIR] [--calls 15] [--profile "fetch_outbox 200"] [--plans]

Builds once (in --dir, default a directory under the system's temp dir; delete it to rebuild)
a real SQLite database through the tools (invoke.call, as a client would: register_agent,
send_message): one project, a sender and RECIPIENTS agents, MESSAGES messages from the sender,
each to 100-300 of them (to, cc and bcc up to the send limit of 100 each), in threads of
THREAD_SIZE. Then prints, for pages of 20, 100 and 200 messages, the median and p95 ms of
json_call (what REST and MCP send: the handler, or its json_handler, and the JSON encoding) and
the answer's size. The address of every recipient is in each message of fetch_outbox,
unified_inbox and get_thread: a page of 200 holds ~40,000 of them. fetch_inbox (a recipient's)
lists none, for comparison.

--profile LABEL prints cProfile's top functions of that row's calls; --plans prints the query
plans (EXPLAIN QUERY PLAN) of the statements a fetch_outbox page runs; --dump FILE writes every
row's answer, to compare two trees' byte for byte (run each tree's copy of this script).
"""

import argparse
import cProfile
import pstats
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.tools import tools_by_name  # noqa: E402

PROJECT = "/bench/wide-pages"
SENDER = "WideSender"
# Names of a usual length (BlueLake-like, 10-16 characters): the answer's size grows with them.
ADJECTIVES = "Blue Green Red Silver Golden Quiet Swift Bright Amber Coral Misty Stone".split()
NOUNS = "Lake Castle River Forest Harbor Meadow Canyon Falcon Willow Summit Glacier Orchard".split()
RECIPIENTS = [f"{ADJECTIVES[n % 12]}{NOUNS[n // 12 % 12]}{n:03d}" for n in range(300)]
MESSAGES = 220
THREAD_SIZE = 20
SIZES = (20, 100, 200)
TOOLS = tools_by_name()


def build(path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
    call = lambda name, args: invoke.call(TOOLS[name], args, settings)  # noqa: E731
    call("ensure_project", {"human_key": PROJECT})
    for name in [SENDER, *RECIPIENTS]:
        call("register_agent", {"project_key": PROJECT, "program": "bench", "model": "m", "name": name})
        call("set_contact_policy", {"project_key": PROJECT, "agent_name": name, "policy": "open"})
    rng = random.Random(37)
    started = time.monotonic()
    for n in range(MESSAGES):
        chosen = rng.sample(RECIPIENTS, rng.randint(100, 300))
        to, cc, bcc = chosen[:100], chosen[100:200], chosen[200:]
        call("send_message", {
            "project_key": PROJECT, "sender_name": SENDER, "to": to, "cc": cc, "bcc": bcc,
            "subject": f"Wide message {n}", "thread_id": f"WIDE-{n // THREAD_SIZE}",
            "body_md": f"Message {n} to {len(chosen)} agents. " + "Some words of a body. " * 20,
            "importance": ["normal", "high"][n % 5 == 0], "ack_required": n % 3 == 0,
        })
    for name in RECIPIENTS[:150]:  # some reads and acks: unified_inbox counts them
        for item in invoke.json_call(TOOLS["fetch_inbox"], {"project_key": PROJECT, "agent_name": name, "limit": 50},
                                     settings).decode().split('"id":"')[1:6]:
            call("acknowledge_message", {"project_key": PROJECT, "agent_name": name, "message_id": item.split('"')[0]})
    print(f"  built {path}: {MESSAGES} messages in {time.monotonic() - started:.0f} s", flush=True)


def scenarios() -> dict[str, tuple[str, dict]]:
    rows = {}
    for size in SIZES:
        rows[f"fetch_outbox {size}"] = ("fetch_outbox", {"project_key": PROJECT, "agent_name": SENDER, "limit": size})
        rows[f"unified_inbox {size}"] = ("unified_inbox", {"project_key": PROJECT, "limit": size})
        rows[f"unified_inbox include_bcc {size}"] = ("unified_inbox", {"project_key": PROJECT, "limit": size, "include_bcc": True})
        rows[f"fetch_inbox {size}"] = ("fetch_inbox", {"project_key": PROJECT, "agent_name": RECIPIENTS[7], "limit": size})
    rows["get_thread 20 (as the sender)"] = ("get_thread", {"project_key": PROJECT, "thread_id": "WIDE-3", "agent_name": SENDER})
    rows["get_thread 20 include_bcc"] = ("get_thread", {"project_key": PROJECT, "thread_id": "WIDE-3", "include_bcc": True})
    return rows


def timed(settings: Settings, name: str, args: dict, calls: int) -> tuple[list[float], int]:
    answer = invoke.json_call(TOOLS[name], args, settings)  # a warm-up
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        invoke.json_call(TOOLS[name], args, settings)
        times.append((time.perf_counter() - started) * 1000)
    return times, len(answer)


def plans(path: Path) -> None:
    """The query plans of a fetch_outbox page's statements, caught as they run."""
    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
    statements = []
    original = sqlite3.connect
    # Each statement with its parameters, through a connection's trace callback (expanded SQL).
    sqlite3.connect = lambda *a, **k: _traced(original(*a, **k), statements)
    try:
        invoke.json_call(TOOLS["fetch_outbox"], {"project_key": PROJECT, "agent_name": SENDER, "limit": 200}, settings)
    finally:
        sqlite3.connect = original
    conn = original(path)
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT"):
            print(f"\n{sql[:300]}{'…' if len(sql) > 300 else ''}")
            for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}"):
                print("   ", row[-1])


def _traced(conn: sqlite3.Connection, statements: list[str]) -> sqlite3.Connection:
    conn.set_trace_callback(statements.append)
    return conn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "agent-mail-wide-pages")
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--only", default="", help="comma-separated row labels (default: all)")
    parser.add_argument("--profile", default="", help="a row's label: cProfile its calls")
    parser.add_argument("--plans", action="store_true", help="EXPLAIN QUERY PLAN of a fetch_outbox page's statements")
    parser.add_argument("--dump", type=Path, help="write every row's answer here (one JSON a line), to compare two trees'")
    options = parser.parse_args()
    options.dir.mkdir(parents=True, exist_ok=True)
    path, built = options.dir / "wide.db", options.dir / "wide.built"
    if not built.exists():
        path.unlink(missing_ok=True)
        build(path)
        built.touch()
    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
    if options.plans:
        plans(path)
        return
    rows = scenarios()
    if options.dump:
        with options.dump.open("wb") as out:
            for name, args in rows.values():
                out.write(invoke.json_call(TOOLS[name], args, settings) + b"\n")
        return
    if options.profile:
        name, args = rows[options.profile]
        invoke.json_call(TOOLS[name], args, settings)
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(options.calls):
            invoke.json_call(TOOLS[name], args, settings)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return
    only = set(filter(None, options.only.split(",")))
    print(f"{'call':<36} {'median ms':>10} {'p95 ms':>8} {'answer KB':>10}")
    for label, (name, args) in rows.items():
        if only and label not in only:
            continue
        times, size = timed(settings, name, args, options.calls)
        p95 = statistics.quantiles(times, n=20)[-1] if len(times) > 1 else times[0]
        print(f"{label:<36} {statistics.median(times):>10.2f} {p95:>8.2f} {size / 1024:>10.0f}", flush=True)


if __name__ == "__main__":
    main()
