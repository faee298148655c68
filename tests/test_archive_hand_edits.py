"""The git archive after a person edited it into nonsense: a JSON file that is no JSON any more
(a merge's conflict markers left in, a half-saved edit), on a real SQLite database, a real git
repository and the command line."""

import json
import os
import subprocess

import pytest
from click.testing import CliRunner

from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.worker import drain
from chalicelib.config import Settings
from chalicelib.store import db
from chalicelib.transports.cli import cli

CONFLICTED = b"<<<<<<< HEAD\n{\"slug\": \"work-demo\"}\n=======\n>>>>>>> theirs\n"


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/agent_mail.db", archive_dir=tmp_path / "archive",
                    archive_retry_seconds=0)


def commit_by_hand(settings: Settings, scratch, message: str, files: dict[str, bytes]) -> None:
    """A commit made with git itself on the archive's head (an index of its own: the archive is bare)."""
    where = ["--git-dir", str(settings.archive_dir), "--work-tree", str(scratch)]
    env = {**os.environ, "GIT_INDEX_FILE": str(scratch / "hand-index")}

    def git(*args, given=None):
        return subprocess.run(["git", *where, *args], input=given, env=env, check=True, capture_output=True).stdout

    git("read-tree", "HEAD")
    for name, content in files.items():
        blob = git("hash-object", "-w", "--stdin", given=content).decode().strip()
        git("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}")
    tree = git("write-tree").decode().strip()
    commit = git("-c", "user.name=a", "-c", "user.email=a@b", "commit-tree", tree, "-p", "HEAD", "-m", message).decode().strip()
    git("update-ref", "HEAD", commit)


def run(settings: Settings, *args: str):
    return CliRunner().invoke(cli, ["--database-url", settings.database_url, *args], env={"ARCHIVE_DIR": str(settings.archive_dir)})


def pending(settings: Settings) -> list[tuple]:
    with db.connection(settings) as conn:
        return conn.execute("SELECT kind, attempts, last_error FROM archive_outbox WHERE state = 'pending'").fetchall()


def test_a_project_json_or_profile_edited_into_no_json_stops_neither_the_worker_nor_a_rebuild(call, project, settings, tmp_path):
    """QA, session 36: the writer parsed the project.json and profile an entry rewrites (to keep
    the newer version) as JSON, whatever they held. One with a merge's conflict markers made every
    entry of its project fail, retried for ever ("JSONDecodeError", no file named): a project's
    mail stopped reaching the archive, and `archive rebuild`, which writes the database's state
    over the archive's, failed on it too. A file that is no JSON now says no version: the entry's
    file replaces it."""
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    commit_by_hand(settings, tmp_path, "a merge gone wrong", {
        "projects/work-demo/project.json": CONFLICTED, "projects/work-demo/agents/BlueLake/profile.json": b"{\"name\": \"Blue"})
    call("send_message", project_key=project, sender_name="GreenCastle", to=["BlueLake"], subject="after", body_md="x")
    call("register_agent", project_key=project, program="codex", model="gpt", name="BlueLake")  # rewrites its profile
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
        assert pending(settings) == []
        assert json.loads(archive.read("projects/work-demo/project.json"))["human_key"] == "/work/demo"
        assert json.loads(archive.read("projects/work-demo/agents/BlueLake/profile.json"))["program"] == "codex"
    commit_by_hand(settings, tmp_path, "again", {"projects/work-demo/project.json": CONFLICTED})
    result = run(settings, "archive", "rebuild")
    assert result.exit_code == 0, result.output
    assert run(settings, "archive", "verify").exit_code == 0


def test_verify_and_doctor_name_the_files_edited_into_nonsense_and_a_repair_rewrites_what_the_database_has(
        call, project, settings, tmp_path):
    """QA, session 36: `archive verify` stopped with a JSONDecodeError's traceback at the first
    file of the archive that was no JSON (a project.json, a profile, a mark, a message file), and
    doctor said only "could not check: JSONDecodeError", naming no file and offering no repair. Now
    such a file is different (the database has what it should say: a rebuild writes it) or, a
    message file of no message the database has, unexpected (a repair cannot bring it back, and
    names it)."""
    call("send_message", project_key=project, sender_name="GreenCastle", to=["BlueLake"], subject="hi", body_md="x")
    [message] = call("fetch_inbox", project_key=project, agent_name="BlueLake")["messages"]
    call("mark_message_read", project_key=project, agent_name="BlueLake", message_id=message["id"])
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
        [mark] = [path for path in archive.files() if "/marks/" in path]
    garbage = "projects/work-demo/messages/2026/12/04/00/00/00/2026-12-04T00-00-00Z__notes__123.md"
    edited = {"projects/work-demo/project.json": CONFLICTED, "projects/work-demo/agents/BlueLake/profile.json": b"[]",
              mark: b"\xff\xfe not even text", garbage: b"my notes, not a message"}
    commit_by_hand(settings, tmp_path, "edited by hand", edited)
    result = run(settings, "archive", "verify")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    problems = json.loads(result.stdout)
    assert sorted(problems["different"]) == sorted(path for path in edited if path != garbage)
    assert problems["unexpected"] == [garbage] and problems["foreign"] == []
    result = run(settings, "doctor")
    assert "could not check" not in result.output and "FAIL  git archive" in result.output, result.output
    result = run(settings, "doctor", "--repair")
    assert "could not check" not in result.output, result.output
    assert f"1 left, a sender or recipient in neither the database nor the archive's profiles: {garbage}" in result.output
    problems = json.loads(run(settings, "archive", "verify").stdout)
    assert problems == {"missing": [], "unexpected": [garbage], "different": [], "foreign": []}


def test_a_restore_leaves_out_the_json_files_edited_into_nonsense_and_brings_the_mail_back(call, project, settings, tmp_path):
    """QA, session 36: `db restore-from-archive` stopped at the first project.json, profile,
    reservation or contact file that was no JSON, with json's message alone ("Expecting value:
    line 1 column 1"), naming no file. It leaves them out, as it leaves out one that is JSON but no
    contact: the project and agent are made from their mail."""
    call("send_message", project_key=project, sender_name="GreenCastle", to=["BlueLake"], subject="hi", body_md="x")
    call("file_reservation_paths", project_key=project, agent_name="RedStone", paths=["docs/*.md"])
    call("request_contact", project_key=project, agent_name="RedStone", to_agent="BlueLake")
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
        files = archive.files()
    edited = [path for path in files if path.endswith(("/project.json", "/BlueLake/profile.json"))
              or "/file_reservations/" in path or "/contacts/" in path]
    assert len(edited) == 4
    commit_by_hand(settings, tmp_path, "edited by hand", dict.fromkeys(edited, CONFLICTED))
    restored = Settings(database_url=f"sqlite:///{tmp_path}/restored.db", archive_dir=settings.archive_dir)
    result = run(restored, "db", "restore-from-archive")
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert (counts["projects"], counts["messages"], counts["file_reservations"], counts["contacts"]) == (1, 1, 0, 0)
    with db.connection(restored) as conn:
        assert conn.execute("SELECT human_key FROM projects").fetchall()[0][0] == "/work/demo"
        assert conn.execute("SELECT program FROM agents WHERE name = 'BlueLake'").fetchone()[0] == "unknown"  # from its mail
