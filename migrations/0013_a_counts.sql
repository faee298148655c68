-- Counts kept by the write path (chalicelib/tools/counts.py), so whois and get_project cost the
-- same at a million messages as at ten. One row per (agent, writer): each embedded database or
-- Turso replica only ever updates its own rows, so two replicas writing at once never contend
-- for (or overwrite) one counter; a count is the sum of an agent's few rows.
CREATE TABLE message_counts (
    id        INTEGER PRIMARY KEY,            -- stable_id('counts', agent_id, writer); -agent_id for the rows below
    agent_id  INTEGER NOT NULL REFERENCES agents (id),
    writer    INTEGER NOT NULL,               -- 0 on embedded SQLite, a replica's own id on Turso
    sent      INTEGER NOT NULL DEFAULT 0,
    received  INTEGER NOT NULL DEFAULT 0,
    read      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX message_counts_by_agent ON message_counts (agent_id);

-- The counts of the mail stored before this migration (writer -1: written once, here).
INSERT INTO message_counts (id, agent_id, writer, sent, received, read)
SELECT -a.id, a.id, -1,
       (SELECT count(*) FROM messages WHERE sender_id = a.id),
       (SELECT count(*) FROM message_recipients WHERE agent_id = a.id AND kind != 'bcc'),
       (SELECT count(read_ts) FROM message_recipients WHERE agent_id = a.id AND kind != 'bcc')
FROM agents a;

-- fetch_inbox(urgent_only) walks an index of the agent's high/urgent mail instead of its whole inbox.
ALTER TABLE message_recipients ADD COLUMN urgent INTEGER NOT NULL DEFAULT 0;
UPDATE message_recipients SET urgent = 1
WHERE message_id IN (SELECT id FROM messages WHERE importance IN ('high', 'urgent'));
CREATE INDEX inbox_urgent ON message_recipients (agent_id, urgent, message_id);
