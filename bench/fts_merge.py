"""What merging the search index's segments gains, and what one merge step costs (store/search_index.py).

    .venv/bin/python bench/fts_merge.py --source /work/tmp/s9/scale/scale-1000000.db --copy-to /work/tmp/fts-merge
        [--pages 250] [--calls 100] [--max-steps 100000]

Copies the database (never touched itself) twice into --copy-to, merges the second as
retention's runs do, a merge_fts_step per write transaction until MERGE_ABOVE_SEGMENTS segments
or fewer are left, timing each step (how long it holds the write lock: the senders' wait), then
times bench/scale.py's two search rows (bench/search_statements.py) on each copy in turn,
--rounds times (a busy machine swings from one minute to the next), and deletes the copies.
"""

import argparse
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.search_statements import QUERIES, run  # noqa: E402
from chalicelib.store.search_index import MERGE_ABOVE_SEGMENTS, MERGE_STEP_PAGES, fts_segments, merge_fts_step  # noqa: E402


def searches(path: Path, calls: int) -> dict[str, float]:
    return {name: run(path, query, 20, calls) for name, query in QUERIES.items()}


def merge(path: Path, pages: int, max_steps: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    print(f"{path.name}: {fts_segments(conn)} segments; merging {pages} pages a step")
    locked: list[float] = []
    started = time.perf_counter()
    while len(locked) < max_steps and fts_segments(conn) > MERGE_ABOVE_SEGMENTS:
        step = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        worked = merge_fts_step(conn, pages)
        conn.execute("COMMIT")
        locked.append((time.perf_counter() - step) * 1000)
        if not worked:
            break
    locked.sort()
    print(
        f"{len(locked)} steps in {time.perf_counter() - started:.1f} s, {fts_segments(conn)} segments left;"
        f" write lock a step: median {statistics.median(locked):.1f} ms, p90 {locked[len(locked) * 9 // 10]:.1f}, max {locked[-1]:.1f}"
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # searches read the database file, as between runs
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--copy-to", type=Path, required=True)
    parser.add_argument("--pages", type=int, default=MERGE_STEP_PAGES)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    options.copy_to.mkdir(parents=True, exist_ok=True)
    unmerged, merged = (options.copy_to / f"{name}-{options.source.name}" for name in ("unmerged", "merged"))
    try:
        for copy in (unmerged, merged):
            shutil.copyfile(options.source, copy)
        merge(merged, options.pages, options.max_steps)
        times = {unmerged: [], merged: []}
        for _ in range(options.rounds):
            for copy in (unmerged, merged):
                times[copy].append(searches(copy, options.calls))
        for name in QUERIES:
            before, after = ([round(took[name], 2) for took in times[copy]] for copy in (unmerged, merged))
            print(f"search {name}, ms a call (median of each round): unmerged {before}, merged {after}")
    finally:
        for file in (*options.copy_to.glob(f"*-{options.source.name}*"),):
            file.unlink()


if __name__ == "__main__":
    main()
