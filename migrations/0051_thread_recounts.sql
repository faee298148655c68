-- A thread a retention purge cut is remade from its remaining messages a part at a time
-- (chalicelib/tools/thread_summaries.py: recount_some): all of it in one transaction held the
-- one writer 0.32 s at 20,000 messages, more with the thread. The remade summary rows grow here,
-- shaped as thread_summaries', and replace the thread's rows once the last part is read; what
-- they hold so far is recorded with the thread: its messages from low_id (inclusive) to high_id
-- (exclusive). Both NULL: not begun.
CREATE TABLE thread_recounts (
    id            INTEGER PRIMARY KEY,
    project_id    INTEGER NOT NULL,
    thread_id     TEXT NOT NULL,
    viewer_id     INTEGER NOT NULL,
    writer        INTEGER NOT NULL,
    messages      INTEGER NOT NULL,
    first_id      INTEGER NOT NULL,
    last_id       INTEGER NOT NULL,
    participants  TEXT NOT NULL,
    subject       TEXT,
    first_ts      TEXT,
    last_ts       TEXT
);
CREATE INDEX thread_recounts_by_thread ON thread_recounts (project_id, thread_id, writer, viewer_id);
ALTER TABLE threads_to_recount ADD COLUMN low_id INTEGER;
ALTER TABLE threads_to_recount ADD COLUMN high_id INTEGER;
