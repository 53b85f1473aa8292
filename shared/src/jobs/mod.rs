//! Jobs as PostgreSQL records: their statuses, the guarded transitions the API makes,
//! and the queries that read them. Every transition is one statement or one transaction
//! guarded by the status it expects, so two requests racing on one job cannot both win.
//! No HTTP here: callers map the errors to their transport.

pub mod callbacks;
pub mod idempotency;
pub mod maintenance;
pub mod work;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::audit::{self, AuditRecord};
use crate::queue::Stage;
use crate::queue::outbox::{self, Staged};

/// Where a job is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Pending,
    Scanning,
    AwaitingSelection,
    Completed,
    Cleaning,
    Cleaned,
    Pushing,
    Pushed,
    Failed,
    Cancelled,
    Expired,
}

impl JobStatus {
    pub const ALL: [JobStatus; 11] = [
        Self::Pending,
        Self::Scanning,
        Self::AwaitingSelection,
        Self::Completed,
        Self::Cleaning,
        Self::Cleaned,
        Self::Pushing,
        Self::Pushed,
        Self::Failed,
        Self::Cancelled,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Scanning => "scanning",
            Self::AwaitingSelection => "awaiting_selection",
            Self::Completed => "completed",
            Self::Cleaning => "cleaning",
            Self::Cleaned => "cleaned",
            Self::Pushing => "pushing",
            Self::Pushed => "pushed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// The statuses in which nothing more happens to a job by itself.
    pub const FINAL: [JobStatus; 5] = [
        Self::Completed,
        Self::Pushed,
        Self::Failed,
        Self::Cancelled,
        Self::Expired,
    ];

    /// A task is queued or running for the job.
    pub const WORKING: [JobStatus; 4] =
        [Self::Pending, Self::Scanning, Self::Cleaning, Self::Pushing];

    /// The job was stopped from outside (or failed): a running task must stop.
    pub const STOPPED: [JobStatus; 3] = [Self::Cancelled, Self::Expired, Self::Failed];

    /// The job's stored objects are no longer kept.
    pub const GONE: [JobStatus; 2] = [Self::Cancelled, Self::Expired];

    /// Nothing more happens to the job by itself.
    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }

    /// `'a', 'b'` for SQL text, where a query must name statuses literally: a partial
    /// index's predicate (`WHERE status <> 'expired'`) is matched only by literals.
    pub fn sql_list(statuses: &[JobStatus]) -> String {
        statuses
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn is_stopped(self) -> bool {
        Self::STOPPED.contains(&self)
    }

    pub fn is_gone(self) -> bool {
        Self::GONE.contains(&self)
    }

    /// Whether the cleaned repository is there to download or push.
    pub fn has_cleaned_repository(self) -> bool {
        matches!(self, Self::Cleaned | Self::Pushing | Self::Pushed)
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

// Stored as text (the schema's CHECK lists the same names): read and bound directly,
// so no query compares statuses as strings.
impl sqlx::Type<sqlx::Postgres> for JobStatus {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl sqlx::postgres::PgHasArrayType for JobStatus {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for JobStatus {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
    }
}

impl sqlx::Decode<'_, sqlx::Postgres> for JobStatus {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
        let raw = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Self::parse(raw).ok_or_else(|| format!("unknown job status {raw:?}").into())
    }
}

/// A git hosting platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Platform {
    Github,
    Gitlab,
    Bitbucket,
    AzureDevops,
    Generic,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Github => "github",
            Self::Gitlab => "gitlab",
            Self::Bitbucket => "bitbucket",
            Self::AzureDevops => "azure_devops",
            Self::Generic => "generic",
        }
    }
}

/// A job as its owner (and the admin panel) sees it. No credential is part of it: only
/// the ids of credentials held by the credential service.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Job {
    pub id: Uuid,
    pub owner_id: String,
    pub status: JobStatus,
    /// What the worker is doing right now ("cloning", "scanning 120/400 blobs" …).
    pub stage: Option<String>,
    pub progress_percent: i16,
    #[schema(value_type = Platform)]
    pub source_platform: String,
    pub source_url: String,
    pub source_branch: Option<String>,
    pub source_credentials_id: Option<String>,
    #[schema(value_type = Option<Platform>)]
    pub target_platform: Option<String>,
    pub target_url: Option<String>,
    pub target_credentials_id: Option<String>,
    pub force_push: bool,
    /// 0 (lowest) … 9 (highest).
    pub priority: i16,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub total_secrets_found: i32,
    pub secrets_selected: i32,
    pub secrets_cleaned: i32,
    pub blobs_scanned: i64,
    pub commits_rewritten: i64,
    pub callback_url: Option<String>,
    /// After a push: `{url, refs: [{refname, outcome, reason}], not_pushed}`.
    #[schema(value_type = Option<Object>)]
    pub push_result: Option<sqlx::types::Json<serde_json::Value>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
}

