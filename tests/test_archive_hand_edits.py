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
