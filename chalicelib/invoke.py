"""Running a tool: validate the input, open a connection, run the handler in one transaction.

Every transport goes through here: `call` for synchronous callers (Chalice, the CLI),
`acall` for the ASGI app, which runs readers inline and writers on one writer thread
(SQLite has one writer at a time anyway; the event loop stays free for readers).
"""

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from .config import Settings
from .db import connect, transaction
from .errors import Unavailable, validation_error
from .registry import Input, Output, Tool


def parse(tool: Tool, arguments: Any) -> Input:
    if isinstance(arguments, tool.input):
        return arguments
    try:
        return tool.input.model_validate(arguments if arguments is not None else {})
    except ValidationError as exc:
        raise validation_error(exc) from None


def call(tool: Tool, arguments: Any, settings: Settings) -> Output:
    args = parse(tool, arguments)
    conn = connect(settings)
    try:
        with transaction(conn, write=not tool.read_only):
            return tool.handler(conn, args)
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            raise Unavailable("The database is busy.", "Retry in a moment.") from exc
        raise
    finally:
        conn.close()


@lru_cache(maxsize=1)
def _writer() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="db-writer")


async def acall(tool: Tool, arguments: Any, settings: Settings) -> Output:
    args = parse(tool, arguments)  # bad input is refused before it waits for anything
    if tool.read_only:
        # WAL readers never wait for the writer, and these queries take microseconds.
        return call(tool, args, settings)
    return await asyncio.get_running_loop().run_in_executor(_writer(), call, tool, args, settings)
