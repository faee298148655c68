"""Retention (docs/retention.md): policies, purging, archive-only bodies, idle agents, ended leases."""

import importlib
import json

import pytest
from chalice.test import Client
from click.testing import CliRunner

from chalicelib.archive import rebuild
from chalicelib.archive.verify import verify as verify_archive
from chalicelib.archive.gitrepo import GitArchive
from chalicelib.archive.render import message_copies, message_path, parse_document
from chalicelib.archive.worker import drain
from chalicelib.config import Settings, get_settings
from chalicelib.errors import Conflict, InvalidArgument, NotFound
from chalicelib.ops import doctor
from chalicelib.store.idempotency import ResultGone
from chalicelib.store import db
from chalicelib.store.search_index import MERGE_ABOVE_SEGMENTS, fts_problem, fts_segments
from chalicelib.tools import reservations, retention
from chalicelib.tools.counts import mail_stamp, mail_total
from chalicelib.tools.retention import run_retention
from chalicelib.transports.cli import cli

from .servers import ROOT
from .test_archive import commit_by_hand
from .test_archive_worker import canonical

pytestmark = pytest.mark.both_backends


@pytest.fixture
def two_projects(call, send):
    """work-team (BlueLake, RedStone: 3 messages) and work-other (GreenCastle: 2 to itself)."""
    for key, names in (("/work/team", ("BlueLake", "RedStone")), ("/work/other", ("GreenCastle",))):
        call("ensure_project", human_key=key)
        for name in names:
            call("register_agent", project_key=key, program="p", model="m", name=name)
            call("set_contact_policy", project_key=key, agent_name=name, policy="open")
    sent = [send("BlueLake", ["RedStone"], subject=f"deploy plan {n}", body_md=f"rollback steps {n}") for n in range(3)]
    for n in range(2):
        send("GreenCastle", ["GreenCastle"], project="work-other", subject=f"deploy other {n}", body_md="rollback")
    return sent


def subjects(call, project: str, query: str) -> list[str]:
    return sorted(hit["subject"] for hit in call("search_messages", project_key=project, query=query)["results"])


def test_a_policy_is_set_read_and_reset(call, project):
    assert call("get_retention_policy", project_key=project) == {"project": project, "mode": None, "days": None}
    assert call("set_retention_policy", project_key=project, mode="purge", days=30)["mode"] == "purge"
    assert call("get_retention_policy", project_key=project) == {"project": project, "mode": "purge", "days": 30}
    assert call("set_retention_policy", project_key=project, mode=None)["days"] is None
    with pytest.raises(InvalidArgument):
        call("set_retention_policy", project_key=project, mode="purge", days=0)


def test_archive_only_is_refused_without_an_archive(call, project, monkeypatch):
    monkeypatch.setenv("ARCHIVE_ENABLED", "false")
    get_settings.cache_clear()
    try:
        with pytest.raises(Conflict, match="ARCHIVE_ENABLED"):  # a sound request this server is not set up for (409)
            call("set_retention_policy", project_key=project, mode="archive_only", days=30)
    finally:
        get_settings.cache_clear()


def test_by_default_mail_is_kept_forever(settings, call, two_projects, later):
    later(10 * 365)
    assert run_retention(settings)["messages_purged"] == 0
    assert call("get_project", project_key="work-team")["messages"] == 3


@pytest.mark.sqlite_only  # a replica's database has no FTS5 index
def test_a_run_merges_the_search_index_and_searches_find_the_same(settings, call, send, two_projects):
    for n in range(40):  # each send commits a segment of its own
        send("BlueLake", ["RedStone"], subject=f"status {n}", body_md=f"rollback window {n % 5} of cache{n % 7}")
    queries = ("rollback", "window 3", "cache4", "deploy plan", "status 17", "nothing here")

    def hits() -> dict[str, list[int]]:
        return {q: [hit["id"] for hit in call("search_messages", project_key="work-team", query=q, limit=100)["results"]] for q in queries}

    found = hits()
    assert len(found["rollback"]) == 43 and found["nothing here"] == []
    with db.connection(settings) as conn:
        assert fts_segments(conn) > MERGE_ABOVE_SEGMENTS  # what FTS5's automerge left
        assert run_retention(settings)["search_merge_steps"] >= 1
        assert fts_segments(conn) <= MERGE_ABOVE_SEGMENTS
        assert fts_problem(conn) is None
        assert run_retention(settings)["search_merge_steps"] == 0  # nothing left worth a write
    assert hits() == found


