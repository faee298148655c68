"""A real Turso primary (`tursodb --sync-server`, installed by scripts/bootstrap.sh) on 127.0.0.1."""

import os
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

from .servers import ROOT, free_port

TURSODB = Path(os.environ.get("TURSODB", ROOT / ".tools/turso/node_modules/@tursodatabase/cli-linux-x64-gnu/tursodb"))


class TursoServer:
    """A primary database file served by tursodb; `kill` and `start` again on the same port."""

    def __init__(self, directory: Path) -> None:
        if not TURSODB.exists():
            raise RuntimeError(f"{TURSODB} is missing: run ./scripts/test (its bootstrap installs tursodb)")
        directory.mkdir(parents=True, exist_ok=True)
        self.database = directory / "primary.db"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        log = self.database.with_suffix(".log")
        with open(log, "a") as output:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [TURSODB, self.database, "--sync-server", f"127.0.0.1:{self.port}"], stdout=output, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"tursodb did not start; see {log}") from None
                time.sleep(0.005)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


@contextmanager
def turso_server(directory: Path):
    server = TursoServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.kill()
