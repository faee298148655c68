-- What list_threads shows of a thread's first and last message, kept in its summary rows
-- (chalicelib/tools/thread_summaries.py), so listing 50 threads reads no message row: before,
-- an agent's view read the first and last message of each (100 random reads in the messages
-- table, ~30 ms at a million messages on a cold cache). A row's subject and first_ts are those of
-- its first_id, its last_ts that of its last_id; a view takes them from the row with the least
-- first_id and the one with the greatest last_id, like first_id and last_id.
ALTER TABLE thread_summaries ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE thread_summaries ADD COLUMN first_ts TEXT NOT NULL DEFAULT '';
ALTER TABLE thread_summaries ADD COLUMN last_ts TEXT NOT NULL DEFAULT '';

-- The rows written before this migration: one pass, lookups by primary key (49 s at a million
-- messages, where 0019 took 495 s). A message already purged (on Turso a row can lag a purge
-- made through another replica) leaves ''.
UPDATE thread_summaries SET
    subject = coalesce((SELECT subject FROM messages WHERE id = first_id), ''),
    first_ts = coalesce((SELECT created_ts FROM messages WHERE id = first_id), ''),
    last_ts = coalesce((SELECT created_ts FROM messages WHERE id = last_id), '');