def test_purge_deletes_old_mail_of_that_project_only_in_bounded_batches(settings, call, two_projects, later, caught_up):
    assert subjects(call, "work-team", "rollback") == ["deploy plan 0", "deploy plan 1", "deploy plan 2"]  # indexed
    call("set_retention_policy", project_key="work-team", mode="purge", days=30)
    caught_up()
    later(29)
    assert run_retention(settings)["messages_purged"] == 0  # not old enough yet
    later(31)
    assert run_retention(settings, budget=2)["messages_purged"] == 2
    assert call("get_project", project_key="work-team")["messages"] == 1
    assert run_retention(settings, budget=2)["messages_purged"] == 1
    assert run_retention(settings)["messages_purged"] == 0
    team = call("get_project", project_key="work-team")
    assert team["messages"] == 0 and team["agents"] == 2
    assert call("fetch_inbox", project_key="work-team", agent_name="RedStone")["messages"] == []
    assert subjects(call, "work-team", "rollback") == []  # and the search index (FTS, or the replica's sidecar) agrees
    assert subjects(call, "work-other", "rollback") == ["deploy other 0", "deploy other 1"]
    assert call("get_project", project_key="work-other")["messages"] == 2
    with db.connection(settings) as conn:
        assert conn.execute("SELECT count(*) FROM message_recipients").fetchone()[0] == 2
        assert mail_total(conn) == 2  # all projects' mail, as a search's scope weighs it (counts.py)
        assert mail_stamp(conn) == (2, 3)  # and the purged, which a replica's search index follows


def test_a_run_that_purges_nothing_writes_nothing_of_the_project(settings, call, two_projects, later, caught_up):
    """QA, session 36: every run moved each purge project's purged_before_id up to its new cutoff,
    a write per project and run (with thousands of projects, as many), though it deleted nothing."""
    call("set_retention_policy", project_key="work-team", mode="purge", days=30)
    caught_up()
    later(31)
    assert run_retention(settings)["messages_purged"] == 3

    def mark() -> int:
        with db.connection(settings) as conn:
            return conn.execute("SELECT purged_before_id FROM projects WHERE slug = 'work-team'").fetchone()[0]

    purged = mark()
    assert purged is not None
    later(60)
    assert run_retention(settings)["messages_purged"] == 0
    assert mark() == purged


def test_the_server_default_applies_to_projects_without_a_policy(settings, call, two_projects, later, caught_up):
    call("set_retention_policy", project_key="work-other", mode="keep")
    caught_up()
    later(400)
    assert run_retention(settings.model_copy(update={"retention_mode": "purge"}))["messages_purged"] == 3
    assert call("get_project", project_key="work-other")["messages"] == 2


def test_archive_only_drops_bodies_the_archive_holds_and_nothing_else(settings, call, two_projects, later, tmp_path):
    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    call("set_retention_policy", project_key="work-team", mode="archive_only", days=30)
    subjects(call, "work-team", "rollback")  # indexed before
    later(31)
    assert run_retention(settings)["bodies_archived"] == 0  # the archive does not hold them yet
    with GitArchive.local(settings) as archive:
        assert drain(settings, archive) > 0
    assert run_retention(settings)["bodies_archived"] == 3
    assert run_retention(settings)["bodies_archived"] == 0  # done once
    [first, *_] = two_projects
    message = call("get_message", project_key="work-team", message_id=first["id"])
    assert message["subject"] == "deploy plan 0" and "the git archive keeps it" in message["body_md"]
    assert subjects(call, "work-team", "rollback") == []  # the body's words left the search index
    assert subjects(call, "work-team", "plan") == ["deploy plan 0", "deploy plan 1", "deploy plan 2"]  # subjects stay
    assert call("get_project", project_key="work-team")["messages"] == 3
    assert subjects(call, "work-other", "rollback") == ["deploy other 0", "deploy other 1"]



