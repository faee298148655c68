"""What a search on a Turso replica spends keeping its search sidecar (store/search_index.py)
caught up, once the sidecar holds every message: catch_up timed with nothing new, then with one
message stored before each call. The replica's part is played by Turso's engine (pyturso) on a
copy of a bench/scale.py database's messages and counters, without the full-text index (Turso's
engine reads no FTS5 table, as a replica has none); one message is stored in it a call.

    .venv/bin/python bench/sidecar_catch_up.py --scale-db /work/tmp/d1-scale/scale-1000000.db --dir /work/tmp/catch-up [--tree .]

--dir keeps the copy (replica.db) and the sidecar between runs (building a sidecar of a million
messages takes ~2.5 min); a tree before the stamp (search index version 4) builds a version 4
file, which later trees take as it is. --tree: the checkout whose chalicelib to run (another
tree gives before/after in one run).
"""

import argparse
import inspect
import sqlite3
import statistics
import sys
import time
from pathlib import Path


def make_copy(scale_db: Path, copy: Path) -> None:
    """The tables catch_up reads, with their rows, in a file with no FTS5 table."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(copy, isolation_level=None)
    conn.execute("ATTACH ? AS scale", (str(scale_db),))
    tables = ("messages", "message_recipients", "mail_totals")
    for table in tables:
        (sql,) = conn.execute("SELECT sql FROM scale.sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()
        conn.execute(sql)
        conn.execute(f"INSERT INTO main.{table} SELECT * FROM scale.{table}")
    indexes = conn.execute(f"SELECT sql FROM scale.sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
                           f" AND tbl_name IN ({', '.join('?' * len(tables))})", tables).fetchall()
    for (sql,) in indexes:  # the replica's, which catch_up's reads go through
        conn.execute(sql)
    conn.execute("DETACH scale")
    conn.execute("PRAGMA journal_mode = wal")
    conn.close()


def catching_up(search_index, source):
    """catch_up(index) for this tree's SearchIndex (`search_index`): with the source's stamp, as
    tools/search.py gives it (0 purged before migration 0047), or, before the stamp, without."""
    if "stamp" not in inspect.signature(search_index.catch_up).parameters:
        return lambda index: index.catch_up(source)
    columns = {row[1] for row in source.execute("PRAGMA table_info(mail_totals)")}
    purged = "coalesce(sum(purged), 0)" if "purged" in columns else "0"
    return lambda index: index.catch_up(source, tuple(source.execute(
        f"SELECT coalesce(sum(messages), 0), {purged} FROM mail_totals").fetchone()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale-db", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--calls", type=int, default=10)
    options = parser.parse_args()
    sys.path.insert(0, str(options.tree.resolve()))
    import turso

    from chalicelib.errors import Unavailable
    from chalicelib.ids import new_id
    from chalicelib.store.search_index import SearchIndex

    copy = options.dir / "replica.db"
    if not copy.exists():
        make_copy(options.scale_db, copy)
    source = turso.connect(str(copy))
    catch_up = catching_up(SearchIndex, source)
    index = SearchIndex(options.dir / "replica.db.search")
    while True:  # built (or caught up) first, untimed
        try:
            catch_up(index)
        except Unavailable:
            continue
        if getattr(index, "floor", None) is None:
            break
    sender, project = source.execute("SELECT sender_id, project_id FROM messages ORDER BY id DESC LIMIT 1").fetchone()

    def store_one() -> None:
        source.execute(
            "INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, ack_required, created_ts)"
            " VALUES (?, ?, ?, 'bench', 'bench', 'a new message', 'normal', 0, '2026-12-03T00:00:00.000000+00:00')",
            (new_id(), project, sender))
        source.execute("UPDATE mail_totals SET messages = messages + 1 WHERE id = (SELECT min(id) FROM mail_totals)")
        source.commit()

    for label, before in (("nothing new", None), ("one new message", store_one)):
        times = []
        for _ in range(options.calls):
            if before:
                before()
            began = time.perf_counter()
            catch_up(index)
            times.append((time.perf_counter() - began) * 1000)
        print(f"{options.tree}: {label}: median {statistics.median(times):.2f} ms, min {min(times):.2f}, max {max(times):.2f}"
              f" ({options.calls} calls)", flush=True)


if __name__ == "__main__":
    main()
