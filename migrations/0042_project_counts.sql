-- get_project's counts kept by the write path (chalicelib/tools/counts.py): it summed the counter
-- rows of every agent of the project and counted its agents, a cost growing with the number of
-- agents (6.7 ms at 50,000). As message_counts: one row per (project, writer), summed.
CREATE TABLE project_counts (
    id          INTEGER PRIMARY KEY,          -- stable_id('project_counts', project_id, writer); -project_id below
    project_id  INTEGER NOT NULL REFERENCES projects (id),
    writer      INTEGER NOT NULL,             -- 0 on embedded SQLite, a replica's own id on Turso
    messages    INTEGER NOT NULL DEFAULT 0,
    agents      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX project_counts_by_project ON project_counts (project_id);

-- What each project holds now (writer -1: written once, here).
INSERT INTO project_counts (id, project_id, writer, messages, agents)
SELECT -p.id, p.id, -1,
       (SELECT count(*) FROM messages WHERE project_id = p.id),
       (SELECT count(*) FROM agents WHERE project_id = p.id)
FROM projects p;
