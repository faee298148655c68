"""Conflicts are looked up by literal prefix (tools/reservations.py ActiveNear), not by comparing
each path with every active reservation: the same answers as that comparison, at a cost that
follows what the paths name (bench/reservations.py measures it)."""

import random

import pytest

from chalicelib.config import Settings
from chalicelib.store import db
from chalicelib.tools import tools_by_name
from chalicelib.tools.agents import agent_id
from chalicelib.tools import reservations
from chalicelib.tools.globs import Budget
from chalicelib.tools.reservations import HOLDERS_LISTED, OVERLAPS_LISTED, ActiveNear, Reservation, literal_prefix, overlap_peers

from .sql import migrated_until, sql, turso_plans

pytestmark = pytest.mark.both_backends
TOOLS = tools_by_name()

AGENTS = ("BlueLake", "GreenCastle", "RedStone")
# srcx: a name that `src` is a string prefix of; a[b: a `[` opening no class, a plain name; U+10FFFF: the last code point
LITERAL = ["src", "lib", "app.py", "a", "docs", "srcx", "a[b", "\U0010ffff"]
GLOBS = ["*", "**", "*.py", "a*", "[ab]*", "?", "[ab]"]  # [ab]: also the folder spelt so (reservations.subtrees)


def covers(a: str, b: str) -> bool:
    return reservations.covers(a, b, Budget(10**9))


def reserved_by(path: str, pattern: str) -> bool:
    return reservations.reserved_by(path, pattern, Budget(10**9))


def random_pattern(rng: random.Random) -> str:
    segments = [rng.choice(GLOBS) if rng.random() < 0.25 else rng.choice(LITERAL) for _ in range(rng.randint(1, 4))]
    return "/".join(segments)


def expected(active: list[dict], me: str | None, paths: list[str], exclusive: bool, match) -> list[dict]:
    """Every path against every active reservation: what the tools answered before the lookup,
    the first HOLDERS_LISTED holders in full and the others counted."""
    found, listed = [], 0
    for path in paths:
        holders = [{k: r[k] for k in Reservation.model_fields}  # not list_file_reservations' own fields
                   for r in active if r["agent"] != me and (exclusive or r["exclusive"]) and match(path, r["path_pattern"])]
        if holders:
            shown = holders[: max(0, HOLDERS_LISTED - listed)]
            listed += len(shown)
            found.append({"path": path, "holders": shown, "holders_unlisted": len(holders) - len(shown)})
    return found


def test_conflicts_are_those_every_reservation_compared_gives(call, project, settings):
    rng = random.Random(2026)
    for _ in range(4):
        for agent in AGENTS:
            patterns = list({random_pattern(rng) for _ in range(15)})
            call("file_reservation_paths", project_key=project, agent_name=agent, paths=patterns, exclusive=rng.random() < 0.7)
    active = call("list_file_reservations", project_key=project, limit=500)["file_reservations"]
    assert len(active) > 100
    for held in active:  # what list_file_reservations says each conflicts with
        [clashes] = expected(active, held["agent"], [held["path_pattern"]], held["exclusive"], covers) or [{"holders": []}]
        overlapping = [{k: h[k] for k in ("id", "agent", "path_pattern")} for h in clashes["holders"]]
        assert held["conflicts_with"] == overlapping[:OVERLAPS_LISTED]
        assert held["conflicts_unlisted"] == len(overlapping[OVERLAPS_LISTED:]) + clashes.get("holders_unlisted", 0)
    for round_ in range(12):
        paths = list({random_pattern(rng) for _ in range(20)})
        me = AGENTS[round_ % 3] if round_ % 4 else None
        checked = call("check_file_reservations", project_key=project, agent_name=me, paths=paths)["conflicts"]
        assert checked == expected(active, me, paths, exclusive=False, match=reserved_by)
    exclusive = call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=paths)["conflicts"]
    assert exclusive == expected(active, "BlueLake", paths, exclusive=True, match=covers)
    active = call("list_file_reservations", project_key=project, limit=500)["file_reservations"]
    shared = call("file_reservation_paths", project_key=project, agent_name="RedStone", paths=paths, exclusive=False)
    assert shared["conflicts"] == expected(active, "RedStone", paths, exclusive=False, match=covers)
    active = call("list_file_reservations", project_key=project, limit=500)["file_reservations"]
    with db.connection(settings) as conn:
        for agent in AGENTS:
            mine = [r["path_pattern"] for r in active if r["agent"] == agent]
            peers = {r["agent"] for r in active if r["agent"] != agent and any(covers(p, r["path_pattern"]) for p in mine)}
            everyone = [agent_id(_project_id(conn, project), name) for name in AGENTS]
            ids = overlap_peers(conn, _project_id(conn, project), agent_id(_project_id(conn, project), agent), everyone)
            assert ids == {agent_id(_project_id(conn, project), name) for name in peers}


def test_a_prefix_that_starts_with_the_last_code_point_is_under_every_glob(call, project):
    """QA session 31: what lies under '' (the prefix of a pattern that starts with a glob) was read
    as the prefixes below U+10FFFF, which left that one out and every prefix starting with it."""
    odd = ["\U0010ffff", "\U0010ffff/x.py", "\U0010ffff\U0010ffff/x.py"]
    call("file_reservation_paths", project_key=project, agent_name="GreenCastle", paths=[*odd, "z/x.py"])
    granted = call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=["**"])
    assert [sorted(h["path_pattern"] for h in c["holders"]) for c in granted["conflicts"]] == [sorted([*odd, "z/x.py"])]
    checked = call("check_file_reservations", project_key=project, agent_name="BlueLake", paths=["**/x.py"])["conflicts"]
    assert [sorted(h["path_pattern"] for h in c["holders"]) for c in checked] == [sorted([*odd, "z/x.py"])]
    listed = {r["path_pattern"]: sorted(o["path_pattern"] for o in r["conflicts_with"])
              for r in call("list_file_reservations", project_key=project)["file_reservations"]}
    assert listed == {"**": sorted([*odd, "z/x.py"])} | {pattern: ["**"] for pattern in [*odd, "z/x.py"]}


