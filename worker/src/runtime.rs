//! The consume loop: slots, claims, time limits, retries, dead letters, shutdown.
//!
//! Each slot owns one channel with a prefetch of one, so the worker never holds more
//! messages than it has free slots. A slot serving one queue keeps a consumer on it. A
//! slot serving several takes work in queue order (scan, clean, push, default) with
//! `basic.get`, and only when all are empty waits on consumers for whichever message
//! comes first. Within a queue the broker hands out higher priorities first.
//!
//! A message is acknowledged only after its outcome is in PostgreSQL. If the worker
//! dies first, the broker redelivers it; the task's claim in `task_results` tells the
//! next worker whether it finished (acknowledge, do nothing), is still running
//! elsewhere within its lease (come back later through a delay queue), or is free to run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::settings::WorkerConfig;
use deployguard::jobs::JobStatus;
use deployguard::queue::message::Poison;
use deployguard::queue::{Broker, Publisher, TaskMessage, WorkQueue};
use futures_util::StreamExt;
use futures_util::stream::select_all;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicQosOptions,
};
use lapin::types::FieldTable;
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::records::{self, Claim};
use crate::registry::{Cancel, Registry, StopReason, TaskContext, TaskError, TaskSpec};

/// The two steps of a graceful shutdown, as signals the slots watch.
#[derive(Clone)]
pub struct Signals {
    /// Take no new messages.
    pub stop: watch::Receiver<bool>,
    /// The grace period is over: give running tasks back to the broker.
    pub abandon: watch::Receiver<bool>,
}

async fn raised(signal: &watch::Receiver<bool>) {
    let mut signal = signal.clone();
    let _ = signal.wait_for(|raised| *raised).await;
}

fn is_raised(signal: &watch::Receiver<bool>) -> bool {
    *signal.borrow()
}

type LapinResult<T> = Result<T, lapin::Error>;

pub struct Runtime {
    pub broker: Arc<Broker>,
    pub publisher: Arc<Publisher>,
    pub db: PgPool,
    pub registry: Registry,
    pub config: WorkerConfig,
    pub identity: String,
    pub metrics: Arc<Metrics>,
    running: Mutex<HashMap<Uuid, (Option<Uuid>, Cancel)>>,
}

/// How a run ended.
enum Outcome {
    Done(Result<serde_json::Value, TaskError>),
    Panicked,
    HardLimit(Duration),
    Abandoned,
}

