-- Human overseers (chalicelib/tools/overseer.py): a person writing from the web UI is stored as
-- an agents row of kind 'human', so agents read and answer their mail like any other; agents can
-- neither register under nor send as such a name.
ALTER TABLE agents ADD COLUMN kind TEXT NOT NULL DEFAULT 'agent';  -- agent | human
-- The newest messages of one project (the web UI's project page and its live refresh).
CREATE INDEX messages_by_project ON messages (project_id, id);
