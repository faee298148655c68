-- Thread summaries kept by the write path (chalicelib/tools/thread_summaries.py), so list_threads
-- costs the same at a million messages as at ten. A thread has one view per reader: viewer 0 is
-- the whole project, an agent's id its own mail (the messages it sent or received). As in
-- message_counts, each writer (0 on embedded SQLite, a replica's id on Turso) only ever writes
-- its own rows, found by (project, thread, writer); a view is the combination of its few rows.
CREATE TABLE thread_summaries (
    id            INTEGER PRIMARY KEY,    -- new_id() (time-ordered: a new row goes at the table's end); < 0 below
    project_id    INTEGER NOT NULL REFERENCES projects (id),
    thread_id     TEXT NOT NULL,
    viewer_id     INTEGER NOT NULL,       -- 0: the whole project; else the agent whose mail this is
    writer        INTEGER NOT NULL,
    messages      INTEGER NOT NULL,       -- summed over the view's rows
    first_id      INTEGER NOT NULL,       -- the view's first message: min over its rows
    last_id       INTEGER NOT NULL,       -- its latest message: max over its rows
    -- Who appears in the view (sender, to, cc: never bcc) and where first, as a JSON list of
    -- [agent_id, first message id, rank (0 sender, 1 to or notice, 2 cc)]: min over its rows.
    participants  TEXT NOT NULL
);
-- list_threads walks this newest first and stops after `limit` threads (covering: no row reads).
CREATE INDEX thread_summaries_recent ON thread_summaries (project_id, viewer_id, last_id, thread_id);
CREATE INDEX thread_summaries_by_thread ON thread_summaries (project_id, thread_id, viewer_id);

-- The mail stored before this migration (writer -1: written once, here). Ids are negative, so
-- never a new_id(), and numbered in key order: the same rows on every replica that runs this.
-- Who sees a message (its sender and every recipient, any kind; viewer 0: everyone), who appears
-- in it at which rank (the sender once, even if also a recipient), and where each first appears.
INSERT INTO thread_summaries (id, project_id, thread_id, viewer_id, writer, messages, first_id, last_id, participants)
WITH seen AS (
    SELECT m.id AS message_id, m.project_id, m.thread_id, v.viewer_id FROM messages m
    JOIN (SELECT id AS message_id, 0 AS viewer_id FROM messages UNION SELECT id, sender_id FROM messages
          UNION SELECT message_id, agent_id FROM message_recipients) v ON v.message_id = m.id
),
appears AS (
    SELECT message_id, agent_id, min(rank) AS rank
    FROM (SELECT id AS message_id, sender_id AS agent_id, 0 AS rank FROM messages
          UNION ALL SELECT message_id, agent_id, CASE kind WHEN 'cc' THEN 2 ELSE 1 END FROM message_recipients
          WHERE kind != 'bcc')
    GROUP BY message_id, agent_id
),
firsts AS (
    SELECT s.project_id, s.thread_id, s.viewer_id, a.agent_id, min(s.message_id) AS first_id
    FROM seen s JOIN appears a ON a.message_id = s.message_id
    GROUP BY s.project_id, s.thread_id, s.viewer_id, a.agent_id
),
lists AS (
    SELECT f.project_id, f.thread_id, f.viewer_id, json_group_array(json_array(f.agent_id, f.first_id, a.rank)) AS participants
    FROM firsts f JOIN appears a ON a.message_id = f.first_id AND a.agent_id = f.agent_id
    GROUP BY f.project_id, f.thread_id, f.viewer_id
),
views AS (
    SELECT project_id, thread_id, viewer_id, count(*) AS messages, min(message_id) AS first_id, max(message_id) AS last_id
    FROM seen GROUP BY project_id, thread_id, viewer_id
)
SELECT -row_number() OVER (ORDER BY v.project_id, v.thread_id, v.viewer_id), v.project_id, v.thread_id, v.viewer_id, -1,
       v.messages, v.first_id, v.last_id, l.participants
FROM views v JOIN lists l ON l.project_id = v.project_id AND l.thread_id = v.thread_id AND l.viewer_id = v.viewer_id;
