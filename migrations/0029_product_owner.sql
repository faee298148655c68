-- The scope of the credential that created a product (a JSON list of its projects), when that
-- credential was scoped: another scope may then neither link a project into the product nor
-- rename it, even while it links nothing yet (security/scopes.py). NULL: created by an
-- unrestricted caller or before this column; then only the linked projects decide.
ALTER TABLE products ADD COLUMN owner_scope TEXT;
