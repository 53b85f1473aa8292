use std::process::ExitCode;

use clap::{Parser, Subcommand};
use deployguard::env::{self, Load};
use deployguard::{db, service, telemetry};
use deployguard_api::settings::{AuthConfig, MigrateSettings, Settings};

const PROGRAM: &str = "deployguard-api";

/// DeployGuard REST API.
#[derive(Parser)]
#[command(name = PROGRAM, version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API (the default).
    Serve,
    /// Apply pending database migrations and exit (needs only DATABASE_URL).
    Migrate,
}

fn main() -> ExitCode {
    match Args::parse().command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let settings = env::or_exit(PROGRAM, Settings::from_env());
            service::main(PROGRAM, settings, serve)
        }
        Command::Migrate => {
            let settings = env::or_exit(PROGRAM, MigrateSettings::from_env());
            telemetry::init(&settings.log);
            service::run(PROGRAM, async move {
                Ok(db::migrate_and_report(&settings.database).await?)
            })
        }
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    if matches!(settings.api.auth, AuthConfig::Gateway { token: None }) {
        tracing::warn!(
            "AUTH_MODE=gateway without GATEWAY_TOKEN: any client that reaches this port can \
             claim any identity; expose the API only through the gateway, or set GATEWAY_TOKEN"
        );
    }
    let state = deployguard_api::AppState::new(&settings)?;
    if settings.storage.create_bucket {
        state.storage.ensure_bucket().await?;
    }
    // The API answers 503 for broker work while RabbitMQ is away, so the topology is
    // declared in the background, as soon as the broker can be reached.
    let broker = std::sync::Arc::clone(&state.broker);
    tokio::spawn(async move {
        if let Err(err) = deployguard::queue::declare_when_reachable(&broker).await {
            tracing::error!(error = %err, "broker topology conflict; tasks cannot be published");
        }
    });
    let addr = settings.api.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (API_ADDR): {e}"))?;
    tracing::info!(%addr, "serving the REST API");
    deployguard_api::serve(state, listener, deployguard::shutdown::signal()).await?;
    tracing::info!("stopped");
    Ok(())
}
