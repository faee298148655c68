-- Contact requests to one agent in the last hour (chalicelib/tools/contacts.py refuse_flood,
-- CONTACT_REQUESTS_PER_TARGET_PER_HOUR): the per-project budget alone let every new project
-- put its own 300 notices an hour into one inbox. This index also serves 0003's lookups by target.
DROP INDEX contacts_by_target;
CREATE INDEX contacts_to_target ON contacts (target_id, requested_ts);
