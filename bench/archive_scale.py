"""The git archive's cost per message from 0 to 1,000,000 messages.

    .venv/bin/python bench/archive_scale.py [--messages 1000000] [--rate 1000] [--dir /work/tmp/d2-archive/scale]
    .venv/bin/python bench/archive_scale.py --flat --messages 100000    # the old flat layout, for comparison
    .venv/bin/python bench/archive_scale.py --marks --messages 100000   # each to/cc copy also read, half acknowledged

One project, 22 agents, 500 threads, bodies of 40-200 words, one to three recipients and a
cc now and then; `created_ts` advances `--rate` messages per second (1,000/s: a burst that
never ends, the worst case for a folder per second). Rendered entries go straight into
GitArchive.apply in batches of `--batch` (1,000: the worker's batch when it is behind),
and GitArchive.maintain_if_due runs as the worker runs it. At 10k, 100k, 300k and 1M messages
it measures, over 32 batches of --batch (one repack falls in them) and over 64 one-message
commits (the idle worker's shape):

- commit time and repacking time per message,
- bytes of packs written per message, by commits and by repacking,
- the process's peak RSS over the part (VmHWM, reset before each part) and its RSS after.

Data goes under --dir (deleted first); the repository stays for `git` to look at.
"""

import argparse
import os
import random
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib.archive import gitrepo  # noqa: E402
from chalicelib.archive.gitrepo import MAINTAIN_EVERY, GitArchive  # noqa: E402

AGENTS = [f"{colour}{thing}" for colour in ("Blue", "Green", "Red", "Amber", "Silver", "Violet", "Coral", "Ivory", "Olive", "Teal", "Rust")
          for thing in ("Lake", "Castle")]  # 22
WORDS = ("the build fails on arm64 because the cache key misses the target triple so we rebuild everything "
         "please review the migration and the index on messages created_ts before friday thanks").split()
START = datetime(2026, 1, 5, 9, 0, tzinfo=timezone.utc)


def messages(count: int, rate: float, start: int = 0, marks: bool = False):
    """Message entries `start`..`start + count`, deterministic (seeded by their number); with
    `marks`, each followed by its to and cc recipients' marks (read a minute later, every other
    one acknowledged: the entries mark_message_read and acknowledge_message queue)."""
    for number in range(start, start + count):
        rng = random.Random(number)
        sender, *recipients = rng.sample(AGENTS, 1 + rng.randint(1, 3))
        created = START + timedelta(seconds=number / rate)
        message = {
            "kind": "message", "project": "scale", "project_human_key": "/bench/scale", "id": str(10**15 + number),
            "thread_id": f"T-{rng.randrange(500)}", "subject": f"{rng.choice(WORDS)} {rng.choice(WORDS)} #{number}",
            "body_md": " ".join(rng.choices(WORDS, k=rng.randint(40, 200))), "sender": sender,
            "to": recipients[:-1] or recipients, "cc": recipients[-1:] if len(recipients) > 1 and rng.random() < 0.3 else [],
            "bcc": [], "importance": "normal", "ack_required": False, "created_ts": created.isoformat(),
        }
        yield message
        for index, agent in enumerate(message["to"] + message["cc"] if marks else []):
            read = (created + timedelta(seconds=60)).isoformat()
            mark = {"kind": "mark", "project": "scale", "project_human_key": "/bench/scale", "agent": agent,
                    "message_id": message["id"], "message_created_ts": message["created_ts"], "read_ts": read, "version": "1"}
            yield {**mark, "ack_ts": read, "version": "2"} if (number + index) % 2 else mark


def flatten(files: dict[str, bytes]) -> dict[str, bytes]:
    """The old layout: every message file in its month folder (YYYY/MM/{file})."""
    flat = {}
    for path, content in files.items():
        parts = path.split("/")
        if path.endswith(".md"):
            parts = parts[:-7] + parts[-7:-5] + parts[-1:]  # drop DD/HH/mm/SS
        flat["/".join(parts)] = content
    return {path: content for path, content in flat.items() if not path.endswith("/project.json")}


class Cost:
    """Seconds and bytes written, by commits and by repacking (maintain), since `reset`."""

    def __init__(self) -> None:
        self.reset()
        self.repacking = False

    def reset(self) -> None:
        self.seconds = {"commit": 0.0, "repack": 0.0}
        self.bytes = {"commit": 0, "repack": 0}


COST = Cost()


def counting(add_pack):
    def add(*args, **kwargs):
        final = add_pack(*args, **kwargs)
        COST.bytes["repack" if COST.repacking else "commit"] += os.path.getsize(final + ".pack") + os.path.getsize(final + ".idx")
        return final

    return add


