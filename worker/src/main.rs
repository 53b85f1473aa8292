//! `deployguard-worker`: consumes the task queues and runs tasks.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use deployguard::credentials::CredentialService;
use deployguard::env::{self, Load};
use deployguard::queue::{self, Broker, Publisher, WorkQueue, outbox};
use deployguard::storage::Storage;
use deployguard::{service, shutdown};
use deployguard_worker::metrics::{self, Metrics};
use deployguard_worker::registry::Registry;
use deployguard_worker::runtime::{Runtime, Signals};
use deployguard_worker::settings::Settings;
use deployguard_worker::tasks::{self, Services};
use deployguard_worker::workdir::WorkArea;
use deployguard_worker::{diagnostic, listen};
use tokio::sync::watch;

const PROGRAM: &str = "deployguard-worker";

/// DeployGuard worker: runs scan, clean, push and maintenance tasks from RabbitMQ.
#[derive(Parser)]
#[command(name = PROGRAM, version)]
struct Args {
    /// Queues to serve, comma-separated, taken in the order scan, clean, push, default
    /// [env: WORKER_QUEUES; default: all]
    #[arg(long, short = 'Q', value_name = "LIST")]
    queues: Option<String>,
    /// Tasks run at once [env: WORKER_CONCURRENCY; default: 1]
    #[arg(long, short = 'c', value_name = "N")]
    concurrency: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut settings = env::or_exit(PROGRAM, Settings::from_env());
    if let Some(raw) = &args.queues {
        match WorkQueue::parse_list(raw) {
            Ok(queues) => settings.worker.queues = queues,
            Err(why) => {
                eprintln!("{PROGRAM}: --queues: {why}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(n) = args.concurrency {
        if !(1..=256).contains(&n) {
            eprintln!("{PROGRAM}: --concurrency must be 1 to 256");
            return ExitCode::from(2);
        }
        settings.worker.concurrency = n;
    }
    service::main(PROGRAM, settings, run)
}

async fn run(settings: Settings) -> anyhow::Result<()> {
    let Settings {
        common,
        storage,
        worker,
    } = settings;
    let (broker_config, database) = (common.broker, common.database);
    let identity = identity();
    let broker = Arc::new(Broker::new(&broker_config, format!("{PROGRAM} {identity}")));
    let db = deployguard::db::pool(&database)?;
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (abandon_tx, abandon_rx) = watch::channel(false);

    let (work, swept) = WorkArea::open(&worker.work_dir, &identity)
        .map_err(|e| anyhow::anyhow!("work directory {}: {e}", worker.work_dir.display()))?;
    if swept.removed > 0 {
        tracing::info!(
            removed = swept.removed,
            "removed work directories left by a crashed worker"
        );
    }
    for (path, err) in &swept.left {
        tracing::warn!(path = %path.display(), error = %err, "a stale work directory could not be removed");
    }
    let storage = Storage::new(&storage);
    // Publishing (retries, deferrals, requeued tasks, the outbox relay) has a connection
    // of its own: a broker in flow control blocks a publishing connection, and the
    // slots' acks must still get through to drain the queues.
    let publishing = Arc::new(Broker::new(
        &broker_config,
        format!("{PROGRAM} {identity} publisher"),
    ));
    let publisher = Arc::new(Publisher::new(Arc::clone(&publishing)));
    let mut registry = Registry::default();
    tasks::register(
        &mut registry,
        &Arc::new(Services {
            storage,
            credentials: CredentialService::new(worker.auth_service_url.clone()),
            config: worker.clone(),
            work,
            broker: Arc::clone(&broker),
            publisher: Arc::clone(&publisher),
        }),
    );
    if worker.diagnostic_tasks {
        diagnostic::register(&mut registry);
    }
    if registry.names().is_empty() {
        tracing::warn!("no task is registered: every message will be dead-lettered as unknown");
    }

    let stopped = {
        let stop = stop_rx.clone();
        move || {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        }
    };
    let addr = metrics::serve(
        worker.metrics_addr,
        Arc::clone(&metrics),
        Arc::clone(&broker),
        db.clone(),
        stopped(),
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot listen on {} for metrics: {e}", worker.metrics_addr))?;
    tracing::info!(%addr, "metrics and health listening");

    // A worker may well start before RabbitMQ does: keep trying, until SIGTERM. A
    // conflicting queue is an operator's problem: stop, naming it.
    tokio::select! {
        declared = queue::declare_when_reachable(&broker) => declared?,
        () = shutdown::signal() => {
            broker.close().await;
            return Ok(());
        }
    }
    tracing::info!(
        broker = %broker_config.display_url(),
        queues = ?worker.queues.iter().map(|q| q.name()).collect::<Vec<_>>(),
        concurrency = worker.concurrency,
        tasks = ?registry.names(),
        worker = %identity,
        "consuming"
    );

    let grace = worker.shutdown_grace;
    let runtime = Arc::new(Runtime::new(
        Arc::clone(&broker),
        Arc::clone(&publisher),
        db.clone(),
        registry,
        worker,
        identity,
        Arc::clone(&metrics),
    ));
    let background = [
        tokio::spawn(outbox::relay(
            db.clone(),
            Arc::clone(&publisher),
            Duration::from_secs(1),
            stopped(),
        )),
        tokio::spawn(metrics::sample_queues(
            Arc::clone(&broker),
            Arc::clone(&metrics),
            Duration::from_secs(5),
        )),
        tokio::spawn(listen::job_stops(db.clone(), Arc::clone(&runtime))),
    ];

    let mut slots = tokio::spawn(Arc::clone(&runtime).run(Signals {
        stop: stop_rx,
        abandon: abandon_rx,
    }));
    tokio::select! {
        _ = &mut slots => {}
        () = shutdown::signal() => {
            tracing::info!(grace_s = grace.as_secs_f64(), "no new tasks; waiting for running ones");
            let _ = stop_tx.send(true);
            if tokio::time::timeout(grace, &mut slots).await.is_err() {
                tracing::warn!("grace period over; handing running tasks back to the broker");
                let _ = abandon_tx.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(10), &mut slots).await;
            }
        }
    }
    for task in background {
        task.abort();
    }
    publishing.close().await;
    broker.close().await;
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `host:pid:random`: unique even when every container's process is pid 1.
fn identity() -> String {
    let host = deployguard::queue::message::origin();
    let host = host
        .split_once('@')
        .map_or(host.as_str(), |(_, h)| h)
        .to_owned();
    format!(
        "{host}:{}:{:06x}",
        std::process::id(),
        fastrand::u32(..0xff_ffff)
    )
}
