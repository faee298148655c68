-- list_threads reads a page of threads from one index, side by side, and no message row
-- (chalicelib/tools/thread_summaries.py: newest). Before, an agent's view read each listed
-- thread's summary rows and its first and last message: ~250 pages scattered over the file for
-- 50 threads at a million messages (~20-30 ms on a cold cache).

-- What list_threads shows of the first and last message, kept in the summary rows: a row's
-- subject and first_ts are those of its first_id, its last_ts that of its last_id; a view takes
-- them from its row with the least first_id and the one with the greatest last_id.
ALTER TABLE thread_summaries ADD COLUMN subject TEXT NOT NULL DEFAULT '';
ALTER TABLE thread_summaries ADD COLUMN first_ts TEXT NOT NULL DEFAULT '';
ALTER TABLE thread_summaries ADD COLUMN last_ts TEXT NOT NULL DEFAULT '';

-- The rows written before, in one pass with lookups by primary key. A message already purged (on
-- Turso a row can lag a purge made through another replica) leaves ''. 0019's rows (writer -1)
-- become writer 0's unless their view has one: on embedded SQLite the write path then updates
-- them instead of adding a second row, so a view has one row; no replica is writer 0.
UPDATE thread_summaries SET
    subject = coalesce((SELECT subject FROM messages WHERE id = first_id), ''),
    first_ts = coalesce((SELECT created_ts FROM messages WHERE id = first_id), ''),
    last_ts = coalesce((SELECT created_ts FROM messages WHERE id = last_id), ''),
    writer = CASE WHEN writer = -1 AND NOT EXISTS (
        SELECT 1 FROM thread_summaries o WHERE o.project_id = thread_summaries.project_id
        AND o.thread_id = thread_summaries.thread_id AND o.viewer_id = thread_summaries.viewer_id AND o.writer = 0
    ) THEN 0 ELSE writer END;

-- A view's newest threads with everything list_threads shows of them (covering: no row reads).
DROP INDEX thread_summaries_recent;
CREATE INDEX thread_summaries_newest ON thread_summaries
    (project_id, viewer_id, last_id, thread_id, writer, messages, first_id, subject, first_ts, last_ts, participants);
-- The write path finds its own rows of a thread (project, thread, writer) without reading the
-- rows of every other view and writer.
DROP INDEX thread_summaries_by_thread;
CREATE INDEX thread_summaries_by_thread ON thread_summaries (project_id, thread_id, writer, viewer_id);
-- The rows a view has beside writer 0's: on embedded SQLite only views that had rows of both.
CREATE INDEX thread_summaries_shared ON thread_summaries (project_id, thread_id, viewer_id, writer) WHERE writer != 0;
