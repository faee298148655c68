"""The SQS worker's clone is shallow: a cold worker fetches the remote's head only (depth 1), not
its history, whose size made a new container's first batch outlast the function's timeout on a
large archive; a warm one fetches only the new head. What it pushes, the remote (git itself:
fsck) takes, over a path and over git's own smart HTTP."""

import json
import shutil
import subprocess

from dulwich.client import LocalGitClient
from dulwich.objects import Commit

from chalicelib.archive import cloud, gitrepo
from chalicelib.archive.gitrepo import BRANCH, GitArchive
from chalicelib.archive.verify import verify as verify_archive
from chalicelib.store import db

from .aws_events import CONTEXT
from .servers import git_http_server
from .test_archive_cloud import messages_in, quicker_worker, receive, remote, send, settings, sqs, worker  # noqa: F401 (fixtures)


def git(repo, *args) -> str:
    return subprocess.run(["git", "--git-dir", str(repo), *args], check=True, capture_output=True, text=True).stdout


def history(repo) -> list[str]:
    """The branch's commits, newest first, as git sees them."""
    return git(repo, "rev-list", "main").split()


def commits_held(path) -> set[str]:
    """Every commit object a clone holds."""
    with GitArchive(path, bare=True) as clone:
        store = clone.repo.object_store
        return {sha.decode() for sha in store if isinstance(store[sha], Commit)}


def archived_well(settings, ids: list[str]) -> None:
    """The remote holds these messages and what the database says, and git finds it whole."""
    git(settings.archive_git_remote, "fsck", "--strict")
    with remote(settings) as archive, db.connection(settings) as conn:
        assert sorted(set(ids) - set(messages_in(archive))) == []
        assert verify_archive(conn, archive) == {"missing": [], "unexpected": [], "different": [], "foreign": []}


def archive_one(sqs, settings, worker, send, subject: str) -> str:  # noqa: F811
    sent = send(subject)
    cloud.publish_all(settings)
    assert worker(receive(sqs), CONTEXT) == {"batchItemFailures": []}
    return sent


def test_a_cold_worker_fetches_only_the_remote_s_head_and_archives_its_batch_on_it(sqs, settings, worker, send):  # noqa: F811
    ids = [archive_one(sqs, settings, worker, send, f"old {n}") for n in range(6)]
    before = history(settings.archive_git_remote)
    assert len(before) == 6
    shutil.rmtree(settings.archive_work_dir)  # a new container: /tmp is empty

    ids.append(archive_one(sqs, settings, worker, send, "new"))
    after = history(settings.archive_git_remote)
    assert after[1:] == before  # on the remote's head, its history kept
    assert commits_held(settings.archive_work_dir) == {after[0], before[0]}  # the head it fetched, and its own
    with GitArchive(settings.archive_work_dir, bare=True) as clone:
        assert clone.repo.get_shallow() == {before[0].encode()}
        assert clone.commit_count() == 2  # a walk of the clone's history stops where it ends
    archived_well(settings, ids)