def _project_id(conn, slug: str) -> int:
    return conn.execute("SELECT id FROM projects WHERE slug = ?", (slug,)).fetchone()[0]


def test_a_check_reads_only_the_reservations_that_could_overlap(call, project, settings):
    """500 reservations elsewhere in the repository are not read for a check under `src`."""
    call("file_reservation_paths", project_key=project, agent_name="GreenCastle", paths=[f"docs/d{n}/x.md" for n in range(500)])
    call("file_reservation_paths", project_key=project, agent_name="GreenCastle",
         paths=["src/**/*.py", "*.md", "src/api", "src/api/v2/x.py", "srcx/y.py"])
    with db.connection(settings) as conn:
        near = ActiveNear(conn, _project_id(conn, project), ["src/api/app.py"])
        read = sorted(row["path_pattern"] for rows in near.by_prefix.values() for row in rows)
        assert read == ["*.md", "src/**/*.py", "src/api"]
        assert sorted(row["path_pattern"] for row in near.near("src/api/app.py")) == ["*.md", "src/**/*.py", "src/api"]
    checked = call("check_file_reservations", project_key=project, paths=["src/api/app.py", "src/api"])["conflicts"]
    assert [(c["path"], sorted(h["path_pattern"] for h in c["holders"])) for c in checked] == [
        ("src/api/app.py", ["src/**/*.py", "src/api"]), ("src/api", ["src/api"]),
    ]
    # A directory reserved covers what lies under it; a glob, what it may match.
    granted = call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=["src", "src*/y.py"])
    assert [(c["path"], sorted(h["path_pattern"] for h in c["holders"])) for c in granted["conflicts"]] == [
        ("src", ["src/**/*.py", "src/api", "src/api/v2/x.py"]), ("src*/y.py", ["src/**/*.py", "srcx/y.py"]),
    ]


@pytest.mark.sqlite_only  # the plans of SQLite's planner, and of Turso's (turso_plans)
def test_the_lookups_walk_the_prefix_index_not_every_active_reservation(call, project, settings):
    """The folders' lookup walked file_reservations_active, every active reservation of the
    project, to keep those of a few folders: 3.5 ms a check at 10,000 held. On Turso's engine (a
    replica's) `path_prefix IN (...)` walked every unreleased one (file_reservations_unreleased)."""
    call("file_reservation_paths", project_key=project, agent_name="GreenCastle", paths=[f"docs/d{n}/x.md" for n in range(50)])
    statements = []
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        conn.set_trace_callback(statements.append)
        for name, arguments in (("check_file_reservations", {"paths": ["src/api/app.py", "lib/x.py"]}),
                                ("file_reservation_paths", {"agent_name": "BlueLake", "paths": ["src/api", "*.md"]})):
            tool = TOOLS[name]
            tool.handler(conn, tool.input(project_key=project, **arguments))
        conn.set_trace_callback(None)
        lookups = [sql for sql in statements if "r.path_prefix" in sql]
        plans = [" | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")) for sql in lookups]
    # Two statements a check, however many paths: the folders', the ranges under the paths'.
    assert len(plans) == 4 and all("SEARCH r USING INDEX file_reservations_by_prefix (project_id=? AND path_prefix" in plan
                                   for plan in plans), plans
    on_turso = turso_plans(settings.database_path, lookups)
    assert len(on_turso) == 4 and all(
        any(step.startswith("SEARCH r USING INDEX file_reservations_by_prefix (project_id=? AND path_prefix") for step in steps)
        for steps in on_turso.values()), on_turso


@pytest.mark.sqlite_only
@pytest.mark.parametrize("pattern", [
    "src/app.py", "src", "*.md", "**", "src/**/*.py", "src/api/*.py", "a/b/c[0-9]/d", "docs/?", "x*/y", "a/b*",
    "lib/v1.2/z?.txt", "deep/er/still/deeper/file", "ü/ß*/x",
])
def test_older_reservations_get_their_prefix(tmp_path, pattern):
    """Migration 0026 computes in SQL what literal_prefix computes for new reservations."""
    path = tmp_path / "old.db"
    old = migrated_until(path, "0026_reservation_prefixes")
    old.execute("INSERT INTO projects (id, slug, human_key, created_ts) VALUES (1, 'p', '/p', 'then')")
    old.execute("INSERT INTO agents (id, project_id, name, program, model, inception_ts, last_active_ts)"
                " VALUES (2, 1, 'BlueLake', 'p', 'm', 'then', 'then')")
    old.execute("INSERT INTO file_reservations (id, project_id, agent_id, path_pattern, exclusive, created_ts, expires_ts)"
                " VALUES (3, 1, 2, ?, 1, 'then', '9999-12-31T00:00:00Z')", (pattern,))
    old.close()
    settings = Settings(database_url=f"sqlite:///{path}")
    db.migrate(settings)
    with sql(settings) as conn:
        assert conn.execute("SELECT path_prefix FROM file_reservations").fetchone()[0] == literal_prefix(pattern)
