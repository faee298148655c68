"""Cloud mode with moto: outbox -> SQS FIFO -> the worker function (called as Lambda calls
it, with an event built from the received messages) -> pushed to a bare repository."""

import importlib
import json
import re

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from chalicelib.store import db
from chalicelib import clock, invoke
from chalicelib.archive import cloud, outbox, render
from chalicelib.archive.verify import verify as verify_archive
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.config import get_settings
from chalicelib.ops import logs
from chalicelib.tools import tools_by_name

from .aws_events import CONTEXT

TOOLS = tools_by_name()
MAX_RECEIVES = 2
SCHEDULED = {"detail-type": "Scheduled Event", "source": "aws.events", "time": "2026-01-01T00:00:00Z", "detail": {},
             "resources": ["arn:aws:events:us-east-1:123456789012:rule/archive-sweep"], "region": "us-east-1",
             "account": "123456789012", "id": "1", "version": "0"}  # the sweep's event, as EventBridge sends it


@pytest.fixture
def sqs(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setattr(cloud, "RETRY_VISIBILITY_SECONDS", 0)  # as the queue's below: a failed message is visible again at once
    with mock_aws():
        cloud.sqs_client.cache_clear()
        client = boto3.client("sqs")
        dead = client.create_queue(QueueName="archive-dead.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        dead_arn = client.get_queue_attributes(QueueUrl=dead, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue = client.create_queue(QueueName="archive.fifo", Attributes={
            "FifoQueue": "true", "VisibilityTimeout": "0",  # a failed message is visible again at once
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dead_arn, "maxReceiveCount": MAX_RECEIVES}),
        })["QueueUrl"]
        yield client, queue, dead
        cloud.sqs_client.cache_clear()


