//! Beat's `/metrics`, `/health` and `/health/ready`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    pub task: String,
}

pub struct Metrics {
    registry: Registry,
    runs: Family<TaskLabel, Counter>,
    failures: Family<TaskLabel, Counter>,
    last_fired: Family<TaskLabel, Gauge>,
    last_success: Family<TaskLabel, Gauge>,
    pub leader: Gauge,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("deployguard_beat");
        let (runs, failures) = (Family::default(), Family::default());
        let (last_fired, last_success) = (Family::default(), Family::default());
        let leader = Gauge::default();
        registry.register(
            "runs",
            "Scheduled times this beat claimed and published, per task",
            runs.clone(),
        );
        registry.register(
            "failures",
            "Attempts to fire a periodic task that failed (retried next tick), per task",
            failures.clone(),
        );
        registry.register(
            "last_fired_timestamp_seconds",
            "The latest scheduled time this beat fired, per task",
            last_fired.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "When a run of the task last succeeded (any beat's), per task",
            last_success.clone(),
        );
        registry.register(
            "leader",
            "Whether this beat holds the leadership lock (1) or not (0)",
            leader.clone(),
        );
        Self {
            registry,
            runs,
            failures,
            last_fired,
            last_success,
            leader,
        }
    }

    pub fn fired(&self, task: &str, slot: DateTime<Utc>) {
        let label = TaskLabel { task: task.into() };
        self.runs.get_or_create(&label).inc();
        self.last_fired.get_or_create(&label).set(slot.timestamp());
    }

    pub fn failed(&self, task: &str) {
        self.failures
            .get_or_create(&TaskLabel { task: task.into() })
            .inc();
    }

    /// Reads the last successful run of each task from `beat_runs`, then encodes.
    async fn encode(&self, db: &PgPool) -> String {
        let rows: Result<Vec<(String, DateTime<Utc>)>, _> = sqlx::query_as(
            "SELECT task_name, max(finished_at) FROM beat_runs
             WHERE status = 'succeeded' AND finished_at IS NOT NULL GROUP BY task_name",
        )
        .fetch_all(db)
        .await;
        for (task, at) in rows.unwrap_or_default() {
            self.last_success
                .get_or_create(&TaskLabel { task })
                .set(at.timestamp());
        }
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

#[derive(Clone)]
struct HttpState {
    metrics: Arc<Metrics>,
    db: PgPool,
}

/// Serves `/metrics`, `/health` (the process answers) and `/health/ready` (the database
/// answers) until `stop` resolves. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    db: PgPool,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route(
            "/health",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/health/ready", get(ready))
        .with_state(HttpState { metrics, db });
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
        state.metrics.encode(&state.db).await,
    )
}

async fn ready(State(state): State<HttpState>) -> impl IntoResponse {
    let database = tokio::time::timeout(Duration::from_secs(2), deployguard::db::ping(&state.db))
        .await
        .is_ok_and(|r| r.is_ok());
    let status = if database {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({"database": database})),
    )
}
