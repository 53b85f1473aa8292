//! The one way a task leaves a process. [`enqueue`] writes the change that needs the
//! task together with its outbox row (a [`Stage`]), publishes the message with
//! confirms, then marks it published and writes the audit row (one statement). When
//! the broker refuses it, a request's change is undone and the caller answers
//! "unavailable" ([`OnRefusal::Undo`]); scheduled and maintenance work leave it to the
//! outbox relay ([`OnRefusal::Relay`]). A publish whose confirm never came is left to
//! the relay either way: the broker may have it, and the worker runs a task id once.

use sqlx::PgPool;
use uuid::Uuid;

use super::message::TaskMessage;
use super::outbox::{self, OutboxError, Staged};
use super::publish::{PublishError, Publisher};
use crate::audit::AuditRecord;

/// The change a task is queued for, written with its outbox row.
pub trait Stage: Send + Sync {
    /// What the write returns (the job as it now is, a claimed run …).
    type Output: Send;
    type Error: From<sqlx::Error> + Send;

    /// Writes the change and `staged` (through [`outbox::insert_sql`]) in one statement or
    /// transaction, so both commit or neither does. `None`: the change was not needed
    /// (a time claimed already, a job that moved on) and nothing was staged, so nothing
    /// is published.
    fn write(
        &self,
        db: &PgPool,
        staged: &Staged,
    ) -> impl Future<Output = Result<Option<Self::Output>, Self::Error>> + Send;

    /// Takes the change back after the broker refused `message_id`, but only while that
    /// message is still unpublished (the relay may have sent it meanwhile) and nothing
    /// moved the state on. Returns whether it was taken back. Only called under
    /// [`OnRefusal::Undo`]; a change only ever queued under [`OnRefusal::Relay`] keeps
    /// this default, which undoes nothing.
    fn undo(
        &self,
        _db: &PgPool,
        _message_id: Uuid,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send {
        async { Ok(false) }
    }
}

/// What a refused publish means for the change that was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefusal {
    /// A person's request: with the broker away nothing is written (it is asked first),
    /// and a refused publish undoes the change, so the caller can answer 503 truthfully.
    Undo,
    /// Scheduled or maintenance work: the change stands and the outbox relay publishes
    /// the message once the broker is back.
    Relay,
}

/// How the message left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The broker confirmed it.
    Published,
    /// The outbox relay publishes it (no confirm, or the broker refused it under
    /// [`OnRefusal::Relay`]).
    Relayed,
}

#[derive(Debug)]
pub struct Enqueued<T> {
    pub output: T,
    pub delivery: Delivery,
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError<E: std::error::Error> {
    /// The broker is away: under [`OnRefusal::Undo`] nothing stays written.
    #[error("the broker is unavailable: {0}")]
    Unavailable(String),
    /// The change itself was refused (a wrong state, a conflict) or failed.
    #[error(transparent)]
    Stage(E),
    #[error(transparent)]
    Outbox(#[from] OutboxError),
}

/// Queues `message` with the change `stage` makes; `audit` (if any) is written once the
/// message is out or handed to the relay. `None` when the stage found nothing to do.
pub async fn enqueue<S>(
    db: &PgPool,
    publisher: &Publisher,
    message: &TaskMessage,
    stage: &S,
    on_refusal: OnRefusal,
    audit: Option<&AuditRecord<'_>>,
) -> Result<Option<Enqueued<S::Output>>, EnqueueError<S::Error>>
where
    S: Stage,
    S::Error: std::error::Error,
{
    let staged = Staged::new(message)?;
    if on_refusal == OnRefusal::Undo
        && let Err(err) = publisher.broker().connection().await
    {
        // Cheap refusal while the broker is known to be away: nothing is written.
        return Err(EnqueueError::Unavailable(err.to_string()));
    }
    let Some(output) = stage
        .write(db, &staged)
        .await
        .map_err(EnqueueError::Stage)?
    else {
        return Ok(None);
    };
    let (task, job_id) = (message.task.as_str(), message.body.job_id);
    let delivery = match publisher.publish(message).await {
        Ok(()) => Delivery::Published,
        Err(PublishError::Timeout(_)) => {
            tracing::warn!(
                task,
                ?job_id,
                "no confirm for the task; the outbox relay takes over"
            );
            Delivery::Relayed
        }
        Err(err) if on_refusal == OnRefusal::Relay => {
            tracing::warn!(task, ?job_id, error = %err, "publishing failed; the outbox relay will");
            // Refused, so surely not on the broker: the relay need not wait its grace.
            if let Err(db_err) = outbox::release(db, message.id).await {
                tracing::warn!(task, ?job_id, error = %db_err, "the relay publishes it after its grace");
            }
            Delivery::Relayed
        }
        Err(err) => {
            tracing::warn!(task, ?job_id, error = %err, "task not published; its change is undone");
            if let Err(db_err) = stage.undo(db, message.id).await {
                // The relay publishes it later: late, not lost.
                tracing::error!(task, ?job_id, error = %db_err, "could not undo the change");
            }
            return Err(EnqueueError::Unavailable(err.to_string()));
        }
    };
    let recorded = match (delivery, audit) {
        (Delivery::Published, Some(audit)) => mark_published_and_audit(db, message.id, audit).await,
        (Delivery::Published, None) => outbox::mark_published(db, message.id).await,
        (Delivery::Relayed, Some(audit)) => crate::audit::insert(db, audit).await,
        (Delivery::Relayed, None) => Ok(()),
    };
    if let Err(err) = recorded {
        // The task is out and the change committed: the enqueue succeeded. The relay
        // publishes a duplicate, which the worker ignores.
        tracing::warn!(task, ?job_id, error = %err, "could not mark the task published");
    }
    Ok(Some(Enqueued { output, delivery }))
}

/// After the broker confirmed the message: marks it published (the relay leaves it
/// alone) and writes the audit row, in one statement.
async fn mark_published_and_audit(
    db: &PgPool,
    message_id: Uuid,
    audit: &AuditRecord<'_>,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "WITH published AS (
            UPDATE outbox SET published_at = now()
            WHERE message_id = $8 AND published_at IS NULL
         )
         INSERT INTO audit_logs ({}) VALUES ($1, $2, $3, $4::inet, $5, $6, $7)",
        crate::audit::COLUMNS
    );
    audit
        .bind(sqlx::query(sqlx::AssertSqlSafe(sql)))
        .bind(message_id)
        .execute(db)
        .await?;
    Ok(())
}
