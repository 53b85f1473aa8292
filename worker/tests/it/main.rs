//! The worker as it runs in production: its real binary against the real broker and
//! database, driven by task messages published the way the API publishes them.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod deploy_config;
mod maintenance;
mod runtime;
mod service;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use deployguard::queue::{Broker, Publisher, TaskBody, TaskMessage, WorkQueue};
use deployguard_testkit::{JobRow, Process, TestEnv, free_addr};
use uuid::Uuid;

/// A `deployguard-worker` process, with its own scratch directory and log.
pub struct Worker {
    process: Process,
    pub metrics: SocketAddr,
}

impl Worker {
    /// Starts a worker with diagnostic tasks and short leases; `extra` overrides.
    pub async fn start(env: &TestEnv, args: &[&str], extra: &[(&str, &str)]) -> Self {
        let metrics = free_addr();
        let mut vars: HashMap<String, String> = env.vars();
        for (k, v) in [
            ("WORKER_DIAGNOSTIC_TASKS", "true"),
            ("TASK_LEASE_SECS", "2"),
            ("WORKER_SHUTDOWN_GRACE_SECS", "5"),
            ("LOG_LEVEL", "info,sqlx=warn"),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            vars.insert(k.into(), v.into());
        }
        vars.insert("WORKER_METRICS_ADDR".into(), metrics.to_string());
        let process = Process::start(env!("CARGO_BIN_EXE_deployguard-worker"), args, &vars);
        let worker = Self { process, metrics };
        let ready = worker
            .process
            .wait_for_log("consuming", Duration::from_secs(20))
            .await;
        assert!(ready, "worker did not start consuming:\n{}", worker.log());
        worker
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn signal(&self, name: &str) {
        self.process.signal(name);
    }

    /// Waits for the process to exit; `None` if it is still running after `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.process.exited(within).await
    }

    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Polls `check` every 50 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn publisher(env: &TestEnv) -> Publisher {
    Publisher::new(Arc::new(Broker::new(&env.config().broker, "worker-test")))
}

pub fn task(name: &str, queue: WorkQueue, args: serde_json::Value) -> TaskMessage {
    TaskMessage::new(
        name,
        queue,
        TaskBody {
            job_id: None,
            user_id: Some("user-1".into()),
            args: args.as_object().cloned().unwrap_or_default(),
        },
    )
}

/// A job row being scanned, for tasks that name a job.
pub async fn insert_job(env: &TestEnv) -> Uuid {
    JobRow::new()
        .status(deployguard::jobs::JobStatus::Scanning)
        .insert(env)
        .await
}

pub async fn task_state(env: &TestEnv, task_id: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM task_results WHERE task_id = $1")
        .bind(task_id)
        .fetch_optional(&env.db)
        .await
        .unwrap()
}

pub async fn wait_state(env: &TestEnv, task_id: Uuid, state: &str, within: Duration) -> bool {
    eventually(within, || async {
        task_state(env, task_id).await.as_deref() == Some(state)
    })
    .await
}

pub async fn job_row(env: &TestEnv, job_id: Uuid) -> (String, Option<String>, Option<String>) {
    sqlx::query_as("SELECT status, error_code, error FROM jobs WHERE id = $1")
        .bind(job_id)
        .fetch_one(&env.db)
        .await
        .unwrap()
}
