-- DeployGuard schema, first version.
-- Rules every later migration keeps: expand first, contract in a later release (an older
-- binary must keep working beside a newer schema during a rolling upgrade); never a
-- column that could hold a full secret value or a credential.

-- Keeps updated_at honest without every UPDATE having to remember it.
CREATE FUNCTION set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- ---------------------------------------------------------------------------------------
-- jobs: one scan → select → clean → push run over one source repository.
-- ---------------------------------------------------------------------------------------
CREATE TABLE jobs (
    id                    uuid PRIMARY KEY,
    owner_id              text NOT NULL CHECK (char_length(owner_id) BETWEEN 1 AND 255),
    status                text NOT NULL DEFAULT 'pending' CHECK (status IN (
                              'pending', 'scanning', 'awaiting_selection', 'completed',
                              'cleaning', 'cleaned', 'pushing', 'pushed',
                              'failed', 'cancelled', 'expired')),
    stage                 text CHECK (char_length(stage) <= 200),
    progress_percent      smallint NOT NULL DEFAULT 0 CHECK (progress_percent BETWEEN 0 AND 100),

    source_platform       text NOT NULL CHECK (source_platform IN (
                              'github', 'gitlab', 'bitbucket', 'azure_devops', 'generic')),
    source_url            text NOT NULL CHECK (char_length(source_url) BETWEEN 1 AND 2048),
    -- NULL: every branch and tag.
    source_branch         text CHECK (char_length(source_branch) BETWEEN 1 AND 255),
    -- An id in the external credential service; the credential itself is never stored.
    source_credentials_id text CHECK (char_length(source_credentials_id) BETWEEN 1 AND 255),

    target_platform       text CHECK (target_platform IN (
                              'github', 'gitlab', 'bitbucket', 'azure_devops', 'generic')),
    target_url            text CHECK (char_length(target_url) BETWEEN 1 AND 2048),
    target_credentials_id text CHECK (char_length(target_credentials_id) BETWEEN 1 AND 255),
    force_push            boolean NOT NULL DEFAULT false,

    -- AMQP message priority (0 lowest … 9 highest).
    priority              smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),

    -- A stable machine-readable code and a human message; never a secret or credential.
    error_code            text CHECK (char_length(error_code) <= 100),
    error                 text CHECK (char_length(error) <= 4000),

    total_secrets_found   integer NOT NULL DEFAULT 0 CHECK (total_secrets_found >= 0),
    secrets_selected      integer NOT NULL DEFAULT 0 CHECK (secrets_selected >= 0),
    secrets_cleaned       integer NOT NULL DEFAULT 0 CHECK (secrets_cleaned >= 0),
    blobs_scanned         bigint  NOT NULL DEFAULT 0 CHECK (blobs_scanned >= 0),
    blobs_skipped         bigint  NOT NULL DEFAULT 0 CHECK (blobs_skipped >= 0),
    commits_rewritten     bigint  NOT NULL DEFAULT 0 CHECK (commits_rewritten >= 0),

    callback_url          text CHECK (char_length(callback_url) BETWEEN 1 AND 2048),

    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    started_at            timestamptz,
    finished_at           timestamptz,
    expires_at            timestamptz NOT NULL,

    CHECK (finished_at IS NULL OR started_at IS NULL OR finished_at >= started_at),
    CHECK (expires_at > created_at),
    -- A failed job always says why.
    CHECK (status <> 'failed' OR error IS NOT NULL)
);

CREATE TRIGGER jobs_set_updated_at BEFORE UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- "My jobs, newest first", keyset-paginated on (created_at, id).
CREATE INDEX jobs_owner_created_idx ON jobs (owner_id, created_at DESC, id DESC);
-- "My jobs with status X, newest first".
CREATE INDEX jobs_owner_status_created_idx ON jobs (owner_id, status, created_at DESC, id DESC);
-- Admin panel: all jobs by status, newest first.
CREATE INDEX jobs_status_created_idx ON jobs (status, created_at DESC, id DESC);
-- Expiry sweep: only rows that can still expire.
CREATE INDEX jobs_expiry_idx ON jobs (expires_at) WHERE status <> 'expired';
-- Stuck-job recovery: jobs a worker holds.
CREATE INDEX jobs_in_progress_idx ON jobs (updated_at)
    WHERE status IN ('pending', 'scanning', 'cleaning', 'pushing');

-- ---------------------------------------------------------------------------------------
-- secrets_found: one row per distinct (value, rule) in a job, with its occurrences.
-- Holds a preview and a keyed hash only; the full value lives solely in the encrypted
-- scan report in object storage.
-- ---------------------------------------------------------------------------------------
CREATE TABLE secrets_found (
    id                    uuid PRIMARY KEY,
    job_id                uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    rule_id               text NOT NULL CHECK (char_length(rule_id) BETWEEN 1 AND 200),
    secret_type           text NOT NULL CHECK (char_length(secret_type) BETWEEN 1 AND 200),
    -- First and last three characters at most ("abc…xyz"); the bound makes storing a
    -- whole value impossible by mistake.
    value_preview         text NOT NULL CHECK (char_length(value_preview) <= 16),
    -- HMAC-SHA-256 of the value under a server key, and which key (keys rotate).
    value_hash            bytea NOT NULL CHECK (octet_length(value_hash) = 32),
    hash_key_id           text NOT NULL CHECK (char_length(hash_key_id) BETWEEN 1 AND 64),
    -- [{"path", "commit", "line", "column"}, …]
    locations             jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(locations) = 'array'),
    occurrences           integer NOT NULL DEFAULT 1 CHECK (occurrences >= 1),
    confidence            text NOT NULL CHECK (confidence IN ('low', 'medium', 'high')),
    selected_for_cleaning boolean NOT NULL DEFAULT false,
    false_positive        boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),

    UNIQUE (job_id, rule_id, value_hash),
    CHECK (NOT (selected_for_cleaning AND false_positive))
);

