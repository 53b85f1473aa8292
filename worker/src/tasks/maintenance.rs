//! The periodic tasks beat publishes to the default queue: `cleanup_expired_jobs` and
//! `storage_cleanup`. Both work in bounded batches and may run while job tasks are
//! busy: expiry goes through the job row (a running task hears of it and stops), and
//! storage cleanup only deletes what no live job owns.

use std::collections::HashSet;
use std::sync::Arc;

use deployguard::jobs::maintenance::{self, Requeue};
use deployguard::queue::{EnqueueError, OnRefusal, WorkQueue, enqueue};
use deployguard::storage::{JOB_PREFIXES, job_of};
use deployguard::tasks::{JobRef, JobTask, RequeueStuckJobs};
use futures_util::StreamExt;
use serde_json::json;
use uuid::Uuid;

use super::{Services, database, storage};
use crate::registry::{TaskContext, TaskError};

/// Jobs expired per statement.
const EXPIRY_BATCH: i64 = 100;
/// Batches per run: a larger backlog is left for the next run.
const EXPIRY_BATCHES: usize = 50;
/// Orphaned objects deleted at once.
const DELETES_IN_FLIGHT: usize = 16;

/// Expires every job past its `expires_at` and deletes its stored objects.
pub(super) async fn cleanup_expired_jobs(
    services: Arc<Services>,
    ctx: TaskContext,
) -> Result<serde_json::Value, TaskError> {
    let (mut expired, mut objects, mut undeleted) = (0usize, 0usize, 0usize);
    for _ in 0..EXPIRY_BATCHES {
        if ctx.cancel.is_cancelled() {
            break;
        }
        let batch = maintenance::expire_due(&ctx.db, EXPIRY_BATCH)
            .await
            .map_err(database)?;
        expired += batch.len();
        for job in &batch {
            match services.storage.delete_job_artifacts(job.id).await {
                Ok(n) => objects += n,
                Err(err) => {
                    undeleted += 1;
                    tracing::warn!(job_id = %job.id, error = %err, "deleting an expired job's objects failed; storage_cleanup will");
                }
            }
        }
        if batch.len() < EXPIRY_BATCH as usize {
            break;
        }
    }
    tracing::info!(
        expired,
        objects_deleted = objects,
        "expired jobs cleaned up"
    );
    // The jobs are expired already: a retry would find nothing to do. What was not
    // deleted is counted here and removed by storage_cleanup.
    Ok(json!({
        "expired": expired,
        "objects_deleted": objects,
        "jobs_with_objects_left": undeleted,
    }))
}