@pytest.fixture
def settings(sqs, tmp_path, monkeypatch):
    """Settings from the environment, as on Lambda."""
    GitArchive(tmp_path / "remote.git", bare=True).close()
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/agent_mail.db")
    monkeypatch.setenv("ARCHIVE_QUEUE_URL", sqs[1])
    monkeypatch.setenv("ARCHIVE_GIT_REMOTE", str(tmp_path / "remote.git"))
    monkeypatch.setenv("ARCHIVE_WORK_DIR", str(tmp_path / "clone"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def worker(settings):
    """The worker function, as Chalice hands it to Lambda."""
    return importlib.import_module("app").create_app(settings).handler_map["archive_worker"]


@pytest.fixture
def send(settings):
    def send(subject: str) -> str:
        return invoke.call(TOOLS["send_message"], {"project_key": "cloud", "sender_name": "BlueLake", "to": ["GreenCastle"],
                                                   "subject": subject, "body_md": "x"}, settings).model_dump(mode="json")["message"]["id"]

    invoke.call(TOOLS["ensure_project"], {"human_key": "/cloud"}, settings)
    for name in ("BlueLake", "GreenCastle"):
        invoke.call(TOOLS["register_agent"], {"project_key": "cloud", "program": "p", "model": "m", "name": name}, settings)
    invoke.call(TOOLS["set_contact_policy"], {"project_key": "cloud", "agent_name": "GreenCastle", "policy": "open"}, settings)
    return send


def receive(sqs) -> dict:
    """An SQS event, as Lambda builds it, from the messages received now."""
    client, queue, _ = sqs
    messages = client.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
    return {"Records": [
        {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"], "attributes": m["Attributes"],
         "messageAttributes": {}, "md5OfBody": m["MD5OfBody"], "eventSource": "aws:sqs",
         "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:archive.fifo", "awsRegion": "us-east-1"}
        for m in messages
    ]}


def acknowledge(sqs, event: dict, result: dict) -> None:
    """What Lambda does with the result: delete every message but the failures."""
    failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
    for record in event["Records"]:
        if record["messageId"] not in failed:
            sqs[0].delete_message(QueueUrl=sqs[1], ReceiptHandle=record["receiptHandle"])


def remote(settings) -> GitArchive:
    return GitArchive(settings.archive_git_remote, bare=True)


def messages_in(archive: GitArchive) -> list[str]:
    return sorted(path.rsplit("__", 1)[1].removesuffix(".md") for path in archive.files() if "/messages/" in path)


def test_outbox_to_fifo_queue_to_worker_to_pushed_commit_and_redelivery_changes_nothing(sqs, settings, worker, send):
    ids = [send(f"hello {n}") for n in range(3)]
    assert cloud.publish_all(settings) == 1 + 3 + 3  # the project, two profiles (GreenCastle's twice: opened), three messages
    event = receive(sqs)
    assert len(event["Records"]) == 7
    assert {r["attributes"]["MessageGroupId"] for r in event["Records"]} == {"cloud"}

    result = worker(event, CONTEXT)
    assert result == {"batchItemFailures": []}
    with remote(settings) as archive:
        assert messages_in(archive) == sorted(ids)
        head, commits = archive.head(), archive.commit_count()
    assert commits == 1
    assert invoke.call(TOOLS["archive_status"], {}, settings).pending == 0

    assert worker(event, CONTEXT) == {"batchItemFailures": []}  # SQS delivers again: nothing changes
    with remote(settings) as archive:
        assert archive.head() == head


def test_archiving_a_project_reaches_the_remote_s_project_json(sqs, settings, worker, send):
    send("hello")
    archived_ts = invoke.call(TOOLS["archive_project"], {"project_key": "cloud"}, settings).archived_ts
    cloud.publish_all(settings)
    event = receive(sqs)
    assert worker(event, CONTEXT) == {"batchItemFailures": []}
    with remote(settings) as archive:
        assert json.loads(archive.read("projects/cloud/project.json"))["archived_ts"] == archived_ts


def test_a_product_reaches_the_remote_in_a_message_group_of_its_own(sqs, settings, worker, send):
    send("hello")
    invoke.call(TOOLS["ensure_product"], {"product_key": "shop"}, settings)
    invoke.call(TOOLS["products_link"], {"product_key": "shop", "project_key": "cloud"}, settings)
    cloud.publish_all(settings)
    event = receive(sqs)
    assert {record["attributes"]["MessageGroupId"] for record in event["Records"]} == {"cloud", outbox.PRODUCTS}
    assert worker(event, CONTEXT) == {"batchItemFailures": []}
    with remote(settings) as archive:
        assert [link["human_key"] for link in json.loads(archive.read("products/shop.json"))["projects"]] == ["/cloud"]


def test_an_older_project_json_delivered_after_a_newer_one_does_not_overwrite_it(sqs, settings, worker, send):
    """Archived then unarchived, the two project.json updates reach the worker in reverse order
    (as when the first one's send failed, or it came back from the dead-letter queue, after the
    second went through): the project stays active in the archive, as in the database."""
    send("hello")
    invoke.call(TOOLS["archive_project"], {"project_key": "cloud"}, settings)
    invoke.call(TOOLS["unarchive_project"], {"project_key": "cloud"}, settings)
    cloud.publish_all(settings)
    records = receive(sqs)["Records"]
    update = {state: record for record in records for state in ("project_archived_ts", "project_unarchived_ts")
              if json.loads(record["body"])["entry"].get(state)}  # the two project entries, by the state they carry
    unarchived_ts = json.loads(update["project_unarchived_ts"]["body"])["entry"]["project_unarchived_ts"]

    assert worker({"Records": records[::-1]}, CONTEXT) == {"batchItemFailures": []}  # in one batch
    assert worker({"Records": [update["project_archived_ts"]]}, CONTEXT) == {"batchItemFailures": []}  # alone, later
    with remote(settings) as archive:
        described = json.loads(archive.read("projects/cloud/project.json"))
    made = invoke.call(TOOLS["get_project"], {"project_key": "cloud"}, settings).created_ts
    assert described == {"slug": "cloud", "human_key": "/cloud", "created_ts": made, "unarchived_ts": unarchived_ts,
                         "version": described["version"]}

    archived_ts = invoke.call(TOOLS["archive_project"], {"project_key": "cloud"}, settings).archived_ts
    cloud.publish_all(settings)
    assert worker(receive(sqs), CONTEXT) == {"batchItemFailures": []}
    assert worker({"Records": [update["project_unarchived_ts"]]}, CONTEXT) == {"batchItemFailures": []}  # the old one again
    with remote(settings) as archive:
        assert json.loads(archive.read("projects/cloud/project.json"))["archived_ts"] == archived_ts


def test_a_profile_and_a_reservation_delivered_out_of_order_keep_their_newer_state(sqs, settings, worker, send):
    """An agent retired then unretired, a reservation renewed then released: the worker gets each
    pair in reverse order (in one batch, then the older ones alone again, as after a failed send or
    a redrive from the dead-letter queue): the archive ends with the database's state, which verify
    finds in step."""
    send("hello")
    reserved = invoke.call(TOOLS["file_reservation_paths"], {"project_key": "cloud", "agent_name": "BlueLake",
                                                              "paths": ["src/app.py"]}, settings).granted[0]
    cloud.publish_all(settings)
    event = receive(sqs)
    acknowledge(sqs, event, worker(event, CONTEXT))
    invoke.call(TOOLS["retire_agent"], {"project_key": "cloud", "agent_name": "GreenCastle"}, settings)
    invoke.call(TOOLS["renew_file_reservations"], {"project_key": "cloud", "agent_name": "BlueLake"}, settings)
    invoke.call(TOOLS["unretire_agent"], {"project_key": "cloud", "agent_name": "GreenCastle"}, settings)
    released_ts = invoke.call(TOOLS["release_file_reservations"], {"project_key": "cloud", "agent_name": "BlueLake"},
                              settings).released_ts
    assert cloud.publish_all(settings) == 4
    retire, renew, unretire, release = records = receive(sqs)["Records"]  # in the order of the database's changes
    assert json.loads(retire["body"])["entry"]["retired_ts"] and json.loads(release["body"])["entry"]["released_ts"]

    assert worker({"Records": records[::-1]}, CONTEXT) == {"batchItemFailures": []}  # in one batch
    assert worker({"Records": [retire, renew]}, CONTEXT) == {"batchItemFailures": []}  # alone, later
    with remote(settings) as archive:
        assert "retired_ts" not in json.loads(archive.read("projects/cloud/agents/GreenCastle/profile.json"))
        assert json.loads(archive.read(f"projects/cloud/file_reservations/{reserved.id}.json"))["released_ts"] == released_ts
        with db.connection(settings) as conn:
            assert verify_archive(conn, archive) == {"missing": [], "unexpected": [], "different": [], "foreign": []}


def test_the_worker_commits_a_batch_a_byte_bound_at_a_time(sqs, settings, worker, send, monkeypatch):
    """Ten messages of 50 MiB of attachments are not held at once: a commit per BATCH_MAX_BYTES."""
    ids = [send(f"hello {n}") for n in range(3)]
    monkeypatch.setattr(render, "BATCH_MAX_BYTES", 1)  # every entry alone
    assert cloud.publish_all(settings) == 1 + 3 + 3
    assert worker(receive(sqs), CONTEXT) == {"batchItemFailures": []}
    with remote(settings) as archive:
        assert (messages_in(archive), archive.commit_count()) == (sorted(ids), 1 + 3 + 3)
    assert invoke.call(TOOLS["archive_status"], {}, settings).pending == 0


def test_a_poison_message_ends_in_the_dead_letter_queue_and_the_rest_of_its_batch_is_archived(sqs, settings, worker, send):
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        outbox.record(conn, "other", "message", 1, {"sender": "../../escape", "subject": "x"})  # cannot be written
    good = send("good")
    cloud.publish_all(settings)
    receives = 0
    while (event := receive(sqs))["Records"]:
        receives += 1
        result = worker(event, CONTEXT)
        bodies = {r["messageId"]: json.loads(r["body"]) for r in event["Records"]}
        assert [bodies[item["itemIdentifier"]]["entry"]["project"] for item in result["batchItemFailures"]] == ["other"]
        acknowledge(sqs, event, result)
        assert receives <= MAX_RECEIVES
    dead = sqs[0].receive_message(QueueUrl=sqs[2], MaxNumberOfMessages=10)["Messages"]
    assert [json.loads(m["Body"])["entry"]["sender"] for m in dead] == ["../../escape"]
    with remote(settings) as archive:
        assert messages_in(archive) == [good]
    status = invoke.call(TOOLS["archive_status"], {}, settings)
    assert status.pending == 1 and status.failed == 1  # still visible: never silently dropped


def test_an_entry_whose_attachment_is_lost_is_reported_alone(sqs, settings, send, tmp_path):
    """QA, session 29: the worker read attachments while it wrote the batch: one whose content was
    gone failed the whole batch, delivery after delivery, and the project's archive stopped."""
    import base64

    from chalicelib.attachments.storage import storage

    settings = settings.model_copy(update={"attachments_dir": tmp_path / "attachments"})
    worker = importlib.import_module("app").create_app(settings).handler_map["archive_worker"]
    good = send("good")
    lost = invoke.call(TOOLS["send_message"], {"project_key": "cloud", "sender_name": "BlueLake", "to": ["GreenCastle"],
                                               "subject": "lost", "body_md": "x", "attachments": [
                                                   {"name": "a.log", "content_base64": base64.b64encode(b"the log").decode()}]},
                       settings).message
    storage(settings).delete(lost.attachments[0].sha256)
    cloud.publish_all(settings)
    event = receive(sqs)
    result = worker(event, CONTEXT)
    bodies = {record["messageId"]: json.loads(record["body"]) for record in event["Records"]}
    assert [bodies[item["itemIdentifier"]]["entry"]["subject"] for item in result["batchItemFailures"]] == ["lost"]
    with remote(settings) as archive:
        assert messages_in(archive) == [good]


def test_the_sweep_publishes_a_bounded_number_and_a_read_takes_no_write_lock(sqs, settings, send, monkeypatch):
    """QA, session 29: the sweep published until nothing was left (a big backlog ran it into the
    function's timeout, before its pruning and metrics); and with a failed row waiting for its
    retry, every request, reads too, took the write lock to publish nothing."""
    send("hello")
    monkeypatch.setattr(cloud, "SWEEP_ROWS", 3)
    assert [cloud.publish_all(settings), cloud.publish_all(settings)] == [3, 1 + 3 + 1 - 3]
    send("later")
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        outbox.mark_failed(conn, [row["id"] for row in outbox.take(conn, 10)], "SQS: throttled", retry_seconds=3600)
    writes = []
    transaction = cloud.transaction
    monkeypatch.setattr(cloud, "transaction", lambda conn, write: writes.append(write) or transaction(conn, write))
    cloud.publish_after_write(settings)
    assert writes == []


def test_a_push_refused_because_another_worker_pushed_first_is_redone_on_top(sqs, settings, send, monkeypatch, tmp_path):
    first, second = send("first"), send("second")
    with db.connection(settings) as conn:
        entries = [json.loads(row["payload"]) for row in outbox.take(conn, 10)]
    other = {"settings": settings.model_copy(update={"archive_work_dir": tmp_path / "other-clone"})}
    apply = GitArchive.apply

    def apply_while_another_worker_pushes(self, batch):
        if other:  # once: between our fetch and our push, another container pushes `second`
            cloud.push_entries(other.pop("settings"), [e for e in entries if e.get("subject") == "second"])
        return apply(self, batch)

    monkeypatch.setattr(GitArchive, "apply", apply_while_another_worker_pushes)
    cloud.push_entries(settings, [e for e in entries if e.get("subject") == "first"])
    with remote(settings) as archive:
        assert messages_in(archive) == sorted([first, second]) and archive.commit_count() == 2


def quicker_worker(settings, tmp_path, count: int) -> tuple:
    """`count` messages of another project, and `push_one()`, which pushes the next of them as a
    worker of its own (its own clone) would, quicker than the one under test."""
    invoke.call(TOOLS["ensure_project"], {"human_key": "/quick"}, settings)
    invoke.call(TOOLS["register_agent"], {"project_key": "quick", "program": "p", "model": "m", "name": "RedFox"}, settings)
    ids = [invoke.call(TOOLS["send_message"], {"project_key": "quick", "sender_name": "RedFox", "to": ["RedFox"], "subject": f"quick {n}",
                                               "body_md": "x"}, settings).model_dump(mode="json")["message"]["id"] for n in range(count)]
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        rows = outbox.take(conn, 100)
        outbox.mark_done(conn, [row["id"] for row in rows if row["project"] == "quick"], None)  # the quicker worker's
    entries = [json.loads(row["payload"]) for row in rows if row["project"] == "quick"]
    setup = [entry for entry in entries if entry["kind"] != "message"]
    left = [entry for entry in entries if entry["kind"] == "message"]
    quick = settings.model_copy(update={"archive_work_dir": tmp_path / "quick-clone"})
    cloud.push_entries(quick, setup)

    def push_one() -> bool:
        if left:
            cloud.push_entries(quick, [left.pop(0)])
        return bool(left)

    return ids, push_one


def test_a_slow_batch_that_loses_its_push_to_a_quicker_worker_is_not_rendered_again(
        sqs, settings, worker, send, monkeypatch, tmp_path):
    """QA, session 37: a worker whose apply is slow (large entries, their attachments downloaded)
    lost each of its 5 tries to a quicker worker pushing in between, and its whole batch failed,
    delivery after delivery. Its commit now goes on the new head as it is (GitArchive.replay:
    the other worker wrote another project's folder): no second apply, so no second loss."""
    slow = send("slow")
    quick, push_one = quicker_worker(settings, tmp_path, 7)
    monkeypatch.setattr(cloud, "PAUSE_SECONDS", 0.001)
    apply = GitArchive.apply

    def slow_apply(self, batch):
        if any(entry.get("subject") == "slow" for entry in batch):  # while it renders, a quicker worker pushes
            push_one()
        return apply(self, batch)

    monkeypatch.setattr(GitArchive, "apply", slow_apply)
    cloud.publish_all(settings)
    assert worker(receive(sqs), CONTEXT) == {"batchItemFailures": []}
    with remote(settings) as archive:
        assert messages_in(archive) == sorted([slow, quick[0]])
        assert archive.read("projects/quick/project.json") and archive.read("projects/cloud/project.json")
    assert invoke.call(TOOLS["archive_status"], {}, settings).pending == 0


class LambdaContext:
    """What the worker reads of Lambda's context: its time left."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.aws_request_id = seconds, "c0ffee"

    def get_remaining_time_in_millis(self) -> int:
        return int(self.seconds * 1000)


def losing_every_push(monkeypatch, push_one) -> list[int]:
    """Before each push of the worker under test, the quicker worker pushes first (while it has
    messages left); the worker's pushes, counted."""
    from dulwich.client import LocalGitClient

    send_pack, racing, pushes = LocalGitClient.send_pack, [], []

    def beaten(self, *args, **kwargs):
        if not racing:  # the worker under test (the quicker worker's own push goes through)
            pushes.append(1)
            racing.append(1)
            try:
                push_one()
            finally:
                racing.clear()
        return send_pack(self, *args, **kwargs)

    monkeypatch.setattr(LocalGitClient, "send_pack", beaten)
    return pushes


def test_a_worker_that_keeps_losing_the_push_tries_again_while_its_function_has_time(
        sqs, settings, worker, send, monkeypatch, tmp_path):
    """QA, session 37: 5 tries, then the whole batch failed (and waited out the visibility timeout,
    toward the dead-letter queue), however much of the function's time was left. Now it tries
    until its time (Lambda's context) is nearly over; here it loses 7 times, then pushes."""
    slow = send("slow")
    quick, push_one = quicker_worker(settings, tmp_path, 7)
    monkeypatch.setattr(cloud, "PAUSE_SECONDS", 0.001)
    pushes = losing_every_push(monkeypatch, push_one)
    cloud.publish_all(settings)
    assert worker(receive(sqs), LambdaContext(600)) == {"batchItemFailures": []}
    assert len(pushes) == 8
    with remote(settings) as archive, db.connection(settings) as conn:
        assert messages_in(archive) == sorted([slow, *quick])
        assert verify_archive(conn, archive) == {"missing": [], "unexpected": [], "different": [], "foreign": []}
    assert invoke.call(TOOLS["archive_status"], {}, settings).pending == 0


def test_a_worker_out_of_time_fails_its_batch_without_trying_again(sqs, settings, worker, send, monkeypatch, tmp_path):
    """Out of time (Lambda's context: PUSH_MARGIN_SECONDS left), the first lost push fails the
    batch at once, while there is time to count the attempt on its rows; SQS delivers it again."""
    send("slow")
    _, push_one = quicker_worker(settings, tmp_path, 3)
    pushes = losing_every_push(monkeypatch, push_one)
    cloud.publish_all(settings)
    with pytest.raises(RuntimeError, match="no time left"):
        worker(receive(sqs), LambdaContext(cloud.PUSH_MARGIN_SECONDS))
    assert len(pushes) == 1
    status = invoke.call(TOOLS["archive_status"], {}, settings)
    assert status.pending == status.failed == 5 and "lost to other pushes" in status.failed_error


def test_a_batch_whose_push_keeps_failing_is_counted_and_published_again_after_the_dead_letter_queue(
        sqs, settings, worker, send, monkeypatch, tmp_path):
    """And (QA, session 40) a poison entry in such a batch counts its attempts too: it did not."""
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        outbox.record(conn, "cloud", "message", 1, {"sender": "../../escape", "subject": "x"})  # in the same batches
    mid = send("important")
    down = settings.model_copy(update={"archive_git_remote": str(tmp_path / "unreachable.git")})  # the git host is down
    assert cloud.publish_all(settings) == 1 + 1 + 3 + 1
    receives = 0
    while (event := receive(sqs))["Records"]:
        receives += 1
        with pytest.raises(Exception):  # Lambda fails the whole batch; SQS delivers it again
            cloud.handle_sqs_event(event, down)
        assert receives <= MAX_RECEIVES
    assert sqs[0].receive_message(QueueUrl=sqs[2], MaxNumberOfMessages=10)["Messages"]  # dead-lettered
    status = invoke.call(TOOLS["archive_status"], {}, settings)
    assert status.pending == 6 and status.failed == 6  # each counted its attempts
    with db.connection(settings) as conn:
        attempts, error = conn.execute("SELECT attempts, last_error FROM archive_outbox WHERE entity_id = 1").fetchone()
    assert attempts == receives and error, (attempts, error)  # (its own error: it cannot be rendered)
    assert cloud.publish_all(settings) == 0  # the queue may still be trying: not before its deadline

    deadline = clock.later(clock.now(), cloud.QUEUED_MAX_SECONDS + 1)
    monkeypatch.setattr(clock, "now", lambda: deadline)
    assert cloud.publish_all(settings) == 6  # the git host is back; the sweep publishes them again
    event = receive(sqs)
    assert [item["itemIdentifier"] for item in worker(event, CONTEXT)["batchItemFailures"]] == [
        record["messageId"] for record in event["Records"] if json.loads(record["body"])["entry"].get("sender") == "../../escape"]
    with remote(settings) as archive:
        assert messages_in(archive) == [mid]
    assert invoke.call(TOOLS["archive_status"], {}, settings).pending == 1  # the poison entry, still visible


def test_a_push_the_remote_itself_refuses_fails_the_batch_after_a_few_tries(sqs, settings, worker, send, monkeypatch):
    """Not a race lost (the remote's branch did not move): a hook or a protected branch says no.
    Tried PUSH_REFUSALS times, not again and again until the function's time is over."""
    from dulwich.client import LocalGitClient, SendPackResult

    from chalicelib.archive.gitrepo import BRANCH

    send("refused")
    monkeypatch.setattr(cloud, "PAUSE_SECONDS", 0.001)
    pushes = []

    def declined(self, path, update_refs, generate_pack_data, *args, **kwargs):  # what a pre-receive hook's "no" gives
        pushes.append(1)
        return SendPackResult({}, ref_status={BRANCH: "pre-receive hook declined"})

    monkeypatch.setattr(LocalGitClient, "send_pack", declined)
    cloud.publish_all(settings)
    with pytest.raises(RuntimeError, match="refused the push 5 times: pre-receive hook declined"):
        worker(receive(sqs), LambdaContext(600))
    assert len(pushes) == cloud.PUSH_REFUSALS


def test_a_failed_batch_is_received_again_soon_not_after_the_visibility_timeout(
        sqs, settings, send, monkeypatch, tmp_path):
    """The queue's visibility timeout is 6 x the worker's (1800 s: a cold worker clones the archive):
    a batch that failed waited that long for its next try, its project's later messages behind it
    (FIFO). retry_later brings it back after RETRY_VISIBILITY_SECONDS, doubling with its receives."""
    client, queue, _ = sqs
    send("important")
    cloud.publish_all(settings)
    down = settings.model_copy(update={"archive_git_remote": str(tmp_path / "unreachable.git")})
    for _ in range(2):
        messages = client.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, AttributeNames=["All"],
                                          VisibilityTimeout=cloud.VISIBILITY_SECONDS)["Messages"]  # as the template's queue
        event = {"Records": [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                              "attributes": m["Attributes"]} for m in messages]}
        with pytest.raises(Exception):
            cloud.handle_sqs_event(event, down)
    assert len(messages) == 5  # visible again at once (RETRY_VISIBILITY_SECONDS is 0 here), not in 1800 s
    changed = []
    cloud.sqs_client().meta.events.register("before-parameter-build.sqs.ChangeMessageVisibilityBatch",
                                            lambda params, **_: changed.extend(entry["VisibilityTimeout"] for entry in params["Entries"]))
    monkeypatch.setattr(cloud, "RETRY_VISIBILITY_SECONDS", 60)
    cloud.retry_later(settings, [{"receiptHandle": messages[0]["ReceiptHandle"], "attributes": {"ApproximateReceiveCount": str(n)}}
                                 for n in (1, 2, 5, 9)])
    assert changed[-4:] == [60, 120, 960, cloud.VISIBILITY_SECONDS]


