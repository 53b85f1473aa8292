//! `GET /api/v2/health` (liveness) and `GET /api/v2/health/ready` (readiness).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;

#[derive(Serialize, ToSchema)]
pub struct Live {
    status: &'static str,
    service: &'static str,
    version: &'static str,
}

/// The process is up and serving; touches no dependency.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "Alive", body = Live)))]
pub async fn live() -> Json<Live> {
    Json(Live {
        status: "healthy",
        service: "deployguard-api",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `ready` or `not_ready`.
    status: &'static str,
    /// `{"database": bool, "rabbitmq": bool, "storage": bool}`.
    #[schema(value_type = Object)]
    services: deployguard::health::Services,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Every dependency answers", body = Ready),
        (status = 503, description = "A dependency is down", body = Ready),
    ))]
/// 200 when PostgreSQL, RabbitMQ and object storage all answer; otherwise 503 with
/// which of them did not.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
    let services = deployguard::health::check(
        &state.db,
        &state.broker,
        &state.storage,
        state.api.readiness_timeout,
    )
    .await;
    let message = services.describe_down();
    let (code, status) = if services.all_up() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    };
    (
        code,
        Json(Ready {
            status,
            services,
            message,
        }),
    )
}

/// Prometheus metrics (also served at `/metrics`).
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "application/openmetrics-text", body = String)))]
pub async fn metrics(state: State<AppState>) -> impl axum::response::IntoResponse {
    crate::metrics::serve(state).await
}