const JOB_COLUMNS: &str = "id, owner_id, status, stage, progress_percent, source_platform, \
     source_url, source_branch, source_credentials_id, target_platform, target_url, \
     target_credentials_id, force_push, priority, error_code, error, total_secrets_found, \
     secrets_selected, secrets_cleaned, blobs_scanned, commits_rewritten, callback_url, \
     push_result, created_at, updated_at, started_at, finished_at, expires_at";

/// A secret found by a scan: a preview and where it occurs, never the value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, sqlx::FromRow)]
pub struct Secret {
    pub id: Uuid,
    pub rule_id: String,
    pub secret_type: String,
    /// At most the first and last three characters ("abc…xyz").
    pub secret_value_preview: String,
    /// The first place it was found.
    pub file_path: Option<String>,
    /// Every place it was found: `[{path, commit, line, column}]`.
    #[schema(value_type = Vec<Object>)]
    pub locations: sqlx::types::Json<serde_json::Value>,
    pub occurrences: i32,
    /// `low`, `medium` or `high`.
    pub confidence: String,
    pub selected_for_cleaning: bool,
    pub false_positive: bool,
}

const SECRET_COLUMNS: &str = "id, rule_id, secret_type, value_preview AS secret_value_preview, \
     file_path, locations, occurrences, confidence, selected_for_cleaning, false_positive";

/// A secret as listed with its job: where it was first found, not every location.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SecretSummary {
    pub id: Uuid,
    pub rule_id: String,
    pub secret_type: String,
    /// At most the first and last three characters ("abc…xyz").
    pub secret_value_preview: String,
    /// The first place it was found.
    pub file_path: Option<String>,
    pub occurrences: i32,
    /// `low`, `medium` or `high`.
    pub confidence: String,
    pub selected_for_cleaning: bool,
    pub false_positive: bool,
}

/// What a new job is made of; validated by the caller.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub owner_id: String,
    pub source_platform: Platform,
    pub source_url: String,
    pub source_branch: Option<String>,
    pub source_credentials_id: Option<String>,
    pub priority: i16,
    pub callback_url: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// Why a requested transition did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("job not found")]
    NotFound,
    /// The job exists but its status does not allow the action.
    #[error("the job is {0}")]
    WrongState(JobStatus),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Creating a job and staging its first task (the scan), in one statement (so one
/// round trip and one commit). Undone when the task cannot be published: the staged
/// task and the job disappear, unless the relay published the task meanwhile or
/// something moved the job on (then the job stays and runs).
pub struct Create<'a>(pub &'a NewJob);

impl Stage for Create<'_> {
    type Output = Job;
    type Error = sqlx::Error;

    async fn write(&self, db: &PgPool, staged: &Staged) -> Result<Option<Job>, sqlx::Error> {
        let job = self.0;
        let sql = format!(
            "WITH job AS (
                INSERT INTO jobs (id, owner_id, source_platform, source_url, source_branch,
                                  source_credentials_id, priority, callback_url, expires_at,
                                  task_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                RETURNING {JOB_COLUMNS}
             ), staged AS ({})
             SELECT * FROM job",
            outbox::insert_sql(11, "job")
        );
        let query = sqlx::query_as::<_, Job>(sqlx::AssertSqlSafe(sql))
            .bind(job.id)
            .bind(&job.owner_id)
            .bind(job.source_platform.as_str())
            .bind(&job.source_url)
            .bind(&job.source_branch)
            .bind(&job.source_credentials_id)
            .bind(job.priority)
            .bind(&job.callback_url)
            .bind(job.expires_at)
            .bind(staged.message_id);
        staged.bind(query).fetch_one(db).await.map(Some)
    }

    async fn undo(&self, db: &PgPool, message_id: Uuid) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "WITH dropped AS (
                DELETE FROM outbox WHERE message_id = $2 AND published_at IS NULL
                RETURNING job_id
             )
             DELETE FROM jobs WHERE id = $1 AND status = $3
               AND EXISTS (SELECT 1 FROM dropped)",
        )
        .bind(self.0.id)
        .bind(message_id)
        .bind(JobStatus::Pending)
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A job of `owner` (any owner's when `owner` is `None`: the admin panel).
pub async fn get(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: Option<&str>,
) -> Result<Option<Job>, sqlx::Error> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)"
    );
    sqlx::query_as::<_, Job>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(owner)
        .fetch_optional(db)
        .await
}

