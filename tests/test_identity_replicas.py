"""Read your writes across Turso replicas: a miss on a replica pulls and retries before not-found."""

import time

import httpx
import pytest

from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.errors import NotFound
from chalicelib.store import replica
from chalicelib.tools import tools_by_name

from .servers import running_server
from .turso import turso_server

TOOLS = tools_by_name()
PROJECT = "/work/ryw"


def call(settings: Settings, tool: str, **arguments) -> dict:
    return invoke.call(TOOLS[tool], arguments, settings).model_dump(mode="json")


def test_register_on_replica_a_then_send_through_replica_b_50ms_later(tmp_path):
    with turso_server(tmp_path) as primary:
        a, b = (Settings(database_url=f"sqlite:///{tmp_path}/{name}.db", turso_sync_url=primary.url) for name in "ab")
        call(a, "ensure_project", human_key=PROJECT)
        call(a, "register_agent", project_key=PROJECT, program="p", model="m", name="BlueLake")
        call(a, "set_contact_policy", project_key=PROJECT, agent_name="BlueLake", policy="open")
        call(b, "list_projects")  # b has pulled: from now on its data is younger than a second
        failures = []
        for number in range(100):
            name = f"Agent{number}"
            call(a, "register_agent", project_key=PROJECT, program="p", model="m", name=name)
            time.sleep(0.05)
            try:  # the new agent, as sender, is looked up on b
                call(b, "send_message", project_key=PROJECT, sender_name=name, to=["BlueLake"], subject=f"#{number}", body_md="x")
            except NotFound as exc:
                failures.append((number, exc.message))
        assert failures == []
        assert replica.replica(b).pulled_at > 0


