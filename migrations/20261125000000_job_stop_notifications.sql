-- Workers stop a job's running task as soon as the job is cancelled, expires or fails
-- elsewhere: the change is announced on a notification channel (payload: the job id).
CREATE FUNCTION jobs_notify_stopped() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('deployguard_job_stopped', NEW.id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_notify_stopped AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('cancelled', 'expired', 'failed'))
    EXECUTE FUNCTION jobs_notify_stopped();
