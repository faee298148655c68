"""`python -m chalicelib doctor [--repair]`: what is wrong with this installation, and the
command that fixes it. `--repair` applies the fixes that lose nothing: apply migrations,
rebuild the full-text index, rewrite the git archive from the database, copy attachment
contents the storage lost back from the archive, retry failed archive entries now. Without
--repair it writes nothing: the checks read the database as it is (db.as_it_is: not
migrated, read-only).

Each check is a function (settings) -> Finding; they run in order, each on its own, so one
broken part does not hide the others.
"""

import os
import shutil
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..archive import outbox
from ..archive.worker import lock_path, writing
from ..config import Settings
from ..security import auth
from ..store import db, heartbeats, search_index, search_runs
from .supervisor import holder

LOW_DISK_BYTES = 1 << 30
STRANGERS = ("unexpected", "foreign")  # what archive verify finds that no rebuild from this database removes
WRITE_WAIT_SECONDS = 5  # for the write lock: a running server holds it for milliseconds at a time


@dataclass
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""  # the command (or step) that fixes it
    repair: Callable[[Callable], str] | None = None  # repair(progress) -> what it did; only safe fixes
    unreadable: bool = False  # the database cannot be read at all: the checks that read it are skipped (examine)


def configuration(settings: Settings) -> Finding:
    try:
        auth.check_configuration(settings, None if auth.on_lambda() else settings.host)
    except auth.InsecureConfiguration as exc:
        return Finding("configuration", False, str(exc), "set AUTH_MODE and its settings (docs/security.md)")
    mode = auth.mode(settings)
    tokens = "on" if auth.agent_tokens_required(settings) else "off"
    return Finding("configuration", True, f"AUTH_MODE={mode}, agent tokens {tokens}, HOST={settings.host}")


def disk_space(settings: Settings) -> Finding:
    places = {existing(settings.database_path.parent)}
    if settings.archive_enabled:
        places.add(existing(settings.archive_dir.parent))
    low = []
    for place in sorted(places):
        usage = shutil.disk_usage(place)
        if usage.free < LOW_DISK_BYTES or usage.free < usage.total * 0.05:
            low.append(f"{place}: {usage.free / 2**30:.1f} GiB free of {usage.total / 2**30:.0f}")
    if low:
        return Finding("disk space", False, "; ".join(low), "free disk space (writes fail when the disk is full)")
    return Finding("disk space", True, "enough free space for the database and the archive")


def existing(path: Path) -> Path:
    """The nearest path that exists at or above `path` (doctor creates none)."""
    path = path.resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def database(settings: Settings) -> Finding:
    if settings.turso_sync_url:
        return Finding("database", True, "replica mode: the primary keeps the data (see the Turso check)")
    if settings.no_database:  # the checks that read it are skipped (examine)
        folders = archived_projects(settings)
        held = f"; the archive {settings.archive_dir} holds {len(folders)} projects" if folders else ""
        return Finding("database", False, f"no database at {settings.database_path}{held}",
                       "check DATABASE_URL (the server creates its database when it first starts)"
                       + (", or restore it from the archive: python -m chalicelib db restore-from-archive" if folders else ""))
    restore = ("restore it: move the file aside (with its -wal and -shm), then put a backup in its place (db backup),"
               " else python -m chalicelib db restore-from-archive")
    try:
        with db.as_it_is(settings) as conn:
            problems = db.integrity_problems(conn)
    except sqlite3.DatabaseError as exc:  # not a database (a wrong file copied there), or corrupt past checking
        if isinstance(exc, sqlite3.OperationalError):  # locked, unopenable: not the file's content
            raise
        return Finding("database", False, f"{settings.database_path}: {exc}", restore, unreadable=True)
    if problems:
        return Finding("database", False, "PRAGMA integrity_check: " + "; ".join(problems), restore)
    if unwritable := db.write_probe(settings, timeout_seconds=WRITE_WAIT_SECONDS):
        return Finding("database", False, f"{settings.database_path}: {unwritable}",
                       "let the server's user write the file and its directory (a read-only file refuses every write)")
    return Finding("database", True, f"{settings.database_path}: integrity_check ok, writable")


