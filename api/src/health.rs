//! `GET /api/v2/health` (liveness) and `GET /api/v2/health/ready` (readiness).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;

use crate::AppState;

#[derive(Serialize)]
pub struct Live {
    status: &'static str,
    service: &'static str,
    version: &'static str,
}

/// The process is up and serving; touches no dependency.
pub async fn live() -> Json<Live> {
    Json(Live {
        status: "healthy",
        service: "deployguard-api",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize)]
pub struct Ready {
    status: &'static str,
    services: deployguard::health::Services,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// 200 when PostgreSQL, RabbitMQ and object storage all answer; otherwise 503 with
/// which of them did not.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Ready>) {
    let services = deployguard::health::check(
        &state.db,
        &state.broker,
        &state.storage,
        state.config.readiness_timeout,
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
