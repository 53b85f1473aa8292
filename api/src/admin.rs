//! `/admin`: what the admin panel needs (role `admin` only): every job, stats, the
//! queues, the dead-letter queue and the audit trail.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use deployguard::audit::{self, AuditEntry, AuditFilter, AuditRecord, Outcome};
use deployguard::jobs::{self, JobFilter, JobStatus, Stats};
use deployguard::queue::message::{ORIGINAL_QUEUE_HEADER, REASON_HEADER};
use deployguard::queue::topology::DEAD_LETTER_QUEUE;
use deployguard::queue::{TaskMessage, WorkQueue};
use deployguard::tasks::JobTask;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueuePurgeOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiQuery, text_filter, time_filter};
use crate::jobs::{JobPage, decode_cursor, job_page, next_page, page_limit};

/// The answers every admin route may give besides its own.
#[derive(utoipa::IntoResponses)]
pub enum AdminErrors {
    /// Bad input.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// No identity.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Not an administrator.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// A dependency is unavailable.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AdminJobsQuery {
    /// Only this user's jobs.
    pub user_id: Option<String>,
    #[param(inline)]
    pub status: Option<JobStatus>,
    /// Created at or after this time (RFC 3339).
    pub created_after: Option<DateTime<Utc>>,
    /// Created before this time (RFC 3339).
    pub created_before: Option<DateTime<Utc>>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// Every user's jobs, newest first.
#[utoipa::path(get, path = "/admin/jobs", tag = "admin", params(AdminJobsQuery),
    responses((status = 200, description = "A page of jobs", body = JobPage), AdminErrors))]
pub async fn jobs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AdminJobsQuery>,
) -> ApiResult<Json<JobPage>> {
    text_filter("user_id", query.user_id.as_deref())?;
    time_filter("created_after", query.created_after)?;
    time_filter("created_before", query.created_before)?;
    let filter = JobFilter {
        owner: query.user_id.as_deref(),
        status: query.status,
        created_after: query.created_after,
        created_before: query.created_before,
        after: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: page_limit(query.limit, 20, 100)?,
    };
    Ok(Json(job_page(&state, filter).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// Jobs created at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Jobs created before this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

/// Jobs by status, secrets found, selected and cleaned, and job durations.
#[utoipa::path(get, path = "/admin/stats", tag = "admin", params(StatsQuery),
    responses((status = 200, description = "Stats", body = Stats), AdminErrors))]
pub async fn stats(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    time_filter("since", query.since)?;
    time_filter("until", query.until)?;
    Ok(Json(
        jobs::stats(&state.db, query.since, query.until).await?,
    ))
}

/// One queue as the broker reports it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueInfo {
    pub name: String,
    /// Messages waiting to be delivered.
    pub messages_ready: u32,
    pub consumers: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Queues {
    pub queues: Vec<QueueInfo>,
}

fn broker_down(err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %err, "broker unavailable for an admin request");
    ApiError::broker_unavailable()
}

/// A channel on which every queue exists: a fresh broker may not have seen a publish
/// yet, and a passive declare of a missing queue would close the channel.
async fn admin_channel(state: &AppState) -> ApiResult<lapin::Channel> {
    let channel = state.broker.channel().await.map_err(broker_down)?;
    deployguard::queue::declare_topology(&channel)
        .await
        .map_err(broker_down)?;
    Ok(channel)
}

/// Depth and consumers of every work queue and of the dead-letter queue.
#[utoipa::path(get, path = "/admin/queues", tag = "admin",
    responses((status = 200, description = "Queues", body = Queues), AdminErrors))]
pub async fn queues(State(state): State<AppState>) -> ApiResult<Json<Queues>> {
    let channel = admin_channel(&state).await?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let mut queues = Vec::new();
    let names = WorkQueue::ALL
        .iter()
        .map(|q| q.name())
        .chain([DEAD_LETTER_QUEUE]);
    for name in names {
        let declared = channel
            .queue_declare(name.into(), passive, FieldTable::default())
            .await
            .map_err(broker_down)?;
        queues.push(QueueInfo {
            name: name.to_owned(),
            messages_ready: declared.message_count(),
            consumers: declared.consumer_count(),
        });
    }
    let _ = channel.close(200, "done".into()).await;
    Ok(Json(Queues { queues }))
}

