"""Several Turso replicas (processes, as several Lambdas would be) on one real `tursodb` primary."""

import importlib
import json
import multiprocessing
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from chalice.test import Client

from chalicelib.store import db, replica
from chalicelib import invoke
from chalicelib.config import Settings
from chalicelib.errors import Conflict, Unavailable
from chalicelib.tools import tools_by_name

from .servers import ROOT, running_server
from .sql import sql
from .turso import turso_server

TOOLS = tools_by_name()
PROJECT = "/work/shared"
SPAWN = multiprocessing.get_context("spawn")  # fresh processes: nothing shared but the primary


def replica_settings(directory, name: str, url: str, **overrides) -> Settings:
    return Settings(database_url=f"sqlite:///{directory}/{name}.db", turso_sync_url=url, **overrides)


def call(settings: Settings, tool: str, **arguments) -> dict:
    return invoke.call(TOOLS[tool], arguments, settings).model_dump(mode="json")


def counts(settings: Settings) -> tuple:
    """(messages, recipients, agents) on this replica, freshly pulled."""
    with db.connection(settings) as conn:
        db.refresh(conn)
        query = "SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM message_recipients), (SELECT count(*) FROM agents)"
        return tuple(conn.execute(query).fetchone())


def correspondent(directory, url, me: str, peer: str, start, done) -> None:
    """One replica: sets up the shared project and agents, then sends 200 messages to `peer`."""
    settings = replica_settings(directory, me, url)
    call(settings, "ensure_project", human_key=PROJECT)
    for name in (me, "Shared"):  # "Shared": both replicas register the same agent
        call(settings, "register_agent", project_key=PROJECT, program="p", model="m", name=name)
        call(settings, "set_contact_policy", project_key=PROJECT, agent_name=name, policy="open")
    start.wait()  # both have pushed their agents
    with db.connection(settings) as conn:
        db.refresh(conn)
    for number in range(200):
        call(settings, "send_message", project_key=PROJECT, sender_name=me, to=[peer], cc=["Shared"],
             subject=f"{me} #{number}", body_md=f"message {number} from {me}")
    done.put(counts(settings))


def test_two_replicas_writing_concurrently_lose_nothing(tmp_path):
    with turso_server(tmp_path) as primary:
        start, done = SPAWN.Barrier(2), SPAWN.Queue()
        workers = [
            SPAWN.Process(target=correspondent, args=(tmp_path, primary.url, me, peer, start, done))
            for me, peer in (("BlueLake", "GreenCastle"), ("GreenCastle", "BlueLake"))
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=120)
            assert worker.exitcode == 0
        [done.get(timeout=5) for _ in workers]
        # Every replica (after a pull) and the primary (a fresh replica of it) hold everything.
        expected = (400, 800, 3)
        for name in ("BlueLake", "GreenCastle", "fresh"):
            assert counts(replica_settings(tmp_path, name, primary.url)) == expected
        # Neither replica is stuck: each still pushes, and sees the other's new write.
        blue, green = (replica_settings(tmp_path, name, primary.url) for name in ("BlueLake", "GreenCastle"))
        call(blue, "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="after", body_md="x")
        call(green, "send_message", project_key=PROJECT, sender_name="GreenCastle", to=["BlueLake"], subject="after", body_md="y")
        assert counts(blue) == counts(green) == (402, 802, 3)
        with db.connection(blue) as conn:  # both migrated at once; each migration is recorded once
            versions = [row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [version for version, _ in db.migrations()]
        inbox = call(green, "fetch_inbox", project_key=PROJECT, agent_name="GreenCastle", limit=200)["messages"]
        assert len(inbox) == 200 and {m["sender"] for m in inbox} == {"BlueLake"}
        hits = call(blue, "search_messages", project_key=PROJECT, query='"message 199"', limit=10)["results"]
        assert sorted(hit["subject"] for hit in hits) == ["BlueLake #199", "GreenCastle #199"]


def slot_racer(directory, url, me: str, rounds: int, barrier, results) -> None:
    settings = replica_settings(directory, me, url)
    call(settings, "ensure_project", human_key=PROJECT)
    call(settings, "register_agent", project_key=PROJECT, program="p", model="m", name=me)
    barrier.wait()
    for number in range(rounds):
        barrier.wait()
        try:
            call(settings, "acquire_build_slot", project_key=PROJECT, agent_name=me, slot="deploy", ttl_seconds=60)
            won = True
        except Conflict:
            won = False
        barrier.wait()  # both have answered: the winner releases for the next round
        if won:
            call(settings, "release_build_slot", project_key=PROJECT, agent_name=me, slot="deploy")
        results.put((number, me, won))
        barrier.wait()


def test_two_replicas_racing_for_a_slot_get_exactly_one_winner(tmp_path):
    rounds = 50
    with turso_server(tmp_path) as primary:
        barrier, results = SPAWN.Barrier(2), SPAWN.Queue()
        racers = [SPAWN.Process(target=slot_racer, args=(tmp_path, primary.url, me, rounds, barrier, results))
                  for me in ("BlueLake", "GreenCastle")]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=240)
            assert racer.exitcode == 0
        winners: dict[int, list[str]] = {}
        for _ in range(2 * rounds):
            number, me, won = results.get(timeout=5)
            winners.setdefault(number, [])
            if won:
                winners[number].append(me)
        assert all(len(names) == 1 for names in winners.values()), winners
        assert len(winners) == rounds


def test_a_write_the_primary_never_got_is_refused_and_never_stored(tmp_path):
    with turso_server(tmp_path) as primary:
        # No pull before the write, however slow the machine: it is the push that must fail.
        settings = replica_settings(tmp_path, "lambda", primary.url, replica_sync_timeout_ms=300, replica_max_staleness_ms=600_000)
        call(settings, "ensure_project", human_key=PROJECT)
        for name in ("BlueLake", "GreenCastle"):
            call(settings, "register_agent", project_key=PROJECT, program="p", model="m", name=name)
            call(settings, "set_contact_policy", project_key=PROJECT, agent_name=name, policy="open")
        send = dict(project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], body_md="b")
        call(settings, "send_message", **send, subject="before")
        primary.kill()
        with pytest.raises(Unavailable, match="did not confirm the write"):
            call(settings, "send_message", **send, subject="lost")
        with pytest.raises(Unavailable, match="Turso"):  # the replica was discarded; a new one needs the primary
            call(settings, "fetch_inbox", project_key=PROJECT, agent_name="GreenCastle")
        primary.start()
        call(settings, "send_message", **send, subject="after")
        subjects = [m["subject"] for m in call(settings, "fetch_inbox", project_key=PROJECT, agent_name="GreenCastle")["messages"]]
        assert subjects == ["after", "before"]
        fresh = replica_settings(tmp_path, "fresh", primary.url)
        assert counts(fresh)[0] == 2


