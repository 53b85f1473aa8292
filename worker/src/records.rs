//! The task's record in `task_results`, and the job side effects of task outcomes.
//!
//! A task id is claimed before its handler runs. The claim is what makes redelivery
//! safe: a message for a task that already finished is acknowledged without running
//! again, and a task still held by a live worker (its heartbeat younger than the
//! lease) is not run twice at once.

use std::time::Duration;

use deployguard::jobs::JobStatus;
use deployguard::queue::TaskMessage;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// What the claim found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// Ours to run; `attempt` is 1 for the first run; `job_status` is the status of the
    /// task's job, if it has one.
    Granted {
        attempt: u32,
        job_status: Option<JobStatus>,
    },
    /// Already finished (`success`, `failure`, `dead_lettered`, `revoked`): do nothing.
    Finished(String),
    /// Running on a worker that was heard of within the lease.
    Held { worker: String },
    /// A newer attempt of this task is already scheduled; this copy is stale.
    Superseded,
}

pub async fn claim(
    db: &PgPool,
    message: &TaskMessage,
    worker: &str,
    lease: Duration,
) -> Result<Claim, sqlx::Error> {
    let attempt = i32::try_from(message.retries.saturating_add(1)).unwrap_or(i32::MAX);
    let granted = sqlx::query(
        "INSERT INTO task_results
             (task_id, task_name, job_id, root_id, parent_id, queue, state, attempt, worker,
              received_at, started_at)
         VALUES ($1, $2, (SELECT id FROM jobs WHERE id = $3), $4, $5, $6, 'started', $7, $8,
                 now(), now())
         ON CONFLICT (task_id) DO UPDATE
             SET state = 'started', attempt = EXCLUDED.attempt, worker = EXCLUDED.worker,
                 received_at = now(), started_at = now(), finished_at = NULL
           WHERE EXCLUDED.attempt >= task_results.attempt
             AND (task_results.state IN ('pending', 'received', 'retry')
                  OR (task_results.state = 'started'
                      AND task_results.updated_at < now() - make_interval(secs => $9)))
         RETURNING attempt,
                   (SELECT status FROM jobs WHERE jobs.id = task_results.job_id) AS job_status",
    )
    .bind(message.id)
    .bind(&message.task)
    .bind(message.body.job_id)
    .bind(message.root_id)
    .bind(message.parent_id)
    .bind(message.queue.name())
    .bind(attempt)
    .bind(worker)
    .bind(lease.as_secs_f64())
    .fetch_optional(db)
    .await?;
    if let Some(row) = granted {
        let attempt: i32 = row.try_get("attempt")?;
        return Ok(Claim::Granted {
            attempt: u32::try_from(attempt).unwrap_or(1),
            job_status: row.try_get("job_status")?,
        });
    }
    let row = sqlx::query("SELECT state, attempt, worker FROM task_results WHERE task_id = $1")
        .bind(message.id)
        .fetch_one(db)
        .await?;
    let state: String = row.try_get("state")?;
    let recorded: i32 = row.try_get("attempt")?;
    Ok(match state.as_str() {
        "started" if recorded <= attempt => Claim::Held {
            worker: row
                .try_get::<Option<String>, _>("worker")?
                .unwrap_or_default(),
        },
        "success" | "failure" | "dead_lettered" | "revoked" => Claim::Finished(state),
        _ => Claim::Superseded,
    })
}

/// Keeps the claim alive. Returns `None` when the claim is no longer ours, otherwise
/// the job's current status (if the task has a job).
pub async fn heartbeat(
    db: &PgPool,
    task_id: Uuid,
    worker: &str,
) -> Result<Option<Option<JobStatus>>, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE task_results SET updated_at = now()
         WHERE task_id = $1 AND worker = $2 AND state = 'started'
         RETURNING (SELECT status FROM jobs WHERE jobs.id = task_results.job_id) AS job_status",
    )
    .bind(task_id)
    .bind(worker)
    .fetch_optional(db)
    .await?;
    row.map(|r| r.try_get::<Option<JobStatus>, _>("job_status"))
        .transpose()
}

