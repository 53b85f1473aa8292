-- The REST API: outcomes in the audit trail, idempotency keys for retried CI steps, and
-- signed callbacks when a job settles.

-- What came of an audited action. Existing rows were all successes.
ALTER TABLE audit_logs
    ADD COLUMN outcome text NOT NULL DEFAULT 'success'
        CHECK (outcome IN ('success', 'rejected', 'failed'));

-- ---------------------------------------------------------------------------------------
-- idempotency_keys: one row per (caller, Idempotency-Key). A retried POST with the same
-- key and the same request gets the first answer again instead of acting twice.
-- ---------------------------------------------------------------------------------------
CREATE TABLE idempotency_keys (
    owner_id     text NOT NULL CHECK (char_length(owner_id) BETWEEN 1 AND 255),
    key          text NOT NULL CHECK (char_length(key) BETWEEN 1 AND 255),
    -- SHA-256 of method, path and body: the same key with another request is an error.
    fingerprint  bytea NOT NULL CHECK (octet_length(fingerprint) = 32),
    -- NULL while the first request is still being answered.
    status_code  smallint CHECK (status_code BETWEEN 100 AND 599),
    response     jsonb,
    location     text CHECK (char_length(location) <= 2048),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, key)
);

CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

-- ---------------------------------------------------------------------------------------
-- job_callbacks: a POST owed to a job's callback_url, written by the same statement that
-- moves the job into a settled state (whoever moves it: API, worker or beat), and
-- delivered with retries by the API.
-- ---------------------------------------------------------------------------------------
CREATE TABLE job_callbacks (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id           uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    url              text NOT NULL CHECK (char_length(url) BETWEEN 1 AND 2048),
    event            text NOT NULL CHECK (char_length(event) BETWEEN 1 AND 100),
    payload          jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    abandoned_at     timestamptz,
    last_status      smallint,
    last_error       text CHECK (char_length(last_error) <= 1000),
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- The delivery loop's work list.
CREATE INDEX job_callbacks_due_idx ON job_callbacks (next_attempt_at, id)
    WHERE delivered_at IS NULL AND abandoned_at IS NULL;
CREATE INDEX job_callbacks_job_idx ON job_callbacks (job_id);

CREATE FUNCTION jobs_queue_callback() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_callbacks (job_id, url, event, payload)
    VALUES (NEW.id, NEW.callback_url, 'job.' || NEW.status, jsonb_build_object(
        'event', 'job.' || NEW.status,
        'occurred_at', now(),
        'job', jsonb_build_object(
            'id', NEW.id,
            'status', NEW.status,
            'error_code', NEW.error_code,
            'error', NEW.error,
            'total_secrets_found', NEW.total_secrets_found,
            'secrets_selected', NEW.secrets_selected,
            'secrets_cleaned', NEW.secrets_cleaned,
            'created_at', NEW.created_at,
            'finished_at', NEW.finished_at)));
    PERFORM pg_notify('deployguard_callbacks', NEW.id::text);
    RETURN NULL;
END;
$$;

-- Settled: the job waits for its caller (awaiting_selection, cleaned) or is over.
CREATE TRIGGER jobs_queue_callback AFTER UPDATE OF status ON jobs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.callback_url IS NOT NULL
          AND NEW.status IN ('awaiting_selection', 'completed', 'cleaned', 'pushed',
                             'failed', 'cancelled', 'expired'))
    EXECUTE FUNCTION jobs_queue_callback();
