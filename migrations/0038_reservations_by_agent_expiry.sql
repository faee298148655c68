-- An agent's active reservations by expiry: what file_reservation_paths counts against
-- HELD_PER_AGENT, and a heartbeat's recent lapses. On (agent_id, released_ts) alone each count
-- read the table row of every expired one not yet deleted by retention (7 days of them).
DROP INDEX file_reservations_by_agent;
CREATE INDEX file_reservations_by_agent_expiry ON file_reservations (agent_id, released_ts, expires_ts);
