"""The git archive in-process: rendering, the idempotent writer, the outbox and its worker,
rebuild, verify and restore, on real SQLite databases and real git repositories."""

import hashlib
import json
import os
from datetime import datetime, timedelta
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from chalicelib import clock, config, ids, invoke
from chalicelib.store import db
from chalicelib.archive import outbox, rebuild, worker
from chalicelib.archive.verify import verify as verify_archive
from chalicelib.archive import render as rendering
from chalicelib.archive import render as layout
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.render import render
from chalicelib.archive.worker import drain, drain_once, work
from chalicelib.transports.cli import cli
from chalicelib.config import Settings
from chalicelib.errors import Conflict
from chalicelib.tools import tools_by_name
from chalicelib.tools.contacts import contact_id

from .test_reservations import travel

TOOLS = tools_by_name()

ENTRY = {
    "kind": "message", "project": "work-demo", "id": "383516381663293588", "thread_id": "t-1", "subject": "Hello there",
    "body_md": "Body *markdown*", "sender": "BlueLake", "to": ["GreenCastle"], "cc": ["Ann@other-proj"],
    "bcc": ["RedStone"], "importance": "normal", "ack_required": False, "created_ts": "2026-11-24T07:17:10.778789+00:00",
}


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def commit_by_hand(archive_dir: Path, scratch: Path, change: str, files: dict[str, bytes | None]) -> None:
    """A commit made with git on HEAD's tree, as someone editing the archive would: each file
    written, or removed (None). (An index of its own: the worktree holds no attachments.)"""
    git_dir = archive_dir / ".git" if (archive_dir / ".git").exists() else archive_dir
    where = ["--git-dir", str(git_dir), "--work-tree", str(scratch)]  # (update-index wants a work tree, any)
    index = {**os.environ, "GIT_INDEX_FILE": str(scratch / "tamper-index")}

    def run(*args, given=None):
        return subprocess.run(["git", *where, *args], input=given, env=index, check=True, capture_output=True).stdout

    run("read-tree", "HEAD")
    for name, content in files.items():
        if content is None:
            run("update-index", "--force-remove", name)
        else:
            blob = run("hash-object", "-w", "--stdin", given=content).decode().strip()
            run("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}")
    tree = run("write-tree").decode().strip()
    commit = run("-c", "user.name=a", "-c", "user.email=a@b", "commit-tree", tree, "-p", "HEAD", "-m", change).decode().strip()
    run("update-ref", "HEAD", commit)


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/agent_mail.db", archive_dir=tmp_path / "archive",
                    archive_retry_seconds=0)  # a failed entry is due again at once


@pytest.fixture
def archive(settings):
    with GitArchive.local(settings) as repo:
        yield repo


def outbox_rows(settings) -> list[dict]:
    with db.connection(settings) as conn:
        return db.dicts(conn.execute("SELECT kind, state, attempts, last_error, git_commit FROM archive_outbox ORDER BY id"))


# Rendering


def test_a_message_renders_canonical_outbox_and_inbox_copies_and_hides_bcc_from_the_others():
    files = render(ENTRY)
    name = "2026-11-24T07-17-10-778789Z__hello-there__383516381663293588.md"
    second = "2026/11/24/07/17/10"  # a folder per second: small trees whatever the archive's size
    assert sorted(files) == [
        f"projects/other-proj/agents/Ann/inbox/{second}/{name}",
        f"projects/work-demo/agents/BlueLake/outbox/{second}/{name}",
        f"projects/work-demo/agents/GreenCastle/inbox/{second}/{name}",
        f"projects/work-demo/agents/RedStone/inbox/{second}/{name}",
        f"projects/work-demo/messages/{second}/{name}",
    ]
    canonical = files[f"projects/work-demo/messages/{second}/{name}"].decode()
    assert canonical.startswith("---json\n") and canonical.endswith("\n---\n\nBody *markdown*\n")
    assert json.loads(canonical.split("\n---\n")[0].removeprefix("---json\n"))["bcc"] == ["RedStone"]
    assert b"RedStone" not in files[f"projects/work-demo/agents/GreenCastle/inbox/{second}/{name}"]
    assert rendering.parse_document(files[f"projects/work-demo/messages/{second}/{name}"]) == ENTRY


@pytest.mark.parametrize("subject", ["../../../etc/passwd", "..", "/abs/path", "a\\..\\b", "\x00nul", "ünïcødé ✓"])
def test_no_subject_can_put_a_file_outside_the_message_directory(subject):
    paths = render({**ENTRY, "subject": subject})
    for path in paths:
        parts = path.split("/")
        assert ".." not in parts and "" not in parts and "\\" not in path and "\x00" not in path
        assert path.startswith("projects/work-demo/") or path.startswith("projects/other-proj/agents/Ann/")


@pytest.mark.parametrize(
    "change",
    [{"project": "../etc"}, {"project": "a/b"}, {"sender": "../Blue"}, {"to": ["x/../../y"]}, {"cc": ["Ann@../../etc"]},
     {"created_ts": "2026/../../x"}],
)
def test_names_slugs_and_timestamps_that_could_escape_are_refused(change):
    with pytest.raises(ValueError):
        render({**ENTRY, **change})


@pytest.mark.parametrize("key", ["../etc", "a/b", "Shop", ".hidden", "x" * 65])
def test_a_product_key_not_as_stored_is_refused(key):
    """products/{key}.json: a key as tools/products.py stores it (lower case), nothing that could escape."""
    with pytest.raises(ValueError, match="not a product key"):
        render({"kind": "product", "product_key": key, "name": "n"})
    assert list(render({"kind": "product", "product_key": "acme-shop.v2", "name": "n"})) == ["products/acme-shop.v2.json"]

# The writer


def test_applying_entries_again_makes_no_commit_and_no_duplicate_file(tmp_path):
    with GitArchive(tmp_path / "repo", bare=False) as archive:
        other = {**ENTRY, "id": "2", "project": "other-proj", "cc": [], "bcc": []}
        first = archive.apply([ENTRY, {**ENTRY, "id": "3", "subject": "Second"}, other])
        assert first["work-demo"] and first["other-proj"]  # one commit per project
        files = archive.files()
        assert archive.apply([ENTRY, other]) == {"work-demo": None, "other-proj": None}
        assert archive.files() == files and archive.commit_count() == 2
    assert git(tmp_path / "repo", "status", "--porcelain") == ""  # the checked-out files match the commit
    assert git(tmp_path / "repo", "log", "-1", "--format=%s") .startswith("mail: BlueLake -> GreenCastle")
    git(tmp_path / "repo", "fsck", "--strict")


def test_a_rewritten_file_keeps_its_newer_version_and_one_without_a_version_counts_as_oldest(tmp_path):
    profile = {"kind": "agent", "project": "work-demo", "id": "7", "name": "BlueLake", "program": "p", "model": "m",
               "task_description": "", "inception_ts": "2026-11-24T07:17:10.778789+00:00", "project_human_key": "/work/demo"}
    path = "projects/work-demo/agents/BlueLake/profile.json"
    with GitArchive(tmp_path / "repo", bare=True) as archive:
        archive.apply([profile])  # as written before versions: none
        archive.apply([{**profile, "retired_ts": "2026-11-25T00:00:00.000000+00:00", "version": "20"}])
        assert json.loads(archive.read(path))["version"] == "20"  # newer than a file without one
        for older in ({**profile, "version": "9"}, profile):  # an older version, an entry queued before versions
            assert archive.apply([older]) == {"work-demo": None}
        assert archive.apply([{**profile, "version": "21"}, {**profile, "program": "q", "version": "20"}])  # in one batch
        assert json.loads(archive.read(path)) == {**{k: v for k, v in profile.items() if k != "kind"}, "version": "21"}
        # A version edited by hand is no version: the file counts as oldest, and the writer goes on.
        for odd in ("21x", "9" * 40, "²", 22):
            assert rendering.version_of({"version": odd}) == 0
        assert archive.apply([{**profile, "version": "9" * 40}]) == {"work-demo": None}


# The outbox and the local worker


def test_writes_queue_their_archive_entry_in_their_transaction_and_the_worker_commits_them(call, project, settings, archive):
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], bcc=["RedStone"], subject="Hi",
         body_md="hello")
    call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=["src/app.py"])
    call("release_file_reservations", project_key=project, agent_name="BlueLake")
    with pytest.raises(Exception):  # refused: nothing stored, nothing queued
        call("send_message", project_key=project, sender_name="BlueLake", to=["Nobody"], subject="x", body_md="x")
    rows = outbox_rows(settings)
    # Each profile twice: registered, then its contact policy opened (conftest's project).
    assert [row["kind"] for row in rows] == ["project"] + ["agent"] * 6 + ["message", "reservation", "reservation"]
    assert call("archive_status")["pending"] == 10

    assert drain_once(settings, archive) == 10
    assert {row["state"] for row in outbox_rows(settings)} == {"done"}
    status = call("archive_status", project_key=project)
    assert status["pending"] == 0 and status["last_commit"] == archive.head().decode()
    files = archive.files()
    assert sum("/messages/" in path for path in files) == 1
    assert sum("/inbox/" in path for path in files) == 2 and sum("/outbox/" in path for path in files) == 1
    reservation = json.loads(next(content for path, content in files.items() if "/file_reservations/" in path))
    assert reservation["path_pattern"] == "src/app.py" and reservation["released_ts"] is not None
    profile = json.loads(files["projects/work-demo/agents/RedStone/profile.json"])
    assert (profile["program"], profile["contact_policy"]) == ("claude-code", "open")  # the later entry of the two
    assert archive.commit_count() == 1