def archived_projects(settings: Settings) -> list[str]:
    """The archive's project folders ([] without an archive)."""
    from ..archive.gitrepo import GitArchive, NoArchive, NotAnArchive

    if not settings.archive_enabled:
        return []
    try:
        with GitArchive.to_read(settings) as repo:
            return repo.folders("projects")
    except (NoArchive, NotAnArchive):  # (the git archive check names the latter)
        return []


def migrations(settings: Settings) -> Finding:
    with db.as_it_is(settings) as conn:
        applied = db.applied_migrations(conn)
        missing = db.missing_migrations(conn)
    try:
        db.refuse_newer_schema(applied)
    except db.NewerSchema as exc:
        return Finding("migrations", False, str(exc), "upgrade Agent Mail")
    if missing:
        def repair(progress) -> str:
            db.migrate(settings)
            return f"applied {len(missing)} migrations"

        # Not applied here: once they are, a build older than this one refuses the database.
        named = ", ".join(missing) if len(missing) <= 3 else f"{missing[0]} ... {missing[-1]}"
        return Finding("migrations", False, f"{len(missing)} migration{'s' if len(missing) > 1 else ''} pending ({named}): they"
                       " run when the server starts, or doctor --repair (then builds older than this one refuse the database)",
                       "start the server, or python -m chalicelib doctor --repair", repair)
    return Finding("migrations", True, "all applied")


def project_keys(settings: Settings) -> Finding:
    from ..tools.projects import misspelled_keys

    with db.as_it_is(settings) as conn, db.transaction(conn, write=False):
        found = misspelled_keys(conn)
    if found:
        named = [f"{row['slug']} keeps {row['human_key']}: " + (f"{normal} is project {holder}" if holder else f"not {normal}")
                 for row, normal, holder in found]
        return Finding("project keys", False, "; ".join(named), "it answers by its slug only (docs/identity.md, \"Windows"
                       " paths\"); archive_project it once unused, and doctor stops naming it")
    return Finding("project keys", True, "one project per directory")


def search(settings: Settings) -> Finding:
    if settings.turso_sync_url:
        return Finding("search index", True, "replica mode: the sidecar index catches up before every search")
    # FTS5's integrity-check is an INSERT (one that changes nothing): a read-only connection refuses it.
    with db.as_it_is(settings, writable=True) as conn, db.transaction(conn, write=False):
        problem = search_index.fts_problem(conn)
    if problem:
        def repair(progress) -> str:
            with db.connection(settings) as conn, db.transaction(conn, write=True):
                search_index.rebuild_fts(conn)
            return "rebuilt the full-text index"

        return Finding("search index", False, problem, "python -m chalicelib doctor --repair", repair)
    with db.as_it_is(settings) as conn, db.transaction(conn, write=False):
        left = search_runs.left(conn)
    if left:  # not a fault: mail from before migration 0052, which retention runs index a part at a time
        return Finding("search index", True, f"matches the messages; the ids and paths of {left:,} older message{'s' * (left != 1)} are"
                       " being indexed by the retention runs (python -m chalicelib retention run --budget 100000: a million now)")
    return Finding("search index", True, "matches the messages")


