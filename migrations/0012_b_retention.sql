-- Retention (docs/retention.md). A project's policy; NULL: the configured default
-- (RETENTION_MODE, RETENTION_DAYS).
ALTER TABLE projects ADD COLUMN retention_mode TEXT;      -- keep | purge | archive_only
ALTER TABLE projects ADD COLUMN retention_days INTEGER;   -- messages older than this are purged or archived
-- archive_only: when the body left the database (the git archive keeps it); NULL while it is here.
ALTER TABLE messages ADD COLUMN body_archived_ts TEXT;
-- What retention walks: a project's messages still holding their body, oldest first.
CREATE INDEX messages_by_retention ON messages (project_id, body_archived_ts, id);
-- What a replica's search index re-reads: bodies archived since it last looked.
CREATE INDEX messages_by_body_archived ON messages (body_archived_ts);
