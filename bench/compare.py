"""Before/after in one run: bench/run.py of this checkout and of another, taking turns.

    .venv/bin/python bench/compare.py --base ../agent-mail-before [--rounds 3] [--duration 5]

The other checkout (e.g. `git worktree add ../agent-mail-before <commit>`) runs its own
bench/run.py with its own code; rounds alternate so that drift in the machine's speed hits
both alike. Prints each scenario's median req/s and p99 per side, the change between the
medians, and the median of the rounds' own changes (each round's two runs side by side).
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(checkout: Path, duration: int) -> dict:
    """One bench/run.py in `checkout` (its code, this interpreter); its lean server's results."""
    out = subprocess.run([sys.executable, "bench/run.py", "--duration", str(duration), "--warmup", "2"], cwd=checkout,
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"bench/run.py failed in {checkout}:\n{out.stdout}\n{out.stderr}")
    raw = out.stdout.strip().rsplit("raw results: ", 1)[1].strip()
    return json.loads((checkout / raw).read_text())["results"]["lean"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", type=Path, required=True, help="the checkout to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    args = parser.parse_args()
    sides = {"base": args.base.resolve(), "this": ROOT}
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    for round_number in range(args.rounds):
        for side, checkout in (sides.items() if round_number % 2 == 0 else reversed(sides.items())):
            print(f"round {round_number + 1}: {side}", flush=True)
            runs[side].append(run(checkout, args.duration))
    print(f"\n{'scenario':<18} {'base req/s':>11} {'this req/s':>11} {'change':>8} {'paired':>8} {'base p99':>9} {'this p99':>9}")
    for scenario in runs["this"][0]:
        req_s = {side: statistics.median(r[scenario]["req_s"] for r in runs[side]) for side in sides}
        p99 = {side: statistics.median(r[scenario]["p99_ms"] for r in runs[side]) for side in sides}
        change = (req_s["this"] / req_s["base"] - 1) * 100
        # A round's two runs are minutes apart at most: the median of their ratios cancels the
        # machine's slower drift, which the medians of each side's runs do not.
        paired = (statistics.median(this[scenario]["req_s"] / base[scenario]["req_s"]
                                    for base, this in zip(runs["base"], runs["this"])) - 1) * 100
        print(f"{scenario:<18} {req_s['base']:>11,.0f} {req_s['this']:>11,.0f} {change:>+7.1f}% {paired:>+7.1f}%"
              f" {p99['base']:>9.2f} {p99['this']:>9.2f}")


if __name__ == "__main__":
    main()
