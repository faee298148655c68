-- All the mail the server holds, kept by the write path (chalicelib/tools/counts.py): a search's
-- choice to keep to its project (tools/search.py _scope) summed every project's counter rows for
-- it, 3.3 ms a search at 50,000 projects (bench/projects_scale.py). One row per writer, as project_counts.
CREATE TABLE mail_totals (
    id        INTEGER PRIMARY KEY,    -- stable_id('mail_totals', writer); -1 below
    writer    INTEGER NOT NULL,       -- 0 on embedded SQLite, a replica's own id on Turso
    messages  INTEGER NOT NULL DEFAULT 0
);

-- What the projects hold now (writer -1: written once, here).
INSERT INTO mail_totals (id, writer, messages) SELECT -1, -1, coalesce(sum(messages), 0) FROM project_counts;
