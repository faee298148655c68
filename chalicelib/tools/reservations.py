"""File reservations: advisory leases on repo-relative paths and globs, and the pre-commit
guard that enforces other agents' exclusive ones at commit time.

A pattern reserves the paths it matches and everything under them (`src` covers
`src/app.py`, as a git pathspec would). An exclusive reservation conflicts with any other
agent's overlapping reservation; two shared ones never conflict. Conflicts are reported,
never refused: reservations are advisory. See docs/reservations.md.
"""

import bisect
import itertools
import re
import sqlite3
from typing import Annotated

from pydantic import AfterValidator, Field

from .. import clock
from . import guard
from ..store.db import chunks, database_file, placeholders, refresh, transaction, values_of
from ..archive import outbox
from ..config import get_settings
from ..errors import Conflict, InvalidArgument, NotFound, TooManyRequests
from ..fields import AgentName, Id, ProjectKey, Storable
from .globs import Budget, OverBudget, escape, has_class, is_glob, overlaps
from .paging import CURSOR_HELP, NEXT_HELP, Keyset, PageCursor, PageCursor1, PageLimit
from ..ids import stable_id
from ..profiles import either, offered
from ..registry import Input, Output, tool
from ..security import auth
from .agents import agent_id, find_agent, mark_active, refuse_retired
from .messages import notify
from .projects import ABSOLUTE_PATH, find_project, path_input, refuse_archived

_DRIVE = re.compile(r"[A-Za-z]:/")
MAX_TTL = 30 * 24 * 3600


# What normalize_path accepts, for the JSON schema (no lookarounds: fuzzers generate from it):
# `./` segments, then a first real segment (not "", ".", "..", nor a drive such as C:), then
# separators each followed by a real segment, ".", or nothing. Every part begins differently from
# what may follow it, so matching is linear.
# No NUL anywhere: no git path holds one, and SQLite's text functions stop at it (fields.Storable).
_SEGMENT = r"(?:[^/\\.\x00][^/\\\x00]*|\.[^/\\.\x00][^/\\\x00]*|\.\.[^/\\\x00]+)"  # not "", ".", ".."
_FIRST_SEGMENT = (r"(?:[^/\\.A-Za-z\x00][^/\\\x00]*|[A-Za-z](?:[^/\\:\x00][^/\\\x00]*|:[^/\\\x00]+)?"
                  r"|\.[^/\\.\x00][^/\\\x00]*|\.\.[^/\\\x00]+)")
REPO_PATH = rf"^(?:\.[/\\]+)*{_FIRST_SEGMENT}(?:[/\\](?:{_SEGMENT}|\.)?)*$"
_REPO_PATH = re.compile(REPO_PATH)


def normalize_path(value: str) -> str:
    """A repo-relative path or glob in one canonical form: `/` separators, no `.` or empty segments."""
    if "\x00" in value:
        raise ValueError(f"{value!r} holds a NUL character (U+0000), which no path holds: leave it out")
    path = value.replace("\\", "/")
    if path.startswith("/") or _DRIVE.match(path):
        raise ValueError(f"{value!r} is absolute; pass a path relative to the repository root, e.g. src/app.py")
    segments = [segment for segment in path.split("/") if segment not in ("", ".")]
    if ".." in segments:
        raise ValueError(f"{value!r} climbs out with '..'; pass a path relative to the repository root, e.g. src/app.py")
    if not segments or not _REPO_PATH.fullmatch(value):
        raise ValueError(f"{value!r} names no path; pass a file, directory or glob, e.g. src/**, or ** for everything")
    return "/".join(segments)


def repo_path(max_length: int):
    return Annotated[
        str,
        Field(min_length=1, max_length=max_length, json_schema_extra={"pattern": REPO_PATH}),
        AfterValidator(normalize_path),
    ]


RepoPath = repo_path(1024)
GitPath = repo_path(4096)  # what check_file_reservations takes: a path git allows (Linux's PATH_MAX) may be reserved by a glob
Paths = Annotated[
    list[RepoPath],
    Field(
        min_length=1,
        max_length=1000,
        description="Repo-relative files, directories or globs (`*`, `?`, `[...]`, `**`),"
        " e.g. src/**, *.py, docs/api/*.md.",
    ),
]
ReservationReason = Annotated[Storable, Field(max_length=1000, description="What you are doing, e.g. a thread id.")]
TtlSeconds = Annotated[int, Field(ge=1, le=MAX_TTL, description="How long the lease lasts, in seconds.")]
# A renewal's: added to the expiry (renew_build_slot's said "how long the lease lasts", read as the new length).
ExtendSeconds = Annotated[int, Field(ge=1, le=MAX_TTL, description="Seconds added to the current expiry (not the lease's new length).")]
CodeRepoPath = Annotated[
    str,
    Field(min_length=1, max_length=4096, description="Absolute path of a git work tree on the server's machine.",
          json_schema_extra={"pattern": ABSOLUTE_PATH}),
    AfterValidator(path_input),
]


def subtrees(pattern: str) -> tuple[str, ...]:
    """The pattern as the globs of what it reserves. A plain path may be a directory, so it covers
    everything under it (`src` covers `src/app.py`); a glob reserves what it matches (`src/*.py`
    is Python files, so it does not meet `src/**/*.ts`). A glob with a class is also the plain
    path it spells and what is under it, as git reads a pathspec: `app/[slug]` (a Next.js route
    folder) reserves `app/[slug]/page.tsx` as well as `app/s`."""
    if not is_glob(pattern):
        return (pattern + "/**",)
    return (pattern, escape(pattern) + "/**") if has_class(pattern) else (pattern,)


def as_files(path: str) -> tuple[str, ...]:
    """A path as git lists it, as globs: a glob is matched as a glob, and one with a class is
    also the file it spells (git lists `app/[slug]/page.tsx`, a real name)."""
    return (path, escape(path)) if has_class(path) else (path,)


def covers(a: str, b: str, budget: Budget) -> bool:
    """Could one path be reserved by both patterns?"""
    return any(overlaps(x, y, budget) for x in subtrees(a) for y in subtrees(b))


def reserved_by(path: str, pattern: str, budget: Budget) -> bool:
    """Is this file (a path as git lists it, not a directory) under the reservation `pattern`?"""
    return any(overlaps(file, reserved, budget) for file in as_files(path) for reserved in subtrees(pattern))


def holds_all_of(cover: str, pattern: str, budget: Budget) -> bool:
    """Does `cover` reserve every path `pattern` reserves? A plain path is taken as the file it
    names, as check_file_reservations and the guard take the paths they are given: `src/*.py`
    holds `src/api.py` (reserved_by). A glob is held only by a cover that reserves whole folders
    (what it reserves ends in `**`) holding its literal prefix, under which every path of the glob
    lies: any other cover answers no, which at worst reports a lapse that did not matter."""
    if not is_glob(pattern):
        return reserved_by(pattern, cover, budget)
    root = literal_prefix(pattern)
    return any(whole == "**" or (whole.endswith("/**") and root != "" and overlaps(whole, root, budget))
               for whole in subtrees(cover))


