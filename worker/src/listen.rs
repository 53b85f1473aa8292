//! Job cancellations, pushed by PostgreSQL: a trigger on `jobs` notifies
//! `deployguard_job_stopped` with the job id when a job is cancelled, expires or fails,
//! and the worker stops that job's running tasks at once. The task heartbeat checks the
//! job too, so a notification missed while the listener reconnects costs only latency.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::runtime::Runtime;

pub const CHANNEL: &str = "deployguard_job_stopped";

pub async fn job_stops(db: PgPool, runtime: Arc<Runtime>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        match listen(&db, &runtime).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(error = %err, "job-stop listener lost its connection; reconnecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn listen(db: &PgPool, runtime: &Runtime) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(db).await?;
    listener.listen(CHANNEL).await?;
    loop {
        let notification = listener.recv().await?;
        if let Ok(job_id) = Uuid::parse_str(notification.payload()) {
            let stopped = runtime.cancel_job(job_id);
            if stopped > 0 {
                tracing::info!(job_id = %job_id, tasks = stopped, "job stopped; its running tasks were told to stop");
            }
        }
    }
}
