-- The first path a secret was found at, kept beside its locations so job reads do not
-- have to dig it out of the JSON on every request.
ALTER TABLE secrets_found
    ADD COLUMN file_path text GENERATED ALWAYS AS (locations -> 0 ->> 'path') STORED;