def sqs_hook(hook) -> None:
    """`hook(params)` sees (and may refuse) every SendMessageBatch publish makes, before it is sent."""
    cloud.sqs_client().meta.events.register("before-parameter-build.sqs.SendMessageBatch", lambda params, **_: hook(params))


def rows_by_state(settings) -> dict[str, list]:
    with db.connection(settings) as conn:
        rows = conn.execute("SELECT state, attempts, last_error, payload FROM archive_outbox ORDER BY id").fetchall()
    states: dict[str, list] = {}
    for row in rows:
        states.setdefault(row["state"], []).append((json.loads(row["payload"]).get("subject"), row["attempts"], row["last_error"]))
    return states


def test_large_entries_go_in_batches_sqs_takes(sqs, settings, worker, send):
    """QA, session 31: publish put 10 rows in a SendMessageBatch whatever their size; five build logs
    of 220 KB made a batch over SQS's 1 MiB (moto refuses it, as SQS does), publish raised before it
    marked any row, and every later publish built the same batch: no project's archive moved again."""
    batches = []
    sqs_hook(lambda params: batches.append(sum(len(e["MessageBody"].encode()) for e in params["Entries"])))
    logs = [invoke.call(TOOLS["send_message"], {"project_key": "cloud", "sender_name": "BlueLake", "to": ["GreenCastle"],
                                                "subject": f"log {n}", "body_md": "x" * 220_000}, settings).message.id
            for n in range(5)]
    assert cloud.publish_all(settings) == 1 + 3 + 5
    assert max(batches) <= cloud.BATCH_MAX_BYTES < 1024 * 1024 < sum(batches)
    assert list(rows_by_state(settings)) == ["queued"]
    while (event := receive(sqs))["Records"]:
        acknowledge(sqs, event, worker(event, CONTEXT))
    with remote(settings) as archive:
        assert messages_in(archive) == sorted(str(mid) for mid in logs)