def test_an_entry_that_cannot_be_written_is_kept_with_its_error_and_does_not_block_the_others(call, project, settings, archive):
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        outbox.record(conn, "work-demo", "message", 1, {**ENTRY, "sender": "../../escape", "project": "work-demo"})
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Hi", body_md="x")
    assert drain(settings, archive) == 8  # the project, three profiles (each registered, then opened) and the good message
    bad = [row for row in outbox_rows(settings) if row["state"] != "done"]
    assert len(bad) == 1 and bad[0]["attempts"] >= 1 and "not an agent name" in bad[0]["last_error"]
    status = call("archive_status")
    assert status["failed"] == 1 and "not an agent name" in status["failed_error"]  # the error, not only the count
    from chalicelib.ops import doctor

    finding = doctor.worker(settings)  # it pointed at archive_status, which did not say
    assert not finding.ok and "1 entries failed" in finding.detail and "not an agent name" in finding.detail
    drain(settings, archive)  # retried, still failing: counted again, never dropped
    assert [row["attempts"] for row in outbox_rows(settings) if row["state"] != "done"] > [bad[0]["attempts"]]


def test_a_failed_entry_waits_before_it_is_tried_again(project, settings, archive):
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        outbox.record(conn, "work-demo", "message", 1, {**ENTRY, "sender": "../../escape", "project": "work-demo"})
    waiting = settings.model_copy(update={"archive_retry_seconds": 60})
    drain(waiting, archive)
    with db.connection(settings) as conn:
        assert outbox.take(conn, 10) == []  # due in a minute: later drains do not pay for it
        (attempts,) = conn.execute("SELECT attempts FROM archive_outbox WHERE state = 'pending'").fetchone()
    assert attempts == 1


def test_archived_rows_are_pruned_after_the_keep_time_but_the_newest_and_pending_stay(call, project, settings, archive, monkeypatch):
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="old", body_md="x")
    drain(settings, archive)
    head = archive.head().decode()
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="new", body_md="y")
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        assert outbox.prune(conn, settings.archive_keep_done_days) == 0  # archived just now: kept
    travel(monkeypatch, 8 * 86400)
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        assert outbox.prune(conn, 0) == 0  # 0: keep forever
        assert outbox.prune(conn, settings.archive_keep_done_days) == 7  # the project, 2 x 3 profiles; the message was the newest
    assert [(row["kind"], row["state"]) for row in outbox_rows(settings)] == [("message", "done"), ("message", "pending")]
    status = call("archive_status")
    assert status["pending"] == 1 and status["last_commit"] == head


def test_with_the_archive_off_writes_queue_nothing(call, project, settings, monkeypatch):
    monkeypatch.setenv("ARCHIVE_ENABLED", "false")
    config.get_settings.cache_clear()
    try:
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Hi", body_md="x")
    finally:
        monkeypatch.undo()
        config.get_settings.cache_clear()
    assert [row["kind"] for row in outbox_rows(settings)] == ["project"] + ["agent"] * 6  # each registered, then opened


# Rebuild, verify, restore


def send_some(call, project):
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], cc=["RedStone"], subject="One",
         body_md="first")
    call("send_message", project_key=project, sender_name="GreenCastle", to=["BlueLake"], bcc=["RedStone"], subject="Two",
         body_md="second", thread_id="T-1")
    call("file_reservation_paths", project_key=project, agent_name="RedStone", paths=["docs/*.md"], reason="T-1")


def test_doctor_does_not_call_mail_archived_while_it_compares_unexpected(call, project, settings, archive, monkeypatch):
    """QA, session 29: doctor read the database, then the archive, which the worker had meanwhile
    given a message sent after that read: "1 unexpected", and a FAIL, on a healthy server."""
    from chalicelib.archive import verify as verifying
    from chalicelib.ops import doctor

    send_some(call, project)
    drain(settings, archive)
    compare = verify_archive

    def verify_while_mail_arrives(conn, repo):
        conn.execute("SELECT count(*) FROM messages").fetchone()  # the read transaction's snapshot starts
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Late", body_md="x")
        drain(settings, archive)
        return compare(conn, repo)

    monkeypatch.setattr(verifying, "verify", verify_while_mail_arrives)
    finding = doctor.archive(settings.model_copy(update={"archive_enabled": True}))
    assert finding.ok, finding.detail


def test_rebuild_writes_the_same_files_the_worker_wrote(call, project, settings, tmp_path, archive):
    send_some(call, project)
    drain(settings, archive)
    with db.connection(settings) as conn, GitArchive(tmp_path / "rebuilt", bare=True) as rebuilt:
        assert rebuild.rebuild(conn, rebuilt) == 1 + 3 + 2 + 1
        assert rebuilt.files() == archive.files()
        assert rebuild.rebuild(conn, rebuilt) == 7 and rebuilt.commit_count() == 1  # nothing new: no commit


def test_rebuild_streams_the_database_commit_by_commit(call, project, settings, tmp_path, monkeypatch):
    """Each batch is committed before the next rows are read: memory holds a batch, not the database."""
    for number in range(6):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"m{number}", body_md="x")
    monkeypatch.setattr(rebuild, "CHUNK", 2)
    read: list[str] = []
    every_message = rebuild.message_entries

    def message_entries(db, *args):
        for entry in every_message(db, *args):
            read.append(entry["subject"])
            yield entry

    monkeypatch.setattr(rebuild, "message_entries", message_entries)
    with db.connection(settings) as conn, GitArchive(tmp_path / "rebuilt", bare=True) as rebuilt:
        apply = rebuilt.apply
        read_at_commit: list[int] = []
        rebuilt.apply = lambda entries, **options: read_at_commit.append(len(read)) or apply(entries, **options)
        assert rebuild.rebuild(conn, rebuilt) == 1 + 3 + 6
    assert read_at_commit == [0, 0, 2, 4, 6]  # the project, 3 profiles and 6 messages, 2 entries a commit


def test_rebuild_merges_its_packs_as_it_goes_as_the_workers_do(call, project, settings, tmp_path, monkeypatch):
    """A commit a batch is a pack a batch: a rebuild of 100k messages left 98 packs, which every
    later lookup (verify, the worker) asked one by one."""
    from chalicelib.archive import gitrepo

    for number in range(12):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"m{number}", body_md="x")
    monkeypatch.setattr(rebuild, "CHUNK", 1)
    monkeypatch.setattr(gitrepo, "MAINTAIN_EVERY", 4)
    with db.connection(settings) as conn, GitArchive(tmp_path / "rebuilt", bare=True) as rebuilt:
        packs: list[int] = []
        assert rebuild.rebuild(conn, rebuilt, on_batch=lambda n: packs.append(rebuilt.pack_count())) == 1 + 3 + 12
        assert max(packs) <= 4 < len(packs)  # merged every 4 commits, not 16 packs at the end


def test_rebuild_commits_once_a_batch_holds_the_worker_s_byte_bound(call, project, settings, tmp_path, monkeypatch):
    for number in range(3):
        call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"m{number}",
             body_md="x" * 1000)
    monkeypatch.setattr(rendering, "BATCH_MAX_BYTES", 1500)  # each message renders to 2 documents of over 1,000 bytes
    with db.connection(settings) as conn, GitArchive(tmp_path / "rebuilt", bare=True) as rebuilt:
        assert rebuild.rebuild(conn, rebuilt) == 1 + 3 + 3
        assert rebuilt.commit_count() == 3  # the profiles with the first message, then a message a commit (CHUNK: one)


