-- A build slot grant is confirmed once re-checked against the claims other replicas made
-- meanwhile (acquire_build_slot's settle step, docs/turso.md); NULL while that check runs.
ALTER TABLE build_slots ADD COLUMN confirmed_ts TEXT;
UPDATE build_slots SET confirmed_ts = acquired_ts;
