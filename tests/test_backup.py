"""`db backup`: SQLite's online backup of the embedded database, taken while it is written, and
what restoring such a backup keeps that a restore from the git archive loses (read and ack marks,
agent tokens, contact policies, products, build slots, retention policies). Real SQLite files,
real git, the real CLI."""

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from chalicelib import invoke
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.worker import drain
from chalicelib.config import Settings
from chalicelib.errors import Forbidden
from chalicelib.store import db
from chalicelib.tools import messages, tools_by_name
from chalicelib.transports.cli import cli

from .servers import ROOT
from .test_doctor import as_a_user

TOOLS = tools_by_name()


def run(settings: Settings, *args: str, env: dict | None = None):
    return CliRunner().invoke(cli, ["--database-url", settings.database_url, *args], env=env)


def subjects(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return [subject for (subject,) in conn.execute("SELECT subject FROM messages ORDER BY id")]
    finally:
        conn.close()


def send(call, project: str, subject: str) -> None:
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md="x")


def test_a_backup_taken_while_a_send_is_mid_transaction_holds_everything_committed_and_nothing_else(call, project, settings,
                                                                                                    tmp_path, held):
    committed = [f"m{number}" for number in range(10)]
    for subject in committed:
        send(call, project, subject)
    shutil.copy(settings.database_path, tmp_path / "file-alone.db")  # without its -wal: what a plain copy of the file has
    assert len(subjects(tmp_path / "file-alone.db")) < len(committed)  # the newest commits are in the WAL only
    started, go_on, _ = held(messages, "mark_active")  # a send holding its write transaction, its message stored
    writer = threading.Thread(target=send, args=(call, project, "in flight"))
    writer.start()
    try:
        assert started.wait(timeout=10)
        result = run(settings, "db", "backup", str(tmp_path / "backup.db"))  # not blocked by the writer
    finally:
        go_on.set()
        writer.join(timeout=30)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"backup": str(tmp_path / "backup.db"), "bytes": (tmp_path / "backup.db").stat().st_size}
    assert subjects(tmp_path / "backup.db") == committed  # consistent: integrity_check ok, the WAL's commits, no half send
    assert subjects(settings.database_path)[-1] == "in flight"  # which then committed


def test_a_restored_backup_keeps_tokens_and_slots_that_a_restore_from_the_archive_loses(call, project, settings, tmp_path):
    """The archive keeps an agent's marks and contact policy, the project's retention policy and
    its products, not the agent's token or the build slots."""
    token = call("register_agent", project_key=project, program="claude-code", model="opus", name="PurpleOwl")["registration_token"]
    call("set_contact_policy", project_key=project, agent_name="PurpleOwl", policy="open")
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["PurpleOwl"], subject="please ack",
                body_md="x", ack_required=True)["message"]
    call("acknowledge_message", project_key=project, agent_name="PurpleOwl", message_id=sent["id"])  # read and acknowledged
    call("ensure_product", product_key="acme")
    call("products_link", product_key="acme", project_key=project)
    call("acquire_build_slot", project_key=project, agent_name="PurpleOwl", slot="frontend-build")
    call("set_retention_policy", project_key=project, mode="purge", days=30)
    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    assert run(settings, "db", "backup", str(tmp_path / "backup.db")).exit_code == 0
    # The restore: the server stopped, the backup put in the database's place, the server started (migrations run forward).
    shutil.copy(tmp_path / "backup.db", tmp_path / "from-backup.db")
    from_backup = Settings(database_url=f"sqlite:///{tmp_path}/from-backup.db", require_agent_tokens=True)
    result = run(from_backup, "db", "restore-from-archive", env={"ARCHIVE_DIR": str(settings.archive_dir)})
    assert result.exit_code == 1 and "not empty" in result.stderr  # it is whole already
    assert run(Settings(database_url=f"sqlite:///{tmp_path}/from-archive.db"), "db", "restore-from-archive",
               env={"ARCHIVE_DIR": str(settings.archive_dir)}).exit_code == 0
    from_archive = Settings(database_url=f"sqlite:///{tmp_path}/from-archive.db", require_agent_tokens=True)

    assert kept(from_backup, project, token) == {
        "read": True, "acknowledged": True, "policy": "open", "products": 1, "slots": 1, "retention": "purge"}
    with pytest.raises(Forbidden):  # the archive has no tokens: PurpleOwl cannot act until an operator issues one
        kept(from_archive, project, token)
    assert kept(from_archive.model_copy(update={"require_agent_tokens": False}), project, token) == {
        "read": True, "acknowledged": True, "policy": "open", "products": 1, "slots": 0, "retention": "purge"}