def test_a_batch_sqs_refuses_is_backed_off_and_then_only_its_culprit_alone(sqs, settings, worker, send, monkeypatch):
    """QA, session 31: an exception from SendMessageBatch escaped publish: no row was marked, the
    same oldest rows came first in every later publish, and the sweep stopped before its pruning
    and its metrics. Now the refused batch's rows wait for their retry (rows behind them go on),
    then go alone: the one SQS refuses is backed off on its own."""
    def refuse(params):
        if any("refused by SQS" in e["MessageBody"] for e in params["Entries"]):
            raise ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "refused"}}, "SendMessageBatch")

    sqs_hook(refuse)
    good, bad = send("fine"), send("refused by SQS")
    metrics, pruned = [], []
    monkeypatch.setattr(logs, "metrics_line", lambda measured, **_: metrics.append(measured))
    prune = outbox.prune
    monkeypatch.setattr(outbox, "prune", lambda conn, days: pruned.append(days) or prune(conn, days))
    importlib.import_module("app").create_app(settings).handler_map["archive_sweep"](SCHEDULED, CONTEXT)
    assert pruned and "ArchiveLagSeconds" in metrics[0]  # the sweep went on to its pruning and metrics
    assert list(rows_by_state(settings)) == ["pending"]  # the batch: 1 + 3 + 2 rows, each counted and backed off
    assert {(attempts, error) for _, attempts, error in rows_by_state(settings)["pending"]} == {
        (1, "SQS: ClientError: An error occurred (InvalidParameterValue) when calling the SendMessageBatch operation: refused")}

    behind = send("behind")  # not held up by the rows waiting for their retry
    assert cloud.publish_all(settings) == 1
    later = clock.later(clock.now(), settings.archive_retry_seconds + 1)
    monkeypatch.setattr(clock, "now", lambda: later)
    assert cloud.publish_all(settings) == 1 + 3 + 1  # each alone now: all but the culprit
    states = rows_by_state(settings)
    assert [(subject, attempts) for subject, attempts, _ in states["pending"]] == [("refused by SQS", 2)]
    while (event := receive(sqs))["Records"]:
        acknowledge(sqs, event, worker(event, CONTEXT))
    with remote(settings) as archive:
        assert messages_in(archive) == sorted([good, behind]) and bad not in messages_in(archive)


