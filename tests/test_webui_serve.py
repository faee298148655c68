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


def test_the_readmes_rest_examples_work_verbatim_in_order(server):
    """The first curl commands a newcomer copies from README.md, run as written (port aside)."""
    import re
    import shlex

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Use it over HTTP (REST)", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [shlex.split(command.replace("\\\n", " ")) for command in re.split(r"\n(?=curl )", block.strip())]
    assert len(commands) >= 3
    for command in commands:
        command = [part.replace("localhost:8765", server.removeprefix("http://")) for part in command]
        result = subprocess.run([*command, "--fail-with-body"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
    assert '"messages":[]' in result.stdout  # the inbox of the agent registered just before


def test_the_openapi_description_speaks_to_users_and_docs_need_no_cdn(server):
    import httpx

    description = httpx.get(f"{server}/openapi.json", timeout=60).json()["info"]["description"]
    assert "/mcp" in description and "POST /api/{tool}" in description
    for internal in ("uvicorn", "FastAPI", "http_protocol", "ASGI", "lean path"):
        assert internal not in description
    docs = httpx.get(f"{server}/docs", timeout=60)
    assert docs.status_code == 200 and "cdn" not in docs.text.lower() and "<script>" not in docs.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert httpx.get(f"{server}/ui/static/swagger/{asset}", timeout=60).status_code == 200
    assert httpx.get(f"{server}/redoc", timeout=60).status_code == 404
