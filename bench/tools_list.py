"""The size of MCP tools/list per TOOLS_PROFILE: bytes and approximate tokens (bytes / 4).

    .venv/bin/python bench/tools_list.py

What an agent's context pays for the tool schemas on every session. Target: core under a
third of full.
"""

import asyncio
import sys
import tempfile
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib.config import Settings  # noqa: E402
from chalicelib.transports.mcp_app import build_mcp_server  # noqa: E402


def listed(profile: str, directory: str) -> tuple[int, int]:
    server = build_mcp_server(Settings(database_url=f"sqlite:///{directory}/t.db", tools_profile=profile))
    tools = asyncio.run(server.list_tools())
    body = orjson.dumps({"tools": [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in tools]})
    return len(tools), len(body)


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        sizes = {profile: listed(profile, directory) for profile in ("full", "core", "minimal")}
    full = sizes["full"][1]
    print(f"{'profile':8} {'tools':>5} {'bytes':>8} {'~tokens':>8} {'of full':>8}")
    for profile, (count, size) in sizes.items():
        print(f"{profile:8} {count:5} {size:8} {size // 4:8} {size / full:8.0%}")


if __name__ == "__main__":
    main()
