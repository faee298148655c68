-- The credential that took each reservation (security/auth.py credential(): a bearer token's hash
-- prefix, a JWT's sub), so that one credential acting as many agents holds at most its share of a
-- project (HELD_PER_CREDENTIAL in chalicelib/tools/reservations.py), counted in this index. '': the
-- operator, no authentication (one caller), and every reservation from before: in no one's share.
ALTER TABLE file_reservations ADD COLUMN credential TEXT NOT NULL DEFAULT '';
CREATE INDEX file_reservations_by_credential ON file_reservations (project_id, credential, released_ts, expires_ts);