def archive(settings: Settings) -> Finding:
    if not settings.archive_enabled:
        return Finding("git archive", True, "ARCHIVE_ENABLED=false")
    from ..archive import rebuild, restore as restoring, verify as verifying
    from ..archive.gitrepo import GitArchive, NoArchive
    from ..archive.migrate import migrate_layout

    if refused := GitArchive.refusal(settings):  # before "entries still to archive": its worker can archive none
        return Finding("git archive", False, refused, "set ARCHIVE_DIR to the archive's directory (the server refuses to start)")
    with db.as_it_is(settings) as conn, db.transaction(conn, write=False):
        status = outbox.status(conn, None)
    if status["pending"]:  # files of pending entries are not written yet: nothing to compare
        return Finding("git archive", True, f"{status['pending']} entries still to archive; compared when none are pending")
    try:
        with db.as_it_is(settings) as conn, db.transaction(conn, write=False), GitArchive.to_read(settings) as repo:
            if folders := rebuild.projects_beside_empty_database(conn, repo):  # verify would call them all foreign
                return Finding("git archive", False, *rebuild.empty_database_advice(settings, folders))
            problems = verifying.verify(conn, repo)
            arrivals = restoring.newcomer_paths(conn, repo)  # made since a restored backup: their mail is foreign or left
            changed = {path for path, _ in restoring.changes_since(conn, repo, restoring.backup_moment(conn))}  # and changes since
            changed |= {path for path, *_ in restoring.missing_marks(conn, repo)}  # reads and acks made since
    except NoArchive:  # (not created here: a mistyped ARCHIVE_DIR would look like an empty archive)
        with db.as_it_is(settings) as conn, db.transaction(conn, write=False):
            entries = rebuild.count_entries(conn)
        if not entries:  # a new server: nothing to archive yet, so no repository either
            return Finding("git archive", True, f"nothing to archive yet ({settings.archive_dir} comes with the first entry)")
        problems, arrivals, changed = {f"missing: no archive at {settings.archive_dir}": [f"all {entries} entries"]}, [], set()
    if problems.get("unexpected"):  # the worker may have archived mail sent after the database was read: it is not
        with db.as_it_is(settings) as conn, db.transaction(conn, write=False):
            problems["unexpected"] = verifying.still_unexpected(conn, problems["unexpected"])
    if not any(problems.values()) and not arrivals and not changed:
        return Finding("git archive", True, f"{settings.archive_dir} holds every message")
    # A file the archive has newer than the database (a change since a restored backup) is brought back, not rewritten.
    problems = {kind: [path for path in paths if path not in changed] for kind, paths in problems.items()}
    counts = ", ".join([*(f"{len(paths)} {kind}" for kind, paths in problems.items() if paths),
                        *([f"{len(arrivals)} projects or agents the database lacks"] if arrivals else []),
                        *([f"{len(changed)} profiles, project.json, file reservations, contacts, marks or products newer"
                           " in the archive"] if changed else [])])
    rewrite = any(paths for kind, paths in problems.items() if kind not in STRANGERS)
    if not rewrite and not problems.get("unexpected") and not arrivals and not changed:  # foreign files only: nothing helps
        return Finding("git archive", False, f"archive and database differ: {counts}: files of mail or projects this"
                       " database does not have", "check that DATABASE_URL is this archive's database (archive verify"
                       " lists the files; a rebuild leaves them)")

    found_mail, found_strays = mail_and_copies(problems.get("unexpected") or [])

    def repair(progress) -> str:
        done, mail, strays = [], found_mail, found_strays
        # Into the database; the archive is only read, so its worker may run meanwhile.
        if arrivals or changed:  # first the projects and agents, so that their mail has its senders and recipients
            with db.connection(settings) as conn, db.transaction(conn, write=True), GitArchive.local(settings) as repo:
                moment = restoring.backup_moment(conn)  # (before what bring_back makes moves it)
                made, registered = restoring.bring_back(conn, repo)
                brought, left = restoring.bring_back_changes(conn, repo, moment)
            if arrivals:
                done.append(f"brought back {made} projects and {registered} agents made since"
                            " (the archive's project.json and profiles)")
            if brought or left:
                done.append(f"brought back {brought} changes made since (profiles, project.json, file reservations,"
                            " contacts, products)" + (f"; {len(left)} left, an agent of theirs in neither the database nor the archive's"
                                            f" profiles: {listed(left)}" if left else ""))
            with db.connection(settings) as conn, db.transaction(conn, write=False), GitArchive.to_read(settings) as repo:
                mail, strays = mail_and_copies(verifying.verify(conn, repo)["unexpected"])  # their mail, foreign until now, among it
        if mail:
            with db.connection(settings) as conn, GitArchive.local(settings) as repo:  # a transaction per batch
                brought, left = restoring.import_unexpected(conn, repo, mail)
            done.append(f"brought back {brought} messages the archive holds and the database lacked" + (
                f"; {len(left)} left, a sender or recipient in neither the database nor the archive's profiles:"
                f" {listed(left)}" if left else ""))
        if arrivals or changed or mail:  # the reads and acks made since, of the mail the database had and of what came back
            with db.connection(settings) as conn, db.transaction(conn, write=False), GitArchive.to_read(settings) as repo:
                marks = list(restoring.missing_marks(conn, repo))
            for chunk in db.chunks(marks, restoring.IMPORT_BATCH):  # a write transaction per batch, as the mail's
                with db.connection(settings) as conn, db.transaction(conn, write=True):
                    restoring.store_marks(conn, chunk)
            if marks:
                done.append(f"brought back {len(marks)} read and acknowledgement marks made since")
        if rewrite or strays:
            # The worker of a running server writes the same repository: rewrite only while none runs.
            with writing(settings) as repo:
                if repo is None:
                    return "; ".join([*done, "rewrite skipped: a running archive worker holds the archive; stop the server"
                                      " and repair again"])
                with db.connection(settings) as conn, db.transaction(conn, write=False):
                    if rewrite:
                        migrate_layout(repo)  # as `archive rebuild`: an archived body is read where today's layout puts it
                        total = rebuild.count_entries(conn)
                        written = rebuild.rebuild(conn, repo, on_batch=progress(total))
                        done.append(f"rewrote {written} archive entries from the database")
                    if strays:
                        done.append(f"removed {verifying.remove_stray_copies(conn, repo, strays)} copies of no message"
                                    " from the agents' inbox/ and outbox/")
        return "; ".join(done)

    unexpected = (" (unexpected: mail the archive holds and the database lacks, such as what was sent after the backup a"
                  " restored database came from; the repair brings it back, and first the projects and agents made, and"
                  " the profiles, projects, file reservations, contacts, marks and products changed, since"
                  + ("; and copies in agents' inbox/ or outbox/ of no message, which it removes" if found_strays else "") + ")"
                  ) if problems.get("unexpected") or arrivals or changed else ""
    return Finding("git archive", False, f"archive and database differ: {counts}{unexpected}",
                   "python -m chalicelib doctor --repair" + (" (or: archive rebuild)" if rewrite and not unexpected else ""), repair)