# Reservation rows with their holder's name as `agent`, and whether it looks alive (stale_because).
HOLDER_COLUMNS = "SELECT r.*, a.name AS agent, a.last_active_ts, a.retired_ts"
WITH_HOLDER = HOLDER_COLUMNS + " FROM file_reservations r JOIN agents a ON a.id = r.agent_id"


# Unreleased, unexpired reservations of a project (expired ones never count).
ACTIVE = WITH_HOLDER + " WHERE r.project_id = ? AND r.released_ts IS NULL AND r.expires_ts > ?"
# The same condition, for rows found by prefix (file_reservations_by_prefix: _lookups gives the FROM
# clause and the prefixes' condition), each one's expiry checked: with
# the expiry a range it may search, SQLite walked every active reservation of the project instead
# (file_reservations_active) to find those of a few folders, 3.5 ms at 10,000 held (0.01 ms so).
# A retired holder's are left out: retiring releases a bounded number (release_some), and what it
# leaves until later (or a retired agent reserved) conflicts with nobody.
ACTIVE_BY_PREFIX_WHERE = " WHERE r.project_id = ? AND r.released_ts IS NULL AND +r.expires_ts > ? AND a.retired_ts IS NULL"
LOOKUP_CHUNK = 500  # folders per query, well under SQLite's limit on parameters
# Pattern pairs one conflict check may compare (a few µs each). Patterns that start with a glob
# meet every path: 1,000 of them against a request for 1,000 more held the writer 48 s.
PAIRS_MAX = 50_000
# And what comparing them may cost in all (globs.Budget), per pair allowed: an ordinary pair takes
# 5-50 comparisons (a long path against a glob of its folder), a pair of crafted 1 KiB patterns tens
# of thousands (5-10 ms), so counting pairs alone let 50,000 crafted ones hold the writer ~4 minutes.
# At most MAX_COMPARISONS a call (~3 s at worst; a check allows 10x the pairs of a write).
COMPARISONS_PER_PAIR = 100
MAX_COMPARISONS = 10_000_000


def comparisons_allowed(pairs_max: int) -> int:
    return min(COMPARISONS_PER_PAIR * pairs_max, MAX_COMPARISONS)
# Active reservations one agent, and all agents of a project, may hold: a conflict check reads
# those near its paths, and one credential that piled up tens of thousands made every later check
# in its project read them all. An agent reserves tens at a time; a folder or glob holds many files.
HELD_PER_AGENT = 1_000
HELD_PER_PROJECT = 10_000
# What the agents of one credential (a bearer token, a JWT's sub: auth.credential) may hold of a
# project's: one that may act as ten agents filled all of it, refusing every other credential's.
# Half leaves the others as much; without authentication all is one caller's, so it has no share.
HELD_PER_CREDENTIAL = HELD_PER_PROJECT // 2
HOLDERS_LISTED = 100  # holders an answer lists in full; the others are counted (an answer stays small)
OVERLAPS_LISTED = 10  # conflicts_with listed per reservation of list_file_reservations


def literal_prefix(pattern: str) -> str:
    """The pattern's leading segments without a glob character (`src/api` for `src/api/*.py`,
    '' for `*.md`): every path it reserves starts with them. So two patterns can overlap only
    when one's literal prefix is the other's or a folder under it."""
    return "/".join(itertools.takewhile(lambda segment: not is_glob(segment), pattern.split("/")))


def _folders_down_to(prefix: str) -> list[str]:
    """'' and each folder down to the prefix itself: `a/b` gives '', `a`, `a/b`."""
    segments = prefix.split("/") if prefix else []
    return ["/".join(segments[:n]) for n in range(len(segments) + 1)]


def _under(prefix: str) -> tuple[str, str | None]:
    """The prefixes under this one lie strictly between these two (`src/` and `src0`, as
    '0' follows '/'). Every other prefix is under '': above it, with no upper bound (none a
    string could be: U+10FFFF left out the prefixes that start with it)."""
    return (prefix + "/", prefix + "0") if prefix else ("", None)


def _lookups(prefixes: list[str]):
    """(FROM clause, condition, and the parameters of each) of each query that reads the
    reservations near these literal prefixes: those whose prefix is one of their folders, then
    those under each of them. The folders, and the ranges of what is under each prefix, are VALUES
    tables joined to the prefix index (values_of: with `path_prefix IN (...)`, Turso's engine read
    every unreleased reservation of the project; a statement per range cost its preparing, 200
    of them a check of 200 files)."""
    folders = sorted({folder for prefix in prefixes for folder in _folders_down_to(prefix)})
    for chunk in chunks(folders, LOOKUP_CHUNK):
        yield _joined("path_prefix", [(folder,) for folder in chunk]), "r.path_prefix = wanted.path_prefix"
    named = set(prefixes)
    if "" in named:  # every prefix is under it: one range, unbounded above (_under)
        yield _joined("low", [("",)]), "r.path_prefix > wanted.low"
        return
    # (A prefix under another of them is left out: the other's range holds its own.)
    tops = [prefix for prefix in prefixes if not any(folder in named for folder in _folders_down_to(prefix)[:-1])]
    for chunk in chunks(tops, LOOKUP_CHUNK):
        yield _joined("low, high", [_under(prefix) for prefix in chunk]), "r.path_prefix > wanted.low AND r.path_prefix < wanted.high"


def _joined(columns: str, rows: list[tuple]) -> tuple[str, list]:
    """The FROM clause reading the reservations (with their holders) of each of these rows (a
    VALUES table `wanted` of these columns, read first), and its parameters."""
    wanted, params = values_of(rows)
    return (f"WITH wanted ({columns}) AS ({wanted}) {HOLDER_COLUMNS} FROM wanted CROSS JOIN file_reservations r"
            " JOIN agents a ON a.id = r.agent_id"), params