def test_a_slug_over_sqs_s_128_characters_gets_a_bounded_stable_message_group(sqs, settings, worker):
    """QA, session 31: MessageGroupId was the slug, which is as long as the project's path; SQS
    refuses one over 128 characters (moto does not: the hook checks SQS's rule), and every batch
    with such a project's rows failed, other projects' too."""
    groups = []

    def sqs_rule(params):
        for entry in params["Entries"]:
            groups.append(entry["MessageGroupId"])
            if not re.fullmatch(r"[!-~]{1,128}", entry["MessageGroupId"]):
                raise ClientError({"Error": {"Code": "InvalidParameterValue", "Message": "MessageGroupId can only include"
                                             " alphanumeric and punctuation characters. 1 to 128 in length."}}, "SendMessageBatch")

    sqs_hook(sqs_rule)
    deep = "/home/dev/src/github.com/example-org/platform-monorepo/services/billing/invoice-generation/" + "x" * 60
    slugs = [invoke.call(TOOLS["ensure_project"], {"human_key": key}, settings).slug for key in (deep, deep + "y", "/short")]
    for slug in slugs:
        invoke.call(TOOLS["register_agent"], {"project_key": slug, "program": "p", "model": "m", "name": "BlueLake"}, settings)
    assert cloud.publish_all(settings) == 3 * 2
    assert len(slugs[0]) > 128 and [cloud.message_group(slug) for slug in slugs] == groups[:3] == groups[3:]  # projects, then profiles
    assert len(set(groups)) == 3 and groups[2] == "short"  # one group a project; a short slug is its own
    assert worker(receive(sqs), CONTEXT) == {"batchItemFailures": []}
    with remote(settings) as archive:
        assert json.loads(archive.read(f"projects/{slugs[0]}/project.json"))["human_key"] == deep


