import functools
import shutil
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from chalicelib import clock, invoke
from chalicelib.config import Settings
from chalicelib.store import db, replica
from chalicelib.tools import tools_by_name

from .servers import running_server
from .turso import turso_server

TOOLS = tools_by_name()

# httpx loads the CA bundle into a new TLS context for every client it makes, httpx.get's
# included: ~30 ms of CPU each, ~3,000 times a run (a server's start is polled with httpx.get),
# for requests that are all plain HTTP to 127.0.0.1. One context per kind of client serves them all.
httpx._transports.default.create_ssl_context = functools.cache(httpx._config.create_ssl_context)


def pytest_generate_tests(metafunc):
    """Modules marked `both_backends` run each test on embedded SQLite and on a Turso replica
    (but for tests marked `sqlite_only`)."""
    marked = metafunc.definition.get_closest_marker
    if "settings" in metafunc.fixturenames and marked("both_backends") and not marked("sqlite_only"):
        metafunc.parametrize("settings", ["sqlite", "turso"], indirect=True)


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """An embedded database with every migration applied, made once per test process: each
    sqlite test's database starts as a copy (migrating a new file costs ~25 ms of CPU, ~1,000
    times a run; tests marked fresh_database migrate new files)."""
    path = tmp_path_factory.mktemp("migrated-sqlite") / "agent_mail.db"
    db.migrate(Settings(database_url=f"sqlite:///{path}"))  # closes its connection: the WAL is folded in, one file
    return path


@pytest.fixture(scope="session")
def migrated_primary(tmp_path_factory) -> Path:
    """A Turso primary's files with every migration applied, made once per test process: each
    turso test's primary starts as a copy (migrating through a fresh replica costs ~0.2 s a test;
    tests/test_turso_replicas.py migrates real fresh primaries)."""
    directory = tmp_path_factory.mktemp("migrated-primary")
    with turso_server(directory) as primary:
        db.migrate(Settings(database_url=f"sqlite:///{directory}/replica.db", turso_sync_url=primary.url))
    return directory


@pytest.fixture
def settings(request, tmp_path) -> Settings:
    database_url = f"sqlite:///{tmp_path}/agent_mail.db"
    attachments_dir = tmp_path / "attachments"  # never ./data/attachments: a retention run may delete from it
    fresh = request.node.get_closest_marker("fresh_database")
    if getattr(request, "param", "sqlite") == "sqlite":
        if not fresh:
            shutil.copy(request.getfixturevalue("migrated_sqlite"), tmp_path / "agent_mail.db")
        yield Settings(database_url=database_url, attachments_dir=attachments_dir)
    else:
        if not fresh:
            migrated = request.getfixturevalue("migrated_primary")
            for file in migrated.glob("primary.db*"):
                shutil.copy(file, tmp_path / file.name)
        with turso_server(tmp_path) as primary:
            yield Settings(database_url=database_url, turso_sync_url=primary.url, attachments_dir=attachments_dir)
    let_go(database_url)


def let_go(database_url: str) -> None:
    """Close what this process keeps open on a test's database (its pooled connections, its
    replica): a test process runs hundreds of tests, each on a database of its own, and kept
    them all open (over 1,024 files, ~1 GB)."""
    for conn in db._pools.pop(database_url, []):
        conn.close()
    if (held := replica._replicas.forget(database_url)) and held.conn is not None:
        held.conn.close()


@pytest.fixture
def caught_up(settings, tmp_path):
    """caught_up(): the git archive (a real one, in tmp_path) takes every entry written so far, as
    the archive worker would: retention purges and archives bodies only of mail the archive holds."""
    from chalicelib.archive.gitrepo import GitArchive
    from chalicelib.archive.worker import drain

    archiving = settings.model_copy(update={"archive_dir": tmp_path / "caught-up-archive"})

    def caught_up() -> None:
        with GitArchive.local(archiving) as archive:
            drain(archiving, archive)

    return caught_up


@pytest.fixture
def later(monkeypatch):
    """later(days): from now on the clock reads `days` days ahead (the mail sent so far is that old)."""

    def later(days: float) -> None:
        ahead = datetime.now(timezone.utc) + timedelta(days=days)
        monkeypatch.setattr(clock, "now", lambda: ahead.isoformat(timespec="microseconds"))

    return later


@pytest.fixture
def call(settings):
    """call("send_message", project_key=..., ...) -> the output as JSON-ready dict."""

    def call(tool_name: str, /, **arguments):
        return invoke.call(TOOLS[tool_name], arguments, settings).model_dump(mode="json")

    return call


@pytest.fixture
def project(call):
    """A project with three agents that accept anyone's messages: BlueLake, GreenCastle, RedStone.
    (Contact policies are tested in test_contacts.py, on agents that keep the default.)"""
    call("ensure_project", human_key="/work/demo")
    for name in ("BlueLake", "GreenCastle", "RedStone"):
        call("register_agent", project_key="work-demo", program="claude-code", model="opus", name=name)
        call("set_contact_policy", project_key="work-demo", agent_name=name, policy="open")
    return "work-demo"


@pytest.fixture
def send(call):
    """send(sender, to, project="work-team", **options) -> the message sent (subject Hello, body hi)."""

    def send(sender, to, project="work-team", **options):
        args = dict(project_key=project, sender_name=sender, to=to, subject="Hello", body_md="hi") | options
        return call("send_message", **args)["message"]

    return send


@pytest.fixture
def traced(settings, monkeypatch):
    """Every statement the tools run from now on (each connection opened traced, the pool emptied)."""
    statements: list[str] = []
    connect = sqlite3.connect

    def traced_connect(*args, **kwargs):
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(statements.append)  # the SQL with its values filled in
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced_connect)
    monkeypatch.setitem(db._pools, settings.database_url, [])
    return statements


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real uvicorn server on a fresh database, shared by a test module."""
    with running_server(tmp_path_factory.mktemp("server") / "agent_mail.db") as url:
        yield url


@pytest.fixture(scope="module", params=["sqlite", "turso"])
def any_server(request, tmp_path_factory):
    """A real uvicorn server on embedded SQLite, then one on a Turso replica of a real tursodb."""
    directory = tmp_path_factory.mktemp("server")
    if request.param == "sqlite":
        with running_server(directory / "agent_mail.db") as url:
            yield url
    else:
        with turso_server(directory) as primary, running_server(directory / "replica.db", TURSO_SYNC_URL=primary.url) as url:
            yield url


@pytest.fixture
def held(monkeypatch):
    """held(owner, "name"): that function of `owner`, held until the test sets `go_on` (once it
    `started`); and the names of the threads it ran on. (started, go_on, threads)"""

    def hold(owner, name: str):
        started, go_on, threads, real = threading.Event(), threading.Event(), [], getattr(owner, name)

        def holding(*args, **kwargs):
            threads.append(threading.current_thread().name)
            started.set()
            go_on.wait(timeout=10)  # on the writer thread (the bug) it gives up: the test fails rather than hangs
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, holding)
        return started, go_on, threads

    return hold
