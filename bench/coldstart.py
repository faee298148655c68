"""Cold start and warm invocations of the Lambda handlers, in-process, with synthetic events.

    .venv/bin/python bench/coldstart.py [--runs 5] [--invocations 200]

1. Importing the handler module (app.py, as Lambda does on a cold start: that builds the
   Chalice app and migrates a fresh database): wall time over --runs fresh processes, and
   where one `python -X importtime` run spends it, per top-level package.
2. In a fresh process: the first invocation, then --invocations more, of a REST request
   (`app.app`, REST API event, GET /api/list_agents) and of an MCP tools/call list_agents,
   through the REST API (`app.app`, v1 event) and straight to the mcp function
   (`app.mcp_handler`, v2 event). The first MCP invocation imports the MCP SDK and starts it.

Times are in-process (no network, no Lambda runtime); a Lambda with less than 1769 MB of
memory has less than one vCPU, so expect cold starts there to take longer in proportion.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "/bench/coldstart"
TARGETS_MS = {"import": 400, "rest": 0.5, "mcp": 1.5}  # handler import; warm medians


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh processes for the import time")
    parser.add_argument("--invocations", type=int, default=200, help="warm invocations after the first")
    parser.add_argument("--child", choices=["invocations"], help=argparse.SUPPRESS)
    return parser.parse_args()


def environment(directory: str) -> dict[str, str]:
    from tests.aws_events import API_HOST, URL_HOST

    return {**os.environ, "DATABASE_URL": f"sqlite:///{directory}/agent_mail.db", "LOG_LEVEL": "WARNING",
            "MCP_ALLOWED_HOSTS": json.dumps([API_HOST, URL_HOST])}


def import_times(runs: int) -> tuple[list[float], list[tuple[str, float]]]:
    """Wall times of `import app` (ms), each in a fresh process on a fresh database, and the
    self time per top-level package (ms) of one more run under -X importtime."""
    code = "import time; start = time.perf_counter(); import app; print((time.perf_counter() - start) * 1000)"
    walls = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as directory:
            walls.append(float(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment(directory),
                                              capture_output=True, text=True, check=True).stdout))
    with tempfile.TemporaryDirectory() as directory:
        log = subprocess.run([sys.executable, "-X", "importtime", "-c", "import app"], cwd=ROOT,
                             env=environment(directory), capture_output=True, text=True, check=True).stderr
    per_package: Counter = Counter()
    for line in log.splitlines():
        if line.startswith("import time:") and "|" in line and "self [us]" not in line:
            self_us, _, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
            per_package[name.split(".")[0]] += int(self_us) / 1000
    return walls, per_package.most_common(12)


def invocations(count: int) -> dict:
    """Runs in a fresh process (--child): first and warm invocation times, in ms."""
    sys.path.insert(0, str(ROOT))
    start = time.perf_counter()
    import app  # noqa: E402 (timed: this is the cold start's import)

    imported = (time.perf_counter() - start) * 1000
    from tests.aws_events import CONTEXT, MCP_HEADERS, http_api_event, rest_api_event, tool_call

    seed(app)
    arguments = {"project_key": PROJECT}
    scenarios = {
        "rest": (app.app, rest_api_event("GET", "/api/list_agents", query={"project_key": [PROJECT]})),
        "mcp": (app.app, rest_api_event("POST", "/mcp", tool_call("list_agents", arguments), MCP_HEADERS)),
        "mcp_function": (app.mcp_handler, http_api_event("POST", "/mcp", tool_call("list_agents", arguments), MCP_HEADERS)),
    }
    results = {"import": imported}
    for name, (handler, event) in scenarios.items():
        times = []
        for _ in range(count + 1):
            start = time.perf_counter()
            response = handler(event, CONTEXT)
            times.append((time.perf_counter() - start) * 1000)
            if len(check(name, response)["agents"]) != 2:
                sys.exit(f"{name}: expected the two agents, got {response['body'][:300]}")
        warm = sorted(times[1:])
        results[name] = {"first": times[0], "median": statistics.median(warm), "p99": warm[int(len(warm) * 0.99) - 1]}
    return results


def seed(app) -> None:
    """A project with two agents, through the REST handler."""
    from tests.aws_events import CONTEXT, rest_api_event

    for tool, body in [("ensure_project", {"human_key": PROJECT})] + [
        ("register_agent", {"project_key": PROJECT, "program": "bench", "model": "bench", "name": name})
        for name in ("BlueLake", "GreenCastle")
    ]:
        check(tool, app.app(rest_api_event("POST", f"/api/{tool}", body, {"Content-Type": "application/json"}), CONTEXT))


def check(name: str, response: dict) -> dict:
    """The tool's output; refuse to time an error path."""
    body = json.loads(response["body"])
    failed = response["statusCode"] != 200 or body.get("result", {}).get("isError")
    if failed:
        sys.exit(f"{name}: unexpected answer {response['statusCode']} {response['body'][:300]}")
    return body["result"]["structuredContent"] if "result" in body else body  # MCP, REST


def verdict(value: float, target: float) -> str:
    return f"target ≤ {target:g} ms: {'ok' if value <= target else 'MISSED'}"


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        print(json.dumps(invocations(args.invocations)))
        return

    walls, packages = import_times(args.runs)
    print(f"handler import (import app: Chalice app built, database migrated), {args.runs} fresh processes:")
    print(f"  median {statistics.median(walls):.0f} ms, min {min(walls):.0f}, max {max(walls):.0f}   "
          f"{verdict(statistics.median(walls), TARGETS_MS['import'])}")
    print("  self time per top-level package (one -X importtime run):")
    for name, ms in packages:
        print(f"    {ms:7.1f} ms  {name}")

    with tempfile.TemporaryDirectory() as directory:
        output = subprocess.run([sys.executable, __file__, "--child", "invocations", "--invocations", str(args.invocations)],
                                cwd=ROOT, env=environment(directory), capture_output=True, text=True, check=True).stdout
    results = json.loads(output)
    print(f"\ninvocations in one fresh process (import there: {results['import']:.0f} ms); first, then {args.invocations} warm:")
    print(f"  {'scenario':<50} {'first ms':>9} {'median ms':>10} {'p99 ms':>8}")
    labels = {
        "rest": ("REST GET /api/list_agents (app.app, v1)", "rest"),
        "mcp": ("MCP tools/call list_agents (app.app, v1)", "mcp"),
        "mcp_function": ("MCP tools/call list_agents (app.mcp_handler, v2)", "mcp"),
    }
    for name, (label, target) in labels.items():
        result = results[name]
        print(f"  {label:<50} {result['first']:>9.2f} {result['median']:>10.3f} {result['p99']:>8.3f}   "
              f"{verdict(result['median'], TARGETS_MS[target])}")
    print("  (the first MCP invocation imports the MCP SDK and starts its session manager; "
          "the v2 row's first call is already warm)")


if __name__ == "__main__":
    main()