def mail_and_copies(unexpected: list[str]) -> tuple[list[str], list[str]]:
    """verify's unexpected files: (canonical message files, which the repair brings back into the
    database; agents' copies, of no message the database or the archive has, which it removes)."""
    from ..archive.verify import is_copy

    return [path for path in unexpected if not is_copy(path)], [path for path in unexpected if is_copy(path)]


def attachments(settings: Settings) -> Finding:
    """Content the messages name (attachment_refs, read by its index) that the local storage lacks:
    a file deleted by hand, a server once on another ATTACHMENTS_DIR. A stat per content."""
    from ..attachments.storage import LocalStorage, storage

    where = storage(settings)
    if not isinstance(where, LocalStorage):
        return Finding("attachments", True, f"in the bucket {settings.attachments_bucket} (not checked here)")
    with db.as_it_is(settings) as conn, db.transaction(conn, write=False):
        named = [sha for (sha,) in conn.execute("SELECT DISTINCT sha256 FROM attachment_refs")]
    missing = [sha for sha in named if where.size(sha) is None]
    if not missing:
        return Finding("attachments", True, f"{settings.attachments_dir} holds the {len(named)} contents the messages name")
    detail = f"{len(missing)} contents the messages name are missing from {settings.attachments_dir}: {listed(missing)}"
    if not settings.archive_enabled:
        return Finding("attachments", False, detail, "put the files back into ATTACHMENTS_DIR (from a backup)")
    from ..archive.gitrepo import GitArchive, NoArchive, NotAnArchive

    try:
        GitArchive.to_read(settings).close()
    except (NoArchive, NotAnArchive):  # nothing for the repair to copy from (the git archive check says why)
        return Finding("attachments", False, detail, "put the files back into ATTACHMENTS_DIR (from a backup;"
                       f" {settings.archive_dir} holds no archive to copy them from)")

    def repair(progress) -> str:
        left = []
        try:
            with db.connection(settings) as conn, db.transaction(conn, write=False), GitArchive.to_read(settings) as repo:
                for sha in missing:  # from the archive of any project whose mail names it
                    if not any(_restored(repo, slug, sha, where) for (slug,) in conn.execute(
                            "SELECT DISTINCT p.slug FROM attachment_refs r JOIN messages m ON m.id = r.message_id"
                            " JOIN projects p ON p.id = m.project_id WHERE r.sha256 = ?", (sha,))):
                        left.append(sha)
        except NoArchive:
            left = missing
        return f"copied {len(missing) - len(left)} contents back from the archive" + (
            f"; {len(left)} the archive lacks too (put them back from a backup): {listed(left)}" if left else "")

    return Finding("attachments", False, detail, "python -m chalicelib doctor --repair (copies them back from the git archive)",
                   repair)


