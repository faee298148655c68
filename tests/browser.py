"""Debian's Chromium driven by Playwright (its own browser download is not used), and the MCP
client run off the browser's thread (Playwright's sync API keeps an event loop of its own)."""

import asyncio
import concurrent.futures
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
from mcp import Client

from .servers import ROOT

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = ROOT / "docs" / "screenshots"


@contextmanager
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed: ./scripts/test installs it (apt-get install chromium) when run as root")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def screenshot(page, name: str) -> None:
    """docs/screenshots/<name>.png, only with UPDATE_SCREENSHOTS=1 (the suite leaves the tree clean)."""
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=False)


_pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)


def mcp(url: str, calls: list[tuple[str, dict]]) -> list[dict]:
    """Run tool calls in order through the official MCP client; their structured results."""

    async def session():
        results = []
        async with Client(f"{url}/mcp", mode="legacy") as client:
            for name, arguments in calls:
                result = await client.call_tool(name, arguments)
                if result.is_error:
                    raise AssertionError(f"{name}: {result.content[0].text}")
                results.append(json.loads(result.content[0].text))
        return results

    return _pool.submit(asyncio.run, session()).result(timeout=60)