def test_the_note_replacing_an_archived_body_is_not_searchable(settings, call, two_projects, later, tmp_path):
    """QA, session 36: the note that replaces an archived body was indexed as its body, so a
    search for "archive", "git" or "database" matched every archived message."""
    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    call("set_retention_policy", project_key="work-team", mode="archive_only", days=30)
    send = dict(project_key="work-team", sender_name="BlueLake", to=["RedStone"])
    call("send_message", **send, subject="git hygiene", body_md="the database and the git archive")
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    later(31)
    assert run_retention(settings)["bodies_archived"] == 4
    for word in ("archived", "database", "git", "keeps"):  # the note's words: only the subject that has one
        assert subjects(call, "work-team", word) == (["git hygiene"] if word == "git" else []), word
    assert subjects(call, "work-team", "plan") == ["deploy plan 0", "deploy plan 1", "deploy plan 2"]
    assert "the git archive keeps it" in call("get_message", project_key="work-team", message_id=two_projects[0]["id"])["body_md"]
    if not settings.turso_sync_url:
        with db.connection(settings) as conn:
            assert fts_problem(conn) is None  # the index agrees with its content
    call("set_retention_policy", project_key="work-team", mode="purge", days=30)  # a purge deletes what was indexed
    with GitArchive.local(settings) as archive:
        drain(settings, archive)  # (a purge waits for the archive)
    assert run_retention(settings)["messages_purged"] == 4
    assert subjects(call, "work-team", "plan") == subjects(call, "work-team", "git") == []
    if not settings.turso_sync_url:
        with db.connection(settings) as conn:
            assert fts_problem(conn) is None

CLEAN = {"missing": [], "unexpected": [], "different": [], "foreign": []}


def archived_bodies(archive: GitArchive) -> list[str]:
    return sorted(parse_document(content)["body_md"] for content in canonical(archive.files()).values())


def test_archive_only_bodies_stay_in_the_archive_through_verify_repair_and_restore(settings, call, two_projects, later, tmp_path):
    """The archive holds the only copy of an archived body: verify accepts it, a repair never
    replaces it with the database's note, and a restore brings it back."""
    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    call("set_retention_policy", project_key="work-team", mode="archive_only", days=30)
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
        before = archived_bodies(archive)
    assert "rollback steps 0" in before
    later(31)
    assert run_retention(settings)["bodies_archived"] == 3
    with db.connection(settings) as conn, GitArchive.local(settings) as archive:
        assert verify_archive(conn, archive) == CLEAN
    assert doctor.archive(settings).ok
    [first, *_] = two_projects
    with db.connection(settings) as conn, db.transaction(conn, write=True):  # the rest of the document is still compared
        conn.execute("UPDATE messages SET importance = 'high' WHERE id = ?", (first["id"],))
    finding = doctor.archive(settings)
    assert not finding.ok and "3 different" in finding.detail  # its canonical file, outbox and inbox copies
    assert finding.repair(lambda total: lambda done: None).startswith("rewrote")
    with db.connection(settings) as conn, GitArchive.local(settings) as archive:
        assert verify_archive(conn, archive) == CLEAN
        assert archived_bodies(archive) == before  # the bodies, not the note
        entry = next(entry for entry in rebuild.message_entries(conn) if entry["id"] == first["id"])
        assert '"importance": "high"' in archive.read(message_path(entry)).decode()  # what was different is written
    restored = f"sqlite:///{tmp_path}/restored.db"
    result = CliRunner().invoke(cli, ["--database-url", restored, "db", "restore-from-archive"],
                                env={"ARCHIVE_DIR": str(settings.archive_dir)})
    assert result.exit_code == 0, result.output
    with db.connection(Settings(database_url=restored)) as conn:
        assert conn.execute("SELECT body_md FROM messages WHERE id = ?", (first["id"],)).fetchone()[0] == "rollback steps 0"


def test_an_archived_body_outlives_its_canonical_file_lost_or_forged(settings, call, two_projects, later, tmp_path):
    """QA, session 40: an archived body was read from the canonical file alone, so with that file
    lost verify called the intact copies different, and a repair wrote the note into all of them
    (restore then took the note for the body); with it forged, the repair copied the forgery. The
    body is now the one most of its files hold."""
    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    call("set_retention_policy", project_key="work-team", mode="archive_only", days=30)
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    later(31)
    assert run_retention(settings)["bodies_archived"] == 3
    [first, *_] = two_projects
    with db.connection(settings) as conn, GitArchive.local(settings) as archive:
        entry = next(entry for entry in rebuild.message_entries(conn) if entry["id"] == first["id"])
        path, true = message_path(entry), archive.read(message_path(entry))
    assert parse_document(true)["body_md"] == "rollback steps 0"
    for change, content, finding in (("lost", None, "missing"), ("forged", true.replace(b"rollback steps 0", b"FORGED"), "different")):
        commit_by_hand(settings.archive_dir, tmp_path, change, {path: content})
        with db.connection(settings) as conn, GitArchive.local(settings) as archive:
            assert verify_archive(conn, archive) == {**CLEAN, finding: [path]}  # that file alone, not its intact copies
        assert doctor.archive(settings).repair(lambda total: lambda done: None).startswith("rewrote")
        with db.connection(settings) as conn, GitArchive.local(settings) as archive:
            assert verify_archive(conn, archive) == CLEAN and archive.read(path) == true
            assert all(parse_document(archive.read(copy))["body_md"] == "rollback steps 0" for copy in message_copies(entry))


