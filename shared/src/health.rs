//! Readiness: whether the services a process depends on answer right now.
//! Transport-neutral; the API serves it as `/api/v2/health/ready`.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use crate::queue::Broker;
use crate::storage::Storage;

/// Per-service availability, named as in the specification's readiness response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Services {
    pub database: bool,
    pub rabbitmq: bool,
    pub storage: bool,
}

impl Services {
    pub fn all_up(&self) -> bool {
        self.database && self.rabbitmq && self.storage
    }

    /// "rabbitmq, storage unavailable", or `None` when all are up.
    pub fn describe_down(&self) -> Option<String> {
        let down: Vec<&str> = [
            ("database", self.database),
            ("rabbitmq", self.rabbitmq),
            ("storage", self.storage),
        ]
        .into_iter()
        .filter(|(_, up)| !up)
        .map(|(name, _)| name)
        .collect();
        (!down.is_empty()).then(|| format!("{} unavailable", down.join(", ")))
    }
}

/// Checks the three services concurrently, each bounded by `timeout`, so a hung
/// dependency cannot hang the probe.
pub async fn check(
    pool: &PgPool,
    broker: &Broker,
    storage: &Storage,
    timeout: Duration,
) -> Services {
    let (database, rabbitmq, storage) = tokio::join!(
        tokio::time::timeout(timeout, crate::db::ping(pool)),
        tokio::time::timeout(timeout, broker.connection()),
        tokio::time::timeout(timeout, storage.check()),
    );
    Services {
        database: up("database", database),
        rabbitmq: up("rabbitmq", rabbitmq),
        storage: up("storage", storage),
    }
}

fn up<T, E: std::fmt::Display>(
    service: &str,
    outcome: Result<Result<T, E>, tokio::time::error::Elapsed>,
) -> bool {
    match outcome {
        Ok(Ok(_)) => true,
        Ok(Err(err)) => {
            tracing::warn!(service, error = %err, "readiness check failed");
            false
        }
        Err(_) => {
            tracing::warn!(service, "readiness check timed out");
            false
        }
    }
}
