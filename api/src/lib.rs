//! The REST API: routes, handlers and the server loop. Owns HTTP and nothing else; all
//! logic lives in the `deployguard` library.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use deployguard::Config;
use deployguard::queue::Broker;
use deployguard::storage::Storage;
use sqlx::PgPool;
use tokio::net::TcpListener;

mod health;

/// What every handler may use; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    pub broker: Arc<Broker>,
    pub storage: Storage,
}

impl AppState {
    /// Builds the clients; no connection is opened yet.
    pub fn new(config: Config) -> anyhow::Result<Self> {
        Ok(Self {
            db: deployguard::db::pool(&config.database)?,
            broker: Arc::new(Broker::new(&config.broker, "deployguard-api")),
            storage: Storage::new(&config.storage),
            config: Arc::new(config),
        })
    }
}

pub fn router(state: AppState) -> Router {
    let v2 = Router::new()
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready));
    Router::new().nest("/api/v2", v2).with_state(state)
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let broker = Arc::clone(&state.broker);
    let db = state.db.clone();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await?;
    broker.close().await;
    db.close().await;
    Ok(())
}