class ActiveNear:
    """A project's active reservations that may overlap some patterns, found by literal prefix
    (the file_reservations_by_prefix index) instead of read all, so a check costs what the
    patterns name, not what the project holds. `near(pattern)` gives those of them that
    may overlap one pattern, oldest first; the caller decides with `covers` or `reserved_by`."""

    def __init__(self, db: sqlite3.Connection, project_id: int, patterns: list[str], among: tuple[str, list] = ("", []),
                 pairs_max: int | None = None) -> None:
        """`among`: SQL narrowing the rows read (`compared_by`), and its parameters. `pairs_max`: the
        pairs a check may compare (PAIRS_MAX unless given). Each row read is near one of the patterns
        at least, so reading stops past that many rows (`cut`): comparing them would pass it anyway,
        and whatever the project holds, a check is refused having read no more. `budget`: what the
        check's comparisons may cost, all its pairs together (comparisons_allowed)."""
        self.pairs_max = PAIRS_MAX if pairs_max is None else pairs_max
        self.budget = Budget(comparisons_allowed(self.pairs_max))
        now, prefixes = clock.now(), sorted({literal_prefix(pattern) for pattern in patterns})
        rows = {}
        for (source, wanted), where in _lookups(prefixes):
            sql, room = f"{source}{ACTIVE_BY_PREFIX_WHERE}{among[0]} AND {where} LIMIT ?", self.pairs_max + 1 - len(rows)
            rows.update((row["id"], row) for row in db.execute(sql, (*wanted, project_id, now, *among[1], room)))
            if len(rows) > self.pairs_max:
                break
        self.cut = len(rows) > self.pairs_max
        self.by_prefix: dict[str, list[sqlite3.Row]] = {}
        for row in rows.values():  # near() puts each answer in order
            self.by_prefix.setdefault(row["path_prefix"], []).append(row)
        self.prefixes = sorted(self.by_prefix)
        self.counted = list(itertools.accumulate((len(self.by_prefix[prefix]) for prefix in self.prefixes), initial=0))

    def _under(self, prefix: str) -> range:
        """Where the prefixes under this one are in self.prefixes."""
        low, high = _under(prefix)
        end = len(self.prefixes) if high is None else bisect.bisect_left(self.prefixes, high)
        return range(bisect.bisect_right(self.prefixes, low), end)

    def near(self, pattern: str) -> list[sqlite3.Row]:
        prefix = literal_prefix(pattern)
        under = [self.prefixes[index] for index in self._under(prefix)]
        found = [row for folder in [*_folders_down_to(prefix), *under] for row in self.by_prefix.get(folder, ())]
        return sorted(found, key=lambda row: (row["created_ts"], row["id"]))

    def count(self, pattern: str) -> int:
        """len(near(pattern)), from counts: what comparing the pattern with them would cost."""
        prefix, under = literal_prefix(pattern), self._under(literal_prefix(pattern))
        return self.counted[under.stop] - self.counted[under.start] + sum(
            len(self.by_prefix.get(folder, ())) for folder in _folders_down_to(prefix))


def compared_by(agent_id: int | None, exclusive: bool) -> tuple[str, list]:
    """ActiveNear's `among` for a request: the others' reservations, only exclusive ones for a
    shared request (what conflicts compares it with), so that counting them counts the cost."""
    sql, params = ("", []) if agent_id is None else (" AND r.agent_id != ?", [agent_id])
    return (sql if exclusive else sql + " AND r.exclusive"), params


class TooManyToCompare(InvalidArgument):
    """A conflict check would compare more than PAIRS_MAX pairs of patterns, or spend more than
    its budget comparing them. Its own code: fewer paths a call would do (the pre-commit guard splits its chunk)."""

    code = "too_much_to_compare"


def fewer_paths() -> str:
    return "Send fewer paths per call, or patterns under a folder (src/api/**, not **/api/**)." + shows_held()


def shows_held() -> str:
    """Where to see what is held, when this server lists that tool (TOOLS_PROFILE)."""
    return " list_file_reservations shows what is held." if offered("list_file_reservations") else ""


def too_many_to_compare(paths: list[str], pairs: int | None, pairs_max: int, done: str) -> TooManyToCompare:
    """`pairs`: how many, or None when reading stopped before all were counted (ActiveNear.cut)."""
    counted = f"{pairs:,} pairs of patterns, more than" if pairs is not None else "more pairs of patterns than"
    return TooManyToCompare(
        f"Checking these {len(paths)} paths for conflicts would compare {counted}"
        f" {pairs_max:,}: the project holds many reservations that could overlap them (a pattern starting with a"
        f" glob, such as *.md or **, may overlap anything).{done and ' ' + done}", fewer_paths())


def too_costly_to_compare(paths: list[str], pairs_max: int, done: str) -> TooManyToCompare:
    return TooManyToCompare(
        f"Checking these {len(paths)} paths for conflicts would take more than {comparisons_allowed(pairs_max):,}"
        f" comparisons: reservations near them are patterns costly to compare (long, with many stars).{done and ' ' + done}",
        fewer_paths())


def overlap_peers(db: sqlite3.Connection, project_id: int, agent_id: int, among: list[int]) -> set[int]:
    """Those of the agents `among` holding an active reservation that overlaps one of `agent_id`'s
    (the contact check's shared work). A pattern that starts with a glob (`**`, `*.md`) names no
    part of the tree and counts on neither side: a fresh identity that reserved `**` (granted, and
    advisory) overlapped every agent holding anything, and so could write to all of them.
    Past PAIRS_MAX pairs, or their budget, it stops: those not found by then are not peers."""
    sql = ACTIVE + " AND r.agent_id = ? AND r.path_prefix != '' LIMIT ?"  # as many as an agent may hold
    mine = [row["path_pattern"] for row in db.execute(sql, (project_id, clock.now(), agent_id, HELD_PER_AGENT))]
    among_sql = f" AND r.agent_id IN ({placeholders(among)}) AND r.path_prefix != ''"
    active = ActiveNear(db, project_id, mine, (among_sql, among))
    peers, budget = set(), PAIRS_MAX
    for pattern in mine:
        for row in active.near(pattern):
            budget -= 1
            if budget < 0:
                return peers
            if row["agent_id"] in peers or row["agent_id"] == agent_id:
                continue
            try:
                if covers(pattern, row["path_pattern"], active.budget):
                    peers.add(row["agent_id"])
            except OverBudget:
                return peers
    return peers


class Reservation(Output):
    id: Id
    agent: str
    path_pattern: str
    exclusive: bool
    reason: str
    created_ts: str
    expires_ts: str
    released_ts: str | None


def reservation(row: sqlite3.Row) -> Reservation:
    return Reservation(**{name: row[name] for name in Reservation.model_fields})


class PathConflict(Output):
    path: str = Field(description="The path or pattern asked about.")
    holders: list[Reservation] = Field(
        description=f"Other agents' active reservations that overlap it, oldest first; an answer lists {HOLDERS_LISTED} in"
        " all (its paths in order), and counts the others in holders_unlisted.")
    holders_unlisted: int = Field(0, description="How many more overlap it than holders lists.")


def conflicts(
    active: ActiveNear, agent_id: int | None, paths: list[str], exclusive: bool, match=covers, done: str = "",
) -> list[PathConflict]:
    """For each path, the other agents' active reservations it clashes with: any of them
    for an exclusive request, the exclusive ones for a shared request. Refused (TooManyToCompare,
    saying `done`) before comparing more than `active.pairs_max` pairs, or once comparing them has
    spent `active.budget`."""
    pairs = sum(map(active.count, paths))
    if pairs > active.pairs_max or active.cut:
        raise too_many_to_compare(paths, None if active.cut else pairs, active.pairs_max, done)
    found, listed = [], 0
    for path in paths:
        try:
            holders = [
                row for row in active.near(path)
                if row["agent_id"] != agent_id and (exclusive or row["exclusive"])
                and match(path, row["path_pattern"], active.budget)
            ]
        except OverBudget:
            raise too_costly_to_compare(paths, active.pairs_max, done) from None
        if holders:
            shown = holders[: max(0, HOLDERS_LISTED - listed)]
            listed += len(shown)
            found.append(PathConflict(path=path, holders=[reservation(row) for row in shown],
                                      holders_unlisted=len(holders) - len(shown)))
    return found


