"""Idempotency keys: a retried write returns its first result instead of running again.

The key, a hash of the call (tool and arguments) and the result's JSON are stored in the
write's own transaction, so a key exists exactly when its write committed: a client that
lost the answer (a timeout, a crashed server, another Lambda container, another replica)
retries with the same key and gets the stored result. The row id is stable_id over
(project, acting agent, key), no UNIQUE index (docs/turso.md): two replicas storing the same
key store the same row. Two copies of one call racing on two replicas within a push are
not caught (a retry comes after a timeout, not at once); on one database the write lock
orders them. Keys expire after IDEMPOTENCY_KEY_TTL_SECONDS.
"""

import hashlib
import sqlite3
from typing import Any, Callable

import orjson

from .. import clock
from ..errors import Conflict
from ..ids import stable_id
from ..registry import Input, Output, Tool, to_json

PRUNE_BATCH = 20  # expired keys deleted per write that stores one: bounded work, the table stays small


def run_once(conn: sqlite3.Connection, tool: Tool, args: Input, ttl_seconds: int, run: Callable[[], Output]) -> Output:
    """run(), unless this call's idempotency_key was seen: then the first result (or Conflict)."""
    key = getattr(args, "idempotency_key", None)
    if key is None:
        return run()
    acting = getattr(args, tool.acts_as[0], "") if tool.acts_as else ""
    row_id = stable_id("idempotency", getattr(args, "project_key", ""), (acting or "").lower(), key)
    digest = _digest(tool, args)
    now = clock.now()
    row = conn.execute(
        "SELECT tool, payload_sha256, result_json FROM idempotency_keys WHERE id = ? AND expires_ts > ?", (row_id, now)
    ).fetchone()
    if row is not None:
        if row[1] != digest:
            raise KeyReused(
                f"idempotency_key {key!r} was already used for another call ({row[0]} with other arguments).",
                "Use a new key for a new operation; reuse a key only to retry the very same call.",
            )
        return tool.output.model_validate_json(row[2])
    result = run()
    conn.execute(
        "DELETE FROM idempotency_keys WHERE id IN (SELECT id FROM idempotency_keys WHERE expires_ts <= ? LIMIT ?)",
        (now, PRUNE_BATCH),
    )
    conn.execute(
        "INSERT OR REPLACE INTO idempotency_keys (id, tool, payload_sha256, result_json, created_ts, expires_ts)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (row_id, tool.name, digest, to_json(result).decode(), now, clock.later(now, ttl_seconds)),
    )
    return result


class KeyReused(Conflict):
    code = "idempotency_key_reused"


def _digest(tool: Tool, args: Any) -> str:
    payload = args.model_dump(mode="json", exclude={"idempotency_key", tool.token_field})
    return hashlib.sha256(tool.name.encode() + b"\0" + orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()
