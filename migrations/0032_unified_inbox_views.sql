-- unified_inbox's views (chalicelib/tools/overseer.py), what the web UI's inbox tabs show: each
-- walks a partial index holding only the rows it wants, newest first, so a page costs the same
-- however much other mail there is. A partial index costs a write only when its row matches.

-- Urgent: high and urgent messages, across projects and of one project.
CREATE INDEX messages_urgent ON messages (id) WHERE importance IN ('high', 'urgent');
CREATE INDEX messages_urgent_by_project ON messages (project_id, id) WHERE importance IN ('high', 'urgent');
-- Waiting for acks: a recipient's acknowledgement not given yet, by message (0020's
-- inbox_ack_pending is by recipient: one project's view walks that, agent by agent).
CREATE INDEX acks_pending ON message_recipients (message_id) WHERE ack_required = 1 AND ack_ts IS NULL;
-- To the overseer: the people (agents rows of kind 'human'), whose inboxes are then read newest first.
CREATE INDEX agents_human ON agents (project_id) WHERE kind = 'human';