def reservations_by_id(db: sqlite3.Connection, ids: list[int]) -> list[Reservation]:
    rows = db.execute(f"{WITH_HOLDER} WHERE r.id IN ({placeholders(ids)}) ORDER BY r.path_pattern", ids)
    return [reservation(row) for row in rows]


def reservation_id(project_id: int, agent_id: int, pattern: str) -> int:
    # One row per (agent, pattern): reserving it again renews that lease instead of adding one.
    return stable_id("file_reservation", project_id, agent_id, pattern)


class FileReservationPathsInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    paths: Paths
    ttl_seconds: TtlSeconds = 3600
    exclusive: bool = Field(True, description="Exclusive: others should not edit. Shared: you are reading or watching.")
    reason: ReservationReason = ""


class Reserved(Output):
    granted: list[Reservation]
    conflicts: list[PathConflict] = Field(description="Granted anyway (reservations are advisory): coordinate first.")


def file_reservation_paths(db: sqlite3.Connection, args: FileReservationPathsInput) -> Reserved:
    """Reserve files or globs before editing them, so other agents know.

    Advisory: every path is granted, and `conflicts` lists other agents' active
    reservations that overlap (an exclusive request clashes with any holder, a shared one
    with exclusive holders), with holder, pattern and expiry: message them before you edit.
    A pattern covers everything under it (`src` covers `src/app.py`). Reserving a pattern
    you already hold renews it with the new ttl, exclusive flag and reason. An agent holds at
    most 1,000 active reservations, a project 10,000, the agents of one credential (bearer token)
    5,000 of a project's: past them the call is refused (429) and nothing is reserved; release what
    you are done with, or reserve folders or globs."""
    project = find_project(db, args.project_key)
    refuse_archived(project)
    agent = find_agent(db, project, args.agent_name)
    refuse_retired(project, agent, "reserve files")  # what it held conflicts with nobody: so would what it took
    paths = list(dict.fromkeys(args.paths))
    now = clock.now()
    ids = [reservation_id(project["id"], agent["id"], path) for path in paths]
    credential = auth.current_credential() or ""  # '': no share to count (migration 0039)
    refuse_too_many_held(db, project, agent, credential, ids, now)
    active = ActiveNear(db, project["id"], paths, compared_by(agent["id"], args.exclusive))
    clashes = conflicts(active, agent["id"], paths, args.exclusive, done="Nothing was reserved.")
    expires = clock.later(now, args.ttl_seconds)
    # The leases held are updated, then the others inserted: not an upsert (docs/turso.md).
    db.executemany(
        "UPDATE file_reservations SET exclusive = ?, reason = ?,"
        # a lease still running keeps its start and its credential (what refuse_too_many_held counted
        # as added is what starts afresh, in the caller's share)
        " created_ts = CASE WHEN released_ts IS NULL AND expires_ts > ? THEN created_ts ELSE ? END,"
        " credential = CASE WHEN released_ts IS NULL AND expires_ts > ? THEN credential ELSE ? END,"
        " expires_ts = ?, released_ts = NULL WHERE id = ?",
        [(args.exclusive, args.reason, now, now, now, credential, expires, rid) for rid in ids],
    )
    db.executemany(
        "INSERT INTO file_reservations (id, project_id, agent_id, path_pattern, path_prefix, exclusive, reason, created_ts,"
        " expires_ts, credential) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        [
            (rid, project["id"], agent["id"], path, literal_prefix(path), args.exclusive, args.reason, now, expires, credential)
            for rid, path in zip(ids, paths)
        ],
    )
    mark_active(db, agent["id"], now)
    outbox.record_reservations(db, project, ids)
    return Reserved(granted=reservations_by_id(db, ids), conflicts=clashes)


def refuse_too_many_held(db: sqlite3.Connection, project: sqlite3.Row, agent: sqlite3.Row, credential: str, ids: list[int],
                         now: str) -> None:
    """429, before anything is reserved, if granting the reservations `ids` would take the agent past
    HELD_PER_AGENT active ones, its project past HELD_PER_PROJECT, or the agents of the caller's
    credential (if any: '' is none) past HELD_PER_CREDENTIAL of the project's. Those already active
    are renewed, not added: renewing stays possible at the limit."""
    sql = f"SELECT count(*) FROM file_reservations WHERE id IN ({placeholders(ids)}) AND {LIVE}"
    adding = len(ids) - db.execute(sql, [*ids, now]).fetchone()[0]
    # Each an index range: file_reservations_by_agent_expiry, _active, _by_credential.
    scopes = [(f"{agent['name']} holds", "agent_id = ?", [agent["id"]], HELD_PER_AGENT, f"the limit of {HELD_PER_AGENT:,}"),
              (f"The agents of {project['slug']} hold", "project_id = ?", [project["id"]], HELD_PER_PROJECT,
               f"the limit of {HELD_PER_PROJECT:,}")]
    if credential:
        scopes.append((f"This credential's agents in {project['slug']} hold", "project_id = ? AND credential = ?",
                       [project["id"], credential], HELD_PER_CREDENTIAL, f"its share of {HELD_PER_CREDENTIAL:,}, of the"
                       f" project's {HELD_PER_PROJECT:,} (the rest is left to other credentials)"))
    for who, where, keys, limit, limit_is in scopes if adding else ():
        scope = f"{where} AND {LIVE}"
        # Counted no further than the limit: a project over it (from before there was one) costs no more.
        sql = f"SELECT count(*) FROM (SELECT 1 FROM file_reservations WHERE {scope} LIMIT ?)"
        (held,) = db.execute(sql, (*keys, now, limit + 1)).fetchone()
        if held + adding > limit:
            # When enough of them will have expired for these to fit: the Retry-After.
            room = db.execute(f"SELECT expires_ts FROM file_reservations WHERE {scope} ORDER BY expires_ts LIMIT 1 OFFSET ?",
                              (*keys, now, held + adding - limit - 1)).fetchone()
            raise too_many_held(who, held, adding, limit, limit_is, room and room[0], now)


def too_many_held(who: str, held: int, adding: int, limit: int, limit_is: str, room: str | None, now: str) -> TooManyRequests:
    count = f"more than {limit:,}" if held > limit else f"{held:,}"
    return TooManyRequests(
        f"{who} {count} active file reservations; {adding:,} more would pass {limit_is}. Nothing was reserved.",
        "Release those no longer needed (release_file_reservations), or let them expire"
        f"{f': enough have by {room}' if room else ''}. A folder or glob (src/api/**) holds many files in one reservation."
        + shows_held(),
        clock.seconds_until(room or clock.later(now, MAX_TTL), now),
    )


