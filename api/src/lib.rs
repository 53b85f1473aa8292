//! The REST API: routes, handlers and the server loop. Owns HTTP and nothing else; job
//! records, queues and storage live in the `deployguard` library.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Method, StatusCode};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::IntoResponse;
use axum::routing::get;
use deployguard::queue::{Broker, Publisher};
use deployguard::storage::Storage;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod admin;
pub mod auth;
pub mod error;
pub mod extract;
mod health;
pub mod jobs;
pub mod metrics;
mod middleware;
pub mod openapi;
pub mod settings;
mod validate;

use error::ApiError;
use settings::{ApiConfig, CorsOrigins, Settings};

/// What every handler may use; one reference count to clone (each layer and extractor
/// takes its own copy, per request).
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

impl std::ops::Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}

pub struct AppInner {
    pub api: Arc<ApiConfig>,
    pub db: PgPool,
    pub broker: Arc<Broker>,
    pub publisher: Arc<Publisher>,
    pub storage: Storage,
    pub metrics: Arc<metrics::Metrics>,
    pub auth: Arc<auth::Authenticator>,
}

impl AppState {
    /// Builds the clients; no connection is opened yet.
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        let broker = Arc::new(Broker::new(&settings.common.broker, "deployguard-api"));
        Ok(Self(Arc::new(AppInner {
            db: deployguard::db::pool(&settings.common.database)?,
            publisher: Arc::new(Publisher::new(Arc::clone(&broker))),
            broker,
            storage: Storage::new(&settings.storage),
            metrics: Arc::new(metrics::Metrics::new()),
            auth: Arc::new(auth::Authenticator::new(&settings.api.auth)?),
            api: Arc::new(settings.api.clone()),
        })))
    }
}

/// Routes that are not API operations, so not in the OpenAPI document.
pub const UNDOCUMENTED_ROUTES: [&str; 3] = ["/metrics", "/docs", "/api/v2/openapi.json"];

/// Every API operation, with its OpenAPI description.
fn api_routes(state: &AppState) -> OpenApiRouter<AppState> {
    let jobs = OpenApiRouter::new()
        .routes(routes!(jobs::create, jobs::list))
        .routes(routes!(jobs::get, jobs::cancel))
        .routes(routes!(jobs::secrets))
        .routes(routes!(jobs::select))
        .routes(routes!(jobs::files))
        .routes(routes!(jobs::clean_report))
        .routes(routes!(jobs::clean))
        .routes(routes!(jobs::push))
        .routes(routes!(jobs::download));
    let admin = OpenApiRouter::new()
        .routes(routes!(admin::jobs))
        .routes(routes!(admin::stats))
        .routes(routes!(admin::queues))
        .routes(routes!(admin::dead_letters, admin::purge))
        .routes(routes!(admin::requeue_all))
        .routes(routes!(admin::requeue))
        .routes(routes!(admin::audit))
        .route_layer(from_fn(auth::require_admin));
    // Outermost last: identity first, then the audit of refusals, then idempotency.
    let protected = jobs
        .merge(admin)
        .route_layer(from_fn_with_state(state.clone(), middleware::idempotency))
        .route_layer(from_fn_with_state(
            state.clone(),
            middleware::audit_refusals,
        ))
        .route_layer(from_fn_with_state(state.clone(), auth::require_identity));
    let public = OpenApiRouter::new()
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics));
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi()).nest("/api/v2", public.merge(protected))
}

/// The OpenAPI document of this build.
pub fn openapi_document(state: &AppState) -> utoipa::openapi::OpenApi {
    api_routes(state).split_for_parts().1
}

async fn no_route() -> impl IntoResponse {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn wrong_method() -> impl IntoResponse {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

fn cors(origins: &CorsOrigins) -> Option<CorsLayer> {
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) if list.is_empty() => return None,
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().filter_map(|o| o.parse().ok())),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                axum::http::header::CONTENT_TYPE,
                axum::http::header::AUTHORIZATION,
                HeaderName::from_static(auth::USER_HEADER),
                HeaderName::from_static(middleware::IDEMPOTENCY_HEADER),
            ])
            .expose_headers([axum::http::header::LOCATION])
            .max_age(Duration::from_secs(600)),
    )
}

pub fn router(state: AppState) -> Router {
    let (api, document) = api_routes(&state).split_for_parts();
    let document = Arc::new(document);
    let mut router = api
        .route(
            "/api/v2/openapi.json",
            get(move || {
                let document = Arc::clone(&document);
                async move { axum::Json(document.as_ref().clone()) }
            }),
        )
        .route("/docs", get(openapi::docs_page))
        .route("/metrics", get(metrics::serve))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(state.api.max_request_bytes))
        .layer(from_fn_with_state(state.clone(), metrics::track))
        .layer(from_fn_with_state(state.clone(), auth::origin));
    if let Some(cors) = cors(&state.api.cors_origins) {
        router = router.layer(cors);
    }
    router.with_state(state)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish. Callback
/// delivery runs beside the server when callbacks are configured.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let broker = Arc::clone(&state.broker);
    let db = state.db.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let background = spawn_background(&state, stop_rx);
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop_tx.send(true);
    for task in background {
        let _ = task.await;
    }
    broker.close().await;
    db.close().await;
    served
}

fn spawn_background(
    state: &AppState,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = Vec::new();
    if let Some(secret) = state.api.callback_secret.clone() {
        let policy = deployguard::jobs::callbacks::Policy {
            secret,
            retry_base: state.api.callback_retry_base,
            max_attempts: state.api.callback_max_attempts,
            allow: state.api.outbound.allowlist.clone(),
            allow_http: state.api.outbound.allow_http,
            timeout: Duration::from_secs(10),
        };
        tasks.push(tokio::spawn(deployguard::jobs::callbacks::run(
            state.db.clone(),
            policy,
            Duration::from_millis(500),
            stopped(stop.clone()),
        )));
    }
    let db = state.db.clone();
    let prune_stop = stopped(stop);
    tasks.push(tokio::spawn(async move {
        let prune = async {
            loop {
                tokio::time::sleep(Duration::from_secs(600)).await;
                if let Err(err) = deployguard::jobs::idempotency::prune(&db, 86_400.0).await {
                    tracing::warn!(error = %err, "pruning idempotency keys failed");
                }
            }
        };
        tokio::select! {
            () = prune => {}
            () = prune_stop => {}
        }
    }));
    tasks
}