def test_purged_mail_stays_in_the_archive_and_verify_expects_it(settings, call, two_projects, later, tmp_path):
    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    call("set_retention_policy", project_key="work-team", mode="purge", days=30)
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    later(31)
    assert run_retention(settings, budget=2)["messages_purged"] == 2
    with db.connection(settings) as conn, GitArchive.local(settings) as archive:  # a run stopped at its budget (session 29:
        assert verify_archive(conn, archive) == CLEAN  # its purged files were unexpected, and doctor --repair brought them back)
    assert run_retention(settings)["messages_purged"] == 1
    with db.connection(settings) as conn, GitArchive.local(settings) as archive:
        assert len(canonical(archive.files())) == 5  # append-only: the archive keeps them
        assert verify_archive(conn, archive) == CLEAN
    assert doctor.archive(settings).ok
    with db.connection(settings) as conn, db.transaction(conn, write=True):  # a message lost otherwise still shows
        [(lost,)] = conn.execute("SELECT max(m.id) FROM messages m JOIN projects p ON p.id = m.project_id WHERE p.slug = 'work-other'")
        conn.execute("DELETE FROM message_recipients WHERE message_id = ?", (lost,))
        conn.execute("DELETE FROM messages WHERE id = ?", (lost,))
    with db.connection(settings) as conn, GitArchive.local(settings) as archive:
        [unexpected] = verify_archive(conn, archive)["unexpected"]
    assert unexpected.startswith("projects/work-other/messages/") and unexpected.endswith(f"__{lost}.md")


def test_a_purge_after_archive_only_goes_oldest_first_so_verify_and_repair_keep_purged_mail_out(settings, call, two_projects,
                                                                                                   later, tmp_path):
    """Bodies archived, then purge: a run stopped at its budget took the messages with bodies
    first (the newest), so the oldest kept fell below mail it deleted; verify called that mail
    unexpected and doctor --repair brought it back, bodies included."""
    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive"})
    call("set_retention_policy", project_key="work-team", mode="archive_only", days=30)
    with GitArchive.local(settings) as archive:
        drain(settings, archive)
    later(31)
    assert run_retention(settings, budget=1)["bodies_archived"] == 1  # the oldest
    call("set_retention_policy", project_key="work-team", mode="purge", days=30)
    with GitArchive.local(settings) as archive:
        drain(settings, archive)  # project.json says purge (and a purge waits for the archive)
    assert run_retention(settings, budget=2)["messages_purged"] == 2
    [*purged, kept] = two_projects
    assert call("get_message", project_key="work-team", message_id=kept["id"])["body_md"] == "rollback steps 2"
    for message in purged:
        with pytest.raises(NotFound):
            call("get_message", project_key="work-team", message_id=message["id"])
    with db.connection(settings) as conn, GitArchive.local(settings) as archive:
        assert verify_archive(conn, archive) == CLEAN
    assert doctor.archive(settings).ok


