"""The archive worker as a real process: through the real server under concurrent sends, and
killed with SIGKILL in the middle of a drain."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from chalicelib import invoke
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.worker import IdleCPU
from chalicelib.config import Settings
from chalicelib.tools import tools_by_name

from .servers import ROOT, running_server

TOOLS = tools_by_name()
SENDERS = 25
PER_SENDER = 20


def cli(database, archive_dir, *args, **env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "chalicelib", "--database-url", f"sqlite:///{database}", *args],
        cwd=ROOT, env={**os.environ, "ARCHIVE_DIR": str(archive_dir), **env}, capture_output=True, text=True, timeout=120,
    )


def canonical(files: dict) -> dict:
    return {path: content for path, content in files.items() if path.split("/")[2] == "messages"}


def test_500_concurrent_sends_through_the_server_are_archived_in_few_commits(tmp_path):
    database, archive_dir = tmp_path / "agent_mail.db", tmp_path / "archive"
    with running_server(database, ARCHIVE_DIR=str(archive_dir)) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            client.post("/api/ensure_project", json={"human_key": "/load"}).raise_for_status()
            for name in [f"Sender{i}" for i in range(SENDERS)] + ["InboxOne", "InboxTwo"]:
                client.post("/api/register_agent", json={"project_key": "load", "program": "p", "model": "m", "name": name})
            for name in ("InboxOne", "InboxTwo"):
                client.post("/api/set_contact_policy", json={"project_key": "load", "agent_name": name, "policy": "open"})

        def sender(i: int) -> list[str]:
            with httpx.Client(base_url=url, timeout=30) as client:
                return [
                    client.post("/api/send_message", json={
                        "project_key": "load", "sender_name": f"Sender{i}", "to": ["InboxOne"], "cc": ["InboxTwo"],
                        "subject": f"s{i}-{n}", "body_md": "payload"}).raise_for_status().json()["message"]["id"]
                    for n in range(PER_SENDER)
                ]

        with ThreadPoolExecutor(SENDERS) as pool:
            acknowledged = {mid for ids in pool.map(sender, range(SENDERS)) for mid in ids}

        deadline = time.monotonic() + 60
        while (status := httpx.get(f"{url}/api/archive_status").json())["pending"]:
            assert time.monotonic() < deadline, f"the archive did not catch up: {status}"
            time.sleep(0.1)
        assert status["failed"] == 0 and status["last_commit"]

    assert len(acknowledged) == SENDERS * PER_SENDER
    with GitArchive(archive_dir, bare=True) as archive:
        files, commits = archive.files(), archive.commit_count()
    messages = canonical(files)
    assert {path.rsplit("__", 1)[1].removesuffix(".md") for path in messages} == acknowledged
    for box in ("agents/InboxOne/inbox", "agents/InboxTwo/inbox"):
        assert sorted(p.rsplit("/", 1)[1] for p in files if f"/{box}/" in p) == sorted(p.rsplit("/", 1)[1] for p in messages)
    for i in range(SENDERS):
        assert sum(f"/agents/Sender{i}/outbox/" in path for path in files) == PER_SENDER
    assert commits < len(acknowledged) / 5, commits  # batched: far fewer commits than messages
    verified = cli(database, archive_dir, "archive", "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr


def crash_project(settings: Settings):
    """Project /crash, BlueLake writing to GreenCastle (open); a function calling its tools."""

    def call(tool, **args):
        return invoke.call(TOOLS[tool], args, settings)

    call("ensure_project", human_key="/crash")
    for name in ("BlueLake", "GreenCastle"):
        call("register_agent", project_key="crash", program="p", model="m", name=name)
    call("set_contact_policy", project_key="crash", agent_name="GreenCastle", policy="open")
    return call


def test_a_drain_killed_mid_batch_loses_nothing_and_writes_nothing_twice(tmp_path):
    database, archive_dir = tmp_path / "agent_mail.db", tmp_path / "archive"
    settings = Settings(database_url=f"sqlite:///{database}", sqlite_synchronous="NORMAL")
    call = crash_project(settings)
    total = 1500
    for n in range(total):
        call("send_message", project_key="crash", sender_name="BlueLake", to=["GreenCastle"], subject=f"m{n}", body_md="x")

    drainer = subprocess.Popen(
        [sys.executable, "-m", "chalicelib", "--database-url", f"sqlite:///{database}", "archive", "drain"],
        cwd=ROOT, env={**os.environ, "ARCHIVE_DIR": str(archive_dir), "ARCHIVE_BATCH_SIZE": "50"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        with sqlite3.connect(database) as db:
            deadline = time.monotonic() + 60
            while not db.execute("SELECT count(*) FROM archive_outbox WHERE state = 'done'").fetchone()[0]:
                assert drainer.poll() is None and time.monotonic() < deadline, "the drain ended before it could be killed"
                time.sleep(0.005)
    finally:
        drainer.send_signal(signal.SIGKILL)
        drainer.wait()
    with sqlite3.connect(database) as db:
        done_before = db.execute("SELECT count(*) FROM archive_outbox WHERE state = 'done'").fetchone()[0]
    assert 0 < done_before < total + 2, "killed after the drain had finished: nothing was tested"

    restarted = cli(database, archive_dir, "archive", "drain", ARCHIVE_BATCH_SIZE="50")
    assert restarted.returncode == 0, restarted.stderr

    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM archive_outbox WHERE state != 'done'").fetchone()[0] == 0
    with GitArchive(archive_dir, bare=True) as archive:
        messages, commits = canonical(archive.files()), archive.commit_count()
        # Every commit changed something: a batch applied again after the kill made no commit.
        trees = [archive.repo[c.commit.id].tree for c in archive.repo.get_walker(include=[archive.head()])]
    assert len(messages) == total and len(set(trees)) == len(trees)
    assert commits <= (total + 2) // 50 + 1
    subprocess.run(["git", "-C", str(archive_dir), "fsck", "--strict"], check=True, capture_output=True)
    verified = cli(database, archive_dir, "archive", "verify")
    assert verified.returncode == 0, verified.stdout
    assert json.loads(verified.stdout) == {"missing": [], "unexpected": [], "different": [], "foreign": []}


def test_a_stopping_worker_lifts_its_git_thread_to_normal_priority():
    """Git's work runs on idle CPU only; under a full load that can be never. A worker told to
    stop (or whose server died) must not wait for idle CPU to finish the commit under way."""
    def commit_under_full_load() -> int:  # waits as a starved thread would, until it is lifted
        deadline = time.monotonic() + 10
        while os.sched_getscheduler(0) == os.SCHED_IDLE and time.monotonic() < deadline:
            time.sleep(0.01)
        return os.sched_getscheduler(0)

    stopping = threading.Event()
    with IdleCPU() as idle_cpu:
        assert idle_cpu.run(stopping, os.sched_getscheduler, 0) == os.SCHED_IDLE
        threading.Timer(0.3, stopping.set).start()
        assert idle_cpu.run(stopping, commit_under_full_load) == os.SCHED_OTHER


def test_a_worker_that_takes_the_lock_beats_before_its_idle_cpu_work(tmp_path, monkeypatch):
    """The layout check runs on idle CPU, which a fully loaded machine may not give for a long
    while (a standby that took over after kill -9 then showed no heartbeat for over 60 s in a
    full test run). The worker shows itself first."""
    from chalicelib.archive import migrate, worker
    from chalicelib.store import heartbeats
    from chalicelib.store.db import connection

    starved, stopping = threading.Event(), threading.Event()

    def layout_check_without_idle_cpu(archive) -> int:
        starved.wait(30)
        return 0

    monkeypatch.setattr(migrate, "migrate_layout", layout_check_without_idle_cpu)
    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", archive_dir=tmp_path / "archive")
    running = threading.Thread(target=worker.work, args=(settings, stopping))
    running.start()
    try:
        deadline = time.monotonic() + 10
        beat = None
        while beat is None and time.monotonic() < deadline:
            with connection(settings) as conn:
                beat = heartbeats.last(conn, heartbeats.ARCHIVE_WORKER)
            time.sleep(0.05)
        assert beat is not None and beat["pid"] == os.getpid() and not starved.is_set()
    finally:
        stopping.set()
        starved.set()
        running.join(30)
    assert not running.is_alive()


def test_a_drain_killed_between_its_commit_and_the_working_tree_leaves_no_file_missing(tmp_path):
    """ARCHIVE_WORKTREE=true (QA, session 31): a writer killed after moving the branch but before
    writing the files left them out of the working tree and the index for good (the next drain
    applied the same rows, changed no tree, and so wrote nothing): `git status` showed them
    deleted, and a `git commit` there would have deleted them. The next writer checks them out."""
    database, archive_dir = tmp_path / "agent_mail.db", tmp_path / "archive"
    settings = Settings(database_url=f"sqlite:///{database}", archive_dir=archive_dir, archive_worktree=True)
    call = crash_project(settings)
    assert cli(database, archive_dir, "archive", "drain", ARCHIVE_WORKTREE="true").returncode == 0
    call("send_message", project_key="crash", sender_name="BlueLake", to=["GreenCastle"], subject="killed", body_md="x")
    killed_after_the_commit = (
        "import os, signal, sys\n"
        "from chalicelib.archive import gitrepo\n"
        "gitrepo.GitArchive.write_worktree = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from chalicelib.transports.cli import cli\n"
        f"cli(['--database-url', 'sqlite:///{database}', 'archive', 'drain'])\n"
    )
    killed = subprocess.run([sys.executable, "-c", killed_after_the_commit], cwd=ROOT, capture_output=True, check=False,
                            env={**os.environ, "ARCHIVE_DIR": str(archive_dir), "ARCHIVE_WORKTREE": "true"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr

    def status() -> list[str]:
        return subprocess.run(["git", "-C", str(archive_dir), "status", "--porcelain"], check=True, capture_output=True,
                              text=True).stdout.splitlines()

    assert len(status()) == 3 and all(line.startswith("D  ") for line in status())  # canonical, outbox, inbox
    (archive_dir / "notes.md").write_text("a person's notes, staged\n")  # (session 32: a hard reset deleted them)
    notes = archive_dir / "projects" / "crash" / "NOTES.md"  # and in the archive's own folder (so did the fix)
    notes.write_text("review notes, staged\n")
    subprocess.run(["git", "-C", str(archive_dir), "add", "notes.md", "projects/crash/NOTES.md"], check=True)
    drained = cli(database, archive_dir, "archive", "drain", ARCHIVE_WORKTREE="true")
    assert drained.returncode == 0 and "checked out again" in drained.stderr, drained.stderr
    assert status() == ["A  notes.md", "A  projects/crash/NOTES.md"]  # what the archive never wrote is left as it was
    assert (archive_dir / "notes.md").read_text() == "a person's notes, staged\n" and notes.read_text() == "review notes, staged\n"
    with GitArchive(archive_dir) as archive:
        assert archive.sync_worktree() is False  # nothing of the archive's to write: no warning at each start
    subprocess.run(["git", "-C", str(archive_dir), "rm", "-q", "--cached", "notes.md", "projects/crash/NOTES.md"], check=True)
    (archive_dir / "notes.md").unlink()
    notes.unlink()
    with GitArchive(archive_dir) as archive:
        assert all((archive_dir / path).read_bytes() == content for path, content in archive.files().items())
        assert archive.sync_worktree() is False  # in step: no checkout
    assert cli(database, archive_dir, "archive", "verify").returncode == 0


def git(repo, *args) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def test_an_archive_dir_that_is_a_code_repository_or_someones_files_is_refused_and_left_as_it_was(tmp_path):
    """QA, session 32: ARCHIVE_DIR set to a code repository (a typo, ARCHIVE_DIR=.) got the mail
    committed onto its main branch and projects/ written among its files, and the next writer's
    hard reset deleted the staged work and reverted the edits. A directory of files that was no
    repository was `git init`-ed. Every writer (and the server, at start) now refuses both in a
    line naming ARCHIVE_DIR; an archive, an empty repository or an empty directory are fine."""
    database = tmp_path / "agent_mail.db"
    crash_project(Settings(database_url=f"sqlite:///{database}", archive_dir=tmp_path / "archive"))
    code = tmp_path / "code"
    code.mkdir()
    git(code, "init", "-q", "-b", "main")
    (code / "app.py").write_text("print('v1')\n")
    git(code, "add", "app.py")
    git(code, "-c", "user.email=dev@example.com", "-c", "user.name=dev", "commit", "-qm", "the user's work")
    (code / "app.py").write_text("print('v2, not committed')\n")
    (code / "notes.md").write_text("staged\n")
    git(code, "add", "notes.md")
    before = (git(code, "log", "--format=%H"), git(code, "status", "--porcelain"), sorted(os.listdir(code)))
    files = tmp_path / "files"
    files.mkdir()
    (files / "readme.txt").write_text("someone's folder\n")
    for directory in (code, files):
        for command in (["archive", "drain"], ["archive", "rebuild"], ["archive", "migrate"], ["archive", "verify"],
                        ["serve", "--host", "127.0.0.1", "--port", "22000"]):
            refused = cli(database, directory, *command)
            assert refused.returncode == 1 and "Traceback" not in refused.stderr, (command, refused.stderr)
            assert f"ARCHIVE_DIR {directory} is not an Agent Mail archive" in refused.stderr, (command, refused.stderr)
    assert (git(code, "log", "--format=%H"), git(code, "status", "--porcelain"), sorted(os.listdir(code))) == before
    assert (code / "app.py").read_text() == "print('v2, not committed')\n"
    assert sorted(os.listdir(files)) == ["readme.txt"]
    worker = cli(database, code, "archive", "work")  # a stdio session's worker: one line in its log
    assert worker.returncode == 1 and "Traceback" not in worker.stderr
    assert f"the archive worker stopped: ARCHIVE_DIR {code} is not an Agent Mail archive" in worker.stderr, worker.stderr
    doctor = cli(database, code, "doctor")
    assert f"ARCHIVE_DIR {code} is not an Agent Mail archive" in doctor.stdout and "Traceback" not in doctor.stderr
    volume = tmp_path / "volume"  # a new file system mounted there holds lost+found only
    (volume / "lost+found").mkdir(parents=True)
    assert cli(database, volume, "archive", "rebuild").returncode == 0 and (volume / "lost+found").is_dir()
    empty = tmp_path / "empty"
    git(tmp_path, "init", "-q", "--bare", str(empty))  # an empty repository becomes the archive
    assert cli(database, empty, "archive", "drain").returncode == 0
    assert cli(database, empty, "archive", "drain").returncode == 0  # and opens again as one
    assert cli(database, empty, "archive", "verify").returncode == 0
    forged = tmp_path / "forged"  # a remote made on a forge "with a README": notes beside the archive are fine
    git(tmp_path, "init", "-q", "-b", "main", str(forged))
    for note in ("README.md", "LICENSE", ".gitignore"):
        (forged / note).write_text("x\n")
    git(forged, "add", "-A")
    git(forged, "-c", "user.email=dev@example.com", "-c", "user.name=dev", "commit", "-qm", "Initial commit")
    assert cli(database, forged, "archive", "rebuild").returncode == 0  # (the outbox went to the empty one)
    assert cli(database, forged, "archive", "verify").returncode == 0 and (forged / "README.md").read_text() == "x\n"
    assert git(forged, "status", "--porcelain") == ""
    (forged / "README.md").write_text("edited, not committed\n")  # a writer's start leaves a person's edit alone
    started = cli(database, forged, "archive", "drain")
    assert started.returncode == 0 and "checked out again" not in started.stderr, started.stderr
    assert (forged / "README.md").read_text() == "edited, not committed\n"
