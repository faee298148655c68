"""Cloud mode: the outbox drains to an SQS FIFO queue; a worker function writes the archive.

`publish` sends pending outbox rows to ARCHIVE_QUEUE_URL, MessageGroupId = the project's
(message_group: one project's entries stay in order), MessageDeduplicationId = the outbox
row id (a row sent twice within SQS's five-minute window is delivered once; after that the writer's
idempotence makes a second delivery a no-op). It runs after every write invocation on
Lambda and from a scheduled sweep, which also picks up anything a failed publish left.

`handle_sqs_event` is the worker (`@app.on_sqs_message` in app.py). It keeps a bare, shallow
clone of ARCHIVE_GIT_REMOTE in /tmp (kept across warm invocations; only heads are fetched),
applies the batch as one commit per project and pushes; when the push is refused (another worker pushed first:
not a fast-forward) it fetches, puts its commits on the new head (GitArchive.replay, else
applies the batch again there) and pushes again, until its function's time is nearly over. An entry
that cannot be written (a poison message) is reported alone in `batchItemFailures`: the
rest of the batch is archived, and SQS moves the poison message to the dead-letter queue
after maxReceiveCount receives. Only deterministic failures are reported per item; a
failed push fails the whole batch, so entries are never applied out of order.
"""

import hashlib
import json
import logging
import random
import time
from functools import lru_cache

from .. import clock
from ..attachments.storage import ContentMissing, storage
from ..config import Settings
from ..store.db import connection, transaction
from . import outbox, render as rendering
from .render import batches, render

log = logging.getLogger(__name__)
MAX_BODY = 250_000  # SQS takes 256 KiB: larger entries travel as their outbox id only
BATCH_MAX_BYTES = 1_000_000  # SQS takes 1 MiB (1,048,576 bytes) a SendMessageBatch: a margin below it
GROUP_ID_MAX = 128  # SQS's longest MessageGroupId
# A worker whose push another's beat tries again until its function's time runs out, this much
# before it: marking the batch failed writes the database (on a replica, a push retried up to
# REPLICA_SYNC_TIMEOUT_MS, 10 s). PUSH_SECONDS without a Lambda context (a script, a test).
PUSH_MARGIN_SECONDS = 15
PUSH_SECONDS = 45
PAUSE_SECONDS, PAUSE_MAX_SECONDS = 0.05, 2.0  # between two tries: jittered, doubling
PUSH_REFUSALS = 5  # pushes the remote refuses (not lost to another's) before the batch fails
# The queue tries a message for at most maxReceiveCount x VisibilityTimeout (5 x 1800 s, 2.5 h:
# infra/template.yaml; each receive of a worker killed by its timeout), then moves it to the
# dead-letter queue. A row still queued after that is not coming back by itself: the sweep
# publishes it again (requeue_overdue).
QUEUED_MAX_SECONDS = 3 * 3600
# A batch that failed is received again after this (retry_later), doubling with each receive
# (60, 120, 240, 480, 960 s: ~30 min before the dead-letter queue), not after the visibility
# timeout (6 x the worker's timeout, so 30 min each).
RETRY_VISIBILITY_SECONDS = 60
VISIBILITY_SECONDS = 1800  # the queue's VisibilityTimeout (infra/template.yaml)
PUBLISH_ROWS = 100  # rows one publish sends (after a write: its own, and what is left)
SWEEP_ROWS = 3000  # rows one sweep publishes at most: 300 SendMessageBatch calls, well within its 60 s


@lru_cache
def sqs_client():
    import boto3  # not at the top: only the drainer and its tests need it

    return boto3.client("sqs")


