import json
import os
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from chalicelib.config import Settings
from chalicelib.transports.cli import cli
from chalicelib.tools import all_tools

from .servers import ROOT


@pytest.fixture
def run(tmp_path):
    """run("fetch-inbox", "--project-key", ...) -> click's Result, on a fresh database."""
    database_url = f"sqlite:///{tmp_path}/agent_mail.db"

    def run(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, ["--database-url", database_url, *args], input=input)

    return run


def output(result) -> dict:
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return json.loads(result.stdout)


@pytest.fixture
def project(run):
    """A project with three agents that accept anyone's messages: BlueLake, RedStone, GreenCastle."""
    output(run("ensure-project", "--human-key", "/work/demo"))
    for name in ("BlueLake", "RedStone", "GreenCastle"):
        output(run("register-agent", "--project-key", "work-demo", "--program", "cc", "--model", "opus", "--name", name))
        output(run("set-contact-policy", "--project-key", "work-demo", "--agent-name", name, "--policy", "open"))
    return "work-demo"


def test_one_command_per_tool():
    commands = set(cli.list_commands(click.Context(cli))) - {"serve", "stdio", "migrate", "tools", "archive", "db", "doctor", "retention"}
    assert commands == {tool.name.replace("_", "-") for tool in all_tools()}


def test_send_fetch_acknowledge(run, project):
    sent = output(
        run(
            "send-message", "--project-key", project, "--sender-name", "BlueLake",
            "--to", "RedStone", "--to", "GreenCastle", "--subject", "Plan", "--body-md", "See **this**.",
            "--importance", "high", "--ack-required",
        )
    )
    message = sent["message"]
    assert (message["to"], message["importance"], message["ack_required"]) == (["GreenCastle", "RedStone"], "high", True)

    inbox = output(run("fetch-inbox", "--project-key", project, "--agent-name", "RedStone", "--include-bodies"))
    assert [(m["id"], m["subject"], m["body_md"]) for m in inbox["messages"]] == [(message["id"], "Plan", "See **this**.")]

    acked = output(
        run("acknowledge-message", "--project-key", project, "--agent-name", "RedStone", "--message-id", message["id"])
    )
    assert acked["ack_ts"]
    inbox = output(run("fetch-inbox", "--project-key", project, "--agent-name", "RedStone"))
    assert inbox["messages"][0]["ack_ts"] == acked["ack_ts"]


def test_text_the_database_would_not_store_whole_is_refused_with_the_error_shape(run, project):
    """QA, session 29: a subject or thread id with a byte that is no UTF-8 (an argument decoded
    with surrogateescape) crashed the CLI with a traceback; a body with a NUL was stored, and a
    search that read its start stopped at the NUL (a narrowed search lost the message)."""
    send = ("send-message", "--project-key", project, "--sender-name", "BlueLake", "--to", "RedStone")
    for field, value, why in (("--subject", "caf\udce9", "half of a UTF-16 surrogate pair"),
                              ("--body-md", "log:\x00 src/cart/api.py", "NUL character")):
        options = {"--subject": "s", "--body-md": "b", field: value}
        result = run(*send, *[item for pair in options.items() for item in pair])
        assert result.exit_code == 1 and why in json.loads(result.stderr)["error"]["message"], result.output


def test_an_id_option_takes_any_63_bit_id(run, project):
    """QA, session 29: id options were click's INT, and the input refused an id past 2**53-ish as
    "too large for a JSON number: send it as a string", which an option cannot do."""
    result = run("get-message", "--project-key", project, "--message-id", "9223372036854700000")
    assert result.exit_code == 1 and json.loads(result.stderr)["error"]["code"] == "not_found", result.output
    result = run("get-message", "--project-key", project, "--message-id", "x1")
    assert result.exit_code == 1 and json.loads(result.stderr)["error"]["code"] == "invalid_argument"
    # A list of ids too, and an id written as a whole float, as the schema takes it (QA, session 40: click's INT, exit 2)
    held = output(run("file-reservation-paths", "--project-key", project, "--agent-name", "BlueLake", "--paths", "src/a.py"))
    [reservation] = held["granted"]
    renewed = run("renew-file-reservations", "--project-key", project, "--agent-name", "BlueLake",
                  "--file-reservation-ids", f"{reservation['id']}.0")
    assert renewed.exit_code == 0, renewed.output
    assert [item["id"] for item in json.loads(renewed.stdout)["file_reservations"]] == [reservation["id"]]


