-- Contacts are archived too (projects/{slug}/contacts/{id}.json: docs/archive.md), so a restore
-- keeps who approved whom: each row gets the version of its last change, as the other archived
-- rows have (chalicelib/archive/outbox.py new_versions).
ALTER TABLE contacts ADD COLUMN archive_version INTEGER;
