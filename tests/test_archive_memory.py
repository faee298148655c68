"""`archive verify` and `db restore-from-archive` read an archive of any size in bounded memory:
neither keeps a record per message or per mark (at 100k messages verify held 192 MB of them).
Measured with tracemalloc on a real SQLite database and a real git archive, the read batches and
the tree cache and the deferred upkeep made small so that what is held per file shows at a few
hundred messages."""

import tracemalloc

import pytest

from chalicelib.archive import gitrepo, rebuild, restore, verify
from chalicelib.archive.restore import restore as restore_archive
from chalicelib.archive.verify import verify as verify_archive
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.worker import drain
from chalicelib.config import Settings
from chalicelib.store import db, upkeep

from .test_reservations import travel

GROWTH_LIMIT = 60_000  # bytes of peak 3x the mail may add (now 12-24 KB); a record per file added 135-410 KB


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(database_url=f"sqlite:///{tmp_path}/agent_mail.db", archive_dir=tmp_path / "archive",
                    archive_batch_size=50)  # the head commit (its message lists its entries) as small either time


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(rebuild, "CHUNK", 20)
    monkeypatch.setattr(verify, "CHUNK", 20)
    monkeypatch.setattr(restore, "IMPORT_BATCH", 20)
    monkeypatch.setattr(upkeep, "FLUSH_AT", 20)  # a restore's deferred counts and summaries
    monkeypatch.setattr(gitrepo, "READER_TREE_CACHE", 0)  # no tree cache: it fills up to its limit
    monkeypatch.setattr(gitrepo, "FOLDER_IDS", 0)  # nor the folders lookups remember


def mail(call, monkeypatch, project: str, numbers: range) -> None:
    """Messages a minute apart, as mail comes over days (the archive's folders stay small: a walk
    holds one at a time), each read by its recipient and every other one acknowledged (two marks)."""
    for n in numbers:
        travel(monkeypatch, 60 * n)
        sent = call("send_message", project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject=f"s{n}",
                    body_md="word " * 40)["message"]
        act = "acknowledge_message" if n % 2 else "mark_message_read"
        call(act, project_key=project, agent_name="GreenCastle", message_id=sent["id"])


def archive_all(settings) -> None:
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
        archive.repack()  # few packs either time: dulwich keeps a little of each pack it opens


def peak(work) -> tuple[int, object]:
    """The peak of Python's allocations while `work` runs (above what was held before), and its result."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        result = work()
        return tracemalloc.get_traced_memory()[1] - before, result
    finally:
        tracemalloc.stop()


def verify_peak(settings) -> tuple[int, dict]:
    with db.connection(settings) as conn, GitArchive.to_read(settings) as archive:  # as `archive verify` opens it
        return peak(lambda: verify_archive(conn, archive))


def restore_peak(settings, path) -> tuple[int, dict]:
    restored = Settings(database_url=f"sqlite:///{path}")
    with db.connection(restored) as conn, db.transaction(conn, write=True), GitArchive.to_read(settings) as archive:
        return peak(lambda: restore_archive(conn, archive))


def test_verify_and_restore_hold_no_record_per_message(call, project, settings, small_batches, tmp_path, monkeypatch):
    mail(call, monkeypatch, project, range(150))
    archive_all(settings)
    verify_small, problems = verify_peak(settings)
    restore_small, counts = restore_peak(settings, tmp_path / "small.db")
    assert not any(problems.values())
    assert (counts["messages"], counts["marks"]) == (150, 150 + 75)  # a read each, and every other one's acknowledgement

    mail(call, monkeypatch, project, range(150, 450))
    archive_all(settings)
    verify_large, problems = verify_peak(settings)
    restore_large, counts = restore_peak(settings, tmp_path / "large.db")
    assert not any(problems.values())
    assert (counts["messages"], counts["marks"]) == (450, 450 + 225)
    assert verify_large - verify_small < GROWTH_LIMIT, (verify_small, verify_large)
    assert restore_large - restore_small < GROWTH_LIMIT, (restore_small, restore_large)


def test_verify_read_in_batches_still_finds_a_file_without_its_message_and_a_mark_without_its_read(
        call, project, settings, small_batches, monkeypatch):
    mail(call, monkeypatch, project, range(90))
    archive_all(settings)
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        gone, unread = [row[0] for row in conn.execute("SELECT id FROM messages ORDER BY id LIMIT 2 OFFSET 45")]
        conn.execute("DELETE FROM message_recipients WHERE message_id = ?", (gone,))
        conn.execute("DELETE FROM messages WHERE id = ?", (gone,))
        conn.execute("UPDATE message_recipients SET read_ts = NULL WHERE message_id = ?", (unread,))
    with db.connection(settings) as conn, GitArchive.local(settings) as archive:
        problems = verify_archive(conn, archive)
    assert [path.rsplit("__", 1)[1] for path in problems["unexpected"]] == [f"{gone}.md"]
    assert [path.rsplit("/", 1)[1] for path in problems["different"]] == [f"{unread}-read.json"]
    assert problems["missing"] == problems["foreign"] == []