def test_a_required_field_that_takes_null_takes_the_word(run, project):
    """QA, session 29: `set-retention-policy --help` said "mode null resets to the server's default",
    and no option could say null (a choice of keep, purge, archive_only)."""
    set_policy = ("set-retention-policy", "--project-key", project)
    assert output(run(*set_policy, "--mode", "purge", "--days", "30"))["mode"] == "purge"
    assert "[keep|purge|archive_only|null]" in run(*set_policy, "--help").stdout
    assert output(run(*set_policy, "--mode", "null"))["mode"] is None  # the server's default again
    assert output(run("get-retention-policy", "--project-key", project))["mode"] is None


def test_pretty_by_default_compact_on_request(run, project):
    pretty = run("list-agents", "--project-key", project)
    compact = run("list-agents", "--project-key", project, "--compact")
    assert json.loads(pretty.stdout) == json.loads(compact.stdout)
    assert pretty.stdout.count("\n") > 1 and compact.stdout.count("\n") == 1


def test_json_input_and_options_override_it(run, project):
    arguments = {"project_key": project, "sender_name": "BlueLake", "to": ["RedStone"], "subject": "a", "body_md": "b"}
    sent = output(run("send-message", "--json", json.dumps(arguments), "--subject", "from the option"))
    assert sent["message"]["subject"] == "from the option"
    assert sent["message"]["to"] == ["RedStone"]

    inbox = output(run("fetch-inbox", "--json", "-", input=json.dumps({"project_key": project, "agent_name": "RedStone"})))
    assert len(inbox["messages"]) == 1


def test_an_option_overrides_its_field_given_in_json_under_an_old_name(run, project):
    """send_message's sender_name is agent_name's old name: --agent-name (or --sender-name) wins
    over it, as over agent_name, instead of "Extra inputs are not permitted"."""
    arguments = {"project_key": project, "sender_name": "GreenCastle", "to": ["RedStone"], "subject": "a", "body_md": "b"}
    for option in ("--agent-name", "--sender-name"):
        sent = output(run("send-message", "--json", json.dumps(arguments), option, "BlueLake"))
        assert sent["message"]["sender"] == "BlueLake"


def test_not_json_object_is_a_usage_error(run):
    result = run("list-projects", "--json", "[1, 2]")
    assert result.exit_code == 2 and "JSON object" in result.stderr


def test_json_nested_too_deeply_is_a_usage_error_not_a_traceback(run):
    """json's RecursionError went up as a traceback (exit status 1); shallow bad JSON was already click's one line."""
    nested = "[" * 100_000 + "]" * 100_000
    result = run("ensure-project", "--json", nested)
    assert result.exit_code == 2 and "Invalid value for '--json': not valid JSON: nested too deeply" in result.stderr
    sent = run("send-message", "--project-key", "p", "--sender-name", "BlueLake", "--to", "RedStone", "--subject", "s",
               "--body-md", "b", "--attachments", nested)
    assert sent.exit_code == 2 and "Invalid value for '--attachments'" in sent.stderr and "not a JSON object" in sent.stderr
    assert not isinstance(result.exception, RecursionError) and not isinstance(sent.exception, RecursionError)


