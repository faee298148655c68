-- How many messages each writer purged (tools/counts.py, retention): with mail_totals' messages,
-- a stamp that changes whenever any message is stored or purged. A Turso replica's search index
-- compared every id's checksum with the replica's to know whether it had to catch up, a scan of
-- the messages at every search (~600 ms at a million on Turso's engine; store/search_index.py).
ALTER TABLE mail_totals ADD COLUMN purged INTEGER NOT NULL DEFAULT 0;
