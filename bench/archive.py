"""Git archive throughput, pygit2 against dulwich, and send latency with the archive on and off.

    .venv/bin/python bench/archive.py [--messages 1000] [--sends 2000]

1. The same 1,000 rendered message entries (each: canonical file, outbox copy, two inbox
   copies) written into a fresh repository, once as one batch (one commit) and once in
   batches of 100, with pygit2 (chalicelib/archive/gitrepo.py, what the worker uses) and
   with dulwich (the same tree-building written against dulwich's object store).
2. The whole local path: N sends in-process (invoke.call), then `drain` into a repository.
3. Send latency in-process (invoke.call send_message, sequential), median and p99, with
   ARCHIVE_ENABLED off (no outbox row), on without a worker (the outbox row alone), and on
   with the worker thread draining into git at the same time.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib import clock  # noqa: E402
from chalicelib.archive.render import render  # noqa: E402


def entries(n: int) -> list[dict]:
    now = clock.now()
    return [
        {"kind": "message", "project": "bench", "id": str(10**15 + i), "thread_id": str(i), "subject": f"Subject number {i}",
         "body_md": "Some *markdown* body.\n" * 20, "sender": "BlueLake", "to": ["GreenCastle"], "cc": ["RedStone"],
         "bcc": [], "importance": "normal", "ack_required": False, "created_ts": now}
        for i in range(n)
    ]


def with_pygit2(path: Path, batches: list[list[dict]]) -> None:
    """The same writer against libgit2: blobs, an in-memory index on the head's tree, a commit."""
    import pygit2

    repo = pygit2.init_repository(str(path), bare=True, initial_head="main")
    for batch in batches:
        parent = None if repo.head_is_unborn else repo.head.peel(pygit2.Commit)
        index = pygit2.Index()
        if parent is not None:
            index.read_tree(parent.tree)
        blobs = {}
        for entry in batch:
            for name, content in render(entry).items():
                if content not in blobs:  # copies share one blob, as in gitrepo.py
                    blobs[content] = repo.create_blob(content)  # libgit2 writes each as a loose object
                index.add(pygit2.IndexEntry(name, blobs[content], pygit2.enums.FileMode.BLOB))
        signature = pygit2.Signature("Agent Mail", "agent-mail@localhost")
        repo.create_commit("refs/heads/main", signature, signature, "archive batch\n", index.write_tree(repo),
                           [parent.id] if parent is not None else [])


def with_dulwich(path: Path, batches: list[list[dict]], worktree: bool = False) -> None:
    from chalicelib.archive.gitrepo import GitArchive

    with GitArchive(path, bare=not worktree) as archive:
        for batch in batches:
            archive.apply(batch)


def libraries(n: int) -> None:
    data = entries(n)
    print(f"1. {n} messages ({4 * n} files) into a fresh repository")
    for label, size in (("one batch", n), ("batches of 100", 100)):
        batches = [data[i : i + size] for i in range(0, n, size)]
        writers = (("pygit2", with_pygit2), ("dulwich", with_dulwich),
                   ("dulwich + worktree", lambda path, batches: with_dulwich(path, batches, worktree=True)))
        for name, write in writers:
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                write(Path(tmp) / "repo.git", batches)
                seconds = time.perf_counter() - start
            print(f"   {name:<19} {label:<15} {seconds * 1000:8.0f} ms  {n / seconds:8.0f} messages/s")


def setup(tmp: str, enabled: bool):
    os.environ["ARCHIVE_ENABLED"] = "true" if enabled else "false"
    from chalicelib import config, invoke
    from chalicelib.tools import tools_by_name

    config.get_settings.cache_clear()
    settings = config.Settings(database_url=f"sqlite:///{tmp}/db.sqlite", archive_dir=Path(tmp) / "archive")
    tools = tools_by_name()

    def call(tool_name, /, **args):
        return invoke.call(tools[tool_name], args, settings)

    call("ensure_project", human_key="/bench")
    for name in ("BlueLake", "GreenCastle", "RedStone"):
        call("register_agent", project_key="bench", program="p", model="m", name=name)
        call("set_contact_policy", project_key="bench", agent_name=name, policy="open")
    return settings, call


def send(call, i: int) -> float:
    start = time.perf_counter()
    call("send_message", project_key="bench", sender_name="BlueLake", to=["GreenCastle"], cc=["RedStone"],
         subject=f"Subject number {i}", body_md="Some *markdown* body.\n" * 20)
    return time.perf_counter() - start


def end_to_end(n: int) -> None:
    from chalicelib.archive.gitrepo import GitArchive
    from chalicelib.archive.worker import drain

    with tempfile.TemporaryDirectory() as tmp:
        settings, call = setup(tmp, enabled=True)
        for i in range(n):
            send(call, i)
        start = time.perf_counter()
        with GitArchive.local(settings) as archive:
            archived = drain(settings, archive)
            seconds = time.perf_counter() - start
            commits = archive.commit_count()
    print(f"2. drain of {archived} outbox entries ({n} messages) into ARCHIVE_DIR (bare): {seconds * 1000:.0f} ms,"
          f" {n / seconds:.0f} messages/s, {commits} commits")


def latency(n: int) -> None:
    from chalicelib.archive.worker import LocalWorker

    print(f"3. send_message latency in-process, {n} sequential sends (after 200 warm-up)")
    for enabled, with_worker in ((False, False), (True, False), (True, True)):
        with tempfile.TemporaryDirectory() as tmp:
            settings, call = setup(tmp, enabled)
            worker = LocalWorker(settings) if with_worker else None
            if worker:
                worker.start()
            for i in range(200):
                send(call, i)
            times = sorted(send(call, i) for i in range(n))
            if worker:
                worker.stop()
        label = f"ARCHIVE_ENABLED={str(enabled).lower()}" + (", worker draining meanwhile" if with_worker else "")
        print(f"   {label:<50} median {statistics.median(times) * 1000:.3f} ms"
              f"  p99 {times[int(len(times) * 0.99)] * 1000:.3f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--sends", type=int, default=2000)
    args = parser.parse_args()
    libraries(args.messages)
    end_to_end(args.messages)
    latency(args.sends)