def kept(settings: Settings, project: str, token: str) -> dict:
    """What a restore kept of the state the test made: PurpleOwl's marks (read with its token), its
    contact policy, the product, the build slot and the retention policy."""
    def call(tool: str, **arguments):
        return invoke.call(TOOLS[tool], arguments, settings).model_dump(mode="json")

    [message] = call("fetch_inbox", project_key=project, agent_name="PurpleOwl", registration_token=token)["messages"]
    whois = call("whois", project_key=project, agent_name="PurpleOwl")
    return {"read": message["read_ts"] is not None, "acknowledged": message["ack_ts"] is not None,
            "policy": whois["contact_policy"], "products": len(call("list_products")["products"]),
            "slots": len(call("list_build_slots", project_key=project)["slots"]),
            "retention": call("get_retention_policy", project_key=project)["mode"]}


def test_after_a_restore_from_the_archive_an_operator_issues_each_agent_a_token(call, project, settings, tmp_path):
    """With authentication on, agents need their tokens, which the archive does not keep: the
    operator's CLI, with agent tokens off for that command only, rotates one (docs/security.md)."""
    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    restored = Settings(database_url=f"sqlite:///{tmp_path}/restored.db")
    assert run(restored, "db", "restore-from-archive", env={"ARCHIVE_DIR": str(settings.archive_dir)}).exit_code == 0
    rotate = ("rotate-agent-token", "--project-key", project, "--agent-name", "BlueLake")
    auth_on = {"AUTH_BEARER_TOKENS": "operator-token"}
    refused = run(restored, *rotate, env=auth_on)
    assert refused.exit_code == 1 and json.loads(refused.stderr)["error"]["code"] == "forbidden"
    issued = run(restored, *rotate, env={**auth_on, "REQUIRE_AGENT_TOKENS": "false"})
    assert issued.exit_code == 0, issued.output
    token = json.loads(issued.stdout)["registration_token"]
    with_tokens = restored.model_copy(update={"require_agent_tokens": True})
    arguments = {"project_key": project, "agent_name": "BlueLake", "registration_token": token}
    assert invoke.call(TOOLS["fetch_inbox"], arguments, with_tokens).messages == []


def test_backup_refuses_to_overwrite_unless_forced_and_makes_no_sense_on_a_replica(call, project, settings, tmp_path):
    target = tmp_path / "backup.db"
    target.write_bytes(b"an older backup")
    refused = run(settings, "db", "backup", str(target))
    assert refused.exit_code == 1 and "exists; choose another path, or --force" in refused.stderr
    assert target.read_bytes() == b"an older backup"
    assert run(settings, "db", "backup", "--force", str(target)).exit_code == 0
    assert subjects(target) == []  # a database now: the project, its agents, no mail
    itself = run(settings, "db", "backup", "--force", str(settings.database_path))
    assert itself.exit_code == 1 and "is the database itself" in itself.stderr
    os.mkfifo(tmp_path / "fifo")  # as /dev/null: --force made it a regular file (a helper's fuzz replaced this machine's)
    (tmp_path / "link").symlink_to(target)
    for odd in ("fifo", "link"):
        refused = run(settings, "db", "backup", "--force", str(tmp_path / odd))
        assert refused.exit_code == 1 and "is not a regular file" in refused.stderr
    assert (tmp_path / "fifo").is_fifo() and (tmp_path / "link").is_symlink()
    Path(f"{target}-wal").write_bytes(b"")  # a database in use: replaced under its WAL, it would be corrupt
    in_use = run(settings, "db", "backup", "--force", str(target))
    assert in_use.exit_code == 1 and "-wal exists" in in_use.stderr
    missing = run(Settings(database_url=f"sqlite:///{tmp_path}/none.db"), "db", "backup", str(tmp_path / "b.db"))
    assert missing.exit_code == 1 and "no database at" in missing.stderr
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "b.db").exists()
    replica = run(settings, "db", "backup", str(tmp_path / "r.db"), env={"TURSO_SYNC_URL": "http://127.0.0.1:9"})
    assert replica.exit_code == 1 and "the primary is the source of truth" in replica.stderr
    assert not (tmp_path / "r.db").exists()


