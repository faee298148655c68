-- Idempotency keys (chalicelib/store/idempotency.py): the first result of a write, returned to
-- its retries. id = stable_id('idempotency', project_key, lower(acting agent), key): no UNIQUE index.
CREATE TABLE idempotency_keys (
    id              INTEGER PRIMARY KEY,
    tool            TEXT NOT NULL,
    payload_sha256  TEXT NOT NULL,                -- the tool and its arguments, minus key and token
    result_json     TEXT NOT NULL,
    created_ts      TEXT NOT NULL,
    expires_ts      TEXT NOT NULL
);
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_ts);
