-- One project per Windows directory (docs/identity.md, "Windows paths"). A Windows key used to be
-- stored as typed, so C:\Users\me\shop, C:/Users/me/shop and c:\Users\me\shop were three projects;
-- normalize_human_key now gives one spelling: upper-case drive letter, backslashes. Here each
-- stored key takes it (separators: doubled ones too, up to eight; `.` and `..` segments SQL cannot
-- resolve, and doctor names such a key), unless a project already holds that spelling, or an
-- older one (created_ts, id) takes it: projects are never merged (their agents and mail would
-- clash); the other keeps its key and stays reachable by its slug. Slugs and ids do not change
-- (an id stays the hash of the old spelling: find_project looks keys up by human_key, hence the
-- index). Deterministic, so every replica computes the same keys.
CREATE INDEX projects_by_human_key ON projects (human_key);
-- A view, not a work table: Turso's sync cannot push rows of a table dropped before the push.
CREATE VIEW windows_keys AS
SELECT id, created_ts, upper(substr(human_key, 1, 1))
    || replace(replace(replace(replace(substr(human_key, 2), '/', '\'), '\\', '\'), '\\', '\'), '\\', '\') AS human_key
FROM projects WHERE human_key GLOB '[A-Za-z]:[\/]*';
UPDATE projects SET human_key = (SELECT w.human_key FROM windows_keys w WHERE w.id = projects.id)
WHERE id IN (
    SELECT w.id FROM windows_keys w JOIN projects p ON p.id = w.id
    WHERE p.human_key != w.human_key
      AND NOT EXISTS (SELECT 1 FROM projects holder WHERE holder.human_key = w.human_key)
      AND NOT EXISTS (
          SELECT 1 FROM windows_keys older WHERE older.human_key = w.human_key
            AND (older.created_ts < w.created_ts OR (older.created_ts = w.created_ts AND older.id < w.id))
      )
);
DROP VIEW windows_keys;
