-- list_threads walks thread_summaries_newest newest first (chalicelib/tools/thread_summaries.py).
-- Since 0021 that index held every column list_threads shows, participants and all: a copy of
-- each row, rewritten by every send (one per view: the project, the sender, each recipient), so
-- a send wrote each of its views twice, and checkpointed both (bench/README.md: "What a send
-- writes"). Now it holds the walk's keys, and a listed thread's row is read from the table (a
-- page each, where the covering walk read a few pages for 50 threads; the OS page cache holds
-- them on a server that has been running).
DROP INDEX thread_summaries_newest;
CREATE INDEX thread_summaries_newest ON thread_summaries (project_id, viewer_id, last_id);
