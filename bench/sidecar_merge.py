"""Whether merging a replica's search sidecar (store/search_index.py) would speed searches: build
a sidecar from a database as a new replica does (one catch-up), count its segments, time phrase
and word queries, 'optimize' it to one segment and time them again.

    .venv/bin/python bench/sidecar_merge.py [--db /work/tmp/s9/scale/scale-100000.db] [--rounds 3]
"""

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib.store.search_index import SearchIndex, fts_segments  # noqa: E402

QUERIES = [f'"src" + "mod{i % 50}" + "file{i % 200}" + "py"' for i in range(40)] + ['"database"', '"index"', '"CART" + "12345"']


def timed(db: sqlite3.Connection, rounds: int) -> list[float]:
    for query in QUERIES:  # a round unmeasured: the pages in the cache, as they are for the other layout
        db.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT 20", (query,)).fetchall()
    took = []
    for query in QUERIES * rounds:
        started = time.perf_counter()
        db.execute("SELECT rowid FROM messages_fts WHERE messages_fts MATCH ? ORDER BY rowid DESC LIMIT 20", (query,)).fetchall()
        took.append((time.perf_counter() - started) * 1000)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, default=Path("/work/tmp/s9/scale/scale-100000.db"))
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    source = sqlite3.connect(f"file:{options.db}?mode=ro", uri=True)
    with tempfile.TemporaryDirectory() as directory:
        index = SearchIndex(Path(directory) / "replica.search")
        started = time.monotonic()
        added = index.catch_up(source)
        print(f"built: {added:,} messages in {time.monotonic() - started:.1f} s, {fts_segments(index.conn)} segments")
        for label in ("as built", "optimized"):
            if label == "optimized":
                started = time.monotonic()
                index.conn.execute("INSERT INTO messages_fts (messages_fts) VALUES ('optimize')")
                print(f"optimize: {time.monotonic() - started:.1f} s, {fts_segments(index.conn)} segment(s)")
            took = timed(index.conn, options.rounds)
            print(f"{label}: {len(took)} queries, median {statistics.median(took):.3f} ms, {sum(took):.1f} ms in all")


if __name__ == "__main__":
    main()
