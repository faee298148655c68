"""Where a search's time goes: each SQL statement of search_messages, timed, at each size.

    .venv/bin/python bench/search_statements.py [--dir /work/tmp/d1-scale] [--sizes 10000,1000000] [--calls 100]
        [--query path|id] [--limit 20] [--database PATH ...]

Runs the tool's own code (tools/search.py) on a plain sqlite3 connection to bench/scale.py's
databases (or to other database files given with --database, e.g. a copy whose index was
merged by FTS5's 'optimize'), every statement timed with its rows fetched, and prints per
size the median of a call and each statement's milliseconds per call, costliest first. The
queries are bench/scale.py's "search path" and "search id CART-n", varied call by call as
there.
"""

import argparse
import collections
import re
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib.tools.search import SearchMessagesInput, search_messages  # noqa: E402

QUERIES = {
    "path": lambda i: f"src/mod{i % 50}/file{i % 200}.py",
    "id": lambda i: f"CART-{i * 7919 % 100_000}",
}


class Rows(list):
    def fetchone(self):
        return self[0] if self else None

    def fetchall(self):
        return list(self)


class TimedConnection:
    """A connection whose statements are timed, rows fetched, by their SQL (lists of ? folded)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.spent: dict[str, list[float]] = collections.defaultdict(list)

    def execute(self, sql: str, params=()):
        started = time.perf_counter()
        rows = Rows(self.conn.execute(sql, params).fetchall())
        self.spent[re.sub(r"\?(, ?\?)+", "?...", sql)].append((time.perf_counter() - started) * 1000)
        return rows

    def __getattr__(self, name):
        return getattr(self.conn, name)


def run(path: Path, query, limit: int, calls: int) -> float:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    timed = TimedConnection(conn)
    search = lambda i: search_messages(timed, SearchMessagesInput(project_key="/bench/scale", query=query(i), limit=limit))
    for i in range(5):
        search(i)
    timed.spent.clear()
    took, hits = [], []
    for i in range(5, 5 + calls):
        started = time.perf_counter()
        hits.append(len(search(i).results))
        took.append((time.perf_counter() - started) * 1000)
    print(f"{path.name}: median {statistics.median(took):.2f} ms a call, {statistics.mean(hits):.1f} hits")
    for sql, times in sorted(timed.spent.items(), key=lambda item: -sum(item[1])):
        print(f"  {sum(times) / calls:6.3f} ms  {len(times) / calls:4.1f}x  {sql[:110]}")
    conn.close()
    return statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/work/tmp/d1-scale"))
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--database", type=Path, action="append", default=[], help="another database file to time")
    parser.add_argument("--query", choices=QUERIES, default="path")
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--calls", type=int, default=100)
    options = parser.parse_args()
    paths = [options.dir / f"scale-{size}.db" for size in options.sizes.split(",") if size] + options.database
    for path in paths:
        run(path, QUERIES[options.query], options.limit, options.calls)


if __name__ == "__main__":
    main()
