-- embedded only: Turso has no FTS5; replica mode keeps this index in a sidecar file instead
-- (chalicelib/search_index.py), with the same tokenizer and ranking.
-- Full-text search over subjects and bodies (SQLite FTS5, bm25 ranking).
-- An external-content index: the text lives once, in `messages`.

CREATE VIRTUAL TABLE messages_fts USING fts5 (
    subject, body_md,
    content = 'messages', content_rowid = 'id',
    tokenize = 'porter unicode61'
);

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
    INSERT INTO messages_fts (rowid, subject, body_md) VALUES (new.id, new.subject, new.body_md);
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, subject, body_md) VALUES ('delete', old.id, old.subject, old.body_md);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF subject, body_md ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, subject, body_md) VALUES ('delete', old.id, old.subject, old.body_md);
    INSERT INTO messages_fts (rowid, subject, body_md) VALUES (new.id, new.subject, new.body_md);
END;
