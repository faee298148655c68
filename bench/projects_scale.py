"""The tools that read across projects, at many projects, in-process (invoke.call).

    .venv/bin/python bench/projects_scale.py [--projects 5000] [--linked 100] [--calls 10] [--tree /path/to/checkout]

Makes --projects projects (two agents each; one message in every 200th, all in thread T-1) and a
product linking the first --linked of them, and prints each tool's median ms over --calls calls:
health_check, list_projects, list_products, get_product, unified_inbox (of all, of a thread id
without project_key, of the product), fetch_inbox_product, search_messages (of one project),
search_messages_product,
summarize_thread_product, list_threads. --tree runs another checkout's code, so two trees can be
compared in turn (bench/agents_scale.py does the same for the agents of one project).
"""

import argparse
import sys
import tempfile
import time

parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
parser.add_argument("--projects", type=int, default=5000)
parser.add_argument("--linked", type=int, default=100)
parser.add_argument("--calls", type=int, default=10)
parser.add_argument("--tree", default=".")
options = parser.parse_args()
sys.path.insert(0, options.tree)

from chalicelib.config import Settings  # noqa: E402
from inprocess import caller, print_medians  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        call = caller(Settings(database_url=f"sqlite:///{folder}/projects.db", archive_enabled=False))
        started = time.monotonic()
        call("ensure_product", product_key="big")
        for n in range(options.projects):
            key = f"/bench/p{n:05d}"
            call("ensure_project", human_key=key)
            for name in ("BlueLake", "RedStone"):
                call("register_agent", project_key=key, program="bench", model="m", name=name)
            call("set_contact_policy", project_key=key, agent_name="RedStone", policy="open")
            if n < options.linked:
                call("products_link", product_key="big", project_key=key)
            if n % 200 == 0:
                call("send_message", project_key=key, sender_name="BlueLake", to=["RedStone"], subject="deploy plan",
                     body_md="the deploy plan", thread_id="T-1")
        print(f"{options.projects} projects, {options.linked} linked, made in {time.monotonic() - started:.0f} s")
        rows = {
            "health_check": ("health_check", {}),
            "list_projects": ("list_projects", {}),
            "list_products": ("list_products", {}),
            "get_product": ("get_product", {"product_key": "big"}),
            "unified_inbox": ("unified_inbox", {}),
            "unified_inbox of a thread (no project)": ("unified_inbox", {"thread_id": "T-1"}),
            "unified_inbox of the product": ("unified_inbox", {"product_key": "big"}),
            "fetch_inbox_product": ("fetch_inbox_product", {"product_key": "big", "agent_name": "RedStone"}),
            "search_messages": ("search_messages", {"project_key": "/bench/p00000", "query": "deploy"}),
            "search_messages_product": ("search_messages_product", {"product_key": "big", "query": "deploy"}),
            "summarize_thread_product": ("summarize_thread_product", {"product_key": "big", "thread_id": "T-1"}),
            "list_threads": ("list_threads", {"project_key": "/bench/p00000"}),
        }
        print_medians(call, rows, options.calls)


if __name__ == "__main__":
    main()
