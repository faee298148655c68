-- embedded only: replica mode keeps these rows in its sidecar index (chalicelib/store/search_index.py)
-- Ids and paths as single terms (chalicelib/store/search_runs.py): each run of words written
-- without spaces (`src/mod43/file39.py`, `CART-12`, and their parts), one row a message with the
-- best place of it there (3: the subject's whole run, 2: part of one, 1: the body's whole run, 0:
-- part of one), found by term and project in the order a search lists them: best place first, then
-- newest.
-- Rows leave with their message (a purge), a body's with the body (archive_only: the subject's
-- stay). The mail stored before this migration is indexed from its newest message down, a bounded
-- part each retention run: message_runs_backfill.below is where it has got (every message from
-- there up is indexed; 0: all of them). A database without mail has nothing to fill in.
CREATE TABLE message_runs (
    term        TEXT NOT NULL,
    project_id  INTEGER NOT NULL,
    message_id  INTEGER NOT NULL,
    place       INTEGER NOT NULL,
    PRIMARY KEY (term, project_id, place, message_id)
) WITHOUT ROWID;
CREATE INDEX message_runs_by_message ON message_runs (message_id);
CREATE TRIGGER message_runs_delete AFTER DELETE ON messages BEGIN
    DELETE FROM message_runs WHERE message_id = old.id;
END;
CREATE TRIGGER message_runs_body_archived AFTER UPDATE OF body_archived_ts ON messages
WHEN new.body_archived_ts IS NOT NULL BEGIN
    DELETE FROM message_runs WHERE message_id = new.id AND place < 2;
END;
CREATE TABLE message_runs_backfill (id INTEGER PRIMARY KEY CHECK (id = 1), below INTEGER NOT NULL);
INSERT INTO message_runs_backfill (id, below) SELECT 1, coalesce(max(id) + 1, 0) FROM messages;