def _restored(repo, slug: str, sha256: str, where) -> bool:
    from ..archive.restore import restore_attachment

    try:
        restore_attachment(repo, slug, sha256, where)
    except ValueError:  # this project's archive lacks it
        return False
    return True


def listed(paths: list[str]) -> str:
    return ", ".join(paths[:5]) + (", ..." if len(paths) > 5 else "")


def archive_directory(settings: Settings) -> Finding:
    if not settings.archive_enabled or settings.archive_queue_url:
        return Finding("archive directory", True, "no local worker (archive off, or SQS drives it)")
    problems = [problem for problem in (cannot_write(lock_path(settings), directory=False),
                                        cannot_write(settings.archive_dir, directory=True)) if problem]
    if problems:  # the worker dies at start, and its server restarts it, in vain
        return Finding("archive directory", False, "; ".join(problems) + ": the archive worker cannot start",
                       "let the server's user write there, or set ARCHIVE_DIR to a directory it can write")
    return Finding("archive directory", True, f"{settings.archive_dir} and its lock file are writable by this user")


def cannot_write(path: Path, directory: bool) -> str | None:
    """Why this user could not write `path` (a directory, or a file opened to append, as the worker
    opens its lock), or create it; None if it could. Creates nothing."""
    if not path.exists():
        parent = existing(path.parent)
        if not parent.is_dir():
            return f"{parent} is not a directory"
        return None if os.access(parent, os.W_OK | os.X_OK) else f"{parent} is not writable by this user"
    if directory:
        if not path.is_dir():
            return f"{path} is not a directory"
        return None if os.access(path, os.W_OK | os.X_OK) else f"{path} is not writable by this user"
    try:
        with open(path, "a"):  # writes nothing
            return None
    except OSError as exc:
        return f"{path}: {exc.strerror}"


RECENT_EXIT_SECONDS = 180  # a worker that keeps dying dies at least this often (backoff: at most 60 s)


