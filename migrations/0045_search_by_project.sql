-- embedded only: Turso has no FTS5 (replica mode indexes in a sidecar file, chalicelib/store/search_index.py)
-- The index holds every project's mail, so a project's search walked the other projects' newest
-- matches too: with words common everywhere, 1.5 ms alone, 17-21 ms among 100 active projects
-- (bench/search_many_projects.py). Each message's project is now a column of the index (a token
-- `p<project id>`), which a project's search intersects with its words (chalicelib/tools/search.py);
-- the words typed are kept to the text columns. The index is rebuilt, from a view that adds it.
DROP TRIGGER messages_fts_delete;
DROP TRIGGER messages_fts_update;
DROP TABLE messages_fts;
CREATE VIEW messages_search AS SELECT id, subject, body_md, 'p' || project_id AS project FROM messages;
CREATE VIRTUAL TABLE messages_fts USING fts5 (
    subject, body_md, project,
    content = 'messages_search', content_rowid = 'id',
    tokenize = 'porter unicode61'
);
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, subject, body_md, project) VALUES ('delete', old.id, old.subject, old.body_md, 'p' || old.project_id);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF subject, body_md ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, subject, body_md, project) VALUES ('delete', old.id, old.subject, old.body_md, 'p' || old.project_id);
    INSERT INTO messages_fts (rowid, subject, body_md, project) VALUES (new.id, new.subject, new.body_md, 'p' || new.project_id);
END;
