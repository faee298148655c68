"""Pages of the list tools (list_projects, list_agents, ...): `limit` rows after a cursor.

The cursor holds the sort key of the previous page's last row (keyset paging, no offsets):
a page is one index range however deep it starts, and rows added or removed between two
pages shift nothing, so no row is listed twice or skipped. But a row whose sort key changes
between pages moves: a contact asked again (list_contacts, newest request first) to the first
page, a file reservation made again (list_file_reservations, oldest first) to the last, shown
where it now sorts (docs/limits.md). Callers pass it back as it came.
Its values are joined by commas, a text as `t` and its UTF-8 bytes (each byte outside
[A-Za-z0-9._-] as `~` and two hex digits), an integer as `i` and its digits, so that the
schema's pattern says exactly what the list takes: every cursor that matches reads as a key (an
integer past SQLite's range is clamped, bytes that are no UTF-8 are replaced), the keyset
comparison places it in the order, and no other string passes (schemathesis found base64
strings that were no key: a 422 for a request the schema allowed). A cursor has only characters
a URI keeps as they are: pasted into a resource URI's `cursor=` it reaches the tool unchanged (a
`%3A` of the percent-encoding it had was decoded to `:` on the way). A text as `s` and its
percent-encoding, as cursors were handed out before, is still read.
"""

import functools
import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote, unquote

from pydantic import Field

from ..errors import InvalidArgument
from ..fields import matching

MAX_CURSOR = 2048  # a key of a timestamp and a name or id; a slug (of a long path) may take ~1,400
# What _encode writes (t...), what it wrote before (s..., percent-encoded), an integer.
_VALUE = r"(?:t(?:[A-Za-z0-9._-]|~[0-9A-Fa-f]{2})*|s(?:[A-Za-z0-9._~-]|%[0-9A-Fa-f]{2})*|i-?[0-9]{1,19})"


def _cursor_pattern(columns: int) -> str:
    return f"^{_VALUE}(?:,{_VALUE}){{{columns - 1}}}$"


PageLimit = Annotated[int, Field(ge=1, le=500, description="At most this many per page; next_cursor continues.")]
# An agent may pass one tool's cursor to another: the refusal says which cursor a tool takes.
NOT_ANOTHER_TOOLS = "a cursor this tool gave: pass the next_cursor of its previous page as it came, or omit it for the first page"
PageCursor = Annotated[str, matching(_cursor_pattern(2), NOT_ANOTHER_TOOLS, max_length=MAX_CURSOR)]  # a list ordered by two columns
PageCursor1 = Annotated[str, matching(_cursor_pattern(1), NOT_ANOTHER_TOOLS, max_length=MAX_CURSOR)]  # by one
CURSOR_HELP = "next_cursor of the previous page; omit it for the first page."
NEXT_HELP = "Pass as cursor for the next page; null on the last page."


@dataclass(frozen=True)
class Keyset:
    """A list's order: (row field, SQL expression) pairs, the last one unique, all one direction."""

    columns: tuple[tuple[str, str], ...]
    descending: bool = False

    def order_by(self) -> str:
        direction = " DESC" if self.descending else ""
        return " ORDER BY " + ", ".join(sql + direction for _, sql in self.columns)

    def after(self, cursor: str | None) -> tuple[str, list]:
        """' AND <rows after the cursor's row>' and its parameters ('' and [] without a cursor)."""
        if cursor is None:
            return "", []
        key = _decode(cursor, len(self.columns))
        op = "<" if self.descending else ">"
        # (a, b) > (x, y) spelled out (row values are not in every engine), led by a bound on
        # the first column so that an index on the order is read from there on.
        condition, params = f"{self.columns[-1][1]} {op} ?", [key[-1]]
        for (_, sql), value in zip(reversed(self.columns[:-1]), reversed(key[:-1])):
            condition, params = f"({sql} {op} ? OR ({sql} = ? AND {condition}))", [value, value, *params]
        return f" AND {self.columns[0][1]} {op}= ? AND {condition}", [key[0], *params]

    def page(self, rows: Iterable[sqlite3.Row], limit: int) -> tuple[list[sqlite3.Row], str | None]:
        """The first `limit` rows (the query asked for limit + 1) and the cursor after them, or None."""
        rows = list(rows)
        if len(rows) <= limit:
            return rows, None
        last = rows[limit - 1]
        return rows[:limit], ",".join(_encode(last[field]) for field, _ in self.columns)


def _encode(value: str | int) -> str:
    # quote() leaves only [A-Za-z0-9._~-] as they are: ~ is escaped too, then each % becomes ~.
    return f"i{value}" if type(value) is int else "t" + quote(value, safe="").replace("~", "%7E").replace("%", "~")


def _text(part: str) -> str:
    escaped = part[1:].replace("~", "%") if part[0] == "t" else part[1:]
    return unquote(escaped, errors="replace")


@functools.cache
def _compiled(columns: int) -> re.Pattern:
    return re.compile(_cursor_pattern(columns))


def _decode(cursor: str, length: int) -> list:
    if not _compiled(length).fullmatch(cursor):
        raise InvalidArgument(f"Cursor {cursor[:80]!r} is not one this tool gave.", "Pass next_cursor as it came, or omit it.")
    return [max(-(2**63), min(int(part[1:]), 2**63 - 1)) if part[0] == "i" else _text(part) for part in cursor.split(",")]
