//! `push_repository`: fetch the cleaned bundle, create the GitHub repository when the
//! target is GitHub and it is missing, push every branch and tag, record what happened
//! to each ref, job → `pushed`; then, unless configured otherwise, delete the job's
//! stored repository data.

use std::sync::Arc;
use std::time::Instant;

use deployguard::jobs::{Job, JobStatus, work};
use deployguard::storage::ObjectKey;
use deployguard::tasks::JobRef;
use deployguard_engine::git::remote;
use deployguard_engine::github;
use secrecy::ExposeSecret;
use serde_json::json;

use super::{Services, database, io, joined};
use crate::registry::{TaskContext, TaskError};

const WORKING: JobStatus = JobStatus::Pushing;

pub(super) async fn run(
    services: Arc<Services>,
    ctx: TaskContext,
    job: JobRef,
) -> Result<serde_json::Value, TaskError> {
    let job = match super::begin(&ctx, &job, WORKING, WORKING, "downloading").await? {
        Ok(job) => job,
        Err(skipped) => return Ok(skipped),
    };
    let result = push(&services, &ctx, &job).await;
    if result.is_err() {
        super::tidy(&services, &ctx, job.id, &[]).await;
    }
    result
}

async fn push(
    services: &Services,
    ctx: &TaskContext,
    job: &Job,
) -> Result<serde_json::Value, TaskError> {
    let id = job.id;
    let target_url = job
        .target_url
        .as_deref()
        .ok_or_else(|| TaskError::fatal("bad_arguments", "the job has no push target"))?;
    let dir = services
        .work
        .task_dir("push", id)
        .map_err(io("work directory"))?;
    let started = Instant::now();

    let repo =
        super::get_repository(services, &dir, ObjectKey::CleanedBundle(id), "repo.git").await?;
    let download_ms = started.elapsed().as_millis() as u64;

    let credentials = super::credentials(
        services,
        job.target_credentials_id.as_deref(),
        &job.owner_id,
    )
    .await?;
    let (target, pinned) = super::reachable(services, target_url).await?;

    let mut created = None;
    if job.target_platform.as_deref() == Some("github") {
        super::stage(ctx, id, WORKING, 20, "creating the GitHub repository").await;
        let (owner, name) = github::repository_from_url(target.as_str()).ok_or_else(|| {
            TaskError::fatal(
                "invalid_target",
                "a GitHub target looks like https://HOST/OWNER/REPO(.git)",
            )
        })?;
        let token = credentials
            .as_ref()
            .map(|c| c.secret.clone())
            .ok_or_else(|| {
                TaskError::fatal(
                    "credentials_unavailable",
                    "a GitHub target needs target_credentials_id",
                )
            })?;
        let client = github::client(&services.config.github_api_url, &token)
            .map_err(|e| TaskError::fatal("github_failed", e.to_string()))?;
        let ensured = github::ensure_repository(&client, &owner, &name, true)
            .await
            .map_err(|e| {
                let message = e.to_string().replace(token.expose_secret(), "***");
                TaskError::retryable("github_failed", format!("GitHub: {message}"))
            })?;
        created = Some(ensured.created);
    }

    super::stage(ctx, id, WORKING, 40, "pushing").await;
    let push_started = Instant::now();
    let pushing = {
        let (dir, repo, cancel, force) = (
            Arc::clone(&dir),
            repo.clone(),
            ctx.cancel.flag(),
            job.force_push,
        );
        tokio::task::spawn_blocking(move || -> Result<remote::PushReport, remote::PushError> {
            let _dir = dir;
            remote::push(
                &repo,
                &target,
                &remote::PushOptions {
                    force,
                    credentials: credentials.as_ref(),
                    pinned: &pinned,
                    cancel: Some(&cancel),
                },
            )
        })
    };
    let report = joined(pushing.await)?.map_err(push_error)?;
    let push_ms = push_started.elapsed().as_millis() as u64;

    let result = serde_json::to_value(&report).unwrap_or_default();
    if !work::finish_push(&ctx.db, id, &result)
        .await
        .map_err(database)?
    {
        return Err(TaskError::fatal(
            "job_moved_on",
            "the job was stopped during the push",
        ));
    }
    let mut deleted = 0;
    if services.config.delete_after_push {
        match services.storage.delete_job_artifacts(id).await {
            Ok(n) => deleted = n,
            Err(err) => {
                tracing::warn!(job_id = %id, error = %err, "deleting the pushed job's objects failed; they go when the job expires")
            }
        }
    }
    Ok(json!({
        "refs": report.refs.len(),
        "github_repository_created": created,
        "objects_deleted": deleted,
        "timings": {"download_ms": download_ms, "push_ms": push_ms},
    }))
}

fn push_error(err: remote::PushError) -> TaskError {
    use remote::PushError as E;
    let message = err.to_string();
    match err {
        E::Url(_) => TaskError::fatal("invalid_url", message),
        E::Authentication { .. } => TaskError::fatal("authentication_failed", message),
        E::NotFound { .. } => TaskError::fatal("repository_not_found", message),
        E::Rejected { .. } => TaskError::fatal("push_rejected", message),
        E::Cancelled => TaskError::fatal("cancelled", message),
        E::Git(_) => TaskError::retryable("push_failed", message),
    }
}
