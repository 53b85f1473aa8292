//! `deployguard-beat`: publishes the periodic tasks on their schedules (see the
//! library's documentation for how two replicas stay out of each other's way).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use deployguard::env::{self, Load};
use deployguard::queue::{self, Broker, Publisher};
use deployguard::{service, shutdown};
use deployguard_beat::leader::Scheduler;
use deployguard_beat::metrics::{self, Metrics};
use deployguard_beat::settings::Settings;
use tokio::sync::Notify;
use tokio_cron_scheduler::{Job, JobScheduler};

const PROGRAM: &str = "deployguard-beat";

/// DeployGuard periodic-task scheduler.
#[derive(Parser)]
#[command(name = PROGRAM, version)]
struct Args {}

fn main() -> ExitCode {
    Args::parse();
    let settings = env::or_exit(PROGRAM, Settings::from_env());
    service::main(PROGRAM, settings, run)
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let Settings { common, beat } = settings;
    let (broker_config, database) = (common.broker, common.database);
    // Beat publishes to the default queue: its topology must exist (and match).
    let broker = Arc::new(Broker::new(&broker_config, PROGRAM));
    tokio::select! {
        declared = queue::declare_when_reachable(&broker) => declared?,
        () = shutdown::signal() => return Ok(()),
    }
    let db = deployguard::db::pool(&database)?;
    let metrics = Arc::new(Metrics::new());
    let addr = metrics::serve(
        beat.metrics_addr,
        Arc::clone(&metrics),
        db.clone(),
        shutdown::signal(),
    )
    .await?;
    tracing::info!(%addr, "metrics and health probes listening");

    // The cron jobs only wake the scheduling loop at each scheduled time; the loop
    // decides (as leader) what to fire.
    let wake = Arc::new(Notify::new());
    let mut cron = JobScheduler::new().await?;
    for schedule in &beat.schedules {
        let wake = Arc::clone(&wake);
        let pattern = schedule.cron.pattern.to_string();
        cron.add(Job::new_async(pattern.as_str(), move |_, _| {
            let wake = Arc::clone(&wake);
            Box::pin(async move { wake.notify_one() })
        })?)
        .await?;
        tracing::info!(task = schedule.task.name(), schedule = %pattern, "scheduled");
    }
    cron.start().await?;

    let instance = format!(
        "{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "beat".into()),
        std::process::id()
    );
    let scheduler = Scheduler {
        db,
        lock_db: database,
        publisher: Publisher::new(Arc::clone(&broker)),
        schedules: beat.schedules,
        instance,
        metrics,
        wake,
    };
    scheduler.run(shutdown::signal()).await;
    cron.shutdown().await?;
    broker.close().await;
    tracing::info!("stopped");
    Ok(())
}
