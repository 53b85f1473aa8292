//! Task-runtime benchmark helper, driven by `bench/tasks.sh`.
//!
//! - `publish`: publishes N task messages with our [`Publisher`] (`publish_many` in
//!   batches: persistent, mandatory, confirmed) and reports the rate.
//! - `bare-publish` / `bare-consume`: the reference, plain lapin with the same settings
//!   (persistent, confirmed, pipelined the same way; prefetch 1 per slot, one channel per
//!   slot, acknowledgement after the message is handled) and the same message bytes.
//!   `bare-consume --record DATABASE_URL` also runs the worker's own two bookkeeping
//!   statements per message (`records::claim`, then `records::finish`) before the ack:
//!   the floor of the bookkeeping design without the rest of the runtime.
//! - `drain-watch`: watches a queue drain, the same way for every consumer measured
//!   (ours, Celery, bare lapin), so that consumer start-up time is left out: it polls the
//!   ready count with a passive `queue.declare`; t0 is the first poll that sees fewer
//!   ready messages than the queue started with, t1 the first that sees none; the rate is
//!   the messages delivered between the two divided by t1 - t0.
//!
//! Every subcommand prints one JSON object on stdout.

// A command-line report: printing to stdout is what it is for.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use deployguard::db::DatabaseConfig;
use deployguard::queue::BrokerConfig;
use deployguard::queue::topology::work_queue_arguments;
use deployguard::queue::{Broker, Publisher, TaskBody, TaskMessage, WorkQueue, parse_amqp_uri};
use deployguard_worker::records;
use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Confirmation, Connection, ConnectionProperties};
use serde_json::json;
use tokio::sync::Notify;

#[derive(Parser)]
#[command(name = "taskbench", about = "Task-runtime benchmark helper")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Publish N tasks with DeployGuard's Publisher to the default work queue.
    Publish {
        #[arg(long)]
        amqp: String,
        #[arg(long)]
        count: u64,
        #[arg(long)]
        task: String,
        /// Messages per `publish_many` call.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
    },
    /// Plain lapin publisher (reference): confirm mode, persistent, pipelined in batches.
    BarePublish {
        #[arg(long)]
        amqp: String,
        #[arg(long)]
        queue: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Declare the queue without arguments (like Celery's) instead of with the
        /// arguments of DeployGuard's work queues (x-max-priority, dead-letter exchange).
        #[arg(long)]
        plain: bool,
    },
    /// Plain lapin consumer (reference): one channel per slot, prefetch 1, ack after
    /// each message.
    BareConsume {
        #[arg(long)]
        amqp: String,
        #[arg(long)]
        queue: String,
        #[arg(long)]
        count: u64,
        #[arg(long, default_value_t = 2)]
        slots: usize,
        /// See `bare-publish --plain`.
        #[arg(long)]
        plain: bool,
        /// Record each message in this database's task_results (claim, then success)
        /// before acknowledging it, with the worker's own statements. The database is
        /// migrated first.
        #[arg(long, value_name = "DATABASE_URL")]
        record: Option<String>,
    },
    /// Watch a queue drain and report the consumers' rate.
    DrainWatch {
        #[arg(long)]
        amqp: String,
        #[arg(long)]
        queue: String,
        /// The number of messages the queue should hold before the consumers start.
        #[arg(long)]
        count: u64,
        /// Milliseconds between two polls.
        #[arg(long, default_value_t = 5)]
        interval_ms: u64,
        /// Created once the initial count has been seen: start the consumers after it.
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Give up when the ready count does not change for this long.
        #[arg(long, default_value_t = 120)]
        stall_s: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Publish {
            amqp,
            count,
            task,
            batch,
        } => publish(&amqp, count, &task, batch).await,
        Command::BarePublish {
            amqp,
            queue,
            count,
            batch,
            plain,
        } => bare_publish(&amqp, &queue, count, batch, plain).await,
        Command::BareConsume {
            amqp,
            queue,
            count,
            slots,
            plain,
            record,
        } => bare_consume(&amqp, &queue, count, slots, plain, record.as_deref()).await,
        Command::DrainWatch {
            amqp,
            queue,
            count,
            interval_ms,
            ready_file,
            stall_s,
        } => {
            drain_watch(
                &amqp,
                &queue,
                count,
                Duration::from_millis(interval_ms.max(1)),
                ready_file,
                Duration::from_secs(stall_s),
            )
            .await
        }
    }
}

fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

async fn connect(amqp: &str, name: &str) -> anyhow::Result<Connection> {
    let uri = parse_amqp_uri(amqp).map_err(|why| anyhow::anyhow!("--amqp: {why}"))?;
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect_uri(uri, properties)
        .await
        .context("connecting to RabbitMQ")
}

/// Declares a durable queue, with the work-queue arguments unless `plain`.
async fn declare(channel: &Channel, queue: &str, plain: bool) -> anyhow::Result<u32> {
    let arguments = if plain {
        FieldTable::default()
    } else {
        work_queue_arguments()
    };
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .with_context(|| format!("declaring queue {queue}"))?;
    Ok(declared.message_count())
}