def test_a_project_json_someone_pushed_with_conflict_markers_does_not_stop_the_project_s_archiving(
        sqs, settings, worker, send, tmp_path):
    """QA, session 36: a person who merged into the remote and left a merge's conflict markers in
    project.json made every entry of that project fail (the writer parsed the file to keep the
    newer version, and to check whose folder it is), delivery after delivery, to the dead-letter
    queue: the project's mail never reached the archive again. The file says nothing now: the
    entry's replaces it."""
    import os
    import subprocess

    send("before")
    cloud.publish_all(settings)
    worker(receive(sqs), CONTEXT)
    where = ["git", "--git-dir", settings.archive_git_remote, "--work-tree", str(tmp_path)]
    env = {**os.environ, "GIT_INDEX_FILE": str(tmp_path / "hand-index")}

    def git(*args, given=None):
        return subprocess.run([*where, *args], input=given, env=env, check=True, capture_output=True).stdout.decode().strip()

    git("read-tree", "HEAD")
    blob = git("hash-object", "-w", "--stdin", given=b"<<<<<<< HEAD\n{}\n=======\n>>>>>>> theirs\n")
    git("update-index", "--cacheinfo", f"100644,{blob},projects/cloud/project.json")
    git("update-ref", "HEAD", git("-c", "user.name=a", "-c", "user.email=a@b", "commit-tree", git("write-tree"), "-p", "HEAD",
                                  "-m", "a merge gone wrong"))
    after = send("after")
    cloud.publish_all(settings)
    assert worker(receive(sqs), CONTEXT) == {"batchItemFailures": []}
    with remote(settings) as archive:
        assert after in messages_in(archive)
        assert json.loads(archive.read("projects/cloud/project.json"))["human_key"] == "/cloud"