def test_a_warm_worker_fetches_only_the_head_other_workers_pushed(sqs, settings, worker, send, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.setattr(gitrepo, "MAINTAIN_EVERY", 1)  # its shallow clone's packs merged after each push
    maintain, merged = GitArchive.maintain, []
    monkeypatch.setattr(GitArchive, "maintain", lambda self, *args: merged.append(maintain(self, *args)) or merged[-1])
    first = archive_one(sqs, settings, worker, send, "first")
    quick, push_one = quicker_worker(settings, tmp_path, 3)  # another container's worker: a commit a message
    while push_one():
        pass
    others = history(settings.archive_git_remote)[:-1]

    second = archive_one(sqs, settings, worker, send, "second")  # the warm worker, its clone kept
    after = history(settings.archive_git_remote)
    assert after[1:-1] == others
    assert commits_held(settings.archive_work_dir) & set(others) == {others[0]}  # the new head only
    assert sum(merged) > 0
    git(settings.archive_work_dir, "fsck", "--strict")  # the clone is whole, as far as it goes
    archived_well(settings, [first, second, *quick])


def test_workers_through_git_s_smart_http_clone_shallow_and_push_what_git_takes(sqs, settings, send, tmp_path):  # noqa: F811
    """As on AWS (a git host over https): dulwich's HTTP client against `git http-backend`."""
    with git_http_server(tmp_path) as url:
        over_http = {name: settings.model_copy(update={"archive_git_remote": f"{url}remote.git", "archive_work_dir": tmp_path / name})
                     for name in ("one", "two")}

        def archive_by(name: str, subject: str) -> str:
            sent = send(subject)
            cloud.publish_all(settings)
            assert cloud.handle_sqs_event(receive(sqs), over_http[name], CONTEXT) == {"batchItemFailures": []}
            return sent

        ids = [archive_by("one", f"old {n}") for n in range(3)]
        head = history(settings.archive_git_remote)[0]
        ids.append(archive_by("two", "cold"))  # a new container
        with GitArchive(tmp_path / "two", bare=True) as clone:
            assert clone.repo.get_shallow() == {head.encode()}
        ids.append(archive_by("one", "warm"))  # after another worker pushed
    assert len(history(settings.archive_git_remote)) == 5
    archived_well(settings, ids)


def seeded(count: int) -> list[dict]:
    """Messages of a project of their own, a second apart, among ten agents: many folders."""
    agents = [f"Agent{n}" for n in range(10)]
    return [{"kind": "message", "project": "seeded", "project_human_key": "/seeded", "id": str(10**6 + n), "thread_id": f"T-{n % 7}",
             "subject": f"seeded {n}", "body_md": "x", "sender": agents[n % 10], "to": [agents[(n + 1) % 10]], "cc": [], "bcc": [],
             "importance": "normal", "ack_required": False, "created_ts": f"2026-01-05T09:{n // 60:02}:{n % 60:02}+00:00"}
            for n in range(count)]


def test_a_push_s_pack_reads_only_the_folders_its_commits_changed(sqs, settings, worker, send, tmp_path, monkeypatch):  # noqa: F811
    """dulwich's pack for a push read every tree of the remote's head (and walked its whole
    history) to find what the remote has: a one-message push's cost grew with the archive.
    GitArchive.pack_data sends the same objects, reading only the trees on the changed paths."""
    with remote(settings) as archive:
        archive.apply(seeded(300))
        head = archive.head()
    sent = send("new")
    cloud.publish_all(settings)
    entries = [json.loads(record["body"])["entry"] for record in receive(sqs)["Records"]]
    with GitArchive(tmp_path / "cold", bare=True) as clone:
        clone.repo.refs[BRANCH] = LocalGitClient().fetch(settings.archive_git_remote, clone.repo, depth=1).refs[BRANCH]
        clone.apply(entries)
        new = clone.head()
        theirs = {obj.sha() for obj in clone.repo.generate_pack_data({head}, {new})[1]}
        reads = []
        store = clone.repo.object_store
        get_raw = store.get_raw
        monkeypatch.setattr(store, "get_raw", lambda sha: reads.append(sha) or get_raw(sha))
        clone.trees.items.clear()  # nothing cached: every tree read counts
        count, records = clone.pack_data({head}, {new})
        ours = {obj.sha() for obj in records}
        assert len(ours) == count and ours == theirs
        every_tree = sum(1 for line in git(tmp_path / "cold", "ls-tree", "-r", "-t", head.decode()).splitlines() if " tree " in line)
        assert len(reads) <= 3 * count and 10 * count < every_tree
        assert LocalGitClient().send_pack(settings.archive_git_remote, lambda refs: {BRANCH: new}, clone.pack_data).ref_status == {}
    git(settings.archive_git_remote, "fsck", "--strict")
    with remote(settings) as archive:
        assert sent in messages_in(archive) and len(messages_in(archive)) == 301


def test_a_shallow_clone_s_history_ends_at_its_shallow_commit(sqs, settings, worker, send, tmp_path):  # noqa: F811
    """`archive restore` from a `git clone --depth 1` of the remote asked first_held when a
    project.json was first written, and went past the clone's history: KeyError."""
    for n in range(3):
        archive_one(sqs, settings, worker, send, f"message {n}")
    subprocess.run(["git", "clone", "-q", "--bare", "--depth", "1", f"file://{settings.archive_git_remote}", str(tmp_path / "shallow")],
                   check=True)
    with GitArchive(tmp_path / "shallow", bare=True) as clone:
        head_time = clone.repo[clone.head()].commit_time
        assert clone.first_held(["projects/cloud/project.json"]) == {"projects/cloud/project.json": head_time}
        assert clone.commit_count() == 1
