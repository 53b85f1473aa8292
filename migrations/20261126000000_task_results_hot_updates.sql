-- task_results is written at least twice per task (the claim, then the outcome) and once
-- per heartbeat. The index on (state, updated_at) changed with every one of those writes,
-- so none could be a HOT update, and no query uses it. Room left in each page lets the
-- outcome and the heartbeats land next to the claim.
DROP INDEX IF EXISTS task_results_state_idx;
ALTER TABLE task_results SET (fillfactor = 80);
