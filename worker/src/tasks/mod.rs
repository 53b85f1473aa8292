//! The service's tasks: `scan_repository`, `clean_repository` and `push_repository`.
//! Each moves its job through a guarded transition first, so a redelivered task finds
//! its job moved on and does nothing; the engines run on blocking threads with the
//! task's cancel flag; progress goes to the job row as the work advances.

mod clean;
mod maintenance;
mod push;
mod scan;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::settings::WorkerConfig;
use deployguard::credentials::{CredentialError, CredentialService};
use deployguard::jobs::{Job, JobStatus, work};
use deployguard::net::{AddressError, check_url};
use deployguard::storage::{ObjectKey, Storage, StorageError};
use deployguard::tasks::{
    CleanRepository, CleanupExpiredJobs, JobRef, PushRepository, RequeueStuckJobs, ScanRepository,
    StorageCleanup,
};
use deployguard_engine::git;
use deployguard_engine::git::remote::{Credentials, RemoteUrl, UrlPolicy};
use serde_json::json;
use uuid::Uuid;

use crate::registry::{Registry, RetryPolicy, TaskContext, TaskError, TaskSpec};
use crate::workdir::WorkArea;

/// What the tasks share: storage, the credential service, limits and keys.
pub struct Services {
    pub storage: Storage,
    pub credentials: CredentialService,
    pub config: WorkerConfig,
    pub work: WorkArea,
    /// For looking at queue depths (requeue_stuck_jobs).
    pub broker: Arc<deployguard::queue::Broker>,
    /// For queuing tasks again (requeue_stuck_jobs).
    pub publisher: Arc<deployguard::queue::Publisher>,
}

/// Network and storage hiccups are retried a few times, a little apart.
const POLICY: RetryPolicy = RetryPolicy {
    max_retries: 2,
    base_delay: Duration::from_secs(2),
    max_delay: Duration::from_secs(30),
    jitter: 0.2,
};

/// Registers the task kind `T` with the shared services and the common retry policy.
fn with_services<T, Fut>(
    registry: &mut Registry,
    services: &Arc<Services>,
    run: fn(Arc<Services>, TaskContext, T) -> Fut,
) where
    T: deployguard::queue::Task,
    Fut: Future<Output = Result<serde_json::Value, TaskError>> + Send + 'static,
{
    let services = Arc::clone(services);
    registry.register(TaskSpec::of(POLICY, move |ctx, task: T| {
        run(Arc::clone(&services), ctx, task)
    }));
}

pub fn register(registry: &mut Registry, services: &Arc<Services>) {
    with_services(registry, services, |s, ctx, ScanRepository(job)| {
        scan::run(s, ctx, job)
    });
    with_services(registry, services, |s, ctx, CleanRepository(job)| {
        clean::run(s, ctx, job)
    });
    with_services(registry, services, |s, ctx, PushRepository(job)| {
        push::run(s, ctx, job)
    });
    with_services(registry, services, |s, ctx, _: CleanupExpiredJobs| {
        maintenance::cleanup_expired_jobs(s, ctx)
    });
    with_services(registry, services, |s, ctx, _: StorageCleanup| {
        maintenance::storage_cleanup(s, ctx)
    });
    with_services(registry, services, |s, ctx, args: RequeueStuckJobs| {
        maintenance::requeue_stuck_jobs(s, ctx, args)
    });
}

/// A task's job, moved into `working`; `Err(Ok(value))` when there is nothing to do.
async fn begin(
    ctx: &TaskContext,
    job: &JobRef,
    from: JobStatus,
    working: JobStatus,
    stage: &str,
) -> Result<Result<Job, serde_json::Value>, TaskError> {
    let job_id = job.job_id;
    let Some(found) = work::begin(&ctx.db, job_id, (from, working), stage, ctx.message.id)
        .await
        .map_err(database)?
    else {
        tracing::info!(%job_id, "the job has moved on; nothing to do");
        return Ok(Err(
            json!({"skipped": "the job is no longer waiting for this task"}),
        ));
    };
    // The message's user must own the job: a forged message cannot borrow someone
    // else's credentials.
    if job.user_id != found.owner_id {
        return Err(TaskError::fatal(
            "bad_arguments",
            "the message's user does not own the job",
        ));
    }
    Ok(Ok(found))
}

pub(crate) fn database(err: sqlx::Error) -> TaskError {
    TaskError::retryable("database_unavailable", err.to_string())
}

