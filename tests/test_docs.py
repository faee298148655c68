from pathlib import Path

from chalicelib.transports.tooldocs import update_readme

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_tool_list_is_generated_from_the_registry():
    text = README.read_text()
    assert update_readme(text) == text, "run: python -m chalicelib.transports.tooldocs"


def test_readme_stdio_snippets_parse_and_give_every_path_absolute():
    """A client starts a stdio server in a directory of its choosing: each snippet must name the
    database, the archive and attachments by absolute path (the README's attachments were left
    out, so a session's files went where the client happened to start it)."""
    import json
    import re
    import shlex
    import tomllib

    readme = README.read_text()
    section = readme[readme.index("### Over stdio"):]
    section = section[:section.index("\n## ")]
    claude = shlex.split(re.search(r"```bash\n(claude mcp add .*?)```", section, re.S).group(1).replace("\\\n", " "))
    envs = [dict(claude[i + 1].split("=", 1) for i, word in enumerate(claude) if word == "-e")]
    envs += [server["env"] for server in json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))["mcpServers"].values()]
    envs += [server["env"] for server in tomllib.loads(re.search(r"```toml\n(.*?)```", section, re.S).group(1))["mcp_servers"].values()]
    assert len(envs) == 3
    for env in envs:
        assert env["DATABASE_URL"].startswith("sqlite:////")
        assert all(env[name].startswith("/") for name in ("ARCHIVE_DIR", "ATTACHMENTS_DIR")), env
