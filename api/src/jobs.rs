//! `/jobs`: what CI pipelines and the admin panel do with jobs. Each handler validates,
//! checks ownership, records and publishes; workers do the work.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use deployguard::audit::{self, AuditRecord, Outcome};
use deployguard::jobs::{
    self, Job, JobFilter, JobStatus, NewJob, Platform, PushTarget, RequestTask, Secret,
    SecretSummary, SelectError, Selection, TransitionError,
};
use deployguard::queue::{EnqueueError, OnRefusal, Stage, TaskMessage, enqueue};
use deployguard::storage::ObjectKey;
use deployguard::tasks::{JobRef, JobTask};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, JobId};
use crate::validate;
use deployguard_engine::clean::FileSelection;

/// Secrets returned inline with a job; more are paged through `/secrets`.
const INLINE_SECRETS: i64 = 1000;

/// A new scan job.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// The repository to scan: https (http only where the deployment allows it).
    /// Credentials never go in the URL: pass `source_credentials_id`.
    #[schema(
        example = "https://bitbucket.example.com/scm/proj/repo.git",
        min_length = 1,
        max_length = 2048
    )]
    pub source_url: String,
    /// Defaults to `generic`.
    pub source_platform: Option<Platform>,
    /// Scan only this branch's history; every branch and tag when absent.
    #[schema(min_length = 1, max_length = 255)]
    pub source_branch: Option<String>,
    /// An id in the credential service; resolved by the worker when it clones.
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,255}$")]
    pub source_credentials_id: Option<String>,
    /// 0 (lowest) … 9 (highest); default 5.
    #[schema(minimum = 0, maximum = 9)]
    pub priority: Option<i64>,
    /// Where to POST the job each time it settles (signed with HMAC-SHA-256).
    #[schema(max_length = 2048)]
    pub callback_url: Option<String>,
}

/// The answer to a created job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobCreated {
    pub id: Uuid,
    pub status: JobStatus,
    pub progress_percent: i16,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The answers every job route may give besides its own.
#[derive(utoipa::IntoResponses)]
pub enum CommonErrors {
    /// Bad input.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// No identity.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// No such job (or not yours).
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// A dependency is unavailable.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

fn location(id: Uuid) -> HeaderValue {
    HeaderValue::from_str(&format!("/api/v2/jobs/{id}")).unwrap_or(HeaderValue::from_static("/"))
}

/// Creates a scan job and queues its scan. Answers 202 only when the task has reached
/// the broker; with the broker down, 503 and no job.
#[utoipa::path(post, path = "/jobs", tag = "jobs",
    request_body = CreateJob,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Retry-safe key: the same key and body give the first answer again")),
    responses(
        (status = 202, description = "Job created and its scan queued", body = JobCreated,
            links(
                ("GetJob" = (operation_id = "get", parameters(("id" = "$response.body#/id")))),
                ("CancelJob" = (operation_id = "cancel", parameters(("id" = "$response.body#/id")))),
                ("ListSecrets" = (operation_id = "secrets", parameters(("id" = "$response.body#/id")))),
                ("SelectSecrets" = (operation_id = "select", parameters(("id" = "$response.body#/id")))),
                ("CleanJob" = (operation_id = "clean", parameters(("id" = "$response.body#/id")))),
                ("PushJob" = (operation_id = "push", parameters(("id" = "$response.body#/id")))),
                ("DownloadJob" = (operation_id = "download", parameters(("id" = "$response.body#/id")))),
            )),
        (status = 409, description = "Idempotency key in use or reused for another request", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        CommonErrors,
    ))]
pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    ApiJson(body): ApiJson<CreateJob>,
) -> ApiResult<Response> {
    let priority = match body.priority {
        None => 5,
        Some(p @ 0..=9) => p as i16,
        Some(_) => return Err(ApiError::validation("priority must be 0 to 9")),
    };
    let source_branch = body
        .source_branch
        .as_deref()
        .map(validate::branch)
        .transpose()?;
    let source_credentials_id = body
        .source_credentials_id
        .as_deref()
        .map(|id| validate::credentials_id("source_credentials_id", id))
        .transpose()?;
    let source_url = validate::repository_url(&state.api, "source_url", &body.source_url).await?;
    let callback_url = match body.callback_url.as_deref() {
        Some(raw) => Some(validate::callback_url(&state.api, raw).await?),
        None => None,
    };
    let id = Uuid::now_v7();
    let new = NewJob {
        id,
        owner_id: caller.user_id.clone(),
        source_platform: body.source_platform.unwrap_or(Platform::Generic),
        source_url,
        source_branch,
        source_credentials_id,
        priority,
        callback_url,
        expires_at: Utc::now()
            + chrono::Duration::from_std(state.api.job_ttl).unwrap_or(chrono::Duration::days(7)),
    };
    let task = JobTask::Scan
        .message(JobRef::new(id, &caller.user_id), priority)
        .map_err(|e| ApiError::internal(&e))?;
    let job = detached({
        let (state, caller) = (state.clone(), Arc::clone(&caller));
        async move {
            let audit = AuditRecord {
                actor: caller.actor(),
                action: "job.create",
                job_id: Some(id),
                outcome: Outcome::Success,
                details: serde_json::json!({
                    "source_platform": new.source_platform.as_str(),
                    "priority": priority,
                }),
            };
            request(&state, &task, &jobs::Create(&new), &audit, ApiError::from).await
        }
    })
    .await?;
    state.metrics.jobs_created.inc();
    tracing::info!(job_id = %id, user_id = %caller.user_id, "job created");
    let created = JobCreated {
        id,
        status: job.status,
        progress_percent: job.progress_percent,
        created_at: job.created_at,
        expires_at: job.expires_at,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location(id))],
        Json(created),
    )
        .into_response())
}

/// Queues `message` with the change `stage` makes, as a person's request: undone, and
/// answered 503, when the broker does not take it; `refused` maps the change's own
/// refusal (a wrong state, a conflict).
async fn request<S>(
    state: &AppState,
    message: &TaskMessage,
    stage: &S,
    audit: &AuditRecord<'_>,
    refused: impl FnOnce(S::Error) -> ApiError,
) -> ApiResult<S::Output>
where
    S: Stage,
    S::Error: std::error::Error,
{
    let queued = enqueue(
        &state.db,
        &state.publisher,
        message,
        stage,
        OnRefusal::Undo,
        Some(audit),
    )
    .await;
    match queued {
        Ok(Some(enqueued)) => Ok(enqueued.output),
        Ok(None) => Err(ApiError::internal(&"the request changed nothing")),
        Err(EnqueueError::Unavailable(_)) => {
            state.metrics.publish_failures.inc();
            Err(ApiError::broker_unavailable())
        }
        Err(EnqueueError::Stage(err)) => Err(refused(err)),
        Err(err @ EnqueueError::Outbox(_)) => Err(ApiError::internal(&err)),
    }
}

/// Runs `work` to its end even if the client hangs up meanwhile: once a job is
/// committed, its task must be published and marked, or the job withdrawn, whatever
/// happens to the connection (axum drops a handler whose client went away).
pub(crate) async fn detached<T: Send + 'static>(
    work: impl Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(work)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(&e)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs with this status.
    #[param(inline)]
    pub status: Option<JobStatus>,
    /// Page size, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Cuts a page fetched with one row more than `limit` back to `limit`; the cursor of
/// its last row is the next page's start, when that extra row showed there is one.
pub fn next_page<T, C>(rows: &mut Vec<T>, limit: i64, cursor: impl Fn(&T) -> C) -> Option<C> {
    let limit = usize::try_from(limit).unwrap_or(0);
    if rows.len() <= limit {
        return None;
    }
    rows.truncate(limit);
    rows.last().map(cursor)
}

pub fn page_limit(limit: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match limit {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::validation(format!("limit must be 1 to {max}"))),
    }
}

pub fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}.{id}", at.timestamp_micros()))
}

