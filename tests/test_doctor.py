"""`python -m chalicelib doctor` on what operators find: a database an older build made, a
mistyped DATABASE_URL, an archive directory the worker cannot write (docs/operations.md)."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from chalicelib.store import db

from .servers import ROOT


def doctor(database: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "ARCHIVE_DIR": str(database.parent / "archive"), **env}
    return subprocess.run([sys.executable, "-m", "chalicelib", "doctor", *args], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


def older_build_database(path: Path) -> str:
    """A database as the build before the newest migration left it; that migration's version."""
    *before, (newest, _) = db.migrations()
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE schema_migrations (version TEXT PRIMARY KEY, applied_ts TEXT NOT NULL)")
        for version, sql in before:
            for statement in db.split_statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_migrations VALUES (?, 'then')", (version,))
    return newest


def applied(path: Path) -> set[str]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        return {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}


def test_doctor_reports_pending_migrations_and_leaves_them_to_the_server_or_repair(tmp_path):
    """It applied them and said `ok migrations all applied`: the older build then refused the database."""
    database = tmp_path / "db.sqlite"
    newest = older_build_database(database)
    before = applied(database)

    checked = doctor(database)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert f"FAIL  migrations      1 migration pending ({newest}): they run when the server starts, or doctor --repair" in checked.stdout
    assert applied(database) == before  # the older build still opens it

    repaired = doctor(database, "--repair")
    assert "repaired migrations: applied 1 migrations" in repaired.stdout, repaired.stdout + repaired.stderr
    assert applied(database) == before | {newest}


def test_doctor_names_a_database_of_a_newer_build(tmp_path):
    database = tmp_path / "db.sqlite"
    older_build_database(database)
    with sqlite3.connect(database) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('9999_from_the_future', 'then')")
    checked = doctor(database)
    assert checked.returncode == 1
    assert "FAIL  migrations      the database has migrations this build of Agent Mail does not know (9999_from_the_future)" in checked.stdout
    assert "fix: upgrade Agent Mail" in checked.stdout
