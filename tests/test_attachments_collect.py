"""Attachment content no message names is deleted by the retention run, and only that
(chalicelib/tools/attachment_refs.py, docs/attachments.md "Unused content"), on both backends:
uploads never sent, what purged mail named, content a send takes back in time, content
written again, and mail from before migration 0025."""

import base64
import os
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import clock
from chalicelib.attachments.storage import storage
from chalicelib.config import get_settings
from chalicelib.errors import InvalidArgument
from chalicelib.store import db
from chalicelib.tools.retention import run_retention

pytestmark = pytest.mark.both_backends
DELAY = 3600


@pytest.fixture
def collecting(settings, tmp_path, monkeypatch):
    """The settings of the run, and the handlers' (from the environment, as on a server)."""
    monkeypatch.setenv("ATTACHMENTS_DIR", str(tmp_path / "attachments"))
    monkeypatch.setenv("ATTACHMENT_DELETE_DELAY_SECONDS", str(DELAY))
    get_settings.cache_clear()
    yield settings.model_copy(update={"attachments_dir": tmp_path / "attachments", "attachment_delete_delay_seconds": DELAY})
    get_settings.cache_clear()


@pytest.fixture
def at(monkeypatch):
    """at(days, seconds=0): from now on the clock reads that far ahead."""

    def at(days: float, seconds: float = 0) -> None:
        ahead = datetime.now(timezone.utc) + timedelta(days=days, seconds=seconds)
        monkeypatch.setattr(clock, "now", lambda: ahead.isoformat(timespec="microseconds"))

    return at


def send_with(call, project, contents: dict[str, bytes], project_key=None, **by_sha):
    attachments = [{"name": name, "content_base64": base64.b64encode(data).decode()} for name, data in contents.items()]
    attachments += [{"name": name, "sha256": sha} for name, sha in by_sha.items()]
    return call("send_message", project_key=project_key or project, sender_name="BlueLake", to=["GreenCastle"],
                subject="files", body_md="see attached", attachments=attachments)["message"]


def stored(settings, sha: str) -> bool:
    return storage(settings).size(sha) is not None


def collected(settings) -> dict[str, int]:
    done = run_retention(settings)
    return {kind: done[kind] for kind in ("attachments_condemned", "attachments_deleted")}


def test_an_upload_never_sent_is_deleted_after_the_grace_and_the_delay(call, project, collecting, at):
    sent = send_with(call, project, {"named.txt": b"named content"})
    [named] = [item["sha256"] for item in sent["attachments"]]
    unsent = storage(collecting).put(b"uploaded, never sent")
    at(6)
    assert collected(collecting) == {"attachments_condemned": 0, "attachments_deleted": 0}  # younger than 7 days
    at(8)
    assert collected(collecting) == {"attachments_condemned": 1, "attachments_deleted": 0}
    assert collected(collecting) == {"attachments_condemned": 0, "attachments_deleted": 0}  # once; the delay runs
    at(8, DELAY + 1)
    assert collected(collecting) == {"attachments_condemned": 0, "attachments_deleted": 1}
    assert not stored(collecting, unsent) and stored(collecting, named)
    answer = call("get_attachment", project_key=project, agent_name="GreenCastle", message_id=sent["id"], sha256=named)
    assert base64.b64decode(answer["content_base64"]) == b"named content"


def test_purged_mail_frees_its_content_unless_other_mail_names_it(call, project, collecting, at, caught_up):
    """And (QA, session 40) only once the git archive holds the mail: a purge ahead of a lagging
    archive let the content go before the archive worker read it (its entry failed for good)."""
    only, shared = send_with(call, project, {"only.txt": b"only the purged mail", "shared.txt": b"shared"})["attachments"]
    call("ensure_project", human_key="/elsewhere")
    for name in ("BlueLake", "GreenCastle"):
        call("register_agent", project_key="elsewhere", program="p", model="m", name=name)
        call("set_contact_policy", project_key="elsewhere", agent_name=name, policy="open")
    send_with(call, project, {"shared.txt": b"shared"}, project_key="elsewhere")
    call("set_retention_policy", project_key=project, mode="purge", days=30)
    at(31)
    assert run_retention(collecting)["messages_purged"] == 0  # the archive has none of it yet
    caught_up()
    done = run_retention(collecting)
    assert (done["messages_purged"], done["attachments_condemned"]) == (1, 1)
    at(31, DELAY + 1)
    assert collected(collecting)["attachments_deleted"] == 1
    assert not stored(collecting, only["sha256"]) and stored(collecting, shared["sha256"])


