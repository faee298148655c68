-- Transactional outbox for the git archive: the transaction that writes a message, a profile
-- or a reservation also writes one row here; a worker turns rows into git commits.
CREATE TABLE archive_outbox (
    id          INTEGER PRIMARY KEY,          -- new_id(): ordered by creation time
    project     TEXT NOT NULL,                -- project slug: one commit per project per batch
    kind        TEXT NOT NULL,                -- message | agent | reservation
    entity_id   INTEGER NOT NULL,
    payload     TEXT NOT NULL,                -- JSON: everything needed to write the files
    created_ts  TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending',  -- pending | queued (sent to SQS) | done
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    retry_ts    TEXT,                         -- after a failure: not retried before this time
    done_ts     TEXT,
    git_commit  TEXT                          -- the commit that holds it
);
CREATE INDEX archive_outbox_by_state ON archive_outbox (state, id);