def test_read_only_commands_refuse_a_database_that_does_not_exist_and_create_none(tmp_path):
    """QA, session 31: a mistyped DATABASE_URL made directories and an empty database, and
    health-check said "ok", list-projects "no projects"; `retention run` already refused it."""
    typo = tmp_path / "mial" / "agent_mail.db"
    read_only = [tool for tool in all_tools() if tool.read_only]
    assert {"health_check", "list_projects", "fetch_inbox"} <= {tool.name for tool in read_only}
    for tool in read_only:
        required = {name: "x" for name, field in tool.input.model_fields.items() if field.is_required()}
        result = CliRunner().invoke(cli, ["--database-url", f"sqlite:///{typo}", tool.name.replace("_", "-"),
                                          "--json", json.dumps(required)])
        assert result.exit_code == 1 and f"no database at {typo}: check DATABASE_URL" in result.stderr, (tool.name, result.output)
        assert not typo.parent.exists()
    created = CliRunner().invoke(cli, ["--database-url", f"sqlite:///{typo}", "ensure-project", "--human-key", "/fresh"])
    assert created.exit_code == 0 and typo.is_file()  # a fresh install's first write makes it, as before


def test_required_field_may_come_from_json_but_not_from_nowhere(run, project):
    result = run("whois", "--agent-name", "BlueLake")
    assert result.exit_code == 2 and "--project-key" in result.stderr
    assert output(run("whois", "--agent-name", "BlueLake", "--json", json.dumps({"project_key": project})))["name"] == "BlueLake"


def test_tool_error_is_json_on_stderr_with_exit_1(run, project):
    result = run("get-project", "--project-key", "nope")
    assert result.exit_code == 1 and result.stdout == ""
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "not_found" and "ensure_project" in error["hint"]


def test_invalid_argument_names_the_field(run, project):
    result = run("whois", "--project-key", project, "--agent-name", "9lives")
    assert result.exit_code == 1
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "invalid_argument"
    assert "agent_name" in error["message"] and "9lives" in error["message"]


def test_unknown_json_field_is_refused_by_the_input_model(run, project):
    result = run("list-projects", "--json", '{"colour": "blue"}')
    assert result.exit_code == 1 and "colour" in json.loads(result.stderr)["error"]["message"]


def test_a_guard_installed_from_the_command_line_reads_the_database(run, tmp_path):
    """QA session 33: the command line serves no HTTP, yet its hook asked HOST:PORT (nothing there: every
    commit went through). Its hook reads the database itself, as the hook of a stdio session (tests/test_guard.py)."""
    repo = tmp_path / "shop"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    output(run("ensure-project", "--human-key", str(repo)))
    installed = output(run("install-precommit-guard", "--project-key", str(repo), "--code-repo-path", str(repo)))
    assert installed["server_url"] is None and installed["reads_database"] == str(tmp_path / "agent_mail.db")


def test_help_comes_from_the_registry():
    help_text = CliRunner().invoke(cli, ["send-message", "--help"]).stdout
    assert "Send a message to agents of the project." in help_text
    assert "--ack-required / --no-ack-required" in help_text
    assert "[low|normal|high|urgent]" in help_text
    assert "Receive the message; invisible to the other" in help_text


def test_tools_lists_every_tool(run):
    tools = json.loads(run("tools", "--json").stdout)
    assert [t["name"] for t in tools] == [t.name for t in all_tools()]
    send = next(t for t in tools if t["name"] == "send_message")
    assert send["read_only"] is False and "to" in send["input_schema"]["properties"]
    listing = run("tools").stdout
    assert all(t.name.replace("_", "-") in listing for t in all_tools())


def test_migrate_lists_applied_versions(run):
    result = run("migrate")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0].startswith("0001_")


