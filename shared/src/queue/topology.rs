//! The broker topology every process declares at start, idempotently:
//!
//! - `deployguard.tasks` (direct): the work exchange; each work queue is bound with its
//!   own name as the routing key.
//! - four work queues (`deployguard`, `deployguard.scan`, `deployguard.clean`,
//!   `deployguard.push`): durable classic queues with `x-max-priority` and the dead-letter
//!   exchange.
//! - `deployguard.dlx` (fanout) → `deployguard.dead`: parked messages with their reason.
//! - `deployguard.retry` (headers) → one delay queue per backoff tier
//!   (`deployguard.delay.4s`, …). Each tier has a per-queue TTL and dead-letters back to
//!   the work exchange with the message's own routing key, so a retried task lands in
//!   the queue it came from. One queue per tier, because messages with different
//!   per-message TTLs in one queue wait behind each other.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use super::QueueError;

pub const WORK_EXCHANGE: &str = "deployguard.tasks";
pub const DEAD_LETTER_EXCHANGE: &str = "deployguard.dlx";
pub const DEAD_LETTER_QUEUE: &str = "deployguard.dead";
pub const RETRY_EXCHANGE: &str = "deployguard.retry";
/// The header the retry exchange routes on (headers starting `x-` are not matched).
pub const DELAY_TIER_HEADER: &str = "deployguard-delay";
/// The broker's priority levels: 0 low, 1 normal, 2 high. RabbitMQ keeps a sub-queue
/// per level and walks them on every enqueue and fetch; with three levels a work queue
/// drains about as fast as one without priorities, with ten it was a fifth slower
/// (bench/RESULTS.md). Jobs keep their finer 0–9 scale; [`message_priority`] maps it.
pub const MAX_PRIORITY: u8 = 2;
/// The level of a message that names none (a job's default priority 5 maps here too).
pub const NORMAL_PRIORITY: u8 = 1;

/// The message priority for a job priority (0 lowest … 9 highest): 0–3 low, 4–6
/// normal, 7–9 high. Out-of-range values clamp to the nearest end.
pub fn message_priority(job_priority: i16) -> u8 {
    match job_priority {
        ..=3 => 0,
        4..=6 => NORMAL_PRIORITY,
        _ => MAX_PRIORITY,
    }
}

/// Delay tiers, in seconds: powers of two up to the one-hour hard time limit.
pub const DELAY_TIERS: [u64; 13] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600];

/// A work queue. The declaration order is the order a worker serving several queues
/// takes work in: scan before clean before push before maintenance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkQueue {
    Scan,
    Clean,
    Push,
    Default,
}

impl WorkQueue {
    pub const ALL: [WorkQueue; 4] = [Self::Scan, Self::Clean, Self::Push, Self::Default];

    /// The queue's name on the broker (also its routing key).
    pub fn name(self) -> &'static str {
        match self {
            Self::Scan => "deployguard.scan",
            Self::Clean => "deployguard.clean",
            Self::Push => "deployguard.push",
            Self::Default => "deployguard",
        }
    }

    /// The short name used on command lines (`--queues scan,clean`).
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Scan => "scan",
            Self::Clean => "clean",
            Self::Push => "push",
            Self::Default => "default",
        }
    }

    /// Accepts the short name or the broker name.
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        Self::ALL
            .into_iter()
            .find(|q| q.short_name() == raw || q.name() == raw)
    }

    /// Parses a comma-separated list; the result is in priority order without repeats.
    pub fn parse_list(raw: &str) -> Result<Vec<Self>, String> {
        let mut queues = Vec::new();
        for part in raw.split(',').filter(|p| !p.trim().is_empty()) {
            let queue = Self::parse(part).ok_or_else(|| {
                format!("unknown queue {part:?} (expected scan, clean, push or default)")
            })?;
            if !queues.contains(&queue) {
                queues.push(queue);
            }
        }
        if queues.is_empty() {
            return Err("no queue given".into());
        }
        queues.sort();
        Ok(queues)
    }
}

/// The delay tier for a wanted delay: the shortest tier at least as long. The message
/// carries the exact delay as its own expiration, so it waits `delay` unless a message
/// ahead of it in the same tier expires later (at most the tier's width).
pub fn delay_tier(delay: Duration) -> u64 {
    let secs = delay.as_secs_f64().ceil() as u64;
    DELAY_TIERS
        .into_iter()
        .find(|&tier| tier >= secs)
        .unwrap_or(DELAY_TIERS[DELAY_TIERS.len() - 1])
}

/// The name of a delay tier's queue.
pub fn delay_queue_name(tier: u64) -> String {
    format!("deployguard.delay.{tier}s")
}

