"""install_precommit_guard touches only repositories the operator permits (issue 11 #4): the
project's own directory or GUARD_ALLOWED_ROOTS, the same refusal whatever is at a refused path,
and a hook that authenticates with the token file the operator configured. Real server, real git."""

import os
import sqlite3
import subprocess

import httpx
import pytest

from .servers import running_server
from chalicelib.tools.guard import CHAINED

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


def test_uninstall_takes_the_arguments_install_took(repos, tmp_path):
    """install_precommit_guard requires project_key; uninstall refused it (422, extra input).
    Given, it is held to the same places as install: that project's own directory."""
    with running_server(tmp_path / "db.sqlite", ARCHIVE_ENABLED="false") as url:
        post = lambda tool, body: httpx.post(f"{url}/api/{tool}", json=body, timeout=30)  # noqa: E731
        for repo in repos.values():
            post("ensure_project", {"human_key": str(repo)}).raise_for_status()
        arguments = {"project_key": str(repos["own"]), "code_repo_path": str(repos["own"])}
        assert post("install_precommit_guard", arguments).status_code == 200
        other_project = post("uninstall_precommit_guard", arguments | {"project_key": str(repos["stranger"])})
        assert other_project.status_code == 403, other_project.text
        assert (repos["own"] / ".git" / "hooks" / "pre-commit").exists()
        removed = post("uninstall_precommit_guard", arguments)
        assert removed.status_code == 200 and removed.json()["removed"], removed.text
        assert not (repos["own"] / ".git" / "hooks" / "pre-commit").exists()


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


def test_a_hooks_directory_in_another_repository_is_refused_too(repos, tmp_path):
    """git finds the hooks through a `.git` file (a submodule, a worktree) or core.hooksPath:
    a directory below the project's own repository could send the hook into a stranger's."""
    stranger_hook = repos["stranger"] / ".git" / "hooks" / "pre-commit"
    stranger_hook.parent.mkdir(parents=True, exist_ok=True)
    stranger_hook.write_text("#!/bin/sh\nexit 0\n")
    vendor = repos["own"] / "vendor"
    vendor.mkdir()
    (vendor / ".git").write_text(f"gitdir: {repos['stranger'] / '.git'}\n")
    with running_server(tmp_path / "db.sqlite", ARCHIVE_ENABLED="false") as url:
        httpx.post(f"{url}/api/ensure_project", json={"human_key": str(repos["own"])}).raise_for_status()
        answer = httpx.post(f"{url}/api/install_precommit_guard", json={"project_key": str(repos["own"]),
                                                                        "code_repo_path": str(vendor)}, timeout=30)
        assert answer.status_code == 403, answer.text
        removed = httpx.post(f"{url}/api/uninstall_precommit_guard", json={"code_repo_path": str(vendor)}, timeout=30)
        assert removed.status_code == 403
    assert stranger_hook.read_text() == "#!/bin/sh\nexit 0\n" and not (stranger_hook.parent / CHAINED).exists()


