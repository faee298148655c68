import pytest

from chalicelib.tools.globs import overlaps

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
