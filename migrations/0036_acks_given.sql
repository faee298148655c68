-- When the newest acknowledgement was given, of every project or of one (unified_inbox's
-- newest_ack_ts): what a live page of the web UI polls, with its newest message id, so that its
-- ack marks follow acknowledgements without re-reading its rows. Only acknowledged rows are in
-- these indexes: a message sent costs them nothing, an acknowledgement one entry each.
CREATE INDEX acks_given ON message_recipients (ack_ts) WHERE ack_ts IS NOT NULL;
CREATE INDEX acks_given_by_agent ON message_recipients (agent_id, ack_ts) WHERE ack_ts IS NOT NULL;