def test_after_a_backup_is_restored_doctor_repair_brings_back_the_mail_sent_since_from_the_archive(call, project, settings,
                                                                                                    tmp_path):
    """The archive holds the mail sent after the backup; doctor names it, and --repair stores each
    message (one from an agent registered since, once --repair has brought the agent back), and
    the reads and acknowledgements made since, of the mail it had and of the mail brought back."""
    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    env = {"ARCHIVE_DIR": str(settings.archive_dir)}
    send(call, project, "before the backup")
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    assert run(settings, "db", "backup", str(tmp_path / "backup.db")).exit_code == 0
    send(call, project, "after the backup")
    call("send_message", project_key=project, sender_name="GreenCastle", to=["BlueLake"], cc=["RedStone"],
         subject="Re: after the backup", body_md="y", thread_id="after")
    call("register_agent", project_key=project, program="claude-code", model="opus", name="PurpleOwl")
    call("send_message", project_key=project, sender_name="PurpleOwl", to=["BlueLake"], subject="from a newcomer", body_md="z")
    ids = {m["subject"]: m["id"] for agent in ("GreenCastle", "RedStone")
           for m in call("fetch_inbox", project_key=project, agent_name=agent)["messages"]}
    call("acknowledge_message", project_key=project, agent_name="GreenCastle", message_id=ids["before the backup"])
    call("mark_message_read", project_key=project, agent_name="RedStone", message_id=ids["Re: after the backup"])
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    shutil.copy(tmp_path / "backup.db", tmp_path / "restored.db")  # the server stopped, the backup in the database's place
    restored = Settings(database_url=f"sqlite:///{tmp_path}/restored.db", archive_dir=settings.archive_dir)

    checked = run(restored, "doctor", env=env)
    assert checked.exit_code == 1
    assert ("3 unexpected, 1 projects or agents the database lacks, 2 profiles, project.json, file reservations, contacts,"
            " marks or products newer in the archive (unexpected: mail the archive holds") in checked.stdout, checked.stdout  # GreenCastle's read and ack
    repaired = run(restored, "doctor", "--repair", env=env)
    assert "brought back 0 projects and 1 agents made since" in repaired.stdout, repaired.stdout
    assert "brought back 3 messages the archive holds and the database lacked; brought back 3 read and acknowledgement marks" \
        in repaired.stdout, repaired.stdout
    assert subjects(tmp_path / "restored.db") == ["before the backup", "after the backup", "Re: after the backup",
                                                  "from a newcomer"]

    def inbox(agent: str) -> list[str]:
        arguments = {"project_key": project, "agent_name": agent}
        return [m.subject for m in invoke.call(TOOLS["fetch_inbox"], arguments, restored).messages]

    assert inbox("RedStone") == ["Re: after the backup"]  # its cc, back with the message
    assert inbox("GreenCastle") == ["after the backup", "before the backup"]
    marks = ("SELECT message_id, agent_id, kind, read_ts, ack_ts FROM message_recipients ORDER BY message_id, agent_id",
             "SELECT agent_id, sum(sent), sum(received), sum(read) FROM message_counts GROUP BY agent_id ORDER BY agent_id",
             "SELECT project_id, sum(messages), sum(agents) FROM project_counts GROUP BY project_id ORDER BY project_id")
    for query in marks:
        with db.connection(settings) as live, db.connection(restored) as back:
            assert list(map(tuple, back.execute(query))) == list(map(tuple, live.execute(query))), query
    with db.connection(restored) as conn, GitArchive.local(restored, create=False) as archive:
        from chalicelib.archive.verify import verify

        problems = verify(conn, archive)
    assert [len(problems[kind]) for kind in ("missing", "unexpected", "different", "foreign")] == [0, 0, 0, 0]


def restored_after_mail_since(call, project, settings, tmp_path, sent_since: list[str]) -> Settings:
    """A backup restored in the database's place after `sent_since` were sent: the archive has them."""
    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    send(call, project, "before the backup")
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    assert run(settings, "db", "backup", str(tmp_path / "backup.db")).exit_code == 0
    for subject in sent_since:
        send(call, project, subject)
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    shutil.copy(tmp_path / "backup.db", tmp_path / "restored.db")
    return Settings(database_url=f"sqlite:///{tmp_path}/restored.db", archive_dir=settings.archive_dir)


