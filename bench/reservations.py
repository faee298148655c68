"""check_file_reservations and file_reservation_paths as a project's active reservations grow, in-process.

    .venv/bin/python bench/reservations.py [--sizes 500,5000,9000] [--calls 5] [--dir /work/tmp/reservations-bench] [--turso]

One database per size (kept in --dir, reused by later runs), with AGENTS agents holding that many
active reservations of files, folders and globs under `src/modN/subM/`. Prints, per size, the
median of --calls calls of: a pre-commit check of 200 staged files, and one agent reserving a
folder (renewing the same lease each call). The databases hold only what the tools read, so an
older checkout can time the same files (run this script from the newer one with --dir, then the
older one's copy of it). With --turso the tools run on a Turso replica of each database, served by
a `tursodb` started here (bench/scale.py's on_turso; filled once, kept in --dir). A project holds
at most 10,000 (HELD_PER_PROJECT), so sizes stay below it.
"""

import argparse
import json
import random
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.tools import tools_by_name  # noqa: E402
from scale import SERVERS, on_turso  # noqa: E402

TOOLS = tools_by_name()
PROJECT = "/bench/reservations"
AGENTS = [f"Agent{n:02d}" for n in range(40)]


def a_path(rng: random.Random) -> str:
    return f"src/mod{rng.randrange(50)}/sub{rng.randrange(20)}/file{rng.randrange(200)}.py"


def a_pattern(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.8:
        return a_path(rng)
    if kind < 0.9:
        return f"src/mod{rng.randrange(50)}/sub{rng.randrange(20)}"
    return f"src/mod{rng.randrange(50)}/sub{rng.randrange(20)}/*.py"


def build(path: Path, size: int) -> None:
    """Agents through the tools; the reservations with the SQL file_reservation_paths runs."""
    from chalicelib.tools.reservations import literal_prefix, reservation_id

    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
    call = lambda tool, **arguments: invoke.call(TOOLS[tool], arguments, settings)  # noqa: E731
    call("ensure_project", human_key=PROJECT)
    for name in AGENTS:
        call("register_agent", project_key=PROJECT, program="bench", model="m", name=name)
    conn = sqlite3.connect(path, isolation_level=None)
    project_id, agent_ids = conn.execute("SELECT project_id, json_group_array(id) FROM agents").fetchone()
    rng = random.Random(size)
    rows = {}
    while len(rows) < size:
        agent, pattern = rng.choice(json.loads(agent_ids)), a_pattern(rng)
        rows[reservation_id(project_id, agent, pattern)] = (project_id, agent, pattern, literal_prefix(pattern))
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO file_reservations (id, project_id, agent_id, path_pattern, path_prefix, exclusive, reason, created_ts,"
        " expires_ts) VALUES (?, ?, ?, ?, ?, 1, '', '2026-01-01T00:00:00+00:00', '2999-01-01T00:00:00+00:00')",
        [(rid, *row) for rid, row in rows.items()],
    )
    conn.execute("COMMIT")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="500,5000,9000")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("/work/tmp/reservations-bench"))
    parser.add_argument("--turso", action="store_true", help="run the tools on a Turso replica of each database")
    options = parser.parse_args()
    options.dir.mkdir(parents=True, exist_ok=True)
    print(f"{'active':>8} {'check 200 files':>16} {'reserve a folder':>17} {'conflicts':>10}")
    for size in map(int, options.sizes.split(",")):
        path = options.dir / f"reservations-{size}.db"
        if not path.exists():
            build(path, size)
        settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
        if options.turso:
            settings = on_turso(path, size, options.dir)
        rng = random.Random(1)
        staged = [a_path(rng) for _ in range(200)]
        checks, reserves = [], []
        for _ in range(options.calls):
            started = time.perf_counter()
            found = invoke.call(TOOLS["check_file_reservations"], {"project_key": PROJECT, "paths": staged}, settings)
            checks.append(time.perf_counter() - started)
            started = time.perf_counter()
            invoke.call(TOOLS["file_reservation_paths"], {"project_key": PROJECT, "agent_name": AGENTS[0], "paths": ["src/mod7"]}, settings)
            reserves.append(time.perf_counter() - started)
        print(f"{size:>8} {statistics.median(checks) * 1000:>13.1f} ms {statistics.median(reserves) * 1000:>14.1f} ms"
              f" {len(found.conflicts):>10}", flush=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        for server in SERVERS:
            server.kill()