def test_installing_follows_no_planted_link_and_a_failure_keeps_the_hook_in_place(repos, tmp_path, monkeypatch):
    """The script was written to a predictable name (following a link planted there), after the
    repository's own hook had been moved aside (a failure then left no hook at all)."""
    from chalicelib.tools import guard

    hooks = repos["own"] / ".git" / "hooks"
    hooks.mkdir(parents=True, exist_ok=True)
    victim = tmp_path / "victim"
    victim.write_text("precious")
    victim.chmod(0o600)
    for pid in range(os.getpid() - 50, os.getpid() + 50):  # the names the old code would have written to
        (hooks / f".pre-commit.agent-mail-{pid}").symlink_to(victim)
    own_hook = hooks / "pre-commit"
    own_hook.write_text("#!/bin/sh\nexit 1\n")
    roots = [str(repos["own"])]
    monkeypatch.setattr(guard, "hook_script", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        guard.install(str(repos["own"]), roots, str(repos["own"]), "http://127.0.0.1:1")
    assert own_hook.read_text() == "#!/bin/sh\nexit 1\n" and not (hooks / CHAINED).exists()
    monkeypatch.undo()
    hook, chained = guard.install(str(repos["own"]), roots, str(repos["own"]), "http://127.0.0.1:1")
    assert guard.MARKER in hook.read_text() and chained.read_text() == "#!/bin/sh\nexit 1\n"
    assert victim.read_text() == "precious" and oct(victim.stat().st_mode & 0o777) == "0o600"


def test_a_project_whose_path_runs_through_a_symlink_installs_and_removes_its_guard(repos, tmp_path):
    """git names the hooks directory by its real path (/tmp is /private/tmp on macOS): it is
    compared with the permitted roots resolved, not as typed."""
    from chalicelib.tools import guard

    linked = tmp_path / "linked"
    linked.symlink_to(repos["own"])
    roots = [str(linked)]
    hook, _ = guard.install(str(linked), roots, str(linked), "http://127.0.0.1:1")
    assert hook.resolve() == (repos["own"] / ".git" / "hooks" / "pre-commit").resolve()
    assert guard.uninstall(str(linked), roots)[1]


def test_a_linked_worktree_of_the_projects_repository_is_permitted(repos, tmp_path):
    """Agents often work in sibling work trees of one repository (git worktree add ../wt): they share
    its project, and git runs its hooks for them all. Such a work tree outside the project's
    directory was refused; it is permitted when the repository's own record names it back."""
    own = repos["own"]
    commit(own, "README.md")
    worktree = tmp_path / "own-agent2"
    assert git(own, "worktree", "add", "-q", str(worktree)).returncode == 0
    planted = tmp_path / "planted"  # a .git file pointing at the repository's record of another work tree
    planted.mkdir()
    (planted / ".git").write_text(f"gitdir: {own / '.git' / 'worktrees' / 'own-agent2'}\n")
    subprocess.run(["git", "init", "-q", str(repos["stranger"])], check=True)
    commit(repos["stranger"], "README.md")
    stranger_tree = tmp_path / "stranger-tree"
    assert git(repos["stranger"], "worktree", "add", "-q", str(stranger_tree)).returncode == 0
    with running_server(tmp_path / "db.sqlite", ARCHIVE_ENABLED="false") as url:
        post = lambda tool, body: httpx.post(f"{url}/api/{tool}", json=body, timeout=30)  # noqa: E731
        post("ensure_project", {"human_key": str(own)}).raise_for_status()
        for name in ("GreenCastle", "BlueLake"):
            post("register_agent", {"project_key": str(own), "program": "p", "model": "m", "name": name}).raise_for_status()
        post("file_reservation_paths", {"project_key": str(own), "agent_name": "GreenCastle", "paths": ["src/**"]}).raise_for_status()
        installed = post("install_precommit_guard", {"project_key": str(own), "code_repo_path": str(worktree)})
        assert installed.status_code == 200, installed.text
        assert installed.json()["hook_path"] == str(own / ".git" / "hooks" / "pre-commit")  # the repository's, shared
        blocked = commit(worktree, "src/app.py", AGENT_MAIL_URL=url, AGENT_NAME="BlueLake")
        assert blocked.returncode != 0 and "src/app.py is reserved by GreenCastle" in blocked.stderr
        for refused in (planted, stranger_tree):
            answer = post("install_precommit_guard", {"project_key": str(own), "code_repo_path": str(refused)})
            assert answer.status_code == 403, (refused, answer.text)
        assert not (repos["stranger"] / ".git" / "hooks" / "pre-commit").exists()
        assert post("uninstall_precommit_guard", {"code_repo_path": str(worktree)}).json()["removed"]


def test_a_stored_key_with_a_nul_is_no_directory(repos, tmp_path):
    """A project key an older version stored with a NUL (refused at input since) reached realpath,
    which raises for one: attaching a file by path there answered a 500, and so did either guard
    tool given a directory whose `.git` file names a path with a NUL."""
    planted = tmp_path / "planted"
    planted.mkdir()
    (planted / ".git").write_text("gitdir: /srv/a\x00b\n")
    commit(repos["own"], "README.md")
    worktree = tmp_path / "own-agent2"  # its repository is compared with the project's directory, resolved
    assert git(repos["own"], "worktree", "add", "-q", str(worktree)).returncode == 0
    database = tmp_path / "db.sqlite"
    with running_server(database, ARCHIVE_ENABLED="false") as url:
        httpx.post(f"{url}/api/ensure_project", json={"human_key": "/srv/legacy"}).raise_for_status()
        httpx.post(f"{url}/api/register_agent", json={"project_key": "srv-legacy", "name": "BlueLake", "program": "p",
                                                    "model": "m"}).raise_for_status()
    with sqlite3.connect(database) as db:
        db.execute("UPDATE projects SET human_key = '/srv/leg' || char(0) || 'acy'")
    with running_server(database, ARCHIVE_ENABLED="false") as url:
        post = lambda tool, body: httpx.post(f"{url}/api/{tool}", json=body, timeout=30)  # noqa: E731
        guard = {"project_key": "srv-legacy", "code_repo_path": str(repos["own"])}
        for tool, body in (("install_precommit_guard", guard), ("uninstall_precommit_guard", guard),
                           ("install_precommit_guard", guard | {"code_repo_path": str(planted)}),
                           ("install_precommit_guard", guard | {"code_repo_path": str(worktree)}),
                           ("uninstall_precommit_guard", {"code_repo_path": str(planted)})):
            answer = post(tool, body)
            assert answer.status_code == 403, (tool, body, answer.text)
        sent = post("send_message", {"project_key": "srv-legacy", "sender_name": "BlueLake", "to": ["BlueLake"], "subject": "s",
                                     "body_md": "b", "attachments": [{"path": "a.txt"}]})
        assert sent.status_code == 404 and "is not a directory on this machine" in sent.json()["error"]["message"], sent.text
        assert not (repos["own"] / ".git" / "hooks" / "pre-commit").exists()
