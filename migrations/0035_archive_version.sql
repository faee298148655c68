-- The version of a project's, agent's or file reservation's last change the archive was told of
-- (chalicelib/archive/outbox.py, docs/archive.md "Order of updates"): the change's new_id(), or the
-- previous version + 1 if that is larger (a replica whose clock is behind still counts up). Its
-- archive file records it, and the writer keeps the file of the newer version, so updates that reach
-- it out of order (an entry whose send failed, or one back from the dead-letter queue) never
-- overwrite a newer state. NULL: not changed since this column exists (its file says no version).
ALTER TABLE projects ADD COLUMN archive_version INTEGER;
ALTER TABLE agents ADD COLUMN archive_version INTEGER;
ALTER TABLE file_reservations ADD COLUMN archive_version INTEGER;