def test_killing_the_primary_mid_push_loses_no_acknowledged_write(tmp_path):
    """Concurrent sends through the real server while the primary is killed and restarted:
    every acknowledged message is on the primary; every other send got an error."""
    with turso_server(tmp_path) as primary, running_server(
        tmp_path / "server.db", TURSO_SYNC_URL=primary.url, REPLICA_SYNC_TIMEOUT_MS="3000", ARCHIVE_ENABLED="false"
    ) as url:
        client = httpx.Client(base_url=url, timeout=30)
        client.post("/api/ensure_project", json={"human_key": PROJECT}).raise_for_status()
        for name in ("BlueLake", "GreenCastle"):
            client.post("/api/register_agent", json={"project_key": PROJECT, "program": "p", "model": "m", "name": name}).raise_for_status()
            client.post("/api/set_contact_policy", json={"project_key": PROJECT, "agent_name": name, "policy": "open"}).raise_for_status()

        outcomes, stop = [], threading.Event()

        def keep_sending(sender: int) -> None:
            number = 0
            while not stop.is_set():
                started = time.monotonic()
                response = client.post("/api/send_message", json={
                    "project_key": PROJECT, "sender_name": "BlueLake", "to": ["GreenCastle"],
                    "subject": f"{sender}.{number}", "body_md": "b"})
                message_id = response.json()["message"]["id"] if response.status_code == 200 else None
                outcomes.append((response.status_code, message_id, started, time.monotonic()))
                number += 1

        with ThreadPoolExecutor(8) as pool:
            senders = [pool.submit(keep_sending, sender) for sender in range(8)]
            time.sleep(0.5)
            killed = time.monotonic()
            primary.kill()  # pushes are in flight: there is always one
            time.sleep(1.0)  # within REPLICA_SYNC_TIMEOUT_MS: pending pushes retry, then go through
            primary.start()
            restarted = time.monotonic()
            time.sleep(0.5)
            stop.set()
            [sender.result() for sender in senders]
        acknowledged = {message_id for status, message_id, _, _ in outcomes if status == 200}
        assert {status for status, *_ in outcomes} <= {200, 503}
        across = [o for o in outcomes if o[0] == 200 and o[2] < killed and o[3] > restarted]
        assert across, "no send was in flight across the outage"
        with sql(replica_settings(tmp_path, "fresh", primary.url)) as conn:
            stored = {str(row[0]) for row in conn.execute("SELECT id FROM messages")}
        assert acknowledged <= stored


