-- Idempotency keys (chalicelib/store/idempotency.py): the first result of a write, returned to
-- its retries. id = new_id() (appended in time order: cheap to insert, and expired rows are
-- the lowest ids); key_id = stable_id('idempotency', project_key, lower(acting agent), key),
-- looked up through a plain index (no UNIQUE index: docs/turso.md).
CREATE TABLE idempotency_keys (
    id              INTEGER PRIMARY KEY,
    key_id          INTEGER NOT NULL,
    tool            TEXT NOT NULL,
    payload_sha256  TEXT NOT NULL,                -- the tool and its arguments, minus key and token
    result_json     TEXT NOT NULL,
    created_ts      TEXT NOT NULL
);
CREATE INDEX idempotency_keys_by_key ON idempotency_keys (key_id, id);
