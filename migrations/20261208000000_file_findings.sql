-- Whole files a scan found ([{id, path, kind, size, blob, commit, ...}]: key stores,
-- private key files, .env files...), the largest blobs of the history
-- ([{blob, size, path, commit}]), what of them is selected for the clean
-- ({paths, blob_ids, strip_blobs_bigger_than}), and the clean's report (first changed
-- commits, commit map, what is left to do).
ALTER TABLE jobs
    ADD COLUMN file_findings jsonb NOT NULL DEFAULT '[]'
        CHECK (jsonb_typeof(file_findings) = 'array'),
    ADD COLUMN largest_blobs jsonb NOT NULL DEFAULT '[]'
        CHECK (jsonb_typeof(largest_blobs) = 'array'),
    ADD COLUMN file_selection jsonb
        CHECK (file_selection IS NULL OR jsonb_typeof(file_selection) = 'object'),
    ADD COLUMN clean_report jsonb
        CHECK (clean_report IS NULL OR jsonb_typeof(clean_report) = 'object');
