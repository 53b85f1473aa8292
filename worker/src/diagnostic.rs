//! Diagnostic tasks, registered only with `WORKER_DIAGNOSTIC_TASKS=true`: what tests
//! and benchmarks run through the real runtime.
//!
//! - `deployguard.diagnostic.noop`: returns at once (recorded in `task_results`).
//! - `deployguard.diagnostic.noop_unrecorded`: the same without bookkeeping.
//! - `deployguard.diagnostic.sleep`: `{seconds, child, ignore_cancel, pid_file}`; sleeps,
//!   optionally in a `sleep` child process whose pid is written to `pid_file`.
//! - `deployguard.diagnostic.fail`: `{times, retryable}`; fails the first `times`
//!   attempts, then succeeds; each attempt writes an audit row (for backoff checks).
//! - `deployguard.diagnostic.effect`: `{seconds}`; waits, then writes one audit row for
//!   its task id (at most one, whatever the redeliveries).

use std::time::Duration;

use crate::registry::{Registry, RetryPolicy, TaskContext, TaskError, TaskSpec};

pub const NOOP: &str = "deployguard.diagnostic.noop";
pub const NOOP_UNRECORDED: &str = "deployguard.diagnostic.noop_unrecorded";
pub const SLEEP: &str = "deployguard.diagnostic.sleep";
pub const FAIL: &str = "deployguard.diagnostic.fail";
pub const EFFECT: &str = "deployguard.diagnostic.effect";

/// The retry policy of `fail`: quick, so tests see several retries.
pub const FAIL_POLICY: RetryPolicy = RetryPolicy {
    max_retries: 3,
    base_delay: Duration::from_secs(1),
    max_delay: Duration::from_secs(8),
    jitter: 0.2,
};

pub fn register(registry: &mut Registry) {
    registry.register(TaskSpec::new(NOOP, RetryPolicy::NEVER, |_| async {
        Ok(serde_json::Value::Null)
    }));
    registry.register(
        TaskSpec::new(NOOP_UNRECORDED, RetryPolicy::NEVER, |_| async {
            Ok(serde_json::Value::Null)
        })
        .unrecorded(),
    );
    registry.register(TaskSpec::new(SLEEP, RetryPolicy::NEVER, sleep));
    registry.register(TaskSpec::new(FAIL, FAIL_POLICY, fail));
    registry.register(TaskSpec::new(EFFECT, RetryPolicy::NEVER, effect));
}

fn seconds(ctx: &TaskContext) -> Result<Duration, TaskError> {
    let secs: f64 = ctx.arg("seconds")?.unwrap_or(0.0);
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(TaskError::fatal(
            "bad_arguments",
            "seconds must be 0 to 86400",
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

async fn sleep(ctx: TaskContext) -> Result<serde_json::Value, TaskError> {
    let duration = seconds(&ctx)?;
    let ignore_cancel: bool = ctx.arg("ignore_cancel")?.unwrap_or(false);
    let in_child: bool = ctx.arg("child")?.unwrap_or(false);
    let pid_file: Option<String> = ctx.arg("pid_file")?;
    let wait = async {
        if in_child {
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
    if ignore_cancel {
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

async fn fail(ctx: TaskContext) -> Result<serde_json::Value, TaskError> {
    let times: u32 = ctx.arg("times")?.unwrap_or(u32::MAX);
    let retryable: bool = ctx.arg("retryable")?.unwrap_or(true);
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

async fn effect(ctx: TaskContext) -> Result<serde_json::Value, TaskError> {
    let duration = seconds(&ctx)?;
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
