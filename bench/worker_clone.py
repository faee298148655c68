"""A cold archive worker's start: fetching the archive into an empty bare repository, as
`cloud.push_entries` does at a new Lambda container's first batch, then one new message's commit
and the pack its push sends.

    .venv/bin/python bench/archive_scale.py --messages 50000 --fill-only --fill-batch 10 --dir /tmp/a50k   # an archive
    .venv/bin/python bench/worker_clone.py /tmp/a10k/archive.git /tmp/a50k/archive.git [--git]

For each remote, each way in a process of its own: "whole" (the worker before session 37: the
whole history), "shallow" (depth 1, the worker of sessions 37-38: dulwich indexes the pack in
memory) and "indexed" (depth 1, the pack indexed on disk: packindex.fetch_into, the worker now).
Printed: the fetch's seconds, the clone's bytes on disk (/tmp on Lambda), the process's peak RSS
over the fetch (VmHWM, reset after the imports: it counts the pack's mapped pages, which the
kernel can drop) and its peak anonymous memory (sampled every 20 ms: what the process holds), and
the push pack's seconds (finding and writing its objects), objects and bytes, with dulwich's
generate_pack_data (the worker before) and GitArchive.pack_data (now).

--git: the remote answers with git's own upload-pack (C), as a git host does, so the time is
the worker's side (receiving and indexing the pack in Python); without it dulwich also builds
the pack, in Python, on the remote's side.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dulwich.client import LocalGitClient, SubprocessGitClient  # noqa: E402
from dulwich.pack import write_pack_data  # noqa: E402

from bench.archive_scale import memory_mb, messages, reset_peak  # noqa: E402
from chalicelib.archive.gitrepo import BRANCH, GitArchive  # noqa: E402
from chalicelib.archive.packindex import fetch_into  # noqa: E402

WAYS = ("whole", "shallow", "indexed")
NEW_MESSAGE = 10**6  # the new message's number: after every message of the archives above


def size_of(path: Path) -> int:
    return sum(item.stat().st_size for item in path.rglob("*") if item.is_file())


def cold_start(remote: Path, way: str, git: bool) -> dict:
    """One cold worker's start, in this process."""
    clone = Path(tempfile.mkdtemp(prefix="worker-clone-"))
    try:
        client = SubprocessGitClient() if git else LocalGitClient()
        reset_peak()
        anonymous = AnonymousPeak()
        started = time.perf_counter()
        with GitArchive(clone / "archive", bare=True) as archive:
            if way == "indexed":
                head = fetch_into(client, str(remote), archive.repo, depth=1).refs.get(BRANCH)
            else:
                head = client.fetch(str(remote), archive.repo, depth=1 if way == "shallow" else None).refs.get(BRANCH)
            archive.repo.refs[BRANCH] = head
            fetch_seconds, peak, peak_anonymous = time.perf_counter() - started, memory_mb("VmHWM"), anonymous.stop()
            disk = size_of(clone)
            archive.apply(list(messages(1, 1000.0, NEW_MESSAGE)))
            have, want = {head}, {archive.head()}
            packs = {how: pack(archive, how, have, want) for how in ("dulwich", "ours")}
        return {"fetch_s": fetch_seconds, "disk": disk, "peak_mb": peak, "anonymous_mb": peak_anonymous, **packs}
    finally:
        shutil.rmtree(clone)


class AnonymousPeak:
    """The process's highest RssAnon, sampled every 20 ms until stop()."""

    def __init__(self) -> None:
        self.peak, self.stopped = memory_mb("RssAnon"), threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while not self.stopped.wait(0.02):
            self.peak = max(self.peak, memory_mb("RssAnon"))

    def stop(self) -> float:
        self.stopped.set()
        self.thread.join()
        return self.peak


def pack(archive: GitArchive, way: str, have: set, want: set) -> tuple[float, int, int]:
    """The push's pack, written as send_pack writes it (to nowhere): (seconds, objects, bytes)."""
    started = time.perf_counter()
    count, records = (archive.pack_data if way == "ours" else archive.repo.generate_pack_data)(have, want)
    written = []
    write_pack_data(lambda data: written.append(len(data)), records, num_records=count,
                    object_format=archive.repo.object_store.object_format)
    return time.perf_counter() - started, count, sum(written)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("remotes", type=Path, nargs="+")
    parser.add_argument("--git", action="store_true", help="the remote side is git's upload-pack")
    parser.add_argument("--ways", default="whole,shallow,indexed", help="of whole, shallow, indexed")
    parser.add_argument("--one", choices=WAYS, help=argparse.SUPPRESS)  # a child process's part
    args = parser.parse_args()
    if args.one:
        print(json.dumps(cold_start(args.remotes[0], args.one, args.git)))
        return
    print("remote | fetch | fetch s | clone MiB | peak RSS MB | peak anonymous MB | push pack s: dulwich's, pack_data's (objects, KiB)")
    for remote in args.remotes:
        commits = subprocess.run(["git", "--git-dir", str(remote), "rev-list", "--count", "main"],
                                 capture_output=True, text=True).stdout.strip()
        for way in args.ways.split(","):
            child = subprocess.run([sys.executable, __file__, str(remote), "--one", way, *(["--git"] if args.git else [])],
                                   capture_output=True, text=True, check=True)
            row = json.loads(child.stdout.splitlines()[-1])
            dulwich, ours = row["dulwich"], row["ours"]
            print(f"{remote}: {size_of(remote) / 2**20:.1f} MiB, {commits} commits | {way} | {row['fetch_s']:.1f}"
                  f" | {row['disk'] / 2**20:.1f} | {row['peak_mb']:.0f} | {row['anonymous_mb']:.0f} | {dulwich[0]:.2f} ({dulwich[1]}, {dulwich[2] / 1024:.1f}),"
                  f" {ours[0]:.3f} ({ours[1]}, {ours[2] / 1024:.1f})", flush=True)

if __name__ == "__main__":
    main()
