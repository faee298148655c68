"""Readiness that tells the truth: GET /ready answers 503, with the reasons, when the
database cannot take a write (or refused one in the last minute: a full disk, ops/refusals.py),
migrations are missing, the local archive worker is down, or the git archive is stuck (its
oldest pending entry older than ARCHIVE_MAX_LAG_SECONDS: a worker that hangs, or one starved of
CPU for that long). /health stays a cheap liveness check.

"Down" is the supervisor's word (its child process is not running, or died within a minute of
its start and was restarted less than a minute ago: a worker that dies soon after each start
stays down rather than flap, while one killed after running a while is up once restarted), not
a stale heartbeat: the worker runs at idle priority, so a busy machine may starve it for a while;
that shows as lag, and becomes a problem only past the bound.
"""

from .. import __version__, clock
from ..archive import outbox
from ..config import Settings
from . import refusals
from ..store.db import connection, missing_migrations, transaction, write_probe
from ..tools.health import HealthCheckInput, health_check


def report(settings: Settings, worker_up: bool | None) -> tuple[int, dict]:
    """(status, body) of GET /ready: health_check's answer and the problems found (503 if any).
    `worker_up`: whether the archive worker this server supervises is up (Supervised.up: running,
    and not restarted lately after dying soon after a start, so one that dies at each start does not
    flap; None: it runs none, e.g. on AWS, where SQS drives the archive). Blocking (up to ~1 s)."""
    found = []
    unwritable = write_probe(settings)
    if unwritable:
        found.append(unwritable)
        if settings.turso_sync_url:  # a replica reads nothing without its primary either (its pull would wait 10 s)
            return 503, {"status": "unavailable", "version": __version__, "time": clock.now(), "problems": found}
    elif refused := refusals.lately():  # a full disk passes the probe: BEGIN IMMEDIATE writes nothing
        found.append(refused)
    with connection(settings) as conn, transaction(conn, write=False):
        health = health_check(conn, HealthCheckInput()).model_dump(exclude={"projects"})  # open to anyone: no count
        missing = missing_migrations(conn)
        archive = outbox.status(conn, None) if settings.archive_enabled else None
    if missing:
        found.append(f"migrations not applied: {', '.join(missing)} (run: python -m chalicelib migrate)")
    if worker_up is False:
        found.append("the archive worker is down, or keeps dying soon after it starts (it counts as up once it"
                     " has run a minute): its supervisor restarts it (see the server's log; python -m chalicelib doctor)")
    if archive and archive["lag_seconds"] > settings.archive_max_lag_seconds:
        found.append(f"the git archive is stuck: {archive['pending']} entries pending, the oldest"
                     f" {archive['lag_seconds']:.0f} s old (ARCHIVE_MAX_LAG_SECONDS={settings.archive_max_lag_seconds:g})")
    return (503 if found else 200), {**health, "status": "unavailable" if found else "ok", "problems": found}
