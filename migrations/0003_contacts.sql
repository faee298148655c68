-- Contacts, contact policies, and the agent and project lifecycle (docs/contacts.md).

-- Who may write to an agent: open | auto | contacts_only | block_all.
ALTER TABLE agents ADD COLUMN contact_policy TEXT NOT NULL DEFAULT 'auto';
-- A retired agent neither sends nor receives; NULL while active.
ALTER TABLE agents ADD COLUMN retired_ts TEXT;
-- An archived project is read-only; NULL while active.
ALTER TABLE projects ADD COLUMN archived_ts TEXT;

-- message_recipients.kind may now also be 'notice': a system notice (e.g. a contact
-- request) delivered whatever the recipient's policy, and never counted as conversation.

-- One row per pair of agents (possibly of different projects), whoever asked first.
CREATE TABLE contacts (
    id            INTEGER PRIMARY KEY,        -- stable_id('contact', lower agent id, higher agent id)
    requester_id  INTEGER NOT NULL REFERENCES agents (id),
    target_id     INTEGER NOT NULL REFERENCES agents (id),
    status        TEXT NOT NULL,              -- pending | approved | denied
    reason        TEXT NOT NULL DEFAULT '',
    ttl_seconds   INTEGER NOT NULL,           -- how long an approval (or denial) lasts
    requested_ts  TEXT NOT NULL,
    responded_ts  TEXT,
    expires_ts    TEXT NOT NULL               -- the request, approval or denial lapses then
);
CREATE INDEX contacts_by_requester ON contacts (requester_id);
CREATE INDEX contacts_by_target ON contacts (target_id);