def test_archive_verify_passes_when_in_step_and_exits_1_on_a_missing_message(call, project, settings, archive):
    send_some(call, project)
    runner = CliRunner()
    env = {"ARCHIVE_DIR": str(settings.archive_dir)}
    args = ["--database-url", settings.database_url, "archive", "verify"]
    result = runner.invoke(cli, args, env=env)
    # not drained: messages (each its canonical file and three agents' copies), reservation, project, its agents' profiles
    assert result.exit_code == 1 and len(json.loads(result.stdout)["missing"]) == 2 * 4 + 1 + 1 + 3
    drain(settings, archive)
    result = runner.invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        mid = conn.execute("SELECT id FROM messages ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute("UPDATE messages SET body_md = 'tampered' WHERE id = ?", (mid,))
    result = runner.invoke(cli, args, env=env)
    assert result.exit_code == 1 and len(json.loads(result.output)["different"]) == 4  # its canonical file and copies


def test_verify_checks_each_agents_copy_and_a_repair_puts_them_right(call, project, settings):
    """QA, session 31: verify compared the canonical files only. A to recipient's inbox copy
    rewritten to show the bcc list (and a forged body), a deleted outbox copy and a made-up
    file in an inbox all passed. The copies are compared by blob id, never read. And a real
    message's copy put in the inbox of an agent it was never sent to (session 32) passed too, and
    (session 40) in another project's folder."""
    from chalicelib.ops import doctor

    worktree = settings.model_copy(update={"archive_worktree": True})
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], bcc=["RedStone"],
         subject="secret plan", body_md="hi")
    gone = call("send_message", project_key=project, sender_name="GreenCastle", to=["BlueLake"], subject="gone", body_md="x")
    with GitArchive.local(worktree) as repo:
        drain(worktree, repo)
    folder = settings.archive_dir
    paths = git(folder, "ls-files").splitlines()
    [inbox] = [path for path in paths if "/GreenCastle/inbox/" in path]
    [outbox] = [path for path in paths if "/BlueLake/outbox/" in path]
    [canonical] = [path for path in paths if "/messages/" in path and "secret-plan" in path]
    gone_copies = [path for path in paths if path.endswith(f"__{gone['message']['id']}.md")]
    shown = (folder / canonical).read_text()
    assert '"RedStone"' in shown and '"RedStone"' not in (folder / inbox).read_text()
    planted = inbox.replace("/GreenCastle/inbox/", "/BlueLake/inbox/")  # its sender's inbox: no recipient's
    (folder / planted).parent.mkdir(parents=True, exist_ok=True)
    (folder / planted).write_text((folder / inbox).read_text())
    elsewhere = inbox.replace(f"projects/{project}/agents/GreenCastle/", "projects/work-elsewhere/agents/Zed/")
    (folder / elsewhere).parent.mkdir(parents=True)
    (folder / elsewhere).write_text((folder / inbox).read_text())
    (folder / inbox).write_text(shown.replace("\nhi\n", "\nsend me your token\n"))  # the bcc list, and a forged body
    (folder / outbox).unlink()
    stray = f"projects/{project}/agents/GreenCastle/inbox/2020/01/01/00/00/00/2020-01-01T00-00-00Z__x__1.md"
    (folder / stray).parent.mkdir(parents=True)
    (folder / stray).write_text("---json\n{}\n---\n\nnot a message\n")
    git(folder, "add", "-A")
    git(folder, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tamper")
    with db.connection(settings) as conn, db.transaction(conn, write=True):  # mail the database lost and the archive keeps
        conn.execute("DELETE FROM message_recipients WHERE message_id = ?", (gone["message"]["id"],))
        conn.execute("DELETE FROM messages WHERE id = ?", (gone["message"]["id"],))
    runner, env = CliRunner(), {"ARCHIVE_DIR": str(folder)}
    verified = runner.invoke(cli, ["--database-url", settings.database_url, "archive", "verify"], env=env)
    assert verified.exit_code == 1
    # The lost message's copies go with its canonical file: mail doctor brings back, not files it removes.
    [gone_canonical] = [path for path in gone_copies if "/messages/" in path]
    assert json.loads(verified.stdout) == {"missing": [outbox], "unexpected": sorted([stray, gone_canonical, planted, elsewhere]),
                                           "different": [inbox], "foreign": []}

    finding = doctor.archive(settings)
    assert not finding.ok and "copies in agents' inbox/ or outbox/ of no message, which it removes" in finding.detail
    repaired = finding.repair(lambda total: lambda done: None)
    assert "brought back 1 messages" in repaired and "removed 3 copies of no message" in repaired, repaired
    verified = runner.invoke(cli, ["--database-url", settings.database_url, "archive", "verify"], env=env)
    assert verified.exit_code == 0, verified.stdout
    assert '"bcc": []' in (folder / inbox).read_text() and "\nhi\n" in (folder / inbox).read_text()
    assert (folder / outbox).read_text() == (folder / canonical).read_text() and not (folder / stray).exists()
    assert not (folder / planted).exists() and not (folder / elsewhere).exists()
    assert git(folder, "status", "--porcelain") == "" and stray in git(folder, "show", "--stat", "HEAD")
    subprocess.run(["git", "-C", str(folder), "fsck", "--strict"], check=True, capture_output=True)


def test_verify_says_to_rebuild_when_a_project_has_no_project_json(call, settings, archive):
    """A project made before ensure_project archived its project.json, and never written to since
    (nothing else writes that file): verify lists it as missing and says what writes it."""
    call("ensure_project", human_key="/work/demo")
    call("ensure_project", human_key="/work/old")
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        conn.execute("DELETE FROM archive_outbox WHERE project = 'work-old'")  # as ensure_project queued nothing then
    drain(settings, archive)
    verify = ["--database-url", settings.database_url, "archive", "verify"]
    env = {"ARCHIVE_DIR": str(settings.archive_dir)}
    result = CliRunner().invoke(cli, verify, env=env)
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"missing": ["projects/work-old/project.json"], "unexpected": [], "different": [], "foreign": []}
    assert result.stderr == ("no project.json in the archive for 1 project(s) (work-old), made before ensure_project archived one:"
                             " run `python -m chalicelib archive rebuild` to write it\n")
    assert CliRunner().invoke(cli, ["--database-url", settings.database_url, "archive", "rebuild"], env=env).exit_code == 0
    result = CliRunner().invoke(cli, verify, env=env)
    assert (result.exit_code, result.stderr) == (0, "")


