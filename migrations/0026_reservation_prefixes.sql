-- A reservation's literal prefix: the leading segments of its pattern without a glob character
-- (`src/api` for `src/api/*.py`, '' for `*.md`, the pattern itself when it has none). Every path
-- a pattern reserves starts with them, so conflicts are looked up by prefix through this index
-- (chalicelib/tools/reservations.py, literal_prefix) instead of comparing each path with every
-- active reservation. '' is under every prefix looked up: a row left at the default is still
-- found, only less cheaply.
ALTER TABLE file_reservations ADD COLUMN path_prefix TEXT NOT NULL DEFAULT '';
-- Up to the first glob character (all of a pattern without one) ...
UPDATE file_reservations SET path_prefix = substr(path_pattern, 1, min(
    coalesce(nullif(instr(path_pattern, '*'), 0), length(path_pattern) + 1),
    coalesce(nullif(instr(path_pattern, '?'), 0), length(path_pattern) + 1),
    coalesce(nullif(instr(path_pattern, '['), 0), length(path_pattern) + 1)
) - 1);
-- ... then, for a glob, back to the last whole segment before it.
UPDATE file_reservations SET path_prefix = rtrim(rtrim(path_prefix, replace(path_prefix, '/', '')), '/')
WHERE path_prefix != path_pattern;
CREATE INDEX file_reservations_by_prefix ON file_reservations (project_id, path_prefix) WHERE released_ts IS NULL;