pub(crate) fn storage(err: StorageError) -> TaskError {
    match err {
        StorageError::NoSuchKey(key) => TaskError::fatal(
            "artifact_missing",
            format!("{key} is no longer stored (expired or deleted); scan the repository again"),
        ),
        other => TaskError::retryable("storage_unavailable", other.to_string()),
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> TaskError + '_ {
    move |e| TaskError::retryable("work_dir", format!("{what}: {e}"))
}

/// A joined blocking step: a panic there is the task's crash.
fn joined<T>(result: Result<T, tokio::task::JoinError>) -> Result<T, TaskError> {
    result.map_err(|_| TaskError::fatal("internal_error", "a worker thread crashed"))
}

/// Stores a bundle as `key` and its pack's index beside it ([`ObjectKey::index`]);
/// returns the bundle's size.
async fn put_bundle(
    services: &Services,
    key: ObjectKey,
    bundle: &Path,
    index: Option<&Path>,
) -> Result<u64, TaskError> {
    let put_index = async {
        match (index, key.index()) {
            (Some(index), Some(index_key)) => {
                services.storage.put_file(index_key, index).await.map(drop)
            }
            _ => Ok(()),
        }
    };
    let (bytes, ()) =
        tokio::try_join!(services.storage.put_file(key, bundle), put_index).map_err(storage)?;
    Ok(bytes)
}

/// Fetches the bundle stored as `key` (with its index when one is stored) and makes the
/// bare repository `dir/name` of it; the downloaded files are removed after.
async fn get_repository(
    services: &Services,
    dir: &Arc<tempfile::TempDir>,
    key: ObjectKey,
    name: &str,
) -> Result<PathBuf, TaskError> {
    let bundle = dir.path().join(format!("{name}.bundle"));
    let index = dir.path().join(format!("{name}.idx"));
    let get_index = async {
        let Some(index_key) = key.index() else {
            return Ok(false);
        };
        match services.storage.get_file(index_key, &index).await {
            Ok(_) => Ok(true),
            // A job scanned or cleaned before indexes were kept.
            Err(StorageError::NoSuchKey(_)) => Ok(false),
            Err(err) => Err(err),
        }
    };
    let (_, indexed) =
        tokio::try_join!(services.storage.get_file(key, &bundle), get_index).map_err(storage)?;
    let repo = dir.path().join(name);
    let unbundled = {
        let (dir, repo) = (Arc::clone(dir), repo.clone());
        tokio::task::spawn_blocking(move || {
            let index = indexed.then_some(index.as_path());
            let result = git::bundle::unbundle(&bundle, index, &repo);
            for file in [Some(bundle.as_path()), index].into_iter().flatten() {
                let _ = std::fs::remove_file(file);
            }
            drop(dir);
            result
        })
    };
    joined(unbundled.await)?.map_err(|e| {
        TaskError::fatal(
            "repository_unreadable",
            format!("the stored repository {key} cannot be opened: {e}"),
        )
    })?;
    Ok(repo)
}

/// Credentials from the credential service, asked as the job's owner.
async fn credentials(
    services: &Services,
    id: Option<&str>,
    owner: &str,
) -> Result<Option<Credentials>, TaskError> {
    let Some(id) = id else { return Ok(None) };
    match services.credentials.resolve(id, owner).await {
        Ok(credentials) => Ok(Some(credentials)),
        Err(err) if err.is_transient() => Err(TaskError::retryable(
            "credential_service_unavailable",
            err.to_string(),
        )),
        Err(err @ CredentialError::NotConfigured) => Err(TaskError::fatal(
            "credential_service_unavailable",
            err.to_string(),
        )),
        Err(err) => Err(TaskError::fatal("credentials_unavailable", err.to_string())),
    }
}

/// The repository URL checked as the API checked it, and the addresses its host
/// resolves to now: git is pinned to those, so a DNS answer that changed since the
/// job was created cannot lead it to an internal address.
async fn reachable(
    services: &Services,
    raw: &str,
) -> Result<(RemoteUrl, Vec<SocketAddr>), TaskError> {
    let policy = UrlPolicy {
        allow_http: services.config.outbound.allow_http,
        ..UrlPolicy::service()
    };
    let remote = RemoteUrl::parse(raw, policy)
        .map_err(|e| TaskError::fatal("invalid_url", e.to_string()))?;
    let url = url::Url::parse(remote.as_str())
        .map_err(|e| TaskError::fatal("invalid_url", e.to_string()))?;
    let addrs = check_url(
        &url,
        &services.config.outbound.allowlist,
        Duration::from_secs(5),
    )
    .await
    .map_err(|e| match e {
        AddressError::Unresolvable(_) => TaskError::retryable("unresolvable_host", e.to_string()),
        AddressError::Forbidden { .. } => TaskError::fatal("forbidden_address", e.to_string()),
    })?;
    Ok((remote, addrs))
}

/// Writes a job's progress every half second while `work` runs, from `sample`
/// (`percent`, `stage`).
async fn reporting<T>(
    ctx: &TaskContext,
    job: Uuid,
    working: JobStatus,
    sample: impl Fn() -> (u8, String),
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            biased;
            done = &mut work => return done,
            _ = tick.tick() => {
                let (percent, stage) = sample();
                if let Err(err) = work::progress(&ctx.db, job, working, percent, &stage).await {
                    tracing::warn!(error = %err, "recording progress failed");
                }
            }
        }
    }
}

async fn stage(ctx: &TaskContext, job: Uuid, working: JobStatus, percent: u8, stage: &str) {
    if let Err(err) = work::progress(&ctx.db, job, working, percent, stage).await {
        tracing::warn!(error = %err, "recording progress failed");
    }
}

/// After a failed or stopped attempt: objects this task uploaded are removed when the
/// job was cancelled or expired meanwhile (the API deleted what existed when it
/// cancelled; an upload may have landed after that), or else the task's `own` objects
/// (a failed attempt's partial output; a retry writes it again).
async fn tidy(services: &Services, ctx: &TaskContext, job: Uuid, own: &[ObjectKey]) {
    let status = crate::records::job_status(&ctx.db, job)
        .await
        .ok()
        .flatten();
    let stopped = status.is_none_or(JobStatus::is_gone);
    let result = if stopped {
        services.storage.delete_job_artifacts(job).await.map(drop)
    } else {
        let mut result = Ok(());
        for key in own {
            if let Err(err) = services.storage.delete(&key.to_string()).await {
                result = Err(err);
            }
        }
        result
    };
    if let Err(err) = result {
        tracing::warn!(%job, error = %err, "removing the task's objects failed; beat's storage cleanup will");
    }
}