/// A parked message.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetter {
    /// The task id (absent for a message too broken to carry one).
    pub task_id: Option<String>,
    pub task: Option<String>,
    pub job_id: Option<Uuid>,
    /// Why it was parked.
    pub reason: Option<String>,
    /// The queue it came from.
    pub queue: Option<String>,
    pub retries: Option<i64>,
    /// Whether it can be requeued (it is a readable task message).
    pub requeueable: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetters {
    /// Messages in the queue, in all.
    pub total: u32,
    pub messages: Vec<DeadLetter>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLettersQuery {
    /// How many to show, 1 to 500 (default 50), oldest first.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

fn header_text(headers: &FieldTable, key: &str) -> Option<String> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn header_int(headers: &FieldTable, key: &str) -> Option<i64> {
    match headers.inner().get(key)? {
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// Reason recorded by the broker itself (`x-death`) when we did not write one.
fn death_reason(headers: &FieldTable) -> Option<String> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    header_text(first, "reason").map(|r| format!("broker: {r}"))
}

fn describe(delivery: &lapin::message::Delivery) -> DeadLetter {
    let empty = FieldTable::default();
    let headers = delivery.properties.headers().as_ref().unwrap_or(&empty);
    let decoded = TaskMessage::decode(
        &delivery.properties,
        delivery.routing_key.as_str(),
        &delivery.data,
    );
    let job_id = match &decoded {
        Ok(m) => m.body.job_id,
        Err(p) => p.job_id,
    };
    DeadLetter {
        task_id: header_text(headers, "id"),
        task: header_text(headers, "task"),
        job_id,
        reason: header_text(headers, REASON_HEADER).or_else(|| death_reason(headers)),
        queue: header_text(headers, ORIGINAL_QUEUE_HEADER)
            .or_else(|| Some(delivery.routing_key.as_str().to_owned())),
        retries: header_int(headers, "retries"),
        requeueable: decoded.is_ok(),
    }
}

/// Lists parked messages without taking them: they are read unacknowledged and go
/// back when the channel closes.
#[utoipa::path(get, path = "/admin/dead-letters", tag = "admin", params(DeadLettersQuery),
    responses((status = 200, description = "Dead letters", body = DeadLetters), AdminErrors))]
pub async fn dead_letters(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DeadLettersQuery>,
) -> ApiResult<Json<DeadLetters>> {
    let limit = page_limit(query.limit, 50, 500)?;
    let channel = admin_channel(&state).await?;
    let mut messages = Vec::new();
    let mut total = 0;
    while (messages.len() as i64) < limit {
        let got = channel
            .basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(broker_down)?;
        let Some(got) = got else { break };
        if messages.is_empty() {
            total = got.message_count + 1;
        }
        messages.push(describe(&got.delivery));
    }
    // Closing the channel returns every unacknowledged message to the queue.
    let _ = channel.close(200, "listed".into()).await;
    Ok(Json(DeadLetters { total, messages }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Requeued {
    /// Messages sent back to their work queue (each as a new task).
    pub requeued: u32,
    /// Messages left in place: not readable as tasks, or their job has moved on.
    pub skipped: u32,
    /// Jobs that had failed because of these messages and are live again.
    pub jobs_reset: Vec<Uuid>,
}

/// Ids of requeued tasks are derived from the parked task's id, so requeueing one
/// message twice (an ack lost, a retried request) yields one task id, which the worker
/// runs once. A task parked again after its requeued run gets a new id the next time.
const REQUEUE_NAMESPACE: Uuid = Uuid::from_u128(0x6467_7265_7175_6575_6500_0000_0000_0001);

/// Sends a parked task back as a new task (the old one as parent). A job that failed
/// because of it is made live again first, so the worker runs it; a job that has moved
/// on keeps the message parked. Returns whether it was sent.
async fn requeue_one(state: &AppState, old: TaskMessage, reset: &mut Vec<Uuid>) -> ApiResult<bool> {
    let mut task = old.clone();
    task.id = Uuid::new_v5(&REQUEUE_NAMESPACE, old.id.as_bytes());
    task.parent_id = Some(old.id);
    task.retries = 0;
    task.published_at_ms = None;
    task.expires = None;
    let mut previous: Option<(Uuid, JobStatus, Option<String>, Option<String>)> = None;
    if let (Some(job_id), Some(needed)) = (
        old.body.job_id,
        JobTask::named(&old.task).map(JobTask::due_status),
    ) {
        let row: Option<(Option<String>, Option<String>)> = sqlx::query_as(
            "WITH old AS (SELECT error_code, error FROM jobs WHERE id = $1 AND status = $3
                          FOR UPDATE)
             UPDATE jobs SET status = $2, stage = 'queued', error = NULL, error_code = NULL,
                    finished_at = NULL, task_id = $4
             FROM old WHERE jobs.id = $1 AND jobs.status = $3
             RETURNING old.error_code, old.error",
        )
        .bind(job_id)
        .bind(needed)
        .bind(JobStatus::Failed)
        // The revived job runs the requeued message, not the one it failed with.
        .bind(task.id)
        .fetch_optional(&state.db)
        .await?;
        match row {
            Some((code, error)) => previous = Some((job_id, needed, code, error)),
            None => {
                let status: Option<JobStatus> =
                    sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
                        .bind(job_id)
                        .fetch_optional(&state.db)
                        .await?;
                if status != Some(needed) {
                    // Gone, or moved on: running the task now would do nothing useful.
                    return Ok(false);
                }
            }
        }
    }
    if let Err(err) = state.publisher.publish(&task).await {
        if let Some((job_id, needed, code, error)) = previous {
            // Put the job back the way it was, unless something else moved it meanwhile.
            let _ = sqlx::query(
                "UPDATE jobs SET status = $5, error_code = $3,
                        error = coalesce($4, 'requeue failed'), finished_at = now()
                 WHERE id = $1 AND status = $2",
            )
            .bind(job_id)
            .bind(needed)
            .bind(code)
            .bind(error)
            .bind(JobStatus::Failed)
            .execute(&state.db)
            .await;
        }
        return Err(broker_down(err));
    }
    if let Some((job_id, ..)) = previous {
        reset.push(job_id);
    }
    Ok(true)
}

/// Looks at every message present now, once; requeues those matching `only` (all when
/// `None`). Messages not taken go back to the queue when the channel closes. Whatever
/// was requeued is audited, also when a later message fails.
async fn requeue_matching(
    state: AppState,
    caller: Arc<Caller>,
    only: Option<String>,
) -> ApiResult<Requeued> {
    let channel = admin_channel(&state).await?;
    let mut outcome = Requeued {
        requeued: 0,
        skipped: 0,
        jobs_reset: Vec::new(),
    };
    let walked = walk_dead_letters(&state, &channel, only.as_deref(), &mut outcome).await;
    let _ = channel.close(200, "requeued".into()).await;
    if outcome.requeued > 0 {
        let audit = AuditRecord {
            actor: caller.actor(),
            action: if only.is_some() {
                "admin.dead_letter.requeue"
            } else {
                "admin.dead_letter.requeue_all"
            },
            job_id: outcome.jobs_reset.first().copied(),
            outcome: Outcome::Success,
            details: serde_json::json!({
                "task_id": only,
                "requeued": outcome.requeued,
                "skipped": outcome.skipped,
                "jobs_reset": outcome.jobs_reset,
                "complete": walked.is_ok(),
            }),
        };
        audit::insert(&state.db, &audit).await?;
    }
    walked.map(|()| outcome)
}

async fn walk_dead_letters(
    state: &AppState,
    channel: &lapin::Channel,
    only: Option<&str>,
    outcome: &mut Requeued,
) -> ApiResult<()> {
    let mut remaining: Option<u32> = None;
    loop {
        if remaining == Some(0) {
            return Ok(());
        }
        let got = channel
            .basic_get(DEAD_LETTER_QUEUE.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(broker_down)?;
        let Some(got) = got else { return Ok(()) };
        remaining = Some(remaining.unwrap_or(got.message_count + 1) - 1);
        let delivery = got.delivery;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        if only.is_some_and(|id| header_text(&headers, "id").as_deref() != Some(id)) {
            continue;
        }
        let decoded = TaskMessage::decode(
            &delivery.properties,
            delivery.routing_key.as_str(),
            &delivery.data,
        );
        let sent = match decoded {
            Ok(message) => requeue_one(state, message, &mut outcome.jobs_reset).await?,
            Err(_) => false,
        };
        if sent {
            delivery
                .ack(BasicAckOptions::default())
                .await
                .map_err(broker_down)?;
            outcome.requeued += 1;
        } else {
            outcome.skipped += 1;
        }
        if only.is_some() {
            return Ok(());
        }
    }
}

/// Sends one parked task back to its work queue.
#[utoipa::path(post, path = "/admin/dead-letters/{task_id}/requeue", tag = "admin",
    params(("task_id" = String, Path, description = "The parked message's task id")),
    responses(
        (status = 200, description = "Requeued", body = Requeued),
        (status = 404, description = "No such message in the dead-letter queue", body = ErrorBody),
        AdminErrors,
    ))]
pub async fn requeue(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    Path(task_id): Path<String>,
) -> ApiResult<Json<Requeued>> {
    let outcome = crate::jobs::detached(requeue_matching(state, caller, Some(task_id))).await?;
    if outcome.requeued == 0 {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            if outcome.skipped > 0 {
                "that message cannot be requeued: it is not a readable task, or its job has \
                 moved on; purge it instead"
            } else {
                "no message with that task id is in the dead-letter queue"
            },
        ));
    }
    Ok(Json(outcome))
}

