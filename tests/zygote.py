"""A template for the test servers: it imports the server's libraries once, then forks each server
asked of it, so a test's server starts without importing them again (~2 s of CPU of a ~3.4 s
start; the suite starts ~100 servers on 2 cores). The child then runs exactly what
`python -m uvicorn ...` runs, with the test's environment, working directory and stderr. Of the
app, only the tools (their models: ~0.35 s) are imported here: they read no settings and no
environment at import. The rest of chalicelib (invoke and ops.emf read the environment at import)
is imported fresh in each child, under its own settings.

    python -m tests.zygote   (tests/servers.py starts one per test process)

Requests on stdin, one JSON object a line: {"argv": [...], "env": {...}, "cwd": ..., "stderr": path
or null}; answered on stdout with the child's pid. Children are reaped by the kernel (SIGCHLD
ignored here, restored in the child); the test process follows a child through a pidfd. When
its input ends, the zygote stops the servers still running (a test process killed mid-test
leaves none behind) and exits.
"""

import atexit
import json
import os
import signal
import sys

# The server's heavy libraries (~1.8 s of imports); none of them reads settings at import.
import fastapi  # noqa: F401
import fastapi.openapi.models  # noqa: F401
import jinja2  # noqa: F401
import markdown_it  # noqa: F401
import mcp.server  # noqa: F401
import mcp.server.mcpserver  # noqa: F401
import nh3  # noqa: F401
import pydantic_settings  # noqa: F401
import sse_starlette  # noqa: F401
import uvicorn.main  # noqa: F401

import chalicelib.tools  # noqa: F401

assert not {"chalicelib.invoke", "chalicelib.ops.emf"} & set(sys.modules), "they read the environment at import"


def serve(request: dict) -> None:
    """In the forked child: become `python -m uvicorn <argv>` as the test asked, then exit."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the server waits for its own children
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    if request["stderr"]:
        os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644), 2)
    sys.argv = ["uvicorn", *request["argv"]]
    code = 1
    try:
        uvicorn.main.main()
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:  # what the interpreter's exit does (not the zygote's: a fork's child never returns to it)
        atexit._run_exitfuncs()  # the log stream's last lines among them (ops/logs.py flushes them at exit)
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    children = []
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            serve(request)
        children.append(os.pidfd_open(pid))
        print(pid, flush=True)
    # The test process has gone (it closes our input when it exits, or dies): so do its servers.
    for child in children:
        try:
            signal.pidfd_send_signal(child, signal.SIGTERM)
        except ProcessLookupError:
            pass


if __name__ == "__main__":
    main()
