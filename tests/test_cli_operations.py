"""The operator's service commands (archive, db, migrate, serve) on bad conditions: a running
worker, a locked database, a bad environment, a missing archive."""

import json
import os
import sqlite3

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from chalicelib.archive.worker import lock_path
from chalicelib.config import Settings
from chalicelib.ops.supervisor import exclusive
from chalicelib.transports.cli import cli


@pytest.fixture
def settings(tmp_path, monkeypatch) -> Settings:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/agent_mail.db")
    monkeypatch.setenv("ARCHIVE_DIR", str(tmp_path / "archive"))
    return Settings()


def run(*args: str):
    return CliRunner().invoke(cli, ["--database-url", os.environ["DATABASE_URL"], *args])


@pytest.mark.parametrize("command", [["archive", "rebuild"], ["archive", "drain"], ["archive", "migrate"]])
def test_archive_writers_refuse_while_a_worker_holds_the_archive(settings, command):
    assert run("migrate").exit_code == 0
    if command == ["archive", "migrate"]:  # an archive that exists (a missing one: test_readers_of_a_missing_archive...)
        assert run("archive", "rebuild").exit_code == 0
    with exclusive(lock_path(settings), None) as mine:
        assert mine
        result = run(*command)
    assert result.exit_code == 1
    assert "an archive worker (a running server?) holds" in result.stderr
    assert command == ["archive", "migrate"] or not settings.archive_dir.exists()  # nothing written
    assert run(*command).exit_code == 0  # once the worker is gone


@pytest.mark.parametrize("command", [["migrate"], ["retention", "run"], ["archive", "drain"], ["archive", "rebuild"],
                                     ["archive", "verify"]])