pub fn decode_cursor(raw: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::validation("cursor is not one this API handed out");
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(bad)?;
    let (micros, id) = text.split_once('.').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    crate::extract::time_filter("cursor", Some(at)).map_err(|_| bad())?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// Lists the pages of a job query (shared with the admin listing).
pub async fn job_page(state: &AppState, mut filter: JobFilter<'_>) -> ApiResult<JobPage> {
    let limit = filter.limit;
    filter.limit = limit + 1;
    let mut jobs = jobs::list(&state.db, &filter).await?;
    let next_cursor = next_page(&mut jobs, limit, |j| encode_cursor(j.created_at, j.id));
    Ok(JobPage { jobs, next_cursor })
}

/// The caller's jobs, newest first.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, description = "A page of jobs", body = JobPage), CommonErrors))]
pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> ApiResult<Json<JobPage>> {
    let filter = JobFilter {
        owner: Some(&caller.user_id),
        status: query.status,
        after: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: page_limit(query.limit, 20, 100)?,
        ..JobFilter::default()
    };
    Ok(Json(job_page(&state, filter).await?))
}

/// A job with its secrets (previews only).
#[derive(Debug, Serialize, ToSchema)]
pub struct JobDetail {
    pub job: Job,
    /// The first 1000 secrets; every location of each is in `/jobs/{id}/secrets`.
    pub secrets: Vec<SecretSummary>,
    /// More secrets than are listed here: page through `/jobs/{id}/secrets`.
    pub secrets_truncated: bool,
}

/// A job and the secrets found in it.
#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = JobDetail), CommonErrors))]
pub async fn get(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    JobId(id): JobId,
) -> ApiResult<Json<JobDetail>> {
    let found = jobs::get_with_secrets(&state.db, id, caller.owner_filter(), INLINE_SECRETS)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(JobDetail {
        job: found.job,
        secrets: found.secrets,
        secrets_truncated: found.truncated,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SecretsQuery {
    /// Page size, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretPage {
    pub job_id: Uuid,
    pub secrets: Vec<Secret>,
    pub next_cursor: Option<Uuid>,
}

/// The secrets found in a job, in the order they were found.
#[utoipa::path(get, path = "/jobs/{id}/secrets", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id"), SecretsQuery),
    responses((status = 200, description = "A page of secrets", body = SecretPage), CommonErrors))]
pub async fn secrets(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    JobId(id): JobId,
    ApiQuery(query): ApiQuery<SecretsQuery>,
) -> ApiResult<Json<SecretPage>> {
    let limit = page_limit(query.limit, 100, 1000)?;
    jobs::get(&state.db, id, caller.owner_filter())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let mut secrets = jobs::secrets(&state.db, id, query.cursor, limit + 1).await?;
    let next_cursor = next_page(&mut secrets, limit, |s| s.id);
    Ok(Json(SecretPage {
        job_id: id,
        secrets,
        next_cursor,
    }))
}

/// Which secrets to clean; the rest stay. Replaces any earlier selection.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SelectRequest {
    /// Secrets to remove from history.
    pub secret_ids: Vec<Uuid>,
    /// Secrets that are not secrets; kept, and marked so.
    #[serde(default)]
    pub mark_false_positives: Vec<Uuid>,
    /// File findings (their `id`s from `GET /jobs/{id}/files`) to remove whole: every
    /// version of the file at its path, and its blob wherever it is.
    #[serde(default)]
    pub file_ids: Vec<String>,
    /// Path patterns to remove from every commit, `.gitignore` style: `.env` or
    /// `**/.env` at any depth, `config/prod.env` from the root, `secrets/` a directory.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Blobs to remove wherever they are (full ids, e.g. from `largest_blobs`).
    #[serde(default)]
    pub blob_ids: Vec<String>,
    /// Remove every blob bigger than this many bytes.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub strip_blobs_bigger_than: Option<u64>,
}

/// The whole files selected, as stored with the job and applied by the clean task.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct FileChoice {
    pub paths: Vec<String>,
    pub blob_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strip_blobs_bigger_than: Option<u64>,
}

impl FileChoice {
    fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.blob_ids.is_empty() && self.strip_blobs_bigger_than.is_none()
    }
}

/// A path as a pattern that matches exactly it, from the root.
fn exact_path(path: &str) -> String {
    let mut pattern = String::from("/");
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern
}

