"""How long a new Turso replica takes to download its primary, and whether a download cut short
is resumed: a real `tursodb --sync-server` on 127.0.0.1 filled with `--rows` rows of 3 KB, then
a fresh replica (pyturso's turso.sync.connect) bootstrapped whole, then bootstraps killed after
`--cut` seconds, twice, and one let finish.

    .venv/bin/python bench/replica_bootstrap.py [--rows 300000] [--cut 4] [--pull-bytes 67108864]

A Lambda container bootstraps its replica at its first call (store/replica.py): past the
function's timeout that call is killed, and what the next one finds decides whether the
container ever serves (docs/deploy.md).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.turso import turso_server  # noqa: E402

BOOTSTRAP = ("import sys, turso.sync; turso.sync.connect(sys.argv[1], sys.argv[2], pull_bytes_threshold=int(sys.argv[3]) or None)"
             ".execute('SELECT count(*) FROM msgs').fetchone()")


def fill(url: str, path: Path, rows: int) -> None:
    import turso.sync

    conn = turso.sync.connect(str(path), url)
    conn.isolation_level = None
    conn.execute("CREATE TABLE msgs (id INTEGER PRIMARY KEY, body TEXT)")
    body = ("lorem ipsum dolor sit amet " * 120)[:3000]
    for start in range(0, rows, 10_000):
        conn.execute("BEGIN")
        for number in range(start, min(rows, start + 10_000)):
            conn.execute("INSERT INTO msgs (body) VALUES (?)", (f"{body} {number}",))
        conn.execute("COMMIT")
        conn.push()


def bootstrap(url: str, path: Path, cut: float | None, pull_bytes: int = 0) -> tuple[float, bool]:
    """(seconds, finished) of one bootstrap into `path`, killed after `cut` seconds if given."""
    started = time.monotonic()
    try:
        subprocess.run([sys.executable, "-c", BOOTSTRAP, str(path), url, str(pull_bytes)], check=True, timeout=cut)
        return time.monotonic() - started, True
    except subprocess.TimeoutExpired:
        return time.monotonic() - started, False


def on_disk(path: Path) -> int:
    return sum(os.stat(file).st_blocks * 512 for file in path.parent.glob(path.name + "*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--cut", type=float, default=4.0)
    parser.add_argument("--pull-bytes", type=int, default=0, help="pyturso's pull_bytes_threshold for the cut bootstraps")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, turso_server(Path(directory) / "primary") as primary:
        started = time.monotonic()
        fill(primary.url, Path(directory) / "writer.db", options.rows)
        print(f"filled {options.rows:,} rows of 3 KB in {time.monotonic() - started:.1f} s")
        for attempt in (1, 2):  # the second with the primary's pages in the page cache, as the later ones
            whole = Path(directory) / f"whole{attempt}" / "replica.db"
            whole.parent.mkdir()
            warm, _ = bootstrap(primary.url, whole, None)
            print(f"a whole bootstrap: {warm:.1f} s, {on_disk(whole) / 2**20:,.0f} MiB")
        cut = Path(directory) / "cut" / "replica.db"
        cut.parent.mkdir()
        for attempt in (1, 2):
            seconds, finished = bootstrap(primary.url, cut, options.cut, options.pull_bytes)
            print(f"bootstrap {attempt} killed after {seconds:.1f} s: {on_disk(cut) / 2**20:,.0f} MiB on disk" if not finished
                  else f"bootstrap {attempt} finished in {seconds:.1f} s")
        seconds, _ = bootstrap(primary.url, cut, None, options.pull_bytes)
        print(f"then one let finish: {seconds:.1f} s (a whole one: {warm:.1f} s)")


if __name__ == "__main__":
    main()