def publish(settings: Settings, limit: int = PUBLISH_ROWS) -> int:
    """Send up to `limit` pending outbox rows to the queue; the number sent. A batch SQS refuses
    (or that cannot reach it) leaves its rows pending with a backoff (mark_unsent), never an
    exception: raised, it left them due, first in every later publish, and nothing of any
    project reached the queue again."""
    with connection(settings) as conn:
        rows = outbox.take(conn, limit)
    if not rows:  # (no write transaction for nothing: a failed row waiting for its retry took the lock on every request)
        return 0
    # Marked queued before the send (on a replica: pushed), never after: the worker may archive a
    # row and mark it done before a send's answer, and a later write turned that `done` back to
    # `queued` (until the sweep's deadline: the lag alarm, published again). A process that dies
    # before sending leaves them queued: the same deadline publishes them again.
    with connection(settings) as conn, transaction(conn, write=True):
        claimed = outbox.mark_queued(conn, [row["id"] for row in rows], clock.later(clock.now(), QUEUED_MAX_SECONDS))
    rows = [row for row in rows if row["id"] in claimed]
    sent: list[int] = []
    failed: dict[int, str] = {}
    for chunk in chunks(rows):
        try:
            response = sqs_client().send_message_batch(
                QueueUrl=settings.archive_queue_url, Entries=[{"Id": str(i), **message} for i, (_, message) in enumerate(chunk)])
        except Exception as exc:
            log.warning("archive publish: SQS refused a batch of %d rows: %s", len(chunk), exc)
            failed |= {row["id"]: f"{type(exc).__name__}: {exc}" for row, _ in chunk}
            continue
        sent += [chunk[int(ok["Id"])][0]["id"] for ok in response.get("Successful", [])]
        failed |= {chunk[int(bad["Id"])][0]["id"]: bad.get("Message", bad["Code"]) for bad in response.get("Failed", [])}
    if failed:  # pending again: a later publish sends them
        with connection(settings) as conn, transaction(conn, write=True):
            outbox.mark_unsent(conn, {rid: f"SQS: {error}" for rid, error in failed.items()}, settings.archive_retry_seconds)
    return len(sent)


def chunks(rows: list) -> list[list[tuple]]:
    """The rows, each with its entry, as SendMessageBatch calls: at most 10 entries and
    BATCH_MAX_BYTES each (SQS refuses a batch over 1 MiB as a whole). A row that failed before goes
    alone: if it is the one SQS refuses, it is backed off on its own, not with the rows beside it."""
    grouped: list[list[tuple]] = []
    size = 0
    for row in rows:
        message = entry(row)
        weight = entry_size(message)
        alone = row["attempts"] or (grouped and grouped[-1][0][0]["attempts"])
        if not grouped or alone or len(grouped[-1]) == 10 or size + weight > BATCH_MAX_BYTES:
            grouped.append([])
            size = 0
        grouped[-1].append((row, message))
        size += weight
    return grouped


def entry(row) -> dict:
    """A row's SendMessageBatch entry (without its Id)."""
    return {"MessageBody": body(row), "MessageGroupId": message_group(row["project"]),
            "MessageDeduplicationId": str(row["id"])}


def entry_size(entry: dict) -> int:
    """What an entry counts against a batch's 1 MiB, at most: SQS counts its body and message
    attributes (none here); every field is counted, a few bytes more."""
    return sum(len(value.encode()) for value in entry.values())


def message_group(project: str) -> str:
    """The SQS MessageGroupId of a project's entries (one group: they stay in order): its slug, or
    for a slug over SQS's 128 characters its start and a hash of it (a slug is as long as its
    path; one over the limit refused every batch it was in). Slugs are ASCII letters, digits and
    punctuation, which SQS takes."""
    if len(project) <= GROUP_ID_MAX:
        return project
    return f"{project[:100]}-{hashlib.sha256(project.encode()).hexdigest()[:16]}"


def body(row) -> str:
    text = json.dumps({"outbox_id": str(row["id"]), "entry": json.loads(row["payload"])})
    return text if len(text.encode()) <= MAX_BODY else json.dumps({"outbox_id": str(row["id"])})