/// The file selection of a request: its patterns, blob ids and size, with the chosen
/// file findings turned into their paths and blobs; checked the way the clean will read
/// it, so that a bad pattern is refused now and not after the job was queued.
fn file_choice(body: &SelectRequest, findings: &serde_json::Value) -> ApiResult<FileChoice> {
    let mut choice = FileChoice {
        paths: body.paths.clone(),
        blob_ids: body
            .blob_ids
            .iter()
            .map(|b| b.trim().to_ascii_lowercase())
            .collect(),
        strip_blobs_bigger_than: body.strip_blobs_bigger_than,
    };
    let listed = findings.as_array().map(Vec::as_slice).unwrap_or_default();
    let mut unknown = Vec::new();
    for wanted in &body.file_ids {
        let found: Vec<&serde_json::Value> = listed
            .iter()
            .filter(|f| f.get("id").and_then(|v| v.as_str()) == Some(wanted.as_str()))
            .collect();
        if found.is_empty() {
            unknown.push(wanted.as_str());
        }
        for finding in found {
            if let Some(path) = finding.get("path").and_then(|v| v.as_str()) {
                choice.paths.push(exact_path(path));
            }
            if let Some(blob) = finding.get("blob").and_then(|v| v.as_str()) {
                choice.blob_ids.push(blob.to_owned());
            }
        }
    }
    if !unknown.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_file_ids",
            format!(
                "these ids are not file findings of this job: {}",
                unknown
                    .iter()
                    .take(20)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    choice.paths.sort();
    choice.paths.dedup();
    choice.blob_ids.sort();
    choice.blob_ids.dedup();
    FileSelection::new(
        &choice.paths,
        &choice.blob_ids,
        choice.strip_blobs_bigger_than,
    )
    .map_err(|e| ApiError::validation(e.to_string()))?;
    Ok(choice)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SelectResponse {
    pub job_id: Uuid,
    #[serde(flatten)]
    pub selection: Selection,
    /// The whole files selected, if any.
    pub files: Option<FileChoice>,
}

const MAX_SELECTION: usize = 10_000;

/// Chooses the secrets to clean and marks false positives (job `awaiting_selection`).
#[utoipa::path(post, path = "/jobs/{id}/secrets/select", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id"),
           ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Retry-safe key")),
    request_body = SelectRequest,
    responses(
        (status = 200, description = "Selection stored", body = SelectResponse),
        (status = 409, description = "The job is not awaiting selection", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        CommonErrors,
    ))]
pub async fn select(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    JobId(id): JobId,
    ApiJson(body): ApiJson<SelectRequest>,
) -> ApiResult<Json<SelectResponse>> {
    let mut selected = body.secret_ids.clone();
    let mut false_positives = body.mark_false_positives.clone();
    if [
        selected.len(),
        false_positives.len(),
        body.file_ids.len(),
        body.paths.len(),
        body.blob_ids.len(),
    ]
    .iter()
    .any(|&n| n > MAX_SELECTION)
    {
        return Err(ApiError::validation(format!(
            "at most {MAX_SELECTION} ids per list"
        )));
    }
    selected.sort_unstable();
    selected.dedup();
    false_positives.sort_unstable();
    false_positives.dedup();
    if let Some(both) = selected
        .iter()
        .find(|id| false_positives.binary_search(id).is_ok())
    {
        return Err(ApiError::validation(format!(
            "secret {both} cannot be both selected for cleaning and a false positive"
        )));
    }
    let audit = AuditRecord {
        actor: caller.actor(),
        action: "job.select_secrets",
        job_id: Some(id),
        outcome: Outcome::Success,
        details: serde_json::json!({"selected": selected.len(), "false_positives": false_positives.len(), "file_ids": body.file_ids.len(), "paths": body.paths.len(), "blob_ids": body.blob_ids.len(), "strip_blobs_bigger_than": body.strip_blobs_bigger_than}),
    };
    let found = jobs::files(&state.db, id, caller.owner_filter())
        .await?
        .ok_or_else(ApiError::not_found)?;
    let files = file_choice(&body, &found.file_findings.0)?;
    let files = (!files.is_empty())
        .then(|| serde_json::to_value(&files))
        .transpose()
        .map_err(|e| ApiError::validation(e.to_string()))?;
    let selection = jobs::select(
        &state.db,
        id,
        caller.owner_filter(),
        &selected,
        &false_positives,
        files.as_ref(),
        &audit,
    )
    .await
    .map_err(|e| match e {
        SelectError::Transition(t) => {
            ApiError::transition(t, "select secrets", JobStatus::AwaitingSelection.as_str())
        }
        SelectError::Unknown(ids) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_secret_ids",
            format!(
                "these ids are not secrets of this job: {}",
                ids.iter()
                    .take(20)
                    .map(Uuid::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
    })?;
    Ok(Json(SelectResponse {
        job_id: id,
        selection,
        files: files.and_then(|f| serde_json::from_value(f).ok()),
    }))
}

/// What a scan found of whole files, and what of it is selected.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobFilesResponse {
    pub job_id: Uuid,
    /// Files whose presence is the leak (key stores, private key files, `.env`
    /// files…), each with `id` (select it by that), `path`, `kind`, `size`, `blob`
    /// and `commit`.
    #[schema(value_type = Vec<Object>)]
    pub files: serde_json::Value,
    /// The largest blobs of the history: `blob`, `size`, `path`, `commit`.
    #[schema(value_type = Vec<Object>)]
    pub largest_blobs: serde_json::Value,
    /// What is selected for removal, if anything.
    pub selection: Option<FileChoice>,
}

/// The files a scan found whose presence is the leak, and the history's largest blobs.
#[utoipa::path(get, path = "/jobs/{id}/files", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses((status = 200, description = "File findings and largest blobs", body = JobFilesResponse), CommonErrors))]
pub async fn files(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    JobId(id): JobId,
) -> ApiResult<Json<JobFilesResponse>> {
    let found = jobs::files(&state.db, id, caller.owner_filter())
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(JobFilesResponse {
        job_id: id,
        files: found.file_findings.0,
        largest_blobs: found.largest_blobs.0,
        selection: found
            .file_selection
            .and_then(|f| serde_json::from_value(f.0).ok()),
    }))
}

/// The report of a job's clean: for each changed ref its first changed commit, the
/// full old → new commit map, the files removed, commit ids rewritten in messages,
/// orphaned Git LFS objects, and the steps left to the owner (job `cleaned` or later).
#[utoipa::path(get, path = "/jobs/{id}/clean-report", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The clean's report", body = Object),
        (status = 409, description = "The job has not been cleaned", body = ErrorBody),
        CommonErrors,
    ))]