/// A job with its first secrets.
#[derive(Debug)]
pub struct JobWithSecrets {
    pub job: Job,
    pub secrets: Vec<SecretSummary>,
    /// The job has more secrets than were returned (by its `total_secrets_found`).
    pub truncated: bool,
}

/// A job and up to `limit` of its secrets, in one round trip. The secrets come as one
/// array per column: cheaper for PostgreSQL to build than JSON, and cheap to decode.
pub async fn get_with_secrets(
    db: &PgPool,
    id: Uuid,
    owner: Option<&str>,
    limit: i64,
) -> Result<Option<JobWithSecrets>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        job: Job,
        truncated: bool,
        s_id: Option<Vec<Uuid>>,
        s_rule: Option<Vec<String>>,
        s_type: Option<Vec<String>>,
        s_preview: Option<Vec<String>>,
        s_path: Option<Vec<Option<String>>>,
        s_occurrences: Option<Vec<i32>>,
        s_confidence: Option<Vec<String>>,
        s_selected: Option<Vec<bool>>,
        s_false_positive: Option<Vec<bool>>,
    }
    let sql = format!(
        "SELECT {JOB_COLUMNS}, total_secrets_found > $3 AS truncated, s.*
         FROM jobs CROSS JOIN LATERAL (
            SELECT array_agg(id) AS s_id, array_agg(rule_id) AS s_rule,
                   array_agg(secret_type) AS s_type, array_agg(value_preview) AS s_preview,
                   array_agg(file_path) AS s_path, array_agg(occurrences) AS s_occurrences,
                   array_agg(confidence) AS s_confidence,
                   array_agg(selected_for_cleaning) AS s_selected,
                   array_agg(false_positive) AS s_false_positive
            FROM (SELECT * FROM secrets_found WHERE job_id = jobs.id
                  ORDER BY created_at, id LIMIT $3) found
         ) s
         WHERE jobs.id = $1 AND ($2::text IS NULL OR owner_id = $2)"
    );
    let Some(row) = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(owner)
        .bind(limit)
        .fetch_optional(db)
        .await?
    else {
        return Ok(None);
    };
    let ids = row.s_id.unwrap_or_default();
    let mut rules = row.s_rule.unwrap_or_default().into_iter();
    let mut types = row.s_type.unwrap_or_default().into_iter();
    let mut previews = row.s_preview.unwrap_or_default().into_iter();
    let mut paths = row.s_path.unwrap_or_default().into_iter();
    let mut occurrences = row.s_occurrences.unwrap_or_default().into_iter();
    let mut confidences = row.s_confidence.unwrap_or_default().into_iter();
    let mut selected = row.s_selected.unwrap_or_default().into_iter();
    let mut false_positives = row.s_false_positive.unwrap_or_default().into_iter();
    let secrets = ids
        .into_iter()
        .map(|id| SecretSummary {
            id,
            rule_id: rules.next().unwrap_or_default(),
            secret_type: types.next().unwrap_or_default(),
            secret_value_preview: previews.next().unwrap_or_default(),
            file_path: paths.next().flatten(),
            occurrences: occurrences.next().unwrap_or(1),
            confidence: confidences.next().unwrap_or_default(),
            selected_for_cleaning: selected.next().unwrap_or(false),
            false_positive: false_positives.next().unwrap_or(false),
        })
        .collect();
    Ok(Some(JobWithSecrets {
        job: row.job,
        secrets,
        truncated: row.truncated,
    }))
}

/// Which jobs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobFilter<'a> {
    pub owner: Option<&'a str>,
    pub status: Option<JobStatus>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Continue after this (created_at, id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// A page of jobs, newest first (keyset pagination on `(created_at, id)`).
pub async fn list(db: &PgPool, filter: &JobFilter<'_>) -> Result<Vec<Job>, sqlx::Error> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs
         WHERE ($1::text IS NULL OR owner_id = $1)
           AND ($2::text IS NULL OR status = $2)
           AND ($3::timestamptz IS NULL OR created_at >= $3)
           AND ($4::timestamptz IS NULL OR created_at < $4)
           AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6))
         ORDER BY created_at DESC, id DESC
         LIMIT $7"
    );
    let (after_at, after_id) = filter.after.unzip();
    sqlx::query_as::<_, Job>(sqlx::AssertSqlSafe(sql))
        .bind(filter.owner)
        .bind(filter.status)
        .bind(filter.created_after)
        .bind(filter.created_before)
        .bind(after_at)
        .bind(after_id)
        .bind(filter.limit)
        .fetch_all(db)
        .await
}