def recheck_conflicts(db: sqlite3.Connection, args: FileReservationPathsInput, reserved: Reserved) -> Reserved:
    """Once the grant reached the primary, list the conflicts again from fresh data: on Turso
    replicas another process may have granted an overlapping reservation meanwhile, and of
    two racing grants at least one sees the other here (each was pushed before its check). On
    embedded SQLite the check inside the write already saw every committed grant."""
    if not hasattr(db, "replica"):
        return reserved
    refresh(db)
    with transaction(db, write=False):
        project = find_project(db, args.project_key)
        paths = list(dict.fromkeys(args.paths))
        mine = agent_id(project["id"], args.agent_name)
        active = ActiveNear(db, project["id"], paths, compared_by(mine, args.exclusive))
        try:
            return Reserved(granted=reserved.granted, conflicts=conflicts(active, mine, paths, args.exclusive))
        except TooManyToCompare:  # grants came meanwhile; the grant stands: answer what the write found
            return reserved


class CheckFileReservationsInput(Input):
    project_key: ProjectKey
    agent_name: AgentName | None = Field(None, description="Who is asking; omit for someone holding nothing (a human).")
    paths: Annotated[list[GitPath], Field(min_length=1, max_length=1000, description=(
        "Repo-relative files, e.g. as `git diff --cached --name-only` lists them (up to 4,096 characters each).")),
    ]


class Checked(Output):
    conflicts: list[PathConflict] = Field(description="Paths under another agent's active exclusive reservation.")


def check_file_reservations(db: sqlite3.Connection, args: CheckFileReservationsInput) -> Checked:
    """Which of these files are under another agent's active exclusive reservation?

    What the pre-commit guard asks about the staged files; also useful before editing.
    Each path is taken as a file (a glob is matched as a glob). Reserves nothing."""
    project = find_project(db, args.project_key)
    agent_id = find_agent(db, project, args.agent_name)["id"] if args.agent_name else None
    # A pre-commit check answers for a whole commit, and a refusal blocks it: it may compare ten
    # times more than a write (it is a read, on the slow-read thread; the writer is not held).
    active = ActiveNear(db, project["id"], args.paths, compared_by(agent_id, exclusive=False), pairs_max=10 * PAIRS_MAX)
    found = conflicts(active, agent_id, args.paths, exclusive=False, match=reserved_by)
    return Checked(conflicts=found)


class ReleaseFileReservationsInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    paths: Paths | None = Field(None, description="Release the reservations of exactly these patterns.")
    file_reservation_ids: Annotated[list[Id], Field(min_length=1, max_length=1000)] | None = Field(
        None, description="Release these reservations (yours only)."
    )


class Released(Output):
    released: int = Field(description="How many active reservations were released.")
    released_ts: str
    more: bool = Field(False, description=f"A call releases at most {HELD_PER_AGENT:,} (what an agent may hold): true when"
                       " more of those named (all yours, if none) are still held; call again, the same way, for the rest.")


def own_reservation_ids(db: sqlite3.Connection, agent: sqlite3.Row, ids: list[int]) -> list[int]:
    """The ids, after checking that each one is a reservation of `agent`."""
    rows = db.execute(f"SELECT id FROM file_reservations WHERE agent_id = ? AND id IN ({placeholders(ids)})", [agent["id"], *ids])
    owned = {rid for (rid,) in rows}
    if missing := [str(rid) for rid in ids if rid not in owned]:
        raise NotFound(
            f"{agent['name']} holds no file reservation with id {', '.join(missing)}.",
            f"Take ids from {either('list_file_reservations') or 'the answer of file_reservation_paths'}"
            + ("; another agent's stale reservation needs force_release_file_reservation."
               if offered("force_release_file_reservation") else "."),
        )
    return ids


LIVE = "released_ts IS NULL AND expires_ts > ?"  # a reservation's own condition for being active


def named(db: sqlite3.Connection, agent: sqlite3.Row, paths: list[str] | None, ids: list[int] | None) -> tuple:
    """SQL condition and parameters for the agent's reservations named by paths or ids (all, if neither)."""
    sql, params = "agent_id = ?", [agent["id"]]
    names = []
    if paths:
        names.append(f"path_pattern IN ({placeholders(paths)})")
        params += paths
    if ids:
        names.append(f"id IN ({placeholders(ids)})")
        params += own_reservation_ids(db, agent, ids)
    if names:
        sql += f" AND ({' OR '.join(names)})"
    return sql, params


def selection(db: sqlite3.Connection, agent: sqlite3.Row, paths: list[str] | None, ids: list[int] | None) -> tuple:
    """SQL condition and parameters for the agent's active reservations named by paths or ids (all, if neither)."""
    sql, params = named(db, agent, paths, ids)
    return f"{sql} AND {LIVE}", [*params, clock.now()]


def release_file_reservations(db: sqlite3.Connection, args: ReleaseFileReservationsInput) -> Released:
    """Release your file reservations: those with the given patterns or ids, or all of them
    if you give neither. Releasing what is not active is a no-op. At most 1,000 a call: `more`
    says more are held; call again for the rest."""
    project = find_project(db, args.project_key)
    agent = find_agent(db, project, args.agent_name)
    where, params = selection(db, agent, args.paths, args.file_reservation_ids)
    now = clock.now()
    released, more = release_some(db, project, where, params, now)
    mark_active(db, agent["id"], now)
    return Released(released=len(released), released_ts=now, more=more)


def release_some(db: sqlite3.Connection, project: sqlite3.Row, where: str, params: list, now: str,
                 at_most: int | None = None) -> tuple[list[int], bool]:
    """Release at most `at_most` (HELD_PER_AGENT unless given) of the active reservations `where`
    selects: (the ids released, whether some are still held). An agent over the limit (from before
    it, or two replicas' grants) is not all updated in one write."""
    at_most = HELD_PER_AGENT if at_most is None else at_most
    sql = f"UPDATE file_reservations SET released_ts = ? WHERE id IN (SELECT id FROM file_reservations WHERE {where} LIMIT ?) RETURNING id"
    released = [rid for (rid,) in db.execute(sql, [now, *params, at_most])] if at_most else []
    more = len(released) == at_most and db.execute(f"SELECT 1 FROM file_reservations WHERE {where} LIMIT 1", params).fetchone()
    outbox.record_reservations(db, project, released)
    return released, bool(more)


class RenewFileReservationsInput(Input):
    project_key: ProjectKey
    agent_name: AgentName
    extend_seconds: ExtendSeconds = 1800
    paths: Paths | None = Field(None, description="Renew the reservations of exactly these patterns (default: all yours).")
    file_reservation_ids: Annotated[list[Id], Field(min_length=1, max_length=1000)] | None = None
    cursor: PageCursor1 | None = Field(None, description="next_cursor of the previous call, to renew the next ones of the same"
                                      " selection; omit it to start.")


# How far back a renewal of all of them (a heartbeat) looks for leases that expired: an agent
# that slept past its leases (a night, a long build) hears of it at its next heartbeat, while a
# lease let go by leaving it to expire stops being news after a day. Newest first, so a long
# list is cut where it matters least.
RECENT_LAPSE_SECONDS = 24 * 3600
RECENT_LAPSES_LISTED = 100
BY_ID = Keyset((("id", "id"),))  # renewing moves expiries: the order of a renewal's pages is one that it leaves alone