pub async fn clean_report(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    JobId(id): JobId,
) -> ApiResult<Json<serde_json::Value>> {
    match jobs::clean_report(&state.db, id, caller.owner_filter()).await? {
        None => Err(ApiError::not_found()),
        Some(None) => Err(ApiError::conflict(
            "the job has not been cleaned, so there is no clean report",
        )),
        Some(Some(report)) => Ok(Json(report)),
    }
}

/// A job whose next task was queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskQueued {
    pub id: Uuid,
    pub status: JobStatus,
    pub progress_percent: i16,
}

/// Moves a job on to where `task` works on it (clean: `awaiting_selection` →
/// `cleaning`; push: `cleaned` → `pushing`), queues the task, and undoes the move if the
/// broker does not take it.
async fn queue_task(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    task: JobTask,
    target: Option<&PushTarget>,
    priority: i16,
    details: serde_json::Value,
) -> ApiResult<Response> {
    let (from, action, verb) = match task {
        JobTask::Clean => (JobStatus::AwaitingSelection, "job.clean", "start cleaning"),
        JobTask::Push => (JobStatus::Cleaned, "job.push", "push"),
        // A scan is queued by creating its job.
        JobTask::Scan => return Err(ApiError::internal(&"a scan is queued by create")),
    };
    let message = task
        .message(JobRef::new(id, &caller.user_id), priority)
        .map_err(|e| ApiError::internal(&e))?;
    let target = target.cloned();
    let caller = caller.clone();
    let job = detached({
        let state = state.clone();
        async move {
            let audit = AuditRecord {
                actor: caller.actor(),
                action,
                job_id: Some(id),
                outcome: Outcome::Success,
                details,
            };
            let move_job = RequestTask {
                job_id: id,
                owner: caller.owner_filter(),
                from,
                to: task.due_status(),
                target: target.as_ref(),
                needs_selection: task == JobTask::Clean,
            };
            request(&state, &message, &move_job, &audit, |err| match err {
                // Still in `from`: the selection was emptied meanwhile.
                TransitionError::WrongState(status) if status == from && task == JobTask::Clean => {
                    ApiError::conflict(NOTHING_SELECTED)
                }
                other => ApiError::transition(other, verb, from.as_str()),
            })
            .await
        }
    })
    .await?;
    let queued = TaskQueued {
        id,
        status: job.status,
        progress_percent: job.progress_percent,
    };
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location(id))],
        Json(queued),
    )
        .into_response())
}

