"""Do two file patterns overlap? (Could one repository path match both?)

Patterns are repo-relative paths whose segments may hold `*`, `?` and `[...]`, and whose
whole segments may be `**` (any number of directories, including none). `src/**` and
`src/app.py` overlap; `src/*.py` and `src/**/*.ts` do not.

The same question is asked twice: of the paths' segments (`**` the star) and, for two segments,
of their characters (`*` the star). Neither needs a search over ways to match, so the cost
is linear in the patterns' lengths, whatever they hold (issue 11: a backtracking matcher
took 11 s for one request of 150 paths like `*a*a*...*c`):

- Both sides have a star: the middles, between the first and the last star, absorb each other,
  so they overlap exactly when the parts before the first star agree position by position
  from the start, and the parts after the last star from the end.
- Only one side has stars: the other is a fixed sequence, which the starred side's pieces must
  match in order; taking each piece's leftmost match is never worse, so no backtracking.
  But its scan may try each piece at each position: tens of thousands of comparisons (5-10 ms) for one
  pair of crafted 1 KiB patterns, where an ordinary pair takes a few.

So every comparison is charged to a Budget that the caller shares among all the pairs of one
request: past it, OverBudget, and the caller refuses the request (or stops) instead of spending
minutes on a thousand crafted pairs.
"""

import re
from fnmatch import fnmatchcase
from functools import lru_cache

TOKEN = re.compile(r"\[.[^\]]*\]|\*+|.", re.DOTALL)  # a class holds at least one character, even `]`


class OverBudget(Exception):
    """The comparisons a request may make are spent."""


class Budget:
    """Comparisons (of two segments or two characters, and the tokens read to make them) that one
    request may make, over all the pattern pairs it compares. `spent` says how many it made."""

    def __init__(self, comparisons: int) -> None:
        self.left, self.spent = comparisons, 0

    def spend(self, comparisons: int) -> None:
        self.left -= comparisons
        self.spent += comparisons
        if self.left < 0:
            raise OverBudget


def is_glob(pattern: str) -> bool:
    """Does the pattern hold a `*`, a `?` or a class? A `[` is a glob character only where it opens
    a class of its segment (as _tokens reads it): `notes[old` is a plain name, as fnmatch takes it."""
    return "*" in pattern or "?" in pattern or has_class(pattern)


def has_class(pattern: str) -> bool:
    """Does a segment of the pattern hold a `[...]` class (a `[` closed by a `]` of its segment)?"""
    return "[" in pattern and any(len(token) > 1 and token[0] == "[" for segment in pattern.split("/")
                                  for token in _tokens(segment))


def escape(path: str) -> str:
    """A glob that matches only `path`, taken as a plain name: each glob character in a class of
    its own (`app/[slug]` becomes `app/[[]slug]`)."""
    return re.sub(r"[*?[]", lambda char: f"[{char.group()}]", path)


def overlaps(a: str, b: str, budget: Budget) -> bool:
    """Could one path match both patterns? Charged to `budget` (OverBudget once it is spent)."""
    segments_a, segments_b = tuple(a.split("/")), tuple(b.split("/"))
    budget.spend(len(segments_a) + len(segments_b))
    return _intersect(segments_a, segments_b, "**", lambda x, y: _segments(x, y, budget), budget)


def _segments(a: str, b: str, budget: Budget) -> bool:
    """Could one file or directory name match both segment patterns?"""
    if not is_glob(a) and not is_glob(b):
        return a == b
    tokens_a, tokens_b = _tokens(a), _tokens(b)
    budget.spend(len(tokens_a) + len(tokens_b))
    return _intersect(tokens_a, tokens_b, "*", _char, budget)


@lru_cache(maxsize=4096)
def _tokens(pattern: str) -> tuple[str, ...]:
    """`*` (for any run of them), `?`, a `[...]` class, or one literal character each."""
    return tuple("*" if token[0] == "*" else token for token in TOKEN.findall(pattern))


def _intersect(a: tuple[str, ...], b: tuple[str, ...], star: str, same, budget: Budget) -> bool:
    """Is there a sequence both token sequences match? `star` matches any run of tokens,
    `same(x, y)` says whether one element matches both x and y. What is compared outside
    _matches' scan is at most len(a) + len(b), which the caller has charged."""
    if star in a and star in b:
        head_a, head_b = a[: a.index(star)], b[: b.index(star)]
        tail_a, tail_b = a[len(a) - a[::-1].index(star) :], b[len(b) - b[::-1].index(star) :]
        return all(map(same, head_a, head_b)) and all(map(same, reversed(tail_a), reversed(tail_b)))
    if star in b:
        a, b = b, a
    if star not in a:
        return len(a) == len(b) and all(map(same, a, b))
    return _matches(a, b, star, same, budget)


def _matches(pattern: tuple[str, ...], fixed: tuple[str, ...], star: str, same, budget: Budget) -> bool:
    """Does the starred `pattern` match the star-free `fixed`? Leftmost match of each piece."""
    pieces = [[]]
    for token in pattern:
        if token == star:
            pieces.append([])
        else:
            pieces[-1].append(token)
    first, *middle, last = pieces
    if len(first) + len(last) > len(fixed):
        return False
    end = len(fixed) - len(last)
    if not all(map(same, first, fixed)) or not all(map(same, last, fixed[end:])):
        return False
    position = len(first)
    for piece in middle:
        found = -1
        for start in range(position, end - len(piece) + 1):
            budget.spend(len(piece))
            if all(map(same, piece, fixed[start : start + len(piece)])):
                found = start
                break
        if found < 0:
            return False
        position = found + len(piece)
    return True


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
