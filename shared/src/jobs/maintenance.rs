//! The queries of the periodic tasks: expiring jobs past their time, and telling which
//! stored objects still belong to a live job.

use sqlx::PgPool;
use uuid::Uuid;

/// Who the audit trail names for what the periodic tasks do.
pub const SYSTEM_ACTOR: &str = "system:beat";

/// A job just expired, with the status it had.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Expired {
    pub id: Uuid,
    pub previous_status: String,
}

/// Expires up to `batch` jobs past their `expires_at`, earliest first, in one statement:
/// status `expired` (a running task hears of it through the stop notification), an
/// audit row each, and their unpublished messages dropped. Jobs another transaction
/// holds are left for the next batch.
pub async fn expire_due(db: &PgPool, batch: i64) -> Result<Vec<Expired>, sqlx::Error> {
    sqlx::query_as::<_, Expired>(
        "WITH due AS (
            SELECT id, status FROM jobs
            WHERE status <> 'expired' AND expires_at <= now()
            ORDER BY expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
         ), expired AS (
            UPDATE jobs j SET status = 'expired', stage = NULL,
                   finished_at = coalesce(j.finished_at, greatest(now(), j.started_at))
            FROM due WHERE j.id = due.id
            RETURNING j.id, due.status AS previous_status
         ), audited AS (
            INSERT INTO audit_logs (actor_id, action, job_id, details, outcome)
            SELECT $2, 'job.expire', id, jsonb_build_object('previous_status', previous_status),
                   'success'
            FROM expired
         ), unstaged AS (
            UPDATE outbox SET published_at = now()
            WHERE job_id IN (SELECT id FROM expired) AND published_at IS NULL
         )
         SELECT id, previous_status FROM expired",
    )
    .bind(batch)
    .bind(SYSTEM_ACTOR)
    .fetch_all(db)
    .await
}

/// Of `ids`, the jobs whose stored objects must stay: those that exist and are neither
/// expired nor cancelled.
pub async fn live_jobs(db: &PgPool, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT id FROM jobs WHERE id = ANY($1) AND status NOT IN ('expired', 'cancelled')",
    )
    .bind(ids)
    .fetch_all(db)
    .await
}

/// A job whose task is not running and will not run by itself: queued long ago and
/// never picked up (a message lost to a purge), or begun by a worker that has not been
/// heard of since (its heartbeat stopped and its message was not redelivered).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stuck {
    pub id: Uuid,
    pub status: String,
    pub owner_id: String,
    pub priority: i16,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// How many times it was requeued before in its present status.
    pub requeued: i64,
}

/// Up to `limit` stuck jobs, longest stuck first: queued (`pending`, or stage `queued`)
/// for more than `queued_secs` with no task activity since, or working with no job
/// update and no task heartbeat for more than `silent_secs`.
pub async fn stuck_jobs(
    db: &PgPool,
    queued_secs: f64,
    silent_secs: f64,
    limit: i64,
) -> Result<Vec<Stuck>, sqlx::Error> {
    sqlx::query_as::<_, Stuck>(
        "SELECT j.id, j.status, j.owner_id, j.priority, j.updated_at,
                (SELECT count(*) FROM audit_logs a
                 WHERE a.job_id = j.id AND a.action = 'job.requeue'
                   AND a.details->>'status' = j.status) AS requeued
         FROM jobs j
         WHERE j.status IN ('pending', 'scanning', 'cleaning', 'pushing')
           AND (
             ((j.status = 'pending' OR j.stage = 'queued')
              AND j.updated_at < now() - make_interval(secs => $1)
              AND NOT EXISTS (SELECT 1 FROM task_results t WHERE t.job_id = j.id
                              AND t.updated_at > now() - make_interval(secs => $1)))
             OR
             (j.status <> 'pending' AND j.stage IS DISTINCT FROM 'queued'
              AND j.updated_at < now() - make_interval(secs => $2)
              AND NOT EXISTS (SELECT 1 FROM task_results t WHERE t.job_id = j.id
                              AND t.updated_at > now() - make_interval(secs => $2)))
           )
         ORDER BY j.updated_at
         LIMIT $3",
    )
    .bind(queued_secs)
    .bind(silent_secs)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Queues `stuck`'s task again: stage `queued`, `task` staged in the outbox for the
/// relay to publish at once, an audit row (`job.requeue`). False when the job changed
/// since it was found stuck.
pub async fn requeue(
    db: &PgPool,
    stuck: &Stuck,
    task: &crate::queue::TaskMessage,
) -> Result<bool, sqlx::Error> {
    let staged = crate::queue::outbox::Staged::new(task)
        .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
    let moved: Option<Uuid> = sqlx::query_scalar(
        "WITH moved AS (
            UPDATE jobs SET stage = 'queued', task_id = $4
            WHERE id = $1 AND status = $2 AND updated_at = $3
            RETURNING id
         ), staged AS (
            INSERT INTO outbox (message_id, job_id, exchange, routing_key, headers, body,
                                priority, available_at)
            SELECT $4, id, $5, $6, $7, $8, $9, now() FROM moved
         ), audited AS (
            INSERT INTO audit_logs (actor_id, action, job_id, details, outcome)
            SELECT $10, 'job.requeue', id,
                   jsonb_build_object('status', $2::text, 'requeued_before', $11::bigint),
                   'success'
            FROM moved
         )
         SELECT id FROM moved",
    )
    .bind(stuck.id)
    .bind(&stuck.status)
    .bind(stuck.updated_at)
    .bind(staged.message_id)
    .bind(staged.exchange)
    .bind(staged.routing_key)
    .bind(&staged.headers)
    .bind(&staged.body)
    .bind(staged.priority)
    .bind(SYSTEM_ACTOR)
    .bind(stuck.requeued)
    .fetch_optional(db)
    .await?;
    Ok(moved.is_some())
}

/// Fails a stuck job with `code` and `reason` (and an audit row, `job.fail`). False
/// when the job changed since it was found stuck.
pub async fn fail_stuck(
    db: &PgPool,
    stuck: &Stuck,
    code: &str,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let failed: Option<Uuid> = sqlx::query_scalar(
        "WITH failed AS (
            UPDATE jobs SET status = 'failed', stage = NULL, error_code = $4, error = $5,
                   finished_at = greatest(now(), started_at)
            WHERE id = $1 AND status = $2 AND updated_at = $3
            RETURNING id
         ), audited AS (
            INSERT INTO audit_logs (actor_id, action, job_id, details, outcome)
            SELECT $6, 'job.fail', id, jsonb_build_object('error_code', $4::text), 'success'
            FROM failed
         )
         SELECT id FROM failed",
    )
    .bind(stuck.id)
    .bind(&stuck.status)
    .bind(stuck.updated_at)
    .bind(code)
    .bind(reason)
    .bind(SYSTEM_ACTOR)
    .fetch_optional(db)
    .await?;
    Ok(failed.is_some())
}
