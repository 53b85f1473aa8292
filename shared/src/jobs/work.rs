//! The transitions workers make. Each is guarded by the status its task expects, so a
//! task redelivered after its work was done, or for a job that was cancelled meanwhile,
//! changes nothing.

use sqlx::PgPool;
use uuid::Uuid;

use super::{JOB_COLUMNS, Job, JobStatus};

/// Starts (or resumes) a task's work on a job: `from` → `working`, for the message
/// `task_id`. A job already in `working` is resumed (its previous worker died). `None`:
/// the job has moved on, or its task was queued again under another message (this copy
/// is superseded), and the task must leave it alone.
pub async fn begin(
    db: &PgPool,
    id: Uuid,
    (from, working): (JobStatus, JobStatus),
    stage: &str,
    task_id: Uuid,
) -> Result<Option<Job>, sqlx::Error> {
    let sql = format!(
        "UPDATE jobs SET status = $3, stage = $4, progress_percent = 0,
                error = NULL, error_code = NULL, started_at = coalesce(started_at, now()),
                finished_at = NULL
         WHERE id = $1 AND status IN ($2, $3) AND (task_id IS NULL OR task_id = $5)
         RETURNING {JOB_COLUMNS}"
    );
    sqlx::query_as::<_, Job>(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(from)
        .bind(working)
        .bind(stage)
        .bind(task_id)
        .fetch_optional(db)
        .await
}

/// Records progress; `false` when the job is no longer in `working` (cancelled).
pub async fn progress(
    db: &PgPool,
    id: Uuid,
    working: JobStatus,
    percent: u8,
    stage: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET progress_percent = $3, stage = left($4, 200)
         WHERE id = $1 AND status = $2
           AND (progress_percent IS DISTINCT FROM $3 OR stage IS DISTINCT FROM left($4, 200))",
    )
    .bind(id)
    .bind(working)
    .bind(i16::from(percent.min(100)))
    .bind(stage)
    .execute(db)
    .await?;
    if done.rows_affected() == 1 {
        return Ok(true);
    }
    still(db, id, working).await
}

/// Whether the job is still in `status`.
pub async fn still(db: &PgPool, id: Uuid, status: JobStatus) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND status = $2)",
    )
    .bind(id)
    .bind(status)
    .fetch_one(db)
    .await
}

/// A secret as the scan task stores it: a preview and a keyed hash, never the value.
#[derive(Debug, Clone)]
pub struct FoundSecret {
    pub rule_id: String,
    pub secret_type: String,
    pub preview: String,
    pub value_hash: [u8; 32],
    pub hash_key_id: String,
    /// `[{path, commit, line, column}]`.
    pub locations: serde_json::Value,
    pub occurrences: i32,
    pub confidence: String,
}

/// What a finished scan records.
#[derive(Debug, Clone, Default)]
pub struct ScanOutcome {
    pub secrets: Vec<FoundSecret>,
    /// File findings as the scan report lists them (a JSON array).
    pub files: serde_json::Value,
    /// The largest blobs of the history as the scan report lists them (a JSON array).
    pub largest_blobs: serde_json::Value,
    pub blobs_scanned: i64,
    pub blobs_skipped: i64,
}

