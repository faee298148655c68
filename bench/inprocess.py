"""What the in-process benches that time tools of a checkout share (agents_scale.py,
projects_scale.py, search_many_projects.py): a tool caller on given settings, and the median of
each row's calls. Import it after putting the checkout first on sys.path (their --tree)."""

import statistics
import time


def caller(settings):
    """call(tool, **arguments): the tool's output, through invoke.call as the server runs it."""
    from chalicelib import invoke
    from chalicelib.tools import tools_by_name

    tools = tools_by_name()
    return lambda tool, **arguments: invoke.call(tools[tool], arguments, settings)


def print_medians(call, rows: dict[str, tuple[str, dict]], calls: int) -> None:
    """For each {label: (tool, arguments)}, the median ms of `calls` calls."""
    for label, (tool, arguments) in rows.items():
        took = []
        for _ in range(calls):
            started = time.perf_counter()
            call(tool, **arguments)
            took.append((time.perf_counter() - started) * 1000)
        print(f"{label:40s} {statistics.median(took):8.2f} ms")