def test_restore_from_archive_rebuilds_an_empty_database(call, project, settings, tmp_path, archive):
    send_some(call, project)
    drain(settings, archive)
    restored = f"sqlite:///{tmp_path}/restored.db"
    env = {"ARCHIVE_DIR": str(settings.archive_dir)}
    result = CliRunner().invoke(cli, ["--database-url", restored, "db", "restore-from-archive"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"projects": 1, "agents": 3, "messages": 2, "file_reservations": 1,
                                          "contacts": 0, "marks": 0, "products": 0}
    again = Settings(database_url=restored)
    with db.connection(settings) as old, db.connection(again) as new:
        assert list(rebuild.message_entries(new)) == list(rebuild.message_entries(old))
        assert list(rebuild.other_entries(new))[-1] == list(rebuild.other_entries(old))[-1]  # the reservation
    result = CliRunner().invoke(cli, ["--database-url", restored, "db", "restore-from-archive"], env=env)
    assert result.exit_code == 1 and "not empty" in result.output


def test_an_agent_registered_with_the_archive_off_is_named_by_verify_and_its_mail_restored(call, project, settings, tmp_path,
                                                                                          archive, monkeypatch):
    """QA, session 28: verify and doctor passed an archive without an agent's profile, and a restore
    then failed whole (FOREIGN KEY constraint failed): its mail named an agent it did not know."""
    monkeypatch.setenv("ARCHIVE_ENABLED", "false")
    config.get_settings.cache_clear()
    try:
        call("register_agent", project_key=project, program="p", model="m", name="RedFox")
    finally:
        monkeypatch.undo()
        config.get_settings.cache_clear()
    call("send_message", project_key=project, sender_name="RedFox", to=["BlueLake"], subject="from the dark", body_md="x")
    drain(settings, archive)
    env, verify = {"ARCHIVE_DIR": str(settings.archive_dir)}, ["--database-url", settings.database_url, "archive", "verify"]
    result = CliRunner().invoke(cli, verify, env=env)
    assert result.exit_code == 1 and json.loads(result.stdout)["missing"] == ["projects/work-demo/agents/RedFox/profile.json"]
    assert "1 agent profile(s) missing" in result.stderr and "archive rebuild" in result.stderr
    restored = Settings(database_url=f"sqlite:///{tmp_path}/restored.db")
    result = CliRunner().invoke(cli, ["--database-url", restored.database_url, "db", "restore-from-archive"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["agents"] == 4 and json.loads(result.stdout)["messages"] == 1
    with db.connection(restored) as conn:
        assert conn.execute("SELECT program, inception_ts FROM agents WHERE name = 'RedFox'").fetchone()[0] == "unknown"
    assert CliRunner().invoke(cli, ["--database-url", settings.database_url, "archive", "rebuild"], env=env).exit_code == 0
    assert CliRunner().invoke(cli, verify, env=env).exit_code == 0


def test_a_restore_takes_attachments_from_storage_checks_the_archives_and_names_a_bad_file(call, project, settings, tmp_path,
                                                                                          archive):
    """QA, session 28: verify did not look at attachment files; a restore read them first (failing
    when the archive lacked one the storage still held), stored a changed one under its new sha256
    (the message lost its attachment), and one unreadable message file failed it unnamed."""
    import base64

    from chalicelib.attachments.storage import storage

    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="log", body_md="x",
                attachments=[{"name": "a.log", "content_base64": base64.b64encode(b"the log").decode()}])
    drain(settings, archive)
    sha = sent["message"]["attachments"][0]["sha256"]
    path = f"projects/work-demo/attachments/{sha[:2]}/{sha}"
    env = {"ARCHIVE_DIR": str(settings.archive_dir)}

    def tamper(change: str, files: dict[str, bytes | None]) -> None:
        commit_by_hand(settings.archive_dir, tmp_path, change, files)

    def restore(name):
        return CliRunner().invoke(cli, ["--database-url", f"sqlite:///{tmp_path}/{name}.db", "db", "restore-from-archive"], env=env)

    tamper("the attachment lost", {path: None})
    result = CliRunner().invoke(cli, ["--database-url", settings.database_url, "archive", "verify"], env=env)
    assert json.loads(result.stdout)["missing"] == [path] and "1 attachment file(s) missing" in result.stderr
    assert restore("kept").exit_code == 0  # the storage holds it
    storage(settings).delete(sha)
    result = restore("lost")
    assert result.exit_code == 1 and f"the archive lacks {path}" in result.output
    tamper("the attachment changed", {path: b"another content"})
    result = restore("changed")
    assert result.exit_code == 1 and f"holds another content at {path}" in result.output
    # verify reads attachment files too (session 29: it checked their names only), and a rebuild mends them
    result = CliRunner().invoke(cli, ["--database-url", settings.database_url, "archive", "verify"], env=env)
    assert json.loads(result.stdout)["different"] == [path] and result.exit_code == 1 and "hold another content" in result.stderr
    storage(settings).put(b"the log")
    assert CliRunner().invoke(cli, ["--database-url", settings.database_url, "archive", "rebuild"], env=env).exit_code == 0
    result = CliRunner().invoke(cli, ["--database-url", settings.database_url, "archive", "verify"], env=env)
    assert json.loads(result.stdout)["different"] == [] and result.exit_code == 0
    tamper("the attachment changed again", {path: b"another content"})
    [document] = [name for name in git(settings.archive_dir, "ls-tree", "-r", "--name-only", "HEAD").split()
                  if name.startswith("projects/work-demo/messages/")]
    tamper("mended, and a message file broken", {path: b"the log", document: b"garbage"})
    result = restore("garbage")
    assert result.exit_code == 1 and f"{document} is no message document" in result.output


def test_restore_refuses_a_database_holding_only_a_project(call, project, settings, tmp_path, archive):
    send_some(call, project)
    drain(settings, archive)
    restored = f"sqlite:///{tmp_path}/restored.db"
    env = {"ARCHIVE_DIR": str(settings.archive_dir)}
    assert CliRunner().invoke(cli, ["--database-url", restored, "ensure-project", "--human-key", "/elsewhere"]).exit_code == 0
    result = CliRunner().invoke(cli, ["--database-url", restored, "db", "restore-from-archive"], env=env)
    assert result.exit_code == 1 and "the database is not empty" in result.stderr
    with db.connection(Settings(database_url=restored)) as conn:
        assert conn.execute("SELECT count(*) FROM projects").fetchone()[0] == 1  # left as it was


def test_a_retired_agent_is_restored_retired_and_an_unretired_one_active(call, project, settings, tmp_path, archive):
    call("retire_agent", project_key=project, agent_name="RedStone")
    call("retire_agent", project_key=project, agent_name="GreenCastle")
    call("unretire_agent", project_key=project, agent_name="GreenCastle")
    drain(settings, archive)
    profile = json.loads(archive.read(f"projects/{project}/agents/RedStone/profile.json"))
    assert profile["retired_ts"] is not None
    assert "retired_ts" not in json.loads(archive.read(f"projects/{project}/agents/BlueLake/profile.json"))  # as before
    with db.connection(settings) as conn, GitArchive(tmp_path / "rebuilt", bare=True) as rebuilt:
        rebuild.rebuild(conn, rebuilt)
        assert rebuilt.files() == archive.files()  # the worker and rebuild agree
    restored = f"sqlite:///{tmp_path}/restored.db"
    result = CliRunner().invoke(cli, ["--database-url", restored, "db", "restore-from-archive"],
                                env={"ARCHIVE_DIR": str(settings.archive_dir)})
    assert result.exit_code == 0, result.output
    with db.connection(Settings(database_url=restored)) as conn:
        retired = dict(conn.execute("SELECT name, retired_ts FROM agents"))
    assert retired == {"BlueLake": None, "GreenCastle": None, "RedStone": profile["retired_ts"]}


def test_a_restore_keeps_each_agents_contact_policy_and_a_profile_names_only_one_it_chose(call, project, settings, tmp_path,
                                                                                          archive):
    """Policies were not archived: a restore opened a block_all agent to "auto" mail. The profile
    says a policy only when it differs from the kind's default (auto; open for a person), so the
    profiles of agents that never chose stay as they were written before."""
    call("set_contact_policy", project_key=project, agent_name="RedStone", policy="block_all")
    call("set_contact_policy", project_key=project, agent_name="GreenCastle", policy="auto")
    call("ensure_overseer", project_key=project)
    drain(settings, archive)
    queued = outbox_rows(settings)
    assert call("set_contact_policy", project_key=project, agent_name="RedStone", policy="block_all")["contact_policy"] == "block_all"
    assert outbox_rows(settings) == queued  # the same policy again changes nothing to archive
    said = {name: json.loads(archive.read(f"projects/{project}/agents/{name}/profile.json")).get("contact_policy")
            for name in ("BlueLake", "GreenCastle", "RedStone", "Overseer")}
    assert said == {"BlueLake": "open", "GreenCastle": None, "RedStone": "block_all", "Overseer": None}
    restored = restore_into(settings, tmp_path / "restored.db")
    assert policies(restored) == policies(settings) == {"BlueLake": "open", "GreenCastle": "auto", "RedStone": "block_all",
                                                         "Overseer": "open"}
    with pytest.raises(Conflict, match="does not admit"):
        invoke.call(TOOLS["send_message"], {"project_key": project, "sender_name": "BlueLake", "to": ["RedStone"],
                                            "subject": "hi", "body_md": "hi"}, restored)
    with db.connection(restored) as conn, GitArchive(tmp_path / "from-restored", bare=True) as again:
        rebuild.rebuild(conn, again)
        assert again.files() == archive.files()


def test_a_restore_keeps_who_approved_whom_across_projects_and_a_rebuild_writes_the_same_files(call, project, settings,
                                                                                              tmp_path, archive):
    """Contacts were not archived: a restored contacts_only agent admitted no one. One file per pair,
    rewritten as it is answered, in the project of the pair's first agent (the other Name@slug)."""
    call("set_contact_policy", project_key=project, agent_name="RedStone", policy="contacts_only")
    call("request_contact", project_key=project, from_agent="BlueLake", to_agent="RedStone", reason="the schema")
    call("respond_contact", project_key=project, to_agent="RedStone", from_agent="BlueLake", accept=True)
    call("request_contact", project_key=project, from_agent="GreenCastle", to_agent="RedStone")
    call("respond_contact", project_key=project, to_agent="RedStone", from_agent="GreenCastle", accept=False)
    call("ensure_project", human_key="/work/other")
    call("register_agent", project_key="work-other", program="codex", model="gpt-5", name="PinkDog")
    call("request_contact", project_key="work-other", from_agent="PinkDog", to_agent=f"RedStone@{project}")  # pending
    drain(settings, archive)
    files = {path: json.loads(content) for path, content in archive.files().items() if "/contacts/" in path}
    with db.connection(settings) as conn:
        first = conn.execute("SELECT name FROM agents WHERE name IN ('PinkDog', 'RedStone') ORDER BY id LIMIT 1").fetchone()[0]
    across = ("PinkDog", f"RedStone@{project}", "pending", "work-other") if first == "PinkDog" else (
        "PinkDog@work-other", "RedStone", "pending", project)  # in the folder of the pair's agent of the lower id
    assert sorted((c["requester"], c["target"], c["status"], path.split("/")[1]) for path, c in files.items()) == [
        ("BlueLake", "RedStone", "approved", project), ("GreenCastle", "RedStone", "denied", project), across]

    restored = restore_into(settings, tmp_path / "restored.db")
    contacts = lambda settings: invoke.call(TOOLS["list_contacts"], {"project_key": project, "agent_name": "RedStone"},  # noqa: E731
                                            settings).model_dump(mode="json")
    assert contacts(restored) == contacts(settings)
    mail = lambda sender, to: {"project_key": project, "sender_name": sender, "to": [to], "subject": "hi", "body_md": "hi"}  # noqa: E731
    assert invoke.call(TOOLS["send_message"], mail("BlueLake", "RedStone"), restored).message.subject == "hi"  # approved
    with pytest.raises(Conflict, match="does not admit"):
        invoke.call(TOOLS["send_message"], mail("GreenCastle", "RedStone"), restored)  # declined
    accepted = invoke.call(TOOLS["respond_contact"], {"project_key": project, "to_agent": "RedStone",
                                                      "from_agent": "PinkDog@work-other", "accept": True}, restored)
    assert accepted.status == "approved"  # the pending request came back, and can be answered
    with db.connection(settings) as conn, GitArchive(tmp_path / "rebuilt", bare=True) as rebuilt:
        rebuild.rebuild(conn, rebuilt)
        assert rebuilt.files() == archive.files()  # the worker and a rebuild agree


def test_a_restore_leaves_out_a_contact_file_edited_into_nonsense_or_naming_an_agent_it_lacks(call, project, settings,
                                                                                             tmp_path, archive):
    call("request_contact", project_key=project, from_agent="BlueLake", to_agent="RedStone")  # open: approved
    drain(settings, archive)
    [written] = [json.loads(content) for path, content in archive.files().items() if "/contacts/" in path]
    odd = [{**written, "status": "friends"}, {**written, "target": "Nobody"},
           {key: value for key, value in written.items() if key != "expires_ts"}]
    archive.apply([{**contact, "id": str(number), "project": project} for number, contact in enumerate(odd, 1)], keep_newer=False)
    restored = restore_into(settings, tmp_path / "restored.db")
    with db.connection(restored) as conn:
        assert [tuple(row) for row in conn.execute("SELECT status, expires_ts FROM contacts")] == [("approved", written["expires_ts"])]


def test_verify_finds_a_contact_without_its_file_or_changed_since_and_a_rebuild_writes_them(call, project, settings, archive):
    """A contact asked for before contacts were archived has no file, and one answered then a file
    that says otherwise: verify lists them, and a rebuild writes them."""
    call("set_contact_policy", project_key=project, agent_name="RedStone", policy="auto")
    call("request_contact", project_key=project, from_agent="BlueLake", to_agent="RedStone")
    drain(settings, archive)
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        conn.execute("UPDATE contacts SET status = 'approved'")
        [[blue, green]] = conn.execute("SELECT (SELECT id FROM agents WHERE name = 'BlueLake'),"
                                       " (SELECT id FROM agents WHERE name = 'GreenCastle')").fetchall()
        conn.execute("INSERT INTO contacts (id, requester_id, target_id, status, ttl_seconds, requested_ts, expires_ts)"
                     " SELECT ?, ?, ?, 'approved', ttl_seconds, requested_ts, expires_ts FROM contacts",
                     (contact_id(green, blue), green, blue))
        [answered] = [row[0] for row in conn.execute("SELECT id FROM contacts WHERE target_id != ?", (blue,))]
    with db.connection(settings) as conn:
        assert verify_archive(conn, archive) == {"missing": [f"projects/{project}/contacts/{contact_id(green, blue)}.json"],
                                                 "unexpected": [], "different": [f"projects/{project}/contacts/{answered}.json"],
                                                 "foreign": []}
        rebuild.rebuild(conn, archive)
        assert verify_archive(conn, archive) == {"missing": [], "unexpected": [], "different": [], "foreign": []}
    assert json.loads(archive.read(f"projects/{project}/contacts/{answered}.json"))["status"] == "approved"


def test_reads_and_acks_are_archived_beside_the_inbox_and_a_restore_keeps_them_and_the_unread_counts(call, project, settings,
                                                                                                     tmp_path, archive):
    """Marks were not archived: after a restore every message was unread again, and every ack
    pending. A recipient's read and its acknowledgement: a file each, written once."""
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], bcc=["RedStone"],
                subject="please ack", body_md="x", ack_required=True)["message"]
    other = call("send_message", project_key=project, sender_name="RedStone", to=["GreenCastle"], subject="later", body_md="y")
    call("mark_message_read", project_key=project, agent_name="GreenCastle", message_id=sent["id"])
    drain(settings, archive)
    for agent, act in (("GreenCastle", "acknowledge_message"), ("GreenCastle", "mark_message_read"), ("RedStone", "mark_message_read")):
        call(act, project_key=project, agent_name=agent, message_id=sent["id"])  # the second changes nothing
    drain(settings, archive)
    marks = {path: json.loads(content) for path, content in archive.files().items() if "/marks/" in path}
    green, red = (f"projects/{project}/agents/{name}/marks/{layout.second_dir(sent['created_ts'])}/{sent['id']}"
                  for name in ("GreenCastle", "RedStone"))
    assert sorted(marks) == [f"{green}-ack.json", f"{green}-read.json", f"{red}-read.json"]
    read, acknowledged = marks[f"{green}-read.json"], marks[f"{green}-ack.json"]
    assert read["read_ts"] == acknowledged["read_ts"] < acknowledged["ack_ts"] and "ack_ts" not in read
    assert call("archive_status")["pending"] == 0 and len(outbox_rows(settings)) == 1 + 6 + 2 + 3  # no entry for a mark made again

    restored = restore_into(settings, tmp_path / "restored.db")
    rows = "SELECT message_id, agent_id, kind, read_ts, ack_ts FROM message_recipients ORDER BY message_id, agent_id"
    with db.connection(settings) as live, db.connection(restored) as back:
        assert list(map(tuple, back.execute(rows))) == list(map(tuple, live.execute(rows)))
    for name in ("GreenCastle", "RedStone"):  # unread counts, a bcc read not among them
        def counts(settings):
            whois = invoke.call(TOOLS["whois"], {"project_key": project, "agent_name": name}, settings)
            return whois.messages_sent, whois.messages_received, whois.unread

        assert counts(restored) == counts(settings)
    inbox = invoke.call(TOOLS["fetch_inbox"], {"project_key": project, "agent_name": "GreenCastle", "unread_only": True}, restored)
    assert [str(m.id) for m in inbox.messages] == [other["message"]["id"]]
    with db.connection(settings) as conn, GitArchive(tmp_path / "rebuilt", bare=True) as rebuilt:
        rebuild.rebuild(conn, rebuilt)
        assert rebuilt.files() == archive.files()  # the worker and a rebuild agree


