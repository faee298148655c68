-- Threads a retention purge cut, whose summaries (thread_summaries) are to be made again from
-- their remaining messages: written with the purge's own chunk, recounted once at the end of
-- the run (a chunk of a long thread used to recount it whole each time), and, if the run
-- stopped before, by the next one. id: stable_id('thread_to_recount', project_id, thread_id).
CREATE TABLE threads_to_recount (
    id INTEGER PRIMARY KEY,
    project_id INTEGER NOT NULL,
    thread_id TEXT NOT NULL
);
