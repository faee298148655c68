"""Every web UI page at each of bench/scale.py's sizes: the overseer's view of a big mailbox.

    .venv/bin/python bench/ui_scale.py [--dir /work/tmp/d1-scale] [--sizes 10000,1000000] [--calls 15]

Renders each page in-process through WebUI.handle (templates, tools, SQLite: what both transports
call) on the databases bench/scale.py built (run it first), the sizes taking turns page by page,
and prints the median ms at each size, the ratio of the largest to the smallest, and the page's
bytes at the largest. bench/ui.py times the inbox, a project and a long thread on a database of
its own shape.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib.config import Settings  # noqa: E402
from chalicelib.web import http  # noqa: E402
from chalicelib.web.pages import WebUI  # noqa: E402

PAGES = {  # bench/scale.py's project, agents (Agent00-39), threads (T-n) and product
    "inbox": "/", "inbox, urgent": "/?view=urgent", "inbox, waiting for acks": "/?view=ack_pending",
    "projects": "/ui/projects", "project": "/ui/project?p=bench-scale",
    "agent": "/ui/agent?p=bench-scale&a=Agent07", "agent, unread": "/ui/agent?p=bench-scale&a=Agent07&only=unread",
    "agent, ack pending": "/ui/agent?p=bench-scale&a=Agent07&only=acks",
    "thread": "/ui/thread?p=bench-scale&t=T-77", "its digest": "/ui/digest?p=bench-scale&t=T-77",
    "search a common word": "/ui/search?q=database&p=bench-scale", "search every project": "/ui/search?q=database",
    "search a path": "/ui/search?q=src/mod7/file107.py&p=bench-scale",
    "product": "/ui/product?k=bench-product", "compose": "/ui/compose?p=bench-scale&to=Agent07",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/work/tmp/d1-scale"))
    parser.add_argument("--sizes", default="10000,1000000")
    parser.add_argument("--calls", type=int, default=15)
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]
    uis, cookies = {}, {}
    for size in sizes:
        uis[size] = WebUI(Settings(database_url=f"sqlite:///{options.dir}/scale-{size}.db", archive_enabled=False))
        first = uis[size].handle(http.request("GET", "/", "", b"", {}))
        cookies[size] = {"cookie": first.headers["Set-Cookie"].split(";")[0]}
    print(f"{'page':<24}" + "".join(f"{size:>12,}" for size in sizes) + f"{'ratio':>8}{'bytes':>10}")
    for name, url in PAGES.items():
        target, _, query = url.partition("?")
        times: dict[int, list[float]] = {size: [] for size in sizes}
        for call in range(options.calls + 2):  # two warm-ups
            for size in sizes:
                request = http.request("GET", target, query, b"", cookies[size])
                started = time.perf_counter()
                response = uis[size].handle(request)
                if call >= 2:
                    times[size].append((time.perf_counter() - started) * 1000)
                assert response.status == 200, (name, size, response.status)
        medians = [statistics.median(times[size]) for size in sizes]
        print(f"{name:<24}" + "".join(f"{median:>12.2f}" for median in medians)
              + f"{medians[-1] / medians[0]:>7.1f}x{len(response.body):>10,}")


if __name__ == "__main__":
    main()
