-- Products: a named group of projects (e.g. a backend and a frontend repository), so an
-- agent can read its inbox, search and follow threads across all of them.
CREATE TABLE products (
    id           INTEGER PRIMARY KEY,         -- stable_id('product', product_key)
    product_key  TEXT NOT NULL,               -- short slug, lower case
    name         TEXT NOT NULL,
    created_ts   TEXT NOT NULL
);

-- Which projects a product groups; a project may belong to several products.
CREATE TABLE product_projects (
    id          INTEGER PRIMARY KEY,          -- stable_id('product_project', product_id, project_id)
    product_id  INTEGER NOT NULL REFERENCES products (id),
    project_id  INTEGER NOT NULL REFERENCES projects (id),
    linked_ts   TEXT NOT NULL
);
CREATE INDEX product_projects_by_product ON product_projects (product_id, project_id);
CREATE INDEX product_projects_by_project ON product_projects (project_id);