class Renewed(Output):
    renewed: int
    file_reservations: list[Reservation]
    next_cursor: str | None = Field(None, description=f"A call renews at most {HELD_PER_AGENT:,} (what an agent may hold),"
                                    " in id order: more are held; pass this as cursor, with the same paths or ids (or none) and"
                                    " extend_seconds, to renew the next ones. Null once all were renewed.")
    lapsed: list[Reservation] = Field(
        [], description="Not renewed because they had lapsed: reserve them again with file_reservation_paths (and"
        " check nobody edited those files meanwhile). Of the reservations named by paths or ids, those expired or"
        f" released; renewing all of them, those that expired in the last {RECENT_LAPSE_SECONDS // 3600} hours (newest"
        f" first, at most {RECENT_LAPSES_LISTED}; also if another agent force-released them after, without a notice)"
        " and that you have not reserved again (not those you released, nor"
        " those another active reservation of yours holds as strongly, e.g. src/api.py under src/** or src/*.py)."
    )


def renew_file_reservations(db: sqlite3.Connection, args: RenewFileReservationsInput) -> Renewed:
    """Extend your active file reservations by extend_seconds: those with the given patterns
    or ids, or all of them. An expired or released reservation is not renewed: reserve it
    again with file_reservation_paths (which reports any conflicts that appeared meanwhile).

    Renewing nothing of what was named (paths or ids) is a 404 that says why; when only some
    of it lapsed, the rest is renewed and `lapsed` lists the others. Renewing all of them
    (a heartbeat) renews what is held, 0 after a release, and `lapsed` lists those that
    expired in the last 24 hours: you may still be editing files you no longer hold. At most
    1,000 a call: `next_cursor` says more are held; pass it as cursor to renew the next ones."""
    project = find_project(db, args.project_key)
    refuse_archived(project)  # read-only: what it holds lapses (file_reservation_paths grants nothing there either)
    agent = find_agent(db, project, args.agent_name)
    refuse_retired(project, agent, "renew file reservations")  # what it still holds conflicts with nobody, and lapses
    where, params = named(db, agent, args.paths, args.file_reservation_ids)
    now = clock.now()
    after, after_params = BY_ID.after(args.cursor)
    # A limit's worth a call: one over it (from before it, or two replicas' grants) is not all updated in one write.
    rows, cursor = BY_ID.page(db.execute(
        f"SELECT id, expires_ts FROM file_reservations WHERE {where} AND {LIVE}{after}{BY_ID.order_by()} LIMIT ?",
        [*params, now, *after_params, HELD_PER_AGENT + 1],
    ), HELD_PER_AGENT)
    asked = args.paths is not None or args.file_reservation_ids is not None
    lapsed = lapsed_reservations(db, where, params, now) if asked else recently_expired(db, agent, now)
    if not rows and asked:  # those it named lapsed: say so (all of them: none held is no news, e.g. after a release)
        raise nothing_renewed(agent, args.paths, lapsed)
    db.executemany(
        "UPDATE file_reservations SET expires_ts = ? WHERE id = ?",
        [(clock.later(row["expires_ts"], args.extend_seconds), row["id"]) for row in rows],
    )
    mark_active(db, agent["id"], now)
    ids = [row["id"] for row in rows]
    outbox.record_reservations(db, project, ids)
    return Renewed(renewed=len(ids), file_reservations=reservations_by_id(db, ids) if ids else [], lapsed=lapsed,
                   next_cursor=cursor)


def lapsed_reservations(db: sqlite3.Connection, where: str, params: list, now: str) -> list[Reservation]:
    """The reservations `where` names that are no longer active: expired or released."""
    ids = [rid for (rid,) in db.execute(f"SELECT id FROM file_reservations WHERE {where} AND NOT ({LIVE})", [*params, now])]
    return reservations_by_id(db, ids) if ids else []


def recently_expired(db: sqlite3.Connection, agent: sqlite3.Row, now: str) -> list[Reservation]:
    """The agent's reservations that expired within RECENT_LAPSE_SECONDS while held, and are not
    still held by another of its reservations. Released after it expired (force_release_file_reservation,
    maybe without a notice) it lapsed all the same; released before, it was let go: by the agent,
    or by another agent, which always tells the holder of a lease still running. Reserving a
    pattern again reuses its row (one per agent and pattern), so a pattern held again is active
    and not among them. (Each branch an index range of file_reservations_by_agent_expiry.)"""
    since = clock.later(now, -RECENT_LAPSE_SECONDS)
    rows = db.execute(
        f"{WITH_HOLDER} WHERE r.agent_id = ? AND r.released_ts IS NULL AND r.expires_ts <= ? AND r.expires_ts > ?"
        f" UNION ALL {WITH_HOLDER} WHERE r.agent_id = ? AND r.released_ts > ? AND r.released_ts >= r.expires_ts"
        " AND r.expires_ts > ? ORDER BY expires_ts DESC, id LIMIT ?",
        (agent["id"], now, since, agent["id"], since, since, RECENT_LAPSES_LISTED),
    ).fetchall()
    if not rows:
        return []
    own = ActiveNear(db, agent["project_id"], [row["path_pattern"] for row in rows], (" AND r.agent_id = ?", [agent["id"]]))
    return [reservation(row) for row in rows if not still_held(own, row)]


def still_held(own: ActiveNear, lapsed: sqlite3.Row) -> bool:
    """Does one of the agent's active reservations (`own`) hold all of `lapsed`, at least as strongly
    (an exclusive lapse needs an exclusive cover)? Then reserving it again is no advice to give.
    Past own.budget the answer is no: at worst a lapse that did not matter is reported."""
    try:
        return any(
            (cover["exclusive"] or not lapsed["exclusive"])
            and holds_all_of(cover["path_pattern"], lapsed["path_pattern"], own.budget)
            for cover in own.near(lapsed["path_pattern"])
        )
    except OverBudget:
        return False


def nothing_renewed(agent: sqlite3.Row, paths: list[str] | None, lapsed: list[Reservation]) -> NotFound:
    """The 404 of a renewal that found nothing active: what lapsed, and how to reserve it again."""
    if lapsed:
        ended = "; ".join(
            f"{r.path_pattern} (id {r.id}) " + (f"released at {r.released_ts}" if r.released_ts else f"expired at {r.expires_ts}")
            for r in lapsed[:5]  # a few are enough to recognise them: the message stays short
        )
        more = f"; and {len(lapsed) - 5} more" if len(lapsed) > 5 else ""
        message = f"Nothing renewed: {agent['name']}'s reservations named here are no longer active: {ended}{more}."
    else:
        message = f"Nothing renewed: {agent['name']} holds no active file reservation{' of these patterns' if paths else ''}."
    patterns = list(dict.fromkeys(r.path_pattern for r in lapsed)) or paths
    call = f"file_reservation_paths(paths={patterns!r})" if patterns and len(patterns) <= 5 else "file_reservation_paths"
    return NotFound(message, f"An expired or released reservation cannot be renewed: reserve again with {call}"
                    " (it reports any conflicts that appeared meanwhile).")


