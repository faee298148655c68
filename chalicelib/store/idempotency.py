"""Idempotency keys: a retried write returns its first result instead of running again.

The key, a hash of the call (tool and arguments) and the result's JSON (or, for a tool with a
registry.Replay, the ids to read it back: a sent message) are stored in the write's own
transaction, so a key exists exactly when its write committed: a client that lost the answer
(a timeout, a crashed server, another Lambda container, another replica) retries with the same
key and gets the stored result. The key is found by key_id, a stable_id over (project id, acting
agent, key), through a plain index (no UNIQUE index, docs/turso.md); the row id is a
time-ordered new_id, so rows are appended and the expired ones are the lowest ids. Two copies
of one call racing on two replicas within a push are not caught (a retry comes after a
timeout, not at once; the earlier row answers later retries); on one database the write lock
orders them. Keys expire after IDEMPOTENCY_KEY_TTL_SECONDS.
"""

import functools
import hashlib
import sqlite3
import time
from typing import Any, Callable

import orjson

from .. import clock
from ..errors import Conflict, NotFound
from ..fields import folded_name, names_agents
from ..ids import id_at, new_id, stable_id
from ..registry import Input, Output, Tool, to_json

# One write in PRUNE_EVERY that stores a key also deletes up to PRUNE_BATCH expired ones: bounded
# work, and the table stays small (deleting faster than keys are made).
PRUNE_EVERY = 16
PRUNE_BATCH = 64


def run_once(conn: sqlite3.Connection, tool: Tool, args: Input, key: str, project: int | str, ttl_seconds: int,
             run: Callable[[], Output]) -> Output:
    """run(), unless this call's idempotency_key `key` was seen: then the first result (or Conflict).
    `project`: the id of the project the call names (its project_key however spelled: a slug, C:\\x
    or c:/x), so a retry that spells it otherwise is the same call."""
    key_id, digest, oldest, row = _stored(conn, tool, args, key, project, ttl_seconds)
    if row is not None:
        if tool.replay and row[2].startswith("["):  # ids kept by tool.replay (a whole result is an object)
            kept = orjson.loads(row[2])
            try:
                return tool.replay.rebuild(conn, args, kept)
            except NotFound:  # keys may outlive what they wrote (IDEMPOTENCY_KEY_TTL_SECONDS > a policy's days)
                raise ResultGone(
                    f"idempotency_key {key!r} belongs to a call that succeeded, but what it wrote ({tool.name}: "
                    f"{', '.join(map(str, kept))}) was deleted since by the project's retention policy; "
                    "it is not done again.",
                    "Nothing to retry: the call took effect. To do it again, use a new key.",
                )
        return tool.output.model_validate_json(row[2])
    result = run()
    row_id = new_id()
    if row_id % PRUNE_EVERY == 0:
        conn.execute(
            "DELETE FROM idempotency_keys WHERE id IN (SELECT id FROM idempotency_keys WHERE id < ? ORDER BY id LIMIT ?)",
            (oldest, PRUNE_BATCH),
        )
    conn.execute(
        "INSERT INTO idempotency_keys (id, key_id, tool, payload_sha256, result_json, created_ts) VALUES (?, ?, ?, ?, ?, ?)",
        (row_id, key_id, tool.name, digest, _kept(tool, result), clock.now()),
    )
    return result


def stored(conn: sqlite3.Connection, tool: Tool, args: Input, key: str, project: int | str, ttl_seconds: int) -> bool:
    """Whether this very call was made under `key` (run_once will answer it from what it stored);
    KeyReused if the key was used for another call."""
    return _stored(conn, tool, args, key, project, ttl_seconds)[3] is not None


def _stored(conn, tool: Tool, args: Input, key: str, project: int | str, ttl_seconds: int) -> tuple[int, str, int, tuple | None]:
    """(key_id, the call's digest, the oldest unexpired row id, the key's row: its tool, digest and
    result, or None); KeyReused if the key's row is another call's."""
    acting = getattr(args, tool.acts_as[0], "") if tool.acts_as else ""
    key_id = stable_id("idempotency", project, (acting or "").lower(), key)
    digest = _digest(tool, args, project)
    oldest = id_at(time.time() - ttl_seconds)  # rows below have expired
    row = conn.execute(
        "SELECT tool, payload_sha256, result_json FROM idempotency_keys WHERE key_id = ? AND id >= ? ORDER BY id LIMIT 1",
        (key_id, oldest),
    ).fetchone()
    if row is not None and row[1] != digest:
        raise KeyReused(
            f"idempotency_key {key!r} was already used for another call ({row[0]} with other arguments).",
            "Use a new key for a new operation; reuse a key only to retry the very same call.",
        )
    return key_id, digest, oldest, row


def _kept(tool: Tool, result: Output) -> str:
    # A sent message's whole result would store its body a second time; its id is enough.
    return (orjson.dumps(tool.replay.keep(result)) if tool.replay else to_json(result)).decode()


class KeyReused(Conflict):
    code = "idempotency_key_reused"


class ResultGone(Conflict):
    code = "idempotency_result_gone"


def _digest(tool: Tool, args: Any, project: int | str) -> str:
    # The input model dumps its fields in one fixed order: the same call, the same bytes. The
    # project by id, not as spelled; agents by name, however cased (RedFox and redfox are one).
    fields = args.model_dump(mode="json", exclude={"idempotency_key", tool.token_field, "project_key"})
    for name in _name_fields(type(args)):
        value = fields.get(name)
        if isinstance(value, str):
            fields[name] = folded_name(value)
        elif isinstance(value, list):
            fields[name] = [folded_name(item) for item in value]
    return hashlib.sha256(f"{tool.name}\0{project}\0".encode() + orjson.dumps(fields)).hexdigest()


@functools.cache
def _name_fields(model: type) -> tuple[str, ...]:
    return tuple(name for name, field in model.model_fields.items() if names_agents(field))
