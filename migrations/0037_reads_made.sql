-- When the newest first read was made, of every project or of one (unified_inbox's
-- newest_read_ts): what a live page showing unread marks polls besides its newest message id and
-- newest acknowledgement, so that its marks follow reads without re-reading its rows. Only read
-- rows are in these indexes: a message sent costs them nothing, a first read one entry each.
CREATE INDEX reads_made ON message_recipients (read_ts) WHERE read_ts IS NOT NULL;
CREATE INDEX reads_made_by_agent ON message_recipients (agent_id, read_ts) WHERE read_ts IS NOT NULL;
