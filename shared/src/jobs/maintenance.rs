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
