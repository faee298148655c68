-- embedded only: Turso has no FTS5 (replica mode indexes in a sidecar file, chalicelib/store/search_index.py)
-- A body retention archived (body_archived_ts set) is a note in the database ("archived on …: the
-- git archive keeps it"), which the index took for the body: a search for "archive", "git" or
-- "database" matched every archived message. The index now sees an archived body as empty, so
-- such a message is found by its subject only (docs/retention.md), in the view it reads and the
-- triggers that keep it (a delete must name exactly what was indexed: the same CASE).
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
-- The notes indexed so far, out; the same messages in again without a body.
INSERT INTO messages_fts (messages_fts, rowid, subject, body_md, project)
SELECT 'delete', id, subject, body_md, 'p' || project_id FROM messages WHERE body_archived_ts IS NOT NULL;
INSERT INTO messages_fts (rowid, subject, body_md, project)
SELECT id, subject, '', 'p' || project_id FROM messages WHERE body_archived_ts IS NOT NULL;
DROP VIEW messages_search;
CREATE VIEW messages_search AS
SELECT id, subject, CASE WHEN body_archived_ts IS NULL THEN body_md ELSE '' END AS body_md, 'p' || project_id AS project FROM messages;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, subject, body_md, project)
    VALUES ('delete', old.id, old.subject, CASE WHEN old.body_archived_ts IS NULL THEN old.body_md ELSE '' END, 'p' || old.project_id);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF subject, body_md, body_archived_ts ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, subject, body_md, project)
    VALUES ('delete', old.id, old.subject, CASE WHEN old.body_archived_ts IS NULL THEN old.body_md ELSE '' END, 'p' || old.project_id);
    INSERT INTO messages_fts (rowid, subject, body_md, project)
    VALUES (new.id, new.subject, CASE WHEN new.body_archived_ts IS NULL THEN new.body_md ELSE '' END, 'p' || new.project_id);
END;
