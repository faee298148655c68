"""The SQS worker and the archive's layout 2: it migrates a remote of the first layout, and it
refuses (per item, like a poison message) an entry whose slug names another project's folder."""

import json
import shutil
import subprocess

from chalicelib.store import db
from chalicelib import invoke
from chalicelib.archive import cloud

from .aws_events import CONTEXT
from .test_archive_cloud import TOOLS, messages_in, receive, remote, send, settings, sqs, worker  # noqa: F401 (fixtures)


def git(repo, *args) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True, text=True).stdout


def test_the_worker_moves_a_remote_of_the_first_layout_to_per_second_folders(sqs, settings, worker, send, tmp_path):  # noqa: F811
    old = "projects/cloud/messages/2026/11/2026-11-24T07-17-10-778789Z__old__1.md"
    work = tmp_path / "old-work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / old).parent.mkdir(parents=True)
    (work / old).write_text('---json\n{"id": "1"}\n---\n\nold\n')
    subprocess.run(["git", "-C", str(work), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "old"], check=True)
    shutil.rmtree(settings.archive_git_remote)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), settings.archive_git_remote], check=True)

    new = send("new")
    cloud.publish_all(settings)
    assert worker(receive(sqs), CONTEXT) == {"batchItemFailures": []}
    files = git(settings.archive_git_remote, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    assert "layout.json" in files and old not in files
    assert "projects/cloud/messages/2026/11/24/07/17/10/2026-11-24T07-17-10-778789Z__old__1.md" in files
    with remote(settings) as archive:
        assert messages_in(archive) == sorted(["1", new])
    git(settings.archive_git_remote, "fsck", "--strict")


def test_entries_of_a_second_project_with_the_same_slug_are_refused_per_item(sqs, settings, worker):  # noqa: F811
    for key in ("/home/me/shop", "/home/me/Shop"):
        invoke.call(TOOLS["ensure_project"], {"human_key": key}, settings)
        with db.connection(settings) as conn, db.transaction(conn, write=True):  # one slug, as before slugs were unique
            conn.execute("UPDATE projects SET slug = 'home-me-shop' WHERE human_key = ?", (key,))
        invoke.call(TOOLS["register_agent"], {"project_key": key, "program": key, "model": "m", "name": "BlueLake"}, settings)
    cloud.publish_all(settings)
    event = receive(sqs)
    bodies = {record["messageId"]: json.loads(record["body"])["entry"] for record in event["Records"]}
    result = worker(event, CONTEXT)
    assert [bodies[item["itemIdentifier"]]["project_human_key"] for item in result["batchItemFailures"]] == ["/home/me/Shop"]
    with remote(settings) as archive:
        assert json.loads(archive.read("projects/home-me-shop/project.json"))["human_key"] == "/home/me/shop"
        assert json.loads(archive.read("projects/home-me-shop/agents/BlueLake/profile.json"))["program"] == "/home/me/shop"
    status = invoke.call(TOOLS["archive_status"], {}, settings)
    assert status.failed == 1  # kept, visible, never mixed into the other project's folder