/// Sends every readable parked task back to its work queue.
#[utoipa::path(post, path = "/admin/dead-letters/requeue", tag = "admin",
    responses((status = 200, description = "Requeued", body = Requeued), AdminErrors))]
pub async fn requeue_all(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
) -> ApiResult<Json<Requeued>> {
    Ok(Json(
        crate::jobs::detached(requeue_matching(state, caller, None)).await?,
    ))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Purged {
    pub purged: u32,
}

/// Deletes every parked message.
#[utoipa::path(delete, path = "/admin/dead-letters", tag = "admin",
    responses((status = 200, description = "Purged", body = Purged), AdminErrors))]
pub async fn purge(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
) -> ApiResult<Json<Purged>> {
    let channel = admin_channel(&state).await?;
    let purged = channel
        .queue_purge(DEAD_LETTER_QUEUE.into(), QueuePurgeOptions::default())
        .await
        .map_err(broker_down)?;
    let _ = channel.close(200, "purged".into()).await;
    let audit = AuditRecord {
        actor: caller.actor(),
        action: "admin.dead_letter.purge",
        job_id: None,
        outcome: Outcome::Success,
        details: serde_json::json!({"purged": purged}),
    };
    audit::insert(&state.db, &audit).await?;
    Ok(Json(Purged { purged }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    pub actor_id: Option<String>,
    /// e.g. `job.create`, `job.cancel`, `admin.dead_letter.purge`.
    pub action: Option<String>,
    pub job_id: Option<Uuid>,
    /// `success`, `rejected` or `failed`.
    pub outcome: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_cursor: Option<i64>,
}

/// The audit trail, newest first.
#[utoipa::path(get, path = "/admin/audit", tag = "admin", params(AuditQuery),
    responses((status = 200, description = "A page of the audit trail", body = AuditPage), AdminErrors))]
pub async fn audit(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> ApiResult<Json<AuditPage>> {
    text_filter("actor_id", query.actor_id.as_deref())?;
    text_filter("action", query.action.as_deref())?;
    text_filter("outcome", query.outcome.as_deref())?;
    time_filter("since", query.since)?;
    time_filter("until", query.until)?;
    let limit = page_limit(query.limit, 50, 500)?;
    let filter = AuditFilter {
        actor_id: query.actor_id.as_deref(),
        action: query.action.as_deref(),
        job_id: query.job_id,
        outcome: query.outcome.as_deref(),
        since: query.since,
        until: query.until,
        before_id: query.cursor,
        limit: limit + 1,
    };
    let mut entries = audit::list(&state.db, &filter).await?;
    let next_cursor = next_page(&mut entries, limit, |e| e.id);
    Ok(Json(AuditPage {
        entries,
        next_cursor,
    }))
}
