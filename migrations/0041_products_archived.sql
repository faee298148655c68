-- Products are archived too (products/{product_key}.json: docs/archive.md), so a restore keeps
-- them and their projects: each row gets the version of its last change (archive/outbox.py).
ALTER TABLE products ADD COLUMN archive_version INTEGER;
