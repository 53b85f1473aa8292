//! The transactional outbox: a task is written to `outbox` in the same transaction as
//! the state that needs it, and published after the commit. If the process dies between
//! commit and publish, the [`relay`] (running in every worker) publishes it later.
//! Publishing twice is harmless: the task id is stable and handlers dedupe on it.

use std::time::Duration;

use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::message::{TaskBody, TaskMessage};
use super::publish::Publisher;
use super::topology::{MAX_PRIORITY, NORMAL_PRIORITY, WORK_EXCHANGE, WorkQueue};
use crate::db::Bind;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox: {0}")]
    Database(#[from] sqlx::Error),
    #[error("outbox: {0}")]
    Encoding(#[from] serde_json::Error),
}

/// How long the relay leaves a staged message to the process that staged it: that one
/// publishes right after its commit, and the relay is only the safety net. Longer than
/// the stager's worst case (reaching the broker, connecting, waiting for the confirm),
/// so the stager's decision about a message it could not publish stands.
pub const RELAY_GRACE: Duration = Duration::from_secs(30);

/// A message as the outbox stores it. Callers write it in the statement that makes the
/// change needing it ([`insert_sql`]), so the change and its task commit together.
#[derive(Debug, Clone)]
pub struct Staged {
    pub message_id: Uuid,
    pub job_id: Option<Uuid>,
    pub exchange: &'static str,
    pub routing_key: &'static str,
    pub headers: serde_json::Value,
    pub body: serde_json::Value,
    pub priority: i16,
    /// Seconds before the relay may publish it: the stager publishes first.
    pub grace_secs: f64,
}

impl Staged {
    pub fn new(message: &TaskMessage) -> Result<Self, OutboxError> {
        Ok(Self {
            message_id: message.id,
            job_id: message.body.job_id,
            exchange: WORK_EXCHANGE,
            routing_key: message.queue.name(),
            headers: serde_json::to_value(Envelope::from(message))?,
            body: serde_json::to_value(&message.body)?,
            priority: i16::from(message.priority),
            grace_secs: RELAY_GRACE.as_secs_f64(),
        })
    }

    /// Binds the message as the next eight parameters, in the order [`insert_sql`] reads
    /// them.
    pub fn bind<'q, Q: Bind<'q>>(&'q self, query: Q) -> Q {
        query
            .bind_one(self.message_id)
            .bind_one(self.job_id)
            .bind_one(self.exchange)
            .bind_one(self.routing_key)
            .bind_one(&self.headers)
            .bind_one(&self.body)
            .bind_one(self.priority)
            .bind_one(self.grace_secs)
    }
}

/// The one statement that writes to the outbox: an `INSERT` of the staged message bound
/// as the eight parameters from `$first` on ([`Staged::bind`]), once for each row of
/// `rows` (a CTE of the caller's statement, so nothing is staged when its change did
/// not happen). Used as a CTE body.
pub fn insert_sql(first: usize, rows: &str) -> String {
    let p: Vec<String> = (first..first + 8).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO outbox (message_id, job_id, exchange, routing_key, headers, body, priority,
                             available_at)
         SELECT {}, {}::uuid, {}, {}, {}::jsonb, {}::jsonb, {}::smallint,
                now() + make_interval(secs => {}::float8)
         FROM {rows}",
        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7]
    )
}

/// Stages `message` inside the caller's transaction, on its own (tests stage one this
/// way; the service stages with [`super::enqueue`]). Unless someone publishes it and
/// calls [`mark_published`], the relay publishes it after [`RELAY_GRACE`].
pub async fn stage(conn: &mut PgConnection, message: &TaskMessage) -> Result<(), OutboxError> {
    let staged = Staged::new(message)?;
    let sql = insert_sql(1, "(VALUES (1)) AS one");
    let query = sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH staged AS ({sql}) SELECT 1"
    )));
    staged.bind(query).execute(conn).await?;
    Ok(())
}

