import json
import os
import re
import shlex
import tomllib
from pathlib import Path

from chalicelib.transports.tooldocs import update_readme

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_section(heading: str) -> str:
    readme = README.read_text()
    section = readme[readme.index(heading) + len(heading):]
    return section[:re.search(r"\n#+ ", section).start()]


def test_readme_tool_list_is_generated_from_the_registry():
    text = README.read_text()
    assert update_readme(text) == text, "run: python -m chalicelib.transports.tooldocs"


def test_every_script_the_docs_run_as_a_command_is_one():
    """QA, session 33: README gave `./scripts/bootstrap.sh` as a command; it is sourced, not
    executable (Permission denied), and run by bash it died on its `return`."""
    root = README.parent
    docs = [README, *sorted((root / "docs").glob("*.md")), root / "bench" / "README.md"]
    commands = {name for doc in docs for name in re.findall(r"(?<![\w/])\./(scripts/[\w.-]+)", doc.read_text())}
    assert "scripts/serve" in commands
    assert [name for name in sorted(commands) if not os.access(root / name, os.X_OK)] == []


def test_readme_stdio_snippets_parse_and_give_every_path_absolute():
    """A client starts a stdio server in a directory of its choosing: each snippet must name the
    database, the archive and attachments by absolute path (the README's attachments were left
    out, so a session's files went where the client happened to start it)."""
    section = readme_section("### Over stdio")
    claude = shlex.split(re.search(r"```bash\n(claude mcp add .*?)```", section, re.S).group(1).replace("\\\n", " "))
    envs = [dict(claude[i + 1].split("=", 1) for i, word in enumerate(claude) if word == "-e")]
    envs += [server["env"] for server in json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))["mcpServers"].values()]
    envs += [server["env"] for server in tomllib.loads(re.search(r"```toml\n(.*?)```", section, re.S).group(1))["mcp_servers"].values()]
    assert len(envs) == 3
    for env in envs:
        assert env["DATABASE_URL"].startswith("sqlite:////")
        assert all(env[name].startswith("/") for name in ("ARCHIVE_DIR", "ATTACHMENTS_DIR")), env


def readme_mcp_set_ups_with_authentication(token: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Each client's (URL, headers) from README's "With authentication", its placeholder read from
    an environment where AGENT_MAIL_TOKEN is `token`, as that client reads it."""
    section = readme_section("### With authentication")
    environment = {"AGENT_MAIL_TOKEN": token}

    def expand(pattern: str, text: str) -> str:
        return re.sub(pattern, lambda m: environment[next(name for name in m.groups() if name)], text)

    blocks = {kind: re.findall(rf"```{kind}\n(.*?)```", section, re.S) for kind in ("bash", "toml", "json")}
    [claude], [codex], [cursor, gemini] = blocks["bash"], blocks["toml"], blocks["json"]
    words = shlex.split(claude)
    assert words[:5] == ["claude", "mcp", "add", "--transport", "http"] and words[-2] == "--header", words
    name, value = words[-1].split(": ", 1)
    set_ups = {"Claude Code": (words[6], {name: expand(r"\$\{?(\w+)\}?", value)})}  # the shell's $NAME
    [codex] = tomllib.loads(codex)["mcp_servers"].values()
    set_ups["Codex"] = (codex["url"], {"Authorization": f"Bearer {environment[codex['bearer_token_env_var']]}"})
    [cursor] = json.loads(cursor)["mcpServers"].values()
    set_ups["Cursor"] = (cursor["url"], {key: expand(r"\$\{env:(\w+)\}", v) for key, v in cursor["headers"].items()})
    [gemini] = json.loads(gemini)["mcpServers"].values()
    set_ups["Gemini CLI"] = (gemini["httpUrl"], {key: expand(r"\$\{(\w+)\}|\$(\w+)", v) for key, v in gemini["headers"].items()})
    return set_ups


def test_readme_mcp_set_ups_with_authentication_send_the_bearer_token():
    """QA, session 33: no doc said how an MCP client sends its bearer token, so a client set up as
    the docs said was refused every call. (test_auth connects the official client with it.)"""
    set_ups = readme_mcp_set_ups_with_authentication("docs-token")
    assert {(url, tuple(headers.items())) for url, headers in set_ups.values()} == {
        ("http://127.0.0.1:8765/mcp", (("Authorization", "Bearer docs-token"),))}, set_ups