// --- publish (ours) --------------------------------------------------------------------

async fn publish(amqp: &str, count: u64, task: &str, batch: usize) -> anyhow::Result<()> {
    let source = std::collections::HashMap::from([("AMQP_URL", amqp)]);
    let config = BrokerConfig::from_source(&source).context("--amqp")?;
    let broker = Arc::new(Broker::new(&config, "taskbench publish"));
    // Connecting is left out of the timing (Celery's publisher connects before its loop
    // too); the publisher's channel, its topology declaration and confirm.select are in.
    broker
        .connection()
        .await
        .context("connecting to RabbitMQ")?;
    let publisher = Publisher::new(Arc::clone(&broker));

    let batch = batch.max(1) as u64;
    let mut failed = 0u64;
    let mut first_error = None;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let n = batch.min(count - sent);
        let messages: Vec<TaskMessage> = (0..n)
            .map(|_| TaskMessage::new(task, WorkQueue::Default, TaskBody::default()))
            .collect();
        for result in publisher.publish_many(&messages).await {
            if let Err(err) = result {
                failed += 1;
                first_error.get_or_insert_with(|| err.to_string());
            }
        }
        sent += n;
    }
    let seconds = started.elapsed().as_secs_f64();
    broker.close().await;
    println!(
        "{}",
        json!({
            "what": "publish",
            "task": task,
            "count": count,
            "failed": failed,
            "first_error": first_error,
            "seconds": seconds,
            "per_second": rate(count - failed, seconds),
        })
    );
    if failed > 0 {
        bail!("{failed} of {count} publishes failed");
    }
    Ok(())
}

// --- bare lapin reference -----------------------------------------------------------

async fn bare_publish(
    amqp: &str,
    queue: &str,
    count: u64,
    batch: usize,
    plain: bool,
) -> anyhow::Result<()> {
    let connection = connect(amqp, "taskbench bare-publish").await?;
    let channel = connection.create_channel().await?;
    declare(&channel, queue, plain).await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };

    let batch = batch.max(1) as u64;
    let mut failed = 0u64;
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        let n = batch.min(count - sent);
        // The very bytes DeployGuard publishes (persistent, priority, Celery-style
        // headers, JSON body), through the default exchange.
        let encoded: Vec<_> = (0..n)
            .map(|_| {
                TaskMessage::new("bench.bare", WorkQueue::Default, TaskBody::default()).encode()
            })
            .collect();
        let pending = join_all(encoded.iter().map(|(properties, body)| {
            channel.basic_publish("".into(), queue.into(), options, body, properties.clone())
        }))
        .await;
        let confirms = pending.into_iter().map(|started| async move {
            match started {
                Ok(confirm) => matches!(confirm.await, Ok(Confirmation::Ack(None))),
                Err(_) => false,
            }
        });
        failed += join_all(confirms)
            .await
            .into_iter()
            .filter(|ok| !ok)
            .count() as u64;
        sent += n;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = connection.close(200, "done".into()).await;
    println!(
        "{}",
        json!({
            "what": "bare-publish",
            "queue": queue,
            "count": count,
            "failed": failed,
            "seconds": seconds,
            "per_second": rate(count - failed, seconds),
        })
    );
    if failed > 0 {
        bail!("{failed} of {count} publishes were not confirmed");
    }
    Ok(())
}

/// The worker's bookkeeping for one delivery: claim, (no-op), success.
async fn record(
    db: &sqlx::PgPool,
    properties: &lapin::BasicProperties,
    data: &[u8],
) -> anyhow::Result<()> {
    const WORKER: &str = "taskbench bare-consume";
    // Bare messages travel under the bench queue's name; read them as default-queue tasks.
    let message = TaskMessage::decode(properties, WorkQueue::Default.name(), data)
        .map_err(|poison| anyhow::anyhow!("undecodable message: {}", poison.reason))?;
    match records::claim(db, &message, WORKER, Duration::from_secs(60)).await? {
        records::Claim::Granted { .. } => {}
        other => bail!("task {} not claimed: {other:?}", message.id),
    }
    let finished = records::finish(
        db,
        message.id,
        WORKER,
        "success",
        None,
        Some(&serde_json::Value::Null),
    )
    .await?;
    if !finished {
        bail!(
            "task {}: the claim was lost before its outcome was written",
            message.id
        );
    }
    Ok(())
}