class ForceReleaseInput(Input):
    project_key: ProjectKey
    agent_name: AgentName = Field(description="You: the agent taking the reservation away.")
    file_reservation_id: Id
    note: Annotated[Storable, Field(max_length=4000, description="Why; included in the message to the holder.")] = ""
    notify_previous: bool = Field(True, description="Send the holder a message saying so. False spares only the holder of an"
                                  " expired reservation (its next heartbeat lists it in lapsed): the holder of one still"
                                  " running is always told, as it may still be editing those files.")


class ForceReleased(Output):
    released: bool = Field(description="False if it was already released.")
    stale_because: str = Field(description="Why it could be taken: expired, holder inactive or retired, or yours.")
    notified: bool
    file_reservation: Reservation


def find_reservation(db: sqlite3.Connection, project: sqlite3.Row, reservation_id: int) -> sqlite3.Row:
    row = db.execute(
        "SELECT r.*, a.name AS agent, a.last_active_ts, a.retired_ts FROM file_reservations r"
        " JOIN agents a ON a.id = r.agent_id WHERE r.id = ? AND r.project_id = ?",
        (reservation_id, project["id"]),
    ).fetchone()
    if row is None:
        raise NotFound(
            f"File reservation {reservation_id} not found in project {project['slug']!r}.",
            "Take ids from list_file_reservations or from the conflicts of file_reservation_paths.",
        )
    return row


def stale_because(row: sqlite3.Row, agent: sqlite3.Row, now: str) -> str | None:
    """Why another agent may take this reservation away, or None while its holder looks alive."""
    if row["agent_id"] == agent["id"]:
        return "it is yours"
    if row["expires_ts"] <= now:
        return f"it expired at {row['expires_ts']}"
    if row["retired_ts"]:
        return f"{row['agent']} is retired"
    if stale_from(row["last_active_ts"]) <= now:
        return f"{row['agent']} has been inactive since {row['last_active_ts']}"
    return None


def stale_from(last_active_ts: str) -> str:
    """When an agent last active then counts as inactive (STALE_AGENT_SECONDS later)."""
    return clock.later(last_active_ts, get_settings().stale_agent_seconds)


def force_release_file_reservation(db: sqlite3.Connection, args: ForceReleaseInput) -> ForceReleased:
    """Release another agent's reservation that looks abandoned: it expired, its holder is
    retired, or its holder has been inactive longer than STALE_AGENT_SECONDS (default 30
    minutes). A live holder's reservation is refused (409): message them instead. The
    holder gets a notice saying who released it and why (your note); with notify_previous=false,
    only if the reservation had not expired."""
    project = find_project(db, args.project_key)
    refuse_archived(project)  # as file_reservation_paths: whether it worked hung on notify_previous (its notice)
    agent = find_agent(db, project, args.agent_name)
    refuse_retired(project, agent, "force-release file reservations")
    row = find_reservation(db, project, args.file_reservation_id)
    if row["released_ts"] is not None:
        return ForceReleased(
            released=False, stale_because="it was already released", notified=False, file_reservation=reservation(row)
        )
    now = clock.now()
    why = stale_because(row, agent, now)
    if why is None:
        raise Conflict(
            f"{row['agent']}'s reservation of {row['path_pattern']} is active until {row['expires_ts']}"
            f" and {row['agent']} was last active at {row['last_active_ts']}.",
            f"Ask {row['agent']} to release it (send_message), or retry once it expires or {row['agent']}"
            f" has been inactive for {get_settings().stale_agent_seconds} seconds.",
        )
    db.execute("UPDATE file_reservations SET released_ts = ? WHERE id = ?", (now, row["id"]))
    outbox.record_reservations(db, project, [row["id"]])
    # A lease still running is taken from a holder that may be editing under it, and nothing else
    # would tell it (a heartbeat lists only what expired): notify_previous=false spares the others.
    running = row["expires_ts"] > now
    tell_holder = (args.notify_previous or running) and row["agent_id"] != agent["id"] and not row["retired_ts"]
    if tell_holder:
        notify(  # the holder hears of it whatever its contact policy
            db, project, agent, row["agent"], f"Released your file reservation {row['path_pattern']}",
            f"{agent['name']} force-released your reservation of `{row['path_pattern']}`"
            f" (id {row['id']}) because {why}." + (f"\n\n{args.note}" if args.note else ""),
        )
    else:
        mark_active(db, agent["id"], now)
    [released] = reservations_by_id(db, [row["id"]])
    return ForceReleased(released=True, stale_because=why, notified=tell_holder, file_reservation=released)


class ListFileReservationsInput(Input):
    project_key: ProjectKey
    active_only: bool = Field(True, description="False: also released and expired ones.")
    limit: PageLimit = 100
    cursor: PageCursor | None = Field(None, description=CURSOR_HELP)


class Overlap(Output):
    id: Id
    agent: str
    path_pattern: str


class ListedReservation(Reservation):
    conflicts_with: list[Overlap] = Field(
        description="Other agents' active reservations this active one conflicts with (they overlap and one of the two is"
        " exclusive): granted anyway, as reservations are advisory; the holders should settle it. Empty otherwise."
        f" The oldest {OVERLAPS_LISTED}; conflicts_unlisted counts the others.")
    conflicts_unlisted: int = Field(0, description="How many more it conflicts with than conflicts_with lists.")
    conflicts_unchecked: int = Field(0, description="How many others that may conflict with it were not compared with it:"
                                     " comparing them would cost more than a page may (patterns costly to compare). Usually 0.")
    releasable_because: str | None = Field(
        description="Why force_release_file_reservation would take it from its holder now (expired, holder retired or"
        " inactive); null while its holder looks alive, or once released.")
    releasable_from: str | None = Field(
        description="While its holder looks alive: when force_release_file_reservation takes it if the holder does nothing"
        " more (STALE_AGENT_SECONDS after its last act; or once the reservation expires, if sooner). Else null.")


class FileReservations(Output):
    file_reservations: list[ListedReservation]
    next_cursor: str | None = Field(None, description=NEXT_HELP)


OLDEST_FIRST = Keyset((("created_ts", "r.created_ts"), ("id", "r.id")))


def list_file_reservations(db: sqlite3.Connection, args: ListFileReservationsInput) -> FileReservations:
    """The project's file reservations, oldest first, a page at a time: by default only active
    ones (neither released nor expired). A page may end before `limit` (with next_cursor) when
    its reservations overlap many others."""
    project = find_project(db, args.project_key)
    where, params = OLDEST_FIRST.after(args.cursor)
    if args.active_only:
        where += " AND r.released_ts IS NULL AND r.expires_ts > ?"
        params.append(clock.now())
    rows = db.execute(
        f"{WITH_HOLDER} WHERE r.project_id = ?{where}{OLDEST_FIRST.order_by()} LIMIT ?",
        (project["id"], *params, args.limit + 1),
    ).fetchall()
    listed = with_conflicts(db, project["id"], rows[: args.limit])
    _, cursor = OLDEST_FIRST.page(rows[: len(listed) + 1], len(listed))
    return FileReservations(file_reservations=listed, next_cursor=cursor)


ANOTHER_AGENT = {"id": None}  # stale_because asks as someone: anyone but the holder


