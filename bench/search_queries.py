"""search_messages for the query forms whose cost FTS5 does not bound (prefixes, phrases and NEAR
of common words), on a copy of bench/scale.py's database.

    .venv/bin/python bench/search_queries.py --database COPY.db [--tree PATH] [--repeat 5] [QUERY ...]

Times single calls through invoke.call (connection, transaction, query, snippets): the median
of --repeat after one warm-up call; a query the tool refuses prints its error. --tree imports
chalicelib from another checkout (e.g. `git archive` of the commit before a change), to compare
two trees on one database in one run. Not a test; the machine is shared, numbers drift.
Give it a copy: opening the database may migrate it.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

QUERIES = [
    "database", "src/mod3/file7.py", "the a to of and in is for on that this with we it be",
    '"the database"', '"database the the database the"', "NEAR(the database, 0)",
    "NEAR(the a to of and in is for on that this with, 0)",
    '"the a to of and in is for on that this with"',
    "t*", "th*", "s*", "the*", "fil*", "mod*", "dat*", "t* d*", "the* dat*", "fil* mod*", "the* and*", "a* b* c* d* e* f* g* h*",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database", required=True)
    parser.add_argument("--tree", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--project", default="/bench/scale")
    parser.add_argument("queries", nargs="*")
    options = parser.parse_args()
    sys.path.insert(0, options.tree)
    from chalicelib import invoke
    from chalicelib.config import Settings
    from chalicelib.errors import ToolError
    from chalicelib.tools import tools_by_name

    tool = tools_by_name()["search_messages"]
    settings = Settings(database_url=f"sqlite:///{options.database}", archive_enabled=False)
    for query in options.queries or QUERIES:
        args = {"project_key": options.project, "query": query, "limit": 20}
        try:
            invoke.call(tool, args, settings)
        except ToolError as exc:
            print(f"{'refused':>9}            {query[:60]}  ({exc})")
            continue
        times = []
        for _ in range(options.repeat):
            start = time.perf_counter()
            hits = len(invoke.call(tool, args, settings).results)
            times.append((time.perf_counter() - start) * 1000)
        print(f"{statistics.median(times):9.1f} ms {hits:3d} hits  {query[:60]}")


if __name__ == "__main__":
    main()
