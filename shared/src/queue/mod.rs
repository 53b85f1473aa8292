//! RabbitMQ: the connection, the topology, the task message, publishing with confirms,
//! and the outbox relay.
//!
//! [`Broker`] opens a fresh connection on the first use after the previous one died, so
//! a process outlives any broker outage without a restart. lapin's own auto-recovery is
//! deliberately off: it would revive channels and consumers behind the owner's back,
//! while delivery tags of the old connection are void anyway. Owners of channels (the
//! publisher, the worker's slots) notice the dead channel and open a new one instead.

pub mod enqueue;
pub mod message;
pub mod outbox;
pub mod publish;
pub mod task;
pub mod topology;

pub use enqueue::{Delivery, EnqueueError, Enqueued, OnRefusal, Stage, enqueue};
pub use message::{TaskBody, TaskMessage};
pub use publish::{PublishError, Publisher};
pub use task::{PayloadError, Task};
pub use topology::{WorkQueue, declare_topology};

use std::sync::Arc;
use std::time::Duration;

use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Mutex;

use crate::env::{ConfigError, Source};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("RabbitMQ is unavailable: {0}")]
    Unavailable(String),
    /// A queue or exchange exists with settings this version does not declare.
    #[error("{0}")]
    Topology(String),
}

impl QueueError {
    /// A lapin error as "the broker is unavailable"; its text names hosts and AMQP
    /// reply codes, never credentials.
    pub fn from_lapin(err: &lapin::Error) -> Self {
        Self::Unavailable(err.to_string())
    }
}

/// RabbitMQ: `AMQP_URL`, or the specification's `CELERY_BROKER_URL`.
#[derive(Clone)]
pub struct BrokerConfig {
    pub url: SecretString,
}

impl BrokerConfig {
    pub fn from_source(src: &impl Source) -> Result<Self, ConfigError> {
        let (var, raw) = match (src.get("AMQP_URL"), src.get("CELERY_BROKER_URL")) {
            (Some(v), _) => ("AMQP_URL", v),
            (None, Some(v)) => ("CELERY_BROKER_URL", v),
            (None, None) => {
                return Err(ConfigError::missing(
                    "AMQP_URL",
                    "amqp://user:password@rabbitmq:5672/%2f; CELERY_BROKER_URL is accepted too",
                ));
            }
        };
        parse_amqp_uri(&raw).map_err(|why| ConfigError::malformed(var, why))?;
        Ok(Self {
            url: SecretString::from(raw),
        })
    }

    pub fn display_url(&self) -> String {
        crate::env::redact_url(self.url.expose_secret())
    }
}

impl std::fmt::Debug for BrokerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerConfig")
            .field("url", &self.display_url())
            .finish()
    }
}

/// A lazily opened, self-healing connection to RabbitMQ, shared by a whole process.
pub struct Broker {
    url: SecretString,
    connection_name: String,
    connect_timeout: Duration,
    current: Mutex<Option<Arc<Connection>>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("connection_name", &self.connection_name)
            .finish_non_exhaustive()
    }
}

impl Broker {
    /// No I/O happens here: the first [`Broker::connection`] connects.
    /// `connection_name` is what operators see in the management UI.
    pub fn new(config: &BrokerConfig, connection_name: impl Into<String>) -> Self {
        Self {
            url: config.url.clone(),
            connection_name: connection_name.into(),
            connect_timeout: Duration::from_secs(5),
            current: Mutex::new(None),
        }
    }

    /// The live connection, opening one if there is none or the last one died.
    /// While lapin is recovering a dropped connection this fails fast rather than
    /// waiting, so callers can answer "unavailable" at once.
    pub async fn connection(&self) -> Result<Arc<Connection>, QueueError> {
        let mut current = self.current.lock().await;
        if let Some(conn) = current.as_ref() {
            let status = conn.status();
            if status.connected() {
                return Ok(Arc::clone(conn));
            }
            if status.connecting() {
                return Err(QueueError::Unavailable("connecting to the broker".into()));
            }
        }
        // Closed or errored for good: start over.
        *current = None;
        let conn = tokio::time::timeout(self.connect_timeout, self.open())
            .await
            .map_err(|_| QueueError::Unavailable("timed out connecting to the broker".into()))??;
        let conn = Arc::new(conn);
        *current = Some(Arc::clone(&conn));
        Ok(conn)
    }