def with_conflicts(db: sqlite3.Connection, project_id: int, rows: list[sqlite3.Row]) -> list[ListedReservation]:
    """The reservations, each active one with the others it conflicts with (as file_reservation_paths
    reported them when granting it, or as they came since), and when another agent may take it;
    only the first of them (at least one) whose conflicts take at most PAIRS_MAX pairs to find, and
    active.budget in all (the first of a page, past it, lists what it found and counts the rest)."""
    now = clock.now()
    live = {row["id"] for row in rows if row["released_ts"] is None and row["expires_ts"] > now}
    active = ActiveNear(db, project_id, [row["path_pattern"] for row in rows if row["id"] in live])
    if active.cut:  # past PAIRS_MAX in all (a project over HELD_PER_PROJECT): the page ends at its first active one
        rows = rows[: next(n for n, row in enumerate(rows) if row["id"] in live) + 1]
        active = ActiveNear(db, project_id, [rows[-1]["path_pattern"]])
    listed, pairs = [], 0
    for row in rows:
        if row["id"] in live:
            pairs += active.count(row["path_pattern"])
            if pairs > PAIRS_MAX and listed:
                break
        clashes, unchecked = _clashes(active, row) if row["id"] in live else ([], 0)
        if unchecked and listed:  # the next page starts with it, with a budget of its own
            break
        why = stale_because(row, ANOTHER_AGENT, now) if row["released_ts"] is None else None
        listed.append(ListedReservation(
            **reservation(row).model_dump(), releasable_because=why,
            conflicts_with=[Overlap(id=held["id"], agent=held["agent"], path_pattern=held["path_pattern"])
                            for held in clashes[:OVERLAPS_LISTED]],
            conflicts_unlisted=max(0, len(clashes) - OVERLAPS_LISTED), conflicts_unchecked=unchecked,
            releasable_from=None if why or row["released_ts"] else min(stale_from(row["last_active_ts"]), row["expires_ts"]),
        ))
    return listed


def _clashes(active: ActiveNear, row: sqlite3.Row) -> tuple[list[sqlite3.Row], int]:
    """The others' active reservations this one conflicts with, oldest first, and how many of
    those that may were left uncompared once active.budget was spent."""
    found, candidates = [], [
        held for held in active.near(row["path_pattern"])
        if held["agent_id"] != row["agent_id"] and (row["exclusive"] or held["exclusive"])
    ]
    for done, held in enumerate(candidates):
        try:
            if covers(row["path_pattern"], held["path_pattern"], active.budget):
                found.append(held)
        except OverBudget:
            return found, len(candidates) - done
    return found, 0


class InstallPrecommitGuardInput(Input):
    project_key: ProjectKey
    code_repo_path: CodeRepoPath


class GuardInstalled(Output):
    hook_path: str
    chained_hook: str | None = Field(description="The hook that was there before: it still runs first.")
    server_url: str | None = Field(description=(
        "Where the hook asks; AGENT_MAIL_URL overrides it at commit time. Null when installed over stdio or the"
        " command line, which serve no HTTP: the hook reads reads_database itself."))
    reads_database: str | None = Field(None, description=(
        "The database the hook reads with this server's command line (python -m chalicelib), when no server_url."))
    project: str


def install_precommit_guard(db: sqlite3.Connection, args: InstallPrecommitGuardInput) -> GuardInstalled:
    """Install a git pre-commit hook that blocks commits touching files under another
    agent's active exclusive reservation. Writes to the filesystem of the machine the
    server runs on, so code_repo_path must be a git work tree there (local mode).

    The hook goes where git looks (core.hooksPath respected); an existing pre-commit hook
    is kept and run first. Where that would break something (a relative core.hooksPath, a
    hooks folder in the work tree, a hook that finds its work by its own name, as husky's),
    409: the guard is written to the git directory and the hint gives the line that calls it
    from the team's own hook. At commit time: AGENT_NAME names the committing agent;
    AGENT_MAIL_GUARD_MODE=warn reports without blocking; AGENT_MAIL_BYPASS=1 skips the
    check; if the server cannot be reached the commit goes ahead with a warning, unless
    AGENT_MAIL_GUARD_STRICT=1. Installing again updates the hook. Installed over stdio (no HTTP
    server to ask), the hook reads this server's database itself (reads_database)."""
    project = find_project(db, args.project_key)
    settings = get_settings()
    url, local = guard.hook_target(settings, database_file(db))
    roots = [project["human_key"], *settings.guard_allowed_roots]
    hook, chained = guard.install(args.code_repo_path, roots, project["human_key"], url, settings.guard_token_file, local)
    return GuardInstalled(
        hook_path=str(hook), chained_hook=chained and str(chained), server_url=url,
        reads_database=local and local["database_url"].removeprefix("sqlite:///"), project=project["slug"],
    )


class UninstallPrecommitGuardInput(Input):
    project_key: ProjectKey | None = Field(None, description=(
        "The project it was installed for: then only a work tree install_precommit_guard takes for it (403 otherwise)."
        " Omitted: a work tree of any project."))
    code_repo_path: CodeRepoPath


class GuardUninstalled(Output):
    hook_path: str
    removed: bool = Field(description="False if the guard was not installed (another hook there is left alone).")
    restored_hook: bool = Field(description="The hook the guard had chained is back in place.")


def uninstall_precommit_guard(db: sqlite3.Connection, args: UninstallPrecommitGuardInput) -> GuardUninstalled:
    """Remove the pre-commit guard from a git work tree on the server's machine, putting
    back the hook it had chained, if any. Writes to the server machine's filesystem."""
    path = args.code_repo_path
    if args.project_key:  # as install_precommit_guard: that project's directory
        homes = [find_project(db, args.project_key)["human_key"]]
    else:
        holder = guard.worktree_repository(path) or path  # a linked work tree: its repository's projects
        homes = [row[0] for row in db.execute(  # the projects whose directory holds this path
            "SELECT human_key FROM projects WHERE human_key = ? OR substr(?, 1, length(human_key) + 1) = human_key || '/'",
            (holder, holder),
        )]
    hook, removed, restored = guard.uninstall(path, homes + get_settings().guard_allowed_roots)
    return GuardUninstalled(hook_path=str(hook), removed=removed, restored_hook=restored)


TOOLS = [
    tool(file_reservation_paths, acts_as="agent_name", settle=recheck_conflicts, idempotent=True),
    tool(check_file_reservations, read_only=True, off_loop=True),
    tool(release_file_reservations, acts_as="agent_name", fresh=True, destructive=True, repeat_safe=True),  # 0 released must not be another replica's news
    tool(renew_file_reservations, acts_as="agent_name", fresh=True),
    tool(force_release_file_reservation, acts_as="agent_name", destructive=True),
    tool(list_file_reservations, read_only=True, off_loop=True),  # conflicts_with: a 500-row page of 20,000 reservations ~80 ms
    tool(install_precommit_guard, writes_files=True, repeat_safe=True),
    tool(uninstall_precommit_guard, writes_files=True, destructive=True, repeat_safe=True),
]
