"""The pre-commit guard: a git hook that asks the server whether the staged files are under
another agent's active exclusive reservation, and installing or removing it.

The hook is a small stdlib-only Python script: it lists the staged paths and POSTs them to
`/api/check_file_reservations`, so the matching rules live in one place (the tool). The
server URL and the project are written into it at install time. An existing pre-commit
hook is moved aside to `pre-commit.agent-mail-chained`, run first by the guard, and put
back by uninstall.

Only work trees the operator permits are touched: the project's own directory (its human_key)
or below it, or below a GUARD_ALLOWED_ROOTS entry, after resolving symlinks, or a linked work
tree of a repository there (its hooks are that repository's); so must be the
hooks directory git names for it (a `.git` file or core.hooksPath may point into another
repository). Anything else is refused with the same 403 whether or not it exists, so the tool
probes nothing. The script is written to a fresh file (no planted link is followed) before
the hook it chains is moved aside. With
authentication on, the hook sends a bearer token: AGENT_MAIL_TOKEN from the committer's
environment, else the file GUARD_TOKEN_FILE names (the path is written into the hook, never the
token itself).
"""

import fcntl
import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from ..config import Settings
from ..errors import Conflict, Forbidden, NotFound, Unavailable

HOOK = "pre-commit"
CHAINED = "pre-commit.agent-mail-chained"
MARKER = "# agent-mail pre-commit guard"
LOCK_SECONDS = 10  # an install takes milliseconds: waiting longer means one is stuck

HOOK_HEADER = f"""#!/usr/bin/env python3
{MARKER}: installed by install_precommit_guard, removed by uninstall_precommit_guard.
SERVER_URL = {{url!r}}
PROJECT = {{project!r}}
TOKEN_FILE = {{token_file!r}}
CHAINED = {CHAINED!r}
GUARD = {MARKER!r}
"""

