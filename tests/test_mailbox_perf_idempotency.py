"""A key of send_message/reply_message keeps the message's id, not the whole answer (its body a
second time); a retry reads the first answer back, the same as it was. Rows stored whole (before
this) still answer their retries."""

import base64

import orjson
import pytest

from .sql import sql

pytestmark = pytest.mark.both_backends


def stored(settings, key_count=1) -> list[str]:
    with sql(settings) as conn:
        rows = [row[0] for row in conn.execute("SELECT result_json FROM idempotency_keys ORDER BY id")]
    assert len(rows) == key_count
    return rows


def test_a_send_keeps_the_message_id_and_a_retry_reads_the_same_answer(call, project, settings):
    body = "a long body " * 2000
    arguments = dict(project_key=project, agent_name="BlueLake", to=["GreenCastle"], cc=["RedStone"], bcc=["RedStone"],
                     subject="Deploy", body_md=body, importance="high", ack_required=True, thread_id="OPS-1",
                     attachments=[{"name": "notes.txt", "content_base64": base64.b64encode(b"notes").decode()}],
                     idempotency_key="k-1")
    first = call("send_message", **arguments)
    [kept] = stored(settings)
    assert orjson.loads(kept) == [int(first["message"]["id"])]  # not the body again
    assert call("send_message", **arguments) == first
    reply = dict(project_key=project, agent_name="GreenCastle", message_id=first["message"]["id"], body_md="ok",
                 idempotency_key="r-1")
    answered = call("reply_message", **reply)
    assert call("reply_message", **reply) == answered
    assert len(stored(settings, key_count=2)[1]) < 40
    with sql(settings) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 2


def test_a_key_stored_with_the_whole_answer_still_answers(call, project, settings):
    first = call("send_message", project_key=project, agent_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                 idempotency_key="old")
    with sql(settings) as conn:  # as the code before kept it: the answer's JSON
        conn.execute("UPDATE idempotency_keys SET result_json = ?", (orjson.dumps(first).decode(),))
    again = call("send_message", project_key=project, agent_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b",
                 idempotency_key="old")
    assert again == first
