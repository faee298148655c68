-- fetch_inbox's filters (unread_only, ack_pending_only, urgent_only and their combinations) and
-- the attention views (chalicelib/tools/mailbox.py) walk partial indexes that hold only the rows
-- they want, newest or oldest first, instead of the agent's whole inbox: bounded steps at any
-- inbox size. A partial index only costs a write when its row matches (an urgent, unread or
-- ack-pending recipient row), and marking read or acknowledging removes the row from it.

-- Whether the message asks for an acknowledgement, kept beside the recipient's ack_ts (a partial
-- index can only test its own table's columns). Set once by store_recipients; messages never change.
ALTER TABLE message_recipients ADD COLUMN ack_required INTEGER NOT NULL DEFAULT 0;
UPDATE message_recipients SET ack_required = 1 WHERE message_id IN (SELECT id FROM messages WHERE ack_required);

-- 0013's inbox_urgent held every row (urgent 0 or 1); only the urgent ones are ever looked up.
DROP INDEX inbox_urgent;
CREATE INDEX inbox_urgent ON message_recipients (agent_id, message_id) WHERE urgent = 1;
CREATE INDEX inbox_unread ON message_recipients (agent_id, message_id) WHERE read_ts IS NULL;
CREATE INDEX inbox_urgent_unread ON message_recipients (agent_id, message_id) WHERE urgent = 1 AND read_ts IS NULL;
CREATE INDEX inbox_ack_pending ON message_recipients (agent_id, message_id) WHERE ack_required = 1 AND ack_ts IS NULL;
