-- Build slots: named leases (e.g. "frontend-build") that agents take before running a
-- build, test server or migration that must not run twice at once.
-- One row per holder, keyed by stable_id('build_slot', project_id, slot, agent_id): a holder
-- re-acquiring updates its own row, and two replicas that each granted the slot keep both
-- rows when they merge; readers then admit holders in (acquired_ts, id) order, so every
-- replica agrees on who won (see docs/reservations.md).
CREATE TABLE build_slots (
    id           INTEGER PRIMARY KEY,
    project_id   INTEGER NOT NULL REFERENCES projects (id),
    slot         TEXT NOT NULL,
    agent_id     INTEGER NOT NULL REFERENCES agents (id),
    exclusive    INTEGER NOT NULL,
    acquired_ts  TEXT NOT NULL,             -- kept across renewals: the tie-break order
    expires_ts   TEXT NOT NULL,
    released_ts  TEXT
);
CREATE INDEX build_slots_by_slot ON build_slots (project_id, slot, released_ts, expires_ts);
