"""Do two file patterns overlap? (Could one repository path match both?)

Patterns are repo-relative paths whose segments may hold `*`, `?` and `[...]`, and whose
whole segments may be `**` (any number of directories, including none). `src/**` and
`src/app.py` overlap; `src/*.py` and `src/**/*.ts` do not.
"""

from fnmatch import fnmatchcase
from functools import lru_cache

GLOB_CHARS = frozenset("*?[")


def is_glob(pattern: str) -> bool:
    return any(char in GLOB_CHARS for char in pattern)


def overlaps(a: str, b: str) -> bool:
    return _paths(tuple(a.split("/")), tuple(b.split("/")))


@lru_cache(maxsize=4096)
def _paths(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    if not a or not b:
        return all(segment == "**" for segment in a + b)
    if a[0] == "**":  # matches no directory, or swallows one of b's segments and stays
        return _paths(a[1:], b) or _paths(a, b[1:])
    if b[0] == "**":
        return _paths(a, b[1:]) or _paths(a[1:], b)
    return _segments(a[0], b[0]) and _paths(a[1:], b[1:])


def _segments(a: str, b: str) -> bool:
    """Could one file or directory name match both segment patterns?"""
    if not is_glob(a) or not is_glob(b):
        return fnmatchcase(a, b) if not is_glob(a) else fnmatchcase(b, a)
    return _chars(_tokens(a), _tokens(b))


def _tokens(pattern: str) -> tuple[str, ...]:
    """`*`, `?`, a `[...]` class, or one literal character each."""
    tokens, i = [], 0
    while i < len(pattern):
        if pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            tokens.append(pattern[i : end + 1])
            i = end + 1
        else:
            tokens.append(pattern[i])
            i += 1
    return tuple(tokens)


@lru_cache(maxsize=4096)
def _chars(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Is there a string both token sequences match? (`*` matches any run of characters.)"""
    if not a or not b:
        return all(token == "*" for token in a + b)
    if a[0] == "*":
        return _chars(a[1:], b) or _chars(a, b[1:])
    if b[0] == "*":
        return _chars(a, b[1:]) or _chars(a[1:], b)
    return _char(a[0], b[0]) and _chars(a[1:], b[1:])


def _char(a: str, b: str) -> bool:
    if a == "?" or b == "?":
        return True
    if a.startswith("[") and b.startswith("["):
        return True  # two classes: assume they share a character (errs towards a conflict)
    if a.startswith("["):
        return fnmatchcase(b, a)
    if b.startswith("["):
        return fnmatchcase(a, b)
    return a == b
