//! Publishing with publisher confirms, pipelined.
//!
//! One confirm-mode channel is shared by every caller of a [`Publisher`]: concurrent
//! publishes are in flight together and each caller awaits only its own confirm, so a
//! burst costs one round trip, not one per message. A publish is done only when the
//! broker has confirmed it (persistent messages: written to disk) and routed it to a
//! queue; anything else is an error the caller sees.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::{BasicProperties, Channel};
use lapin::{Confirmation, PublisherConfirm};
use tokio::sync::Mutex;

use super::message::{ORIGINAL_QUEUE_HEADER, REASON_HEADER, TaskMessage};
use super::topology::{
    DEAD_LETTER_EXCHANGE, DELAY_TIER_HEADER, RETRY_EXCHANGE, WORK_EXCHANGE, declare_topology,
    delay_tier,
};
use super::{Broker, QueueError};

/// How long a publish may wait for its confirm before it counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Unavailable(#[from] QueueError),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("no queue is bound for {0} (the message was returned)")]
    Unroutable(String),
    #[error("the broker did not confirm the message within {0:?}")]
    Timeout(Duration),
}

/// Where a message goes.
#[derive(Debug, Clone)]
pub struct Route {
    pub exchange: &'static str,
    pub routing_key: String,
}

/// Publishes task messages with confirms over one shared, self-renewing channel.
pub struct Publisher {
    broker: Arc<Broker>,
    channel: Mutex<Option<Channel>>,
}

impl Publisher {
    pub fn new(broker: Arc<Broker>) -> Self {
        Self {
            broker,
            channel: Mutex::new(None),
        }
    }

    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// The confirm-mode channel, opened (with the topology declared) when there is none
    /// or the last one closed.
    async fn channel(&self) -> Result<Channel, QueueError> {
        let mut current = self.channel.lock().await;
        if let Some(channel) = current.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *current = None;
        let channel = self.broker.channel().await?;
        declare_topology(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| QueueError::from_lapin(&e))?;
        *current = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes one task to its work queue and waits for the confirm.
    pub async fn publish(&self, message: &TaskMessage) -> Result<(), PublishError> {
        let (properties, body) = message.encode();
        self.send(work_route(message), properties, body).await
    }

    /// Publishes many tasks at once: all are sent, then all confirms awaited. The result
    /// is per message, in order.
    pub async fn publish_many(&self, messages: &[TaskMessage]) -> Vec<Result<(), PublishError>> {
        // One channel for the batch: with the broker away, the batch fails at once
        // instead of trying to connect once per message.
        let channel = match self.channel().await {
            Ok(channel) => channel,
            Err(err) => {
                let text = err.to_string();
                return messages
                    .iter()
                    .map(|_| {
                        Err(PublishError::Unavailable(QueueError::Unavailable(
                            text.clone(),
                        )))
                    })
                    .collect();
            }
        };
        let pending = join_all(messages.iter().map(|message| {
            let (properties, body) = message.encode();
            start_on(&channel, work_route(message), properties, body)
        }))
        .await;
        join_all(pending.into_iter().map(|started| async move {
            match started {
                Ok((confirm, route)) => settle(confirm, &route).await,
                Err(err) => Err(err),
            }
        }))
        .await
    }

    /// Publishes a retry of `message` (whose `retries` is already incremented) to the
    /// delay tier for `delay`; it comes back to its work queue when the delay is over.
    pub async fn publish_delayed(
        &self,
        message: &TaskMessage,
        delay: Duration,
    ) -> Result<(), PublishError> {
        let (properties, body) = message.encode();
        let tier = delay_tier(delay);
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            ShortString::from(DELAY_TIER_HEADER),
            AMQPValue::LongString(LongString::from(tier.to_string())),
        );
        let properties = properties
            .with_headers(headers)
            .with_expiration(ShortString::from(delay.as_millis().max(1).to_string()));
        let route = Route {
            exchange: RETRY_EXCHANGE,
            routing_key: message.queue.name().to_owned(),
        };
        self.send(route, properties, body).await
    }

    /// Parks a message in the dead-letter queue with the reason, keeping its original
    /// properties and body byte for byte (a poison message may not be a task message).
    pub async fn publish_dead_letter(
        &self,
        properties: &BasicProperties,
        body: &[u8],
        queue: &str,
        reason: &str,
    ) -> Result<(), PublishError> {
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            ShortString::from(REASON_HEADER),
            AMQPValue::LongString(LongString::from(truncate(reason, 1000))),
        );
        headers.insert(
            ShortString::from(ORIGINAL_QUEUE_HEADER),
            AMQPValue::LongString(LongString::from(queue)),
        );
        let properties = properties
            .clone()
            .with_headers(headers)
            .with_delivery_mode(2);
        let route = Route {
            exchange: DEAD_LETTER_EXCHANGE,
            routing_key: queue.to_owned(),
        };
        self.send(route, properties, body.to_vec()).await
    }

    async fn send(
        &self,
        route: Route,
        properties: BasicProperties,
        body: Vec<u8>,
    ) -> Result<(), PublishError> {
        let (confirm, route) = self.start(route, properties, body).await?;
        settle(confirm, &route).await
    }

    /// Sends the message; the returned confirm resolves when the broker answers.
    async fn start(
        &self,
        route: Route,
        properties: BasicProperties,
        body: Vec<u8>,
    ) -> Result<(PublisherConfirm, Route), PublishError> {
        let channel = self.channel().await?;
        start_on(&channel, route, properties, body).await
    }
}

async fn start_on(
    channel: &Channel,
    route: Route,
    properties: BasicProperties,
    body: Vec<u8>,
) -> Result<(PublisherConfirm, Route), PublishError> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish(
            route.exchange.into(),
            route.routing_key.as_str().into(),
            options,
            &body,
            properties,
        )
        .await
        .map_err(|e| PublishError::Unavailable(QueueError::from_lapin(&e)))?;
    Ok((confirm, route))
}

async fn settle(confirm: PublisherConfirm, route: &Route) -> Result<(), PublishError> {
    let confirmation = tokio::time::timeout(CONFIRM_TIMEOUT, confirm)
        .await
        .map_err(|_| PublishError::Timeout(CONFIRM_TIMEOUT))?
        .map_err(|e| PublishError::Unavailable(QueueError::from_lapin(&e)))?;
    match confirmation {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable(format!(
            "{} with key {}",
            route.exchange, route.routing_key
        ))),
        Confirmation::Nack(_) => Err(PublishError::Nacked),
    }
}

fn work_route(message: &TaskMessage) -> Route {
    Route {
        exchange: WORK_EXCHANGE,
        routing_key: message.queue.name().to_owned(),
    }
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
