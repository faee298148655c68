"""Benchmark the real server with wrk: MCP fetch_inbox, MCP send_message and GET /health.

    .venv/bin/python bench/run.py [--duration 10] [--connections 50] [--threads 1] [--warmup 2] [--compare-sdk] [--turso]

Starts uvicorn on a fresh temporary database, seeds a project with two agents and 20
messages through the REST API, runs one wrk scenario after another (Lua scripts in this
directory), checks that every acknowledged send_message is in the database, prints a table
and writes the raw numbers to bench/results/<timestamp>.json.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib.store import db  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from tests.servers import running_server  # noqa: E402  (the same way the tests start it)
from tests.turso import turso_server  # noqa: E402

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PROJECT = "/bench/project"
MCP_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
# (name, Lua script, path); the MCP scenarios also run against the SDK with --compare-sdk.
MCP_SCENARIOS = [("mcp fetch_inbox", "mcp_fetch_inbox.lua", "/mcp"), ("mcp send_message", "mcp_send_message.lua", "/mcp")]
REST_SCENARIOS = [("rest GET /health", "health.lua", "/health")]
# Targets for the lean server (one process, 2 cores): minimum req/s per scenario, and p99 for all.
MIN_REQ_S = {"mcp fetch_inbox": 5_000, "mcp send_message": 2_000, "rest GET /health": 20_000}
MAX_P99_MS = 25


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (the server gets the other core)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of fetch_inbox load before measuring")
    parser.add_argument("--compare-sdk", action="store_true", help="also run the MCP scenarios with MCP_LEAN_PATH=false")
    parser.add_argument("--turso", action="store_true", help="also run the MCP scenarios on a Turso replica of a local tursodb")
    return parser.parse_args()


def wait_for_archive(url: str, timeout: float = 120) -> float:
    """Seconds until the git archive has caught up: the next scenario measures the server,
    not the archive worker draining the last one's backlog on the same two cores."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        status = httpx.get(f"{url}/api/archive_status", timeout=10).json()
        if status["pending"] == 0:
            break
        time.sleep(0.2)
    return round(time.monotonic() - started, 1)


def seed(url: str) -> None:
    """A project, BlueLake and GreenCastle, and 20 messages in BlueLake's inbox (fetch_inbox's default limit)."""
    with httpx.Client(base_url=f"{url}/api", timeout=10) as client:
        def post(tool: str, **body) -> None:
            client.post(f"/{tool}", json=body).raise_for_status()

        post("ensure_project", human_key=PROJECT)
        for name in ("BlueLake", "GreenCastle"):
            post("register_agent", project_key=PROJECT, program="bench", model="bench", name=name)
        post("set_contact_policy", project_key=PROJECT, agent_name="BlueLake", policy="open")
        for n in range(20):
            post("send_message", project_key=PROJECT, sender_name="GreenCastle", to=["BlueLake"],
                 subject=f"seed {n}", body_md=f"Seed message {n}.")


def check_inbox(url: str) -> None:
    """Refuse to benchmark an error path: fetch_inbox over MCP must return 20 messages."""
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
               "params": {"name": "fetch_inbox", "arguments": {"project_key": PROJECT, "agent_name": "BlueLake"}}}
    result = httpx.post(f"{url}/mcp", json=request, headers=MCP_HEADERS, timeout=10).json()["result"]
    count = len(result.get("structuredContent", {}).get("messages", []))
    if result["isError"] or count != 20:
        sys.exit(f"fetch_inbox returned isError={result['isError']} with {count} messages, expected 20: {result}")


