"""A fetch whose pack is indexed on disk, in memory bounded whatever the pack's size.

dulwich indexes a pack it receives in memory: a tuple for each object and its pending deltas,
~320 bytes an object. A cold archive worker fetches the head of the whole archive (~1.2 objects a
message): ~400 MB of a 512 MB function at 1,000,000 messages (bench/README.md). Here the pack is written to a
file as it arrives and read once in pack order: each object's (id, offset, crc32) goes to an SQLite
file beside it, a delta's base is read back from the pack (the last BASE_CACHE_BYTES of resolved
objects kept), and the .idx (version 2, as `git index-pack` writes it) is written from that file in
id order. A thin pack (a warm worker's fetch: deltas on objects it has) is made whole first, as
`git index-pack --fix-thin` does.
"""

import hashlib
import mmap
import os
import shutil
import sqlite3
import struct
import tempfile
import zlib
from collections import OrderedDict
from contextlib import closing
from pathlib import Path

from dulwich.object_format import SHA1
from dulwich.objects import object_header
from dulwich.pack import OFS_DELTA, REF_DELTA, apply_delta, extend_pack, read_pack_header_at, unpack_object_at

BASE_CACHE_BYTES = 8 * 2**20  # resolved objects kept for the deltas after them (git's core.deltaBaseCacheLimit: 96 MB)
ROWS_A_WRITE = 10_000  # index rows written to SQLite at once
RELEASE_BYTES = 16 * 2**20  # the mapping's pages read past are given back this often
CACHE_KIB = 8 * 1024  # SQLite's page cache; its sort spills to temporary files past it
HASH_SIZE = 20  # the archive's ids are SHA-1


class UnresolvedDeltas(ValueError):
    """A delta whose base is neither in the pack nor in the repository it is for."""


def fetch_into(client, remote_path: str, repo, depth: int | None = None):
    """`client.fetch(remote_path, repo, depth=depth)`, the pack indexed on disk (index_pack); the
    FetchPackResult. A failed fetch leaves nothing behind; one killed (a Lambda timeout), nothing
    after the next (a container runs one invocation at a time)."""
    pack_dir = Path(repo.object_store.pack_dir)
    for leftover in pack_dir.glob("incoming-*.part"):  # a fetch killed by its timeout
        leftover.unlink()
    for leftover in pack_dir.glob("index-*"):
        shutil.rmtree(leftover)
    fd, incoming = tempfile.mkstemp(dir=pack_dir, prefix="incoming-", suffix=".part")  # not a .pack: no reader takes it
    try:
        with os.fdopen(fd, "wb") as out:
            result = client.fetch_pack(remote_path, repo.object_store.determine_wants_all, repo.get_graph_walker(), out.write,
                                       depth=depth)
        if (result.object_format or SHA1.name) != SHA1.name:
            raise ValueError(f"the remote's objects are named by {result.object_format}: the archive's by SHA-1")
        if os.path.getsize(incoming):
            install(Path(incoming), pack_dir, repo.object_store)
    finally:
        Path(incoming).unlink(missing_ok=True)
    repo.update_shallow(result.new_shallow, result.new_unshallow)
    return result


def install(incoming: Path, pack_dir: Path, repository=None) -> Path:
    """Move a received pack into the pack folder with its index (written last: a pack is read
    once its .idx is there); the pack's path. `repository`: the object store of a thin pack's bases."""
    with tempfile.TemporaryDirectory(dir=pack_dir, prefix="index-") as scratch:
        idx = Path(scratch) / "pack.idx"
        checksum = index_pack(incoming, idx, Path(scratch), repository)
        name = pack_dir / f"pack-{checksum.hex()}"
        for path in (incoming, idx):
            os.chmod(path, 0o444)  # as git leaves a pack
        os.replace(incoming, name.with_suffix(".pack"))
        os.replace(idx, name.with_suffix(".idx"))
    return name.with_suffix(".pack")


