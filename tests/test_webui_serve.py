"""`python -m chalicelib serve` (what ./scripts/serve runs): where to go, and a clear word when the port is taken."""

import os
import socket
import subprocess
import sys
import time

from .servers import ROOT, free_port


def _serve(port: int, tmp_path, **env):
    environ = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/a.db", "ARCHIVE_DIR": str(tmp_path / "archive"), **env}
    return subprocess.Popen([sys.executable, "-m", "chalicelib", "serve", "--port", str(port)], cwd=ROOT, env=environ,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_port_in_use_says_how_to_choose_another(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        process = _serve(port, tmp_path)
        output, _ = process.communicate(timeout=120)
    assert process.returncode == 1
    assert f"Cannot listen on 127.0.0.1:{port}" in output and f"PORT={port + 1} ./scripts/serve" in output
    assert "Traceback" not in output


def test_start_prints_the_ui_mcp_api_and_docs_urls(tmp_path):
    port = free_port()
    process = _serve(port, tmp_path)
    try:
        lines = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("docs" in line for line in lines):
            lines.append(process.stdout.readline())
        base = f"http://127.0.0.1:{port}"
        text = "".join(lines)
        for url in (f"{base}/\n", f"{base}/mcp", f"{base}/api/{{tool}}", f"{base}/docs"):
            assert url in text
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serving_installs_no_test_tools():
    """scripts/serve installs requirements.txt (BOOTSTRAP=serve): no test tool or browser driver in it."""
    runtime = (ROOT / "requirements.txt").read_text() + (ROOT / "requirements-lambda.txt").read_text()
    for tool in ("pytest", "playwright", "hypothesis", "moto", "schemathesis"):
        assert tool not in runtime
    assert "BOOTSTRAP=serve" in (ROOT / "scripts" / "serve").read_text()
    assert "npm install" in (ROOT / "scripts" / "bootstrap.sh").read_text().split("BOOTSTRAP\" = serve ] && return 0")[1]