def test_idle_agents_are_retired_only_when_configured(settings, call, project, later):
    call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=["src/*"], ttl_seconds=30 * 86400)
    call("acquire_build_slot", project_key=project, agent_name="BlueLake", slot="deploy", ttl_seconds=30 * 86400)
    call("ensure_overseer", project_key=project)  # the person, as idle as the agents
    later(11)  # the reservation and the slot still run
    assert run_retention(settings)["agents_retired"] == 0  # off by default
    assert run_retention(settings.model_copy(update={"retention_agent_idle_days": 10}))["agents_retired"] == 3
    assert [a["name"] for a in call("list_agents", project_key=project)["agents"]] == ["Overseer"]  # a person is no agent
    assert call("list_file_reservations", project_key=project)["file_reservations"] == []  # released with it
    assert call("list_build_slots", project_key=project)["slots"] == []
    call("register_agent", project_key=project, program="p", model="m", name="Newcomer")
    assert call("acquire_build_slot", project_key=project, agent_name="Newcomer", slot="deploy")["agent"] == "Newcomer"  # free again
    sent = call("send_overseer_message", project_key=project, to=["Newcomer"], subject="Welcome", body_md="!")
    assert sent["message"]["sender"] == "Overseer"
    # Brought back, it counts as active from then (session 29: the next run retired it again)
    call("unretire_agent", project_key=project, agent_name="BlueLake")
    assert run_retention(settings.model_copy(update={"retention_agent_idle_days": 10}))["agents_retired"] == 0
    assert "BlueLake" in [a["name"] for a in call("list_agents", project_key=project)["agents"]]


def test_retiring_idle_agents_releases_a_chunks_worth_of_reservations_and_the_rest_block_nobody(settings, call, project, later,
                                                                                                monkeypatch):
    """Review, session 18: retiring an idle agent released all its active reservations in one write,
    however many (an agent over HELD_PER_AGENT). A retention transaction releases at most
    RETENTION_CHUNK of them; the rest, still held by a retired agent, conflict with nobody."""
    paths = [f"f{n}.py" for n in range(5)]
    call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=paths, ttl_seconds=30 * 86400)
    later(11)
    monkeypatch.setattr(retention, "release_left_behind", lambda db, now, limit: 0)  # the run's next step, tested below
    assert run_retention(settings.model_copy(update={"retention_agent_idle_days": 10, "retention_chunk": 2}))["agents_retired"] == 3
    assert len(call("list_file_reservations", project_key=project)["file_reservations"]) == 3
    call("register_agent", project_key=project, program="p", model="m", name="Newcomer")
    granted = call("file_reservation_paths", project_key=project, agent_name="Newcomer", paths=paths)
    assert granted["conflicts"] == []


def test_what_retired_agents_still_hold_is_released_a_bounded_number_a_run(settings, call, project, monkeypatch):
    """Review, session 18: a retired agent's leftover reservations conflicted with nobody, but counted
    toward its project's and credential's limits until they expired (a day, a month). Each run
    releases up to RETENTION_BATCH of them, in transactions of RETENTION_CHUNK."""
    paths = [f"f{n}.py" for n in range(5)]
    call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=paths, ttl_seconds=30 * 86400)
    call("file_reservation_paths", project_key=project, agent_name="RedStone", paths=["mine.py"], ttl_seconds=30 * 86400)
    with monkeypatch.context() as patch:  # a retirement that releases none: all five are left
        patch.setattr(reservations, "release_some", lambda *args: ([], True))
        assert call("retire_agent", project_key=project, agent_name="BlueLake")["more"] is True
    assert len(call("list_file_reservations", project_key=project)["file_reservations"]) == 6
    small = settings.model_copy(update={"retention_chunk": 2})
    assert [run_retention(small, budget=3)["reservations_released"] for _ in range(3)] == [3, 2, 0]
    held = call("list_file_reservations", project_key=project)["file_reservations"]
    assert [(r["agent"], r["path_pattern"]) for r in held] == [("RedStone", "mine.py")]  # an active agent's stay


def test_ended_reservations_and_slots_are_deleted_after_the_grace_period(settings, call, project, later):
    call("file_reservation_paths", project_key=project, agent_name="BlueLake", paths=["a.py"], ttl_seconds=60)
    call("file_reservation_paths", project_key=project, agent_name="RedStone", paths=["b.py"], ttl_seconds=30 * 86400)
    call("acquire_build_slot", project_key=project, agent_name="BlueLake", slot="deploy", ttl_seconds=60)
    call("release_build_slot", project_key=project, agent_name="BlueLake", slot="deploy")
    later(6)
    assert run_retention(settings)["reservations_deleted"] == 0  # within the 7 days' grace
    later(8)
    done = run_retention(settings)
    assert (done["reservations_deleted"], done["slots_deleted"]) == (1, 1)
    with db.connection(settings) as conn:
        assert [row[0] for row in conn.execute("SELECT path_pattern FROM file_reservations")] == ["b.py"]