const NOTHING_SELECTED: &str = "cannot start cleaning: nothing is selected; select a \
     secret or a file with POST /jobs/{id}/secrets/select";

/// Starts cleaning the selected secrets out of history (job `awaiting_selection`, at
/// least one secret selected).
#[utoipa::path(post, path = "/jobs/{id}/clean", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id"),
           ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Retry-safe key")),
    responses(
        (status = 202, description = "Cleaning queued", body = TaskQueued),
        (status = 409, description = "Not awaiting selection, or nothing selected", body = ErrorBody),
        CommonErrors,
    ))]
pub async fn clean(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    JobId(id): JobId,
) -> ApiResult<Response> {
    let job = jobs::get(&state.db, id, caller.owner_filter())
        .await?
        .ok_or_else(ApiError::not_found)?;
    if job.status != JobStatus::AwaitingSelection {
        return Err(ApiError::wrong_state(
            "start cleaning",
            job.status,
            JobStatus::AwaitingSelection.as_str(),
        ));
    }
    let files_selected = jobs::files(&state.db, id, caller.owner_filter())
        .await?
        .is_some_and(|f| f.file_selection.is_some());
    if job.secrets_selected == 0 && !files_selected {
        return Err(ApiError::conflict(NOTHING_SELECTED));
    }
    queue_task(
        &state,
        &caller,
        id,
        JobTask::Clean,
        None,
        job.priority,
        serde_json::json!({"secrets_selected": job.secrets_selected}),
    )
    .await
}

/// Where to push the cleaned repository.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushRequest {
    pub target_platform: Platform,
    /// https (http only where allowed); no credentials in it.
    #[schema(
        example = "https://github.example.com/org/new-repo.git",
        min_length = 1,
        max_length = 2048
    )]
    pub target_url: String,
    /// An id in the credential service for the target.
    #[schema(pattern = "^[A-Za-z0-9._:-]{1,255}$")]
    pub target_credentials_id: Option<String>,
    /// Overwrite the target's branches and tags.
    #[serde(default)]
    pub force_push: bool,
}

/// Pushes the cleaned repository to a target (job `cleaned`).
#[utoipa::path(post, path = "/jobs/{id}/push", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id"),
           ("Idempotency-Key" = Option<String>, Header, pattern = "^[!-~]{1,255}$", description = "Retry-safe key")),
    request_body = PushRequest,
    responses(
        (status = 202, description = "Push queued", body = TaskQueued),
        (status = 409, description = "The job is not cleaned", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        CommonErrors,
    ))]
pub async fn push(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    JobId(id): JobId,
    ApiJson(body): ApiJson<PushRequest>,
) -> ApiResult<Response> {
    let credentials_id = body
        .target_credentials_id
        .as_deref()
        .map(|id| validate::credentials_id("target_credentials_id", id))
        .transpose()?;
    let job = jobs::get(&state.db, id, caller.owner_filter())
        .await?
        .ok_or_else(ApiError::not_found)?;
    if job.status != JobStatus::Cleaned {
        return Err(ApiError::wrong_state(
            "push",
            job.status,
            JobStatus::Cleaned.as_str(),
        ));
    }
    let url = validate::repository_url(&state.api, "target_url", &body.target_url).await?;
    let target = PushTarget {
        platform: body.target_platform,
        url,
        credentials_id,
        force: body.force_push,
    };
    queue_task(
        &state,
        &caller,
        id,
        JobTask::Push,
        Some(&target),
        job.priority,
        serde_json::json!({"target_platform": target.platform.as_str(), "force_push": target.force}),
    )
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    pub job: Job,
    /// Whether every stored object of the job is gone; if not, the storage sweep
    /// removes the rest.
    pub artifacts_deleted: bool,
}

