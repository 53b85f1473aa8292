//! Diagnostic tasks, registered only with `WORKER_DIAGNOSTIC_TASKS=true`: what tests
//! and benchmarks run through the real runtime. Each is a [`Task`] type below; their names are `deployguard.diagnostic.*`.

use std::time::Duration;

use deployguard::queue::{Task, WorkQueue};
use serde::{Deserialize, Serialize};

use crate::registry::{Registry, RetryPolicy, TaskContext, TaskError, TaskSpec};

/// Returns at once (recorded in `task_results`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Noop {}

impl Task for Noop {
    const NAME: &'static str = "deployguard.diagnostic.noop";
    const QUEUE: WorkQueue = WorkQueue::Default;
}

/// Returns at once, without bookkeeping.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NoopUnrecorded {}

impl Task for NoopUnrecorded {
    const NAME: &'static str = "deployguard.diagnostic.noop_unrecorded";
    const QUEUE: WorkQueue = WorkQueue::Default;
}

/// Sleeps `seconds`, optionally in a `sleep` child process whose pid goes to
/// `pid_file`; stops when cancelled unless `ignore_cancel`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Sleep {
    pub seconds: f64,
    pub child: bool,
    pub ignore_cancel: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<String>,
}

impl Task for Sleep {
    const NAME: &'static str = "deployguard.diagnostic.sleep";
    const QUEUE: WorkQueue = WorkQueue::Default;
}

/// Fails the first `times` attempts (every one when absent), retryably unless
/// `retryable` is false, then succeeds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Fail {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
}

impl Task for Fail {
    const NAME: &'static str = "deployguard.diagnostic.fail";
    const QUEUE: WorkQueue = WorkQueue::Default;
}

/// Waits `seconds`, then writes one audit row for its task id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Effect {
    pub seconds: f64,
}

impl Task for Effect {
    const NAME: &'static str = "deployguard.diagnostic.effect";
    const QUEUE: WorkQueue = WorkQueue::Default;
}

/// The retry policy of `fail`: quick, so tests see several retries.
pub const FAIL_POLICY: RetryPolicy = RetryPolicy {
    max_retries: 3,
    base_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(8),
    jitter: 0.2,
};

pub fn register(registry: &mut Registry) {
    registry.register(TaskSpec::of(RetryPolicy::NEVER, |_, _: Noop| async {
        Ok(serde_json::Value::Null)
    }));
    registry.register(
        TaskSpec::of(RetryPolicy::NEVER, |_, _: NoopUnrecorded| async {
            Ok(serde_json::Value::Null)
        })
        .unrecorded(),
    );
    registry.register(TaskSpec::of(RetryPolicy::NEVER, sleep));
    registry.register(TaskSpec::of(FAIL_POLICY, fail));
    registry.register(TaskSpec::of(RetryPolicy::NEVER, effect));
}

fn seconds(secs: f64) -> Result<Duration, TaskError> {
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(TaskError::fatal(
            "bad_arguments",
            "seconds must be 0 to 86400",
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

async fn sleep(ctx: TaskContext, args: Sleep) -> Result<serde_json::Value, TaskError> {
    let duration = seconds(args.seconds)?;
    let pid_file = args.pid_file;
    let wait = async {
        if args.child {
            let mut child = tokio::process::Command::new("sleep")
                .arg(format!("{:.3}", duration.as_secs_f64()))
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| TaskError::fatal("spawn_failed", e.to_string()))?;
            if let (Some(path), Some(pid)) = (&pid_file, child.id()) {
                tokio::fs::write(path, pid.to_string())
                    .await
                    .map_err(|e| TaskError::fatal("pid_file", e.to_string()))?;
            }
            child
                .wait()
                .await
                .map_err(|e| TaskError::fatal("child_failed", e.to_string()))?;
        } else {
            tokio::time::sleep(duration).await;
        }
        Ok(())
    };
    if args.ignore_cancel {
        wait.await?;
    } else {
        tokio::select! {
            done = wait => done?,
            () = ctx.cancel.cancelled() => {
                return Err(TaskError::fatal("cancelled", "stopped on request"));
            }
        }
    }
    Ok(serde_json::json!({"slept_s": duration.as_secs_f64()}))
}

async fn fail(ctx: TaskContext, args: Fail) -> Result<serde_json::Value, TaskError> {
    let times = args.times.unwrap_or(u32::MAX);
    let retryable = args.retryable.unwrap_or(true);
    // Each attempt leaves a timestamped row, so tests can check the backoff.
    sqlx::query(
        "INSERT INTO audit_logs (actor_id, action, details)
         VALUES ('worker', 'diagnostic.attempt', jsonb_build_object('task_id', $1::text, 'attempt', $2::int))",
    )
    .bind(ctx.message.id.to_string())
    .bind(i32::try_from(ctx.attempt).unwrap_or(i32::MAX))
    .execute(&ctx.db)
    .await
    .map_err(|e| TaskError::retryable("database", e.to_string()))?;
    if ctx.attempt <= times {
        let message = format!("planned failure on attempt {}", ctx.attempt);
        return Err(if retryable {
            TaskError::retryable("planned_failure", message)
        } else {
            TaskError::fatal("planned_failure", message)
        });
    }
    Ok(serde_json::json!({"attempt": ctx.attempt}))
}

async fn effect(ctx: TaskContext, args: Effect) -> Result<serde_json::Value, TaskError> {
    let duration = seconds(args.seconds)?;
    tokio::select! {
        () = tokio::time::sleep(duration) => {}
        () = ctx.cancel.cancelled() => return Err(TaskError::fatal("cancelled", "stopped on request")),
    }
    let task_id = ctx.message.id.to_string();
    let written = sqlx::query(
        "INSERT INTO audit_logs (actor_id, action, job_id, details)
         SELECT 'worker', 'diagnostic.effect', $2, jsonb_build_object('task_id', $1::text, 'worker', $3::text)
         WHERE NOT EXISTS (SELECT 1 FROM audit_logs
                           WHERE action = 'diagnostic.effect' AND details->>'task_id' = $1)",
    )
    .bind(&task_id)
    .bind(ctx.message.body.job_id)
    .bind(&ctx.worker)
    .execute(&ctx.db)
    .await
    .map_err(|e| TaskError::retryable("database", e.to_string()))?;
    Ok(serde_json::json!({"written": written.rows_affected()}))
}