def index_pack(pack: Path, idx: Path, scratch: Path, repository=None) -> bytes:
    """Write `idx`, the version 2 index of `pack`, using `scratch` for its rows; the pack's
    checksum. A thin pack's deltas on objects of `repository` (an object store) are resolved from
    it, and those objects appended to the pack (as `git index-pack --fix-thin`). Raises ValueError
    for a pack that is cut, corrupt, or holds a delta on an object neither holds."""
    with open(pack, "r+b") as file, closing(sqlite3.connect(scratch / "objects.db", isolation_level=None)) as db:
        checksum = verified_checksum(file)
        db.executescript(f"""PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA cache_size = -{CACHE_KIB};
            PRAGMA temp_store = FILE; CREATE TABLE objects (id BLOB NOT NULL, offset INTEGER NOT NULL, crc INTEGER NOT NULL);
            CREATE TABLE waiting (offset INTEGER NOT NULL)""")
        db.execute("BEGIN")  # one transaction for all (a scratch file: never committed): in autocommit each insert took 20 µs
        with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as contents:
            outside = Resolver(contents, db, repository).run()
        if outside:
            checksum, added = extend_pack(file, outside, repository.get_raw, SHA1)
            db.executemany("INSERT INTO objects VALUES (?, ?, ?)", added)
        write_index(db, idx, checksum)
    return checksum


def verified_checksum(file) -> bytes:
    """The pack's trailing checksum, once the bytes before it hash to it (read, not mapped: the
    mapping's pages would all count in the process's memory)."""
    size = os.fstat(file.fileno()).st_size
    if size < 12 + HASH_SIZE:
        raise ValueError("not a pack: too short")
    digest, left = hashlib.sha1(), size - HASH_SIZE
    file.seek(0)
    while left:
        chunk = file.read(min(left, 2**20))
        digest.update(chunk)
        left -= len(chunk)
    if digest.digest() != (checksum := file.read(HASH_SIZE)):
        raise ValueError("the pack's checksum does not match its contents: it is cut or corrupt")
    return checksum


class Resolver:
    """Reads a pack's objects in order, resolving each delta from its base: in the pack, or for a
    thin pack's, in the repository (its id kept: the pack is made whole with it)."""

    def __init__(self, contents, db: sqlite3.Connection, repository=None) -> None:
        self.contents, self.db, self.repository = contents, db, repository
        self.cache: OrderedDict[int, tuple[int, bytes]] = OrderedDict()  # offset -> (type, raw), last used last
        self.cached_bytes = 0
        self.rows: list[tuple[bytes, int, int]] = []
        self.released = 0  # the mapping's pages before this are given back
        self.by_id = False  # REF_DELTA bases looked up by id: only once every other object is in
        self.outside: set[bytes] = set()  # ids of the repository's objects that deltas of the pack are on

    def run(self) -> set[bytes]:
        """Every object's row; the ids of the bases outside the pack it needs (a thin pack's)."""
        version, count = read_pack_header_at(self.contents)
        if version not in (2, 3):
            raise ValueError(f"pack version {version}: not one git writes")
        offset, end = 12, len(self.contents) - HASH_SIZE
        for _ in range(count):
            if offset >= end:
                raise ValueError("the pack ends before its last object")
            unpacked, following = unpack_object_at(self.contents, offset, hashlib.sha1)
            try:
                self.add(offset, following, self.resolved(offset, unpacked))
            except LookupError:  # a REF_DELTA's base, which may come later in the pack
                self.db.execute("INSERT INTO waiting VALUES (?)", (offset,))
            offset = following
            self.release(offset)
        if offset != end:
            raise ValueError("the pack holds more than its header counts")
        self.flush()
        self.resolve_waiting()
        return {object_id for object_id in self.outside if self.offset_of(object_id) is None}  # (in it too: not added)

    def release(self, read_to: int) -> None:
        """Give back the mapping's pages before `read_to`: the pass reads the pack once in order,
        and its pages would otherwise all count in the process's memory (a base read again is
        mapped again)."""
        if read_to - self.released >= RELEASE_BYTES:
            end = read_to - read_to % mmap.PAGESIZE
            self.contents.madvise(mmap.MADV_DONTNEED, self.released, end - self.released)
            self.released = end

    def resolve_waiting(self) -> None:
        """The REF_DELTA objects, by their bases' ids, until none is left or none can be."""
        waiting = [row[0] for row in self.db.execute("SELECT offset FROM waiting ORDER BY offset")]
        if not waiting:
            return
        self.db.execute("CREATE INDEX objects_id ON objects (id)")
        self.by_id = True
        while waiting:
            left = []
            for offset in waiting:
                unpacked, following = unpack_object_at(self.contents, offset, hashlib.sha1)
                try:
                    self.add(offset, following, self.resolved(offset, unpacked))
                except LookupError:
                    left.append(offset)
                self.flush()  # (its id found by the next)
            if len(left) == len(waiting):
                raise UnresolvedDeltas(f"{len(left)} deltas of the pack are on objects neither it nor the repository holds")
            waiting = left

    def resolved(self, offset: int, unpacked) -> tuple[int, bytes]:
        """(type, raw) of the object at offset: its delta chain walked down to a base the cache or
        the pack holds, then applied back up."""
        chain = []
        while unpacked.pack_type_num in (OFS_DELTA, REF_DELTA):
            chain.append((offset, unpacked.decomp_chunks))
            if unpacked.pack_type_num == REF_DELTA:
                if (offset := self.offset_of(unpacked.delta_base)) is None:  # a thin pack's: the repository's
                    type_num, raw = self.outside_base(unpacked.delta_base)
                    break
            elif 0 < unpacked.delta_base <= offset - 12:  # a base before it, after the header: the chain ends
                offset -= unpacked.delta_base
            else:
                raise ValueError(f"the delta at offset {offset} of the pack has its base outside it")
            if offset in self.cache:
                self.cache.move_to_end(offset)
                type_num, raw = self.cache[offset]
                break
            unpacked, _ = unpack_object_at(self.contents, offset, hashlib.sha1)
        else:
            type_num, raw = unpacked.pack_type_num, b"".join(unpacked.decomp_chunks)
        for delta_offset, delta in reversed(chain):
            raw = b"".join(apply_delta(raw, delta))
            self.keep(delta_offset, type_num, raw)
        return type_num, raw

    def offset_of(self, object_id: bytes) -> int | None:
        if not self.by_id:
            raise LookupError(object_id.hex())
        row = self.db.execute("SELECT offset FROM objects WHERE id = ?", (object_id,)).fetchone()
        return row and row[0]

    def outside_base(self, object_id: bytes) -> tuple[int, bytes]:
        try:
            if self.repository is None:
                raise KeyError(object_id)
            found = self.repository.get_raw(object_id)
        except KeyError:
            raise LookupError(object_id.hex()) from None
        self.outside.add(object_id)
        return found

    def keep(self, offset: int, type_num: int, raw: bytes) -> None:
        if len(raw) > BASE_CACHE_BYTES // 4:
            return
        self.cache[offset] = (type_num, raw)
        self.cached_bytes += len(raw)
        while self.cached_bytes > BASE_CACHE_BYTES:
            _, (_, dropped) = self.cache.popitem(last=False)
            self.cached_bytes -= len(dropped)

    def add(self, offset: int, following: int, resolved: tuple[int, bytes]) -> None:
        type_num, raw = resolved
        if offset not in self.cache:  # a base object: later deltas may start from it
            self.keep(offset, type_num, raw)
        object_id = hashlib.sha1(object_header(type_num, len(raw)) + raw).digest()
        self.rows.append((object_id, offset, zlib.crc32(self.contents[offset:following])))
        if len(self.rows) >= ROWS_A_WRITE:
            self.flush()

    def flush(self) -> None:
        self.db.executemany("INSERT INTO objects VALUES (?, ?, ?)", self.rows)
        self.rows.clear()


