-- Retention's purge deletes a project's old messages, and the git archive keeps their files
-- (append-only history, docs/retention.md). purged_before_id is the id below which the
-- project has no message left because purge deleted them: `archive verify` expects the
-- archive's files of missing messages below it instead of calling them unexpected.
ALTER TABLE projects ADD COLUMN purged_before_id INTEGER;
