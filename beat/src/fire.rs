//! Claiming a scheduled time and publishing its task.

use chrono::{DateTime, Utc};
use deployguard::queue::outbox::{self, Staged};
use deployguard::queue::{Delivery, EnqueueError, OnRefusal, Publisher, Stage, enqueue};
use deployguard::tasks::Periodic;
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

/// Claiming `(task, slot)` in `beat_runs` with its message staged, in one statement
/// (the run's id); nothing when it was claimed before. Never undone: a claimed time is
/// published by the relay if not now.
struct Claim<'a> {
    task: Periodic,
    slot: DateTime<Utc>,
    instance: &'a str,
}

impl Stage for Claim<'_> {
    type Output = i64;
    type Error = sqlx::Error;

    async fn write(&self, db: &PgPool, staged: &Staged) -> Result<Option<i64>, sqlx::Error> {
        let sql = format!(
            "WITH claimed AS (
                INSERT INTO beat_runs (task_name, scheduled_for, instance, task_id)
                VALUES ($1, $2, $3, $4)
                ON CONFLICT (task_name, scheduled_for) DO NOTHING
                RETURNING id
             ), staged AS ({})
             SELECT id FROM claimed",
            outbox::insert_sql(5, "claimed")
        );
        let query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(self.task.name())
            .bind(self.slot)
            .bind(self.instance)
            .bind(staged.message_id);
        staged.bind(query).fetch_optional(db).await
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FireError {
    #[error(transparent)]
    Enqueue(#[from] EnqueueError<sqlx::Error>),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Payload(#[from] deployguard::queue::PayloadError),
}

/// Claims `(task, slot)` and publishes the task to the default queue, its message
/// carrying the scheduled time (`args.scheduled_for`).
pub async fn fire(
    db: &PgPool,
    publisher: &Publisher,
    instance: &str,
    task: Periodic,
    slot: DateTime<Utc>,
) -> Result<Fired, FireError> {
    let message = task.message(slot)?;
    let claim = Claim {
        task,
        slot,
        instance,
    };
    let Some(enqueued) = enqueue(db, publisher, &message, &claim, OnRefusal::Relay, None).await?
    else {
        return Ok(Fired::AlreadyClaimed);
    };
    let run = enqueued.output;
    if enqueued.delivery == Delivery::Relayed {
        return Ok(Fired::Staged);
    }
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
