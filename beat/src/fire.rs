//! Claiming a scheduled time and publishing its task.

use chrono::{DateTime, Utc};
use deployguard::queue::outbox::{self, OutboxError};
use deployguard::queue::{Publisher, TaskBody, TaskMessage, WorkQueue};
use sqlx::PgPool;

/// What became of a scheduled time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fired {
    /// Claimed and published now.
    Published,
    /// Claimed, but the broker was away: the outbox relay publishes it.
    Staged,
    /// Another beat (or this one, earlier) claimed it.
    AlreadyClaimed,
}

/// Claims `(task, slot)` and publishes the task to the default queue, its message
/// carrying the scheduled time (`args.scheduled_for`).
pub async fn fire(
    db: &PgPool,
    publisher: &Publisher,
    instance: &str,
    task: &str,
    slot: DateTime<Utc>,
) -> Result<Fired, OutboxError> {
    let mut args = serde_json::Map::new();
    args.insert("scheduled_for".into(), slot.to_rfc3339().into());
    let message = TaskMessage::new(
        task,
        WorkQueue::Default,
        TaskBody {
            job_id: None,
            user_id: None,
            args,
        },
    );
    let mut tx = db.begin().await?;
    let claimed: Option<i64> = sqlx::query_scalar(
        "INSERT INTO beat_runs (task_name, scheduled_for, instance, task_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (task_name, scheduled_for) DO NOTHING
         RETURNING id",
    )
    .bind(task)
    .bind(slot)
    .bind(instance)
    .bind(message.id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(run) = claimed else {
        return Ok(Fired::AlreadyClaimed);
    };
    outbox::stage(&mut tx, &message).await?;
    tx.commit().await?;
    if let Err(err) = publisher.publish(&message).await {
        tracing::warn!(task, scheduled_for = %slot, error = %err, "publishing failed; the outbox relay will");
        return Ok(Fired::Staged);
    }
    outbox::mark_published(db, message.id).await?;
    sqlx::query(
        "UPDATE beat_runs SET status = 'published', published_at = now()
         WHERE id = $1 AND status = 'claimed'",
    )
    .bind(run)
    .execute(db)
    .await?;
    Ok(Fired::Published)
}

/// Copies the outcome of finished periodic tasks into their `beat_runs` rows (and the
/// publish time of those the relay published).
pub async fn record_outcomes(db: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE beat_runs b SET
             status = CASE WHEN t.state = 'success' THEN 'succeeded' ELSE 'failed' END,
             error = left(t.error, 4000),
             published_at = coalesce(b.published_at, o.published_at),
             finished_at = coalesce(t.finished_at, now())
         FROM task_results t LEFT JOIN outbox o ON o.message_id = t.task_id
         WHERE t.task_id = b.task_id
           AND b.status IN ('claimed', 'published')
           AND t.state IN ('success', 'failure', 'dead_lettered', 'revoked')",
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
