//! The worker as it runs in production: its real binary against the real broker and
//! database, driven by task messages published the way the API publishes them.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod deploy_config;
mod maintenance;
mod runtime;
mod service;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use deployguard::queue::{Broker, Publisher, TaskBody, TaskMessage, WorkQueue};
use deployguard_testkit::TestEnv;
use uuid::Uuid;

/// A `deployguard-worker` process with its log in a temporary file.
pub struct Worker {
    child: tokio::process::Child,
    pub metrics: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    /// Starts a worker with diagnostic tasks and short leases; `extra` overrides.
    pub async fn start(env: &TestEnv, args: &[&str], extra: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
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
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_deployguard-worker"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(vars)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let worker = Self {
            child,
            metrics,
            log,
            _dir: dir,
        };
        let ready = eventually(Duration::from_secs(20), || async {
            worker.log().contains("\"consuming\"") || worker.log().contains("consuming")
        })
        .await;
        assert!(ready, "worker did not start consuming:\n{}", worker.log());
        worker
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; `None` if it is still running after `within`.
    pub async fn exited(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .map(Result::unwrap)
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

fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
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

/// A job row in `pending`, as the API creates it.
pub async fn insert_job(env: &TestEnv) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO jobs (id, owner_id, status, source_platform, source_url, expires_at)
         VALUES ($1, 'user-1', 'scanning', 'generic', 'https://git.example/r.git', now() + interval '1 day')",
    )
    .bind(id)
    .execute(&env.db)
    .await
    .unwrap();
    id
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
