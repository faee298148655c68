"""A new replica's search sidecar (store/search_index.py) built as searches build it: catch_up
called again and again until the index is whole, each call's time printed, and the whole.

    .venv/bin/python bench/sidecar_build.py [--db /work/tmp/s9/scale/scale-1000000.db] [--tree .]

--tree: the checkout whose chalicelib to run (another tree gives before/after in one run).
"""

import argparse
import sqlite3
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, default=Path("/work/tmp/s9/scale/scale-1000000.db"))
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    options = parser.parse_args()
    sys.path.insert(0, str(options.tree.resolve()))
    from chalicelib.errors import Unavailable
    from chalicelib.store.search_index import SearchIndex, fts_segments
    from sidecar_catch_up import catching_up  # (bench/, this script's folder)

    source = sqlite3.connect(f"file:{options.db}?mode=ro", uri=True)
    catch_up = catching_up(SearchIndex, source)
    with tempfile.TemporaryDirectory() as directory:
        index, calls, started = SearchIndex(Path(directory) / "replica.search"), [], time.monotonic()
        while True:
            began = time.monotonic()
            try:
                catch_up(index)
                building = index.progress() if getattr(index, "floor", None) is not None else None
            except Unavailable as unavailable:  # a tree before searches answered from a partial index
                building = unavailable.message
            calls.append(time.monotonic() - began)
            if building is None:
                break
            print(f"  call {len(calls)}: {calls[-1]:.1f} s, {building}", flush=True)
        print(f"{options.tree}: {len(calls)} calls, longest {max(calls):.1f} s, {time.monotonic() - started:.1f} s in all,"
              f" {fts_segments(index.conn)} segments")


if __name__ == "__main__":
    main()