def handle_sqs_event(event: dict, settings: Settings, context=None) -> dict:
    """The worker: archive the batch, push, mark the outbox rows done. `context`: Lambda's (its time left)."""
    deadline = push_deadline(context)
    entries: dict[str, dict] = {}  # SQS messageId -> entry
    outbox_ids: dict[str, int] = {}
    failures: dict[str, str] = {}
    # Pulled now, on a replica: a warm worker's last pull may predate the batch's rows (they were
    # pushed before they were sent), and a row it lacks can be neither read (an entry too large for
    # SQS) nor marked done (archived, it stayed `queued` until the sweep's deadline).
    with connection(settings, fresh=True) as conn:
        for record in event["Records"]:
            try:
                message = json.loads(record["body"])
                outbox_ids[record["messageId"]] = int(message["outbox_id"])
                entry = message.get("entry") or json.loads(
                    conn.execute("SELECT payload FROM archive_outbox WHERE id = ?", (int(message["outbox_id"]),)).fetchone()[0]
                )
                render(entry)  # a poison entry is found here, before it can spoil the batch
                entries[record["messageId"]] = entry
            except Exception as exc:
                failures[record["messageId"]] = f"{type(exc).__name__}: {exc}"
    if entries:
        refused: dict[str, str] = {}  # entries of a project whose folder is another project's
        try:
            commit = push_entries(settings, list(entries.values()), refused=lambda i, error: refused.update({list(entries)[i]: error}),
                                  deadline=deadline)
        except Exception as exc:  # the whole batch fails and SQS delivers it again: each of its rows counts the attempt
            retry_later(settings, event["Records"])
            with connection(settings) as conn, transaction(conn, write=True):
                outbox.mark_failed(conn, [outbox_ids[mid] for mid in entries], f"{type(exc).__name__}: {exc}")
                failed_alone(conn, settings, failures, outbox_ids)  # (a poison entry of the batch too: it was not counted)
            raise
        failures |= refused
        with connection(settings) as conn, transaction(conn, write=True):
            outbox.mark_done(conn, [outbox_ids[mid] for mid in entries if mid not in refused], commit)
    if failures:
        log.error("archive entries not written: %s", failures)
        retry_later(settings, [record for record in event["Records"] if record["messageId"] in failures])
        with connection(settings) as conn, transaction(conn, write=True):
            failed_alone(conn, settings, failures, outbox_ids)
    return {"batchItemFailures": [{"itemIdentifier": mid} for mid in failures]}


def failed_alone(conn, settings: Settings, failures: dict[str, str], outbox_ids: dict[str, int]) -> None:
    """Each entry that failed by itself ({SQS messageId: error}) counts the attempt, with its error."""
    for mid, error in failures.items():
        if mid in outbox_ids:
            outbox.mark_failed(conn, [outbox_ids[mid]], error, settings.archive_retry_seconds)


def retry_later(settings: Settings, records: list[dict]) -> None:
    """Have SQS deliver these failed messages again RETRY_VISIBILITY_SECONDS after this receive,
    doubling with each (ApproximateReceiveCount), rather than after the queue's visibility timeout.
    Best effort: refused, they come back after that timeout anyway."""
    entries = [{"Id": str(index), "ReceiptHandle": record["receiptHandle"], "VisibilityTimeout": int(min(
        RETRY_VISIBILITY_SECONDS * 2 ** (int(record.get("attributes", {}).get("ApproximateReceiveCount", 1)) - 1), VISIBILITY_SECONDS))}
        for index, record in enumerate(records)]
    for start in range(0, len(entries), 10):  # SQS's most a call
        try:
            response = sqs_client().change_message_visibility_batch(QueueUrl=settings.archive_queue_url, Entries=entries[start:start + 10])
        except Exception as exc:
            log.warning("archive: could not bring failed messages back sooner: %s", exc)
            continue
        if response.get("Failed"):
            log.warning("archive: could not bring failed messages back sooner: %s", response["Failed"])


