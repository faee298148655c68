"""summarize_thread on one thread as it grows (100, 1,000, 5,000 messages), in-process.

    .venv/bin/python bench/long_thread.py [--sizes 100,1000,5000] [--calls 5]

Prints the median of --calls summaries at each length. Since the summary reads its counts and
participants from the thread's summaries and digests only the newest DIGESTED bodies
(chalicelib/tools/threads.py), its cost should stop growing past DIGESTED messages.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from chalicelib import invoke  # noqa: E402
from chalicelib.config import Settings  # noqa: E402
from chalicelib.tools import tools_by_name  # noqa: E402

TOOLS = tools_by_name()
BODY = "Some words of a status update. " * 40 + "\n- a point\n- [ ] an action"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--calls", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(database_url=f"sqlite:///{directory}/bench.db", archive_enabled=False)

        def call(tool: str, **arguments):
            return invoke.call(TOOLS[tool], arguments, settings)

        project, agents = "/bench/long-thread", ("BlueLake", "GreenCastle")
        call("ensure_project", human_key=project)
        for name in agents:
            call("register_agent", project_key=project, program="bench", model="m", name=name)
            call("set_contact_policy", project_key=project, agent_name=name, policy="open")
        thread = call("send_message", project_key=project, sender_name=agents[0], to=[agents[1]], subject="standup",
                      body_md=BODY).message.thread_id
        sent = 1
        for size in (int(size) for size in options.sizes.split(",")):
            for n in range(sent, size):
                call("send_message", project_key=project, sender_name=agents[n % 2], to=[agents[1 - n % 2]],
                     subject="Re: standup", body_md=f"{BODY} {n}", thread_id=thread)
            sent = max(sent, size)
            times = []
            for _ in range(options.calls):
                started = time.perf_counter()
                summary = call("summarize_thread", project_key=project, thread_id=thread)
                times.append((time.perf_counter() - started) * 1000)
            print(f"  {summary.message_count:>6,} messages: summarize_thread {statistics.median(times):7.2f} ms", flush=True)


if __name__ == "__main__":
    main()
