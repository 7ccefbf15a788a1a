-- How each definition was last registered: {"via": "builtin" | "file" | "api" | "program",
-- "client": the API's peer, "at": ms since the epoch, "origin"}. NULL for definitions stored
-- before baton recorded it.
ALTER TABLE workflows ADD COLUMN provenance JSONB;
ALTER TABLE workflows
    ADD COLUMN registered_via TEXT GENERATED ALWAYS AS (provenance->>'via') STORED;
