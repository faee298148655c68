-- Background workers report here (chalicelib/store/heartbeats.py): one row per worker name
-- (the archive worker: one per archive directory), so /ready and archive_status can tell a
-- running worker from a dead one.
CREATE TABLE worker_heartbeats (
    id            INTEGER PRIMARY KEY,     -- stable_id("worker", name)
    name          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    host          TEXT NOT NULL,
    started_ts    TEXT NOT NULL,
    heartbeat_ts  TEXT NOT NULL,
    restarts      INTEGER NOT NULL DEFAULT 0,  -- how often its supervisor restarted it
    last_error    TEXT
);