/// Hands a staged message to the relay at once (its stager could not publish it).
pub async fn release(pool: &PgPool, message_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET available_at = now() WHERE message_id = $1 AND published_at IS NULL",
    )
    .bind(message_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks a staged message as published (after its confirm).
pub async fn mark_published(pool: &PgPool, message_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE outbox SET published_at = now() WHERE message_id = $1 AND published_at IS NULL",
    )
    .bind(message_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Publishes one batch of due messages; returns how many were published. Rows are
/// locked with `SKIP LOCKED`, so relays in several processes share the work.
pub async fn relay_once(
    pool: &PgPool,
    publisher: &Publisher,
    batch: i64,
) -> Result<usize, OutboxError> {
    let mut tx = pool.begin().await?;
    let rows = sqlx::query(
        "SELECT id, routing_key, headers, body, priority, attempts FROM outbox
         WHERE published_at IS NULL AND available_at <= now()
         ORDER BY available_at, id
         LIMIT $1
         FOR UPDATE SKIP LOCKED",
    )
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    let mut broken = Vec::new();
    for row in &rows {
        let id: i64 = row.try_get("id")?;
        match decode_row(row) {
            Some(message) => {
                ids.push((id, row.try_get::<i32, _>("attempts")?));
                messages.push(message);
            }
            None => broken.push(id),
        }
    }
    let outcomes = publisher.publish_many(&messages).await;
    let mut published = Vec::new();
    for ((id, attempts), outcome) in ids.into_iter().zip(outcomes) {
        match outcome {
            Ok(()) => published.push(id),
            Err(err) => {
                // 1 s, 2 s, 4 s … up to 256 s between attempts.
                let backoff = 1i64 << attempts.clamp(0, 8);
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                            available_at = now() + make_interval(secs => $3)
                     WHERE id = $1",
                )
                .bind(id)
                .bind(err.to_string().chars().take(4000).collect::<String>())
                .bind(backoff.min(300) as f64)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    for id in broken {
        // Written by a newer or broken release: keep it for an operator, out of the way.
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = 'unreadable outbox row',
                    available_at = now() + interval '1 day'
             WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)")
        .bind(&published)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(published.len())
}

/// Deletes published rows older than `age`.
pub async fn prune(pool: &PgPool, age: Duration) -> Result<u64, OutboxError> {
    let done = sqlx::query(
        "DELETE FROM outbox WHERE published_at IS NOT NULL
         AND published_at < now() - make_interval(secs => $1)",
    )
    .bind(age.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Runs the relay until `stop` resolves: a batch whenever there is work, otherwise a
/// poll every `interval`.
pub async fn relay(
    pool: PgPool,
    publisher: std::sync::Arc<Publisher>,
    interval: Duration,
    stop: impl Future<Output = ()>,
) {
    let work = async {
        let mut last_prune = tokio::time::Instant::now();
        loop {
            match relay_once(&pool, &publisher, 500).await {
                Ok(n) if n > 0 => {
                    tracing::info!(published = n, "outbox relay published staged tasks");
                    continue;
                }
                Ok(_) => {}
                Err(err) => tracing::warn!(error = %err, "outbox relay failed; retrying"),
            }
            if last_prune.elapsed() > Duration::from_secs(3600) {
                last_prune = tokio::time::Instant::now();
                if let Err(err) = prune(&pool, Duration::from_secs(86_400)).await {
                    tracing::warn!(error = %err, "pruning the outbox failed");
                }
            }
            tokio::time::sleep(interval).await;
        }
    };
    tokio::select! {
        () = work => {}
        () = stop => {}
    }
}

/// What the outbox keeps of a message besides its body.
#[derive(serde::Serialize, serde::Deserialize)]
struct Envelope {
    task: String,
    id: Uuid,
    retries: u32,
    root_id: Uuid,
    parent_id: Option<Uuid>,
    origin: String,
    expires: Option<chrono::DateTime<chrono::Utc>>,
    timelimit: (Option<u64>, Option<u64>),
}

impl From<&TaskMessage> for Envelope {
    fn from(m: &TaskMessage) -> Self {
        Self {
            task: m.task.clone(),
            id: m.id,
            retries: m.retries,
            root_id: m.root_id,
            parent_id: m.parent_id,
            origin: m.origin.clone(),
            expires: m.expires,
            timelimit: m.timelimit,
        }
    }
}

fn decode_row(row: &sqlx::postgres::PgRow) -> Option<TaskMessage> {
    let envelope: Envelope = serde_json::from_value(row.try_get("headers").ok()?).ok()?;
    let body: TaskBody = serde_json::from_value(row.try_get("body").ok()?).ok()?;
    let queue = WorkQueue::parse(row.try_get::<&str, _>("routing_key").ok()?)?;
    let priority: i16 = row.try_get("priority").ok()?;
    Some(TaskMessage {
        task: envelope.task,
        id: envelope.id,
        retries: envelope.retries,
        root_id: envelope.root_id,
        parent_id: envelope.parent_id,
        origin: envelope.origin,
        expires: envelope.expires,
        timelimit: envelope.timelimit,
        queue,
        priority: u8::try_from(priority).map_or(NORMAL_PRIORITY, |p| p.min(MAX_PRIORITY)),
        published_at_ms: None,
        body,
    })
}