def test_a_read_written_after_the_acknowledgement_it_came_before_leaves_the_mark_acknowledged(call, project, settings, archive):
    """Entries may reach the writer out of order (one retried after a later one went through): a
    read's entry writes the read's file only, which the acknowledgement's wrote the same."""
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="x")["message"]
    call("mark_message_read", project_key=project, agent_name="GreenCastle", message_id=sent["id"])
    call("acknowledge_message", project_key=project, agent_name="GreenCastle", message_id=sent["id"])
    with db.connection(settings) as conn:
        entries = [json.loads(row[0]) for row in conn.execute("SELECT payload FROM archive_outbox WHERE kind = 'mark' ORDER BY id")]
    assert [entry.get("ack_ts") is not None for entry in entries] == [False, True]
    archive.apply(entries[::-1])
    marks = {path.rsplit("-", 1)[1]: json.loads(content) for path, content in archive.files().items() if "/marks/" in path}
    assert marks["ack.json"]["ack_ts"] == entries[1]["ack_ts"] and marks["read.json"]["read_ts"] == entries[0]["read_ts"]


def test_verify_finds_a_read_without_its_mark_file_and_a_mark_the_database_lacks(call, project, settings, archive):
    """A read made before marks were archived has no file (a rebuild writes it); a file saying more
    than its row (a read since the backup a restored database came from) is different."""
    sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle", "RedStone"], subject="s",
                body_md="x")["message"]
    call("acknowledge_message", project_key=project, agent_name="RedStone", message_id=sent["id"])
    drain(settings, archive)
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        conn.execute("UPDATE message_recipients SET read_ts = '2026-01-01T00:00:00.000000+00:00' WHERE agent_id ="
                     " (SELECT id FROM agents WHERE name = 'GreenCastle')")
        conn.execute("UPDATE message_recipients SET ack_ts = NULL WHERE agent_id = (SELECT id FROM agents WHERE name = 'RedStone')")
    path = f"projects/{project}/agents/{{}}/marks/{layout.second_dir(sent['created_ts'])}/{sent['id']}-{{}}.json"
    with db.connection(settings) as conn:
        problems = verify_archive(conn, archive)
        assert (problems["missing"], problems["different"]) == ([path.format("GreenCastle", "read")],
                                                               [path.format("RedStone", "ack")])
        rebuild.rebuild(conn, archive)
        assert verify_archive(conn, archive)["missing"] == []


def test_a_product_is_archived_with_its_projects_and_a_restore_keeps_it(call, project, settings, tmp_path, archive):
    """Products were not archived: after a restore the overseer's product pages and the product
    tools were gone. One file per product, rewritten as it is renamed, linked and unlinked."""
    call("ensure_project", human_key="/work/web")
    call("ensure_product", product_key="Shop", name="The shop")
    for key in (project, "work-web"):
        call("products_link", product_key="shop", project_key=key)
    call("ensure_product", product_key="shop", name="The Shop")
    call("ensure_product", product_key="empty")
    call("products_unlink", product_key="shop", project_key="work-web")
    drain(settings, archive)
    queued = outbox_rows(settings)
    call("ensure_product", product_key="shop", name="The Shop")  # as it is: nothing to archive
    call("products_link", product_key="shop", project_key=project)
    call("products_unlink", product_key="shop", project_key="work-web")
    assert outbox_rows(settings) == queued
    shop = json.loads(archive.read("products/shop.json"))
    assert (shop["name"], [link["human_key"] for link in shop["projects"]]) == ("The Shop", ["/work/demo"])
    call("products_link", product_key="shop", project_key="work-web")
    drain(settings, archive)

    restored = restore_into(settings, tmp_path / "restored.db")
    for key in ("shop", "empty"):
        product = lambda settings: invoke.call(TOOLS["get_product"], {"product_key": key}, settings).model_dump()  # noqa: E731
        assert product(restored) == product(settings)
    with db.connection(restored) as conn:
        assert [row[0] for row in conn.execute("SELECT product_key FROM products ORDER BY product_key")] == ["empty", "shop"]
    with db.connection(settings) as conn, GitArchive(tmp_path / "rebuilt", bare=True) as rebuilt:
        rebuild.rebuild(conn, rebuilt)
        assert rebuilt.files("products") == archive.files("products")


def test_verify_finds_a_product_without_its_file_or_changed_since_and_a_restore_leaves_out_nonsense(
        call, project, settings, tmp_path, archive):
    call("ensure_product", product_key="shop")
    call("products_link", product_key="shop", project_key=project)
    drain(settings, archive)
    with db.connection(settings) as conn, db.transaction(conn, write=True):  # as before products were archived
        conn.execute("INSERT INTO products (id, product_key, name, created_ts) SELECT id + 1, 'old', 'Old', created_ts FROM products")
        conn.execute("DELETE FROM product_projects")
    with db.connection(settings) as conn:
        problems = verify_archive(conn, archive)
        assert (problems["missing"], problems["different"]) == (["products/old.json"], ["products/shop.json"])
        rebuild.rebuild(conn, archive)
        assert verify_archive(conn, archive)["missing"] == verify_archive(conn, archive)["different"] == []
    written = json.loads(archive.read("products/shop.json"))
    odd = [{**written, "product_key": "scoped", "owner_scope": "not json"}, {**written, "product_key": "nameless", "name": None}]
    archive.apply([{**product, "kind": "product", "project": outbox.PRODUCTS} for product in odd], keep_newer=False)
    with db.connection(restore_into(settings, tmp_path / "restored.db")) as conn:
        assert [row[0] for row in conn.execute("SELECT product_key FROM products ORDER BY product_key")] == ["old", "shop"]


def policies(settings) -> dict[str, str]:
    with db.connection(settings) as conn:
        return dict(conn.execute("SELECT name, contact_policy FROM agents"))


def travel_with_ids(monkeypatch, seconds: float) -> None:
    """The clock, and the clock of new ids (the archive's versions), `seconds` ahead; later tests get ids of their time again."""
    travel(monkeypatch, seconds)
    monkeypatch.setattr(ids, "time", SimpleNamespace(time=lambda: time.time() + seconds))
    monkeypatch.setattr(ids, "_last", ids._last)


