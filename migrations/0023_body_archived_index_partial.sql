-- A message's body_archived_ts is NULL until retention archives its body, so every send wrote a
-- NULL entry into messages_by_body_archived, which only ever looks up archived bodies
-- (search_index.py: body_archived_ts IS NOT NULL AND body_archived_ts > ?). Now it holds only those.
DROP INDEX messages_by_body_archived;
CREATE INDEX messages_by_body_archived ON messages (body_archived_ts) WHERE body_archived_ts IS NOT NULL;