CREATE TRIGGER secrets_found_set_updated_at BEFORE UPDATE ON secrets_found
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE INDEX secrets_found_selected_idx ON secrets_found (job_id) WHERE selected_for_cleaning;

-- ---------------------------------------------------------------------------------------
-- audit_logs: append-only trail of who did what. No job foreign key, so the trail
-- outlives the job.
-- ---------------------------------------------------------------------------------------
CREATE TABLE audit_logs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor_id    text NOT NULL CHECK (char_length(actor_id) BETWEEN 1 AND 255),
    action      text NOT NULL CHECK (char_length(action) BETWEEN 1 AND 100),
    job_id      uuid,
    client_ip   inet,
    user_agent  text CHECK (char_length(user_agent) <= 512),
    details     jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object')
);

CREATE FUNCTION audit_logs_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_logs_no_update BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();

CREATE INDEX audit_logs_occurred_idx ON audit_logs (occurred_at DESC, id DESC);
CREATE INDEX audit_logs_actor_idx ON audit_logs (actor_id, occurred_at DESC);
CREATE INDEX audit_logs_job_idx ON audit_logs (job_id, occurred_at DESC) WHERE job_id IS NOT NULL;
CREATE INDEX audit_logs_action_idx ON audit_logs (action, occurred_at DESC);

-- ---------------------------------------------------------------------------------------
-- task_results: the task-meta table. One row per task id; retries update it.
-- ---------------------------------------------------------------------------------------
CREATE TABLE task_results (
    task_id     uuid PRIMARY KEY,
    task_name   text NOT NULL CHECK (char_length(task_name) BETWEEN 1 AND 200),
    job_id      uuid REFERENCES jobs (id) ON DELETE SET NULL,
    root_id     uuid,
    parent_id   uuid,
    queue       text CHECK (char_length(queue) <= 255),
    state       text NOT NULL CHECK (state IN (
                    'pending', 'received', 'started', 'retry', 'success', 'failure',
                    'revoked', 'dead_lettered')),
    attempt     integer NOT NULL DEFAULT 1 CHECK (attempt >= 1),
    worker      text CHECK (char_length(worker) <= 255),
    received_at timestamptz,
    started_at  timestamptz,
    finished_at timestamptz,
    error       text CHECK (char_length(error) <= 4000),
    result      jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER task_results_set_updated_at BEFORE UPDATE ON task_results
    FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE INDEX task_results_job_idx ON task_results (job_id, created_at) WHERE job_id IS NOT NULL;
CREATE INDEX task_results_state_idx ON task_results (state, updated_at DESC);

-- ---------------------------------------------------------------------------------------
-- beat_runs: one row per periodic task per scheduled time. The unique key is what makes
-- a tick fire once even when two schedulers run.
-- ---------------------------------------------------------------------------------------
CREATE TABLE beat_runs (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_name     text NOT NULL CHECK (char_length(task_name) BETWEEN 1 AND 200),
    scheduled_for timestamptz NOT NULL,
    instance      text NOT NULL CHECK (char_length(instance) BETWEEN 1 AND 255),
    task_id       uuid,
    status        text NOT NULL DEFAULT 'claimed' CHECK (status IN (
                      'claimed', 'published', 'succeeded', 'failed', 'skipped')),
    error         text CHECK (char_length(error) <= 4000),
    claimed_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz,
    finished_at   timestamptz,

    UNIQUE (task_name, scheduled_for)
);

CREATE INDEX beat_runs_task_idx ON beat_runs (task_name, scheduled_for DESC);

-- ---------------------------------------------------------------------------------------
-- outbox: messages committed in the same transaction as the state they announce, then
-- published by a relay. A crash between commit and publish loses nothing.
-- ---------------------------------------------------------------------------------------
CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The task id: publishing twice is detectable downstream.
    message_id   uuid NOT NULL UNIQUE,
    job_id       uuid REFERENCES jobs (id) ON DELETE CASCADE,
    exchange     text NOT NULL CHECK (char_length(exchange) <= 255),
    routing_key  text NOT NULL CHECK (char_length(routing_key) <= 255),
    headers      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(headers) = 'object'),
    body         jsonb NOT NULL,
    priority     smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 0 AND 9),
    attempts     integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error   text CHECK (char_length(last_error) <= 4000),
    created_at   timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

-- The relay's work list: unpublished messages due now, oldest first.
CREATE INDEX outbox_pending_idx ON outbox (available_at, id) WHERE published_at IS NULL;