def test_a_restore_keeps_when_each_agent_last_acted_so_idle_retention_retires_only_the_idle(call, project, settings, tmp_path,
                                                                                            archive, monkeypatch):
    """A restore set every last_active_ts to inception_ts: a day's idle retention then retired agents
    that had sent mail, reserved files or registered again minutes before (and released their reservations)."""
    call("register_agent", project_key=project, program="claude-code", model="opus", name="PurpleOwl")
    call("register_agent", project_key=project, program="claude-code", model="opus", name="QuietFox")
    call("file_reservation_paths", project_key=project, agent_name="RedStone", paths=["docs/**"], ttl_seconds=3 * 86400)
    travel_with_ids(monkeypatch, 2 * 86400)  # two days later, four of them act; QuietFox does nothing
    call("send_message", project_key=project, sender_name="BlueLake", to=["RedStone"], subject="still here", body_md="x")
    call("file_reservation_paths", project_key=project, agent_name="GreenCastle", paths=["src/**"])
    call("renew_file_reservations", project_key=project, agent_name="RedStone")
    call("register_agent", project_key=project, program="claude-code", model="opus", name="PurpleOwl")
    drain(settings, archive)
    restored = restore_into(settings, tmp_path / "restored.db")
    last_active = "SELECT name, last_active_ts FROM agents ORDER BY name"
    with db.connection(settings) as old, db.connection(restored) as new:
        before, after = dict(old.execute(last_active)), dict(new.execute(last_active))
    assert after["BlueLake"] == before["BlueLake"]  # its message's created_ts
    for name in ("GreenCastle", "RedStone", "PurpleOwl", "QuietFox"):  # a reservation, a renewal, a registration, none:
        # the time of a file's last write, to the ms, made just after the act
        assert abs(datetime.fromisoformat(after[name]) - datetime.fromisoformat(before[name])) < timedelta(seconds=1)
    assert retire_idle(restored, tmp_path, days=1) == 1
    with db.connection(restored) as conn:
        assert [name for (name,) in conn.execute("SELECT name FROM agents WHERE retired_ts IS NOT NULL")] == ["QuietFox"]
        assert conn.execute("SELECT count(*) FROM file_reservations WHERE released_ts IS NULL").fetchone()[0] == 2


def retire_idle(settings, tmp_path, days: float) -> int:
    """`retention run` with RETENTION_AGENT_IDLE_DAYS, as an operator runs it: how many agents it retired."""
    result = CliRunner().invoke(cli, ["--database-url", settings.database_url, "retention", "run"],
                                env={"RETENTION_AGENT_IDLE_DAYS": str(days), "ARCHIVE_DIR": str(tmp_path / "retention-archive"),
                                     "ATTACHMENTS_DIR": str(tmp_path / "attachments")})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["agents_retired"]


def kinds(settings) -> dict[str, str]:
    with db.connection(settings) as conn:
        return dict(conn.execute("SELECT name, kind FROM agents"))


def test_a_human_overseer_is_restored_a_person_whom_idle_retention_never_retires(call, project, settings, tmp_path, archive,
                                                                                 monkeypatch):
    """Profiles did not say whose they were: a restored overseer came back an agent, so ensure_overseer
    of its name answered 409 and idle retention retired it."""
    for name in ("Overseer", "Alice"):  # the default name, and one a person chose
        call("ensure_overseer", project_key=project, overseer_name=name)
    drain(settings, archive)
    assert json.loads(archive.read(f"projects/{project}/agents/Alice/profile.json"))["kind"] == "human"
    assert json.loads(archive.read(f"projects/{project}/agents/BlueLake/profile.json"))["kind"] == "agent"
    with db.connection(settings) as conn, GitArchive(tmp_path / "rebuilt", bare=True) as rebuilt:
        rebuild.rebuild(conn, rebuilt)
        assert rebuilt.files() == archive.files()  # the worker and rebuild agree
    restored = restore_into(settings, tmp_path / "restored.db")
    assert kinds(restored) == kinds(settings)
    with db.connection(restored) as conn:  # open to every agent, as ensure_overseer makes a person
        assert dict(conn.execute("SELECT name, contact_policy FROM agents WHERE kind = 'human'")) == {"Overseer": "open", "Alice": "open"}
    assert invoke.call(TOOLS["ensure_overseer"], {"project_key": project, "overseer_name": "Alice"}, restored).kind == "human"
    travel(monkeypatch, 2 * 86400)
    assert retire_idle(restored, tmp_path, days=1) == 3  # the three agents; never a person
    with db.connection(restored) as conn:
        assert [name for (name,) in conn.execute("SELECT name FROM agents WHERE retired_ts IS NULL ORDER BY name")] == [
            "Alice", "Overseer"]


def test_an_archive_whose_profiles_do_not_say_their_kind_still_verifies_and_restores_its_people(call, project, settings,
                                                                                                tmp_path, monkeypatch):
    """Profiles written before they said their kind: a person's reads as ensure_overseer always
    wrote it (render.agent_kind), whatever its name. An agent that registered with those very words
    would come back a person: verify lists its profile as different, and a rebuild writes its kind."""
    def as_before(entry: dict) -> dict[str, bytes]:
        return layout.agent_files({key: value for key, value in entry.items() if key != "agent_kind"})

    with monkeypatch.context() as before:
        before.setitem(layout.RENDERERS, "agent", as_before)
        for name in ("Overseer", "Alice"):
            call("ensure_overseer", project_key=project, overseer_name=name)
        with GitArchive.local(settings) as archive:
            drain(settings, archive)
    with GitArchive.local(settings) as archive:
        assert "kind" not in json.loads(archive.read(f"projects/{project}/agents/Alice/profile.json"))
    verify = ["--database-url", settings.database_url, "archive", "verify"]
    env = {"ARCHIVE_DIR": str(settings.archive_dir)}
    result = CliRunner().invoke(cli, verify, env=env)
    assert result.exit_code == 0, result.output
    assert kinds(restore_into(settings, tmp_path / "restored.db")) == kinds(settings)

    with monkeypatch.context() as before:
        before.setitem(layout.RENDERERS, "agent", as_before)
        call("register_agent", project_key=project, name="MimicFox", program="human", model="human",
             task_description="Human overseer (web UI)")
        with GitArchive.local(settings) as archive:
            drain(settings, archive)
    result = CliRunner().invoke(cli, verify, env=env)
    assert result.exit_code == 1 and json.loads(result.stdout)["different"] == [f"projects/{project}/agents/MimicFox/profile.json"]
    assert CliRunner().invoke(cli, ["--database-url", settings.database_url, "archive", "rebuild"], env=env).exit_code == 0
    assert CliRunner().invoke(cli, verify, env=env).exit_code == 0
    assert kinds(restore_into(settings, tmp_path / "rebuilt.db")) == kinds(settings)


@pytest.mark.parametrize("column, value", [("retired_ts", "2026-01-01T00:00:00.000000+00:00"), ("contact_policy", "contacts_only")])
def test_verify_finds_a_profile_that_does_not_say_a_change_made_before_profiles_said_it(call, project, settings, archive,
                                                                                       column, value):
    """An agent retired, or given a contact policy, before its profile said so (those wrote no profile
    then): verify says its profile differs, so doctor --repair (a rebuild) writes it, and a restore keeps it."""
    drain(settings, archive)
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        conn.execute(f"UPDATE agents SET {column} = ? WHERE name = 'RedStone'", (value,))
    with db.connection(settings) as conn:
        assert verify_archive(conn, archive)["different"] == [f"projects/{project}/agents/RedStone/profile.json"]
        rebuild.rebuild(conn, archive)
        assert verify_archive(conn, archive) == {"missing": [], "unexpected": [], "different": [], "foreign": []}
    assert json.loads(archive.read(f"projects/{project}/agents/RedStone/profile.json"))[column] == value


def test_verify_finds_a_profile_another_database_overwrote_and_a_rebuild_writes_it_back(call, project, settings, archive,
                                                                                        tmp_path):
    """A server started on a mistyped DATABASE_URL archives its own project and agent of the same
    names into this archive: project.json and the profile said theirs, and verify said nothing."""
    drain(settings, archive)
    stranger = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path}/mistyped.db"})
    invoke.call(TOOLS["ensure_project"], {"human_key": "/work/demo"}, stranger)
    invoke.call(TOOLS["register_agent"], {"project_key": project, "name": "RedStone", "program": "x", "model": "y"}, stranger)
    drain(stranger, archive)
    path = f"projects/{project}/agents/RedStone/profile.json"
    assert json.loads(archive.read(path))["program"] == "x"
    with db.connection(settings) as conn:
        assert verify_archive(conn, archive)["different"] == [path, f"projects/{project}/project.json"]  # its created_ts too
        rebuild.rebuild(conn, archive)
        assert verify_archive(conn, archive)["different"] == []
    assert json.loads(archive.read(path))["program"] == "claude-code"