@pytest.mark.sqlite_only
def test_the_cli_and_the_scheduled_lambda_function_run_it(tmp_path, monkeypatch, later):
    database_url = f"sqlite:///{tmp_path}/agent_mail.db"
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ARCHIVE_DIR", str(tmp_path / "archive"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        base = ["--database-url", database_url]
        runner.invoke(cli, [*base, "ensure-project", "--human-key", "/work/cli"])
        runner.invoke(cli, [*base, "register-agent", "--project-key", "work-cli", "--program", "p", "--model", "m", "--name", "BlueLake"])
        runner.invoke(cli, [*base, "send-message", "--project-key", "work-cli", "--sender-name", "BlueLake",
                            "--to", "BlueLake", "--subject", "s", "--body-md", "b"])
        runner.invoke(cli, [*base, "set-retention-policy", "--project-key", "work-cli", "--mode", "purge", "--days", "1"])
        assert runner.invoke(cli, [*base, "archive", "drain"]).exit_code == 0  # a purge waits for the archive
        later(2)
        for budget in ("100000000000000000000000", "1000001"):  # (session 32: an OverflowError traceback from SQLite)
            refused = runner.invoke(cli, [*base, "retention", "run", "--budget", budget])
            assert refused.exit_code == 2 and "1<=x<=1000000" in refused.stderr, refused.output
        for name, value in (("RETENTION_BATCH", "1000001"), ("RETENTION_CHUNK", "10001")):  # chunks go into IN (...)
            refused = runner.invoke(cli, [*base, "retention", "run"], env={name: value})
            assert refused.exit_code == 2 and name in refused.stderr, refused.output
        result = runner.invoke(cli, [*base, "retention", "run", "--budget", "10"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["messages_purged"] == 1
        app = importlib.import_module("app").create_app(get_settings())
        with Client(app, project_dir=str(ROOT)) as client:
            answer = client.lambda_.invoke("retention", client.events.generate_cw_event(
                source="aws.events", detail_type="Scheduled Event", detail={}, resources=[]))
        assert answer.payload["messages_purged"] == 0 and set(answer.payload) >= {"agents_retired", "slots_deleted"}
    finally:
        get_settings.cache_clear()


@pytest.mark.sqlite_only
def test_the_archive_worker_runs_it_when_idle_at_most_every_interval(settings, call, send, later, tmp_path):
    import threading

    from chalicelib.archive.worker import work
    from chalicelib.tools.retention import every

    settings = settings.model_copy(update={"archive_dir": tmp_path / "archive", "retention_every_seconds": 3600})
    call("ensure_project", human_key="/work/team")
    call("register_agent", project_key="/work/team", program="p", model="m", name="BlueLake")
    call("set_retention_policy", project_key="work-team", mode="purge", days=1)
    send("BlueLake", ["BlueLake"])
    later(2)
    stopping = threading.Event()
    worker = threading.Thread(target=work, args=(settings, stopping), kwargs={"on_idle": every(settings)})
    worker.start()
    try:
        for _ in range(200):  # the worker's first idle turn runs retention
            if call("get_project", project_key="work-team")["messages"] == 0:
                break
            stopping.wait(0.05)
        assert call("get_project", project_key="work-team")["messages"] == 0
        send("BlueLake", ["BlueLake"])  # as old (the clock is 2 days ahead), but within the hour: kept
        stopping.wait(0.5)
        assert call("get_project", project_key="work-team")["messages"] == 1
    finally:
        stopping.set()
        worker.join(10)


def test_a_retried_send_whose_message_retention_purged_says_so_and_sends_nothing(settings, call, two_projects, later, caught_up):
    """With keys kept longer than a policy's days, a retry can come after the purge: it is told
    its message was sent and purged (not "no such message"), and nothing is sent again."""
    retry = dict(project_key="work-team", sender_name="BlueLake", to=["RedStone"], subject="once", body_md="only once",
                 idempotency_key="send-once")
    first = call("send_message", **retry)["message"]
    assert call("send_message", **retry)["message"]["id"] == first["id"]  # a retry: the first answer
    call("set_retention_policy", project_key="work-team", mode="purge", days=1)
    caught_up()
    later(2)
    assert run_retention(settings)["messages_purged"] == 4
    with pytest.raises(ResultGone) as refused:
        call("send_message", **retry)
    assert refused.value.status == 409 and str(first["id"]) in refused.value.message and "retention" in refused.value.message
    assert call("fetch_inbox", project_key="work-team", agent_name="RedStone")["messages"] == []
    assert call("get_project", project_key="work-team")["messages"] == 0
