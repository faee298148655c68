-- Attachments (docs/attachments.md): a message's files, as a JSON array of
-- {"name", "media_type", "size", "sha256"} (NULL: none). The content is stored once per
-- SHA-256 outside the database (a local directory, or S3); the message only names it, so the
-- inbox renders it without a join and the archive copies it as it is.
ALTER TABLE messages ADD COLUMN attachments TEXT;