def push_entries(settings: Settings, entries: list[dict], refused=lambda index, error: None, deadline: float | None = None) -> str:
    """Apply onto the remote's head and push, again on top of any newer head until `deadline`
    (time.monotonic(); push_deadline's by default); the pushed commit. An entry the archive
    refuses (ForeignProject: its slug names another project's folder), or whose attachment is
    lost (lost_attachments), is left out and reported to `refused(index, error)`: deterministic,
    like a poison entry."""
    from dulwich.client import get_transport_and_path  # here: the API functions import this module too

    from .gitrepo import BRANCH, MAINTAIN_EVERY, ForeignProject, GitArchive
    from .migrate import migrate_layout
    from .packindex import fetch_into

    deadline = push_deadline(None) if deadline is None else deadline
    where = storage(settings)

    client, remote_path = get_transport_and_path(settings.archive_git_remote)
    with GitArchive(settings.archive_work_dir, bare=True) as archive:  # kept in /tmp across warm invocations
        # A container runs one invocation at a time, so a git lock here is a killed one's (its
        # timeout: /tmp stays): left, git refuses to move the branch, and every batch fails.
        if stale := archive.clear_stale_locks():
            log.warning("archive clone: removed stale git locks: %s", ", ".join(map(str, stale)))

        def fetched() -> bytes | None:
            # The head only (depth 1): a cold clone of the whole history grew with the archive, past
            # the function's time; the worker reads the head's trees, and replays its own commits.
            # The pack indexed on disk: dulwich's index of a cold worker's (the whole head) in memory
            # grew with the archive.
            return fetch_into(client, remote_path, archive.repo, depth=1).refs.get(BRANCH)

        def applied(remote_head: bytes | None) -> bytes | None:
            if remote_head:
                archive.repo.refs[BRANCH] = remote_head  # start from the remote's head: local commits are redone
            migrate_layout(archive)  # a remote of the first layout moves on with its first new batch
            accepted, owners = [], {}  # slug -> the first human key of the batch (a new folder has no project.json yet)
            for index, entry in enumerate(entries):
                try:
                    archive.check_owner([owners.get(entry["project"], entry), entry], archive.head())
                    if lost := lost_attachments(archive, entry, where):
                        raise ContentMissing(lost[0])
                    owners.setdefault(entry["project"], entry)
                    accepted.append(entry)
                except ForeignProject as exc:
                    refused(index, f"ForeignProject: {exc}")
                except ContentMissing as exc:
                    refused(index, f"ContentMissing: the attachment {exc} is in neither the archive nor the attachment storage")
            for batch in batches(accepted, len(accepted), rendering.BATCH_MAX_BYTES):  # bounded memory, as the local worker's
                archive.apply(batch)
            return archive.head()

        started = time.monotonic()
        remote_head = fetched()
        head = applied(remote_head)
        attempt = refusals = 0
        while True:
            if head is None or head == remote_head:
                return (head or b"").decode()  # nothing new: a redelivery
            if (refusal := refused_push(client, remote_path, archive, remote_head, head)) is None:
                if archive.pack_count() > MAINTAIN_EVERY:  # each fetch and commit adds a pack to the warm clone
                    archive.maintain()
                return head.decode()
            # Lost to another worker's push: again on its head, until the function's time runs out
            # (a slow batch lost every one of a fixed number of tries to quicker workers, and the
            # whole batch waited out the visibility timeout, again and again). A pause, jittered, so
            # that workers that lost together do not fetch in step; the last try's time, so that
            # one that cannot end in time is not started.
            attempt += 1
            pause = random.uniform(0, min(PAUSE_MAX_SECONDS, PAUSE_SECONDS * 2 ** attempt))
            if time.monotonic() + pause + (time.monotonic() - started) > deadline:
                raise RuntimeError(f"archive push lost to other pushes {attempt} times; no time left to try again")
            time.sleep(pause)
            started = time.monotonic()
            moved = fetched()
            if moved != remote_head:  # our commits on its head, folders copied (GitArchive.replay); else rendered again
                head = (remote_head and moved and archive.replay(remote_head, head, moved)) or applied(moved)
                remote_head = moved
            elif refusal:  # the remote said no, its branch where it was (a hook, a protected branch): no race lost
                refusals += 1
                if refusals == PUSH_REFUSALS:
                    raise RuntimeError(f"the archive remote refused the push {refusals} times: {refusal}")


