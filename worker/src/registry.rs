//! What a task is to the runtime: a name, a retry policy, and an async handler that
//! gets a [`TaskContext`] (the message, the database, a cancellation signal).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

use deployguard::queue::{Task, TaskMessage};
use sqlx::PgPool;
use tokio::sync::Notify;

/// When and how often a task is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: never retried).
    pub max_retries: u32,
    /// The delay before the first retry; each further retry doubles it.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Spread of the delay: `0.2` draws it from ±20 % around the exponential value.
    pub jitter: f64,
}

impl RetryPolicy {
    pub const NEVER: Self = Self {
        max_retries: 0,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(1),
        jitter: 0.0,
    };

    /// The delay before retry number `retry` (1 for the first retry), jittered by `unit`
    /// (a uniform draw from 0 to 1).
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        let nominal = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let spread = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - spread + 2.0 * spread * unit.clamp(0.0, 1.0);
        nominal.mul_f64(factor)
    }

    /// The bounds [`RetryPolicy::delay`] stays within for a retry.
    pub fn delay_bounds(&self, retry: u32) -> (Duration, Duration) {
        (self.delay(retry, 0.0), self.delay(retry, 1.0))
    }
}

/// Why a task failed, and whether trying again may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    /// A stable machine-readable code (`clone_failed`, `time_limit`, …).
    pub code: String,
    /// For people; never a secret or credential.
    pub message: String,
    pub retryable: bool,
}

impl TaskError {
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: true,
        }
    }

    pub fn fatal(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// Why a running task is asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    SoftTimeLimit = 1,
    JobCancelled = 2,
    Shutdown = 3,
    LeaseLost = 4,
}

/// A cancellation signal shared by the runtime and a running task. Async code awaits
/// [`Cancel::cancelled`]; blocking engines poll the flag from [`Cancel::flag`].
#[derive(Clone, Default)]
pub struct Cancel {
    inner: Arc<CancelInner>,
}

#[derive(Default)]
struct CancelInner {
    flag: Arc<AtomicBool>,
    reason: AtomicU8,
    notify: Notify,
}

impl Cancel {
    pub fn fire(&self, reason: StopReason) {
        let _ = self.inner.reason.compare_exchange(
            0,
            reason as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.inner.flag.store(true, Ordering::Release);
        self.inner.notify.notify_waiters();
    }

    pub fn is_cancelled(&self) -> bool {
        self.inner.flag.load(Ordering::Acquire)
    }

    /// The first reason given.
    pub fn reason(&self) -> Option<StopReason> {
        match self.inner.reason.load(Ordering::Acquire) {
            1 => Some(StopReason::SoftTimeLimit),
            2 => Some(StopReason::JobCancelled),
            3 => Some(StopReason::Shutdown),
            4 => Some(StopReason::LeaseLost),
            _ => None,
        }
    }

    /// The flag blocking code checks (the engines' `cancel` field).
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.inner.flag)
    }

    /// Resolves once the task is asked to stop.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.inner.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// What a handler gets.
pub struct TaskContext {
    pub message: TaskMessage,
    /// 1 for the first run, 2 for the first retry, …
    pub attempt: u32,
    pub db: PgPool,
    pub cancel: Cancel,
    /// This worker's identity (as recorded in `task_results.worker`).
    pub worker: String,
}

pub type TaskFuture = Pin<Box<dyn Future<Output = Result<serde_json::Value, TaskError>> + Send>>;
type Handler = Arc<dyn Fn(TaskContext) -> TaskFuture + Send + Sync>;

/// One registered task kind.
#[derive(Clone)]
pub struct TaskSpec {
    /// `T::NAME` of the [`Task`] it runs.
    pub name: &'static str,
    pub policy: RetryPolicy,
    /// Record the task in `task_results` (and so dedupe it by task id). Off only for
    /// tasks whose repetition is harmless, like Celery's `ignore_result`.
    pub recorded: bool,
    pub handler: Handler,
}

impl TaskSpec {
    /// Runs tasks of kind `T`: the handler gets the payload read from the message. A
    /// message whose body is not a `T` fails at once (`bad_arguments`, never retried).
    pub fn of<T, F, Fut>(policy: RetryPolicy, handler: F) -> Self
    where
        T: Task,
        F: Fn(TaskContext, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<serde_json::Value, TaskError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        Self {
            name: T::NAME,
            policy,
            recorded: true,
            handler: Arc::new(move |ctx| {
                let handler = Arc::clone(&handler);
                Box::pin(async move {
                    let payload = T::from_message(&ctx.message)
                        .map_err(|e| TaskError::fatal("bad_arguments", e.to_string()))?;
                    handler(ctx, payload).await
                })
            }),
        }
    }

    pub fn unrecorded(mut self) -> Self {
        self.recorded = false;
        self
    }
}

/// Tasks by name.
#[derive(Clone, Default)]
pub struct Registry {
    tasks: HashMap<&'static str, TaskSpec>,
}

impl Registry {
    pub fn register(&mut self, spec: TaskSpec) {
        self.tasks.insert(spec.name, spec);
    }

    pub fn get(&self, name: &str) -> Option<&TaskSpec> {
        self.tasks.get(name)
    }

    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.tasks.keys().copied().collect();
        names.sort_unstable();
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_within_the_jitter() {
        let policy = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(30),
            jitter: 0.25,
        };
        assert_eq!(policy.delay(1, 0.5), Duration::from_secs(2));
        assert_eq!(policy.delay(2, 0.5), Duration::from_secs(4));
        assert_eq!(policy.delay(3, 0.5), Duration::from_secs(8));
        assert_eq!(policy.delay(5, 0.5), Duration::from_secs(30));
        assert_eq!(policy.delay(40, 0.5), Duration::from_secs(30));
        assert_eq!(
            policy.delay_bounds(2),
            (Duration::from_secs(3), Duration::from_secs(5))
        );
    }

    #[tokio::test]
    async fn cancel_wakes_waiters_and_keeps_the_first_reason() {
        let cancel = Cancel::default();
        let waiter = tokio::spawn({
            let cancel = cancel.clone();
            async move { cancel.cancelled().await }
        });
        tokio::task::yield_now().await;
        cancel.fire(StopReason::JobCancelled);
        cancel.fire(StopReason::Shutdown);
        waiter.await.unwrap();
        assert!(cancel.flag().load(Ordering::Acquire));
        assert_eq!(cancel.reason(), Some(StopReason::JobCancelled));
    }
}