fn table(entries: impl IntoIterator<Item = (&'static str, AMQPValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(ShortString::from(key), value);
    }
    table
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

/// The arguments a work queue is declared with.
pub fn work_queue_arguments() -> FieldTable {
    table([
        ("x-max-priority", AMQPValue::ShortShortUInt(MAX_PRIORITY)),
        ("x-dead-letter-exchange", text(DEAD_LETTER_EXCHANGE)),
    ])
}

/// Declares the whole topology. Safe to call from every process at every start; a
/// queue that already exists with other arguments is reported by name with the
/// argument the broker says differs (the channel is closed by the broker then).
pub async fn declare_topology(channel: &Channel) -> Result<(), QueueError> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for (name, kind) in [
        (WORK_EXCHANGE, ExchangeKind::Direct),
        (DEAD_LETTER_EXCHANGE, ExchangeKind::Fanout),
        (RETRY_EXCHANGE, ExchangeKind::Headers),
    ] {
        channel
            .exchange_declare(name.into(), kind, durable, FieldTable::default())
            .await
            .map_err(|e| topology_error("exchange", name, &e))?;
    }

    for queue in WorkQueue::ALL {
        declare_queue(channel, queue.name(), work_queue_arguments()).await?;
        bind(
            channel,
            queue.name(),
            WORK_EXCHANGE,
            queue.name(),
            FieldTable::default(),
        )
        .await?;
    }

    declare_queue(channel, DEAD_LETTER_QUEUE, FieldTable::default()).await?;
    bind(
        channel,
        DEAD_LETTER_QUEUE,
        DEAD_LETTER_EXCHANGE,
        "",
        FieldTable::default(),
    )
    .await?;

    for tier in DELAY_TIERS {
        let name = delay_queue_name(tier);
        let arguments = table([
            ("x-message-ttl", AMQPValue::LongUInt((tier * 1000) as u32)),
            ("x-dead-letter-exchange", text(WORK_EXCHANGE)),
        ]);
        declare_queue(channel, &name, arguments).await?;
        let matching = table([
            ("x-match", text("all")),
            (DELAY_TIER_HEADER, text(&tier.to_string())),
        ]);
        bind(channel, &name, RETRY_EXCHANGE, "", matching).await?;
    }
    Ok(())
}

async fn declare_queue(
    channel: &Channel,
    name: &str,
    arguments: FieldTable,
) -> Result<(), QueueError> {
    let options = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel
        .queue_declare(name.into(), options, arguments)
        .await
        .map(drop)
        .map_err(|e| topology_error("queue", name, &e))
}

async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    routing_key: &str,
    arguments: FieldTable,
) -> Result<(), QueueError> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            routing_key.into(),
            QueueBindOptions::default(),
            arguments,
        )
        .await
        .map_err(|e| topology_error("binding of queue", queue, &e))
}

fn topology_error(what: &str, name: &str, err: &lapin::Error) -> QueueError {
    let text = err.to_string();
    // PRECONDITION_FAILED (406): "inequivalent arg 'x-max-priority' for queue … received
    // … but current is …". The broker's text already names the argument and both values.
    if text.contains("PRECONDITION_FAILED") || text.contains("inequivalent") {
        QueueError::Topology(format!(
            "{what} {name} already exists with different settings than DeployGuard declares \
             ({text}); delete it (its messages are lost) or move them elsewhere, then restart"
        ))
    } else {
        QueueError::from_lapin(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_priorities_map_onto_three_broker_levels() {
        let levels: Vec<u8> = (-1..=10).map(message_priority).collect();
        assert_eq!(levels, [0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2]);
    }

    #[test]
    fn queue_lists_are_parsed_into_priority_order() {
        assert_eq!(
            WorkQueue::parse_list("default,push, scan,deployguard.clean,scan").unwrap(),
            vec![
                WorkQueue::Scan,
                WorkQueue::Clean,
                WorkQueue::Push,
                WorkQueue::Default
            ]
        );
        assert!(
            WorkQueue::parse_list("scan,bogus")
                .unwrap_err()
                .contains("bogus")
        );
        assert!(WorkQueue::parse_list(" , ").is_err());
    }

    #[test]
    fn delays_go_to_the_shortest_tier_that_is_long_enough() {
        assert_eq!(delay_tier(Duration::from_millis(10)), 1);
        assert_eq!(delay_tier(Duration::from_secs(1)), 1);
        assert_eq!(delay_tier(Duration::from_millis(1001)), 2);
        assert_eq!(delay_tier(Duration::from_secs(5)), 8);
        assert_eq!(delay_tier(Duration::from_secs(3000)), 3600);
        assert_eq!(delay_tier(Duration::from_secs(90_000)), 3600);
    }
}
