"""install_precommit_guard touches only repositories the operator permits (issue 11 #4): the
project's own directory or GUARD_ALLOWED_ROOTS, the same refusal whatever is at a refused path,
and a hook that authenticates with the token file the operator configured. Real server, real git."""

import os
import subprocess

import httpx
import pytest

from .servers import running_server
from .test_guard import GIT_ENV, commit, commits, git

TOKEN = "guard-permits-token"


@pytest.fixture
def repos(tmp_path):
    """Two git work trees: the project's own, and a stranger's."""
    paths = {}
    for name in ("own", "stranger"):
        path = tmp_path / name
        path.mkdir()
        subprocess.run(["git", "init", "-q", str(path)], check=True, env={**os.environ, **GIT_ENV})
        paths[name] = path
    (paths["own"] / "link").symlink_to(paths["stranger"])
    return paths


def test_only_the_projects_own_repository_is_permitted(repos, tmp_path):
    with running_server(tmp_path / "db.sqlite", ARCHIVE_ENABLED="false") as url:
        post = lambda body: httpx.post(f"{url}/api/install_precommit_guard", json=body, timeout=30)  # noqa: E731
        httpx.post(f"{url}/api/ensure_project", json={"human_key": str(repos["own"])}).raise_for_status()
        project = {"project_key": str(repos["own"])}
        assert post(project | {"code_repo_path": str(repos["own"])}).status_code == 200
        refusals = {}
        for path in (repos["stranger"], repos["own"] / "link", "/proc/self/cwd", "/root/.ssh", "/no/such/dir", "/etc"):
            answer = post(project | {"code_repo_path": str(path)})
            refusals[str(path)] = (answer.status_code, answer.json()["error"]["message"].replace(str(path), "PATH"))
        assert set(refusals.values()) == {(403, "The server does not install or remove git hooks in PATH.")}, refusals
        assert not (repos["stranger"] / ".git" / "hooks" / "pre-commit").exists()
        uninstall = httpx.post(f"{url}/api/uninstall_precommit_guard", json={"code_repo_path": str(repos["stranger"])})
        assert uninstall.status_code == 403
        assert httpx.post(f"{url}/api/uninstall_precommit_guard", json={"code_repo_path": str(repos["own"])}).json()["removed"]


def test_configured_roots_are_permitted(repos, tmp_path):
    with running_server(tmp_path / "db.sqlite", ARCHIVE_ENABLED="false", GUARD_ALLOWED_ROOTS=str(tmp_path)) as url:
        httpx.post(f"{url}/api/ensure_project", json={"human_key": "/somewhere/else"}).raise_for_status()
        answer = httpx.post(f"{url}/api/install_precommit_guard", json={"project_key": "/somewhere/else",
                                                                        "code_repo_path": str(repos["stranger"])})
        assert answer.status_code == 200, answer.text


def test_the_hook_authenticates_with_the_configured_token_file(repos, tmp_path):
    token_file = tmp_path / "guard-token"
    token_file.write_text(TOKEN + "\n")
    own = repos["own"]
    env = dict(AUTH_MODE="bearer", AUTH_BEARER_TOKENS=TOKEN, GUARD_TOKEN_FILE=str(token_file), ARCHIVE_ENABLED="false")
    with running_server(tmp_path / "db.sqlite", **env) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
            client.post("/api/ensure_project", json={"human_key": str(own)}).raise_for_status()
            holder = client.post("/api/register_agent", json={"project_key": str(own), "program": "p", "model": "m",
                                                               "name": "GreenCastle"}).json()
            client.post("/api/file_reservation_paths", json={"project_key": str(own), "agent_name": "GreenCastle",
                                                              "paths": ["src/**"], "registration_token": holder["registration_token"]}).raise_for_status()
            client.post("/api/install_precommit_guard", json={"project_key": str(own), "code_repo_path": str(own)}).raise_for_status()
        assert TOKEN not in (own / ".git" / "hooks" / "pre-commit").read_text()  # the path, never the secret
        blocked = commit(own, "src/app.py", AGENT_MAIL_URL=url)  # no AGENT_MAIL_TOKEN in the environment
        assert blocked.returncode != 0 and "src/app.py is reserved by GreenCastle" in blocked.stderr
        git(own, "rm", "-q", "--cached", "src/app.py")
        assert commit(own, "README.md", AGENT_MAIL_URL=url).returncode == 0 and commits(own) == 1