def test_every_kind_of_lookup_retries_once_and_a_real_miss_is_still_not_found(tmp_path):
    with turso_server(tmp_path) as primary:
        a, b = (Settings(database_url=f"sqlite:///{tmp_path}/{name}.db", turso_sync_url=primary.url) for name in "ab")
        call(b, "list_projects")  # pulled now: fresh for a second
        call(a, "ensure_project", human_key=PROJECT)  # project
        assert call(b, "get_project", project_key="work-ryw")["human_key"] == PROJECT
        for name in ("BlueLake", "GreenCastle"):  # agent
            call(a, "register_agent", project_key=PROJECT, program="p", model="m", name=name)
        assert call(b, "whois", project_key=PROJECT, agent_name="GreenCastle")["name"] == "GreenCastle"
        call(a, "set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="open")
        sent = call(a, "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"],  # message, thread
                    subject="s", body_md="b", thread_id="T-9")["message"]
        assert call(b, "get_message", project_key=PROJECT, message_id=sent["id"])["subject"] == "s"
        call(a, "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="s2",
             body_md="b", thread_id="T-10")
        assert call(b, "get_thread", project_key=PROJECT, thread_id="T-10")["messages"][0]["subject"] == "s2"
        call(a, "request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="GreenCastle")  # contact
        assert call(b, "respond_contact", project_key=PROJECT, to_agent="GreenCastle", from_agent="BlueLake",
                    accept=True)["status"] == "approved"
        with pytest.raises(NotFound, match="Nobody"):
            call(b, "whois", project_key=PROJECT, agent_name="Nobody")


def test_two_servers_on_two_replicas_read_their_writes(tmp_path):
    """The server's paths: writes through the writer thread (group commit), reads off the event loop."""
    with turso_server(tmp_path) as primary, \
            running_server(tmp_path / "a.db", TURSO_SYNC_URL=primary.url, ARCHIVE_ENABLED="false") as url_a, \
            running_server(tmp_path / "b.db", TURSO_SYNC_URL=primary.url, ARCHIVE_ENABLED="false") as url_b:
        a, b = httpx.Client(base_url=url_a, timeout=30), httpx.Client(base_url=url_b, timeout=30)
        a.post("/api/ensure_project", json={"human_key": PROJECT}).raise_for_status()
        a.post("/api/register_agent", json={"project_key": PROJECT, "program": "p", "model": "m", "name": "BlueLake"}).raise_for_status()
        a.post("/api/set_contact_policy", json={"project_key": PROJECT, "agent_name": "BlueLake", "policy": "open"}).raise_for_status()
        b.get("/api/list_projects").raise_for_status()
        answers = []
        for number in range(10):
            name = f"Agent{number}"
            a.post("/api/register_agent", json={"project_key": PROJECT, "program": "p", "model": "m", "name": name}).raise_for_status()
            time.sleep(0.05)
            sent = b.post("/api/send_message", json={"project_key": PROJECT, "sender_name": name, "to": ["BlueLake"],
                                                     "subject": f"#{number}", "body_md": "x"})
            answers.append((sent.status_code, sent.text[:200]))
            message = a.post("/api/send_message", json={"project_key": PROJECT, "sender_name": name, "to": ["BlueLake"],
                                                        "subject": f"re #{number}", "body_md": "y"}).json()["message"]
            time.sleep(0.05)
            read = b.get("/api/get_message", params={"project_key": PROJECT, "message_id": message["id"]})
            answers.append((read.status_code, read.text[:200]))
        assert [status for status, _ in answers] == [200] * 20, answers


def test_a_release_a_keyed_retry_and_an_approval_made_on_one_replica_hold_on_the_other_at_once(tmp_path):
    """What another replica's stale data would answer without an error: a hold released as not
    held (it stayed, blocking others), a keyed send run twice, an approved contact refused."""
    with turso_server(tmp_path) as primary:
        a, b = (Settings(database_url=f"sqlite:///{tmp_path}/{name}.db", turso_sync_url=primary.url) for name in "ab")
        call(a, "ensure_project", human_key=PROJECT)
        for name in ("BlueLake", "GreenCastle"):
            call(a, "register_agent", project_key=PROJECT, program="p", model="m", name=name)
        call(b, "list_projects")  # b has pulled: its data is fresh for a second
        call(a, "acquire_build_slot", project_key=PROJECT, agent_name="BlueLake", slot="deploy")
        assert call(b, "release_build_slot", project_key=PROJECT, agent_name="BlueLake", slot="deploy")["released"] is True
        held = call(a, "file_reservation_paths", project_key=PROJECT, agent_name="BlueLake", paths=["src/x.py"])["granted"]
        assert call(b, "renew_file_reservations", project_key=PROJECT, agent_name="BlueLake", extend_seconds=600)["renewed"] == 1
        assert call(b, "release_file_reservations", project_key=PROJECT, agent_name="BlueLake",
                    file_reservation_ids=[held[0]["id"]])["released"] == 1
        call(a, "request_contact", project_key=PROJECT, from_agent="BlueLake", to_agent="GreenCastle", reason="review")
        call(b, "list_projects")
        call(a, "respond_contact", project_key=PROJECT, agent_name="GreenCastle", from_agent="BlueLake", accept=True)
        call(b, "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="approved", body_md="x")
        call(a, "list_projects")
        sent = call(b, "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="keyed",
                    body_md="x", idempotency_key="pay-1")["message"]
        again = call(a, "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="keyed",
                     body_md="x", idempotency_key="pay-1")["message"]
        assert again["id"] == sent["id"]
        subjects = [m["subject"] for m in call(b, "fetch_inbox", project_key=PROJECT, agent_name="GreenCastle")["messages"]]
        assert sorted(subjects) == ["Contact request from BlueLake", "approved", "keyed"]


def test_an_agent_registered_on_one_replica_cannot_be_taken_over_through_another(tmp_path):
    """On B's stale data BlueLake, just registered through A, looked new, and a new agent needs
    no token: anyone registering it there got its identity (and a token of their own)."""
    from chalicelib.errors import Forbidden

    with turso_server(tmp_path) as primary:
        a, b = (Settings(database_url=f"sqlite:///{tmp_path}/{name}.db", turso_sync_url=primary.url, require_agent_tokens=True)
                for name in "ab")
        call(a, "ensure_project", human_key=PROJECT)
        call(b, "list_projects")  # b has pulled: fresh for a second
        token = call(a, "register_agent", project_key=PROJECT, program="p", model="m", name="BlueLake")["registration_token"]
        with pytest.raises(Forbidden):
            call(b, "register_agent", project_key=PROJECT, program="evil", model="m", name="BlueLake")
        other = call(b, "create_agent_identity", project_key=PROJECT, program="p", model="m", name_hint="BlueLake")
        assert other["name"] != "BlueLake"
        assert call(a, "whois", project_key=PROJECT, agent_name="BlueLake")["program"] == "p"
        call(a, "register_agent", project_key=PROJECT, program="p2", model="m", name="BlueLake", registration_token=token)


def test_a_token_an_unretire_and_an_unarchive_made_on_one_replica_hold_on_the_other_at_once(tmp_path):
    """B's refusals on data older than A's writes were answered, not retried after a pull: with
    agent tokens (every authenticated deployment) a new agent's token was "missing or wrong" (403),
    as was a rotated one, and an agent unretired or a project unarchived was still refused (409)."""
    with turso_server(tmp_path) as primary:
        a, b = (Settings(database_url=f"sqlite:///{tmp_path}/{name}.db", turso_sync_url=primary.url, require_agent_tokens=True)
                for name in "ab")
        call(a, "ensure_project", human_key=PROJECT)
        reader = call(a, "register_agent", project_key=PROJECT, program="p", model="m", name="GreenCastle")["registration_token"]
        call(a, "set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="open", registration_token=reader)

        def send(token: str, subject: str) -> None:
            call(b, "send_message", project_key=PROJECT, sender_name="BlueLake", sender_token=token, to=["GreenCastle"],
                 subject=subject, body_md="x")

        call(b, "list_projects")  # b has pulled: fresh for a second
        token = call(a, "register_agent", project_key=PROJECT, program="p", model="m", name="BlueLake")["registration_token"]
        send(token, "registered on a")
        call(b, "list_projects")
        token = call(a, "rotate_agent_token", project_key=PROJECT, agent_name="BlueLake", registration_token=token)["registration_token"]
        send(token, "rotated on a")
        call(a, "retire_agent", project_key=PROJECT, agent_name="BlueLake", registration_token=token)
        replica.replica(b).pull()  # b sees it retired
        call(a, "unretire_agent", project_key=PROJECT, agent_name="BlueLake", registration_token=token)
        send(token, "unretired on a")
        call(a, "archive_project", project_key=PROJECT)
        replica.replica(b).pull()
        call(a, "unarchive_project", project_key=PROJECT)
        send(token, "unarchived on a")
        subjects = {m["subject"] for m in call(b, "fetch_inbox", project_key=PROJECT, agent_name="GreenCastle",
                                                registration_token=reader)["messages"]}
        assert subjects >= {"registered on a", "rotated on a", "unretired on a", "unarchived on a"}


def test_a_call_waiting_on_a_new_replicas_download_sees_what_was_written_during_it(tmp_path, monkeypatch):
    """A bootstrap counted as a pull made when the download ended: a call that started after a
    write acknowledged during the download ran on the older copy, and its miss was not retried."""
    import threading

    with turso_server(tmp_path) as primary:
        a, b = (Settings(database_url=f"sqlite:///{tmp_path}/{name}.db", turso_sync_url=primary.url) for name in "ab")
        call(a, "ensure_project", human_key=PROJECT)
        download = replica.Replica._connect
        found = {}

        def whois() -> None:
            try:
                found["name"] = call(b, "whois", project_key=PROJECT, agent_name="LateAgent")["name"]
            except NotFound as exc:
                found["name"] = exc.message

        def slow_download(self):
            conn = download(self)  # its copy was taken before what follows
            if self.path.name == "b.db":
                call(a, "register_agent", project_key=PROJECT, program="p", model="m", name="LateAgent")
                later = threading.Thread(target=whois)  # starts after that write, waits for this download
                later.start()
                time.sleep(0.05)
                found["thread"] = later
            return conn

        monkeypatch.setattr(replica.Replica, "_connect", slow_download)
        call(b, "list_projects")
        found["thread"].join(30)
        assert found["name"] == "LateAgent"