def timed(archive: GitArchive, entries: list[dict]) -> None:
    """What the worker does per batch: apply, then maintain_if_due; timed apart."""
    start = time.perf_counter()
    archive.apply(entries)
    middle = time.perf_counter()
    COST.repacking = True
    archive.maintain_if_due()
    COST.repacking = False
    COST.seconds["commit"] += middle - start
    COST.seconds["repack"] += time.perf_counter() - middle


def pack_bytes(path: Path) -> int:
    pack_dir = path / "objects" / "pack"
    return sum(entry.stat().st_size for entry in os.scandir(pack_dir)) if pack_dir.exists() else 0


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM


def memory_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(archive: GitArchive, batches, count: int) -> str:
    """Apply the batches as the worker does (apply, then maintain_if_due);
    'commit ms, repack ms, commit bytes, repack bytes (per message), peak MB'."""
    reset_peak()
    COST.reset()
    for entries in batches:
        timed(archive, entries)
    return (f"{COST.seconds['commit'] * 1000 / count:>7.3f} {COST.seconds['repack'] * 1000 / count:>7.3f}"
            f" {COST.bytes['commit'] / count:>8,.0f} {COST.bytes['repack'] / count:>8,.0f} {memory_mb('VmHWM'):>5.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=1000.0, help="simulated messages per second")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--fill-batch", type=int, default=2000, help="batch size to reach each checkpoint (faster)")
    parser.add_argument("--dir", type=Path, default=Path("/work/tmp/d2-archive/scale"))
    parser.add_argument("--flat", action="store_true", help="the old layout (flat month folders)")
    parser.add_argument("--marks", action="store_true", help="each to/cc copy read too, every other one acknowledged")
    parser.add_argument("--resume", type=int, default=0, metavar="N",
                        help="go on with the repository in --dir, which holds messages 0..N-1 of an earlier run")
    parser.add_argument("--fill-only", action="store_true", help="fill up to --messages, measure nothing (with --resume:"
                        " a later run measures at that size in a fresh process)")
    args = parser.parse_args()
    if args.flat:
        render = gitrepo.render
        gitrepo.render = lambda entry: flatten(render(entry))
    gitrepo.add_pack = counting(gitrepo.add_pack)
    path = args.dir / ("flat.git" if args.flat else "archive.git")
    if not args.resume:
        shutil.rmtree(path, ignore_errors=True)
    checkpoints = sorted({n for n in (10_000, 100_000, 300_000, 1_000_000) if args.resume <= n <= args.messages} | {args.messages})
    print(f"{'layout: flat month folders' if args.flat else 'layout: per-second folders'}, rate {args.rate:g}/s,"
          f" batches of {args.batch}; repository {path}")
    print("per message: commit ms, repack ms, commit bytes, repack bytes written; peak: VmHWM (MB) over the part."
          f" fill: up to the checkpoint in batches of --fill-batch; batch: the next {MAINTAIN_EVERY} batches of --batch"
          f" (one repack falls in it); single: {2 * MAINTAIN_EVERY} one-message commits")
    head = f"{'ms':>7} {'rep ms':>7} {'bytes':>8} {'rep B':>8} {'peak':>5}"
    print(f"{'messages':>9} | fill {head} | batch {head} | single {head} | {'packs':>5} {'repo MB':>7} {'RSS MB':>6} {'anon MB':>7}")
    written = args.resume
    with GitArchive(path, bare=True) as archive:
        for checkpoint in checkpoints:
            start = written
            filled = measure(archive, fill(args, written, checkpoint), checkpoint - start) if checkpoint > start else "(none)"
            written = max(checkpoint, written)
            if args.fill_only:
                print(f"{written:>9,} | fill {filled} | {archive.pack_count():>5} {pack_bytes(path) / 2**20:>7.0f}", flush=True)
                continue
            window = measure(archive, fill(args, written, written + MAINTAIN_EVERY * args.batch, batch=args.batch),
                             MAINTAIN_EVERY * args.batch)
            written += MAINTAIN_EVERY * args.batch
            singles = measure(archive, fill(args, written, written + 2 * MAINTAIN_EVERY, batch=1), 2 * MAINTAIN_EVERY)
            written += 2 * MAINTAIN_EVERY
            print(f"{checkpoint:>9,} | fill {filled} | batch {window} | single {singles} | {archive.pack_count():>5}"
                  f" {pack_bytes(path) / 2**20:>7.0f} {memory_mb('VmRSS'):>6.0f} {memory_mb('RssAnon'):>7.0f}", flush=True)


def fill(args, start: int, end: int, batch: int | None = None):
    batch = batch or args.fill_batch
    for at in range(start, end, batch):
        yield list(messages(min(batch, end - at), args.rate, at, args.marks))


if __name__ == "__main__":
    main()
