"""The pre-commit guard: installed in real git repositories, exercised by real commits
against the real server."""

import http.server
import json
import os
import stat
import threading
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from chalicelib.config import Settings, get_settings
from chalicelib.errors import Conflict, InvalidArgument, NotFound
from chalicelib.tools import guard
from chalicelib.tools.guard import CHAINED, MARKER

from .servers import answering, free_port, running_server

PROJECT = "/guard/demo"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
}
GUARD_ENV = ("AGENT_NAME", "AGENT_MAIL_URL", "AGENT_MAIL_GUARD_MODE", "AGENT_MAIL_BYPASS", "AGENT_MAIL_GUARD_STRICT",
             "AGENT_MAIL_TOKEN")


def git(repo: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {key: value for key, value in os.environ.items() if key not in GUARD_ENV}
    environ.update(GIT_ENV, **env)
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False, env=environ)


@pytest.fixture
def repo(tmp_path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    return path


def commit(repo: Path, *files: str, **env: str) -> subprocess.CompletedProcess:
    """Write, stage and commit the files; the result of `git commit`."""
    for name in files:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(f"{name} {os.urandom(4).hex()}\n")
    git(repo, "add", "--", *files)
    return git(repo, "commit", "-q", "-m", "change", **env)


def commits(repo: Path) -> int:
    out = git(repo, "rev-list", "--count", "HEAD")
    return int(out.stdout) if out.returncode == 0 else 0


def write_hook(path: Path, script: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script)
    path.chmod(0o755)


# Installing and uninstalling (in process)


@pytest.fixture(autouse=True)
def allowed_roots(tmp_path_factory, monkeypatch):
    """The test repositories live under pytest's temporary directory: the operator permits it."""
    monkeypatch.setenv("GUARD_ALLOWED_ROOTS", str(tmp_path_factory.getbasetemp()))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("server") / "agent_mail.db", GUARD_ALLOWED_ROOTS=str(tmp_path_factory.getbasetemp())) as url:
        yield url


@pytest.fixture
def guard_tools(call):
    call("ensure_project", human_key=PROJECT)

    def install(repo):
        return call("install_precommit_guard", project_key=PROJECT, code_repo_path=str(repo))

    def uninstall(repo):
        return call("uninstall_precommit_guard", code_repo_path=str(repo))

    return install, uninstall


def test_install_needs_an_existing_git_work_tree(guard_tools, tmp_path):
    install, _ = guard_tools
    with pytest.raises(NotFound) as missing:
        install(tmp_path / "nowhere")
    assert "does not exist" in missing.value.message and missing.value.hint
    with pytest.raises(NotFound) as plain:  # a well-formed path: what is (not) there is no 422
        install(tmp_path)
    assert "not a git work tree" in plain.value.message and "git init" in plain.value.hint
    with pytest.raises(InvalidArgument) as relative:
        install("repo")
    assert "absolute" in relative.value.message


def test_install_writes_an_executable_hook_pointing_at_this_server(guard_tools, repo, monkeypatch):
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "9999")
    get_settings.cache_clear()
    try:
        installed = guard_tools[0](repo)
    finally:
        get_settings.cache_clear()
    hook = repo / ".git" / "hooks" / "pre-commit"
    assert installed == {"hook_path": str(hook), "chained_hook": None, "server_url": "http://127.0.0.1:9999",
                         "reads_database": None, "project": "guard-demo"}
    script = hook.read_text()
    assert MARKER in script and "SERVER_URL = 'http://127.0.0.1:9999'" in script and f"PROJECT = {PROJECT!r}" in script
    assert hook.stat().st_mode & stat.S_IXUSR


def test_core_hooks_path_is_respected(guard_tools, repo, tmp_path):
    git(repo, "config", "core.hooksPath", str(tmp_path / "team-hooks"))  # absolute, outside the work tree
    (repo / "sub").mkdir()
    assert guard_tools[0](repo / "sub")["hook_path"] == str(tmp_path / "team-hooks" / "pre-commit")
    assert MARKER in (tmp_path / "team-hooks" / "pre-commit").read_text()
    assert not (repo / ".git" / "hooks" / "pre-commit").exists()


def test_hooks_shared_by_two_projects_repositories_guard_the_first_until_it_is_uninstalled(guard_tools, call, repo, tmp_path):
    """QA, session 40: with one absolute core.hooksPath for two projects' repositories (a global
    ~/.githooks), installing for the second re-pointed the guard to it: the first's commits of
    reserved files went through. Now 409, naming the project it guards."""
    install, uninstall = guard_tools
    shared = tmp_path / "global-hooks"
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    call("ensure_project", human_key=str(other))
    for tree in (repo, other):
        git(tree, "config", "core.hooksPath", str(shared))
    install(repo)
    assert install(repo)["project"] == "guard-demo"  # its own project again: updated
    with pytest.raises(Conflict) as refused:
        call("install_precommit_guard", project_key=str(other), code_repo_path=str(other))
    assert f"the guard of another project ({PROJECT})" in refused.value.message and "core.hooksPath" in refused.value.hint
    assert f"PROJECT = {PROJECT!r}" in (shared / "pre-commit").read_text()
    uninstall(repo)
    call("install_precommit_guard", project_key=str(other), code_repo_path=str(other))
    assert f"PROJECT = {str(other)!r}" in (shared / "pre-commit").read_text()


