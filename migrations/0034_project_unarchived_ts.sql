-- When an archived project was last made active again. With archived_ts it dates the project's
-- state, which its project.json carries (docs/archive.md, "Order of project.json"), so an archive
-- writer that gets two updates of that file out of order (cloud mode: an entry whose send failed,
-- or one back from the dead-letter queue, arrives after a newer one) keeps the newer. NULL: not
-- unarchived since this column exists.
ALTER TABLE projects ADD COLUMN unarchived_ts TEXT;
