-- Unique project slugs (docs/projects.md). Before this, /home/me/shop, /home/me/Shop and
-- /home/me-shop all got the slug home-me-shop. Of the projects sharing a slug, the oldest
-- (created_ts, id) keeps it; every other one gets `<slug>-<6 hex digits of its id>` (the id is
-- a hash of the human key: chalicelib/tools/projects.py distinct_slug). Deterministic, so a
-- replica that runs it again computes the same slugs.
UPDATE projects SET slug = slug || '-' || printf('%06x', id & 16777215)
WHERE EXISTS (
    SELECT 1 FROM projects AS older
    WHERE older.slug = projects.slug
      AND (older.created_ts < projects.created_ts OR (older.created_ts = projects.created_ts AND older.id < projects.id))
);

-- Archive work not yet written goes under its project's new slug (the row and its payload).
UPDATE archive_outbox SET project = coalesce(
    CASE kind
        WHEN 'message' THEN (SELECT p.slug FROM messages m JOIN projects p ON p.id = m.project_id WHERE m.id = archive_outbox.entity_id)
        WHEN 'agent' THEN (SELECT p.slug FROM agents a JOIN projects p ON p.id = a.project_id WHERE a.id = archive_outbox.entity_id)
        WHEN 'reservation' THEN (SELECT p.slug FROM file_reservations r JOIN projects p ON p.id = r.project_id WHERE r.id = archive_outbox.entity_id)
    END, project)
WHERE state IN ('pending', 'queued');
UPDATE archive_outbox SET payload = json_set(payload, '$.project', project)
WHERE state IN ('pending', 'queued') AND json_extract(payload, '$.project') != project;
