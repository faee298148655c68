-- Collecting attachment content no message names (docs/attachments.md, "Unused content").
-- attachment_refs: which messages name which content, so the collector asks an index instead
-- of reading every message's JSON. Written with each message (tools/attachment_refs.py) and
-- deleted with it (purge). Existing mail gets negative ids here (the application's are positive).
CREATE TABLE attachment_refs (
    id          INTEGER PRIMARY KEY,
    sha256      TEXT NOT NULL,
    message_id  INTEGER NOT NULL
);
CREATE INDEX attachment_refs_by_sha ON attachment_refs (sha256);
CREATE INDEX attachment_refs_by_message ON attachment_refs (message_id);
INSERT INTO attachment_refs (id, sha256, message_id)
SELECT -row_number() OVER (ORDER BY m.id, a.key), json_extract(a.value, '$.sha256'), m.id
FROM messages m, json_each(m.attachments) a WHERE m.attachments IS NOT NULL;

-- Content the collector found unnamed and old: deleted ATTACHMENT_DELETE_DELAY_SECONDS after
-- condemned_ts unless a message names it again first.
CREATE TABLE attachment_condemned (
    id            INTEGER PRIMARY KEY,       -- new_id()
    sha256        TEXT NOT NULL,
    condemned_ts  TEXT NOT NULL
);
CREATE INDEX attachment_condemned_by_sha ON attachment_condemned (sha256);
CREATE INDEX attachment_condemned_by_time ON attachment_condemned (condemned_ts);
