-- The views of a project's mail (unified_inbox's ack_pending and to_overseer, its newest_ack_ts
-- and newest_read_ts: chalicelib/tools/overseer.py) walked 0043's indexes of the recipients'
-- project: a message of P awaiting the ack of Q's agent was in Q's view and not in P's, and an
-- ack by Q's agent on P's message did not change P's live token. Each recipient row now also
-- holds its message's project and thread, and whether its agent is a person (kind 'human'), all
-- written by store_recipients; the views walk indexes of those.
-- Costly on a big database: every recipient row is rewritten once (as 0043 did).
ALTER TABLE message_recipients ADD COLUMN message_project_id INTEGER;
ALTER TABLE message_recipients ADD COLUMN thread_id TEXT;
ALTER TABLE message_recipients ADD COLUMN human INTEGER NOT NULL DEFAULT 0;
UPDATE message_recipients SET
    message_project_id = (SELECT project_id FROM messages WHERE messages.id = message_recipients.message_id),
    thread_id = (SELECT thread_id FROM messages WHERE messages.id = message_recipients.message_id),
    human = (SELECT kind = 'human' FROM agents WHERE agents.id = message_recipients.agent_id);
-- The newest acknowledgement and first read of a project's messages (0043's served its agents'
-- only, and nothing else: replaced, so a mark costs no more than before).
DROP INDEX reads_made_by_project;
DROP INDEX acks_given_by_project;
CREATE INDEX reads_made_in_project ON message_recipients (message_project_id, read_ts) WHERE read_ts IS NOT NULL;
CREATE INDEX acks_given_in_project ON message_recipients (message_project_id, ack_ts) WHERE ack_ts IS NOT NULL;
-- Waiting for acks, of a project's messages (0043's acks_pending_by_project stays: the pending
-- acks of a project's agents, list_ack_required without agent_name).
CREATE INDEX acks_pending_in_project ON message_recipients (message_project_id, message_id) WHERE ack_required = 1 AND ack_ts IS NULL;
-- To the overseer: mail to a person (as to or cc: a bcc stays hidden in the views), of every
-- project and of one. Every project has its person, so
-- the view of all walked every project's person's inbox (60 ms at 12,000 projects) found through
-- 0032's agents_human, which nothing reads now.
DROP INDEX agents_human;
-- People by name, of every project: before any tool writes as an agent, invoke.admitted asks
-- whether that name is a person's anywhere (chalicelib/tools/agents.py refuse_people), one probe
-- of this small index, and looks closer only when it is.
CREATE INDEX agents_people ON agents (name COLLATE NOCASE) WHERE kind = 'human';
CREATE INDEX to_humans ON message_recipients (message_id) WHERE human = 1 AND kind != 'bcc';
CREATE INDEX to_humans_in_project ON message_recipients (message_project_id, message_id) WHERE human = 1 AND kind != 'bcc';
-- A thread read as an agent (summarize_thread, get_thread: chalicelib/tools/messages.py
-- seen_in_thread) walked the whole thread testing each message for the agent (214 ms at 150,000
-- messages for an agent cc'd once): now the agent's own rows of the thread, received and sent.
CREATE INDEX inbox_by_thread ON message_recipients (agent_id, message_project_id, thread_id, message_id);
CREATE INDEX messages_by_sender_thread ON messages (sender_id, project_id, thread_id, id);
