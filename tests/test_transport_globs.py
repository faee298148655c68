"""Glob overlap in linear time (issue 11 #2): the issue's attack answers quickly, deeper
patterns are no RecursionError, and /health answers while the attack runs."""

import threading
import time

import httpx
import pytest

from chalicelib.tools.globs import Budget
from chalicelib.tools.globs import overlaps as overlaps_within

from .servers import running_server


def overlaps(a: str, b: str) -> bool:
    return overlaps_within(a, b, Budget(10**9))


PATTERN = "*" + "a*" * 100 + "c"
ATTACK_PATHS = ["*" + "b*" * 100 + f"d{n}" for n in range(150)]


def test_the_attack_is_decided_without_backtracking():
    assert not any(overlaps(path, PATTERN + "/**") for path in ATTACK_PATHS)
    deep = "*" + "a*" * 500 + "c"  # 1002 characters: a RecursionError before
    assert overlaps(deep, "*" + "b*" * 500 + "d") is False and overlaps(deep, deep) is True
    assert overlaps("/".join(["**"] * 500), "/".join(["*"] * 500)) is True


@pytest.mark.parametrize(("a", "b", "expected"), [
    ("a*b*c", "abc", True), ("a*b*c", "acb", False), ("*x*", "?", True), ("[ab]*", "c*", False),
    ("*a?c*", "zzabczz", True), ("a**b", "a*b", True), ("a/**/b/**/c", "a/x/c", False), ("**/c", "a/b/c", True),
])
def test_one_starred_side_matches_the_other_leftmost_first(a, b, expected):
    assert overlaps(a, b) is expected and overlaps(b, a) is expected


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("globs") / "db.sqlite", ARCHIVE_ENABLED="false") as url:
        post = lambda tool, **arguments: httpx.post(f"{url}/api/{tool}", json=arguments, timeout=30).raise_for_status()  # noqa: E731
        post("ensure_project", human_key="/globs")
        for name in ("BlueLake", "GreenCastle"):
            post("register_agent", project_key="globs", name=name, program="p", model="m")
        post("file_reservation_paths", project_key="globs", agent_name="BlueLake", paths=[PATTERN, "*" + "a*" * 500 + "c"])
        yield url


def test_health_answers_while_the_attack_runs(url):
    answers = []

    def attack():
        for _ in range(3):
            answers.append(httpx.post(f"{url}/api/check_file_reservations", timeout=60,
                                      json={"project_key": "globs", "agent_name": "GreenCastle", "paths": ATTACK_PATHS}))

    attacker = threading.Thread(target=attack)
    attacker.start()
    health = []
    while attacker.is_alive() and len(health) < 500:
        health.append(httpx.get(f"{url}/health", timeout=5).status_code)  # the loop blocked 11 s before
        time.sleep(0.01)
    attacker.join(60)
    assert health and set(health) == {200}
    assert [answer.status_code for answer in answers] == [200] * 3
    assert answers[0].json()["conflicts"] == []


def test_a_request_against_costly_patterns_is_refused_having_compared_a_bounded_amount(url):
    """QA session 30: 250 held crafted globs (~25,000 comparisons, 5-10 ms, a pair) against one
    path: each pair within PAIRS_MAX's count, together past what a write may compare (5,000,000):
    refused, nothing reserved, having spent at most that (~2 s, not minutes)."""
    post = lambda tool, **arguments: httpx.post(f"{url}/api/{tool}", json=arguments, timeout=30)  # noqa: E731
    piece = "a" * 149 + "b"
    globs = ["*/" + "*" * (1 + n % 32) + "*".join([piece] * 6) + "*" * (1 + n // 32) for n in range(250)]
    path = "src/" + ("a" * 149 + piece * 6)[:990] + "q"
    assert post("file_reservation_paths", project_key="globs", agent_name="BlueLake", paths=globs).status_code == 200
    refused = post("file_reservation_paths", project_key="globs", agent_name="GreenCastle", paths=[path])
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "too_much_to_compare"
    assert "Nothing was reserved" in refused.json()["error"]["message"]
    held = post("list_file_reservations", project_key="globs", limit=500).json()["file_reservations"]
    assert not [r for r in held if r["agent"] == "GreenCastle"]