impl Runtime {
    pub fn new(
        broker: Arc<Broker>,
        publisher: Arc<Publisher>,
        db: PgPool,
        registry: Registry,
        config: WorkerConfig,
        identity: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            broker,
            publisher,
            db,
            registry,
            config,
            identity,
            metrics,
            running: Mutex::default(),
        }
    }

    /// Runs every slot until the signals say stop; returns when all slots are done.
    pub async fn run(self: Arc<Self>, signals: Signals) {
        let slots: Vec<_> = (0..self.config.concurrency)
            .map(|index| tokio::spawn(Arc::clone(&self).slot(index, signals.clone())))
            .collect();
        for slot in slots {
            if let Err(err) = slot.await {
                tracing::error!(error = %err, "a worker slot crashed");
            }
        }
    }

    /// Asks every running task of `job_id` to stop (the job was cancelled).
    pub fn cancel_job(&self, job_id: Uuid) -> usize {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut hit = 0;
        for (job, cancel) in running.values() {
            if *job == Some(job_id) {
                cancel.fire(StopReason::JobCancelled);
                hit += 1;
            }
        }
        hit
    }

    async fn slot(self: Arc<Self>, index: usize, signals: Signals) {
        let mut backoff = Duration::from_millis(200);
        while !is_raised(&signals.stop) {
            let served = match self.broker.channel().await {
                Ok(channel) => self
                    .serve(index, channel, &signals, &mut backoff)
                    .await
                    .map_err(|e| e.to_string()),
                Err(err) => Err(err.to_string()),
            };
            match served {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(slot = index, error = %err, "broker channel lost; reconnecting");
                    let pause = backoff.mul_f64(0.5 + fastrand::f64());
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = raised(&signals.stop) => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Serves on one channel until shutdown (`Ok`) or until the channel fails (`Err`).
    async fn serve(
        &self,
        index: usize,
        channel: Channel,
        signals: &Signals,
        backoff: &mut Duration,
    ) -> LapinResult<()> {
        channel
            .basic_qos(1, BasicQosOptions { global: true })
            .await?;
        *backoff = Duration::from_millis(200);
        let queues = self.config.queues.clone();
        let mut consumers_made = 0u64;
        // A consumer on `queue` with a tag naming this worker, slot and queue.
        let mut consume = |queue: WorkQueue| {
            consumers_made += 1;
            let tag = format!(
                "{}/{}/{}/{consumers_made}",
                self.identity,
                index,
                queue.short_name()
            );
            channel.basic_consume(
                queue.name().into(),
                tag.into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
        };

        if let [queue] = queues[..] {
            let mut consumer = consume(queue).await?;
            loop {
                let next = tokio::select! {
                    next = consumer.next() => next,
                    () = raised(&signals.stop) => return self.close(&channel).await,
                };
                match next {
                    Some(Ok(delivery)) => self.handle(&channel, queue, delivery, signals).await?,
                    Some(Err(err)) => return Err(err),
                    None => {
                        return Err(lapin::ErrorKind::InvalidChannelState(
                            lapin::ChannelState::Closed,
                            "the broker cancelled the consumer",
                        )
                        .into());
                    }
                }
                if is_raised(&signals.stop) {
                    return self.close(&channel).await;
                }
            }
        }

        loop {
            if is_raised(&signals.stop) {
                return self.close(&channel).await;
            }
            let mut taken = None;
            for &queue in &queues {
                if let Some(message) = channel
                    .basic_get(queue.name().into(), BasicGetOptions { no_ack: false })
                    .await?
                {
                    taken = Some((queue, message.delivery));
                    break;
                }
            }
            if let Some((queue, delivery)) = taken {
                self.handle(&channel, queue, delivery, signals).await?;
                continue;
            }
            // Every queue is empty: wait for the first message on any of them. The
            // channel's prefetch of one means only one can arrive before the consumers
            // are cancelled.
            let mut consumers = Vec::with_capacity(queues.len());
            for &queue in &queues {
                consumers.push((queue, consume(queue).await?));
            }
            let tags: Vec<_> = consumers.iter().map(|(_, c)| c.tag()).collect();
            let mut merged = select_all(
                consumers
                    .into_iter()
                    .map(|(queue, consumer)| consumer.map(move |d| (queue, d))),
            );
            let first = tokio::select! {
                first = merged.next() => first,
                () = raised(&signals.stop) => return self.close(&channel).await,
            };
            for tag in tags {
                channel
                    .basic_cancel(tag, BasicCancelOptions::default())
                    .await?;
            }
            match first {
                Some((queue, Ok(delivery))) => {
                    self.handle(&channel, queue, delivery, signals).await?
                }
                Some((_, Err(err))) => return Err(err),
                None => {
                    return Err(lapin::ErrorKind::InvalidChannelState(
                        lapin::ChannelState::Closed,
                        "the broker cancelled the consumers",
                    )
                    .into());
                }
            }
        }
    }

    /// Closing the channel gives every unacknowledged message back to the broker.
    async fn close(&self, channel: &Channel) -> LapinResult<()> {
        let _ = channel.close(200, "worker shutting down".into()).await;
        Ok(())
    }

    async fn handle(
        &self,
        channel: &Channel,
        queue: WorkQueue,
        delivery: Delivery,
        signals: &Signals,
    ) -> LapinResult<()> {
        let message = match TaskMessage::decode(
            &delivery.properties,
            delivery.routing_key.as_str(),
            &delivery.data,
        ) {
            Ok(message) => message,
            Err(poison) => return self.park_poison(channel, queue, &delivery, poison).await,
        };
        self.metrics.task(&self.metrics.received, &message.task);
        let Some(spec) = self.registry.get(&message.task).cloned() else {
            let poison = Poison {
                reason: format!("unknown task {:?}", message.task),
                task_id: Some(message.id),
                job_id: message.body.job_id,
                task: Some(message.task.clone()),
            };
            return self.park_poison(channel, queue, &delivery, poison).await;
        };
        let span = tracing::info_span!(
            "task",
            task = %message.task,
            task_id = %message.id,
            job_id = message.body.job_id.map(|j| j.to_string()),
            user_id = message.body.user_id.as_deref(),
            retries = message.retries,
        );

        if message.expires.is_some_and(|at| at < chrono::Utc::now()) {
            tracing::info!(parent: &span, "task expired before it started; dropped");
            let unrun = records::Unrun {
                task_id: message.id,
                task: &message.task,
                job_id: message.body.job_id,
                queue: queue.name(),
                state: "revoked",
                error: "expired before it started",
            };
            let recorded =
                records::record_unrun(&self.db, &self.identity, &unrun, self.config.lease).await;
            return self
                .ack_if(channel, &delivery, recorded, "recording an expired task")
                .await;
        }

        let mut attempt = message.retries + 1;
        // The claim reads the job's status in the same statement; an unrecorded task
        // asks for it on its own.
        let mut job_status = None;
        if spec.recorded {
            match records::claim(&self.db, &message, &self.identity, self.config.lease).await {
                Ok(Claim::Granted {
                    attempt: granted,
                    job_status: status,
                }) => {
                    attempt = granted;
                    job_status = status;
                }
                Ok(Claim::Finished(_) | Claim::Superseded) => {
                    tracing::info!(parent: &span, "duplicate delivery of a finished task; acknowledged");
                    self.metrics.task(&self.metrics.duplicates, &message.task);
                    return ack(channel, &delivery).await;
                }
                Ok(Claim::Held { worker }) => {
                    // Running elsewhere (or its worker died less than a lease ago): come
                    // back after the lease, when it is finished or free to take over.
                    tracing::info!(parent: &span, holder = %worker, "task is running on another worker; deferred");
                    self.metrics.task(&self.metrics.duplicates, &message.task);
                    return match self
                        .publisher
                        .publish_delayed(&message, self.config.lease)
                        .await
                    {
                        Ok(()) => ack(channel, &delivery).await,
                        Err(err) => {
                            self.requeue_later(channel, &delivery, &err.to_string())
                                .await
                        }
                    };
                }
                Err(err) => {
                    return self
                        .requeue_later(channel, &delivery, &err.to_string())
                        .await;
                }
            }
        }

        if let Some(job_id) = message.body.job_id.filter(|_| !spec.recorded) {
            match records::job_status(&self.db, job_id).await {
                Ok(status) => job_status = status,
                Err(err) => {
                    return self
                        .requeue_later(channel, &delivery, &err.to_string())
                        .await;
                }
            }
        }
        if let Some(status) = job_status.filter(|s| s.is_stopped()) {
            tracing::info!(parent: &span, status = status.as_str(), "job already stopped; task not run");
            let recorded = records::finish(
                &self.db,
                message.id,
                &self.identity,
                "revoked",
                Some(&format!("job is {status}")),
                None,
            )
            .await;
            return self
                .ack_if(channel, &delivery, recorded, "recording a revoked task")
                .await;
        }

        let outcome = self.execute(&spec, &message, attempt, signals, &span).await;
        self.settle(channel, queue, &delivery, &spec, &message, outcome, &span)
            .await
    }

    async fn execute(
        &self,
        spec: &TaskSpec,
        message: &TaskMessage,
        attempt: u32,
        signals: &Signals,
        span: &tracing::Span,
    ) -> (Outcome, Cancel) {
        let cancel = Cancel::default();
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(message.id, (message.body.job_id, cancel.clone()));
        self.metrics.task(&self.metrics.started, &message.task);
        self.metrics.in_flight.inc();
        if let Some(sent) = message.published_at_ms {
            let waited = chrono::Utc::now().timestamp_millis() - sent;
            self.metrics
                .publish_to_start
                .observe(waited.max(0) as f64 / 1000.0);
        }
        tracing::info!(parent: span, attempt, "task started");

        let hard = message
            .timelimit
            .1
            .map_or(self.config.hard_time_limit, Duration::from_secs);
        let soft = message
            .timelimit
            .0
            .map_or(self.config.soft_time_limit, Duration::from_secs)
            .min(hard);
        let context = TaskContext {
            message: message.clone(),
            attempt,
            db: self.db.clone(),
            cancel: cancel.clone(),
            worker: self.identity.clone(),
        };
        let started = Instant::now();
        let mut task = tokio::spawn((spec.handler)(context));
        let heartbeat = self.heartbeat(spec.recorded, message.id, cancel.clone());
        tokio::pin!(heartbeat);
        let now = tokio::time::Instant::now();
        // Limits come from headers too; an absurd one must not overflow the clock.
        let year = Duration::from_secs(365 * 86_400);
        let soft_at = now + soft.min(year);
        let hard_at = now + hard.min(year);
        let mut soft_fired = false;
        let outcome = loop {
            // Biased: a task that finished at the instant a limit or the shutdown fires
            // keeps its result.
            tokio::select! {
                biased;
                joined = &mut task => break match joined {
                    Ok(result) => Outcome::Done(result),
                    Err(_) => Outcome::Panicked,
                },
                () = tokio::time::sleep_until(soft_at), if !soft_fired => {
                    soft_fired = true;
                    tracing::warn!(parent: span, limit_s = soft.as_secs_f64(), "soft time limit reached; asking the task to stop");
                    cancel.fire(StopReason::SoftTimeLimit);
                }
                () = tokio::time::sleep_until(hard_at) => {
                    tracing::error!(parent: span, limit_s = hard.as_secs_f64(), "hard time limit reached; killing the task");
                    cancel.fire(StopReason::SoftTimeLimit);
                    task.abort();
                    // Dropping the task's future kills its child processes (kill_on_drop).
                    break match (&mut task).await {
                        Ok(result) => Outcome::Done(result),
                        Err(_) => Outcome::HardLimit(hard),
                    };
                }
                () = &mut heartbeat => {}
                () = raised(&signals.abandon) => {
                    cancel.fire(StopReason::Shutdown);
                    task.abort();
                    break match (&mut task).await {
                        Ok(result) => Outcome::Done(result),
                        Err(_) => Outcome::Abandoned,
                    };
                }
            }
        };
        let elapsed = started.elapsed();
        self.metrics.in_flight.dec();
        self.metrics
            .duration
            .get_or_create(&crate::metrics::TaskLabel {
                task: message.task.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&message.id);
        tracing::info!(parent: span, duration_ms = elapsed.as_millis() as u64, "task ended");
        (outcome, cancel)
    }

    /// Keeps the claim alive and watches the job; never returns for a recorded task.
    async fn heartbeat(&self, recorded: bool, task_id: Uuid, cancel: Cancel) {
        if !recorded {
            return std::future::pending().await;
        }
        let every = (self.config.lease / 4).max(Duration::from_millis(200));
        let mut last_beat = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match records::heartbeat(&self.db, task_id, &self.identity).await {
                Ok(None) => cancel.fire(StopReason::LeaseLost),
                Ok(Some(status)) => {
                    last_beat = Instant::now();
                    if status.is_some_and(JobStatus::is_stopped) {
                        cancel.fire(StopReason::JobCancelled);
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "task heartbeat failed");
                    // Unheard of for most of a lease: another worker may take the task
                    // over soon, so this one stops rather than run it twice.
                    if last_beat.elapsed() > self.config.lease.mul_f64(0.75) {
                        cancel.fire(StopReason::LeaseLost);
                    }
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn settle(
        &self,
        channel: &Channel,
        queue: WorkQueue,
        delivery: &Delivery,
        spec: &TaskSpec,
        message: &TaskMessage,
        (outcome, cancel): (Outcome, Cancel),
        span: &tracing::Span,
    ) -> LapinResult<()> {
        let task = message.task.as_str();
        let failure = match outcome {
            Outcome::Abandoned => {
                // Shutdown: give the claim back; closing the channel requeues the message.
                if spec.recorded {
                    let _ = records::release(&self.db, message.id, &self.identity).await;
                }
                tracing::warn!(parent: span, "shutdown grace period over; task handed back to the broker");
                return Ok(());
            }
            _ if cancel.reason() == Some(StopReason::LeaseLost) => {
                return self.lost_claim(channel, delivery, span).await;
            }
            _ if cancel.reason() == Some(StopReason::JobCancelled) => {
                tracing::info!(parent: span, "job cancelled; task stopped");
                let recorded = self
                    .record(spec, message, "revoked", Some("job cancelled"), None)
                    .await;
                return self
                    .ack_if(channel, delivery, recorded, "recording a revoked task")
                    .await;
            }
            Outcome::Done(Ok(result)) => {
                let recorded = self
                    .record(spec, message, "success", None, Some(&result))
                    .await;
                self.metrics.task(&self.metrics.succeeded, task);
                return self
                    .ack_if(channel, delivery, recorded, "recording a success")
                    .await;
            }
            Outcome::Done(Err(_)) if cancel.reason() == Some(StopReason::SoftTimeLimit) => {
                TaskError::fatal(
                    "time_limit",
                    "the task exceeded its soft time limit and stopped",
                )
            }
            Outcome::Done(Err(err)) => err,
            Outcome::Panicked => TaskError::fatal("internal_error", "the task crashed"),
            Outcome::HardLimit(limit) => TaskError::fatal(
                "time_limit",
                format!(
                    "the task exceeded its hard time limit of {} s and was killed",
                    limit.as_secs()
                ),
            ),
        };

        if failure.retryable && message.retries < spec.policy.max_retries {
            let retry = message.retries + 1;
            let delay = spec.policy.delay(retry, fastrand::f64());
            tracing::warn!(parent: span, error = %failure, retry, delay_ms = delay.as_millis() as u64, "task failed; retrying");
            if spec.recorded {
                match records::heartbeat(&self.db, message.id, &self.identity).await {
                    Ok(Some(_)) => {}
                    Ok(None) => return self.lost_claim(channel, delivery, span).await,
                    Err(err) => {
                        return self
                            .requeue_later(channel, delivery, &err.to_string())
                            .await;
                    }
                }
            }
            // The next attempt is confirmed in its delay queue before the record says
            // so; if publishing fails, the claim is given back and this message requeued.
            let mut again = message.clone();
            again.retries = retry;
            if let Err(err) = self.publisher.publish_delayed(&again, delay).await {
                if spec.recorded {
                    let _ = records::release(&self.db, message.id, &self.identity).await;
                }
                return self
                    .requeue_later(channel, delivery, &err.to_string())
                    .await;
            }
            self.metrics.task(&self.metrics.retried, task);
            if !spec.recorded {
                return ack(channel, delivery).await;
            }
            let recorded = records::schedule_retry(
                &self.db,
                message.id,
                &self.identity,
                retry + 1,
                &failure.to_string(),
            )
            .await;
            return self
                .ack_if(channel, delivery, recorded, "recording a retry")
                .await;
        }

        if failure.retryable {
            let reason = format!("gave up after {} attempts: {failure}", message.retries + 1);
            tracing::error!(parent: span, %reason, "task failed for good; dead-lettered");
            if let Err(err) = self
                .publisher
                .publish_dead_letter(&delivery.properties, &delivery.data, queue.name(), &reason)
                .await
            {
                return self
                    .requeue_later(channel, delivery, &err.to_string())
                    .await;
            }
            self.metrics.task(&self.metrics.dead_lettered, task);
            self.metrics.task(&self.metrics.failed, task);
            let recorded = self
                .fail(spec, message, "retries_exhausted", &reason, "dead_lettered")
                .await;
            return self
                .ack_if(
                    channel,
                    delivery,
                    recorded,
                    "recording a dead-lettered task",
                )
                .await;
        }

        tracing::error!(parent: span, error = %failure, "task failed");
        self.metrics.task(&self.metrics.failed, task);
        let recorded = self
            .fail(spec, message, &failure.code, &failure.message, "failure")
            .await;
        self.ack_if(channel, delivery, recorded, "recording a failure")
            .await
    }

    async fn record(
        &self,
        spec: &TaskSpec,
        message: &TaskMessage,
        state: &str,
        error: Option<&str>,
        result: Option<&serde_json::Value>,
    ) -> Result<bool, sqlx::Error> {
        if !spec.recorded {
            return Ok(true);
        }
        records::finish(&self.db, message.id, &self.identity, state, error, result).await
    }

    /// Records a failure and fails the job, unless the claim was lost to another worker
    /// (then the job is that worker's business).
    async fn fail(
        &self,
        spec: &TaskSpec,
        message: &TaskMessage,
        code: &str,
        reason: &str,
        state: &str,
    ) -> Result<(), sqlx::Error> {
        // One transaction: a worker dying in between must not leave a failed task whose
        // job still looks alive (its redelivered copy would find the task finished).
        if !spec.recorded && message.body.job_id.is_none() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        if spec.recorded {
            let error = format!("{code}: {reason}");
            let owned = records::finish(
                &mut *tx,
                message.id,
                &self.identity,
                state,
                Some(&error),
                None,
            )
            .await?;
            if !owned {
                tracing::warn!(task_id = %message.id, "claim lost to another worker; job left alone");
                return Ok(());
            }
        }
        if let Some(job_id) = message.body.job_id {
            records::fail_job(&mut *tx, job_id, code, reason).await?;
        }
        tx.commit().await
    }

    async fn lost_claim(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        span: &tracing::Span,
    ) -> LapinResult<()> {
        tracing::warn!(parent: span, "lost the task's claim to another worker; outcome not recorded");
        ack(channel, delivery).await
    }

    /// A message that cannot run: parked in the dead-letter queue with the reason, its
    /// job (if any could be read) failed, its task (if it has an id) recorded.
    async fn park_poison(
        &self,
        channel: &Channel,
        queue: WorkQueue,
        delivery: &Delivery,
        poison: Poison,
    ) -> LapinResult<()> {
        let task = poison.task.clone().unwrap_or_else(|| "unknown".into());
        tracing::error!(
            reason = %poison.reason,
            task = %task,
            task_id = poison.task_id.map(|t| t.to_string()),
            job_id = poison.job_id.map(|j| j.to_string()),
            queue = queue.name(),
            "message cannot be run; dead-lettered"
        );
        self.metrics.task(&self.metrics.dead_lettered, &task);
        let parked = self
            .publisher
            .publish_dead_letter(
                &delivery.properties,
                &delivery.data,
                queue.name(),
                &poison.reason,
            )
            .await;
        let mut recorded = Ok(());
        if let Some(job_id) = poison.job_id {
            recorded = records::fail_job(&self.db, job_id, "invalid_task_message", &poison.reason)
                .await
                .map(drop);
        }
        if let (Some(task_id), Ok(())) = (poison.task_id, &recorded) {
            let unrun = records::Unrun {
                task_id,
                task: &task,
                job_id: poison.job_id,
                queue: queue.name(),
                state: "dead_lettered",
                error: &poison.reason,
            };
            recorded =
                records::record_unrun(&self.db, &self.identity, &unrun, self.config.lease).await;
        }
        if let Err(err) = recorded {
            return self
                .requeue_later(channel, delivery, &err.to_string())
                .await;
        }
        match parked {
            Ok(()) => ack(channel, delivery).await,
            // The queue's own dead-letter exchange still parks it (without our reason).
            Err(_) => {
                channel
                    .basic_nack(
                        delivery.delivery_tag,
                        BasicNackOptions {
                            multiple: false,
                            requeue: false,
                        },
                    )
                    .await
            }
        }
    }

    async fn ack_if<T>(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        recorded: Result<T, sqlx::Error>,
        what: &str,
    ) -> LapinResult<()> {
        match recorded {
            Ok(_) => ack(channel, delivery).await,
            Err(err) => {
                self.requeue_later(channel, delivery, &format!("{what}: {err}"))
                    .await
            }
        }
    }

    /// The database or broker failed mid-way: the message goes back to its queue after
    /// a pause, unacknowledged work is never dropped.
    async fn requeue_later(
        &self,
        channel: &Channel,
        delivery: &Delivery,
        why: &str,
    ) -> LapinResult<()> {
        tracing::warn!(
            error = why,
            "cannot record the task's outcome; requeueing the message"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        channel
            .basic_nack(
                delivery.delivery_tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: true,
                },
            )
            .await
    }
}

async fn ack(channel: &Channel, delivery: &Delivery) -> LapinResult<()> {
    channel
        .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
        .await
}
