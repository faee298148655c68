-- The list tools page by their order (chalicelib/tools/paging.py): each page starts where the
-- previous one ended, read from an index in that order, not from a sort of the whole list.
CREATE INDEX projects_oldest_first ON projects (created_ts, slug);
CREATE INDEX agents_by_name ON agents (project_id, name COLLATE NOCASE, id);
CREATE INDEX file_reservations_oldest_first ON file_reservations (project_id, created_ts, id);
-- Active ones (the default), without walking the released ones kept until retention drops them.
CREATE INDEX file_reservations_unreleased ON file_reservations (project_id, created_ts, id) WHERE released_ts IS NULL;
