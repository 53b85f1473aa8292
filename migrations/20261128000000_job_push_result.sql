-- What the push task did to each ref of the target ([{refname, outcome, reason}]), and
-- refs that are not branches or tags and so were not pushed.
ALTER TABLE jobs ADD COLUMN push_result jsonb
    CHECK (push_result IS NULL OR jsonb_typeof(push_result) = 'object');