/// Stores a scan's secrets, file findings and largest blobs and moves the job on:
/// `awaiting_selection` when it found a secret or a file, `completed` when not. One transaction, guarded by `scanning`; `None` when the
/// job had moved on (nothing is written then).
pub async fn finish_scan(
    db: &PgPool,
    id: Uuid,
    outcome: &ScanOutcome,
) -> Result<Option<JobStatus>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let locked: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE id = $1 AND status = $2 FOR UPDATE")
            .bind(id)
            .bind(JobStatus::Scanning)
            .fetch_optional(&mut *tx)
            .await?;
    if locked.is_none() {
        return Ok(None);
    }
    // A resumed scan replaces whatever an earlier attempt stored.
    sqlx::query("DELETE FROM secrets_found WHERE job_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    let s = &outcome.secrets;
    let ids: Vec<Uuid> = s.iter().map(|_| Uuid::now_v7()).collect();
    let column = |f: fn(&FoundSecret) -> String| s.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO secrets_found (id, job_id, rule_id, secret_type, value_preview,
                                    value_hash, hash_key_id, locations, occurrences,
                                    confidence)
         SELECT u.id, $1, u.rule_id, u.secret_type, u.preview, u.hash, u.key_id,
                u.locations, u.occurrences, u.confidence
         FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], $6::bytea[],
                     $7::text[], $8::jsonb[], $9::int[], $10::text[])
              AS u(id, rule_id, secret_type, preview, hash, key_id, locations,
                   occurrences, confidence)",
    )
    .bind(id)
    .bind(&ids)
    .bind(column(|x| x.rule_id.clone()))
    .bind(column(|x| x.secret_type.clone()))
    .bind(column(|x| x.preview.clone()))
    .bind(s.iter().map(|x| x.value_hash.to_vec()).collect::<Vec<_>>())
    .bind(column(|x| x.hash_key_id.clone()))
    .bind(
        s.iter()
            .map(|x| sqlx::types::Json(x.locations.clone()))
            .collect::<Vec<_>>(),
    )
    .bind(s.iter().map(|x| x.occurrences).collect::<Vec<_>>())
    .bind(column(|x| x.confidence.clone()))
    .execute(&mut *tx)
    .await?;
    let no_files = outcome.files.as_array().is_none_or(Vec::is_empty);
    let next = if s.is_empty() && no_files {
        JobStatus::Completed
    } else {
        JobStatus::AwaitingSelection
    };
    sqlx::query(
        "UPDATE jobs SET status = $2, stage = NULL, progress_percent = 100,
                total_secrets_found = $3, blobs_scanned = $4, blobs_skipped = $5,
                secrets_selected = 0, finished_at = now(),
                file_findings = $6, largest_blobs = $7, file_selection = NULL
         WHERE id = $1",
    )
    .bind(id)
    .bind(next)
    .bind(i32::try_from(s.len()).unwrap_or(i32::MAX))
    .bind(outcome.blobs_scanned)
    .bind(outcome.blobs_skipped)
    .bind(sqlx::types::Json(array_or_empty(&outcome.files)))
    .bind(sqlx::types::Json(array_or_empty(&outcome.largest_blobs)))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(next))
}

/// The secrets chosen for cleaning: `(rule_id, value_hash)`.
pub async fn selected(db: &PgPool, id: Uuid) -> Result<Vec<(String, Vec<u8>)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT rule_id, value_hash FROM secrets_found
         WHERE job_id = $1 AND selected_for_cleaning ORDER BY rule_id, value_hash",
    )
    .bind(id)
    .fetch_all(db)
    .await
}

fn array_or_empty(value: &serde_json::Value) -> serde_json::Value {
    if value.is_array() {
        value.clone()
    } else {
        serde_json::Value::Array(Vec::new())
    }
}

/// The whole files chosen for cleaning (`{paths, blob_ids, strip_blobs_bigger_than}`),
/// if any.
pub async fn file_selection(
    db: &PgPool,
    id: Uuid,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    let row: Option<Option<sqlx::types::Json<serde_json::Value>>> =
        sqlx::query_scalar("SELECT file_selection FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(db)
            .await?;
    Ok(row.flatten().map(|json| json.0))
}

/// `cleaning` → `cleaned`, with what was removed and the clean's report.
pub async fn finish_clean(
    db: &PgPool,
    id: Uuid,
    secrets_cleaned: i32,
    commits_rewritten: i64,
    report: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = $4, stage = NULL, progress_percent = 100,
                secrets_cleaned = $2, commits_rewritten = $3, finished_at = now(),
                clean_report = $6
         WHERE id = $1 AND status = $5",
    )
    .bind(id)
    .bind(secrets_cleaned)
    .bind(commits_rewritten)
    .bind(JobStatus::Cleaned)
    .bind(JobStatus::Cleaning)
    .bind(sqlx::types::Json(report))
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `pushing` → `pushed`, with what happened to each ref.
pub async fn finish_push(
    db: &PgPool,
    id: Uuid,
    result: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE jobs SET status = $3, stage = NULL, progress_percent = 100,
                push_result = $2, finished_at = now()
         WHERE id = $1 AND status = $4",
    )
    .bind(id)
    .bind(sqlx::types::Json(result))
    .bind(JobStatus::Pushed)
    .bind(JobStatus::Pushing)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