def test_doctor_repair_imports_the_mail_since_a_backup_in_batches_so_a_crash_loses_none_and_a_rerun_adds_the_rest(
        call, project, settings, tmp_path, monkeypatch):
    """Each IMPORT_BATCH messages commit on their own (the write lock is let go between batches):
    a repair that dies half way keeps the batches before, and the next one imports the rest once."""
    from chalicelib.archive import restore

    since = [f"since {number}" for number in range(5)]
    restored = restored_after_mail_since(call, project, settings, tmp_path, since)
    env = {"ARCHIVE_DIR": str(restored.archive_dir)}
    monkeypatch.setattr(restore, "IMPORT_BATCH", 2)
    store_document, seen = restore.store_document, []

    def dies_at_the_fifth(*args, **kwargs):
        seen.append(subjects(tmp_path / "restored.db"))  # what another connection sees committed meanwhile
        if len(seen) == 5:
            raise OSError("the disk went away")
        return store_document(*args, **kwargs)

    monkeypatch.setattr(restore, "store_document", dies_at_the_fifth)
    crashed = run(restored, "doctor", "--repair", env=env)
    assert isinstance(crashed.exception, OSError), crashed.output
    assert seen[2] == ["before the backup", "since 0", "since 1"]  # the first batch committed before the second began
    assert subjects(tmp_path / "restored.db") == ["before the backup", *since[:4]]  # two batches kept, the third lost
    monkeypatch.setattr(restore, "store_document", store_document)
    repaired = run(restored, "doctor", "--repair", env=env)
    assert "brought back 1 messages the archive holds and the database lacked" in repaired.stdout, repaired.stdout
    assert subjects(tmp_path / "restored.db") == ["before the backup", *since]  # each once
    assert repaired.exit_code == 0, repaired.stdout


def test_doctor_repair_brings_back_the_projects_and_agents_made_since_a_backup_then_their_mail(call, project, settings,
                                                                                               tmp_path):
    """An agent registered, and a project made, after the backup: --repair makes them from the
    archive's project.json and profiles under the ids they had, then stores their mail."""
    restored = restored_after_mail_since(call, project, settings, tmp_path, [])
    env = {"ARCHIVE_DIR": str(restored.archive_dir)}
    call("register_agent", project_key=project, program="claude-code", model="opus", name="PurpleOwl")
    call("send_message", project_key=project, sender_name="PurpleOwl", to=["BlueLake"], subject="from a newcomer", body_md="z")
    call("ensure_project", human_key="/work/later")
    for name in ("OrangeFox", "SilverPond"):
        call("register_agent", project_key="work-later", program="codex", model="gpt-5", name=name)
    call("set_contact_policy", project_key="work-later", agent_name="SilverPond", policy="open")
    call("send_message", project_key="work-later", sender_name="OrangeFox", to=["SilverPond"], subject="in a later project",
         body_md="w")
    with GitArchive.local(settings.model_copy(update={"archive_dir": restored.archive_dir})) as archive:
        drain(settings, archive)
    shutil.copy(tmp_path / "backup.db", tmp_path / "restored.db")  # the backup again, now that the archive has the rest

    repaired = run(restored, "doctor", "--repair", env=env)
    assert "brought back 1 projects and 3 agents made since" in repaired.stdout, repaired.stdout
    assert "brought back 2 messages the archive holds and the database lacked" in repaired.stdout, repaired.stdout
    assert "FAIL  git archive" not in repaired.stdout.split("repaired git archive")[1], repaired.stdout

    def rows(path: Path, query: str) -> list[tuple]:
        conn = sqlite3.connect(path)
        try:
            return conn.execute(query).fetchall()
        finally:
            conn.close()

    for query in ("SELECT id, slug, human_key, created_ts FROM projects ORDER BY id",
                  "SELECT id, project_id, name, program, model, inception_ts, kind, contact_policy FROM agents ORDER BY id"):
        assert rows(tmp_path / "restored.db", query) == rows(settings.database_path, query)  # the same ids as before
    later = {"project_key": "work-later", "agent_name": "SilverPond"}
    assert [m.subject for m in invoke.call(TOOLS["fetch_inbox"], later, restored).messages] == ["in a later project"]
    ours = {"project_key": project, "agent_name": "BlueLake"}
    assert "from a newcomer" in [m.subject for m in invoke.call(TOOLS["fetch_inbox"], ours, restored).messages]