def worker(settings: Settings) -> Finding:
    if not settings.archive_enabled or settings.archive_queue_url:
        return Finding("archive worker", True, "no local worker (archive off, or SQS drives it)")
    with db.as_it_is(settings) as conn, db.transaction(conn, write=False):
        beat = heartbeats.last(conn, heartbeats.ARCHIVE_WORKER)
        exits = heartbeats.last(conn, heartbeats.ARCHIVE_EXITS)
        status = outbox.status(conn, None)
    if status["failed"]:
        stale = stale_git_locks(settings)

        def repair(progress) -> str:
            with db.connection(settings) as conn, db.transaction(conn, write=True):
                done = f"re-queued {outbox.requeue_failed(conn)} failed entries"
            if stale:
                with writing(settings) as repo:  # which removes them (a worker that has the lock did on its start)
                    done += f"; removed the stale git lock {listed(list(map(str, stale)))}" if repo else ""
            if holder(lock_path(settings)) is None:  # re-queued is not archived: only a worker archives them
                done += "; no archive worker runs to archive them: python -m chalicelib archive drain, or start the server"
            return done

        if holder(lock_path(settings)) is None:  # the repair's retry would wait for a worker (doctor showed the same
            # failure again): archive drain re-queues them, removes a stale lock and archives them, at once
            fix = ("python -m chalicelib archive drain (no archive worker runs: it archives them now"
                   + ("; and removes the stale lock" if stale else "") + "; or start the server, whose worker does)")
        else:
            fix = ("python -m chalicelib doctor --repair (retries them now"
                   + ("; removes the stale lock, as archive drain and the server's worker do" if stale else "") + ")")
        return Finding("archive worker", False, f"{status['failed']} entries failed (retried with backoff);"
                       f" the oldest's error: {status['failed_error']}" + (
                           f"; {listed(list(map(str, stale)))}: left by a writer killed mid-commit, git refuses to move"
                           " the branch while it exists" if stale else ""), fix, repair)
    if exits and exits["age_seconds"] < RECENT_EXIT_SECONDS and (beat is None or beat["started_ts"] < exits["heartbeat_ts"]):
        return Finding("archive worker", False, f"not running: it died {exits['restarts']} times under the server (pid"
                       f" {exits['pid']} on {exits['host']}), the last {exits['age_seconds']:.0f} s ago ({exits['last_error']}),"
                       " and no worker has run since", "the worker's error is in the server's log (see also: archive directory)")
    if beat is None:
        return Finding("archive worker", True, "has never run (it runs with the server)")
    if beat["age_seconds"] > 3 * settings.archive_heartbeat_seconds:
        return Finding("archive worker", True, f"not running now: last heartbeat {beat['age_seconds']:.0f} s ago"
                       " (fine while the server is stopped; it runs with the server)")
    if beat["host"] == socket.gethostname() and holder(lock_path(settings)) is None:  # a fresh beat of a worker killed since
        return Finding("archive worker", True, f"not running now: nobody holds its lock (pid {beat['pid']} beat"
                       f" {beat['age_seconds']:.0f} s ago, then stopped; fine while the server is stopped)")
    return Finding("archive worker", True, f"running (pid {beat['pid']} on {beat['host']}, {beat['restarts']} restarts)")


def stale_git_locks(settings: Settings) -> list[Path]:
    """The git lock files in the archive while no writer holds ARCHIVE_DIR's lock: left by one
    killed mid-commit ([] without an archive)."""
    from ..archive.gitrepo import GitArchive, NoArchive, NotAnArchive

    if holder(lock_path(settings)) is not None:
        return []  # a writer at work holds them for a moment
    try:
        with GitArchive.to_read(settings) as repo:
            return repo.git_locks()
    except (NoArchive, NotAnArchive):  # (the git archive check names the latter)
        return []


def turso(settings: Settings) -> Finding:
    if not settings.turso_sync_url:
        return Finding("turso", True, "not in replica mode")
    problem = db.write_probe(settings)
    if problem:
        return Finding("turso", False, problem, "check TURSO_SYNC_URL, TURSO_AUTH_TOKEN and the network, or what the problem says")
    return Finding("turso", True, f"{settings.turso_sync_url} answers")


CHECKS = [configuration, disk_space, database, migrations, project_keys, search, archive, attachments, archive_directory, worker,
          turso]


def examine(settings: Settings) -> list[Finding]:
    findings = []
    for check in CHECKS:
        try:
            findings.append(check(settings))
        except db.NoDatabase:
            continue  # the database check says so, once
        except Exception as exc:  # a check that cannot run is itself a finding
            if isinstance(exc, sqlite3.DatabaseError) and any(finding.unreadable for finding in findings):
                continue  # the database check says why, once
            behind = any(finding.check == "migrations" and finding.repair for finding in findings)
            before = " before the pending migrations are applied" if behind and isinstance(exc, sqlite3.OperationalError) else ""
            findings.append(Finding(check.__name__.replace("_", " "), False, f"could not check{before}: {type(exc).__name__}: {exc}"))
    return findings
