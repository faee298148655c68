"""Pages of the list tools (list_projects, list_agents, ...): `limit` rows after a cursor.

The cursor holds the sort key of the previous page's last row (keyset paging, no offsets):
a page is one index range however deep it starts, and rows added or removed between two
pages shift nothing, so no row is listed twice or skipped. It is opaque to callers (the key
as JSON, base64url) and checked like any other input.
"""

import base64
import binascii
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

import orjson
from pydantic import Field

from ..errors import InvalidArgument

MAX_CURSOR = 2048  # a key of a timestamp and a name or id; a slug (of a long path) may take ~1,400

PageLimit = Annotated[int, Field(ge=1, le=500, description="At most this many per page; next_cursor continues.")]
PageCursor = Annotated[str, Field(max_length=MAX_CURSOR, pattern=r"^[A-Za-z0-9_-]+$")]
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
        key = orjson.dumps([last[field] for field, _ in self.columns])
        return rows[:limit], base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def _decode(cursor: str, length: int) -> list:
    try:
        key = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        key = None
    if not (isinstance(key, list) and len(key) == length and all(_plain(value) for value in key)):
        raise InvalidArgument(f"Cursor {cursor[:80]!r} is not one this tool gave.", "Pass next_cursor as it came, or omit it.")
    return key


def _plain(value) -> bool:
    """A string, or an integer SQLite can bind (orjson reads numbers up to 64 bits unsigned)."""
    return isinstance(value, str) or (type(value) is int and -(2**63) <= value < 2**63)