HOOK_BODY = r'''"""Refuse a commit that touches files under another agent's active exclusive reservation.

AGENT_NAME                  the committing agent (unset: a committer holding no reservation)
AGENT_MAIL_GUARD_MODE=warn  report conflicts but let the commit through
AGENT_MAIL_BYPASS=1         skip the check
AGENT_MAIL_GUARD_STRICT=1   block when the server cannot be reached (default: warn, commit)
AGENT_MAIL_URL              the server (default: SERVER_URL above)
AGENT_MAIL_TOKEN            a bearer token, when the server requires authentication
AGENT_MAIL_TOKEN_FILE       a file holding that token (default: TOKEN_FILE above, if set)
"""
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

CHUNK = 1000  # paths per request (the tool takes at most 1000)
CHUNK_BYTES = 512 * 1024  # and at most this much JSON of them (the server takes a body of 1 MiB)
# Chunks split in two when the server would compare too much for one: halving the pairs, a few splits
# do (1,000 paths against 501 globs: one). Patterns costly to compare refuse any size, each refusal
# after spending the check's budget (seconds): 2,000 of them held a commit for hours.
SPLITS = 16
# 4xx answers that mean this hook is set up wrong (token, server, project or agent name), not that the
# files cannot be checked.
SETUP = {401: "the token (AGENT_MAIL_TOKEN)", 403: "the token (AGENT_MAIL_TOKEN)", 404: "AGENT_NAME or AGENT_MAIL_URL"}


class Unreachable(Exception):
    pass


class Refused(Exception):
    def __init__(self, detail, fix=None):
        super().__init__(detail)
        self.fix = fix  # what to fix, when the hook is set up wrong


class TooMuch(Exception):
    """The server would compare too much for one call: fewer paths a call will do."""


def say(text):
    print(f"agent-mail: {text}", file=sys.stderr)


def switch(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def run_chained():
    hook = os.path.join(os.path.dirname(os.path.abspath(__file__)), CHAINED)
    if not (os.path.isfile(hook) and os.access(hook, os.X_OK)):
        return 0
    with open(hook, "rb") as file:
        if GUARD.encode() in file.read(4096):  # a guard chained to a guard would start itself forever
            say(f"{CHAINED} is this guard, not the repository's own hook: skipped.")
            return 0
    return subprocess.call([hook, *sys.argv[1:]])


def git(*args, **options):
    return subprocess.run(["git", *args], check=True, stdout=subprocess.PIPE, **options).stdout.decode().strip()


def staged_paths():
    # --no-renames: a rename touches both its old and its new path. A name that is not UTF-8 (JSON
    # cannot carry it) is sent with U+FFFD for its odd bytes: no reservation names it, but a folder
    # or glob over it still blocks it.
    out = subprocess.run(
        ["git", "diff", "--cached", "--name-only", "-z", "--no-renames"], check=True, stdout=subprocess.PIPE
    ).stdout
    return [path for path in out.decode("utf-8", "replace").split("\0") if path]


def work_tree_prefix():
    """Where this repository's work tree lies under the project's directory, as `vendor/lib/`: a
    submodule's or nested clone's paths are relative to it, while reservations are relative to the
    project's. '' when the project's directory is a work tree of this same repository (any of them;
    its git directory anywhere), when it is no repository's top (a folder holding a bare repository
    and its work trees), and whenever git cannot tell: the paths as git lists them, as before."""
    ask = ("rev-parse", "--path-format=absolute", "--git-common-dir", "--show-toplevel")
    outside = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}  # the project's, not this commit's
    try:
        common, top = git(*ask).splitlines()
        project_common, project_top = git("-C", PROJECT, *ask, env=outside, stderr=subprocess.DEVNULL).splitlines()
    except (subprocess.CalledProcessError, OSError, ValueError):
        return ""
    project = os.path.realpath(PROJECT)
    if os.path.realpath(project_top) != project or os.path.realpath(project_common) == os.path.realpath(common):
        return ""
    where = os.path.relpath(os.path.realpath(top), project)
    return "" if where == "." or where == ".." or where.startswith("../") else where + "/"


def token():
    if os.environ.get("AGENT_MAIL_TOKEN"):
        return os.environ["AGENT_MAIL_TOKEN"].strip()
    path = os.environ.get("AGENT_MAIL_TOKEN_FILE") or TOKEN_FILE
    if not path:
        return None
    try:
        with open(path) as file:
            return file.read().strip() or None
    except OSError as exc:
        raise Refused(f"cannot read the token file {path}: {exc.strerror}", "AGENT_MAIL_TOKEN_FILE") from None


def ask(url, arguments):
    """The server's answer, or Unreachable (no answer, 5xx, busy), TooMuch, Refused (another 4xx)."""
    headers = {"Content-Type": "application/json"}
    if secret := token():
        headers["Authorization"] = "Bearer " + secret
    request = urllib.request.Request(
        url.rstrip("/") + "/api/check_file_reservations", data=json.dumps(arguments).encode(), headers=headers
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is local: no proxy
    try:
        with opener.open(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            error = json.load(exc)["error"]
            code, detail = error["code"], f"{error['message']} {error['hint']}"
        except Exception:
            code, detail = None, f"HTTP {exc.code}"
        if exc.code >= 500 or exc.code == 429:
            raise Unreachable(detail) from None
        if code == "too_much_to_compare":
            raise TooMuch(detail) from None
        raise Refused(detail, SETUP.get(exc.code)) from None
    except (OSError, ValueError) as exc:  # connection refused, timeout, DNS, not JSON
        raise Unreachable(str(getattr(exc, "reason", exc))) from None


def chunks(paths):
    chunk, size = [], 0
    for path in paths:
        cost = len(json.dumps(path)) + 2
        if chunk and (len(chunk) == CHUNK or size + cost > CHUNK_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(path)
        size += cost
    yield chunk


def conflicts(url, paths):
    arguments = {"project_key": PROJECT}
    if os.environ.get("AGENT_NAME"):
        arguments["agent_name"] = os.environ["AGENT_NAME"]
    found, pending, splits = [], list(chunks(paths))[::-1], SPLITS  # popped in order
    while pending:
        chunk = pending.pop()
        try:
            found += ask(url, {**arguments, "paths": chunk})["conflicts"]
        except TooMuch:  # the project holds many globs near these paths: ask about fewer at a time
            if len(chunk) == 1 or not splits:
                raise
            splits -= 1
            pending += [chunk[len(chunk) // 2 :], chunk[: len(chunk) // 2]]
    return found


def describe(conflict):
    return "; ".join(
        f"{conflict['path']} is reserved by {h['agent']} ({h['path_pattern']}, until {h['expires_ts']}"
        + (f", {h['reason']}" if h["reason"] else "")
        + ")"
        for h in conflict["holders"]
    )


def main():
    code = run_chained()
    if code:
        return code
    if switch("AGENT_MAIL_BYPASS"):
        say("AGENT_MAIL_BYPASS is set: file reservations not checked.")
        return 0
    warn_only = os.environ.get("AGENT_MAIL_GUARD_MODE", "block").strip().lower() == "warn"
    url = os.environ.get("AGENT_MAIL_URL") or SERVER_URL
    paths = staged_paths()
    if not paths:
        return 0
    prefix = work_tree_prefix()
    try:
        found = conflicts(url, [prefix + path for path in paths])
    except Unreachable as exc:
        if switch("AGENT_MAIL_GUARD_STRICT"):
            say(f"cannot check file reservations at {url} ({exc}); commit blocked (AGENT_MAIL_GUARD_STRICT).")
            return 1
        say(f"cannot check file reservations at {url} ({exc}); committing anyway.")
        return 0
    except (Refused, TooMuch) as exc:
        say(f"the reservation check was refused: {exc}")
        if warn_only:
            return 0
        if getattr(exc, "fix", None):
            say(f"Commit blocked. Fix {exc.fix}, or set AGENT_MAIL_BYPASS=1.")
        else:
            say("Commit blocked: the check was refused (above). AGENT_MAIL_BYPASS=1 commits without it.")
        return 1
    for conflict in found:
        say(describe(conflict))
    if not found or warn_only:
        return 0
    say(
        "Commit blocked: these files are under another agent's exclusive reservation."
        " Coordinate with the holder (send_message) or wait for it to expire;"
        " AGENT_MAIL_GUARD_MODE=warn only reports, AGENT_MAIL_BYPASS=1 skips the check."
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
'''


