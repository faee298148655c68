"""Which messages name which attachment content, and deleting the content none names
(docs/attachments.md, "Unused content").

Content is stored once per SHA-256 and shared by every message that names it, so deleting a
message cannot delete its content. The retention run collects it instead, in two steps:

1. It walks part of the storage (RETENTION_BATCH contents from a random place, so runs cover
   it all in turn) and condemns each content older than ATTACHMENT_UNUSED_DAYS that no message
   names: an upload never sent, or what purged mail named.
2. A condemnation older than ATTACHMENT_DELETE_DELAY_SECONDS is carried out if the content is
   still unnamed and was not written again since: the content is deleted.

A send that names condemned content takes it back (deletes the condemnation, in its own
transaction) during the first half of the delay, and is refused in the second half. So a
deletion never races a send: by then every send that named the content committed long enough
ago to be seen, or was refused. Half the delay leaves room for a Turso replica's staleness
(REPLICA_MAX_STALENESS_MS) and for clock skew between machines, which must stay well below it.
Only the database that claimed the storage deletes from it (`_claimed`).
"""

import logging
import random
from datetime import datetime
from itertools import repeat

from .. import clock
from ..config import Settings
from ..errors import InvalidArgument
from ..ids import new_ids
from ..store.db import chunks, placeholders, transaction

log = logging.getLogger(__name__)


def name(db, message_id: int, shas: list[str]) -> None:
    """Record that a stored message names this content (every message is stored by store_message)."""
    shas = list(dict.fromkeys(shas))
    db.executemany(
        "INSERT INTO attachment_refs (id, sha256, message_id) VALUES (?, ?, ?)", zip(new_ids(len(shas)), shas, repeat(message_id))
    )


def sizes(db, where, sender_id: int, by: str | None):
    """intake.SizeOf for a sender: the size of stored content it may name by its sha256 (else
    None). Without an uploader (no credential: no authentication, the operator) any stored
    content; else content a message it sent or received names (forwarding), or that its uploader
    put lately (storage.claim: an upload receipt; a SHA-256 alone read another project's file)."""
    def size_of(sha256: str) -> int | None:
        if by is None or _carried_to(db, sha256, sender_id):
            return where.size(sha256)
        return where.claim(sha256, by)

    return size_of


def _carried_to(db, sha256: str, agent_id: int) -> bool:
    """Whether a message the agent sent or received (bcc too) names this content."""
    return db.execute(
        "SELECT 1 FROM attachment_refs r JOIN messages m ON m.id = r.message_id WHERE r.sha256 = ? AND (m.sender_id = ?"
        " OR EXISTS (SELECT 1 FROM message_recipients WHERE message_id = m.id AND agent_id = ?)) LIMIT 1",
        (sha256, agent_id, agent_id),
    ).fetchone() is not None


def forget(db, message_ids: list[int]) -> None:
    """The messages are deleted: they name nothing any more."""
    db.execute(f"DELETE FROM attachment_refs WHERE message_id IN ({placeholders(message_ids)})", message_ids)


def take_back(db, shas: list[str], now: str, settings: Settings) -> None:
    """Before a send names this content: cancel its condemnations, or refuse the send if one is
    in the second half of its delay (see the module docstring)."""
    condemned = db.execute(
        f"SELECT sha256, min(condemned_ts) FROM attachment_condemned WHERE sha256 IN ({placeholders(shas)}) GROUP BY sha256",
        shas,
    ).fetchall()
    if not condemned:
        return
    last_chance = clock.later(now, -settings.attachment_delete_delay_seconds / 2)
    for sha, since in condemned:
        if since < last_chance:
            raise InvalidArgument(
                f"Attachment content {sha} is being deleted: no message had named it for {settings.attachment_unused_days:g} days.",
                f"The first retention run after {clock.later(since, settings.attachment_delete_delay_seconds)} deletes it;"
                " send it again after that run: inline content is then stored anew, and an upload of it made meanwhile is kept.",
            )
    db.execute(f"DELETE FROM attachment_condemned WHERE sha256 IN ({placeholders(shas)})", shas)