def test_a_send_takes_condemned_content_back_in_the_first_half_of_the_delay_and_is_refused_after(
        call, project, collecting, at):
    send_with(call, project, {"named.txt": b"named content"})
    early, late = storage(collecting).put(b"sent early"), storage(collecting).put(b"sent late")
    at(8)
    assert collected(collecting)["attachments_condemned"] == 2
    deleted_after = clock.later(clock.now(), DELAY)  # the first run after this deletes it (the refusal's hint)
    at(8, DELAY / 2 - 60)
    sent = send_with(call, project, {}, **{"early.bin": early})
    at(8, DELAY / 2 + 60)
    messages = call("get_project", project_key=project)["messages"]
    with pytest.raises(InvalidArgument, match="is being deleted") as refused:
        send_with(call, project, {}, **{"late.bin": late})
    assert f"The first retention run after {deleted_after} deletes it" in refused.value.hint
    assert call("get_project", project_key=project)["messages"] == messages  # nothing sent
    at(8, DELAY + 1)
    assert collected(collecting)["attachments_deleted"] == 1
    assert stored(collecting, early) and not stored(collecting, late)
    assert call("get_message", project_key=project, message_id=sent["id"])["attachments"][0]["sha256"] == early
    at(20)  # named now: never condemned again
    assert collected(collecting) == {"attachments_condemned": 0, "attachments_deleted": 0}
    storage(collecting).put(b"sent late")  # uploaded again after its deletion: a send names it
    send_with(call, project, {}, **{"late.bin": late})


def test_content_written_again_after_its_condemnation_is_kept(call, project, collecting, at):
    send_with(call, project, {"named.txt": b"named content"})
    sha = storage(collecting).put(b"uploaded again")
    at(8)
    assert collected(collecting)["attachments_condemned"] == 1
    written = (datetime.now(timezone.utc) + timedelta(days=8, seconds=60)).timestamp()
    os.utime(storage(collecting).path(sha), (written, written))  # an upload of the same content, a minute later
    at(8, DELAY + 1)
    assert collected(collecting)["attachments_deleted"] == 0
    assert stored(collecting, sha)


def test_mail_from_before_migration_0025_keeps_its_content(call, project, collecting, at):
    kept = send_with(call, project, {"old.txt": b"attached before 0025", "again.txt": b"twice"})["attachments"]
    with db.connection(collecting) as conn:
        conn.execute("DROP TABLE attachment_refs")
        conn.execute("DROP TABLE attachment_condemned")
        conn.execute("DELETE FROM schema_migrations WHERE version LIKE '0025%'")
        if hasattr(conn, "replica"):
            conn.replica.push()
    db._migrated.clear()
    db.migrate(collecting)
    with db.connection(collecting) as conn:
        assert sorted(row[0] < 0 for row in conn.execute("SELECT id FROM attachment_refs")) == [True, True]
    at(30, DELAY + 1)
    collected(collecting)
    assert collected(collecting) == {"attachments_condemned": 0, "attachments_deleted": 0}
    assert all(stored(collecting, item["sha256"]) for item in kept)


@pytest.mark.sqlite_only
def test_a_database_collects_only_a_directory_holding_content_its_messages_name(call, project, collecting, at, tmp_path):
    """Two databases on one ATTACHMENTS_DIR: the one whose messages name content there claims it;
    the other, naming nothing there, never deletes from it (its run would condemn everything)."""
    send_with(call, project, {"named.txt": b"named content"})
    unsent = storage(collecting).put(b"uploaded, never sent")
    other = collecting.model_copy(update={"database_url": f"sqlite:///{tmp_path}/other.db"})
    at(8)
    assert collected(other)["attachments_condemned"] == 0
    assert collected(collecting)["attachments_condemned"] == 1
    assert (tmp_path / "attachments" / ".collected-for").read_text() == str(collecting.database_path.resolve())
    at(8, DELAY + 1)
    assert collected(other) == {"attachments_condemned": 0, "attachments_deleted": 0}
    assert collected(collecting)["attachments_deleted"] == 1
    assert not stored(collecting, unsent)