def test_doctor_repair_brings_back_the_reservations_profiles_and_project_state_changed_since_a_backup(call, project, settings,
                                                                                                     tmp_path):
    """Reserved, renewed, released, registered again, retired, closed to contact, asked for contact,
    answered, given a retention policy, made part of a product and archived after the backup: the archive holds each change, and --repair stores it rather than rewriting the
    archive from the older database (which would undo them there too). A reservation retention
    deleted before the backup, still in the archive, stays deleted."""
    restored = restored_after_mail_since(call, project, settings, tmp_path, [])  # (re-made below)
    env = {"ARCHIVE_DIR": str(restored.archive_dir)}
    archived = settings.model_copy(update={"archive_dir": restored.archive_dir})
    reserve = lambda agent, path, ttl=3600: call("file_reservation_paths", project_key=project, agent_name=agent,  # noqa: E731
                                                  paths=[path], ttl_seconds=ttl)
    reserve("BlueLake", "src/renewed.py")
    reserve("BlueLake", "src/released.py")
    reserve("RedStone", "src/retention.py")
    call("set_contact_policy", project_key=project, agent_name="GreenCastle", policy="auto")
    call("request_contact", project_key=project, from_agent="RedStone", to_agent="GreenCastle")
    with db.connection(settings) as conn, db.transaction(conn, write=True):  # as retention deletes an ended one
        conn.execute("DELETE FROM file_reservations WHERE path_pattern = 'src/retention.py'")
    with GitArchive.local(archived) as archive:
        drain(settings, archive)
    assert run(settings, "db", "backup", str(tmp_path / "backup.db"), "--force").exit_code == 0
    call("renew_file_reservations", project_key=project, agent_name="BlueLake", extend_seconds=7200, paths=["src/renewed.py"])
    call("release_file_reservations", project_key=project, agent_name="BlueLake", paths=["src/released.py"])
    reserve("GreenCastle", "src/new.py")
    call("respond_contact", project_key=project, to_agent="GreenCastle", from_agent="RedStone", accept=True)  # answered since
    call("request_contact", project_key=project, from_agent="RedStone", to_agent="BlueLake")  # asked since (open: approved)
    call("register_agent", project_key=project, program="codex", model="gpt-5", name="GreenCastle")  # again, a new model
    call("retire_agent", project_key=project, agent_name="RedStone")
    call("set_contact_policy", project_key=project, agent_name="BlueLake", policy="block_all")
    call("set_retention_policy", project_key=project, mode="purge", days=400)
    call("ensure_product", product_key="later")
    call("products_link", product_key="later", project_key=project)
    call("archive_project", project_key=project)
    with GitArchive.local(archived) as archive:
        drain(settings, archive)
    shutil.copy(tmp_path / "backup.db", tmp_path / "restored.db")

    checked = run(restored, "doctor", env=env)
    assert checked.exit_code == 1
    differ = "differ: 1 unexpected, 10 profiles, project.json, file reservations, contacts, marks or products newer in the archive ("
    assert differ in checked.stdout, checked.stdout  # the unexpected: the notice of the answer
    repaired = run(restored, "doctor", "--repair", env=env)
    brought = "brought back 10 changes made since (profiles, project.json, file reservations, contacts, products)"
    assert brought in repaired.stdout, repaired.stdout
    assert "rewrote" not in repaired.stdout, repaired.stdout  # nothing else differed: the archive stays as it is
    assert repaired.exit_code == 0, repaired.stdout

    queries = ("SELECT id, agent_id, path_pattern, exclusive, reason, created_ts, expires_ts, released_ts, archive_version"
               " FROM file_reservations ORDER BY id",
               "SELECT id, name, program, model, task_description, retired_ts, contact_policy, archive_version FROM agents ORDER BY id",
               "SELECT id, archived_ts, unarchived_ts, retention_mode, retention_days, archive_version FROM projects ORDER BY id",
               "SELECT * FROM contacts ORDER BY id",
               "SELECT * FROM products ORDER BY id",
               "SELECT * FROM product_projects ORDER BY id")
    for query in queries:
        with db.connection(settings) as live, db.connection(restored) as back:
            assert list(map(tuple, back.execute(query))) == list(map(tuple, live.execute(query))), query  # as the server left them
    def last_active(path: Path) -> dict:
        conn = sqlite3.connect(path)
        try:
            return dict(conn.execute("SELECT name, last_active_ts FROM agents").fetchall())
        finally:
            conn.close()

    assert last_active(tmp_path / "restored.db")["GreenCastle"] > last_active(tmp_path / "backup.db")["GreenCastle"]  # acts since
    with db.connection(restored) as conn:
        assert conn.execute("SELECT count(*) FROM file_reservations WHERE path_pattern = 'src/retention.py'").fetchone()[0] == 0
    with db.connection(restored) as conn, GitArchive.local(restored, create=False) as archive:
        from chalicelib.archive.verify import verify

        problems = verify(conn, archive)
    assert [len(problems[kind]) for kind in ("missing", "unexpected", "different", "foreign")] == [0, 0, 0, 0]