def hook_script(project: str, url: str, token_file: str = "") -> str:
    return HOOK_HEADER.format(url=url, project=project, token_file=token_file) + HOOK_BODY


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_permitted(repo: str, roots: list[str]) -> None:
    """Forbidden unless `repo` is one of `roots` or below one, also once symlinks are resolved
    (/proc/self/cwd, a link out of an allowed root), or a linked work tree of a repository within
    them. The same refusal whatever is at `repo`."""
    real = os.path.realpath(repo)
    within = any(_within(repo, root) and _within(real, os.path.realpath(root)) for root in roots)
    repository = None if within else worktree_repository(repo)
    if not within and not (repository and any(_within(repository, os.path.realpath(root)) for root in roots)):
        raise Forbidden(
            f"The server does not install or remove git hooks in {repo}.",
            "Pass the project's own directory (its human_key), a directory below it, or the root of a linked work"
            " tree of its repository (git worktree add); the operator may permit other roots with GUARD_ALLOWED_ROOTS.",
        )


def worktree_repository(repo: str) -> str | None:
    """The repository (its directory) of which `repo` is the root of a linked work tree (`git
    worktree add`), as both sides record it: its `.git` file names the repository's
    .git/worktrees/<name> entry, and that entry's `gitdir` names this `.git` file back. Agents
    often work in sibling work trees of one repository, which share its project and its hooks.
    Read from the files before git runs there: a planted `.git` file could point git at
    anyone's configuration."""
    dot_git = os.path.join(repo, ".git")
    entry = _first_line(dot_git)
    if entry is None or not entry.startswith("gitdir: "):
        return None  # no .git file: no work tree, or a repository of its own (a .git directory)
    entry = os.path.realpath(os.path.join(repo, entry.removeprefix("gitdir: ")))
    back = _first_line(os.path.join(entry, "gitdir")) if os.path.basename(os.path.dirname(entry)) == "worktrees" else None
    if back is None or os.path.realpath(back) != os.path.realpath(dot_git):
        return None
    return os.path.dirname(os.path.dirname(os.path.dirname(entry)))  # <repository>/.git/worktrees/<name>


def _first_line(path: str) -> str | None:
    """The first line of a regular file (never a FIFO or a device, which could block or flood); None
    for one with a NUL, which names no path (realpath raises)."""
    try:
        if not os.path.isfile(path):
            return None
        with open(path) as file:
            line = file.readline(4096).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return None if "\x00" in line else line


