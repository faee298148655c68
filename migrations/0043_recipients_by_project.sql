-- The views over every agent of a project went agent by agent, a cost growing with its agents
-- (at 50,000: unified_inbox of a project 15 ms, its ack_pending view 22 ms, list_ack_required
-- without agent_name 6.5 ms). Each recipient row now holds its agent's project (store_recipients
-- writes it), and each such view walks a partial index of that project's rows
-- (chalicelib/tools/overseer.py, mailbox.py). The by-agent indexes of 0036 and 0037 served only
-- the newest read and acknowledgement of a project: replaced, so a mark costs no more than before.
ALTER TABLE message_recipients ADD COLUMN project_id INTEGER;
UPDATE message_recipients SET project_id = (SELECT project_id FROM agents WHERE agents.id = message_recipients.agent_id);
DROP INDEX reads_made_by_agent;
DROP INDEX acks_given_by_agent;
CREATE INDEX reads_made_by_project ON message_recipients (project_id, read_ts) WHERE read_ts IS NOT NULL;
CREATE INDEX acks_given_by_project ON message_recipients (project_id, ack_ts) WHERE ack_ts IS NOT NULL;
CREATE INDEX acks_pending_by_project ON message_recipients (project_id, message_id) WHERE ack_required = 1 AND ack_ts IS NULL;
CREATE INDEX urgent_unread_by_project ON message_recipients (project_id, message_id) WHERE urgent = 1 AND read_ts IS NULL;