def test_an_older_profile_or_reservation_retried_after_a_newer_one_does_not_overwrite_it(call, project, settings, archive):
    """The entries of a retire and a renewal fail (kept pending with a backoff), so the unretire's
    and the release's are archived first; retried, the older entries leave the newer states, and
    `archive verify` finds the archive in step."""
    reservation = call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=["src/app.py"])["granted"][0]
    drain(settings, archive)
    call("retire_agent", project_key=project, agent_name="GreenCastle")
    call("renew_file_reservations", project_key=project, agent_name="BlueLake")
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        older = [rid for (rid,) in conn.execute("SELECT id FROM archive_outbox WHERE state = 'pending'")]
        outbox.mark_failed(conn, older, "git push failed", retry_seconds=3600)
    call("unretire_agent", project_key=project, agent_name="GreenCastle")
    released_ts = call("release_file_reservations", project_key=project, agent_name="BlueLake")["released_ts"]
    assert drain(settings, archive) == 2  # the newer ones
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        assert outbox.requeue_failed(conn) == 2
    assert drain(settings, archive) == 2  # the older ones, retried
    assert "retired_ts" not in json.loads(archive.read(f"projects/{project}/agents/GreenCastle/profile.json"))
    assert json.loads(archive.read(f"projects/{project}/file_reservations/{reservation['id']}.json"))["released_ts"] == released_ts
    result = CliRunner().invoke(cli, ["--database-url", settings.database_url, "archive", "verify"],
                                env={"ARCHIVE_DIR": str(settings.archive_dir)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"missing": [], "unexpected": [], "different": [], "foreign": []}


def restore_into(settings, path: Path) -> Settings:
    """`db restore-from-archive` into a new SQLite file, as an operator runs it."""
    url = f"sqlite:///{path}"
    result = CliRunner().invoke(cli, ["--database-url", url, "db", "restore-from-archive"],
                                env={"ARCHIVE_DIR": str(settings.archive_dir)})
    assert result.exit_code == 0, result.output
    return Settings(database_url=url)


def send_on(settings) -> dict:
    arguments = dict(project_key="work-demo", sender_name="BlueLake", to=["GreenCastle"], subject="After", body_md="x")
    return invoke.call(TOOLS["send_message"], arguments, settings).model_dump(mode="json")


def test_an_archived_project_is_restored_archived_and_an_unarchived_one_active(call, project, settings, tmp_path, archive):
    send_some(call, project)
    archived_ts = call("archive_project", project_key=project)["archived_ts"]
    call("retire_agent", project_key=project, agent_name="RedStone")  # written while archived: project.json still says so
    drain(settings, archive)
    made = call("get_project", project_key=project)["created_ts"]
    described = {"slug": project, "human_key": "/work/demo", "created_ts": made}
    archived = json.loads(archive.read(f"projects/{project}/project.json"))
    assert archived == {**described, "archived_ts": archived_ts, "version": archived["version"]}
    with db.connection(settings) as conn, GitArchive(tmp_path / "rebuilt", bare=True) as rebuilt:
        rebuild.rebuild(conn, rebuilt)
        assert rebuilt.files() == archive.files()  # the worker and rebuild agree
    restored = restore_into(settings, tmp_path / "restored.db")
    assert invoke.call(TOOLS["get_project"], {"project_key": project}, restored).archived_ts == archived_ts
    with pytest.raises(Conflict, match="is archived"):
        send_on(restored)  # still read-only
    call("unarchive_project", project_key=project)
    drain(settings, archive)
    unarchived = json.loads(archive.read(f"projects/{project}/project.json"))
    assert unarchived == {**described, "unarchived_ts": unarchived["unarchived_ts"], "version": unarchived["version"]}
    assert unarchived["unarchived_ts"] > archived_ts and int(unarchived["version"]) > int(archived["version"])
    restored = restore_into(settings, tmp_path / "unarchived.db")
    assert invoke.call(TOOLS["get_project"], {"project_key": project}, restored).archived_ts is None
    assert send_on(restored)["message"]["subject"] == "After"


def test_a_project_without_agents_or_messages_is_restored_with_its_archived_state(call, settings, tmp_path, archive):
    """An empty project left nothing the restore read: ensure_project archived nothing, and a
    project.json (archive_project wrote one) made no project unless a profile or message did."""
    for key in ("/work/empty", "/work/shelved", "/work/back"):
        call("ensure_project", human_key=key)
    shelved = call("archive_project", project_key="work-shelved")["archived_ts"]
    call("archive_project", project_key="work-back")
    call("unarchive_project", project_key="work-back")
    drain(settings, archive)
    empty = json.loads(archive.read("projects/work-empty/project.json"))
    made = call("get_project", project_key="work-empty")["created_ts"]
    assert empty == {"slug": "work-empty", "human_key": "/work/empty", "created_ts": made, "version": empty["version"]}
    with db.connection(settings) as conn, GitArchive(tmp_path / "rebuilt", bare=True) as rebuilt:
        rebuild.rebuild(conn, rebuilt)
        assert rebuilt.files() == archive.files()  # the worker and rebuild agree
    restored = restore_into(settings, tmp_path / "restored.db")
    listed = invoke.call(TOOLS["list_projects"], {"include_archived": True}, restored).model_dump(mode="json")["projects"]
    assert {p["slug"]: (p["human_key"], p["archived_ts"]) for p in listed} == {
        "work-empty": ("/work/empty", None), "work-shelved": ("/work/shelved", shelved), "work-back": ("/work/back", None),
    }
    with db.connection(restored) as conn, GitArchive(tmp_path / "from-restored", bare=True) as again:
        rebuild.rebuild(conn, again)
        assert again.files() == archive.files()  # work-back's unarchived_ts came back too


def test_a_restored_project_keeps_when_it_was_made(call, settings, tmp_path, archive, monkeypatch):
    """Restore took created_ts from a project's first profile or message, and gave one with
    neither the time of the restore: project.json says when it was made."""
    call("ensure_project", human_key="/work/empty")
    call("ensure_project", human_key="/work/later")
    travel(monkeypatch, 3600)  # its first agent an hour after the project
    call("register_agent", project_key="work-later", program="claude-code", model="opus", name="BlueLake")
    drain(settings, archive)
    restored = restore_into(settings, tmp_path / "restored.db")
    made = "SELECT slug, created_ts FROM projects ORDER BY slug"
    with db.connection(settings) as old, db.connection(restored) as new:
        assert db.dicts(new.execute(made)) == db.dicts(old.execute(made))
    assert json.loads(archive.read("projects/work-empty/project.json"))["created_ts"] == call("get_project", project_key="work-empty")["created_ts"]


def as_before_created_ts(monkeypatch, call, settings, archive) -> dict[str, str]:
    """An archive and a database as a version before project.json said when a project was made
    (nor versions) left them: work-old's Zulu registered with it, Alpha an hour later, then a
    message; work-empty ensured alone. The project rows have no archive version (as migration
    0035 left them). {"made": work-old's created_ts, "Zulu"/"Alpha": inception times}."""
    with monkeypatch.context() as older:
        older.setattr(outbox, "project_payload", lambda project: {"project_human_key": project["human_key"]})
        made = call("ensure_project", human_key="/work/old")["created_ts"]
        call("ensure_project", human_key="/work/empty")
        times = {"made": made, "Zulu": call("register_agent", project_key="work-old", program="p", model="m", name="Zulu")["inception_ts"]}
        call("set_contact_policy", project_key="work-old", agent_name="Zulu", policy="open")
        travel(older, 3600)
        times["Alpha"] = call("register_agent", project_key="work-old", program="p", model="m", name="Alpha")["inception_ts"]
        travel(older, 7200)
        call("send_message", project_key="work-old", sender_name="Alpha", to=["Zulu"], subject="Old", body_md="x")
        drain(settings, archive)
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        conn.execute("UPDATE projects SET archive_version = NULL")
        conn.execute("UPDATE agents SET archive_version = NULL")
    for slug, key in (("work-old", "/work/old"), ("work-empty", "/work/empty")):
        assert json.loads(archive.read(f"projects/{slug}/project.json")) == {"slug": slug, "human_key": key}
    return times


def test_a_project_json_written_before_created_ts_is_restored_from_the_earliest_it_holds(call, settings, tmp_path, archive,
                                                                                        monkeypatch):
    """With no created_ts in project.json a restore took the first profile it read (by name:
    Alpha, an hour after Zulu), and for a project.json alone the restore's own time. Now the
    earliest profile or message, else when the archive's first commit holding project.json was made."""
    times = as_before_created_ts(monkeypatch, call, settings, archive)
    added = git(settings.archive_dir, "log", "--diff-filter=A", "--format=%ct", "--", "projects/work-empty/project.json")
    travel(monkeypatch, 86400)  # the restore, a day later
    restored = restore_into(settings, tmp_path / "restored.db")
    made = {p.slug: p.created_ts for p in invoke.call(TOOLS["list_projects"], {}, restored).projects}
    assert made == {"work-old": times["Zulu"], "work-empty": clock.from_epoch(int(added))}


def test_a_rewritten_project_json_keeps_its_created_ts(call, settings, tmp_path, archive, monkeypatch):
    """A project unchanged since versions exist: a profile's entry wrote its created_ts into an
    older project.json, and the next message's entry (which does not know it) wrote the file
    again without it."""
    times = as_before_created_ts(monkeypatch, call, settings, archive)
    call("register_agent", project_key="work-old", program="p", model="m", name="Mid")
    drain(settings, archive)
    assert json.loads(archive.read("projects/work-old/project.json"))["created_ts"] == times["made"]
    call("send_message", project_key="work-old", sender_name="Mid", to=["Zulu"], subject="New", body_md="x")
    drain(settings, archive)
    assert json.loads(archive.read("projects/work-old/project.json")) == {"slug": "work-old", "human_key": "/work/old",
                                                                          "created_ts": times["made"]}
    restored = restore_into(settings, tmp_path / "restored.db")
    assert invoke.call(TOOLS["get_project"], {"project_key": "work-old"}, restored).created_ts == times["made"]


def test_a_message_entry_keeps_the_archived_state_of_a_project_json_without_a_version(call, settings, tmp_path, archive,
                                                                                     monkeypatch):
    """Review, session 18: a message's entry says nothing of its project's state, and its project.json
    (version 0) tied with one written before versions (0 too) and replaced it: a message sent before
    the project was archived, written late (its entry failed once), dropped archived_ts from the
    archive (a restore brought the project back writable), and every message of a project unarchived
    before versions dropped its unarchived_ts."""
    with monkeypatch.context() as older:  # a version whose entries said the project's state, but no version
        payload = outbox.project_payload
        older.setattr(outbox, "project_payload", lambda project: {k: v for k, v in payload(project).items() if k != "project_version"})
        call("ensure_project", human_key="/work/old")
        for name in ("Alpha", "Zulu"):
            call("register_agent", project_key="work-old", program="p", model="m", name=name)
            call("set_contact_policy", project_key="work-old", agent_name=name, policy="open")
        call("send_message", project_key="work-old", sender_name="Alpha", to=["Zulu"], subject="Late", body_md="x")
        with db.connection(settings) as conn, db.transaction(conn, write=True):
            [(late,)] = conn.execute("SELECT id FROM archive_outbox WHERE kind = 'message'").fetchall()
            outbox.mark_failed(conn, [late], "git was busy", retry_seconds=60)
        archived_ts = call("archive_project", project_key="work-old")["archived_ts"]
        drain(settings, archive)
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        conn.execute("UPDATE projects SET archive_version = NULL")  # as migration 0035 left the row
    assert json.loads(archive.read("projects/work-old/project.json"))["archived_ts"] == archived_ts
    travel(monkeypatch, 120)
    assert drain(settings, archive) == 1  # the late message
    assert len(archive.files("projects/work-old/messages")) == 1
    assert json.loads(archive.read("projects/work-old/project.json")).get("archived_ts") == archived_ts
    restored = restore_into(settings, tmp_path / "restored.db")
    assert invoke.call(TOOLS["get_project"], {"project_key": "work-old"}, restored).archived_ts == archived_ts
    with monkeypatch.context() as older:
        older.setattr(outbox, "project_payload", lambda project: {k: v for k, v in payload(project).items() if k != "project_version"})
        call("unarchive_project", project_key="work-old")
        drain(settings, archive)
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        conn.execute("UPDATE projects SET archive_version = NULL")
    unarchived_ts = json.loads(archive.read("projects/work-old/project.json"))["unarchived_ts"]
    call("send_message", project_key="work-old", sender_name="Alpha", to=["Zulu"], subject="Back", body_md="x")
    drain(settings, archive)
    assert json.loads(archive.read("projects/work-old/project.json")).get("unarchived_ts") == unarchived_ts


def test_a_notice_is_restored_as_a_notice_and_introduces_nobody(call, project, settings, tmp_path, archive):
    """A notice's recipient is in "to" (as Message shows it), and a restore read it as written to:
    after it, a contact request made its two agents correspondents, and the auto policy admitted
    mail both ways that it refused before (docs/contacts.md: notices introduce nobody)."""
    for name in ("GreenCastle", "RedStone"):  # open accepts at once, and admits anyone
        call("set_contact_policy", project_key=project, agent_name=name, policy="auto")
    call("request_contact", project_key=project, from_agent="RedStone", to_agent="GreenCastle")
    drain(settings, archive)
    restored = restore_into(settings, tmp_path / "restored.db")  # the profiles say both are auto
    inbox = invoke.call(TOOLS["fetch_inbox"], {"project_key": project, "agent_name": "GreenCastle"}, restored)
    assert [(m.sender, m.kind) for m in inbox.messages] == [("RedStone", "notice")]
    with pytest.raises(Conflict, match="does not admit"):  # (GreenCastle may answer: the request came back too)
        invoke.call(TOOLS["send_message"], {"project_key": project, "sender_name": "RedStone", "to": ["GreenCastle"],
                                            "subject": "hi", "body_md": "hi"}, restored)
    with db.connection(restored) as conn, GitArchive(tmp_path / "from-restored", bare=True) as again:
        rebuild.rebuild(conn, again)
        assert again.files() == archive.files()  # the flag came back with the notice


@pytest.mark.parametrize("change, said", [("archived_ts = '2026-01-01T00:00:00.000000+00:00'", {"archived_ts": "2026-01-01T00:00:00.000000+00:00"}),
                                           ("retention_mode = 'purge', retention_days = 9", {"retention_mode": "purge", "retention_days": 9})])
def test_verify_finds_a_project_json_that_does_not_say_its_projects_state(call, project, settings, archive, change, said):
    """A project archived, or given a retention policy, before that wrote project.json: verify says
    the file differs, so doctor --repair (a rebuild) writes it, and a restore keeps it."""
    drain(settings, archive)
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        conn.execute(f"UPDATE projects SET {change}")
    with db.connection(settings) as conn:
        assert verify_archive(conn, archive)["different"] == [f"projects/{project}/project.json"]
        rebuild.rebuild(conn, archive)
        assert verify_archive(conn, archive) == {"missing": [], "unexpected": [], "different": [], "foreign": []}
    assert json.loads(archive.read(f"projects/{project}/project.json")).items() >= said.items()


def test_a_projects_retention_policy_is_in_its_project_json_and_a_restore_keeps_it(call, project, settings, tmp_path, archive):
    """Retention policies were not archived: a restored project kept its old mail forever (or
    purged it after the server's default) whatever its administrator had chosen."""
    call("set_retention_policy", project_key=project, mode="archive_only", days=90)
    drain(settings, archive)
    queued = outbox_rows(settings)
    call("set_retention_policy", project_key=project, mode="archive_only", days=90)  # again: nothing to archive
    assert outbox_rows(settings) == queued
    described = json.loads(archive.read(f"projects/{project}/project.json"))
    assert (described["retention_mode"], described["retention_days"]) == ("archive_only", 90)
    restored = restore_into(settings, tmp_path / "restored.db")
    kept = invoke.call(TOOLS["get_retention_policy"], {"project_key": project}, restored)
    assert (kept.mode, kept.days) == ("archive_only", 90)
    call("set_retention_policy", project_key=project, mode=None)  # back to the server's default
    drain(settings, archive)
    assert "retention_mode" not in json.loads(archive.read(f"projects/{project}/project.json"))
    call("set_retention_policy", project_key=project, mode=None, days=30)  # the server's mode after 30 days (was not
    drain(settings, archive)  # archived: verify found project.json different whatever a repair wrote, a restore lost it)
    with db.connection(settings) as conn:
        assert verify_archive(conn, archive) == {"missing": [], "unexpected": [], "different": [], "foreign": []}
    kept = invoke.call(TOOLS["get_retention_policy"], {"project_key": project}, restore_into(settings, tmp_path / "again.db"))
    assert (kept.mode, kept.days) == (None, 30)


def first_naming(entry: dict) -> dict[str, bytes]:
    """How reservations were archived before: a file per pattern, sha1(pattern).json."""
    digest = hashlib.sha1(entry["path_pattern"].encode()).hexdigest()
    return {f"projects/{entry['project']}/file_reservations/{digest}.json": layout.to_json(entry), **layout.project_file(entry)}


def test_reservations_of_one_pattern_keep_a_file_each_and_an_archive_named_by_pattern_still_reads(call, project, settings,
                                                                                                  tmp_path, monkeypatch):
    def reserve(agent: str, reason: str) -> None:
        call("file_reservation_paths", project_key=project, agent_name=agent, paths=["src/shared.py"], exclusive=False, reason=reason)

    with monkeypatch.context() as before:  # written by an older version: the second overwrote the first
        before.setitem(layout.RENDERERS, "reservation", first_naming)
        reserve("BlueLake", "refactor")
        reserve("RedStone", "tests")
        with GitArchive.local(settings) as archive:
            drain(settings, archive)
    with db.connection(settings) as conn:
        ids = dict(conn.execute("SELECT a.name, r.id FROM file_reservations r JOIN agents a ON a.id = r.agent_id"))
    first, second = ids["BlueLake"], ids["RedStone"]
    with db.connection(settings) as conn, GitArchive.local(settings) as archive:
        assert verify_archive(conn, archive)["missing"] == [f"projects/{project}/file_reservations/{first}.json"]
        rebuild.rebuild(conn, archive)  # what doctor --repair runs
        assert not any(verify_archive(conn, archive).values())
    reserve("GreenCastle", "docs")  # and from now on, a file each
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
        names = sorted(path.rsplit("/", 1)[1] for path, _ in archive.walk(f"projects/{project}/file_reservations"))
    assert len(names) == 4 and f"{first}.json" in names and f"{second}.json" in names  # and the old file, kept
    restored = f"sqlite:///{tmp_path}/restored.db"
    result = CliRunner().invoke(cli, ["--database-url", restored, "db", "restore-from-archive"],
                                env={"ARCHIVE_DIR": str(settings.archive_dir)})
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["file_reservations"] == 3
    with db.connection(Settings(database_url=restored)) as conn:
        reasons = conn.execute("SELECT a.name, r.reason FROM file_reservations r JOIN agents a ON a.id = r.agent_id ORDER BY a.name")
        assert [tuple(row) for row in reasons] == [("BlueLake", "refactor"), ("GreenCastle", "docs"), ("RedStone", "tests")]


def test_a_worker_started_after_a_kill_mid_commit_removes_the_stale_ref_lock(call, project, settings, archive):
    drain(settings, archive)
    lock = Path(archive.repo.controldir()) / "refs" / "heads" / "main.lock"
    lock.write_bytes(b"")  # what a worker killed between taking the branch's lock and moving it leaves
    call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="after the kill", body_md="x")
    assert drain_once(settings, archive) == 0  # git refuses to move the branch while the lock exists
    stopping = threading.Event()
    worker = threading.Thread(target=work, args=(settings, stopping))
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while call("archive_status")["pending"] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stopping.set()
        worker.join(timeout=30)
    assert call("archive_status")["pending"] == 0 and not lock.exists()


def test_archive_drain_exits_1_with_the_error_while_entries_still_fail(call, project, settings, archive):
    """It said "N entries archived" and exited 0 whatever failed (QA, session 31): a script or an
    operator took that for done. It retries failed entries at once (it is the retry) and says the
    oldest failure's error."""
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        outbox.record(conn, "work-demo", "message", 1, {**ENTRY, "sender": "../../escape", "project": "work-demo"})
    waiting = settings.model_copy(update={"archive_retry_seconds": 3600})
    drain(waiting, archive)  # failed once: due in an hour, the rest archived
    args = ["--database-url", settings.database_url, "archive", "drain"]
    result = CliRunner().invoke(cli, args, env={"ARCHIVE_DIR": str(settings.archive_dir), "ARCHIVE_RETRY_SECONDS": "3600"})
    assert result.exit_code == 1, result.output
    assert "0 entries archived" in result.output
    assert "Error: 1 entries failed and stay pending; the oldest's error: ValueError: not an agent name" in result.output
    assert [row["attempts"] for row in outbox_rows(settings) if row["state"] != "done"] == [2]  # tried now, not in an hour