async fn bare_consume(
    amqp: &str,
    queue: &str,
    count: u64,
    slots: usize,
    plain: bool,
    record_in: Option<&str>,
) -> anyhow::Result<()> {
    let db = match record_in {
        Some(url) => {
            let source = std::collections::HashMap::from([("DATABASE_URL", url)]);
            let config = DatabaseConfig::from_source(&source).context("--record")?;
            deployguard::db::migrate(&config, Duration::from_secs(30))
                .await
                .context("migrating the --record database")?;
            Some(deployguard::db::pool(&config).context("--record")?)
        }
        None => None,
    };
    let connection = connect(amqp, "taskbench bare-consume").await?;
    declare(&connection.create_channel().await?, queue, plain).await?;
    let done = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(Notify::new());
    let first: Arc<std::sync::OnceLock<Instant>> = Arc::default();

    let mut tasks = Vec::new();
    for slot in 0..slots.max(1) {
        // As the worker's slots: a channel each, prefetch 1 on it.
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(1, BasicQosOptions { global: true })
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.into(),
                format!("taskbench-bare/{slot}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let (done, finished, first, db) = (
            Arc::clone(&done),
            Arc::clone(&finished),
            Arc::clone(&first),
            db.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while let Some(delivery) = consumer.next().await {
                let delivery = delivery?;
                first.get_or_init(Instant::now);
                if let Some(db) = &db
                    && let Err(err) = record(db, &delivery.properties, &delivery.data).await
                {
                    eprintln!("bare-consume: {err:#}");
                    finished.notify_one();
                    return Err(err);
                }
                channel
                    .basic_ack(delivery.delivery_tag, BasicAckOptions::default())
                    .await?;
                if done.fetch_add(1, Ordering::SeqCst) + 1 >= count {
                    finished.notify_one();
                }
            }
            anyhow::Ok(())
        }));
    }
    if count > 0 {
        let waited = finished.notified();
        tokio::pin!(waited);
        waited.as_mut().enable();
        if done.load(Ordering::SeqCst) < count {
            waited.await;
        }
    }
    let ended = Instant::now();
    let seconds = first
        .get()
        .map_or(0.0, |t| ended.duration_since(*t).as_secs_f64());
    let consumed = done.load(Ordering::SeqCst);
    for task in &tasks {
        task.abort();
    }
    let _ = connection.close(200, "done".into()).await;
    println!(
        "{}",
        json!({
            "what": "bare-consume",
            "queue": queue,
            "slots": slots,
            "recorded": db.is_some(),
            "consumed": consumed,
            "seconds": seconds,
            // From the first delivery to the last acknowledgement.
            "per_second": rate(consumed, seconds),
        })
    );
    if consumed < count {
        bail!("consumed {consumed} of {count} messages");
    }
    Ok(())
}

// --- drain-watch ---------------------------------------------------------------------

async fn ready_count(channel: &Channel, queue: &str) -> anyhow::Result<u64> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .with_context(|| format!("polling queue {queue}"))?;
    Ok(u64::from(declared.message_count()))
}

async fn drain_watch(
    amqp: &str,
    queue: &str,
    count: u64,
    interval: Duration,
    ready_file: Option<PathBuf>,
    stall: Duration,
) -> anyhow::Result<()> {
    let connection = connect(amqp, "taskbench drain-watch").await?;
    let channel = connection.create_channel().await?;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // The queue was filled before the consumers start; it must hold `count` now.
    let initial = ready_count(&channel, queue).await?;
    if initial != count {
        eprintln!("drain-watch: {queue} holds {initial} ready messages, expected {count}");
    }
    if let Some(path) = &ready_file {
        std::fs::write(path, b"watching\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut polls = 1u64;
    let mut last = initial;
    let mut last_change = Instant::now();
    let stalled = |last: u64, since: Instant| -> anyhow::Result<()> {
        if since.elapsed() > stall {
            bail!(
                "{queue}: the ready count stayed at {last} for {} s",
                stall.as_secs()
            );
        }
        Ok(())
    };

    // t0: the first poll that sees fewer messages than the queue started with.
    let (t0, ready0) = loop {
        ticker.tick().await;
        let ready = ready_count(&channel, queue).await?;
        let now = Instant::now();
        polls += 1;
        if ready < initial {
            break (now, ready);
        }
        if ready != last {
            last = ready;
            last_change = now;
        }
        stalled(last, last_change)?;
    };
    last = ready0;
    last_change = t0;
    // t1: the first poll that sees none.
    let t1 = loop {
        if last == 0 {
            break last_change;
        }
        ticker.tick().await;
        let ready = ready_count(&channel, queue).await?;
        let now = Instant::now();
        polls += 1;
        if ready != last {
            last = ready;
            last_change = now;
        } else {
            stalled(last, last_change)?;
        }
    };
    // Settle: the queue must stay empty (a requeued message would show up again here;
    // the script then checks the unacknowledged count with rabbitmqctl).
    let settle_until = Instant::now() + Duration::from_millis(500);
    let mut came_back = 0u64;
    while Instant::now() < settle_until {
        ticker.tick().await;
        came_back = came_back.max(ready_count(&channel, queue).await?);
    }
    let seconds = t1.duration_since(t0).as_secs_f64();
    let _ = connection.close(200, "done".into()).await;
    println!(
        "{}",
        json!({
            "what": "drain",
            "queue": queue,
            "initial": initial,
            "ready_at_t0": ready0,
            "seconds": seconds,
            // Messages delivered between t0 and t1: the ones still ready at t0.
            "per_second": rate(ready0, seconds),
            "polls": polls,
            "ready_after_settle": came_back,
        })
    );
    if came_back > 0 {
        bail!("{came_back} message(s) were ready again after the queue had drained");
    }
    Ok(())
}
