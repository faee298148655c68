"""Start the real servers (uvicorn, chalice local) in a subprocess on a free 127.0.0.1 port (or
uvicorn on a thread of the test's process: serving_in_process). uvicorn's process is forked by
tests/zygote.py, which has its libraries imported already."""

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parent.parent
HTTP_PROTOCOL = "chalicelib.transports.http_protocol:HttpProtocol"  # as scripts/serve runs it (chalicelib/transports/cli.py)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(database: Path, stderr: Path | None = None, ready: str = "/ready", **env: str):
    """Yield the base URL of a uvicorn server on `database` (its log into `stderr`, if given) once
    `ready` answers 200 (/health for a server meant not to be ready); stop it afterwards."""
    environ = {"ARCHIVE_DIR": str(database.parent / "archive"), "ATTACHMENTS_DIR": str(database.parent / "attachments"), **env}
    with _running(
        lambda port: ["chalicelib.transports.asgi:app", "--host", "127.0.0.1", "--port", str(port),
                      "--http", HTTP_PROTOCOL, "--log-level", "warning", "--no-access-log"],
        database, environ, ready=ready, stderr=stderr, start=_fork_uvicorn,
    ) as url:
        yield url



@contextmanager
def answering(answer: bytes):
    """A listener on 127.0.0.1 that answers every connection with these bytes, whatever it was
    asked (something that is not the server a client expects); its URL."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()

@contextmanager
def serving_in_process(app):
    """Yield the base URL of `app` served by uvicorn as scripts/serve runs it, on a thread of this
    process: for a test that holds the server's threads (monkeypatch reaches them). No lifespan:
    its start-up tunes this process's garbage collector; the caller migrates the database."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), http=HTTP_PROTOCOL, lifespan="off",
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def running_chalice_local(database: Path, **env: str):
    """Yield the base URL of `chalice local` on `database`; stop it afterwards."""
    chalice = os.path.join(os.path.dirname(sys.executable), "chalice")
    # A stage that .chalice/config.json does not define: a defined stage's settings would apply.
    with _running(
        lambda port: [chalice, "local", "--host", "127.0.0.1", "--port", str(port), "--stage", "pytest", "--no-autoreload"],
        database, env, ready="/health",
    ) as url:
        yield url


_pids: dict[str, int] = {}


def server_pid(url: str) -> int:
    """The pid of the server running on this URL (started by running_server or running_chalice_local)."""
    return _pids[url]


def _popen(command: list[str], env: dict, log) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=ROOT, env=env, stderr=log)


@contextmanager
def _running(command, database: Path, env: dict, ready: str, timeout: float = 90, stderr: Path | None = None,
             start=_popen):  # a loaded machine starts slowly
    port = free_port()
    environ = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "LOG_LEVEL": "WARNING", **env}
    log = open(stderr, "ab") if stderr else None
    process = start(command(port), environ, log)
    url = f"http://127.0.0.1:{port}"
    _pids[url] = process.pid
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{url}{ready}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command(port)[:3]} did not start (exit code {process.poll()})")
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        del _pids[url]
        if log:
            log.close()


_zygote: subprocess.Popen | None = None
_zygote_lock = threading.Lock()


def _fork_uvicorn(arguments: list[str], env: dict, log) -> "Forked":
    """`python -m uvicorn <arguments>`, forked by this test process's zygote (started on first use)."""
    global _zygote
    request = {"argv": arguments, "env": env, "cwd": str(ROOT), "stderr": log.name if log else None}
    with _zygote_lock:  # tests start servers from several threads at once
        if _zygote is None or _zygote.poll() is not None:
            _zygote = subprocess.Popen([sys.executable, "-m", "tests.zygote"], cwd=ROOT, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
            atexit.register(_zygote.stdin.close)  # it ends when its input does
        _zygote.stdin.write(json.dumps(request) + "\n")
        _zygote.stdin.flush()
        return Forked(int(_zygote.stdout.readline()))


class Forked:
    """A forked server, as much of subprocess.Popen as _running uses: not this process's child, so
    followed through a pidfd (readable once it has exited; its exit code is the zygote's to reap)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd = os.pidfd_open(pid)
        self.returncode = None

    def poll(self) -> int | None:
        return self._ended(0)

    def wait(self, timeout: float) -> int:
        if self._ended(timeout) is None:
            raise subprocess.TimeoutExpired("forked uvicorn", timeout)
        return self.returncode

    def _ended(self, timeout: float) -> int | None:
        if self.returncode is None:
            waiting = select.poll()  # not select(): a test process may have more than 1,024 files open
            waiting.register(self.pidfd, select.POLLIN)
            if waiting.poll(timeout * 1000):
                self.returncode = -1  # ended, with an exit code nobody here can know
                os.close(self.pidfd)
        return self.returncode

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, number: int) -> None:
        if self.poll() is None:
            signal.pidfd_send_signal(self.pidfd, number)


def tool_caller(client):
    """`await call(tool, **arguments)` through an official MCP client: the structured
    result, which must equal the JSON text beside it; a tool error fails the test."""

    async def call(tool_name, /, **arguments):
        result = await client.call_tool(tool_name, arguments)
        assert not result.is_error, result.content[0].text
        assert json.loads(result.content[0].text) == result.structured_content
        return result.structured_content

    return call


@contextmanager
def git_http_server(root: Path):
    """git's own smart HTTP server (`git http-backend`, as a git host answers) for the bare
    repositories under `root`, on a thread of the test's process; yields its base URL
    (http://127.0.0.1:port/). Pushes are allowed (http.receivepack)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Backend(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.run()

        do_POST = do_GET

        def run(self) -> None:
            path, _, query = self.path.partition("?")
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))) if self.headers.get("Content-Length") else (
                self.chunked_body() if self.headers.get("Transfer-Encoding") == "chunked" else b"")
            env = {**os.environ, "GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
                   "QUERY_STRING": query, "REQUEST_METHOD": self.command, "CONTENT_LENGTH": str(len(body)),
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""), "GIT_CONFIG_COUNT": "1",
                   "GIT_CONFIG_KEY_0": "http.receivepack", "GIT_CONFIG_VALUE_0": "true",
                   **({"HTTP_CONTENT_ENCODING": self.headers["Content-Encoding"]} if self.headers.get("Content-Encoding") else {}),
                   **({"GIT_PROTOCOL": self.headers["Git-Protocol"]} if self.headers.get("Git-Protocol") else {})}
            out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
            head, _, content = out.partition(b"\r\n\r\n")
            headers = [line.split(b":", 1) for line in head.split(b"\r\n") if b":" in line]
            status = next((int(value.split()[0]) for name, value in headers if name.lower() == b"status"), 200)
            self.send_response(status)
            for name, value in headers:
                if name.lower() != b"status":
                    self.send_header(name.decode(), value.decode().strip())
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def chunked_body(self) -> bytes:
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0], 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            self.rfile.readline()
            return b"".join(chunks)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Backend)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