def test_settings_come_from_the_dotenv_of_the_directory_the_process_starts_in(tmp_path, monkeypatch):
    """README, Configuration (QA, session 33, asked where): a `.env` is read from the directory the
    process starts in, under what the environment sets; started elsewhere (where an MCP client
    starts `agent-mail stdio`), that file is not read."""
    (tmp_path / ".env").write_text("TOOLS_PROFILE=core\nSEARCH_TIMEOUT_MS=1234\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.delenv("TOOLS_PROFILE", raising=False)
    monkeypatch.setenv("SEARCH_TIMEOUT_MS", "99")
    monkeypatch.chdir(tmp_path)
    here = Settings()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert (here.tools_profile, here.search_timeout_ms, Settings().tools_profile) == ("core", 99, "full")


def test_bad_database_url_is_a_usage_error():
    result = CliRunner().invoke(cli, ["--database-url", "postgres://x", "list-projects"])
    assert result.exit_code == 2 and "sqlite:///" in result.stderr


def test_python_dash_m(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "chalicelib", "--database-url", f"sqlite:///{tmp_path}/agent_mail.db",
         "ensure-project", "--human-key", "/tmp/x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["slug"] == "tmp-x"


def test_all_follows_the_pages_of_a_list(run, project):
    for name in ("AmberFox", "Zed"):
        output(run("register-agent", "--project-key", project, "--program", "cc", "--model", "opus", "--name", name))
    first = output(run("list-agents", "--project-key", project, "--limit", "2"))
    assert len(first["agents"]) == 2 and first["next_cursor"]
    every = output(run("list-agents", "--project-key", project, "--limit", "2", "--all"))
    assert [a["name"] for a in every["agents"]] == ["AmberFox", "BlueLake", "GreenCastle", "RedStone", "Zed"]
    assert every["next_cursor"] is None
    rest = output(run("list-agents", "--project-key", project, "--limit", "2", "--cursor", first["next_cursor"], "--all"))
    assert rest["agents"] == every["agents"][2:]
    assert "--all" not in run("whois", "--help").stdout  # a tool that answers no list has no pages


def test_an_object_option_takes_one_json_object_each_time(tmp_path):
    """--attachments (a list of objects) took no value at all: each repetition is one JSON
    object, and a bare path gets a hint naming the field it fits."""
    repo = tmp_path / "repo"
    (repo / "logs").mkdir(parents=True)
    (repo / "logs" / "test.log").write_text("log line\n")
    environ = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/agent_mail.db", "ARCHIVE_DIR": str(tmp_path / "archive"),
               "ATTACHMENTS_DIR": str(tmp_path / "attachments"), "LOG_LEVEL": "WARNING"}

    def agent_mail(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "chalicelib", *args], cwd=ROOT, env=environ, capture_output=True,
                              text=True, timeout=60)

    project = json.loads(agent_mail("ensure-project", "--human-key", str(repo)).stdout)["slug"]
    for name in ("BlueLake", "RedStone"):
        assert agent_mail("register-agent", "--project-key", project, "--program", "p", "--model", "m", "--name", name).returncode == 0
    assert agent_mail("set-contact-policy", "--project-key", project, "--agent-name", "RedStone", "--policy", "open").returncode == 0
    send = ("send-message", "--project-key", project, "--sender-name", "BlueLake", "--to", "RedStone", "--subject", "Logs",
            "--body-md", "attached")
    sent = agent_mail(*send, "--attachments", '{"name": "a.txt", "content_base64": "aGk="}', "--attachments", '{"path": "logs/test.log"}')
    assert sent.returncode == 0, sent.stderr
    assert [(a["name"], a["size"]) for a in json.loads(sent.stdout)["message"]["attachments"]] == [("a.txt", 2), ("test.log", 9)]

    bare = agent_mail(*send, "--attachments", "logs/test.log")
    assert bare.returncode == 2 and bare.stdout == ""
    assert ("Invalid value for '--attachments': 'logs/test.log' is not a JSON object: give each --attachments as one JSON object,"
            """ e.g. --attachments '{"path": "logs/test.log"}' (fields: name, media_type, content_base64, path, sha256, keep_original).""") in bare.stderr
    assert "Repeat for several: one JSON object each, with the fields name," in " ".join(agent_mail("send-message", "--help").stdout.split())