def test_a_locked_database_is_one_line_not_a_traceback(settings, monkeypatch, command):
    monkeypatch.setenv("SQLITE_BUSY_TIMEOUT_MS", "50")
    # Not yet in WAL mode, so an exclusive transaction shuts readers out as well.
    locker = sqlite3.connect(settings.database_path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        result = run(*command)
    finally:
        locker.close()
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: database error ({settings.database_path}): database is locked"


def test_a_file_that_is_not_a_database_is_one_line(settings):
    settings.database_path.write_text("not a database" * 100)
    result = run("archive", "verify")
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: database error ({settings.database_path}): file is not a database"


@pytest.mark.parametrize("variable, value, says", [
    ("PORT", "abc", "valid integer"),
    ("RETENTION_DAYS", "0", "greater than or equal to 1"),
    ("ARCHIVE_POLL_SECONDS", "inf", "finite number"),
    ("JWT_ALGORITHMS", "RS256,rs265", "'rs265' is not a JWT signing algorithm; the algorithms it takes: RS256, RS384"),
])
def test_a_bad_environment_variable_is_named(settings, monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    result = run("tools")
    assert result.exit_code == 2
    assert f"Invalid value for {variable}: " in result.stderr and says in result.stderr
    assert "--database-url" not in result.stderr


CENTURY = 36500 * 86400  # seconds
# Every numeric setting: a value just out of its range, and the range the message gives.
OUT_OF_RANGE = [
    ("PORT", "65536", "0 <= PORT <= 65535"),
    ("SQLITE_BUSY_TIMEOUT_MS", "2147483648", "0 <= SQLITE_BUSY_TIMEOUT_MS <= 2147483647"),  # SQLite's: a C int
    ("SQLITE_POOL_SIZE", "-1", "0 <= SQLITE_POOL_SIZE"),
    ("SEARCH_TIMEOUT_MS", str(CENTURY * 1000 + 1), f"1 <= SEARCH_TIMEOUT_MS <= {CENTURY * 1000}"),
    ("REPLICA_MAX_STALENESS_MS", "-1", f"0 <= REPLICA_MAX_STALENESS_MS <= {CENTURY * 1000}"),
    ("REPLICA_SYNC_TIMEOUT_MS", "-1", f"0 <= REPLICA_SYNC_TIMEOUT_MS <= {CENTURY * 1000}"),
    ("STALE_AGENT_SECONDS", "-1", f"0 <= STALE_AGENT_SECONDS <= {CENTURY}"),
    ("ARCHIVE_BATCH_SIZE", str(2**64), "1 <= ARCHIVE_BATCH_SIZE <= 10000"),  # (past 2^63 an OverflowError in SQL)
    ("ARCHIVE_POLL_SECONDS", "0", f"0 < ARCHIVE_POLL_SECONDS <= {CENTURY}"),
    ("ARCHIVE_RETRY_SECONDS", "3601", "0 <= ARCHIVE_RETRY_SECONDS <= 3600"),
    ("ARCHIVE_HEARTBEAT_SECONDS", "0", f"0 < ARCHIVE_HEARTBEAT_SECONDS <= {CENTURY}"),
    ("ARCHIVE_MAX_LAG_SECONDS", "0", f"0 < ARCHIVE_MAX_LAG_SECONDS <= {CENTURY}"),
    ("ARCHIVE_KEEP_DONE_DAYS", "-1", "0 <= ARCHIVE_KEEP_DONE_DAYS <= 36500"),
    ("RETENTION_DAYS", "36501", "1 <= RETENTION_DAYS <= 36500"),
    ("RETENTION_AGENT_IDLE_DAYS", "1e6", "0 <= RETENTION_AGENT_IDLE_DAYS <= 36500"),
    ("RETENTION_LEASE_GRACE_DAYS", "36501", "0 <= RETENTION_LEASE_GRACE_DAYS <= 36500"),
    ("RETENTION_BATCH", str(2**64), "1 <= RETENTION_BATCH <= 1000000"),
    ("RETENTION_CHUNK", "10001", "1 <= RETENTION_CHUNK <= 10000"),
    ("RETENTION_EVERY_SECONDS", "-1", f"0 <= RETENTION_EVERY_SECONDS <= {CENTURY}"),
    ("JWT_LEEWAY_SECONDS", "3601", "0 <= JWT_LEEWAY_SECONDS <= 3600"),
    ("JWT_JWKS_TIMEOUT_SECONDS", "0", "0 < JWT_JWKS_TIMEOUT_SECONDS <= 60"),
    ("JWT_JWKS_CACHE_SECONDS", "-1", f"0 <= JWT_JWKS_CACHE_SECONDS <= {CENTURY}"),
    ("RATE_LIMIT_READS_PER_MINUTE", "-1", "0 <= RATE_LIMIT_READS_PER_MINUTE"),
    ("RATE_LIMIT_WRITES_PER_MINUTE", "-1", "0 <= RATE_LIMIT_WRITES_PER_MINUTE"),
    ("AUTH_FAILURES_PER_MINUTE", "-1", "0 <= AUTH_FAILURES_PER_MINUTE"),
    ("MAX_BODY_BYTES", "1023", "1024 <= MAX_BODY_BYTES"),
    ("SEND_TIMEOUT_SECONDS", "0", f"0 < SEND_TIMEOUT_SECONDS <= {CENTURY}"),
    ("RECEIVE_TIMEOUT_SECONDS", "0", f"0 < RECEIVE_TIMEOUT_SECONDS <= {CENTURY}"),
    ("CONTACT_REQUESTS_PER_AGENT_PER_HOUR", "-1", "0 <= CONTACT_REQUESTS_PER_AGENT_PER_HOUR"),
    ("CONTACT_REQUESTS_PER_PROJECT_PER_HOUR", "-1", "0 <= CONTACT_REQUESTS_PER_PROJECT_PER_HOUR"),
    ("CONTACT_REQUESTS_PER_TARGET_PER_HOUR", "-1", "0 <= CONTACT_REQUESTS_PER_TARGET_PER_HOUR"),
    ("ATTACHMENT_MAX_BYTES", "0", "1 <= ATTACHMENT_MAX_BYTES"),
    ("ATTACHMENTS_MAX_BYTES_PER_MESSAGE", "0", "1 <= ATTACHMENTS_MAX_BYTES_PER_MESSAGE"),
    ("ATTACHMENTS_MAX_PER_MESSAGE", "-1", "0 <= ATTACHMENTS_MAX_PER_MESSAGE"),
    ("ATTACHMENT_INLINE_MAX_BYTES", "-1", "0 <= ATTACHMENT_INLINE_MAX_BYTES"),
    ("ATTACHMENT_IMAGE_MAX_SIDE", "16384", "0 <= ATTACHMENT_IMAGE_MAX_SIDE <= 16383"),
    ("ATTACHMENT_UNUSED_DAYS", "36501", "0 <= ATTACHMENT_UNUSED_DAYS <= 36500"),
    ("ATTACHMENT_DELETE_DELAY_SECONDS", "-1", f"0 <= ATTACHMENT_DELETE_DELAY_SECONDS <= {CENTURY}"),
    ("MAX_MAIL_WAITERS", "0", "1 <= MAX_MAIL_WAITERS"),
    ("MAX_MAIL_WAITERS_PER_CALLER", "0", "1 <= MAX_MAIL_WAITERS_PER_CALLER"),
    ("MAX_SLOW_CALLS_PER_CALLER", "0", "1 <= MAX_SLOW_CALLS_PER_CALLER"),
    ("MAIL_WAIT_POLL_SECONDS", "0", f"0 < MAIL_WAIT_POLL_SECONDS <= {CENTURY}"),
    ("IDEMPOTENCY_KEY_TTL_SECONDS", "-1", f"0 <= IDEMPOTENCY_KEY_TTL_SECONDS <= {CENTURY}"),
    ("UI_SESSION_HOURS", "0", "0 < UI_SESSION_HOURS <= 876000"),
]


@pytest.mark.parametrize("variable, value, allowed", OUT_OF_RANGE)
def test_a_numeric_setting_out_of_its_range_stops_start_up_and_says_the_range(settings, monkeypatch, variable, value, allowed):
    monkeypatch.setenv(variable, value)
    result = run("tools")
    assert result.exit_code == 2
    assert f"Invalid value for {variable}: " in result.stderr and f"(allowed: {allowed})" in result.stderr


# Counts only ever compared in Python (never bound into SQL, a C int or a timestamp): any size is safe.
UNBOUNDED_ABOVE = {"SQLITE_POOL_SIZE", "RATE_LIMIT_READS_PER_MINUTE", "RATE_LIMIT_WRITES_PER_MINUTE", "AUTH_FAILURES_PER_MINUTE",
                   "MAX_BODY_BYTES",
                   "CONTACT_REQUESTS_PER_AGENT_PER_HOUR", "CONTACT_REQUESTS_PER_PROJECT_PER_HOUR",
                   "CONTACT_REQUESTS_PER_TARGET_PER_HOUR", "ATTACHMENT_MAX_BYTES",
                   "ATTACHMENTS_MAX_BYTES_PER_MESSAGE", "ATTACHMENTS_MAX_PER_MESSAGE", "ATTACHMENT_INLINE_MAX_BYTES",
                   "MAX_MAIL_WAITERS", "MAX_MAIL_WAITERS_PER_CALLER", "MAX_SLOW_CALLS_PER_CALLER"}


def test_every_numeric_setting_has_a_range_tried_above():
    numeric = {name: field for name, field in Settings.model_fields.items() if field.annotation in (int, float, int | None)}
    bounded = lambda field, *kinds: any(hasattr(rule, kind) for rule in field.metadata for kind in kinds)  # noqa: E731
    assert [name for name, field in numeric.items() if not bounded(field, "ge", "gt")] == []
    assert {name.upper() for name, field in numeric.items() if not bounded(field, "le", "lt")} == UNBOUNDED_ABOVE
    assert {name.upper() for name in numeric} == {variable for variable, _, _ in OUT_OF_RANGE}  # a new one goes in the list


@pytest.mark.parametrize("variable, command", [
    ("ARCHIVE_BATCH_SIZE", ["archive", "drain"]), ("RETENTION_BATCH", ["retention", "run"]), ("RETENTION_CHUNK", ["retention", "run"]),
])
def test_the_largest_batch_a_setting_allows_runs(settings, monkeypatch, variable, command):
    """ARCHIVE_BATCH_SIZE, RETENTION_BATCH and RETENTION_CHUNK had no upper bound: 2^64 started, then
    every drain and retention run (the server's worker on every poll) failed with an OverflowError."""
    largest = Settings.model_fields[variable.lower()].metadata
    monkeypatch.setenv(variable, str(next(rule.le for rule in largest if hasattr(rule, "le"))))
    monkeypatch.setenv("RETENTION_MODE", "purge")  # every step of a run, each with its LIMIT
    assert run("ensure-project", "--human-key", "/tmp/batch").exit_code == 0  # an entry for the archive
    result = run(*command)
    assert result.exit_code == 0, result.output
    if command == ["archive", "drain"]:
        assert "1 entries archived" in result.output


SECRET = "s3cret-bearer-4f9a"


@pytest.mark.parametrize("tokens, says", [
    ([{"token": SECRET, "role": "owner"}], "entry 1, role: unknown role 'owner' (the roles: reader, writer, admin)"),
    (["operator", {"token": SECRET, "scope": ["backend"]}], "entry 2: unknown field 'scope' (the fields: token, projects, role)"),
    ([{"token": SECRET, "projects": "backend"}], 'entry 1, projects: should be a list of project slugs or human keys, or "*" for all'),
    ([{"role": "reader"}], "entry 1, token: Field required"),
    ([SECRET, 5], "entry 2: each entry is a token (a string) or an object with token, projects and role"),
    ({"token": SECRET, "role": "reader"}, 'an object must be inside a JSON list: [{"token": ..., "projects": [...], "role": ...}]'),
])
def test_a_bad_bearer_token_entry_is_named_and_its_secret_is_not_shown(settings, monkeypatch, tokens, says):
    monkeypatch.setenv("AUTH_BEARER_TOKENS", json.dumps(tokens))
    result = run("tools")
    assert result.exit_code == 2
    assert f"Invalid value for AUTH_BEARER_TOKENS: {says}" in result.stderr
    assert SECRET not in result.stderr
    with pytest.raises(ValidationError) as raised:  # the traceback of an app that imports the settings (app.py on Lambda)
        Settings()
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("variable, setting", [
    ("ALLOWED_HOSTS", "allowed_hosts"), ("MCP_ALLOWED_HOSTS", "allowed_hosts"),
    ("ALLOWED_ORIGINS", "allowed_origins"), ("MCP_ALLOWED_ORIGINS", "allowed_origins"),
])
def test_host_and_origin_lists_are_comma_separated_or_json(settings, monkeypatch, variable, setting):
    monkeypatch.setenv(variable, "a.example:443, b.example:*")
    assert getattr(Settings(), setting) == ["a.example:443", "b.example:*"]
    assert run("tools").exit_code == 0
    monkeypatch.setenv(variable, '["c.example:*"]')
    assert getattr(Settings(), setting) == ["c.example:*"]
    # A value that is neither says what the setting takes (it said json's "Expecting value: line 1
    # column 2 (char 1)" alone, and an object was refused as not inside a list of bearer tokens)
    for wrong, says in (('["c.example:*"', "not a JSON list (Expecting ',' delimiter"), ('{"c": 1}', "an object, not a list")):
        monkeypatch.setenv(variable, wrong)
        result = run("tools")
        assert result.exit_code == 2 and "token" not in result.stderr, result.stderr
        assert says in result.stderr and 'give a JSON array (["a", "b"]) or values separated by commas' in result.stderr


@pytest.mark.parametrize("command", [["archive", "verify"], ["db", "restore-from-archive"], ["archive", "migrate"]])
def test_readers_of_a_missing_archive_say_so_and_create_nothing(settings, command):
    """And `archive migrate` (QA, session 36), which made an empty archive at a mistyped ARCHIVE_DIR
    and said "0 message files moved": the operator took it for done, and a `db restore-from-archive`
    from there then made an empty database without a word. Nor its lock file beside it (QA, session 36)."""
    assert run("migrate").exit_code == 0
    result = run(*command)
    assert result.exit_code == 1
    assert f"no archive at {settings.archive_dir}" in result.output + result.stderr
    assert not settings.archive_dir.exists() and not lock_path(settings).exists()


def test_serve_refuses_a_port_out_of_range(settings, monkeypatch):
    result = run("serve", "--port", "99999")
    assert result.exit_code == 2 and "99999 is not in the range 0<=x<=65535" in result.stderr
    monkeypatch.setenv("PORT", "70000")
    result = run("serve")
    assert result.exit_code == 2 and result.stderr.startswith("Error: Invalid value for PORT")
    assert result.stderr.count("\n") == 1  # one line: no usage, the command line is not at fault (QA, session 40)


@pytest.mark.parametrize("env, said", [
    ({"AUTH_MODE": "jwt"}, "AUTH_MODE=jwt needs JWT_JWKS_URL, JWT_AUDIENCE, JWT_ISSUER."),
    ({"AUTH_MODE": "bearer"}, "AUTH_MODE=bearer needs AUTH_BEARER_TOKENS"),
    ({"AUTH_MODE": "none", "HOST": "0.0.0.0"}, "Refusing to serve without authentication on host '0.0.0.0'"),
])
def test_serve_refuses_an_unsafe_set_up_in_one_line_before_any_banner(settings, monkeypatch, env, said):
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **options: pytest.fail("served"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run("serve", "--port", "0")
    assert result.exit_code == 1 and result.stderr.startswith(f"Error: {said}") and "Traceback" not in result.stderr
    assert "Agent Mail" not in result.stderr  # no banner, as if it had started


@pytest.mark.parametrize("where, said", [("a folder", "unable to open database file"),
                                         ("a file's", "cannot make its folder {folder}: File exists")])
def test_serve_refuses_a_database_it_cannot_open_in_one_line_before_any_banner(tmp_path, monkeypatch, where, said):
    """A folder as DATABASE_URL printed the banner, then uvicorn's traceback ("unable to open database
    file", no path) and exit 3: the database is now opened (and migrated) before, as by the other commands."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **options: pytest.fail("served"))
    (tmp_path / "notes").write_text("")
    path = tmp_path if where == "a folder" else tmp_path / "notes" / "mail.db"
    result = CliRunner().invoke(cli, ["--database-url", f"sqlite:///{path}", "serve", "--port", "0"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr and "Agent Mail" not in result.stderr  # no banner
    assert result.stderr == f"Error: database error ({path}): {said.format(folder=tmp_path / 'notes')}\n"


def test_plain_uvicorn_on_the_app_stops_in_one_line_on_what_it_cannot_serve(tmp_path):
    """QA, session 37: `uvicorn chalicelib.transports.asgi:app` (README: plain uvicorn serves the same app)
    on a database it cannot open logged Starlette's traceback of the lifespan; with a setting refused,
    the import's traceback. Now one line naming the file or the setting, and a nonzero exit, before any request."""
    import subprocess
    import sys

    (tmp_path / "folder").mkdir()
    (tmp_path / "corrupt.db").write_bytes(b"not a database, " * 64)
    base = {**os.environ, "LOG_FORMAT": "text", "ARCHIVE_DIR": str(tmp_path / "archive"),
            "ATTACHMENTS_DIR": str(tmp_path / "attachments"), "DATABASE_URL": f"sqlite:///{tmp_path}/mail.db"}
    hint = "(DATABASE_URL must name a SQLite database file, or a path where one may be created, that this process may read and write)"
    for env, code, said in (
        ({"DATABASE_URL": f"sqlite:///{tmp_path}/folder"}, 3,
         f"agent-mail: database error ({tmp_path}/folder): unable to open database file {hint}"),
        ({"DATABASE_URL": f"sqlite:///{tmp_path}/corrupt.db"}, 3,
         f"agent-mail: database error ({tmp_path}/corrupt.db): file is not a database {hint}"),
        ({"PORT": "abc"}, 1, "agent-mail: invalid PORT: Input should be a valid integer, unable to parse string as an integer"),
    ):
        done = subprocess.run([sys.executable, "-m", "uvicorn", "chalicelib.transports.asgi:app", "--port", "0"],
                              capture_output=True, text=True, env={**base, **env}, timeout=60)
        assert done.returncode == code and "Traceback" not in done.stderr, done.stderr
        assert said in done.stderr.splitlines()[-2 if code == 3 else -1], done.stderr  # (uvicorn's "startup failed" after it)


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite:///", "sqlite:///file:mail.db?mode=memory"])
def test_a_database_url_naming_no_file_stops_start_up(tmp_path, monkeypatch, url):
    """sqlite:///:memory: started the server, /health ok, and every call was a 500 (each pooled
    connection a new, empty database); sqlite:/// alone a traceback."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **options: pytest.fail("served"))
    result = CliRunner().invoke(cli, ["--database-url", url, "serve", "--port", "0"])
    assert result.exit_code == 2 and "Invalid value for --database-url: DATABASE_URL must name a file" in result.stderr


def test_serve_port_0_picks_a_free_port_and_names_it(settings, monkeypatch):
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(options))  # not a real server
    monkeypatch.setenv("PORT", "8765")
    monkeypatch.setenv("HOST", "127.0.0.1")  # serve sets HOST for the app: restored after the test
    result = run("serve", "--port", "0")
    assert result.exit_code == 0, result.stderr
    assert served["port"] not in (0, 8765)  # not PORT's either
    assert f"on http://127.0.0.1:{served['port']}\n" in result.stderr
    # The app's settings say that port (session 29: the guard's hook asked PORT's 8765, and let every commit through)
    from chalicelib.config import get_settings
    from chalicelib.tools.guard import server_url

    assert server_url(get_settings()) == f"http://127.0.0.1:{served['port']}"


def test_serve_says_what_to_check_when_it_cannot_listen(settings, monkeypatch):
    import socket

    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda app, **options: pytest.fail("served"))
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run("serve", "--port", str(port))
    assert result.exit_code == 1 and "Choose another port" in result.stderr
    monkeypatch.setenv("ALLOW_INSECURE", "true")  # (past the refusal to serve beyond loopback without authentication)
    result = run("serve", "--host", "192.0.2.1", "--port", "0")  # no address of this machine (TEST-NET-1)
    assert result.exit_code == 1 and "Check the host" in result.stderr and "another port" not in result.stderr


def test_doctor_on_a_new_server_finds_nothing_to_archive_yet(tmp_path):
    """No entry, no repository: that is a new server (its database made on start), not a missing archive."""
    from chalicelib.config import Settings
    from chalicelib.ops import doctor
    from chalicelib.store import db

    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", archive_dir=tmp_path / "archive")
    db.migrate(settings)
    finding = doctor.archive(settings)
    assert finding.ok and finding.detail.startswith("nothing to archive yet") and not (tmp_path / "archive").exists()


def test_doctor_names_a_lost_archive_and_creates_none(settings):
    """Entries archived, then the archive gone (or ARCHIVE_DIR mistyped): doctor says so."""
    import shutil

    assert run("ensure-project", "--human-key", "/work/lost").exit_code == 0
    assert run("register-agent", "--project-key", "work-lost", "--name", "BlueLake", "--program", "p", "--model", "m").exit_code == 0
    assert run("archive", "drain").exit_code == 0 and settings.archive_dir.exists()
    shutil.rmtree(settings.archive_dir)
    result = run("doctor")
    assert result.exit_code == 1 and f"no archive at {settings.archive_dir}" in result.output + result.stderr
    assert not settings.archive_dir.exists()