    async fn open(&self) -> Result<Connection, QueueError> {
        let uri = parse_amqp_uri(self.url.expose_secret())
            .map_err(|e| QueueError::Unavailable(e.into()))?;
        // lapin retries the TCP connect in a thread of its own, which outlives a caller
        // that gave up; a refused port is answered here instead, without starting one.
        let addr = (uri.authority.host.as_str(), uri.authority.port);
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| QueueError::Unavailable("timed out reaching the broker".into()))?
            .map_err(|e| QueueError::Unavailable(format!("cannot reach the broker: {e}")))?;
        let properties = ConnectionProperties::default()
            .with_connection_name(self.connection_name.clone().into());
        Connection::connect_uri(uri, properties)
            .await
            // lapin's errors name the host, never the password; keep just the kind.
            .map_err(|e| QueueError::Unavailable(e.to_string()))
    }

    /// A new channel on the live connection.
    pub async fn channel(&self) -> Result<lapin::Channel, QueueError> {
        let conn = self.connection().await?;
        conn.create_channel()
            .await
            .map_err(|e| QueueError::from_lapin(&e))
    }

    /// Closes the connection cleanly (shutdown).
    pub async fn close(&self) {
        if let Some(conn) = self.current.lock().await.take() {
            let _ = conn.close(200, "shutting down".into()).await;
        }
    }
}

/// Declares the topology once the broker is reachable, retrying with backoff while it
/// is not. Fails only for a conflict (a queue declared with other arguments), which no
/// retry can fix.
pub async fn declare_when_reachable(broker: &Broker) -> Result<(), QueueError> {
    let mut delay = Duration::from_millis(250);
    loop {
        let declared = match broker.channel().await {
            Ok(channel) => {
                let declared = declare_topology(&channel).await;
                let _ = channel.close(200, "declared".into()).await;
                declared
            }
            Err(err) => Err(err),
        };
        match declared {
            Ok(()) => return Ok(()),
            Err(err @ QueueError::Topology(_)) => return Err(err),
            Err(err) => {
                tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "broker not reachable");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Parses an AMQP URL the way operators write it. `AMQPUri::from_str` keeps only DNS
/// names and silently turns an IP-address host (`amqp://10.0.0.5`) into `localhost`, so
/// the host is taken from the URL here. The error never contains the URL (it may hold a
/// password).
pub fn parse_amqp_uri(raw: &str) -> Result<AMQPUri, &'static str> {
    let url = url::Url::parse(raw).map_err(|_| "not a valid URL")?;
    if !matches!(url.scheme(), "amqp" | "amqps") {
        return Err("the scheme must be amqp or amqps");
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("the URL names no host")?;
    let mut uri: AMQPUri = raw.parse().map_err(|_| "not a valid AMQP URI")?;
    uri.authority.host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_address_hosts_are_kept() {
        let uri = parse_amqp_uri("amqp://u:p@10.1.2.3:5673/%2f").unwrap();
        assert_eq!(uri.authority.host, "10.1.2.3");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.vhost, "/");
        let uri = parse_amqp_uri("amqp://[::1]:5672/v").unwrap();
        assert_eq!(uri.authority.host, "::1");
        assert_eq!(uri.vhost, "v");
    }

    #[test]
    fn celery_double_slash_means_the_default_vhost() {
        let uri = parse_amqp_uri("amqp://guest:guest@rabbitmq:5672//").unwrap();
        assert_eq!(uri.authority.host, "rabbitmq");
        assert_eq!(uri.vhost, "/");
        assert_eq!(uri.authority.userinfo.username, "guest");
    }

    fn broker(vars: &[(&'static str, &'static str)]) -> Result<BrokerConfig, ConfigError> {
        BrokerConfig::from_source(
            &vars
                .iter()
                .copied()
                .collect::<std::collections::HashMap<_, _>>(),
        )
    }

    #[test]
    fn celery_broker_url_is_accepted_with_kombu_vhost_syntax() {
        let config = broker(&[("CELERY_BROKER_URL", "amqp://u:p@rabbitmq:5672//")]).unwrap();
        let uri = parse_amqp_uri(config.url.expose_secret()).unwrap();
        assert_eq!(uri.vhost, "/");
    }

    #[test]
    fn amqp_url_wins_over_celery_broker_url() {
        let config = broker(&[
            ("AMQP_URL", "amqp://dg:mq-pass-456@rabbitmq:5672/%2f"),
            ("CELERY_BROKER_URL", "amqp://other:5672//"),
        ])
        .unwrap();
        assert!(config.url.expose_secret().contains("rabbitmq"));
        assert!(!format!("{config:?}").contains("mq-pass-456"));
        assert_eq!(broker(&[]).unwrap_err().var, "AMQP_URL");
        let err = broker(&[("AMQP_URL", "http://u:hunter2-mq@rabbitmq/")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn errors_do_not_echo_the_url() {
        for bad in [
            "http://u:topsecret@h/",
            "amqp://u:topsecret@/x",
            "topsecret",
        ] {
            let err = parse_amqp_uri(bad).unwrap_err();
            assert!(!err.contains("topsecret"));
        }
    }
}
