//! The queries of the periodic tasks: expiring jobs past their time, and telling which
//! stored objects still belong to a live job.

use sqlx::PgPool;
use uuid::Uuid;

use super::JobStatus;
use crate::queue::Stage;
use crate::queue::outbox::{self, Staged};

/// Who the audit trail names for what the periodic tasks do.
pub const SYSTEM_ACTOR: &str = "system:beat";

/// A job just expired, with the status it had.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Expired {
    pub id: Uuid,
    pub previous_status: JobStatus,
}

/// Expires up to `batch` jobs past their `expires_at`, earliest first, in one statement:
/// status `expired` (a running task hears of it through the stop notification), an
/// audit row each, and their unpublished messages dropped. Jobs another transaction
/// holds are left for the next batch.
pub async fn expire_due(db: &PgPool, batch: i64) -> Result<Vec<Expired>, sqlx::Error> {
    // The expiry index is partial (`WHERE status <> 'expired'`): named literally.
    let sql = format!(
        "WITH due AS (
            SELECT id, status FROM jobs
            WHERE status <> {expired} AND expires_at <= now()
            ORDER BY expires_at
            LIMIT $1
            FOR UPDATE SKIP LOCKED
         ), expired AS (
            UPDATE jobs j SET status = $3, stage = NULL,
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
        expired = JobStatus::sql_list(&[JobStatus::Expired]),
    );
    sqlx::query_as::<_, Expired>(sqlx::AssertSqlSafe(sql))
        .bind(batch)
        .bind(SYSTEM_ACTOR)
        .bind(JobStatus::Expired)
        .fetch_all(db)
        .await
}

/// Of `ids`, the jobs whose stored objects must stay: those that exist and are neither
/// expired nor cancelled.
pub async fn live_jobs(db: &PgPool, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1) AND status <> ALL($2)")
        .bind(ids)
        .bind(&JobStatus::GONE[..])
        .fetch_all(db)
        .await
}

/// A job whose task is not running and will not run by itself: queued long ago and
/// never picked up (a message lost to a purge), or begun by a worker that has not been
/// heard of since (its heartbeat stopped and its message was not redelivered).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Stuck {
    pub id: Uuid,
    pub status: JobStatus,
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
    // The in-progress index is partial (`WHERE status IN (…)`): named literally.
    let sql = format!(
        "SELECT j.id, j.status, j.owner_id, j.priority, j.updated_at,
                (SELECT count(*) FROM audit_logs a
                 WHERE a.job_id = j.id AND a.action = 'job.requeue'
                   AND a.details->>'status' = j.status) AS requeued
         FROM jobs j
         WHERE j.status IN ({working})
           AND (
             ((j.status = $4 OR j.stage = 'queued')
              AND j.updated_at < now() - make_interval(secs => $1)
              AND NOT EXISTS (SELECT 1 FROM task_results t WHERE t.job_id = j.id
                              AND t.updated_at > now() - make_interval(secs => $1)))
             OR
             (j.status <> $4 AND j.stage IS DISTINCT FROM 'queued'
              AND j.updated_at < now() - make_interval(secs => $2)
              AND NOT EXISTS (SELECT 1 FROM task_results t WHERE t.job_id = j.id
                              AND t.updated_at > now() - make_interval(secs => $2)))
           )
         ORDER BY j.updated_at
         LIMIT $3",
        working = JobStatus::sql_list(&JobStatus::WORKING),
    );
    sqlx::query_as::<_, Stuck>(sqlx::AssertSqlSafe(sql))
        .bind(queued_secs)
        .bind(silent_secs)
        .bind(limit)
        .bind(JobStatus::Pending)
        .fetch_all(db)
        .await
}

/// Queuing a stuck job's task again: stage `queued`, the task staged, an audit row
/// (`job.requeue`), in one statement. Writes nothing when the job changed since it was
/// found stuck. Never undone: the relay publishes what the broker refused.
pub struct Requeue<'a>(pub &'a Stuck);

impl Stage for Requeue<'_> {
    type Output = Uuid;
    type Error = sqlx::Error;

    async fn write(&self, db: &PgPool, staged: &Staged) -> Result<Option<Uuid>, sqlx::Error> {
        let stuck = self.0;
        let sql = format!(
            "WITH moved AS (
                UPDATE jobs SET stage = 'queued', task_id = $4
                WHERE id = $1 AND status = $2 AND updated_at = $3
                RETURNING id
             ), staged AS ({}), audited AS (
                INSERT INTO audit_logs (actor_id, action, job_id, details, outcome)
                SELECT $5, 'job.requeue', id,
                       jsonb_build_object('status', $2::text, 'requeued_before', $6::bigint),
                       'success'
                FROM moved
             )
             SELECT id FROM moved",
            outbox::insert_sql(7, "moved")
        );
        let query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(stuck.id)
            .bind(stuck.status)
            .bind(stuck.updated_at)
            .bind(staged.message_id)
            .bind(SYSTEM_ACTOR)
            .bind(stuck.requeued);
        staged.bind(query).fetch_optional(db).await
    }
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
            UPDATE jobs SET status = $7, stage = NULL, error_code = $4, error = $5,
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
    .bind(stuck.status)
    .bind(stuck.updated_at)
    .bind(code)
    .bind(reason)
    .bind(SYSTEM_ACTOR)
    .bind(JobStatus::Failed)
    .fetch_optional(db)
    .await?;
    Ok(failed.is_some())
}