def test_backup_keeps_whatever_is_named_like_its_partial_copy_and_blames_the_target_it_cannot_write(call, project, settings,
                                                                                                     tmp_path):
    """QA, session 32: a directory named PATH.partial ended the backup in an IsADirectoryError traceback
    (a file of that name was deleted unasked), and a target directory this user cannot write (or a
    name too long) was refused as "database error (<the database>): unable to open database file"."""
    (tmp_path / "b.db.partial").mkdir()
    (tmp_path / "c.db.partial").write_text("someone's file")
    for name in ("b.db", "c.db"):
        made = run(settings, "db", "backup", str(tmp_path / name))
        assert made.exit_code == 0 and subjects(tmp_path / name) == [], made.output
    assert (tmp_path / "b.db.partial").is_dir() and (tmp_path / "c.db.partial").read_text() == "someone's file"
    assert sorted(path.name for path in tmp_path.iterdir() if "partial" in path.name) == ["b.db.partial", "c.db.partial"]
    long_name = tmp_path / ("b" * 245 + ".db")  # a name the file system takes, its partial copy's it does not
    too_long = run(settings, "db", "backup", str(long_name))
    assert too_long.exit_code == 1 and f"cannot write the backup {long_name}: [Errno 36]" in too_long.stderr, too_long.output
    assert str(settings.database_path) not in too_long.stderr
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o555)
    refused = subprocess.run(as_a_user([sys.executable, "-m", "chalicelib", "--database-url", settings.database_url, "db",
                                        "backup", str(read_only / "b.db")]), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1 and f"cannot write in {read_only} (this user)" in refused.stderr, refused.stderr
    assert str(settings.database_path) not in refused.stderr and list(read_only.iterdir()) == []


def test_a_backup_the_disk_cannot_take_blames_the_target_and_leaves_nothing_there(call, project, settings, tmp_path):
    """A write of the copy that failed half way (a full disk) was "database error (<the database>): disk I/O
    error": the database looked broken. The tests run as root, whom no file mode stops: the CLI runs under a
    file size limit (prlimit's RLIMIT_FSIZE, which binds root too; Python ignores its SIGXFSZ), so writing
    the copy fails past 64 KiB (EFBIG) as it would on a full disk, while the database is only read."""
    limit = 64 * 1024
    assert settings.database_path.stat().st_size > limit  # (migrated: the copy is larger than the limit)
    backups = tmp_path / "backups"
    backups.mkdir()
    target = backups / "b.db"
    failed = subprocess.run(
        ["prlimit", f"--fsize={limit}", sys.executable, "-m", "chalicelib", "--database-url", settings.database_url, "db",
         "backup", str(target)], cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert failed.returncode == 1, failed.stderr
    assert f"cannot write the backup {target}: disk I/O error (SQLITE_IOERR_WRITE)" in failed.stderr, failed.stderr
    assert "database error" not in failed.stderr and str(settings.database_path) not in failed.stderr
    assert list(backups.iterdir()) == []  # no target, no partial copy (nor its journal)
    assert subjects(settings.database_path) == []  # the database is as it was
    assert run(settings, "db", "backup", str(target)).exit_code == 0 and subjects(target) == []  # without the limit
