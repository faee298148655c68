"""A cold archive worker's clone: how long dulwich takes to fetch a whole archive into an empty
bare repository, as `cloud.push_entries` does at a new Lambda container's first batch.

    .venv/bin/python bench/archive_scale.py --messages 50000 --fill-only --dir /tmp/scale   # an archive to clone
    .venv/bin/python bench/worker_clone.py /tmp/scale/archive.git [--git]

--git: the remote answers with git's own upload-pack (C), as a git host does, so the time is
the worker's side (receiving and indexing the pack in Python); without it dulwich also builds
the pack, in Python, on the remote's side.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dulwich.client import LocalGitClient, SubprocessGitClient  # noqa: E402

from chalicelib.archive.gitrepo import BRANCH, GitArchive  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("remote", type=Path)
    parser.add_argument("--git", action="store_true", help="the remote side is git's upload-pack")
    args = parser.parse_args()
    size = sum(path.stat().st_size for path in args.remote.rglob("*") if path.is_file())
    clone = Path(tempfile.mkdtemp(prefix="worker-clone-"))
    try:
        client = SubprocessGitClient() if args.git else LocalGitClient()
        started = time.perf_counter()
        with GitArchive(clone / "archive", bare=True) as archive:
            head = client.fetch(str(args.remote), archive.repo).refs.get(BRANCH)
            archive.repo.refs[BRANCH] = head
        seconds = time.perf_counter() - started
        print(f"{size / 2**20:.1f} MiB cloned in {seconds:.1f} s ({seconds / (size / 2**20):.2f} s/MiB), head {head.decode()}")
    finally:
        shutil.rmtree(clone)


if __name__ == "__main__":
    main()
