//! The worker's Prometheus metrics and its small HTTP listener (`/metrics`, `/health`,
//! `/health/ready`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use deployguard::queue::Broker;
use deployguard::queue::topology::{DEAD_LETTER_QUEUE, WorkQueue};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::PgPool;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

pub struct Metrics {
    registry: Registry,
    pub received: Family<TaskLabel, Counter>,
    pub started: Family<TaskLabel, Counter>,
    pub succeeded: Family<TaskLabel, Counter>,
    pub failed: Family<TaskLabel, Counter>,
    pub retried: Family<TaskLabel, Counter>,
    pub dead_lettered: Family<TaskLabel, Counter>,
    pub duplicates: Family<TaskLabel, Counter>,
    pub duration: Family<TaskLabel, Histogram>,
    pub in_flight: Gauge,
    pub queue_depth: Family<QueueLabel, Gauge>,
    pub queue_consumers: Family<QueueLabel, Gauge>,
    pub publish_to_start: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("deployguard_worker");
        let duration = Family::<TaskLabel, Histogram>::new_with_constructor(|| {
            // 1 ms … about 1.2 h.
            Histogram::new(exponential_buckets(0.001, 4.0, 13))
        });
        let metrics = Self {
            received: Family::default(),
            started: Family::default(),
            succeeded: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead_lettered: Family::default(),
            duplicates: Family::default(),
            duration,
            in_flight: Gauge::default(),
            queue_depth: Family::default(),
            queue_consumers: Family::default(),
            publish_to_start: Histogram::new(exponential_buckets(0.0005, 4.0, 12)),
            registry: Registry::default(),
        };
        registry.register(
            "tasks_received",
            "Task messages received",
            metrics.received.clone(),
        );
        registry.register(
            "tasks_started",
            "Tasks whose handler started",
            metrics.started.clone(),
        );
        registry.register(
            "tasks_succeeded",
            "Tasks that succeeded",
            metrics.succeeded.clone(),
        );
        registry.register(
            "tasks_failed",
            "Tasks that failed for good",
            metrics.failed.clone(),
        );
        registry.register(
            "tasks_retried",
            "Retries scheduled",
            metrics.retried.clone(),
        );
        registry.register(
            "tasks_dead_lettered",
            "Messages parked in the dead-letter queue",
            metrics.dead_lettered.clone(),
        );
        registry.register(
            "tasks_duplicates",
            "Redelivered messages of finished or running tasks, acknowledged without running",
            metrics.duplicates.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "Task run time, start to outcome",
            metrics.duration.clone(),
        );
        registry.register(
            "tasks_in_flight",
            "Tasks running now",
            metrics.in_flight.clone(),
        );
        registry.register(
            "queue_messages",
            "Messages in each queue (ready and unacknowledged)",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "queue_consumers",
            "Consumers of each queue",
            metrics.queue_consumers.clone(),
        );
        registry.register(
            "publish_to_start_seconds",
            "Time from the first publish of a task to the start of its run",
            metrics.publish_to_start.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }

    pub fn task(&self, family: &Family<TaskLabel, Counter>, task: &str) {
        family
            .get_or_create(&TaskLabel {
                task: task.to_owned(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Samples queue depths every `every` on a channel of its own.
pub async fn sample_queues(broker: Arc<Broker>, metrics: Arc<Metrics>, every: Duration) {
    let mut channel: Option<lapin::Channel> = None;
    loop {
        if channel.as_ref().is_none_or(|c| !c.status().connected()) {
            channel = broker.channel().await.ok();
        }
        if let Some(ch) = &channel {
            let names = WorkQueue::ALL
                .iter()
                .map(|q| q.name())
                .chain([DEAD_LETTER_QUEUE]);
            for name in names {
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                match ch
                    .queue_declare(name.into(), passive, FieldTable::default())
                    .await
                {
                    Ok(queue) => {
                        let label = QueueLabel {
                            queue: name.to_owned(),
                        };
                        metrics
                            .queue_depth
                            .get_or_create(&label)
                            .set(i64::from(queue.message_count()));
                        metrics
                            .queue_consumers
                            .get_or_create(&label)
                            .set(i64::from(queue.consumer_count()));
                    }
                    Err(_) => {
                        // A missing queue closes the channel; open another next time.
                        channel = None;
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    broker: Arc<Broker>,
    db: PgPool,
}

/// Serves `/metrics`, `/health` (the process answers) and `/health/ready` (broker and
/// database reachable) until `stop` resolves. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    broker: Arc<Broker>,
    db: PgPool,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route(
            "/health",
            get(|| async {
                (
                    StatusCode::OK,
                    axum::Json(serde_json::json!({"status": "ok"})),
                )
            }),
        )
        .route("/health/ready", get(ready))
        .with_state(HttpState {
            metrics,
            broker,
            db,
        });
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(error = %err, "metrics listener stopped");
        }
    });
    Ok(bound)
}

async fn metrics_page(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    let broker = tokio::time::timeout(Duration::from_secs(2), state.broker.connection())
        .await
        .is_ok_and(|c| c.is_ok());
    let database = tokio::time::timeout(Duration::from_secs(2), deployguard::db::ping(&state.db))
        .await
        .is_ok_and(|r| r.is_ok());
    let status = if broker && database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({"broker": broker, "database": database})),
    )
}
