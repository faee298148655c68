from fnmatch import fnmatchcase

import pytest

from chalicelib.tools.globs import Budget, OverBudget, escape, is_glob
from chalicelib.tools.globs import overlaps as overlaps_within


def overlaps(a: str, b: str) -> bool:
    return overlaps_within(a, b, Budget(10**9))


CASES = [
    ("src/**", "src/app.py", True),
    ("src/*.py", "src/**/*.ts", False),
    ("src/*.py", "src/**/*.py", True),
    ("*.py", "app.py", True),
    ("*.py", "src/app.py", False),
    ("**/*.py", "src/deep/app.py", True),
    ("**", "anything/at/all", True),
    ("docs/api/*.md", "docs/**", True),
    ("docs/api/*.md", "docs/guide/*.md", False),
    ("src/a*.py", "src/*b.py", True),  # "ab.py"
    ("src/a*.py", "src/b*.py", False),
    ("src/?.py", "src/ab.py", False),
    ("src/[ab].py", "src/b.py", True),
    ("src/[ab].py", "src/c.py", False),
    ("src/app.py", "src/app.py", True),
    ("src/app.py", "src/app.pyc", False),
    ("src/**/test_*.py", "src/pkg/tests/test_x.py", True),
    ("src/**/b/**", "src/a/**/c", True),  # src/a/b/c
    ("a/**/z", "a/z", True),
]


@pytest.mark.parametrize(("a", "b", "expected"), CASES)
def test_overlap_is_symmetric_and_right(a, b, expected):
    assert overlaps(a, b) is expected
    assert overlaps(b, a) is expected


def crafted(n: int) -> tuple[str, str]:
    """(a path, a glob) of QA session 30: legal, ~1 KiB, ~25,000 comparisons to tell apart (5 ms)."""
    piece = "a" * 149 + "b"
    pattern = "*/" + "*" * (1 + n % 32) + "*".join([piece] * 6) + "*" * (1 + n // 32)
    return "src/" + ("a" * 149 + piece * 6)[:990] + f"q{n}", pattern


def test_a_budget_bounds_what_comparing_costs_whatever_the_patterns():
    """A scan was bounded per pair (20,000 comparisons), never per request: 1,000 crafted pairs
    held the writer for minutes. Every comparison is charged to the caller's budget now."""
    path, pattern = crafted(0)
    whole = Budget(10**9)
    assert overlaps_within(path, pattern, whole) is False and whole.spent > 20_000
    small = Budget(1_000)
    with pytest.raises(OverBudget):
        overlaps_within(path, pattern, small)
    assert small.spent <= 1_000 + len(path) + len(pattern)  # stopped at the first charge past it
    with pytest.raises(OverBudget):  # spent: the next pair stops at once
        overlaps_within("src/app.py", "src/**", small)


@pytest.mark.parametrize(("a", "b", "_"), CASES)
def test_an_ordinary_pair_costs_a_few_comparisons(a, b, _):
    """reservations.COMPARISONS_PER_PAIR (100) is what each pair a request may compare may cost on average."""
    budget = Budget(10**9)
    overlaps_within(a, b, budget)
    assert budget.spent <= 30


@pytest.mark.parametrize(("pattern", "glob"), [
    ("src/app.py", False), ("src/*.py", True), ("src/?.py", True), ("**", True),
    ("app/[slug]", True), ("c[0-9]", True), ("[]]", True),  # a class holds at least one character, even `]`
    ("notes[old", False), ("a[", False), ("a]b", False), ("[]", False),  # no class: plain characters, as fnmatch reads them
    ("a[b/c]", False),  # a class lies within a segment
])
def test_a_bracket_is_a_glob_only_where_it_opens_a_class(pattern, glob):
    """QA session 31: any `[` made a glob, so `notes[old` reserved only itself, not what is under it."""
    assert is_glob(pattern) is glob


@pytest.mark.parametrize("name", ["app/[slug]", "a*b?/[x]/[[]", "notes[old", "[]]", "plain/name.py"])
def test_an_escaped_name_is_a_glob_matching_that_name_alone(name):
    glob = escape(name)
    assert fnmatchcase(name, glob) and not fnmatchcase(name + "x", glob)
    # A plain name meets its escape; a name with a class, read as a glob, does not (`[slug]` is one letter).
    assert overlaps(glob, name) is not is_glob(name)


def test_an_escaped_class_is_the_folder_not_its_letters():
    assert overlaps(escape("app/[slug]") + "/**", "app/[[]slug]/page.tsx")
    assert not overlaps(escape("app/[slug]") + "/**", "app/s/page.tsx")
