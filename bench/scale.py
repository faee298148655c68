"""Every read tool at 10k, 100k and 1M messages in one project, in-process (invoke.call).

    .venv/bin/python bench/scale.py [--sizes 10000,100000,1000000] [--dir /work/tmp/d1-scale] [--calls 30] [--warm] [--turso]

Builds one SQLite database per size once (kept in --dir and reused by later runs; delete a
file to rebuild it) and prints, per tool, the median and p95 of --calls calls (varied
arguments: other agents, threads, messages) at each size, the ratio of the largest size's
median to the smallest's, and for searches the mean hits per call at each size. The sizes take
turns call by call, so the machine's drift hits them alike. With --warm, each database file is
read once before its timings, so the operating system's page cache holds it, as on a server
that has served it for a while
(without it, the first reads of a 5.5 GB file go to the disk, and each call's other agent
reads pages no earlier call touched).

The project has a realistic shape: AGENTS agents, one thread per THREAD_SIZE messages, bodies
of ~250 words drawn from a Zipf-weighted vocabulary (so "the" and "database" are common words
and the rarer ones are rare), a ticket id (CART-n) and a file path in most bodies, 1-3
recipients, some cc and bcc, 10% high/urgent, 70% of the mail read. Messages are stored with
the SQL the tools use (messages INSERT, tools.messages.store_recipients, which also keeps
the counts and thread summaries); their ids are time-ordered as new_id() makes them, spaced 30 s.
The search index is built in one pass at the end, so it starts fully merged (an index grown
message by message has more segments until FTS5's automerge catches up).

With --turso, the tools run on a Turso replica instead, as on AWS: a real `tursodb
--sync-server` on 127.0.0.1 serves a primary filled, once, with each size's rows but its
full-text index (kept in --dir/turso-N), a replica downloads it, and the searches build the
replica's search sidecar (store/search_index.py) before the timings.
"""

import argparse
import collections
import itertools
import random
import re
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib import clock, invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.ids import RANDOM_BITS, _EPOCH_MS  # noqa: E402
from chalicelib.store import search_runs  # noqa: E402
from chalicelib.store.db import migrate  # noqa: E402
from chalicelib.tools import tools_by_name  # noqa: E402
from chalicelib.tools.agents import agent_id  # noqa: E402
from chalicelib.tools.counts import _add as add_counts  # noqa: E402
from chalicelib.tools.messages import store_recipients  # noqa: E402
from tests.turso import TursoServer  # noqa: E402

HUMAN_KEY = "/bench/scale"
AGENTS = [f"Agent{n:02d}" for n in range(40)]
THREAD_SIZE = 20
WORDS = 250
TOOLS = tools_by_name()


def vocabulary(rng: random.Random) -> tuple[list[str], list[float]]:
    common = "the a to of and in is for on that this with we it be database inbox index test build fix".split()
    letters = "abcdefghijklmnopqrstuvwxyz"
    rare = ["".join(rng.choice(letters) for _ in range(rng.randint(4, 10))) for _ in range(20_000)]
    words = common + rare
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf
    return words, list(itertools.accumulate(weights))


def sentences(rng: random.Random, count: int) -> list[str]:
    words, cumulative = vocabulary(rng)
    return [" ".join(rng.choices(words, cum_weights=cumulative, k=12)).capitalize() + "." for _ in range(count)]