/// Deletes the objects under the job prefixes whose job does not exist, is expired or
/// cancelled (or whose key names no job). Works a listing page (1 000 keys) at a time.
pub(super) async fn storage_cleanup(
    services: Arc<Services>,
    ctx: TaskContext,
) -> Result<serde_json::Value, TaskError> {
    let (mut listed, mut deleted, mut failed) = (0usize, 0usize, 0usize);
    for prefix in JOB_PREFIXES {
        let mut token = None;
        loop {
            if ctx.cancel.is_cancelled() {
                return Err(TaskError::fatal("cancelled", "storage cleanup stopped"));
            }
            let (keys, next) = services
                .storage
                .list_page(prefix, token.take())
                .await
                .map_err(storage)?;
            listed += keys.len();
            let owners: Vec<Uuid> = keys
                .iter()
                .filter_map(|k| job_of(k))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let live: HashSet<Uuid> = maintenance::live_jobs(&ctx.db, &owners)
                .await
                .map_err(database)?
                .into_iter()
                .collect();
            let orphans: Vec<String> = keys
                .into_iter()
                .filter(|key| !job_of(key).is_some_and(|id| live.contains(&id)))
                .collect();
            let deletions = orphans.into_iter().map(|key| {
                let storage = services.storage.clone();
                async move {
                    let outcome = storage.delete(&key).await;
                    if let Err(err) = &outcome {
                        tracing::warn!(key, error = %err, "deleting an orphaned object failed");
                    }
                    outcome.is_ok()
                }
            });
            let results: Vec<bool> = futures_util::stream::iter(deletions)
                .buffer_unordered(DELETES_IN_FLIGHT)
                .collect()
                .await;
            deleted += results.iter().filter(|ok| **ok).count();
            failed += results.iter().filter(|ok| !**ok).count();
            match next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
    }
    tracing::info!(listed, deleted, failed, "storage cleaned up");
    if failed > 0 && deleted == 0 {
        return Err(TaskError::retryable(
            "storage_unavailable",
            format!("none of {failed} orphaned objects could be deleted"),
        ));
    }
    Ok(json!({
        "objects_listed": listed,
        "objects_deleted": deleted,
        "objects_failed": failed,
    }))
}

/// Times a stuck job is queued again before it is failed.
const MAX_REQUEUES: i64 = 3;

/// Finds jobs whose task will not run by itself (see [`maintenance::stuck_jobs`]) and
/// queues their task again when its queue is empty (otherwise the message may just be
/// waiting; counted as `waiting`), or fails them (`task_lost`) once they were requeued
/// [`MAX_REQUEUES`] times in their present status.
pub(super) async fn requeue_stuck_jobs(
    services: Arc<Services>,
    ctx: TaskContext,
    args: RequeueStuckJobs,
) -> Result<serde_json::Value, TaskError> {
    let config = &services.config;
    let silent_default = (config.hard_time_limit + 3 * config.lease).as_secs_f64();
    let queued_secs = args.queued_secs.unwrap_or(3600.0);
    let silent_secs = args.silent_secs.unwrap_or(silent_default);
    if !(queued_secs > 0.0 && silent_secs > 0.0) {
        return Err(TaskError::fatal(
            "bad_arguments",
            "queued_secs and silent_secs must be above 0",
        ));
    }
    let stuck = maintenance::stuck_jobs(&ctx.db, queued_secs, silent_secs, 500)
        .await
        .map_err(database)?;
    let (mut requeued, mut failed, mut waiting) = (0usize, 0usize, 0usize);
    // A message waiting behind a backlog leaves no trace in the database: a job's task
    // is requeued only when its queue holds nothing, so its message cannot be there.
    let mut depths: std::collections::HashMap<WorkQueue, u32> = Default::default();
    for job in &stuck {
        if job.requeued >= MAX_REQUEUES {
            let reason = format!(
                "its task was queued {} times and never finished: the worker running it, or \
                 its message, was lost",
                job.requeued + 1
            );
            if maintenance::fail_stuck(&ctx.db, job, "task_lost", &reason)
                .await
                .map_err(database)?
            {
                tracing::warn!(job_id = %job.id, status = %job.status, "stuck job failed");
                failed += 1;
            }
            continue;
        }
        let Some(task) = JobTask::for_status(job.status) else {
            continue;
        };
        let queue = task.queue();
        let depth = match depths.get(&queue) {
            Some(depth) => *depth,
            None => {
                let depth = ready_messages(&services.broker, queue).await?;
                depths.insert(queue, depth);
                depth
            }
        };
        if depth > 0 {
            waiting += 1;
            continue;
        }
        let message = task
            .message(JobRef::new(job.id, &job.owner_id), job.priority)
            .map_err(|e| TaskError::fatal("internal_error", e.to_string()))?;
        let enqueued = enqueue(
            &ctx.db,
            &services.publisher,
            &message,
            &Requeue(job),
            OnRefusal::Relay,
            None,
        )
        .await
        .map_err(|e| match e {
            EnqueueError::Stage(e) => database(e),
            other => TaskError::fatal("internal_error", other.to_string()),
        })?;
        if enqueued.is_some() {
            tracing::warn!(job_id = %job.id, status = %job.status, task = task.name(), "stuck job requeued");
            requeued += 1;
        }
    }
    Ok(json!({"requeued": requeued, "failed": failed, "waiting": waiting}))
}

/// Messages ready in `queue`, from a passive declare.
async fn ready_messages(
    broker: &deployguard::queue::Broker,
    queue: WorkQueue,
) -> Result<u32, TaskError> {
    let unavailable = |e: &dyn std::fmt::Display| {
        TaskError::retryable("broker_unavailable", format!("queue {}: {e}", queue.name()))
    };
    let channel = broker.channel().await.map_err(|e| unavailable(&e))?;
    let passive = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let declared = channel
        .queue_declare(
            queue.name().into(),
            passive,
            lapin::types::FieldTable::default(),
        )
        .await
        .map_err(|e| unavailable(&e));
    let _ = channel.close(200, "done".into()).await;
    Ok(declared?.message_count())
}
