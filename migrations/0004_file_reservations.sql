-- Advisory file reservations: an agent leases repo-relative paths or globs for a while.
CREATE TABLE file_reservations (
    id            INTEGER PRIMARY KEY,        -- new_id()
    project_id    INTEGER NOT NULL REFERENCES projects (id),
    agent_id      INTEGER NOT NULL REFERENCES agents (id),
    path_pattern  TEXT NOT NULL,              -- normalised, repo-relative; may be a glob
    exclusive     INTEGER NOT NULL,
    reason        TEXT NOT NULL DEFAULT '',
    created_ts    TEXT NOT NULL,
    expires_ts    TEXT NOT NULL,
    released_ts   TEXT                        -- set on release (or forced release)
);
CREATE INDEX file_reservations_active ON file_reservations (project_id, released_ts, expires_ts);
CREATE INDEX file_reservations_by_agent ON file_reservations (agent_id, released_ts);
