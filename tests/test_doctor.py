"""`python -m chalicelib doctor` on what operators find: a database an older build made, a
mistyped DATABASE_URL, an archive directory the worker cannot write (docs/operations.md)."""

import base64
import hashlib
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from chalicelib.store import db

from .servers import ROOT, running_server
from .sql import migrated_until


def run(database: Path, *args: str, archive: Path | None = None) -> subprocess.CompletedProcess:
    """The CLI (python -m chalicelib) on this database and archive (by default, `archive` beside
    it), and the attachments beside it too."""
    environ = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "ARCHIVE_DIR": str(archive or database.parent / "archive"),
               "ATTACHMENTS_DIR": str(database.parent / "attachments")}
    return subprocess.run([sys.executable, "-m", "chalicelib", *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)


def doctor(database: Path, *args: str, archive: Path | None = None) -> subprocess.CompletedProcess:
    return run(database, "doctor", *args, archive=archive)


def table(result: subprocess.CompletedProcess) -> str:
    """doctor's output with its columns' padding made two spaces (a longer check name widens them)."""
    return re.sub(" {2,}", "  ", result.stdout)


def older_build_database(path: Path) -> str:
    """A database as the build before the newest migration left it; that migration's version."""
    newest = db.migrations()[-1][0]
    migrated_until(path, newest).close()
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
    assert f"FAIL  migrations  1 migration pending ({newest}): they run when the server starts, or doctor --repair" in table(checked)
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
    assert "FAIL  migrations  the database has migrations this build of Agent Mail does not know (9999_from_the_future)" in table(checked)
    assert "fix: upgrade Agent Mail" in checked.stdout


def archive_of_two_projects(tmp_path: Path) -> Path:
    """An archive holding two projects, written from their database (tmp_path/mail/db.sqlite)."""
    database = tmp_path / "mail" / "db.sqlite"
    for key in ("/srv/shop", "/srv/web"):
        assert run(database, "ensure-project", "--human-key", key).returncode == 0
    drained = run(database, "archive", "drain")
    assert drained.returncode == 0, drained.stderr
    return database.parent / "archive"


def test_doctor_says_there_is_no_database_and_creates_none(tmp_path):
    """A mistyped DATABASE_URL: doctor created an empty database and called the archive 'foreign'."""
    archive = archive_of_two_projects(tmp_path)
    typo = tmp_path / "mial" / "db.sqlite"
    checked = doctor(typo, archive=archive)
    assert checked.returncode == 1
    assert f"FAIL  database  no database at {typo}; the archive {archive} holds 2 projects" in table(checked), checked.stdout
    assert "check DATABASE_URL" in checked.stdout and "python -m chalicelib db restore-from-archive" in checked.stdout
    assert "could not check" not in checked.stdout  # the checks that read it are not run
    assert not typo.parent.exists()


def test_maintenance_commands_create_no_database_either(tmp_path):
    """QA, session 29: `retention run` on a mistyped path made an empty database and said it
    had nothing to do (exit 0): a cron job looked healthy and purged nothing."""
    typo = tmp_path / "mial" / "db.sqlite"
    for command in (["retention", "run"], ["archive", "verify"], ["archive", "rebuild"], ["archive", "drain"]):
        result = run(typo, *command)
        assert result.returncode == 1 and f"no database at {typo}" in result.stderr, (command, result.stderr)
    restore = run(typo, "db", "restore-from-archive")  # (session 32: it made and migrated one, then found no archive)
    assert restore.returncode == 1 and f"no archive at {typo.parent / 'archive'} (ARCHIVE_DIR)" in restore.stderr
    assert not typo.parent.exists()


def as_a_user(command: list[str]) -> list[str]:
    """The command without root's power to write any file (file modes apply to it), when run as root."""
    if os.geteuid() != 0:
        return command
    drop = "-dac_override,-dac_read_search"
    return ["setpriv", f"--bounding-set={drop}", f"--inh-caps={drop}", *command]


def test_a_read_only_database_is_named_by_doctor_and_the_readiness_probe(tmp_path):
    """QA, session 29: the probe's BEGIN IMMEDIATE took the lock on a file SQLite had opened
    read-only (WAL mode), so /ready said ok until a client's write failed; doctor said the
    database was fine and blamed the search index, whose repair then failed."""
    database = tmp_path / "db.sqlite"
    assert run(database, "ensure-project", "--human-key", "/srv/shop").returncode == 0
    database.chmod(0o444)
    environ = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "ARCHIVE_ENABLED": "false"}

    def as_user(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(as_a_user([sys.executable, *args]), cwd=ROOT, env=environ, capture_output=True, text=True,
                              timeout=120)

    checked = as_user("-m", "chalicelib", "doctor")
    assert checked.returncode == 1
    assert re.search(r"FAIL  database  \S+: the database cannot be written: attempt to write a readonly database", table(checked)), checked.stdout
    assert "does not match the messages" not in checked.stdout
    probe = as_user("-c", "from chalicelib.config import get_settings; from chalicelib.ops.readiness import report;"
                          " print(report(get_settings(), None))")
    assert probe.stdout.startswith("(503, ") and "attempt to write a readonly database" in probe.stdout, probe.stderr


def test_doctor_on_an_empty_database_beside_an_archive_of_projects_names_both_fixes(tmp_path):
    archive = archive_of_two_projects(tmp_path)
    empty = tmp_path / "new" / "db.sqlite"
    assert run(empty, "migrate", archive=archive).returncode == 0  # as a server started on it would leave it
    checked = doctor(empty, archive=archive)
    assert checked.returncode == 1
    assert (f"FAIL  git archive  the database {empty} is empty but the archive {archive} holds 2 projects"
            " (srv-shop, srv-web)") in table(checked), checked.stdout
    assert ("fix: DATABASE_URL may name the wrong file (set it to this archive's database), or restore this database from the"
            " archive: python -m chalicelib db restore-from-archive") in checked.stdout
    # Once it archived a project of its own, the rest is what no rebuild from it removes: no --repair offered.
    assert run(empty, "ensure-project", "--human-key", "/srv/other", archive=archive).returncode == 0
    assert run(empty, "archive", "drain", archive=archive).returncode == 0
    checked = doctor(empty, archive=archive)
    assert "FAIL  git archive  archive and database differ: 2 foreign: files of mail or projects this database does not have" in table(checked)
    assert "check that DATABASE_URL is this archive's database" in checked.stdout and "--repair" not in checked.stdout


def test_a_server_on_an_empty_database_beside_an_archive_of_projects_warns_at_start(tmp_path):
    archive = archive_of_two_projects(tmp_path)
    log = tmp_path / "server.log"
    with running_server(tmp_path / "new" / "db.sqlite", stderr=log, ARCHIVE_DIR=str(archive)):
        deadline = time.monotonic() + 60
        while "is empty but the archive" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    warned = [line for line in log.read_text().splitlines() if "is empty but the archive" in line]
    assert len(warned) == 1 and "a second history" in warned[0] and "db restore-from-archive" in warned[0], log.read_text()[-2000:]


def zebra_mailbox(url: str):
    """A project on the server at `url` with one message, "zebra crossing"; (call, its slug)."""
    import httpx

    def call(tool: str, **arguments) -> httpx.Response:
        return httpx.post(f"{url}/api/{tool}", json=arguments, timeout=30)

    slug = call("ensure_project", human_key="/work/fts").json()["slug"]
    for name in ("BlueLake", "GreenCastle"):
        assert call("register_agent", project_key=slug, name=name, program="p", model="m").status_code == 200
    assert call("set_contact_policy", project_key=slug, agent_name="GreenCastle", policy="open").status_code == 200
    assert call("send_message", project_key=slug, sender_name="BlueLake", to=["GreenCastle"], subject="zebra crossing",
                body_md="unusual words").status_code == 200
    return call, slug


def damage_full_text_index(database: Path, blocks: str = "id = (SELECT min(id) FROM messages_fts_data WHERE id > 10)") -> None:
    """FTS5 then finds its index corrupt (SQLITE_CORRUPT_VTAB) when a search reads it. By default a
    block of the index's words goes (1 and 10 are its averages and structure)."""
    with sqlite3.connect(database) as conn:
        conn.execute(f"DELETE FROM messages_fts_data WHERE {blocks}")


def test_a_damaged_search_index_answers_503_naming_the_repair_until_doctor_rebuilds_it(tmp_path):
    """FTS5's 'database disk image is malformed' was a 500 'Retry; if it keeps failing...'."""
    database, log = tmp_path / "db.sqlite", tmp_path / "server.log"
    with running_server(database, stderr=log) as url:
        call, slug = zebra_mailbox(url)
        damage_full_text_index(database)

        for _ in range(2):
            damaged = call("search_messages", project_key=slug, query="zebra")
            assert damaged.status_code == 503, damaged.text
            error = damaged.json()["error"]
            assert error["code"] == "unavailable" and "search index is damaged" in error["message"]
            assert "python -m chalicelib doctor --repair" in error["hint"]
        assert not Path(f"{database}.search").exists()  # the database's own index: no sidecar made in its stead
        assert doctor(database, "--repair").returncode == 0
        found = call("search_messages", project_key=slug, query="zebra")
        assert found.status_code == 200 and [hit["subject"] for hit in found.json()["results"]] == ["zebra crossing"]
    logged = [line for line in log.read_text().splitlines() if "full-text index is damaged" in line]
    assert len(logged) == 2 and "database disk image is malformed" in logged[0], log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


def test_doctor_says_how_many_messages_the_ids_and_paths_index_has_still_to_take(tmp_path):
    database = tmp_path / "db.sqlite"
    with running_server(database) as url:
        zebra_mailbox(url)
    conn = sqlite3.connect(database, isolation_level=None)
    conn.execute("DELETE FROM message_runs")
    conn.execute("UPDATE message_runs_backfill SET below = (SELECT max(id) + 1 FROM messages)")  # as migration 0052 leaves mail
    conn.close()
    assert "the ids and paths of 1 older message are being indexed" in table(doctor(database))
    assert json.loads(run(database, "retention", "run").stdout)["search_runs_indexed"] == 1
    assert re.search(r"ok  search index  matches the messages\n", table(doctor(database)))


def test_a_damaged_sidecar_index_of_a_turso_replica_is_rebuilt_by_the_next_search(tmp_path):
    """The replica's sidecar (<replica>.search) is a cache: damaged, it failed every search with
    503 until an operator deleted the file; now the search that meets the damage removes it, and
    the next one rebuilds it from the replica, with the same hits."""
    from concurrent.futures import ThreadPoolExecutor

    from .turso import turso_server

    replica, log = tmp_path / "replica.db", tmp_path / "server.log"
    with turso_server(tmp_path / "primary") as primary, running_server(replica, stderr=log, TURSO_SYNC_URL=primary.url) as url:
        call, slug = zebra_mailbox(url)
        assert call("search_messages", project_key=slug, query="zebra").json()["results"][0]["subject"] == "zebra crossing"
        damage_full_text_index(Path(f"{replica}.search"), "id >= 10")  # its structure too: its table cannot even be dropped

        with ThreadPoolExecutor(6) as pool:  # at once: the one that meets the damage, then those that rebuild or wait for it
            answers = list(pool.map(lambda _: call("search_messages", project_key=slug, query="zebra"), range(6)))
        damaged = [answer for answer in answers if answer.status_code == 503]
        assert len(damaged) == 1, [answer.text for answer in answers]
        error = damaged[0].json()["error"]
        assert "search index was damaged" in error["message"] and "Retry" in error["hint"] and "doctor" not in error["hint"]
        for answer in answers:
            if answer is not damaged[0]:
                assert answer.status_code == 200 and [hit["subject"] for hit in answer.json()["results"]] == ["zebra crossing"]
        found = call("search_messages", project_key=slug, query="zebra")
        assert found.status_code == 200 and [hit["subject"] for hit in found.json()["results"]] == ["zebra crossing"]
    logged = [line for line in log.read_text().splitlines() if "index is damaged" in line]
    assert len(logged) == 1 and "the replica's sidecar: the next search rebuilds it" in logged[0], log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()


def test_a_sidecar_deleted_under_a_running_server_is_made_anew_by_the_next_search(tmp_path):
    """QA, session 29: docs/turso.md says delete it and it is rebuilt; deleted under a running
    server, its connection took no write, and every search answered 503 "its database is
    read-only", the file never made again (and /ready failed, counting those refusals)."""
    from .turso import turso_server

    replica = tmp_path / "replica.db"
    with turso_server(tmp_path / "primary") as primary, running_server(replica, TURSO_SYNC_URL=primary.url) as url:
        call, slug = zebra_mailbox(url)
        assert call("search_messages", project_key=slug, query="zebra").status_code == 200
        Path(f"{replica}.search").unlink()
        call("send_message", project_key=slug, sender_name="BlueLake", to=["GreenCastle"], subject="zebra again", body_md="x")
        met = call("search_messages", project_key=slug, query="zebra")  # catching up writes to the deleted file
        assert met.status_code == 503 and "search index was damaged" in met.json()["error"]["message"], met.text
        found = call("search_messages", project_key=slug, query="zebra")
        assert sorted(hit["subject"] for hit in found.json()["results"]) == ["zebra again", "zebra crossing"]
        assert Path(f"{replica}.search").exists() and httpx.get(f"{url}/ready").status_code == 200


def test_a_malformed_sidecar_file_of_a_turso_replica_is_made_anew_by_the_next_search(tmp_path):
    """A sidecar that SQLite itself cannot read ("file is not a database", "database disk image is
    malformed": a disk problem, another tool's crash) failed every search until an operator deleted
    it; now the search that meets it, opening the file, catching up or searching, removes it and
    answers 503 (retry), and the next search builds it anew."""
    from chalicelib.store.search_index import VERSION

    from .turso import turso_server

    replica, log = tmp_path / "replica.db", tmp_path / "server.log"
    sidecar = Path(f"{replica}.search")
    sidecar.write_bytes(b"left by a crash " * 512)  # before the server opens it: met opening it

    def overwrite_header() -> None:  # the change counter too: the server's connection reads the file again
        with sidecar.open("r+b") as file:
            file.write(b"not a database, " * 8)

    def cut_in_half() -> None:  # mid-page
        os.truncate(sidecar, sidecar.stat().st_size // 2 + 100)

    def garble_the_words() -> None:  # met by the search's statements: catching up does not read them
        with sqlite3.connect(sidecar) as conn:
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'messages_fts_data'").fetchone()[0]
        with sidecar.open("r+b") as file:
            file.seek((root - 1) * page_size)
            file.write(b"\xff" * 64)
        with sqlite3.connect(sidecar) as conn:  # a write that leaves the page: the server's connection reads it again
            conn.execute(f"PRAGMA user_version = {VERSION}")

    with turso_server(tmp_path / "primary") as primary, running_server(replica, stderr=log, TURSO_SYNC_URL=primary.url) as url:
        call, slug = zebra_mailbox(url)
        for damage in (None, overwrite_header, cut_in_half, garble_the_words):
            if damage:
                damage()
            met = call("search_messages", project_key=slug, query="zebra")
            assert met.status_code == 503, (damage, met.text)
            error = met.json()["error"]
            assert "search index was damaged" in error["message"] and "Retry" in error["hint"], error
            found = call("search_messages", project_key=slug, query="zebra")
            assert found.status_code == 200 and [hit["subject"] for hit in found.json()["results"]] == ["zebra crossing"], found.text
    with sqlite3.connect(sidecar) as conn:  # a whole index again
        assert conn.execute("PRAGMA user_version").fetchone()[0] == VERSION
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        conn.execute("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)")
        assert conn.execute("SELECT count(*) FROM messages_fts").fetchone()[0] == 1
    logged = [line for line in log.read_text().splitlines() if "index is damaged" in line]
    assert len(logged) == 4 and all("the replica's sidecar: the next search rebuilds it" in line for line in logged), logged
    assert "file is not a database" in logged[0] and "malformed" in logged[3], logged
    assert "Traceback" not in log.read_text()


def test_a_damaged_sidecar_that_cannot_be_removed_answers_503_naming_it_until_it_can(tmp_path, monkeypatch):
    """Removing the damaged sidecar failed (its directory not writable by the server's user): the
    search answered a 500 with the OSError. Now a 503 names the file to delete, and logs why;
    once it can be removed, the next searches remove it and rebuild it. In process, on a real
    `tursodb` (the failure is the operating system's, made to fail here: tests run as root)."""
    from chalicelib import invoke
    from chalicelib.config import Settings
    from chalicelib.errors import Unavailable
    from chalicelib.store import search_index
    from chalicelib.tools import tools_by_name

    from .conftest import let_go
    from .turso import turso_server

    tools = tools_by_name()
    replica = tmp_path / "replica.db"
    with turso_server(tmp_path / "primary") as primary:
        settings = Settings(database_url=f"sqlite:///{replica}", turso_sync_url=primary.url, attachments_dir=tmp_path / "files",
                            archive_enabled=False)
        db.migrate(settings)
        call = lambda tool, **arguments: invoke.call(tools[tool], arguments, settings)  # noqa: E731
        call("ensure_project", human_key="/work/fts")
        for name in ("BlueLake", "GreenCastle"):
            call("register_agent", project_key="work-fts", name=name, program="p", model="m")
        call("set_contact_policy", project_key="work-fts", agent_name="GreenCastle", policy="open")
        call("send_message", project_key="work-fts", sender_name="BlueLake", to=["GreenCastle"], subject="zebra crossing",
             body_md="unusual words")
        search = lambda: call("search_messages", project_key="work-fts", query="zebra")  # noqa: E731
        assert [hit.subject for hit in search().results] == ["zebra crossing"]
        sidecar = Path(f"{replica}.search")
        damage_full_text_index(sidecar, "id >= 10")

        def refused(path):
            raise PermissionError(13, "Permission denied", path)

        monkeypatch.setattr(search_index.os, "remove", refused)
        for _ in range(2):  # each search meets the damage again
            with pytest.raises(Unavailable, match="removing it for a rebuild failed: Permission denied") as met:
                search()
            assert f"delete {sidecar}" in met.value.hint
        monkeypatch.undo()
        with pytest.raises(Unavailable, match="the next search rebuilds it"):
            search()
        assert [hit.subject for hit in search().results] == ["zebra crossing"]
        let_go(settings.database_url)  # this process's connections to the replica, before its primary stops


def test_attachment_content_lost_from_storage_is_named_and_copied_back_from_the_archive(tmp_path):
    """QA, session 30: a file gone from ATTACHMENTS_DIR (database and archive intact): doctor said
    all was well, --repair put nothing back, and get_attachment's hint named `db restore-from-archive`,
    which refuses a database that is not empty."""
    database, log = tmp_path / "db.sqlite", b"the only failing test's log\n" * 40
    sha256 = hashlib.sha256(log).hexdigest()
    def cli(*args: str) -> str:
        done = run(database, *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    cli("ensure-project", "--human-key", "/srv/shop")
    cli("register-agent", "--project-key", "srv-shop", "--program", "p", "--model", "m", "--name", "BlueLake")
    attachment = json.dumps({"name": "test.log", "content_base64": base64.b64encode(log).decode()})
    message_id = json.loads(cli("send-message", "--project-key", "srv-shop", "--sender-name", "BlueLake", "--to", "BlueLake",
                                "--subject", "log", "--body-md", "b", "--attachments", attachment))["message"]["id"]
    cli("archive", "drain")
    assert doctor(database).returncode == 0
    lost = tmp_path / "attachments" / sha256[:2] / sha256[2:]
    lost.unlink()

    checked = doctor(database)
    assert checked.returncode == 1
    assert f"FAIL  attachments  1 contents the messages name are missing from {tmp_path / 'attachments'}: {sha256}" in table(checked)
    assert "fix: python -m chalicelib doctor --repair" in checked.stdout
    read = run(database, "get-attachment", "--project-key", "srv-shop", "--agent-name", "BlueLake", "--message-id", str(message_id),
               "--sha256", sha256)
    assert "doctor --repair" in read.stdout + read.stderr and "restore-from-archive" not in read.stdout + read.stderr

    repaired = doctor(database, "--repair")
    assert "repaired attachments: copied 1 contents back from the archive" in repaired.stdout, repaired.stdout + repaired.stderr
    assert lost.read_bytes() == log and doctor(database).returncode == 0


def test_a_stale_ref_lock_is_removed_by_every_command_that_writes_the_archive_and_named_by_doctor(tmp_path):
    """QA, session 31: a writer killed while moving the branch leaves refs/heads/main.lock, and git
    refuses to move the branch while it exists. Only the server's worker removed it: `archive drain`
    said "0 entries archived" and exited 0, `archive rebuild` died with a traceback, and doctor's
    repair re-queued the failed entry into the same failure."""
    from chalicelib.archive.gitrepo import GitArchive
    from chalicelib.archive.worker import drain_once
    from chalicelib.config import Settings

    database, archive = tmp_path / "db.sqlite", tmp_path / "archive"
    lock = archive / "refs" / "heads" / "main.lock"
    for args in (("ensure-project", "--human-key", "/srv/shop"),
                 ("register-agent", "--project-key", "srv-shop", "--program", "p", "--model", "m", "--name", "BlueLake"),
                 ("archive", "drain")):
        assert run(database, *args).returncode == 0

    def send(subject: str) -> None:
        assert run(database, "send-message", "--project-key", "srv-shop", "--sender-name", "BlueLake", "--to", "BlueLake",
                   "--subject", subject, "--body-md", "b").returncode == 0

    lock.write_bytes(b"")  # what a writer killed between taking the branch's lock and moving it leaves
    send("fails under the lock")
    settings = Settings(database_url=f"sqlite:///{database}", archive_dir=archive, archive_retry_seconds=3600)
    with GitArchive.local(settings) as repo:
        assert drain_once(settings, repo) == 0  # a writer that does not take over first: FileLocked, retried in an hour
    checked = doctor(database)
    assert "FAIL  archive worker  1 entries failed" in table(checked) and "FileLocked" in checked.stdout
    assert f"; {lock}: left by a writer killed mid-commit, git refuses to move the branch while it exists" in checked.stdout
    assert ("fix: python -m chalicelib archive drain (no archive worker runs: it archives them now; and removes the stale"
            " lock; or start the server, whose worker does)") in checked.stdout, checked.stdout
    repaired = doctor(database, "--repair")
    assert f"re-queued 1 failed entries; removed the stale git lock {lock}" in repaired.stdout, repaired.stdout
    assert not lock.exists()
    drained = run(database, "archive", "drain")
    assert (drained.returncode, drained.stdout) == (0, "1 entries archived\n"), drained.stderr

    for command in (("archive", "drain"), ("archive", "rebuild"), ("archive", "migrate")):
        lock.write_bytes(b"")
        send(f"sent before {command[1]}")
        done = run(database, *command)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        assert "removed stale git locks" in done.stderr and not lock.exists()
        assert run(database, "archive", "drain").stdout.startswith(("0 entries", "1 entries")) and doctor(database).returncode == 0


def test_archive_commands_on_an_archive_this_user_cannot_write_refuse_in_a_line(tmp_path):
    """QA, session 32: `archive rebuild` and `archive migrate` on an archive the user could not
    write died in add_pack with a PermissionError traceback (drain said it in a line)."""
    database, archive = tmp_path / "db.sqlite", tmp_path / "archive"
    assert run(database, "ensure-project", "--human-key", "/srv/shop").returncode == 0
    assert run(database, "archive", "drain").returncode == 0
    assert run(database, "register-agent", "--project-key", "srv-shop", "--program", "p", "--model", "m",
               "--name", "BlueLake").returncode == 0  # not archived yet: rebuild writes it
    environ = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "ARCHIVE_DIR": str(archive)}

    def as_user(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(as_a_user([sys.executable, "-m", "chalicelib", *args]), cwd=ROOT, env=environ,
                              capture_output=True, text=True, timeout=120)

    everything = (["archive", "rebuild"], ["archive", "migrate"], ["archive", "drain"])
    for read_only, commands, said in (
            (archive, everything, f"cannot write the archive: {archive} is not writable by this user"),
            (archive / "objects" / "pack", everything[:1], f"cannot write the archive {archive}: [Errno 13] Permission denied")):
        read_only.chmod(0o555)
        try:
            for command in commands:
                refused = as_user(*command)
                assert refused.returncode == 1 and "Traceback" not in refused.stderr, (command, refused.stderr)
                assert said in refused.stderr and "ARCHIVE_DIR" in refused.stderr, (command, refused.stderr)
        finally:
            read_only.chmod(0o755)
    assert run(database, "archive", "rebuild").returncode == 0


def test_doctor_on_a_file_that_is_no_database_says_so_once_and_offers_no_repair(tmp_path):
    """QA, session 32: the search index check called a text file at DATABASE_URL an index mismatch and
    offered `doctor --repair`, which then failed with "file is not a database"; the database check said
    only "could not check"."""
    database = tmp_path / "agent_mail.db"
    database.write_text("a text file, not a database: someone copied the wrong file here\n")
    for args in ((), ("--repair",)):
        checked = doctor(database, *args)
        assert checked.returncode == 1 and "Traceback" not in checked.stderr and "database error" not in checked.stderr
        assert re.search(rf"FAIL  database  {re.escape(str(database))}: file is not a database\n +fix: restore it: move the"
                         r" file aside .*db backup.*restore-from-archive", table(checked)), checked.stdout
        assert "full-text index" not in checked.stdout and "could not check" not in checked.stdout, checked.stdout
        assert "doctor --repair" not in checked.stdout and "repaired" not in checked.stdout, checked.stdout
    assert database.read_text().startswith("a text file")


def test_failed_entries_without_a_worker_are_left_to_archive_drain_not_to_the_repair(tmp_path):
    """QA, session 36: with no server running, `doctor --repair` said "re-queued 2 failed entries", then
    showed the same FAIL with the same fix, `doctor --repair`: nothing archives them until a worker runs."""
    from chalicelib.archive import outbox
    from chalicelib.archive.worker import lock_path
    from chalicelib.config import Settings
    from chalicelib.ops.supervisor import exclusive

    database = tmp_path / "db.sqlite"
    assert run(database, "ensure-project", "--human-key", "/srv/shop").returncode == 0
    settings = Settings(database_url=f"sqlite:///{database}", archive_dir=tmp_path / "archive")
    with db.connection(settings) as conn, db.transaction(conn, write=True):  # as a drain that failed leaves them
        outbox.mark_failed(conn, [id for (id,) in conn.execute("SELECT id FROM archive_outbox")], "OSError: trouble", 3600)

    with exclusive(lock_path(settings), None) as mine:  # a running server's worker: the repair's retry is its next drain
        assert mine
        checked = doctor(database)
    assert "fix: python -m chalicelib doctor --repair (retries them now)" in checked.stdout, checked.stdout

    checked = doctor(database)
    assert "FAIL  archive worker  1 entries failed" in table(checked), checked.stdout
    assert ("fix: python -m chalicelib archive drain (no archive worker runs: it archives them now; or start the server,"
            " whose worker does)") in checked.stdout and "doctor --repair (retries" not in checked.stdout, checked.stdout
    repaired = doctor(database, "--repair")
    assert ("repaired archive worker: re-queued 1 failed entries; no archive worker runs to archive them:"
            " python -m chalicelib archive drain, or start the server") in repaired.stdout, repaired.stdout
    drained = run(database, "archive", "drain")
    assert (drained.returncode, drained.stdout) == (0, "1 entries archived\n"), drained.stderr
    assert doctor(database).returncode == 0


def test_attachment_content_lost_without_an_archive_is_left_to_a_backup(tmp_path):
    """QA, session 36: with no archive at ARCHIVE_DIR, doctor said --repair "copies them back from the git
    archive", and the repair then said the archive lacked them."""
    database, content = tmp_path / "db.sqlite", b"a log\n" * 40
    sha256 = hashlib.sha256(content).hexdigest()
    attachment = json.dumps({"name": "test.log", "content_base64": base64.b64encode(content).decode()})
    for args in (("ensure-project", "--human-key", "/srv/shop"),
                 ("register-agent", "--project-key", "srv-shop", "--program", "p", "--model", "m", "--name", "BlueLake"),
                 ("send-message", "--project-key", "srv-shop", "--sender-name", "BlueLake", "--to", "BlueLake",
                  "--subject", "log", "--body-md", "b", "--attachments", attachment)):
        assert run(database, *args).returncode == 0  # never archived: no archive at tmp_path/archive
    (tmp_path / "attachments" / sha256[:2] / sha256[2:]).unlink()
    others = tmp_path / "notes"  # an ARCHIVE_DIR of someone's files: no archive either
    others.mkdir()
    (others / "todo.txt").write_text("not mail")
    for archive in (tmp_path / "archive", others):
        for args in ((), ("--repair",)):
            checked = doctor(database, *args, archive=archive)
            assert "Traceback" not in checked.stderr, checked.stderr
            assert "FAIL  attachments  1 contents the messages name are missing" in table(checked), checked.stdout
            assert (f"fix: put the files back into ATTACHMENTS_DIR (from a backup; {archive} holds no archive to copy"
                    " them from)") in checked.stdout, checked.stdout
            assert "copies them back" not in checked.stdout and "repaired attachments" not in checked.stdout, checked.stdout