def server_url(settings: Settings) -> str:
    """Where a hook on this machine reaches this server."""
    host = settings.host
    if host in ("", "0.0.0.0", "::"):  # listening everywhere: loopback reaches it
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def git(repo: str, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise Unavailable("git is not installed on the server's machine.", "Install git there, then retry.") from None


def hooks_dir(repo: str) -> Path:
    """The directory git runs this work tree's hooks from (core.hooksPath respected)."""
    if not os.path.exists(repo):
        raise NotFound(
            f"{repo} does not exist on the server's machine.",
            "Pass the absolute path of a git work tree on the machine where the server runs.",
        )
    inside = git(repo, "rev-parse", "--is-inside-work-tree")
    if inside.returncode != 0 or inside.stdout.strip() != "true":  # no work tree there: 404, like no path
        raise NotFound(
            f"{repo} is not a git work tree.",
            "Pass the root of a cloned repository (run `git init` there first if it has none).",
        )
    found = git(repo, "rev-parse", "--path-format=absolute", "--git-path", "hooks")
    if found.returncode != 0:
        raise Unavailable(f"git could not locate the hooks of {repo}: {found.stderr.strip()}", "Git 2.31+ is needed.")
    return Path(found.stdout.strip())


def is_guard(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return MARKER.encode() in file.read(4096)
    except OSError:
        return False


def permitted_hooks(repo: str, roots: list[str]) -> Path:
    """The hooks directory of a permitted work tree, itself within the permitted roots: git finds
    it through a `.git` file or core.hooksPath, which may point into another repository."""
    roots = [root for root in roots if root and "\x00" not in root]  # a key stored before NULs were refused: no directory
    check_permitted(repo, roots)
    hooks = hooks_dir(repo)
    real = os.path.realpath(hooks)  # git names it by its real path: compared with the roots resolved
    if not any(_within(real, os.path.realpath(root)) for root in roots):
        check_permitted(str(hooks), [])  # the same refusal
    return hooks


def install(repo: str, roots: list[str], project: str, url: str, token_file: str = "") -> tuple[Path, Path | None]:
    """Write the guard as the pre-commit hook, moving a foreign hook aside to be chained.
    Returns (hook, chained hook or None). The script is written first, under a name no one can
    plant a link at; the foreign hook is moved only then, and back if anything fails."""
    hooks = permitted_hooks(repo, roots)
    hooks.mkdir(parents=True, exist_ok=True)
    with _one_at_a_time(hooks):
        return _install(hooks, project, url, token_file)


def _install(hooks: Path, project: str, url: str, token_file: str) -> tuple[Path, Path | None]:
    hook, chained = hooks / HOOK, hooks / CHAINED
    foreign = os.path.lexists(hook) and not is_guard(hook)
    if foreign and os.path.lexists(chained):
        raise Conflict(
            f"{hook} is another hook, and {chained} (a hook the guard chained earlier) is in the way.",
            "Merge or delete one of them by hand, then install again.",
        )
    handle, temporary = tempfile.mkstemp(dir=hooks, prefix=f".{HOOK}.agent-mail-")  # O_EXCL: a new file, never a link
    try:
        with os.fdopen(handle, "w") as file:
            file.write(hook_script(project, url, token_file))
            os.fchmod(file.fileno(), 0o755)
        if foreign:
            hook.rename(chained)
        os.replace(temporary, hook)  # atomic: a commit running now sees the old hook or the new one
    except BaseException:
        if foreign and os.path.lexists(chained) and not os.path.lexists(hook):
            chained.rename(hook)
        if os.path.lexists(temporary):
            os.unlink(temporary)
        raise
    return hook, chained if os.path.lexists(chained) else None


def uninstall(repo: str, roots: list[str]) -> tuple[Path, bool, bool]:
    """Remove the guard and put the chained hook back. Returns (hook, removed, restored)."""
    hooks = permitted_hooks(repo, roots)
    hook, chained = hooks / HOOK, hooks / CHAINED
    if not hooks.is_dir():
        return hook, False, False
    with _one_at_a_time(hooks):
        removed = is_guard(hook)
        if removed:
            hook.unlink()
        restored = os.path.lexists(chained) and not os.path.lexists(hook)
        if restored:
            chained.rename(hook)
        return hook, removed, restored


@contextmanager
def _one_at_a_time(hooks: Path):
    """One install or uninstall at a time in a hooks directory, among this server's threads, other
    servers and the CLI (a lock on the directory itself: no file left in it). Two installs at once
    each moved "the foreign hook" aside: the second moved the first's guard over the repository's
    own hook, and the guard then chained itself."""
    fd = os.open(hooks, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + LOCK_SECONDS
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Unavailable(f"Another install or uninstall of the guard in {hooks} is still running.",
                                      "Retry in a moment.") from None
                time.sleep(0.01)
        yield
    finally:
        os.close(fd)  # (releases the lock)