def run_wrk(url: str, script: str, args: argparse.Namespace, env: dict[str, str] | None = None, duration: int = 0) -> dict:
    """One wrk run; the RESULT line its Lua done() prints, as a dict."""
    duration = duration or args.duration
    command = ["wrk", "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration}s",
               "-s", str(BENCH / script), url, "--", PROJECT]
    output = subprocess.run(command, capture_output=True, text=True, check=True,
                            env={**os.environ, **(env or {})}, timeout=duration + 60).stdout
    line = next((line for line in output.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"no RESULT line from wrk:\n{output}")
    return json.loads(line.removeprefix("RESULT "))


def stored_subjects(database: Settings) -> set[str]:
    """Subjects of the benchmark's messages from GreenCastle to BlueLake, read from the database
    file (or a fresh replica of the Turso primary)."""
    with db.connection(database) as conn:
        db.refresh(conn)
        rows = conn.execute(
            "SELECT m.subject FROM messages m JOIN agents s ON s.id = m.sender_id"
            " JOIN message_recipients r ON r.message_id = m.id JOIN agents b ON b.id = r.agent_id"
            " WHERE s.name = 'GreenCastle' AND b.name = 'BlueLake' AND m.subject LIKE 'bench-send %'"
        )
        return {subject for (subject,) in rows}


def summarise(raw: dict) -> dict:
    """req/s, p50/p99 in ms and one error count: socket errors + timeouts + every non-acknowledged response."""
    rejected = raw.get("rejected", raw["non_2xx"])  # MCP scripts count non-200 and tool errors; /health only non-2xx
    return {
        "req_s": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw["socket_errors"] + raw["timeouts"] + rejected,
        "raw": raw,
    }


def run_send_message(url: str, database: Settings, workdir: Path, args: argparse.Namespace) -> dict:
    """send_message under load, then compare acknowledged subjects with what the database holds."""
    acked_file = workdir / "acked.txt"
    result = summarise(run_wrk(f"{url}/mcp", "mcp_send_message.lua", args, {"BENCH_ACKED_FILE": str(acked_file)}))
    lines = acked_file.read_text().splitlines()
    acked = set(lines)
    if len(acked) != len(lines) or len(lines) != result["raw"]["acked"]:
        sys.exit(f"acknowledged subjects: {len(lines)}, {len(acked)} distinct; wrk counted {result['raw']['acked']} acks")
    stored = stored_subjects(database)
    result["lost"] = len(acked - stored)
    result["stored_unacknowledged"] = len(stored - acked)
    return result


def bench_server(label: str, scenarios: list, args: argparse.Namespace, **env: str) -> dict:
    """Start a server on a fresh database, seed it, run each scenario; {scenario: result}."""
    workdir = Path(tempfile.mkdtemp(prefix="agent-mail-bench-"))
    database = workdir / "bench.db"
    check = Settings(database_url=f"sqlite:///{database}")
    if "TURSO_SYNC_URL" in env:  # the primary is checked through a replica of its own
        check = Settings(database_url=f"sqlite:///{workdir}/check.db", turso_sync_url=env["TURSO_SYNC_URL"])
    results = {}
    try:
        with running_server(database, **env) as url:
            seed(url)
            check_inbox(url)
            if args.warmup:  # first requests pay for lazy imports, caches and a first full GC
                run_wrk(f"{url}/mcp", "mcp_fetch_inbox.lua", args, duration=args.warmup)
            for name, script, path in scenarios:
                print(f"[{label}] {name}: {args.duration}s at {args.connections} connections", flush=True)
                if script == "mcp_send_message.lua":
                    results[name] = run_send_message(url, check, workdir, args)
                else:
                    results[name] = summarise(run_wrk(f"{url}{path}", script, args))
                results[name]["archive_drain_s"] = wait_for_archive(url)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def verdict(name: str, r: dict) -> str:
    misses = [f"req/s < {MIN_REQ_S[name]:,}"] if r["req_s"] < MIN_REQ_S[name] else []
    misses += [f"p99 > {MAX_P99_MS} ms"] if r["p99_ms"] > MAX_P99_MS else []
    misses += ["errors"] if r["errors"] else []
    misses += ["LOST"] if r.get("lost") else []
    return "target: " + (", ".join(misses) if misses else "met")


def print_table(results: dict) -> None:
    print(f"\n{'server':<6} {'scenario':<18} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'lost':>5}  notes")
    for label, scenarios in results.items():
        for name, r in scenarios.items():
            lost = r.get("lost", "")
            notes = [verdict(name, r)] if label == "lean" else []
            if "lost" in r:
                notes.append(f"stored-but-unacknowledged {r['stored_unacknowledged']}")
            print(f"{label:<6} {name:<18} {r['req_s']:>9,.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f}"
                  f" {r['errors']:>7} {lost!s:>5}  {'; '.join(notes)}")


def save(results: dict, args: argparse.Namespace) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    path = BENCH / "results" / f"{stamp}.json"
    path.parent.mkdir(exist_ok=True)
    config = {"duration_s": args.duration, "warmup_s": args.warmup, "connections": args.connections, "wrk_threads": args.threads,
              "cpus": os.cpu_count(), "commit": commit, "loadavg_at_end": os.getloadavg()}  # other load skews results
    path.write_text(json.dumps({"config": config, "results": results}, indent=2) + "\n")
    return path


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found; install wrk: apt-get install wrk")
    # MCP_LEAN_PATH is set both ways so an inherited environment cannot mislabel a run.
    results = {"lean": bench_server("lean", MCP_SCENARIOS + REST_SCENARIOS, args, MCP_LEAN_PATH="true")}
    if args.compare_sdk:
        results["sdk"] = bench_server("sdk", MCP_SCENARIOS, args, MCP_LEAN_PATH="false")
    if args.turso:
        with tempfile.TemporaryDirectory() as directory, turso_server(Path(directory)) as primary:
            results["turso"] = bench_server("turso", MCP_SCENARIOS, args, MCP_LEAN_PATH="true", TURSO_SYNC_URL=primary.url)
    print_table(results)
    print(f"\nraw results: {save(results, args).relative_to(ROOT)}")
    if any(r.get("lost") for scenarios in results.values() for r in scenarios.values()):
        sys.exit("LOST ACKNOWLEDGED MESSAGES")


if __name__ == "__main__":
    main()