/// Cancels a job: a running task is told to stop, stored artifacts are deleted and the
/// status becomes `cancelled`. Cancelling again is harmless.
#[utoipa::path(delete, path = "/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "Cancelled", body = Cancelled),
        (status = 409, description = "The job has expired", body = ErrorBody),
        CommonErrors,
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    JobId(id): JobId,
) -> ApiResult<Json<Cancelled>> {
    let audit = AuditRecord {
        actor: caller.actor(),
        action: "job.cancel",
        job_id: Some(id),
        outcome: Outcome::Success,
        details: serde_json::json!({}),
    };
    let (job, _first) = jobs::cancel(&state.db, id, caller.owner_filter(), &audit)
        .await
        .map_err(|e| match e {
            TransitionError::WrongState(status) => ApiError::conflict(format!(
                "cannot cancel: the job is {status} and its data is already gone"
            )),
            other => ApiError::transition(other, "cancel", "not expired"),
        })?;
    let artifacts_deleted = match state.storage.delete_job_artifacts(id).await {
        Ok(n) => {
            tracing::info!(job_id = %id, objects = n, "job cancelled; artifacts deleted");
            true
        }
        Err(err) => {
            tracing::warn!(job_id = %id, error = %err, "job cancelled; artifacts left to the sweep");
            false
        }
    };
    Ok(Json(Cancelled {
        job,
        artifacts_deleted,
    }))
}

/// What the clean task stores for download.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ArchiveFormat {
    /// Every branch checked out, with the history as a bundle inside.
    Zip,
    /// A git bundle of every ref.
    Bundle,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DownloadQuery {
    /// `zip` (default) or `bundle` (a git bundle of every ref).
    #[param(inline)]
    pub format: Option<ArchiveFormat>,
}

/// The cleaned repository: a redirect to a short-lived presigned URL.
#[utoipa::path(get, path = "/jobs/{id}/download", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id"), DownloadQuery),
    responses(
        (status = 307, description = "Redirect to the archive", headers(("Location" = String, description = "Presigned URL"))),
        (status = 409, description = "The job is not cleaned yet", body = ErrorBody),
        (status = 410, description = "The archive is no longer stored", body = ErrorBody),
        CommonErrors,
    ))]
pub async fn download(
    State(state): State<AppState>,
    Extension(caller): Extension<Arc<Caller>>,
    JobId(id): JobId,
    ApiQuery(query): ApiQuery<DownloadQuery>,
) -> ApiResult<Response> {
    let job = jobs::get(&state.db, id, caller.owner_filter())
        .await?
        .ok_or_else(ApiError::not_found)?;
    if !job.status.has_cleaned_repository() {
        return Err(ApiError::wrong_state(
            "download",
            job.status,
            JobStatus::Cleaned.as_str(),
        ));
    }
    let (key, name) = match query.format.unwrap_or(ArchiveFormat::Zip) {
        ArchiveFormat::Zip => (ObjectKey::Archive(id), format!("{id}.zip")),
        ArchiveFormat::Bundle => (ObjectKey::CleanedBundle(id), format!("{id}.bundle")),
    };
    let file = key.file_name();
    let exists = state.storage.exists(key).await.map_err(|e| {
        tracing::warn!(job_id = %id, error = %e, "object storage unavailable");
        ApiError::storage_unavailable()
    })?;
    if !exists {
        return Err(ApiError::new(
            StatusCode::GONE,
            "artifact_gone",
            format!(
                "the cleaned repository is no longer stored as {file} (it is deleted after a push, and on expiry)"
            ),
        ));
    }
    let url = state
        .storage
        .presign_get(key, state.api.download_url_ttl, &name)
        .await
        .map_err(|_| ApiError::storage_unavailable())?;
    let audit = AuditRecord {
        actor: caller.actor(),
        action: "job.download",
        job_id: Some(id),
        outcome: Outcome::Success,
        details: serde_json::json!({"format": file}),
    };
    audit::insert(&state.db, &audit).await?;
    let mut headers = HeaderMap::new();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(&url).map_err(|e| ApiError::internal(&e))?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok((StatusCode::TEMPORARY_REDIRECT, headers).into_response())
}
