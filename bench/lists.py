"""The list tools and the web UI's project pages as a server's projects, a project's agents, its
file reservations and its held build slots grow, in-process.

    .venv/bin/python bench/lists.py [--sizes 1000,10000,50000] [--calls 9] [--dir /work/tmp/lists-bench]

One database per size (kept in --dir, reused by later runs): that many projects, and in project
`bench-lists` that many agents (a third retired), active file reservations and build slots, each
slot held by one agent, written with bulk
SQL, so an older checkout builds the same rows in its own --dir. Prints, per size, the median of
--calls calls of each tool with its default arguments (the first page, or before paging the
whole list), of the last page of all agents (when the tools page) and of the web UI's two
project pages, with the answer's size; a tool whose answer passes the 8 MiB cap shows its error
code instead.
"""

import argparse
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.errors import ToolError  # noqa: E402
from chalicelib.ids import stable_id  # noqa: E402
from chalicelib.tools import tools_by_name  # noqa: E402
from chalicelib.web import http  # noqa: E402
from chalicelib.web.pages import WebUI  # noqa: E402

TOOLS = tools_by_name()
PROJECT = "/bench/lists"
TS = "2026-01-01T00:00:{:02d}.{:06d}+00:00"


def build(settings: Settings, size: int) -> None:
    invoke.call(TOOLS["ensure_project"], {"human_key": PROJECT}, settings)
    project = stable_id("project", PROJECT)
    projects = [(stable_id("project", f"/bench/p{n}"), f"bench-p{n}", f"/bench/p{n}", TS.format(n % 60, n)) for n in range(size - 1)]
    agents = [(stable_id("agent", project, f"agent{n:06d}"), project, f"Agent{n:06d}", TS.format(0, n), TS.format(0, n),
               TS.format(1, n) if n % 3 == 0 else None) for n in range(size)]
    reservations = [(stable_id("file_reservation", n), project, agents[n % len(agents)][0], f"src/mod{n}/**", f"src/mod{n}",
                     TS.format(2, n)) for n in range(size)]
    slots = [(stable_id("build_slot", n), project, f"build{n:06d}", agents[n][0], TS.format(3, n), TS.format(3, n))
             for n in range(size)]
    with sqlite3.connect(settings.database_path) as conn:
        conn.executemany("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (?, ?, ?, ?)", projects)
        conn.executemany("INSERT INTO agents (id, project_id, name, program, model, inception_ts, last_active_ts, retired_ts)"
                         " VALUES (?, ?, ?, 'bench', 'm', ?, ?, ?)", agents)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(file_reservations)")]
        prefix = ", path_prefix" if "path_prefix" in columns else ""
        conn.executemany(
            f"INSERT INTO file_reservations (id, project_id, agent_id, path_pattern{prefix}, exclusive, reason, created_ts,"
            f" expires_ts) VALUES (?, ?, ?, ?{', ?' if prefix else ''}, 1, '', ?, '2999-01-01T00:00:00+00:00')",
            [row if prefix else row[:4] + row[5:] for row in reservations],
        )
        conn.executemany("INSERT INTO build_slots (id, project_id, slot, agent_id, exclusive, acquired_ts, confirmed_ts,"
                         " expires_ts) VALUES (?, ?, ?, ?, 1, ?, ?, '2999-01-01T00:00:00+00:00')", slots)


def timed(function, calls: int) -> tuple[float, str]:
    """(median ms, what the last call gave: bytes, or the error code)."""
    times, outcome = [], ""
    for _ in range(calls):
        started = time.perf_counter()
        try:
            outcome = f"{len(function()):,} B"
        except ToolError as exc:
            outcome = exc.code
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--calls", type=int, default=9)
    parser.add_argument("--dir", type=Path, default=Path("/work/tmp/lists-bench"))
    options = parser.parse_args()
    options.dir.mkdir(parents=True, exist_ok=True)
    for size in map(int, options.sizes.split(",")):
        path = options.dir / f"lists-{size}.db"
        settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
        if not path.exists():
            build(settings, size)
        ui = WebUI(settings)
        cookie = {"cookie": ui.handle(http.request("GET", "/", "", b"", {})).headers["Set-Cookie"].split(";")[0]}

        def tool(name, **arguments):
            return lambda: invoke.json_call(TOOLS[name], arguments, settings)

        def page(target, query=""):
            return lambda: ui.handle(http.request("GET", target, query, b"", cookie)).body

        scenarios = {
            "list_projects": tool("list_projects"),
            "list_agents": tool("list_agents", project_key="bench-lists"),
            "list_agents include_retired": tool("list_agents", project_key="bench-lists", include_retired=True),
            "list_file_reservations": tool("list_file_reservations", project_key="bench-lists"),
            "list_build_slots": tool("list_build_slots", project_key="bench-lists"),
            "web UI /ui/projects": page("/ui/projects"),
            "web UI /ui/project": page("/ui/project", "p=bench-lists"),
        }
        if "cursor" in TOOLS["list_agents"].input.model_fields:  # paged: the last page costs what the first does
            arguments = {"project_key": "bench-lists", "include_retired": True, "limit": 500}
            last = None
            while (page := invoke.call(TOOLS["list_agents"], arguments | {"cursor": last}, settings)).next_cursor:
                last = page.next_cursor
            scenarios["list_agents, the last page of 500"] = tool("list_agents", **arguments, cursor=last)
        print(f"{size:,} projects, agents, reservations and build slots")
        for name, function in scenarios.items():
            median, outcome = timed(function, options.calls)
            print(f"  {name:<34} {median:>8.1f} ms  {outcome:>16}", flush=True)


if __name__ == "__main__":
    main()
