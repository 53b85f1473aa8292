//! `deployguard-worker`: the process that will consume task queues. For now it holds
//! its broker connection and follows the process lifecycle (start, migrate, stop on
//! SIGTERM); task consumption is added on top of this.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use deployguard::queue::Broker;
use deployguard::{Config, service, shutdown};

const PROGRAM: &str = "deployguard-worker";

/// DeployGuard worker.
#[derive(Parser)]
#[command(name = PROGRAM, version)]
struct Args {}

fn main() -> ExitCode {
    Args::parse();
    service::main(PROGRAM, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    let broker = Broker::new(&config.broker, PROGRAM);
    let wait_for_broker = async {
        // Keep trying with backoff: a worker may well start before RabbitMQ does.
        let mut delay = Duration::from_millis(250);
        loop {
            match broker.connection().await {
                Ok(_) => break,
                Err(err) => {
                    tracing::warn!(error = %err, retry_in_ms = delay.as_millis() as u64, "broker not reachable");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        tracing::info!(broker = %config.broker.display_url(), "connected to the broker");
        std::future::pending::<()>().await;
    };
    tokio::select! {
        () = wait_for_broker => {}
        () = shutdown::signal() => {}
    }
    broker.close().await;
    tracing::info!("stopped");
    Ok(())
}
