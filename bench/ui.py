"""The web UI's server time per page on a database with 100k messages, and the inbox's weight.

    .venv/bin/python bench/ui.py [--messages 100000] [--dir /tmp/agent-mail-bench-ui] [--runs 50]

Builds (once, then reused) a database in --dir: one project with 20 agents and `--messages`
messages in threads of 50, each with two recipients, plus a 200-message thread (BIG-200); bulk
SQL, since only the pages are measured here. Then renders each page in-process through
WebUI.handle (what both transports call: templates, tools, SQLite) and prints the median and
p90 in ms, and the inbox's HTML + CSS + JS bytes. Targets: median ≤ 20 ms, inbox ≤ 100 KB. On a shared machine
the CPU column (the process's own time) is the steadier one.
"""

import argparse
import sqlite3
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.ids import new_id, stable_id  # noqa: E402
from chalicelib.store import db  # noqa: E402
from chalicelib.tools import counts, thread_summaries, tools_by_name  # noqa: E402
from chalicelib.tools.agents import agent_id  # noqa: E402
from chalicelib.web import http  # noqa: E402
from chalicelib.web.pages import WebUI  # noqa: E402

BODY = (
    "## Status\n\nMoved `Cart.total()` into the service; **tests green**.\n\n- [ ] wire the checkout fixture\n"
    "- decided: keep v1 routes until the mobile app ships\n\n```python\ndef total(cart):\n    return sum(line.price for line in cart)\n```\n"
)


def build(settings: Settings, messages: int) -> None:
    tools = tools_by_name()

    def call(tool, /, **args):
        return invoke.call(tools[tool], args, settings)

    project = call("ensure_project", human_key="/bench/shop")
    names = [f"Agent{i:02d}" for i in range(20)]
    for name in names:
        call("register_agent", project_key=project.slug, program="claude-code", model="opus", name=name,
             task_description="Working on the cart")
    pid = stable_id("project", "/bench/shop")
    ids = [agent_id(pid, name) for name in names]
    start = new_id()
    conn = sqlite3.connect(settings.database_path)
    rows, recipients = [], []
    for i in range(messages + 200):
        mid = start + i + 1
        big = i >= messages
        thread = "BIG-200" if big else f"T-{i // 50}"
        sender = ids[i % 20]
        rows.append((mid, pid, sender, thread, f"{thread}: step {i}", BODY, "urgent" if i % 97 == 0 else "normal",
                     int(i % 7 == 0), f"2026-11-{1 + i * 28 // (messages + 200):02d}T12:00:00.000000Z"))
        for to in (ids[(i + 1) % 20], ids[(i + 2) % 20]):
            recipients.append((stable_id("recipient", mid, to), mid, to, "to", None if i % 3 else "2026-11-30T00:00:00Z", None, pid,
                               int(i % 97 == 0), int(i % 7 == 0), pid, thread))
    with conn:
        conn.executemany("INSERT INTO messages (id, project_id, sender_id, thread_id, subject, body_md, importance,"
                         " ack_required, created_ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        # Every column store_recipients writes (the message's urgency, ack_required, project and thread: 0020, 0048).
        conn.executemany("INSERT INTO message_recipients (id, message_id, agent_id, kind, read_ts, ack_ts, project_id, urgent,"
                         " ack_required, message_project_id, thread_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", recipients)
        # Bulk SQL bypasses the write path: the thread summaries are made as a retention purge remakes them.
        thread_summaries.recount(conn, pid, sorted({row[3] for row in rows}))
        counts._add_to_projects(conn, [(pid, len(rows), 0)])
    conn.execute("ANALYZE")
    conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--dir", default="/tmp/agent-mail-bench-ui")
    parser.add_argument("--runs", type=int, default=50)
    options = parser.parse_args()
    folder = Path(options.dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"ui-{options.messages}.db"
    settings = Settings(database_url=f"sqlite:///{path}", archive_enabled=False)
    if not path.exists():
        started = time.perf_counter()
        db.migrate(settings)
        build(settings, options.messages)
        print(f"built {path} in {time.perf_counter() - started:.0f} s")
    db.migrate(settings)
    ui = WebUI(settings)
    pages = {
        "unified inbox": "/",
        "inbox, page 100": None,
        "project page": "/ui/project?p=bench-shop",
        "thread of 200": "/ui/thread?p=bench-shop&t=BIG-200",
        "its digest": "/ui/digest?p=bench-shop&t=BIG-200",  # fetched by the thread page once shown
    }
    cookie = {}
    first = ui.handle(http.request("GET", "/", "", b"", {}))
    cookie = {"cookie": first.headers["Set-Cookie"].split(";")[0]}
    before = None
    for _ in range(100):  # page 100 of the inbox, by following "Older"
        page = ui.handle(http.request("GET", "/", f"before={before}" if before else "", b"", cookie)).body.decode()
        before = page.split("?before=")[-1].split('"')[0]
    pages["inbox, page 100"] = f"/?before={before}"
    print(f"{options.messages:,} messages (+ a 200-message thread); {options.runs} renders per page after a warm-up")
    # Wall time, and the process's CPU time (steadier on a shared machine: it leaves out waiting for a core).
    print(f"{'page':<18} {'median ms':>10} {'p90 ms':>8} {'cpu median ms':>14} {'bytes':>8}")
    for name, url in pages.items():
        target, _, query = url.partition("?")
        request = http.request("GET", target, query, b"", cookie)
        response = ui.handle(request)
        assert response.status == 200, (name, response.status, response.body[-400:])
        times, cpu = [], []
        for _ in range(options.runs):
            started, started_cpu = time.perf_counter(), time.process_time()
            ui.handle(request)
            times.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
        times.sort()
        print(f"{name:<18} {statistics.median(times):>10.1f} {times[int(len(times) * 0.9)]:>8.1f}"
              f" {statistics.median(cpu):>14.1f} {len(response.body):>8,}")
    html = len(ui.handle(http.request("GET", "/", "", b"", cookie)).body)
    assets = sum(len(ui.handle(http.request("GET", f"/ui/static/{name}", "", b"", {})).body) for name in ("ui.css", "ui.js"))
    print(f"inbox weight: HTML {html:,} + CSS/JS {assets:,} = {(html + assets) / 1024:.1f} KB")


if __name__ == "__main__":
    main()