/// A page of a job's secrets in the order they were found, after secret `after`.
pub async fn secrets(
    db: &PgPool,
    job_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Secret>, sqlx::Error> {
    let sql = format!(
        "SELECT {SECRET_COLUMNS} FROM secrets_found
         WHERE job_id = $1
           AND ($2::uuid IS NULL OR (created_at, id) > (
                SELECT created_at, id FROM secrets_found WHERE id = $2 AND job_id = $1))
         ORDER BY created_at, id
         LIMIT $3"
    );
    sqlx::query_as::<_, Secret>(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await
}

/// What a selection changed.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Selection {
    pub selected: i64,
    pub false_positives: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    Transition(#[from] TransitionError),
    /// Ids that are not secrets of this job.
    #[error("{} secret ids do not belong to this job", .0.len())]
    Unknown(Vec<Uuid>),
}

impl From<sqlx::Error> for SelectError {
    fn from(err: sqlx::Error) -> Self {
        Self::Transition(TransitionError::Database(err))
    }
}

/// Replaces the job's selection: exactly `selected` are to be cleaned and exactly
/// `false_positives` are marked so, and `files` (`{paths, blob_ids,
/// strip_blobs_bigger_than}`, already checked) are removed whole; allowed only while
/// the job awaits selection.
pub async fn select(
    db: &PgPool,
    job_id: Uuid,
    owner: Option<&str>,
    selected: &[Uuid],
    false_positives: &[Uuid],
    files: Option<&serde_json::Value>,
    audit: &AuditRecord<'_>,
) -> Result<Selection, SelectError> {
    let mut tx = db.begin().await?;
    let status: Option<JobStatus> = sqlx::query_scalar(
        "SELECT status FROM jobs WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)
         FOR UPDATE",
    )
    .bind(job_id)
    .bind(owner)
    .fetch_optional(&mut *tx)
    .await?;
    match status {
        None => return Err(TransitionError::NotFound.into()),
        Some(JobStatus::AwaitingSelection) => {}
        Some(other) => return Err(TransitionError::WrongState(other).into()),
    }
    let wanted: Vec<Uuid> = selected.iter().chain(false_positives).copied().collect();
    let unknown: Vec<Uuid> = sqlx::query_scalar(
        "SELECT wanted.id FROM unnest($2::uuid[]) AS wanted(id)
         WHERE NOT EXISTS (SELECT 1 FROM secrets_found s WHERE s.id = wanted.id AND s.job_id = $1)",
    )
    .bind(job_id)
    .bind(&wanted)
    .fetch_all(&mut *tx)
    .await?;
    if !unknown.is_empty() {
        return Err(SelectError::Unknown(unknown));
    }
    let (chosen, marked): (i64, i64) = sqlx::query_as(
        "WITH changed AS (
            UPDATE secrets_found
            SET selected_for_cleaning = id = ANY($2), false_positive = id = ANY($3)
            WHERE job_id = $1
              AND (selected_for_cleaning IS DISTINCT FROM (id = ANY($2))
                   OR false_positive IS DISTINCT FROM (id = ANY($3)))
         )
         SELECT
            (SELECT count(*) FROM unnest($2::uuid[])),
            (SELECT count(*) FROM unnest($3::uuid[]))",
    )
    .bind(job_id)
    .bind(selected)
    .bind(false_positives)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query("UPDATE jobs SET secrets_selected = $2, file_selection = $3 WHERE id = $1")
        .bind(job_id)
        .bind(i32::try_from(chosen).unwrap_or(i32::MAX))
        .bind(files.map(sqlx::types::Json))
        .execute(&mut *tx)
        .await?;
    audit::insert(&mut *tx, audit).await?;
    tx.commit().await?;
    Ok(Selection {
        selected: chosen,
        false_positives: marked,
    })
}

/// What a scan found of whole files, and what of it is selected.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobFiles {
    pub file_findings: sqlx::types::Json<serde_json::Value>,
    pub largest_blobs: sqlx::types::Json<serde_json::Value>,
    pub file_selection: Option<sqlx::types::Json<serde_json::Value>>,
}