def test_a_warm_worker_on_a_turso_replica_marks_done_the_entries_sent_since_its_last_pull(sqs, tmp_path):
    """QA, session 36: the worker read and marked the outbox on its replica as it was (pulled at most
    REPLICA_MAX_STALENESS_MS ago), and a warm worker gets entries written after that: its mark_done
    matched no row (archived, yet `queued` until the sweep's deadline an hour later: the lag alarm, and
    everything of the project published again), and an entry too large for SQS, read from its row,
    failed as poison (TypeError) on its way to the dead-letter queue."""
    from chalicelib.config import Settings

    from .turso import turso_server

    GitArchive(tmp_path / "remote.git", bare=True).close()
    with turso_server(tmp_path) as primary:
        common = {"turso_sync_url": primary.url, "archive_queue_url": sqs[1], "archive_git_remote": str(tmp_path / "remote.git")}
        api = Settings(database_url=f"sqlite:///{tmp_path}/api.db", **common)  # two containers: the API's, the worker's
        warm = Settings(database_url=f"sqlite:///{tmp_path}/worker.db", archive_work_dir=tmp_path / "clone",
                        replica_max_staleness_ms=60_000, **common)  # its last pull (migrations) is before the rows, whatever the timing
        worker = importlib.import_module("app").create_app(warm).handler_map["archive_worker"]
        invoke.call(TOOLS["ensure_project"], {"human_key": "/cloud"}, api)
        for name in ("BlueLake", "GreenCastle"):
            invoke.call(TOOLS["register_agent"], {"project_key": "cloud", "program": "p", "model": "m", "name": name}, api)
        invoke.call(TOOLS["set_contact_policy"], {"project_key": "cloud", "agent_name": "GreenCastle", "policy": "open"}, api)
        ids = [invoke.call(TOOLS["send_message"], {"project_key": "cloud", "sender_name": "BlueLake", "to": ["GreenCastle"],
                                                   "subject": subject, "body_md": text}, api).message.id
               for subject, text in (("small", "x"), ("large", "y" * (cloud.MAX_BODY + 1)))]
        cloud.publish_all(api)
        event = receive(sqs)
        assert sum("entry" not in json.loads(record["body"]) for record in event["Records"]) == 1  # the large one
        assert worker(event, CONTEXT) == {"batchItemFailures": []}
        with remote(api) as archive:
            assert messages_in(archive) == sorted(str(mid) for mid in ids)
        with db.connection(api, fresh=True) as conn:
            assert {row[0] for row in conn.execute("SELECT state FROM archive_outbox")} == {"done"}


