"""Idempotency keys: a retry returns the first result and changes nothing."""

import base64
import time

import httpx
import pytest

from chalicelib import invoke
from chalicelib.attachments import intake
from chalicelib.config import Settings, get_settings
from chalicelib.errors import Conflict
from chalicelib.tools import tools_by_name

from .servers import running_server
from .sql import sql
from .turso import turso_server

pytestmark = pytest.mark.both_backends
TOOLS = tools_by_name()


def count(settings, query):
    with sql(settings) as conn:
        return conn.execute(query).fetchone()[0]


def sent_args(project, **overrides):
    return dict(project_key=project, sender_name="BlueLake", to=["GreenCastle"], subject="Deploy", body_md="now") | overrides


def test_a_retried_send_is_stored_once(call, project, settings):
    first = call("send_message", **sent_args(project, idempotency_key="k-1"))
    retry = call("send_message", **sent_args(project, idempotency_key="k-1"))
    assert retry == first
    assert count(settings, "SELECT count(*) FROM messages") == 1
    other = call("send_message", **sent_args(project, idempotency_key="k-2"))
    assert other["message"]["id"] != first["message"]["id"]
    plain = [call("send_message", **sent_args(project)) for _ in range(2)]  # no key: two messages
    assert plain[0]["message"]["id"] != plain[1]["message"]["id"]


def test_a_retry_that_spells_the_project_otherwise_is_the_same_call(call, settings):
    """C:\\Users\\me\\shop, c:/Users/me/shop and its slug name one project: a retry under another
    spelling returns the first answer and sends nothing new."""
    slug = call("ensure_project", human_key="C:\\Users\\me\\shop")["slug"]
    for name in ("BlueLake", "GreenCastle"):
        call("register_agent", project_key=slug, program="p", model="m", name=name)
    call("set_contact_policy", project_key=slug, agent_name="GreenCastle", policy="open")
    first = call("send_message", **sent_args("C:\\Users\\me\\shop", idempotency_key="k"))
    for spelling in ("c:/Users/me/shop", "C:/Users/me//shop/", slug):
        assert call("send_message", **sent_args(spelling, idempotency_key="k")) == first
    assert count(settings, "SELECT count(*) FROM messages") == 1


def test_a_retry_that_cases_the_agents_otherwise_is_the_same_call(call, project, settings):
    """Agent names are case-insensitive: a retry naming redfox for RedFox was refused 409 (another call)."""
    first = call("send_message", **sent_args(project, idempotency_key="k", to=["GreenCastle", "RedStone@work-demo"]))
    retry = sent_args(project, idempotency_key="k", sender_name="bluelake", to=["greencastle", "REDSTONE@work-demo"])
    assert call("send_message", **retry) == first
    with pytest.raises(Conflict, match="already used"):  # another recipient is another call
        call("send_message", **retry | {"to": ["greencastle"]})
    assert count(settings, "SELECT count(*) FROM messages") == 1


def test_the_same_key_with_other_arguments_is_refused(call, project, settings):
    call("send_message", **sent_args(project, idempotency_key="k"))
    with pytest.raises(Conflict, match="already used") as refused:
        call("send_message", **sent_args(project, idempotency_key="k", body_md="something else"))
    assert refused.value.code == "idempotency_key_reused" and refused.value.status == 409
    assert count(settings, "SELECT count(*) FROM messages") == 1


def test_keys_are_per_agent(call, project, settings):
    call("send_message", **sent_args(project, idempotency_key="k"))
    call("send_message", **sent_args(project, sender_name="RedStone", idempotency_key="k"))
    assert count(settings, "SELECT count(*) FROM messages") == 2


def test_an_expired_key_runs_again(project, settings):
    expiring = settings.model_copy(update={"idempotency_key_ttl_seconds": 0})
    for _ in range(2):
        invoke.call(TOOLS["send_message"], sent_args(project, idempotency_key="k"), expiring)
        time.sleep(0.002)  # ids count milliseconds: the first is then older than "now - 0 s"
    assert count(settings, "SELECT count(*) FROM messages") == 2


def test_a_retried_send_with_attachments_replays_what_changed_since_would_refuse(call, project, settings, tmp_path,
                                                                                  monkeypatch):
    """A send's attachments are prepared before its write, with the send's refusals: a retry of a
    send that was delivered, after its recipient blocked the sender, got 409 "Nothing was
    delivered to any recipient" (a client trusting it sends again: the message twice)."""
    monkeypatch.setenv("ATTACHMENTS_DIR", str(tmp_path / "attachments"))  # handlers read it (get_settings)
    get_settings.cache_clear()
    notes = [{"name": "notes.txt", "content_base64": base64.b64encode(b"hello").decode()}]
    reply_args = dict(project_key=project, sender_name="GreenCastle", body_md="see", attachments=notes)
    first = call("send_message", **sent_args(project, idempotency_key="k", attachments=notes))
    reply = call("reply_message", **reply_args, message_id=first["message"]["id"], idempotency_key="r")
    for name in ("GreenCastle", "BlueLake"):
        call("set_contact_policy", project_key=project, agent_name=name, policy="block_all")
    prepared = []
    monkeypatch.setattr(intake, "prepare", lambda *args, real=intake.prepare: prepared.append(args) or real(*args))
    assert call("send_message", **sent_args(project, idempotency_key="k", attachments=notes)) == first
    assert call("reply_message", **reply_args, message_id=first["message"]["id"], idempotency_key="r") == reply
    assert prepared == []  # a replay converts nothing again
    with pytest.raises(Conflict) as refused:  # the key with another call: that, not the contact policy
        call("send_message", **sent_args(project, idempotency_key="k", attachments=notes, subject="Other"))
    assert refused.value.code == "idempotency_key_reused"
    assert count(settings, "SELECT count(*) FROM messages") == 2
    get_settings.cache_clear()


