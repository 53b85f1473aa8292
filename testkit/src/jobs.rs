//! Job rows written straight into a test's database, for tests that need a job in a
//! given state without driving the API there.

use std::time::Duration;

use deployguard::jobs::JobStatus;
use uuid::Uuid;

use crate::TestEnv;

/// A job to insert; [`JobRow::new`] gives a pending job of `user-1` expiring in a day.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: Uuid,
    pub owner: String,
    pub status: JobStatus,
    pub stage: Option<String>,
    pub platform: &'static str,
    pub source_url: String,
    /// The message allowed to run the job's task (`None`: any).
    pub task_id: Option<Uuid>,
    /// How long ago it was created and last updated.
    pub created_ago: Duration,
    pub updated_ago: Duration,
    /// Seconds until it expires; negative for a job past its time.
    pub expires_in_secs: f64,
}

impl Default for JobRow {
    fn default() -> Self {
        Self::new()
    }
}

impl JobRow {
    pub fn new() -> Self {
        Self {
            id: Uuid::now_v7(),
            owner: "user-1".into(),
            status: JobStatus::Pending,
            stage: None,
            platform: "generic",
            source_url: "https://git.example/r.git".into(),
            task_id: None,
            created_ago: Duration::ZERO,
            updated_ago: Duration::ZERO,
            expires_in_secs: 86_400.0,
        }
    }

    pub fn status(mut self, status: JobStatus) -> Self {
        self.status = status;
        self
    }

    pub fn stage(mut self, stage: &str) -> Self {
        self.stage = Some(stage.into());
        self
    }

    pub fn owner(mut self, owner: &str) -> Self {
        self.owner = owner.into();
        self
    }

    pub fn platform(mut self, platform: &'static str, source_url: &str) -> Self {
        self.platform = platform;
        self.source_url = source_url.into();
        self
    }

    pub fn task_id(mut self, task_id: Option<Uuid>) -> Self {
        self.task_id = task_id;
        self
    }

    pub fn created_ago(mut self, ago: Duration) -> Self {
        self.created_ago = ago;
        self
    }

    pub fn updated_ago(mut self, ago: Duration) -> Self {
        self.updated_ago = ago;
        self
    }

    pub fn expires_in_secs(mut self, secs: f64) -> Self {
        self.expires_in_secs = secs;
        self
    }

    /// Writes the row (a failed job gets the error the schema requires); returns its id.
    pub async fn insert(&self, env: &TestEnv) -> Uuid {
        let failed = (self.status == JobStatus::Failed).then_some("x");
        sqlx::query(
            "INSERT INTO jobs (id, owner_id, status, stage, source_platform, source_url,
                               task_id, created_at, updated_at, expires_at, error_code, error)
             VALUES ($1, $2, $3, $4, $5, $6, $7,
                     now() - make_interval(secs => $8), now() - make_interval(secs => $9),
                     now() + make_interval(secs => $10), $11, $11)",
        )
        .bind(self.id)
        .bind(&self.owner)
        .bind(self.status)
        .bind(&self.stage)
        .bind(self.platform)
        .bind(&self.source_url)
        .bind(self.task_id)
        .bind(self.created_ago.as_secs_f64())
        .bind(self.updated_ago.as_secs_f64())
        .bind(self.expires_in_secs)
        .bind(failed)
        .execute(&env.db)
        .await
        .unwrap_or_else(|e| panic!("inserting job {}: {e}", self.id));
        self.id
    }
}