def write_index(db: sqlite3.Connection, idx: Path, checksum: bytes) -> None:
    """The version 2 .idx: fan-out, ids, crc32s, offsets (past 2 GiB: in a table of 8-byte ones).
    Not dulwich's write_pack_index_v2: it takes the entries as one list in memory, what this module
    avoids; here each section is written as the rows come, in id order, from SQLite."""
    fanout = [0] * 256
    for first, count in db.execute("SELECT substr(id, 1, 1), count(*) FROM objects GROUP BY 1"):
        fanout[first[0]] = count
    total = 0
    for index, count in enumerate(fanout):
        total += count
        fanout[index] = total
    digest = hashlib.sha1()

    def write(out, data: bytes) -> None:
        digest.update(data)
        out.write(data)

    with tempfile.TemporaryFile(dir=idx.parent) as crcs, tempfile.TemporaryFile(dir=idx.parent) as offsets, \
            tempfile.TemporaryFile(dir=idx.parent) as large, open(idx, "wb") as out:
        write(out, b"\377tOc" + struct.pack(">L", 2) + struct.pack(">256L", *fanout))
        large_count = 0
        for object_id, offset, crc in db.execute("SELECT id, offset, crc FROM objects ORDER BY id"):
            write(out, object_id)
            crcs.write(struct.pack(">L", crc))
            if offset < 2**31:
                offsets.write(struct.pack(">L", offset))
            else:
                offsets.write(struct.pack(">L", 2**31 + large_count))
                large.write(struct.pack(">Q", offset))
                large_count += 1
        for part in (crcs, offsets, large):
            part.seek(0)
            while chunk := part.read(2**20):
                write(out, chunk)
        write(out, checksum)
        out.write(digest.digest())