def test_a_git_lock_left_in_the_warm_clone_by_a_killed_invocation_does_not_stop_the_worker(sqs, settings, worker, send):
    """QA, session 36: an invocation killed mid-commit (the function's timeout; its container and /tmp
    stay) left the clone's ref locked, and every later batch of that container failed on the lock
    (dulwich FileLocked), delivery after delivery to the dead-letter queue. Lambda runs one invocation
    at a time in a container, so a lock found as a batch starts is a dead one's."""
    send("first")
    cloud.publish_all(settings)
    assert worker(receive(sqs), CONTEXT) == {"batchItemFailures": []}
    (settings.archive_work_dir / "refs" / "heads" / "main.lock").write_bytes(b"")  # killed while moving the branch
    later = send("later")
    cloud.publish_all(settings)
    assert worker(receive(sqs), CONTEXT) == {"batchItemFailures": []}
    with remote(settings) as archive:
        assert later in messages_in(archive)
    assert invoke.call(TOOLS["archive_status"], {}, settings).pending == 0


def archive_as_sent(sqs, worker_settings) -> None:
    """Lambda's queue mapping at its quickest: each SendMessageBatch's messages are archived (and
    their rows marked done by the worker) before publish has its answer."""
    worker = importlib.import_module("app").create_app(worker_settings).handler_map["archive_worker"]

    def deliver(**_):
        event = receive(sqs)
        acknowledge(sqs, event, worker(event, CONTEXT))

    cloud.sqs_client().meta.events.register("after-call.sqs.SendMessageBatch", deliver)


def test_a_row_the_worker_archives_before_publish_has_its_answer_stays_done(sqs, settings, send):
    """QA, session 36: publish marked its rows `queued` after SendMessageBatch, so a worker quicker
    than that write (a publisher whose Turso push was retrying) had its `done` turned back to
    `queued`: each such row waited for the sweep's deadline an hour later (the lag alarm) and was
    published again. Now rows are marked before they are sent."""
    mid = send("quick")
    archive_as_sent(sqs, settings)
    assert cloud.publish_all(settings) == 1 + 3 + 1
    assert list(rows_by_state(settings)) == ["done"]
    with remote(settings) as archive:
        assert messages_in(archive) == [mid]


def test_on_turso_a_stale_publisher_does_not_push_queued_over_the_worker_s_done(sqs, tmp_path):
    """The same race between two replicas (one push of a row's column wins over another: the
    publisher's replica, not pulled since, pushed `queued` over the worker's `done`)."""
    from chalicelib.config import Settings

    from .turso import turso_server

    GitArchive(tmp_path / "remote.git", bare=True).close()
    with turso_server(tmp_path) as primary:
        common = {"turso_sync_url": primary.url, "archive_queue_url": sqs[1], "archive_git_remote": str(tmp_path / "remote.git")}
        api = Settings(database_url=f"sqlite:///{tmp_path}/api.db", replica_max_staleness_ms=60_000, **common)  # no pull in between
        warm = Settings(database_url=f"sqlite:///{tmp_path}/worker.db", archive_work_dir=tmp_path / "clone", **common)
        invoke.call(TOOLS["ensure_project"], {"human_key": "/cloud"}, api)
        invoke.call(TOOLS["register_agent"], {"project_key": "cloud", "program": "p", "model": "m", "name": "BlueLake"}, api)
        archive_as_sent(sqs, warm)
        assert cloud.publish_all(api) == 2
        with db.connection(api, fresh=True) as conn:
            assert {row[0] for row in conn.execute("SELECT state FROM archive_outbox")} == {"done"}


def test_rows_marked_queued_by_a_process_that_died_before_sending_them_are_published_after_the_deadline(
        sqs, settings, worker, send, monkeypatch):
    """Marked before the send: a publisher killed in between (its function's timeout) leaves them
    queued, unsent; the sweep's deadline takes them back, as a message lost by the queue."""
    mid = send("orphan")

    alive = []

    def killed(params):
        if not alive:
            alive.append(True)  # (once: the process that comes next sends)
            raise SystemExit("the function's timeout")

    sqs_hook(killed)
    with pytest.raises(SystemExit):
        cloud.publish_all(settings)
    assert list(rows_by_state(settings)) == ["queued"] and cloud.publish_all(settings) == 0
    deadline = clock.later(clock.now(), cloud.QUEUED_MAX_SECONDS + 1)
    monkeypatch.setattr(clock, "now", lambda: deadline)
    assert cloud.publish_all(settings) == 1 + 3 + 1
    assert worker(receive(sqs), CONTEXT) == {"batchItemFailures": []}
    with remote(settings) as archive:
        assert messages_in(archive) == [mid]