def test_an_existing_hook_is_chained_and_restored(guard_tools, repo):
    install, uninstall = guard_tools
    original = repo / ".git" / "hooks" / "pre-commit"
    write_hook(original, "#!/bin/sh\nexit 0\n")
    assert install(repo)["chained_hook"] == str(original.parent / CHAINED)
    assert install(repo)["chained_hook"] == str(original.parent / CHAINED)  # again: updates, never chains itself
    assert (original.parent / CHAINED).read_text() == "#!/bin/sh\nexit 0\n" and MARKER in original.read_text()

    assert uninstall(repo) == {"hook_path": str(original), "removed": True, "restored_hook": True}
    assert original.read_text() == "#!/bin/sh\nexit 0\n" and original.stat().st_mode & stat.S_IXUSR
    assert not (original.parent / CHAINED).exists()


def test_installs_at_once_chain_the_repositorys_hook_not_a_guard(repo, monkeypatch, tmp_path):
    """QA, session 29: two installs at once each moved "the foreign hook" aside, the second the
    first's guard, over the repository's own hook (lost), and the guard then ran itself forever."""
    import tempfile
    import threading

    from chalicelib.tools import guard

    original = repo / ".git" / "hooks" / "pre-commit"
    write_hook(original, "#!/bin/sh\nexit 0\n")
    make = tempfile.mkstemp

    def slow_mkstemp(*args, **kwargs):  # the window between looking at the hook and moving it, made wide
        time.sleep(0.2)
        return make(*args, **kwargs)

    monkeypatch.setattr(guard.tempfile, "mkstemp", slow_mkstemp)
    errors = []

    def install():
        try:
            guard.install(str(repo), [str(tmp_path)], PROJECT, "http://127.0.0.1:1")
        except Exception as exc:  # noqa: BLE001 (collected, asserted below)
            errors.append(exc)

    threads = [threading.Thread(target=install) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert (original.parent / CHAINED).read_text() == "#!/bin/sh\nexit 0\n" and MARKER in original.read_text()


def test_a_guard_chained_to_a_guard_skips_it(repo, tmp_path):
    """What that race left (a guard as the chained hook) lets commits through, and starts no guard after guard."""
    from chalicelib.tools import guard

    guard.install(str(repo), [str(tmp_path)], PROJECT, "http://127.0.0.1:1")
    hooks = repo / ".git" / "hooks"
    write_hook(hooks / CHAINED, (hooks / "pre-commit").read_text())
    done = commit(repo, "README.md", AGENT_MAIL_BYPASS="1")
    assert done.returncode == 0 and f"{CHAINED} is this guard" in done.stderr


def test_uninstall_leaves_other_hooks_alone(guard_tools, repo):
    hook = repo / ".git" / "hooks" / "pre-commit"
    assert guard_tools[1](repo)["removed"] is False
    write_hook(hook, "#!/bin/sh\nexit 0\n")
    assert guard_tools[1](repo) == {"hook_path": str(hook), "removed": False, "restored_hook": False}
    assert hook.read_text() == "#!/bin/sh\nexit 0\n"


# Real commits against the real server


@pytest.fixture(scope="module")
def api(server):
    """GreenCastle holds src/** exclusively and docs/** shared for the whole module."""
    with httpx.Client(base_url=server) as client:
        client.post("/api/ensure_project", json={"human_key": PROJECT}).raise_for_status()
        for name in ("BlueLake", "GreenCastle"):
            client.post(
                "/api/register_agent", json={"project_key": PROJECT, "program": "p", "model": "m", "name": name}
            ).raise_for_status()
        for paths, exclusive in ((["src/**"], True), (["docs/**"], False)):
            client.post(
                "/api/file_reservation_paths",
                json={"project_key": PROJECT, "agent_name": "GreenCastle", "paths": paths, "exclusive": exclusive, "reason": "FEAT-7"},
            ).raise_for_status()
        yield client


@pytest.fixture
def guarded(api, repo, server):
    """A repository with the guard installed through the server; commit(files, **env) talks to that server."""
    api.post("/api/install_precommit_guard", json={"project_key": PROJECT, "code_repo_path": str(repo)}).raise_for_status()

    def commit_as(agent: str | None, *files: str, **env: str) -> subprocess.CompletedProcess:
        return commit(repo, *files, **{"AGENT_MAIL_URL": server, **({"AGENT_NAME": agent} if agent else {}), **env})

    return commit_as


def test_a_commit_touching_another_agents_exclusive_reservation_is_blocked(guarded, repo):
    result = guarded("BlueLake", "README.md", "src/app.py")
    assert result.returncode != 0 and commits(repo) == 0
    assert "src/app.py is reserved by GreenCastle (src/**" in result.stderr and "FEAT-7" in result.stderr
    assert "README.md" not in result.stderr and "AGENT_MAIL_BYPASS" in result.stderr


def test_without_agent_name_every_exclusive_reservation_counts(guarded, repo):
    assert guarded(None, "src/app.py").returncode != 0 and commits(repo) == 0


def test_own_reservations_shared_ones_and_free_files_pass(guarded, repo):
    assert guarded("GreenCastle", "src/app.py").returncode == 0
    assert guarded("BlueLake", "docs/guide.md", "README.md").returncode == 0
    assert commits(repo) == 2


def test_a_rename_out_of_a_reservation_touches_it(guarded, repo, server):
    assert guarded("GreenCastle", "src/old.py").returncode == 0
    git(repo, "mv", "src/old.py", "new.py")
    result = git(repo, "commit", "-q", "-m", "move", AGENT_NAME="BlueLake", AGENT_MAIL_URL=server)
    assert result.returncode != 0 and "src/old.py" in result.stderr


def test_advisory_mode_warns_but_commits(guarded, repo):
    result = guarded("BlueLake", "src/app.py", AGENT_MAIL_GUARD_MODE="warn")
    assert result.returncode == 0 and commits(repo) == 1
    assert "src/app.py is reserved by GreenCastle" in result.stderr


def test_bypass_skips_the_check(guarded, repo):
    result = guarded("BlueLake", "src/app.py", AGENT_MAIL_BYPASS="1")
    assert result.returncode == 0 and commits(repo) == 1 and "AGENT_MAIL_BYPASS" in result.stderr


def test_an_unknown_agent_is_blocked_with_the_servers_explanation(guarded, repo):
    result = guarded("NoSuchAgent", "README.md")
    assert result.returncode != 0 and "No agent named NoSuchAgent" in result.stderr
    assert "Fix AGENT_NAME or AGENT_MAIL_URL" in result.stderr  # a 404: the hook's setup, unlike a path refused


def test_an_unreachable_server_warns_unless_strict(guarded, repo):
    nobody = f"http://127.0.0.1:{free_port()}"
    result = guarded("BlueLake", "src/app.py", AGENT_MAIL_URL=nobody)
    assert result.returncode == 0 and "cannot check file reservations" in result.stderr
    strict = guarded("BlueLake", "src/other.py", AGENT_MAIL_URL=nobody, AGENT_MAIL_GUARD_STRICT="1")
    assert strict.returncode != 0 and "AGENT_MAIL_GUARD_STRICT" in strict.stderr and commits(repo) == 1


def test_the_chained_hook_runs_first_and_can_block(api, repo, server):
    hooks = repo / ".git" / "hooks"
    write_hook(hooks / "pre-commit", '#!/bin/sh\necho chained >> "$(git rev-parse --git-dir)/ran"\nexit "${FAIL:-0}"\n')
    api.post("/api/install_precommit_guard", json={"project_key": PROJECT, "code_repo_path": str(repo)}).raise_for_status()
    env = {"AGENT_MAIL_URL": server, "AGENT_NAME": "BlueLake"}
    assert commit(repo, "src/app.py", **env).returncode != 0  # chained hook passed, the guard blocked
    git(repo, "rm", "-q", "--cached", "src/app.py")
    assert commit(repo, "README.md", FAIL="3", **env).returncode != 0  # the chained hook's failure blocks
    assert commit(repo, "README.md", **env).returncode == 0
    assert (repo / ".git" / "ran").read_text() == "chained\n" * 3

    api.post("/api/uninstall_precommit_guard", json={"code_repo_path": str(repo)}).raise_for_status()
    assert commit(repo, "src/app.py", **env).returncode == 0  # only the original hook is left
    assert not (hooks / CHAINED).exists() and MARKER not in (hooks / "pre-commit").read_text()


def test_a_hook_under_core_hooks_path_guards_commits(api, repo, server, tmp_path):
    git(repo, "config", "core.hooksPath", str(tmp_path / "tools" / "hooks"))
    installed = api.post("/api/install_precommit_guard", json={"project_key": PROJECT, "code_repo_path": str(repo)}).json()
    assert installed["hook_path"] == str(tmp_path / "tools" / "hooks" / "pre-commit")
    result = commit(repo, "src/app.py", AGENT_MAIL_URL=server, AGENT_NAME="BlueLake")
    assert result.returncode != 0 and "GreenCastle" in result.stderr


def test_the_url_written_at_install_reaches_the_server(call, api, repo, server, monkeypatch):
    """Installed in process with PORT set to the server's: no AGENT_MAIL_URL needed at commit time."""
    call("ensure_project", human_key=PROJECT)
    monkeypatch.setenv("PORT", server.rsplit(":", 1)[1])
    get_settings.cache_clear()
    try:
        call("install_precommit_guard", project_key=PROJECT, code_repo_path=str(repo))
    finally:
        get_settings.cache_clear()
    result = commit(repo, "src/app.py", AGENT_NAME="BlueLake")
    assert result.returncode != 0 and "GreenCastle" in result.stderr


def test_a_guard_installed_where_no_http_server_listens_reads_the_database(settings, call, repo):
    """QA session 33: installed over stdio (the README's set-up for Claude Code, Cursor, Codex), the
    hook asked HOST:PORT, where nothing listened, and let every reserved file through with a warning.
    A process serving no HTTP (stdio, the command line) writes a hook that runs this checkout's
    command line on its database, whatever DATABASE_URL the committer has."""
    call("ensure_project", human_key=PROJECT)
    for name in ("BlueLake", "GreenCastle"):
        call("register_agent", project_key=PROJECT, program="p", model="m", name=name)
    call("file_reservation_paths", project_key=PROJECT, agent_name="GreenCastle", paths=["src/**"], reason="FEAT-7")
    with guard.without_http():
        installed = call("install_precommit_guard", project_key=PROJECT, code_repo_path=str(repo))
    assert installed["server_url"] is None and installed["reads_database"] == str(settings.database_path)
    elsewhere = {"DATABASE_URL": f"sqlite:///{repo}/other.db"}
    blocked = commit(repo, "src/app.py", AGENT_NAME="BlueLake", **elsewhere)
    assert blocked.returncode != 0 and "src/app.py is reserved by GreenCastle (src/**" in blocked.stderr
    unknown = commit(repo, "README.md", AGENT_NAME="NoSuchAgent")  # a typo must not wave commits through either
    assert unknown.returncode != 0 and "No agent named NoSuchAgent" in unknown.stderr and "Fix AGENT_NAME" in unknown.stderr
    assert commits(repo) == 0


def test_no_guard_is_installed_where_no_http_server_listens_on_a_turso_replica(tmp_path):
    """A replica's file is its process's own, pulled when it reads: a hook could not read it. Refused, saying how."""
    replica = Settings(database_url=f"sqlite:///{tmp_path}/replica.db", turso_sync_url="http://127.0.0.1:1")
    assert guard.hook_target(replica, str(tmp_path / "replica.db"))[0] == "http://127.0.0.1:8765"  # the HTTP server's own
    with guard.without_http(), pytest.raises(Conflict) as refused:
        guard.hook_target(replica, str(tmp_path / "replica.db"))
    assert "No guard was installed" in refused.value.message and "agent-mail serve" in refused.value.hint


def test_the_guard_authenticates_to_a_server_that_requires_it(repo, tmp_path):
    token = "guard-test-token"
    with running_server(tmp_path / "auth.db", AUTH_MODE="bearer", AUTH_BEARER_TOKENS=token, GUARD_ALLOWED_ROOTS=str(repo.parent)) as url:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as client:
            client.post("/api/ensure_project", json={"human_key": PROJECT}).raise_for_status()
            holder = client.post("/api/register_agent", json={"project_key": PROJECT, "program": "p", "model": "m",
                                                               "name": "GreenCastle"}).json()
            client.post("/api/file_reservation_paths", json={
                "project_key": PROJECT, "agent_name": "GreenCastle", "paths": ["src/**"],
                "registration_token": holder["registration_token"],
            }).raise_for_status()
            client.post("/api/install_precommit_guard",
                        json={"project_key": PROJECT, "code_repo_path": str(repo)}).raise_for_status()
        blocked = commit(repo, "src/app.py", AGENT_MAIL_URL=url, AGENT_MAIL_TOKEN=token)
        assert blocked.returncode != 0 and "src/app.py is reserved by GreenCastle" in blocked.stderr
        git(repo, "rm", "-q", "--cached", "src/app.py")
        anonymous = commit(repo, "README.md", AGENT_MAIL_URL=url)  # no token: refused, not waved through
        assert anonymous.returncode != 0 and commits(repo) == 0
        assert commit(repo, "README.md", AGENT_MAIL_URL=url, AGENT_MAIL_TOKEN=token).returncode == 0


# Paths git allows that the check could not take, commits too big for one check, nested repositories


def test_a_file_name_that_is_not_utf8_is_checked_not_refused(guarded, repo, server):
    """QA session 30: the hook sent such a name surrogate-escaped, the server refused the body, and
    the commit was blocked with "Fix AGENT_NAME or AGENT_MAIL_URL". Now its odd bytes are U+FFFD."""
    (repo / os.fsdecode(b"caf\xe9.txt")).write_text("x")
    git(repo, "add", "-A")
    free = git(repo, "commit", "-q", "-m", "latin-1", AGENT_NAME="BlueLake", AGENT_MAIL_URL=server)
    assert free.returncode == 0 and commits(repo) == 1, free.stderr
    (repo / "src").mkdir()
    (repo / "src" / os.fsdecode(b"caf\xe9.py")).write_text("x")
    git(repo, "add", "-A")
    held = git(repo, "commit", "-q", "-m", "under src/**", AGENT_NAME="BlueLake", AGENT_MAIL_URL=server)
    assert held.returncode != 0 and "is reserved by GreenCastle (src/**" in held.stderr and commits(repo) == 1


def test_a_path_as_long_as_git_allows_is_checked(guarded, repo):
    """QA session 30: a staged path over 1,024 characters (git allows 4,096) was refused (422), the
    commit blocked. The check takes what git allows."""
    deep = "/".join(["d" * 200] * 6) + "/file.txt"
    assert len(deep) > 1024 and guarded("BlueLake", deep).returncode == 0
    result = guarded("BlueLake", "src/" + deep)
    assert result.returncode != 0 and "is reserved by GreenCastle (src/**" in result.stderr and commits(repo) == 1


def test_a_commit_too_big_to_check_at_once_is_checked_in_smaller_calls(api, repo, server):
    """QA session 30: 1,000 staged files against 501 globs (none theirs) were 501,000 pairs, more than
    one check compares: 422 "send fewer paths per call", which the hook did not, and blocked."""
    project = "/guard/big"
    api.post("/api/ensure_project", json={"human_key": project}).raise_for_status()
    api.post("/api/register_agent", json={"project_key": project, "program": "p", "model": "m", "name": "GreenCastle"})
    globs = [f"**/gen-{n}.txt" for n in range(500)] + ["**/held.txt"]
    api.post("/api/file_reservation_paths", json={
        "project_key": project, "agent_name": "GreenCastle", "paths": globs}).raise_for_status()
    api.post("/api/install_precommit_guard", json={"project_key": project, "code_repo_path": str(repo)}).raise_for_status()
    files = [f"f/{n}.txt" for n in range(1000)]
    assert commit(repo, *files, AGENT_MAIL_URL=server).returncode == 0 and commits(repo) == 1
    blocked = commit(repo, *[f"g/{n}.txt" for n in range(999)], "g/held.txt", AGENT_MAIL_URL=server)
    assert blocked.returncode != 0 and "g/held.txt is reserved by GreenCastle (**/held.txt" in blocked.stderr


@pytest.fixture
def nested(api, tmp_path):
    """A project whose directory is a git repository: GreenCastle holds `b.py` and, below, `sub/a.py`
    and `vendor/lib/a.c`."""
    top = tmp_path / "project"
    top.mkdir()
    git(top, "init", "-q")
    api.post("/api/ensure_project", json={"human_key": str(top)}).raise_for_status()
    for name in ("BlueLake", "GreenCastle"):
        api.post("/api/register_agent", json={"project_key": str(top), "program": "p", "model": "m", "name": name})
    api.post("/api/file_reservation_paths", json={"project_key": str(top), "agent_name": "GreenCastle",
                                                  "paths": ["b.py", "sub/a.py", "vendor/lib/a.c"]}).raise_for_status()
    return top


def install_in(api, project: Path, work_tree: Path) -> None:
    api.post("/api/install_precommit_guard", json={"project_key": str(project), "code_repo_path": str(work_tree)}).raise_for_status()


def test_a_guard_in_a_nested_clone_checks_its_paths_as_the_projects(api, nested, server):
    """QA session 30: it sent `a.py` for sub/a.py, so GreenCastle's sub/a.py did not block it and its
    top-level b.py blocked sub/b.py."""
    sub = nested / "sub"
    sub.mkdir()
    git(sub, "init", "-q")
    install_in(api, nested, sub)
    env = {"AGENT_NAME": "BlueLake", "AGENT_MAIL_URL": server}
    assert commit(sub, "b.py", **env).returncode == 0
    held = commit(sub, "a.py", **env)
    assert held.returncode != 0 and "sub/a.py is reserved by GreenCastle (sub/a.py" in held.stderr
    install_in(api, nested, nested)  # the project's own repository: its paths as they are
    assert commit(nested, "sub2/a.py", **env).returncode == 0
    assert commit(nested, "b.py", **env).returncode != 0


def test_a_guard_in_a_nested_clones_linked_work_trees_checks_its_paths_as_the_main_ones(api, nested, server, tmp_path):
    """QA, session 40: the prefix was where the committing work tree lies, so a linked work tree of
    the nested clone sub/ (`sub-wt/` in the project, or one outside it: no prefix) sent `a.py` as
    sub-wt/a.py or a.py, and GreenCastle's sub/a.py blocked neither. One guard serves every work tree
    (docs/reservations.md): each is checked as the main one. And a nested clone whose folder's name
    holds a newline got no prefix (git's output was split on lines)."""
    sub = nested / "sub"
    sub.mkdir()
    git(sub, "init", "-q")
    git(sub, "-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "--allow-empty", "-m", "first")
    install_in(api, nested, sub)
    env = {"AGENT_NAME": "BlueLake", "AGENT_MAIL_URL": server}
    for tree in (nested / "sub-wt", tmp_path / "elsewhere-wt"):
        assert git(sub, "worktree", "add", "-q", str(tree)).returncode == 0
        assert commit(tree, "b.py", **env).returncode == 0, tree
        held = commit(tree, "a.py", **env)
        assert held.returncode != 0 and "sub/a.py is reserved by GreenCastle" in held.stderr, (tree, held.stderr)
    odd = nested / "new\nline"
    odd.mkdir()
    git(odd, "init", "-q")
    api.post("/api/file_reservation_paths", json={"project_key": str(nested), "agent_name": "GreenCastle",
                                                  "paths": ["new\nline/f.py"]}).raise_for_status()
    install_in(api, nested, odd)
    held = commit(odd, "f.py", **env)
    assert held.returncode != 0 and "is reserved by GreenCastle" in held.stderr, held.stderr


def test_a_guard_in_a_submodule_checks_its_paths_as_the_projects(api, nested, server, tmp_path):
    library = tmp_path / "library"
    library.mkdir()
    git(library, "init", "-q")
    assert commit(library, "a.c").returncode == 0
    added = git(nested, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(library), "vendor/lib")
    assert added.returncode == 0, added.stderr
    submodule = nested / "vendor" / "lib"
    install_in(api, nested, submodule)  # its hooks: the project's .git/modules/vendor/lib/hooks
    assert commit(submodule, "b.py", AGENT_NAME="BlueLake", AGENT_MAIL_URL=server).returncode == 0
    held = commit(submodule, "a.c", AGENT_NAME="BlueLake", AGENT_MAIL_URL=server)
    assert held.returncode != 0 and "vendor/lib/a.c is reserved by GreenCastle" in held.stderr


def test_a_guard_in_the_projects_own_repository_with_its_git_directory_elsewhere_takes_no_prefix(api, server, tmp_path):
    """QA session 30: the nested-repository prefix took the folder holding a separate git directory
    (`git init --separate-git-dir .meta/repo.git`) for a work tree and sent `.meta/b.py` for b.py:
    nothing reserved matched, and a held file was committed."""
    top = tmp_path / "project"
    (top / ".meta").mkdir(parents=True)
    assert git(top, "init", "-q", "--separate-git-dir", str(top / ".meta" / "repo.git")).returncode == 0
    api.post("/api/ensure_project", json={"human_key": str(top)}).raise_for_status()
    for name in ("BlueLake", "GreenCastle"):
        api.post("/api/register_agent", json={"project_key": str(top), "program": "p", "model": "m", "name": name})
    api.post("/api/file_reservation_paths", json={"project_key": str(top), "agent_name": "GreenCastle", "paths": ["b.py"]})
    install_in(api, top, top)
    held = commit(top, "b.py", AGENT_NAME="BlueLake", AGENT_MAIL_URL=server)
    assert held.returncode != 0 and "b.py is reserved by GreenCastle" in held.stderr, held.stderr


def test_a_guard_in_a_work_tree_of_a_bare_repository_checks_its_paths(api, server, tmp_path):
    """QA session 30: in the "bare repository and its work trees" layout every commit failed with a
    traceback (rev-parse --show-toplevel of the bare directory), whatever AGENT_MAIL_GUARD_MODE said."""
    seed, top = tmp_path / "seed", tmp_path / "project"
    seed.mkdir()
    git(seed, "init", "-q")
    assert commit(seed, "s.txt").returncode == 0
    top.mkdir()
    assert git(tmp_path, "clone", "-q", "--bare", str(seed), str(top / ".bare")).returncode == 0
    assert git(top / ".bare", "worktree", "add", "-q", str(top / "main")).returncode == 0
    api.post("/api/ensure_project", json={"human_key": str(top)}).raise_for_status()
    for name in ("BlueLake", "GreenCastle"):
        api.post("/api/register_agent", json={"project_key": str(top), "program": "p", "model": "m", "name": name})
    api.post("/api/file_reservation_paths", json={"project_key": str(top), "agent_name": "GreenCastle", "paths": ["b.py"]})
    install_in(api, top, top / "main")
    env = {"AGENT_NAME": "BlueLake", "AGENT_MAIL_URL": server}
    assert commit(top / "main", "a.py", **env).returncode == 0
    held = commit(top / "main", "b.py", **env)
    assert held.returncode != 0 and "b.py is reserved by GreenCastle" in held.stderr and "Traceback" not in held.stderr, held.stderr


def test_a_server_that_refuses_every_size_of_chunk_is_asked_a_bounded_number_of_times(guarded, repo):
    """QA session 30: chunks refused as too costly to compare were split down to what the server took,
    each refusal after the check's budget (seconds): refused down to single paths, 1,000 files made
    ~1,000 refusals, a commit held for an hour. Here every chunk of more than one path is refused."""
    asked = []

    class Refusing(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            asked.append(len(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["paths"]))
            refused = {"error": {"code": "too_much_to_compare", "message": "Too much.", "hint": "Fewer."}}
            body = json.dumps(refused if asked[-1] > 1 else {"conflicts": []}).encode()
            self.send_response(422 if asked[-1] > 1 else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    refusing = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=refusing.serve_forever, daemon=True).start()
    try:
        result = guarded("BlueLake", *[f"many/{n}.txt" for n in range(1000)],
                         AGENT_MAIL_URL=f"http://127.0.0.1:{refusing.server_address[1]}")
    finally:
        refusing.shutdown()
    assert result.returncode != 0 and "the check was refused" in result.stderr and commits(repo) == 0
    assert len([size for size in asked if size > 1]) == 16 + 1 and asked[0] == 1000, asked  # SPLITS, then given up


# Hooks the guard cannot simply chain, servers that cannot answer, chunks that fail


def test_a_chained_hook_without_a_shebang_runs_as_git_runs_it(api, repo, server):
    """QA session 32: such a hook (git runs it with /bin/sh) raised ENOEXEC in the guard: every commit
    blocked with a traceback, AGENT_MAIL_BYPASS too. One that cannot run at all blocks in one line."""
    hooks = repo / ".git" / "hooks"
    write_hook(hooks / "pre-commit", 'echo "team hook: ok" >&2\nexit "${FAIL:-0}"\n')
    api.post("/api/install_precommit_guard", json={"project_key": PROJECT, "code_repo_path": str(repo)}).raise_for_status()
    env = {"AGENT_MAIL_URL": server, "AGENT_NAME": "BlueLake"}
    passed = commit(repo, "README.md", **env)
    assert passed.returncode == 0 and "team hook: ok" in passed.stderr and commits(repo) == 1, passed.stderr
    assert commit(repo, "README.md", FAIL="1", AGENT_MAIL_BYPASS="1", **env).returncode != 0 and commits(repo) == 1
    write_hook(hooks / CHAINED, "#!/no/such/interpreter\nexit 0\n")
    broken = commit(repo, "README.md", **env)
    assert broken.returncode != 0 and "cannot run the repository's own hook" in broken.stderr
    assert "Traceback" not in broken.stderr and commits(repo) == 1


@pytest.mark.parametrize("answer", [
    b"SSH-2.0-OpenSSH_9.6\r\n",  # another program on the port
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"conf",  # cut short
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",  # another service's 200
    b'HTTP/1.1 200 OK\r\nContent-Length: 34\r\n\r\n{"conflicts": [{"path": "src/a"}]}',  # no holders
], ids=["not-http", "cut-short", "other-200", "bad-conflict"])
def test_a_server_that_cannot_answer_the_check_counts_as_unreachable(guarded, repo, answer):
    """QA session 32: these ended the hook in a traceback and blocked the commit, though a server
    that cannot answer only warns unless AGENT_MAIL_GUARD_STRICT is set."""
    with answering(answer) as url:
        warned = guarded("BlueLake", "src/app.py", AGENT_MAIL_URL=url)
        strict = guarded("BlueLake", "src/other.py", AGENT_MAIL_URL=url, AGENT_MAIL_GUARD_STRICT="1")
    assert warned.returncode == 0 and "cannot check file reservations" in warned.stderr, warned.stderr
    assert strict.returncode != 0 and "AGENT_MAIL_GUARD_STRICT" in strict.stderr and commits(repo) == 1
    assert "Traceback" not in warned.stderr + strict.stderr


def test_a_conflict_found_before_a_chunk_fails_still_blocks(repo, tmp_path):
    """QA session 32: 2,001 staged paths are 3 chunks; the server answered two (the first naming a held
    file) and was busy for the third (429): the hook dropped what it had found and committed."""
    with running_server(tmp_path / "busy.db", RATE_LIMIT_READS_PER_MINUTE="2", GUARD_ALLOWED_ROOTS=str(repo.parent)) as url:
        with httpx.Client(base_url=url) as client:
            client.post("/api/ensure_project", json={"human_key": PROJECT}).raise_for_status()
            client.post("/api/register_agent", json={"project_key": PROJECT, "program": "p", "model": "m", "name": "GreenCastle"})
            client.post("/api/file_reservation_paths", json={
                "project_key": PROJECT, "agent_name": "GreenCastle", "paths": ["a/held.py"]}).raise_for_status()
            client.post("/api/install_precommit_guard",
                        json={"project_key": PROJECT, "code_repo_path": str(repo)}).raise_for_status()
        blocked = commit(repo, "a/held.py", *[f"b/{n}" for n in range(2000)], AGENT_MAIL_URL=url)
    assert blocked.returncode != 0 and commits(repo) == 0, blocked.stderr
    assert "a/held.py is reserved by GreenCastle" in blocked.stderr
    assert "1 of 2001 staged paths could not be checked" in blocked.stderr


def test_a_relative_core_hooks_path_is_refused_and_the_guard_is_called_from_the_teams_hook(api, repo, server, tmp_path):
    """QA session 32: with core.hooksPath=.githooks (tracked) the guard replaced the team's hook there:
    a tracked file changed (the next `git add -A` commits the guard for every clone), and a linked work
    tree ran its own checkout of .githooks, unguarded. Now: 409, the guard is written to the git
    directory, and one line in the team's hook runs it in every work tree."""
    team_hook = repo / ".githooks" / "pre-commit"
    write_hook(team_hook, "#!/bin/sh\nexit 0\n")
    git(repo, "config", "core.hooksPath", ".githooks")
    git(repo, "add", ".githooks")
    assert git(repo, "commit", "-qm", "team hook").returncode == 0
    other = tmp_path / "repo-2"
    assert git(repo, "worktree", "add", "-q", str(other)).returncode == 0
    answer = api.post("/api/install_precommit_guard", json={"project_key": PROJECT, "code_repo_path": str(repo)})
    assert answer.status_code == 409 and "core.hooksPath is relative" in answer.json()["error"]["message"], answer.text
    hint = answer.json()["error"]["hint"]
    script = repo / ".git" / "agent-mail" / "pre-commit"
    assert str(script) in hint and MARKER in script.read_text()
    assert git(repo, "status", "--porcelain").stdout == "" and team_hook.read_text() == "#!/bin/sh\nexit 0\n"

    line = hint.split("clones without the guard: ", 1)[1]
    write_hook(team_hook, f"#!/bin/sh\n{line}\nexit 0\n")
    git(repo, "add", ".githooks")
    assert git(repo, "commit", "-qm", "call the guard", AGENT_MAIL_URL=server).returncode == 0
    assert git(other, "merge", "-q", "--ff-only", git(repo, "branch", "--show-current").stdout.strip()).returncode == 0
    env = {"AGENT_MAIL_URL": server, "AGENT_NAME": "BlueLake"}
    for tree in (repo, other):
        blocked = commit(tree, "src/cart.py", **env)
        assert blocked.returncode != 0 and "src/cart.py is reserved by GreenCastle" in blocked.stderr, (tree, blocked.stderr)
        git(tree, "rm", "-q", "--cached", "src/cart.py")
    removed = api.post("/api/uninstall_precommit_guard", json={"code_repo_path": str(repo)}).json()
    assert removed["removed"] and not script.exists()
    assert commit(other, "src/cart.py", **env).returncode == 0  # the line does nothing without the guard


def test_a_hook_that_finds_its_work_by_its_own_name_is_not_renamed(api, repo, server):
    """QA session 32: husky's hooks run `.husky/$(basename "$0")`; renamed pre-commit.agent-mail-chained,
    they looked for a script of that name, found none and passed: the team's checks silently stopped."""
    hooks = repo / ".git" / "hooks"
    husky = '#!/bin/sh\n. "$(dirname "$0")/husky.sh"\n'
    write_hook(hooks / "pre-commit", husky)
    answer = api.post("/api/install_precommit_guard", json={"project_key": PROJECT, "code_repo_path": str(repo)})
    assert answer.status_code == 409 and "its own name or place" in answer.json()["error"]["message"], answer.text
    assert (hooks / "pre-commit").read_text() == husky and not (hooks / CHAINED).exists()
    pre_commit_com = '#!/usr/bin/env bash\n# File generated by pre-commit: https://pre-commit.com\nHERE="$(dirname "$0")"\nexit 0\n'
    write_hook(hooks / "pre-commit", pre_commit_com)  # names the hook type itself: safe to rename
    installed = api.post("/api/install_precommit_guard", json={"project_key": PROJECT, "code_repo_path": str(repo)})
    assert installed.status_code == 200 and (hooks / CHAINED).read_text() == pre_commit_com, installed.text