/// A job's file findings, largest blobs and file selection.
pub async fn files(
    db: &PgPool,
    job_id: Uuid,
    owner: Option<&str>,
) -> Result<Option<JobFiles>, sqlx::Error> {
    sqlx::query_as(
        "SELECT file_findings, largest_blobs, file_selection FROM jobs
         WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)",
    )
    .bind(job_id)
    .bind(owner)
    .fetch_optional(db)
    .await
}

/// The report of a job's clean (first changed commits, commit map, what is left to
/// do), once it is cleaned: `Some(None)` when the job exists without one.
pub async fn clean_report(
    db: &PgPool,
    job_id: Uuid,
    owner: Option<&str>,
) -> Result<Option<Option<serde_json::Value>>, sqlx::Error> {
    let row: Option<Option<sqlx::types::Json<serde_json::Value>>> = sqlx::query_scalar(
        "SELECT clean_report FROM jobs WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)",
    )
    .bind(job_id)
    .bind(owner)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|report| report.map(|json| json.0)))
}

/// Where a pushed repository goes.
#[derive(Debug, Clone)]
pub struct PushTarget {
    pub platform: Platform,
    pub url: String,
    pub credentials_id: Option<String>,
    pub force: bool,
}

/// Moving a job from `from` to `to` and staging the task that works on it there, in one
/// statement: clean (`awaiting_selection` → `cleaning`) and push (`cleaned` →
/// `pushing`). With `target` the push target is recorded too; with `needs_selection`
/// the job must have a secret selected (a job without one stays put, reported as
/// [`TransitionError::WrongState`] with its unchanged status). Undone (back to `from`,
/// the staged task removed) when the task cannot be published, unless the relay sent
/// it meanwhile or a worker moved the job on.
pub struct RequestTask<'a> {
    pub job_id: Uuid,
    /// Only this owner's job (any owner's when `None`: the admin panel).
    pub owner: Option<&'a str>,
    pub from: JobStatus,
    pub to: JobStatus,
    pub target: Option<&'a PushTarget>,
    pub needs_selection: bool,
}

impl Stage for RequestTask<'_> {
    type Output = Job;
    type Error = TransitionError;

    async fn write(&self, db: &PgPool, staged: &Staged) -> Result<Option<Job>, TransitionError> {
        let sql = format!(
            "WITH moved AS (
                UPDATE jobs SET status = $3, stage = 'queued', progress_percent = 0,
                       error = NULL, error_code = NULL, task_id = $9,
                       target_platform = coalesce($4, target_platform),
                       target_url = coalesce($5, target_url),
                       target_credentials_id = CASE WHEN $4 IS NULL THEN target_credentials_id
                                                    ELSE $6 END,
                       force_push = coalesce($7, force_push)
                WHERE id = $1 AND status = $2 AND ($8::text IS NULL OR owner_id = $8)
                  AND (NOT $10 OR secrets_selected > 0 OR file_selection IS NOT NULL)
                RETURNING {JOB_COLUMNS}
             ), staged AS ({})
             SELECT * FROM moved",
            outbox::insert_sql(11, "moved")
        );
        let target = self.target;
        let query = sqlx::query_as::<_, Job>(sqlx::AssertSqlSafe(sql))
            .bind(self.job_id)
            .bind(self.from)
            .bind(self.to)
            .bind(target.map(|t| t.platform.as_str()))
            .bind(target.map(|t| t.url.as_str()))
            .bind(target.and_then(|t| t.credentials_id.as_deref()))
            .bind(target.map(|t| t.force))
            .bind(self.owner)
            .bind(staged.message_id)
            .bind(self.needs_selection);
        let moved = staged.bind(query).fetch_optional(db).await?;
        match moved {
            Some(job) => Ok(Some(job)),
            None => match get(db, self.job_id, self.owner).await? {
                None => Err(TransitionError::NotFound),
                Some(job) => Err(TransitionError::WrongState(job.status)),
            },
        }
    }

    async fn undo(&self, db: &PgPool, message_id: Uuid) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "WITH dropped AS (
                DELETE FROM outbox WHERE message_id = $4 AND published_at IS NULL
                RETURNING job_id
             )
             UPDATE jobs SET status = $2, stage = NULL
             WHERE id = $1 AND status = $3 AND EXISTS (SELECT 1 FROM dropped)",
        )
        .bind(self.job_id)
        .bind(self.from)
        .bind(self.to)
        .bind(message_id)
        .execute(db)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// Cancels a job: any status but `expired` becomes `cancelled` (a running task hears
