//! `deployguard-beat`: the scheduler of periodic tasks. It owns the scheduler's
//! lifecycle (start, migrate, stop on SIGTERM); periodic tasks register on it.

use std::process::ExitCode;

use clap::Parser;
use deployguard::queue::{self, Broker};
use deployguard::{Config, service, shutdown};
use tokio_cron_scheduler::JobScheduler;

const PROGRAM: &str = "deployguard-beat";

/// DeployGuard periodic-task scheduler.
#[derive(Parser)]
#[command(name = PROGRAM, version)]
struct Args {}

fn main() -> ExitCode {
    Args::parse();
    service::main(PROGRAM, run)
}

async fn run(config: Config) -> anyhow::Result<()> {
    // Beat publishes to the default queue: its topology must exist (and match).
    let broker = Broker::new(&config.broker, PROGRAM);
    tokio::select! {
        declared = queue::declare_when_reachable(&broker) => declared?,
        () = shutdown::signal() => return Ok(()),
    }
    let mut scheduler = JobScheduler::new().await?;
    scheduler.start().await?;
    tracing::info!("scheduler started");
    shutdown::signal().await;
    scheduler.shutdown().await?;
    broker.close().await;
    tracing::info!("stopped");
    Ok(())
}