def refused_push(client, remote_path: str, archive, remote_head: bytes | None, head: bytes) -> str | None:
    """None if the remote's branch moved from remote_head to head; else "" if another push was
    first, or the remote's reason for refusing it."""
    from .gitrepo import BRANCH

    def update_refs(refs: dict) -> dict:
        if refs.get(BRANCH) != remote_head:
            raise NotFastForward()
        return {BRANCH: head}

    try:
        result = client.send_pack(remote_path, update_refs, archive.pack_data)
    except NotFastForward:
        log.info("archive push: the remote moved; trying again on its head")
        return ""
    if error := (result.ref_status or {}).get(BRANCH):
        log.warning("archive push refused (%s); trying again", error)
        return str(error)
    return None


def push_deadline(context) -> float:
    """When (time.monotonic()) a worker stops pushing again: with a Lambda context, its time left
    but PUSH_MARGIN_SECONDS (to mark the batch failed); without one, in PUSH_SECONDS."""
    left = context.get_remaining_time_in_millis() / 1000 if hasattr(context, "get_remaining_time_in_millis") else None
    return time.monotonic() + (PUSH_SECONDS if left is None else left - PUSH_MARGIN_SECONDS)


def lost_attachments(archive, entry: dict, where) -> list[str]:
    """The sha256 of each attachment of the entry that neither the archive nor the attachment
    storage holds: writing it would fail the whole batch, delivery after delivery (it is refused
    alone instead, as the local worker's retry of a failed row alone finds it)."""
    return [sha256 for path, sha256 in rendering.attachment_paths(entry).items()
            if not archive.holds_attachment(path, sha256, read=False) and where.size(sha256) is None]


class NotFastForward(Exception):
    """Another worker pushed since our fetch."""


def queue_name(settings: Settings) -> str:
    """The queue's name, for Chalice's event source mapping (the URL ends with it)."""
    return settings.archive_queue_url.rstrip("/").rsplit("/", 1)[-1] or "agent-mail-archive.fifo"


def publish_after_write(settings: Settings) -> None:
    """After a write invocation on Lambda: send what it queued. Never fails the request:
    whatever is not sent stays pending for the scheduled sweep."""
    if not (settings.archive_enabled and settings.archive_queue_url):
        return
    # Only after a write that recorded rows here: a read, /health or a refused request would
    # reach the database (on a replica a pull, ~10 s of retries with the primary down).
    # What is left from earlier (a failed send) is the sweep's.
    if not outbox.recorded.is_set():
        return
    outbox.recorded.clear()
    try:
        publish(settings)  # (nothing due, after a read or a write that archives nothing: one SELECT, no write, no SQS call)
    except Exception:
        log.exception("archive publish failed; the sweep will retry")


def publish_all(settings: Settings) -> int:
    """The scheduled sweep: take back the rows the queue did not archive in time, publish up to
    SWEEP_ROWS pending rows (the rest in the next minute's sweep: a run that went on until nothing
    was left ran into the function's timeout on a big backlog, before its pruning and metrics), then
    prune rows archived more than ARCHIVE_KEEP_DONE_DAYS ago."""
    total = 0
    if settings.archive_enabled and settings.archive_queue_url:
        with connection(settings) as conn, transaction(conn, write=True):
            if requeued := outbox.requeue_overdue(conn):
                log.warning("archive: %d queued entries not archived in time; publishing them again", requeued)
        while total < SWEEP_ROWS and (sent := publish(settings, min(PUBLISH_ROWS, SWEEP_ROWS - total))):
            total += sent
        with connection(settings) as conn, transaction(conn, write=True):
            outbox.prune(conn, settings.archive_keep_done_days)
    return total