def test_a_failed_write_keeps_no_key(call, project, settings):
    with pytest.raises(Exception):
        call("send_message", **sent_args(project, to=["Nobody"], idempotency_key="k"))
    call("send_message", **sent_args(project, idempotency_key="k"))  # the key is still free
    assert count(settings, "SELECT count(*) FROM idempotency_keys") == 1


def test_every_retryable_write_takes_a_key(call, project, settings):
    message = call("send_message", **sent_args(project, ack_required=True))["message"]
    retried = {
        "reply_message": dict(project_key=project, message_id=message["id"], sender_name="GreenCastle", body_md="ok"),
        "mark_message_read": dict(project_key=project, agent_name="GreenCastle", message_id=message["id"]),
        "acknowledge_message": dict(project_key=project, agent_name="GreenCastle", message_id=message["id"]),
        "file_reservation_paths": dict(project_key=project, agent_name="BlueLake", paths=["src/*.py"], ttl_seconds=600),
        "acquire_build_slot": dict(project_key=project, agent_name="BlueLake", slot="ci"),
        "request_contact": dict(project_key=project, from_agent="RedStone", to_agent="BlueLake"),
    }
    for name, arguments in retried.items():
        assert TOOLS[name].idempotent
        first = call(name, **arguments, idempotency_key=f"key-{name}")
        assert call(name, **arguments, idempotency_key=f"key-{name}") == first, name
    assert count(settings, "SELECT count(*) FROM messages WHERE subject LIKE 'Re:%'") == 1


def test_a_retry_on_another_replica_returns_the_first_result(tmp_path):
    with turso_server(tmp_path) as primary:
        one, two = (Settings(database_url=f"sqlite:///{tmp_path}/{name}.db", turso_sync_url=primary.url) for name in ("a", "b"))
        invoke.call(TOOLS["ensure_project"], dict(human_key="/idem/replicas"), one)
        for name in ("BlueLake", "GreenCastle"):
            invoke.call(TOOLS["register_agent"], dict(project_key="idem-replicas", program="p", model="m", name=name), one)
            invoke.call(TOOLS["set_contact_policy"], dict(project_key="idem-replicas", agent_name=name, policy="open"), one)
        first = invoke.call(TOOLS["send_message"], sent_args("idem-replicas", idempotency_key="k"), one)
        retry = invoke.call(TOOLS["send_message"], sent_args("idem-replicas", idempotency_key="k"), two)
        assert retry.message.id == first.message.id
        inbox = invoke.call(TOOLS["fetch_inbox"], dict(project_key="idem-replicas", agent_name="GreenCastle"), two)
        assert len(inbox.messages) == 1


@pytest.mark.sqlite_only
def test_a_server_killed_between_commit_and_answer_does_not_duplicate_the_retry(tmp_path):
    database = tmp_path / "agent_mail.db"

    def post(url, tool, **arguments):
        return httpx.post(f"{url}/api/{tool}", json=arguments, timeout=20)

    with running_server(database) as url:
        post(url, "ensure_project", human_key="/idem/kill")
        for name in ("BlueLake", "GreenCastle"):
            post(url, "register_agent", project_key="idem-kill", program="p", model="m", name=name)
            post(url, "set_contact_policy", project_key="idem-kill", agent_name=name, policy="open")
    # No archive worker: the dying server would leave its worker process behind.
    with running_server(database, AGENT_MAIL_TEST_DIE_AFTER_COMMIT="1", ARCHIVE_ENABLED="false") as url:
        with pytest.raises(httpx.TransportError):  # the process died after the COMMIT, before answering
            post(url, "send_message", **sent_args("idem-kill", idempotency_key="retry-me"))
    with running_server(database) as url:
        retry = post(url, "send_message", **sent_args("idem-kill", idempotency_key="retry-me"))
        assert retry.status_code == 200
        [message] = post(url, "fetch_inbox", project_key="idem-kill", agent_name="GreenCastle").json()["messages"]
        assert message["id"] == retry.json()["message"]["id"]
        refused = post(url, "send_message", **sent_args("idem-kill", idempotency_key="retry-me", subject="other"))
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "idempotency_key_reused"