/// of it through the stop notification), and `audit` (naming the job) is written.
/// Returns the job and whether this call cancelled it (false: it was cancelled
/// already).
pub async fn cancel(
    db: &PgPool,
    job_id: Uuid,
    owner: Option<&str>,
    audit: &AuditRecord<'_>,
) -> Result<(Job, bool), TransitionError> {
    let sql = format!(
        "WITH cancelled AS (
            UPDATE jobs SET status = $3, stage = NULL,
                   finished_at = coalesce(finished_at, now())
            WHERE id = $1 AND ($2::text IS NULL OR owner_id = $2)
              AND status <> ALL($4)
            RETURNING {JOB_COLUMNS}
         ), audited AS (
            INSERT INTO audit_logs ({})
            SELECT $5, $6, $7, $8::inet, $9, $10, $11 FROM cancelled
         ), unstaged AS (
            UPDATE outbox SET published_at = now()
            WHERE job_id = $1 AND published_at IS NULL AND EXISTS (SELECT 1 FROM cancelled)
         )
         SELECT * FROM cancelled",
        audit::COLUMNS
    );
    let query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .bind(owner)
        .bind(JobStatus::Cancelled)
        .bind(&JobStatus::GONE[..]);
    let cancelled = audit.bind(query).fetch_optional(db).await?;
    if let Some(row) = cancelled {
        return Ok((sqlx::FromRow::from_row(&row)?, true));
    }
    match get(db, job_id, owner).await? {
        None => Err(TransitionError::NotFound),
        Some(job) if job.status == JobStatus::Cancelled => Ok((job, false)),
        Some(job) => Err(TransitionError::WrongState(job.status)),
    }
}

/// Numbers for the admin panel.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Stats {
    /// Jobs per status (every status is present).
    pub jobs_by_status: std::collections::BTreeMap<String, i64>,
    pub jobs_total: i64,
    pub secrets_found: i64,
    pub secrets_selected: i64,
    pub secrets_cleaned: i64,
    /// Seconds from creation to the end, over jobs that ended.
    pub duration_seconds: DurationStats,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct DurationStats {
    pub count: i64,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub max: Option<f64>,
}

/// Stats over jobs created in `[since, until)` (all jobs when unbounded).
pub async fn stats(
    db: &PgPool,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Stats, sqlx::Error> {
    let by_status: Vec<(JobStatus, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM jobs
         WHERE ($1::timestamptz IS NULL OR created_at >= $1)
           AND ($2::timestamptz IS NULL OR created_at < $2)
         GROUP BY status",
    )
    .bind(since)
    .bind(until)
    .fetch_all(db)
    .await?;
    #[allow(clippy::type_complexity)]
    let row: (
        i64,
        i64,
        i64,
        i64,
        Option<f64>,
        Option<f64>,
        Option<f64>,
        Option<f64>,
    ) = sqlx::query_as(
        "SELECT coalesce(sum(total_secrets_found), 0)::bigint,
                coalesce(sum(secrets_selected), 0)::bigint,
                coalesce(sum(secrets_cleaned), 0)::bigint,
                count(finished_at),
                avg(extract(epoch FROM finished_at - created_at))::float8,
                percentile_cont(0.5) WITHIN GROUP (
                    ORDER BY extract(epoch FROM finished_at - created_at))::float8,
                percentile_cont(0.95) WITHIN GROUP (
                    ORDER BY extract(epoch FROM finished_at - created_at))::float8,
                max(extract(epoch FROM finished_at - created_at))::float8
         FROM jobs
         WHERE ($1::timestamptz IS NULL OR created_at >= $1)
           AND ($2::timestamptz IS NULL OR created_at < $2)",
    )
    .bind(since)
    .bind(until)
    .fetch_one(db)
    .await?;
    let mut jobs_by_status: std::collections::BTreeMap<String, i64> = JobStatus::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    for (status, n) in by_status {
        jobs_by_status.insert(status.as_str().to_owned(), n);
    }
    Ok(Stats {
        jobs_total: jobs_by_status.values().sum(),
        jobs_by_status,
        secrets_found: row.0,
        secrets_selected: row.1,
        secrets_cleaned: row.2,
        duration_seconds: DurationStats {
            count: row.3,
            mean: row.4,
            p50: row.5,
            p95: row.6,
            max: row.7,
        },
    })
}
