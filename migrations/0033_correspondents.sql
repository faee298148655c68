-- Who has written to whom (chalicelib/tools/correspondents.py), kept by the write path, so the
-- `auto` contact policy's check costs a few index lookups however big the two mailboxes are
-- (it walked one of them: 133 ms at 200,000 messages each). One row per relation, never changed:
-- `to` (agent_id wrote to peer_id as to or cc), `bcc` (as bcc), `both` (the two were to/cc
-- recipients of one message; agent_id < peer_id). Notices make none. `group` rows (agent_id and
-- peer_id 0) name sets of to/cc recipients already written to together: their `both` rows exist.
CREATE TABLE correspondents (
    id        INTEGER PRIMARY KEY,    -- stable_id('correspondents', relation, agent_id, peer_id); < 0 below
    agent_id  INTEGER NOT NULL,
    peer_id   INTEGER NOT NULL,
    relation  TEXT NOT NULL
);
CREATE INDEX correspondents_by_pair ON correspondents (agent_id, peer_id, relation);

-- The mail stored before this migration. Ids are negative, so never a stable_id (a later message
-- between the same agents may add that row too: harmless), and numbered in key order: the same
-- rows on every replica that runs this.
INSERT INTO correspondents (id, agent_id, peer_id, relation)
WITH pairs AS (
    SELECT m.sender_id AS agent_id, r.agent_id AS peer_id, CASE r.kind WHEN 'bcc' THEN 'bcc' ELSE 'to' END AS relation
    FROM message_recipients r JOIN messages m ON m.id = r.message_id
    WHERE r.kind != 'notice' AND r.agent_id != m.sender_id
    UNION
    SELECT one.agent_id, two.agent_id, 'both'
    FROM message_recipients one JOIN message_recipients two ON two.message_id = one.message_id AND two.agent_id > one.agent_id
    WHERE one.kind IN ('to', 'cc') AND two.kind IN ('to', 'cc')
)
SELECT -row_number() OVER (ORDER BY agent_id, peer_id, relation), agent_id, peer_id, relation FROM pairs;
