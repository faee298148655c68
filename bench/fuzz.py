"""A longer schemathesis run than the suite's (tests/test_fuzz.py): every check, against the real
server's /openapi.json. Prints schemathesis' report; exits non-zero on any failure.

    .venv/bin/python bench/fuzz.py [--max-examples 100] [--phases examples,coverage,fuzzing,stateful] [--seed 1] [--known]

Every check with schemathesis' default expected statuses (none is configured away); response-time
bounds in bench/fuzz.toml. Results: docs/security.md ("Fuzzing").

Generated data rarely names a project or agent that exists, so most calls stop at a 404. With
--known the server first gets a project `fuzz` (agents BlueLake and GreenCastle, 31 messages in
three threads, an attachment, reservations, a build slot, a product), and every query parameter
or field of a body generated to fit the schema that names such a thing names one of these
(bench/fuzz_known.py): the reads and writes then reach their real work. wait_for_mail is left
out then (it would wait out each timeout it is given).
"""

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.servers import running_server  # noqa: E402

CONFIG = Path(__file__).with_name("fuzz.toml")
SEEDED_SHA256 = hashlib.sha256(b"x").hexdigest()  # the content of the seeded attachment


def seed(url: str) -> dict:
    """The project --known gives every query and body; the values that name what it holds."""
    def call(tool: str, **arguments) -> dict:
        answer = httpx.post(f"{url}/api/{tool}", json=arguments, timeout=30)
        answer.raise_for_status()
        return answer.json()

    call("ensure_project", human_key="/fuzz")
    for name in ("BlueLake", "GreenCastle"):
        call("register_agent", project_key="fuzz", name=name, program="p", model="m")
        call("set_contact_policy", project_key="fuzz", agent_name=name, policy="open")
    for number in range(30):
        call("send_message", project_key="fuzz", sender_name="BlueLake", to=["GreenCastle"], cc=["BlueLake"],
             subject=f"CART-{number} deploy", body_md=f"see src/mod{number}/file.py and CART-{number}", thread_id=f"T{number % 3}",
             importance=["normal", "high", "urgent"][number % 3], ack_required=number % 2 == 0)
    call("file_reservation_paths", project_key="fuzz", agent_name="BlueLake", paths=["src/**", "docs/a.md"])
    call("ensure_product", product_key="fuzzp")
    call("products_link", product_key="fuzzp", project_key="fuzz")
    call("acquire_build_slot", project_key="fuzz", agent_name="BlueLake", slot="ci")
    # To BlueLake, which the bodies and queries act as: it may read, acknowledge and fetch the attachment.
    sent = call("send_message", project_key="fuzz", sender_name="GreenCastle", to=["BlueLake"], subject="log", body_md="attached",
                thread_id="T0", ack_required=True, attachments=[{"name": "x.txt", "content_base64": base64.b64encode(b"x").decode()}])
    call("request_contact", project_key="fuzz", agent_name="GreenCastle", to_agent="BlueLake")  # for respond_contact
    return {"project_key": "fuzz", "agent_name": "BlueLake", "sender_name": "BlueLake", "product_key": "fuzzp",
            "to": ["GreenCastle"], "cc": ["BlueLake"], "bcc": [], "target": "GreenCastle", "to_agent": "GreenCastle",
            "from_agent": "GreenCastle", "thread_id": "T0", "slot": "ci", "message_id": sent["message"]["id"],
            "sha256": SEEDED_SHA256}


def parameters(known: dict) -> str:
    """The config lines that give every query parameter named in `known` its value."""
    lines = [f'"query.{name}" = {json.dumps(value)}' for name, value in known.items() if isinstance(value, (str, int))]
    return "[parameters]\n" + "\n".join(lines) + "\n\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-examples", type=int, default=100)
    parser.add_argument("--phases", default="examples,coverage,fuzzing")
    parser.add_argument("--seed", default="1", help="another seed tries other cases")
    parser.add_argument("--known", action="store_true", help="queries name a project and agent that exist")
    args = parser.parse_args()
    schemathesis = Path(sys.executable).parent / "schemathesis"
    with tempfile.TemporaryDirectory() as directory, running_server(Path(directory) / "fuzz.db", ARCHIVE_ENABLED="false") as url:
        config = CONFIG
        hooks = {}
        if args.known:
            known = seed(url)
            config = Path(directory) / "fuzz.toml"
            config.write_text(parameters(known) + CONFIG.read_text())
            hooks = {"SCHEMATHESIS_HOOKS": "fuzz_known", "PYTHONPATH": str(Path(__file__).parent), "FUZZ_KNOWN": json.dumps(known)}
        command = [str(schemathesis), "--config-file", str(config), "run", f"{url}/openapi.json", "--checks", "all",
                   "--max-examples", str(args.max_examples), "--phases", args.phases, "--suppress-health-check", "all",
                   "--workers", "1", "--seed", args.seed, *(["--exclude-path-regex", "wait_for_mail"] if args.known else [])]
        return subprocess.run(command, env={**os.environ, **hooks}).returncode


if __name__ == "__main__":
    sys.exit(main())