def build(path: Path, size: int) -> None:
    """A database holding one project with `size` messages (and the bench's agents, product)."""
    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
    for name, args in [
        ("ensure_project", {"human_key": HUMAN_KEY}),
        *[("register_agent", {"project_key": HUMAN_KEY, "program": "bench", "model": "m", "name": n}) for n in AGENTS],
        *[("set_contact_policy", {"project_key": HUMAN_KEY, "agent_name": n, "policy": "open"}) for n in AGENTS],
        ("ensure_product", {"product_key": "bench-product"}),
        ("products_link", {"product_key": "bench-product", "project_key": HUMAN_KEY}),
    ]:
        invoke.call(TOOLS[name], args, settings)
    rng = random.Random(size)
    pool = sentences(rng, 5000)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")  # a bench database: rebuilt if a crash spoils it
    db.execute("PRAGMA cache_size = -200000")
    (project_id,) = db.execute("SELECT id FROM projects").fetchone()
    agents = [agent_id(project_id, name) for name in AGENTS]
    # The search index is built in one pass at the end ('rebuild': 3x faster than row by row).
    start_ms = int(time.time() * 1000) - size * 30_000 - 3_600_000
    started = time.monotonic()
    batch = 5000
    for first in range(0, size, batch):
        messages, deliveries, reads = [], [], []
        for n in range(first, min(first + batch, size)):
            ms = start_ms + n * 30_000
            message_id = ((ms - _EPOCH_MS) << RANDOM_BITS) | rng.getrandbits(RANDOM_BITS)
            sender = rng.choice(agents)
            thread = rng.randrange(max(1, size // THREAD_SIZE))
            importance = rng.choices(["normal", "low", "high", "urgent"], [85, 5, 8, 2])[0]
            body = " ".join(rng.choices(pool, k=WORDS // 12))
            if rng.random() < 0.7:
                body += f"\n\nSee CART-{rng.randrange(100_000)} in src/mod{rng.randrange(50)}/file{rng.randrange(200)}.py."
            created = clock.from_epoch(ms / 1000)  # the stored form, as the tools write it
            ack_required = rng.random() < 0.1
            messages.append((message_id, project_id, sender, f"T-{thread}", pool[thread % len(pool)][:60], body, importance,
                             ack_required, created))
            others = rng.sample([a for a in agents if a != sender], rng.choice([1, 1, 2, 3]))
            kinds = {others[0]: "to", **{a: rng.choice(["to", "cc", "cc", "bcc"]) for a in others[1:]}}
            deliveries.append((project_id, f"T-{thread}", message_id, sender, importance, ack_required, kinds,
                               pool[thread % len(pool)][:60], created))
            reads += [(created, message_id, agent) for agent in kinds if rng.random() < 0.7]
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance, ack_required, created_ts)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            messages,
        )
        for delivery in deliveries:
            store_recipients(db, *delivery)
        db.executemany("UPDATE message_recipients SET read_ts = ? WHERE message_id = ? AND agent_id = ?", reads)
        for agent, count in collections.Counter(agent for _, _, agent in reads).items():
            add_counts(db, [[(agent, 0, 0, count)]])  # what count_read adds, once per batch
        db.execute("COMMIT")
        done = min(first + batch, size)
        if done % 50_000 == 0 or done == size:
            print(f"  {path.name}: {done:,} messages, {done / (time.monotonic() - started):,.0f}/s", flush=True)
    print(f"  {path.name}: indexing for search", flush=True)
    db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('rebuild')")
    db.execute("UPDATE message_runs_backfill SET below = (SELECT max(id) + 1 FROM messages)")  # (bulk SQL wrote no runs)
    db.execute("PRAGMA optimize")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def fill_runs(path: Path) -> None:
    """Index the runs (store/search_runs.py) of every message that lacks them, at once: what
    retention runs do a part at a time (the bulk SQL above, and a database built before them)."""
    db = sqlite3.connect(path, isolation_level=None)
    started, done = time.monotonic(), 0
    while True:
        db.execute("BEGIN IMMEDIATE")
        count = search_runs.backfill(db, 5000)
        db.execute("COMMIT")
        done += count
        if count < 5000:
            break
        if done % 100_000 == 0:
            print(f"  {path.name}: runs of {done:,} messages indexed, {done / (time.monotonic() - started):,.0f}/s", flush=True)
    if done:
        print(f"  {path.name}: runs of {done:,} messages indexed in {time.monotonic() - started:.0f} s", flush=True)
    db.close()


def scenarios(db: sqlite3.Connection) -> dict[str, callable]:
    """{label: function(i) -> (tool name, arguments)} for the i-th call."""
    agent = lambda i: AGENTS[i % len(AGENTS)]  # noqa: E731
    # Threads the build made (T-n, ~THREAD_SIZE messages each): not those of send_message (write)
    # in earlier runs of this bench on the same database (one message each).
    threads = [row[0] for row in db.execute("SELECT thread_id FROM messages WHERE thread_id LIKE 'T-%' ORDER BY id DESC LIMIT 200")]
    ids = [str(row[0]) for row in db.execute("SELECT id FROM messages ORDER BY random() LIMIT 200")]
    # Ids and paths this database holds (each found at every size: one hit or more).
    bodies = " ".join(row[0] for row in db.execute(f"SELECT body_md FROM messages WHERE id IN ({','.join(ids)})"))
    held_paths, held_ids = re.findall(r"src/mod\d+/file\d+\.py", bodies)[:30], re.findall(r"CART-\d+", bodies)[:30]
    p = HUMAN_KEY
    return {
        "health_check": lambda i: ("health_check", {}),
        "list_projects": lambda i: ("list_projects", {}),
        "get_project": lambda i: ("get_project", {"project_key": p}),
        "whois": lambda i: ("whois", {"project_key": p, "agent_name": agent(i)}),
        "list_agents": lambda i: ("list_agents", {"project_key": p}),
        "fetch_inbox": lambda i: ("fetch_inbox", {"project_key": p, "agent_name": agent(i)}),
        "fetch_inbox urgent_only": lambda i: ("fetch_inbox", {"project_key": p, "agent_name": agent(i), "urgent_only": True}),
        "fetch_inbox bodies": lambda i: ("fetch_inbox", {"project_key": p, "agent_name": agent(i), "include_bodies": True}),
        "fetch_outbox": lambda i: ("fetch_outbox", {"project_key": p, "agent_name": agent(i)}),
        "get_message": lambda i: ("get_message", {"project_key": p, "message_id": ids[i % len(ids)]}),
        "list_threads": lambda i: ("list_threads", {"project_key": p}),
        "list_threads as an agent": lambda i: ("list_threads", {"project_key": p, "agent_name": agent(i)}),
        "get_thread": lambda i: ("get_thread", {"project_key": p, "thread_id": threads[i % len(threads)]}),
        "summarize_thread": lambda i: ("summarize_thread", {"project_key": p, "thread_id": threads[i % len(threads)]}),
        "search common word": lambda i: ("search_messages", {"project_key": p, "query": ["database", "the", "index"][i % 3]}),
        "search id CART-n": lambda i: ("search_messages", {"project_key": p, "query": f"CART-{i * 7919 % 100_000}"}),
        "search path": lambda i: ("search_messages", {"project_key": p, "query": f"src/mod{i % 50}/file{i % 200}.py"}),
        # The two rows above with one hit at most at every size: what grows is the index's work, not the answer.
        "search id CART-n limit 1": lambda i: ("search_messages", {"project_key": p, "query": f"CART-{i * 7919 % 100_000}", "limit": 1}),
        "search path limit 1": lambda i: ("search_messages", {"project_key": p, "query": f"src/mod{i % 50}/file{i % 200}.py", "limit": 1}),
        # A path or id the database holds, limit 1: one hit at every size.
        "search a held id limit 1": lambda i: ("search_messages", {"project_key": p, "query": held_ids[i % len(held_ids)], "limit": 1}),
        "search a held path limit 1": lambda i: ("search_messages", {"project_key": p, "query": held_paths[i % len(held_paths)],
                                                                     "limit": 1}),
        # A page of hits at every size (2% of the mail): the rows above answer 0-2 hits at 10k, a page at 1M.
        "search folder": lambda i: ("search_messages", {"project_key": p, "query": f"src/mod{i % 50}"}),
        "search + thread": lambda i: ("search_messages", {"project_key": p, "query": "database", "thread_id": threads[i % len(threads)]}),
        "search + sender": lambda i: ("search_messages", {"project_key": p, "query": "database", "sender": agent(i)}),
        "search visible to agent": lambda i: ("search_messages", {"project_key": p, "query": "database", "agent_name": agent(i)}),
        "unified_inbox": lambda i: ("unified_inbox", {}),  # the overseer's (the web UI's first page)
        "unified_inbox of the project": lambda i: ("unified_inbox", {"project_key": p}),
        "unified_inbox acks pending": lambda i: ("unified_inbox", {"project_key": p, "view": "ack_pending"}),  # every agent's, merged
        "unified_inbox of the product": lambda i: ("unified_inbox", {"product_key": "bench-product", "view": "urgent"}),
        "get_retention_policy": lambda i: ("get_retention_policy", {"project_key": p}),
        "list_ack_required": lambda i: ("list_ack_required", {"project_key": p}),  # every agent's
        "list_ack_required as an agent": lambda i: ("list_ack_required", {"project_key": p, "agent_name": agent(i)}),
        "list_ack_overdue": lambda i: ("list_ack_overdue", {"project_key": p}),
        "list_urgent_unread": lambda i: ("list_urgent_unread", {"project_key": p}),
        "list_contacts": lambda i: ("list_contacts", {"project_key": p, "agent_name": agent(i)}),
        "check_file_reservations": lambda i: ("check_file_reservations", {"project_key": p, "agent_name": agent(i), "paths": ["src/a.py"]}),
        "list_file_reservations": lambda i: ("list_file_reservations", {"project_key": p}),
        "list_build_slots": lambda i: ("list_build_slots", {"project_key": p}),
        "list_products": lambda i: ("list_products", {}),
        "get_product": lambda i: ("get_product", {"product_key": "bench-product"}),
        "fetch_inbox_product": lambda i: ("fetch_inbox_product", {"product_key": "bench-product", "agent_name": agent(i)}),
        "search_messages_product": lambda i: ("search_messages_product", {"product_key": "bench-product", "query": "database"}),
        "summarize_thread_product": lambda i: ("summarize_thread_product", {"product_key": "bench-product", "thread_id": threads[i % len(threads)]}),
        "archive_status": lambda i: ("archive_status", {"project_key": p}),
        "send_message (write)": lambda i: ("send_message", {
            "project_key": p, "sender_name": agent(i), "to": [agent(i + 1)], "subject": f"bench {i}",
            "body_md": " ".join(random.Random(i).choices(["the", "database", "index", "CART-9", "fix"], k=WORDS))}),
        "send_message in a thread (write)": lambda i: ("send_message", {
            "project_key": p, "sender_name": agent(i), "to": [agent(i + 1)], "subject": f"bench {i}",
            "thread_id": threads[i % len(threads)], "body_md": "a reply"}),
    }


def measure(sides: dict[int, tuple[Settings, callable]], calls: int, budget_s: float = 15.0
            ) -> tuple[dict[int, list[float]], dict[int, list[int]]]:
    """Milliseconds of `calls` calls at each size (fewer if they take longer than budget_s), after
    2 warm-ups each, and the hits of each search. The sizes take turns call by call, so the
    machine's drift (±15% from one minute to the next) hits them alike and the ratios between
    sizes hold."""
    for settings, scenario in sides.values():
        for i in range(2):
            name, args = scenario(i)
            invoke.call(TOOLS[name], args, settings)
    times: dict[int, list[float]] = {size: [] for size in sides}
    hits: dict[int, list[int]] = {size: [] for size in sides}
    deadline = time.monotonic() + budget_s
    for i in range(calls):
        for size, (settings, scenario) in (sides.items() if i % 2 == 0 else reversed(sides.items())):
            name, args = scenario(i + 2)
            started = time.perf_counter()
            output = invoke.call(TOOLS[name], args, settings)
            times[size].append((time.perf_counter() - started) * 1000)
            if hasattr(output, "results"):
                hits[size].append(len(output.results))
        if time.monotonic() > deadline:
            break
    return times, hits


SERVERS: list[TursoServer] = []  # --turso: stopped at the end
SKIPPED = ("sqlite_", "messages_fts", "schema_migrations", "turso_")  # the index (a replica keeps its own), bookkeeping
LOAD_BATCH = 2_000  # rows an insert
PUSH_ROWS = 50_000  # rows a push


def load_primary(path: Path, url: str, loader: Path) -> None:
    """Fill a migrated Turso primary with this database's rows, through a replica of its own
    (tursodb serves replicas what was pushed to it, not a file's pages)."""
    import turso.sync

    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn = turso.sync.connect(str(loader), url)
    tables = [name for (name,) in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
              if not name.startswith(SKIPPED)]
    pending = 0
    for table in tables:
        theirs = [row[1] for row in conn.execute(f"PRAGMA table_info({table})").fetchall()]
        columns = [row[1] for row in source.execute(f"PRAGMA table_info({table})") if row[1] in theirs]
        if not columns:
            continue
        rows = source.execute(f"SELECT {', '.join(columns)} FROM {table}")
        insert = f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        while batch := rows.fetchmany(LOAD_BATCH):
            conn.executemany(insert, batch)
            conn.commit()
            pending += len(batch)
            if pending >= PUSH_ROWS:
                conn.push()
                pending = 0
    conn.push()
    conn.close()


def on_turso(path: Path, size: int, directory: Path) -> Settings:
    """Settings of a replica of this database, served by a tursodb started here (filled once and
    kept in `directory`), with its search sidecar built (a search at a time, as a new
    replica's searches build it)."""
    home = directory / f"turso-{size}"
    home.mkdir(parents=True, exist_ok=True)
    server = TursoServer(home)
    server.start()
    SERVERS.append(server)
    settings = Settings(database_url=f"sqlite:///{home}/replica.db", turso_sync_url=server.url, archive_enabled=False)
    started = time.monotonic()
    if not (home / "loaded").exists():
        migrate(settings)  # the schema as Turso has it (no FTS5)
        load_primary(path, server.url, home / "loader.db")
        (home / "loaded").touch()
        print(f"  a Turso primary of {size:,} messages: {time.monotonic() - started:.0f} s", flush=True)
    started = time.monotonic()
    project = sqlite3.connect(path).execute("SELECT slug FROM projects ORDER BY id LIMIT 1").fetchone()[0]
    while invoke.call(TOOLS["search_messages"], {"project_key": project, "query": "database"}, settings).indexing:
        pass
    print(f"  its replica and search sidecar: {time.monotonic() - started:.0f} s", flush=True)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dir", type=Path, default=Path("/work/tmp/d1-scale"))
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--warm", action="store_true", help="read each database file once before timing it")
    parser.add_argument("--only", default="", help="comma-separated scenario labels (default: all)")
    parser.add_argument("--turso", action="store_true", help="run the tools on a Turso replica of each database")
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    options.dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[int, tuple[float, float, float]]] = {}  # median, p95, min
    answers: dict[str, str] = {}  # searches: mean hits per call at each size
    prepared: dict[int, tuple[Settings, dict]] = {}
    for size in sizes:
        path, built = options.dir / f"scale-{size}.db", options.dir / f"scale-{size}.built"
        if not built.exists():
            print(f"building {path} ({size:,} messages)", flush=True)
            for stale in options.dir.glob(f"scale-{size}.db*"):
                stale.unlink()
            build(path, size)
            built.touch()
        if options.build_only:
            continue
        if options.warm:
            with path.open("rb") as file:
                while file.read(1 << 24):
                    pass
        settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
        migrate(settings)  # a database built by an older version migrates forward first
        fill_runs(path)
        if options.turso:
            settings = on_turso(path, size, options.dir)
        with sqlite3.connect(path) as db:
            prepared[size] = (settings, scenarios(db))
    labels = list(prepared[sizes[0]][1]) if prepared else []
    for label in [label for label in labels if not options.only or label in options.only.split(",")]:
        by_size, hits = measure({size: (settings, chosen[label]) for size, (settings, chosen) in prepared.items()}, options.calls)
        if any(hits.values()):
            answers[label] = " / ".join(f"{statistics.mean(hits[size]):.1f}" for size in sizes if hits.get(size))
        for size, times in by_size.items():
            times.sort()
            results.setdefault(label, {})[size] = (
                statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))], times[0]
            )
        print(f"  {label:<26} " + "  ".join(f"{size:,}: {results[label][size][0]:.2f} ms" for size in sizes), flush=True)
    if options.build_only:
        return
    print()
    print("| tool | " + " | ".join(f"{size:,}: median / p95 (min) ms" for size in sizes) + " | ratio of medians | hits per call |")
    print("|---|" + "---:|" * (len(sizes) + 2))
    for label, by_size in results.items():
        cells = [f"{by_size[s][0]:.2f} / {by_size[s][1]:.2f} ({by_size[s][2]:.2f})" if s in by_size else "–" for s in sizes]
        ratio = by_size[sizes[-1]][0] / by_size[sizes[0]][0] if sizes[0] in by_size and sizes[-1] in by_size else 0
        print(f"| {label} | " + " | ".join(cells) + f" | {ratio:.1f}x | {answers.get(label, '')} |")


if __name__ == "__main__":
    try:
        main()
    finally:
        for server in SERVERS:
            server.kill()
