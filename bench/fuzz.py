"""A longer schemathesis run than the suite's (tests/test_fuzz.py): every check, against the real
server's /openapi.json. Prints schemathesis' report; exits non-zero on any failure.

    .venv/bin/python bench/fuzz.py [--max-examples 100] [--phases examples,coverage,fuzzing,stateful] [--seed 1]

Every check with schemathesis' default expected statuses (none is configured away); response-time
bounds in bench/fuzz.toml. Results: docs/security.md ("Fuzzing").
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import running_server  # noqa: E402

CONFIG = Path(__file__).with_name("fuzz.toml")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--phases", default="examples,coverage,fuzzing")
    parser.add_argument("--seed", default="1", help="another seed tries other cases")
    args = parser.parse_args()
    schemathesis = Path(sys.executable).parent / "schemathesis"
    with tempfile.TemporaryDirectory() as directory, running_server(Path(directory) / "fuzz.db", ARCHIVE_ENABLED="false") as url:
        command = [str(schemathesis), "--config-file", str(CONFIG), "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", str(args.max_examples),
                   "--phases", args.phases, "--suppress-health-check", "all", "--workers", "1", "--seed", args.seed]
        return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
