"""Operations, through real processes: the supervised archive worker, /ready, /metrics, request
logs and doctor (docs/operations.md)."""

import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .aws_events import API_HOST
from .servers import ROOT, running_server, server_pid
from .test_doctor import table

FAST = {"ARCHIVE_HEARTBEAT_SECONDS": "0.2", "ARCHIVE_POLL_SECONDS": "0.05"}


def post(url: str, tool: str, **arguments) -> httpx.Response:
    return httpx.post(f"{url}/api/{tool}", json=arguments, timeout=30)


def wait_for(condition, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


def archive_status(url: str) -> dict:
    return httpx.get(f"{url}/api/archive_status", timeout=30).json()


def worker_pid(url: str, other_than: int | None = None) -> int:
    def current():
        worker = archive_status(url)["worker"]
        return worker and worker["age_seconds"] < 2 and worker["pid"] != other_than and worker["pid"]

    return wait_for(current, what="a worker's heartbeat")


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def children_running(command_part: str, parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if parent_of(int(entry.name)) == parent and command_part in (entry / "cmdline").read_bytes().decode():
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
    return found


def setup_project(url: str, project: str = "/work/ops") -> str:
    slug = post(url, "ensure_project", human_key=project).json()["slug"]
    for name in ("BlueLake", "GreenCastle"):
        assert post(url, "register_agent", project_key=slug, name=name, program="test", model="m").status_code == 200
    assert post(url, "set_contact_policy", project_key=slug, agent_name="GreenCastle", policy="open").status_code == 200
    return slug


def send(url: str, slug: str, subject: str) -> None:
    response = post(url, "send_message", project_key=slug, sender_name="BlueLake", to=["GreenCastle"], subject=subject, body_md="hi")
    assert response.status_code == 200, response.text


def test_a_killed_worker_is_restarted_and_the_backlog_drains(tmp_path):
    with running_server(tmp_path / "db.sqlite", **FAST) as url:
        slug = setup_project(url)
        first = worker_pid(url)
        os.kill(first, signal.SIGKILL)
        for number in range(20):  # sent while no worker runs
            send(url, slug, f"while down {number}")
        second = worker_pid(url, other_than=first)
        assert not alive(first)
        status = wait_for(lambda: (s := archive_status(url))["pending"] == 0 and s, what=lambda: f"the backlog to drain: {archive_status(url)}")
        assert status["worker"]["restarts"] >= 1 and status["last_commit"]
        # Git's work on idle CPU only, the database written at normal priority: a transaction
        # starved of CPU would hold SQLite's write lock from the server's requests.
        policies = thread_policies(second)
        assert policies[second] == os.SCHED_OTHER and os.SCHED_IDLE in policies.values(), policies


def thread_policies(pid: int) -> dict[int, int]:
    """{thread id: scheduling policy} of a process's threads (Linux sets policies per thread)."""
    return {int(tid): os.sched_getscheduler(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


def test_a_killed_server_leaves_no_worker_behind(tmp_path):
    with running_server(tmp_path / "db.sqlite", **FAST) as url:
        worker = worker_pid(url)
        server = parent_of(worker)
        os.kill(server, signal.SIGKILL)
        wait_for(lambda: not alive(worker), timeout=10, what="the orphaned worker to exit")


def test_two_servers_on_one_archive_directory_run_one_worker(tmp_path):
    database = tmp_path / "db.sqlite"
    with ExitStack() as stack:
        urls = [stack.enter_context(running_server(database, **FAST)) for _ in range(2)]
        slug = setup_project(urls[0])
        servers = [server_pid(url) for url in urls]
        for server in servers:  # each supervises a child ...
            wait_for(lambda: len(children_running("archive", server)) == 1, what="a supervised child")
        holder = worker_pid(urls[0])
        beats = set()
        for _ in range(10):  # ... and only the lock holder works: its pid is in every heartbeat
            beats.add(archive_status(urls[1])["worker"]["pid"])
            time.sleep(0.2)
        assert beats == {holder}
        # The holder's server dies: the other's standby takes over and archives what comes after.
        survivor = urls[1 - servers.index(parent_of(holder))]
        os.kill(parent_of(holder), signal.SIGKILL)
        worker_pid(survivor, other_than=holder)
        send(survivor, slug, "after the takeover")
        wait_for(lambda: archive_status(survivor)["pending"] == 0, what="the takeover to archive")


def ready(url: str) -> tuple[int, dict]:
    response = httpx.get(f"{url}/ready", timeout=30)
    return response.status_code, response.json()


def frozen_outside_a_write(pid: int, database: Path) -> None:
    """SIGSTOP the process at a moment it holds no write transaction: frozen inside one (a
    heartbeat's, entries marked done), it would hold every sender off (503 busy)."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        probe = sqlite3.connect(database, timeout=0.05, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.01)
        finally:
            probe.close()
    raise AssertionError(f"process {pid} held the write lock at every try")


def test_ready_fails_with_the_reason_and_recovers(tmp_path):
    database = tmp_path / "db.sqlite"
    # No retention: its first run, on the worker's first idle turn, merges the search index in
    # write transactions, and a worker frozen inside one would hold the senders off (503 busy).
    with running_server(database, ARCHIVE_MAX_LAG_SECONDS="1", RETENTION_EVERY_SECONDS="0", **FAST) as url:
        slug = setup_project(url)
        # Ready once the worker has archived the set-up (over ARCHIVE_MAX_LAG_SECONDS on a loaded machine).
        status, body = wait_for(lambda: (r := ready(url))[0] == 200 and r, what="/ready to pass")
        assert body["problems"] == []
        # A stuck archive: the worker frozen while mail arrives.
        worker = worker_pid(url)
        frozen_outside_a_write(worker, database)
        try:
            send(url, slug, "nobody archives this yet")
            status, body = wait_for(lambda: (r := ready(url))[0] == 503 and r, what="/ready to fail")
            assert any("archive is stuck" in problem for problem in body["problems"]), body
        finally:
            os.kill(worker, signal.SIGCONT)
        wait_for(lambda: ready(url)[0] == 200, what="/ready to recover")
        # A missing migration, then applied again.
        with sqlite3.connect(database) as conn:
            conn.execute("DELETE FROM schema_migrations WHERE version = '0018_worker_heartbeats'")
        status, body = ready(url)
        assert status == 503 and any("0018_worker_heartbeats" in problem for problem in body["problems"]), body
        with sqlite3.connect(database) as conn:
            conn.execute("INSERT INTO schema_migrations (version, applied_ts) VALUES ('0018_worker_heartbeats', 'now')")
        # A database that cannot take a write: another process holds the write lock.
        holder = sqlite3.connect(database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            status, body = ready(url)
            assert status == 503 and any("cannot be written" in problem for problem in body["problems"]), body
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        # Recovers: the worker's git work runs on idle CPU, so on a loaded machine an entry may
        # briefly stay pending past this test's 1 s bound.
        wait_for(lambda: ready(url)[0] == 200, timeout=30, what=lambda: f"/ready to recover: {ready(url)[1]}")


def test_a_child_killed_after_running_a_while_is_up_once_restarted_one_dying_at_start_is_not(monkeypatch):
    """A worker killed once (kill -9, the OOM killer) after running steadily must not take /ready
    down for a minute; one that dies soon after each start stays down (supervisor.Supervised.up)."""
    from chalicelib.ops import supervisor

    monkeypatch.setattr(supervisor, "STEADY_SECONDS", 1.0)
    steady = supervisor.Supervised("steady", [sys.executable, "-c", "import time; time.sleep(60)"], dict(os.environ))
    dying = supervisor.Supervised("dying", [sys.executable, "-c", "raise SystemExit(1)"], dict(os.environ))
    steady.start()
    dying.start()
    try:
        wait_for(lambda: dying.restarts >= 1 and dying.alive is False, what="the dying child's restart and death")
        time.sleep(1.2)  # the steady child has run longer than STEADY_SECONDS
        first = steady.process.pid
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: steady.process.pid != first and steady.alive, what="the killed child's restart")
        assert steady.up and steady.restarts == 1
        assert not dying.up
    finally:
        steady.stop(timeout=5)
        dying.stop(timeout=5)


def test_a_worker_that_keeps_dying_stays_down_until_it_has_run_a_while_and_doctor_says_why(tmp_path):
    """ARCHIVE_DIR's lock not writable: the worker died at each start, /ready flapped between 200
    (the moments it ran) and 503, and doctor said `ok archive worker has never run`."""
    lock = tmp_path / "archive.lock"
    lock.mkdir()  # the worker opens its lock file to append: it dies at start, again and again
    log = tmp_path / "server.log"
    with running_server(tmp_path / "db.sqlite", stderr=log, ready="/health", **FAST) as url:
        wait_for(lambda: log.read_text().count("archive worker exited with status 1") >= 2, what="two restarts")
        lines = log.read_text().splitlines()  # the worker's error as one JSON record, as every other, not a traceback
        assert not [line for line in lines if line.startswith("Traceback")]
        assert any(json.loads(line)["msg"] == "the archive worker stopped" for line in lines if line.startswith("{"))
        assert ready(url)[0] == 503
        checked = cli(tmp_path, "doctor")
        assert f"FAIL  archive directory  {lock}: Is a directory: the archive worker cannot start" in table(checked), checked.stdout
        assert "FAIL  archive worker  not running: it died " in table(checked) and "(exited with status 1)" in checked.stdout

        lock.rmdir()  # the next restart runs: up once it has run a while, not at once
        pid = worker_pid(url)
        status, body = ready(url)
        assert status == 503 and any("keeps dying soon after it starts" in problem for problem in body["problems"]), body
        checked = cli(tmp_path, "doctor")
        assert f"ok  archive worker  running (pid {pid}" in table(checked), checked.stdout
        assert "ok  archive directory" in table(checked)


def metrics(url: str, **headers) -> dict:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def test_metrics_count_the_calls_made(tmp_path):
    with running_server(tmp_path / "db.sqlite", **FAST) as url:
        slug = setup_project(url)
        send(url, slug, "counted")
        for _ in range(3):
            assert post(url, "get_project", project_key="nope").status_code == 404
        found = metrics(url)
        assert found[("agent_mail_tool_calls_total", (("outcome", "not_found"), ("tool", "get_project")))] == 3
        assert found[("agent_mail_tool_calls_total", (("outcome", "ok"), ("tool", "send_message")))] == 1
        assert found[("agent_mail_tool_calls_total", (("outcome", "ok"), ("tool", "register_agent")))] == 2
        assert found[("agent_mail_tool_duration_seconds_count", (("tool", "get_project"),))] == 3
        assert found[("agent_mail_write_batch_size_count", ())] >= 4  # each write went through the writer
        assert found[("agent_mail_http_responses_total", (("status", "404"),))] == 3
        assert ("agent_mail_archive_backlog", ()) in found and ("agent_mail_archive_lag_seconds", ()) in found
        wait_for(lambda: metrics(url)[("agent_mail_archive_worker_up", ())] == 1, what="the worker gauge")
        # A scrape reads the archive's state without counting a tool call no client made (session 29)
        assert not [key for key in metrics(url) if ("tool", "archive_status") in key[1]]


def test_metrics_need_credentials_when_auth_is_on(tmp_path):
    tokens = json.dumps(["s3cret-token", {"token": "scoped-token", "projects": ["shop"], "role": "admin"}])
    with running_server(tmp_path / "db.sqlite", AUTH_MODE="bearer", AUTH_BEARER_TOKENS=tokens, **FAST) as url:
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert ("agent_mail_archive_backlog", ()) in metrics(url, Authorization="Bearer s3cret-token")
        # Every project's counts: a scoped credential is told so (session 29: refused as an archive_status call)
        scoped = httpx.get(f"{url}/metrics", headers={"Authorization": "Bearer scoped-token"})
        assert scoped.status_code == 403 and scoped.json()["error"]["message"].startswith("GET /metrics counts")


def test_one_json_log_line_per_request_without_bodies_or_secrets(tmp_path):
    log = tmp_path / "server.log"
    with running_server(tmp_path / "db.sqlite", stderr=log, AUTH_MODE="bearer", AUTH_BEARER_TOKENS="s3cret-token",
                        REQUIRE_AGENT_TOKENS="false", LOG_LEVEL="INFO", **FAST) as url:
        auth = {"Authorization": "Bearer s3cret-token"}
        httpx.post(f"{url}/api/ensure_project", json={"human_key": "/work/secret-body-text"}, headers=auth)
        httpx.get(f"{url}/api/get_project?project_key=nope", headers=auth)
        httpx.get(f"{url}/api/list_projects")  # no credentials
        browser = httpx.Client(base_url=url, timeout=60)  # a person signed in to the web UI (session 29: "anonymous")
        csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get("/ui/login").text).group(1)
        assert browser.post("/ui/login", data={"csrf": csrf, "token": "s3cret-token", "next": "/ui/projects"}).status_code == 303
        assert browser.get("/ui/projects").status_code == 200
    # Stopped (SIGTERM) right after: its shutdown writes the lines the stream still buffered (it
    # flushes every half second, and uvicorn's exit by the signal skipped atexit: they were lost).
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    requests = [line for line in lines if line["msg"] == "request" and line["path"].startswith("/api/")]
    assert [(line["method"], line["path"], line["tool"], line["status"]) for line in requests] == [
        ("POST", "/api/ensure_project", "ensure_project", 200),
        ("GET", "/api/get_project", "get_project", 404),
        ("GET", "/api/list_projects", None, 401),
    ]
    assert requests[0]["caller"].startswith("bearer:") and requests[2]["caller"] == "ip:127.0.0.1"
    pages = {line["path"]: line for line in lines if line["msg"] == "request" and line["path"].startswith("/ui/")}
    assert pages["/ui/login"]["caller"] == "ip:127.0.0.1"  # the form, before signing in
    assert pages["/ui/projects"]["caller"] == requests[0]["caller"]  # the credential it signed in with
    assert all(line["ms"] > 0 and "ts" in line for line in requests)
    text = log.read_text()
    assert "s3cret-token" not in text and "secret-body-text" not in text


def test_log_timestamps_are_right_across_seconds_and_back():
    """A line's second is formatted once and reused: every line still gets its own time."""
    from chalicelib.ops.logs import _iso

    for timestamp in (1_700_000_000.999, 1_700_000_001.0, 1_700_000_000.5, 1_700_000_001.042, 0.0, 1_800_000_000.0009):
        expected = datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        assert _iso(timestamp) == expected


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "ARCHIVE_DIR": str(tmp_path / "archive")}
    return subprocess.run([sys.executable, "-m", "chalicelib", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_doctor_finds_and_repairs_a_broken_search_index_and_a_deleted_archive_ref(tmp_path):
    assert cli(tmp_path, "ensure-project", "--human-key", "/work/doc").returncode == 0
    for name in ("BlueLake", "GreenCastle"):
        assert cli(tmp_path, "register-agent", "--project-key", "work-doc", "--name", name, "--program", "p", "--model", "m").returncode == 0
    assert cli(tmp_path, "set-contact-policy", "--project-key", "work-doc", "--agent-name", "GreenCastle", "--policy", "open").returncode == 0
    sent = cli(tmp_path, "send-message", "--project-key", "work-doc", "--sender-name", "BlueLake", "--to", "GreenCastle",
               "--subject", "zebra crossing", "--body-md", "unusual words")
    assert sent.returncode == 0, sent.stderr
    assert cli(tmp_path, "archive", "drain").returncode == 0
    healthy = cli(tmp_path, "doctor")
    assert healthy.returncode == 0, healthy.stdout

    with sqlite3.connect(tmp_path / "db.sqlite") as conn:  # the index loses every message
        conn.execute("INSERT INTO messages_fts (messages_fts, rowid, subject, body_md, project)"
                     " SELECT 'delete', id, subject, body_md, 'p' || project_id FROM messages")
    subprocess.run(["git", "-C", str(tmp_path / "archive"), "update-ref", "-d", "refs/heads/main"], check=True)
    search = json.loads(cli(tmp_path, "search-messages", "--project-key", "work-doc", "--query", "zebra").stdout)
    assert search["results"] == []

    broken = cli(tmp_path, "doctor")
    assert broken.returncode == 1
    assert "FAIL  search index" in broken.stdout and "FAIL  git archive" in broken.stdout
    assert "fix: python -m chalicelib doctor --repair" in broken.stdout

    repaired = cli(tmp_path, "doctor", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "repaired search index" in repaired.stdout and "repaired git archive" in repaired.stdout
    search = json.loads(cli(tmp_path, "search-messages", "--project-key", "work-doc", "--query", "zebra").stdout)
    assert [hit["subject"] for hit in search["results"]] == ["zebra crossing"]
    assert cli(tmp_path, "archive", "verify").returncode == 0


LAMBDA_SCRIPT = """
import json, sys
sys.path.insert(0, {root!r})
from tests.aws_events import CONTEXT, rest_api_event
import app
api = app.create_app(app.get_settings())
api(rest_api_event("POST", "/api/ensure_project", {{"human_key": "/work/emf"}}, {{"Content-Type": "application/json"}}), CONTEXT)
api(rest_api_event("POST", "/api/register_agent", {{"project_key": "work-emf", "program": "p", "model": "m"}}, {{"Content-Type": "application/json"}}), CONTEXT)
api(rest_api_event("GET", "/api/get_project", None, None, {{"project_key": ["nope"]}}), CONTEXT)
api.handler_map["archive_sweep"]({{"detail-type": "Scheduled Event", "source": "aws.events", "time": "2026-01-01T00:00:00Z",
                                   "resources": ["arn:aws:events:eu-west-1:1:rule/x"], "detail": {{}}, "region": "eu-west-1",
                                   "account": "1", "id": "1", "version": "0"}}, CONTEXT)
"""


def test_lambda_logs_are_embedded_metric_format_with_request_ids(tmp_path):
    env = {**os.environ, "AWS_LAMBDA_FUNCTION_NAME": "agent-mail-test", "ALLOW_INSECURE": "true",
           "MCP_ALLOWED_HOSTS": json.dumps(["127.0.0.1:*", API_HOST]),
           "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite", "AWS_DEFAULT_REGION": "eu-west-1"}
    run = subprocess.run([sys.executable, "-c", LAMBDA_SCRIPT.format(root=str(ROOT))], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith('{"_aws"')]
    requests = [line for line in lines if line.get("msg") == "request"]
    assert [(line["path"], line["Tool"], line["status"], line["request_id"]) for line in requests] == [
        ("/api/ensure_project", "ensure_project", 200, "c0ffee"),
        ("/api/register_agent", "register_agent", 200, "c0ffee"),
        ("/api/get_project", "get_project", 404, "c0ffee"),
    ]
    declared = requests[2]["_aws"]["CloudWatchMetrics"][0]
    assert declared["Namespace"] == "AgentMail" and ["Service", "Tool"] in declared["Dimensions"]
    assert {metric["Name"] for metric in declared["Metrics"]} == {"Latency", "ServerErrors", "ClientErrors"}
    assert requests[2]["ClientErrors"] == 1 and requests[2]["Latency"] > 0
    sweep = next(line for line in lines if "ArchiveLagSeconds" in line)
    assert sweep["ArchiveBacklog"] == 2  # the project.json and the agent's profile: no queue here to take them


@pytest.mark.parametrize("alarm", ["ServerErrorRateAlarm", "ArchiveDeadLetterAlarm", "ArchiveLagAlarm"])
def test_the_template_has_the_alarms(alarm):
    template = (ROOT / "infra" / "template.yaml").read_text()
    assert f"  {alarm}:\n    Type: AWS::CloudWatch::Alarm" in template


def test_doctor_calls_a_worker_killed_since_its_last_heartbeat_stopped(tmp_path):
    """A heartbeat stays fresh for a few seconds after kill -9: doctor asks the lock's holder."""
    from chalicelib import clock
    from chalicelib.archive.worker import lock_path
    from chalicelib.config import Settings
    from chalicelib.ops import doctor
    from chalicelib.ops.supervisor import exclusive
    from chalicelib.store import db, heartbeats

    settings = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite", archive_dir=tmp_path / "archive")
    with db.connection(settings) as conn, db.transaction(conn, write=True):
        heartbeats.beat(conn, heartbeats.ARCHIVE_WORKER, 4242, clock.now(), 0)  # just now, by a process gone since
    stopped = doctor.worker(settings)
    assert stopped.ok and stopped.detail.startswith("not running now: nobody holds its lock"), stopped
    with exclusive(lock_path(settings), None) as mine:
        assert mine and doctor.worker(settings).detail.startswith("running (pid 4242")


def test_lambda_counts_requests_in_metrics_with_request_lines_off_under_the_stacks_name(tmp_path):
    """LOG_LEVEL=WARNING (prod) turned request lines off, and with them every request metric;
    the Service dimension was one name for every stack, so dev fed prod's alarms. And DEBUG
    would have had botocore log requests' parameters."""
    env = {**os.environ, "AWS_LAMBDA_FUNCTION_NAME": "agent-mail-test", "ALLOW_INSECURE": "true",
           "MCP_ALLOWED_HOSTS": json.dumps(["127.0.0.1:*", API_HOST]), "LOG_LEVEL": "WARNING",
           "METRICS_SERVICE": "agent-mail-prod", "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
           "AWS_DEFAULT_REGION": "eu-west-1"}
    run = subprocess.run([sys.executable, "-c", LAMBDA_SCRIPT.format(root=str(ROOT))], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines() if line.startswith('{"_aws"')]
    counted = [line for line in lines if "Latency" in line]
    assert [(line["Tool"], line["ClientErrors"]) for line in counted] == [("ensure_project", 0), ("register_agent", 0),
                                                                         ("get_project", 1)]
    assert all(line["Service"] == "agent-mail-prod" and "path" not in line for line in counted)  # metrics, no request line
    debug = subprocess.run([sys.executable, "-c", "import logging; from chalicelib.config import Settings;"
                            " from chalicelib.ops import logs; logs.configure(Settings(log_level='DEBUG'));"
                            " print(logging.getLogger('botocore').getEffectiveLevel())"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert debug.stdout.strip() == str(logging.WARNING), debug.stderr


def test_the_server_sets_glibcs_allocator_unless_the_environment_does():
    """Two arenas and a fixed mmap threshold: 474 -> 184 MB under bench/soak.py. An operator's
    MALLOC_* variables win. Each case in a fresh process (the settings are the process's)."""
    import subprocess
    import sys

    script = "from chalicelib.ops.allocator import keep_memory_down; print(','.join(keep_memory_down()))"
    environ = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    applied = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environ, cwd=ROOT, check=True)
    assert applied.stdout.strip() == "MALLOC_ARENA_MAX,MALLOC_MMAP_THRESHOLD_"
    applied = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True,
                             env={**environ, "MALLOC_ARENA_MAX": "4"})
    assert applied.stdout.strip() == "MALLOC_MMAP_THRESHOLD_"
