"""A received pack indexed on disk (packindex): the .idx is byte for byte the one `git index-pack`
writes, for packs of offset and of id deltas; a thin pack is made whole from the repository's
objects; a cut or corrupt pack, or a delta on an object neither holds, is refused and nothing is
left in the repository; an archive worker's fetches, cold and warm, go this way, not through
dulwich's in-memory indexer."""

import hashlib
import shutil
import sqlite3
import struct
import subprocess
import zlib
from io import BytesIO
from pathlib import Path

import pytest
from dulwich.client import LocalGitClient
from dulwich.object_store import DiskObjectStore
from dulwich.pack import write_pack_index_v2
from dulwich.repo import Repo

from chalicelib.archive import packindex
from chalicelib.archive.gitrepo import BRANCH, GitArchive

from .test_archive_cloud import quicker_worker, send, settings, sqs, worker  # noqa: F401 (fixtures)
from .test_archive_cloud_shallow import archive_one, archived_well, history


def git(cwd: Path, *args: str, stdin: str | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, input=stdin, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def source(tmp_path) -> Path:
    """A repository of 12 commits, each changing a line of a few long files: git deltifies them."""
    repo = tmp_path / "source"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for commit in range(12):
        for name in ("a.md", "b.md", "c.md"):
            lines = [f"{name} line {n}: the same text as before, kept so that git stores a delta" for n in range(300)]
            lines[commit * 7] = f"changed in commit {commit}"
            (repo / name).write_text("\n".join(lines))
        git(repo, "add", ".")
        git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", f"commit {commit}")
    return repo


def git_pack(repo: Path, out: Path, *options: str) -> tuple[Path, Path]:
    """A pack git writes of the branch, and git's own index of it."""
    name = git(repo, "pack-objects", "--revs", *options, str(out / "pack"), stdin="main\n").strip()
    return out / f"pack-{name}.pack", out / f"pack-{name}.idx"


def thin_pack(repo: Path, out: Path) -> Path:
    """The last commit's objects, delta'd against the one before's, which the pack does not hold."""
    pack = out / "thin.pack"
    with open(pack, "wb") as file:
        subprocess.run(["git", "pack-objects", "--revs", "--thin", "--delta-base-offset", "--stdout"], cwd=repo,
                       input=b"main\n^main~1\n", stdout=file, check=True)
    return pack


def deltas(pack: Path, idx: Path) -> int:
    """How many of the pack's objects are deltas (git verify-pack: a line with a base's id)."""
    return sum(len(line.split()) == 7 for line in git(pack.parent, "verify-pack", "-v", str(idx)).splitlines())


@pytest.mark.parametrize("options", [("--delta-base-offset",), ()], ids=["offset deltas", "id deltas"])
def test_the_index_is_the_one_git_writes(source, tmp_path, options):
    out = tmp_path / "out"
    out.mkdir()
    pack, git_idx = git_pack(source, out, *options)
    assert deltas(pack, git_idx) > 20
    (tmp_path / "scratch").mkdir()
    checksum = packindex.index_pack(pack, tmp_path / "ours.idx", tmp_path / "scratch")
    assert (tmp_path / "ours.idx").read_bytes() == git_idx.read_bytes()
    assert checksum.hex() in pack.name


def test_bases_read_back_from_pages_given_back_resolve_the_same(source, tmp_path, monkeypatch):
    monkeypatch.setattr(packindex, "BASE_CACHE_BYTES", 64)  # every base read back from the pack
    monkeypatch.setattr(packindex, "RELEASE_BYTES", 1)  # the mapping's pages given back after each object
    out = tmp_path / "out"
    out.mkdir()
    pack, git_idx = git_pack(source, out, "--delta-base-offset")
    (tmp_path / "scratch").mkdir()
    packindex.index_pack(pack, tmp_path / "ours.idx", tmp_path / "scratch")
    assert (tmp_path / "ours.idx").read_bytes() == git_idx.read_bytes()


@pytest.mark.parametrize("damage", ["cut", "flipped", "thin"])
def test_a_bad_pack_is_refused_and_leaves_nothing(source, tmp_path, damage):
    out = tmp_path / "out"
    out.mkdir()
    if damage == "thin":
        pack = thin_pack(source, out)
    else:
        pack, _ = git_pack(source, out, "--delta-base-offset")
        data = bytearray(pack.read_bytes())
        if damage == "cut":
            del data[len(data) // 2:]
        else:
            data[len(data) // 2] ^= 0xFF
        pack.write_bytes(bytes(data))
    pack_dir = tmp_path / "clone" / "objects" / "pack"
    pack_dir.mkdir(parents=True)
    incoming = pack_dir / "incoming.part"
    shutil.copy(pack, incoming)
    with pytest.raises(ValueError, match="neither it nor the repository" if damage == "thin" else "cut or corrupt"):
        packindex.install(incoming, pack_dir)
    assert sorted(path.name for path in pack_dir.iterdir()) == ["incoming.part"]  # fetch_into removes it


def test_a_delta_whose_base_is_outside_the_pack_is_refused(tmp_path):
    delta = bytes([6 << 4 | 3, 1]) + zlib.compress(b"abc")  # an offset delta, its base 1 byte back: in the header
    body = b"PACK" + struct.pack(">LL", 2, 1) + delta
    (tmp_path / "crafted.pack").write_bytes(body + hashlib.sha1(body).digest())
    with pytest.raises(ValueError, match="base outside it"):
        packindex.index_pack(tmp_path / "crafted.pack", tmp_path / "crafted.idx", tmp_path)


def test_a_thin_pack_is_made_whole_from_the_repository_s_objects(source, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    pack = thin_pack(source, out)
    (tmp_path / "scratch").mkdir()
    with Repo(str(source)) as repository:
        checksum = packindex.index_pack(pack, tmp_path / "ours.idx", tmp_path / "scratch", repository.object_store)
    assert pack.read_bytes()[-20:] == checksum
    whole = out / f"pack-{checksum.hex()}.pack"
    pack.rename(whole)
    git(out, "index-pack", str(whole))  # git's own index of the pack made whole: every delta resolves in it
    assert (tmp_path / "ours.idx").read_bytes() == whole.with_suffix(".idx").read_bytes()
    assert deltas(whole, whole.with_suffix(".idx")) > 0


def test_fetch_into_an_empty_repository_is_git_s_clone(source, tmp_path):
    with GitArchive(tmp_path / "clone", bare=True) as clone:
        pack_dir = tmp_path / "clone" / "objects" / "pack"
        (pack_dir / "incoming-killed.part").write_bytes(b"PACK")  # what a fetch killed by its timeout left
        (pack_dir / "index-killed").mkdir()
        (pack_dir / "index-killed" / "objects.db").write_bytes(b"")
        result = packindex.fetch_into(LocalGitClient(), str(source / ".git"), clone.repo, depth=1)
        clone.repo.refs[BRANCH] = result.refs[BRANCH]
        assert clone.read("a.md") == (source / "a.md").read_bytes()
        assert clone.repo.get_shallow() == {result.refs[BRANCH]}
        packs = list((tmp_path / "clone" / "objects" / "pack").iterdir())
    assert sorted(path.suffix for path in packs) == [".idx", ".pack"]
    git(tmp_path / "clone", "fsck", "--strict")


def test_a_worker_s_fetches_cold_and_warm_are_indexed_on_disk_not_by_dulwich(sqs, settings, worker, send, monkeypatch,  # noqa: F811
                                                                              tmp_path):
    ids = [archive_one(sqs, settings, worker, send, f"old {n}") for n in range(3)]
    shutil.rmtree(settings.archive_work_dir)  # a new container

    def refused_in_the_clone(add):  # (the remote's store, in this process, takes the push as before)
        def adding(store, *args, **kwargs):
            assert not Path(store.path).is_relative_to(settings.archive_work_dir), "dulwich indexed a worker's pack in memory"
            return add(store, *args, **kwargs)
        return adding
    for name in ("add_thin_pack", "add_pack", "add_pack_data"):
        monkeypatch.setattr(DiskObjectStore, name, refused_in_the_clone(getattr(DiskObjectStore, name)))
    ids.append(archive_one(sqs, settings, worker, send, "new"))  # cold
    quick, push_one = quicker_worker(settings, tmp_path, 2)  # another container's worker (cold too), then warm
    while push_one():
        pass
    ids.append(archive_one(sqs, settings, worker, send, "newer"))  # warm: it fetches the other's commits
    assert len(history(settings.archive_git_remote)) == 3 + 1 + 3 + 1  # old, new, the other's three, newer
    archived_well(settings, ids + quick)


def test_offsets_past_2_gib_go_to_the_table_of_8_byte_ones(tmp_path):
    """As dulwich's writer of the same entries (a 2 GiB pack is too slow to make in a test)."""
    entries = sorted((hashlib.sha1(bytes([n])).digest(), offset, n) for n, offset in enumerate([12, 2**31 - 1, 2**31, 5 * 2**32, 700]))
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE objects (id BLOB, offset INTEGER, crc INTEGER)")
    db.executemany("INSERT INTO objects VALUES (?, ?, ?)", entries)
    checksum = hashlib.sha1(b"pack").digest()
    packindex.write_index(db, tmp_path / "ours.idx", checksum)
    expected = BytesIO()
    write_pack_index_v2(expected, entries, checksum)
    assert (tmp_path / "ours.idx").read_bytes() == expected.getvalue()