def test_lambda_containers_share_the_primary(tmp_path):
    """Two Chalice apps (two Lambda containers), each with its replica in its own /tmp."""
    with turso_server(tmp_path) as primary:
        containers = []
        for name in ("container-a", "container-b"):
            settings = replica_settings(tmp_path, name, primary.url, replica_max_staleness_ms=0)
            app = importlib.import_module("app").create_app(settings)
            containers.append(Client(app, project_dir=str(ROOT)))

        def post(client, tool, **arguments):
            response = client.http.post(f"/api/{tool}", headers={"Content-Type": "application/json"}, body=json.dumps(arguments))
            assert response.status_code == 200, response.body
            return json.loads(response.body)

        a, b = containers
        post(a, "ensure_project", human_key=PROJECT)
        post(b, "register_agent", project_key=PROJECT, program="p", model="m", name="BlueLake")
        post(a, "register_agent", project_key=PROJECT, program="p", model="m", name="GreenCastle")
        post(b, "set_contact_policy", project_key=PROJECT, agent_name="GreenCastle", policy="open")
        sent = post(a, "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="hi", body_md="x")
        inbox = post(b, "fetch_inbox", project_key=PROJECT, agent_name="GreenCastle")["messages"]
        assert [m["id"] for m in inbox] == [sent["message"]["id"]]
        assert post(b, "search_messages", project_key=PROJECT, query="hi")["results"][0]["id"] == sent["message"]["id"]


def test_a_restarted_process_pulls_its_old_replica_before_reading(tmp_path):
    with turso_server(tmp_path) as primary:
        old, other = (replica_settings(tmp_path, name, primary.url) for name in ("old", "other"))
        call(old, "ensure_project", human_key=PROJECT)
        call(other, "ensure_project", human_key="/work/elsewhere")
        replica._replicas.made.clear()  # as in a new process: the replica file is all that is left
        keys = [project["human_key"] for project in call(old, "list_projects")["projects"]]
        assert sorted(keys) == ["/work/elsewhere", PROJECT]


def test_readiness_without_the_primary_answers_its_report_within_a_second_or_so(tmp_path):
    """QA, session 28: /ready of a replica whose primary was down took 19 s (a probe's pull, then
    the report's reads, each retrying for REPLICA_SYNC_TIMEOUT_MS) and answered the generic error
    shape, not its report: a load balancer's probe times out long before."""
    from chalicelib.ops import readiness

    with turso_server(tmp_path) as primary:
        settings = replica_settings(tmp_path, "server", primary.url)  # REPLICA_SYNC_TIMEOUT_MS: the default, 10 s
        call(settings, "ensure_project", human_key=PROJECT)
        assert readiness.report(settings, None)[0] == 200
        primary.kill()
        started = time.monotonic()
        status, body = readiness.report(settings, None)
        took = time.monotonic() - started
        primary.start()
    assert status == 503 and body["status"] == "unavailable" and "Turso primary (TURSO_SYNC_URL) did not answer" in body["problems"][0]
    assert took < settings.replica_sync_timeout_ms / 1000  # the probe's patience, 1 s, not a call's 10 (a bound, not a speed)


def as_a_new_process(settings: Settings) -> None:
    """The replica's connection closed and forgotten: the next call opens its file as a restarted process would."""
    old = replica.replica(settings)
    if old.conn is not None:
        old.conn.close()
    replica._replicas.made.clear()


def test_a_write_no_push_confirmed_never_reaches_the_primary_after_a_restart(tmp_path, monkeypatch):
    """QA, session 29: a process stopped while it pushed (its client got no answer) left the write
    in its replica file; restarted on it, the next write's push took it to the primary, unannounced."""
    with turso_server(tmp_path) as primary:
        settings = replica_settings(tmp_path, "server", primary.url)
        call(settings, "ensure_project", human_key=PROJECT)
        with monkeypatch.context() as stopped:  # committed here, then the process stops before its push
            stopped.setattr(replica.Replica, "push", lambda self: None)
            call(settings, "ensure_project", human_key="/work/in-doubt")
        as_a_new_process(settings)
        call(settings, "ensure_project", human_key="/work/after")
        keys = [project["human_key"] for project in call(replica_settings(tmp_path, "fresh", primary.url), "list_projects")["projects"]]
        assert sorted(keys) == ["/work/after", PROJECT]


def test_a_replica_whose_main_file_is_gone_is_made_anew(tmp_path):
    """QA, session 29: pyturso's files left without the main one (a discard cut short, a directory
    deleted under a running server) refused every later start: "main DB file doesn't exists"."""
    with turso_server(tmp_path) as primary:
        settings = replica_settings(tmp_path, "server", primary.url)
        call(settings, "ensure_project", human_key=PROJECT)
        as_a_new_process(settings)
        settings.database_path.unlink()
        assert [path.name for path in replica.replica_files(settings.database_path)]  # its companions stay
        assert [p["human_key"] for p in call(settings, "list_projects")["projects"]] == [PROJECT]


def test_doctor_without_the_primary_says_so(tmp_path):
    """QA, session 29: its checks said "RuntimeError: cannot release un-acquired lock" (a failed
    pull gave the lock back, then so did the check)."""
    from chalicelib.ops import doctor

    with turso_server(tmp_path) as primary:
        settings = replica_settings(tmp_path, "server", primary.url, replica_sync_timeout_ms=300)
        call(settings, "ensure_project", human_key=PROJECT)
        primary.kill()
        findings = doctor.examine(settings)
        primary.start()
    assert not [finding for finding in findings if "un-acquired lock" in finding.detail]
    assert [finding.check for finding in findings if "Turso replica pull failed" in finding.detail]


def test_stdio_on_a_replica_it_cannot_make_says_why_in_one_line(tmp_path):
    """QA, session 40: a primary that does not answer, or a replica file another process has open
    (the server's, given to stdio as the README's "the same database" reads), ended agent-mail
    stdio with a traceback and no answer to initialize; the second was blamed on the primary. Now
    its last line on stderr and the initialize's error say which, with what to do."""
    import os
    import subprocess
    import sys

    from .test_stdio_transport import initialize_line

    def stdio_on(settings: Settings) -> tuple[str, dict]:
        env = {**os.environ, "DATABASE_URL": settings.database_url, "TURSO_SYNC_URL": settings.turso_sync_url,
               "REPLICA_SYNC_TIMEOUT_MS": "300", "ARCHIVE_ENABLED": "false"}
        done = subprocess.run([sys.executable, "-m", "chalicelib", "stdio"], input=initialize_line(), capture_output=True,
                              env=env, cwd=ROOT, timeout=60)
        said = done.stderr.decode().splitlines()[-1]  # (after the replica's own warning in the log)
        assert done.returncode == 1 and "Traceback" not in done.stderr.decode(), done.stderr
        [answer] = map(json.loads, done.stdout.splitlines())
        assert "result" not in answer and answer["error"]["code"] == -32000, answer
        return said, answer["error"]

    with turso_server(tmp_path) as primary:
        gone = primary.url
    said, error = stdio_on(replica_settings(tmp_path, "nowhere", gone))
    assert said.startswith("agent-mail stdio: Turso replica bootstrap failed") and replica.UNREACHABLE_HINT in str(error)
    with turso_server(tmp_path) as primary:
        server = replica_settings(tmp_path, "server", primary.url)
        call(server, "ensure_project", human_key="/srv/shared")  # this process holds the replica file open
        said, error = stdio_on(server)
    assert "locked" in said and replica.LOCKED_HINT in str(error) and replica.UNREACHABLE_HINT not in str(error)


def test_a_read_through_a_replica_behind_undoes_no_acknowledgement(tmp_path):
    """QA, session 40: acknowledge through replica A, then mark read through replica B before B
    pulled: B's UPDATE assigned ack_ts its stale NULL and pushed it, and the acknowledgement was gone
    (13 of 20 through real servers), and a first read made through A was made again, later. Now the
    call decides on a freshly pulled replica, and writes only the marks it makes (calls at the same
    moment through two replicas undo nothing either)."""
    with turso_server(tmp_path) as primary:
        a, b, c = (replica_settings(tmp_path, name, primary.url, replica_max_staleness_ms=60_000) for name in "abc")
        call(a, "ensure_project", human_key=PROJECT)
        for name in ("BlueLake", "GreenCastle"):
            call(a, "register_agent", project_key=PROJECT, program="p", model="m", name=name)
            call(a, "set_contact_policy", project_key=PROJECT, agent_name=name, policy="open")
        sent = call(a, "send_message", project_key=PROJECT, sender_name="BlueLake", to=["GreenCastle"], subject="s", body_md="b")
        message = dict(project_key=PROJECT, agent_name="GreenCastle", message_id=sent["message"]["id"])
        assert call(b, "get_message", **message)["subject"] == "s"  # B has pulled the message; not again for a minute
        acked = call(a, "acknowledge_message", **message)
        read = call(b, "mark_message_read", **message)  # B pulls first (fresh): the first read and the ack are A's
        assert (read["read_ts"], read["ack_ts"]) == (acked["read_ts"], acked["ack_ts"])
        with db.connection(c) as conn:  # a new replica: what the primary holds
            [(read_ts, ack_ts)] = conn.execute("SELECT read_ts, ack_ts FROM message_recipients WHERE message_id = ?",
                                               (sent["message"]["id"],)).fetchall()
        assert (read_ts, ack_ts) == (acked["read_ts"], acked["ack_ts"])
