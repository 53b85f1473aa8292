-- The message allowed to run a job's current task. Set when a task is queued (create,
-- clean, push) and when requeue_stuck_jobs queues it again; a worker starts the job's
-- work only for that message (or for any, where it is NULL), so a superseded copy of
-- the task is skipped instead of running beside its replacement.
ALTER TABLE jobs ADD COLUMN task_id uuid;