def collect(conn, settings: Settings, where, budget: int, now: str) -> dict[str, int]:
    """One bounded pass of both steps; how many contents were deleted and condemned."""
    nothing = {"attachments_deleted": 0, "attachments_condemned": 0}
    if not settings.attachment_unused_days:
        return nothing
    if not _claimed(conn, where, settings.turso_sync_url or str(settings.database_path.resolve())):
        log.warning("attachments: %s not collected: it is another database's, or holds no content this one names",
                    settings.attachments_bucket or settings.attachments_dir)
        return nothing
    return {
        "attachments_deleted": _carry_out(conn, settings, where, budget, now),
        "attachments_condemned": _condemn_unnamed(conn, settings, where, budget, now),
        "upload_receipts_expired": where.expire_receipts(budget),
    }


def _carry_out(conn, settings: Settings, where, budget: int, now: str) -> int:
    due = clock.later(now, -settings.attachment_delete_delay_seconds)
    with transaction(conn, write=False):
        rows = conn.execute(
            "SELECT sha256, condemned_ts FROM attachment_condemned WHERE condemned_ts < ? ORDER BY condemned_ts LIMIT ?",
            (due, budget),
        ).fetchall()
    since = {}
    for sha, condemned_ts in rows:
        since.setdefault(sha, condemned_ts)
    deleted = 0
    for chunk in chunks(since, settings.retention_chunk):
        with transaction(conn, write=False):
            named = _listed(conn, "attachment_refs", chunk)
        for sha in (sha for sha in chunk if sha not in named):
            written = where.modified(sha)  # None: already gone (a run that stopped half way)
            if not (written and written > _unix(since[sha])):
                where.delete(sha)
                deleted += 1
        with transaction(conn, write=True):
            conn.execute(f"DELETE FROM attachment_condemned WHERE sha256 IN ({placeholders(chunk)})", chunk)
    return deleted


def _condemn_unnamed(conn, settings: Settings, where, budget: int, now: str) -> int:
    start = f"{random.getrandbits(256):064x}"
    listed = where.walk(start, budget)
    if len(listed) < budget:  # on from the beginning, up to where this run started
        listed += [item for item in where.walk("", budget - len(listed)) if item[0] <= start]
    unused_before = _unix(now) - 86400 * settings.attachment_unused_days
    condemned = 0
    for chunk in chunks((sha for sha, written in listed if written < unused_before), settings.retention_chunk):
        with transaction(conn, write=True):
            spared = _listed(conn, "attachment_refs", chunk) | _listed(conn, "attachment_condemned", chunk)
            unnamed = [sha for sha in chunk if sha not in spared]
            conn.executemany("INSERT INTO attachment_condemned (id, sha256, condemned_ts) VALUES (?, ?, ?)",
                             zip(new_ids(len(unnamed)), unnamed, repeat(now)))
        condemned += len(unnamed)
    return condemned


def _claimed(conn, where, owner: str) -> bool:
    """Whether the database `owner` may delete from the storage: it claimed it (a marker beside
    the content), or claims it now if the storage holds the newest content its messages name.
    Another database sharing the storage (a second server, a test run, a local server pointed
    at a stack's bucket) never deletes from it: the content may be named by the claimant's mail."""
    claimant = where.owner()
    if claimant is None:
        if not where.walk("", 1):
            return True  # nothing stored: nothing to delete (and nothing to claim yet)
        with transaction(conn, write=False):
            newest = conn.execute("SELECT sha256 FROM attachment_refs ORDER BY id DESC LIMIT 1").fetchone()
        if newest is None or where.size(newest[0]) is None:
            return False
        if where.take(owner):
            return True
        claimant = where.owner()  # another database, at the same moment
    return claimant == owner


def _listed(conn, table: str, shas: list[str]) -> set[str]:
    """Those of `shas` that `table` lists (attachment_refs: named; attachment_condemned: condemned)."""
    return {row[0] for row in conn.execute(f"SELECT sha256 FROM {table} WHERE sha256 IN ({placeholders(shas)})", shas)}


def _unix(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()