/// Records the end of our claim: `state` is `success`, `failure`, `dead_lettered` or
/// `revoked`. Returns false when the claim is no longer ours (another worker took the
/// task over): the caller must then leave the job alone.
pub async fn finish(
    db: impl sqlx::PgExecutor<'_>,
    task_id: Uuid,
    worker: &str,
    state: &str,
    error: Option<&str>,
    result: Option<&serde_json::Value>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE task_results
         SET state = $3, error = $4, result = $5, finished_at = now()
         WHERE task_id = $1 AND worker = $2 AND state = 'started'",
    )
    .bind(task_id)
    .bind(worker)
    .bind(state)
    .bind(error.map(|e| clip(e, 4000)))
    .bind(result)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that attempt `next` is scheduled (its message already confirmed in a delay
/// queue). Storing the *next* attempt makes a late copy of the failed one stale.
pub async fn schedule_retry(
    db: &PgPool,
    task_id: Uuid,
    worker: &str,
    next: u32,
    error: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE task_results
         SET state = 'retry', attempt = $3, error = $4, finished_at = NULL
         WHERE task_id = $1 AND worker = $2 AND state = 'started'",
    )
    .bind(task_id)
    .bind(worker)
    .bind(i32::try_from(next).unwrap_or(i32::MAX))
    .bind(clip(error, 4000))
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A task that never got to run.
#[derive(Debug, Clone, Copy)]
pub struct Unrun<'a> {
    pub task_id: Uuid,
    pub task: &'a str,
    pub job_id: Option<Uuid>,
    pub queue: &'a str,
    /// `revoked` or `dead_lettered`.
    pub state: &'a str,
    pub error: &'a str,
}

/// Records a task that never got to run (poison, expired, unknown, cancelled job):
/// creates or overwrites the record unless it already finished or a live worker holds
/// it (a late duplicate must not take a running task's claim away).
pub async fn record_unrun(
    db: &PgPool,
    worker: &str,
    unrun: &Unrun<'_>,
    lease: Duration,
) -> Result<(), sqlx::Error> {
    let Unrun {
        task_id,
        task,
        job_id,
        queue,
        state,
        error,
    } = *unrun;
    sqlx::query(
        "INSERT INTO task_results (task_id, task_name, job_id, queue, state, worker, error,
                                   received_at, finished_at)
         VALUES ($1, $2, (SELECT id FROM jobs WHERE id = $3), $4, $5, $6, $7, now(), now())
         ON CONFLICT (task_id) DO UPDATE
             SET state = EXCLUDED.state, error = EXCLUDED.error, worker = EXCLUDED.worker,
                 finished_at = now()
           WHERE task_results.state NOT IN ('success', 'failure', 'dead_lettered', 'revoked')
             AND NOT (task_results.state = 'started'
                      AND task_results.updated_at >= now() - make_interval(secs => $8))",
    )
    .bind(task_id)
    .bind(clip(task, 200))
    .bind(job_id)
    .bind(queue)
    .bind(state)
    .bind(worker)
    .bind(clip(error, 4000))
    .bind(lease.as_secs_f64())
    .execute(db)
    .await?;
    Ok(())
}

/// Gives the claim back (shutdown before the task finished): the redelivered message
/// may be claimed at once by any worker.
pub async fn release(db: &PgPool, task_id: Uuid, worker: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE task_results SET state = 'received', worker = NULL
         WHERE task_id = $1 AND worker = $2 AND state = 'started'",
    )
    .bind(task_id)
    .bind(worker)
    .execute(db)
    .await?;
    Ok(())
}

/// Fails a job that has not reached a final state, with a code and a message.
pub async fn fail_job(
    db: impl sqlx::PgExecutor<'_>,
    job_id: Uuid,
    code: &str,
    message: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = $4, error_code = $2, error = $3, stage = NULL,
                         finished_at = now()
         WHERE id = $1 AND status <> ALL($5)",
    )
    .bind(job_id)
    .bind(clip(code, 100))
    .bind(clip(message, 4000))
    .bind(JobStatus::Failed)
    .bind(&JobStatus::FINAL[..])
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The job's status, if it exists.
pub async fn job_status(db: &PgPool, job_id: Uuid) -> Result<Option<JobStatus>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_optional(db)
        .await
}

fn clip(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}
